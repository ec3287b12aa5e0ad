//! What the root VM sees of CPUID: the real CPU, minus SVM and VMX (MicroV
//! keeps them for itself), plus MicroV's hypervisor leaves.

pub use microv_arch::cpuid::CpuidResult;
use microv_arch::cpuid::{
    EXT1_ECX_SVM, LEAF1_ECX_HYPERVISOR, LEAF1_ECX_VMX, LEAF_HYPERVISOR, LEAF_HYPERVISOR_MAX, LEAF_HYPERVISOR_TIMING,
    LEAF_SVM_FEATURES, MICROV_SIGNATURE,
};

/// The root's view of CPUID `leaf`, given what the real CPU answers and
/// the TSC frequency MicroV reports (kHz, 0 if unknown).
pub fn root_view(leaf: u32, real: CpuidResult, tsc_khz: u32) -> CpuidResult {
    match leaf {
        1 => CpuidResult {
            ecx: (real.ecx | LEAF1_ECX_HYPERVISOR) & !LEAF1_ECX_VMX,
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
        // The TSC frequency, so guests need not calibrate it (there is no
        // PIT, HPET or PM timer to calibrate against). The APIC timer runs
        // in TSC-deadline mode only: no bus frequency.
        LEAF_HYPERVISOR_TIMING => CpuidResult {
            eax: tsc_khz,
            ..CpuidResult::default()
        },
        // No MicroV-specific features yet; the rest of the range is reserved.
        0x4000_0001..=0x4000_00ff => CpuidResult::default(),
        _ => real,
    }
}

/// Leaf 1 ECX: MONITOR/MWAIT, x2APIC, TSC-deadline timer. EDX: MCE, MTRR,
/// MCA.
const LEAF1_ECX_MONITOR: u32 = 1 << 3;
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_EDX_MCE: u32 = 1 << 7;
const LEAF1_EDX_MTRR: u32 = 1 << 12;
const LEAF1_EDX_MCA: u32 = 1 << 14;
/// Leaf 0x8000_0001 ECX: MONITORX.
const EXT1_ECX_MONITORX: u32 = 1 << 29;

/// A micro-VM vCPU's view: the root's, with the x2APIC and TSC-deadline
/// timer MicroV emulates, the vCPU's own APIC ID, and without what it does
/// not model (MONITOR/MWAIT, which would idle the CPU outside the
/// scheduler's sight; machine-check architecture and MTRRs, whose MSRs a
/// guest cannot reach). RDTSCP and RDPID are the CPU's: they read the
/// guest's own TSC_AUX (`kernel::tsc_aux`).
pub fn guest_view(leaf: u32, subleaf: u32, root: CpuidResult, apic_id: u32) -> CpuidResult {
    match leaf {
        1 => CpuidResult {
            ebx: (root.ebx & 0x00ff_ffff) | (apic_id << 24),
            ecx: (root.ecx | LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE) & !LEAF1_ECX_MONITOR,
            edx: root.edx & !(LEAF1_EDX_MCE | LEAF1_EDX_MTRR | LEAF1_EDX_MCA),
            ..root
        },
        5 => CpuidResult::default(),
        // Extended topology: the x2APIC ID in EDX of every subleaf.
        0xb | 0x1f => CpuidResult {
            edx: apic_id,
            ..if subleaf < 2 { root } else { CpuidResult::default() }
        },
        0x8000_0001 => CpuidResult {
            ecx: root.ecx & !EXT1_ECX_MONITORX,
            ..root
        },
        _ => root,
    }
}

/// True if the real CPU has the TSC_AUX MSR (RDTSCP or RDPID): then a
/// guest has its own, and sees RDTSCP and RDPID as the CPU has them.
pub fn has_tsc_aux(host: &mut dyn crate::host::Host) -> bool {
    let leaf7 = host.cpuid(7, 0).ecx;
    let ext1 = host.cpuid(0x8000_0001, 0).edx;
    microv_arch::cpuid::has_tsc_aux(leaf7, ext1)
}

/// Leaf 1 ECX bit 27 (OSXSAVE) and leaf 7 ECX bit 4 (OSPKE) mirror CR4.
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
/// Leaf 0xD, and the size of the legacy area plus the XSAVE header.
const LEAF_XSAVE: u32 = 0xd;
const XSAVE_BASE_SIZE: u32 = 576;

/// The root's state that some CPUID bits depend on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dynamic {
    pub cr4: u64,
    pub xcr0: u64,
    /// IA32_XSS (the supervisor XSAVE components).
    pub xss: u64,
}

