//! Whether this CPU can run MicroV, checked before anything is allocated:
//! the same conditions, in the same order and with the same error codes, as
//! the Linux driver's check before a late launch (`mv_cpu_check`).

use microv_abi::StartError;
use microv_arch::cpuid::{CpuidResult, EXT1_ECX_SVM, LEAF_SVM_FEATURES, SVM_EDX_NP};
use microv_arch::msr::{efer, vm_cr};

/// The CPU's answers the check needs. `vm_cr` is asked only once CPUID has
/// shown SVM (reading VM_CR on a CPU without it faults).
pub trait Cpu {
    fn cpuid(&self, leaf: u32) -> CpuidResult;
    fn vm_cr(&self) -> u64;
    fn efer(&self) -> u64;
}

/// `Ok` if SVM with nested paging is there, enabled and unused.
pub fn check(cpu: &dyn Cpu) -> Result<(), StartError> {
    let svm = cpu.cpuid(0x8000_0001).ecx & EXT1_ECX_SVM != 0;
    let max = cpu.cpuid(0x8000_0000).eax;
    if !svm || max < LEAF_SVM_FEATURES || cpu.cpuid(LEAF_SVM_FEATURES).edx & SVM_EDX_NP == 0 {
        return Err(StartError::SvmUnsupported);
    }
    if cpu.vm_cr() & vm_cr::SVMDIS != 0 {
        return Err(StartError::SvmDisabled);
    }
    if cpu.efer() & efer::SVME != 0 {
        return Err(StartError::SvmInUse);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    struct Fake {
        svm: bool,
        max: u32,
        np: bool,
        vm_cr: u64,
        efer: u64,
        vm_cr_reads: Cell<u32>,
    }

    impl Fake {
        fn amd() -> Fake {
            Fake {
                svm: true,
                max: 0x8000_0021,
                np: true,
                vm_cr: 0,
                efer: efer::LME | efer::LMA,
                vm_cr_reads: Cell::new(0),
            }
        }
    }

    impl Cpu for Fake {
        fn cpuid(&self, leaf: u32) -> CpuidResult {
            let mut r = CpuidResult::default();
            match leaf {
                0x8000_0000 => r.eax = self.max,
                0x8000_0001 if self.svm => r.ecx = EXT1_ECX_SVM,
                LEAF_SVM_FEATURES if self.np => r.edx = SVM_EDX_NP,
                _ => {}
            }
            r
        }
        fn vm_cr(&self) -> u64 {
            self.vm_cr_reads.set(self.vm_cr_reads.get() + 1);
            self.vm_cr
        }
        fn efer(&self) -> u64 {
            self.efer
        }
    }

    #[test]
    fn an_amd_cpu_with_svm_passes() {
        assert_eq!(check(&Fake::amd()), Ok(()));
    }

    #[test]
    fn each_missing_piece_has_its_error() {
        let no_svm = Fake {
            svm: false,
            ..Fake::amd()
        };
        assert_eq!(check(&no_svm), Err(StartError::SvmUnsupported));
        assert_eq!(
            no_svm.vm_cr_reads.get(),
            0,
            "VM_CR read on a CPU without SVM"
        );
        let old = Fake {
            max: 0x8000_0008,
            ..Fake::amd()
        };
        assert_eq!(check(&old), Err(StartError::SvmUnsupported));
        let no_np = Fake {
            np: false,
            ..Fake::amd()
        };
        assert_eq!(check(&no_np), Err(StartError::SvmUnsupported));
        let disabled = Fake {
            vm_cr: vm_cr::SVMDIS | vm_cr::LOCK,
            ..Fake::amd()
        };
        assert_eq!(check(&disabled), Err(StartError::SvmDisabled));
        let in_use = Fake {
            efer: efer::SVME,
            ..Fake::amd()
        };
        assert_eq!(check(&in_use), Err(StartError::SvmInUse));
    }
}
