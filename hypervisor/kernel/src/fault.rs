//! Describing a fault taken in host mode, for the loader and the log.

use microv_abi::launch::FaultRecord;
use microv_abi::StartError;

/// What the exception stubs push, in memory order from the stack pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExceptionFrame {
    /// R15 … RAX as pushed by the common stub (R15 at the lowest address).
    pub gprs: [u64; 15],
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == 22 * 8);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, vector) == 15 * 8);

const PAGE_FAULT: u64 = 14;
const GENERAL_PROTECTION: u64 = 13;

/// True if `frame` is a #GP in ring 0 on one of the `fixable` instruction
/// addresses (the pass-through `rdmsr`/`wrmsr`), which resume at a fix-up.
pub fn is_msr_fixup(frame: &ExceptionFrame, fixable: &[u64]) -> bool {
    frame.vector == GENERAL_PROTECTION && frame.cs & 3 == 0 && fixable.contains(&frame.rip)
}

/// True if the extension may read (`write` false) or write MSR `index` on
/// the real CPU on the root's behalf: only what the shared MSR policy marks
/// `Checked`, never an MSR the microkernel owns (EFER, the syscall and
/// segment-base MSRs, PAT, XSS, the SVM MSRs, …) and never a write of a
/// platform MSR that steers the hypervisor's memory, caches, clock or code.
/// The extension's permission map and exit handling use the same table.
pub fn msr_passthrough_allowed(index: u32, write: bool) -> bool {
    microv_arch::msr::policy::real_access_allowed(index, write)
}

/// The fault record for an exception taken with `frame` and CR2 `cr2`.
pub fn record(frame: &ExceptionFrame, cr2: u64) -> FaultRecord {
    let cpl = frame.cs & 3;
    let code = if cpl == 3 {
        StartError::ExtensionFault
    } else {
        StartError::KernelFault
    };
    FaultRecord {
        code: code as u32,
        vector: frame.vector as u32,
        error_code: frame.error_code,
        rip: frame.rip,
        // CR2 means something only for a page fault; otherwise it is stale.
        cr2: if frame.vector == PAGE_FAULT { cr2 } else { 0 },
        cpl,
        detail: 0,
    }
}

/// Short exception name for the log.
pub fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        6 => "#UD invalid opcode",
        8 => "#DF double fault",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD error",
        _ => "exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring3_faults_are_extension_faults() {
        let frame = ExceptionFrame {
            vector: 14,
            error_code: 4,
            rip: 0x4000_1000,
            cs: 0x2b,
            ..Default::default()
        };
        let r = record(&frame, 0xdead);
        assert_eq!(r.code, StartError::ExtensionFault as u32);
        assert_eq!(
            (r.vector, r.error_code, r.rip, r.cr2, r.cpl),
            (14, 4, 0x4000_1000, 0xdead, 3)
        );
    }

    #[test]
    fn ring0_faults_are_kernel_faults() {
        let frame = ExceptionFrame {
            vector: 13,
            cs: 0x08,
            ..Default::default()
        };
        assert_eq!(record(&frame, 0).code, StartError::KernelFault as u32);
        assert_eq!(
            record(&frame, 0x7ffe_0000).cr2,
            0,
            "CR2 is stale except for #PF"
        );
    }

    #[test]
    fn only_ring0_gp_on_the_msr_instructions_is_fixed_up() {
        let at = |vector, cs, rip| ExceptionFrame {
            vector,
            cs,
            rip,
            ..Default::default()
        };
        let fixable = [0x1000, 0x2000];
        assert!(is_msr_fixup(&at(13, 0x08, 0x2000), &fixable));
        assert!(!is_msr_fixup(&at(13, 0x08, 0x3000), &fixable));
        assert!(!is_msr_fixup(&at(14, 0x08, 0x1000), &fixable));
        assert!(!is_msr_fixup(&at(13, 0x2b, 0x1000), &fixable));
    }

    #[test]
    fn passthrough_is_limited_to_checked_msrs() {
        use microv_arch::msr;
        for write in [false, true] {
            assert!(msr_passthrough_allowed(0xc000_2000, write), "SMCA bank 0");
            assert!(msr_passthrough_allowed(0x401, write), "MC0_STATUS");
            for (index, what) in [
                (msr::EFER, "EFER"),
                (msr::STAR, "STAR"),
                (msr::LSTAR, "LSTAR"),
                (msr::CSTAR, "CSTAR"),
                (msr::SFMASK, "SFMASK"),
                (msr::FS_BASE, "FS_BASE"),
                (msr::GS_BASE, "GS_BASE"),
                (msr::KERNEL_GS_BASE, "KERNEL_GS_BASE"),
                (msr::SYSENTER_CS, "SYSENTER_CS"),
                (msr::SYSENTER_EIP, "SYSENTER_EIP"),
                (msr::VM_CR, "VM_CR"),
                (msr::VM_HSAVE_PA, "VM_HSAVE_PA"),
                (msr::PAT, "PAT"),
                (msr::XSS, "XSS"),
                (msr::DEBUGCTL, "DEBUGCTL"),
                (msr::PATCH_LOADER, "PATCH_LOADER"),
                (msr::SMM_CTL, "SMM_CTL"),
                (msr::HYPERVISOR_FIRST, "an outer hypervisor's MSRs"),
                (msr::SPEC_CTRL, "passes without exits"),
                (0x1234, "unlisted inside the map"),
            ] {
                assert!(!msr_passthrough_allowed(index, write), "{what}");
            }
        }
        for (index, what) in [
            (msr::APIC_BASE, "APIC_BASE"),
            (msr::MTRR_FIRST, "MTRR"),
            (msr::MTRR_DEF_TYPE, "MTRRdefType"),
            (msr::SYSCFG, "SYSCFG"),
            (msr::HWCR, "HWCR"),
            (msr::TOP_MEM, "TOP_MEM"),
            (msr::TOP_MEM2, "TOP_MEM2"),
            (msr::IORR_FIRST, "IORR"),
            (msr::SMM_BASE + 1, "SMM_ADDR"),
            (msr::SMM_MASK, "SMM_MASK"),
            (msr::TSC, "TSC"),
            (msr::TSC_ADJUST, "TSC_ADJUST"),
        ] {
            assert!(!msr_passthrough_allowed(index, true), "{what} write");
        }
        // Reads the extension needs to check a write against.
        assert!(msr_passthrough_allowed(msr::APIC_BASE, false));
        assert!(msr_passthrough_allowed(msr::HWCR, false));
        assert!(msr_passthrough_allowed(msr::LS_CFG, true));
    }

    #[test]
    fn names() {
        assert_eq!(vector_name(14), "#PF page fault");
        assert_eq!(vector_name(6), "#UD invalid opcode");
        assert_eq!(vector_name(200), "exception");
        for v in [0, 1, 2, 3, 8, 12, 13, 16, 17, 18, 19] {
            assert!(
                vector_name(v).len() > 2 && vector_name(v) != "exception",
                "{v}"
            );
        }
    }
}
