//! Handling the root VM's exits. The root takes as few exits as possible:
//! CPUID (to hide SVM and identify MicroV), the MSRs the allow-list does
//! not pass (`docs/msr-policy.md`), hypercalls, SVM instructions (they must
//! fault as on a CPU without SVM), XSETBV, PCI configuration ports
//! (`docs/io-ports.md`), nested page faults beyond the initial map, INIT
//! and shutdown. Whatever the root does to itself gets the bare-metal
//! answer; only a triple fault or an unrunnable state stops MicroV.

use microv_abi::hypercall::Status;
use microv_abi::launch::gpr;
use microv_abi::syscall::VsRegs;
use microv_abi::{ExitKind, StartError};
use microv_arch::svm::{event, vector, Vmcb};
use microv_arch::xsave;

use crate::cpuid;
use crate::host::Host;
use crate::hypercall::{self, Args, CallerInfo, Outcome};
use crate::io;
use crate::msr::{self, MsrOutcome};
use crate::neutral::Exit;
use crate::state::HvState;

/// Instruction lengths (TCG's SVM has no next-RIP save: MicroV knows them).
const CPUID_LEN: u64 = 2;
const MSR_LEN: u64 = 2;
const VMMCALL_LEN: u64 = 3;
const XSETBV_LEN: u64 = 3;
const INVD_LEN: u64 = 2;
const CR0_PG: u64 = 1 << 31;

/// What to do after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the vCPU again.
    Resume,
    /// Hand this CPU back to the root (its state is ready to promote).
    StopThisCpu,
    /// MicroV cannot go on: stop with this error and detail.
    Fail(StartError, u64),
    /// Fault on purpose (test images): the exit is left unhandled.
    TestFault(u64),
    /// `run.run`: run guest vCPU `vcpu` on this CPU; the root's call
    /// completes when the guest gives the CPU back.
    RunGuest(u64),
    /// `run.get_registers` (`set` None) or `run.set_registers` (the mask):
    /// copy between guest vCPU `vcpu` and its run page, then complete.
    Registers { vcpu: u64, set: Option<u64> },
}

fn reg(regs: &VsRegs, i: usize) -> u64 {
    regs.gprs.get(i).copied().unwrap_or(0)
}

fn set_reg(regs: &mut VsRegs, i: usize, v: u64) {
    if let Some(slot) = regs.gprs.get_mut(i) {
        *slot = v;
    }
}

/// Longest x86 instruction.
const MAX_INSN_LEN: u64 = 15;

/// Moves past the intercepted instruction: to where the CPU says it ends
/// (NRIP save, which counts prefixes) when it says so, else by the
/// instruction's usual length `len` (QEMU's TCG has no NRIP save).
pub fn skip(vmcb: &mut Vmcb, len: u64) {
    let rip = vmcb.save.rip;
    let next = vmcb.control.next_rip;
    advance(
        vmcb,
        if next > rip && next - rip <= MAX_INSN_LEN {
            next
        } else {
            rip.wrapping_add(len)
        },
    );
}

/// Moves the vCPU to `next`, the end of an instruction MicroV completed
/// for it.
pub fn advance(vmcb: &mut Vmcb, next: u64) {
    vmcb.save.rip = next;
    // The instruction completed: any STI/MOV SS shadow is over.
    vmcb.control.interrupt_shadow &= !1;
}

fn inject(vmcb: &mut Vmcb, ev: u64) {
    vmcb.control.event_inj = ev;
}

