//! Setting up the root VM: its nested page tables (all of physical memory
//! except the hypervisor's pool, identity-mapped), the MSR and I/O
//! permission maps, and each root vCPU's intercepts.

use microv_abi::launch::CHUNK_SIZE;
use microv_arch::mapper::{self, MapError, TableMemory};
use microv_arch::msr::policy::{self, Action};
use microv_arch::paging::{ENTRIES, HUGE_PAGE_SIZE, LARGE_PAGE_SIZE, PRESENT, USER, WRITABLE};
use microv_arch::svm::{self, misc1, misc2, required, tlb, Vmcb, NP_ENABLE};

/// Nested-table entries: nested walks are user accesses, so U is required.
const NPT_FLAGS: u64 = PRESENT | WRITABLE | USER;
/// Most physical address space mapped for the root (4 TiB with 1 GiB pages,
/// 512 GiB with 2 MiB pages, so the tables stay small).
const MAX_BITS_HUGE: u32 = 42;
const MAX_BITS_LARGE: u32 = 39;
/// ASID of every root vCPU (ASID 0 is the host's).
pub const ROOT_ASID: u32 = 1;

/// How much guest-physical space to map, from CPUID's physical-address bits.
pub fn phys_limit(phys_bits: u32, huge_pages: bool) -> u64 {
    let cap = if huge_pages {
        MAX_BITS_HUGE
    } else {
        MAX_BITS_LARGE
    };
    1u64 << phys_bits.clamp(32, cap)
}

/// Fills the page table every hidden 2 MiB range points to: all 512
/// entries map one harmless page, so the root reads zeros (or what it wrote
/// there itself) instead of hypervisor memory, and never faults.
pub fn fill_hiding_table(table: &mut [u64; ENTRIES], dummy_pa: u64) {
    for e in table.iter_mut() {
        *e = dummy_pa | NPT_FLAGS;
    }
}

/// Builds the root's identity map of `[0, limit)`: 1 GiB pages (or 2 MiB if
/// `huge_pages` is false) except around `hidden` chunks, which point at
/// `hiding_table`.
pub fn build_npt(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    limit: u64,
    huge_pages: bool,
    hidden: &[u64],
    hiding_table: u64,
) -> Result<(), MapError> {
    let is_hidden = |pa: u64| hidden.iter().any(|&h| h <= pa && pa < h + CHUNK_SIZE);
    let any_hidden_in = |start: u64, len: u64| {
        hidden
            .iter()
            .any(|&h| h < start + len && start < h + CHUNK_SIZE)
    };
    let mut gib = 0;
    while gib < limit {
        if huge_pages && !any_hidden_in(gib, HUGE_PAGE_SIZE) {
            mapper::map(mem, root_pa, gib, gib, 3, NPT_FLAGS, NPT_FLAGS)?;
        } else {
            let mut pa = gib;
            while pa < gib + HUGE_PAGE_SIZE {
                if is_hidden(pa) {
                    mapper::link_table(mem, root_pa, pa, 2, hiding_table, NPT_FLAGS)?;
                } else {
                    mapper::map(mem, root_pa, pa, pa, 2, NPT_FLAGS, NPT_FLAGS)?;
                }
                pa += LARGE_PAGE_SIZE;
            }
        }
        gib += HUGE_PAGE_SIZE;
    }
    Ok(())
}

