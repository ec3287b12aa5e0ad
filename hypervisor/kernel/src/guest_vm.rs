//! Micro VMs' memory: which root frames may back a guest, and the guest's
//! nested page tables. The tables are the microkernel's (pool pages ring 3
//! cannot reach): the extension asks for a mapping, the microkernel checks
//! every frame and builds it, so a compromised extension still cannot hand
//! a guest hypervisor memory or device registers.

use microv_abi::launch::CHUNK_SIZE;
use microv_abi::run::{map_access, GUEST_PHYS_LIMIT, MAP_MAX_PAGES};
use microv_arch::mapper::{self, MapError, TableMemory};
use microv_arch::paging::{
    self, ADDRESS_MASK, ENTRIES, HUGE, LARGE_PAGE_SIZE, NO_EXECUTE, PAGE_SIZE, PRESENT, USER,
    WRITABLE,
};

/// Most micro VMs at once (each has one address-space id).
pub const MAX_VMS: usize = 64;
/// The address-space id of VM slot `slot`: the root has 1.
pub const fn asid(slot: usize) -> u32 {
    slot as u32 + 2
}

/// Upper-level nested-table entries: everything allowed, the leaf decides.
const TABLE_FLAGS: u64 = PRESENT | WRITABLE | USER;
const PAGES_PER_LARGE: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;

/// Why a mapping request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Misaligned, empty, too large, beyond the guest's address space, or
    /// access bits that nested paging cannot express.
    Range,
    /// The frames are not (all) ordinary root RAM, or lie beyond what the
    /// CPU can address.
    NotRam,
    /// The frames overlap MicroV's pool.
    Pool,
}

/// What the microkernel knows about root memory.
pub struct RootMemory<'a> {
    /// Physical base of every pool chunk ([`CHUNK_SIZE`] bytes each).
    pub pool: &'a [u64],
    /// Ordinary RAM as `[first, last]` byte ranges.
    pub ram: &'a [[u64; 2]],
    /// First physical address the CPU cannot address.
    pub max_pa: u64,
}

/// Checks a guest-physical range of `pages` pages at `gpa`; its size in bytes.
pub fn check_guest_range(gpa: u64, pages: u64) -> Result<u64, Refusal> {
    if pages == 0 || pages > MAP_MAX_PAGES || !gpa.is_multiple_of(PAGE_SIZE) {
        return Err(Refusal::Range);
    }
    let bytes = pages * PAGE_SIZE;
    match gpa.checked_add(bytes) {
        Some(end) if end <= GUEST_PHYS_LIMIT => Ok(bytes),
        _ => Err(Refusal::Range),
    }
}

/// Checks `pages` root frames from `hpa`: aligned, inside one RAM range and
/// the CPU's address width, and clear of every pool chunk.
pub fn check_frames(mem: &RootMemory, hpa: u64, pages: u64) -> Result<(), Refusal> {
    if pages == 0 || pages > MAP_MAX_PAGES || !hpa.is_multiple_of(PAGE_SIZE) {
        return Err(Refusal::Range);
    }
    let last = hpa
        .checked_add(pages * PAGE_SIZE - 1)
        .ok_or(Refusal::Range)?;
    if last >= mem.max_pa {
        return Err(Refusal::NotRam);
    }
    if !mem
        .ram
        .iter()
        .any(|&[first, end]| first <= hpa && last <= end)
    {
        return Err(Refusal::NotRam);
    }
    if mem
        .pool
        .iter()
        .any(|&c| c <= last && hpa < c.saturating_add(CHUNK_SIZE))
    {
        return Err(Refusal::Pool);
    }
    Ok(())
}

/// Leaf flags for `access` ([`map_access`] bits). Nested paging has no
/// write-only or execute-only pages: reading must be allowed.
pub fn leaf_flags(access: u64) -> Result<u64, Refusal> {
    if access & !map_access::ALL != 0 || access & map_access::READ == 0 {
        return Err(Refusal::Range);
    }
    let mut flags = USER;
    if access & map_access::WRITE != 0 {
        flags |= WRITABLE;
    }
    if access & map_access::EXECUTE == 0 {
        flags |= NO_EXECUTE;
    }
    Ok(flags)
}

