//! The hardware-reduced ACPI power registers the FADT points at:
//!
//! | port  | register       | what a write does                                  |
//! |-------|----------------|----------------------------------------------------|
//! | 0x600 | sleep control  | SLP_EN with SLP_TYP = [`S5_SLEEP_TYPE`]: power off |
//! | 0x601 | sleep status   | nothing (reads 0: the guest never wakes)           |
//! | 0x602 | reset          | [`RESET_VALUE`]: reset, which ends the VM           |
//!
//! The sleep type the guest writes is the one the DSDT's `_S5_` names.

use std::sync::Arc;

use super::DeviceError;
use crate::bus::BusDevice;
use crate::control::{ResetCause, RunControl, StopReason};

pub const POWER_PORT: u16 = 0x600;
pub const PORT_COUNT: u64 = 3;
pub const SLEEP_CONTROL_PORT: u16 = POWER_PORT;
pub const SLEEP_STATUS_PORT: u16 = POWER_PORT + 1;
pub const RESET_PORT: u16 = POWER_PORT + 2;
pub const RESET_VALUE: u8 = 1;
/// SLP_TYP for S5 (soft off), as `_S5_` tells the guest.
pub const S5_SLEEP_TYPE: u8 = 5;

/// Sleep control register fields (ACPI 6, 4.8.3.7).
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

pub struct Power {
    control: Arc<RunControl>,
}

impl Power {
    pub fn new(control: Arc<RunControl>) -> Self {
        Power { control }
    }
}

impl BusDevice for Power {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let Some(&value) = data.first() else {
            return Ok(());
        };
        let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        match offset {
            0 if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE => {
                self.control.request_stop(StopReason::PowerOff);
            }
            2 if value == RESET_VALUE => {
                self.control
                    .request_stop(StopReason::Reset(ResetCause::Acpi));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power() -> (Power, Arc<RunControl>) {
        let c = Arc::new(RunControl::new());
        (Power::new(c.clone()), c)
    }

    #[test]
    fn s5_powers_off() {
        let (mut p, c) = power();
        // What Linux writes: SLP_TYP from _S5_ at bits 2-4, plus SLP_EN.
        p.write(0, &[(5 << 2) | 0x20]).unwrap();
        assert_eq!(c.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn other_writes_do_nothing() {
        let (mut p, c) = power();
        p.write(0, &[5 << 2]).unwrap(); // no SLP_EN
        p.write(0, &[(3 << 2) | 0x20]).unwrap(); // S3: not offered
        p.write(1, &[0x80]).unwrap(); // clearing WAK_STS
        p.write(2, &[2]).unwrap();
        p.write(0, &[]).unwrap();
        let mut d = [0xffu8; 2];
        p.read(1, &mut d);
        assert_eq!(d, [0, 0]);
        assert!(!c.is_stopping());
    }

    #[test]
    fn reset_register_resets() {
        let (mut p, c) = power();
        p.write(2, &[RESET_VALUE]).unwrap();
        assert_eq!(c.reason(), Some(StopReason::Reset(ResetCause::Acpi)));
    }
}
