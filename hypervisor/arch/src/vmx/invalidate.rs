//! INVEPT and INVVPID (SDM Vol. 3C 31.3): the types a CPU supports
//! (IA32_VMX_EPT_VPID_CAP) and the 128-bit descriptors they read.

use core::mem::{offset_of, size_of};

use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::ept::EptCaps;

/// INVEPT's register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InveptType {
    /// Mappings derived from one EPTP.
    SingleContext = 1,
    /// Mappings derived from every EPTP.
    Global = 2,
}

/// INVVPID's register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InvvpidType {
    /// One linear address of one VPID.
    IndividualAddress = 0,
    /// Every mapping of one VPID.
    SingleContext = 1,
    /// Every mapping of every VPID but 0.
    AllContexts = 2,
    /// Every mapping of one VPID but its global ones.
    SingleContextRetainingGlobals = 3,
}

/// The first of `types` (type, supported) the CPU supports, if it has the
/// instruction at all.
fn narrowest<T>(instruction: bool, types: [(T, bool); 2]) -> Option<T> {
    types
        .into_iter()
        .find(|&(_, supported)| instruction && supported)
        .map(|(t, _)| t)
}

impl EptCaps {
    /// The narrowest INVEPT that drops one EPTP's mappings: single-context,
    /// else global; `None` without INVEPT.
    pub fn invept_for_one(&self) -> Option<InveptType> {
        narrowest(
            self.invept,
            [
                (InveptType::SingleContext, self.invept_single_context),
                (InveptType::Global, self.invept_all_contexts),
            ],
        )
    }

    /// The narrowest INVVPID that drops one VPID's mappings: single-context,
    /// else all contexts; `None` without INVVPID (VPIDs then cannot be
    /// reused safely, so a hypervisor does without them).
    pub fn invvpid_for_one(&self) -> Option<InvvpidType> {
        narrowest(
            self.invvpid,
            [
                (InvvpidType::SingleContext, self.invvpid_single_context),
                (InvvpidType::AllContexts, self.invvpid_all_contexts),
            ],
        )
    }
}

/// INVEPT's memory operand: the EPTP (for single-context), then 64
/// reserved bits that must be 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
pub struct InveptDescriptor {
    pub eptp: u64,
    reserved: u64,
}

/// INVVPID's memory operand: the VPID in bits 15:0 (63:16 reserved, 0),
/// the linear address in bits 127:64 (individual-address only).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
pub struct InvvpidDescriptor {
    pub vpid: u16,
    reserved: [u16; 3],
    pub linear_address: u64,
}

const _: () = {
    assert!(size_of::<InveptDescriptor>() == 16);
    assert!(offset_of!(InveptDescriptor, eptp) == 0);
    assert!(size_of::<InvvpidDescriptor>() == 16);
    assert!(offset_of!(InvvpidDescriptor, vpid) == 0);
    assert!(offset_of!(InvvpidDescriptor, linear_address) == 8);
};

impl InveptDescriptor {
    pub const fn new(eptp: u64) -> Self {
        InveptDescriptor { eptp, reserved: 0 }
    }
}

impl InvvpidDescriptor {
    pub const fn new(vpid: u16, linear_address: u64) -> Self {
        InvvpidDescriptor {
            vpid,
            reserved: [0; 3],
            linear_address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_narrowest_supported_type_is_chosen() {
        let caps = EptCaps::decode;
        assert_eq!(
            caps(1 << 20 | 1 << 25 | 1 << 26).invept_for_one(),
            Some(InveptType::SingleContext)
        );
        assert_eq!(
            caps(1 << 20 | 1 << 26).invept_for_one(),
            Some(InveptType::Global)
        );
        assert_eq!(caps(1 << 20).invept_for_one(), None);
        assert_eq!(caps(1 << 25 | 1 << 26).invept_for_one(), None, "no INVEPT");
        let vpid = |types: u64| caps(1 << 32 | types << 40).invvpid_for_one();
        assert_eq!(vpid(0xf), Some(InvvpidType::SingleContext));
        assert_eq!(vpid(0b0100), Some(InvvpidType::AllContexts));
        assert_eq!(vpid(0b1001), None, "address and globals-keeping only");
        assert_eq!(caps(0xf << 40).invvpid_for_one(), None, "no INVVPID");
        assert_eq!(InveptType::Global as u64, 2);
        assert_eq!(InvvpidType::IndividualAddress as u64, 0);
        assert_eq!(InvvpidType::SingleContextRetainingGlobals as u64, 3);
    }

    #[test]
    fn descriptors_lay_out_as_the_instructions_read_them() {
        let d = InveptDescriptor::new(0x1234_501e);
        assert_eq!(&d.as_bytes()[..8], &0x1234_501eu64.to_le_bytes());
        assert_eq!(&d.as_bytes()[8..], &[0; 8]);
        let d = InvvpidDescriptor::new(7, 0xffff_8000_0000_1000);
        assert_eq!(&d.as_bytes()[..8], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d.as_bytes()[8..], &0xffff_8000_0000_1000u64.to_le_bytes());
    }
}
