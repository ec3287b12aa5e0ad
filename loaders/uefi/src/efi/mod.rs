//! The UEFI application around the host-tested logic (feature `image`).

mod app;
mod entry;
