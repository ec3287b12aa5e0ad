//! The walk behind the root's identity map, shared by AMD's nested tables
//! and Intel's EPT: which ranges get one large page, which pool chunks
//! point at the hiding table, where the map goes down to 4 KiB. What the
//! entries hold is the format's ([`Leaves`]).

use microv_abi::launch::CHUNK_SIZE;
use microv_arch::mapper::{self, MapError, TableMemory};
use microv_arch::paging::{self, ENTRIES, HUGE_PAGE_SIZE, LARGE_PAGE_SIZE, PAGE_SIZE};

/// What a format writes in the root's map.
pub trait Leaves {
    /// The flags of entries that point at a table (the hiding table too).
    fn table_flags(&self) -> u64;
    /// True if the naturally aligned `size` bytes at `pa` may be one page
    /// (EPT: one memory type throughout).
    fn uniform(&self, _pa: u64, _size: u64) -> bool {
        true
    }
    /// The flags of the leaf mapping the page at `pa` (of any size) to
    /// itself, writable or not.
    fn leaf(&self, pa: u64, writable: bool) -> u64;
}

/// Fills the page table every hidden 2 MiB range points to: all 512
/// entries map one harmless page, so the root reads zeros (or what it wrote
/// there itself) instead of hypervisor memory, and never faults.
pub fn fill_hiding_table(table: &mut [u64; ENTRIES], leaves: &dyn Leaves, dummy_pa: u64) {
    table.fill(dummy_pa | leaves.leaf(dummy_pa, true));
}

/// The shape of the root's identity map: 1 GiB pages where `huge_pages`
/// allows (else 2 MiB), except around `hidden` pool chunks, which point at
/// `hiding_table`, and around the `read_only` page (the root's local APIC:
/// its writes exit so that `ipi_guard` sees every IPI the root sends),
/// mapped with 4 KiB pages.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub huge_pages: bool,
    pub hidden: &'a [u64],
    pub hiding_table: u64,
    pub read_only: Option<u64>,
}

impl Identity<'_> {
    /// Maps `[0, limit)` (whole GiBs) into the tables at `root_pa`.
    pub fn build(
        &self,
        mem: &mut dyn TableMemory,
        leaves: &dyn Leaves,
        root_pa: u64,
        limit: u64,
    ) -> Result<(), MapError> {
        let mut gib = 0;
        while gib < limit {
            self.block(mem, leaves, root_pa, gib, 3)?;
            gib += HUGE_PAGE_SIZE;
        }
        Ok(())
    }

    /// Maps the identity page holding `gpa` after a nested page fault or
    /// EPT violation (root accesses beyond the initial map, such as high
    /// PCI BARs on large machines): its whole GiB as one page where that
    /// may be (no pool chunk in it: so the root cannot use up the pool one
    /// fault at a time, at most one table page per 512 GiB), else its
    /// 2 MiB. `max_pa` is the first address the CPU cannot address: false
    /// for a `gpa` at or above it. Pool chunks stay hidden; a page another
    /// CPU mapped meanwhile counts as mapped.
    pub fn map_on_demand(
        &self,
        mem: &mut dyn TableMemory,
        leaves: &dyn Leaves,
        root_pa: u64,
        gpa: u64,
        max_pa: u64,
    ) -> Result<bool, MapError> {
        if gpa >= max_pa {
            return Ok(false);
        }
        let gib = gpa & !(HUGE_PAGE_SIZE - 1);
        if self.one_page(leaves, gib, 3).is_some() {
            self.block(mem, leaves, root_pa, gib, 3)?;
        } else {
            self.block(mem, leaves, root_pa, gpa & !(LARGE_PAGE_SIZE - 1), 2)?;
        }
        Ok(true)
    }

    /// Maps the naturally aligned level-`level` block at `pa`: with one
    /// page where it may, else entry by entry a level down. Whatever is
    /// mapped already stays, and counts as done.
    fn block(
        &self,
        mem: &mut dyn TableMemory,
        leaves: &dyn Leaves,
        root_pa: u64,
        pa: u64,
        level: u32,
    ) -> Result<(), MapError> {
        let table_flags = leaves.table_flags();
        let done = if level == 2 && self.is_hidden(pa) {
            mapper::link_table(mem, root_pa, pa, 2, self.hiding_table, table_flags)
        } else if let Some(flags) = self.one_page(leaves, pa, level) {
            mapper::map(mem, root_pa, pa, pa, level, flags, table_flags)
        } else {
            let step = paging::span(level - 1);
            let mut part = pa;
            while part < pa + paging::span(level) {
                self.block(mem, leaves, root_pa, part, level - 1)?;
                part += step;
            }
            Ok(())
        };
        match done {
            Err(MapError::AlreadyMapped) => Ok(()),
            other => other,
        }
    }

    /// The leaf flags of one level-`level` page mapping all of the block
    /// at `pa`, or `None` if the block needs smaller pages: it holds the
    /// read-only page or (for 1 GiB) a pool chunk, 1 GiB pages are not
    /// allowed, or its memory type is not uniform. A 4 KiB page always may.
    fn one_page(&self, leaves: &dyn Leaves, pa: u64, level: u32) -> Option<u64> {
        let size = paging::span(level);
        let may = match level {
            1 => true,
            2 => !self.read_only_in(pa, size) && leaves.uniform(pa, size),
            _ => {
                self.huge_pages
                    && !self.hidden_in(pa, size)
                    && !self.read_only_in(pa, size)
                    && leaves.uniform(pa, size)
            }
        };
        let writable = Some(pa) != self.read_only.map(|p| p & !(PAGE_SIZE - 1));
        may.then(|| leaves.leaf(pa, writable))
    }

    fn is_hidden(&self, pa: u64) -> bool {
        self.hidden.iter().any(|&h| h <= pa && pa < h + CHUNK_SIZE)
    }

    fn hidden_in(&self, start: u64, len: u64) -> bool {
        self.hidden
            .iter()
            .any(|&h| h < start + len && start < h + CHUNK_SIZE)
    }

    fn read_only_in(&self, start: u64, len: u64) -> bool {
        self.read_only
            .is_some_and(|p| start <= p && p < start + len)
    }
}
