//! Starting MicroV beneath the firmware on this CPU: reserved memory for
//! the pool, the landing page and the log; the pool laid out
//! (`layout::build`); the CPU's state captured; in through the trampoline.
//! On success all of it stays reserved for good (the OS never sees it as
//! RAM); on failure every page goes back.

use alloc::format;
use alloc::string::String;
use core::ptr::NonNull;
use core::time::Duration;

use microv_abi::launch::{CpuLanding, PAGE_SIZE};
use microv_abi::StartError;
use microv_arch::cpuid::LEAF_HYPERVISOR;
use microv_arch::instr;
use microv_image::FlatImage;
use uefi::boot::{self, AllocateType, MemoryType};

use super::app::Report;
use super::capture::capture;
use super::tramp;
use crate::layout::{self, Inputs};
use crate::pool;

/// Pages of the log ring (as the Linux driver's, 16 KiB).
const LOG_PAGES: u64 = 4;
/// How long the TSC is watched to learn its rate.
const TSC_SAMPLE: Duration = Duration::from_millis(10);
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Pages the firmware allocated for MicroV (reserved memory, or runtime
/// code for the trampoline), given back when dropped unless kept.
struct Reserved {
    start: NonNull<u8>,
    pages: usize,
}

impl Reserved {
    /// `pages` zeroed pages of type `ty` below the extension's address
    /// window (identity-mapped pages of MicroV's must keep out of it:
    /// `layout::EXTENSION_WINDOW`).
    fn pages(pages: u64, ty: MemoryType, what: &str) -> Result<Reserved, String> {
        let count = usize::try_from(pages).map_err(|_| format!("{what}: too large"))?;
        let below = AllocateType::MaxAddress(layout::EXTENSION_WINDOW.start - 1);
        let start = boot::allocate_pages(below, ty, count)
            .map_err(|e| format!("cannot allocate {what}: {}", e.status()))?;
        let r = Reserved { start, pages: count };
        // SAFETY: the pages were just allocated for this and are mapped
        // (the firmware identity-maps memory).
        unsafe { core::ptr::write_bytes(r.start.as_ptr(), 0, count * PAGE_SIZE as usize) };
        Ok(r)
    }

    /// The pool: whole 2 MiB chunks (one chunk's worth of pages more is
    /// allocated, and the unaligned head and tail go back at once).
    fn pool(pool_bytes: u64) -> Result<Reserved, String> {
        let pages = pool::pages_to_allocate(pool_bytes);
        let count = usize::try_from(pages).map_err(|_| "pool too large")?;
        let base = boot::allocate_pages(AllocateType::AnyPages, MemoryType::RESERVED, count)
            .map_err(|e| format!("cannot allocate a pool of {} MiB: {}", pool_bytes >> 20, e.status()))?;
        let addr = base.as_ptr() as u64;
        let Some(t) = pool::trim(addr, pages, pool_bytes) else {
            // SAFETY: exactly the pages just allocated, unused.
            let _ = unsafe { boot::free_pages(base, count) };
            return Err(format!("the firmware allocated an unusable run at {addr:#x}"));
        };
        give_back(addr, t.head_pages);
        give_back(t.pool_start + pool_bytes, t.tail_pages);
        let start = NonNull::new(t.pool_start as *mut u8).ok_or("the pool would start at 0")?;
        let r = Reserved {
            start,
            pages: (pool_bytes / pool::PAGE) as usize,
        };
        // SAFETY: the aligned pool, inside the allocation, mapped.
        unsafe { core::ptr::write_bytes(r.start.as_ptr(), 0, pool_bytes as usize) };
        Ok(r)
    }

    fn addr(&self) -> u64 {
        self.start.as_ptr() as u64
    }

    fn bytes(&self) -> u64 {
        self.pages as u64 * PAGE_SIZE
    }

    /// MicroV runs on these pages now: they stay reserved.
    fn keep(self) {
        core::mem::forget(self);
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // SAFETY: these pages were allocated by `pages`/`pool` and nothing
        // uses them once dropped (MicroV did not start on them).
        let _ = unsafe { boot::free_pages(self.start, self.pages) };
    }
}

/// Frees pages of an allocation that lie outside the aligned pool.
fn give_back(at: u64, pages: u64) {
    if let (Some(ptr), Ok(n)) = (NonNull::new(at as *mut u8), usize::try_from(pages)) {
        if n != 0 {
            // SAFETY: allocated above, outside the aligned pool, never used.
            let _ = unsafe { boot::free_pages(ptr, n) };
        }
    }
}

/// Starts MicroV on this CPU beneath the firmware.
pub(super) fn start(
    kernel: &FlatImage,
    extension: &FlatImage,
    ram: &[[u64; 2]],
    pool_bytes: u64,
    report: &mut Report,
) -> Result<(), String> {
    let pool = Reserved::pool(pool_bytes)?;
    let landing = Reserved::pages(1, MemoryType::RESERVED, "a landing page")?;
    let log = Reserved::pages(LOG_PAGES, MemoryType::RESERVED, "the log")?;
    // The trampoline runs from a copy the OS keeps too (runtime-services
    // code: mapped executable by the firmware, never reused by the OS).
    let tramp = Reserved::pages(1, MemoryType::RUNTIME_SERVICES_CODE, "the trampoline")?;
    report.say(&format!(
        "pool: {} MiB of reserved memory at {:#x}",
        pool_bytes >> 20,
        pool.addr()
    ));
    let code = tramp::microv_tramp_start as *const () as u64;
    let code_end = tramp::microv_tramp_end as *const () as u64;
    if !code.is_multiple_of(PAGE_SIZE) || code_end.saturating_sub(code) > PAGE_SIZE {
        return Err("microv.efi's trampoline is not one aligned page (a build problem)".into());
    }
    // SAFETY: microv.efi's own code page (mapped, never written) into the
    // page just allocated for it; they do not overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(code as *const u8, tramp.start.as_ptr(), PAGE_SIZE as usize)
    };
    let tramp_va = tramp.addr();
    let at = |symbol: u64| tramp_va + (symbol - code);
    // SAFETY: the copy just made, a whole page, kept unchanged.
    let trampoline = unsafe { core::slice::from_raw_parts(tramp.start.as_ptr(), PAGE_SIZE as usize) };
    let words_len = (pool.bytes() / 8) as usize;
    // SAFETY: the pool's pages are ours alone (allocated above, zeroed,
    // identity-mapped) and nothing else refers to them while `words` lives.
    let words = unsafe { core::slice::from_raw_parts_mut(pool.start.as_ptr().cast::<u64>(), words_len) };
    let mut memory = layout::Pool::new(words, pool.addr()).map_err(|e| format!("pool: {e:?}"))?;
    let landing_va = landing.addr();
    let built = layout::build(
        &mut memory,
        &Inputs {
            kernel,
            extension,
            landing: &[landing_va],
            trampoline,
            trampoline_va: tramp_va,
            log: log.addr(),
            log_size: log.bytes(),
            ram,
            tsc_khz: tsc_khz(),
            promote_entry: at(tramp::microv_promote as *const () as u64),
            flags: 0,
        },
    )
    .map_err(|e| format!("cannot lay out the pool: {e:?}"))?;
    let page = landing.start.as_ptr().cast::<CpuLanding>();
    // SAFETY: the landing page is ours, a whole zeroed page (CpuLanding
    // fits one), and nothing else refers to it.
    unsafe { page.write(layout::landing(0, &built, kernel)) };
    // SAFETY: the copy's `microv_enter`, at the same offset in its page as
    // in microv.efi's: the trampoline has no absolute references.
    let enter_fn: unsafe extern "C" fn(*mut CpuLanding) -> u64 =
        unsafe { core::mem::transmute(at(tramp::microv_enter as *const () as u64) as usize) };
    let status = enter(page, enter_fn);
    if status != 0 {
        // SAFETY: the microkernel has left the page (it came back natively).
        let detail = unsafe { (*page).detail };
        let why = StartError::from_u32(status as u32)
            .map(|e| format!("{} ({}); detail {detail:#x}", e.message(), e.advice()))
            .unwrap_or_else(|| format!("MicroV failed with code {status}; detail {detail:#x}"));
        return Err(why);
    }
    pool.keep();
    landing.keep();
    log.keep();
    tramp.keep();
    let signature = signature();
    report.say(&format!(
        "MicroV runs beneath the firmware on this CPU (CPUID 0x40000000: {signature})"
    ));
    Ok(())
}

