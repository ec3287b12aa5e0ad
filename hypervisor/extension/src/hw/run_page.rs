//! A guest vCPU's run page, mapped by the microkernel at
//! `vs_layout::run(id)`. It is root memory: the VMM can write it at any
//! moment, so MicroV never makes a reference to it. It reads each field
//! once (volatile) into a private copy and only writes whole fields.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::run::{request, RunApic, RunExit, RunIo, RunPage, RunRegs};
use microv_abi::syscall::vs_layout;

use crate::guest::RunInput;
use crate::svm_regs::ExitRegs;

fn field<T>(vcpu: u64, offset: usize) -> *mut T {
    (vs_layout::run(vcpu) as *mut u8).wrapping_add(offset).cast::<T>()
}

fn read<T: Copy>(vcpu: u64, offset: usize) -> T {
    // SAFETY: the microkernel mapped this guest vCPU's run page (a whole
    // page, `RunPage` fits) before it gave the extension its id, and keeps
    // it mapped until the vCPU is destroyed, which needs the vCPU claimed:
    // the caller holds the claim. A volatile read takes one copy.
    unsafe { field::<T>(vcpu, offset).read_volatile() }
}

fn write<T>(vcpu: u64, offset: usize, value: T) {
    // SAFETY: as for `read`; a volatile store of one field.
    unsafe { field::<T>(vcpu, offset).write_volatile(value) }
}

/// Takes a word of the page atomically to zero (the VMM may be setting
/// bits in it from another CPU at the same time).
fn take(vcpu: u64, offset: usize) -> u64 {
    // SAFETY: as for `read`; the word is 8-byte aligned (offsets of u64
    // fields of a page-aligned `repr(C)` struct), and every access to it by
    // MicroV and the VMM is atomic or a plain aligned store.
    let word = unsafe { AtomicU64::from_ptr(field::<u64>(vcpu, offset)) };
    word.swap(0, Ordering::AcqRel)
}

/// What the VMM asks for at this `run.run`; the request bits and raised
/// vectors are taken (cleared) from the page.
pub fn take_input(vcpu: u64) -> RunInput {
    let raise_at = offset_of!(RunPage, raise);
    let mut raise = [0u64; 4];
    for (i, w) in raise.iter_mut().enumerate() {
        *w = take(vcpu, raise_at + 8 * i);
    }
    let request = take(vcpu, offset_of!(RunPage, request));
    // Only what the request names is read: most runs follow a port I/O
    // exit and carry at most the value of an `in`.
    RunInput {
        request,
        raise,
        io_data: read(vcpu, offset_of!(RunPage, exit) + offset_of!(RunExit, io) + offset_of!(RunIo, data)),
        regs: if request & (request::SET_REGS | request::SET_SREGS) != 0 {
            read_regs(vcpu)
        } else {
            RunRegs::zeroed()
        },
        apic: if request & request::APIC_ACCESS != 0 {
            read(vcpu, offset_of!(RunPage, apic))
        } else {
            RunApic::zeroed()
        },
    }
}

/// The register area, copied once.
pub fn read_regs(vcpu: u64) -> RunRegs {
    read(vcpu, offset_of!(RunPage, regs))
}

/// Writes the registers.
pub fn write_regs(vcpu: u64, regs: &RunRegs) {
    write(vcpu, offset_of!(RunPage, regs), *regs);
}

/// Writes an exit and the registers it hands the VMM.
pub fn write_exit(vcpu: u64, exit: &RunExit, regs: &ExitRegs) {
    match regs {
        ExitRegs::All(all) => write_regs(vcpu, all),
        ExitRegs::General { gprs, rip, rflags } => {
            let at = offset_of!(RunPage, regs);
            write(vcpu, at + offset_of!(RunRegs, gprs), *gprs);
            write(vcpu, at + offset_of!(RunRegs, rip), *rip);
            write(vcpu, at + offset_of!(RunRegs, rflags), *rflags);
        }
    }
    write(vcpu, offset_of!(RunPage, exit), *exit);
}
