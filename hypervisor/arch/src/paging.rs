//! 4-level x86-64 paging entries (used for MicroV's own page tables and,
//! with the U bit always set, for nested page tables).

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
pub const NO_EXECUTE: u64 = 1 << 63;
/// Physical-address bits of an entry (bits 51:12).
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

pub const PAGE_SIZE: u64 = 4096;
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
pub const HUGE_PAGE_SIZE: u64 = 1 << 30;
pub const ENTRIES: usize = 512;

/// Index of `va` in the table at `level` (4 = PML4 … 1 = PT).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Bytes one entry maps at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB, 4: 512 GiB).
pub const fn span(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

/// True if `va` is canonical for 4-level paging.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_spans() {
        let va = 0xffff_8000_4020_3000u64;
        assert_eq!(index(va, 4), 256);
        assert_eq!(index(va, 3), 1);
        assert_eq!(index(va, 2), 1);
        assert_eq!(index(va, 1), 3);
        assert_eq!(span(1), PAGE_SIZE);
        assert_eq!(span(2), LARGE_PAGE_SIZE);
        assert_eq!(span(3), HUGE_PAGE_SIZE);
        assert!(is_canonical(va));
        assert!(is_canonical(0x7fff_ffff_ffff));
        assert!(!is_canonical(0x8000_0000_0000));
    }
}
