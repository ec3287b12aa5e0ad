//! The VMCS host-state area: what every VM exit loads (SDM Vol. 3C 25.5,
//! 28.5), written from values the caller read off the CPU, and checked as
//! VM entry checks it (27.2.2–27.2.4) so that a bad value is named.
//!
//! A VM exit loads less than the host had, and the world switch must put
//! back the rest before host code depends on it: TR's limit becomes 0x67
//! (MicroV's TSS is longer: its I/O permission bitmap lets the extension
//! reach the PCI configuration ports, so TR must be reloaded, after
//! clearing the descriptor's busy bit), GDTR's and IDTR's limits become
//! 0xFFFF, LDTR is unusable, DR7 is 0x400, DEBUGCTL 0 and RFLAGS 0x2
//! (interrupts off, as host mode runs). KERNEL_GS_BASE, STAR, LSTAR and
//! SFMASK are not loaded at all (`vmx_state`).

use microv_arch::msr::{self, efer};
use microv_arch::paging::is_canonical;
use microv_arch::vmx::caps::FixedBitsError;
use microv_arch::vmx::fields::host;
use microv_arch::vmx::instruction_error::VmFail;
use microv_arch::vmx::vmcs::Vmcs;

use crate::cpu_state::cr4;
use crate::vmx_state::VmxCpu;

/// The host state every VM exit returns to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub tr: u16,
    pub fs_base: u64,
    pub gs_base: u64,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub sysenter_cs: u32,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub efer: u64,
    pub pat: u64,
    /// Where the world switch continues after an exit, on which stack.
    pub rsp: u64,
    pub rip: u64,
}

/// A host field a check names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostField {
    Cs,
    Ss,
    Ds,
    Es,
    Fs,
    Gs,
    Tr,
    FsBase,
    GsBase,
    TrBase,
    GdtrBase,
    IdtrBase,
    SysenterEsp,
    SysenterEip,
    Rip,
}

/// Why VM entry would refuse a host state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStateError {
    Cr0(FixedBitsError),
    Cr4(FixedBitsError),
    /// Bits of CR3 beyond the physical-address width.
    Cr3(u64),
    /// A 64-bit host needs CR4.PAE.
    Cr4Pae,
    /// A selector with RPL or TI set, or a null CS or TR.
    Selector(HostField),
    NotCanonical(HostField),
    /// EFER with reserved bits set, or without LMA and LME.
    Efer(u64),
    Pat(u64),
}

/// Writes the host-state fields.
pub fn host_state(h: &HostState, vmcs: &mut dyn Vmcs) -> Result<(), VmFail> {
    host::CR0.write(vmcs, h.cr0)?;
    host::CR3.write(vmcs, h.cr3)?;
    host::CR4.write(vmcs, h.cr4)?;
    host::CS_SELECTOR.write(vmcs, h.cs)?;
    host::SS_SELECTOR.write(vmcs, h.ss)?;
    host::DS_SELECTOR.write(vmcs, h.ds)?;
    host::ES_SELECTOR.write(vmcs, h.es)?;
    host::FS_SELECTOR.write(vmcs, h.fs)?;
    host::GS_SELECTOR.write(vmcs, h.gs)?;
    host::TR_SELECTOR.write(vmcs, h.tr)?;
    host::FS_BASE.write(vmcs, h.fs_base)?;
    host::GS_BASE.write(vmcs, h.gs_base)?;
    host::TR_BASE.write(vmcs, h.tr_base)?;
    host::GDTR_BASE.write(vmcs, h.gdtr_base)?;
    host::IDTR_BASE.write(vmcs, h.idtr_base)?;
    host::SYSENTER_CS.write(vmcs, h.sysenter_cs)?;
    host::SYSENTER_ESP.write(vmcs, h.sysenter_esp)?;
    host::SYSENTER_EIP.write(vmcs, h.sysenter_eip)?;
    host::EFER.write(vmcs, h.efer)?;
    host::PAT.write(vmcs, h.pat)?;
    host::RSP.write(vmcs, h.rsp)?;
    host::RIP.write(vmcs, h.rip)
}

