//! A guest vCPU's registers between the VMCB (plus the register page) and
//! the run page's vendor-neutral [`RunRegs`]. The only place that knows
//! where SVM keeps each register of a micro-VM vCPU.

use microv_abi::run::{exit_reason, RunRegs, RunSegment, RunTable};
use microv_abi::syscall::VsRegs;
use microv_arch::descriptor::Segment;
use microv_arch::msr::efer;
use microv_arch::svm::Vmcb;

/// RAX and RSP live in the VMCB, not the register page.
const RAX: usize = 0;
const RSP: usize = 4;

fn seg_out(s: &Segment) -> RunSegment {
    RunSegment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        attributes: s.attrib,
    }
}

fn seg_in(s: &RunSegment) -> Segment {
    Segment {
        selector: s.selector,
        // Only the architectural bits: 7:0 and 11:8.
        attrib: s.attributes & 0x0fff,
        limit: s.limit,
        base: s.base,
    }
}

/// The registers an exit hands the VMM in the run page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRegs {
    /// General registers, RIP and RFLAGS (the run page's special registers
    /// stay as they were).
    General { gprs: [u64; 16], rip: u64, rflags: u64 },
    /// All of them.
    All(RunRegs),
}

/// The registers an exit of `reason` hands the VMM
/// ([`exit_reason::writes_special_registers`]): converting and writing the
/// segments and control registers at every port I/O exit would cost more
/// than the rest of the exit's work in the extension.
pub fn at_exit(v: &Vmcb, r: &VsRegs, reason: u32) -> ExitRegs {
    if exit_reason::writes_special_registers(reason) {
        ExitRegs::All(read(v, r))
    } else {
        ExitRegs::General {
            gprs: read_gprs(v, r),
            rip: v.save.rip,
            rflags: v.save.rflags,
        }
    }
}

/// The 16 general registers, in the run page's order.
pub fn read_gprs(v: &Vmcb, r: &VsRegs) -> [u64; 16] {
    let mut gprs = r.gprs;
    if let Some(x) = gprs.get_mut(RAX) {
        *x = v.save.rax;
    }
    if let Some(x) = gprs.get_mut(RSP) {
        *x = v.save.rsp;
    }
    gprs
}

/// The vCPU's registers as the VMM sees them. EFER.SVME is MicroV's (the
/// CPU needs it in every guest) and is hidden.
pub fn read(v: &Vmcb, r: &VsRegs) -> RunRegs {
    let s = &v.save;
    RunRegs {
        gprs: read_gprs(v, r),
        rip: s.rip,
        rflags: s.rflags,
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer & !efer::SVME,
        cs: seg_out(&s.cs),
        ds: seg_out(&s.ds),
        es: seg_out(&s.es),
        fs: seg_out(&s.fs),
        gs: seg_out(&s.gs),
        ss: seg_out(&s.ss),
        tr: seg_out(&s.tr),
        ldt: seg_out(&s.ldtr),
        gdt: RunTable {
            base: s.gdtr.base,
            limit: u64::from(s.gdtr.limit),
        },
        idt: RunTable {
            base: s.idtr.base,
            limit: u64::from(s.idtr.limit),
        },
    }
}

/// Loads the general registers, RIP and RFLAGS (bit 1 always set).
pub fn write_regs(v: &mut Vmcb, r: &mut VsRegs, from: &RunRegs) {
    r.gprs = from.gprs;
    v.save.rax = from.gprs.get(RAX).copied().unwrap_or(0);
    v.save.rsp = from.gprs.get(RSP).copied().unwrap_or(0);
    v.save.rip = from.rip;
    v.save.rflags = from.rflags | 2;
}

