//! The pool as the microkernel expects it at entry, built by microv.efi:
//! the layout the Linux driver builds before a late launch
//! (`loaders/linux/microv_main.c`, `prepare`), from one contiguous,
//! chunk-aligned run of memory.
//!
//! From pool offset 0: the microkernel image, the boot info (two pages,
//! where the microkernel looks for it: right after its own sealed image),
//! one kernel stack per CPU, the extension image, the boot page tables, a
//! private copy of the trampoline; the rest is the microkernel's
//! (`BootInfo::free_offset`). The boot tables map the pool linearly at
//! `POOL_VA` with 2 MiB pages, and the trampoline copy, the landing pages
//! and the log at the addresses the firmware's identity map gives them, so
//! the CR3 switch in the trampoline runs on mapped code.

use microv_abi::launch::{
    BootInfo, CpuLanding, LoadedImage, StartMode, BOOT_INFO_MAGIC, CHUNK_SIZE, EXTENSION_BASE,
    EXTENSION_MAX_SIZE, KERNEL_STACK_SIZE, LANDING_MAGIC, LAUNCH_VERSION, MAX_CHUNKS, MAX_CPUS,
    MAX_RAM_RANGES, MAX_SEGMENTS, POOL_VA,
};
use microv_abi::syscall::EXTENSION_BOOT_INFO;
use microv_arch::mapper::{self, MapError, TableMemory};
use microv_arch::paging::{self, NO_EXECUTE, PAGE_SIZE, USER, WRITABLE};
use microv_image::FlatImage;
use zerocopy::{FromBytes, IntoBytes};

/// Why the pool could not be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The pool is too small for the images, the tables and one CPU's
    /// structures (the microkernel needs a chunk beyond them).
    PoolTooSmall,
    /// Not a whole number of chunks, too many, or not chunk-aligned.
    BadPool,
    /// No CPU, more than MicroV supports, or not one landing page each.
    BadCpuCount,
    /// More RAM ranges than the boot info holds.
    TooManyRamRanges,
    /// An image larger than its segment table or address space allows.
    BadImage,
    /// A page-table mapping failed at this address (an address clash).
    Map(MapError, u64),
    /// An identity-mapped page (trampoline, landing page, log) lies where
    /// the extension's address space is ([`EXTENSION_WINDOW`]).
    InExtensionWindow(u64),
}

/// The extension's low user window, from its read-only boot info page up
/// to the end of its image's room: identity mappings there would clash
/// with the microkernel's mappings for ring 3.
pub const EXTENSION_WINDOW: core::ops::Range<u64> =
    EXTENSION_BOOT_INFO..EXTENSION_BASE + EXTENSION_MAX_SIZE;

/// The pool's memory while microv.efi builds it: quadwords, so table pages
/// are reached without casts; `pa` is where its first byte is.
#[derive(Debug)]
pub struct Pool<'a> {
    words: &'a mut [u64],
    pa: u64,
    used: u64,
}

impl<'a> Pool<'a> {
    /// `words` start at the chunk-aligned address `pa`; they should be
    /// zero (the parts no image or table fills are left as they are).
    pub fn new(words: &'a mut [u64], pa: u64) -> Result<Pool<'a>, LayoutError> {
        let bytes = words.len() as u64 * 8;
        let chunks = bytes / CHUNK_SIZE;
        if !bytes.is_multiple_of(CHUNK_SIZE)
            || chunks == 0
            || chunks > MAX_CHUNKS as u64
            || !pa.is_multiple_of(CHUNK_SIZE)
        {
            return Err(LayoutError::BadPool);
        }
        Ok(Pool { words, pa, used: 0 })
    }

    fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// Takes `bytes` (rounded up to pages) from the pool; its offset.
    fn reserve(&mut self, bytes: u64) -> Result<u64, LayoutError> {
        let size = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let offset = self.used;
        let end = offset.checked_add(size).ok_or(LayoutError::PoolTooSmall)?;
        if end > self.size() {
            return Err(LayoutError::PoolTooSmall);
        }
        self.used = end;
        Ok(offset)
    }

    fn bytes_mut(&mut self, offset: u64, len: usize) -> Result<&mut [u8], LayoutError> {
        let start = usize::try_from(offset).map_err(|_| LayoutError::PoolTooSmall)?;
        let end = start.checked_add(len).ok_or(LayoutError::PoolTooSmall)?;
        self.words
            .as_mut_bytes()
            .get_mut(start..end)
            .ok_or(LayoutError::PoolTooSmall)
    }

    fn copy_in(&mut self, offset: u64, bytes: &[u8]) -> Result<(), LayoutError> {
        self.bytes_mut(offset, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }
}

impl TableMemory for Pool<'_> {
    fn table(&mut self, pa: u64) -> Option<&mut [u64; paging::ENTRIES]> {
        let offset = pa.checked_sub(self.pa)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let first = usize::try_from(offset / 8).ok()?;
        let words = self
            .words
            .get_mut(first..first.checked_add(paging::ENTRIES)?)?;
        words.try_into().ok()
    }

    fn alloc_table(&mut self) -> Option<u64> {
        let pa = self.pa + self.reserve(PAGE_SIZE).ok()?;
        // Zeroed here, whatever the page held: a table with a stale entry
        // would map something nobody asked for.
        self.table(pa)?.fill(0);
        Some(pa)
    }
}

/// What the pool holds besides the images, all found by microv.efi.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub kernel: &'a FlatImage,
    pub extension: &'a FlatImage,
    /// Each CPU's landing page (identity-mapped, outside the pool).
    pub landing: &'a [u64],
    /// The trampoline's pages as they lie in microv.efi, and where.
    pub trampoline: &'a [u8],
    pub trampoline_va: u64,
    /// The log ring (identity-mapped, outside the pool) and its size.
    pub log: u64,
    pub log_size: u64,
    pub ram: &'a [[u64; 2]],
    pub tsc_khz: u64,
    /// Where a CPU goes when MicroV leaves it (promotion).
    pub promote_entry: u64,
    pub flags: u64,
}

