//! The syscall gate and the exception handler: the two ways into ring 0
//! from the extension.

use microv_abi::launch::EXTENSION_HEAP;
use microv_abi::syscall::{SysStatus, Syscall, EXTENSION_BOOT_INFO};
use microv_abi::StartError;
use microv_arch::instr;

use super::asm;
use super::cpu;
use super::guest;
use super::log::log;
use super::mm::MEMORY;
use super::percpu::{self, PerCpu};
use super::vs;
use crate::fault::{self, ExceptionFrame};

/// The NMI's vector.
const NMI_VECTOR: u64 = 2;

/// Registers at `syscall`, as the gate pushes them.
#[repr(C)]
pub struct SyscallFrame {
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub r10: u64,
    pub r8: u64,
    pub r9: u64,
    pub rcx: u64,
    pub r11: u64,
}

/// Most pages one `MemAlloc` may ask for.
const MAX_ALLOC_PAGES: u64 = 64;
/// Longest log line.
const MAX_LOG_WRITE: u64 = 1024;
/// Top of the extension's half of the address space.
const USER_TOP: u64 = 0x0000_8000_0000_0000;

#[no_mangle]
extern "C" fn microv_syscall(f: &mut SyscallFrame, percpu: u64) {
    // SAFETY: the gate passes `gs:[0]` (GS is the microkernel's after
    // `swapgs`: KERNEL_GS_BASE is only written by MicroV); this is the one
    // reference to this CPU's data for the whole syscall.
    let Some(pc) = (unsafe { percpu::from_gate(percpu) }) else {
        microv_arch::instr::halt_forever()
    };
    let (status, a, b) = match Syscall::from_u64(f.rax) {
        None => (SysStatus::UnknownSyscall, 0, 0),
        Some(call) => dispatch(pc, call, [f.rdi, f.rsi, f.rdx]),
    };
    f.rax = status as u64;
    f.rdx = a;
    f.r8 = b;
}

fn dispatch(pc: &mut PerCpu, call: Syscall, [a0, a1, a2]: [u64; 3]) -> (SysStatus, u64, u64) {
    let status = |s: SysStatus| (s, 0, 0);
    let id = |r: Result<u64, SysStatus>| match r {
        Ok(id) => (SysStatus::Success, id, 0),
        Err(s) => (s, 0, 0),
    };
    match call {
        Syscall::LogWrite => log_write(a0, a1),
        Syscall::MsrRead => msr_access(a0, None),
        Syscall::MsrWrite => msr_access(a0, Some(a1)),
        Syscall::MemAlloc => mem_alloc(a0),
        Syscall::MemStats => {
            let mem = MEMORY.lock();
            (
                SysStatus::Success,
                mem.frames.total_pages() as u64,
                mem.frames.free_pages() as u64,
            )
        }
        Syscall::VsCreate => id(vs::create_guest(a0, a1, pc.root.fpu_pages)),
        Syscall::VsDestroy => status(vs::destroy(a0)),
        Syscall::VmCreate => id(guest::create()),
        Syscall::VmDestroy => status(guest::destroy(a0)),
        Syscall::VmMap => status(guest::map(a0, a1, a2)),
        Syscall::VmUnmap => status(guest::unmap(a0, a1)),
        Syscall::VsRun => match cpu::run(pc, a0) {
            Err(status) => (status, 0, 0),
        },
        Syscall::VsPromote => (cpu::stop(pc, a0), 0, 0),
        Syscall::RootMapGpa => match super::root_vm::map_gpa(a0) {
            Ok(mapped) => (SysStatus::Success, u64::from(mapped), 0),
            Err(_) => (SysStatus::OutOfMemory, 0, 0),
        },
        Syscall::RootFetch => {
            let (bytes, valid) = super::root_apic::fetch(pc, a0);
            (SysStatus::Success, bytes, valid)
        }
        Syscall::ApicWrite => status(super::root_apic::write(a0, a1, a2)),
        Syscall::Fail => {
            let code = u32::try_from(a0)
                .ok()
                .and_then(StartError::from_u32)
                .unwrap_or(StartError::ExtensionError);
            // Reported by the extension: record it as a ring-3 failure.
            cpu::fail_with(
                pc,
                microv_abi::launch::FaultRecord {
                    code: code as u32,
                    vector: u32::MAX,
                    error_code: 0,
                    rip: 0,
                    cr2: 0,
                    cpl: 3,
                    detail: a1,
                },
            )
        }
    }
}

