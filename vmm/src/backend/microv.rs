//! The MicroV backend: guests run beneath Linux on MicroV, reached through
//! `/dev/microv`.
//!
//! **Not implemented yet.** The driver's VM and vCPU file descriptors and
//! the extension's VM, vCPU, memory and run hypercalls (issue 6, points
//! 1–5 and 8) do not exist. When they do, this module implements
//! [`super::Hypervisor`], [`super::Vm`] and [`super::Vcpu`]:
//! - `Vm::map_memory`: the driver pins the regions; the extension builds the
//!   guest's nested page tables from the pinned frames.
//! - `Vcpu::run`: the run ioctl; the extension decodes the VMCB into the
//!   neutral exit record of the run page, which becomes a [`super::VmExit`].
//!   MMIO arrives undecoded (no decode assists): the backend decodes the
//!   instruction (`iced-x86`) and completes it.
//! - Interrupts: x2APIC and the TSC-deadline timer are emulated in the
//!   extension; the IOAPIC in the VMM; [`super::InterruptLine::trigger`]
//!   becomes an injection request.
//! - A signal to the VMM thread ends the run with `Interrupted`, as on KVM.

use super::{BackendError, Hypervisor};

/// The driver's device node.
pub const DEVICE_PATH: &str = "/dev/microv";

/// Always refuses: the backend is not written yet. Never pretends to run a
/// guest on another backend.
pub fn open() -> Result<Box<dyn Hypervisor>, BackendError> {
    Err(BackendError::NotImplemented("microv"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_clearly() {
        let e = super::open().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("the microv backend is not implemented yet")
        );
    }
}
