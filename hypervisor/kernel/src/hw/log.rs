//! Writing to the shared log ring and, with feature `debugcon`, to I/O port
//! 0xE9 (QEMU's `-debugcon`; `cargo xtask build` turns it on for the
//! emulated machine). The port gets every line, even before the ring is
//! set up or when a triple fault loses it, so it shows how far a CPU got.

use core::fmt::Write;
use core::mem::offset_of;

use microv_abi::launch::LogHeader;
use spin::Mutex;

use crate::log::{LogCursor, LogSink, LogWriter};

/// The ring: its loader address (header, then data), total size, and
/// MicroV's own position in it.
pub struct Ring {
    pub base: u64,
    pub size: u64,
    pub cursor: LogCursor,
}

pub static RING: Mutex<Ring> = Mutex::new(Ring {
    base: 0,
    size: 0,
    cursor: LogCursor::new(),
});

/// The ring in the root's memory, written with volatile stores only (the
/// root may write it at the same time; nothing is read back).
struct RootRing {
    base: u64,
    size: u64,
}

const HEADER_SIZE: u64 = core::mem::size_of::<LogHeader>() as u64;

impl RootRing {
    fn store<T>(&self, offset: u64, value: T) {
        let p = (self.base as *mut u8).wrapping_add(offset as usize).cast::<T>();
        // SAFETY: the loader maps the ring (`size` bytes from `base`) for
        // MicroV's lifetime; callers stay inside it (`put` below `capacity`,
        // the header's fields); a volatile store of plain data.
        unsafe { p.write_volatile(value) }
    }
}

impl LogSink for RootRing {
    fn capacity(&self) -> u64 {
        self.size.saturating_sub(HEADER_SIZE)
    }
    fn put(&mut self, index: u64, byte: u8) {
        if index < self.capacity() {
            self.store(HEADER_SIZE + index, byte);
        }
    }
    fn publish(&mut self, written: u64, lost: u64) {
        self.store(offset_of!(LogHeader, written) as u64, written);
        self.store(offset_of!(LogHeader, lost) as u64, lost);
    }
}

/// Appends formatted text and a newline to the log.
pub fn write(args: core::fmt::Arguments) {
    let mut ring = RING.lock();
    // Under the lock, so that lines of different CPUs do not interleave.
    #[cfg(feature = "debugcon")]
    debugcon::write_line(args);
    if ring.base == 0 || ring.size <= HEADER_SIZE {
        return;
    }
    let mut sink = RootRing {
        base: ring.base,
        size: ring.size,
    };
    let mut w = LogWriter {
        cursor: &mut ring.cursor,
        sink: &mut sink,
    };
    let _ = w.write_fmt(args);
    let _ = w.write_str("\n");
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
