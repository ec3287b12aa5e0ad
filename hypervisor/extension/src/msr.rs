//! The root VM's MSR accesses that exit. The policy itself is one table in
//! `microv_arch::msr::policy` (documented in `docs/msr-policy.md`); this
//! module carries it out: it emulates what the table marks `Emulate`,
//! checks and passes through what it marks `Checked`, and answers #GP for
//! `Refuse`. `Pass` MSRs never get here (the permission map lets them
//! through, `root_vm::fill_msrpm`).

use microv_arch::cpuid::CpuidResult;
use microv_arch::msr::policy::{self, Action};
use microv_arch::apic;
use microv_arch::msr::{self, debugctl, efer, hwcr, vm_cr};
use microv_arch::svm::Vmcb;

use crate::host::Host;

/// What the root's RDMSR or WRMSR comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrOutcome {
    /// The read returns this value.
    Value(u64),
    /// The write is done (or deliberately has no effect).
    Written,
    /// The access raises #GP, as on bare metal.
    GeneralProtection,
}

/// What the policy makes of one access, before anything touches the real
/// CPU or the VMCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A read returns this value.
    Value(u64),
    /// The root's EFER (in the VMCB) becomes this value.
    SetEfer(u64),
    /// The root's PAT (the VMCB's G_PAT) becomes this value.
    SetPat(u64),
    /// The root's DEBUGCTL (kept in the VMCB) becomes this value.
    SetDebugCtl(u64),
    /// The write is accepted and has no effect.
    Ignore,
    /// The write is accepted without effect if it changes no bit of the
    /// real value outside this mask; otherwise #GP.
    IgnoreUnlessChanging(u64),
    /// #GP.
    GeneralProtection,
    /// Done on the real CPU (read or write as asked).
    PassThrough,
    /// Written on the real CPU if it changes no bit of the real value
    /// outside this mask; otherwise #GP.
    PassThroughChanging(u64),
    /// An x2APIC register write that exits (the ICR and the LVT entries):
    /// the microkernel checks and carries it out (`root_apic`).
    ApicWrite { offset: u32, value: u64 },
}

/// VMCB clean bits a write here makes stale: NP covers G_PAT, LBR covers
/// DBGCTL (the VMCB's caching is not used yet; this keeps it correct).
const CLEAN_NP: u32 = 1 << 4;
const CLEAN_LBR: u32 = 1 << 10;

/// Handles one intercepted access to MSR `index`: a read if `write` is
/// `None`. `paging` is the root's CR0.PG.
pub fn access(
    vmcb: &mut Vmcb,
    host: &mut dyn Host,
    index: u32,
    write: Option<u64>,
    paging: bool,
) -> MsrOutcome {
    let decision = match write {
        None => decide_read(index, vmcb),
        Some(value) => {
            let mut cpuid = |leaf, subleaf| host.cpuid(leaf, subleaf);
            decide_write(index, value, paging, vmcb, &mut cpuid)
        }
    };
    apply(decision, vmcb, host, index, write)
}

/// What a read of `index` gets.
pub fn decide_read(index: u32, vmcb: &Vmcb) -> Decision {
    match policy::rule(index).read {
        Action::Checked => Decision::PassThrough,
        Action::Emulate => emulated_read(index, vmcb).unwrap_or(Decision::GeneralProtection),
        // `Pass` reads do not exit (the map lets them through); should one
        // arrive anyway, the host's value must not leak.
        Action::Pass | Action::Refuse => Decision::GeneralProtection,
    }
}

/// What a write of `value` to `index` gets; `cpuid(leaf, subleaf)` asks
/// the real CPU what it supports (only for the few MSRs that depend on it).
pub fn decide_write(
    index: u32,
    value: u64,
    paging: bool,
    vmcb: &Vmcb,
    cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult,
) -> Decision {
    match policy::rule(index).write {
        Action::Checked => checked_write(index, cpuid),
        Action::Emulate => {
            emulated_write(index, value, paging, vmcb, cpuid).unwrap_or(Decision::GeneralProtection)
        }
        Action::Pass | Action::Refuse => Decision::GeneralProtection,
    }
}

