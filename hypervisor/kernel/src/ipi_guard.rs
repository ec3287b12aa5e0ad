//! Keeping the root's INIT and SIPI away from the CPUs MicroV runs on.
//!
//! An INIT resets a CPU: one that reaches a CPU in MicroV takes it out of
//! host mode (QEMU), or keeps exiting at every VMRUN (AMD hardware, where
//! the INIT stays pending), and a SIPI after it starts the CPU natively on
//! the root's code, with MicroV's memory in reach. The root's writes to its
//! local APIC's interrupt command register therefore go through the
//! microkernel (the xAPIC page is read-only in the root's nested tables, the
//! x2APIC ICR MSR exits), which refuses INIT and SIPI unless they name, by
//! physical APIC ID, a CPU that is not in MicroV (microv.efi starts the
//! other CPUs that way at boot), or go to all CPUs but the sender while no
//! other CPU is in MicroV (the firmware wakes its APs that way before
//! microv.efi starts them). It also refuses writes to the APIC ID
//! register, which would let a CPU in MicroV hide behind another ID, and
//! local vector table entries set to deliver INIT (LINT0 wired to the
//! 8259, which the root programs, would then reset the CPU at will).

use core::sync::atomic::{AtomicU64, Ordering};

use microv_arch::apic::{
    self, DeliveryMode, Icr, Shorthand, APIC_ID, ICR_LOW, REGISTERS_END, REGISTER_STRIDE,
};
use microv_arch::cpuid::CpuidResult;

/// The xAPIC's physical broadcast destination.
const XAPIC_BROADCAST: u32 = 0xff;
/// CPUID leaf of the x2APIC topology (its EDX is the x2APIC ID).
const LEAF_TOPOLOGY: u32 = 0xb;

/// The APIC IDs of the CPUs in MicroV, one slot per CPU index (the ID plus
/// one; zero is an empty slot). A CPU is in from the moment it enters the
/// microkernel until it leaves: also while it is brought up, and after it
/// halted in host mode.
pub struct MicrovCpus<const N: usize> {
    slots: [AtomicU64; N],
}

impl<const N: usize> MicrovCpus<N> {
    pub const fn new() -> Self {
        MicrovCpus {
            slots: [const { AtomicU64::new(0) }; N],
        }
    }

    /// CPU `index` (APIC ID `apic_id`) entered MicroV.
    pub fn enter(&self, index: usize, apic_id: u32) {
        if let Some(s) = self.slots.get(index) {
            s.store(u64::from(apic_id) + 1, Ordering::Release);
        }
    }

    /// CPU `index` is about to leave MicroV.
    pub fn leave(&self, index: usize) {
        if let Some(s) = self.slots.get(index) {
            s.store(0, Ordering::Release);
        }
    }

    /// True if a CPU other than the one with APIC ID `apic_id` is in
    /// MicroV.
    pub fn any_other_than(&self, apic_id: u32) -> bool {
        let own = u64::from(apic_id) + 1;
        self.slots.iter().any(|s| {
            let v = s.load(Ordering::Acquire);
            v != 0 && v != own
        })
    }

    /// True if a CPU with APIC ID `apic_id` is in MicroV.
    pub fn contains(&self, apic_id: u32) -> bool {
        let wanted = u64::from(apic_id) + 1;
        self.slots
            .iter()
            .any(|s| s.load(Ordering::Acquire) == wanted)
    }
}

impl<const N: usize> Default for MicrovCpus<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// This CPU's APIC ID: the x2APIC ID from the topology leaf when the CPU
/// has it, else the initial xAPIC ID (CPUID 1, EBX bits 31:24).
pub fn apic_id(cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult) -> u32 {
    if cpuid(0, 0).eax >= LEAF_TOPOLOGY {
        let topology = cpuid(LEAF_TOPOLOGY, 0);
        if topology.ebx != 0 {
            return topology.edx;
        }
    }
    cpuid(1, 0).ebx >> 24
}

