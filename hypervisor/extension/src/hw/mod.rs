//! The extension on the real machine: entry point, bootstrap of the root
//! VM on each CPU, and the exit loop. Built only into the image.

mod port_io;
mod run_page;
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
use crate::guest::{self, GuestAction};
use microv_abi::run::{exit_reason, hlt};
use crate::hypercall;
use crate::neutral;
use crate::svm_regs;
use crate::host::{ApicOutcome, Host};
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
    fn log_ring(&mut self) -> (u64, u64) {
        let bi = boot_info();
        (bi.log, bi.log_size)
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
    fn root_fetch(&mut self, la: u64) -> (u64, usize) {
        sys::root_fetch(la)
    }
    fn apic_write(&mut self, offset: u32, value: u64, x2apic: bool) -> ApicOutcome {
        sys::apic_write(offset, value, x2apic)
    }
    fn tsc(&mut self) -> u64 {
        instr::rdtsc()
    }
    fn vm_create(&mut self) -> Result<u64, Status> {
        sys::vm_create()
    }
    fn vm_destroy(&mut self, vm: u64) -> Status {
        sys::vm_destroy(vm)
    }
    fn vm_map(&mut self, vm_pages: u64, gpa_access: u64, hpa: u64) -> Status {
        sys::vm_map(vm_pages, gpa_access, hpa)
    }
    fn vm_unmap(&mut self, vm_pages: u64, gpa: u64) -> Status {
        sys::vm_unmap(vm_pages, gpa)
    }
    fn vcpu_create(&mut self, vm: u64, run_pa: u64) -> Result<u64, Status> {
        let id = sys::vs_create(vm, run_pa)?;
        // SAFETY: the microkernel just created this state and mapped its
        // VMCB; no one else knows its id yet.
        guest::configure_vmcb(unsafe { vmcb(id) });
        Ok(id)
    }
    fn vcpu_destroy(&mut self, vcpu: u64) -> Status {
        sys::vs_destroy(vcpu)
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

/// The VMCB and register page of vCPU state `id`.
///
/// # Safety
/// As for [`vmcb`], for both pages.
unsafe fn state(id: u64) -> (&'static mut Vmcb, &'static mut VsRegs) {
    // SAFETY: see the function's contract.
    let v = unsafe { vmcb(id) };
    // SAFETY: see the function's contract.
    (v, unsafe { regs(id) })
}

fn bootstrap(cpu: u64, root_vs: u64, cpu_count: u64) -> ! {
    HV.cpu_count.store(cpu_count, Ordering::Relaxed);
    HV.vcpus.set_root(cpu as usize, root_vs);
    HV.start_mode
        .store(u64::from(boot_info().start_mode), Ordering::Relaxed);
    HV.tsc_khz.store(boot_info().tsc_khz, Ordering::Relaxed);
    if let Some(base) = sys::msr_read(microv_arch::msr::APIC_BASE) {
        HV.set_apic_base(base);
    }
    let vmx = microv_arch::cpuid::virtualization(&mut instr::cpuid);
    HV.set_vmx(vmx == microv_arch::cpuid::Virtualization::Vmx);
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
    if HV.vcpus.running_on(cpu as usize) == Some(id) {
        on_guest_exit(cpu as usize, id)
    }
    // SAFETY: the microkernel upcalls with the state that just exited on
    // this CPU; this is the only reference to its VMCB.
    let v = unsafe { vmcb(id) };
    // SAFETY: as above, for its register page.
    let r = unsafe { regs(id) };
    // A first-run flush is done; keep the TLB from here on.
    v.control.tlb_control = svm::tlb::DO_NOTHING;
    let e = neutral::decode_svm(&v.control);
    match exit::handle(v, r, e, cpu as usize, &HV, &mut Machine) {
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
        Action::RunGuest(vcpu) => enter_guest(cpu as usize, id, vcpu),
        Action::Registers { vcpu, set } => registers(cpu as usize, id, vcpu, set),
    }
}

/// Completes the root's pending hypercall on this CPU and runs the root.
fn complete_root(root: u64, status: Status, r10: u64) -> ! {
    // SAFETY: the root state of this CPU, which is not running (this CPU
    // is in host mode); the only reference to its pages here.
    let (v, r) = unsafe { state(root) };
    let out = hypercall::Args {
        r10,
        ..Default::default()
    };
    exit::complete_hypercall(v, r, status, out);
    run(root)
}

/// `run.run` from the root: this CPU runs guest vCPU `vcpu` until it exits
/// to the VMM or a host interrupt arrives.
fn enter_guest(cpu: usize, root: u64, vcpu: u64) -> ! {
    if !HV.vcpus.claim(vcpu, cpu) {
        let busy = HV.vcpus.vm_of(vcpu).is_some();
        complete_root(root, if busy { Status::Busy } else { Status::InvalidArgument }, 0)
    }
    HV.vcpus.set_running_on(cpu, Some(vcpu));
    let input = run_page::take_input(vcpu);
    // SAFETY: this CPU holds the vCPU (claimed above): no other CPU runs
    // or edits it; the only references to its pages.
    let (v, r) = unsafe { state(vcpu) };
    let kicks = guest::accept_input(v, r, vcpu, &input, &HV.vcpus);
    if let Some(e) = guest::kick_exit(kicks) {
        back_to_root(cpu, vcpu, e)
    }
    run_guest(cpu, vcpu)
}

fn run_guest(cpu: usize, vcpu: u64) -> ! {
    // SAFETY: this CPU holds the vCPU; the only reference to its VMCB.
    let v = unsafe { vmcb(vcpu) };
    if HV.vcpus.startup(v, vcpu) == guest::Startup::Wait {
        let e = guest::exit_record(exit_reason::HLT, hlt::WAIT_FOR_SIPI);
        back_to_root(cpu, vcpu, e)
    }
    guest::prepare_entry(v, vcpu, &HV.vcpus, instr::rdtsc());
    let refused = sys::vs_run(vcpu);
    // Only returns if the microkernel refused to run it.
    back_to_root(cpu, vcpu, guest::exit_record(exit_reason::FAIL_ENTRY, refused as u64))
}

fn on_guest_exit(cpu: usize, vcpu: u64) -> ! {
    // SAFETY: this CPU holds the vCPU (it ran here for the root's
    // run.run); the only references to its pages.
    let (v, r) = unsafe { state(vcpu) };
    v.control.tlb_control = svm::tlb::DO_NOTHING;
    let e = neutral::decode_svm(&v.control);
    HV.count_exit(cpu, e.kind());
    match guest::handle(v, r, e, vcpu, cpu, &HV, &mut Machine) {
        GuestAction::Resume => run_guest(cpu, vcpu),
        GuestAction::ToVmm(e) => back_to_root(cpu, vcpu, e),
    }
}

/// Ends the root's `run.run`: the exit and the registers go to the run
/// page, the vCPU is free again, and the root runs (and takes any host
/// interrupt that ended the guest's run).
fn back_to_root(cpu: usize, vcpu: u64, e: microv_abi::run::RunExit) -> ! {
    // SAFETY: this CPU still holds the vCPU; the only references.
    let (v, r) = unsafe { state(vcpu) };
    let e = guest::for_root(e, vcpu, &HV.vcpus);
    run_page::write_exit(vcpu, &e, &svm_regs::at_exit(v, r, e.reason));
    HV.vcpus.set_running_on(cpu, None);
    HV.vcpus.release(vcpu);
    complete_root(HV.vcpus.root_of(cpu), Status::Success, u64::from(e.reason))
}

/// `run.get_registers` / `run.set_registers` (mask bit 0: general
/// registers, bit 1: special registers).
fn registers(cpu: usize, root: u64, vcpu: u64, set: Option<u64>) -> ! {
    if !HV.vcpus.claim(vcpu, cpu) {
        let busy = HV.vcpus.vm_of(vcpu).is_some();
        complete_root(root, if busy { Status::Busy } else { Status::InvalidArgument }, 0)
    }
    // SAFETY: claimed above; the only references to its pages.
    let (v, r) = unsafe { state(vcpu) };
    match set {
        None => run_page::write_regs(vcpu, &svm_regs::read(v, r)),
        Some(mask) => {
            let regs = run_page::read_regs(vcpu);
            if mask & microv_abi::run::request::SET_REGS != 0 {
                svm_regs::write_regs(v, r, &regs);
            }
            if mask & microv_abi::run::request::SET_SREGS != 0 {
                svm_regs::write_sregs(v, &regs);
            }
        }
    }
    HV.vcpus.release(vcpu);
    complete_root(root, Status::Success, 0)
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
