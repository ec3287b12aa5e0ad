//! A VM exit as the extension reads it: the guest state back into the
//! save area (`vmx_state::read_guest`) and an SVM #VMEXIT synthesized in
//! the control area (exit code, EXITINFO1/2, EXITINTINFO, next RIP) from
//! the VMX exit reason, qualification and information fields (SDM Vol. 3C
//! 28.2, Vol. 3D appendix C; APM vol. 2 15.9–15.14 for the SVM side).
//!
//! Every exit the root's policy handles gets the SVM code it knows. VMX
//! instructions and INVEPT, INVVPID and VMFUNC become VMRUN, the class the
//! policy answers with #UD; an entry failure and an EPT misconfiguration
//! (a fault in MicroV's own tables) become SVM's invalid-state exit, on
//! which the policy stops MicroV. A reason with no SVM counterpart is
//! `UNMAPPED_BASE` plus the basic reason: an exit the policy reports as
//! unexpected.

use microv_abi::syscall::VsRegs;
use microv_arch::svm::{exit, ioio, npf, Control, SaveArea};
use microv_arch::vmx::ept::{EptViolation, LinearAccess};
use microv_arch::vmx::event::{interruptibility, vector, Event, EventType};
use microv_arch::vmx::exit::{reason, CrAccess, ExitReason, IoAccess, MovDr};
use microv_arch::vmx::fields::{exit_info, guest};
use microv_arch::vmx::instruction_error::VmFail;
use microv_arch::vmx::vmcs::Vmcs;

use crate::vmx_event::Vectoring;
use crate::vmx_state::{self, VmxCpu};

/// Exit codes for VMX exits SVM has no counterpart for: this plus the
/// basic exit reason (above every SVM code but the invalid state's).
pub const UNMAPPED_BASE: u64 = 0x1_0000;

/// EXITINFO1 bit 63 of a CR access: a MOV, with the GPR in bits 3:0.
const CR_MOV: u64 = 1 << 63;

/// What the microkernel keeps of an exit besides what the control area
/// shows the extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit-reason field, as the CPU wrote it.
    pub reason: u32,
    /// The event whose delivery the exit interrupted, for the next
    /// `write_guest`.
    pub vectoring: Option<Vectoring>,
}

/// The SVM view of an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmExit {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    /// Where the exiting instruction ends (0 if the exit was no
    /// instruction's).
    pub next_rip: u64,
}

/// Reads the exit of the current VMCS into `save` and `control`, and RAX
/// from `regs`. The extension's EVENTINJ is consumed (0), as VMRUN does.
/// Where an IRET that unblocked NMIs faulted (and is to run again),
/// blocking by NMI is set again in the VMCS, as the SDM asks (28.2.3).
pub fn read_exit(
    vmcs: &mut dyn Vmcs,
    cpu: &VmxCpu,
    save: &mut SaveArea,
    control: &mut Control,
    regs: &VsRegs,
) -> Result<ExitRecord, VmFail> {
    vmx_state::read_guest(vmcs, cpu, save, control, regs)?;
    let raw = exit_info::REASON.read(vmcs)?;
    let reason = ExitReason::decode(raw);
    let vectoring = if reason.entry_failure {
        None
    } else {
        read_vectoring(vmcs)?
    };
    let svm = synthesize(raw, vmcs, save.rip, save.cpl, cpu)?;
    control.exit_code = svm.code;
    control.exit_info1 = svm.info1;
    control.exit_info2 = svm.info2;
    control.next_rip = svm.next_rip;
    control.exit_int_info = vectoring.and_then(|v| v.to_svm()).unwrap_or(0);
    control.event_inj = 0;
    control.insn_len = 0;
    if vectoring.is_none() && nmi_unblocked_by_iret(reason, vmcs)? {
        let i = guest::INTERRUPTIBILITY.read(vmcs)?;
        guest::INTERRUPTIBILITY.write(vmcs, i | interruptibility::BLOCKING_BY_NMI)?;
    }
    Ok(ExitRecord {
        reason: raw,
        vectoring,
    })
}

