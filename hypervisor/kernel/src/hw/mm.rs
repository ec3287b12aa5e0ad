//! The pool as the microkernel sees it: the frame allocator, physical to
//! virtual translation, and MicroV's own page tables.

use microv_abi::launch::{BootInfo, CHUNK_SIZE, KERNEL_STACK_SIZE, MAX_CPUS, PAGE_SIZE, POOL_VA};
use microv_arch::instr;
use microv_arch::mapper::{self, MapError, TableMemory};
use microv_arch::paging::{ENTRIES, NO_EXECUTE, PRESENT, USER, WRITABLE};
use spin::Mutex;

use crate::frame::{FrameAllocator, FrameError};
use crate::layout;

/// The pool's frames and the page tables, under one lock.
pub struct Memory {
    pub frames: FrameAllocator,
    pub root_pa: u64,
    pub boot: *const BootInfo,
}

// SAFETY: `boot` points at the boot info in the pool, read-only after start.
unsafe impl Send for Memory {}

pub static MEMORY: Mutex<Memory> = Mutex::new(Memory {
    frames: FrameAllocator::new(),
    root_pa: 0,
    boot: core::ptr::null(),
});

/// A pool page: its offset, physical address and hypervisor address.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub offset: u64,
    pub pa: u64,
    pub va: u64,
}

impl Memory {
    /// The boot info (set by the first CPU at start).
    pub fn boot(&self) -> Option<&'static BootInfo> {
        // SAFETY: set once at start to the boot info page in the pool, which
        // stays mapped and unchanged for MicroV's lifetime.
        unsafe { self.boot.as_ref() }
    }

    /// Allocates `count` zeroed contiguous pages.
    pub fn alloc(&mut self, count: usize) -> Result<Page, FrameError> {
        let first = self.frames.alloc(count)?;
        let offset = first as u64 * PAGE_SIZE;
        let Some(pa) = self.boot().and_then(|b| b.pool_pa(offset)) else {
            return Err(FrameError::InvalidRange);
        };
        let va = POOL_VA + offset;
        // SAFETY: the pages were just allocated from the pool, which is mapped
        // at POOL_VA; nothing else refers to them.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, count * PAGE_SIZE as usize) };
        Ok(Page { offset, pa, va })
    }

    /// Gives back pages from [`Memory::alloc`].
    pub fn free(&mut self, page: Page, count: usize) {
        // A failure here means a double free: nothing to undo, so only log it.
        if self
            .frames
            .free((page.offset / PAGE_SIZE) as usize, count)
            .is_err()
        {
            super::log::log!(
                "microkernel: bad free of {count} pages at pool offset {:#x}",
                page.offset
            );
        }
    }

    /// True if every page of `[va, va + len)` is mapped for the extension.
    pub fn user_range_mapped(&mut self, va: u64, len: u64) -> bool {
        let Some(end) = va.checked_add(len) else {
            return false;
        };
        let root = self.root_pa;
        let mut page = va & !(PAGE_SIZE - 1);
        while page < end {
            match mapper::translate(self, root, page) {
                Some((_, flags)) if flags & USER != 0 => {}
                _ => return false,
            }
            page += PAGE_SIZE;
        }
        true
    }

    /// Hypervisor address of a pool physical address.
    pub fn va_of(&self, pa: u64) -> Option<u64> {
        self.boot()
            .and_then(|b| b.pool_offset(pa))
            .map(|off| POOL_VA + off)
    }

    /// Maps `count` pages at `va` (extension space) to pool memory at `pa`:
    /// all of them or none (see `mapper::map_all_or_none`), so on failure
    /// the caller may free the frames.
    pub fn map_user(
        &mut self,
        va: u64,
        pa: u64,
        count: u64,
        writable: bool,
        executable: bool,
    ) -> Result<(), MapError> {
        let pages = (0..count).map(|i| (va + i * PAGE_SIZE, pa + i * PAGE_SIZE));
        self.map_user_pages(pages, writable, executable)
    }

    /// Maps single pages `(va, pa)` for the extension: all of them or none.
    pub fn map_user_pages<I>(
        &mut self,
        pages: I,
        writable: bool,
        executable: bool,
    ) -> Result<(), MapError>
    where
        I: Iterator<Item = (u64, u64)> + Clone,
    {
        let mut flags = USER;
        if writable {
            flags |= WRITABLE;
        }
        if !executable {
            flags |= NO_EXECUTE;
        }
        let root = self.root_pa;
        let done = mapper::map_all_or_none(self, root, pages.clone(), flags, USER | WRITABLE);
        if done.is_err() {
            // Drop this CPU's TLB entries for the pages mapped for a moment.
            // Other CPUs share these tables and may hold entries too: callers
            // never reuse the frames of a failed mapping.
            for (va, _) in pages {
                // SAFETY: ring 0; dropping a TLB entry has no other effect.
                unsafe { instr::invlpg(va) };
            }
        }
        done
    }
}

