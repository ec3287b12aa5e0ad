//! String port I/O (`ins`/`outs`, with or without `rep`), which MicroV
//! hands over as `exit_reason::STRING_IO` with RIP still at the
//! instruction: the port, element size, direction, REP and address size
//! from the CPU's exit information, and the registers with the segments.
//!
//! The VMM decodes the instruction (`outs` may name another segment than
//! DS, which the CPU reports only with decode assists; its length; and its
//! address size where the CPU does not report it, as QEMU's TCG does not),
//! moves a batch of elements between the port and guest memory, and
//! completes through the registers: RSI (`outs`) or RDI (`ins`) moves by
//! the bytes moved, down when RFLAGS.DF is set; with REP, RCX (ECX, CX by
//! the address size) counts the elements down, and RIP moves past the
//! instruction only once it reaches 0. Until then the guest runs the
//! instruction again and exits again: interrupts are taken between
//! batches, as a CPU takes them between iterations.
//!
//! A batch stays inside one 4 KiB page of the memory operand (at most
//! 4 KiB of data per exit, whatever RCX says), so a hostile count costs
//! the guest exits, not the VMM a long loop. An element that straddles two
//! pages is moved on its own. The memory operand must be RAM the guest's
//! page tables map; anything else (an unmapped page, MMIO) is refused and
//! ends the VM with the reason: MicroV has no way for the VMM to inject
//! the page fault. Segment limits and page protections are not checked.

use iced_x86::{Mnemonic, OpKind, Register};
use microv_abi::run::{io_direction, RunIo, RunRegs, RunSegment};

use super::guest::{ram_pieces, GuestPhys, PAGE_SIZE};
use super::insn::{Fetched, Refusal};
use super::regs::gpr::{RCX, RDI, RDX, RSI};

/// The most data one exit moves.
pub const MAX_BATCH_BYTES: u64 = PAGE_SIZE;

const RFLAGS_DF: u64 = 1 << 10;

/// What finishing one batch does to the registers, at the next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// RSI or RDI.
    index: usize,
    /// 2, 4 or 8 bytes of RSI/RDI and RCX take part.
    address_size: u8,
    /// Bytes moved: the index register's step.
    moved: u64,
    down: bool,
    /// REP: RCX counts `elements` down.
    rep: bool,
    elements: u64,
    /// The count is done: RIP moves past the instruction.
    done: bool,
    len: u64,
    ip_mask: u64,
}

impl Completion {
    /// Completes the batch in `regs`.
    pub fn apply(&self, regs: &mut RunRegs) {
        if let Some(r) = regs.gprs.get_mut(self.index) {
            let next = if self.down {
                r.wrapping_sub(self.moved)
            } else {
                r.wrapping_add(self.moved)
            };
            *r = put_sized(*r, next, self.address_size);
        }
        if self.rep {
            if let Some(rcx) = regs.gprs.get_mut(RCX) {
                *rcx = put_sized(*rcx, rcx.wrapping_sub(self.elements), self.address_size);
            }
        }
        if self.done {
            regs.rip = regs.rip.wrapping_add(self.len) & self.ip_mask;
        }
    }
}

