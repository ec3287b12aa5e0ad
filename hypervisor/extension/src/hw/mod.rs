//! The extension on the real machine: entry point, bootstrap of the root
//! VM on each CPU, and the exit loop. Built only into the image.

mod port_io;
mod sys;

use core::fmt::{self, Write};
use core::sync::atomic::Ordering;

use microv_abi::launch::{BootInfo, ImageHeader, EXTENSION_IMAGE_MAGIC};
use microv_abi::hypercall::Status;
use microv_abi::syscall::{vs_layout, SysStatus, Upcall, VsRegs, EXTENSION_BOOT_INFO};
use microv_abi::StartError;
use microv_arch::cpuid::CpuidResult;
use microv_arch::instr;
use microv_arch::svm::{self, Vmcb};

use crate::exit::{self, Action};
use crate::host::Host;
use crate::root_vm;
use crate::state::HvState;

/// The image header the loader checks (size and checksum filled by the build).
#[used]
#[no_mangle]
#[link_section = ".mvheader"]
pub static MICROV_EXTENSION_HEADER: ImageHeader = ImageHeader::unsealed(EXTENSION_IMAGE_MAGIC);

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl microv_extension_entry
microv_extension_entry:
    // RDI = upcall, RSI = CPU index, RDX, R8 = arguments; fresh stack.
    mov rcx, r8
    and rsp, -16
    xor ebp, ebp
    call microv_extension_main
    ud2
"#
);

static HV: HvState = HvState::new();

/// Formats into a fixed buffer and sends it to the log.
struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

fn log(args: fmt::Arguments) {
    let mut line = LineBuf {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    sys::log(line.buf.get(..line.len).unwrap_or_default());
}

struct Machine;

impl Host for Machine {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        instr::cpuid(leaf, subleaf)
    }
    fn mem_stats(&mut self) -> (u64, u64) {
        sys::mem_stats()
    }
    fn log(&mut self, args: fmt::Arguments) {
        log(args)
    }
    fn entropy(&mut self) -> u64 {
        // Mixed TSC: unpredictable enough that root userspace cannot guess
        // the handle (it also cannot make management calls at all).
        let t = instr::rdtsc();
        (t ^ (t << 29) ^ (t >> 17)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn msr_read(&mut self, index: u32) -> Option<u64> {
        sys::msr_read(index)
    }
    fn msr_write(&mut self, index: u32, value: u64) -> bool {
        sys::msr_write(index, value)
    }
    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        port_io::read(port, size)
    }
    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        port_io::write(port, size, value)
    }
    fn map_root_gpa(&mut self, gpa: u64) -> bool {
        sys::root_map_gpa(gpa)
    }
}

fn boot_info() -> &'static BootInfo {
    // SAFETY: the microkernel maps the boot info read-only at this address
    // before the first upcall, for MicroV's lifetime.
    unsafe { &*(EXTENSION_BOOT_INFO as *const BootInfo) }
}

/// The VMCB of vCPU state `id`.
///
/// # Safety
/// `id` is a state the microkernel created (it maps the VMCB here) and
/// runs on this CPU only; the caller holds no other reference to it.
unsafe fn vmcb(id: u64) -> &'static mut Vmcb {
    // SAFETY: see the function's contract.
    unsafe { &mut *(vs_layout::vmcb(id) as *mut Vmcb) }
}

/// The register page of vCPU state `id`.
///
/// # Safety
/// As for [`vmcb`], for the register page.
unsafe fn regs(id: u64) -> &'static mut VsRegs {
    // SAFETY: see the function's contract.
    unsafe { &mut *(vs_layout::gprs(id) as *mut VsRegs) }
}

fn bootstrap(cpu: u64, root_vs: u64, cpu_count: u64) -> ! {
    HV.cpu_count.store(cpu_count, Ordering::Relaxed);
    HV.start_mode
        .store(u64::from(boot_info().start_mode), Ordering::Relaxed);
    // SAFETY: the microkernel created this CPU's root state for it; nothing
    // else refers to its VMCB on this CPU.
    root_vm::configure_vmcb(unsafe { vmcb(root_vs) });
    log(format_args!("cpu {cpu}: starting the root vCPU"));
    run(root_vs)
}

fn run(id: u64) -> ! {
    let status = sys::vs_run(id);
    sys::fail(StartError::ExtensionError, status as u64)
}

fn on_exit(cpu: u64, id: u64) -> ! {
    // SAFETY: the microkernel upcalls with the state that just exited on
    // this CPU; this is the only reference to its VMCB.
    let v = unsafe { vmcb(id) };
    // SAFETY: as above, for its register page.
    let r = unsafe { regs(id) };
    // A first-run flush is done; keep the TLB from here on.
    v.control.tlb_control = svm::tlb::DO_NOTHING;
    match exit::handle(v, r, cpu as usize, &HV, &mut Machine) {
        Action::Resume => run(id),
        Action::StopThisCpu => {
            log(format_args!("cpu {cpu}: asked to stop; waiting for every CPU"));
            match sys::vs_promote(id) {
                // Not every CPU asked in time: MicroV stays, the call fails.
                SysStatus::Busy => {
                    v.save.rax = Status::Busy.as_u64();
                    run(id)
                }
                status => sys::fail(StartError::ExtensionError, status as u64),
            }
        }
        Action::Fail(code, detail) => sys::fail(code, detail),
        Action::TestFault(kind) => test_fault(kind, id, v),
    }
}

/// Faults on purpose (test images): the microkernel must catch it.
fn test_fault(kind: u64, id: u64, vmcb: &mut Vmcb) -> ! {
    use microv_abi::hypercall::test_fault;
    log(format_args!(
        "extension: faulting on purpose (hv.test_fault {kind})"
    ));
    if kind == test_fault::EXTENSION_LOOSEN_VMCB {
        // A compromised extension's move: let the root loose. The
        // microkernel must refuse to run this VMCB.
        vmcb.control.np_control = 0;
        vmcb.control.intercept_misc2 &= !svm::misc2::VMRUN;
        run(id)
    }
    if kind == test_fault::EXTENSION_INVALID_OPCODE {
        // SAFETY: raises #UD on purpose; the microkernel stops MicroV.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }
    // SAFETY: reads an address that is never mapped, on purpose.
    let v = unsafe { core::ptr::read_volatile(0x10 as *const u64) };
    sys::fail(StartError::ExtensionError, v)
}

#[no_mangle]
extern "C" fn microv_extension_main(upcall: u64, cpu: u64, a: u64, b: u64) -> ! {
    match Upcall::from_u64(upcall) {
        Some(Upcall::Bootstrap) => bootstrap(cpu, a, b),
        Some(Upcall::Exit) => on_exit(cpu, a),
        None => sys::fail(StartError::ExtensionError, upcall),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log(format_args!("extension panic: {}", info.message()));
    sys::fail(StartError::ExtensionError, 0)
}