/// The pieces `[gpa, gpa + pages)` → `hpa..` is mapped with: 2 MiB pages
/// where both sides are aligned and a whole one fits, 4 KiB pages
/// elsewhere. Yields (gpa, hpa, level).
fn pieces(gpa: u64, hpa: u64, pages: u64) -> impl Iterator<Item = (u64, u64, u32)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        if done >= pages {
            return None;
        }
        let (g, h) = (gpa + done * PAGE_SIZE, hpa + done * PAGE_SIZE);
        let large = g.is_multiple_of(LARGE_PAGE_SIZE)
            && h.is_multiple_of(LARGE_PAGE_SIZE)
            && pages - done >= PAGES_PER_LARGE;
        let (level, step) = if large { (2, PAGES_PER_LARGE) } else { (1, 1) };
        done += step;
        Some((g, h, level))
    })
}

/// Maps `pages` frames from `hpa` at `gpa` with `flags` (from [`leaf_flags`]):
/// all or nothing. Fails with `AlreadyMapped` if any of the range is mapped.
pub fn map_range(
    mem: &mut dyn TableMemory,
    root: u64,
    gpa: u64,
    hpa: u64,
    pages: u64,
    flags: u64,
) -> Result<(), MapError> {
    let mut mapped = 0u64;
    for (g, h, level) in pieces(gpa, hpa, pages) {
        if let Err(e) = mapper::map(mem, root, g, h, level, flags, TABLE_FLAGS) {
            // Nothing else can have mapped between: undo exactly our part.
            let _ = unmap_range(mem, root, gpa, mapped);
            return Err(e);
        }
        mapped += paging::span(level) / PAGE_SIZE;
    }
    Ok(())
}

/// Removes the mappings of `pages` pages at `gpa` (unmapped pages are
/// skipped). A 2 MiB mapping is removed only whole: a range that cuts one
/// is refused (`Misaligned`) before anything changes. The caller makes
/// every CPU flush the VM's TLB entries before the frames are reused.
pub fn unmap_range(
    mem: &mut dyn TableMemory,
    root: u64,
    gpa: u64,
    pages: u64,
) -> Result<(), MapError> {
    for pass in [false, true] {
        let mut done = 0;
        while done < pages {
            let g = gpa + done * PAGE_SIZE;
            let large = mapper::entry(mem, root, g, 2)
                .is_ok_and(|e| e & (PRESENT | HUGE) == PRESENT | HUGE);
            if large {
                if !g.is_multiple_of(LARGE_PAGE_SIZE) || pages - done < PAGES_PER_LARGE {
                    return Err(MapError::Misaligned);
                }
                if pass {
                    mapper::replace_entry(mem, root, g, 2, 0)?;
                }
                done += PAGES_PER_LARGE;
            } else {
                if pass {
                    mapper::unmap(mem, root, g, 1);
                }
                done += 1;
            }
        }
    }
    Ok(())
}

/// Frees every table page of the tables at `root` (not the frames they
/// map) through `free`, each after the tables below it, the root last.
/// Reads one entry at a time: the walk needs no copy of a table.
pub fn free_tables<M: TableMemory>(mem: &mut M, root: u64, free: &mut dyn FnMut(&mut M, u64)) {
    free_level(mem, root, 4, free);
}

fn free_level<M: TableMemory>(
    mem: &mut M,
    table: u64,
    level: u32,
    free: &mut dyn FnMut(&mut M, u64),
) {
    if level > 1 {
        for i in 0..ENTRIES {
            let e = match mem.table(table).and_then(|t| t.get(i)) {
                Some(&e) => e,
                None => return,
            };
            if e & PRESENT != 0 && e & HUGE == 0 {
                free_level(mem, e & ADDRESS_MASK, level - 1, free);
            }
        }
    }
    free(mem, table);
}

/// First ASID guests get (0 is the host's, 1 every root vCPU's).
pub const FIRST_GUEST_ASID: u32 = 2;

/// How a guest vCPU's TLB entries must be flushed before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    Nothing,
    /// This vCPU's ASID (its VM's mappings changed since it last ran).
    Asid,
    /// Every ASID on this CPU (the CPU ran out of ASIDs and starts over).
    All,
}

/// A guest vCPU's ASID, as the microkernel tracks it (private memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuAsid {
    /// The CPU the ASID belongs to (`u64::MAX`: none yet).
    pub cpu: u64,
    pub asid: u32,
    /// That CPU's ASID generation when it was handed out.
    pub generation: u64,
    /// The VM's mapping generation the vCPU's TLB entries are clean for.
    pub vm_generation: u64,
}

