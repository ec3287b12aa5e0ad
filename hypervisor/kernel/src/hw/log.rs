//! Writing to the shared log ring and, with feature `debugcon`, to I/O port
//! 0xE9 (QEMU's `-debugcon`; `cargo xtask build` turns it on for the
//! emulated machine). The port gets every line, even before the ring is
//! set up or when a triple fault loses it, so it shows how far a CPU got.

use core::fmt::Write;

use microv_abi::launch::LogHeader;
use spin::Mutex;

use crate::log::LogRing;

/// Loader address of the ring (header then data) and its total size.
pub static RING: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Appends formatted text and a newline to the log.
pub fn write(args: core::fmt::Arguments) {
    let ring = RING.lock();
    // Under the lock, so that lines of different CPUs do not interleave.
    #[cfg(feature = "debugcon")]
    debugcon::write_line(args);
    let (base, size) = *ring;
    let header_size = core::mem::size_of::<LogHeader>() as u64;
    if base == 0 || size <= header_size {
        return;
    }
    // SAFETY: the ring's header was mapped by the loader for MicroV's
    // lifetime and is written only under this lock.
    let header = unsafe { &mut *(base as *mut LogHeader) };
    // SAFETY: as the header: the data follows it, `size` bytes in all, and
    // does not overlap it.
    let data = unsafe {
        core::slice::from_raw_parts_mut(
            (base + header_size) as *mut u8,
            (size - header_size) as usize,
        )
    };
    let mut w = LogRing { header, data };
    let _ = w.write_fmt(args);
    w.write_bytes(b"\n");
}

#[cfg(feature = "debugcon")]
mod debugcon {
    use core::fmt::Write;

    use microv_arch::instr;

    /// The Bochs/QEMU debug console port.
    const PORT: u16 = 0xE9;

    struct DebugCon;

    impl Write for DebugCon {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for b in s.bytes() {
                // SAFETY: the microkernel runs in ring 0. The OUT touches
                // no memory; 0xE9 is QEMU's debug console and no standard
                // PC device.
                unsafe { instr::outb(PORT, b) };
            }
            Ok(())
        }
    }

    /// Writes formatted text and a newline to the port.
    pub fn write_line(args: core::fmt::Arguments) {
        let _ = DebugCon.write_fmt(args);
        let _ = DebugCon.write_str("\n");
    }
}

/// Appends a line to the hypervisor log.
macro_rules! log {
    ($($arg:tt)*) => { $crate::hw::log::write(format_args!($($arg)*)) };
}
pub(crate) use log;
