//! An IOAPIC (82093AA, version 0x11, 24 pins) for backends whose interrupt
//! controller the VMM provides: MicroV emulates each vCPU's x2APIC in the
//! hypervisor and leaves the IOAPIC here. (KVM's is in the kernel.)
//!
//! The guest programs it through two registers at [`IOAPIC_ADDR`]: IOREGSEL
//! (offset 0x00) selects an indirect register, IOWIN (offset 0x10) reads or
//! writes it. Indirect registers: 0x00 ID, 0x01 version, 0x02 arbitration,
//! 0x10 + 2n / 0x11 + 2n the low and high halves of pin n's redirection
//! entry (vector, delivery mode, destination mode, polarity, trigger mode,
//! mask; destination in bits 56–63).
//!
//! Every pin is an edge: [`Ioapic::trigger`] is one pulse, and the entry
//! decides where it goes. A pulse on a masked pin is lost, as on hardware
//! and in KVM's IOAPIC. Level-triggered entries are treated as edges too:
//! the VMM never sees the guest's EOIs (the x2APIC is MicroV's), so Remote
//! IRR stays clear. Only fixed and lowest-priority delivery reach a vCPU;
//! NMI, SMI, INIT and ExtINT entries are dropped.

use crate::bus::BusDevice;
use crate::devices::DeviceError;

pub use crate::boot::layout::IOAPIC_ADDR;

/// Bytes of MMIO the IOAPIC occupies.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Its input pins: GSIs 0–23.
pub const PINS: u32 = 24;

/// Direct registers (offsets from [`IOAPIC_ADDR`]).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;

/// Indirect registers.
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;

/// Version 0x11 and the highest redirection entry (23) in bits 16–23.
const VERSION: u32 = 0x11 | ((PINS - 1) << 16);
/// The ID register's writable bits (the 4-bit ID in bits 24–27).
const ID_MASK: u32 = 0x0f00_0000;

/// Redirection entry fields (low half).
const VECTOR_MASK: u64 = 0xff;
const DELIVERY_MODE_SHIFT: u32 = 8;
const DEST_MODE_LOGICAL: u64 = 1 << 11;
const MASKED: u64 = 1 << 16;
/// What the guest may write: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask, and the destination (bits 56–63).
/// Delivery status (12) and Remote IRR (14) are read-only.
const WRITABLE: u64 = 0xff00_0000_0001_afff;
const DEST_SHIFT: u32 = 56;

/// Delivery modes that reach a vCPU as a vector.
const DELIVERY_FIXED: u64 = 0;
const DELIVERY_LOWEST_PRIORITY: u64 = 1;
/// Vectors 0–15 are reserved for exceptions: an entry naming one is dropped.
const FIRST_VALID_VECTOR: u8 = 0x10;

/// Where an interrupt goes, as the redirection entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The vCPU with this APIC ID.
    Physical(u8),
    /// A logical destination (a set of logical APIC IDs).
    Logical(u8),
}

/// One interrupt to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    pub destination: Destination,
}

/// The IOAPIC's registers.
#[derive(Debug)]
pub struct Ioapic {
    select: u8,
    id: u32,
    entries: [u64; PINS as usize],
    /// Pulses that went nowhere (masked pin, unusable entry, no such pin).
    dropped: u64,
}

impl Default for Ioapic {
    fn default() -> Self {
        Ioapic::new()
    }
}

impl Ioapic {
    /// An IOAPIC after reset: every pin masked, ID 0.
    pub fn new() -> Self {
        Ioapic {
            select: 0,
            id: 0,
            entries: [MASKED; PINS as usize],
            dropped: 0,
        }
    }

    /// Pulses that were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One pulse on `gsi`: where it goes, or `None` when it is dropped.
    pub fn trigger(&mut self, gsi: u32) -> Option<Delivery> {
        let delivery = usize::try_from(gsi)
            .ok()
            .and_then(|i| self.entries.get(i))
            .and_then(|&e| deliverable(e));
        if delivery.is_none() {
            self.dropped += 1;
        }
        delivery
    }

    /// The indirect register `reg`.
    fn read_indirect(&self, reg: u8) -> u32 {
        match reg {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => VERSION,
            _ => match redirection(reg) {
                Some((pin, high)) => {
                    let e = self.entries.get(pin).copied().unwrap_or(0);
                    if high {
                        (e >> 32) as u32
                    } else {
                        e as u32
                    }
                }
                None => 0,
            },
        }
    }

