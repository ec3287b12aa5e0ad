//! The root VM's tables: its nested page tables (all of physical memory
//! except the hypervisor's pool, identity-mapped) and its MSR and I/O
//! permission maps. The microkernel builds them in pool memory ring 3
//! cannot reach and sets them in every root VMCB itself: they are what keep
//! the root out of MicroV, so a compromised extension must not be able to
//! loosen them. Their contents follow the shared policy tables
//! (`arch::msr::policy`, `abi::syscall::EXTENSION_PORTS`).
//!
//! AMD's are here; Intel's are [`ept`] (the same map in EPT entries, with
//! the MTRRs' memory types) and [`vmx`] (the MSR and I/O bitmaps). Both
//! maps come from one walk, [`identity`].

use microv_abi::syscall::EXTENSION_PORTS;
use microv_arch::mapper::{MapError, TableMemory};
use microv_arch::msr::policy::{self, Action};
use microv_arch::paging::{ENTRIES, PRESENT, USER, WRITABLE};
use microv_arch::svm;

pub mod ept;
pub mod identity;
pub mod vmx;

use identity::{Identity, Leaves};

/// Nested-table entries: nested walks are user accesses, so U is required.
const NPT_FLAGS: u64 = PRESENT | WRITABLE | USER;
/// Most physical address space mapped for the root (4 TiB with 1 GiB pages,
/// 512 GiB with 2 MiB pages, so the tables stay small).
const MAX_BITS_HUGE: u32 = 42;
const MAX_BITS_LARGE: u32 = 39;

/// How much guest-physical space to map, from CPUID's physical-address bits.
pub fn phys_limit(phys_bits: u32, huge_pages: bool) -> u64 {
    let cap = if huge_pages {
        MAX_BITS_HUGE
    } else {
        MAX_BITS_LARGE
    };
    1u64 << phys_bits.clamp(32, cap)
}

/// AMD's nested-table entries.
struct Npt;

impl Leaves for Npt {
    fn table_flags(&self) -> u64 {
        NPT_FLAGS
    }
    fn leaf(&self, _pa: u64, writable: bool) -> u64 {
        if writable {
            NPT_FLAGS
        } else {
            NPT_FLAGS & !WRITABLE
        }
    }
}

/// Fills the page table every hidden 2 MiB range points to: all 512
/// entries map one harmless page, so the root reads zeros (or what it wrote
/// there itself) instead of hypervisor memory, and never faults.
pub fn fill_hiding_table(table: &mut [u64; ENTRIES], dummy_pa: u64) {
    identity::fill_hiding_table(table, &Npt, dummy_pa);
}

/// Builds the root's nested-table identity map of `[0, limit)`, shaped as
/// [`Identity`] says: the local APIC's page (`read_only`) loses write
/// access, every access to a `hidden` chunk reaches the dummy page behind
/// `hiding_table`.
pub fn build_npt(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    limit: u64,
    huge_pages: bool,
    hidden: &[u64],
    hiding_table: u64,
    read_only: Option<u64>,
) -> Result<(), MapError> {
    let shape = Identity {
        huge_pages,
        hidden,
        hiding_table,
        read_only,
    };
    shape.build(mem, &Npt, root_pa, limit)
}

/// Maps the identity page holding `gpa` after a nested page fault, as
/// [`Identity::map_on_demand`] does: its 1 GiB where `huge_pages` allows
/// and no pool chunk lies in it, else its 2 MiB; false for a `gpa` at or
/// above `max_pa`.
pub fn map_on_demand(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    gpa: u64,
    max_pa: u64,
    huge_pages: bool,
    hidden: &[u64],
    hiding_table: u64,
) -> Result<bool, MapError> {
    let shape = Identity {
        huge_pages,
        hidden,
        hiding_table,
        read_only: None,
    };
    shape.map_on_demand(mem, &Npt, root_pa, gpa, max_pa)
}

/// Builds the MSR permission map from the policy table: every access
/// exits, except the directions the table marks `Pass`.
pub fn fill_msrpm(map: &mut [u8; svm::MSRPM_SIZE]) {
    map.fill(0xff);
    for (index, read, write) in passed_msrs() {
        // The read bit of an MSR, then its write bit.
        let open = u8::from(read) | (u8::from(write) << 1);
        if let Some((byte, bit)) = svm::msrpm_position(index) {
            if let Some(b) = map.get_mut(byte) {
                *b &= !(open << bit);
            }
        }
    }
}

