//! The vendor-neutral description of an exit. The SVM decoder below reads
//! the VMCB's exit code and exit information once; the root's policy
//! (`exit`) and the guests' (`guest`) work on [`Exit`], so Intel VMX can
//! slot in beneath the same policy with a decoder of its own.

use microv_abi::ExitKind;
use microv_arch::svm::{exit, Control};

use crate::io;

/// Why a vCPU stopped running guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Cpuid,
    /// RDMSR or WRMSR.
    Msr { write: bool },
    /// VMMCALL (AMD) or VMCALL (Intel).
    Hypercall,
    /// IN, OUT, INS or OUTS; `next_rip` is where the instruction ends.
    Io { access: io::Access, next_rip: u64 },
    /// A guest-physical access its nested tables do not allow.
    NestedFault { gpa: u64, write: bool, fetch: bool },
    Hlt,
    /// A host interrupt, NMI or SMI: the CPU goes back to the root.
    HostInterrupt,
    /// The guest can take an interrupt now (the window MicroV asked for).
    InterruptWindow,
    /// IRET, about to run (intercepted while an NMI handler runs).
    Iret,
    /// A triple fault.
    Shutdown,
    /// An INIT signal.
    Init,
    /// A virtualization instruction (VMRUN, VMLOAD, VMSAVE, STGI, CLGI,
    /// SKINIT, INVLPGA; VMX instructions on Intel).
    VirtInstruction,
    Xsetbv,
    Invd,
    /// The CPU refused the vCPU's state; the vendor's code, for reports.
    EntryFailed(u64),
    /// Anything else; the vendor's code, for reports.
    Other(u64),
}

impl Exit {
    /// The class `microv status` counts the exit under.
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::Cpuid => ExitKind::Cpuid,
            Exit::Msr { write: false } => ExitKind::MsrRead,
            Exit::Msr { write: true } => ExitKind::MsrWrite,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::NestedFault { .. } => ExitKind::NestedPageFault,
            Exit::VirtInstruction => ExitKind::SvmInstruction,
            Exit::Init => ExitKind::Init,
            Exit::Shutdown => ExitKind::Shutdown,
            Exit::Xsetbv => ExitKind::Xsetbv,
            Exit::Io { .. } => ExitKind::Io,
            _ => ExitKind::Other,
        }
    }
}

/// Exits of the SVM instructions (a root or guest must see them fault).
pub const SVM_INSTRUCTIONS: [u64; 7] = [
    exit::VMRUN,
    exit::VMLOAD,
    exit::VMSAVE,
    exit::STGI,
    exit::CLGI,
    exit::SKINIT,
    exit::INVLPGA,
];

/// Bits of a nested page fault's EXITINFO1.
mod npf {
    pub const WRITE: u64 = 1 << 1;
    pub const FETCH: u64 = 1 << 4;
}

/// Decodes an SVM exit.
pub fn decode_svm(c: &Control) -> Exit {
    match c.exit_code {
        exit::CPUID => Exit::Cpuid,
        exit::MSR => Exit::Msr {
            write: c.exit_info1 != 0,
        },
        exit::VMMCALL => Exit::Hypercall,
        exit::IOIO => Exit::Io {
            access: io::decode(c.exit_info1),
            // EXITINFO2 holds the RIP after the instruction.
            next_rip: c.exit_info2,
        },
        exit::NPF => Exit::NestedFault {
            gpa: c.exit_info2,
            write: c.exit_info1 & npf::WRITE != 0,
            fetch: c.exit_info1 & npf::FETCH != 0,
        },
        exit::HLT => Exit::Hlt,
        exit::INTR | exit::NMI | exit::SMI => Exit::HostInterrupt,
        exit::VINTR => Exit::InterruptWindow,
        exit::IRET => Exit::Iret,
        exit::SHUTDOWN => Exit::Shutdown,
        exit::INIT => Exit::Init,
        code if SVM_INSTRUCTIONS.contains(&code) => Exit::VirtInstruction,
        exit::XSETBV => Exit::Xsetbv,
        exit::INVD => Exit::Invd,
        exit::INVALID => Exit::EntryFailed(exit::INVALID),
        code => Exit::Other(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::svm::Vmcb;
    use zerocopy::FromZeros;

    fn control(code: u64, info1: u64, info2: u64) -> Control {
        let mut v = Vmcb::new_zeroed();
        v.control.exit_code = code;
        v.control.exit_info1 = info1;
        v.control.exit_info2 = info2;
        v.control
    }

    #[test]
    fn every_exit_policy_needs_is_decoded() {
        let cases = [
            (exit::CPUID, 0, 0, Exit::Cpuid),
            (exit::MSR, 0, 0, Exit::Msr { write: false }),
            (exit::MSR, 1, 0, Exit::Msr { write: true }),
            (exit::VMMCALL, 0, 0, Exit::Hypercall),
            (exit::HLT, 0, 0, Exit::Hlt),
            (exit::INTR, 0, 0, Exit::HostInterrupt),
            (exit::NMI, 0, 0, Exit::HostInterrupt),
            (exit::SMI, 0, 0, Exit::HostInterrupt),
            (exit::VINTR, 0, 0, Exit::InterruptWindow),
            (exit::IRET, 0, 0, Exit::Iret),
            (exit::SHUTDOWN, 0, 0, Exit::Shutdown),
            (exit::INIT, 0, 0, Exit::Init),
            (exit::VMRUN, 0, 0, Exit::VirtInstruction),
            (exit::INVLPGA, 0, 0, Exit::VirtInstruction),
            (exit::XSETBV, 0, 0, Exit::Xsetbv),
            (exit::RDTSCP, 0, 0, Exit::Other(exit::RDTSCP)),
            (exit::INVD, 0, 0, Exit::Invd),
            (exit::INVALID, 0, 0, Exit::EntryFailed(exit::INVALID)),
            (0x7e, 0, 0, Exit::Other(0x7e)),
            (
                exit::NPF,
                npf::WRITE | 1,
                0xfee0_0000,
                Exit::NestedFault { gpa: 0xfee0_0000, write: true, fetch: false },
            ),
            (
                exit::NPF,
                npf::FETCH,
                0x1000,
                Exit::NestedFault { gpa: 0x1000, write: false, fetch: true },
            ),
        ];
        for (code, info1, info2, expected) in cases {
            assert_eq!(decode_svm(&control(code, info1, info2)), expected, "{code:#x}");
        }
        // How `microv status` counts them.
        let kinds = [
            (Exit::Cpuid, ExitKind::Cpuid),
            (Exit::Msr { write: false }, ExitKind::MsrRead),
            (Exit::Msr { write: true }, ExitKind::MsrWrite),
            (Exit::Hypercall, ExitKind::Hypercall),
            (Exit::NestedFault { gpa: 0, write: false, fetch: false }, ExitKind::NestedPageFault),
            (Exit::VirtInstruction, ExitKind::SvmInstruction),
            (Exit::Init, ExitKind::Init),
            (Exit::Shutdown, ExitKind::Shutdown),
            (Exit::Xsetbv, ExitKind::Xsetbv),
            (Exit::Hlt, ExitKind::Other),
        ];
        for (e, kind) in kinds {
            assert_eq!(e.kind(), kind, "{e:?}");
        }
        // OUT DX, AL to 0x3f8; the next RIP comes along.
        let e = decode_svm(&control(exit::IOIO, 0x3f8 << 16 | 1 << 4, 0x1003));
        let Exit::Io { access, next_rip } = e else {
            panic!("{e:?}")
        };
        assert_eq!((access.port, access.size, access.is_in, next_rip), (0x3f8, 1, false, 0x1003));
    }
}
