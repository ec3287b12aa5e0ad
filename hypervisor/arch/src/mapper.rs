//! Building 4-level page tables over any memory: MicroV's own tables (in the
//! microkernel), nested page tables (in the extension) and Intel's extended
//! page tables use the same code, unit-tested here against fake memory.
//!
//! The formats differ only in what makes an entry present ([`Format`]): the
//! P bit in x86 paging and AMD nested paging, any of the read, write and
//! execute bits in EPT (SDM Vol. 3C 29.3.2). In all of them bits 51:12 hold
//! the address and bit 7 marks a 2 MiB or 1 GiB page in a level-2 or
//! level-3 entry.

use crate::paging::{self, ADDRESS_MASK, ENTRIES, HUGE, PRESENT};

/// What makes an entry of a table format present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// An entry is present if any of these bits is set.
    pub present: u64,
    /// Bits added to every entry the mapper writes (leaf or table).
    pub implied: u64,
}

impl Format {
    /// x86-64 4-level paging and AMD nested paging: the P bit, which the
    /// mapper sets in every entry it writes.
    pub const PAGING: Format = Format {
        present: PRESENT,
        implied: PRESENT,
    };

    /// True if `entry` is present in this format.
    pub const fn is_present(self, entry: u64) -> bool {
        entry & self.present != 0
    }

    /// True if entries written with `flags` are present: false for EPT
    /// flags without any permission, which would write an entry that maps
    /// nothing (and, for a table, one the next walk would replace).
    const fn makes_present(self, flags: u64) -> bool {
        self.is_present(flags | self.implied)
    }
}

/// Where page tables live.
pub trait TableMemory {
    /// The table page at physical address `pa`, if this memory holds it.
    fn table(&mut self, pa: u64) -> Option<&mut [u64; ENTRIES]>;
    /// A new zeroed table page; its physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The format of the tables reached through this memory: x86 paging
    /// unless it says otherwise (see [`WithFormat`]).
    fn format(&self) -> Format {
        Format::PAGING
    }
}

/// Any table memory, seen as holding tables of `format`: one pool holds
/// MicroV's own tables and EPT tables, and the walk must know which it is
/// building.
pub struct WithFormat<'a> {
    mem: &'a mut dyn TableMemory,
    format: Format,
}

impl<'a> WithFormat<'a> {
    pub fn new(mem: &'a mut dyn TableMemory, format: Format) -> Self {
        WithFormat { mem, format }
    }
}

impl TableMemory for WithFormat<'_> {
    fn table(&mut self, pa: u64) -> Option<&mut [u64; ENTRIES]> {
        self.mem.table(pa)
    }
    fn alloc_table(&mut self) -> Option<u64> {
        self.mem.alloc_table()
    }
    fn format(&self) -> Format {
        self.format
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No page for a new table.
    OutOfMemory,
    /// Something is already mapped there.
    AlreadyMapped,
    /// An entry points outside the table memory.
    BadTable,
    /// An address is not aligned to the page size, the level is not 1–3,
    /// or the flags would make an entry that is not present.
    Misaligned,
}

/// The slot of the level-`level` entry for `va`, creating missing tables
/// above it with `table_flags`. Fails if a large page already covers `va`.
fn slot_creating(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    level: u32,
    table_flags: u64,
) -> Result<&mut u64, MapError> {
    let format = mem.format();
    let mut table_pa = root_pa;
    let mut current = 4;
    while current > level {
        let index = paging::index(va, current);
        let entry = *mem
            .table(table_pa)
            .ok_or(MapError::BadTable)?
            .get(index)
            .ok_or(MapError::BadTable)?;
        table_pa = if !format.is_present(entry) {
            let new = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
            *mem.table(table_pa)
                .ok_or(MapError::BadTable)?
                .get_mut(index)
                .ok_or(MapError::BadTable)? = new | table_flags | format.implied;
            new
        } else if entry & HUGE != 0 {
            return Err(MapError::AlreadyMapped);
        } else {
            entry & ADDRESS_MASK
        };
        current -= 1;
    }
    mem.table(table_pa)
        .ok_or(MapError::BadTable)?
        .get_mut(paging::index(va, level))
        .ok_or(MapError::BadTable)
}

