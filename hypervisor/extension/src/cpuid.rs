//! What the root VM sees of CPUID: the real CPU, minus SVM (MicroV keeps it
//! for itself), plus MicroV's hypervisor leaves.

use microv_arch::cpuid::{
    CpuidResult, EXT1_ECX_SVM, LEAF1_ECX_HYPERVISOR, LEAF_HYPERVISOR, LEAF_HYPERVISOR_MAX,
    LEAF_SVM_FEATURES, MICROV_SIGNATURE,
};

/// The root's view of CPUID `leaf`, given what the real CPU answers.
pub fn root_view(leaf: u32, real: CpuidResult) -> CpuidResult {
    match leaf {
        1 => CpuidResult {
            ecx: real.ecx | LEAF1_ECX_HYPERVISOR,
            ..real
        },
        0x8000_0001 => CpuidResult {
            ecx: real.ecx & !EXT1_ECX_SVM,
            ..real
        },
        LEAF_SVM_FEATURES => CpuidResult::default(),
        LEAF_HYPERVISOR => CpuidResult {
            eax: LEAF_HYPERVISOR_MAX,
            ebx: MICROV_SIGNATURE[0],
            ecx: MICROV_SIGNATURE[1],
            edx: MICROV_SIGNATURE[2],
        },
        // No MicroV-specific features yet; the rest of the range is reserved.
        0x4000_0001..=0x4000_00ff => CpuidResult::default(),
        _ => real,
    }
}

/// True for leaves whose answer does not come from the real CPU.
pub fn is_synthetic(leaf: u32) -> bool {
    (LEAF_HYPERVISOR..=0x4000_00ff).contains(&leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: CpuidResult = CpuidResult {
        eax: u32::MAX,
        ebx: u32::MAX,
        ecx: u32::MAX,
        edx: u32::MAX,
    };

    #[test]
    fn hides_svm_and_sets_the_hypervisor_bit() {
        assert_eq!(root_view(0x8000_0001, ALL).ecx & EXT1_ECX_SVM, 0);
        assert_eq!(root_view(0x8000_0001, ALL).edx, u32::MAX);
        assert_eq!(root_view(LEAF_SVM_FEATURES, ALL), CpuidResult::default());
        assert_eq!(
            root_view(1, CpuidResult::default()).ecx,
            LEAF1_ECX_HYPERVISOR
        );
    }

    #[test]
    fn identifies_microv() {
        let r = root_view(LEAF_HYPERVISOR, ALL);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"MicroVMicroV");
        assert_eq!(r.eax, 0x4000_0001);
        assert_eq!(root_view(0x4000_0001, ALL), CpuidResult::default());
        assert!(
            is_synthetic(0x4000_0000) && !is_synthetic(0x3fff_ffff) && !is_synthetic(0x4000_0100)
        );
    }

    #[test]
    fn passes_other_leaves_through() {
        assert_eq!(root_view(0, ALL), ALL);
        assert_eq!(root_view(7, ALL), ALL);
    }
}
