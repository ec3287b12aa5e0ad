//! The microkernel on real hardware: bring-up, the syscall gate, faults and
//! promotion. Built only into the image (`feature = "image"`).

mod asm;
mod cpu;
mod log;
mod mm;
mod percpu;
mod syscall;
mod vs;

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use microv_abi::launch::{self, CpuLanding, ImageHeader, KERNEL_IMAGE_MAGIC};
use microv_abi::StartError;

use self::log::log;

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
    // example an arithmetic overflow check) and stops MicroV on this CPU.
    log!("microkernel panic: {}", info.message());
    cpu::fail(StartError::KernelFault, 0)
}

/// Validates the landing page the trampoline handed us.
fn landing(ptr: u64) -> Option<&'static mut CpuLanding> {
    // SAFETY: the trampoline passes the landing page, mapped here at the
    // loader's address; it belongs to this CPU.
    let l = unsafe { (ptr as *mut CpuLanding).as_mut()? };
    (l.magic == launch::LANDING_MAGIC && l.launch_version == launch::LAUNCH_VERSION).then_some(l)
}

/// Called by `microv_kernel_entry` on each CPU, on its kernel stack.
#[no_mangle]
extern "C" fn microv_kernel_main(landing_ptr: u64) -> ! {
    let Some(landing) = landing(landing_ptr) else {
        // Without a valid landing page there is no way back: stop here.
        microv_arch::instr::halt_forever()
    };
    if GLOBAL_STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        match cpu::global_init(landing) {
            Ok(()) => GLOBAL_STATE.store(2, Ordering::Release),
            Err(e) => {
                GLOBAL_STATE.store(0, Ordering::Release);
                cpu::early_return(landing, e as u64)
            }
        }
    }
    while GLOBAL_STATE.load(Ordering::Acquire) == 1 {
        core::hint::spin_loop();
    }
    if GLOBAL_STATE.load(Ordering::Acquire) != 2 {
        cpu::early_return(landing, StartError::KernelFault as u64)
    }
    cpu::bring_up(landing)
}