/// Loads segments, descriptor tables, control registers and EFER. The CPU
/// checks the result at VMRUN (a state it refuses ends the run with
/// `FAIL_ENTRY`); EFER.SVME is kept set, as every guest needs it.
pub fn write_sregs(v: &mut Vmcb, from: &RunRegs) {
    let s = &mut v.save;
    s.cs = seg_in(&from.cs);
    s.ds = seg_in(&from.ds);
    s.es = seg_in(&from.es);
    s.fs = seg_in(&from.fs);
    s.gs = seg_in(&from.gs);
    s.ss = seg_in(&from.ss);
    s.tr = seg_in(&from.tr);
    s.ldtr = seg_in(&from.ldt);
    s.gdtr = Segment {
        base: from.gdt.base,
        limit: (from.gdt.limit & 0xffff) as u32,
        ..Segment::default()
    };
    s.idtr = Segment {
        base: from.idt.base,
        limit: (from.idt.limit & 0xffff) as u32,
        ..Segment::default()
    };
    s.cr0 = from.cr0;
    s.cr2 = from.cr2;
    s.cr3 = from.cr3;
    s.cr4 = from.cr4;
    s.efer = from.efer | efer::SVME;
    // The CPL is the DPL of SS (as after a far transfer).
    s.cpl = ((from.ss.attributes >> 5) & 3) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn registers_round_trip_and_svme_stays_hidden() {
        let mut v = Vmcb::new_zeroed();
        let mut r = VsRegs::default();
        let mut regs = RunRegs::zeroed();
        for (i, g) in regs.gprs.iter_mut().enumerate() {
            *g = 0x100 + i as u64;
        }
        regs.rip = 0x1000;
        regs.rflags = 0x200;
        regs.cr0 = 0x8000_0011;
        regs.cr3 = 0x5000;
        regs.cr4 = 0x20;
        regs.efer = efer::LME | efer::LMA;
        regs.cs = RunSegment { base: 0, limit: 0xffff_ffff, selector: 8, attributes: 0xa9b };
        regs.ss = RunSegment { base: 0, limit: 0xffff_ffff, selector: 0x10, attributes: 0xf093 };
        regs.gdt = RunTable { base: 0x500, limit: 0x1_0027 };
        write_regs(&mut v, &mut r, &regs);
        write_sregs(&mut v, &regs);
        assert_eq!(v.save.rax, 0x100);
        assert_eq!(v.save.rsp, 0x104);
        assert_eq!(v.save.rflags, 0x202, "bit 1 is always set");
        assert_eq!(v.save.efer, efer::LME | efer::LMA | efer::SVME);
        assert_eq!(v.save.ss.attrib, 0x093, "only architectural attribute bits");
        assert_eq!(v.save.gdtr.limit, 0x27, "table limits are 16 bits");
        assert_eq!(v.save.cpl, 0);
        let back = read(&v, &r);
        assert_eq!(back.gprs, regs.gprs);
        assert_eq!(back.efer, efer::LME | efer::LMA);
        assert_eq!(back.cs, regs.cs);
        assert_eq!(back.rflags, 0x202);
        assert_eq!(back.gdt.limit, 0x27);
        regs.ss.attributes = 0x00f3;
        write_sregs(&mut v, &regs);
        assert_eq!(v.save.cpl, 3);
    }

    #[test]
    fn only_the_exits_that_need_them_carry_special_registers() {
        let mut v = Vmcb::new_zeroed();
        let mut r = VsRegs::default();
        r.gprs[3] = 0x33;
        v.save.rax = 0xaa;
        v.save.rip = 0x1234;
        v.save.rflags = 0x246;
        v.save.cr3 = 0x9000;
        let mut gprs = [0; 16];
        gprs[0] = 0xaa;
        gprs[3] = 0x33;
        assert_eq!(
            at_exit(&v, &r, exit_reason::IO),
            ExitRegs::General { gprs, rip: 0x1234, rflags: 0x246 }
        );
        match at_exit(&v, &r, exit_reason::MMIO) {
            ExitRegs::All(all) => {
                assert_eq!(all.cr3, 0x9000);
                assert_eq!(all.gprs, gprs);
                assert_eq!(all.rip, 0x1234);
            }
            other => panic!("an MMIO exit needs every register: {other:?}"),
        }
    }
}
