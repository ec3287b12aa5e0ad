//! CPUID leaves and bits MicroV reads or changes.

/// Leaf 1 ECX: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: XSAVE supported.
pub const LEAF1_ECX_XSAVE: u32 = 1 << 26;
/// Leaf 1 ECX: Intel VMX.
pub const LEAF1_ECX_VMX: u32 = 1 << 5;
/// Leaf 1 ECX: OS enabled XSAVE (mirrors CR4.OSXSAVE).
pub const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// Leaf 0x8000_0001 ECX: SVM.
pub const EXT1_ECX_SVM: u32 = 1 << 2;
/// Leaf 0x8000_0001 EDX: 1 GiB pages.
pub const EXT1_EDX_PAGE1GB: u32 = 1 << 26;
/// Leaf 0x8000_0001 EDX: RDTSCP (and with it the TSC_AUX MSR).
pub const EXT1_EDX_RDTSCP: u32 = 1 << 27;
/// Leaf 7 (subleaf 0) ECX: RDPID (which also reads TSC_AUX).
pub const LEAF7_ECX_RDPID: u32 = 1 << 22;

/// True if a CPU with leaf 7 ECX `leaf7_ecx` and leaf 0x8000_0001 EDX
/// `ext1_edx` has the TSC_AUX MSR: it comes with RDTSCP or RDPID.
pub const fn has_tsc_aux(leaf7_ecx: u32, ext1_edx: u32) -> bool {
    leaf7_ecx & LEAF7_ECX_RDPID != 0 || ext1_edx & EXT1_EDX_RDTSCP != 0
}
/// Leaf 0x8000_000A: SVM revision and features.
pub const LEAF_SVM_FEATURES: u32 = 0x8000_000A;

/// The virtualization extension a CPU offers: AMD's SVM, Intel's VMX, or
/// neither (MicroV picks its world switch from this at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtualization {
    Svm,
    Vmx,
    None,
}

/// What `cpuid(leaf, subleaf)` says of the CPU's virtualization extension.
pub fn virtualization(cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult) -> Virtualization {
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && cpuid(0x8000_0001, 0).ecx & EXT1_ECX_SVM != 0 {
        Virtualization::Svm
    } else if cpuid(1, 0).ecx & LEAF1_ECX_VMX != 0 {
        Virtualization::Vmx
    } else {
        Virtualization::None
    }
}
/// Leaf 0x8000_000A EDX: nested paging.
pub const SVM_EDX_NP: u32 = 1 << 0;
/// Leaf 0x8000_0008: address sizes (EAX 7:0 physical bits).
pub const LEAF_ADDRESS_SIZES: u32 = 0x8000_0008;
/// First hypervisor leaf; MicroV answers it with its signature.
pub const LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// Highest hypervisor leaf MicroV serves.
pub const LEAF_HYPERVISOR_MAX: u32 = 0x4000_0010;
/// The hypervisor timing leaf (the VMware/KVM convention): EAX = TSC
/// frequency in kHz, EBX = local APIC timer frequency in kHz (0: none).
pub const LEAF_HYPERVISOR_TIMING: u32 = 0x4000_0010;
/// Signature returned in EBX, ECX, EDX of leaf 0x4000_0000: "MicroVMicroV".
pub const MICROV_SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"Micr"),
    u32::from_le_bytes(*b"oVMi"),
    u32::from_le_bytes(*b"croV"),
];

/// Result registers of one CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_svm_from_vmx() {
        let cpu = |ext_max: u32, ext_ecx: u32, l1_ecx: u32| {
            move |leaf: u32, _| match leaf {
                0x8000_0000 => CpuidResult { eax: ext_max, ..Default::default() },
                0x8000_0001 => CpuidResult { ecx: ext_ecx, ..Default::default() },
                1 => CpuidResult { ecx: l1_ecx, ..Default::default() },
                _ => CpuidResult::default(),
            }
        };
        assert_eq!(virtualization(&mut cpu(0x8000_0020, EXT1_ECX_SVM, 0)), Virtualization::Svm);
        assert_eq!(virtualization(&mut cpu(0x8000_0008, 0, LEAF1_ECX_VMX)), Virtualization::Vmx);
        assert_eq!(virtualization(&mut cpu(0x8000_0000, EXT1_ECX_SVM, 0)), Virtualization::None);
        assert_eq!(virtualization(&mut cpu(0x8000_0008, 0, 0)), Virtualization::None);
    }
}