    fn write_indirect(&mut self, reg: u8, value: u32) {
        if reg == REG_ID {
            self.id = value & ID_MASK;
            return;
        }
        let Some((pin, high)) = redirection(reg) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(pin) {
            let (keep, new) = if high {
                (0xffff_ffff, u64::from(value) << 32)
            } else {
                (0xffff_ffff_0000_0000, u64::from(value))
            };
            *e = (*e & keep) | (new & WRITABLE & !keep) | (*e & !WRITABLE & !keep);
        }
    }

    /// The 32-bit direct register at `offset`: IOREGSEL or IOWIN.
    fn read_direct(&self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_indirect(self.select),
            _ => 0,
        }
    }

    fn write_direct(&mut self, offset: u64, value: u32) {
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN => self.write_indirect(self.select, value),
            _ => {}
        }
    }
}

/// Pin and half of a redirection register, if `reg` is one.
fn redirection(reg: u8) -> Option<(usize, bool)> {
    let n = reg.checked_sub(REG_REDIRECTION)?;
    let pin = usize::from(n / 2);
    (pin < PINS as usize).then_some((pin, n % 2 == 1))
}

/// Where entry `e` sends a pulse, if anywhere.
fn deliverable(e: u64) -> Option<Delivery> {
    let vector = (e & VECTOR_MASK) as u8;
    let mode = (e >> DELIVERY_MODE_SHIFT) & 7;
    let usable = e & MASKED == 0
        && matches!(mode, DELIVERY_FIXED | DELIVERY_LOWEST_PRIORITY)
        && vector >= FIRST_VALID_VECTOR;
    let dest = (e >> DEST_SHIFT) as u8;
    usable.then_some(Delivery {
        vector,
        destination: if e & DEST_MODE_LOGICAL != 0 {
            Destination::Logical(dest)
        } else {
            Destination::Physical(dest)
        },
    })
}

/// The dword-aligned register holding `offset` and the byte in it, when
/// `len` bytes from there stay inside it.
fn dword(offset: u64, len: usize) -> Option<(u64, u32)> {
    let byte = offset % 4;
    (byte as usize + len <= 4).then_some((offset - byte, (byte * 8) as u32))
}

