//! Port I/O from ring 3: the microkernel's TSS I/O bitmap allows exactly
//! `microv_abi::syscall::EXTENSION_PORTS`; `crate::io` only calls these for
//! accesses that lie entirely inside them.

use core::arch::asm;

/// Reads `size` (1, 2 or 4) bytes from `port`.
pub fn read(port: u16, size: u8) -> u32 {
    match size {
        1 => {
            let b: u8;
            // SAFETY: port I/O has no memory effects; the TSS bitmap allows
            // this port to ring 3 (any other would #GP, caught as a fault).
            unsafe { asm!("in al, dx", out("al") b, in("dx") port, options(nomem, nostack, preserves_flags)) };
            u32::from(b)
        }
        2 => {
            let w: u16;
            // SAFETY: as above.
            unsafe { asm!("in ax, dx", out("ax") w, in("dx") port, options(nomem, nostack, preserves_flags)) };
            u32::from(w)
        }
        _ => {
            let d: u32;
            // SAFETY: as above.
            unsafe { asm!("in eax, dx", out("eax") d, in("dx") port, options(nomem, nostack, preserves_flags)) };
            d
        }
    }
}

/// Writes `size` (1, 2 or 4) bytes of `value` to `port`.
pub fn write(port: u16, size: u8, value: u32) {
    match size {
        // SAFETY: as for `read`.
        1 => unsafe { asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack, preserves_flags)) },
        // SAFETY: as for `read`.
        2 => unsafe { asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack, preserves_flags)) },
        // SAFETY: as for `read`.
        _ => unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) },
    }
}
