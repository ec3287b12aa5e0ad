//! The hypervisor backends behind one set of traits, in the spirit of Cloud
//! Hypervisor's `hypervisor` crate: a [`Hypervisor`] makes [`Vm`]s, a `Vm`
//! makes [`Vcpu`]s, and [`Vcpu::run`] answers with a vendor-neutral
//! [`VmExit`]. Everything above this module (boot set-up, devices, the run
//! loop) is written against the traits only.
//!
//! Backends:
//! - [`kvm`]: Linux's KVM through `kvm-ioctls`. The in-kernel LAPIC/IOAPIC
//!   (and PIT, for TSC calibration fallbacks) serve interrupts and timers.
//! - [`microv`]: `/dev/microv`, MicroV's own driver: VM and vCPU file
//!   descriptors and a shared run page (`microv_abi::run`). MMIO arrives
//!   undecoded, so the backend decodes and completes the instruction; the
//!   x2APIC and TSC-deadline timer are MicroV's, the IOAPIC is the VMM's
//!   ([`crate::devices::ioapic`], on the MMIO bus through
//!   [`Vm::mmio_devices`]), behind the same [`InterruptLine`] devices use.
//!   Written against the ABI only: the driver and hypervisor sides do not
//!   serve it yet.
//! - `fake` (tests only): scripted exits for the run loop and devices.

pub mod exit;
#[cfg(test)]
pub mod fake;
pub mod kvm;
pub mod microv;
pub mod types;

use std::io;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use crate::bus::SharedDevice;

pub use exit::{ExitKind, VmExit};
pub use types::{CpuidEntry, DescriptorTable, Regs, Segment, SpecialRegs};

/// Which backend runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// MicroV, beneath Linux (`/dev/microv`).
    MicroV,
    /// Linux's KVM (`/dev/kvm`).
    Kvm,
}

impl BackendKind {
    /// The name users type (`--backend`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::MicroV => "microv",
            BackendKind::Kvm => "kvm",
        }
    }
}

/// What a backend can fail with. OS errors keep their errno.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend's device node does not exist.
    #[error("{device} does not exist")]
    DeviceMissing { device: &'static str },
    /// The backend's device node exists but may not be opened by this user.
    #[error("no permission to open {device}")]
    NotPermitted { device: &'static str },
    /// The backend exists but lacks something the VMM needs.
    #[error("{backend} lacks {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
    /// The backend's device exists but the hypervisor behind it is not
    /// running (MicroV: not started, or stopped after a fault).
    #[error("{backend} is not running")]
    NotRunning { backend: &'static str },
    /// The backend is not written yet.
    #[error("the {0} backend is not implemented yet")]
    NotImplemented(&'static str),
    /// A backend call failed.
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl BackendError {
    /// An OS error from operation `op`.
    pub fn os(op: &'static str, source: io::Error) -> Self {
        BackendError::Os { op, source }
    }
}

/// A way to raise one guest interrupt (a GSI of the guest's IOAPIC).
/// KVM: an irqfd; MicroV: a pulse on the VMM's IOAPIC, which raises the
/// vector in the destination vCPU's run page and kicks it.
pub trait InterruptLine: Send + Sync {
    /// Raises the interrupt once (edge-triggered).
    fn trigger(&self) -> Result<(), BackendError>;
}

/// A device the backend brings to the guest's MMIO bus.
pub struct MmioDevice {
    pub base: u64,
    pub len: u64,
    pub device: SharedDevice,
}

/// A hypervisor the VMM can create VMs on.
pub trait Hypervisor: Send + Sync {
    /// The backend's name.
    fn kind(&self) -> BackendKind;
    /// The CPUID values this backend can give guests, before the VMM's
    /// filtering ([`crate::boot::cpuid`]).
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, BackendError>;
    /// A new, empty VM (no memory, no vCPUs) with its interrupt controller.
    fn create_vm(&self) -> Result<Box<dyn Vm>, BackendError>;
    /// Kernel parameters the backend's platform needs (appended to the
    /// command line unless it already sets them); none by default.
    fn platform_cmdline(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `cmdline` with each of `extra` appended whose `name=` it does not set.
pub fn with_platform_params(cmdline: &str, extra: &[String]) -> String {
    let mut out = cmdline.to_string();
    for p in extra {
        let name = p.split('=').next().unwrap_or(p);
        let set = cmdline
            .split_whitespace()
            .any(|w| w == name || w.starts_with(&format!("{name}=")));
        if !set {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(p);
        }
    }
    out
}

/// One guest VM.
pub trait Vm: Send + Sync {
    /// Makes `memory` the guest's RAM, at the guest-physical addresses its
    /// regions name. The VM (and its vCPUs) keep `memory` alive.
    fn map_memory(&mut self, memory: Arc<GuestMemoryMmap>) -> Result<(), BackendError>;
    /// The line that raises `gsi`.
    fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, BackendError>;
    /// A new vCPU with APIC ID `id`; vCPU 0 is the bootstrap processor, the
    /// others wait for the guest's INIT/SIPI.
    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>, BackendError>;
    /// Devices of the platform the backend does not emulate itself but the
    /// VMM must put on the MMIO bus (MicroV: the IOAPIC). None by default.
    fn mmio_devices(&self) -> Vec<MmioDevice> {
        Vec::new()
    }
}

/// One virtual CPU, run by one VMM thread.
pub trait Vcpu: Send {
    /// Sets the CPUID values the guest sees on this vCPU (MicroV: ignored,
    /// its extension owns the guest's CPUID; see [`microv`]).
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), BackendError>;
    /// Sets the registers the bootstrap vCPU enters the kernel with.
    fn set_boot_state(&mut self, regs: &Regs, sregs: &SpecialRegs) -> Result<(), BackendError>;
    /// Runs the guest until an exit the VMM must see. A signal delivered to
    /// the calling thread ends the run with [`VmExit::Interrupted`].
    fn run(&mut self) -> Result<VmExit<'_>, BackendError>;
    /// Details of the last [`VmExit::Unhandled`] or [`VmExit::FailEntry`]
    /// for the error report (say, the instruction pointer); empty if none.
    fn diagnose(&mut self) -> String {
        String::new()
    }
}

/// Opens the backend `kind`.
pub fn open(kind: BackendKind) -> Result<Box<dyn Hypervisor>, BackendError> {
    match kind {
        BackendKind::Kvm => Ok(Box::new(kvm::KvmHypervisor::open()?)),
        BackendKind::MicroV => Ok(Box::new(microv::MicrovHypervisor::open()?)),
    }
}

#[cfg(test)]
mod platform_tests {
    use super::with_platform_params;

    #[test]
    fn platform_parameters_never_override_the_users() {
        let extra = vec!["tsc_early_khz=2000000".to_string()];
        assert_eq!(
            with_platform_params("console=ttyS0", &extra),
            "console=ttyS0 tsc_early_khz=2000000"
        );
        assert_eq!(
            with_platform_params("tsc_early_khz=5 quiet", &extra),
            "tsc_early_khz=5 quiet"
        );
        assert_eq!(with_platform_params("", &extra), "tsc_early_khz=2000000");
        assert_eq!(with_platform_params("a", &[]), "a");
    }
}
