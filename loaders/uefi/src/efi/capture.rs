//! The firmware's CPU state, captured into a landing page before the CPU
//! enters MicroV (what the Linux driver's `capture` records): the root VM
//! continues from exactly this state.

use core::arch::asm;

use microv_abi::launch::{CapturedState, DescriptorTableRegister};
use microv_arch::{instr, msr, xsave};

use crate::selectors::gdt_index;

/// CR4.OSXSAVE: XGETBV works.
const CR4_OSXSAVE: u64 = 1 << 18;

macro_rules! read_reg {
    ($insn:literal) => {{
        let v: u64;
        // SAFETY: UEFI applications run in ring 0; reading a control or
        // debug register has no effect.
        unsafe { asm!($insn, out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

macro_rules! read_selector {
    ($insn:literal) => {{
        let v: u16;
        // SAFETY: reads a segment selector (or TR/LDTR); no effect.
        unsafe { asm!($insn, out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Fills `s` from this CPU. Interrupts must be off until the CPU has
/// entered (the state must not change in between).
pub fn capture(s: &mut CapturedState) {
    s.cr0 = read_reg!("mov {}, cr0");
    s.cr3 = read_reg!("mov {}, cr3");
    s.cr4 = read_reg!("mov {}, cr4");
    s.dr7 = read_reg!("mov {}, dr7");
    // SAFETY: ring 0; EFER and PAT exist on every x86-64 CPU.
    s.efer = unsafe { instr::rdmsr(msr::EFER) };
    // SAFETY: as above.
    s.pat = unsafe { instr::rdmsr(msr::PAT) };
    // Without CR4.OSXSAVE (the firmware may leave it off) XCR0 cannot be
    // read, and holds its reset value, x87 only: what the root keeps.
    s.xcr0 = if s.cr4 & CR4_OSXSAVE != 0 { xcr0() } else { xsave::X87 };
    s.gdtr = table_register(false);
    s.idtr = table_register(true);
    s.cs = read_selector!("mov {:x}, cs");
    s.ss = read_selector!("mov {:x}, ss");
    s.ds = read_selector!("mov {:x}, ds");
    s.es = read_selector!("mov {:x}, es");
    s.fs = read_selector!("mov {:x}, fs");
    s.gs = read_selector!("mov {:x}, gs");
    s.tr = read_selector!("str {:x}");
    s.ldtr = read_selector!("sldt {:x}");
    s.cs_desc = descriptor(&s.gdtr, s.cs);
    s.ss_desc = descriptor(&s.gdtr, s.ss);
    s.ds_desc = descriptor(&s.gdtr, s.ds);
    s.es_desc = descriptor(&s.gdtr, s.es);
    s.tr_desc = system_descriptor(&s.gdtr, s.tr);
    s.ldtr_desc = system_descriptor(&s.gdtr, s.ldtr);
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set (checked by the caller); XGETBV(0) reads.
    unsafe { asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// SGDT or SIDT into the padded register layout (limit at offset 6).
fn table_register(idt: bool) -> DescriptorTableRegister {
    let mut raw = [0u8; 10];
    if idt {
        // SAFETY: stores 10 bytes into `raw`.
        unsafe { asm!("sidt [{}]", in(reg) raw.as_mut_ptr(), options(nostack, preserves_flags)) };
    } else {
        // SAFETY: stores 10 bytes into `raw`.
        unsafe { asm!("sgdt [{}]", in(reg) raw.as_mut_ptr(), options(nostack, preserves_flags)) };
    }
    let [l0, l1, b @ ..] = raw;
    DescriptorTableRegister {
        pad: [0; 3],
        limit: u16::from_le_bytes([l0, l1]),
        base: u64::from_le_bytes(b),
    }
}

/// The raw 16-byte system descriptor (TSS, LDT) `selector` names, zeros
/// if none (both halves must lie within the GDT's limit).
fn system_descriptor(gdtr: &DescriptorTableRegister, selector: u16) -> [u64; 2] {
    let high = selector.wrapping_add(8);
    if gdt_index(selector, gdtr.limit).is_none() || gdt_index(high, gdtr.limit).is_none() {
        return [0; 2];
    }
    [descriptor(gdtr, selector), descriptor(gdtr, high)]
}

/// The raw GDT descriptor `selector` names, 0 if none.
fn descriptor(gdtr: &DescriptorTableRegister, selector: u16) -> u64 {
    match gdt_index(selector, gdtr.limit) {
        // SAFETY: the firmware's GDT, identity-mapped, and the entry lies
        // within its limit (`gdt_index`).
        Some(i) => unsafe { core::ptr::read_unaligned((gdtr.base as *const u64).wrapping_add(i)) },
        None => 0,
    }
}
