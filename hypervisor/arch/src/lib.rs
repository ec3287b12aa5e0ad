//! x86 definitions shared by MicroV's microkernel and extension.
//!
//! Pure data and pure functions, except [`instr`], whose small `unsafe`
//! wrappers around privileged instructions are used only by the images.
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

pub mod apic;
pub mod cpuid;
pub mod descriptor;
pub mod instr;
pub mod mapper;
pub mod msr;
pub mod mtrr;
pub mod paging;
pub mod svm;
pub mod vmcb_spans;
pub mod vmx;
pub mod xsave;