/// Where the built pool's parts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub boot_info_offset: u64,
    pub stacks_offset: u64,
    /// The boot page tables' root, for each landing page's `kernel_cr3`.
    pub pml4_pa: u64,
    pub free_offset: u64,
}

/// Lays out the pool for an early boot and fills its boot info.
pub fn build(pool: &mut Pool, inputs: &Inputs) -> Result<Layout, LayoutError> {
    let cpus = inputs.landing.len();
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(LayoutError::BadCpuCount);
    }
    if inputs.ram.len() > MAX_RAM_RANGES {
        return Err(LayoutError::TooManyRamRanges);
    }
    let kernel_offset = pool.reserve(inputs.kernel.bytes.len() as u64)?;
    pool.copy_in(kernel_offset, &inputs.kernel.bytes)?;
    let boot_info_offset = pool.reserve(2 * PAGE_SIZE)?;
    let stacks_offset = pool.reserve(KERNEL_STACK_SIZE * cpus as u64)?;
    let extension_offset = pool.reserve(inputs.extension.bytes.len() as u64)?;
    pool.copy_in(extension_offset, &inputs.extension.bytes)?;

    let tramp_pages = (inputs.trampoline.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let identity = [(inputs.trampoline_va, tramp_pages), (inputs.log, inputs.log_size)];
    let landings = inputs.landing.iter().map(|&l| (l, PAGE_SIZE));
    for (va, size) in identity.into_iter().chain(landings) {
        let end = va.saturating_add(size);
        if va < EXTENSION_WINDOW.end && end > EXTENSION_WINDOW.start {
            return Err(LayoutError::InExtensionWindow(va));
        }
    }

    let pml4_pa = pool.alloc_table().ok_or(LayoutError::PoolTooSmall)?;
    // Tables in the lower half also lead to the extension's user pages,
    // which the microkernel maps under them later: they allow ring 3, and
    // each leaf decides (the loader's leaves never do).
    let map =
        |pool: &mut Pool, va: u64, pa: u64, size: u64, flags: u64| -> Result<(), LayoutError> {
            let tables = if va < POOL_VA { WRITABLE | USER } else { WRITABLE };
            let mut at = 0;
            while at < size {
                let large = (va + at).is_multiple_of(CHUNK_SIZE)
                    && (pa + at).is_multiple_of(CHUNK_SIZE)
                    && size - at >= CHUNK_SIZE;
                let (level, step) = if large {
                    (2, CHUNK_SIZE)
                } else {
                    (1, PAGE_SIZE)
                };
                mapper::map(pool, pml4_pa, va + at, pa + at, level, flags, tables)
                    .map_err(|e| LayoutError::Map(e, va + at))?;
                at += step;
            }
            Ok(())
        };
    let pool_pa = pool.pa;
    let pool_size = pool.size();
    map(pool, POOL_VA, pool_pa, pool_size, WRITABLE)?;
    let tramp_copy = pool.reserve(inputs.trampoline.len() as u64)?;
    pool.copy_in(tramp_copy, inputs.trampoline)?;
    map(
        pool,
        inputs.trampoline_va,
        pool_pa + tramp_copy,
        tramp_pages,
        0,
    )?;
    for &landing in inputs.landing {
        map(pool, landing, landing, PAGE_SIZE, WRITABLE | NO_EXECUTE)?;
    }
    map(
        pool,
        inputs.log,
        inputs.log,
        inputs.log_size,
        WRITABLE | NO_EXECUTE,
    )?;

    let free_offset = pool.used;
    if free_offset + CHUNK_SIZE > pool_size {
        return Err(LayoutError::PoolTooSmall);
    }
    let mut bi = BootInfo::zeroed();
    bi.magic = BOOT_INFO_MAGIC;
    bi.launch_version = LAUNCH_VERSION;
    bi.start_mode = StartMode::EarlyBoot as u32;
    bi.cpu_count = cpus as u32;
    bi.chunk_count = (pool_size / CHUNK_SIZE) as u32;
    for (i, chunk) in bi
        .chunks
        .iter_mut()
        .take(bi.chunk_count as usize)
        .enumerate()
    {
        *chunk = pool_pa + i as u64 * CHUNK_SIZE;
    }
    bi.kernel = loaded(inputs.kernel, kernel_offset)?;
    bi.extension = loaded(inputs.extension, extension_offset)?;
    bi.free_offset = free_offset;
    for (slot, &landing) in bi.landing.iter_mut().zip(inputs.landing) {
        *slot = landing;
    }
    bi.log = inputs.log;
    bi.log_size = inputs.log_size;
    bi.flags = inputs.flags;
    bi.stacks_offset = stacks_offset;
    bi.promote_entry = inputs.promote_entry;
    bi.ram_count = inputs.ram.len() as u64;
    for (slot, range) in bi.ram.iter_mut().zip(inputs.ram) {
        *slot = *range;
    }
    bi.tsc_khz = inputs.tsc_khz;
    pool.copy_in(boot_info_offset, bi.as_bytes())?;
    Ok(Layout {
        boot_info_offset,
        stacks_offset,
        pml4_pa,
        free_offset,
    })
}

