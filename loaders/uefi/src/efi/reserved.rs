//! Memory microv.efi takes from the firmware for MicroV: reserved pages
//! (or runtime code for the trampoline) that stay taken once MicroV runs
//! on them, and go back if it does not start.

use alloc::format;
use alloc::string::String;
use core::ptr::NonNull;

use microv_abi::launch::PAGE_SIZE;
use uefi::boot::{self, AllocateType, MemoryType};

use crate::layout;
use crate::pool;

/// Pages the firmware allocated for MicroV (reserved memory, or runtime
/// code for the trampoline), given back when dropped unless kept.
pub(super) struct Reserved {
    pub(super) start: NonNull<u8>,
    pages: usize,
}

impl Reserved {
    /// `pages` zeroed pages of type `ty` below the extension's address
    /// window (identity-mapped pages of MicroV's must keep out of it:
    /// `layout::EXTENSION_WINDOW`).
    pub(super) fn pages(pages: u64, ty: MemoryType, what: &str) -> Result<Reserved, String> {
        Self::below(layout::EXTENSION_WINDOW.start, pages, ty, what)
    }

    /// `pages` zeroed pages of type `ty` that end below `limit`.
    pub(super) fn below(
        limit: u64,
        pages: u64,
        ty: MemoryType,
        what: &str,
    ) -> Result<Reserved, String> {
        let count = usize::try_from(pages).map_err(|_| format!("{what}: too large"))?;
        let below = AllocateType::MaxAddress(limit - 1);
        let start = boot::allocate_pages(below, ty, count)
            .map_err(|e| format!("cannot allocate {what}: {}", e.status()))?;
        let r = Reserved {
            start,
            pages: count,
        };
        // SAFETY: the pages were just allocated for this and are mapped
        // (the firmware identity-maps memory).
        unsafe { core::ptr::write_bytes(r.start.as_ptr(), 0, count * PAGE_SIZE as usize) };
        Ok(r)
    }

    /// The pool: whole 2 MiB chunks (one chunk's worth of pages more is
    /// allocated, and the unaligned head and tail go back at once).
    pub(super) fn pool(pool_bytes: u64) -> Result<Reserved, String> {
        let pages = pool::pages_to_allocate(pool_bytes);
        let count = usize::try_from(pages).map_err(|_| "pool too large")?;
        let base = boot::allocate_pages(AllocateType::AnyPages, MemoryType::RESERVED, count)
            .map_err(|e| {
                format!(
                    "cannot allocate a pool of {} MiB: {}",
                    pool_bytes >> 20,
                    e.status()
                )
            })?;
        let addr = base.as_ptr() as u64;
        let Some(t) = pool::trim(addr, pages, pool_bytes) else {
            // SAFETY: exactly the pages just allocated, unused.
            let _ = unsafe { boot::free_pages(base, count) };
            return Err(format!(
                "the firmware allocated an unusable run at {addr:#x}"
            ));
        };
        give_back(addr, t.head_pages);
        give_back(t.pool_start + pool_bytes, t.tail_pages);
        let start = NonNull::new(t.pool_start as *mut u8).ok_or("the pool would start at 0")?;
        let r = Reserved {
            start,
            pages: (pool_bytes / pool::PAGE) as usize,
        };
        // SAFETY: the aligned pool, inside the allocation, mapped.
        unsafe { core::ptr::write_bytes(r.start.as_ptr(), 0, pool_bytes as usize) };
        Ok(r)
    }

    pub(super) fn addr(&self) -> u64 {
        self.start.as_ptr() as u64
    }

    pub(super) fn bytes(&self) -> u64 {
        self.pages as u64 * PAGE_SIZE
    }

    /// MicroV runs on these pages now: they stay reserved.
    pub(super) fn keep(self) {
        core::mem::forget(self);
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // SAFETY: these pages were allocated by `pages`/`pool` and nothing
        // uses them once dropped (MicroV did not start on them).
        let _ = unsafe { boot::free_pages(self.start, self.pages) };
    }
}

/// Frees pages of an allocation that lie outside the aligned pool.
fn give_back(at: u64, pages: u64) {
    if let (Some(ptr), Ok(n)) = (NonNull::new(at as *mut u8), usize::try_from(pages)) {
        if n != 0 {
            // SAFETY: allocated above, outside the aligned pool, never used.
            let _ = unsafe { boot::free_pages(ptr, n) };
        }
    }
}
