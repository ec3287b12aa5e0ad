//! The root VM's extended page tables (Intel VMX): the map AMD's nested
//! tables hold (identity, pool chunks hidden behind one dummy page, the
//! local APIC's page read-only), in EPT entries. With EPT the CPU ignores
//! the MTRRs for the root's accesses and takes the memory type from the
//! leaf, so every leaf carries the type the MTRRs give its range (Linux
//! relies on them for uncacheable MMIO); a large page whose range has more
//! than one type is split, down to 4 KiB. Ignore-PAT stays clear: the
//! root's PAT combines with the leaf's type as it would with the MTRRs on
//! bare metal.

use microv_arch::mapper::{MapError, TableMemory, WithFormat};
use microv_arch::mtrr::Mtrrs;
use microv_arch::paging::ENTRIES;
use microv_arch::vmx::ept::{self, ALL_ACCESS, EXECUTE, MEMORY_TYPE_SHIFT, READ};

use super::identity::{self, Identity, Leaves};

/// EPT entries whose leaves carry the MTRRs' memory types.
struct Ept<'a> {
    mtrrs: &'a Mtrrs,
}

impl Leaves for Ept<'_> {
    fn table_flags(&self) -> u64 {
        ALL_ACCESS
    }
    fn uniform(&self, pa: u64, size: u64) -> bool {
        self.mtrrs.range_type(pa, size).is_some()
    }
    fn leaf(&self, pa: u64, writable: bool) -> u64 {
        let access = if writable { ALL_ACCESS } else { READ | EXECUTE };
        access | u64::from(self.mtrrs.type_of(pa) as u8) << MEMORY_TYPE_SHIFT
    }
}

/// Fills the table every hidden 2 MiB range points to: 512 EPT leaves for
/// the page at `dummy_pa`, with its memory type.
pub fn fill_hiding_table(table: &mut [u64; ENTRIES], dummy_pa: u64, mtrrs: &Mtrrs) {
    identity::fill_hiding_table(table, &Ept { mtrrs }, dummy_pa);
}

/// Builds the root's EPT identity map of `[0, limit)` in the tables at
/// `root_pa`, shaped as `shape` says (`huge_pages`: the CPU's EPT has
/// 1 GiB pages), typed as `mtrrs` says.
pub fn build(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    limit: u64,
    mtrrs: &Mtrrs,
    shape: &Identity,
) -> Result<(), MapError> {
    let mut ept = WithFormat::new(mem, ept::FORMAT);
    shape.build(&mut ept, &Ept { mtrrs }, root_pa, limit)
}

