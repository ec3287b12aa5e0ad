//! The guest's CPUID: the backend's supported values, with the topology
//! this VM really has and without features the VMM does not give guests.

use crate::backend::CpuidEntry;

pub const LEAF1_ECX_VMX: u32 = 1 << 5;
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
pub const LEAF1_EDX_HTT: u32 = 1 << 28;
pub const EXT1_ECX_SVM: u32 = 1 << 2;
/// Topology extensions (leaf 0x8000_001E): we describe topology with leaf
/// 0xB instead, so a guest never mixes the two.
pub const EXT1_ECX_TOPOEXT: u32 = 1 << 22;

/// Leaf 0xB level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of the APIC ID that number cores: enough for `cpus` IDs.
fn core_bits(cpus: u8) -> u32 {
    let n = u32::from(cpus.max(1));
    32 - (n - 1).leading_zeros()
}

/// The CPUID for the vCPU with APIC ID `apic_id` of a `cpus`-vCPU guest:
/// one socket, `cpus` cores, one thread each.
pub fn guest_cpuid(supported: &[CpuidEntry], apic_id: u8, cpus: u8) -> Vec<CpuidEntry> {
    let id = u32::from(apic_id);
    let count = u32::from(cpus.max(1));
    let mut out = Vec::with_capacity(supported.len());
    for e in supported {
        let mut e = *e;
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (count << 16) | (id << 24);
                e.ecx = (e.ecx & !LEAF1_ECX_VMX) | LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Architectural performance monitoring: not offered.
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                let (shift, width, level) = match e.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (core_bits(cpus), count, LEVEL_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = width;
                e.ecx = (level << 8) | (e.index & 0xff);
                e.edx = id;
            }
            0x8000_0001 => e.ecx &= !(EXT1_ECX_SVM | EXT1_ECX_TOPOEXT),
            0x8000_0008 => {
                e.ecx = (e.ecx & !0xf0ff) | (core_bits(cpus) << 12) | (count - 1);
            }
            0x8000_001e => continue,
            _ => {}
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            indexed: matches!(function, 0xb | 0x1f),
            eax: 0xdead,
            ebx: 0x0102_0800,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
        }
    }

    fn find(v: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *v.iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn topology_matches_the_vm() {
        let supported = [
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
        ];
        let v = guest_cpuid(&supported, 2, 3);
        let l1 = find(&v, 1, 0);
        assert_eq!(
            l1.ebx, 0x0203_0800,
            "APIC ID 2, 3 logical CPUs, CLFLUSH kept"
        );
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_VMX, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        let smt = find(&v, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        let core = find(&v, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        let end = find(&v, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx), (0, 0, 2));
        assert_eq!(find(&v, 0x8000_0008, 0).ecx & 0xf0ff, 0x2002);
        assert!(v.iter().all(|e| e.function != 0x8000_001e));
    }

    #[test]
    fn one_cpu_has_no_htt_and_virtualization_is_hidden() {
        let v = guest_cpuid(&[leaf(1, 0), leaf(0x8000_0001, 0), leaf(0xa, 0)], 0, 1);
        assert_eq!(find(&v, 1, 0).edx & LEAF1_EDX_HTT, 0);
        assert_eq!(find(&v, 1, 0).ebx >> 16, 1);
        let ext = find(&v, 0x8000_0001, 0);
        assert_eq!(ext.ecx & (EXT1_ECX_SVM | EXT1_ECX_TOPOEXT), 0);
        assert_eq!(find(&v, 0xa, 0).eax, 0);
    }

    #[test]
    fn core_bits_round_up() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 255].map(core_bits),
            [0, 1, 2, 2, 3, 3, 4, 8]
        );
    }
}
