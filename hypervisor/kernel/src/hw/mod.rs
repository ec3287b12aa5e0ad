//! The microkernel on real hardware: bring-up, the syscall gate, faults and
//! promotion. Built only into the image (`feature = "image"`).

mod asm;
mod cpu;
mod guest;
mod log;
mod mm;
mod percpu;
mod root_apic;
mod root_vm;
mod vmx;
mod syscall;
mod vs;

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use microv_abi::launch::{self, ImageHeader, KERNEL_IMAGE_MAGIC};
use microv_abi::StartError;
use microv_arch::cpuid::{self, Virtualization};

/// The image header the loader checks (size and checksum filled by the build).
#[used]
#[no_mangle]
#[link_section = ".mvheader"]
pub static MICROV_KERNEL_HEADER: ImageHeader = ImageHeader::unsealed(KERNEL_IMAGE_MAGIC);

/// Set to a `StartError` when MicroV must stop everywhere (a fault on some
/// CPU): every CPU then hands itself back to the root at its next exit.
pub static FAILED: AtomicU32 = AtomicU32::new(0);

/// 0: nothing set up; 1: a CPU is setting up shared state; 2: ready.
static GLOBAL_STATE: AtomicU8 = AtomicU8::new(0);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Lints forbid panicking paths; this catches what slips through (for
    // example an arithmetic overflow check). The CPU is found from the
    // stack, never from GS, which is the root's early in bring-up.
    log::log!("microkernel panic: {}", info.message());
    let rsp: u64;
    // SAFETY: reads the stack pointer only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    // SAFETY: a panic never returns to the code that holds this CPU's
    // PerCpu reference, so the one made here is the only one used.
    match unsafe { percpu::from_stack(rsp) } {
        Some(pc) => cpu::fail(pc, StartError::KernelFault, 0),
        // Before this CPU's data exists there is no safe way back.
        None => microv_arch::instr::halt_forever(),
    }
}

/// Called by `microv_kernel_entry` on each CPU, on its kernel stack, with
/// the landing page the entry code matched in the boot info, the CPU's
/// index and the boot info's address.
#[no_mangle]
extern "C" fn microv_kernel_main(landing_va: u64, index: u64, bi_va: u64) -> ! {
    cpu::entered(index);
    // SAFETY: the entry code computed `bi_va` from this image's sealed size.
    let Some(bi) = (unsafe { cpu::boot_info(bi_va) }) else {
        // Without a valid boot info there is no way back: stop here.
        microv_arch::instr::halt_forever()
    };
    // SAFETY: the entry code found this address in the boot info's landing
    // list; the loader maps each landing page for MicroV's lifetime.
    let landing = unsafe { cpu::Landing::new(landing_va) };
    let copy = landing.snapshot();
    let captured = copy.captured;
    if copy.magic != launch::LANDING_MAGIC || copy.launch_version != launch::LAUNCH_VERSION {
        cpu::early_return(landing, &captured, index, bi.promote_entry, StartError::BadImage as u64, 0)
    }
    // The world switch is chosen by the CPU (`cpu::is_vmx`).
    let refusal = match cpuid::virtualization(&mut microv_arch::instr::cpuid) {
        Virtualization::Svm | Virtualization::Vmx => None,
        Virtualization::None => Some(StartError::SvmUnsupported),
    };
    if let Some(e) = refusal {
        cpu::early_return(landing, &captured, index, bi.promote_entry, e as u64, 0)
    }
    if GLOBAL_STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        match cpu::global_init(bi, bi_va) {
            Ok(()) => GLOBAL_STATE.store(2, Ordering::Release),
            Err(e) => {
                GLOBAL_STATE.store(0, Ordering::Release);
                cpu::early_return(landing, &captured, index, bi.promote_entry, e as u64, 0)
            }
        }
    }
    while GLOBAL_STATE.load(Ordering::Acquire) == 1 {
        core::hint::spin_loop();
    }
    if GLOBAL_STATE.load(Ordering::Acquire) != 2 {
        let code = StartError::KernelFault as u64;
        cpu::early_return(landing, &captured, index, bi.promote_entry, code, 0)
    }
    cpu::bring_up(landing, captured, index, bi)
}
