//! How a running VM ends: whoever sees the end first (a device, a vCPU, the
//! console) records why; the thread that owns the VM wakes up and stops the
//! vCPUs. The first reason wins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What asked for a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// CPU reset through the i8042 controller (Linux's `reboot=k`).
    Keyboard,
    /// The FADT's reset register.
    Acpi,
    /// A triple fault (a real CPU resets).
    TripleFault,
    /// The backend reported a reset request.
    Backend,
}

/// Why the VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset; micro VMs end instead of rebooting.
    Reset(ResetCause),
    /// The user typed Ctrl-A X.
    Quit,
    /// vCPU `n`'s thread failed; its error is in the run's result.
    VcpuFailed(u8),
    /// The console input failed.
    ConsoleFailed,
}

impl StopReason {
    /// A sentence for the user.
    pub fn describe(self) -> String {
        match self {
            StopReason::PowerOff => "the guest powered off".into(),
            StopReason::Reset(ResetCause::Keyboard) => {
                "the guest rebooted (keyboard controller reset)".into()
            }
            StopReason::Reset(ResetCause::Acpi) => "the guest rebooted (ACPI reset)".into(),
            StopReason::Reset(ResetCause::TripleFault) => {
                "the guest reset itself (triple fault)".into()
            }
            StopReason::Reset(ResetCause::Backend) => "the guest rebooted".into(),
            StopReason::Quit => "stopped from the console (Ctrl-A X)".into(),
            StopReason::VcpuFailed(n) => format!("vCPU {n} failed"),
            StopReason::ConsoleFailed => "the console input failed".into(),
        }
    }

    /// Whether the guest (or its user) ended the run normally.
    pub fn is_clean(self) -> bool {
        matches!(
            self,
            StopReason::PowerOff | StopReason::Reset(_) | StopReason::Quit
        )
    }
}

/// Shared by every thread of one VM.
#[derive(Debug, Default)]
pub struct RunControl {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    changed: Condvar,
}

impl RunControl {
    pub fn new() -> Self {
        RunControl::default()
    }

    /// Records `reason` unless another came first, and wakes the owner.
    pub fn request_stop(&self, reason: StopReason) {
        // A poisoned lock only means another thread panicked while holding
        // it; the Option inside is still meaningful.
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether the VM is ending; vCPU threads check it between runs.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The reason, once there is one.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until a stop is requested, then returns why.
    pub fn wait(&self) -> StopReason {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(reason) = *r {
                return reason;
            }
            // The timeout only bounds a missed wake-up; the loop re-checks.
            r = match self.changed.wait_timeout(r, Duration::from_millis(500)) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_the_owner() {
        let c = Arc::new(RunControl::new());
        assert!(!c.is_stopping());
        assert_eq!(c.reason(), None);
        let c2 = Arc::clone(&c);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c2.request_stop(StopReason::PowerOff);
            c2.request_stop(StopReason::Quit);
        });
        assert_eq!(c.wait(), StopReason::PowerOff);
        t.join().unwrap();
        assert!(c.is_stopping());
        assert_eq!(c.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn reasons_read_well() {
        assert!(StopReason::PowerOff.is_clean());
        assert!(StopReason::Reset(ResetCause::TripleFault).is_clean());
        assert!(!StopReason::VcpuFailed(1).is_clean());
        assert!(!StopReason::ConsoleFailed.is_clean());
        assert_eq!(StopReason::VcpuFailed(1).describe(), "vCPU 1 failed");
        assert!(StopReason::Reset(ResetCause::Keyboard)
            .describe()
            .contains("rebooted"));
        for r in [
            StopReason::Quit,
            StopReason::Reset(ResetCause::Acpi),
            StopReason::Reset(ResetCause::Backend),
            StopReason::ConsoleFailed,
        ] {
            assert!(!r.describe().is_empty());
        }
    }
}