impl VcpuAsid {
    /// A vCPU that never ran.
    pub const NEW: VcpuAsid = VcpuAsid {
        cpu: u64::MAX,
        asid: 0,
        generation: 0,
        vm_generation: 0,
    };
}

/// One CPU's ASIDs. ASIDs are handed out per CPU, never shared by two
/// vCPUs (TLB entries are tagged by ASID alone, not by the guest's CR3),
/// and a vCPU that moves to another CPU gets a fresh one there, so it never
/// meets entries another vCPU or an older VM left. When a CPU runs out it
/// starts a new generation and flushes everything once (as KVM does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidPool {
    next: u32,
    /// Exclusive upper bound (CPUID 0x8000_000A EBX).
    limit: u32,
    generation: u64,
}

impl AsidPool {
    pub const fn new(limit: u32) -> Self {
        AsidPool {
            next: FIRST_GUEST_ASID,
            limit,
            generation: 1,
        }
    }

    /// The ASID `vcpu` runs with on CPU `cpu`, and the flush it needs
    /// first, given its VM's current mapping generation (starts at 1).
    /// `None` if this CPU has no ASID for guests at all.
    pub fn assign(
        &mut self,
        vcpu: &mut VcpuAsid,
        cpu: u64,
        vm_generation: u64,
    ) -> Option<(u32, Flush)> {
        if self.limit <= FIRST_GUEST_ASID {
            return None;
        }
        if vcpu.cpu == cpu && vcpu.generation == self.generation {
            let flush = if vcpu.vm_generation == vm_generation {
                Flush::Nothing
            } else {
                Flush::Asid
            };
            vcpu.vm_generation = vm_generation;
            return Some((vcpu.asid, flush));
        }
        let mut flush = Flush::Asid;
        if self.next >= self.limit {
            self.generation += 1;
            self.next = FIRST_GUEST_ASID;
            flush = Flush::All;
        }
        *vcpu = VcpuAsid {
            cpu,
            asid: self.next,
            generation: self.generation,
            vm_generation,
        };
        self.next += 1;
        Some((vcpu.asid, flush))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::mapper::fake::FakeTables;

    const MIB: u64 = 1 << 20;

    fn machine() -> ([u64; 1], [[u64; 2]; 2]) {
        (
            [0x4000_0000],
            [[0x1000, 0x9_ffff], [0x10_0000, 0x7fff_ffff]],
        )
    }

    #[test]
    fn guest_ranges_must_be_aligned_nonempty_and_below_the_limit() {
        assert_eq!(check_guest_range(0, 1), Ok(PAGE_SIZE));
        assert_eq!(check_guest_range(0x1000, 0), Err(Refusal::Range));
        assert_eq!(check_guest_range(0x1001, 1), Err(Refusal::Range));
        assert_eq!(check_guest_range(0, MAP_MAX_PAGES + 1), Err(Refusal::Range));
        assert_eq!(
            check_guest_range(GUEST_PHYS_LIMIT - PAGE_SIZE, 1),
            Ok(PAGE_SIZE)
        );
        assert_eq!(check_guest_range(GUEST_PHYS_LIMIT, 1), Err(Refusal::Range));
        assert_eq!(check_guest_range(!0xfff_u64, 1), Err(Refusal::Range));
    }

    #[test]
    fn frames_must_be_ram_outside_the_pool() {
        let (pool, ram) = machine();
        let m = RootMemory {
            pool: &pool,
            ram: &ram,
            max_pa: 1 << 40,
        };
        assert_eq!(check_frames(&m, 0x20_0000, 512), Ok(()));
        assert_eq!(check_frames(&m, 0x1000, 0x9f), Ok(()));
        // Straddles the hole between the two RAM ranges (legacy VGA/ROM).
        assert_eq!(check_frames(&m, 0x9_f000, 2), Err(Refusal::NotRam));
        assert_eq!(check_frames(&m, 0xa_0000, 1), Err(Refusal::NotRam));
        assert_eq!(check_frames(&m, 0, 1), Err(Refusal::NotRam));
        // MMIO far above RAM, and beyond the CPU's reach.
        assert_eq!(check_frames(&m, 0xfee0_0000, 1), Err(Refusal::NotRam));
        let narrow = RootMemory {
            max_pa: 0x20_0000,
            ..m
        };
        assert_eq!(check_frames(&narrow, 0x1f_f000, 2), Err(Refusal::NotRam));
        // The pool, its first and last page, and a range ending inside it.
        let m = RootMemory {
            pool: &pool,
            ram: &ram,
            max_pa: 1 << 40,
        };
        assert_eq!(check_frames(&m, 0x4000_0000, 1), Err(Refusal::Pool));
        assert_eq!(
            check_frames(&m, 0x4000_0000 + CHUNK_SIZE - PAGE_SIZE, 1),
            Err(Refusal::Pool)
        );
        assert_eq!(check_frames(&m, 0x3fff_f000, 2), Err(Refusal::Pool));
        assert_eq!(check_frames(&m, 0x4000_0000 + CHUNK_SIZE, 1), Ok(()));
        // Misaligned, empty, oversized, wrapping.
        assert_eq!(check_frames(&m, 0x20_0800, 1), Err(Refusal::Range));
        assert_eq!(check_frames(&m, 0x20_0000, 0), Err(Refusal::Range));
        assert_eq!(
            check_frames(&m, 0x20_0000, MAP_MAX_PAGES + 1),
            Err(Refusal::Range)
        );
        assert_eq!(check_frames(&m, !0xfff_u64, 2), Err(Refusal::Range));
    }

    #[test]
    fn access_bits_become_nested_flags() {
        assert_eq!(leaf_flags(map_access::ALL), Ok(USER | WRITABLE));
        assert_eq!(leaf_flags(map_access::READ), Ok(USER | NO_EXECUTE));
        assert_eq!(leaf_flags(map_access::READ | map_access::EXECUTE), Ok(USER));
        assert_eq!(leaf_flags(map_access::WRITE), Err(Refusal::Range));
        assert_eq!(leaf_flags(0), Err(Refusal::Range));
        assert_eq!(leaf_flags(8 | map_access::READ), Err(Refusal::Range));
    }

    #[test]
    fn aligned_runs_use_large_pages_and_the_rest_small_ones() {
        let (mut t, root) = FakeTables::new(16);
        // 4 KiB short of 2 MiB alignment, then one large page, then a tail.
        let gpa = 2 * MIB - PAGE_SIZE;
        let hpa = 0x100 * MIB - PAGE_SIZE;
        map_range(&mut t, root, gpa, hpa, 1 + 512 + 3, USER | WRITABLE).unwrap();
        assert_eq!(
            mapper::translate(&mut t, root, gpa),
            Some((hpa, USER | WRITABLE | PRESENT))
        );
        let (pa, flags) = mapper::translate(&mut t, root, 2 * MIB + 0x1234).unwrap();
        assert_eq!(pa, 0x100 * MIB + 0x1234);
        assert_ne!(flags & HUGE, 0);
        assert_eq!(
            mapper::translate(&mut t, root, 4 * MIB + 2 * PAGE_SIZE).map(|p| p.0),
            Some(0x102 * MIB + 2 * PAGE_SIZE)
        );
        assert_eq!(
            mapper::translate(&mut t, root, 4 * MIB + 3 * PAGE_SIZE),
            None
        );
        // Differently aligned sides get small pages only.
        let (mut t, root) = FakeTables::new(16);
        map_range(&mut t, root, 0, PAGE_SIZE, 512, USER).unwrap();
        assert_eq!(mapper::entry(&mut t, root, 0, 2).unwrap() & HUGE, 0);
    }

    #[test]
    fn mapping_over_a_mapping_is_refused_and_leaves_it_whole() {
        let (mut t, root) = FakeTables::new(16);
        map_range(&mut t, root, 0x5000, 0x10_5000, 1, USER).unwrap();
        let before = t.pages.clone();
        assert_eq!(
            map_range(&mut t, root, 0x3000, 0x20_3000, 4, USER),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(mapper::translate(&mut t, root, 0x3000), None);
        assert_eq!(
            mapper::translate(&mut t, root, 0x5000).map(|p| p.0),
            Some(0x10_5000)
        );
        assert_eq!(t.pages.len(), before.len());
    }

    #[test]
    fn running_out_of_table_pages_undoes_the_partial_map() {
        // Root + PDPT + PD + one PT fit; the second 1 GiB needs more.
        let (mut t, root) = FakeTables::new(3);
        let r = map_range(&mut t, root, (1 << 30) - PAGE_SIZE, 0x10_0000, 2, USER);
        assert_eq!(r, Err(MapError::OutOfMemory));
        assert_eq!(mapper::translate(&mut t, root, (1 << 30) - PAGE_SIZE), None);
    }

    #[test]
    fn unmap_removes_small_and_whole_large_pages_only() {
        let (mut t, root) = FakeTables::new(16);
        map_range(&mut t, root, 0, 0x100 * MIB, 512 + 2, USER).unwrap();
        // Cutting the large page is refused, and nothing changes.
        assert_eq!(unmap_range(&mut t, root, 0, 2), Err(MapError::Misaligned));
        assert_eq!(
            unmap_range(&mut t, root, PAGE_SIZE, 512),
            Err(MapError::Misaligned)
        );
        assert!(mapper::translate(&mut t, root, 0).is_some());
        unmap_range(&mut t, root, 2 * MIB + PAGE_SIZE, 1).unwrap();
        assert!(mapper::translate(&mut t, root, 2 * MIB).is_some());
        assert_eq!(mapper::translate(&mut t, root, 2 * MIB + PAGE_SIZE), None);
        unmap_range(&mut t, root, 0, 512 + 2).unwrap();
        assert_eq!(mapper::translate(&mut t, root, 0), None);
        assert_eq!(mapper::translate(&mut t, root, 2 * MIB), None);
        // Unmapping what is not mapped (even without tables) is fine.
        unmap_range(&mut t, root, 100 * MIB, 3).unwrap();
    }

    #[test]
    fn freeing_returns_every_table_page_once_and_the_root_last() {
        let (mut t, root) = FakeTables::new(16);
        map_range(&mut t, root, 0, 0x100 * MIB, 512 + 1, USER).unwrap();
        map_range(&mut t, root, 1 << 30, 0x200 * MIB, 1, USER).unwrap();
        let mut freed = Vec::new();
        free_tables(&mut t, root, &mut |_, pa| freed.push(pa));
        let mut unique = freed.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), freed.len());
        assert_eq!(freed.len(), t.pages.len());
        assert_eq!(freed.last(), Some(&root));
        // The frames themselves are not table pages.
        assert!(!freed.contains(&(0x100 * MIB)));
    }

