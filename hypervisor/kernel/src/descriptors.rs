//! MicroV's own descriptor tables for each CPU: the GDT (kernel and user
//! code/data, the TSS), the exception gates of the IDT and the
//! descriptor-table register images that `lgdt`/`lidt` load.

use microv_arch::descriptor::{
    attrib, encode_code_data, encode_interrupt_gate, encode_tss, selector,
};

/// Exception vectors with a gate; each stub is this many bytes after the
/// previous one.
pub const EXCEPTION_VECTORS: usize = 32;
pub const STUB_STRIDE: u64 = 16;
/// Every exception runs on this IST slot.
pub const EXCEPTION_IST: u8 = 1;

/// The GDT: null, kernel code and data, user data and code (for `sysret`),
/// and the 16-byte TSS descriptor for a TSS at `tss_base` with `tss_limit`.
pub fn gdt(tss_base: u64, tss_limit: u32) -> [u64; selector::GDT_ENTRIES] {
    let code =
        attrib::TYPE_CODE_RX_ACCESSED | attrib::S | attrib::PRESENT | attrib::LONG | attrib::GRANULARITY;
    let data =
        attrib::TYPE_DATA_RW_ACCESSED | attrib::S | attrib::PRESENT | attrib::DB | attrib::GRANULARITY;
    let [tss_low, tss_high] = encode_tss(tss_base, tss_limit);
    let entries = [
        (selector::KERNEL_CODE, encode_code_data(code)),
        (selector::KERNEL_DATA, encode_code_data(data)),
        (selector::USER_DATA, encode_code_data(data | attrib::dpl(3))),
        (selector::USER_CODE, encode_code_data(code | attrib::dpl(3))),
        (selector::TSS, tss_low),
        (selector::TSS + 8, tss_high),
    ];
    let mut gdt = [0; selector::GDT_ENTRIES];
    for (sel, desc) in entries {
        if let Some(slot) = gdt.get_mut(usize::from(sel >> 3)) {
            *slot = desc;
        }
    }
    gdt
}

/// Fills the exception gates: vector *v* enters the stub at
/// `stubs + v * STUB_STRIDE` in ring 0 on IST 1.
pub fn exception_gates(gates: &mut [[u64; 2]], stubs: u64) {
    for (v, gate) in (0u64..).zip(gates.iter_mut()).take(EXCEPTION_VECTORS) {
        *gate = encode_interrupt_gate(stubs + STUB_STRIDE * v, selector::KERNEL_CODE, EXCEPTION_IST);
    }
}

/// The 10 bytes `lgdt`/`lidt` read (limit, then base), in a 16-byte buffer.
pub fn dtr(limit: u16, base: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let (l, b) = bytes.split_at_mut(2);
    l.copy_from_slice(&limit.to_le_bytes());
    if let Some(dst) = b.get_mut(..8) {
        dst.copy_from_slice(&base.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::descriptor::decode_code_data;

    #[test]
    fn gdt_has_every_selector_the_assembly_uses() {
        let g = gdt(0xffff_8000_0000_1000, 0x1ff);
        assert_eq!(g[0], 0);
        let kc = decode_code_data(selector::KERNEL_CODE, g[1]);
        assert_ne!(kc.attrib & attrib::LONG, 0);
        assert_eq!(decode_code_data(selector::USER_CODE, g[5]).attrib >> 5 & 3, 3, "DPL 3");
        assert_eq!(decode_code_data(selector::USER_DATA, g[4]).attrib >> 5 & 3, 3);
        assert_eq!([g[6], g[7]], encode_tss(0xffff_8000_0000_1000, 0x1ff));
        // sysret takes user SS at USER_BASE + 8 and CS at USER_BASE + 16.
        assert_eq!(selector::USER_BASE + 8, selector::USER_DATA & !3);
        assert_eq!(selector::USER_BASE + 16, selector::USER_CODE & !3);
    }

    #[test]
    fn exception_gates_point_at_the_stubs() {
        let mut gates = [[0u64; 2]; 256];
        exception_gates(&mut gates, 0xffff_8000_0001_0000);
        assert_eq!(gates[14], encode_interrupt_gate(0xffff_8000_0001_00e0, selector::KERNEL_CODE, 1));
        assert_eq!(gates[32], [0, 0], "no gate past the exceptions");
    }

    #[test]
    fn dtr_layout() {
        let d = dtr(0x3f, 0x1122_3344_5566_7788);
        assert_eq!(&d[..2], &[0x3f, 0]);
        assert_eq!(&d[2..10], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&d[10..], &[0; 6]);
    }
}