/// Why a root APIC write is not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicRefusal {
    /// Not the start of an APIC register.
    BadOffset,
    /// An INIT or SIPI that could reach a CPU in MicroV, or a change of
    /// the APIC ID.
    Refused,
}

/// Whether the root may write `value` to its local APIC's register
/// `offset` (xAPIC offsets; an x2APIC register `x2apic_offset` of its MSR,
/// the ICR with all 64 bits). For an ICR write, `icr_high` reads the real
/// ICR's high half (an xAPIC destination) and `sender` this CPU's APIC ID;
/// neither is read for other registers.
pub fn check_write<const N: usize>(
    offset: u32,
    value: u64,
    x2apic: bool,
    icr_high: &mut dyn FnMut() -> u32,
    sender: &mut dyn FnMut() -> u32,
    cpus: &MicrovCpus<N>,
) -> Result<(), ApicRefusal> {
    if !offset.is_multiple_of(REGISTER_STRIDE) || offset >= REGISTERS_END {
        return Err(ApicRefusal::BadOffset);
    }
    let allowed = match offset {
        APIC_ID => false,
        ICR_LOW => {
            let icr = if x2apic {
                Icr(value)
            } else {
                Icr::from_xapic(value as u32, icr_high())
            };
            may_send(icr, x2apic, sender(), cpus)
        }
        _ if apic::is_lvt(offset) => lvt_allowed(Icr(value)),
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApicRefusal::Refused)
    }
}

/// True for every IPI but an INIT or SIPI that could reach a CPU in MicroV:
/// one by physical APIC ID to a CPU outside MicroV, or to all CPUs but
/// the sender while no other CPU is in MicroV (the firmware wakes its APs
/// that way before they enter), is fine. The sender is in MicroV (it is
/// the root on a CPU MicroV runs on), so an IPI to itself or to all CPUs
/// is not; a logical destination could name anyone, so it is not either.
/// `x2apic`: the destination is 32 bits wide (its broadcast ID all ones).
pub fn may_send<const N: usize>(
    icr: Icr,
    x2apic: bool,
    sender: u32,
    cpus: &MicrovCpus<N>,
) -> bool {
    if !matches!(icr.delivery_mode(), DeliveryMode::Init | DeliveryMode::Startup) {
        return true;
    }
    let broadcast = if x2apic { u32::MAX } else { XAPIC_BROADCAST };
    match icr.shorthand() {
        Shorthand::None if icr.logical() => false,
        Shorthand::None if icr.destination() == broadcast => false,
        Shorthand::None => !cpus.contains(icr.destination()),
        Shorthand::AllExcludingSelf => !cpus.any_other_than(sender),
        Shorthand::SelfOnly | Shorthand::AllIncludingSelf => false,
    }
}