/// The emulated reads; `None` for an MSR without an emulation.
fn emulated_read(index: u32, vmcb: &Vmcb) -> Option<Decision> {
    Some(Decision::Value(match index {
        // The root must not see that SVM is on.
        msr::EFER => vmcb.save.efer & !efer::SVME,
        // SVM looks disabled by the firmware and locked.
        msr::VM_CR => vm_cr::SVMDIS | vm_cr::LOCK,
        msr::VM_HSAVE_PA => 0,
        msr::PAT => vmcb.save.g_pat,
        msr::DEBUGCTL => vmcb.save.dbgctl,
        // No branch is ever recorded for the root (its DEBUGCTL.LBR never
        // reaches the CPU); the real records would show host addresses.
        msr::LAST_BRANCH_FROM_IP..=msr::LAST_INT_TO_IP => 0,
        _ => return None,
    }))
}

/// The emulated writes; `None` for an MSR without an emulation.
fn emulated_write(
    index: u32,
    value: u64,
    paging: bool,
    vmcb: &Vmcb,
    cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult,
) -> Option<Decision> {
    Some(match index {
        msr::EFER => efer_write(
            value,
            vmcb.save.efer,
            paging,
            efer::optional_supported(cpuid),
        ),
        // The root's PAT lives in G_PAT, which VMRUN switches: the host's
        // PAT never changes.
        msr::PAT if msr::pat_valid(value) => Decision::SetPat(value),
        // Kept for the root, never applied: LBR and BTF would act in host
        // mode too (Linux uses BTF only for ptrace's block stepping).
        msr::DEBUGCTL if value & !debugctl::DEFINED == 0 => Decision::SetDebugCtl(value),
        // A microcode update would change the hypervisor's CPU under it.
        // Ignored, as KVM does: Linux then reports the update as failed.
        msr::PATCH_LOADER => Decision::Ignore,
        // The APIC window must never move over hypervisor memory; Linux
        // rewrites APIC_BASE only with its current value at runtime.
        msr::APIC_BASE => Decision::IgnoreUnlessChanging(0),
        // The boost switch (cpufreq's `boost`) and IRPERF enable are
        // accepted without effect; every other HWCR bit (SMM lock, INVD
        // behaviour, TLB and cache controls) must stay as it is.
        msr::HWCR => Decision::IgnoreUnlessChanging(hwcr::CPB_DIS | hwcr::IRPERF_EN),
        msr::PAT | msr::DEBUGCTL => Decision::GeneralProtection,
        // MTRRs set the memory type of MicroV's own memory too, so they
        // stay the firmware's. Linux only re-applies them (at boot and on
        // every CPU it brings up: MTRRdefType off, the ranges that differ,
        // MTRRdefType back on): a write of the real value, or one that only
        // turns MTRRdefType's enables and default type off and on, is
        // accepted without effect; a write that would change a range #GPs.
        msr::MTRR_DEF_TYPE => Decision::IgnoreUnlessChanging(MTRR_DEF_TYPE_SWITCHES),
        msr::MTRR_FIRST..=msr::MTRR_DEF_TYPE => Decision::IgnoreUnlessChanging(0),
        // Every IPI and LVT entry is checked: no INIT to a CPU in MicroV.
        msr::X2APIC_FIRST..=msr::X2APIC_LAST => match apic::x2apic_offset(index) {
            Some(offset) => Decision::ApicWrite { offset, value },
            None => Decision::GeneralProtection,
        },
        _ => return None,
    })
}

/// MTRRdefType's default type (7:0) and its FE and E enables (10, 11).
const MTRR_DEF_TYPE_SWITCHES: u64 = 0xcff;

/// A checked write: passed through, with LS_CFG limited to its SSBD bit
/// (the only bit Linux changes at runtime, per task, on Zen 1 and older).
fn checked_write(index: u32, cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult) -> Decision {
    match index {
        msr::LS_CFG => Decision::PassThroughChanging(msr::ls_cfg_ssbd_bit(cpuid(1, 0))),
        // Linux turns on extended configuration through 0xCF8 on every CPU
        // it brings up; nothing else in NB_CFG may change. (The root
        // reaches the same registers through ECAM anyway.)
        msr::NB_CFG => Decision::PassThroughChanging(msr::NB_CFG_EXT_CFG),
        _ => Decision::PassThrough,
    }
}

