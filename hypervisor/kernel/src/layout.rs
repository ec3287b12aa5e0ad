//! Permissions of the microkernel's own mapping of the pool.
//!
//! The loader maps the whole pool read-write-executable with 2 MiB pages,
//! because it cannot know the image's sections. Once running, the
//! microkernel tightens that: its code read-only and executable, its
//! read-only data read-only, its data writable, everything else in the pool
//! writable but never executable, and the lowest page of each CPU's stack
//! unmapped, so an overflow faults instead of corrupting its neighbour.

use microv_abi::launch::{LoadedImage, CHUNK_SIZE, PAGE_SIZE, SEGMENT_W, SEGMENT_X};
use microv_arch::paging::{NO_EXECUTE, PRESENT, WRITABLE};

/// Leaf flags for the pool page at `offset`; 0 means "not mapped".
pub fn page_flags(offset: u64, kernel: &LoadedImage, guards: &[u64]) -> u64 {
    if guards.contains(&offset) {
        return 0;
    }
    let Some(in_image) = offset
        .checked_sub(kernel.pool_offset)
        .filter(|o| *o < kernel.size)
    else {
        return PRESENT | WRITABLE | NO_EXECUTE;
    };
    let segment = kernel
        .segments
        .iter()
        .take(kernel.segment_count as usize)
        .find(|s| s.offset <= in_image && in_image - s.offset < s.size);
    match segment {
        Some(s) if s.flags & SEGMENT_X != 0 => PRESENT,
        Some(s) if s.flags & SEGMENT_W != 0 => PRESENT | WRITABLE | NO_EXECUTE,
        _ => PRESENT | NO_EXECUTE,
    }
}

/// Whether the 2 MiB chunk at `chunk_offset` needs 4 KiB pages (it holds
/// part of the image or a guard page); other chunks only lose execute.
pub fn chunk_needs_table(chunk_offset: u64, kernel: &LoadedImage, guards: &[u64]) -> bool {
    let end = chunk_offset + CHUNK_SIZE;
    let image_end = kernel.pool_offset + kernel.size;
    (kernel.pool_offset < end && chunk_offset < image_end)
        || guards.iter().any(|&g| g >= chunk_offset && g < end)
}

/// The guard page of a CPU stack whose top is at pool offset `top`.
pub fn stack_guard(top: u64, stack_size: u64) -> u64 {
    top.saturating_sub(stack_size) & !(PAGE_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_abi::launch::{Segment, SEGMENT_R};

    fn kernel() -> LoadedImage {
        let mut k = LoadedImage::zeroed();
        k.size = 0x9000;
        k.segment_count = 3;
        k.segments[0] = Segment {
            offset: 0,
            size: 0x4000,
            flags: SEGMENT_R | SEGMENT_X,
        };
        k.segments[1] = Segment {
            offset: 0x4000,
            size: 0x1000,
            flags: SEGMENT_R,
        };
        k.segments[2] = Segment {
            offset: 0x5000,
            size: 0x3000,
            flags: SEGMENT_R | SEGMENT_W,
        };
        k
    }

    #[test]
    fn image_pages_get_their_segment_permissions() {
        let k = kernel();
        assert_eq!(page_flags(0, &k, &[]), PRESENT);
        assert_eq!(page_flags(0x3000, &k, &[]), PRESENT);
        assert_eq!(page_flags(0x4000, &k, &[]), PRESENT | NO_EXECUTE);
        assert_eq!(page_flags(0x7000, &k, &[]), PRESENT | WRITABLE | NO_EXECUTE);
        assert_eq!(
            page_flags(0x8000, &k, &[]),
            PRESENT | NO_EXECUTE,
            "inside the image, in no segment"
        );
        assert_eq!(page_flags(0x9000, &k, &[]), PRESENT | WRITABLE | NO_EXECUTE);
    }

    #[test]
    fn guard_pages_are_unmapped() {
        let k = kernel();
        let guard = stack_guard(0x2_0000, 0x8000);
        assert_eq!(guard, 0x1_8000);
        assert_eq!(page_flags(guard, &k, &[guard]), 0);
        assert_eq!(stack_guard(0x1000, 0x8000), 0);
    }

    #[test]
    fn only_chunks_with_image_or_guards_are_split() {
        let k = kernel();
        assert!(chunk_needs_table(0, &k, &[]));
        assert!(!chunk_needs_table(CHUNK_SIZE, &k, &[]));
        assert!(chunk_needs_table(CHUNK_SIZE, &k, &[CHUNK_SIZE + 0x5000]));
        assert!(!chunk_needs_table(2 * CHUNK_SIZE, &k, &[CHUNK_SIZE]));
    }
}
