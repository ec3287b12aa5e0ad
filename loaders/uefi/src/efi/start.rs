//! Starting MicroV beneath the firmware on this CPU: reserved memory for
//! the pool, the landing page and the log; the pool laid out
//! (`layout::build`); the CPU's state captured; in through the trampoline.
//! On success all of it stays reserved for good (the OS never sees it as
//! RAM); on failure every page goes back.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use microv_abi::launch::{boot_flags, CpuLanding, PAGE_SIZE};
use microv_abi::hypercall::{self, Hypercall};
use microv_abi::StartError;
use microv_arch::cpuid::LEAF_HYPERVISOR;
use microv_arch::instr;
use microv_image::FlatImage;
use uefi::boot::{self, MemoryType};

use super::app::Report;
use super::capture::capture;
use super::reserved::Reserved;
use super::tramp;
use crate::config::Config;
use crate::layout::{self, Inputs};

/// Pages of the log ring (as the Linux driver's, 16 KiB).
const LOG_PAGES: u64 = 4;
/// How long the TSC is watched to learn its rate.
const TSC_SAMPLE: Duration = Duration::from_millis(10);
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// What the application processors need from the bootstrap CPU's start:
/// their landing pages (index 1 on) and the trampoline copy's entry.
pub(super) struct ForAps<'a> {
    pub landings: &'a [u64],
    pub enter: u64,
    pub tsc_khz: u64,
}

/// Starts MicroV on this CPU beneath the firmware, laid out for `cpus`
/// CPUs; `before_entry` prepares the others (their landing pages are
/// ready) and its failure keeps MicroV from starting at all.
pub(super) fn start<T>(
    kernel: &FlatImage,
    extension: &FlatImage,
    ram: &[[u64; 2]],
    config: &Config,
    cpus: usize,
    report: &mut Report,
    before_entry: impl FnOnce(&ForAps) -> Result<T, String>,
) -> Result<T, String> {
    let pool_bytes = config.pool_bytes;
    let pool = Reserved::pool(pool_bytes)?;
    let landing = Reserved::pages(cpus as u64, MemoryType::RESERVED, "the landing pages")?;
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
    let trampoline =
        unsafe { core::slice::from_raw_parts(tramp.start.as_ptr(), PAGE_SIZE as usize) };
    let words_len = (pool.bytes() / 8) as usize;
    // SAFETY: the pool's pages are ours alone (allocated above, zeroed,
    // identity-mapped) and nothing else refers to them while `words` lives.
    let words =
        unsafe { core::slice::from_raw_parts_mut(pool.start.as_ptr().cast::<u64>(), words_len) };
    let mut memory = layout::Pool::new(words, pool.addr()).map_err(|e| format!("pool: {e:?}"))?;
    let landings: Vec<u64> = (0..cpus as u64)
        .map(|i| landing.addr() + i * PAGE_SIZE)
        .collect();
    let tsc_khz = tsc_khz();
    let built = layout::build(
        &mut memory,
        &Inputs {
            kernel,
            extension,
            landing: &landings,
            trampoline,
            trampoline_va: tramp_va,
            log: log.addr(),
            log_size: log.bytes(),
            ram,
            tsc_khz,
            promote_entry: at(tramp::microv_promote as *const () as u64),
            flags: config.fail_cpu.map_or(0, |n| {
                boot_flags::FAIL_CPU | (u64::from(n) << boot_flags::FAIL_CPU_SHIFT)
            }),
        },
    )
    .map_err(|e| format!("cannot lay out the pool: {e:?}"))?;
    for (index, &va) in landings.iter().enumerate() {
        // SAFETY: the landing pages are ours, whole zeroed pages (CpuLanding
        // fits one), and nothing else refers to them yet.
        unsafe { (va as *mut CpuLanding).write(layout::landing(index as u32, &built, kernel)) };
    }
    let enter_va = at(tramp::microv_enter as *const () as u64);
    let prepared = before_entry(&ForAps {
        landings: landings.get(1..).unwrap_or_default(),
        enter: enter_va,
        tsc_khz,
    })?;
    let page = landing.start.as_ptr().cast::<CpuLanding>();
    // SAFETY: the copy's `microv_enter`, at the same offset in its page as
    // in microv.efi's: the trampoline has no absolute references.
    let enter_fn: unsafe extern "C" fn(*mut CpuLanding) -> u64 =
        unsafe { core::mem::transmute(enter_va as usize) };
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
    Ok(prepared)
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

/// True if MicroV already runs beneath this CPU (an earlier microv.efi,
/// say one the boot entry after it started again).
pub(super) fn microv_runs() -> bool {
    // No String here: this also runs after the OS exited boot services,
    // when nothing can be allocated.
    &signature_bytes() == b"MicroVMicroV"
}

/// Stops MicroV on this CPU, the only one in it before the OS exits boot
/// services (when nothing could be booted after it: the firmware must not
/// go on with one CPU beneath MicroV and the others native). Its memory
/// stays reserved until the machine restarts.
pub(super) fn stop() -> Result<(), String> {
    // handle.open takes the ABI version the caller speaks.
    let (status, handle) = hypercall(Hypercall::HandleOpen, hypercall::ABI_VERSION);
    if status != 0 {
        return Err(format!("handle.open failed with status {status}"));
    }
    let (status, _) = hypercall(Hypercall::HvStopPp, handle);
    if status != 0 || microv_runs() {
        return Err(format!("hv.stop_pp failed with status {status}"));
    }
    Ok(())
}

/// A management hypercall from the root VM (CPL 0): the status, and R10.
fn hypercall(call: Hypercall, r10: u64) -> (u64, u64) {
    let (status, out): (u64, u64);
    // SAFETY: VMMCALL under MicroV (the caller checked it runs): MicroV
    // answers in RAX and R10..R13, which are declared clobbered.
    unsafe {
        core::arch::asm!(
            "vmmcall",
            inout("rax") hypercall::encode(call) => status,
            inout("r10") r10 => out,
            out("r11") _, out("r12") _, out("r13") _,
        )
    };
    (status, out)
}

/// CPUID 0x40000000's signature as text.
fn signature() -> String {
    String::from_utf8_lossy(&signature_bytes()).into_owned()
}

/// CPUID 0x40000000's signature (EBX, ECX, EDX).
fn signature_bytes() -> [u8; 12] {
    let r = instr::cpuid(LEAF_HYPERVISOR, 0);
    let mut bytes = [0u8; 12];
    for (chunk, word) in bytes.chunks_mut(4).zip([r.ebx, r.ecx, r.edx]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}