/// Handles the root vCPU of CPU `cpu`'s exit `exit` (decoded from `vmcb`).
pub fn handle(
    vmcb: &mut Vmcb,
    gprs: &mut VsRegs,
    exit: Exit,
    cpu: usize,
    hv: &HvState,
    host: &mut dyn Host,
) -> Action {
    // A write to the root's APIC page is emulated (root_apic) and counted
    // as its own kind.
    let apic_write = matches!(
        exit,
        Exit::NestedFault { gpa, write: true, .. } if gpa & !0xfff == hv.apic_page()
    );
    let kind = if apic_write {
        ExitKind::ApicWrite
    } else {
        exit.kind()
    };
    hv.count_exit(cpu, kind);
    // An event whose delivery the exit interrupted must be delivered again.
    vmcb.control.event_inj = if vmcb.control.exit_int_info & event::VALID != 0 {
        vmcb.control.exit_int_info
    } else {
        0
    };
    match exit {
        Exit::Cpuid => {
            cpuid(vmcb, gprs, host, hv);
            Action::Resume
        }
        Exit::Msr { write } => {
            let index = reg(gprs, gpr::RCX) as u32;
            let value = (reg(gprs, gpr::RDX) << 32) | (vmcb.save.rax & 0xffff_ffff);
            let paging = vmcb.save.cr0 & CR0_PG != 0;
            match msr::access(vmcb, host, index, write.then_some(value), paging) {
                MsrOutcome::Value(v) => {
                    vmcb.save.rax = v & 0xffff_ffff;
                    set_reg(gprs, gpr::RDX, v >> 32);
                    skip(vmcb, MSR_LEN);
                }
                MsrOutcome::Written => skip(vmcb, MSR_LEN),
                MsrOutcome::GeneralProtection => {
                    inject(vmcb, event::exception_with_code(vector::GP, 0))
                }
            }
            Action::Resume
        }
        Exit::Hypercall => {
            let caller = CallerInfo {
                cpl: vmcb.save.cpl,
                cpu,
                guest: false,
            };
            match hypercall::dispatch(vmcb.save.rax, Args::from_gprs(&gprs.gprs), caller, hv, host) {
                Outcome::InvalidOpcode => {
                    inject(vmcb, event::exception(vector::UD));
                    Action::Resume
                }
                Outcome::Done(status, out) => {
                    complete_hypercall(vmcb, gprs, status, out);
                    Action::Resume
                }
                // Completed when the guest returns the CPU to the root.
                Outcome::Run(vcpu) => Action::RunGuest(vcpu),
                Outcome::Registers { vcpu, set } => Action::Registers { vcpu, set },
                Outcome::StopThisCpu => {
                    vmcb.save.rax = Status::Success.as_u64();
                    skip(vmcb, VMMCALL_LEN);
                    Action::StopThisCpu
                }
                Outcome::TestFault(kind) => Action::TestFault(kind),
            }
        }
        Exit::VirtInstruction => {
            // The root sees no SVM: these raise #UD as they would natively.
            inject(vmcb, event::exception(vector::UD));
            Action::Resume
        }
        Exit::Xsetbv => {
            xsetbv(vmcb, gprs, host);
            Action::Resume
        }
        Exit::Invd => {
            // INVD drops dirty cache lines, MicroV's among them. Linux never
            // uses it; keeping memory coherent (a no-op) is the safe answer.
            skip(vmcb, INVD_LEN);
            Action::Resume
        }
        Exit::Io { access, next_rip } => {
            match io::emulate(&access, vmcb.save.rax, host) {
                io::Outcome::Rax(rax) => {
                    vmcb.save.rax = rax;
                    vmcb.save.rip = next_rip;
                    vmcb.control.interrupt_shadow &= !1;
                }
                io::Outcome::Unsupported => {
                    host.log(format_args!(
                        "cpu {cpu}: string I/O on port {:#x} refused (#GP)",
                        access.port
                    ));
                    inject(vmcb, event::exception_with_code(vector::GP, 0));
                }
            }
            Action::Resume
        }
        Exit::Init => {
            // CPU hot-plug is blocked while MicroV runs; an INIT here would
            // reset the CPU from under the hypervisor. Drop it, loudly.
            host.log(format_args!("cpu {cpu}: ignored INIT signal"));
            Action::Resume
        }
        Exit::NestedFault { gpa, .. } if apic_write => {
            crate::root_apic::xapic_write(vmcb, gprs, gpa, cpu, host);
            Action::Resume
        }
        Exit::NestedFault { gpa, .. } => {
            // Only guest-physical space beyond the initial map faults: map
            // it as bare metal has it. Beyond what the CPU can address there
            // is nothing to map: #GP, and MicroV carries on.
            if !host.map_root_gpa(gpa) {
                host.log(format_args!(
                    "cpu {cpu}: root access to {gpa:#x} beyond the physical address space (#GP, rip {:#x})",
                    vmcb.save.rip
                ));
                inject(vmcb, event::exception_with_code(vector::GP, 0));
            }
            Action::Resume
        }
        Exit::Shutdown => {
            // A triple fault resets a bare-metal machine: MicroV steps
            // aside and the root's reset happens natively.
            host.log(format_args!(
                "cpu {cpu}: the root VM shut down (triple fault) at rip {:#x}",
                vmcb.save.rip
            ));
            Action::Fail(StartError::RootShutdown, 0)
        }
        Exit::EntryFailed(code) => {
            host.log(format_args!(
                "cpu {cpu}: the root's state is not runnable (VMRUN failed) at rip {:#x}",
                vmcb.save.rip
            ));
            Action::Fail(StartError::ExtensionError, code)
        }
        Exit::Hlt
        | Exit::HostInterrupt
        | Exit::InterruptWindow
        | Exit::Iret
        | Exit::Other(_) => {
            // An exit MicroV never asked for: the root gets #UD, as for an
            // instruction the CPU does not have, and MicroV carries on.
            host.log(format_args!(
                "cpu {cpu}: unexpected exit {exit:?} at rip {:#x}: #UD",
                vmcb.save.rip
            ));
            inject(vmcb, event::exception(vector::UD));
            Action::Resume
        }
    }
}

