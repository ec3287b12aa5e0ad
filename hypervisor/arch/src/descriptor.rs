//! Segment descriptors: decoding the OS's GDT entries into the VMCB's
//! segment format, and encoding MicroV's own GDT and TSS.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A segment register as the VMCB holds it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Segment {
    pub selector: u16,
    /// Descriptor bits 47:40 in 7:0 and bits 55:52 in 11:8.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}
const _: () = assert!(core::mem::size_of::<Segment>() == 16);

/// Attribute bits (VMCB format).
pub mod attrib {
    /// Code/data (not system).
    pub const S: u16 = 1 << 4;
    pub const PRESENT: u16 = 1 << 7;
    pub const LONG: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const GRANULARITY: u16 = 1 << 11;
    /// Type: execute/read code, accessed.
    pub const TYPE_CODE_RX_ACCESSED: u16 = 0xb;
    /// Type: read/write data, accessed.
    pub const TYPE_DATA_RW_ACCESSED: u16 = 0x3;
    /// Type: busy 64-bit TSS.
    pub const TYPE_TSS_BUSY: u16 = 0xb;
    /// Type: available 64-bit TSS.
    pub const TYPE_TSS_AVAILABLE: u16 = 0x9;
    /// Type: LDT.
    pub const TYPE_LDT: u16 = 0x2;
    pub const fn dpl(level: u16) -> u16 {
        (level & 3) << 5
    }
}

/// Decodes an 8-byte code or data descriptor loaded with `selector`.
/// A null selector gives an unusable (attrib 0) segment.
pub fn decode_code_data(selector: u16, raw: u64) -> Segment {
    if selector & !3 == 0 {
        return Segment {
            selector,
            ..Segment::default()
        };
    }
    let limit_low = raw & 0xffff;
    let limit_high = (raw >> 48) & 0xf;
    let mut limit = (limit_high << 16 | limit_low) as u32;
    let base = ((raw >> 16) & 0xff_ffff) | (((raw >> 56) & 0xff) << 24);
    let attrib = (((raw >> 40) & 0xff) | (((raw >> 52) & 0xf) << 8)) as u16;
    if attrib & attrib::GRANULARITY != 0 {
        limit = (limit << 12) | 0xfff;
    }
    Segment {
        selector,
        attrib,
        limit,
        base,
    }
}

/// Decodes a 16-byte system descriptor (a 64-bit TSS or LDT) loaded with
/// `selector`: as a code/data descriptor, plus base bits 63:32 from the
/// second half. A null selector gives an unusable (attrib 0) segment.
pub fn decode_system(selector: u16, raw: [u64; 2]) -> Segment {
    let [low, high] = raw;
    let mut s = decode_code_data(selector, low);
    if selector & !3 != 0 {
        s.base |= (high & 0xffff_ffff) << 32;
    }
    s
}

/// The 16-byte system descriptor for segment `s` (what
/// [`decode_system`] reads back): base, limit (in pages when G is set) and
/// attributes.
pub const fn encode_system(s: &Segment) -> [u64; 2] {
    let a = s.attrib as u64;
    let l = if s.attrib & attrib::GRANULARITY != 0 {
        (s.limit >> 12) as u64
    } else {
        s.limit as u64
    };
    let low = (l & 0xffff)
        | ((s.base & 0xff_ffff) << 16)
        | ((a & 0xff) << 40)
        | (((l >> 16) & 0xf) << 48)
        | (((a >> 8) & 0xf) << 52)
        | (((s.base >> 24) & 0xff) << 56);
    [low, s.base >> 32]
}

/// An 8-byte descriptor for MicroV's own GDT.
pub const fn encode_code_data(attrib: u16) -> u64 {
    let limit: u64 = 0xfffff;
    let a = attrib as u64;
    (limit & 0xffff) | ((a & 0xff) << 40) | (((limit >> 16) & 0xf) << 48) | (((a >> 8) & 0xf) << 52)
}