/// Maps the identity page holding `gpa` after an EPT violation, as
/// [`Identity::map_on_demand`] does; false for a `gpa` at or above
/// `max_pa`.
pub fn map_on_demand(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    gpa: u64,
    max_pa: u64,
    mtrrs: &Mtrrs,
    shape: &Identity,
) -> Result<bool, MapError> {
    let mut ept = WithFormat::new(mem, ept::FORMAT);
    shape.map_on_demand(&mut ept, &Ept { mtrrs }, root_pa, gpa, max_pa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::mapper::{entry, fake::FakeTables, translate};
    use microv_arch::mtrr::{cap, def_type, MemoryType, PHYS_MASK_VALID, VARIABLE_MAX};
    use microv_arch::vmx::ept::{IGNORE_PAT, LARGE, MEMORY_TYPE_MASK};
    use MemoryType::{Uncacheable as UC, WriteBack as WB, WriteCombining as WC};

    const DUMMY: u64 = 0x7_7000;
    const APIC: u64 = 0xfee0_0000;
    const KIB4: u64 = 0x1000;
    const MIB2: u64 = 2 << 20;
    const GIB: u64 = 1 << 30;
    /// Two pool chunks in the second GiB.
    const POOL: [u64; 2] = [0x4000_0000, 0x4040_0000];

    /// A variable range of `size` bytes (a power of two) at `base`.
    fn range(base: u64, size: u64, t: MemoryType) -> (u64, u64) {
        (
            base | t as u64,
            !(size - 1) & 0xf_ffff_ffff_f000 | PHYS_MASK_VALID,
        )
    }

    /// A PC's MTRRs: WB by default; below 1 MiB WB, the legacy video
    /// window UC and the BIOS write-protected; 0xB000_0000–0xFFFF_FFFF UC
    /// (two ranges); a 1 MiB WC framebuffer at 0x8010_0000 and one at
    /// 0x50_4010_0000.
    fn mtrrs() -> Mtrrs {
        let mut variable = [(0, 0); VARIABLE_MAX];
        variable[..4].copy_from_slice(&[
            range(0xc000_0000, GIB, UC),
            range(0xb000_0000, 256 << 20, UC),
            range(0x8010_0000, 1 << 20, WC),
            range(0x50_4010_0000, 1 << 20, WC),
        ]);
        let wb = 0x0606_0606_0606_0606;
        let wp = 0x0505_0505_0505_0505;
        Mtrrs {
            cap: cap::FIXED | cap::WC | 10,
            def_type: def_type::ENABLE | def_type::FIXED_ENABLE | WB as u64,
            fixed: [wb, wb, 0, wp, wp, wp, wp, wp, wp, wp, wp],
            variable,
        }
    }

    fn shape(huge_pages: bool, hiding_table: u64) -> Identity<'static> {
        Identity {
            huge_pages,
            hidden: &POOL,
            hiding_table,
            read_only: Some(APIC + 0x300),
        }
    }

    /// The map of `[0, limit)`, built with `budget` table pages (besides
    /// the root and the hiding table).
    fn tables(budget: usize, huge: bool, limit: u64) -> (FakeTables, u64, Result<(), MapError>) {
        let (mut m, root) = FakeTables::new(budget + 1);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY, &mtrrs());
        let built = build(&mut m, root, limit, &mtrrs(), &shape(huge, hiding));
        (m, root, built)
    }

    /// The page mapping `pa`: its size, access bits and memory type.
    fn page(m: &mut FakeTables, root: u64, pa: u64) -> (u64, u64, u64) {
        let mut ept = WithFormat::new(m, ept::FORMAT);
        let (to, flags) = translate(&mut ept, root, pa).unwrap();
        assert_eq!(to, pa, "{pa:#x} is identity-mapped");
        assert_eq!(flags & IGNORE_PAT, 0, "{pa:#x}: the guest PAT applies");
        let size = if entry(&mut ept, root, pa, 3).unwrap() & LARGE != 0 {
            GIB
        } else if entry(&mut ept, root, pa, 2).unwrap() & LARGE != 0 {
            MIB2
        } else {
            KIB4
        };
        let t = (flags & MEMORY_TYPE_MASK) >> MEMORY_TYPE_SHIFT;
        (size, flags & ALL_ACCESS, t)
    }

    /// Asserts each `(pa, page size, type)`, all readable, writable and
    /// executable.
    fn assert_pages(m: &mut FakeTables, root: u64, expected: &[(u64, u64, MemoryType)]) {
        for &(pa, size, t) in expected {
            assert_eq!(page(m, root, pa), (size, ALL_ACCESS, t as u64), "{pa:#x}");
        }
    }

    #[test]
    fn large_pages_split_where_the_memory_type_changes() {
        let (mut m, root, built) = tables(64, true, 8 * GIB);
        built.unwrap();
        assert_pages(
            &mut m,
            root,
            &[
                // The first MiB follows the fixed ranges, so its 2 MiB is
                // mapped page by page.
                (0x0, KIB4, WB),
                (0x9_f000, KIB4, WB),
                (0xa_0000, KIB4, UC),
                (0xb_f000, KIB4, UC),
                (0xf_f000, KIB4, MemoryType::WriteProtected),
                (0x10_0000, KIB4, WB),
                (0x1f_f000, KIB4, WB),
                (0x20_0000, MIB2, WB),
                (0x3fe0_0000, MIB2, WB),
                // The third GiB: the framebuffer's 2 MiB by pages, WB up
                // to the UC hole.
                (0x8000_0000, KIB4, WB),
                (0x800f_f000, KIB4, WB),
                (0x8010_0000, KIB4, WC),
                (0x801f_f000, KIB4, WC),
                (0x8020_0000, MIB2, WB),
                (0xafe0_0000, MIB2, WB),
                (0xb000_0000, MIB2, UC),
                (0xbfe0_0000, MIB2, UC),
                // The fourth GiB is all UC, in 2 MiB pages for the APIC's
                // sake.
                (0xc000_0000, MIB2, UC),
                (APIC - MIB2, MIB2, UC),
                (APIC + MIB2, MIB2, UC),
                (GIB * 4, GIB, WB),
                (GIB * 8 - KIB4, GIB, WB),
            ],
        );
        // Every 16 KiB outside the pool: identity, and the MTRRs' type.
        let in_pool = |pa| POOL.iter().any(|&c| (c..c + MIB2).contains(&pa));
        for pa in (0..8 * GIB).step_by(0x4000).filter(|&pa| !in_pool(pa)) {
            let t = mtrrs().type_of(pa) as u64;
            assert_eq!(page(&mut m, root, pa).2, t, "{pa:#x}");
        }
        let mut ept = WithFormat::new(&mut m, ept::FORMAT);
        assert_eq!(translate(&mut ept, root, 8 * GIB), None);
    }

    #[test]
    fn the_apic_page_is_read_only() {
        for huge in [true, false] {
            let (mut m, root, built) = tables(64, huge, 4 * GIB);
            built.unwrap();
            let apic = page(&mut m, root, APIC + 0x300);
            assert_eq!(apic, (KIB4, READ | EXECUTE, UC as u64));
            assert_pages(
                &mut m,
                root,
                &[
                    (APIC - KIB4, MIB2, UC),
                    (APIC + KIB4, KIB4, UC),
                    (APIC + MIB2 - KIB4, KIB4, UC),
                    (APIC + MIB2, MIB2, UC),
                ],
            );
        }
    }

    #[test]
    fn the_pool_reads_the_dummy_page() {
        let (mut m, root, built) = tables(64, true, 4 * GIB);
        built.unwrap();
        let mut ept = WithFormat::new(&mut m, ept::FORMAT);
        for pa in [
            0x4000_0000u64,
            0x4000_1234,
            0x401f_f000,
            0x4040_0008,
            0x405f_ffff,
        ] {
            let (to, flags) = translate(&mut ept, root, pa).unwrap();
            assert_eq!(to, DUMMY + (pa & 0xfff), "{pa:#x}");
            assert_eq!(flags, ALL_ACCESS | (WB as u64) << MEMORY_TYPE_SHIFT);
        }
        assert_pages(
            &mut m,
            root,
            &[(0x4020_0000, MIB2, WB), (0x4060_0000, MIB2, WB)],
        );
    }

    #[test]
    fn works_without_1gib_pages() {
        let (mut m, root, built) = tables(64, false, 8 * GIB);
        built.unwrap();
        assert_pages(
            &mut m,
            root,
            &[
                (0x0, KIB4, WB),
                (0x4000_0000 + 3 * MIB2, MIB2, WB),
                (0x8010_0000, KIB4, WC),
                (0xb000_0000, MIB2, UC),
                (GIB * 4, MIB2, WB),
                (GIB * 8 - KIB4, MIB2, WB),
            ],
        );
    }

    #[test]
    fn tables_only_where_pages_split_and_running_out() {
        // The PDPT; page directories for the first four GiBs (fixed
        // ranges, pool, framebuffer and UC hole, APIC); page tables for the
        // first 2 MiB, the framebuffer's and the APIC's.
        let (m, _, built) = tables(8, true, 8 * GIB);
        assert_eq!((built, m.budget), (Ok(()), 0));
        let (_, _, built) = tables(7, true, 8 * GIB);
        assert_eq!(built, Err(MapError::OutOfMemory));
    }

    #[test]
    fn maps_faulting_addresses_on_demand() {
        let (mut m, root) = FakeTables::new(16);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY, &mtrrs());
        let pool = [0x80_0000_0000u64];
        let map = |m: &mut FakeTables, gpa, huge| {
            let shape = Identity {
                hidden: &pool,
                ..shape(huge, hiding)
            };
            map_on_demand(m, root, gpa, 1 << 46, &mtrrs(), &shape)
        };
        // A uniform GiB at once.
        assert_eq!(map(&mut m, 0x50_0000_1234, true), Ok(true));
        assert_pages(&mut m, root, &[(0x50_3fff_f000, GIB, WB)]);
        // The framebuffer's GiB is not: only its 2 MiB, by pages.
        assert_eq!(map(&mut m, 0x50_4012_3456, true), Ok(true));
        assert_pages(
            &mut m,
            root,
            &[(0x50_4000_0000, KIB4, WB), (0x50_4012_3000, KIB4, WC)],
        );
        let mut ept = WithFormat::new(&mut m, ept::FORMAT);
        assert_eq!(translate(&mut ept, root, 0x50_4020_0000), None);
        assert_eq!(map(&mut m, 0x50_401f_ffff, true), Ok(true), "raced");
        assert_eq!(map(&mut m, 0x50_4020_0000, true), Ok(true));
        assert_pages(&mut m, root, &[(0x50_4020_0000, MIB2, WB)]);
        // A GiB holding a pool chunk goes by 2 MiB, the chunk hidden.
        assert_eq!(map(&mut m, 0x80_0000_0010, true), Ok(true));
        let mut ept = WithFormat::new(&mut m, ept::FORMAT);
        let hidden = translate(&mut ept, root, 0x80_0000_0010).map(|t| t.0);
        assert_eq!(hidden, Some(DUMMY + 0x10));
        assert_eq!(map(&mut m, 0x80_0020_0010, true), Ok(true));
        assert_eq!(map(&mut m, 0x90_0000_0000, false), Ok(true));
        assert_pages(
            &mut m,
            root,
            &[(0x80_0020_0000, MIB2, WB), (0x90_0000_0000, MIB2, WB)],
        );
        assert_eq!(map(&mut m, 1 << 46, true), Ok(false));
        let (mut small, root) = FakeTables::new(1);
        let shape = shape(false, hiding);
        assert_eq!(
            map_on_demand(&mut small, root, 0x1000, 1 << 46, &mtrrs(), &shape),
            Err(MapError::OutOfMemory)
        );
    }
}
