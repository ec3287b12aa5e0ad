//! The device models: thin adapters that put rust-vmm's `vm-superio`
//! state machines (and our small CMOS clock, 8254 timer and ACPI power
//! devices) on the buses, with interrupts raised through the backend's
//! [`crate::backend::InterruptLine`].
//! The IOAPIC model serves backends whose interrupt controller the VMM
//! provides (MicroV); the backend puts it on the MMIO bus
//! ([`crate::backend::Vm::mmio_devices`]).

pub mod cmos;
pub mod i8042;
pub mod ioapic;
pub mod pit;
pub mod power;
pub mod serial;

use std::sync::{Arc, Mutex};

use crate::backend::{BackendError, Vm};
use crate::bus::{Bus, BusDevice, BusError, SharedDevice};
use crate::control::RunControl;

/// What a device can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("a device's lock was poisoned by a panicking thread")]
    Poisoned,
    #[error("raising the serial port's interrupt failed: {0}")]
    Interrupt(#[source] BackendError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl PartialEq for DeviceError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A device seen through a window of its ports: an access at offset `o`
/// of the window reaches the device at `skip + o`. Puts one device on
/// ports that are not adjacent (the i8042's 0x60 and 0x64, with port 0x61
/// of the PIT between them).
struct Window {
    device: SharedDevice,
    skip: u64,
}

impl Window {
    fn new(device: SharedDevice, skip: u64) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Window { device, skip }))
    }
}

impl BusDevice for Window {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.device.lock() {
            Ok(mut d) => d.read(self.skip.saturating_add(offset), data),
            Err(_) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.device
            .lock()
            .map_err(|_| DeviceError::Poisoned)?
            .write(self.skip.saturating_add(offset), data)
    }
}

/// The platform's devices, on their buses.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
    /// The console's serial port, also fed by the console input thread.
    pub serial: Arc<Mutex<serial::SerialDevice>>,
}

