//! microv.efi, MicroV's UEFI application: the way in for early boot.
//!
//! The firmware runs it from the EFI system partition. It reads
//! `\EFI\microv\microv.conf` ([`config`]), checks the CPU ([`svm`]) and
//! MicroV's two images exactly as the CLI does (`microv_image::flatten`),
//! lays out the pool as the Linux driver does ([`layout`]) and starts MicroV
//! beneath the firmware, brings the other CPUs in when the OS exits boot
//! services ([`aps`], [`acpi`]), and boots the OS: a
//! Linux kernel through its EFI stub, or the firmware's next boot entry.
//! After any failure it gives back what it took and boots the OS natively:
//! early boot must never keep a machine from booting.
//!
//! The logic is plain Rust, unit-tested on the host; `efi` (feature
//! `image`) is the application around it.
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

extern crate alloc;

pub mod acpi;
pub mod aps;
pub mod bootopt;
pub mod config;
pub mod images;
pub mod layout;
pub mod pool;
pub mod record;
pub mod selectors;
pub mod svm;

#[cfg(feature = "image")]
mod efi;

#[cfg(feature = "image")]
extern crate microv_rt;
