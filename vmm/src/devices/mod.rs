//! The device models: thin adapters that put rust-vmm's `vm-superio`
//! state machines (and our small ACPI power device) on the buses, with
//! interrupts raised through the backend's [`crate::backend::InterruptLine`].

pub mod i8042;
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
    /// COM1 (IRQ 4), the i8042 (its reset ends the VM) and the ACPI power
    /// registers (sleep control, reset), on the port bus.
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
            u64::from(power::POWER_PORT),
            power::PORT_COUNT,
            Arc::new(Mutex::new(power::Power::new(control))),
        )
        .map_err(DeviceError::from)?;
        Ok(Devices {
            pio,
            mmio: Bus::new(),
            serial,
        })
    }
}