/// `old` with `value` written at the address size, as string instructions
/// write RSI, RDI and RCX: 16 bits keep the rest, 32 bits zero-extend.
fn put_sized(old: u64, value: u64, address_size: u8) -> u64 {
    match address_size {
        2 => (old & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

fn address_mask(address_size: u8) -> u64 {
    match address_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// One exit's share of a string instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub port: u16,
    /// Bytes per element: 1, 2 or 4.
    pub size: usize,
    pub is_in: bool,
    /// Elements this exit moves (0: a REP whose count is 0).
    pub elements: usize,
    /// The elements' guest-physical pieces, lowest address first.
    pieces: Vec<(u64, usize)>,
    /// RFLAGS.DF: the elements go down in memory.
    down: bool,
    pub completion: Completion,
}

impl Batch {
    /// The elements `outs` sends, in the order it sends them.
    pub fn read<M: GuestPhys + ?Sized>(&self, mem: &M) -> Result<Vec<u8>, Refusal> {
        let mut block = Vec::with_capacity(self.elements * self.size);
        for &(gpa, len) in &self.pieces {
            let mut piece = vec![0; len];
            if !mem.read_phys(gpa, &mut piece) {
                return Err(format!("guest RAM at {gpa:#x} cannot be read"));
            }
            block.extend_from_slice(&piece);
        }
        Ok(self.in_guest_order(&block))
    }

    /// Stores the elements `ins` received (`data`, in the order it
    /// received them).
    pub fn write<M: GuestPhys + ?Sized>(&self, mem: &M, data: &[u8]) -> Result<(), Refusal> {
        let block = self.in_guest_order(data);
        let mut rest = block.as_slice();
        for &(gpa, len) in &self.pieces {
            let (piece, more) = rest.split_at(len.min(rest.len()));
            if !mem.write_phys(gpa, piece) {
                return Err(format!("guest RAM at {gpa:#x} cannot be written"));
            }
            rest = more;
        }
        Ok(())
    }

    /// Elements in memory order ↔ the instruction's order (reversed when
    /// it goes down; the same either way).
    fn in_guest_order(&self, elements: &[u8]) -> Vec<u8> {
        if !self.down {
            return elements.to_vec();
        }
        elements
            .chunks(self.size.max(1))
            .rev()
            .flatten()
            .copied()
            .collect()
    }
}

/// The next batch of the string instruction at the guest's CS:RIP that
/// MicroV reported as `io`.
pub fn prepare<M: GuestPhys + ?Sized>(
    mem: &M,
    regs: &RunRegs,
    io: &RunIo,
) -> Result<Batch, Refusal> {
    let size = u64::from(io.size);
    let is_in = match io.direction {
        io_direction::IN => true,
        io_direction::OUT => false,
        d => {
            return Err(format!(
                "string I/O in direction {d} at port {:#x}",
                io.port
            ))
        }
    };
    if !matches!(size, 1 | 2 | 4) || !matches!(io.address_size, 0 | 2 | 4 | 8) {
        return Err(format!(
            "string I/O of {size} bytes with {}-byte addresses at port {:#x}",
            io.address_size, io.port
        ));
    }
    let f = Fetched::at(mem, regs)?;
    let address_size = check_matches(&f, regs, io, is_in)?;
    let rep = io.rep != 0;
    let mask = address_mask(address_size);
    let reg = |i: usize| regs.gprs.get(i).copied().unwrap_or(0);
    let total = if rep { reg(RCX) & mask } else { 1 };
    let down = regs.rflags & RFLAGS_DF != 0;
    let index = if is_in { RDI } else { RSI };
    let offset = reg(index) & mask;
    let segment = f.insn.memory_segment();
    let linear = linear_address(regs, &f, segment, offset)?;
    let elements = batch_len(total, linear, offset, mask, size, down);
    let bytes = elements * size;
    let lowest = if down {
        linear.wrapping_sub(elements.saturating_sub(1) * size)
    } else {
        linear
    };
    let pieces = ram_pieces(mem, regs, lowest, bytes as usize).map_err(|e| {
        format!(
            "{}: its memory operand {segment:?}:{offset:#x} (linear {linear:#x}) cannot be \
             reached: {e} (MicroV cannot give the guest the fault; string I/O to MMIO is \
             not emulated)",
            f.describe()
        )
    })?;
    Ok(Batch {
        port: io.port,
        size: size as usize,
        is_in,
        elements: elements as usize,
        pieces,
        down,
        completion: Completion {
            index,
            address_size,
            moved: bytes,
            down,
            rep,
            elements,
            done: elements == total,
            len: f.len(),
            ip_mask: f.ip_mask(),
        },
    })
}

/// The instruction must be the one MicroV saw exit: another vCPU may have
/// rewritten it since. Its address size in bytes.
fn check_matches(f: &Fetched, regs: &RunRegs, io: &RunIo, is_in: bool) -> Result<u8, Refusal> {
    let insn = &f.insn;
    let wanted = if is_in {
        matches!(
            insn.mnemonic(),
            Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd
        )
    } else {
        matches!(
            insn.mnemonic(),
            Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd
        )
    };
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let address_size = (0..insn.op_count())
        .map(|n| match insn.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI => 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => 8,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let dx = regs.gprs.get(RDX).copied().unwrap_or(0) & 0xffff;
    let same = wanted
        && rep == (io.rep != 0)
        && insn.memory_size().size() == usize::from(io.size)
        && matches!(address_size, 2 | 4 | 8)
        && (io.address_size == 0 || address_size == io.address_size)
        && dx == u64::from(io.port);
    if same {
        return Ok(address_size);
    }
    Err(format!(
        "MicroV reports string I/O ({} {} bytes at port {:#x}, rep {}, {}-byte addresses) \
         but the instruction is {} with DX = {dx:#x} (changed under the vCPU?)",
        if is_in { "in" } else { "out" },
        io.size,
        io.port,
        io.rep,
        io.address_size,
        f.describe()
    ))
}

/// The linear address of `segment`:`offset`. In 64-bit code only FS and GS
/// have a base; elsewhere addresses wrap at 4 GiB.
fn linear_address(
    regs: &RunRegs,
    f: &Fetched,
    segment: Register,
    offset: u64,
) -> Result<u64, Refusal> {
    let s: &RunSegment = match segment {
        Register::ES => &regs.es,
        Register::CS => &regs.cs,
        Register::SS => &regs.ss,
        Register::DS => &regs.ds,
        Register::FS => &regs.fs,
        Register::GS => &regs.gs,
        other => return Err(format!("{}: no segment register {other:?}", f.describe())),
    };
    if f.bits != 64 {
        return Ok(s.base.wrapping_add(offset) & 0xffff_ffff);
    }
    let base = if matches!(segment, Register::FS | Register::GS) {
        s.base
    } else {
        0
    };
    let linear = base.wrapping_add(offset);
    // Canonical: bits 63:47 all equal (the walker knows 4-level paging only).
    if (((linear << 16) as i64) >> 16) as u64 != linear {
        return Err(format!(
            "{}: its memory operand's address {linear:#x} is not canonical",
            f.describe()
        ));
    }
    Ok(linear)
}

/// How many of `total` elements of `size` bytes this exit moves, from
/// `linear` (offset `offset` under address mask `mask`) upwards or `down`:
/// no more than fit in the page and before the offset wraps, and at least
/// one if there is any (an element across a page boundary goes alone).
fn batch_len(total: u64, linear: u64, offset: u64, mask: u64, size: u64, down: bool) -> u64 {
    let in_page = linear % PAGE_SIZE;
    let (fit_page, fit_offset) = if down {
        let page = if in_page + size > PAGE_SIZE {
            0
        } else {
            in_page / size + 1
        };
        (page, offset / size + 1)
    } else {
        (
            (PAGE_SIZE - in_page) / size,
            ((mask - offset) / size).saturating_add(1),
        )
    };
    total
        .min(fit_page)
        .min(fit_offset)
        .min(MAX_BATCH_BYTES / size)
        .max(total.min(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::microv::guest::tests::{long_mode, memory, paged, put, real_mode};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// Where `paged` puts the code (4 KiB page at gpa 0x5000).
    const RIP: u64 = 0xffff_8000_0040_1000;
    /// A 2 MiB page at gpa 0x20_0000.
    const DATA: u64 = 0xffff_8000_0060_0000;
    const DATA_GPA: u64 = 0x20_0000;

    fn io(is_in: bool, size: u8, rep: bool, address_size: u8) -> RunIo {
        RunIo {
            port: 0x3f8,
            size,
            direction: if is_in {
                io_direction::IN
            } else {
                io_direction::OUT
            },
            rep: u8::from(rep),
            address_size,
            reserved: 0,
            data: 0,
        }
    }

    /// 64-bit paging, `code` at RIP, DX = 0x3f8.
    fn guest(code: &[u8]) -> (GuestMemoryMmap, RunRegs) {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), RIP);
        put(&mem, 0x5000, code);
        regs.gprs[RDX] = 0x3f8;
        (mem, regs)
    }

    fn read_gpa(mem: &GuestMemoryMmap, gpa: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        mem.read_slice(&mut b, GuestAddress(gpa)).unwrap();
        b
    }

    #[test]
    fn rep_outsb_sends_the_string_and_ends_the_instruction() {
        let (mem, mut regs) = guest(&[0xf3, 0x6e]);
        put(&mem, DATA_GPA + 0x100, b"hello");
        regs.gprs[RSI] = DATA + 0x100;
        regs.gprs[RCX] = 5;
        let b = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap();
        assert_eq!((b.port, b.size, b.is_in, b.elements), (0x3f8, 1, false, 5));
        assert_eq!(b.read(&mem).unwrap(), b"hello");
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 0x105, 0, RIP + 2)
        );
    }

    #[test]
    fn outsb_without_rep_moves_one_and_leaves_rcx() {
        let (mem, mut regs) = guest(&[0x6e]);
        put(&mem, DATA_GPA, b"xy");
        regs.gprs[RSI] = DATA;
        regs.gprs[RCX] = 0x1234;
        let b = prepare(&mem, &regs, &io(false, 1, false, 8)).unwrap();
        assert_eq!(b.read(&mem).unwrap(), b"x");
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 1, 0x1234, RIP + 1)
        );
    }

    #[test]
    fn a_batch_stops_at_the_page_and_the_instruction_runs_again() {
        // rep outsd: two dwords fit before the page ends, three remain.
        let (mem, mut regs) = guest(&[0xf3, 0x6f]);
        regs.gprs[RSI] = DATA + 0xff8;
        regs.gprs[RCX] = 5;
        let b = prepare(&mem, &regs, &io(false, 4, true, 8)).unwrap();
        assert_eq!(b.elements, 2);
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 0x1000, 3, RIP)
        );
        let b = prepare(&mem, &regs, &io(false, 4, true, 8)).unwrap();
        assert_eq!(b.elements, 3);
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 0x100c, 0, RIP + 2)
        );
    }

    #[test]
    fn downwards_the_elements_go_in_reverse_memory_order() {
        // std; rep outsw from the last of three words.
        let (mem, mut regs) = guest(&[0x66, 0xf3, 0x6f]);
        put(&mem, DATA_GPA + 0x10, &[b'c', 0, b'b', 0, b'a', 0]);
        regs.gprs[RSI] = DATA + 0x14;
        regs.gprs[RCX] = 3;
        regs.rflags |= RFLAGS_DF;
        let b = prepare(&mem, &regs, &io(false, 2, true, 8)).unwrap();
        assert_eq!(b.read(&mem).unwrap(), [b'a', 0, b'b', 0, b'c', 0]);
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 0xe, 0, RIP + 3)
        );
        // At the start of a page, only the element there is in it.
        regs.gprs[RSI] = DATA + 0x1000;
        regs.gprs[RCX] = 3;
        regs.rip = RIP;
        let b = prepare(&mem, &regs, &io(false, 2, true, 8)).unwrap();
        assert_eq!(b.elements, 1);
    }

    #[test]
    fn rep_insb_and_insw_store_in_guest_order() {
        let (mem, mut regs) = guest(&[0xf3, 0x6c]);
        regs.gprs[RDI] = DATA + 0x200;
        regs.gprs[RCX] = 3;
        let b = prepare(&mem, &regs, &io(true, 1, true, 8)).unwrap();
        assert_eq!((b.is_in, b.elements), (true, 3));
        b.write(&mem, b"abc").unwrap();
        assert_eq!(read_gpa(&mem, DATA_GPA + 0x200, 3), b"abc");
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RDI], regs.gprs[RCX], regs.rip),
            (DATA + 0x203, 0, RIP + 2)
        );
        // Downwards, words: the first received goes highest.
        let (mem, mut regs) = guest(&[0x66, 0xf3, 0x6d]);
        regs.gprs[RDI] = DATA + 0x302;
        regs.gprs[RCX] = 2;
        regs.rflags |= RFLAGS_DF;
        let b = prepare(&mem, &regs, &io(true, 2, true, 8)).unwrap();
        b.write(&mem, &[1, 2, 3, 4]).unwrap();
        assert_eq!(read_gpa(&mem, DATA_GPA + 0x300, 4), [3, 4, 1, 2]);
        b.completion.apply(&mut regs);
        assert_eq!(regs.gprs[RDI], DATA + 0x2fe);
    }

    #[test]
    fn an_element_across_a_page_boundary_goes_alone_in_two_pieces() {
        // outsw at the last byte of the 4 KiB page at ..40_1000 (gpa
        // 0x5fff) and the first of the 2 MiB page? No: ..40_2000 is not
        // mapped, so use the 2 MiB page's 4 KiB boundaries (contiguous
        // gpas, two pieces all the same).
        let (mem, mut regs) = guest(&[0x66, 0xf3, 0x6f]);
        put(&mem, DATA_GPA + 0xfff, &[0x34, 0x12]);
        regs.gprs[RSI] = DATA + 0xfff;
        regs.gprs[RCX] = 4;
        let b = prepare(&mem, &regs, &io(false, 2, true, 8)).unwrap();
        assert_eq!((b.elements, b.pieces.len()), (1, 2));
        assert_eq!(b.read(&mem).unwrap(), [0x34, 0x12]);
        b.write(&mem, &[0x78, 0x56]).unwrap();
        assert_eq!(read_gpa(&mem, DATA_GPA + 0xfff, 2), [0x78, 0x56]);
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RSI], regs.gprs[RCX], regs.rip),
            (DATA + 0x1001, 3, RIP)
        );
    }

    #[test]
    fn a_count_of_zero_moves_nothing_and_ends_the_instruction() {
        let (mem, mut regs) = guest(&[0xf3, 0x6e]);
        regs.gprs[RSI] = DATA;
        regs.gprs[RCX] = 0xffff_ffff_0000_0000; // ECX = 0 with a32
        let b = prepare(&mem, &regs, &io(false, 1, true, 4));
        // The exit says 32-bit addresses, the bytes say 64: refused.
        assert!(b.unwrap_err().contains("changed under the vCPU"));
        let (mem, mut regs) = guest(&[0x67, 0xf3, 0x6e]);
        regs.gprs[RSI] = DATA & 0xffff_ffff;
        regs.gprs[RCX] = 0xffff_ffff_0000_0000;
        let b = prepare(&mem, &regs, &io(false, 1, true, 4)).unwrap();
        assert_eq!((b.elements, b.pieces.len()), (0, 0));
        assert!(b.read(&mem).unwrap().is_empty());
        b.completion.apply(&mut regs);
        assert_eq!(regs.gprs[RCX], 0, "ECX written: the upper half cleared");
        assert_eq!(regs.rip, RIP + 3);
    }

    #[test]
    fn a_huge_count_moves_one_page_per_exit() {
        let (mem, mut regs) = guest(&[0xf3, 0x6e]);
        regs.gprs[RSI] = DATA;
        regs.gprs[RCX] = u64::MAX;
        let b = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap();
        assert_eq!(b.elements as u64, MAX_BATCH_BYTES);
        b.completion.apply(&mut regs);
        assert_eq!(
            (regs.gprs[RCX], regs.rip),
            (u64::MAX - MAX_BATCH_BYTES, RIP)
        );
        // No overflow anywhere near the ends of the address space.
        assert_eq!(
            batch_len(u64::MAX, 0, 0, u64::MAX, 1, false),
            MAX_BATCH_BYTES
        );
        assert_eq!(batch_len(u64::MAX, 0xfff, u64::MAX, u64::MAX, 4, false), 1);
        assert_eq!(batch_len(u64::MAX, 0, 0, u64::MAX, 4, true), 1);
    }

    #[test]
    fn real_mode_uses_si_cx_and_segment_bases_and_wraps_at_64k() {
        // The CPU does not say the address size (0): the instruction does.
        // rep outsb at 0100:0010 with DS base 0x2000, SI = 0xfffe.
        let mem = memory(1 << 22);
        let mut regs = real_mode(0x100, 0x10);
        put(&mem, 0x1010, &[0xf3, 0x6e]);
        put(&mem, 0x2000 + 0xfffe, b"ab");
        regs.ds.base = 0x2000;
        regs.gprs[RSI] = 0xaaaa_0000_0000_fffe;
        regs.gprs[RCX] = 0x5555_0000_0000_0004;
        regs.gprs[RDX] = 0x3f8;
        let b = prepare(&mem, &regs, &io(false, 1, true, 0)).unwrap();
        assert_eq!(b.read(&mem).unwrap(), b"ab", "stops where SI wraps");
        b.completion.apply(&mut regs);
        assert_eq!(
            regs.gprs[RSI], 0xaaaa_0000_0000_0000,
            "SI wrapped, the rest kept"
        );
        assert_eq!((regs.gprs[RCX], regs.rip), (0x5555_0000_0000_0002, 0x10));
        // Downwards from SI = 1: two elements before the wrap.
        regs.gprs[RSI] = 1;
        regs.rflags |= RFLAGS_DF;
        let b = prepare(&mem, &regs, &io(false, 1, true, 2)).unwrap();
        assert_eq!(b.elements, 2);
    }

    #[test]
    fn segment_overrides_and_64_bit_bases() {
        // fs: outsb takes FS's base; ES's and DS's bases do not count in
        // 64-bit code.
        let (mem, mut regs) = guest(&[0x64, 0x6e, 0x6c]);
        put(&mem, DATA_GPA + 0x40, b"F");
        regs.fs.base = DATA;
        regs.ds.base = 0x1234;
        regs.gprs[RSI] = 0x40;
        let b = prepare(&mem, &regs, &io(false, 1, false, 8)).unwrap();
        assert_eq!(b.read(&mem).unwrap(), b"F");
        regs.rip += 2;
        regs.es.base = 0x1000;
        regs.gprs[RDI] = DATA + 0x50;
        let b = prepare(&mem, &regs, &io(true, 1, false, 8)).unwrap();
        b.write(&mem, b"E").unwrap();
        assert_eq!(read_gpa(&mem, DATA_GPA + 0x50, 1), b"E");
        // gs: in compatibility-free 32-bit code, DS's base counts.
        let mut r32 = regs;
        r32.cs.attributes &= !(1 << 9); // L
        r32.cs.attributes |= 1 << 10; // D/B
        r32.cr0 &= !(1 << 31); // paging off: linear = physical
        r32.rip = 0x5000;
        r32.ds.base = 0x10_0000;
        r32.gprs[RSI] = 0x2_0000;
        put(&mem, 0x5000, &[0x6e]);
        put(&mem, 0x12_0000, b"D");
        let b = prepare(&mem, &r32, &io(false, 1, false, 4)).unwrap();
        assert_eq!(b.read(&mem).unwrap(), b"D");
    }

    #[test]
    fn what_cannot_be_reached_is_refused_with_the_reason() {
        let (mem, mut regs) = guest(&[0xf3, 0x6e]);
        // Not mapped by the guest's tables.
        regs.gprs[RSI] = 0x1000;
        regs.gprs[RCX] = 1;
        let e = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap_err();
        assert!(e.contains("DS:0x1000") && e.contains("not present"), "{e}");
        // Mapped, but past guest RAM (the 1 GiB page at ..4000_0000 → 0).
        regs.gprs[RSI] = 0xffff_8000_4080_0000;
        let e = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap_err();
        assert!(e.contains("outside guest RAM") && e.contains("MMIO"), "{e}");
        // Not canonical.
        regs.gprs[RSI] = 0x8000_0000_0000_0000;
        let e = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap_err();
        assert!(e.contains("not canonical"), "{e}");
        // What MicroV reports does not match the bytes.
        regs.gprs[RSI] = DATA;
        for (bad, why) in [
            (io(true, 1, true, 8), "changed under the vCPU"),
            (io(false, 1, false, 8), "changed under the vCPU"),
            (io(false, 2, true, 8), "changed under the vCPU"),
            (
                RunIo {
                    port: 0x80,
                    ..io(false, 1, true, 8)
                },
                "DX = 0x3f8",
            ),
            (io(false, 3, true, 8), "of 3 bytes"),
            (io(false, 1, true, 3), "3-byte addresses"),
            (
                RunIo {
                    direction: 7,
                    ..io(false, 1, true, 8)
                },
                "direction 7",
            ),
        ] {
            let e = prepare(&mem, &regs, &bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Guest RAM that goes away between the exit and the completion.
        let b = prepare(&mem, &regs, &io(false, 1, true, 8)).unwrap();
        let empty: [std::sync::Arc<GuestMemoryMmap>; 0] = [];
        assert!(b.read(&empty[..]).unwrap_err().contains("cannot be read"));
        assert!(b
            .write(&empty[..], b"x")
            .unwrap_err()
            .contains("cannot be written"));
    }
}
