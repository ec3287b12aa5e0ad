//! The UEFI application around the host-tested logic (feature `image`).

mod ap_stub;
mod app;
mod aps;
mod capture;
mod entry;
mod reserved;
mod start;
mod tramp;
