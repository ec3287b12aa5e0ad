//! The VMXON region and VMCS regions (SDM Vol. 3C 25.2, 25.11.5): one page
//! each in MicroV (IA32_VMX_BASIC says how much the CPU uses, at most a
//! page). Software writes only the header; the rest is the CPU's, in a
//! format of its own that only VMREAD and VMWRITE reach.

use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of a VMXON or VMCS region.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionHeader {
    /// Bits 30:0: IA32_VMX_BASIC's revision identifier (VMXON and VMPTRLD
    /// fail on another); bit 31: a shadow VMCS.
    pub revision_id: u32,
    /// Written by the CPU on a VMX abort (see [`abort`]); 0 otherwise.
    pub abort_indicator: u32,
}

/// Bit 31 of [`RegionHeader::revision_id`]: a shadow VMCS, which only
/// VMREAD/VMWRITE through VMCS shadowing reach.
pub const SHADOW_VMCS: u32 = 1 << 31;

impl RegionHeader {
    /// The header of a VMXON region or an ordinary VMCS for a CPU whose
    /// IA32_VMX_BASIC gave `revision_id`.
    pub const fn new(revision_id: u32) -> RegionHeader {
        RegionHeader {
            revision_id: revision_id & !SHADOW_VMCS,
            abort_indicator: 0,
        }
    }
}

/// A whole VMXON or VMCS region as MicroV allocates it: a 4 KiB-aligned
/// page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Region {
    pub header: RegionHeader,
    pub data: [u8; 4088],
}

const _: () = {
    assert!(offset_of!(RegionHeader, revision_id) == 0);
    assert!(offset_of!(RegionHeader, abort_indicator) == 4);
    assert!(size_of::<RegionHeader>() == 8);
    assert!(offset_of!(Region, header) == 0);
    assert!(offset_of!(Region, data) == 8);
    assert!(size_of::<Region>() == 4096);
    assert!(core::mem::align_of::<Region>() == 4096);
};

/// VMX-abort indicator values (SDM Vol. 3C 28.7): why a VM exit could not
/// complete. The CPU then stays in a shutdown-like state until reset, so
/// only a post-mortem (or another CPU) reads them.
pub mod abort {
    pub const SAVING_GUEST_MSRS: u32 = 1;
    pub const HOST_PDPTES: u32 = 2;
    pub const VMCS_CORRUPTED: u32 = 3;
    pub const LOADING_HOST_MSRS: u32 = 4;
    pub const MACHINE_CHECK: u32 = 5;

    /// What an abort indicator value means, for logs.
    pub const fn name(indicator: u32) -> &'static str {
        match indicator {
            0 => "no VMX abort",
            SAVING_GUEST_MSRS => "VMX abort saving guest MSRs",
            HOST_PDPTES => "VMX abort loading host PDPTEs",
            VMCS_CORRUPTED => "VMX abort: current VMCS corrupted",
            LOADING_HOST_MSRS => "VMX abort loading host MSRs",
            MACHINE_CHECK => "VMX abort: machine check during VM exit",
            _ => "unknown VMX abort",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn headers_carry_the_revision_without_the_shadow_bit() {
        let h = RegionHeader::new(0x8000_0004);
        assert_eq!(h.revision_id, 4);
        assert_eq!(h.abort_indicator, 0);
        assert_eq!(h.as_bytes(), &[4, 0, 0, 0, 0, 0, 0, 0]);
        let mut page = Region::new_zeroed();
        page.header = RegionHeader::new(0x12);
        assert_eq!(&page.as_bytes()[..4], &[0x12, 0, 0, 0]);
        page.header.revision_id |= SHADOW_VMCS;
        assert_eq!(page.as_bytes()[3], 0x80);
    }

    #[test]
    fn abort_indicators_have_names() {
        for (code, word) in [
            (0, "no"),
            (abort::SAVING_GUEST_MSRS, "guest MSRs"),
            (abort::HOST_PDPTES, "PDPTEs"),
            (abort::VMCS_CORRUPTED, "corrupted"),
            (abort::LOADING_HOST_MSRS, "host MSRs"),
            (abort::MACHINE_CHECK, "machine check"),
            (6, "unknown"),
        ] {
            assert!(abort::name(code).contains(word), "{code}");
        }
    }
}
