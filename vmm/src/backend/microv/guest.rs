//! Reading the guest's instruction at RIP, as its CPU fetched it: the
//! instruction's code size from the mode and CS, its linear address from
//! CS's base, and the guest-physical address through the guest's own page
//! tables when paging is on (4-level long-mode paging, with 2 MiB and
//! 1 GiB pages). Legacy 32-bit and PAE paging and 5-level paging are not
//! walked: the VMM boots its guests straight into long mode.

use std::sync::Arc;

use microv_abi::run::RunRegs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::regs::segment_from_run;

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;

const PTE_PRESENT: u64 = 1;
const PTE_LARGE: u64 = 1 << 7;
/// Bits 12–51 of an entry: the next table or the page.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;
pub const PAGE_SIZE: u64 = 4096;

/// Guest-physical memory the VMM can reach: the VM's RAM.
pub trait GuestPhys {
    /// Reads `buf.len()` bytes at `gpa`; false if they are not all RAM.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes `buf` at `gpa`; false if the bytes are not all RAM.
    fn write_phys(&self, gpa: u64, buf: &[u8]) -> bool;
    /// True if the `len` bytes at `gpa` are all RAM.
    fn is_ram(&self, gpa: u64, len: usize) -> bool;
}

impl GuestPhys for GuestMemoryMmap {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        // Almost every read (a page-table entry, an instruction's bytes in
        // one page) lies in one region: copy from it directly. vm-memory's
        // general path walks an iterator of slices, which costs an MMIO
        // exit some 500 instructions more.
        let addr = GuestAddress(gpa);
        match GuestMemoryBackend::get_slice(self, addr, buf.len()) {
            Ok(slice) => slice.copy_to(buf) == buf.len(),
            Err(_) => self.read_slice(buf, addr).is_ok(),
        }
    }

    fn write_phys(&self, gpa: u64, buf: &[u8]) -> bool {
        self.write_slice(buf, GuestAddress(gpa)).is_ok()
    }

    fn is_ram(&self, gpa: u64, len: usize) -> bool {
        self.check_range(GuestAddress(gpa), len)
    }
}

impl GuestPhys for [Arc<GuestMemoryMmap>] {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.iter().any(|m| m.read_phys(gpa, buf))
    }

    fn write_phys(&self, gpa: u64, buf: &[u8]) -> bool {
        self.iter()
            .any(|m| m.is_ram(gpa, buf.len()) && m.write_phys(gpa, buf))
    }

    fn is_ram(&self, gpa: u64, len: usize) -> bool {
        self.iter().any(|m| m.is_ram(gpa, len))
    }
}

/// Code size of the instruction at CS:RIP: 16, 32 or 64 bits.
pub fn code_bits(regs: &RunRegs) -> u32 {
    let cs = segment_from_run(&regs.cs);
    if regs.cr0 & CR0_PE == 0 || regs.rflags & RFLAGS_VM != 0 {
        16
    } else if regs.efer & EFER_LMA != 0 && cs.l {
        64
    } else if cs.db {
        32
    } else {
        16
    }
}

/// The linear address of CS:RIP (CS's base does not count in 64-bit code).
pub fn linear_rip(regs: &RunRegs) -> u64 {
    if code_bits(regs) == 64 {
        regs.rip
    } else {
        regs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

/// Why an address could not be translated.
#[derive(Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A paging mode the walker does not know.
    Mode(&'static str),
    /// A table entry or the page itself is not present.
    NotPresent { level: u8 },
    /// A table lies outside guest RAM.
    Table(u64),
    /// The instruction's first byte (or a string instruction's memory
    /// operand) is not in guest RAM.
    NotRam(u64),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Mode(m) => write!(f, "the guest uses {m}, which the decoder does not walk"),
            WalkError::NotPresent { level } => {
                write!(f, "its page is not present (level {level} entry)")
            }
            WalkError::Table(a) => write!(f, "a page table at {a:#x} is outside guest RAM"),
            WalkError::NotRam(a) => write!(f, "it is at {a:#x}, outside guest RAM"),
        }
    }
}

/// The guest-physical address of `linear` under the guest's paging.
pub fn translate<M: GuestPhys + ?Sized>(
    mem: &M,
    regs: &RunRegs,
    linear: u64,
) -> Result<u64, WalkError> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(linear);
    }
    if regs.efer & EFER_LMA == 0 {
        return Err(WalkError::Mode("32-bit or PAE paging"));
    }
    if regs.cr4 & CR4_LA57 != 0 {
        return Err(WalkError::Mode("5-level paging"));
    }
    let mut table = regs.cr3 & PTE_ADDR;
    // Level 4 (PML4), 3 (PDPT: 1 GiB pages), 2 (PD: 2 MiB pages), 1 (PT).
    for level in (1..=4u8).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let index = (linear >> shift) & 511;
        let mut e = [0u8; 8];
        let at = table + index * 8;
        if !mem.read_phys(at, &mut e) {
            return Err(WalkError::Table(at));
        }
        let e = u64::from_le_bytes(e);
        if e & PTE_PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        let page_mask = (1u64 << shift) - 1;
        if level == 1 || (matches!(level, 2 | 3) && e & PTE_LARGE != 0) {
            return Ok((e & PTE_ADDR & !page_mask) | (linear & page_mask));
        }
        table = e & PTE_ADDR;
    }
    // The loop returns at level 1 at the latest.
    Err(WalkError::NotPresent { level: 1 })
}