/// Checks `h` as VM entry does for a 64-bit host that loads EFER and PAT.
pub fn check_host(h: &HostState, cpu: &VmxCpu) -> Result<(), HostStateError> {
    use HostStateError as E;
    cpu.cr0.check(h.cr0).map_err(E::Cr0)?;
    cpu.cr4.check(h.cr4).map_err(E::Cr4)?;
    if h.cr3.checked_shr(cpu.phys_bits).unwrap_or(0) != 0 {
        return Err(E::Cr3(h.cr3));
    }
    if h.cr4 & cr4::PAE == 0 {
        return Err(E::Cr4Pae);
    }
    let selectors = [
        (HostField::Cs, h.cs),
        (HostField::Ss, h.ss),
        (HostField::Ds, h.ds),
        (HostField::Es, h.es),
        (HostField::Fs, h.fs),
        (HostField::Gs, h.gs),
        (HostField::Tr, h.tr),
    ];
    for (field, selector) in selectors {
        let null_forbidden = matches!(field, HostField::Cs | HostField::Tr);
        if selector & 7 != 0 || null_forbidden && selector == 0 {
            return Err(E::Selector(field));
        }
    }
    let addresses = [
        (HostField::FsBase, h.fs_base),
        (HostField::GsBase, h.gs_base),
        (HostField::TrBase, h.tr_base),
        (HostField::GdtrBase, h.gdtr_base),
        (HostField::IdtrBase, h.idtr_base),
        (HostField::SysenterEsp, h.sysenter_esp),
        (HostField::SysenterEip, h.sysenter_eip),
        (HostField::Rip, h.rip),
    ];
    for (field, address) in addresses {
        if !is_canonical(address) {
            return Err(E::NotCanonical(field));
        }
    }
    let long = efer::LME | efer::LMA;
    if h.efer & !(efer::SCE | efer::NXE | long) != 0 || h.efer & long != long {
        return Err(E::Efer(h.efer));
    }
    if !msr::pat_valid(h.pat) {
        return Err(E::Pat(h.pat));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx_state::tests::cpu;
    use microv_arch::vmx::vmcs::fake::FakeVmcs;

    /// MicroV's host mode as bring-up leaves it.
    fn microv() -> HostState {
        HostState {
            cr0: 0x8005_0033,
            cr3: 0x20_1000,
            cr4: 0x2020 | cr4::PAE | 0x100_000,
            cs: 0x08,
            ss: 0x10,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
            tr: 0x30,
            fs_base: 0,
            gs_base: 0xffff_8000_0012_3000,
            tr_base: 0xffff_8000_0012_4000,
            gdtr_base: 0xffff_8000_0012_5000,
            idtr_base: 0xffff_8000_0012_6000,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            efer: efer::SCE | efer::LME | efer::LMA | efer::NXE,
            pat: msr::PAT_DEFAULT,
            rsp: 0xffff_8000_0020_8000,
            rip: 0xffff_8000_0000_4000,
        }
    }

    #[test]
    fn host_fields_are_written() {
        let mut vmcs = FakeVmcs::default();
        host_state(&microv(), &mut vmcs).unwrap();
        let h = microv();
        assert_eq!(vmcs.fields.len(), 22);
        assert_eq!(host::CR3.read(&mut vmcs), Ok(h.cr3));
        assert_eq!(host::TR_SELECTOR.read(&mut vmcs), Ok(0x30));
        assert_eq!(host::GS_BASE.read(&mut vmcs), Ok(h.gs_base));
        assert_eq!(host::EFER.read(&mut vmcs), Ok(0xd01));
        assert_eq!(host::RIP.read(&mut vmcs), Ok(h.rip));
        assert_eq!(host::RSP.read(&mut vmcs), Ok(h.rsp));
    }

    #[test]
    fn host_checks_name_the_field() {
        use HostStateError as E;
        let with = |f: fn(&mut HostState)| {
            let mut h = microv();
            f(&mut h);
            check_host(&h, &cpu())
        };
        assert_eq!(with(|_| {}), Ok(()));
        assert!(matches!(with(|h| h.cr0 &= !0x20), Err(E::Cr0(_))));
        assert!(matches!(with(|h| h.cr4 &= !0x2000), Err(E::Cr4(_))));
        assert_eq!(with(|h| h.cr3 = 1 << 50), Err(E::Cr3(1 << 50)));
        assert_eq!(with(|h| h.cr4 &= !cr4::PAE), Err(E::Cr4Pae));
        assert_eq!(with(|h| h.cs = 0), Err(E::Selector(HostField::Cs)));
        assert_eq!(with(|h| h.tr = 0), Err(E::Selector(HostField::Tr)));
        assert_eq!(with(|h| h.ss = 0x13), Err(E::Selector(HostField::Ss)));
        assert_eq!(with(|h| h.fs = 0x4), Err(E::Selector(HostField::Fs)));
        assert_eq!(
            with(|h| h.ss = 0),
            Ok(()),
            "a 64-bit host may have a null SS"
        );
        assert_eq!(
            with(|h| h.gs_base = 1 << 47),
            Err(E::NotCanonical(HostField::GsBase))
        );
        assert_eq!(
            with(|h| h.rip = 0x8000_0000_0000),
            Err(E::NotCanonical(HostField::Rip))
        );
        assert_eq!(
            with(|h| h.efer &= !efer::LMA),
            Err(E::Efer(efer::SCE | efer::LME | efer::NXE))
        );
        assert_eq!(
            with(|h| h.efer |= efer::SVME),
            Err(E::Efer(0xd01 | efer::SVME))
        );
        assert_eq!(with(|h| h.pat = 2), Err(E::Pat(2)));
    }
}
