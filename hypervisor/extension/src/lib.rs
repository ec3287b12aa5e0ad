//! MicroV proper: the hypervisor's logic, running in host ring 3 on every
//! CPU. It reaches the microkernel only through syscalls (`microv_abi::syscall`)
//! and owns all policy: how the root VM is set up, what each exit means,
//! and the hypercall interface.
//!
//! The logic modules are plain Rust, unit-tested on the host against fakes
//! (`host::fake`, `microv_arch::mapper::fake`); `hw` (built with
//! `feature = "image"`) connects them to the microkernel.
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

pub mod cpuid;
pub mod exit;
pub mod guest;
pub mod host;
pub mod hypercall;
pub mod io;
pub mod lapic;
pub mod msr;
pub mod neutral;
pub mod root_apic;
pub mod root_vm;
pub mod state;
pub mod svm_regs;

#[cfg(feature = "image")]
pub mod hw;

#[cfg(feature = "image")]
extern crate microv_rt;