/// A write of `value` to EFER by the root, whose EFER is `current`, on a
/// CPU implementing the optional EFER bits `optional`.
pub fn efer_write(value: u64, current: u64, paging: bool, optional: u64) -> Decision {
    // SCE, LME, NXE exist on every CPU MicroV runs on (AMD64 with NX);
    // of the rest only the optional bits MicroV knows, if the CPU has them.
    let known = efer::LMSLE | efer::FFXSR | efer::TCE | efer::AUTOIBRS;
    let writable = efer::SCE | efer::LME | efer::NXE | (optional & known);
    // SVME stays MicroV's; LMA is read-only (a written LMA is ignored);
    // any other bit the CPU lacks faults, as it would natively, instead of
    // reaching VMRUN, which would refuse the VMCB.
    if value & efer::SVME != 0 || value & !(writable | efer::LMA) != 0 {
        return Decision::GeneralProtection;
    }
    // Changing LME with paging on faults natively too.
    if paging && (value ^ current) & efer::LME != 0 {
        return Decision::GeneralProtection;
    }
    Decision::SetEfer((value & writable) | (current & efer::LMA) | efer::SVME)
}

/// True if `value` differs from `real` only in bits of `mask`.
fn changes_only(value: u64, real: u64, mask: u64) -> bool {
    (value ^ real) & !mask == 0
}

/// Carries out `decision` for the access to `index`.
fn apply(
    decision: Decision,
    vmcb: &mut Vmcb,
    host: &mut dyn Host,
    index: u32,
    write: Option<u64>,
) -> MsrOutcome {
    match decision {
        Decision::Value(v) => MsrOutcome::Value(v),
        Decision::SetEfer(v) => {
            vmcb.save.efer = v;
            MsrOutcome::Written
        }
        Decision::SetPat(v) => {
            vmcb.save.g_pat = v;
            vmcb.control.clean_bits &= !CLEAN_NP;
            MsrOutcome::Written
        }
        Decision::SetDebugCtl(v) => {
            vmcb.save.dbgctl = v;
            vmcb.control.clean_bits &= !CLEAN_LBR;
            MsrOutcome::Written
        }
        Decision::Ignore => MsrOutcome::Written,
        Decision::GeneralProtection => MsrOutcome::GeneralProtection,
        Decision::PassThrough => pass_through(host, index, write),
        Decision::IgnoreUnlessChanging(mask) => match (write, host.msr_read(index)) {
            (Some(v), Some(real)) if changes_only(v, real, mask) => MsrOutcome::Written,
            _ => MsrOutcome::GeneralProtection,
        },
        Decision::ApicWrite { offset, value } => {
            if crate::root_apic::carry_out(host, offset, value, true) {
                MsrOutcome::Written
            } else {
                MsrOutcome::GeneralProtection
            }
        }
        Decision::PassThroughChanging(mask) => match (write, host.msr_read(index)) {
            (Some(v), Some(real)) if changes_only(v, real, mask) => {
                pass_through(host, index, write)
            }
            _ => MsrOutcome::GeneralProtection,
        },
    }
}

