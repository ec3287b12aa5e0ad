//! The local APIC's registers that MicroV looks at, and the interrupt
//! command register (ICR) fields (AMD APM vol. 2 §16.5, Intel SDM vol. 3A
//! §11.6.1). In xAPIC mode the registers are 32-bit MMIO words at 16-byte
//! steps from the APIC base; in x2APIC mode register `offset` is MSR
//! `0x800 + offset / 16` and the ICR is one 64-bit MSR.

/// The xAPIC page's size and alignment.
pub const PAGE_SIZE: u64 = 4096;
/// Offset of the ICR's low half (vector, delivery mode, shorthand); writing
/// it sends the IPI.
pub const ICR_LOW: u32 = 0x300;
/// Offset of the ICR's high half (xAPIC: destination in bits 31:24).
pub const ICR_HIGH: u32 = 0x310;
/// Registers sit at 16-byte steps; only the first 4 bytes of each exist.
pub const REGISTER_STRIDE: u32 = 16;
/// Offsets past the last register: AMD's extended APIC space ends with
/// the four extended LVT entries at 0x500–0x530 (AMD APM vol. 2 §16.4.5);
/// the rest of the page is reserved.
pub const REGISTERS_END: u32 = 0x540;
/// The APIC ID register (read-only in x2APIC mode).
pub const APIC_ID: u32 = 0x20;
/// The first x2APIC MSR (register `offset` is `X2APIC_FIRST + offset / 16`).
pub const X2APIC_FIRST: u32 = 0x800;

/// True for a local vector table entry: CMCI, timer, thermal, performance
/// counter, LINT0, LINT1, error, and AMD's extended entries. Their delivery
/// mode field is where the ICR has it (bits 10:8), and LINT0/LINT1 (and on
/// some CPUs more) take INIT: an interrupt on that pin then resets the CPU.
pub const fn is_lvt(offset: u32) -> bool {
    matches!(offset, 0x2f0 | 0x320..=0x370 | 0x500..=0x530) && offset.is_multiple_of(REGISTER_STRIDE)
}

/// The xAPIC register offset of x2APIC MSR `msr`, if it is one.
pub const fn x2apic_offset(msr: u32) -> Option<u32> {
    if msr >= X2APIC_FIRST && msr < X2APIC_FIRST + 0x100 {
        Some((msr - X2APIC_FIRST) * REGISTER_STRIDE)
    } else {
        None
    }
}
/// The x2APIC ICR MSR.
pub const X2APIC_ICR: u32 = 0x830;
/// The x2APIC MSRs of the local vector table: CMCI, then timer to error.
pub const X2APIC_LVT_CMCI: u32 = 0x82f;
pub const X2APIC_LVT_TIMER: u32 = 0x832;
pub const X2APIC_LVT_ERROR: u32 = 0x837;
/// IA32_APIC_BASE: x2APIC mode enabled.
pub const BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE: the APIC is enabled.
pub const BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: the base address bits.
pub const BASE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How an IPI is delivered (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    /// Puts the target in wait-for-SIPI: it drops whatever it was running.
    Init,
    /// Starts a CPU in wait-for-SIPI at a real-mode address.
    Startup,
    /// Encodings 3 and 7.
    Reserved,
}

/// Which CPUs an IPI goes to (ICR bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// The destination field (and mode) say.
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// One IPI command: the ICR as one 64-bit value (x2APIC layout: the
/// destination in bits 63:32; an xAPIC destination is its 8-bit ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr(pub u64);

impl Icr {
    /// The xAPIC pair: `high` holds the destination in bits 31:24.
    pub const fn from_xapic(low: u32, high: u32) -> Self {
        Icr(((high >> 24) as u64) << 32 | low as u64)
    }

    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    pub const fn delivery_mode(self) -> DeliveryMode {
        match (self.0 >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::Startup,
            _ => DeliveryMode::Reserved,
        }
    }

    /// Bit 11: the destination is a logical mask, not an APIC ID.
    pub const fn logical(self) -> bool {
        self.0 & (1 << 11) != 0
    }

    pub const fn shorthand(self) -> Shorthand {
        match (self.0 >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        }
    }

    /// The destination field (an APIC ID in physical mode).
    pub const fn destination(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_fields() {
        // Linux's INIT assert to APIC ID 1: level, assert, INIT.
        let init = Icr::from_xapic(0xc500, 1 << 24);
        assert_eq!(init.delivery_mode(), DeliveryMode::Init);
        assert_eq!(init.destination(), 1);
        assert_eq!(init.shorthand(), Shorthand::None);
        assert!(!init.logical());
        let sipi = Icr(0x0000_0007_0000_0608);
        assert_eq!(sipi.delivery_mode(), DeliveryMode::Startup);
        assert_eq!(sipi.vector(), 8);
        assert_eq!(sipi.destination(), 7);
        let modes = [
            DeliveryMode::Fixed,
            DeliveryMode::LowestPriority,
            DeliveryMode::Smi,
            DeliveryMode::Reserved,
            DeliveryMode::Nmi,
            DeliveryMode::Init,
            DeliveryMode::Startup,
            DeliveryMode::Reserved,
        ];
        for (m, want) in modes.iter().enumerate() {
            assert_eq!(Icr((m as u64) << 8).delivery_mode(), *want);
        }
        let shorthands = [
            Shorthand::None,
            Shorthand::SelfOnly,
            Shorthand::AllIncludingSelf,
            Shorthand::AllExcludingSelf,
        ];
        for (s, want) in shorthands.iter().enumerate() {
            assert_eq!(Icr((s as u64) << 18).shorthand(), *want);
        }
        assert!(Icr(1 << 11).logical());
    }

    #[test]
    fn knows_the_lvt_and_x2apic_numbers() {
        for lvt in [0x2f0, 0x320, 0x350, 0x360, 0x370, 0x500, 0x530] {
            assert!(is_lvt(lvt), "{lvt:#x}");
        }
        for other in [0x20, 0x300, 0x310, 0x380, 0x504, 0x540, 0x2e0] {
            assert!(!is_lvt(other), "{other:#x}");
        }
        assert_eq!(x2apic_offset(X2APIC_ICR), Some(ICR_LOW));
        assert_eq!(x2apic_offset(X2APIC_LVT_CMCI), Some(0x2f0));
        assert_eq!(x2apic_offset(X2APIC_LVT_ERROR), Some(0x370));
        assert_eq!(x2apic_offset(0x7ff), None);
        assert_eq!(x2apic_offset(0x900), None);
    }
}
