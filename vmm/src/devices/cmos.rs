//! The CMOS real-time clock (MC146818) at ports 0x70 (index) and 0x71
//! (data): the host's time, in UTC, for a guest that asks the platform
//! what time it is. Linux does at boot unless a hypervisor clock answers
//! (kvm-clock does on KVM). Without a device the ports read all ones, the
//! clock looks forever mid-update, and Linux polls it for seconds of guest
//! time before it gives up ("Unable to read current time from RTC").
//!
//! The time registers always read the host's clock; writes to them are
//! ignored (the guest cannot set the host's time). Register B's data mode
//! and 12/24-hour bits are honoured; the rest of the 128 bytes is plain RAM.
//! No interrupts: the update, alarm and periodic flags never rise.

use std::time::{SystemTime, UNIX_EPOCH};

use super::DeviceError;
use crate::bus::BusDevice;

/// The index port; the data port follows it.
pub const CMOS_PORT: u16 = 0x70;
pub const PORT_COUNT: u64 = 2;

/// Registers (the index port's low seven bits).
mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const MINUTES: u8 = 0x02;
    pub const HOURS: u8 = 0x04;
    pub const WEEKDAY: u8 = 0x06;
    pub const DAY: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0a;
    pub const B: u8 = 0x0b;
    pub const C: u8 = 0x0c;
    pub const D: u8 = 0x0d;
    /// The century, where PCs keep it (ACPI's FADT may name another).
    pub const CENTURY: u8 = 0x32;
}

/// Register A: the 32.768 kHz time base and a 1024 Hz rate; UIP (bit 7,
/// update in progress) is never set.
const A_DEFAULT: u8 = 0x26;
/// Register B: 24-hour mode; data mode BCD (bit 2 clear).
const B_24H: u8 = 1 << 1;
const B_BINARY: u8 = 1 << 2;
/// Register D: the RAM and time are valid (the battery is fine).
const D_VALID: u8 = 1 << 7;
/// The PM flag of the hours register in 12-hour mode.
const HOURS_PM: u8 = 1 << 7;
/// The index port's NMI-disable bit.
const INDEX_MASK: u8 = 0x7f;