/// Maps one page of level `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) at `va` to
/// `pa` with `leaf_flags` (the format's implied bits, PRESENT in x86
/// paging, and HUGE for levels 2–3, are added). Tables created on the way
/// get `table_flags` (and the implied bits).
pub fn map(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    pa: u64,
    level: u32,
    leaf_flags: u64,
    table_flags: u64,
) -> Result<(), MapError> {
    let format = mem.format();
    if !(1..=3).contains(&level)
        || !format.makes_present(leaf_flags)
        || !format.makes_present(table_flags)
    {
        return Err(MapError::Misaligned);
    }
    let size = paging::span(level);
    if !va.is_multiple_of(size) || !pa.is_multiple_of(size) || pa & !ADDRESS_MASK != 0 {
        return Err(MapError::Misaligned);
    }
    let slot = slot_creating(mem, root_pa, va, level, table_flags)?;
    if format.is_present(*slot) {
        return Err(MapError::AlreadyMapped);
    }
    let huge = if level > 1 { HUGE } else { 0 };
    *slot = pa | leaf_flags | huge | format.implied;
    Ok(())
}

/// Points the level-`level` entry for `va` (2: a page-directory entry) at an
/// existing table `table_pa`, creating the tables above it. Several entries
/// may share one table: nested paging uses that to send many guest ranges
/// to the same page.
pub fn link_table(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    level: u32,
    table_pa: u64,
    flags: u64,
) -> Result<(), MapError> {
    let format = mem.format();
    if !(2..=3).contains(&level)
        || !va.is_multiple_of(paging::span(level))
        || table_pa & !ADDRESS_MASK != 0
        || !format.makes_present(flags)
    {
        return Err(MapError::Misaligned);
    }
    let slot = slot_creating(mem, root_pa, va, level, flags)?;
    if format.is_present(*slot) {
        return Err(MapError::AlreadyMapped);
    }
    *slot = table_pa | flags | format.implied;
    Ok(())
}

/// The table holding the level-`level` entry for `va`, walking existing
/// tables only (nothing is allocated).
fn table_for(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    level: u32,
) -> Result<u64, MapError> {
    if !(1..=4).contains(&level) {
        return Err(MapError::Misaligned);
    }
    let format = mem.format();
    let mut table = root_pa;
    let mut current = 4;
    while current > level {
        let e = *mem
            .table(table)
            .ok_or(MapError::BadTable)?
            .get(paging::index(va, current))
            .ok_or(MapError::BadTable)?;
        if !format.is_present(e) || e & HUGE != 0 {
            return Err(MapError::BadTable);
        }
        table = e & ADDRESS_MASK;
        current -= 1;
    }
    Ok(table)
}

/// The level-`level` entry for `va`.
pub fn entry(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    level: u32,
) -> Result<u64, MapError> {
    let table = table_for(mem, root_pa, va, level)?;
    mem.table(table)
        .ok_or(MapError::BadTable)?
        .get(paging::index(va, level))
        .copied()
        .ok_or(MapError::BadTable)
}

/// Overwrites the level-`level` entry for `va` with `new` in one write and
/// returns the old one. The tables above it must exist. Used to change a
/// live mapping, for example to split a 2 MiB page into a table with the
/// same translation but finer permissions.
pub fn replace_entry(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    va: u64,
    level: u32,
    new: u64,
) -> Result<u64, MapError> {
    let table = table_for(mem, root_pa, va, level)?;
    let slot = mem
        .table(table)
        .ok_or(MapError::BadTable)?
        .get_mut(paging::index(va, level))
        .ok_or(MapError::BadTable)?;
    Ok(core::mem::replace(slot, new))
}

/// Removes the 4 KiB mappings of `count` pages from `va` (pages that are
/// not mapped are skipped). Used to take back a mapping that was only
/// partly made, before its pages are freed. The caller flushes the TLB.
pub fn unmap(mem: &mut dyn TableMemory, root_pa: u64, va: u64, count: u64) {
    for i in 0..count {
        // A missing table means the page was never mapped: nothing to undo.
        let _ = replace_entry(mem, root_pa, va + i * paging::PAGE_SIZE, 1, 0);
    }
}

