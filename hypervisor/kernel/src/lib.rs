//! MicroV's microkernel: the small part of the hypervisor that needs ring 0.
//!
//! It brings each CPU under MicroV (its own page tables, GDT/IDT/TSS, SVM),
//! owns the pool's pages, runs vCPU states (the world switch), hands CPUs
//! back to the OS (promotion), and serves the extension's syscalls. All
//! policy — which exits mean what, hypercalls, nested paging of the root VM
//! — is the extension's.
//!
//! The logic modules are plain Rust, unit-tested on the host; `hw` (built
//! with `feature = "image"`) is the part that touches the hardware.
#![cfg_attr(not(test), no_std)]
// The no-panic lints are denied in Cargo.toml; unit tests may panic.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod cpu_state;
pub mod descriptors;
pub mod fault;
pub mod frame;
pub mod guest_vm;
pub mod iomap;
pub mod ipi_guard;
pub mod layout;
pub mod log;
pub mod rendezvous;
pub mod root;
pub mod root_tables;
pub mod root_walk;
pub mod stacks;
pub mod tsc_aux;
pub mod vmcb_check;
pub mod vmcb_copy;
pub mod vmx_check;
pub mod vmx_event;
pub mod vmx_exit;
pub mod vmx_host;
pub mod vmx_root;
pub mod vmx_state;

#[cfg(feature = "image")]
pub mod hw;

#[cfg(feature = "image")]
extern crate microv_rt;