/// A civil date and time in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: u64,
    month: u8,
    day: u8,
    /// 1 = Sunday … 7 = Saturday, as the RTC counts.
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl DateTime {
    /// The date and time `secs` seconds after 1970-01-01 00:00:00 UTC.
    fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // 1970-01-01 was a Thursday (5 in the RTC's count).
        let weekday = ((days + 4) % 7 + 1) as u8;
        // Days to a proleptic Gregorian date, counting from 0000-03-01 so
        // that leap days fall at the end of each year (Hinnant's method).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + u64::from(month <= 2);
        DateTime {
            year,
            month,
            day,
            weekday,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// Seconds since the Unix epoch, now (0 if the host clock is before it).
fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    now: Box<dyn Fn() -> u64 + Send>,
}

impl Cmos {
    /// A clock that reads the host's time.
    pub fn new() -> Self {
        Self::with_clock(Box::new(host_now))
    }

    /// A clock that reads `now()` (seconds since the Unix epoch).
    fn with_clock(now: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut c = Cmos {
            index: 0,
            ram: [0; 128],
            now,
        };
        c.set_ram(reg::A, A_DEFAULT);
        c.set_ram(reg::B, B_24H);
        c.set_ram(reg::D, D_VALID);
        c
    }

    fn ram(&self, index: u8) -> u8 {
        self.ram.get(usize::from(index & INDEX_MASK)).copied().unwrap_or(0xff)
    }

    fn set_ram(&mut self, index: u8, value: u8) {
        if let Some(slot) = self.ram.get_mut(usize::from(index & INDEX_MASK)) {
            *slot = value;
        }
    }

    /// A register's value in the data mode and hour format register B asks for.
    fn time_register(&self, index: u8, t: &DateTime) -> Option<u8> {
        let b = self.ram(reg::B);
        let encode = |v: u8| if b & B_BINARY != 0 { v } else { bcd(v) };
        Some(match index {
            reg::SECONDS => encode(t.second),
            reg::MINUTES => encode(t.minute),
            reg::HOURS if b & B_24H != 0 => encode(t.hour),
            reg::HOURS => {
                let h12 = match t.hour % 12 {
                    0 => 12,
                    h => h,
                };
                encode(h12) | if t.hour >= 12 { HOURS_PM } else { 0 }
            }
            reg::WEEKDAY => encode(t.weekday),
            reg::DAY => encode(t.day),
            reg::MONTH => encode(t.month),
            reg::YEAR => encode((t.year % 100) as u8),
            reg::CENTURY => encode((t.year / 100 % 100) as u8),
            _ => return None,
        })
    }

    fn read_data(&self) -> u8 {
        let t = DateTime::from_unix((self.now)());
        self.time_register(self.index, &t).unwrap_or_else(|| match self.index {
            // UIP is never set; no interrupt flag ever rises.
            reg::A => self.ram(reg::A) & !0x80,
            reg::C => 0,
            reg::D => D_VALID,
            i => self.ram(i),
        })
    }

    fn write_data(&mut self, value: u8) {
        let t = DateTime::from_unix(0);
        if self.time_register(self.index, &t).is_some() || matches!(self.index, reg::C | reg::D) {
            return;
        }
        self.set_ram(self.index, value);
    }
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = match offset {
                0 => self.index,
                _ => self.read_data(),
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        if let Some(&value) = data.first() {
            match offset {
                0 => self.index = value & INDEX_MASK,
                _ => self.write_data(value),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, index: u8) -> u8 {
        c.write(0, &[index | 0x80]).unwrap(); // NMI-disable bit set, as Linux does
        let mut v = [0u8];
        c.read(1, &mut v);
        let [value] = v;
        value
    }

    /// 2026-12-06 08:09:10 UTC, a Sunday.
    const WHEN: u64 = 1_796_544_550;

    #[test]
    fn dates_convert_from_unix_time() {
        let cases = [
            (0, (1970, 1, 1, 5, 0, 0, 0)),
            (WHEN, (2026, 12, 6, 1, 8, 9, 10)),
            (951_782_400, (2000, 2, 29, 3, 0, 0, 0)),        // a leap day
            (4_107_542_399, (2100, 2, 28, 1, 23, 59, 59)),   // 2100 is no leap year
            (4_107_542_400, (2100, 3, 1, 2, 0, 0, 0)),
        ];
        for (secs, (year, month, day, weekday, hour, minute, second)) in cases {
            let want = DateTime { year, month, day, weekday, hour, minute, second };
            assert_eq!(DateTime::from_unix(secs), want, "{secs}");
        }
    }

    #[test]
    fn the_time_reads_in_bcd_24_hours_and_never_mid_update() {
        let mut c = Cmos::with_clock(Box::new(|| WHEN + 12 * 3600));
        let regs = [
            (reg::SECONDS, 0x10),
            (reg::MINUTES, 0x09),
            (reg::HOURS, 0x20),
            (reg::WEEKDAY, 0x01),
            (reg::DAY, 0x06),
            (reg::MONTH, 0x12),
            (reg::YEAR, 0x26),
            (reg::CENTURY, 0x20),
            (reg::A, A_DEFAULT),
            (reg::B, B_24H),
            (reg::C, 0),
            (reg::D, D_VALID),
        ];
        for (index, want) in regs {
            assert_eq!(read(&mut c, index), want, "register {index:#x}");
        }
        // The index port reads back what was written (without bit 7).
        let mut v = [0u8; 2];
        c.read(0, &mut v);
        assert_eq!(v, [reg::D, 0xff]);
    }

    #[test]
    fn register_b_selects_binary_and_12_hour_formats() {
        let mut c = Cmos::with_clock(Box::new(|| WHEN + 12 * 3600));
        c.write(0, &[reg::B]).unwrap();
        c.write(1, &[B_BINARY]).unwrap();
        assert_eq!(read(&mut c, reg::HOURS), 8 | HOURS_PM, "20:09 is 8 PM");
        assert_eq!(read(&mut c, reg::YEAR), 26);
        let mut midnight = Cmos::with_clock(Box::new(|| WHEN - 8 * 3600));
        midnight.write(0, &[reg::B]).unwrap();
        midnight.write(1, &[0]).unwrap();
        assert_eq!(read(&mut midnight, reg::HOURS), 0x12, "00:09 is 12 AM, in BCD");
    }

    #[test]
    fn the_time_cannot_be_set_but_the_ram_keeps_what_is_written() {
        let mut c = Cmos::with_clock(Box::new(|| WHEN));
        for (index, value) in [(reg::SECONDS, 0x59), (reg::C, 0xff), (reg::D, 0), (reg::A, 0xa6)] {
            c.write(0, &[index]).unwrap();
            c.write(1, &[value]).unwrap();
        }
        assert_eq!(read(&mut c, reg::SECONDS), 0x10);
        assert_eq!((read(&mut c, reg::C), read(&mut c, reg::D)), (0, D_VALID));
        assert_eq!(read(&mut c, reg::A), 0x26, "the rate sticks, UIP never shows");
        c.write(0, &[0x40]).unwrap();
        c.write(1, &[0x5a]).unwrap();
        c.write(1, &[]).unwrap();
        assert_eq!(read(&mut c, 0x40), 0x5a);
        // The host's clock: some time after this code was written.
        assert!(read(&mut Cmos::default(), reg::CENTURY) >= 0x20);
    }
}
