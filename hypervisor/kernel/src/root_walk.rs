//! Reading the root's code: the bytes at a root linear address, through the
//! root's own page tables. The extension needs them to emulate the root's
//! writes to its local APIC page (TCG's SVM has no decode assists, and the
//! CPU's copy of the instruction bytes would only exist on hardware).
//!
//! Every table entry and every byte is read through [`RootPhys`], which
//! refuses what the root's nested tables do not map as its own RAM (the
//! pool, device memory): a hostile root can point its tables anywhere, and
//! only ever gets back bytes it could read itself. The walk checks
//! presence only: the CPU already fetched these bytes, and a root that
//! changes its tables meanwhile only gets a different write of its own
//! APIC emulated, with the same checks.

use microv_arch::paging::{ADDRESS_MASK, HUGE, PAGE_SIZE, PRESENT};

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
/// Bits of a linear address each paging level translates.
const LEVEL_BITS: u32 = 9;

/// Root-physical memory, a naturally aligned `u64` at a time.
pub trait RootPhys {
    /// The `u64` at `pa` (8-byte aligned), or `None` if it is not the
    /// root's RAM.
    fn read_u64(&mut self, pa: u64) -> Option<u64>;
}

/// The root's paging registers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Paging {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl Paging {
    /// Levels of the walk: 0 without paging, 4 or 5 in long mode; `None`
    /// for legacy 32-bit paging, which the root never uses while it runs
    /// a 64-bit kernel (the only root MicroV supports).
    fn levels(&self) -> Option<u32> {
        match (self.cr0 & CR0_PG != 0, self.efer & EFER_LMA != 0) {
            (false, _) => Some(0),
            (true, true) if self.cr4 & CR4_PAE != 0 => {
                Some(if self.cr4 & CR4_LA57 != 0 { 5 } else { 4 })
            }
            _ => None,
        }
    }
}