/// The IDT-vectoring fields, if they describe an event.
fn read_vectoring(vmcs: &mut dyn Vmcs) -> Result<Option<Vectoring>, VmFail> {
    let info = exit_info::IDT_VECTORING_INFO.read(vmcs)?;
    let Some(event) = Event::decode(info) else {
        return Ok(None);
    };
    let error_code = if event.error_code {
        exit_info::IDT_VECTORING_ERROR_CODE.read(vmcs)?
    } else {
        0
    };
    let instruction_length = if is_software(event.kind) {
        exit_info::INSTRUCTION_LENGTH.read(vmcs)?
    } else {
        0
    };
    Ok(Some(Vectoring {
        info,
        error_code,
        instruction_length,
    }))
}

/// Events raised by an instruction, whose length goes with them.
fn is_software(kind: EventType) -> bool {
    matches!(
        kind,
        EventType::SoftwareInterrupt
            | EventType::SoftwareException
            | EventType::PrivilegedSoftwareException
    )
}

/// Bit 12 of the exit's interruption information (exception exits) or
/// qualification (EPT violations, a full page-modification log).
fn nmi_unblocked_by_iret(reason: ExitReason, vmcs: &mut dyn Vmcs) -> Result<bool, VmFail> {
    const BIT12: u64 = 1 << 12;
    Ok(match reason.basic {
        _ if reason.entry_failure => false,
        reason::EXCEPTION_OR_NMI => {
            u64::from(exit_info::INTERRUPTION_INFO.read(vmcs)?) & BIT12 != 0
        }
        reason::EPT_VIOLATION | reason::PML_FULL => {
            exit_info::QUALIFICATION.read(vmcs)? & BIT12 != 0
        }
        _ => false,
    })
}

/// The SVM exit for the VMX exit with exit-reason field `raw`, reading the
/// information fields it needs; `rip` and `cpl` are the guest's.
pub fn synthesize(
    raw: u32,
    vmcs: &mut dyn Vmcs,
    rip: u64,
    cpl: u8,
    cpu: &VmxCpu,
) -> Result<SvmExit, VmFail> {
    let reason = ExitReason::decode(raw);
    if reason.entry_failure {
        return Ok(SvmExit {
            code: exit::INVALID,
            info1: u64::from(raw),
            info2: exit_info::QUALIFICATION.read(vmcs)?,
            next_rip: 0,
        });
    }
    let basic = reason.basic;
    let next_rip = if is_instruction(basic) {
        rip.wrapping_add(u64::from(exit_info::INSTRUCTION_LENGTH.read(vmcs)?))
    } else {
        0
    };
    let simple = |code| SvmExit {
        code,
        info1: 0,
        info2: 0,
        next_rip,
    };
    Ok(match basic {
        reason::EXCEPTION_OR_NMI => exception(vmcs, rip)?,
        reason::CR_ACCESS => {
            let (code, info1) = match CrAccess::decode(exit_info::QUALIFICATION.read(vmcs)?) {
                CrAccess::MovTo { cr, gpr } => {
                    (exit::CR_WRITE_BASE + u64::from(cr), CR_MOV | u64::from(gpr))
                }
                CrAccess::MovFrom { cr, gpr } => {
                    (exit::CR_READ_BASE + u64::from(cr), CR_MOV | u64::from(gpr))
                }
                CrAccess::Clts | CrAccess::Lmsw { .. } => (exit::CR_WRITE_BASE, 0),
            };
            SvmExit {
                code,
                info1,
                ..simple(0)
            }
        }
        reason::MOV_DR => {
            let m = MovDr::decode(exit_info::QUALIFICATION.read(vmcs)?);
            let base = if m.to_dr {
                exit::DR_WRITE_BASE
            } else {
                exit::DR_READ_BASE
            };
            SvmExit {
                code: base + u64::from(m.dr),
                info1: u64::from(m.gpr),
                ..simple(0)
            }
        }
        reason::IO_INSTRUCTION => {
            let q = exit_info::QUALIFICATION.read(vmcs)?;
            match IoAccess::decode(q) {
                Some(io) => {
                    let string_info = if io.string && cpu.ins_outs_info {
                        Some(exit_info::INSTRUCTION_INFO.read(vmcs)?)
                    } else {
                        None
                    };
                    SvmExit {
                        code: exit::IOIO,
                        info1: ioio_info(&io, string_info),
                        // SVM's EXITINFO2: the RIP after the instruction.
                        info2: next_rip,
                        next_rip,
                    }
                }
                None => simple(UNMAPPED_BASE + u64::from(basic)),
            }
        }
        reason::RDMSR => simple(exit::MSR),
        reason::WRMSR => SvmExit {
            info1: 1,
            ..simple(exit::MSR)
        },
        reason::EPT_VIOLATION => SvmExit {
            code: exit::NPF,
            info1: npf_info(
                &EptViolation::decode(exit_info::QUALIFICATION.read(vmcs)?, false),
                cpl,
            ),
            info2: exit_info::GUEST_PHYSICAL_ADDRESS.read(vmcs)?,
            next_rip: 0,
        },
        reason::EPT_MISCONFIGURATION => SvmExit {
            code: exit::INVALID,
            info1: u64::from(raw),
            info2: exit_info::GUEST_PHYSICAL_ADDRESS.read(vmcs)?,
            next_rip: 0,
        },
        other => simple(simple_code(other)),
    })
}