/// CPUID for a root or guest vCPU: the root's view of the real CPU (no SVM,
/// MicroV's leaves), with the bits that follow the vCPU's CR4 and XCR0.
pub fn cpuid(vmcb: &mut Vmcb, gprs: &mut VsRegs, host: &mut dyn Host, hv: &HvState) {
    cpuid_with(vmcb, gprs, host, hv, &|_, _, r| r)
}

/// [`cpuid`] with `view` applied to the root's view first (a guest's).
pub fn cpuid_with(
    vmcb: &mut Vmcb,
    gprs: &mut VsRegs,
    host: &mut dyn Host,
    hv: &HvState,
    view: &dyn Fn(u32, u32, cpuid::CpuidResult) -> cpuid::CpuidResult,
) {
    let (leaf, subleaf) = (vmcb.save.rax as u32, reg(gprs, gpr::RCX) as u32);
    let real = if cpuid::is_synthetic(leaf) {
        Default::default()
    } else {
        host.cpuid(leaf, subleaf)
    };
    let dynamic = cpuid::Dynamic {
        cr4: vmcb.save.cr4,
        xcr0: gprs.xcr0,
        // No supervisor XSAVE components: XSS writes are refused.
        xss: 0,
    };
    let r = cpuid::dynamic_bits(
        leaf,
        subleaf,
        view(leaf, subleaf, cpuid::root_view(leaf, real, hv.tsc_khz())),
        &dynamic,
        &mut |i| host.cpuid(xsave::LEAF_XSAVE, i),
    );
    vmcb.save.rax = u64::from(r.eax);
    set_reg(gprs, gpr::RBX, u64::from(r.ebx));
    set_reg(gprs, gpr::RCX, u64::from(r.ecx));
    set_reg(gprs, gpr::RDX, u64::from(r.edx));
    skip(vmcb, CPUID_LEN);
}

/// Completes a `vmmcall`: the status in RAX, the results in R10–R13 on
/// success, RIP past the instruction.
pub fn complete_hypercall(vmcb: &mut Vmcb, gprs: &mut VsRegs, status: Status, out: Args) {
    vmcb.save.rax = status.as_u64();
    if status == Status::Success {
        out.to_gprs(&mut gprs.gprs);
    }
    skip(vmcb, VMMCALL_LEN);
}

