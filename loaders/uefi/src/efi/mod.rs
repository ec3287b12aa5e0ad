//! The UEFI application around the host-tested logic (feature `image`).

mod app;
mod capture;
mod entry;
mod start;
mod tramp;