/// Captures this CPU's state into the landing page and enters MicroV, with
/// interrupts off throughout; the status (0: running).
fn enter(page: *mut CpuLanding, microv_enter: unsafe extern "C" fn(*mut CpuLanding) -> u64) -> u64 {
    let rflags: u64;
    // SAFETY: reads RFLAGS and clears IF: the firmware's timer must not run
    // between the capture and the entry.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) rflags) };
    // SAFETY: the landing page is ours (see `start`); no other reference.
    capture(unsafe { &mut (*page).captured });
    // SAFETY: the landing page is complete and the pool laid out for it;
    // the trampoline returns here natively or as the root VM.
    let status = unsafe { microv_enter(page) };
    if rflags & RFLAGS_IF != 0 {
        // SAFETY: restores the firmware's interrupt flag.
        unsafe { core::arch::asm!("sti") };
    }
    status
}

/// The TSC's rate in kHz, from watching it across a firmware stall.
fn tsc_khz() -> u64 {
    let t0 = instr::rdtsc();
    boot::stall(TSC_SAMPLE);
    let t1 = instr::rdtsc();
    t1.wrapping_sub(t0) / TSC_SAMPLE.as_millis() as u64
}

/// CPUID 0x40000000's signature as text.
fn signature() -> String {
    let r = instr::cpuid(LEAF_HYPERVISOR, 0);
    let mut bytes = [0u8; 12];
    for (chunk, word) in bytes.chunks_mut(4).zip([r.ebx, r.ecx, r.edx]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