/// XSETBV by the root: accepted exactly when the CPU would accept it
/// (CPL 0, XCR0 index, a valid value); the microkernel switches the new
/// XCR0 in around the root from then on.
pub fn xsetbv(vmcb: &mut Vmcb, regs: &mut VsRegs, host: &mut dyn Host) {
    let value = (reg(regs, gpr::RDX) << 32) | (vmcb.save.rax & 0xffff_ffff);
    let supported = xsave::supported_xcr0(host.cpuid(xsave::LEAF_XSAVE, 0));
    if vmcb.save.cpl != 0 || reg(regs, gpr::RCX) as u32 != 0 || !xsave::xcr0_valid(value, supported) {
        inject(vmcb, event::exception_with_code(vector::GP, 0));
        return;
    }
    regs.xcr0 = value;
    skip(vmcb, XSETBV_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neutral::SVM_INSTRUCTIONS;
    use microv_abi::ExitKind;
    use microv_arch::svm::exit;
    use crate::host::fake::FakeHost;
    use microv_abi::hypercall::{encode, Hypercall};
    use microv_arch::msr::{self as arch_msr, efer};
    use zerocopy::FromZeros;

    /// Decodes the exit in `v` as the hypervisor does, then handles it.
    fn run(v: &mut Vmcb, g: &mut VsRegs, cpu: usize, hv: &HvState, host: &mut dyn Host) -> Action {
        let e = crate::neutral::decode_svm(&v.control);
        handle(v, g, e, cpu, hv, host)
    }

    fn vcpu(code: u64) -> (Box<Vmcb>, VsRegs) {
        let mut v = Box::new(Vmcb::new_zeroed());
        v.control.exit_code = code;
        v.save.rip = 0x1000;
        v.save.efer = efer::LME | efer::LMA | efer::SVME;
        v.save.cr0 = CR0_PG;
        (v, VsRegs::default())
    }

    #[test]
    fn cpuid_answers_and_skips() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::CPUID);
        v.save.rax = 0x4000_0000;
        v.control.interrupt_shadow = 1;
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(v.save.rip, 0x1002);
        assert_eq!(v.control.interrupt_shadow, 0);
        assert_eq!(v.save.rax, 0x4000_0010);
        assert_eq!(g.gprs[gpr::RBX] as u32, u32::from_le_bytes(*b"Micr"));
        let (mut v, mut g) = vcpu(exit::CPUID);
        v.save.rax = 0x8000_0001;
        g.gprs[gpr::RCX] = 5;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rax, 0x8000_0001, "fake host echoes the leaf");
        assert_eq!(g.gprs[gpr::RBX], 5, "and the subleaf");
        assert_eq!(g.gprs[gpr::RCX] as u32 & microv_arch::cpuid::EXT1_ECX_SVM, 0);
        assert_eq!(hv.exit_count(0, ExitKind::Cpuid as usize), 2);
        // CPUID 0xD.1 EBX: the compacted size for the root's XCR0 alone,
        // whatever the real XSS holds. Fake CPUID 0xD.i: 13 bytes, aligned
        // to 64: x87|SSE|AVX is 576 + 13.
        host.msrs.insert(microv_arch::msr::XSS, 1 << 11 | 1 << 12);
        let (mut v, mut g) = vcpu(exit::CPUID);
        v.save.rax = 0xd;
        g.gprs[gpr::RCX] = 1;
        g.xcr0 = 0x7;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(g.gprs[gpr::RBX], 576 + 13);
    }

    #[test]
    fn msr_reads_writes_and_faults() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::MSR);
        g.gprs[gpr::RCX] = u64::from(arch_msr::EFER);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rax, (efer::LME | efer::LMA) & 0xffff_ffff);
        assert_eq!(v.save.rip, 0x1002);
        assert_eq!(hv.exit_count(0, ExitKind::MsrRead as usize), 1);
        assert_eq!(
            hv.exit_count(0, ExitKind::Other as usize),
            0,
            "counted once"
        );

        let (mut v, mut g) = vcpu(exit::MSR);
        v.control.exit_info1 = 1;
        g.gprs[gpr::RCX] = u64::from(arch_msr::EFER);
        v.save.rax = efer::LME | efer::LMA | efer::NXE;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.efer, efer::LME | efer::LMA | efer::NXE | efer::SVME);
        assert_eq!(hv.exit_count(0, ExitKind::MsrWrite as usize), 1);

        let (mut v, mut g) = vcpu(exit::MSR);
        v.control.exit_info1 = 1;
        g.gprs[gpr::RCX] = u64::from(arch_msr::EFER);
        v.save.rax = efer::LME | efer::SVME;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(
            v.control.event_inj,
            event::exception_with_code(vector::GP, 0)
        );
        assert_eq!(v.save.rip, 0x1000, "a faulting instruction is not skipped");

        let (mut v, mut g) = vcpu(exit::MSR);
        g.gprs[gpr::RCX] = u64::from(arch_msr::VM_CR);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rax, arch_msr::vm_cr::SVMDIS | arch_msr::vm_cr::LOCK);
        assert_eq!(g.gprs[gpr::RDX], 0);
    }

    #[test]
    fn msrs_the_bitmap_cannot_cover_pass_through_to_the_cpu() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        host.msrs.insert(0xc000_2001, 0x1234_5678_9abc_def0);
        let (mut v, mut g) = vcpu(exit::MSR);
        g.gprs[gpr::RCX] = 0xc000_2001;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(
            (v.save.rax, g.gprs[gpr::RDX], v.save.rip),
            (0x9abc_def0, 0x1234_5678, 0x1002)
        );

        let (mut v, mut g) = vcpu(exit::MSR);
        v.control.exit_info1 = 1;
        g.gprs[gpr::RCX] = 0xc000_2001;
        g.gprs[gpr::RDX] = 0x1;
        v.save.rax = 0xffff_ffff_0000_0002;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(
            host.msrs[&0xc000_2001], 0x1_0000_0002,
            "EDX:EAX, upper RAX ignored"
        );
        assert_eq!(v.save.rip, 0x1002);

        for write in [0, 1] {
            let (mut v, mut g) = vcpu(exit::MSR);
            v.control.exit_info1 = write;
            g.gprs[gpr::RCX] = 0xc000_2fff;
            run(&mut v, &mut g, 0, &hv, &mut host);
            assert_eq!(
                v.control.event_inj,
                event::exception_with_code(vector::GP, 0),
                "missing MSR"
            );
            assert_eq!(v.save.rip, 0x1000);
        }
    }

    #[test]
    fn nrip_save_gives_the_real_length() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::CPUID);
        v.control.next_rip = 0x1003; // a prefixed CPUID
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rip, 0x1003);
        let (mut v, mut g) = vcpu(exit::CPUID);
        v.control.next_rip = 0x9000; // not this instruction's end
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rip, 0x1002);
    }

    #[test]
    fn hypercalls_return_status_and_skip() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::VMMCALL);
        v.save.rax = encode(Hypercall::IdVersion);
        v.save.cpl = 3;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rax, 0);
        assert_eq!(g.gprs[gpr::R10], microv_abi::hypercall::ABI_VERSION);
        assert_eq!(v.save.rip, 0x1003);

        let (mut v, mut g) = vcpu(exit::VMMCALL);
        v.save.rax = encode(Hypercall::HandleOpen);
        v.save.cpl = 3;
        g.gprs[gpr::R10] = 77;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.save.rax, Status::PermissionDenied.as_u64());
        assert_eq!(g.gprs[gpr::R10], 77, "failed calls leave outputs alone");

        let (mut v, mut g) = vcpu(exit::VMMCALL);
        v.save.rax = 42;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.control.event_inj, event::exception(vector::UD));
        assert_eq!(v.save.rip, 0x1000);
    }

    #[test]
    fn stop_returns_success_past_the_call() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        hv.handle.store(9, core::sync::atomic::Ordering::Relaxed);
        let (mut v, mut g) = vcpu(exit::VMMCALL);
        v.save.rax = encode(Hypercall::HvStopPp);
        g.gprs[gpr::R10] = 9;
        assert_eq!(
            run(&mut v, &mut g, 0, &hv, &mut host),
            Action::StopThisCpu
        );
        assert_eq!((v.save.rax, v.save.rip), (0, 0x1003));
        // hv.test_fault with a valid kind: the test image faults on purpose,
        // the normal one answers NotImplemented and moves on.
        let kind = microv_abi::hypercall::test_fault::EXTENSION_PAGE_FAULT;
        v.save.rax = encode(Hypercall::HvTestFault);
        v.control.exit_code = exit::VMMCALL;
        g.gprs[gpr::R11] = kind;
        if hypercall::TEST_HOOKS {
            assert_eq!(
                run(&mut v, &mut g, 0, &hv, &mut host),
                Action::TestFault(kind)
            );
        } else {
            assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
            assert_eq!(v.save.rax, Status::NotImplemented.as_u64());
        }
    }

    #[test]
    fn svm_instructions_fault_and_init_is_dropped() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        for code in SVM_INSTRUCTIONS {
            let (mut v, mut g) = vcpu(code);
            assert_eq!(run(&mut v, &mut g, 1, &hv, &mut host), Action::Resume);
            assert_eq!(v.control.event_inj, event::exception(vector::UD));
        }
        assert_eq!(hv.exit_count(1, ExitKind::SvmInstruction as usize), 7);
        let (mut v, mut g) = vcpu(exit::INIT);
        assert_eq!(run(&mut v, &mut g, 1, &hv, &mut host), Action::Resume);
        assert_eq!(host.lines.len(), 1);
    }

    #[test]
    fn interrupted_events_are_redelivered() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::INIT);
        v.control.exit_int_info = event::exception(14);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.control.event_inj, event::exception(14));
    }

    #[test]
    fn only_shutdown_and_unrunnable_states_stop_microv() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let (mut v, mut g) = vcpu(exit::SHUTDOWN);
        assert_eq!(
            run(&mut v, &mut g, 0, &hv, &mut host),
            Action::Fail(StartError::RootShutdown, 0)
        );
        let (mut v, mut g) = vcpu(exit::INVALID);
        assert_eq!(
            run(&mut v, &mut g, 0, &hv, &mut host),
            Action::Fail(StartError::ExtensionError, exit::INVALID)
        );
        // An exit MicroV never asked for gets #UD, and MicroV carries on.
        let (mut v, mut g) = vcpu(exit::HLT);
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(v.control.event_inj, event::exception(vector::UD));
        assert_eq!(v.save.rip, 0x1000);
        assert_eq!(host.lines.len(), 3);
        let (mut v, mut g) = vcpu(exit::INVD);
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!((v.save.rip, v.control.event_inj), (0x1002, 0), "INVD is a no-op");
    }

    #[test]
    fn nested_page_faults_map_or_raise_gp() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        host.gpa_limit = 1 << 40;
        let (mut v, mut g) = vcpu(exit::NPF);
        v.control.exit_info2 = 0xfe_0000_1000;
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(host.mapped_gpas, vec![0xfe_0000_1000]);
        assert_eq!((v.control.event_inj, v.save.rip), (0, 0x1000), "retried as is");
        let (mut v, mut g) = vcpu(exit::NPF);
        v.control.exit_info2 = 1 << 41;
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(v.control.event_inj, event::exception_with_code(vector::GP, 0));
        assert_eq!(hv.exit_count(0, ExitKind::NestedPageFault as usize), 2);
    }

    /// A root write fault on its APIC page at offset `offset`, by the
    /// instruction `code` at RIP 0x1000 in 64-bit code.
    fn apic_fault(offset: u64, code: &[u8], host: &mut FakeHost) -> (Box<Vmcb>, VsRegs) {
        let (mut v, mut g) = vcpu(exit::NPF);
        v.control.exit_info1 = 0b111; // present, write, user
        v.control.exit_info2 = 0xfee0_0000 + offset;
        v.save.cs.attrib = 1 << 9;
        g.gprs[gpr::RSI] = 0xdead_0000_0000_c500;
        for (i, b) in code.iter().enumerate() {
            host.root_code.insert(0x1000 + i as u64, *b);
        }
        (v, g)
    }

    #[test]
    fn root_apic_writes_are_emulated_through_the_check() {
        let hv = HvState::new();
        hv.set_apic_base(0xfee0_0900);
        // mov %esi,0x300(%rax): an INIT, carried out (the fake accepts).
        let mut host = FakeHost::default();
        let (mut v, mut g) = apic_fault(0x300, &[0x89, 0xb0, 0, 3, 0, 0], &mut host);
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(host.apic_writes, vec![(0x300, 0xc500, false)]);
        assert_eq!((v.save.rip, v.control.event_inj), (0x1006, 0));
        // Refused by the microkernel: dropped, logged, the root goes on.
        host.apic_outcome = Some(crate::host::ApicOutcome::Refused);
        let (mut v, mut g) = apic_fault(0x300, &[0x89, 0xb0, 0, 3, 0, 0], &mut host);
        run(&mut v, &mut g, 1, &hv, &mut host);
        assert_eq!((v.save.rip, v.control.event_inj), (0x1006, 0));
        assert!(host.lines.last().unwrap().contains("refused the root's write of 0xc500"));
        // No register there: #GP, RIP stays.
        host.apic_outcome = Some(crate::host::ApicOutcome::Invalid);
        let (mut v, mut g) = apic_fault(0x304, &[0x89, 0x30], &mut host);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!((v.save.rip, v.control.event_inj), (0x1000, event::exception_with_code(vector::GP, 0)));
        // An instruction MicroV does not emulate, or 32-bit code: #GP.
        let mut host = FakeHost::default();
        let (mut v, mut g) = apic_fault(0xb0, &[0x87, 0x30], &mut host);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.control.event_inj, event::exception_with_code(vector::GP, 0));
        let (mut v, mut g) = apic_fault(0xb0, &[0x89, 0x30], &mut host);
        v.save.cs.attrib = 0;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(v.control.event_inj, event::exception_with_code(vector::GP, 0));
        assert!(host.apic_writes.is_empty());
        // RAX and RSP come from the VMCB; a store across a page boundary
        // of the code is read in two halves.
        let mut code = vec![0x3e; 7];
        code.extend([0x89, 0x20]); // mov %esp,(%rax) after 7 prefixes
        let (mut v, mut g) = apic_fault(0xb0, &code, &mut host);
        v.save.rsp = 0x1234;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(host.apic_writes, vec![(0xb0, 0x1234, false)]);
        assert_eq!(v.save.rip, 0x1009);
        // A fault while delivering an event: nothing to emulate.
        let (mut v, mut g) = apic_fault(0xb0, &[0x89, 0x30], &mut host);
        v.control.exit_int_info = event::exception(vector::UD);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(host.apic_writes.len(), 1);
        assert_eq!(v.control.event_inj, event::exception(vector::UD), "delivered again");
        // A read-only fault elsewhere is not the APIC's: mapped on demand.
        let (mut v, mut g) = apic_fault(0x1000, &[0x89, 0x30], &mut host);
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(host.mapped_gpas, vec![0xfee0_1000]);
        assert_eq!(hv.exit_count(0, ExitKind::ApicWrite as usize), 6);
        assert_eq!(hv.exit_count(1, ExitKind::ApicWrite as usize), 1);
        assert_eq!(hv.exit_count(0, ExitKind::NestedPageFault as usize), 1);
    }

    #[test]
    fn x2apic_icr_writes_go_through_the_check() {
        let hv = HvState::new();
        let mut host = FakeHost::default();
        let wrmsr = |value: u64, host: &mut FakeHost| {
            let (mut v, mut g) = vcpu(exit::MSR);
            v.control.exit_info1 = 1;
            g.gprs[gpr::RCX] = u64::from(arch_msr::X2APIC_ICR);
            g.gprs[gpr::RDX] = value >> 32;
            v.save.rax = value & 0xffff_ffff;
            run(&mut v, &mut g, 0, &hv, host);
            (v.save.rip, v.control.event_inj)
        };
        assert_eq!(wrmsr(0x3_0000_c500, &mut host), (0x1002, 0));
        assert_eq!(host.apic_writes, vec![(0x300, 0x3_0000_c500, true)]);
        let (mut v, mut g) = vcpu(exit::MSR);
        v.control.exit_info1 = 1;
        g.gprs[gpr::RCX] = 0x835; // LVT LINT0
        v.save.rax = 0x1_0500;
        run(&mut v, &mut g, 0, &hv, &mut host);
        assert_eq!(host.apic_writes.last(), Some(&(0x350, 0x1_0500, true)));
        host.apic_outcome = Some(crate::host::ApicOutcome::Refused);
        assert_eq!(wrmsr(0x3_0000_c500, &mut host), (0x1002, 0));
        host.apic_outcome = Some(crate::host::ApicOutcome::Invalid);
        assert_eq!(wrmsr(0xfd, &mut host), (0x1000, event::exception_with_code(vector::GP, 0)));
    }

    #[test]
    fn xsetbv_is_checked_like_the_cpu_does() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        // The fake CPU's CPUID 0xD.0 echoes the leaf in EAX (0xd: x87, AVX,
        // BNDREGS) and EDX = 0x1234: x87|AVX alone is refused (no SSE).
        let try_value = |value: u64, cpl: u8, ecx: u64, host: &mut FakeHost| {
            let (mut v, mut g) = vcpu(exit::XSETBV);
            v.save.rax = value & 0xffff_ffff;
            v.save.cpl = cpl;
            g.gprs[gpr::RDX] = value >> 32;
            g.gprs[gpr::RCX] = ecx;
            g.xcr0 = 3;
            run(&mut v, &mut g, 0, &hv, host);
            (v.control.event_inj, v.save.rip, g.xcr0)
        };
        assert_eq!(try_value(1, 0, 0, &mut host), (0, 0x1003, 1), "x87 only");
        let gp = event::exception_with_code(vector::GP, 0);
        assert_eq!(try_value(5, 0, 0, &mut host), (gp, 0x1000, 3), "AVX without SSE");
        assert_eq!(try_value(1, 3, 0, &mut host), (gp, 0x1000, 3), "CPL 3");
        assert_eq!(try_value(1, 0, 1, &mut host), (gp, 0x1000, 3), "XCR1");
        assert_eq!(try_value(1 << 40, 0, 0, &mut host), (gp, 0x1000, 3), "unsupported");
        assert_eq!(hv.exit_count(0, ExitKind::Xsetbv as usize), 5);
    }

    #[test]
    fn pci_config_ports_are_replayed() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        host.ports.insert(0xcfc, 0x1022_1450);
        let (mut v, mut g) = vcpu(exit::IOIO);
        v.control.exit_info1 = (0xcfc << 16) | (1 << 6) | 1;
        v.control.exit_info2 = 0x1001;
        v.control.interrupt_shadow = 1;
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!((v.save.rax, v.save.rip, v.control.interrupt_shadow), (0x1022_1450, 0x1001, 0));
        let (mut v, mut g) = vcpu(exit::IOIO);
        v.control.exit_info1 = (0xcf8 << 16) | (1 << 4) | (1 << 2);
        assert_eq!(run(&mut v, &mut g, 0, &hv, &mut host), Action::Resume);
        assert_eq!(v.control.event_inj, event::exception_with_code(vector::GP, 0));
        assert_eq!(hv.exit_count(0, ExitKind::Io as usize), 2);
    }
}
