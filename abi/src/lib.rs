//! MicroV's ABI: the single source of truth for the hypercall interface and
//! every layout shared between the hypervisor, its loaders and its tools.
//!
//! Nothing here is `unsafe`; everything is plain data and pure functions, so
//! the same definitions build into the ring-0 microkernel, the ring-3
//! extension, the Linux driver's generated header and the CLI.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
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

pub mod cdecl;
#[cfg(test)]
mod docs_check;
pub mod errors;
pub mod exits;
pub mod header;
pub mod hypercall;
pub mod ioctl;
pub mod launch;
pub mod run;
pub mod syscall;

pub use errors::StartError;
pub use exits::{ExitKind, EXIT_KINDS_MAX};
pub use hypercall::{Decoded, Hypercall, Status};