/// The root-physical address of linear address `la`.
pub fn translate(mem: &mut dyn RootPhys, paging: &Paging, la: u64) -> Option<u64> {
    let levels = paging.levels()?;
    let mut table = paging.cr3 & ADDRESS_MASK;
    let mut level = levels;
    while level > 0 {
        let shift = 12 + LEVEL_BITS * (level - 1);
        let index = (la >> shift) & ((1 << LEVEL_BITS) - 1);
        let entry = mem.read_u64(table + index * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        // 1 GiB and 2 MiB pages end the walk early.
        if level == 1 || (level <= 3 && entry & HUGE != 0) {
            let span = 1u64 << shift;
            return Some((entry & ADDRESS_MASK & !(span - 1)) | (la & (span - 1)));
        }
        table = entry & ADDRESS_MASK;
        level -= 1;
    }
    Some(la)
}

/// Fills `buf` with the bytes at linear address `la`; returns how many it
/// could read (it stops at the first byte that is not mapped).
pub fn read(mem: &mut dyn RootPhys, paging: &Paging, la: u64, buf: &mut [u8]) -> usize {
    let mut page: Option<u64> = None;
    let mut word: Option<(u64, u64)> = None;
    for (i, out) in buf.iter_mut().enumerate() {
        let at = la.wrapping_add(i as u64);
        if page.is_none() || at.is_multiple_of(PAGE_SIZE) {
            page = translate(mem, paging, at & !(PAGE_SIZE - 1));
        }
        let Some(base) = page else {
            return i;
        };
        let pa = base + (at % PAGE_SIZE);
        let aligned = pa & !7;
        let value = match word {
            Some((w, v)) if w == aligned => v,
            _ => match mem.read_u64(aligned) {
                Some(v) => {
                    word = Some((aligned, v));
                    v
                }
                None => return i,
            },
        };
        *out = (value >> ((pa & 7) * 8)) as u8;
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Root RAM as a map of `u64`s; anything else is not RAM.
    #[derive(Default)]
    struct Ram(BTreeMap<u64, u64>);

    impl RootPhys for Ram {
        fn read_u64(&mut self, pa: u64) -> Option<u64> {
            assert_eq!(pa % 8, 0);
            self.0.get(&pa).copied()
        }
    }

    impl Ram {
        fn put(&mut self, pa: u64, v: u64) {
            self.0.insert(pa, v);
        }
        fn bytes(&mut self, pa: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                let at = pa + i as u64;
                let w = self.0.entry(at & !7).or_insert(0);
                *w = (*w & !(0xff << ((at & 7) * 8))) | (u64::from(*b) << ((at & 7) * 8));
            }
        }
    }

    const LONG: Paging = Paging {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    /// 4-level tables at 0x1000.. mapping `la` to the 4 KiB page `pa`.
    fn map_4k(ram: &mut Ram, la: u64, pa: u64, tables: [u64; 3]) {
        let idx = |l: u32| (la >> (12 + 9 * (l - 1))) & 511;
        ram.put(0x1000 + idx(4) * 8, tables[0] | PRESENT);
        ram.put(tables[0] + idx(3) * 8, tables[1] | PRESENT);
        ram.put(tables[1] + idx(2) * 8, tables[2] | PRESENT);
        ram.put(tables[2] + idx(1) * 8, pa | PRESENT);
    }

    #[test]
    fn walks_four_level_tables_and_large_pages() {
        let mut ram = Ram::default();
        let la = 0xffff_ffff_8100_0123u64;
        map_4k(&mut ram, la, 0x50_0000, [0x2000, 0x3000, 0x4000]);
        assert_eq!(translate(&mut ram, &LONG, la), Some(0x50_0123));
        // A 2 MiB page at level 2.
        let la2 = 0xffff_ffff_8240_1234u64;
        ram.put(0x3000 + ((la2 >> 21) & 511) * 8, 0x60_0000 | PRESENT | HUGE);
        assert_eq!(translate(&mut ram, &LONG, la2), Some(0x60_1234));
        // A 1 GiB page at level 3.
        let la3 = 0x0000_0040_1234_5678u64;
        ram.put(0x1000, 0x7000 | PRESENT);
        ram.put(0x7000 + ((la3 >> 30) & 511) * 8, 0x8000_0000 | PRESENT | HUGE);
        assert_eq!(translate(&mut ram, &LONG, la3), Some(0x9234_5678));
        // Not present, or a table outside RAM.
        assert_eq!(translate(&mut ram, &LONG, 0x0000_0080_0000_0000), None);
        ram.put(0x3000 + ((la2 >> 21) & 511) * 8, 0x60_0000);
        assert_eq!(translate(&mut ram, &LONG, la2), None);
        ram.put(0x3000 + ((la2 >> 21) & 511) * 8, 0xdead_0000 | PRESENT);
        assert_eq!(translate(&mut ram, &LONG, la2), None);
    }

    #[test]
    fn five_levels_no_paging_and_legacy_modes() {
        let mut ram = Ram::default();
        let la5 = 0x00ff_0000_0000_1008u64;
        let p = Paging { cr4: CR4_PAE | CR4_LA57, ..LONG };
        ram.put(0x1000 + ((la5 >> 48) & 511) * 8, 0x2000 | PRESENT);
        ram.put(0x2000, 0x3000 | PRESENT);
        ram.put(0x3000, 0x4000 | PRESENT);
        ram.put(0x4000, 0x5000 | PRESENT);
        ram.put(0x5000 + 8, 0xa000 | PRESENT);
        assert_eq!(translate(&mut ram, &p, la5), Some(0xa008));
        assert_eq!(translate(&mut ram, &Paging::default(), 0x1234), Some(0x1234));
        let legacy = Paging { efer: 0, ..LONG };
        assert_eq!(translate(&mut ram, &legacy, 0x1234), None);
        let no_pae = Paging { cr4: 0, ..LONG };
        assert_eq!(translate(&mut ram, &no_pae, 0x1234), None);
    }

    #[test]
    fn reads_across_pages_and_stops_where_memory_ends() {
        let mut ram = Ram::default();
        let la = 0xffff_ffff_8100_0ffau64;
        map_4k(&mut ram, la, 0x50_0000, [0x2000, 0x3000, 0x4000]);
        let next = la + 6;
        ram.put(0x4000 + ((next >> 12) & 511) * 8, 0x70_0000 | PRESENT);
        ram.bytes(0x50_0ffa, &[1, 2, 3, 4, 5, 6]);
        ram.bytes(0x70_0000, &[7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let mut buf = [0u8; 16];
        assert_eq!(read(&mut ram, &LONG, la, &mut buf), 16);
        assert_eq!(buf, core::array::from_fn::<u8, 16, _>(|i| i as u8 + 1));
        // The next page unmapped: the bytes up to the boundary.
        ram.put(0x4000 + ((next >> 12) & 511) * 8, 0);
        let mut buf = [0u8; 16];
        assert_eq!(read(&mut ram, &LONG, la, &mut buf), 6);
        assert_eq!(&buf[..6], &[1, 2, 3, 4, 5, 6]);
        // A mapped page whose bytes are not RAM.
        ram.put(0x4000 + ((next >> 12) & 511) * 8, 0x90_0000 | PRESENT);
        assert_eq!(read(&mut ram, &LONG, la, &mut buf), 6);
        // Nothing mapped at all.
        assert_eq!(read(&mut ram, &LONG, 0x1000_0000, &mut buf), 0);
    }
}
