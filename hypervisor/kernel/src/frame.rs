//! The page-frame allocator over the hypervisor's pool.
//!
//! Pages are numbered by pool offset / 4 KiB. A multi-page allocation is
//! physically contiguous, so it never crosses a 2 MiB chunk boundary (chunks
//! are contiguous inside, but not with each other).

use microv_abi::launch::{CHUNK_SIZE, MAX_CHUNKS, PAGE_SIZE};

const PAGES_PER_CHUNK: usize = (CHUNK_SIZE / PAGE_SIZE) as usize;
const MAX_PAGES: usize = MAX_CHUNKS * PAGES_PER_CHUNK;
const WORDS: usize = MAX_PAGES / 64;

/// Why an allocator call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free run of the requested length.
    OutOfMemory,
    /// A count of 0, more than a chunk, or a range outside the pool.
    InvalidRange,
    /// Freeing pages that are not allocated.
    NotAllocated,
}

/// One bit per pool page: set = in use.
pub struct FrameAllocator {
    bits: [u64; WORDS],
    total: usize,
    free: usize,
}

impl FrameAllocator {
    /// An allocator that owns nothing yet.
    pub const fn new() -> Self {
        FrameAllocator {
            bits: [0; WORDS],
            total: 0,
            free: 0,
        }
    }

    /// Takes a pool of `total` pages whose first `reserved` pages are in use.
    pub fn init(&mut self, total: usize, reserved: usize) -> Result<(), FrameError> {
        if total > MAX_PAGES || reserved > total {
            return Err(FrameError::InvalidRange);
        }
        self.bits = [0; WORDS];
        self.total = total;
        self.free = total;
        for page in (0..reserved).chain(total..MAX_PAGES) {
            self.set(page, true);
        }
        self.free = total - reserved;
        Ok(())
    }

    fn get(&self, page: usize) -> bool {
        self.bits
            .get(page / 64)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    fn set(&mut self, page: usize, used: bool) {
        if let Some(w) = self.bits.get_mut(page / 64) {
            if used {
                *w |= 1 << (page % 64);
            } else {
                *w &= !(1 << (page % 64));
            }
        }
    }

    /// Allocates `count` contiguous pages inside one chunk; returns the first page number.
    pub fn alloc(&mut self, count: usize) -> Result<usize, FrameError> {
        if count == 0 || count > PAGES_PER_CHUNK {
            return Err(FrameError::InvalidRange);
        }
        if count > self.free {
            return Err(FrameError::OutOfMemory);
        }
        let mut run_start = 0;
        let mut run = 0;
        let mut page = 0;
        while page < self.total {
            if page % PAGES_PER_CHUNK == 0 {
                run = 0;
            }
            // Skip a fully used word quickly.
            if page % 64 == 0 && self.bits.get(page / 64) == Some(&u64::MAX) {
                run = 0;
                page += 64;
                continue;
            }
            if self.get(page) {
                run = 0;
            } else {
                if run == 0 {
                    run_start = page;
                }
                run += 1;
                if run == count {
                    for p in run_start..run_start + count {
                        self.set(p, true);
                    }
                    self.free -= count;
                    return Ok(run_start);
                }
            }
            page += 1;
        }
        Err(FrameError::OutOfMemory)
    }

    /// Frees `count` pages from `first`; every one must be allocated.
    pub fn free(&mut self, first: usize, count: usize) -> Result<(), FrameError> {
        let end = first.checked_add(count).ok_or(FrameError::InvalidRange)?;
        if count == 0 || end > self.total {
            return Err(FrameError::InvalidRange);
        }
        if (first..end).any(|p| !self.get(p)) {
            return Err(FrameError::NotAllocated);
        }
        for p in first..end {
            self.set(p, false);
        }
        self.free += count;
        Ok(())
    }

    /// Pages not in use.
    pub fn free_pages(&self) -> usize {
        self.free
    }

    /// Pages in the pool.
    pub fn total_pages(&self) -> usize {
        self.total
    }
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(total: usize, reserved: usize) -> Box<FrameAllocator> {
        let mut a = Box::new(FrameAllocator::new());
        a.init(total, reserved).unwrap();
        a
    }

    #[test]
    fn allocates_after_the_reserved_pages() {
        let mut a = allocator(1024, 10);
        assert_eq!(a.free_pages(), 1014);
        assert_eq!(a.alloc(1), Ok(10));
        assert_eq!(a.alloc(3), Ok(11));
        assert_eq!(a.free_pages(), 1010);
        assert_eq!(a.total_pages(), 1024);
    }

    #[test]
    fn runs_never_cross_a_chunk() {
        let mut a = allocator(1024, 500);
        assert_eq!(a.alloc(20), Ok(512));
        assert_eq!(a.alloc(12), Ok(500));
    }

    #[test]
    fn freed_pages_are_reused_and_double_free_is_refused() {
        let mut a = allocator(1024, 0);
        let p = a.alloc(4).unwrap();
        a.free(p, 4).unwrap();
        assert_eq!(a.free(p, 1), Err(FrameError::NotAllocated));
        assert_eq!(a.alloc(2), Ok(p));
        assert_eq!(a.free(1023, 2), Err(FrameError::InvalidRange));
        assert_eq!(a.free(usize::MAX, 2), Err(FrameError::InvalidRange));
        assert_eq!(a.free(0, 0), Err(FrameError::InvalidRange));
    }

    #[test]
    fn exhaustion_and_bad_sizes() {
        let mut a = allocator(512, 0);
        assert_eq!(a.alloc(0), Err(FrameError::InvalidRange));
        assert_eq!(a.alloc(513), Err(FrameError::InvalidRange));
        for _ in 0..8 {
            a.alloc(64).unwrap();
        }
        assert_eq!(a.alloc(1), Err(FrameError::OutOfMemory));
        a.free(100, 1).unwrap();
        assert_eq!(a.alloc(2), Err(FrameError::OutOfMemory));
        assert_eq!(a.alloc(1), Ok(100));
    }

    #[test]
    fn free_pages_without_a_long_enough_run_are_out_of_memory() {
        let mut a = allocator(512, 0);
        for _ in 0..512 {
            a.alloc(1).unwrap();
        }
        a.free(0, 1).unwrap();
        a.free(2, 1).unwrap();
        assert_eq!(a.free_pages(), 2);
        assert_eq!(a.alloc(2), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn fragmented_pool_finds_a_later_run() {
        let mut a = allocator(1024, 0);
        for _ in 0..512 {
            a.alloc(1).unwrap();
        }
        for p in (0..512).step_by(2) {
            a.free(p, 1).unwrap();
        }
        assert_eq!(a.alloc(2), Ok(512));
    }

    #[test]
    fn init_validates() {
        let mut a = Box::new(FrameAllocator::default());
        assert_eq!(a.init(MAX_PAGES + 1, 0), Err(FrameError::InvalidRange));
        assert_eq!(a.init(10, 11), Err(FrameError::InvalidRange));
        assert_eq!(a.alloc(1), Err(FrameError::OutOfMemory));
    }
}