fn loaded(image: &FlatImage, pool_offset: u64) -> Result<LoadedImage, LayoutError> {
    if image.segments.len() > MAX_SEGMENTS {
        return Err(LayoutError::BadImage);
    }
    let mut out = LoadedImage::zeroed();
    out.pool_offset = pool_offset;
    out.size = image.bytes.len() as u64;
    out.base = image.base;
    out.entry = image.entry;
    out.segment_count = image.segments.len() as u64;
    for (slot, s) in out.segments.iter_mut().zip(&image.segments) {
        *slot = *s;
    }
    Ok(out)
}

/// A CPU's landing page before it enters: who it is and where the
/// microkernel is.
pub fn landing(index: u32, layout: &Layout, kernel: &FlatImage) -> CpuLanding {
    let mut l = CpuLanding::zeroed();
    l.magic = LANDING_MAGIC;
    l.launch_version = LAUNCH_VERSION;
    l.os_cpu = index;
    l.index = index;
    l.kernel_cr3 = layout.pml4_pa;
    l.kernel_entry = kernel.entry;
    l
}

/// The boot info as [`build`] wrote it (for checks and tests).
pub fn boot_info(pool: &mut Pool, layout: &Layout) -> Option<BootInfo> {
    let len = core::mem::size_of::<BootInfo>();
    let bytes = pool.bytes_mut(layout.boot_info_offset, len).ok()?;
    BootInfo::read_from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use microv_image::{flatten, testing, ImageKind};

    const POOL_PA: u64 = 0x3e00_0000;
    const TRAMP_VA: u64 = 0x7f00_1000;
    const LOG: u64 = 0x7f10_0000;
    const LANDING: [u64; 2] = [0x7f20_0000, 0x7f20_1000];

    fn images() -> (FlatImage, FlatImage) {
        let k = flatten(&testing::sample_image(ImageKind::Kernel), ImageKind::Kernel).unwrap();
        let e = flatten(
            &testing::sample_image(ImageKind::Extension),
            ImageKind::Extension,
        )
        .unwrap();
        (k, e)
    }

    fn inputs<'a>(
        k: &'a FlatImage,
        e: &'a FlatImage,
        tramp: &'a [u8],
        landing: &'a [u64],
    ) -> Inputs<'a> {
        Inputs {
            kernel: k,
            extension: e,
            landing,
            trampoline: tramp,
            trampoline_va: TRAMP_VA,
            log: LOG,
            log_size: 4 * PAGE_SIZE,
            ram: &[[0, 0x9_ffff], [0x10_0000, 0x3dff_ffff]],
            tsc_khz: 1_000_000,
            promote_entry: 0x7f00_1080,
            flags: 0,
        }
    }

    #[test]
    fn the_pool_holds_what_the_microkernel_looks_for() {
        let (k, e) = images();
        let tramp = vec![0xcc; PAGE_SIZE as usize];
        let mut words = vec![0u64; (4 * CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        let layout = build(&mut pool, &inputs(&k, &e, &tramp, &LANDING)).unwrap();
        let bi = boot_info(&mut pool, &layout).unwrap();
        assert!(bi.is_sane());
        assert_eq!(bi.start_mode, StartMode::EarlyBoot as u32);
        assert_eq!(
            layout.boot_info_offset,
            k.bytes.len() as u64,
            "right after the microkernel"
        );
        assert_eq!((bi.cpu_count, bi.chunk_count), (2, 4));
        assert_eq!(bi.chunks[3], POOL_PA + 3 * CHUNK_SIZE);
        assert_eq!(bi.stacks_offset, layout.boot_info_offset + 2 * PAGE_SIZE);
        assert_eq!(
            bi.extension.pool_offset,
            bi.stacks_offset + 2 * KERNEL_STACK_SIZE
        );
        assert_eq!((bi.kernel.pool_offset, bi.kernel.entry), (0, k.entry));
        assert_eq!(bi.extension.segment_count, e.segments.len() as u64);
        assert_eq!((bi.ram_count, bi.ram[1]), (2, [0x10_0000, 0x3dff_ffff]));
        assert_eq!(bi.landing[..2], LANDING);
        assert_eq!(bi.free_offset, layout.free_offset);
        let bytes = words.as_bytes();
        assert_eq!(&bytes[..k.bytes.len()], &k.bytes[..]);
        let ext = bi.extension.pool_offset as usize;
        assert_eq!(&bytes[ext..ext + e.bytes.len()], &e.bytes[..]);
    }

    #[test]
    fn the_boot_tables_map_pool_trampoline_landings_and_log() {
        let (k, e) = images();
        let tramp: Vec<u8> = (0..PAGE_SIZE as usize).map(|i| i as u8).collect();
        let mut words = vec![0u64; (4 * CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        let layout = build(&mut pool, &inputs(&k, &e, &tramp, &LANDING)).unwrap();
        let root = layout.pml4_pa;
        let t = |pool: &mut Pool, va| mapper::translate(pool, root, va);
        let (pa, flags) = t(&mut pool, POOL_VA + CHUNK_SIZE + 0x1234).unwrap();
        assert_eq!(pa, POOL_PA + CHUNK_SIZE + 0x1234);
        assert!(flags & WRITABLE != 0 && flags & NO_EXECUTE == 0);
        let (copy, flags) = t(&mut pool, TRAMP_VA).unwrap();
        assert!(
            (POOL_PA..POOL_PA + 4 * CHUNK_SIZE).contains(&copy),
            "a private copy in the pool"
        );
        assert_eq!(
            flags & (WRITABLE | NO_EXECUTE),
            0,
            "read-only and executable"
        );
        let at = (copy - POOL_PA) as usize;
        assert_eq!(&words.as_bytes()[at..at + tramp.len()], &tramp[..]);
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        for va in [LANDING[0], LANDING[1], LOG, LOG + 3 * PAGE_SIZE] {
            let (pa, flags) = t(&mut pool, va).unwrap();
            assert_eq!(pa, va, "identity");
            assert_eq!(flags & (WRITABLE | NO_EXECUTE), WRITABLE | NO_EXECUTE);
        }
        assert_eq!(t(&mut pool, LOG + 4 * PAGE_SIZE), None);
    }

    #[test]
    fn landing_pages_name_the_cpu_and_the_microkernel() {
        let (k, _) = images();
        let layout = Layout {
            boot_info_offset: 0,
            stacks_offset: 0,
            pml4_pa: 0x1234_5000,
            free_offset: 0,
        };
        let l = landing(1, &layout, &k);
        assert_eq!((l.magic, l.index, l.os_cpu), (LANDING_MAGIC, 1, 1));
        assert_eq!((l.kernel_cr3, l.kernel_entry), (0x1234_5000, k.entry));
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let (k, e) = images();
        let tramp = vec![0; PAGE_SIZE as usize];
        let mut one = vec![0u64; (CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut one, POOL_PA).unwrap();
        assert_eq!(
            build(&mut pool, &inputs(&k, &e, &tramp, &LANDING)),
            Err(LayoutError::PoolTooSmall),
            "no chunk left for the microkernel"
        );
        let mut words = vec![0u64; (2 * CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        assert_eq!(
            build(&mut pool, &inputs(&k, &e, &tramp, &[])),
            Err(LayoutError::BadCpuCount)
        );
        let many = vec![0x7f20_0000; MAX_CPUS + 1];
        assert_eq!(
            build(&mut pool, &inputs(&k, &e, &tramp, &many)),
            Err(LayoutError::BadCpuCount)
        );
        let ranges = vec![[0, 1]; MAX_RAM_RANGES + 1];
        let mut too_many = inputs(&k, &e, &tramp, &LANDING);
        too_many.ram = &ranges;
        assert_eq!(
            build(&mut pool, &too_many),
            Err(LayoutError::TooManyRamRanges)
        );
        let mut clash = inputs(&k, &e, &tramp, &LANDING);
        clash.log = LANDING[0];
        let mut words = vec![0u64; (2 * CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        assert_eq!(
            build(&mut pool, &clash),
            Err(LayoutError::Map(MapError::AlreadyMapped, LANDING[0]))
        );
    }

    #[test]
    fn identity_pages_keep_out_of_the_extensions_window() {
        let (k, e) = images();
        let tramp = vec![0; PAGE_SIZE as usize];
        let mut words = vec![0u64; (2 * CHUNK_SIZE / 8) as usize];
        for landing in [
            EXTENSION_BOOT_INFO,
            EXTENSION_BASE + 0x10_0000,
            EXTENSION_WINDOW.end - PAGE_SIZE,
        ] {
            let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
            assert_eq!(
                build(&mut pool, &inputs(&k, &e, &tramp, &[landing])),
                Err(LayoutError::InExtensionWindow(landing))
            );
        }
        let mut log_below = inputs(&k, &e, &tramp, &LANDING);
        log_below.log = EXTENSION_BOOT_INFO - 2 * PAGE_SIZE;
        log_below.log_size = 4 * PAGE_SIZE;
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        assert_eq!(
            build(&mut pool, &log_below),
            Err(LayoutError::InExtensionWindow(log_below.log))
        );
        let landing = [EXTENSION_BOOT_INFO - PAGE_SIZE];
        let mut below = inputs(&k, &e, &tramp, &landing);
        below.log = EXTENSION_WINDOW.end;
        words.fill(0);
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        let layout = build(&mut pool, &below).unwrap();
        // The tables above the low identity pages let ring 3 through to
        // pages of its own; the loader's own leaves stay supervisor-only.
        let (_, flags) = mapper::translate(&mut pool, layout.pml4_pa, landing[0]).unwrap();
        assert_eq!(flags & USER, 0);
        let pml4 = *pool.table(layout.pml4_pa).unwrap();
        assert_ne!(pml4[0] & USER, 0, "the low half's tables allow ring 3");
        assert_eq!(pml4[paging::index(POOL_VA, 4)] & USER, 0, "the pool's do not");
    }

    #[test]
    fn tables_are_zeroed_whatever_the_pool_held() {
        let (k, e) = images();
        let tramp = vec![0; PAGE_SIZE as usize];
        let mut words = vec![u64::MAX; (4 * CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        let layout = build(&mut pool, &inputs(&k, &e, &tramp, &LANDING)).unwrap();
        let (pa, _) = mapper::translate(&mut pool, layout.pml4_pa, LANDING[1]).unwrap();
        assert_eq!(pa, LANDING[1]);
        assert_eq!(mapper::translate(&mut pool, layout.pml4_pa, LANDING[1] + PAGE_SIZE), None);
    }

    #[test]
    fn a_pool_is_whole_aligned_chunks() {
        let mut words = vec![0u64; (CHUNK_SIZE / 8) as usize];
        assert!(Pool::new(&mut words, POOL_PA + PAGE_SIZE).is_err());
        let mut short = vec![0u64; (CHUNK_SIZE / 8) as usize - 1];
        assert!(Pool::new(&mut short, POOL_PA).is_err());
        assert!(Pool::new(&mut [], POOL_PA).is_err());
        let mut words = vec![0u64; (CHUNK_SIZE / 8) as usize];
        let mut pool = Pool::new(&mut words, POOL_PA).unwrap();
        assert_eq!(pool.table(POOL_PA + 8), None, "not a page");
        assert_eq!(pool.table(POOL_PA - PAGE_SIZE), None, "below the pool");
        assert!(pool.table(POOL_PA + CHUNK_SIZE - PAGE_SIZE).is_some());
        assert_eq!(pool.table(POOL_PA + CHUNK_SIZE), None, "past the pool");
    }
}
