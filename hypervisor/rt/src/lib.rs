//! Symbols the compiler expects from a C library, for MicroV's images.
//!
//! The linux-gnu target's `core` calls `memcpy` and friends and carries
//! unwinding references even with `panic = "abort"`. The images link no C
//! library, so they get these minimal versions (`rep movsb`/`rep stosb` are
//! fast on every CPU MicroV supports). Host builds leave them out.
#![no_std]

#[cfg(feature = "image")]
mod mem {
    use core::arch::asm;

    /// # Safety
    /// As C's `memcpy`: valid, non-overlapping ranges.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees both ranges are valid for `n` bytes.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
                options(nostack, preserves_flags));
        }
        dest
    }

    /// # Safety
    /// As C's `memmove`: valid ranges, which may overlap.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
            // SAFETY: copying forwards is safe when dest is below src or past its end.
            return unsafe { memcpy(dest, src, n) };
        }
        // The last byte of each range (n > 0 here: dest lies inside src's
        // range); address arithmetic only, nothing is read yet.
        let (last_dest, last_src) = (dest.wrapping_add(n - 1), src.wrapping_add(n - 1));
        // SAFETY: overlapping with dest above src: copy backwards with DF set,
        // restoring DF (the ABI requires it clear) before returning.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rcx") n => _,
                inout("rdi") last_dest => _,
                inout("rsi") last_src => _,
                options(nostack));
        }
        dest
    }

    /// # Safety
    /// As C's `memset`.
    #[no_mangle]
    pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees the range is valid for `n` bytes.
        unsafe {
            asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
                options(nostack, preserves_flags));
        }
        dest
    }

    /// # Safety
    /// As C's `memcmp`.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            let (pa, pb) = (a.wrapping_add(i), b.wrapping_add(i));
            // SAFETY: the caller guarantees both ranges are valid for `n`
            // bytes, and i < n.
            let x = unsafe { pa.read() };
            // SAFETY: as above.
            let y = unsafe { pb.read() };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// As C's `bcmp`.
    #[no_mangle]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }

    /// The precompiled `core` refers to the unwinder's personality routine;
    /// with `panic = "abort"` it is never called.
    #[no_mangle]
    pub extern "C" fn rust_eh_personality() {}
}