/// Maps the 2 MiB identity page holding `gpa` after a nested page fault
/// (root accesses beyond the initial map, such as high PCI BARs on large
/// machines). `max_pa` is the first address the CPU cannot address: false
/// for a `gpa` at or above it. Pool chunks stay hidden; a page another CPU
/// mapped meanwhile counts as mapped.
pub fn map_on_demand(
    mem: &mut dyn TableMemory,
    root_pa: u64,
    gpa: u64,
    max_pa: u64,
    hidden: &[u64],
    hiding_table: u64,
) -> Result<bool, MapError> {
    if gpa >= max_pa {
        return Ok(false);
    }
    let base = gpa & !(LARGE_PAGE_SIZE - 1);
    let done = if hidden.contains(&base) {
        mapper::link_table(mem, root_pa, base, 2, hiding_table, NPT_FLAGS)
    } else {
        mapper::map(mem, root_pa, base, base, 2, NPT_FLAGS, NPT_FLAGS)
    };
    match done {
        Ok(()) | Err(MapError::AlreadyMapped) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Builds the MSR permission map from the policy table: every access
/// exits, except the directions the table marks `Pass`.
pub fn fill_msrpm(map: &mut [u8; svm::MSRPM_SIZE]) {
    map.fill(0xff);
    let passes = policy::RULES
        .iter()
        .filter(|r| r.read == Action::Pass || r.write == Action::Pass);
    for rule in passes {
        // The read bit of an MSR, then its write bit.
        let open =
            u8::from(rule.read == Action::Pass) | (u8::from(rule.write == Action::Pass) << 1);
        for index in rule.first..=rule.last {
            if let Some((byte, bit)) = svm::msrpm_position(index) {
                if let Some(b) = map.get_mut(byte) {
                    *b &= !(open << bit);
                }
            }
        }
    }
}

/// Physical addresses a root vCPU's VMCB refers to.
#[derive(Clone, Copy, Debug)]
pub struct RootTables {
    pub npt_root: u64,
    pub iopm: u64,
    pub msrpm: u64,
}

/// Configures a root vCPU's control area (its state came from the CPU).
pub fn configure_vmcb(vmcb: &mut Vmcb, t: &RootTables) {
    let c = &mut vmcb.control;
    c.intercept_cr = 0;
    c.intercept_dr = 0;
    c.intercept_exceptions = 0;
    // Interrupts and NMIs go straight to the root: no exits for them.
    // What the microkernel requires (svm::required), plus MicroV's policy:
    // CPUID (to hide SVM and identify MicroV) and VMMCALL (hypercalls).
    c.intercept_misc1 = required::MISC1 | misc1::CPUID;
    c.intercept_misc2 = required::MISC2 | misc2::VMMCALL;
    c.intercept_misc3 = 0;
    c.iopm_base_pa = t.iopm;
    c.msrpm_base_pa = t.msrpm;
    c.tsc_offset = 0;
    c.guest_asid = ROOT_ASID;
    // The first run flushes whatever the ASID held; later runs need nothing.
    c.tlb_control = tlb::FLUSH_ALL;
    c.vintr = 0;
    c.np_control = NP_ENABLE;
    c.n_cr3 = t.npt_root;
    c.event_inj = 0;
    c.clean_bits = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::mapper::{fake::FakeTables, translate};
    use microv_arch::msr as arch_msr;
    use zerocopy::FromZeros;

    const DUMMY: u64 = 0x7_7000;

    fn tables(budget: usize, hidden: &[u64], huge: bool, limit: u64) -> (FakeTables, u64) {
        let (mut m, root) = FakeTables::new(budget);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY);
        build_npt(&mut m, root, limit, huge, hidden, hiding).unwrap();
        (m, root)
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
            build_npt(&mut m, root, 4 << 30, false, &[], 0),
            Err(MapError::OutOfMemory)
        );
    }

    #[test]
    fn maps_faulting_addresses_on_demand() {
        let (mut m, root) = FakeTables::new(16);
        let hiding = m.alloc_table().unwrap();
        fill_hiding_table(m.table(hiding).unwrap(), DUMMY);
        let pool = [0x80_0000_0000u64];
        assert_eq!(
            map_on_demand(&mut m, root, 0x50_0000_1234, 1 << 48, &pool, hiding),
            Ok(true)
        );
        assert_eq!(
            translate(&mut m, root, 0x50_0000_1234).map(|t| t.0),
            Some(0x50_0000_1234)
        );
        assert_eq!(
            map_on_demand(&mut m, root, 0x50_0010_0000, 1 << 48, &pool, hiding),
            Ok(true),
            "raced"
        );
        assert_eq!(
            map_on_demand(&mut m, root, 0x80_0000_0010, 1 << 48, &pool, hiding),
            Ok(true)
        );
        assert_eq!(
            translate(&mut m, root, 0x80_0000_0010).map(|t| t.0),
            Some(DUMMY + 0x10),
            "pool stays hidden"
        );
        assert_eq!(
            map_on_demand(&mut m, root, 1 << 48, 1 << 48, &pool, hiding),
            Ok(false)
        );
        let (mut small, root) = FakeTables::new(1);
        assert_eq!(
            map_on_demand(&mut small, root, 0x1000, 1 << 48, &[], 0),
            Err(MapError::OutOfMemory)
        );
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
            (arch_msr::MTRR_FIRST, (false, true)),
            (arch_msr::MTRR_DEF_TYPE, (false, true)),
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
    fn vmcb_configuration() {
        let mut v = Box::new(Vmcb::new_zeroed());
        v.control.event_inj = 5;
        configure_vmcb(
            &mut v,
            &RootTables {
                npt_root: 0x1000,
                iopm: 0x2000,
                msrpm: 0x5000,
            },
        );
        assert_eq!(v.control.n_cr3, 0x1000);
        assert_eq!(
            (v.control.iopm_base_pa, v.control.msrpm_base_pa),
            (0x2000, 0x5000)
        );
        assert_eq!(v.control.guest_asid, ROOT_ASID);
        assert_ne!(
            v.control.intercept_misc2 & misc2::VMRUN,
            0,
            "VMRUN must be intercepted"
        );
        assert_eq!(v.control.intercept_misc1 & (misc1::INTR | misc1::NMI), 0);
        assert_eq!(v.control.np_control, NP_ENABLE);
        assert_eq!(v.control.event_inj, 0);
    }
}
