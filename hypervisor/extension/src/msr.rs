//! The MSRs MicroV intercepts for the root VM: EFER (to hide and protect
//! SVME) and the SVM control MSRs (SVM looks disabled and locked).

use microv_arch::msr::{self, efer, vm_cr};
use microv_arch::svm;

/// What a guest MSR access turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrOutcome {
    /// Reads return this value.
    Value(u64),
    /// A write is accepted; the guest's EFER becomes this value.
    SetEfer(u64),
    /// The access raises #GP, as on a CPU without SVM.
    GeneralProtection,
    /// Do the access on the real CPU and give the root its result: MSRs the
    /// permission map cannot cover exit on every access (for example AMD's
    /// scalable machine-check registers, which Linux polls).
    PassThrough,
}

/// What to do with an access to an MSR MicroV has no policy for.
fn unhandled(index: u32) -> MsrOutcome {
    if svm::msr_always_exits(index) {
        MsrOutcome::PassThrough
    } else {
        // Inside the map's ranges only the intercepted MSRs exit.
        MsrOutcome::GeneralProtection
    }
}

/// The MSRs whose accesses exit (read and write).
pub const INTERCEPTED: [u32; 3] = [msr::EFER, msr::VM_CR, msr::VM_HSAVE_PA];

/// A read of `index` by the root, whose real EFER is `guest_efer`.
pub fn read(index: u32, guest_efer: u64) -> MsrOutcome {
    match index {
        msr::EFER => MsrOutcome::Value(guest_efer & !efer::SVME),
        msr::VM_CR => MsrOutcome::Value(vm_cr::SVMDIS | vm_cr::LOCK),
        msr::VM_HSAVE_PA => MsrOutcome::Value(0),
        _ => unhandled(index),
    }
}

/// EFER bits a guest may write (SCE, LME, NXE, LMSLE, FFXSR, TCE, …): all
/// but SVME, LMA (read-only) and reserved bits.
const EFER_WRITABLE: u64 = efer::SCE | efer::LME | efer::NXE | (1 << 13) | (1 << 14) | (1 << 15);

/// A write of `value` to `index` by the root. `paging` is CR0.PG.
pub fn write(index: u32, value: u64, guest_efer: u64, paging: bool) -> MsrOutcome {
    match index {
        msr::EFER => {
            if value & efer::SVME != 0 || value & !(EFER_WRITABLE | efer::LMA) != 0 {
                return MsrOutcome::GeneralProtection;
            }
            // Changing LME with paging on faults natively too.
            if paging && (value ^ guest_efer) & efer::LME != 0 {
                return MsrOutcome::GeneralProtection;
            }
            MsrOutcome::SetEfer((value & EFER_WRITABLE) | (guest_efer & efer::LMA) | efer::SVME)
        }
        msr::VM_CR | msr::VM_HSAVE_PA => MsrOutcome::GeneralProtection,
        _ => unhandled(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_EFER: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;

    #[test]
    fn efer_reads_hide_svme() {
        assert_eq!(
            read(msr::EFER, LINUX_EFER),
            MsrOutcome::Value(LINUX_EFER & !efer::SVME)
        );
    }

    #[test]
    fn svm_msrs_say_disabled() {
        assert_eq!(
            read(msr::VM_CR, 0),
            MsrOutcome::Value(vm_cr::SVMDIS | vm_cr::LOCK)
        );
        assert_eq!(read(msr::VM_HSAVE_PA, 0), MsrOutcome::Value(0));
        assert_eq!(write(msr::VM_CR, 0, 0, true), MsrOutcome::GeneralProtection);
        assert_eq!(
            write(msr::VM_HSAVE_PA, 0x1000, 0, true),
            MsrOutcome::GeneralProtection
        );
        assert_eq!(read(0x1234, 0), MsrOutcome::GeneralProtection);
        assert_eq!(read(0xc000_2001, 0), MsrOutcome::PassThrough);
        assert_eq!(write(0xc000_2001, 5, 0, true), MsrOutcome::PassThrough);
        assert_eq!(write(0x1234, 5, 0, true), MsrOutcome::GeneralProtection);
    }

    #[test]
    fn efer_writes_keep_svme_and_refuse_setting_it() {
        let visible = LINUX_EFER & !efer::SVME;
        assert_eq!(
            write(msr::EFER, visible, LINUX_EFER, true),
            MsrOutcome::SetEfer(LINUX_EFER)
        );
        assert_eq!(
            write(msr::EFER, visible | efer::SVME, LINUX_EFER, true),
            MsrOutcome::GeneralProtection
        );
        assert_eq!(
            write(msr::EFER, visible & !efer::NXE, LINUX_EFER, true),
            MsrOutcome::SetEfer(LINUX_EFER & !efer::NXE)
        );
        assert_eq!(
            write(msr::EFER, visible & !efer::LME, LINUX_EFER, true),
            MsrOutcome::GeneralProtection
        );
        assert_eq!(
            write(msr::EFER, visible | (1 << 20), LINUX_EFER, true),
            MsrOutcome::GeneralProtection
        );
        // Without paging LME may change; LMA stays what the CPU says.
        assert_eq!(
            write(msr::EFER, efer::SCE, efer::SVME, false),
            MsrOutcome::SetEfer(efer::SCE | efer::SVME)
        );
    }
}