impl Devices {
    /// COM1 (IRQ 4), the i8042 at 0x60 and 0x64 (its reset ends the VM),
    /// the 8254 timer at 0x40–0x43 with port 0x61 (no IRQ 0), the CMOS
    /// clock and the ACPI power registers (sleep control, reset), on the
    /// port bus; on the MMIO bus, whatever the backend brings (MicroV: the
    /// IOAPIC).
    pub fn new(
        vm: &dyn Vm,
        control: Arc<RunControl>,
        console_out: serial::SerialOut,
    ) -> Result<Self, crate::VmmError> {
        let line = vm.interrupt_line(serial::COM1_IRQ)?;
        let serial = Arc::new(Mutex::new(serial::SerialDevice::new(line, console_out)));
        let mut pio = Bus::new();
        pio.insert(
            u64::from(serial::COM1_PORT),
            serial::PORT_COUNT,
            serial.clone(),
        )
        .map_err(DeviceError::from)?;
        // The i8042's data and command ports only: 0x61 between them is
        // the PIT's.
        let i8042: SharedDevice = Arc::new(Mutex::new(i8042::I8042::new(control.clone())));
        let command = i8042::PORT_COUNT - 1;
        pio.insert(u64::from(i8042::I8042_PORT), 1, i8042.clone())
            .map_err(DeviceError::from)?;
        pio.insert(
            u64::from(i8042::I8042_PORT) + command,
            1,
            Window::new(i8042, command),
        )
        .map_err(DeviceError::from)?;
        let pit: SharedDevice = Arc::new(Mutex::new(pit::Pit::new()));
        pio.insert(u64::from(pit::PIT_PORT), pit::PORT_COUNT, pit.clone())
            .map_err(DeviceError::from)?;
        pio.insert(
            u64::from(pit::NMI_SC_PORT),
            1,
            Window::new(pit, pit::NMI_SC_OFFSET),
        )
        .map_err(DeviceError::from)?;
        pio.insert(
            u64::from(cmos::CMOS_PORT),
            cmos::PORT_COUNT,
            Arc::new(Mutex::new(cmos::Cmos::new())),
        )
        .map_err(DeviceError::from)?;
        pio.insert(
            u64::from(power::POWER_PORT),
            power::PORT_COUNT,
            Arc::new(Mutex::new(power::Power::new(control))),
        )
        .map_err(DeviceError::from)?;
        let mut mmio = Bus::new();
        for d in vm.mmio_devices() {
            mmio.insert(d.base, d.len, d.device)
                .map_err(DeviceError::from)?;
        }
        Ok(Devices { pio, mmio, serial })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::GuestMemoryMmap;

    use super::*;
    use crate::backend::fake::FakeLine;
    use crate::backend::{InterruptLine, MmioDevice, Vcpu};

    /// A VM that brings an IOAPIC, as MicroV's does.
    struct WithIoapic;

    impl Vm for WithIoapic {
        fn map_memory(&mut self, _: Arc<GuestMemoryMmap>) -> Result<(), BackendError> {
            Ok(())
        }
        fn interrupt_line(&self, _: u32) -> Result<Arc<dyn InterruptLine>, BackendError> {
            Ok(Arc::new(FakeLine::default()))
        }
        fn create_vcpu(&self, _: u8) -> Result<Box<dyn Vcpu>, BackendError> {
            Err(BackendError::NotImplemented("stub"))
        }
        fn mmio_devices(&self) -> Vec<MmioDevice> {
            vec![MmioDevice {
                base: ioapic::IOAPIC_ADDR,
                len: ioapic::IOAPIC_SIZE,
                device: Arc::new(Mutex::new(ioapic::Ioapic::new())),
            }]
        }
    }

    #[test]
    fn the_pit_and_port_61_sit_between_the_i8042s_ports() {
        use crate::bus::Access;
        use crate::control::{ResetCause, StopReason};

        let control = Arc::new(RunControl::new());
        let d = Devices::new(&WithIoapic, control.clone(), Box::new(std::io::sink())).unwrap();
        let mut v = [0u8; 1];
        for port in [0x62, 0x63, 0x65] {
            assert_eq!(
                d.pio.read(port, &mut v).unwrap(),
                Access::Unclaimed,
                "{port:#x}"
            );
        }
        // Port 0x61: the gate of channel 2 reads back; 0x60 is the i8042's.
        d.pio.write(0x61, &[0x01]).unwrap();
        d.pio.read(0x61, &mut v).unwrap();
        assert_eq!(v[0] & 0x03, 0x01);
        d.pio.read(0x60, &mut v).unwrap();
        assert_eq!(v, [0]);
        // Channel 2, LSB only, mode 0, then its status by read-back.
        d.pio.write(0x43, &[0x90]).unwrap();
        d.pio.write(0x42, &[0xff]).unwrap();
        d.pio.write(0x43, &[0xe8]).unwrap();
        d.pio.read(0x42, &mut v).unwrap();
        assert_eq!(v[0] & 0x3f, 0x10, "the control word's fields");
        assert!(!control.is_stopping());
        d.pio.write(0x64, &[0xfe]).unwrap();
        assert_eq!(
            control.reason(),
            Some(StopReason::Reset(ResetCause::Keyboard))
        );
    }

    #[test]
    fn a_window_onto_a_poisoned_device_floats_and_fails() {
        let inner: SharedDevice = Arc::new(Mutex::new(pit::Pit::new()));
        let poison = inner.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poison.lock().unwrap();
            panic!("poison it");
        })
        .join();
        let window = Window::new(inner, pit::NMI_SC_OFFSET);
        let mut w = window.lock().unwrap();
        let mut v = [0u8; 2];
        w.read(0, &mut v);
        assert_eq!(v, [0xff; 2]);
        assert_eq!(w.write(0, &[1]), Err(DeviceError::Poisoned));
    }

    #[test]
    fn the_backends_mmio_devices_join_the_bus() {
        let control = Arc::new(RunControl::new());
        let d = Devices::new(&WithIoapic, control, Box::new(std::io::sink())).unwrap();
        let mut v = [0u8; 4];
        d.mmio.write(ioapic::IOAPIC_ADDR, &[1]).unwrap();
        d.mmio.read(ioapic::IOAPIC_ADDR + 0x10, &mut v).unwrap();
        assert_eq!(u32::from_le_bytes(v), 0x0017_0011, "the IOAPIC's version");
        assert!(WithIoapic.create_vcpu(0).is_err());
        let mut vm = WithIoapic;
        assert!(vm
            .map_memory(Arc::new(
                GuestMemoryMmap::from_ranges(&[]).unwrap_or_default()
            ))
            .is_ok());
    }
}
