//! MicroV's pool in early boot, and the RAM the OS will own: decisions made
//! from the firmware's memory map.
//!
//! The pool is allocated as memory of type `EfiReservedMemoryType`, which
//! the OS never uses (Linux lists it as reserved), and nested paging hides it
//! from the root besides. It is one run of whole 2 MiB chunks (the boot
//! info's chunk list, `microv_abi::launch::CHUNK_SIZE`, as the driver's
//! pool): the firmware allocates pages, not aligned runs, so microv.efi asks
//! for one chunk's worth of pages more and gives back the unaligned head and
//! tail ([`trim`]).

use alloc::vec::Vec;

use microv_abi::launch::{CHUNK_SIZE, MAX_RAM_RANGES};
use uefi_raw::table::boot::MemoryType;

/// UEFI's page size.
pub const PAGE: u64 = 4096;

/// Pages to allocate for a pool of `pool_bytes` (whole chunks) so that an
/// aligned run of that size fits inside whatever address they come at.
pub fn pages_to_allocate(pool_bytes: u64) -> u64 {
    (pool_bytes + CHUNK_SIZE - PAGE) / PAGE
}

/// An allocation cut down to the aligned pool: the pages to give back
/// before and after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trim {
    pub pool_start: u64,
    pub head_pages: u64,
    pub tail_pages: u64,
}

/// Where the aligned pool of `pool_bytes` lies in `pages` pages at `start`
/// (as [`pages_to_allocate`] asked for); `None` if it does not fit (an
/// unaligned start or too few pages: a firmware bug, not a layout).
pub fn trim(start: u64, pages: u64, pool_bytes: u64) -> Option<Trim> {
    if !start.is_multiple_of(PAGE) || pool_bytes == 0 || !pool_bytes.is_multiple_of(CHUNK_SIZE) {
        return None;
    }
    let pool_start = start.checked_add(CHUNK_SIZE - 1)? & !(CHUNK_SIZE - 1);
    let end = start.checked_add(pages.checked_mul(PAGE)?)?;
    let pool_end = pool_start.checked_add(pool_bytes)?;
    (pool_end <= end).then(|| Trim {
        pool_start,
        head_pages: (pool_start - start) / PAGE,
        tail_pages: (end - pool_end) / PAGE,
    })
}

/// Whether the OS owns memory of type `ty` once the firmware is done:
/// what it leaves as usable RAM, where guest memory may come from.
pub fn is_os_ram(ty: MemoryType) -> bool {
    matches!(
        ty,
        MemoryType::LOADER_CODE
            | MemoryType::LOADER_DATA
            | MemoryType::BOOT_SERVICES_CODE
            | MemoryType::BOOT_SERVICES_DATA
            | MemoryType::CONVENTIONAL
    )
}

/// The OS's RAM from the memory map's `(type, start, pages)` entries, as
/// the boot info lists it: `[first byte, last byte]` ranges, sorted,
/// touching ranges merged; `None` if there are more than
/// [`MAX_RAM_RANGES`] (the microkernel would refuse guest memory beyond
/// the list, so a cut list is an error, not a shorter one).
pub fn ram_ranges(map: impl Iterator<Item = (MemoryType, u64, u64)>) -> Option<Vec<[u64; 2]>> {
    let mut runs: Vec<(u64, u64)> = map
        .filter(|(ty, _, pages)| is_os_ram(*ty) && *pages != 0)
        .filter_map(|(_, start, pages)| Some((start, start.checked_add(pages.checked_mul(PAGE)?)?)))
        .collect();
    runs.sort_unstable();
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    for (start, end) in runs {
        match ranges.last_mut() {
            Some(last) if start <= last[1].saturating_add(1) => last[1] = last[1].max(end - 1),
            _ => ranges.push([start, end - 1]),
        }
    }
    (ranges.len() <= MAX_RAM_RANGES).then_some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_allocation_always_holds_an_aligned_pool() {
        let pool = 64 * MIB;
        let pages = pages_to_allocate(pool);
        assert_eq!(pages, (64 * MIB + 2 * MIB - PAGE) / PAGE);
        for start in [
            0x4000_0000,
            0x4000_1000,
            0x401f_f000,
            0x7e00_0000 + 3 * PAGE,
        ] {
            let t = trim(start, pages, pool).unwrap();
            assert_eq!(t.pool_start % CHUNK_SIZE, 0);
            assert!(t.pool_start >= start);
            assert_eq!(
                start + t.head_pages * PAGE + pool + t.tail_pages * PAGE,
                start + pages * PAGE,
                "head, pool and tail are the whole allocation"
            );
        }
        let aligned = trim(0x4000_0000, pages, pool).unwrap();
        assert_eq!((aligned.head_pages, aligned.pool_start), (0, 0x4000_0000));
        assert_eq!(aligned.tail_pages, 511);
    }

    #[test]
    fn a_short_or_odd_allocation_is_refused() {
        let pool = 4 * MIB;
        assert_eq!(
            trim(0x4000_1000, pool / PAGE, pool),
            None,
            "too few pages once aligned"
        );
        assert_eq!(
            trim(0x4000_0800, pages_to_allocate(pool), pool),
            None,
            "not page aligned"
        );
        assert_eq!(trim(0x4000_0000, 2048, 3 * MIB), None, "not whole chunks");
        assert_eq!(trim(0x4000_0000, 2048, 0), None);
        assert_eq!(trim(u64::MAX - PAGE + 1, 2048, pool), None, "wraps");
    }

    #[test]
    fn ram_is_what_the_os_will_own_merged_and_sorted() {
        let map = [
            (MemoryType::CONVENTIONAL, 0x10_0000, 0x100),
            (MemoryType::RESERVED, 0x20_0000, 0x10),
            (MemoryType::LOADER_DATA, 0x0, 0x9f),
            (MemoryType::BOOT_SERVICES_DATA, 0x21_0000, 0x10),
            (MemoryType::BOOT_SERVICES_CODE, 0x22_0000, 0x10),
            (MemoryType::RUNTIME_SERVICES_DATA, 0x23_0000, 0x1),
            (MemoryType::ACPI_RECLAIM, 0x24_0000, 0x1),
            (MemoryType::CONVENTIONAL, 0x25_0000, 0),
        ];
        let ranges = ram_ranges(map.into_iter()).unwrap();
        assert_eq!(
            ranges,
            [
                [0x0, 0x9_efff],
                [0x10_0000, 0x1f_ffff],
                [0x21_0000, 0x22_ffff]
            ]
        );
    }

    #[test]
    fn too_many_ranges_is_an_error() {
        let map = (0..=MAX_RAM_RANGES as u64).map(|i| (MemoryType::CONVENTIONAL, i * 0x10_0000, 1));
        assert_eq!(ram_ranges(map), None);
        let map = (0..MAX_RAM_RANGES as u64).map(|i| (MemoryType::CONVENTIONAL, i * 0x10_0000, 1));
        assert_eq!(ram_ranges(map).unwrap().len(), MAX_RAM_RANGES);
    }
}
