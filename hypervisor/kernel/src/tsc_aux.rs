//! TSC_AUX belongs to whoever runs. RDTSCP and RDPID read it without an
//! exit (RDPID cannot be intercepted on AMD), so the value in the MSR is
//! what a vCPU sees: the root's own (Linux keeps its CPU number there, and
//! writes it without an exit: the MSR passes through) while the root runs,
//! a guest vCPU's own (kept in its register page by the extension, which
//! takes every guest MSR access) while that guest runs.
//!
//! Each CPU tracks what its MSR holds ([`TscAux`]) and switches lazily:
//! the guest's value goes in before a guest VMRUN, the root's comes back
//! before the root runs again (its VMRUN, or promotion). Host code never
//! reads TSC_AUX, so between a guest's exit and the next guest run on the
//! CPU nothing is written. The root's value is read when the CPU leaves
//! the root for a guest (the root may have changed it since), and no write
//! is made when the value going in is the one already there: on a CPU
//! whose root value equals the guest's (CPU 0 and a guest that never set
//! it: both 0) a guest round trip costs one RDMSR.
//!
//! `hw` only performs the reads and writes [`TscAux`] asks for ([`Msr`]).

/// The CPU's TSC_AUX MSR, as the world switch reaches it.
pub trait Msr {
    /// RDMSR of TSC_AUX.
    fn read(&mut self) -> u64;
    /// WRMSR of TSC_AUX with a value read from it before or a guest's
    /// 32-bit value (neither can raise #GP on a CPU that has the MSR).
    fn write(&mut self, value: u64);
}

/// What a CPU's TSC_AUX holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// The root's value: whatever it last wrote (the MSR passes through).
    Root,
    /// A guest's value `guest`; `root` is the root's, to restore.
    Guest { root: u64, guest: u32 },
}

/// One CPU's TSC_AUX switching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscAux {
    /// False on a CPU without the MSR (neither RDTSCP nor RDPID): then
    /// nothing is ever read or written.
    present: bool,
    loaded: Loaded,
}

impl TscAux {
    /// A CPU that has just come under MicroV: its MSR holds the root's value.
    pub const fn new(present: bool) -> Self {
        TscAux {
            present,
            loaded: Loaded::Root,
        }
    }

    /// What the MSR holds now.
    pub fn loaded(&self) -> Loaded {
        self.loaded
    }

    /// Before a guest vCPU whose TSC_AUX is `guest` runs: its value goes in.
    pub fn enter_guest(&mut self, guest: u32, msr: &mut dyn Msr) {
        if !self.present {
            return;
        }
        let (root, current) = match self.loaded {
            Loaded::Root => {
                let root = msr.read();
                (root, root)
            }
            Loaded::Guest { root, guest: g } => (root, u64::from(g)),
        };
        if current != u64::from(guest) {
            msr.write(u64::from(guest));
        }
        self.loaded = Loaded::Guest { root, guest };
    }

    /// Before the root runs again (its VMRUN or promotion): its value
    /// comes back.
    pub fn enter_root(&mut self, msr: &mut dyn Msr) {
        if let Loaded::Guest { root, guest } = self.loaded {
            if root != u64::from(guest) {
                msr.write(root);
            }
        }
        self.loaded = Loaded::Root;
    }
}

