//! The stop rendezvous: MicroV leaves every CPU together or not at all.
//!
//! Each CPU that asks to stop arrives here and waits, in host mode, until
//! every CPU running the root has arrived; then all of them leave. If the
//! wait times out (the root asked on some CPUs only), each waiting CPU
//! withdraws and its stop is refused: no CPU becomes native while another
//! still runs on hypervisor memory.

use core::sync::atomic::{AtomicU64, Ordering};

/// Set once every expected CPU has arrived; from then on nobody withdraws.
const COMMITTED: u64 = 1 << 63;

/// Arrivals and the committed flag in one word, so that "the last CPU
/// arrives" and "a CPU gives up" cannot both win.
#[derive(Debug, Default)]
pub struct StopBarrier {
    state: AtomicU64,
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every CPU arrived: leave.
    Leave,
    /// Not every CPU arrived in time: stay, the stop is refused.
    Refused,
}

impl StopBarrier {
    pub const fn new() -> Self {
        StopBarrier {
            state: AtomicU64::new(0),
        }
    }

    /// Arrives and waits until `expected()` CPUs have arrived (it is read
    /// again on every check: CPUs may leave on their own after a failure)
    /// or `timed_out()` says to give up.
    pub fn arrive_and_wait(
        &self,
        expected: &dyn Fn() -> u64,
        timed_out: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        self.state.fetch_add(1, Ordering::AcqRel);
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s & COMMITTED != 0 {
                return Outcome::Leave;
            }
            if s >= expected()
                && self
                    .state
                    .compare_exchange(s, s | COMMITTED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Outcome::Leave;
            }
            if timed_out() && self.withdraw() {
                return Outcome::Refused;
            }
            core::hint::spin_loop();
        }
    }

    /// Takes this CPU's arrival back unless the barrier committed meanwhile.
    fn withdraw(&self) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & COMMITTED != 0 {
                return false;
            }
            match self
                .state
                .compare_exchange(s, s - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// CPUs that have arrived and not withdrawn: once committed, the number
    /// of CPUs leaving together.
    pub fn waiting(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !COMMITTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn all_cpus_leave_together() {
        let b = Arc::new(StopBarrier::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || b.arrive_and_wait(&|| 4, &mut || false))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Outcome::Leave);
        }
    }

    #[test]
    fn a_lone_cpu_is_refused_and_can_try_again() {
        let b = StopBarrier::new();
        let mut ticks = 0;
        let out = b.arrive_and_wait(&|| 2, &mut || {
            ticks += 1;
            ticks > 100
        });
        assert_eq!(out, Outcome::Refused);
        assert_eq!(b.waiting(), 0, "the arrival was taken back");
        assert_eq!(b.arrive_and_wait(&|| 1, &mut || true), Outcome::Leave);
    }

    #[test]
    fn a_commit_wins_over_a_late_timeout() {
        let b = StopBarrier::new();
        b.state.store(1 | COMMITTED, Ordering::Release);
        assert!(!b.withdraw());
        assert_eq!(b.arrive_and_wait(&|| 9, &mut || true), Outcome::Leave);
    }

    #[test]
    fn fewer_running_cpus_lower_the_bar() {
        let b = StopBarrier::new();
        let running = AtomicU64::new(2);
        let mut checks = 0;
        let out = b.arrive_and_wait(&|| running.load(Ordering::Relaxed), &mut || {
            checks += 1;
            // Another CPU fails and leaves on its own meanwhile.
            running.store(1, Ordering::Relaxed);
            false
        });
        assert_eq!(out, Outcome::Leave);
        assert!(checks >= 1);
    }
}
