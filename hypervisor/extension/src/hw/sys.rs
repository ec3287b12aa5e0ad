//! Syscalls into the microkernel (see `microv_abi::syscall`).

use core::arch::asm;

use microv_abi::hypercall::Status;
use microv_abi::syscall::{SysStatus, Syscall};
use microv_abi::StartError;

use crate::host::ApicOutcome;

fn raw(nr: Syscall, a0: u64, a1: u64) -> (u64, u64, u64) {
    raw3(nr, a0, a1, 0)
}

fn raw3(nr: Syscall, a0: u64, a1: u64, a2: u64) -> (u64, u64, u64) {
    let (status, r1, r2);
    // SAFETY: `syscall` enters the microkernel's gate, which preserves every
    // register but RAX, RDX, R8 (results) and RCX, R11 (the instruction's).
    unsafe {
        asm!("syscall",
            inlateout("rax") nr as u64 => status,
            in("rdi") a0, in("rsi") a1,
            inlateout("rdx") a2 => r1, lateout("r8") r2,
            lateout("rcx") _, lateout("r11") _,
            clobber_abi("C"),
            options(nostack));
    }
    (status, r1, r2)
}

fn call(nr: Syscall, a0: u64, a1: u64) -> Result<(u64, u64), SysStatus> {
    call3(nr, a0, a1, 0)
}

fn call3(nr: Syscall, a0: u64, a1: u64, a2: u64) -> Result<(u64, u64), SysStatus> {
    let (status, r1, r2) = raw3(nr, a0, a1, a2);
    match SysStatus::from_u64(status) {
        Some(SysStatus::Success) => Ok((r1, r2)),
        Some(s) => Err(s),
        None => Err(SysStatus::UnknownSyscall),
    }
}

pub fn log(text: &[u8]) {
    let _ = call(Syscall::LogWrite, text.as_ptr() as u64, text.len() as u64);
}

/// Reads an MSR on the real CPU for the root; None if it raised #GP.
pub fn msr_read(index: u32) -> Option<u64> {
    call(Syscall::MsrRead, u64::from(index), 0)
        .ok()
        .map(|(v, _)| v)
}

/// Writes an MSR on the real CPU for the root; false if it raised #GP.
pub fn msr_write(index: u32, value: u64) -> bool {
    call(Syscall::MsrWrite, u64::from(index), value).is_ok()
}

/// Asks the microkernel to map the root's faulting guest-physical address;
/// false if it lies beyond what the CPU can address or no table page is left.
pub fn root_map_gpa(gpa: u64) -> bool {
    matches!(call(Syscall::RootMapGpa, gpa, 0), Ok((1, _)))
}

/// The root's code at linear address `la`: 8 bytes and how many are valid.
pub fn root_fetch(la: u64) -> (u64, usize) {
    match call(Syscall::RootFetch, la, 0) {
        Ok((bytes, valid)) => (bytes, valid.min(8) as usize),
        Err(_) => (0, 0),
    }
}

/// Has the microkernel carry out (or refuse) a root APIC write.
pub fn apic_write(offset: u32, value: u64, x2apic: bool) -> ApicOutcome {
    match call3(Syscall::ApicWrite, u64::from(offset), value, u64::from(x2apic)) {
        Ok(_) => ApicOutcome::Written,
        Err(SysStatus::Refused) => ApicOutcome::Refused,
        Err(_) => ApicOutcome::Invalid,
    }
}

pub fn mem_stats() -> (u64, u64) {
    call(Syscall::MemStats, 0, 0).unwrap_or((0, 0))
}

/// Runs a vCPU state; only returns if the microkernel refused.
pub fn vs_run(id: u64) -> SysStatus {
    call(Syscall::VsRun, id, 0)
        .err()
        .unwrap_or(SysStatus::UnknownSyscall)
}

/// Hands the CPU back to the root; only returns if the microkernel refused.
pub fn vs_promote(id: u64) -> SysStatus {
    call(Syscall::VsPromote, id, 0)
        .err()
        .unwrap_or(SysStatus::UnknownSyscall)
}

/// Stops MicroV on this CPU with an error. Never returns.
pub fn fail(code: StartError, detail: u64) -> ! {
    loop {
        let _ = raw(Syscall::Fail, code as u64, detail);
    }
}

/// A hypercall status for a syscall's.
fn status(s: SysStatus) -> Status {
    match s {
        SysStatus::Success => Status::Success,
        SysStatus::OutOfMemory => Status::OutOfMemory,
        SysStatus::Busy => Status::Busy,
        SysStatus::Refused => Status::MemoryRefused,
        SysStatus::InvalidArgument | SysStatus::UnknownSyscall | SysStatus::Fault => {
            Status::InvalidArgument
        }
    }
}

fn done(r: Result<(u64, u64), SysStatus>) -> Status {
    r.map_or_else(status, |_| Status::Success)
}

pub fn vm_create() -> Result<u64, Status> {
    call(Syscall::VmCreate, 0, 0).map(|(id, _)| id).map_err(status)
}

pub fn vm_destroy(vm: u64) -> Status {
    done(call(Syscall::VmDestroy, vm, 0))
}

pub fn vm_map(vm_pages: u64, gpa_access: u64, hpa: u64) -> Status {
    done(call3(Syscall::VmMap, vm_pages, gpa_access, hpa))
}

pub fn vm_unmap(vm_pages: u64, gpa: u64) -> Status {
    done(call(Syscall::VmUnmap, vm_pages, gpa))
}

pub fn vs_create(vm: u64, run_pa: u64) -> Result<u64, Status> {
    call(Syscall::VsCreate, vm, run_pa).map(|(id, _)| id).map_err(status)
}

pub fn vs_destroy(id: u64) -> Status {
    done(call(Syscall::VsDestroy, id, 0))
}