/// The 16-byte system descriptor of a 64-bit TSS, as two GDT slots.
pub const fn encode_tss(base: u64, limit: u32) -> [u64; 2] {
    let l = limit as u64;
    let low = (l & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((attrib::TYPE_TSS_AVAILABLE as u64 | attrib::PRESENT as u64) << 40)
        | (((l >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// MicroV's GDT selectors. The order is fixed by `syscall`/`sysret`:
/// STAR[47:32] = KERNEL_CODE (SS = +8), STAR[63:48] = USER_BASE
/// (64-bit user CS = +16, user SS = +8).
pub mod selector {
    pub const KERNEL_CODE: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    pub const USER_BASE: u16 = 0x18;
    pub const USER_DATA: u16 = 0x20 | 3;
    pub const USER_CODE: u16 = 0x28 | 3;
    pub const TSS: u16 = 0x30;
    /// Slots in the GDT (the TSS takes two).
    pub const GDT_ENTRIES: usize = 8;
}

/// The 64-bit TSS: only RSP0 and the IST pointers matter.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Tss {
    pub reserved0: u32,
    pub rsp: [u64; 3],
    pub reserved1: u64,
    pub ist: [u64; 7],
    pub reserved2: u64,
    pub reserved3: u16,
    pub iomap_base: u16,
}
const _: () = assert!(core::mem::size_of::<Tss>() == 104);
const _: () = assert!(core::mem::offset_of!(Tss, rsp) == 4);
const _: () = assert!(core::mem::offset_of!(Tss, ist) == 36);
const _: () = assert!(core::mem::offset_of!(Tss, iomap_base) == 102);

/// A 16-byte 64-bit interrupt gate.
pub const fn encode_interrupt_gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | ((selector as u64) << 16)
        | (((ist & 7) as u64) << 32)
        | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_system_descriptor() {
        // Linux's busy 64-bit TSS at 0xfffffe0000003000, limit 0x4087.
        let raw = [0x0000_8b00_3000_4087, 0x0000_0000_ffff_fe00];
        let tr = decode_system(0x40, raw);
        assert_eq!(tr.base, 0xffff_fe00_0000_3000);
        assert_eq!(tr.limit, 0x4087);
        assert_eq!(tr.attrib, 0x8b);
        assert_eq!(tr.selector, 0x40);
        assert_eq!(decode_system(0, raw), Segment::default());
        assert_eq!(encode_system(&tr), raw);
        let big = Segment { selector: 0x50, attrib: 0x882, limit: 0xffff_ffff, base: 0x1000 };
        assert_eq!(decode_system(0x50, encode_system(&big)), big);
    }

    // Linux's __KERNEL_CS descriptor on x86-64 (GDT_ENTRY_INIT(0xa09b, 0, 0xfffff)).
    const LINUX_KERNEL_CS: u64 = 0x00af_9b00_0000_ffff;
    const LINUX_KERNEL_DS: u64 = 0x00cf_9300_0000_ffff;

    #[test]
    fn decodes_linux_kernel_code_segment() {
        let s = decode_code_data(0x10, LINUX_KERNEL_CS);
        assert_eq!(s.selector, 0x10);
        assert_eq!(s.attrib, 0xa9b);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
        assert!(s.attrib & attrib::LONG != 0);
    }

    #[test]
    fn decodes_data_segment_with_base() {
        let raw = 0x12cf_9334_5678_ffffu64;
        let s = decode_code_data(0x18, raw);
        assert_eq!(s.attrib, 0xc93);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xffff_ffff);
        let byte_granular = decode_code_data(0x18, raw & !(1 << 55));
        assert_eq!(byte_granular.limit, 0xf_ffff);
        assert_eq!(decode_code_data(0x18, LINUX_KERNEL_DS).attrib, 0xc93);
    }

    #[test]
    fn null_selector_is_unusable() {
        assert_eq!(decode_code_data(0, LINUX_KERNEL_CS).attrib, 0);
        assert_eq!(decode_code_data(3, LINUX_KERNEL_CS).selector, 3);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let a = attrib::TYPE_CODE_RX_ACCESSED
            | attrib::S
            | attrib::PRESENT
            | attrib::LONG
            | attrib::GRANULARITY;
        assert_eq!(encode_code_data(a), LINUX_KERNEL_CS | (1 << 40)); // accessed bit
        assert_eq!(decode_code_data(8, encode_code_data(a)).attrib, a);
    }

    #[test]
    fn privilege_levels_land_in_bits_5_and_6() {
        assert_eq!(attrib::dpl(3), 0x60);
        assert_eq!(attrib::dpl(0), 0);
        assert_eq!(attrib::dpl(7), 0x60, "only two bits");
    }

    #[test]
    fn tss_descriptor_layout() {
        let [low, high] = encode_tss(0xffff_8000_1234_5000, 103);
        assert_eq!(low & 0xffff, 103);
        assert_eq!((low >> 16) & 0xff_ffff, 0x34_5000);
        assert_eq!((low >> 40) & 0xff, 0x89);
        assert_eq!(low >> 56, 0x12);
        assert_eq!(high, 0xffff_8000);
    }

    #[test]
    fn interrupt_gate_layout() {
        let [low, high] = encode_interrupt_gate(0xffff_8000_0001_2345, 8, 1);
        assert_eq!(low & 0xffff, 0x2345);
        assert_eq!((low >> 16) & 0xffff, 8);
        assert_eq!((low >> 32) & 7, 1);
        assert_eq!((low >> 40) & 0xff, 0x8e);
        assert_eq!(low >> 48, 0x0001);
        assert_eq!(high, 0xffff_8000);
    }
}