    #[test]
    fn each_vcpu_gets_its_own_asid_per_cpu_and_flushes_when_needed() {
        let mut cpu0 = AsidPool::new(5);
        let (mut a, mut b) = (VcpuAsid::NEW, VcpuAsid::NEW);
        // Fresh ASIDs are flushed once (an earlier VM may have used them).
        assert_eq!(cpu0.assign(&mut a, 0, 1), Some((2, Flush::Asid)));
        assert_eq!(cpu0.assign(&mut a, 0, 1), Some((2, Flush::Nothing)));
        assert_eq!(cpu0.assign(&mut b, 0, 1), Some((3, Flush::Asid)));
        // An unmap in the VM: the next run flushes, once.
        assert_eq!(cpu0.assign(&mut a, 0, 2), Some((2, Flush::Asid)));
        assert_eq!(cpu0.assign(&mut a, 0, 2), Some((2, Flush::Nothing)));
        // Moving to CPU 1 and back: a new ASID each time.
        let mut cpu1 = AsidPool::new(5);
        assert_eq!(cpu1.assign(&mut a, 1, 2), Some((2, Flush::Asid)));
        assert_eq!(cpu0.assign(&mut a, 0, 2), Some((4, Flush::Asid)));
        // CPU 0 runs out (a third vCPU): a new generation, flush
        // everything; b's old ASID is stale and b gets a new one.
        let mut c = VcpuAsid::NEW;
        assert_eq!(cpu0.assign(&mut c, 0, 1), Some((2, Flush::All)));
        assert_eq!(cpu0.assign(&mut b, 0, 1), Some((3, Flush::Asid)));
        assert_eq!(cpu0.assign(&mut a, 0, 2), Some((4, Flush::Asid)));
        // A CPU without guest ASIDs refuses.
        assert_eq!(AsidPool::new(2).assign(&mut b, 0, 1), None);
    }
}