impl BusDevice for Ioapic {
    /// Registers are 32-bit; narrower reads inside one see its bytes, reads
    /// crossing two see all ones.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some((reg, shift)) = dword(offset, data.len()) else {
            data.fill(0xff);
            return;
        };
        let bytes = (self.read_direct(reg) >> shift).to_le_bytes();
        for (d, b) in data.iter_mut().zip(bytes) {
            *d = b;
        }
    }

    /// Narrower writes change their bytes of the register (IOREGSEL is
    /// often written as a byte); writes crossing two registers are ignored.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let Some((reg, shift)) = dword(offset, data.len()) else {
            return Ok(());
        };
        let mut bytes = [0u8; 4];
        for (b, d) in bytes.iter_mut().zip(data) {
            *b = *d;
        }
        let len_bits = (data.len() * 8) as u32;
        let mask = u32::MAX.checked_shr(32 - len_bits).unwrap_or(0) << shift;
        let value = u32::from_le_bytes(bytes) << shift;
        // Reading a register has no side effect, so merging is safe.
        let old = self.read_direct(reg);
        self.write_direct(reg, (old & !mask) | (value & mask));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write32(io: &mut Ioapic, offset: u64, v: u32) {
        io.write(offset, &v.to_le_bytes()).unwrap();
    }

    fn read32(io: &mut Ioapic, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        io.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn set(io: &mut Ioapic, reg: u8, v: u32) {
        write32(io, IOREGSEL, u32::from(reg));
        write32(io, IOWIN, v);
    }

    fn get(io: &mut Ioapic, reg: u8) -> u32 {
        write32(io, IOREGSEL, u32::from(reg));
        read32(io, IOWIN)
    }

    #[test]
    fn resets_masked_and_says_its_version() {
        let mut io = Ioapic::default();
        assert_eq!(get(&mut io, REG_VERSION), 0x0017_0011, "24 pins");
        assert_eq!(get(&mut io, REG_ID), 0);
        for pin in 0..PINS as u8 {
            assert_eq!(get(&mut io, 0x10 + 2 * pin), 1 << 16, "pin {pin} masked");
            assert_eq!(get(&mut io, 0x11 + 2 * pin), 0);
        }
        assert_eq!(get(&mut io, 0x10 + 2 * PINS as u8), 0, "past the table");
        assert_eq!(get(&mut io, 0x03), 0);
        assert_eq!(io.trigger(4), None);
        assert_eq!(io.dropped(), 1);
    }

    #[test]
    fn id_is_writable_and_arbitration_follows() {
        let mut io = Ioapic::new();
        set(&mut io, REG_ID, 0xffff_ffff);
        assert_eq!(get(&mut io, REG_ID), 0x0f00_0000);
        assert_eq!(get(&mut io, REG_ARBITRATION), 0x0f00_0000);
        set(&mut io, REG_VERSION, 0);
        set(&mut io, REG_ARBITRATION, 0);
        assert_eq!(get(&mut io, REG_VERSION), VERSION, "read-only");
        assert_eq!(read32(&mut io, IOREGSEL), u32::from(REG_VERSION));
    }

    #[test]
    fn an_unmasked_pin_delivers_its_vector() {
        let mut io = Ioapic::new();
        // COM1 as Linux programs it: vector 0x24, fixed, physical, to APIC 1.
        set(&mut io, 0x11 + 2 * 4, 1 << 24);
        set(&mut io, 0x10 + 2 * 4, 0x24);
        assert_eq!(
            io.trigger(4),
            Some(Delivery {
                vector: 0x24,
                destination: Destination::Physical(1)
            })
        );
        // Lowest priority, logical.
        set(&mut io, 0x10 + 2 * 4, 0x31 | (1 << 8) | (1 << 11));
        assert_eq!(
            io.trigger(4),
            Some(Delivery {
                vector: 0x31,
                destination: Destination::Logical(1)
            })
        );
        assert_eq!(io.dropped(), 0);
        // Masked again: lost.
        set(&mut io, 0x10 + 2 * 4, 0x24 | (1 << 16));
        assert_eq!(io.trigger(4), None);
        assert_eq!(io.dropped(), 1);
    }

    #[test]
    fn unusable_entries_and_pins_are_dropped() {
        let mut io = Ioapic::new();
        set(&mut io, 0x10, 0x0f); // an exception vector
        set(&mut io, 0x12, 0x40 | (4 << 8)); // NMI
        set(&mut io, 0x14, 0x40 | (7 << 8)); // ExtINT
        for gsi in [0, 1, 2, PINS, u32::MAX] {
            assert_eq!(io.trigger(gsi), None, "gsi {gsi}");
        }
        assert_eq!(io.dropped(), 5);
    }

    #[test]
    fn read_only_bits_stay_clear() {
        let mut io = Ioapic::new();
        set(&mut io, 0x10, 0xffff_ffff);
        assert_eq!(
            get(&mut io, 0x10),
            0x0001_afff,
            "no delivery status, no remote IRR"
        );
        set(&mut io, 0x11, 0xffff_ffff);
        assert_eq!(get(&mut io, 0x11), 0xff00_0000, "destination only");
        assert_eq!(get(&mut io, 0x10), 0x0001_afff, "the low half is kept");
        set(&mut io, 0x10, 0x20);
        assert_eq!(get(&mut io, 0x11), 0xff00_0000, "the high half is kept");
    }

    #[test]
    fn narrow_accesses_see_bytes_and_wide_ones_float() {
        let mut io = Ioapic::new();
        // IOREGSEL written as a byte, IOWIN read as bytes.
        io.write(IOREGSEL, &[REG_VERSION]).unwrap();
        let mut b = [0u8; 1];
        io.read(IOWIN + 2, &mut b);
        assert_eq!(b, [0x17]);
        let mut w = [0u8; 2];
        io.read(IOWIN, &mut w);
        assert_eq!(w, [0x11, 0]);
        // A byte write into IOWIN merges with the register.
        io.write(IOREGSEL, &[0x10]).unwrap();
        io.write(IOWIN + 2, &[0]).unwrap();
        assert_eq!(get(&mut io, 0x10), 0, "unmasked by a byte write");
        // Crossing registers, or beyond them.
        let mut q = [0u8; 8];
        io.read(IOREGSEL, &mut q);
        assert_eq!(q, [0xff; 8]);
        io.write(IOREGSEL + 2, &[1, 2, 3, 4]).unwrap();
        assert_eq!(read32(&mut io, IOREGSEL), 0x10, "ignored");
        assert_eq!(read32(&mut io, 0x40), 0, "no EOI register in version 0x11");
        write32(&mut io, 0x40, 0x24);
        io.write(IOREGSEL, &[]).unwrap();
        assert_eq!(read32(&mut io, IOREGSEL), 0x10);
    }
}
