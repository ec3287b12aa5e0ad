//! The state the bootstrap vCPU enters the kernel with: Linux's 64-bit boot
//! protocol (Documentation/x86/boot.rst, "64-bit Boot Protocol"). Long mode
//! with paging, an identity map covering the kernel, zero page, command line
//! and initrd, a GDT whose selectors 0x10/0x18 are flat 4 GiB code/data,
//! interrupts off, RSI = the zero page.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PD_COUNT, PML4_ADDR, ZERO_PAGE_ADDR,
};
use super::BootError;
use crate::backend::{DescriptorTable, Regs, Segment, SpecialRegs};

/// The boot protocol's selectors (`__BOOT_CS`, `__BOOT_DS`), and ours for TR.
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
pub const BOOT_TR: u16 = 0x20;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is always set; IF is clear.
const RFLAGS_RESERVED: u64 = 2;

/// Page-table entry bits.
const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;
const TABLE_ENTRIES: u64 = 512;

fn code64() -> Segment {
    Segment {
        base: 0,
        limit: 0xf_ffff,
        selector: BOOT_CS,
        type_: 0xb, // execute/read, accessed
        present: true,
        dpl: 0,
        db: false,
        s: true,
        l: true,
        g: true,
    }
}

fn data() -> Segment {
    Segment {
        selector: BOOT_DS,
        type_: 0x3, // read/write, accessed
        db: true,
        l: false,
        ..code64()
    }
}

fn tss() -> Segment {
    Segment {
        base: 0,
        limit: 0x67,
        selector: BOOT_TR,
        type_: 0xb, // busy 64-bit TSS: VM entry on VMX insists on one
        present: true,
        dpl: 0,
        db: false,
        s: false,
        l: false,
        g: false,
    }
}

/// Encodes the low 8 bytes of a segment descriptor.
pub fn descriptor(s: &Segment) -> u64 {
    let limit = u64::from(s.limit);
    let access = u64::from(s.type_ & 0xf)
        | (u64::from(s.s) << 4)
        | (u64::from(s.dpl & 3) << 5)
        | (u64::from(s.present) << 7);
    let flags = (u64::from(s.l) << 1) | (u64::from(s.db) << 2) | (u64::from(s.g) << 3);
    (limit & 0xffff)
        | ((s.base & 0xff_ffff) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (flags << 52)
        | (((s.base >> 24) & 0xff) << 56)
}

/// The GDT: null, unused, code, data, then the 16-byte TSS descriptor.
pub fn gdt() -> [u64; 6] {
    let t = tss();
    [
        0,
        0,
        descriptor(&code64()),
        descriptor(&data()),
        descriptor(&t),
        t.base >> 32,
    ]
}

/// Identity-maps the first `PD_COUNT` GiB with 2 MiB pages: enough for the
/// kernel, zero page, command line and an initrd below the MMIO gap. The
/// kernel replaces these tables early.
pub fn page_tables() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(((2 + PD_COUNT) * 4096) as usize);
    let mut push = |e: u64| bytes.extend_from_slice(&e.to_le_bytes());
    // PML4 at PML4_ADDR, entry 0 only.
    push(PDPT_ADDR | PTE_PRESENT | PTE_WRITE);
    (1..TABLE_ENTRIES).for_each(|_| push(0));
    // PDPT right after it, one entry per page directory.
    for i in 0..TABLE_ENTRIES {
        push(if i < PD_COUNT {
            (PD_ADDR + i * 4096) | PTE_PRESENT | PTE_WRITE
        } else {
            0
        });
    }
    // The page directories, contiguous.
    for i in 0..PD_COUNT * TABLE_ENTRIES {
        push((i << 21) | PTE_PRESENT | PTE_WRITE | PTE_HUGE);
    }
    bytes
}

/// Writes the GDT, an empty IDT and the page tables into guest memory.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let gdt: Vec<u8> = gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(GDT_ADDR))
        .map_err(|_| BootError::Write("the GDT"))?;
    mem.write_slice(&[0u8; 16], GuestAddress(IDT_ADDR))
        .map_err(|_| BootError::Write("the IDT"))?;
    // PML4, PDPT and PDs are laid out contiguously (layout.rs checks it).
    const _: () = assert!(PDPT_ADDR == PML4_ADDR + 4096 && PD_ADDR == PDPT_ADDR + 4096);
    mem.write_slice(&page_tables(), GuestAddress(PML4_ADDR))
        .map_err(|_| BootError::Write("the page tables"))
}

/// The bootstrap vCPU's registers for entering the kernel at `entry`.
pub fn boot_registers(entry: u64) -> (Regs, SpecialRegs) {
    let regs = Regs {
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_ADDR,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    let d = data();
    let sregs = SpecialRegs {
        cs: code64(),
        ds: d,
        es: d,
        fs: d,
        gs: d,
        ss: d,
        tr: tss(),
        ldt: Segment::default(),
        gdt: DescriptorTable {
            base: GDT_ADDR,
            limit: (gdt().len() * 8 - 1) as u16,
        },
        idt: DescriptorTable {
            base: IDT_ADDR,
            limit: 0,
        },
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3: PML4_ADDR,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
    };
    (regs, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_encode_like_the_manuals() {
        assert_eq!(descriptor(&code64()), 0x00af_9b00_0000_ffff);
        assert_eq!(descriptor(&data()), 0x00cf_9300_0000_ffff);
        assert_eq!(descriptor(&tss()), 0x0000_8b00_0000_0067);
        let odd = Segment {
            base: 0x1234_5678,
            limit: 0xa_bcde,
            ..data()
        };
        assert_eq!(descriptor(&odd), 0x12ca_9334_5678_bcde);
    }

    /// Walks the tables as the CPU does (4-level, 2 MiB leaves).
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let pml4e = read(cr3 + ((va >> 39) & 511) * 8);
        if pml4e & PTE_PRESENT == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 511) * 8);
        if pdpte & PTE_PRESENT == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + ((va >> 21) & 511) * 8);
        if pde & PTE_PRESENT == 0 || pde & PTE_HUGE == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff) + (va & 0x1f_ffff))
    }

    #[test]
    fn tables_identity_map_four_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_tables(&mem).unwrap();
        let (regs, sregs) = boot_registers(0x100_0200);
        for va in [
            0u64,
            0x7000,
            0x100_0200,
            0x3fff_ffff,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&mem, sregs.cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, sregs.cr3, 1 << 32), None);
        let gdt: Vec<u64> = (0..6)
            .map(|i| mem.read_obj(GuestAddress(GDT_ADDR + i * 8)).unwrap())
            .collect();
        assert_eq!(gdt[usize::from(BOOT_CS / 8)], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[usize::from(BOOT_DS / 8)], 0x00cf_9300_0000_ffff);
        assert_eq!(
            (regs.rip, regs.rsi, regs.rflags),
            (0x100_0200, ZERO_PAGE_ADDR, 2)
        );
        assert_eq!(sregs.gdt.limit, 47);
        assert_eq!(sregs.efer, 0x500);
        assert_eq!(sregs.cr0 & 0x8000_0001, 0x8000_0001);
        assert!(sregs.cs.l && !sregs.cs.db, "64-bit code");
        assert_eq!(sregs.ss.selector, BOOT_DS);
    }
}