/// The SVM code of an exit that needs no information decoded.
pub fn simple_code(basic: u16) -> u64 {
    match basic {
        reason::EXTERNAL_INTERRUPT => exit::INTR,
        reason::TRIPLE_FAULT => exit::SHUTDOWN,
        reason::INIT => exit::INIT,
        reason::IO_SMI | reason::OTHER_SMI => exit::SMI,
        reason::INTERRUPT_WINDOW => exit::VINTR,
        reason::TASK_SWITCH => exit::TASK_SWITCH,
        reason::CPUID => exit::CPUID,
        reason::HLT => exit::HLT,
        reason::INVD => exit::INVD,
        reason::INVLPG => exit::INVLPG,
        reason::RDPMC => exit::RDPMC,
        reason::RDTSC => exit::RDTSC,
        reason::RSM => exit::RSM,
        reason::VMCALL => exit::VMMCALL,
        reason::VMCLEAR
        | reason::VMLAUNCH
        | reason::VMPTRLD
        | reason::VMPTRST
        | reason::VMREAD
        | reason::VMRESUME
        | reason::VMWRITE
        | reason::VMXOFF
        | reason::VMXON
        | reason::INVEPT
        | reason::INVVPID
        | reason::VMFUNC => exit::VMRUN,
        reason::MWAIT => exit::MWAIT,
        reason::MONITOR => exit::MONITOR,
        reason::PAUSE => exit::PAUSE,
        reason::RDTSCP => exit::RDTSCP,
        reason::WBINVD => exit::WBINVD,
        reason::XSETBV => exit::XSETBV,
        reason::INVPCID => exit::INVPCID,
        other => UNMAPPED_BASE + u64::from(other),
    }
}

/// Exits caused by executing an instruction: the VM-exit instruction
/// length is valid (SDM Vol. 3C 28.2.5), and next RIP follows from it.
fn is_instruction(basic: u16) -> bool {
    use reason::*;
    matches!(
        basic,
        CPUID
            | GETSEC
            | HLT
            | INVD
            | INVLPG
            | RDPMC
            | RDTSC
            | RSM
            | VMCALL
            | VMCLEAR
            | VMLAUNCH
            | VMPTRLD
            | VMPTRST
            | VMREAD
            | VMRESUME
            | VMWRITE
            | VMXOFF
            | VMXON
            | CR_ACCESS
            | MOV_DR
            | IO_INSTRUCTION
            | RDMSR
            | WRMSR
            | MWAIT
            | MONITOR
            | PAUSE
            | GDTR_IDTR_ACCESS
            | LDTR_TR_ACCESS
            | INVEPT
            | RDTSCP
            | INVVPID
            | WBINVD
            | XSETBV
            | RDRAND
            | INVPCID
            | VMFUNC
            | ENCLS
            | RDSEED
            | XSAVES
            | XRSTORS
            | PCONFIG
            | UMWAIT
            | TPAUSE
            | LOADIWKEY
            | ENCLV
    )
}

