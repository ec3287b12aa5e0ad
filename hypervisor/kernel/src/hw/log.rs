//! Writing to the shared log ring.

use core::fmt::Write;

use microv_abi::launch::LogHeader;
use spin::Mutex;

use crate::log::LogRing;

/// Loader address of the ring (header then data) and its total size.
pub static RING: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Appends formatted text and a newline to the log.
pub fn write(args: core::fmt::Arguments) {
    let ring = RING.lock();
    let (base, size) = *ring;
    let header_size = core::mem::size_of::<LogHeader>() as u64;
    if base == 0 || size <= header_size {
        return;
    }
    // SAFETY: the ring was mapped by the loader for MicroV's lifetime and
    // is written only under this lock.
    let (header, data) = unsafe {
        (
            &mut *(base as *mut LogHeader),
            core::slice::from_raw_parts_mut(
                (base + header_size) as *mut u8,
                (size - header_size) as usize,
            ),
        )
    };
    let mut w = LogRing { header, data };
    let _ = w.write_fmt(args);
    w.write_bytes(b"\n");
}

/// Appends a line to the hypervisor log.
macro_rules! log {
    ($($arg:tt)*) => { $crate::hw::log::write(format_args!($($arg)*)) };
}
pub(crate) use log;
