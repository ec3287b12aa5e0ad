//! The i8042 keyboard controller, only for what Linux's `reboot=k` does
//! with it: command 0xFE on port 0x64 pulses the CPU reset line, which ends
//! the VM. `vm-superio` models it; its reset trigger stops the run.

use std::convert::Infallible;
use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::DeviceError;
use crate::bus::BusDevice;
use crate::control::{ResetCause, RunControl, StopReason};

/// Data port; the command/status port is at +4.
pub const I8042_PORT: u16 = 0x60;
pub const PORT_COUNT: u64 = 5;

/// Ends the VM when the guest resets the CPU.
pub struct ResetTrigger(Arc<RunControl>);

impl Trigger for ResetTrigger {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        self.0.request_stop(StopReason::Reset(ResetCause::Keyboard));
        Ok(())
    }
}

pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    pub fn new(control: Arc<RunControl>) -> Self {
        I8042(I8042Device::new(ResetTrigger(control)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.0.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        if let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) {
            // The trigger cannot fail.
            let _ = self.0.write(reg, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm() {
        let control = Arc::new(RunControl::new());
        let mut k = I8042::new(control.clone());
        k.write(0, &[0xfe]).unwrap(); // data port: not a command
        k.write(4, &[0xd1]).unwrap(); // another command
        k.write(0x100, &[0xfe]).unwrap();
        assert!(!control.is_stopping());
        let mut status = [0u8; 1];
        k.read(4, &mut status);
        assert_eq!(status, [0], "never busy: Linux's kb_wait() returns at once");
        k.write(4, &[0xfe]).unwrap();
        assert_eq!(
            control.reason(),
            Some(StopReason::Reset(ResetCause::Keyboard))
        );
    }
}
