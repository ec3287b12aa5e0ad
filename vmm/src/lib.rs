//! MicroV's virtual machine monitor: boots a Linux guest straight from a
//! kernel image (bzImage or ELF vmlinux) with an initrd, a serial console,
//! an i8042 (for reset), a CMOS clock, a PIT and ACPI power-off, on a
//! pluggable backend.
//!
//! Layers, top to bottom:
//! - [`machine`]: composes a VM from a [`VmConfig`] and runs it.
//! - [`vcpu_loop`]: one thread per vCPU, handling neutral exits.
//! - [`devices`] on a [`bus`]: `vm-superio` serial and i8042, the CMOS
//!   clock, the PIT, the ACPI power registers.
//! - [`boot`]: guest memory contents (kernel via `linux-loader`, zero page,
//!   e820, ACPI tables via `acpi_tables`, page tables, GDT) and the
//!   bootstrap vCPU's registers.
//! - [`backend`]: the `Hypervisor`/`Vm`/`Vcpu` traits and the vendor-neutral
//!   [`backend::VmExit`]; the KVM and MicroV backends.
//!
//! On KVM the in-kernel LAPIC/IOAPIC deliver interrupts. On MicroV the
//! hypervisor's extension emulates the x2APIC and TSC-deadline timer and
//! the VMM the IOAPIC ([`devices::ioapic`]); devices raise interrupts only
//! through [`backend::InterruptLine`], so they fit both.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod backend;
pub mod boot;
pub mod bus;
pub mod config;
pub mod console;
pub mod control;
pub mod devices;
mod error;
pub mod kick;
pub mod machine;
pub mod stats;
pub mod vcpu_loop;

pub use backend::BackendKind;
pub use config::{VmConfig, DEFAULT_CMDLINE, DEFAULT_MEMORY};
pub use control::StopReason;
pub use error::VmmError;
pub use machine::{run, Console, RunReport};
