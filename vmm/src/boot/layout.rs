//! Where things live in guest-physical memory, and the e820 map that tells
//! the guest which of it is RAM.
//!
//! ```text
//! 0x0000_0500  GDT (boot selectors 0x10 code, 0x18 data, 0x20 TSS)
//! 0x0000_0520  IDT (empty: the kernel runs with interrupts off until it has its own)
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_8ff0  initial stack pointer
//! 0x0000_9000  PML4, PDPT, then 4 page directories: 4 GiB identity-mapped
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  end of low RAM (the EBDA would start here)
//! 0x000e_0000  ACPI tables (RSDP first, where the kernel's scan finds it)
//! 0x0010_0000  bzImage's protected-mode code; RAM up to 3 GiB
//! 0xc000_0000  MMIO gap: IOAPIC at 0xfec0_0000, LAPIC at 0xfee0_0000
//! 0x1_0000_0000  RAM above 3 GiB continues here
//! ```

use vm_memory::GuestAddress;

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Page directories after the PDPT: each maps 1 GiB with 2 MiB pages.
pub const PD_COUNT: u64 = 4;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Most the command line area holds (up to the next structure we place).
pub const CMDLINE_MAX: usize = 0x1_0000;
pub const EBDA_START: u64 = 0x9_fc00;
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_END: u64 = 0x10_0000;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Smallest guest we build: the kernel decompresses itself above 16 MiB.
pub const MIN_MEMORY: u64 = 32 << 20;

/// e820 entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The guest RAM regions for `mem` bytes: below the MMIO gap, and the rest
/// above 4 GiB. `mem` must be at least [`MIN_MEMORY`].
pub fn ram_regions(mem: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low)];
    if mem > low {
        regions.push((GuestAddress(MMIO_GAP_END), mem - low));
    }
    regions
}

/// End of RAM below the MMIO gap.
pub fn low_ram_end(mem: u64) -> u64 {
    mem.min(MMIO_GAP_START)
}

/// The e820 map for `mem` bytes of RAM laid out by [`ram_regions`].
pub fn e820_map(mem: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        // The ACPI tables live here; reserved so the kernel never reuses them.
        E820Entry {
            addr: ACPI_START,
            size: ACPI_END - ACPI_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: HIMEM_START,
            size: low_ram_end(mem).saturating_sub(HIMEM_START),
            kind: E820_RAM,
        },
    ];
    if mem > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        let mem = 256 << 20;
        assert_eq!(ram_regions(mem), [(GuestAddress(0), mem)]);
        let map = e820_map(mem);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9_fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry {
                addr: 0x10_0000,
                size: mem - 0x10_0000,
                kind: E820_RAM
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert!(ram < mem, "the legacy hole is not RAM");
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let mem = 4u64 << 30;
        assert_eq!(
            ram_regions(mem),
            [(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        let map = e820_map(mem);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[3],
            E820Entry {
                addr: 4 << 30,
                size: 1 << 30,
                kind: E820_RAM
            }
        );
        for e in &map {
            let end = e.addr + e.size;
            assert!(end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END, "{e:?}");
        }
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let mut areas = [
            (GDT_ADDR, 0x20),
            (IDT_ADDR, 0x10),
            (ZERO_PAGE_ADDR, 0x1000),
            (PML4_ADDR, 0x1000),
            (PDPT_ADDR, 0x1000),
            (PD_ADDR, PD_COUNT * 0x1000),
            (CMDLINE_ADDR, CMDLINE_MAX as u64),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:x?} overlaps {:x?}",
                w[0],
                w[1]
            );
        }
        let last = areas[areas.len() - 1];
        assert!(last.0 + last.1 <= EBDA_START);
        const { assert!(BOOT_STACK_POINTER < PML4_ADDR && BOOT_STACK_POINTER > ZERO_PAGE_ADDR + 0x1000) };
    }
}