impl Memory {
    /// Replaces the loader's read-write-execute mapping of the pool: W^X
    /// for the microkernel's image, no execute anywhere else, and an
    /// unmapped guard page under each CPU's stack (see `layout`).
    pub fn harden(&mut self, bi: &BootInfo) -> Result<(), MapError> {
        let mut guards = [u64::MAX; MAX_CPUS];
        let cpus = (bi.cpu_count as usize).min(MAX_CPUS);
        for (i, guard) in (1u64..).zip(guards.iter_mut()).take(cpus) {
            let top = bi.stacks_offset + i * KERNEL_STACK_SIZE;
            *guard = layout::stack_guard(top, KERNEL_STACK_SIZE);
        }
        let guards = guards.get(..cpus).unwrap_or_default();
        let root = self.root_pa;
        for chunk in 0..u64::from(bi.chunk_count) {
            let offset = chunk * CHUNK_SIZE;
            let va = POOL_VA + offset;
            let pa = bi.pool_pa(offset).ok_or(MapError::BadTable)?;
            let new = if layout::chunk_needs_table(offset, &bi.kernel, guards) {
                let table = self.alloc(1).map_err(|_| MapError::OutOfMemory)?;
                // SAFETY: the page was just allocated for this table.
                let entries = unsafe { &mut *(table.va as *mut [u64; ENTRIES]) };
                for (i, e) in (0u64..).zip(entries.iter_mut()) {
                    let flags = layout::page_flags(offset + i * PAGE_SIZE, &bi.kernel, guards);
                    *e = if flags == 0 {
                        0
                    } else {
                        (pa + i * PAGE_SIZE) | flags
                    };
                }
                table.pa | PRESENT | WRITABLE
            } else {
                mapper::entry(self, root, va, 2)? | NO_EXECUTE
            };
            // One write: the chunk may hold the very tables being walked.
            mapper::replace_entry(self, root, va, 2, new)?;
        }
        flush_tlb();
        Ok(())
    }
}

/// Drops every TLB entry of MicroV's address space on this CPU.
pub fn flush_tlb() {
    // SAFETY: reading CR3 in ring 0 has no effect.
    let cr3 = unsafe { instr::read_cr3() };
    // SAFETY: reloading CR3 with its own value only flushes the TLB
    // (MicroV's entries are never global: CR4.PGE is off).
    unsafe { instr::write_cr3(cr3) };
}

impl TableMemory for Memory {
    fn table(&mut self, pa: u64) -> Option<&mut [u64; ENTRIES]> {
        let va = self.va_of(pa)?;
        // SAFETY: page tables live in pool pages and are only touched under
        // the MEMORY lock, which `self` proves we hold.
        Some(unsafe { &mut *(va as *mut [u64; ENTRIES]) })
    }

    fn alloc_table(&mut self) -> Option<u64> {
        self.alloc(1).ok().map(|p| p.pa)
    }
}
