//! The MSR bitmap (SDM Vol. 3C 25.6.9) and the I/O bitmaps (25.6.4): where
//! the bit that makes an access exit lives. A set bit means exit.
//!
//! The MSR bitmap is one 4 KiB page of four 1 KiB bitmaps: reads of MSRs
//! 0–0x1FFF, reads of 0xC000_0000–0xC000_1FFF, then writes of the same
//! two ranges. Every access to an MSR outside both ranges exits.
//! I/O bitmap A has one bit for each port 0–0x7FFF, B for 0x8000–0xFFFF;
//! an access exits if the bit of any port it touches is set.

/// Bytes in the MSR bitmap page.
pub const MSR_BITMAP_SIZE: usize = 4096;
/// Bytes in each of the I/O bitmaps A and B.
pub const IO_BITMAP_SIZE: usize = 4096;

/// Offset of the write bitmaps from the read bitmaps.
const WRITE_OFFSET: usize = 0x800;

/// Where the bit for `write`s (else reads) of `msr` lives in the MSR
/// bitmap: `(byte offset, bit)`. `None` for MSRs the bitmap does not cover
/// (every access to them exits).
pub const fn msr_bitmap_position(msr: u32, write: bool) -> Option<(usize, u8)> {
    // The range's first MSR and the offset of its read bitmap.
    let (first, base) = match msr {
        0x0000_0000..=0x0000_1fff => (0x0000_0000, 0x000),
        0xc000_0000..=0xc000_1fff => (0xc000_0000, 0x400),
        _ => return None,
    };
    let base = if write { base + WRITE_OFFSET } else { base };
    let offset = (msr - first) as usize;
    Some((base + offset / 8, (offset % 8) as u8))
}

/// True for MSRs the bitmap cannot cover: every access to them exits.
pub const fn msr_always_exits(msr: u32) -> bool {
    msr_bitmap_position(msr, false).is_none()
}

/// Which I/O bitmap holds a port's bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBitmap {
    /// Ports 0–0x7FFF.
    A,
    /// Ports 0x8000–0xFFFF.
    B,
}

/// Where the bit of `port` lives: the bitmap, the byte offset in it, the bit.
pub const fn io_bitmap_position(port: u16) -> (IoBitmap, usize, u8) {
    let bitmap = if port < 0x8000 {
        IoBitmap::A
    } else {
        IoBitmap::B
    };
    let offset = (port & 0x7fff) as usize;
    (bitmap, offset / 8, (offset % 8) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msr;

    #[test]
    fn msr_positions_match_the_manual() {
        assert_eq!(msr_bitmap_position(0, false), Some((0, 0)));
        assert_eq!(msr_bitmap_position(0, true), Some((0x800, 0)));
        assert_eq!(msr_bitmap_position(0x1fff, false), Some((0x3ff, 7)));
        assert_eq!(msr_bitmap_position(0x1fff, true), Some((0xbff, 7)));
        // IA32_SYSENTER_CS (0x174): byte 0x2e, bit 4.
        assert_eq!(
            msr_bitmap_position(msr::SYSENTER_CS, false),
            Some((0x2e, 4))
        );
        assert_eq!(msr_bitmap_position(msr::EFER, false), Some((0x410, 0)));
        assert_eq!(msr_bitmap_position(msr::EFER, true), Some((0xc10, 0)));
        assert_eq!(
            msr_bitmap_position(msr::KERNEL_GS_BASE, true),
            Some((0xc20, 2))
        );
        assert_eq!(msr_bitmap_position(0xc000_1fff, true), Some((0xfff, 7)));
        for outside in [0x2000, 0xbfff_ffff, 0xc000_2000, msr::VM_CR, u32::MAX] {
            assert_eq!(msr_bitmap_position(outside, false), None, "{outside:#x}");
            assert_eq!(msr_bitmap_position(outside, true), None, "{outside:#x}");
            assert!(msr_always_exits(outside));
        }
        assert!(!msr_always_exits(msr::LSTAR));
    }

    #[test]
    fn io_positions_split_at_0x8000() {
        assert_eq!(io_bitmap_position(0), (IoBitmap::A, 0, 0));
        assert_eq!(io_bitmap_position(0xcf9), (IoBitmap::A, 0x19f, 1));
        assert_eq!(io_bitmap_position(0x7fff), (IoBitmap::A, 0xfff, 7));
        assert_eq!(io_bitmap_position(0x8000), (IoBitmap::B, 0, 0));
        assert_eq!(io_bitmap_position(0xffff), (IoBitmap::B, 0xfff, 7));
    }
}
