//! Routes port I/O and MMIO exits to devices by address range. One bus for
//! ports, one for MMIO; devices see offsets from their base, never the
//! absolute address, so the same model can sit anywhere.

use std::sync::{Arc, Mutex};

use crate::devices::DeviceError;

/// A device on a bus.
pub trait BusDevice: Send {
    /// A read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError>;
}

/// A device shared between the vCPU threads that reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps another device or is empty")]
    Overlap { base: u64, len: u64 },
}

struct Range {
    base: u64,
    len: u64,
    device: SharedDevice,
}

/// Whether an access found a device. Accesses nobody claims read as all
/// ones, like an empty ISA bus, and writes to them are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Handled,
    Unclaimed,
}

/// Address ranges and their devices, kept sorted and disjoint.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// Puts `device` at `base..base + len`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::Overlap { base, len });
        };
        if self
            .ranges
            .iter()
            .any(|r| base < r.base + r.len && r.base < end)
        {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, len, device });
        Ok(())
    }

    /// The device holding `addr` and the offset into it. An access that
    /// straddles the device's end still goes to it: models check sizes.
    fn find(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let i = self.ranges.partition_point(|r| r.base <= addr);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (addr - r.base < r.len).then_some((&r.device, addr - r.base))
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<Access, DeviceError> {
        let Some((device, offset)) = self.find(addr) else {
            data.fill(0xff);
            return Ok(Access::Unclaimed);
        };
        device
            .lock()
            .map_err(|_| DeviceError::Poisoned)?
            .read(offset, data);
        Ok(Access::Handled)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<Access, DeviceError> {
        let Some((device, offset)) = self.find(addr) else {
            return Ok(Access::Unclaimed);
        };
        device
            .lock()
            .map_err(|_| DeviceError::Poisoned)?
            .write(offset, data)?;
        Ok(Access::Handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records accesses; reads answer the offset.
    #[derive(Default)]
    struct Probe {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
            self.writes.push((offset, data.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn routes_by_range() {
        let a = Arc::new(Mutex::new(Probe::default()));
        let b = Arc::new(Mutex::new(Probe::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, b.clone()).unwrap();
        let mut d = [0u8; 1];
        assert_eq!(bus.read(0x3fd, &mut d), Ok(Access::Handled));
        assert_eq!(d, [5]);
        assert_eq!(bus.read(0x64, &mut d), Ok(Access::Handled));
        assert_eq!(d, [4]);
        assert_eq!(bus.write(0x3f8, b"x"), Ok(Access::Handled));
        assert_eq!(a.lock().unwrap().writes, [(0, b"x".to_vec())]);
        assert!(b.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn unclaimed_reads_float_high() {
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        let mut d = [0u8; 4];
        for addr in [0, 0x3f7, 0x400, u64::MAX] {
            assert_eq!(bus.read(addr, &mut d), Ok(Access::Unclaimed));
            assert_eq!(d, [0xff; 4]);
            assert_eq!(bus.write(addr, &d), Ok(Access::Unclaimed));
        }
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let dev = || Arc::new(Mutex::new(Probe::default())) as SharedDevice;
        let mut bus = Bus::new();
        bus.insert(0x10, 0x10, dev()).unwrap();
        for (base, len) in [
            (0x0, 0x11),
            (0x1f, 1),
            (0x15, 2),
            (0x8, 0x20),
            (0x40, 0),
            (u64::MAX, 2),
        ] {
            assert_eq!(
                bus.insert(base, len, dev()),
                Err(BusError::Overlap { base, len })
            );
        }
        bus.insert(0x0, 0x10, dev()).unwrap();
        bus.insert(0x20, 1, dev()).unwrap();
    }
}