/// Bits that describe the *current* CPU state. The CPU answers CPUID in
/// host mode, with MicroV's CR4 and XCR0; these are recomputed for the
/// root's: OSXSAVE, OSPKE and the XSAVE area sizes of leaf 0xD (from the
/// per-component sizes `component(i)` = CPUID 0xD.i).
pub fn dynamic_bits(
    leaf: u32,
    subleaf: u32,
    r: CpuidResult,
    root: &Dynamic,
    component: &mut dyn FnMut(u32) -> CpuidResult,
) -> CpuidResult {
    let mirror = |reg: u32, bit: u32, on: bool| if on { reg | bit } else { reg & !bit };
    match (leaf, subleaf) {
        (1, _) => CpuidResult {
            ecx: mirror(r.ecx, LEAF1_ECX_OSXSAVE, root.cr4 & CR4_OSXSAVE != 0),
            ..r
        },
        (7, 0) => CpuidResult {
            ecx: mirror(r.ecx, LEAF7_ECX_OSPKE, root.cr4 & CR4_PKE != 0),
            ..r
        },
        (LEAF_XSAVE, 0) => CpuidResult {
            ebx: standard_size(root.xcr0, component),
            ..r
        },
        (LEAF_XSAVE, 1) => CpuidResult {
            ebx: compacted_size(root.xcr0 | root.xss, component),
            ..r
        },
        _ => r,
    }
}

/// The extended components (2..63) set in `mask`.
fn components(mask: u64) -> impl Iterator<Item = u32> {
    (2..64u32).filter(move |i| mask & (1u64 << i) != 0)
}

/// Bytes of a standard-format XSAVE area for `mask`: the end of the
/// furthest component (CPUID 0xD.i: EAX size, EBX offset).
fn standard_size(mask: u64, component: &mut dyn FnMut(u32) -> CpuidResult) -> u32 {
    components(mask)
        .map(|i| {
            let c = component(i);
            c.ebx.saturating_add(c.eax)
        })
        .fold(XSAVE_BASE_SIZE, u32::max)
}

/// Bytes of a compacted XSAVE area for `mask`: components packed in order,
/// those with CPUID 0xD.i ECX bit 1 aligned to 64 bytes.
fn compacted_size(mask: u64, component: &mut dyn FnMut(u32) -> CpuidResult) -> u32 {
    components(mask).fold(XSAVE_BASE_SIZE, |size, i| {
        let c = component(i);
        let start = if c.ecx & 2 != 0 { size.div_ceil(64) * 64 } else { size };
        start.saturating_add(c.eax)
    })
}

