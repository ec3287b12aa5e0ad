//! What the extension remembers across exits: the root VM's handle and
//! the exit counters. Shared by every CPU, so everything is atomic.

use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::launch::MAX_CPUS;
use microv_abi::{ExitKind, EXIT_KINDS_MAX};

/// The extension's global state.
pub struct HvState {
    /// The open handle; 0 when none is open.
    pub handle: AtomicU64,
    pub cpu_count: AtomicU64,
    /// How MicroV was started (`launch::StartMode` value; 0 unknown).
    pub start_mode: AtomicU64,
    /// The TSC frequency in kHz the loader measured (0: unknown).
    pub tsc_khz: AtomicU64,
    exits: [[AtomicU64; EXIT_KINDS_MAX]; MAX_CPUS],
    /// Micro-VM vCPUs and which CPU runs which.
    pub vcpus: crate::guest::Vcpus,
    /// The root's local APIC page (read-only in its nested tables); 0
    /// until the first CPU read it.
    apic_page: AtomicU64,
    /// Nonzero when the CPU is Intel's (VMX; AMD's SVM otherwise).
    vmx: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_ROW: [AtomicU64; EXIT_KINDS_MAX] = [ZERO; EXIT_KINDS_MAX];

impl HvState {
    pub const fn new() -> Self {
        HvState {
            handle: AtomicU64::new(0),
            cpu_count: AtomicU64::new(0),
            start_mode: AtomicU64::new(0),
            tsc_khz: AtomicU64::new(0),
            exits: [ZERO_ROW; MAX_CPUS],
            vcpus: crate::guest::Vcpus::new(),
            apic_page: AtomicU64::new(0),
            vmx: AtomicU64::new(0),
        }
    }

    /// Records which virtualization extension MicroV runs on.
    pub fn set_vmx(&self, vmx: bool) {
        self.vmx.store(u64::from(vmx), Ordering::Relaxed);
    }

    /// True when MicroV runs on Intel VMX.
    pub fn is_vmx(&self) -> bool {
        self.vmx.load(Ordering::Relaxed) != 0
    }

    /// `id.capabilities`' vendor bit: Intel VMX or AMD SVM.
    pub fn vendor_capability(&self) -> u64 {
        if self.is_vmx() {
            microv_abi::hypercall::capability::INTEL_VMX
        } else {
            microv_abi::hypercall::capability::AMD_SVM
        }
    }

    /// The root's local APIC page, or `u64::MAX` before it is known (no
    /// fault address matches that).
    pub fn apic_page(&self) -> u64 {
        match self.apic_page.load(Ordering::Relaxed) {
            0 => u64::MAX,
            page => page,
        }
    }

    /// Records the root's local APIC page from its IA32_APIC_BASE value.
    pub fn set_apic_base(&self, apic_base: u64) {
        let page = apic_base & microv_arch::apic::BASE_ADDRESS_MASK;
        self.apic_page.store(page, Ordering::Relaxed);
    }

    /// Counts one exit of `kind` on CPU `cpu`.
    pub fn count_exit(&self, cpu: usize, kind: ExitKind) {
        if let Some(c) = self.exits.get(cpu).and_then(|row| row.get(kind as usize)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Exits of kind number `kind` on CPU `cpu` (0 for out-of-range numbers).
    pub fn exit_count(&self, cpu: usize, kind: usize) -> u64 {
        self.exits
            .get(cpu)
            .and_then(|row| row.get(kind))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The `id.capabilities` bit for how MicroV was started.
    pub fn start_mode_capability(&self) -> u64 {
        use microv_abi::hypercall::capability;
        use microv_abi::launch::StartMode;
        match self.start_mode.load(Ordering::Relaxed) {
            m if m == StartMode::LateLaunch as u64 => capability::LATE_LAUNCH,
            m if m == StartMode::EarlyBoot as u64 => capability::EARLY_BOOT,
            _ => 0,
        }
    }

    /// The TSC frequency in kHz for CPUID, saturated to 32 bits.
    pub fn tsc_khz(&self) -> u32 {
        u32::try_from(self.tsc_khz.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
    }

    /// Number of CPUs MicroV runs on.
    pub fn cpus(&self) -> u64 {
        self.cpu_count.load(Ordering::Relaxed)
    }
}

impl Default for HvState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_cpu_and_kind_and_ignores_out_of_range() {
        let s = HvState::new();
        s.count_exit(1, ExitKind::Cpuid);
        s.count_exit(1, ExitKind::Cpuid);
        s.count_exit(0, ExitKind::Hypercall);
        s.count_exit(MAX_CPUS, ExitKind::Cpuid);
        assert_eq!(s.exit_count(1, ExitKind::Cpuid as usize), 2);
        assert_eq!(s.exit_count(0, ExitKind::Hypercall as usize), 1);
        assert_eq!(s.exit_count(0, ExitKind::Cpuid as usize), 0);
        assert_eq!(s.exit_count(MAX_CPUS, 0), 0);
        assert_eq!(s.exit_count(0, EXIT_KINDS_MAX), 0);
        assert_eq!(HvState::default().cpus(), 0);
    }
}