/// An LVT entry (its delivery mode where the ICR has it) may deliver
/// anything but INIT (and the SIPI encoding, reserved there).
fn lvt_allowed(entry: Icr) -> bool {
    !matches!(entry.delivery_mode(), DeliveryMode::Init | DeliveryMode::Startup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT_TO_1: Icr = Icr(0x0000_0001_0000_c500);
    const SIPI_TO_1: Icr = Icr(0x0000_0001_0000_0608);

    #[test]
    fn registry_tracks_cpus_by_index() {
        let cpus = MicrovCpus::<4>::default();
        assert!(!cpus.contains(0));
        cpus.enter(0, 0);
        cpus.enter(1, 7);
        cpus.enter(9, 3); // out of range: ignored
        assert!(cpus.contains(0) && cpus.contains(7) && !cpus.contains(3));
        cpus.leave(1);
        cpus.leave(9);
        assert!(!cpus.contains(7) && cpus.contains(0));
    }

    #[test]
    fn apic_id_prefers_the_topology_leaf() {
        let leaf = |max: u32, topo_ebx: u32| {
            move |l: u32, _| match l {
                0 => CpuidResult { eax: max, ..Default::default() },
                1 => CpuidResult { ebx: 0x0500_0800, ..Default::default() },
                _ => CpuidResult { ebx: topo_ebx, edx: 0x1_0005, ..Default::default() },
            }
        };
        assert_eq!(apic_id(&mut leaf(0x10, 1)), 0x1_0005);
        assert_eq!(apic_id(&mut leaf(0x10, 0)), 5);
        assert_eq!(apic_id(&mut leaf(0xa, 1)), 5);
    }

    #[test]
    fn init_and_sipi_reach_only_cpus_outside_microv() {
        // CPUs 0 and 1 are in MicroV; 2 and 3 are not.
        let cpus = MicrovCpus::<4>::new();
        cpus.enter(0, 0);
        cpus.enter(1, 1);
        let to = |icr: u64, dest: u64| Icr(dest << 32 | icr);
        assert!(!may_send(INIT_TO_1, false, 0, &cpus));
        assert!(!may_send(SIPI_TO_1, false, 0, &cpus));
        assert!(may_send(to(0xc500, 2), false, 0, &cpus));
        assert!(may_send(to(0x0608, 3), true, 0, &cpus));
        // The physical broadcast ID reaches everyone, the sender too.
        assert!(!may_send(to(0x4500, 0xff), false, 0, &cpus));
        assert!(may_send(to(0x4500, 0xff), true, 0, &cpus), "an x2APIC ID");
        assert!(!may_send(to(0x4500, 0xffff_ffff), true, 0, &cpus));
        // Logical destinations, self and all-including-self: never.
        for bits in [1u64 << 11, 1 << 18, 2 << 18] {
            assert!(!may_send(to(0x4500 | bits, 2), false, 0, &cpus), "{bits:#x}");
        }
        // All but the sender: only while no other CPU is in MicroV.
        let all_others = to(0xc4500, 0);
        assert!(!may_send(all_others, false, 0, &cpus));
        cpus.leave(1);
        assert!(may_send(all_others, false, 0, &cpus));
        assert!(!may_send(all_others, false, 5, &cpus), "CPU 0 is another");
        // Every other IPI goes, whoever it reaches.
        for mode in [0u64, 1, 2, 3, 4, 7] {
            assert!(may_send(Icr(mode << 8 | 2 << 18), false, 0, &cpus), "{mode}");
        }
    }

    #[test]
    fn checks_offsets_the_id_the_lvt_and_the_command() {
        let cpus = MicrovCpus::<2>::new();
        cpus.enter(0, 0);
        cpus.enter(1, 1);
        let check = |offset, value, x2apic| {
            check_write(offset, value, x2apic, &mut || 1 << 24, &mut || 0, &cpus)
        };
        assert_eq!(check(0xb0, 0, false), Ok(()));
        assert_eq!(check(0x310, 1 << 24, false), Ok(()));
        assert_eq!(check(0x300, 0xfd, false), Ok(()));
        // xAPIC: the destination (APIC ID 1, in MicroV) from ICR high.
        assert_eq!(check(0x300, 0xc500, false), Err(ApicRefusal::Refused));
        // x2APIC: the destination in the value (APIC ID 0x100 is no CPU here).
        assert_eq!(check(0x300, 0x100_0000_c500, true), Ok(()));
        assert_eq!(check(0x300, 0x1_0000_c500, true), Err(ApicRefusal::Refused));
        assert_eq!(check(0x20, 0, false), Err(ApicRefusal::Refused));
        // LVT entries: anything but INIT (and SIPI's encoding).
        for lvt in [0x2f0, 0x320, 0x350, 0x360, 0x370, 0x500, 0x530] {
            assert_eq!(check(lvt, 0x1_0700, false), Ok(()), "{lvt:#x} ExtINT");
            assert_eq!(check(lvt, 0x400, false), Ok(()), "{lvt:#x} NMI");
            assert_eq!(check(lvt, 0x1_0500, false), Err(ApicRefusal::Refused), "{lvt:#x}");
            assert_eq!(check(lvt, 0x600, true), Err(ApicRefusal::Refused), "{lvt:#x}");
        }
        for bad in [0xb4, 0x301, 0x540, 0xff0] {
            assert_eq!(check(bad, 0, false), Err(ApicRefusal::BadOffset));
        }
    }
}
