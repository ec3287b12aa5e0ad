//! The device models: thin adapters that put rust-vmm's `vm-superio`
//! state machines (and our small ACPI power device) on the buses, with
//! interrupts raised through the backend's [`crate::backend::InterruptLine`].
//! The IOAPIC model serves backends whose interrupt controller the VMM
//! provides (MicroV); the backend puts it on the MMIO bus
//! ([`crate::backend::Vm::mmio_devices`]).

pub mod cmos;
pub mod i8042;
pub mod ioapic;
pub mod power;
pub mod serial;

use std::sync::{Arc, Mutex};

use crate::backend::{BackendError, Vm};
use crate::bus::{Bus, BusError};
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

/// The platform's devices, on their buses.
pub struct Devices {
    pub pio: Bus,
    pub mmio: Bus,
    /// The console's serial port, also fed by the console input thread.
    pub serial: Arc<Mutex<serial::SerialDevice>>,
}

impl Devices {
    /// COM1 (IRQ 4), the i8042 (its reset ends the VM), the CMOS clock
    /// and the ACPI power registers (sleep control, reset), on the port bus; on the MMIO bus,
    /// whatever the backend brings (MicroV: the IOAPIC).
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
        pio.insert(
            u64::from(i8042::I8042_PORT),
            i8042::PORT_COUNT,
            Arc::new(Mutex::new(i8042::I8042::new(control.clone()))),
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