/// An exception or NMI exit: SVM's NMI exit, or its exception exit with
/// the error code in EXITINFO1 and, for #PF, the address in EXITINFO2.
/// INT3 and INTO have a next RIP.
fn exception(vmcs: &mut dyn Vmcs, rip: u64) -> Result<SvmExit, VmFail> {
    let Some(event) = Event::decode(exit_info::INTERRUPTION_INFO.read(vmcs)?) else {
        return Ok(SvmExit {
            code: UNMAPPED_BASE + u64::from(reason::EXCEPTION_OR_NMI),
            ..SvmExit::default()
        });
    };
    if event.kind == EventType::Nmi {
        return Ok(SvmExit {
            code: exit::NMI,
            ..SvmExit::default()
        });
    }
    let info1 = if event.error_code {
        u64::from(exit_info::INTERRUPTION_ERROR_CODE.read(vmcs)?)
    } else {
        0
    };
    let info2 = if event.vector == vector::PF {
        exit_info::QUALIFICATION.read(vmcs)?
    } else {
        0
    };
    let next_rip = if is_software(event.kind) {
        rip.wrapping_add(u64::from(exit_info::INSTRUCTION_LENGTH.read(vmcs)?))
    } else {
        0
    };
    Ok(SvmExit {
        code: exit::EXCEPTION_BASE + u64::from(event.vector),
        info1,
        info2,
        next_rip,
    })
}

/// SVM's IOIO EXITINFO1 for `io`; `string_info` is the VM-exit
/// instruction information of INS/OUTS, where the CPU reports it (address
/// size in bits 9:7, segment in bits 17:15).
pub fn ioio_info(io: &IoAccess, string_info: Option<u32>) -> u64 {
    let size = match io.size {
        1 => ioio::SIZE8,
        2 => ioio::SIZE16,
        _ => ioio::SIZE32,
    };
    let flag = |set: bool, bit: u64| if set { bit } else { 0 };
    let addressing = string_info.map_or(0, |i| {
        let size = match (i >> 7) & 7 {
            0 => ioio::ADDR16,
            1 => ioio::ADDR32,
            2 => ioio::ADDR64,
            _ => 0,
        };
        size | u64::from((i >> 15) & 7) << ioio::SEGMENT_SHIFT
    });
    u64::from(io.port) << ioio::PORT_SHIFT
        | flag(io.input, ioio::IN)
        | flag(io.string, ioio::STRING)
        | flag(io.rep, ioio::REP)
        | size
        | addressing
}

