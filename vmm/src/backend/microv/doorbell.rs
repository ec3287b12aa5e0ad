//! How other threads reach a vCPU: raise a vector in its run page, wake its
//! thread if it waits after a HLT, and kick it out of the guest if it is in
//! there (a signal makes the run ioctl fail with EINTR; MicroV takes the
//! vector at the next entry).
//!
//! The kick goes only to a thread known to be inside the run call: the
//! thread registers itself under the doorbell's lock before the call and
//! unregisters under the same lock after it, so the signal never reaches a
//! thread that has gone. A vector raised just before the thread registers
//! is in the page before the call, so MicroV sees it at that entry.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::page::RunPageMap;
use crate::kick;

#[derive(Debug, Default)]
struct State {
    /// The vCPU thread, while it is in the run call.
    in_guest: Option<libc::pthread_t>,
    /// A vector was raised since the thread last waited.
    rung: bool,
}

/// One vCPU's doorbell.
#[derive(Debug)]
pub struct Doorbell {
    page: Arc<RunPageMap>,
    state: Mutex<State>,
    woken: Condvar,
}

/// The vCPU thread is in the run call while this lives.
pub struct InGuest<'a>(&'a Doorbell);

impl Drop for InGuest<'_> {
    fn drop(&mut self) {
        self.0.lock().in_guest = None;
    }
}

impl Doorbell {
    pub fn new(page: Arc<RunPageMap>) -> Self {
        Doorbell {
            page,
            state: Mutex::default(),
            woken: Condvar::new(),
        }
    }

    /// The vCPU's run page.
    #[cfg(test)]
    pub fn page(&self) -> &RunPageMap {
        &self.page
    }

    /// The state is two plain fields, consistent whatever a panicking
    /// holder did: a poisoned lock is still used.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises `vector` on this vCPU.
    pub fn raise(&self, vector: u8) {
        self.page.raise(vector);
        let mut s = self.lock();
        s.rung = true;
        self.woken.notify_all();
        if let Some(thread) = s.in_guest {
            // SAFETY: `thread` registered itself under this lock and
            // unregisters under it before it can leave the run call, so it
            // is alive while we hold the lock. The kick signal has a
            // handler (`kick::install`) before any vCPU thread runs. A
            // failure (it cannot happen for a live thread) only loses the
            // kick: the vector still waits in the page.
            unsafe { libc::pthread_kill(thread, kick::signal()) };
        }
    }

    /// Marks the calling thread as in the run call until the guard drops.
    pub fn enter(&self) -> InGuest<'_> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lock().in_guest = Some(me);
        InGuest(self)
    }

    /// After a HLT: waits until a vector is raised or `timeout` passed.
    pub fn wait_halted(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while !s.rung && !self.page.any_raised() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = match self.woken.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
        s.rung = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn doorbell() -> Arc<Doorbell> {
        Arc::new(Doorbell::new(Arc::new(RunPageMap::anonymous().unwrap())))
    }

    #[test]
    fn a_raise_wakes_a_halted_thread() {
        let d = doorbell();
        let d2 = Arc::clone(&d);
        let start = Instant::now();
        let t = std::thread::spawn(move || d2.wait_halted(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(10));
        d.raise(0x24);
        t.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(20));
        assert_eq!(d.page.take_raised(), [1 << 0x24, 0, 0, 0]);
        // Rung before the wait: no wait at all, and the bell is reset.
        d.raise(0x30);
        d.page.take_raised();
        d.wait_halted(Duration::from_secs(30));
        let start = Instant::now();
        d.wait_halted(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5), "times out");
    }

    #[test]
    fn a_raise_kicks_a_thread_in_the_guest() {
        kick::install().unwrap();
        let d = doorbell();
        let d2 = Arc::clone(&d);
        let entered = Arc::new(AtomicBool::new(false));
        let e2 = Arc::clone(&entered);
        let t = std::thread::spawn(move || {
            let _in = d2.enter();
            e2.store(true, Ordering::SeqCst);
            // Stands in for the run ioctl: returns on the kick.
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        });
        while !entered.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The thread may not be in pause() yet: ring until it has left.
        while !t.is_finished() {
            d.raise(0x40);
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().unwrap();
        assert!(d.lock().in_guest.is_none(), "unregistered on the way out");
        d.raise(0x41); // nobody in the guest: no signal
        assert_eq!(d.page.take_raised()[1], 3);
    }
}
