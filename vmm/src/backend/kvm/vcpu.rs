//! A KVM vCPU and the translation of KVM's exits into [`VmExit`].

use std::io;
use std::sync::Arc;

use kvm_bindings::{
    kvm_fpu, KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_SIMUL_EX, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::{convert, os, Shared};
use crate::backend::{BackendError, CpuidEntry, Regs, SpecialRegs, Vcpu, VmExit};

/// x87 control word and MXCSR after FNINIT / reset: all exceptions masked.
const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

/// A KVM vCPU. Holds the VM's shared part so guest memory outlives it.
pub struct KvmVcpu {
    fd: VcpuFd,
    vm: Arc<Shared>,
}

impl KvmVcpu {
    pub(super) fn new(fd: VcpuFd, vm: Arc<Shared>) -> Self {
        KvmVcpu { fd, vm }
    }
}

/// KVM's number for exits we do not translate (`KVM_EXIT_*`), for logs.
fn unhandled_code(exit: &VcpuExit<'_>) -> u64 {
    use kvm_bindings::*;
    u64::from(match exit {
        VcpuExit::Unknown => KVM_EXIT_UNKNOWN,
        VcpuExit::Exception => KVM_EXIT_EXCEPTION,
        VcpuExit::Hypercall(_) => KVM_EXIT_HYPERCALL,
        VcpuExit::Debug(_) => KVM_EXIT_DEBUG,
        VcpuExit::IrqWindowOpen => KVM_EXIT_IRQ_WINDOW_OPEN,
        VcpuExit::Nmi => KVM_EXIT_NMI,
        VcpuExit::InternalError => KVM_EXIT_INTERNAL_ERROR,
        VcpuExit::SystemEvent(..) => KVM_EXIT_SYSTEM_EVENT,
        VcpuExit::IoapicEoi(_) => KVM_EXIT_IOAPIC_EOI,
        VcpuExit::X86Rdmsr(_) => KVM_EXIT_X86_RDMSR,
        VcpuExit::X86Wrmsr(_) => KVM_EXIT_X86_WRMSR,
        VcpuExit::MemoryFault { .. } => KVM_EXIT_MEMORY_FAULT,
        _ => u32::MAX,
    })
}

impl KvmVcpu {
    /// The access size of the KVM_EXIT_IO that the last run ended with.
    fn io_size(&mut self) -> usize {
        let run = self.fd.get_kvm_run();
        // SAFETY: called right after a KVM_EXIT_IO, so `io` is the member
        // KVM filled; it is plain integers, valid for any bit pattern.
        let io = unsafe { run.__bindgen_anon_1.io };
        usize::from(io.size)
    }
}

impl Vcpu for KvmVcpu {
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), BackendError> {
        let kvm_entries: Vec<_> = entries.iter().map(convert::cpuid_to_kvm).collect();
        let cpuid = kvm_bindings::CpuId::from_entries(&kvm_entries).map_err(|_| {
            BackendError::Unsupported {
                backend: "kvm",
                what: "that many CPUID entries",
            }
        })?;
        self.fd.set_cpuid2(&cpuid).map_err(os("KVM_SET_CPUID2"))
    }

    fn set_boot_state(&mut self, regs: &Regs, sregs: &SpecialRegs) -> Result<(), BackendError> {
        let mut k = self.fd.get_sregs().map_err(os("KVM_GET_SREGS"))?;
        convert::sregs_into_kvm(sregs, &mut k);
        self.fd.set_sregs(&k).map_err(os("KVM_SET_SREGS"))?;
        self.fd
            .set_regs(&convert::regs_to_kvm(regs))
            .map_err(os("KVM_SET_REGS"))?;
        let fpu = kvm_fpu {
            fcw: FPU_CONTROL_WORD,
            mxcsr: MXCSR_DEFAULT,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(os("KVM_SET_FPU"))
    }

    fn diagnose(&mut self) -> String {
        let rip = self.fd.get_regs().map_or_else(
            |e| format!("registers unreadable: {e}"),
            |r| format!("rip {:#x}", r.rip),
        );
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return rip;
        }
        // SAFETY: exit_reason says KVM filled the `internal` member; it is
        // plain integers, valid for any bit pattern.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal
            .data
            .get(..n)
            .unwrap_or_default()
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        let why = if self.vm.emulating {
            "; this /dev/kvm is kvm_pvm, which runs stock kernels through KVM's \
             instruction emulator and cannot run Linux guests: use hardware KVM"
        } else {
            ""
        };
        format!(
            "{rip}, KVM internal error {} ({}), data [{}]{why}",
            internal.suberror,
            match internal.suberror {
                KVM_INTERNAL_ERROR_EMULATION => "KVM could not emulate an instruction",
                KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
                KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
                _ => "other",
            },
            data.join(", ")
        )
    }

    fn run(&mut self) -> Result<VmExit<'_>, BackendError> {
        let fd: *mut VcpuFd = &mut self.fd;
        // SAFETY: `self.fd`, borrowed for as long as `&mut self`. The
        // pointer only works around the borrow checker's view of a borrow
        // returned on some paths (non-I/O exits are returned from here);
        // on the port-I/O path the exit is taken apart below before `self`
        // is used again, so no two live references overlap.
        let exit = match unsafe { &mut *fd }.run() {
            Ok(exit) => exit,
            // A signal (the VMM kicking this thread) or immediate_exit.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(VmExit::Interrupted)
            }
            Err(e) => {
                return Err(BackendError::os(
                    "KVM_RUN",
                    io::Error::from_raw_os_error(e.errno()),
                ))
            }
        };
        // Port I/O's access size (string I/O comes as one exit of several
        // accesses in one slice) is in `kvm_run`, which the exit's borrow
        // of the vCPU keeps out of reach: take the data slice apart, let
        // that borrow end, read the size, and put the slice back together.
        let (is_in, port, data, len) = match exit {
            VcpuExit::IoIn(port, data) => (true, port, data.as_mut_ptr(), data.len()),
            VcpuExit::IoOut(port, data) => (false, port, data.as_ptr().cast_mut(), data.len()),
            other => return Ok(other_exit(other)),
        };
        let size = self.io_size();
        // SAFETY: the slice KVM_RUN just returned, in this vCPU's `kvm_run`
        // mapping (page KVM_PIO_PAGE_OFFSET), which lives as long as
        // `self.fd`; `io_size` touched only the `kvm_run` struct on the
        // mapping's first page, and nothing else refers to these bytes
        // until the next run, which needs `&mut self` again.
        let data = unsafe { std::slice::from_raw_parts_mut(data, len) };
        Ok(if is_in {
            VmExit::IoIn { port, size, data }
        } else {
            VmExit::IoOut { port, size, data }
        })
    }
}

/// Every exit but port I/O, in the backend-neutral form.
fn other_exit(exit: VcpuExit<'_>) -> VmExit<'_> {
    match exit {
        VcpuExit::MmioRead(gpa, data) => VmExit::MmioRead { gpa, data },
        VcpuExit::MmioWrite(gpa, data) => VmExit::MmioWrite { gpa, data },
        VcpuExit::Hlt => VmExit::Hlt,
        VcpuExit::Shutdown => VmExit::Shutdown,
        VcpuExit::Intr => VmExit::Interrupted,
        VcpuExit::FailEntry(reason, _cpu) => VmExit::FailEntry { reason },
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => VmExit::PowerOff,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => VmExit::Reset,
        other => VmExit::Unhandled {
            backend: "kvm",
            reason: unhandled_code(&other),
        },
    }
}