/// A guest's TSC_AUX as its register page holds it: 32 bits (the extension
/// refuses wider writes with #GP), anything wider is refused.
pub fn guest_value(raw: u64) -> Option<u32> {
    u32::try_from(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake MSR that records every access.
    #[derive(Default)]
    struct Fake {
        value: u64,
        reads: u32,
        writes: Vec<u64>,
    }

    impl Msr for Fake {
        fn read(&mut self) -> u64 {
            self.reads += 1;
            self.value
        }
        fn write(&mut self, value: u64) {
            self.writes.push(value);
            self.value = value;
        }
    }

    fn cpu(root: u64) -> (TscAux, Fake) {
        (TscAux::new(true), Fake { value: root, ..Fake::default() })
    }

    #[test]
    fn the_guest_runs_on_its_value_and_the_root_gets_its_own_back() {
        let (mut t, mut m) = cpu(1);
        t.enter_guest(0, &mut m);
        assert_eq!((m.value, m.reads, &m.writes[..]), (0, 1, &[0][..]));
        assert_eq!(t.loaded(), Loaded::Guest { root: 1, guest: 0 });
        t.enter_root(&mut m);
        assert_eq!((m.value, &m.writes[..]), (1, &[0, 1][..]));
        assert_eq!(t.loaded(), Loaded::Root);
    }

    #[test]
    fn equal_values_are_not_written() {
        // CPU 0's root value is 0, as is a guest's that never wrote it.
        let (mut t, mut m) = cpu(0);
        for _ in 0..3 {
            t.enter_guest(0, &mut m);
            t.enter_root(&mut m);
        }
        assert_eq!((m.reads, m.writes.len()), (3, 0), "one RDMSR per round trip");
        let (mut t, mut m) = cpu(0x1005);
        t.enter_guest(0x1005, &mut m);
        t.enter_root(&mut m);
        assert!(m.writes.is_empty());
    }

    #[test]
    fn guest_to_guest_writes_only_a_change_and_reads_the_root_once() {
        let (mut t, mut m) = cpu(1);
        t.enter_guest(7, &mut m);
        t.enter_guest(7, &mut m);
        t.enter_guest(9, &mut m);
        t.enter_guest(1, &mut m);
        assert_eq!((m.reads, &m.writes[..]), (1, &[7, 9, 1][..]));
        // The MSR holds the root's value already: nothing to restore.
        t.enter_root(&mut m);
        assert_eq!(&m.writes[..], &[7, 9, 1]);
        assert_eq!(m.value, 1);
    }

    #[test]
    fn the_root_value_is_read_again_after_the_root_ran() {
        let (mut t, mut m) = cpu(1);
        t.enter_guest(5, &mut m);
        t.enter_root(&mut m);
        // The root writes its TSC_AUX without an exit.
        m.value = 0x2001;
        t.enter_guest(5, &mut m);
        assert_eq!(t.loaded(), Loaded::Guest { root: 0x2001, guest: 5 });
        t.enter_root(&mut m);
        assert_eq!(m.value, 0x2001);
        assert_eq!(m.reads, 2);
    }

    #[test]
    fn a_wide_root_value_comes_back_whole() {
        // QEMU's TCG keeps all 64 bits of what the root wrote.
        let (mut t, mut m) = cpu(1 << 40 | 3);
        t.enter_guest(3, &mut m);
        assert_eq!(&m.writes[..], &[3]);
        t.enter_root(&mut m);
        assert_eq!(m.value, 1 << 40 | 3);
    }

    #[test]
    fn entering_the_root_twice_or_first_does_nothing() {
        let (mut t, mut m) = cpu(4);
        t.enter_root(&mut m);
        t.enter_guest(2, &mut m);
        t.enter_root(&mut m);
        t.enter_root(&mut m);
        assert_eq!(&m.writes[..], &[2, 4]);
    }

    #[test]
    fn a_cpu_without_the_msr_is_never_touched() {
        let mut t = TscAux::new(false);
        let mut m = Fake { value: 1, ..Fake::default() };
        t.enter_guest(5, &mut m);
        t.enter_root(&mut m);
        assert_eq!((m.reads, m.writes.len()), (0, 0));
        assert_eq!(t.loaded(), Loaded::Root);
    }

    #[test]
    fn guest_values_are_32_bits() {
        assert_eq!(guest_value(0), Some(0));
        assert_eq!(guest_value(0xffff_ffff), Some(u32::MAX));
        assert_eq!(guest_value(1 << 32), None);
    }
}