fn log_write(ptr: u64, len: u64) -> (SysStatus, u64, u64) {
    let len = len.min(MAX_LOG_WRITE);
    match ptr.checked_add(len) {
        Some(end) if end <= USER_TOP && ptr >= EXTENSION_BOOT_INFO => {}
        _ => return (SysStatus::InvalidArgument, 0, 0),
    }
    // Check the mapping first: a fault in ring 0 would be blamed on the
    // microkernel for the extension's bad pointer.
    if !MEMORY.lock().user_range_mapped(ptr, len) {
        return (SysStatus::InvalidArgument, 0, 0);
    }
    let mut buf = [0u8; MAX_LOG_WRITE as usize];
    let Some(dst) = buf.get_mut(..len as usize) else {
        return (SysStatus::InvalidArgument, 0, 0);
    };
    // SAFETY: every page of the range is mapped for the extension (checked
    // above; the extension cannot unmap pages). Copy first, then format.
    unsafe { core::ptr::copy_nonoverlapping(ptr as *const u8, dst.as_mut_ptr(), len as usize) };
    let text = core::str::from_utf8(dst).unwrap_or("<invalid utf-8>");
    log!("{}", text);
    (SysStatus::Success, 0, 0)
}

/// Reads (`value` None) or writes an MSR for the root's pass-through.
fn msr_access(index: u64, value: Option<u64>) -> (SysStatus, u64, u64) {
    let Some(index) = u32::try_from(index)
        .ok()
        .filter(|&i| fault::msr_passthrough_allowed(i, value.is_some()))
    else {
        return (SysStatus::InvalidArgument, 0, 0);
    };
    let mut read = 0;
    // SAFETY: ring 0; the routines recover from #GP through the exception
    // handler's fix-up, and only MSRs the shared policy marks `Checked` get
    // here (never MicroV's own: EFER, syscall MSRs, VM_HSAVE_PA …, and no
    // write of a platform MSR that steers the hypervisor).
    let faulted = match value {
        // SAFETY: see above.
        None => unsafe { asm::microv_rdmsr_safe(index, &mut read) },
        // SAFETY: see above.
        Some(v) => unsafe { asm::microv_wrmsr_safe(index, v) },
    };
    if faulted != 0 {
        (SysStatus::Fault, 0, 0)
    } else {
        (SysStatus::Success, read, 0)
    }
}

fn mem_alloc(pages: u64) -> (SysStatus, u64, u64) {
    if pages == 0 || pages > MAX_ALLOC_PAGES {
        return (SysStatus::InvalidArgument, 0, 0);
    }
    let mut mem = MEMORY.lock();
    let Ok(page) = mem.alloc(pages as usize) else {
        return (SysStatus::OutOfMemory, 0, 0);
    };
    let va = EXTENSION_HEAP + page.offset;
    // `map_user` maps all pages or none; but another CPU may still hold a
    // TLB entry for a page that was mapped for a moment, so the frames are
    // never reused (leaked on this out-of-memory path).
    if mem.map_user(va, page.pa, pages, true, false).is_err() {
        return (SysStatus::OutOfMemory, 0, 0);
    }
    (SysStatus::Success, va, page.pa)
}

/// Every exception taken in host mode lands here (on IST 1). Returns only
/// for a #GP on the `rdmsr`/`wrmsr` of the pass-through routines, after
/// pointing the frame at their fix-up; everything else stops MicroV.
#[no_mangle]
extern "C" fn microv_exception(frame: &mut ExceptionFrame) {
    let fixable = [
        asm::microv_rdmsr_insn as *const () as u64,
        asm::microv_wrmsr_insn as *const () as u64,
    ];
    if fault::is_msr_fixup(frame, &fixable) {
        frame.rip = asm::microv_msr_fixup as *const () as u64;
        return;
    }
    // SAFETY: the handler runs on this CPU's IST stack and never returns
    // to code holding a PerCpu reference (only the MSR fix-up above does).
    let Some(pc) = (unsafe { percpu::from_stack(frame as *const ExceptionFrame as u64) }) else {
        microv_arch::instr::halt_forever()
    };
    if frame.vector == NMI_VECTOR && pc.vmx.is_some() {
        // VMX root operation does not hold NMIs (no GIF): one that arrives
        // in host mode is the root's, delivered at its next entry.
        pc.nmi_pending = true;
        return;
    }
    if pc.in_exception || pc.leaving {
        // A fault while handling a fault, or during promotion: going on
        // could only repeat it. This CPU stops here; the others carry on.
        log!(
            "cpu {}: fault (vector {}) while failing or leaving; halting",
            pc.index,
            frame.vector
        );
        microv_arch::instr::halt_forever()
    }
    pc.in_exception = true;
    // SAFETY: CR2 is readable in ring 0.
    let cr2 = unsafe { instr::read_cr2() };
    let record = fault::record(frame, cr2);
    log!(
        "{} fault: {} (vector {}) error {:#x} at rip {:#x}, cr2 {:#x}, rsp {:#x}",
        if frame.cs & 3 == 3 {
            "extension"
        } else {
            "microkernel"
        },
        fault::vector_name(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        cr2,
        frame.rsp
    );
    cpu::fail_with(pc, record)
}