/// The guest-physical pieces of the `len` bytes at `linear`, one per page
/// they touch, each checked to be guest RAM.
pub fn ram_pieces<M: GuestPhys + ?Sized>(
    mem: &M,
    regs: &RunRegs,
    linear: u64,
    len: usize,
) -> Result<Vec<(u64, usize)>, WalkError> {
    let mut pieces = Vec::new();
    let mut at = linear;
    let mut left = len;
    while left > 0 {
        let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(left);
        let gpa = translate(mem, regs, at)?;
        if !mem.is_ram(gpa, n) {
            return Err(WalkError::NotRam(gpa));
        }
        pieces.push((gpa, n));
        at = at.wrapping_add(n as u64);
        left -= n;
    }
    Ok(pieces)
}

/// The instruction bytes at CS:RIP: up to [`MAX_INSN_LEN`], fewer where
/// the next page is not mapped (the instruction may end before it).
pub fn fetch<M: GuestPhys + ?Sized>(mem: &M, regs: &RunRegs) -> Result<Vec<u8>, WalkError> {
    let start = linear_rip(regs);
    let mut bytes = Vec::with_capacity(MAX_INSN_LEN);
    let mut linear = start;
    while bytes.len() < MAX_INSN_LEN {
        let in_page = (PAGE_SIZE - linear % PAGE_SIZE) as usize;
        let n = in_page.min(MAX_INSN_LEN - bytes.len());
        let gpa = match translate(mem, regs, linear) {
            Ok(gpa) => gpa,
            Err(e) if bytes.is_empty() => return Err(e),
            Err(_) => break,
        };
        let mut chunk = vec![0u8; n];
        if !mem.read_phys(gpa, &mut chunk) {
            if bytes.is_empty() {
                return Err(WalkError::NotRam(gpa));
            }
            break;
        }
        bytes.extend_from_slice(&chunk);
        linear = linear.wrapping_add(n as u64);
    }
    Ok(bytes)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::backend::microv::regs::sregs_into_run;
    use crate::boot::cpu_state;

    pub fn memory(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    pub fn put(mem: &GuestMemoryMmap, gpa: u64, bytes: &[u8]) {
        mem.write_slice(bytes, GuestAddress(gpa)).unwrap();
    }

    /// Real mode at CS = `cs`.
    pub fn real_mode(cs: u16, ip: u64) -> RunRegs {
        let mut r = RunRegs::zeroed();
        r.cs.selector = cs;
        r.cs.base = u64::from(cs) << 4;
        r.cs.limit = 0xffff;
        r.cs.attributes = 0x9b;
        r.rip = ip;
        r
    }

    /// Long mode as the VMM boots it, with CR3 = `cr3`.
    pub fn long_mode(cr3: u64, rip: u64) -> RunRegs {
        let mut r = RunRegs::zeroed();
        sregs_into_run(&cpu_state::boot_registers(0).1, &mut r);
        r.cr3 = cr3;
        r.rip = rip;
        r
    }

    /// Page tables at 0x10000..: linear 0xffff_8000_0040_1000 (4 KiB page)
    /// → 0x5000, 0xffff_8000_0060_0000 (2 MiB) → 0x20_0000, and
    /// 0xffff_8000_4000_0000 (1 GiB) → 0 ; PML4 at 0x10000.
    pub fn paged(mem: &GuestMemoryMmap) -> u64 {
        let pml4 = 0x10000;
        let pdpt = 0x11000;
        let pd = 0x12000;
        let pt = 0x13000;
        let e = |a: u64| (a | 3).to_le_bytes();
        put(mem, pml4 + 256 * 8, &e(pdpt));
        put(mem, pdpt, &e(pd));
        put(mem, pdpt + 8, &(0x80 | 3u64).to_le_bytes()); // 1 GiB at 0
        put(mem, pd + 2 * 8, &e(pt));
        put(mem, pd + 3 * 8, &(0x20_0000 | 0x80 | 3u64).to_le_bytes());
        put(mem, pt + 8, &e(0x5000));
        pml4
    }

    #[test]
    fn code_size_follows_the_mode() {
        let mut r = real_mode(0x1000, 0x10);
        assert_eq!((code_bits(&r), linear_rip(&r)), (16, 0x10010));
        r.cr0 = CR0_PE;
        assert_eq!(code_bits(&r), 16, "16-bit protected mode");
        r.cs.attributes |= 1 << 10; // D/B
        assert_eq!(code_bits(&r), 32);
        r.rflags = RFLAGS_VM;
        assert_eq!(code_bits(&r), 16, "virtual-8086");
        let mut r = long_mode(0, 0xffff_ffff_8100_0000);
        r.cs.base = 0x1234;
        assert_eq!((code_bits(&r), linear_rip(&r)), (64, 0xffff_ffff_8100_0000));
        r.cs.attributes &= !(1 << 9); // L
        r.cs.attributes |= 1 << 10;
        assert_eq!(code_bits(&r), 32, "compatibility mode");
        r.rip = 0xffff_fff0;
        assert_eq!(linear_rip(&r), 0x1224, "wraps at 4 GiB");
    }

    #[test]
    fn walks_4k_2m_and_1g_pages() {
        let mem = memory(1 << 22);
        let r = long_mode(paged(&mem), 0);
        let t = |a| translate(&mem, &r, a);
        assert_eq!(t(0xffff_8000_0040_1abc), Ok(0x5abc));
        assert_eq!(t(0xffff_8000_0061_2345), Ok(0x21_2345));
        assert_eq!(t(0xffff_8000_7654_3210), Ok(0x3654_3210));
        assert_eq!(t(0x1000), Err(WalkError::NotPresent { level: 4 }));
        assert_eq!(
            t(0xffff_8000_8000_0000),
            Err(WalkError::NotPresent { level: 3 })
        );
        assert_eq!(
            t(0xffff_8000_0000_0000),
            Err(WalkError::NotPresent { level: 2 })
        );
        assert_eq!(
            t(0xffff_8000_0040_2000),
            Err(WalkError::NotPresent { level: 1 })
        );
        let mut far = long_mode(0x1_0000_0000, 0);
        assert_eq!(
            translate(&mem, &far, 0),
            Err(WalkError::Table(0x1_0000_0000))
        );
        far.cr4 |= CR4_LA57;
        assert!(matches!(translate(&mem, &far, 0), Err(WalkError::Mode(_))));
        far.efer = 0;
        assert!(matches!(translate(&mem, &far, 0), Err(WalkError::Mode(_))));
        far.cr0 = 0;
        assert_eq!(translate(&mem, &far, 0x1234), Ok(0x1234), "paging off");
    }

    #[test]
    fn fetch_reads_across_pages_and_stops_at_unmapped_ones() {
        let mem = memory(1 << 22);
        let pml4 = paged(&mem);
        // The last 4 bytes of the 4 KiB page at ..40_1000 (gpa 0x5ffc),
        // then ..40_2000, which is not mapped.
        put(&mem, 0x5ffc, &[1, 2, 3, 4]);
        let r = long_mode(pml4, 0xffff_8000_0040_1ffc);
        assert_eq!(fetch(&mem, &r).unwrap(), [1, 2, 3, 4]);
        // Inside the 2 MiB page, across a 4 KiB boundary: all 15 bytes.
        let bytes: Vec<u8> = (0..15).collect();
        put(&mem, 0x20_0ff8, &bytes);
        let r = long_mode(pml4, 0xffff_8000_0060_0ff8);
        assert_eq!(fetch(&mem, &r).unwrap(), bytes);
        // Nothing mapped at RIP.
        let r = long_mode(pml4, 0x1000);
        assert_eq!(fetch(&mem, &r), Err(WalkError::NotPresent { level: 4 }));
        // Real mode at the end of RAM: what exists.
        let r = real_mode(0, (1 << 22) - 2);
        assert_eq!(fetch(&mem, &r).unwrap().len(), 2);
        let r = real_mode(0xf000, 0xfff0);
        let small = memory(0x1000);
        assert_eq!(fetch(&small, &r), Err(WalkError::NotRam(0xffff0)));
    }

    #[test]
    fn several_memories_are_searched() {
        let low = Arc::new(memory(0x1000));
        let high = Arc::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0x1_0000_0000), 0x1000)]).unwrap(),
        );
        put(&high, 0x1_0000_0000, &[7]);
        let both = [Arc::clone(&low), high];
        let mut b = [0u8; 1];
        assert!(both.read_phys(0x1_0000_0000, &mut b));
        assert_eq!(b, [7]);
        assert!(!both.read_phys(0x2000, &mut b));
        assert!(both.write_phys(0xfff, &[9]) && both.is_ram(0x1_0000_0000, 0x1000));
        assert!(!both.write_phys(0xfff, &[9, 9]) && !both.is_ram(0xfff, 2));
        assert!(low.read_phys(0xfff, &mut b) && b == [9]);
        assert!(WalkError::Table(0x10).to_string().contains("0x10"));
        assert!(WalkError::NotPresent { level: 2 }
            .to_string()
            .contains("level 2"));
        assert!(WalkError::Mode("x").to_string().contains("x,"));
        assert!(WalkError::NotRam(0x20).to_string().contains("0x20"));
    }
}