/// Maps the 4 KiB pages `(va, pa)` of `pages` with `flags`: all of them,
/// or none. On a failure the pages mapped so far are unmapped again, so
/// the caller may free their frames (after flushing the TLB for `pages`).
pub fn map_all_or_none<I>(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    pages: I,
    flags: u64,
    table_flags: u64,
) -> Result<(), MapError>
where
    I: Iterator<Item = (u64, u64)> + Clone,
{
    for (done, (va, pa)) in pages.clone().enumerate() {
        if let Err(e) = map(mem, root_pa, va, pa, 1, flags, table_flags) {
            for (mapped, _) in pages.take(done) {
                unmap(mem, root_pa, mapped, 1);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Walks the tables for `va`: the physical address it maps to and the leaf
/// entry's flags, or `None` if it is not mapped.
pub fn translate(mem: &mut dyn TableMemory, root_pa: u64, va: u64) -> Option<(u64, u64)> {
    let format = mem.format();
    let mut table_pa = root_pa;
    let mut level = 4;
    loop {
        let entry = *mem.table(table_pa)?.get(paging::index(va, level))?;
        if !format.is_present(entry) {
            return None;
        }
        if level == 1 || entry & HUGE != 0 {
            let span = paging::span(level);
            let base = entry & ADDRESS_MASK & !(span - 1);
            return Some((base + (va & (span - 1)), entry & !ADDRESS_MASK));
        }
        table_pa = entry & ADDRESS_MASK;
        level -= 1;
    }
}

/// Test double: page tables in a map from physical address to page
/// (feature `fake`, for other crates' tests).
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;

    /// Fake physical memory for page tables, with an allocation budget.
    pub struct FakeTables {
        pub pages: BTreeMap<u64, Box<[u64; ENTRIES]>>,
        pub next: u64,
        pub budget: usize,
    }

    impl FakeTables {
        pub fn new(budget: usize) -> (Self, u64) {
            let mut t = FakeTables {
                pages: BTreeMap::new(),
                next: 0x10_0000,
                budget: budget + 1,
            };
            let root = t.alloc_table().unwrap_or_default();
            (t, root)
        }
    }

    impl TableMemory for FakeTables {
        fn table(&mut self, pa: u64) -> Option<&mut [u64; ENTRIES]> {
            self.pages.get_mut(&pa).map(|b| &mut **b)
        }
        fn alloc_table(&mut self) -> Option<u64> {
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            let pa = self.next;
            self.next += 0x1000;
            self.pages.insert(pa, Box::new([0; ENTRIES]));
            Some(pa)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTables;
    use super::*;
    use crate::paging::{NO_EXECUTE, USER, WRITABLE};

    #[test]
    fn maps_and_translates_every_size() {
        let (mut m, root) = FakeTables::new(16);
        map(
            &mut m,
            root,
            0xffff_8000_0000_3000,
            0x5000,
            1,
            WRITABLE,
            WRITABLE,
        )
        .unwrap();
        map(
            &mut m,
            root,
            0x4000_0000,
            0x20_0000,
            2,
            USER,
            WRITABLE | USER,
        )
        .unwrap();
        map(
            &mut m,
            root,
            0x80_0000_0000,
            0x4000_0000,
            3,
            NO_EXECUTE,
            WRITABLE,
        )
        .unwrap();
        assert_eq!(
            translate(&mut m, root, 0xffff_8000_0000_3abc),
            Some((0x5abc, WRITABLE | PRESENT))
        );
        assert_eq!(
            translate(&mut m, root, 0x4001_2345).map(|t| t.0),
            Some(0x21_2345)
        );
        let (pa, flags) = translate(&mut m, root, 0x80_1234_5678).unwrap();
        assert_eq!(pa, 0x5234_5678);
        assert_eq!(flags & (NO_EXECUTE | HUGE), NO_EXECUTE | HUGE);
        assert_eq!(translate(&mut m, root, 0x1000), None);
    }

    #[test]
    fn refuses_overlaps_and_misalignment() {
        let (mut m, root) = FakeTables::new(16);
        map(&mut m, root, 0x20_0000, 0x20_0000, 2, 0, 0).unwrap();
        assert_eq!(
            map(&mut m, root, 0x20_0000, 0x40_0000, 2, 0, 0),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            map(&mut m, root, 0x20_1000, 0x1000, 1, 0, 0),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            map(&mut m, root, 0x1000, 0x1800, 1, 0, 0),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            map(&mut m, root, 0x1000, 0x1000, 4, 0, 0),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            map(&mut m, root, 0x1000, 1 << 52, 1, 0, 0),
            Err(MapError::Misaligned)
        );
    }

    #[test]
    fn linked_tables_are_shared() {
        let (mut m, root) = FakeTables::new(16);
        let shared = m.alloc_table().unwrap();
        for e in m.table(shared).unwrap().iter_mut() {
            *e = 0x7000 | PRESENT;
        }
        link_table(&mut m, root, 0x4000_0000, 2, shared, WRITABLE).unwrap();
        link_table(&mut m, root, 0x4020_0000, 2, shared, WRITABLE).unwrap();
        assert_eq!(
            translate(&mut m, root, 0x4000_5123).map(|t| t.0),
            Some(0x7123)
        );
        assert_eq!(
            translate(&mut m, root, 0x4021_0456).map(|t| t.0),
            Some(0x7456)
        );
        assert_eq!(
            link_table(&mut m, root, 0x4000_0000, 2, shared, 0),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            link_table(&mut m, root, 0x4000_1000, 2, shared, 0),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            link_table(&mut m, root, 0, 1, shared, 0),
            Err(MapError::Misaligned)
        );
        map(&mut m, root, 0x8000_0000, 0x8000_0000, 3, 0, 0).unwrap();
        assert_eq!(
            link_table(&mut m, root, 0x8000_0000, 2, shared, 0),
            Err(MapError::AlreadyMapped)
        );
    }

    #[test]
    fn replacing_an_entry_splits_a_large_page() {
        let (mut m, root) = FakeTables::new(16);
        map(&mut m, root, 0x20_0000, 0x40_0000, 2, WRITABLE, WRITABLE).unwrap();
        let pt = m.alloc_table().unwrap();
        for (i, e) in m.table(pt).unwrap().iter_mut().enumerate() {
            *e = (0x40_0000 + i as u64 * 0x1000) | PRESENT | if i == 0 { 0 } else { NO_EXECUTE };
        }
        let old = replace_entry(&mut m, root, 0x20_0000, 2, pt | PRESENT | WRITABLE).unwrap();
        assert_eq!(old, 0x40_0000 | PRESENT | HUGE | WRITABLE);
        assert_eq!(
            translate(&mut m, root, 0x20_0123),
            Some((0x40_0123, PRESENT))
        );
        assert_eq!(
            translate(&mut m, root, 0x20_1000).unwrap().1 & NO_EXECUTE,
            NO_EXECUTE
        );
        assert_eq!(
            entry(&mut m, root, 0x20_1000, 1),
            Ok(0x40_1000 | PRESENT | NO_EXECUTE)
        );
        assert_eq!(
            replace_entry(&mut m, root, 0x20_1000, 1, 0),
            Ok(0x40_1000 | PRESENT | NO_EXECUTE)
        );
        assert_eq!(translate(&mut m, root, 0x20_1000), None);
        assert_eq!(
            replace_entry(&mut m, root, 0x8000_0000, 1, 0),
            Err(MapError::BadTable)
        );
        assert_eq!(
            replace_entry(&mut m, root, 0, 5, 0),
            Err(MapError::Misaligned)
        );
        assert_eq!(entry(&mut m, root, 0x8000_0000, 2), Err(MapError::BadTable));
        assert_eq!(entry(&mut m, root, 0x40_0000, 2), Ok(0));
    }

    #[test]
    fn unmapping_takes_pages_back_and_skips_holes() {
        let (mut m, root) = FakeTables::new(16);
        for i in 0..2 {
            map(&mut m, root, 0x1000_0000 + i * 0x1000, 0x9000 + i * 0x1000, 1, USER, USER).unwrap();
        }
        unmap(&mut m, root, 0x1000_0000, 3);
        assert_eq!(translate(&mut m, root, 0x1000_0000), None);
        assert_eq!(translate(&mut m, root, 0x1000_1000), None);
        unmap(&mut m, root, 0x7000_0000_0000, 1);
        map(&mut m, root, 0x1000_0000, 0xa000, 1, USER, USER).unwrap();
        assert_eq!(translate(&mut m, root, 0x1000_0000), Some((0xa000, USER | PRESENT)));
    }

    #[test]
    fn maps_all_pages_or_none() {
        let (mut m, root) = FakeTables::new(16);
        let pages = [(0x2000_0000u64, 0x5000u64), (0x2000_1000, 0x6000)];
        map_all_or_none(&mut m, root, pages.iter().copied(), USER, USER).unwrap();
        assert_eq!(translate(&mut m, root, 0x2000_1000), Some((0x6000, USER | PRESENT)));
        // The third page is already mapped: the first two are taken back.
        let clash = [(0x3000_0000u64, 0x7000u64), (0x3000_1000, 0x8000), (0x2000_0000, 0x9000)];
        assert_eq!(
            map_all_or_none(&mut m, root, clash.iter().copied(), USER, USER),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(translate(&mut m, root, 0x3000_0000), None);
        assert_eq!(translate(&mut m, root, 0x3000_1000), None);
        assert_eq!(translate(&mut m, root, 0x2000_0000), Some((0x5000, USER | PRESENT)), "untouched");
    }

    /// A format whose entries are present when any of bits 2:0 is set and
    /// that adds nothing (as EPT's).
    const ANY_OF_THREE: Format = Format {
        present: 0b111,
        implied: 0,
    };

    #[test]
    fn other_formats_decide_presence_from_their_own_bits() {
        let (mut fake, root) = FakeTables::new(16);
        assert_eq!(fake.format(), Format::PAGING);
        let mut m = WithFormat::new(&mut fake, ANY_OF_THREE);
        // Execute-only (bit 2) is present; nothing is added to the entry.
        map(&mut m, root, 0x20_0000, 0x40_0000, 2, 0b100, 0b111).unwrap();
        assert_eq!(
            translate(&mut m, root, 0x20_1234),
            Some((0x40_1234, 0b100 | HUGE))
        );
        assert_eq!(entry(&mut m, root, 0, 4).map(|e| e & 0xfff), Ok(0b111));
        map(&mut m, root, 0x1000, 0x5000, 1, 0b001, 0b111).unwrap();
        assert_eq!(translate(&mut m, root, 0x1008), Some((0x5008, 0b001)));
        assert_eq!(
            map(&mut m, root, 0x1000, 0x6000, 1, 0b010, 0b111),
            Err(MapError::AlreadyMapped)
        );
        // Flags that give no permission would write entries that are not
        // present: refused before anything is written.
        for (leaf, table) in [(0, 0b111), (0b001, 0), (PRESENT << 3, 0b111)] {
            assert_eq!(
                map(&mut m, root, 0x8000_0000, 0x8000_0000, 1, leaf, table),
                Err(MapError::Misaligned)
            );
        }
        assert_eq!(
            link_table(&mut m, root, 0x4000_0000, 2, 0x9000, 0),
            Err(MapError::Misaligned)
        );
        assert_eq!(translate(&mut m, root, 0x8000_0000), None);
        link_table(&mut m, root, 0x4000_0000, 2, 0x9000, 0b011).unwrap();
        // A P bit alone is not presence here: the walk stops at it.
        replace_entry(&mut m, root, 0x1000, 1, 0x5000 | PRESENT << 3).unwrap();
        assert_eq!(translate(&mut m, root, 0x1000), None);
        assert_eq!(fake.budget, 16 - 4, "a PDPT, two PDs and a PT");
    }

    #[test]
    fn reports_exhaustion_and_broken_tables() {
        let (mut m, root) = FakeTables::new(2);
        assert_eq!(
            map(&mut m, root, 0x1000, 0x1000, 1, 0, 0),
            Err(MapError::OutOfMemory)
        );
        let (mut m, root) = FakeTables::new(4);
        m.table(root).unwrap()[0] = 0xdead_0000 | PRESENT;
        assert_eq!(
            map(&mut m, root, 0x1000, 0x1000, 1, 0, 0),
            Err(MapError::BadTable)
        );
        assert_eq!(translate(&mut m, root, 0x1000), None);
        assert_eq!(
            map(&mut m, 0x42_0000, 0x1000, 0x1000, 1, 0, 0),
            Err(MapError::BadTable)
        );
    }
}
