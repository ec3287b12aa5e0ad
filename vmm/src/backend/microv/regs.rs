//! Conversions between the neutral register types and the run page's
//! (`RunRegs`, `RunSegment`, `RunTable`). Kept here so no other module
//! knows the run page's layout.
//!
//! A `RunSegment`'s `attributes` are the architectural descriptor bits:
//! bits 0–7 are descriptor bits 40–47 (type, S, DPL, P) and bits 8–11 are
//! descriptor bits 52–55 (AVL, L, D/B, G). The neutral [`Segment`] has no
//! AVL (software's bit, meaningless to the CPU): it is written as 0.

use microv_abi::run::{RunRegs, RunSegment, RunTable};

use crate::backend::{DescriptorTable, Regs, Segment, SpecialRegs};

/// Indices of the general registers in `RunRegs::gprs` (x86 numbering).
/// The whole table, though string I/O uses only some and tests the rest.
#[cfg_attr(not(test), allow(dead_code))]
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// `attributes` bits.
const ATTR_TYPE: u16 = 0xf;
const ATTR_S: u16 = 1 << 4;
const ATTR_DPL_SHIFT: u16 = 5;
const ATTR_P: u16 = 1 << 7;
const ATTR_L: u16 = 1 << 9;
const ATTR_DB: u16 = 1 << 10;
const ATTR_G: u16 = 1 << 11;

/// The general registers in x86 order, from the neutral struct.
fn gprs(r: &Regs) -> [u64; 16] {
    [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

/// Writes `r` (general registers, RIP, RFLAGS) over `run`.
pub fn regs_into_run(r: &Regs, run: &mut RunRegs) {
    run.gprs = gprs(r);
    run.rip = r.rip;
    run.rflags = r.rflags;
}

/// The general registers, RIP and RFLAGS of `run` (the inverse of
/// [`regs_into_run`]; the VMM never reads registers back yet).
#[cfg(test)]
pub fn regs_from_run(run: &RunRegs) -> Regs {
    let [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15] = run.gprs;
    Regs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rsp,
        rbp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: run.rip,
        rflags: run.rflags,
    }
}

pub fn segment_to_run(s: &Segment) -> RunSegment {
    let attributes = (u16::from(s.type_) & ATTR_TYPE)
        | if s.s { ATTR_S } else { 0 }
        | ((u16::from(s.dpl) & 3) << ATTR_DPL_SHIFT)
        | if s.present { ATTR_P } else { 0 }
        | if s.l { ATTR_L } else { 0 }
        | if s.db { ATTR_DB } else { 0 }
        | if s.g { ATTR_G } else { 0 };
    RunSegment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        attributes,
    }
}

pub fn segment_from_run(s: &RunSegment) -> Segment {
    let a = s.attributes;
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & ATTR_TYPE) as u8,
        present: a & ATTR_P != 0,
        dpl: ((a >> ATTR_DPL_SHIFT) & 3) as u8,
        db: a & ATTR_DB != 0,
        s: a & ATTR_S != 0,
        l: a & ATTR_L != 0,
        g: a & ATTR_G != 0,
    }
}

fn table_to_run(d: &DescriptorTable) -> RunTable {
    RunTable {
        base: d.base,
        limit: u64::from(d.limit),
    }
}

#[cfg(test)]
fn table_from_run(t: &RunTable) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        // GDTR and IDTR limits are 16 bits on every x86 CPU.
        limit: t.limit as u16,
    }
}

/// Writes `s` over `run`, keeping what the neutral type does not carry
/// (CR2) as MicroV reported it.
pub fn sregs_into_run(s: &SpecialRegs, run: &mut RunRegs) {
    run.cs = segment_to_run(&s.cs);
    run.ds = segment_to_run(&s.ds);
    run.es = segment_to_run(&s.es);
    run.fs = segment_to_run(&s.fs);
    run.gs = segment_to_run(&s.gs);
    run.ss = segment_to_run(&s.ss);
    run.tr = segment_to_run(&s.tr);
    run.ldt = segment_to_run(&s.ldt);
    run.gdt = table_to_run(&s.gdt);
    run.idt = table_to_run(&s.idt);
    run.cr0 = s.cr0;
    run.cr3 = s.cr3;
    run.cr4 = s.cr4;
    run.efer = s.efer;
}