/// SVM's nested-page-fault EXITINFO1 for EPT violation `v` at CPL `cpl`.
pub fn npf_info(v: &EptViolation, cpl: u8) -> u64 {
    let flag = |set: bool, bit: u64| if set { bit } else { 0 };
    flag(!v.not_present(), npf::PRESENT)
        | flag(v.write, npf::WRITE)
        | flag(cpl == 3, npf::USER)
        | flag(v.fetch, npf::FETCH)
        | flag(
            v.linear == Some(LinearAccess::Translated),
            npf::FINAL_ADDRESS,
        )
        | flag(
            v.linear == Some(LinearAccess::PagingStructure),
            npf::PAGE_TABLE,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx_state::tests::{cpu, linux};
    use microv_abi::launch::gpr;
    use microv_arch::svm::{event as svm_event, Vmcb};
    use microv_arch::vmx::fields::control;
    use microv_arch::vmx::vmcs::fake::FakeVmcs;
    use microv_extension::neutral::{decode_svm, Exit};

    const RIP: u64 = 0xffff_ffff_8100_0040;

    /// Linux's root vCPU entered (its state written into a VMCS), then
    /// exited with `raw`, the information fields set by `info`.
    fn exited(raw: u32, info: impl FnOnce(&mut FakeVmcs)) -> (Box<Vmcb>, FakeVmcs, ExitRecord) {
        let mut v = linux();
        let mut vmcs = FakeVmcs::default();
        guest::INTERRUPTIBILITY.write(&mut vmcs, 0).unwrap();
        guest::PENDING_DEBUG_EXCEPTIONS.write(&mut vmcs, 0).unwrap();
        control::ENTRY_CONTROLS.write(&mut vmcs, 0x11ff).unwrap();
        let mut regs = VsRegs::default();
        vmx_state::write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs).unwrap();
        vmcs.exit_info(exit_info::REASON, raw);
        vmcs.exit_info(exit_info::IDT_VECTORING_INFO, 0);
        info(&mut vmcs);
        v.control.event_inj = svm_event::exception(6);
        regs.gprs[gpr::RAX] = 0xabcd;
        let record = read_exit(&mut vmcs, &cpu(), &mut v.save, &mut v.control, &regs).unwrap();
        (v, vmcs, record)
    }

    /// The exit `raw` of an instruction of `len` bytes.
    fn instruction(raw: u16, len: u32) -> Box<Vmcb> {
        exited(u32::from(raw), |vmcs| {
            vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, len)
        })
        .0
    }

    #[test]
    fn instruction_exits_become_the_svm_exits_policy_handles() {
        let cases = [
            (reason::CPUID, 2, exit::CPUID, Exit::Cpuid),
            (reason::VMCALL, 3, exit::VMMCALL, Exit::Hypercall),
            (reason::XSETBV, 3, exit::XSETBV, Exit::Xsetbv),
            (reason::INVD, 2, exit::INVD, Exit::Invd),
            (reason::HLT, 1, exit::HLT, Exit::Hlt),
            (reason::RDMSR, 2, exit::MSR, Exit::Msr { write: false }),
            (reason::WRMSR, 2, exit::MSR, Exit::Msr { write: true }),
        ];
        for (raw, len, code, decoded) in cases {
            let v = instruction(raw, len);
            assert_eq!(v.control.exit_code, code, "{raw}");
            assert_eq!(v.control.next_rip, RIP + u64::from(len), "{raw}");
            assert_eq!(decode_svm(&v.control), decoded, "{raw}");
            assert_eq!(
                (v.control.exit_int_info, v.control.event_inj),
                (0, 0),
                "{raw}"
            );
        }
        // The policy's skip() moves to the CPU's next RIP (a prefixed
        // CPUID is 3 bytes).
        let mut v = instruction(reason::CPUID, 3);
        microv_extension::exit::skip(&mut v, 2);
        assert_eq!(v.save.rip, RIP + 3);
        // RAX came back from the register page.
        assert_eq!(v.save.rax, 0xabcd);
    }

    #[test]
    fn vmx_instructions_raise_ud_as_svm_ones_do() {
        let vmx = [
            reason::VMCLEAR,
            reason::VMLAUNCH,
            reason::VMPTRLD,
            reason::VMPTRST,
            reason::VMREAD,
            reason::VMRESUME,
            reason::VMWRITE,
            reason::VMXOFF,
            reason::VMXON,
            reason::INVEPT,
            reason::INVVPID,
            reason::VMFUNC,
        ];
        for raw in vmx {
            let v = instruction(raw, 3);
            assert_eq!(decode_svm(&v.control), Exit::VirtInstruction, "{raw}");
            assert_eq!(v.control.next_rip, RIP + 3);
        }
    }

    #[test]
    fn events_and_signals_map() {
        let cases = [
            (reason::EXTERNAL_INTERRUPT, exit::INTR, Exit::HostInterrupt),
            (reason::TRIPLE_FAULT, exit::SHUTDOWN, Exit::Shutdown),
            (reason::INIT, exit::INIT, Exit::Init),
            (reason::OTHER_SMI, exit::SMI, Exit::HostInterrupt),
            (reason::INTERRUPT_WINDOW, exit::VINTR, Exit::InterruptWindow),
        ];
        for (raw, code, decoded) in cases {
            let (v, _, record) = exited(u32::from(raw), |_| {});
            assert_eq!(
                (v.control.exit_code, v.control.next_rip),
                (code, 0),
                "{raw}"
            );
            assert_eq!(decode_svm(&v.control), decoded, "{raw}");
            assert_eq!(
                record,
                ExitRecord {
                    reason: u32::from(raw),
                    vectoring: None
                }
            );
        }
        // Others SVM has: their codes, which the root's policy does not
        // expect (it answers #UD).
        let more = [
            (reason::TASK_SWITCH, exit::TASK_SWITCH),
            (reason::INVLPG, exit::INVLPG),
            (reason::RDPMC, exit::RDPMC),
            (reason::RDTSC, exit::RDTSC),
            (reason::RSM, exit::RSM),
            (reason::MWAIT, exit::MWAIT),
            (reason::MONITOR, exit::MONITOR),
            (reason::PAUSE, exit::PAUSE),
            (reason::RDTSCP, exit::RDTSCP),
            (reason::WBINVD, exit::WBINVD),
            (reason::INVPCID, exit::INVPCID),
        ];
        for (raw, code) in more {
            assert_eq!(simple_code(raw), code, "{raw}");
            assert_eq!(decode_svm(&instruction(raw, 2).control), Exit::Other(code));
        }
    }

    #[test]
    fn exits_svm_lacks_are_reported_unhandled() {
        for raw in [
            reason::SIPI,
            reason::NMI_WINDOW,
            reason::GETSEC,
            reason::PREEMPTION_TIMER,
            99,
        ] {
            let v = instruction(raw, 2);
            let code = UNMAPPED_BASE + u64::from(raw);
            assert_eq!(v.control.exit_code, code);
            assert_eq!(decode_svm(&v.control), Exit::Other(code));
        }
        // GETSEC is an instruction: next RIP is known; SIPI is not.
        assert_eq!(instruction(reason::GETSEC, 3).control.next_rip, RIP + 3);
        assert_eq!(instruction(reason::SIPI, 3).control.next_rip, 0);
    }

    #[test]
    fn entry_failures_and_ept_misconfigurations_stop_microv() {
        let (v, _, record) = exited(0x8000_0021, |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 0)
        });
        assert_eq!(decode_svm(&v.control), Exit::EntryFailed(exit::INVALID));
        assert_eq!(
            (v.control.exit_info1, v.control.exit_info2),
            (0x8000_0021, 0)
        );
        assert_eq!(record.vectoring, None);
        // An MSR-loading failure names the entry.
        let (v, _, _) = exited(0x8000_0022, |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 3)
        });
        assert_eq!(
            (v.control.exit_code, v.control.exit_info2),
            (exit::INVALID, 3)
        );
        let (v, _, _) = exited(u32::from(reason::EPT_MISCONFIGURATION), |vmcs| {
            vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0xfee0_0000)
        });
        assert_eq!(decode_svm(&v.control), Exit::EntryFailed(exit::INVALID));
        assert_eq!(
            (v.control.exit_info1, v.control.exit_info2),
            (49, 0xfee0_0000)
        );
    }

    #[test]
    fn ept_violations_become_nested_page_faults() {
        let fault = |qualification: u64, cpl3: bool| {
            exited(u32::from(reason::EPT_VIOLATION), |vmcs| {
                vmcs.exit_info(exit_info::QUALIFICATION, qualification);
                vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0xfee0_0300);
                if cpl3 {
                    guest::SS_ACCESS_RIGHTS.write(vmcs, 0xc0f3).unwrap();
                }
            })
            .0
        };
        // A write to a read-only page (readable, executable) by a
        // translated linear address: present, write, final address.
        let v = fault(0x1aa, false);
        assert_eq!(v.control.exit_code, exit::NPF);
        assert_eq!(
            v.control.exit_info1,
            npf::PRESENT | npf::WRITE | npf::FINAL_ADDRESS
        );
        assert_eq!(v.control.exit_info2, 0xfee0_0300);
        assert_eq!(v.control.next_rip, 0);
        assert_eq!(
            decode_svm(&v.control),
            Exit::NestedFault {
                gpa: 0xfee0_0300,
                write: true,
                fetch: false
            }
        );
        // A fetch from an unmapped page by user code; a read of a guest
        // page table that is not mapped.
        let v = fault(0x184, true);
        assert_eq!(
            v.control.exit_info1,
            npf::USER | npf::FETCH | npf::FINAL_ADDRESS
        );
        assert_eq!(
            decode_svm(&v.control),
            Exit::NestedFault {
                gpa: 0xfee0_0300,
                write: false,
                fetch: true
            }
        );
        assert_eq!(fault(0x81, false).control.exit_info1, npf::PAGE_TABLE);
        assert_eq!(fault(0x1, false).control.exit_info1, 0, "no linear address");
    }

    #[test]
    fn io_exits_carry_svms_information() {
        let io = |qualification: u64, instruction_info: u32, len: u32| {
            exited(u32::from(reason::IO_INSTRUCTION), |vmcs| {
                vmcs.exit_info(exit_info::QUALIFICATION, qualification);
                vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, len);
                vmcs.exit_info(exit_info::INSTRUCTION_INFO, instruction_info);
            })
            .0
        };
        // in eax, dx from 0xcfc.
        let v = io(0x0cfc_0003 | 1 << 3, 0, 1);
        assert_eq!(v.control.exit_code, exit::IOIO);
        assert_eq!(v.control.exit_info1, 0xcfc << 16 | ioio::IN | ioio::SIZE32);
        assert_eq!(
            (v.control.exit_info2, v.control.next_rip),
            (RIP + 1, RIP + 1)
        );
        let Exit::Io { access, next_rip } = decode_svm(&v.control) else {
            panic!("not I/O")
        };
        assert_eq!(
            (access.port, access.size, access.is_in, access.string),
            (0xcfc, 4, true, false)
        );
        assert_eq!(next_rip, RIP + 1);
        // out 0x80, al.
        let v = io(0x0080_0040, 0, 2);
        assert_eq!(v.control.exit_info1, 0x80 << 16 | ioio::SIZE8);
        // rep outsw with 64-bit addresses from DS (segment 3).
        let v = io(0x03f8_0031, 2 << 7 | 3 << 15, 3);
        assert_eq!(
            v.control.exit_info1,
            0x3f8 << 16 | ioio::STRING | ioio::REP | ioio::SIZE16 | ioio::ADDR64 | 3 << 10
        );
        let Exit::Io { access, .. } = decode_svm(&v.control) else {
            panic!("not I/O")
        };
        assert_eq!((access.size, access.rep, access.address_size), (2, true, 8));
        // 16- and 32-bit addressing; a CPU that does not report it.
        for (size, bit) in [(0, ioio::ADDR16), (1, ioio::ADDR32), (3, 0)] {
            let io = IoAccess::decode(0x10).unwrap();
            assert_eq!(ioio_info(&io, Some(size << 7)) & 0x380, bit);
        }
        let mut quiet = cpu();
        quiet.ins_outs_info = false;
        let mut vmcs = FakeVmcs::default();
        vmcs.exit_info(exit_info::QUALIFICATION, 0x03f8_0031);
        vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, 2);
        let e = synthesize(30, &mut vmcs, 0x1000, 0, &quiet).unwrap();
        assert_eq!(e.info1 & 0x1f80, 0, "no address size or segment");
        // An access size the SDM does not define.
        let v = io(0x0080_0002, 0, 2);
        assert_eq!(v.control.exit_code, UNMAPPED_BASE + 30);
    }

    #[test]
    fn cr_and_dr_accesses_get_svms_codes() {
        let access = |raw: u16, qualification: u64| {
            exited(u32::from(raw), |vmcs| {
                vmcs.exit_info(exit_info::QUALIFICATION, qualification);
                vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, 3);
            })
            .0
            .control
        };
        // mov cr4, rbx; mov r12, cr0; clts; lmsw.
        let c = access(reason::CR_ACCESS, 0x304);
        assert_eq!(
            (c.exit_code, c.exit_info1),
            (exit::CR_WRITE_BASE + 4, CR_MOV | 3)
        );
        let c = access(reason::CR_ACCESS, 0xc10);
        assert_eq!(
            (c.exit_code, c.exit_info1),
            (exit::CR_READ_BASE, CR_MOV | 12)
        );
        assert_eq!(
            access(reason::CR_ACCESS, 0x20).exit_code,
            exit::CR_WRITE_BASE
        );
        assert_eq!(access(reason::CR_ACCESS, 0x0001_0030).exit_info1, 0);
        // mov dr7, rcx; mov rax, dr6.
        let c = access(reason::MOV_DR, 0x107);
        assert_eq!(
            (c.exit_code, c.exit_info1, c.next_rip),
            (exit::DR_WRITE_BASE + 7, 1, RIP + 3)
        );
        let c = access(reason::MOV_DR, 0x016);
        assert_eq!((c.exit_code, c.exit_info1), (exit::DR_READ_BASE + 6, 0));
        assert_eq!(decode_svm(&c), Exit::Other(exit::DR_READ_BASE + 6));
    }

    #[test]
    fn exceptions_and_nmis_map() {
        let exception = |info: u32, code: u32, q: u64| {
            exited(0, |vmcs| {
                vmcs.exit_info(exit_info::INTERRUPTION_INFO, info);
                vmcs.exit_info(exit_info::INTERRUPTION_ERROR_CODE, code);
                vmcs.exit_info(exit_info::QUALIFICATION, q);
                vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, 1);
            })
        };
        let (v, ..) = exception(0x8000_0202, 0, 0);
        assert_eq!(decode_svm(&v.control), Exit::HostInterrupt);
        assert_eq!(v.control.exit_code, exit::NMI);
        // #PF with its error code and address; #UD; INT3 with a next RIP.
        let (v, ..) = exception(0x8000_0b0e, 2, 0xdead_b000);
        assert_eq!(v.control.exit_code, exit::EXCEPTION_BASE + 14);
        assert_eq!(
            (v.control.exit_info1, v.control.exit_info2),
            (2, 0xdead_b000)
        );
        let (v, ..) = exception(0x8000_0306, 0, 0);
        assert_eq!(
            (
                v.control.exit_code,
                v.control.exit_info1,
                v.control.next_rip
            ),
            (0x46, 0, 0)
        );
        let (v, ..) = exception(0x8000_0603, 0, 0);
        assert_eq!((v.control.exit_code, v.control.next_rip), (0x43, RIP + 1));
        // No valid information: reported unhandled.
        let (v, ..) = exception(0, 0, 0);
        assert_eq!(v.control.exit_code, UNMAPPED_BASE);
        // A #GP on an IRET that unblocked NMIs: NMIs are blocked again.
        let (_, mut vmcs, _) = exception(0x8000_1b0d, 0, 0);
        assert_eq!(
            guest::INTERRUPTIBILITY.read(&mut vmcs),
            Ok(interruptibility::BLOCKING_BY_NMI)
        );
    }

    #[test]
    fn interrupted_deliveries_are_kept_for_redelivery() {
        // An EPT violation while delivering a #PF (code 2): EXITINTINFO
        // for the extension, the record for the next entry.
        let (v, mut vmcs, record) = exited(u32::from(reason::EPT_VIOLATION), |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 0x1000 | 0x182);
            vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0x5000);
            vmcs.exit_info(exit_info::IDT_VECTORING_INFO, 0x8000_0b0e);
            vmcs.exit_info(exit_info::IDT_VECTORING_ERROR_CODE, 2);
        });
        assert_eq!(
            v.control.exit_int_info,
            svm_event::exception_with_code(14, 2)
        );
        let pf = Vectoring {
            info: 0x8000_0b0e,
            error_code: 2,
            instruction_length: 0,
        };
        assert_eq!(record.vectoring, Some(pf));
        // Bit 12 says nothing while an event was being delivered.
        assert_eq!(guest::INTERRUPTIBILITY.read(&mut vmcs), Ok(0));
        // INT 0x80 cut short: its length comes along.
        let (v, _, record) = exited(u32::from(reason::EPT_VIOLATION), |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 0x182);
            vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0x5000);
            vmcs.exit_info(exit_info::IDT_VECTORING_INFO, 0x8000_0480);
            vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, 2);
        });
        assert_eq!(
            v.control.exit_int_info,
            svm_event::VALID | svm_event::TYPE_SOFTWARE_INTERRUPT | 0x80
        );
        assert_eq!(record.vectoring.map(|r| r.instruction_length), Some(2));
        // An EPT violation on an IRET that unblocked NMIs, not during
        // delivery: blocked again.
        let (_, mut vmcs, _) = exited(u32::from(reason::EPT_VIOLATION), |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 0x1000 | 0x181);
            vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0x5000);
        });
        assert_eq!(
            guest::INTERRUPTIBILITY.read(&mut vmcs),
            Ok(interruptibility::BLOCKING_BY_NMI)
        );
    }

    #[test]
    fn the_policy_redelivers_and_the_entry_gets_the_cpus_words() {
        // The root's policy copies EXITINTINFO into EVENTINJ; the next
        // entry turns it back into the IDT-vectoring words.
        let (mut v, mut vmcs, record) = exited(u32::from(reason::EPT_VIOLATION), |vmcs| {
            vmcs.exit_info(exit_info::QUALIFICATION, 0x182);
            vmcs.exit_info(exit_info::GUEST_PHYSICAL_ADDRESS, 0x5000);
            vmcs.exit_info(exit_info::IDT_VECTORING_INFO, 0x8000_0603);
            vmcs.exit_info(exit_info::INSTRUCTION_LENGTH, 1);
        });
        v.control.event_inj = v.control.exit_int_info;
        let mut regs = VsRegs::default();
        vmx_state::write_guest(
            &v.save,
            &v.control,
            &mut regs,
            record.vectoring.as_ref(),
            &cpu(),
            &mut vmcs,
        )
        .unwrap();
        assert_eq!(
            control::ENTRY_INTERRUPTION_INFO.read(&mut vmcs),
            Ok(0x8000_0603)
        );
        assert_eq!(control::ENTRY_INSTRUCTION_LENGTH.read(&mut vmcs), Ok(1));
    }
}