/// True for leaves whose answer does not come from the real CPU.
pub fn is_synthetic(leaf: u32) -> bool {
    (LEAF_HYPERVISOR..=0x4000_00ff).contains(&leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_sees_its_apic_and_not_what_microv_does_not_model() {
        let all = CpuidResult { eax: 7, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX };
        let l1 = guest_view(1, 0, CpuidResult { ecx: 0, ..all }, 3);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!(l1.ebx & 0xff_ffff, 0xff_ffff);
        assert_eq!(l1.ecx, LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE);
        assert_eq!(l1.edx & (LEAF1_EDX_MCE | LEAF1_EDX_MTRR | LEAF1_EDX_MCA), 0);
        assert_eq!(guest_view(1, 0, all, 0).ecx & LEAF1_ECX_MONITOR, 0);
        assert_eq!(guest_view(5, 0, all, 0), CpuidResult::default());
        assert_eq!(guest_view(0xb, 1, all, 9).edx, 9);
        assert_eq!(guest_view(0xb, 1, all, 9).eax, 7);
        assert_eq!(guest_view(0xb, 2, all, 9), CpuidResult { edx: 9, ..Default::default() });
        assert_eq!(guest_view(0x8000_0001, 0, all, 0).ecx & EXT1_ECX_MONITORX, 0);
        // RDTSCP and RDPID read the guest's own TSC_AUX: as the CPU has them.
        assert_eq!(guest_view(0x8000_0001, 0, all, 0).edx, all.edx);
        assert_eq!(guest_view(7, 0, all, 0), all);
        assert_eq!(guest_view(7, 1, all, 0), all);
        assert_eq!(guest_view(0xd, 0, all, 0), all);
    }

    /// Zen-like XSAVE components: AVX (256 bytes at 576), PKRU (8 at 2432,
    /// aligned in compacted form).
    fn zen_component(i: u32) -> CpuidResult {
        match i {
            2 => CpuidResult { eax: 256, ebx: 576, ..Default::default() },
            9 => CpuidResult { eax: 8, ebx: 2432, ecx: 2, ..Default::default() },
            11 => CpuidResult { eax: 16, ebx: 0, ecx: 0, ..Default::default() },
            _ => CpuidResult::default(),
        }
    }

    #[test]
    fn state_bits_follow_the_root_not_the_host() {
        let root = Dynamic { cr4: CR4_OSXSAVE, xcr0: 0x207, xss: 1 << 11 };
        let r = dynamic_bits(1, 0, CpuidResult::default(), &root, &mut zen_component);
        assert_eq!(r.ecx, LEAF1_ECX_OSXSAVE);
        let r = dynamic_bits(1, 0, ALL, &Dynamic::default(), &mut zen_component);
        assert_eq!(r.ecx, !LEAF1_ECX_OSXSAVE);
        let r = dynamic_bits(7, 0, ALL, &root, &mut zen_component);
        assert_eq!(r.ecx, !LEAF7_ECX_OSPKE, "no PKE in the root's CR4");
        let pke = Dynamic { cr4: CR4_PKE, ..root };
        assert_eq!(dynamic_bits(7, 0, CpuidResult::default(), &pke, &mut zen_component).ecx, LEAF7_ECX_OSPKE);
        assert_eq!(dynamic_bits(7, 1, ALL, &pke, &mut zen_component), ALL);
        assert_eq!(dynamic_bits(0xd, 0, ALL, &root, &mut zen_component).ebx, 2440);
        let sse_only = Dynamic { xcr0: 3, ..root };
        assert_eq!(dynamic_bits(0xd, 0, ALL, &sse_only, &mut zen_component).ebx, 576);
        // Compacted: 576 + 256 (AVX) = 832 (already 64-byte aligned for
        // PKRU) + 8, then the supervisor component 11 (16 bytes).
        assert_eq!(dynamic_bits(0xd, 1, ALL, &root, &mut zen_component).ebx, 856);
        let unaligned = Dynamic { xcr0: 0x201 | 1 << 11, ..root };
        let mut comp = |i: u32| if i == 11 { CpuidResult { eax: 4, ..Default::default() } } else { zen_component(i) };
        // 576 + 4 (component 11 comes after 9 in order, so PKRU first).
        assert_eq!(dynamic_bits(0xd, 1, ALL, &unaligned, &mut comp).ebx, 576 + 8 + 4);
        assert_eq!(dynamic_bits(0xd, 2, ALL, &root, &mut zen_component), ALL);
        assert_eq!(dynamic_bits(0x8000_0001, 0, ALL, &root, &mut zen_component), ALL);
    }

    const ALL: CpuidResult = CpuidResult {
        eax: u32::MAX,
        ebx: u32::MAX,
        ecx: u32::MAX,
        edx: u32::MAX,
    };

    #[test]
    fn hides_svm_and_sets_the_hypervisor_bit() {
        assert_eq!(root_view(0x8000_0001, ALL, 2_000_000).ecx & EXT1_ECX_SVM, 0);
        assert_eq!(root_view(0x8000_0001, ALL, 2_000_000).edx, u32::MAX);
        assert_eq!(root_view(LEAF_SVM_FEATURES, ALL, 2_000_000), CpuidResult::default());
        assert_eq!(root_view(1, ALL, 2_000_000).ecx & LEAF1_ECX_VMX, 0, "VMX hidden");
        assert_eq!(root_view(1, ALL, 2_000_000).ecx | LEAF1_ECX_VMX, u32::MAX);
        assert_eq!(
            root_view(1, CpuidResult::default(), 2_000_000).ecx,
            LEAF1_ECX_HYPERVISOR
        );
    }

    #[test]
    fn identifies_microv() {
        let r = root_view(LEAF_HYPERVISOR, ALL, 2_000_000);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        assert_eq!(&sig, b"MicroVMicroV");
        assert_eq!(r.eax, 0x4000_0010);
        assert_eq!(root_view(0x4000_0001, ALL, 2_000_000), CpuidResult::default());
        let timing = root_view(0x4000_0010, ALL, 2_000_000);
        assert_eq!((timing.eax, timing.ebx, timing.ecx, timing.edx), (2_000_000, 0, 0, 0));
        assert!(
            is_synthetic(0x4000_0000) && !is_synthetic(0x3fff_ffff) && !is_synthetic(0x4000_0100)
        );
    }

    #[test]
    fn passes_other_leaves_through() {
        assert_eq!(root_view(0, ALL, 2_000_000), ALL);
        assert_eq!(root_view(7, ALL, 2_000_000), ALL);
    }
}
