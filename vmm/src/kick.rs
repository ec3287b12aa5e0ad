//! Getting a vCPU thread out of the guest: a real-time signal with an empty
//! handler makes the backend's blocking run return (`EINTR` on KVM; the
//! MicroV driver returns to the root for a pending signal too). The signal
//! is resent until the thread has left, so a signal that lands just before
//! the thread enters the guest is never lost for good.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::backend::BackendError;

/// The kick signal: the first real-time signal, which the C library and Rust
/// leave alone.
pub fn signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the handler (process-wide; installing it again is harmless).
/// Without it the signal would kill the process.
pub fn install() -> Result<(), BackendError> {
    register_signal_handler(signal(), on_kick).map_err(|e| {
        BackendError::os(
            "installing the vCPU kick handler",
            std::io::Error::from_raw_os_error(e.errno()),
        )
    })
}

/// Kicks every unfinished thread until all have finished or `timeout`
/// passed; returns the indices of threads still running.
pub fn stop_all<T>(threads: &[JoinHandle<T>], timeout: Duration) -> Vec<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let running: Vec<usize> = threads
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_finished())
            .map(|(i, _)| i)
            .collect();
        if running.is_empty() || Instant::now() >= deadline {
            return running;
        }
        for &i in &running {
            if let Some(t) = threads.get(i) {
                // A thread that just finished makes this fail; harmless.
                let _ = t.kill(signal());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_kick_interrupts_a_blocking_call() {
        install().unwrap();
        install().unwrap();
        let woke = Arc::new(AtomicBool::new(false));
        let w = woke.clone();
        let t = std::thread::spawn(move || {
            // pause() returns only when a handled signal arrives.
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
            w.store(true, Ordering::SeqCst);
        });
        let threads = [t];
        assert!(stop_all(&threads, Duration::from_secs(5)).is_empty());
        assert!(woke.load(Ordering::SeqCst));
    }

    #[test]
    fn a_thread_that_will_not_stop_is_reported() {
        install().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let t = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let threads = [t];
        assert_eq!(stop_all(&threads, Duration::from_millis(20)), [0]);
        done.store(true, Ordering::SeqCst);
    }
}