/// The special registers of `run` (the inverse of [`sregs_into_run`]).
#[cfg(test)]
pub fn sregs_from_run(run: &RunRegs) -> SpecialRegs {
    SpecialRegs {
        cs: segment_from_run(&run.cs),
        ds: segment_from_run(&run.ds),
        es: segment_from_run(&run.es),
        fs: segment_from_run(&run.fs),
        gs: segment_from_run(&run.gs),
        ss: segment_from_run(&run.ss),
        tr: segment_from_run(&run.tr),
        ldt: segment_from_run(&run.ldt),
        gdt: table_from_run(&run.gdt),
        idt: table_from_run(&run.idt),
        cr0: run.cr0,
        cr3: run.cr3,
        cr4: run.cr4,
        efer: run.efer,
    }
}

#[cfg(test)]
mod tests {
    use super::gpr::*;
    use super::*;
    use crate::boot::cpu_state;

    fn distinct_regs() -> Regs {
        Regs {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rsp: 7,
            rbp: 8,
            r8: 9,
            r9: 10,
            r10: 11,
            r11: 12,
            r12: 13,
            r13: 14,
            r14: 15,
            r15: 16,
            rip: 17,
            rflags: 18,
        }
    }

    #[test]
    fn general_registers_round_trip_in_x86_order() {
        let r = distinct_regs();
        let mut run = RunRegs::zeroed();
        run.cr2 = 0xdead;
        regs_into_run(&r, &mut run);
        assert_eq!(run.gprs[RAX], 1);
        assert_eq!(run.gprs[RCX], 3);
        assert_eq!(run.gprs[RDX], 4);
        assert_eq!(run.gprs[RBX], 2);
        assert_eq!(run.gprs[RSP], 7);
        assert_eq!(run.gprs[RBP], 8);
        assert_eq!(run.gprs[RSI], 5);
        assert_eq!(run.gprs[RDI], 6);
        assert_eq!(run.gprs[8..], [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!((run.rip, run.rflags, run.cr2), (17, 18, 0xdead));
        assert_eq!(regs_from_run(&run), r);
    }

    #[test]
    fn attributes_are_descriptor_bits() {
        // The boot GDT's code segment, through the descriptor encoder the
        // boot code uses: attributes must equal descriptor bits 40-47 and
        // 52-55 of the same segment.
        let boot = cpu_state::boot_registers(0x100_0200).1;
        for s in [boot.cs, boot.ds, boot.tr] {
            let d = cpu_state::descriptor(&s);
            let want = (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 8)) as u16;
            assert_eq!(segment_to_run(&s).attributes, want, "{s:?}");
        }
        let code = segment_to_run(&boot.cs);
        assert_eq!(code.attributes, 0xa9b, "type b, S, P, L, G");
        let dpl3 = Segment {
            dpl: 3,
            db: true,
            ..Default::default()
        };
        assert_eq!(segment_to_run(&dpl3).attributes, 0x460);
    }

    #[test]
    fn special_registers_round_trip() {
        let s = cpu_state::boot_registers(0x100_0200).1;
        let mut run = RunRegs::zeroed();
        run.cr2 = 0x42;
        sregs_into_run(&s, &mut run);
        assert_eq!(run.cr2, 0x42, "kept");
        assert_eq!(
            (run.gdt.base, run.gdt.limit),
            (s.gdt.base, u64::from(s.gdt.limit))
        );
        assert_eq!(sregs_from_run(&run), s);
        // Every attribute bit but AVL survives both ways.
        for a in 0..0x1000u16 {
            let seg = RunSegment {
                base: 1,
                limit: 2,
                selector: 3,
                attributes: a,
            };
            let back = segment_to_run(&segment_from_run(&seg));
            assert_eq!(back.attributes, a & !0x100, "{a:#x}");
            assert_eq!((back.base, back.limit, back.selector), (1, 2, 3));
        }
    }
}