/// Every MSR the policy table lets pass in some direction: its index,
/// whether reads pass, whether writes pass.
fn passed_msrs() -> impl Iterator<Item = (u32, bool, bool)> {
    policy::RULES
        .iter()
        .filter(|r| r.read == Action::Pass || r.write == Action::Pass)
        .flat_map(|r| {
            let (read, write) = (r.read == Action::Pass, r.write == Action::Pass);
            (r.first..=r.last).map(move |index| (index, read, write))
        })
}

/// Sets the I/O permission map's bits for the ports whose every access
/// exits: those the extension replays (`docs/io-ports.md`).
pub fn fill_iopm(map: &mut [u8; svm::IOPM_SIZE]) {
    for port in EXTENSION_PORTS {
        if let Some(b) = map.get_mut(usize::from(port / 8)) {
            *b |= 1 << (port % 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::mapper::{fake::FakeTables, translate};
    use microv_arch::msr as arch_msr;

    const DUMMY: u64 = 0x7_7000;

    const APIC: u64 = 0xfee0_0000;

    fn tables(budget: usize, hidden: &[u64], huge: bool, limit: u64) -> (FakeTables, u64) {
        let (mut m, root) = FakeTables::new(budget);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY);
        build_npt(&mut m, root, limit, huge, hidden, hiding, Some(APIC + 0x300)).unwrap();
        (m, root)
    }

    #[test]
    fn the_apic_page_is_read_only() {
        for huge in [true, false] {
            let (mut m, root) = tables(64, &[], huge, 8 << 30);
            let (pa, flags) = translate(&mut m, root, APIC + 0x300).unwrap();
            assert_eq!(pa, APIC + 0x300);
            assert_eq!(flags & NPT_FLAGS, PRESENT | USER);
            for next in [APIC - 0x1000, APIC + 0x1000, APIC + 0x20_0000, 0x4000_0000] {
                let (pa, flags) = translate(&mut m, root, next).unwrap();
                assert_eq!((pa, flags & NPT_FLAGS), (next, NPT_FLAGS), "{next:#x}");
            }
        }
    }

    #[test]
    fn identity_maps_everything_but_the_pool() {
        let pool = [0x4_0000_0000, 0x4_0040_0000];
        let (mut m, root) = tables(64, &pool, true, 1 << 40);
        for pa in [
            0u64,
            0xfee0_0000,
            0x3_ffff_f000,
            0x4_0020_0000,
            0x4_4000_0000,
            0xff_ffff_f000,
        ] {
            assert_eq!(
                translate(&mut m, root, pa).map(|t| t.0),
                Some(pa),
                "{pa:#x}"
            );
        }
        for pa in [
            0x4_0000_0000u64,
            0x4_0000_1234,
            0x4_001f_f000,
            0x4_0040_0008,
            0x4_005f_ffff,
        ] {
            assert_eq!(
                translate(&mut m, root, pa).map(|t| t.0),
                Some(DUMMY + (pa & 0xfff)),
                "{pa:#x}"
            );
        }
        assert_eq!(translate(&mut m, root, 1 << 40), None);
        let (_, flags) = translate(&mut m, root, 0x1000).unwrap();
        assert_eq!(flags & NPT_FLAGS, NPT_FLAGS);
    }

    #[test]
    fn works_without_1gib_pages() {
        let (mut m, root) = tables(64, &[0x20_0000], false, 4 << 30);
        assert_eq!(translate(&mut m, root, 0x1234).map(|t| t.0), Some(0x1234));
        assert_eq!(
            translate(&mut m, root, 0x20_0010).map(|t| t.0),
            Some(DUMMY + 0x10)
        );
        assert_eq!(
            translate(&mut m, root, 0xffff_f000).map(|t| t.0),
            Some(0xffff_f000)
        );
    }

    #[test]
    fn reports_running_out_of_table_pages() {
        let (mut m, root) = FakeTables::new(1);
        assert_eq!(
            build_npt(&mut m, root, 4 << 30, false, &[], 0, None),
            Err(MapError::OutOfMemory)
        );
    }

    #[test]
    fn maps_faulting_addresses_on_demand() {
        let (mut m, root) = FakeTables::new(16);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY);
        let pool = [0x80_0000_0000u64];
        let map = |m: &mut FakeTables, gpa, huge| map_on_demand(m, root, gpa, 1 << 48, huge, &pool, hiding);
        assert_eq!(map(&mut m, 0x50_0000_1234, false), Ok(true));
        assert_eq!(translate(&mut m, root, 0x50_0000_1234).map(|t| t.0), Some(0x50_0000_1234));
        assert_eq!(translate(&mut m, root, 0x50_0020_0000), None, "2 MiB only");
        assert_eq!(map(&mut m, 0x50_0010_0000, false), Ok(true), "raced");
        // With 1 GiB pages a whole gigabyte is mapped at once.
        assert_eq!(map(&mut m, 0x60_1234_5678, true), Ok(true));
        assert_eq!(translate(&mut m, root, 0x60_3fff_f000).map(|t| t.0), Some(0x60_3fff_f000));
        // A gigabyte holding a pool chunk goes by 2 MiB, the chunk hidden.
        assert_eq!(map(&mut m, 0x80_0000_0010, true), Ok(true));
        assert_eq!(translate(&mut m, root, 0x80_0000_0010).map(|t| t.0), Some(DUMMY + 0x10), "pool stays hidden");
        assert_eq!(map(&mut m, 0x80_0020_0010, true), Ok(true));
        assert_eq!(translate(&mut m, root, 0x80_0020_0010).map(|t| t.0), Some(0x80_0020_0010));
        assert_eq!(map(&mut m, 1 << 48, true), Ok(false));
        let (mut small, root) = FakeTables::new(1);
        assert_eq!(map_on_demand(&mut small, root, 0x1000, 1 << 48, false, &[], 0), Err(MapError::OutOfMemory));
    }

    #[test]
    fn limits() {
        assert_eq!(phys_limit(40, true), 1 << 40);
        assert_eq!(phys_limit(48, true), 1 << 42);
        assert_eq!(phys_limit(48, false), 1 << 39);
        assert_eq!(phys_limit(20, true), 1 << 32);
    }

    /// The (read, write) intercept bits of `index` in `map`.
    fn bits(map: &[u8; svm::MSRPM_SIZE], index: u32) -> (bool, bool) {
        let (byte, bit) = svm::msrpm_position(index).unwrap();
        (map[byte] >> bit & 1 == 1, map[byte] >> (bit + 1) & 1 == 1)
    }

    #[test]
    fn msrpm_intercepts_all_but_the_passed_directions() {
        let mut map = [0u8; svm::MSRPM_SIZE];
        fill_msrpm(&mut map);
        for (index, expected) in [
            (arch_msr::APIC_BASE, (true, true)),
            (arch_msr::FS_BASE, (false, false)),
            (arch_msr::KERNEL_GS_BASE, (false, false)),
            (arch_msr::LSTAR, (false, false)),
            (arch_msr::SPEC_CTRL, (false, false)),
            (arch_msr::X2APIC_FIRST + 0x0b, (false, false)),
            (arch_msr::TSC_DEADLINE, (false, false)),
            (arch_msr::PATCH_LOADER, (true, true)),
            (arch_msr::TSC, (false, true)),
            (arch_msr::MTRR_FIRST, (true, true)),
            (arch_msr::MTRR_DEF_TYPE, (true, true)),
            (arch_msr::PAT, (true, true)),
            (arch_msr::EFER, (true, true)),
            (arch_msr::VM_CR, (true, true)),
            (arch_msr::VM_HSAVE_PA, (true, true)),
            (arch_msr::HWCR, (true, true)),
            (arch_msr::SYSCFG, (false, true)),
            (arch_msr::DEBUGCTL, (true, true)),
            (arch_msr::XSS, (false, true)),
            (0x1234, (true, true)),
            (0xc001_1fff, (true, true)),
        ] {
            assert_eq!(bits(&map, index), expected, "{index:#x}");
        }
        // The map's unused last quarter stays all-intercept.
        assert!(map[0x1800..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn msrpm_matches_the_policy_for_every_mapped_msr() {
        let mut map = [0u8; svm::MSRPM_SIZE];
        fill_msrpm(&mut map);
        let ranges = [
            0..0x2000u32,
            0xc000_0000..0xc000_2000,
            0xc001_0000..0xc001_2000,
        ];
        for index in ranges.into_iter().flatten() {
            let r = policy::rule(index);
            assert_eq!(
                bits(&map, index),
                (r.read != Action::Pass, r.write != Action::Pass),
                "{index:#x}"
            );
        }
        for (first, last) in policy::NEVER_WRITTEN {
            for index in (first..=last).filter(|&i| !svm::msr_always_exits(i)) {
                assert!(bits(&map, index).1, "{index:#x}: writes must exit");
            }
        }
    }


    #[test]
    fn iopm_intercepts_exactly_the_ports() {
        let mut map = [0u8; svm::IOPM_SIZE];
        fill_iopm(&mut map);
        assert_eq!(map[0xcf8 / 8], 0xff);
        assert_eq!(map.iter().map(|b| b.count_ones()).sum::<u32>(), 8);
    }
}
