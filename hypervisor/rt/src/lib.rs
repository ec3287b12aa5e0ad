//! Symbols the compiler expects from a C library, for MicroV's images.
//!
//! The linux-gnu target's `core` calls `memcpy` and friends and carries
//! unwinding references even with `panic = "abort"`. The images link no C
//! library, so they get these minimal versions. Host builds leave them out
//! (and test the copy and fill they are made of, [`string`]).
//!
//! Copies and fills move eight bytes per iteration (`rep movsq`/`rep
//! stosq`, then the odd bytes): fast on every CPU MicroV supports, with or
//! without fast short `rep movsb`, and an eighth of the iterations, which
//! is what an instruction count (`cargo xtask bench`) sees. Every exit
//! copies VMCB state.
#![no_std]

/// The string instructions the `mem*` functions are made of.
#[cfg(target_arch = "x86_64")]
pub mod string {
    use core::arch::asm;

    /// Copies `n` bytes from `src` to `dest`, lowest address first.
    ///
    /// # Safety
    /// `src` is valid for reads and `dest` for writes of `n` bytes, and
    /// `dest` does not overlap `src` above its start (copying forwards must
    /// not overwrite bytes it has yet to read).
    pub unsafe fn copy_forward(dest: *mut u8, src: *const u8, n: usize) {
        // SAFETY: the caller's promise; DF is clear (the ABI's rule).
        unsafe {
            asm!("rep movsq", "mov rcx, {bytes}", "rep movsb",
                bytes = in(reg) n % 8,
                inout("rcx") n / 8 => _, inout("rdi") dest => _, inout("rsi") src => _,
                options(nostack, preserves_flags));
        }
    }

    /// Copies `count` quadwords from `src` to `dest`, lowest address
    /// first: one `rep movsq`, nothing before or after it.
    ///
    /// # Safety
    /// `src` is valid for reads and `dest` for writes of `count` quadwords,
    /// and they do not overlap.
    #[inline(always)]
    pub unsafe fn copy_qwords(dest: *mut u64, src: *const u64, count: usize) {
        // SAFETY: the caller's promise; DF is clear (the ABI's rule).
        unsafe {
            asm!("rep movsq",
                inout("rcx") count => _, inout("rdi") dest => _, inout("rsi") src => _,
                options(nostack, preserves_flags));
        }
    }

    /// Sets `n` bytes at `dest` to `value`.
    ///
    /// # Safety
    /// `dest` is valid for writes of `n` bytes.
    pub unsafe fn fill(dest: *mut u8, value: u8, n: usize) {
        let word = u64::from(value) * 0x0101_0101_0101_0101;
        // SAFETY: the caller's promise; DF is clear (the ABI's rule).
        unsafe {
            asm!("rep stosq", "mov rcx, {bytes}", "rep stosb",
                bytes = in(reg) n % 8,
                inout("rcx") n / 8 => _, inout("rdi") dest => _, in("rax") word,
                options(nostack, preserves_flags));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn copies_every_length_and_alignment_exactly() {
            let src: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0xa5);
            for n in 0..40 {
                for at in 0..8 {
                    let mut dest = [0u8; 64];
                    // SAFETY: both ranges are inside their arrays and distinct.
                    unsafe { copy_forward(dest.as_mut_ptr().wrapping_add(at), src.as_ptr().wrapping_add(3), n) };
                    for (i, b) in dest.iter().enumerate() {
                        let want = if (at..at + n).contains(&i) { src[3 + i - at] } else { 0 };
                        assert_eq!(*b, want, "n {n}, at {at}, byte {i}");
                    }
                }
            }
        }

        #[test]
        fn copies_quadwords_exactly() {
            let src: [u64; 8] = core::array::from_fn(|i| 0x1111_2222_3333_4444 * (i as u64 + 1));
            for count in 0..6 {
                let mut dest = [0u64; 8];
                // SAFETY: both ranges are inside their arrays and distinct.
                unsafe { copy_qwords(dest.as_mut_ptr().wrapping_add(1), src.as_ptr().wrapping_add(2), count) };
                for (i, q) in dest.iter().enumerate() {
                    let want = if (1..1 + count).contains(&i) { src[i + 1] } else { 0 };
                    assert_eq!(*q, want, "count {count}, quadword {i}");
                }
            }
        }

        #[test]
        fn fills_every_length_and_alignment_exactly() {
            for n in 0..40 {
                for at in 0..8 {
                    let mut dest = [0x11u8; 64];
                    // SAFETY: the range is inside the array.
                    unsafe { fill(dest.as_mut_ptr().wrapping_add(at), 0xc3, n) };
                    for (i, b) in dest.iter().enumerate() {
                        let want = if (at..at + n).contains(&i) { 0xc3 } else { 0x11 };
                        assert_eq!(*b, want, "n {n}, at {at}, byte {i}");
                    }
                }
            }
        }
    }
}

#[cfg(feature = "image")]
mod mem {
    use core::arch::asm;

    /// # Safety
    /// As C's `memcpy`: valid, non-overlapping ranges.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees both ranges are valid for `n` bytes
        // and do not overlap.
        unsafe { crate::string::copy_forward(dest, src, n) };
        dest
    }

    /// # Safety
    /// As C's `memmove`: valid ranges, which may overlap.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
            // SAFETY: copying forwards is safe when dest is below src or past
            // its end (eight bytes at a time included: each qword is read
            // before the store that could reach it).
            unsafe { crate::string::copy_forward(dest, src, n) };
            return dest;
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
        unsafe { crate::string::fill(dest, c as u8, n) };
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