/// The access on the real CPU (the microkernel recovers from its #GP).
fn pass_through(host: &mut dyn Host, index: u32, write: Option<u64>) -> MsrOutcome {
    match write {
        None => host
            .msr_read(index)
            .map_or(MsrOutcome::GeneralProtection, MsrOutcome::Value),
        Some(v) if host.msr_write(index, v) => MsrOutcome::Written,
        Some(_) => MsrOutcome::GeneralProtection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{self, Action as ExitAction};
    use crate::host::fake::FakeHost;
    use crate::state::HvState;
    use microv_abi::launch::gpr;
    use microv_abi::syscall::VsRegs;
    use microv_abi::ExitKind;
    use microv_arch::svm::{event, exit as code, vector};
    use zerocopy::FromZeros;

    const LINUX_EFER: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
    const GP: u64 = 0x8000_0b0d;

    fn vmcb() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::new_zeroed());
        v.save.efer = LINUX_EFER;
        v.save.g_pat = msr::PAT_DEFAULT;
        v
    }

    /// A CPU whose CPUID answers every leaf with all bits set.
    fn every_feature(leaf: u32, _: u32) -> CpuidResult {
        CpuidResult {
            eax: if leaf == 0x8000_0000 {
                0x8000_0021
            } else {
                u32::MAX
            },
            ebx: 0,
            ecx: u32::MAX,
            edx: u32::MAX,
        }
    }

    fn no_cpuid(_: u32, _: u32) -> CpuidResult {
        CpuidResult::default()
    }

    /// Runs an RDMSR (`write` None) or WRMSR exit through `exit::handle`.
    fn run(
        host: &mut FakeHost,
        hv: &HvState,
        v: &mut Vmcb,
        index: u32,
        write: Option<u64>,
    ) -> (ExitAction, VsRegs) {
        let mut regs = VsRegs::default();
        v.control.exit_code = code::MSR;
        v.control.exit_info1 = u64::from(write.is_some());
        v.control.event_inj = 0;
        v.save.rip = 0x1000;
        v.save.cr0 = 1 << 31;
        regs.gprs[gpr::RCX] = u64::from(index);
        if let Some(value) = write {
            v.save.rax = value & 0xffff_ffff;
            regs.gprs[gpr::RDX] = value >> 32;
        }
        let action = exit::handle(v, &mut regs, crate::neutral::decode_svm(&v.control), 0, hv, host);
        (action, regs)
    }

    /// The value an RDMSR exit returned, or None if it raised #GP.
    fn read_via_exit(host: &mut FakeHost, v: &mut Vmcb, index: u32) -> Option<u64> {
        let (action, regs) = run(host, &HvState::new(), v, index, None);
        assert_eq!(action, ExitAction::Resume);
        if v.control.event_inj == GP {
            assert_eq!(v.save.rip, 0x1000, "a faulting RDMSR is not skipped");
            None
        } else {
            assert_eq!(v.save.rip, 0x1002);
            Some(regs.gprs[gpr::RDX] << 32 | v.save.rax)
        }
    }

    /// True if a WRMSR exit completed, false if it raised #GP.
    fn write_via_exit(host: &mut FakeHost, v: &mut Vmcb, index: u32, value: u64) -> bool {
        let (action, _) = run(host, &HvState::new(), v, index, Some(value));
        assert_eq!(action, ExitAction::Resume);
        if v.control.event_inj == GP {
            assert_eq!(v.save.rip, 0x1000, "a faulting WRMSR is not skipped");
            false
        } else {
            assert_eq!(v.save.rip, 0x1002);
            true
        }
    }

    #[test]
    fn mtrr_writes_of_the_firmwares_values_are_accepted_without_effect() {
        let mut host = FakeHost::default();
        host.msrs.insert(msr::MTRR_DEF_TYPE, 0xc06);
        host.msrs.insert(msr::MTRR_FIRST, 0x8000_0006);
        let mut write = |index, value| {
            let mut v = vmcb();
            v.save.rip = 0x1000;
            write_via_exit(&mut host, &mut v, index, value)
        };
        // Linux's cache set-up: MTRRs off, the same ranges, back on.
        assert!(write(msr::MTRR_DEF_TYPE, 0));
        assert!(write(msr::MTRR_FIRST, 0x8000_0006));
        assert!(write(msr::MTRR_DEF_TYPE, 0xc06));
        // A range that would change, or a reserved bit: #GP.
        assert!(!write(msr::MTRR_FIRST, 0x9000_0006));
        assert!(!write(msr::MTRR_DEF_TYPE, 0x1c06));
        // No MTRR there: #GP.
        assert!(!write(msr::MTRR_FIRST + 0x30, 0));
        // The real MTRRs never change.
        assert_eq!(host.msrs[&msr::MTRR_DEF_TYPE], 0xc06);
        assert_eq!(host.msrs[&msr::MTRR_FIRST], 0x8000_0006);
    }

    #[test]
    fn gp_constant_is_the_injected_event() {
        assert_eq!(GP, event::exception_with_code(vector::GP, 0));
    }

    #[test]
    fn every_emulate_row_has_an_emulation() {
        let v = vmcb();
        for r in policy::RULES {
            for index in r.first..=r.last {
                if r.read == Action::Emulate {
                    assert!(emulated_read(index, &v).is_some(), "read {index:#x}");
                }
                if r.write == Action::Emulate {
                    let e = emulated_write(index, 0, true, &v, &mut no_cpuid);
                    assert!(e.is_some(), "write {index:#x}");
                }
            }
        }
        assert_eq!(emulated_read(msr::TSC, &v), None);
        assert_eq!(emulated_write(msr::TSC, 0, true, &v, &mut no_cpuid), None);
        // A table row saying Emulate without code behind it would #GP.
        assert_eq!(decide_read(msr::TSC_AUX, &v), Decision::GeneralProtection);
    }

    #[test]
    fn decisions_follow_the_table() {
        let v = vmcb();
        let mut cpu = no_cpuid;
        let w = |index, value, cpu: &mut dyn FnMut(u32, u32) -> CpuidResult| {
            decide_write(index, value, true, &v, cpu)
        };
        // Pass (never exits; answered #GP if it did) and Refuse.
        assert_eq!(decide_read(msr::FS_BASE, &v), Decision::GeneralProtection);
        assert_eq!(w(msr::FS_BASE, 0, &mut cpu), Decision::GeneralProtection);
        assert_eq!(w(msr::TSC, 0, &mut cpu), Decision::GeneralProtection);
        assert_eq!(decide_read(0x1234, &v), Decision::GeneralProtection);
        // Checked.
        assert_eq!(decide_read(0xc000_2001, &v), Decision::PassThrough);
        assert_eq!(decide_read(msr::HWCR, &v), Decision::PassThrough);
        assert_eq!(w(0x401, 0, &mut cpu), Decision::PassThrough);
        assert_eq!(
            w(msr::LS_CFG, 0, &mut cpu),
            Decision::PassThroughChanging(0)
        );
        let mut zen1 = |leaf: u32, _: u32| CpuidResult {
            eax: if leaf == 1 { 0x0080_0f12 } else { 0 },
            ..Default::default()
        };
        assert_eq!(
            w(msr::LS_CFG, 0, &mut zen1),
            Decision::PassThroughChanging(1 << 10)
        );
        assert_eq!(decide_read(msr::NB_CFG, &v), Decision::PassThrough);
        assert_eq!(
            w(msr::NB_CFG, 1 << 46, &mut cpu),
            Decision::PassThroughChanging(1 << 46)
        );
        // Emulate.
        assert_eq!(w(msr::PATCH_LOADER, 0x1000, &mut cpu), Decision::Ignore);
        assert_eq!(
            w(msr::APIC_BASE, 0xfee0_0900, &mut cpu),
            Decision::IgnoreUnlessChanging(0)
        );
        assert_eq!(
            w(msr::HWCR, 0, &mut cpu),
            Decision::IgnoreUnlessChanging(hwcr::CPB_DIS | hwcr::IRPERF_EN)
        );
        assert_eq!(w(msr::PAT, 0x0606, &mut cpu), Decision::SetPat(0x0606));
        assert_eq!(w(msr::PAT, 0x02, &mut cpu), Decision::GeneralProtection);
        assert_eq!(w(msr::DEBUGCTL, 2, &mut cpu), Decision::SetDebugCtl(2));
        assert_eq!(
            w(msr::DEBUGCTL, 1 << 6, &mut cpu),
            Decision::GeneralProtection
        );
        assert_eq!(w(msr::VM_CR, 0, &mut cpu), Decision::GeneralProtection);
        assert_eq!(decide_read(msr::VM_HSAVE_PA, &v), Decision::Value(0));
    }

    #[test]
    fn efer_writes_keep_svme_and_refuse_setting_it() {
        let visible = LINUX_EFER & !efer::SVME;
        assert_eq!(
            efer_write(visible, LINUX_EFER, true, 0),
            Decision::SetEfer(LINUX_EFER)
        );
        assert_eq!(
            efer_write(visible | efer::SVME, LINUX_EFER, true, 0),
            Decision::GeneralProtection
        );
        assert_eq!(
            efer_write(visible & !efer::NXE, LINUX_EFER, true, 0),
            Decision::SetEfer(LINUX_EFER & !efer::NXE)
        );
        assert_eq!(
            efer_write(visible & !efer::LME, LINUX_EFER, true, 0),
            Decision::GeneralProtection
        );
        assert_eq!(
            efer_write(visible | (1 << 20), LINUX_EFER, true, u64::MAX),
            Decision::GeneralProtection,
            "reserved bits fault even if CPUID claimed them"
        );
        // Without paging LME may change; LMA stays what the CPU says.
        assert_eq!(
            efer_write(efer::SCE, efer::SVME, false, 0),
            Decision::SetEfer(efer::SCE | efer::SVME)
        );
    }

    #[test]
    fn optional_efer_bits_need_cpuid() {
        let visible = LINUX_EFER & !efer::SVME;
        for bit in [efer::LMSLE, efer::FFXSR, efer::TCE, efer::AUTOIBRS] {
            assert_eq!(
                efer_write(visible | bit, LINUX_EFER, true, 0),
                Decision::GeneralProtection,
                "{bit:#x} without CPUID support"
            );
            assert_eq!(
                efer_write(visible | bit, LINUX_EFER, true, bit),
                Decision::SetEfer(LINUX_EFER | bit),
                "{bit:#x} with CPUID support"
            );
            let v = vmcb();
            assert_eq!(
                decide_write(msr::EFER, visible | bit, true, &v, &mut every_feature),
                Decision::SetEfer(LINUX_EFER | bit)
            );
            assert_eq!(
                decide_write(msr::EFER, visible | bit, true, &v, &mut no_cpuid),
                Decision::GeneralProtection
            );
        }
    }

    #[test]
    fn efer_and_svm_msrs_through_the_exit_handler() {
        let mut host = FakeHost::default();
        let mut v = vmcb();
        assert_eq!(
            read_via_exit(&mut host, &mut v, msr::EFER),
            Some(LINUX_EFER & !efer::SVME)
        );
        assert_eq!(
            read_via_exit(&mut host, &mut v, msr::VM_CR),
            Some(vm_cr::SVMDIS | vm_cr::LOCK)
        );
        assert_eq!(read_via_exit(&mut host, &mut v, msr::VM_HSAVE_PA), Some(0));
        assert!(!write_via_exit(&mut host, &mut v, msr::VM_HSAVE_PA, 0x1000));
        assert!(write_via_exit(
            &mut host,
            &mut v,
            msr::EFER,
            LINUX_EFER & !efer::SVME & !efer::SCE
        ));
        assert_eq!(v.save.efer, LINUX_EFER & !efer::SCE);
        // The fake CPU reports no extended leaves: no optional EFER bit.
        assert!(!write_via_exit(
            &mut host,
            &mut v,
            msr::EFER,
            (LINUX_EFER & !efer::SVME) | efer::LMSLE
        ));
        assert_eq!(v.save.efer, LINUX_EFER & !efer::SCE, "unchanged");
    }

    #[test]
    fn pat_and_debugctl_live_in_the_vmcb() {
        let mut host = FakeHost::default();
        host.msrs.insert(msr::PAT, 0x1111);
        host.msrs.insert(msr::DEBUGCTL, 0);
        let mut v = vmcb();
        v.control.clean_bits = u32::MAX;
        assert!(write_via_exit(
            &mut host,
            &mut v,
            msr::PAT,
            0x0007_0106_0007_0406
        ));
        assert_eq!(v.save.g_pat, 0x0007_0106_0007_0406);
        assert_eq!(v.control.clean_bits & CLEAN_NP, 0);
        assert_eq!(
            read_via_exit(&mut host, &mut v, msr::PAT),
            Some(0x0007_0106_0007_0406)
        );
        assert!(!write_via_exit(&mut host, &mut v, msr::PAT, 0x0303));
        assert_eq!(v.save.g_pat, 0x0007_0106_0007_0406);
        assert!(write_via_exit(&mut host, &mut v, msr::DEBUGCTL, 0b10));
        assert_eq!(v.control.clean_bits & CLEAN_LBR, 0);
        assert_eq!(read_via_exit(&mut host, &mut v, msr::DEBUGCTL), Some(0b10));
        assert!(!write_via_exit(&mut host, &mut v, msr::DEBUGCTL, 1 << 40));
        assert_eq!(
            (host.msrs[&msr::PAT], host.msrs[&msr::DEBUGCTL]),
            (0x1111, 0),
            "the real MSRs never change"
        );
        for index in msr::LAST_BRANCH_FROM_IP..=msr::LAST_INT_TO_IP {
            host.msrs.insert(index, 0xffff_8000_dead_beef);
            assert_eq!(read_via_exit(&mut host, &mut v, index), Some(0));
            assert!(!write_via_exit(&mut host, &mut v, index, 0));
        }
    }

    #[test]
    fn platform_msrs_never_change_on_the_real_cpu() {
        let mut host = FakeHost::default();
        let mut v = vmcb();
        const APIC: u64 = 0xfee0_0900;
        const HWCR_NOW: u64 = 0x0100_0010;
        host.msrs.insert(msr::APIC_BASE, APIC);
        host.msrs.insert(msr::HWCR, HWCR_NOW);
        host.msrs.insert(msr::PATCH_LOADER, 0);
        assert_eq!(read_via_exit(&mut host, &mut v, msr::APIC_BASE), Some(APIC));
        assert!(write_via_exit(&mut host, &mut v, msr::APIC_BASE, APIC));
        assert!(!write_via_exit(
            &mut host,
            &mut v,
            msr::APIC_BASE,
            0x1000_0900
        ));
        assert!(!write_via_exit(
            &mut host,
            &mut v,
            msr::APIC_BASE,
            APIC | 1 << 10
        ));
        assert_eq!(read_via_exit(&mut host, &mut v, msr::HWCR), Some(HWCR_NOW));
        assert!(write_via_exit(
            &mut host,
            &mut v,
            msr::HWCR,
            HWCR_NOW | hwcr::CPB_DIS | hwcr::IRPERF_EN
        ));
        assert!(!write_via_exit(&mut host, &mut v, msr::HWCR, HWCR_NOW ^ 1));
        assert!(write_via_exit(
            &mut host,
            &mut v,
            msr::PATCH_LOADER,
            0x7000_0000
        ));
        assert!(read_via_exit(&mut host, &mut v, msr::PATCH_LOADER).is_none());
        assert_eq!(
            (
                host.msrs[&msr::APIC_BASE],
                host.msrs[&msr::HWCR],
                host.msrs[&msr::PATCH_LOADER]
            ),
            (APIC, HWCR_NOW, 0)
        );
        // Without a real value to compare with, the write faults.
        let mut empty = FakeHost::default();
        assert!(!write_via_exit(&mut empty, &mut v, msr::APIC_BASE, APIC));
    }

    #[test]
    fn every_dangerous_write_exits_and_is_counted() {
        let mut host = FakeHost::default();
        let hv = HvState::new();
        let mut v = vmcb();
        let dangerous = [
            msr::APIC_BASE,
            msr::MTRR_FIRST,
            msr::MTRR_DEF_TYPE,
            msr::MTRR_CAP,
            msr::SYSCFG,
            msr::HWCR,
            msr::TOP_MEM,
            msr::TOP_MEM2,
            msr::IORR_FIRST,
            msr::IORR_LAST,
            msr::SMM_BASE + 1,
            msr::SMM_MASK,
            msr::SMM_CTL,
            msr::PATCH_LOADER,
            msr::DEBUGCTL,
            msr::XSS,
            msr::TSC,
            msr::TSC_ADJUST,
        ];
        for (n, index) in dangerous.into_iter().enumerate() {
            host.msrs.insert(index, 0x5a5a);
            run(&mut host, &hv, &mut v, index, Some(0xffff_ffff_ffff_fff0));
            assert_eq!(host.msrs[&index], 0x5a5a, "{index:#x} reached the CPU");
            assert_eq!(
                hv.exit_count(0, ExitKind::MsrWrite as usize),
                n as u64 + 1,
                "{index:#x}"
            );
        }
    }

    #[test]
    fn checked_msrs_reach_the_real_cpu() {
        let mut host = FakeHost::default();
        let mut v = vmcb();
        host.msrs.insert(0xc000_2001, 0x1234_5678_9abc_def0);
        host.msrs.insert(0x401, 0x8000_0000_0000_0000);
        host.msrs.insert(msr::LS_CFG, 0x40);
        assert_eq!(
            read_via_exit(&mut host, &mut v, 0xc000_2001),
            Some(0x1234_5678_9abc_def0)
        );
        assert!(write_via_exit(
            &mut host,
            &mut v,
            0xc000_2001,
            0x1_0000_0002
        ));
        assert_eq!(host.msrs[&0xc000_2001], 0x1_0000_0002, "EDX:EAX");
        assert!(write_via_exit(&mut host, &mut v, 0x401, 0));
        assert_eq!(host.msrs[&0x401], 0);
        // The fake CPU is family 0: LS_CFG has no SSBD bit to change.
        assert!(write_via_exit(&mut host, &mut v, msr::LS_CFG, 0x40));
        assert!(!write_via_exit(
            &mut host,
            &mut v,
            msr::LS_CFG,
            0x40 | 1 << 10
        ));
        assert_eq!(host.msrs[&msr::LS_CFG], 0x40);
        // MSRs the real CPU lacks fault.
        assert!(read_via_exit(&mut host, &mut v, 0xc000_2fff).is_none());
        assert!(!write_via_exit(&mut host, &mut v, 0xc000_2fff, 1));
        assert!(!write_via_exit(&mut host, &mut v, 0x402, 1));
    }

    #[test]
    fn refused_and_unlisted_msrs_fault() {
        let mut host = FakeHost::default();
        let mut v = vmcb();
        for index in [
            0x1234,
            msr::TSC_RATIO,
            msr::SMM_CTL,
            msr::HYPERVISOR_FIRST,
            msr::KVM_FIRST + 1,
            msr::IBS_FIRST,
            // Unlisted, outside the permission map's ranges: the real MSR
            // exists in the fake CPU and still never reaches the root.
            0x2000,
            0xC000_3000,
            0xC001_2000,
        ] {
            host.msrs.insert(index, 7);
            assert!(
                read_via_exit(&mut host, &mut v, index).is_none(),
                "{index:#x}"
            );
            assert!(!write_via_exit(&mut host, &mut v, index, 1), "{index:#x}");
            assert_eq!(host.msrs[&index], 7);
        }
    }

    #[test]
    fn passthrough_helpers() {
        assert!(changes_only(0b1010, 0b0010, 0b1000));
        assert!(!changes_only(0b1011, 0b0010, 0b1000));
        let mut host = FakeHost::default();
        let mut v = vmcb();
        // Decisions that need a write are refused for reads.
        assert_eq!(
            apply(
                Decision::IgnoreUnlessChanging(0),
                &mut v,
                &mut host,
                0x10,
                None
            ),
            MsrOutcome::GeneralProtection
        );
        assert_eq!(
            apply(
                Decision::PassThroughChanging(0),
                &mut v,
                &mut host,
                0x10,
                None
            ),
            MsrOutcome::GeneralProtection
        );
    }

    /// One row of the doc's table: (first, last, read, write).
    fn parse_row(line: &str) -> (u32, u32, Action, Action) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let hex = |s: &str| {
            let s = s
                .trim()
                .trim_matches('`')
                .trim_start_matches("0x")
                .replace('_', "");
            u32::from_str_radix(&s, 16).unwrap_or_else(|_| panic!("bad MSR in {line}"))
        };
        let (first, last) = match cells[1].split_once('–') {
            Some((a, b)) => (hex(a), hex(b)),
            None => (hex(cells[1]), hex(cells[1])),
        };
        let action = |s: &str| match s {
            "pass" => Action::Pass,
            "emulate" => Action::Emulate,
            "checked" => Action::Checked,
            "refuse" => Action::Refuse,
            _ => panic!("bad action {s:?} in {line}"),
        };
        (first, last, action(cells[3]), action(cells[4]))
    }

    #[test]
    fn the_doc_table_is_the_code_table() {
        let doc = include_str!("../../../docs/msr-policy.md");
        let rows: Vec<_> = doc
            .lines()
            .filter(|l| l.starts_with("| `0x"))
            .map(parse_row)
            .collect();
        let code: Vec<_> = policy::RULES
            .iter()
            .map(|r| (r.first, r.last, r.read, r.write))
            .collect();
        for row in &rows {
            assert!(code.contains(row), "doc row {row:x?} is not in the code");
        }
        for rule in &code {
            assert!(rows.contains(rule), "code rule {rule:x?} is not in the doc");
        }
        assert_eq!(rows, code, "same order");

        let count = |f: &dyn Fn(&policy::Rule) -> bool| {
            policy::RULES
                .iter()
                .filter(|r| f(r))
                .map(|r| r.last - r.first + 1)
                .sum::<u32>()
        };
        let pass = Action::Pass;
        let both = count(&|r| r.read == pass && r.write == pass);
        let reads = count(&|r| r.read == pass && r.write != pass);
        let writes = count(&|r| r.read != pass && r.write == pass);
        let line = format!(
            "Pass-through count: {both} MSRs with no exit for reads or writes, \
             {reads} more with no exit for reads, {writes} more with no exit for writes."
        );
        assert!(doc.contains(&line), "the doc must say: {line}");
        let checked = Action::Checked;
        let line = format!(
            "Checked count: {} MSRs with `checked` reads, {} with `checked` writes; \
             an MSR no row lists is never `checked`.",
            count(&|r| r.read == checked),
            count(&|r| r.write == checked),
        );
        assert!(doc.contains(&line), "the doc must say: {line}");

        // MSRs no row lists: one default inside and outside the permission
        // map's ranges, and the doc names it.
        let unlisted = [
            0,
            0x1234,
            0xC001_1FFF,
            0x2000,
            0xC000_3000,
            0xC001_2000,
            u32::MAX,
        ];
        for index in unlisted {
            assert!(
                !policy::RULES
                    .iter()
                    .any(|r| r.first <= index && index <= r.last),
                "{index:#x} is listed"
            );
            assert_eq!(policy::rule(index), policy::default_rule(index));
        }
        let name = |a: Action| match a {
            Action::Pass => "pass",
            Action::Emulate => "emulate",
            Action::Checked => "checked",
            Action::Refuse => "refuse",
        };
        for index in unlisted {
            let d = policy::default_rule(index);
            let line = format!(
                "Default for MSRs no row lists, inside and outside the permission map's \
                 ranges: read `{}`, write `{}`.",
                name(d.read),
                name(d.write)
            );
            assert!(doc.contains(&line), "{index:#x}: the doc must say: {line}");
        }
    }
}
