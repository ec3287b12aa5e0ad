//! What MicroV's backend reports as its supported CPUID.
//!
//! MicroV's extension owns a micro VM's CPUID: it answers the guest's
//! `cpuid` itself, filtering the real CPU's values, and the ABI has no way
//! for the VMM to hand it a table (so [`super::vcpu::MicrovVcpu`]'s
//! `set_cpuid` is a no-op). This list is therefore informational: the CPU
//! as the VMM sees it (the root VM's view, already filtered by MicroV when
//! it runs), enumerated leaf by leaf, minus what no micro VM gets (VMX,
//! SVM: MicroV does not nest), plus the TSC-deadline timer MicroV emulates.
//! The hypervisor range (0x4000_0000) is left out: it is MicroV's to fill.

use core::arch::x86_64::{__cpuid_count, CpuidResult};

use crate::backend::CpuidEntry;
use crate::boot::cpuid::{EXT1_ECX_SVM, LEAF1_ECX_TSC_DEADLINE, LEAF1_ECX_VMX};

/// Subleaves tried per indexed leaf.
const MAX_SUBLEAVES: u32 = 64;
/// Leaves tried per range, whatever its maximum claims.
const MAX_LEAVES: u32 = 0x100;

/// Leaves whose answer depends on ECX.
fn indexed(function: u32) -> bool {
    matches!(
        function,
        4 | 7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x20
            | 0x23
            | 0x24
            | 0x8000_001d
            | 0x8000_0020
            | 0x8000_0026
    )
}

fn entry(function: u32, index: u32, indexed: bool, r: CpuidResult) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        indexed,
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Every basic and extended leaf `cpuid` answers, with their subleaves:
/// cache leaves (4, 0x8000_001D) up to the first null cache, topology
/// leaves (0xB, 0x1F) up to and including the first invalid level, others
/// the subleaves that are not all zero (subleaf 0 always).
pub fn enumerate(cpuid: impl Fn(u32, u32) -> CpuidResult) -> Vec<CpuidEntry> {
    let mut out = Vec::new();
    for base in [0u32, 0x8000_0000] {
        let max = cpuid(base, 0).eax;
        if max < base {
            continue;
        }
        let last = max.min(base + MAX_LEAVES - 1);
        for function in base..=last {
            if !indexed(function) {
                out.push(entry(function, 0, false, cpuid(function, 0)));
                continue;
            }
            for index in 0..MAX_SUBLEAVES {
                let r = cpuid(function, index);
                match function {
                    4 | 0x8000_001d if r.eax & 0x1f == 0 => break,
                    0xb | 0x1f => {
                        out.push(entry(function, index, true, r));
                        if (r.ecx >> 8) & 0xff == 0 {
                            break;
                        }
                    }
                    _ if index > 0 && (r.eax | r.ebx | r.ecx | r.edx) == 0 => {}
                    _ => out.push(entry(function, index, true, r)),
                }
            }
        }
    }
    out
}

/// This CPU's leaves, adjusted for micro VMs.
pub fn supported() -> Vec<CpuidEntry> {
    let mut entries = enumerate(__cpuid_count);
    for e in &mut entries {
        match e.function {
            1 => e.ecx = (e.ecx & !LEAF1_ECX_VMX) | LEAF1_ECX_TSC_DEADLINE,
            0x8000_0001 => e.ecx &= !EXT1_ECX_SVM,
            _ => {}
        }
    }
    entries
}

/// The TSC frequency in kHz MicroV reports in its timing leaf (0 if this
/// is not MicroV or it does not know). Root user space sees MicroV's leaves.
pub fn tsc_khz() -> u32 {
    let sig = core::arch::x86_64::__cpuid(0x4000_0000);
    let microv = [sig.ebx, sig.ecx, sig.edx] == microv_abi_signature();
    if !microv || sig.eax < 0x4000_0010 {
        return 0;
    }
    core::arch::x86_64::__cpuid(0x4000_0010).eax
}

fn microv_abi_signature() -> [u32; 3] {
    let word = |b: &[u8; 4]| u32::from_le_bytes(*b);
    [word(b"Micr"), word(b"oVMi"), word(b"croV")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidResult {
        CpuidResult { eax, ebx, ecx, edx }
    }

    /// A small CPU: basic leaves to 0xb, extended to 0x8000_0001.
    fn fake(function: u32, index: u32) -> CpuidResult {
        match (function, index) {
            (0, _) => r(0xb, 1, 2, 3),
            (1, _) => r(0x10, 0, 0, 0),
            (4, 0..=2) => r(0x21 + index, 0, 0, 0),
            (7, 0) => r(1, 0xff, 0, 0),
            (7, 1) => r(0x10, 0, 0, 0),
            (0xb, 0) => r(1, 2, 0x100, 0),
            (0xb, 1) => r(4, 8, 0x201, 0),
            (0xb, i) => r(0, 0, i, 0),
            (0x8000_0000, _) => r(0x8000_0001, 0, 0, 0),
            (0x8000_0001, _) => r(0, 0, 0xffff_ffff, 0),
            _ => r(0, 0, 0, 0),
        }
    }

    #[test]
    fn enumerates_leaves_and_their_subleaves() {
        let v = enumerate(fake);
        let ids: Vec<(u32, u32)> = v.iter().map(|e| (e.function, e.index)).collect();
        let mut want: Vec<(u32, u32)> = (0..=0xb).map(|f| (f, 0)).collect();
        want.retain(|&(f, _)| !matches!(f, 4 | 7 | 0xb));
        for (i, f) in [
            (0, 4),
            (1, 4),
            (2, 4),
            (0, 7),
            (1, 7),
            (0, 0xb),
            (1, 0xb),
            (2, 0xb),
        ] {
            want.push((f, i));
        }
        want.push((0x8000_0000, 0));
        want.push((0x8000_0001, 0));
        let mut sorted = ids.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want);
        assert!(v.iter().filter(|e| e.function == 7).all(|e| e.indexed));
        assert!(!v.iter().find(|e| e.function == 1).unwrap().indexed);
    }

    #[test]
    fn bogus_maxima_are_bounded() {
        let v = enumerate(|f, _| match f {
            0 => r(0xffff_ffff, 0, 0, 0),
            _ => r(0, 0, 0, 0),
        });
        assert!(!v.is_empty());
        assert!(v.iter().all(|e| e.function < MAX_LEAVES));
        assert!(
            v.iter().all(|e| e.function < 0x8000_0000),
            "no extended range below its base"
        );
    }

    #[test]
    fn this_cpu_offers_no_nesting() {
        let v = supported();
        let leaf1 = v.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(leaf1.ecx & LEAF1_ECX_VMX, 0);
        assert_ne!(leaf1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        if let Some(ext) = v.iter().find(|e| e.function == 0x8000_0001) {
            assert_eq!(ext.ecx & EXT1_ECX_SVM, 0);
        }
        assert!(v
            .iter()
            .all(|e| !(0x4000_0000..0x8000_0000).contains(&e.function)));
    }
}
