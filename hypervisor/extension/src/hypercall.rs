//! Serving hypercalls from the root VM (see `docs/hypercall-abi.md`).

use core::sync::atomic::Ordering;

use microv_abi::hypercall::{
    self, abi_major, capability, test_fault, Caller, Decoded, Hypercall, Status,
};
use microv_abi::launch::gpr;
use microv_abi::EXIT_KINDS_MAX;

use crate::host::Host;
use crate::state::HvState;

/// The caller's registers: R10–R13 in, R10–R13 out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
}

impl Args {
    pub fn from_gprs(gprs: &[u64; 16]) -> Self {
        let get = |i: usize| gprs.get(i).copied().unwrap_or(0);
        Args {
            r10: get(gpr::R10),
            r11: get(gpr::R11),
            r12: get(gpr::R12),
            r13: get(gpr::R13),
        }
    }

    pub fn to_gprs(self, gprs: &mut [u64; 16]) {
        for (i, v) in [
            (gpr::R10, self.r10),
            (gpr::R11, self.r11),
            (gpr::R12, self.r12),
            (gpr::R13, self.r13),
        ] {
            if let Some(slot) = gprs.get_mut(i) {
                *slot = v;
            }
        }
    }
}

/// What the exit handler does after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a MicroV hypercall: raise #UD, as on a machine without MicroV.
    InvalidOpcode,
    /// Return `Status` (and the outputs) to the caller.
    Done(Status, Args),
    /// Return success, then hand this CPU back to the root (`hv.stop_pp`).
    StopThisCpu,
    /// Make the extension fault on purpose (test images only).
    TestFault(u64),
    /// `run.run`: give this CPU to guest vCPU `vcpu` (the call completes
    /// when the guest gives it back).
    Run(u64),
    /// `run.get_registers` (`set` None) or `run.set_registers` (the mask).
    Registers { vcpu: u64, set: Option<u64> },
}

/// Who is calling.
#[derive(Clone, Copy, Debug)]
pub struct CallerInfo {
    /// Privilege level of the calling code.
    pub cpl: u8,
    /// MicroV's index of the calling CPU.
    pub cpu: usize,
    /// The caller is a micro VM (which may make discovery calls only).
    pub guest: bool,
}

/// This MicroV's version, from the workspace's package version.
pub const VERSION: u64 = hypercall::encode_version(
    parse_u16(env!("CARGO_PKG_VERSION_MAJOR")),
    parse_u16(env!("CARGO_PKG_VERSION_MINOR")),
    parse_u16(env!("CARGO_PKG_VERSION_PATCH")),
);

const fn parse_u16(s: &str) -> u16 {
    let mut digits = s.as_bytes();
    let mut v: u16 = 0;
    while let [d, rest @ ..] = digits {
        v = v.wrapping_mul(10).wrapping_add(d.wrapping_sub(b'0') as u16);
        digits = rest;
    }
    v
}

/// Whether this build serves `hv.test_fault`.
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

fn done(status: Status) -> Outcome {
    Outcome::Done(status, Args::default())
}

/// Serves one hypercall with RAX `rax` and arguments `args`.
pub fn dispatch(
    rax: u64,
    args: Args,
    caller: CallerInfo,
    hv: &HvState,
    host: &mut dyn Host,
) -> Outcome {
    let call = match hypercall::decode(rax) {
        Decoded::NotMicroV => return Outcome::InvalidOpcode,
        Decoded::BadFlags | Decoded::Unknown { .. } => return done(Status::UnknownCall),
        Decoded::Call(call) => call,
    };
    if call.caller() == Caller::RootKernel {
        if caller.cpl != 0 || caller.guest {
            return done(Status::PermissionDenied);
        }
        let handle = hv.handle.load(Ordering::Acquire);
        if call != Hypercall::HandleOpen && (handle == 0 || args.r10 != handle) {
            return done(Status::InvalidHandle);
        }
    }
    let out = |r10: u64, r11: u64, r12: u64, r13: u64| {
        Outcome::Done(Status::Success, Args { r10, r11, r12, r13 })
    };
    match call {
        Hypercall::IdVersion => out(hypercall::ABI_VERSION, VERSION, 0, 0),
        Hypercall::IdCapabilities => {
            let test = if TEST_HOOKS {
                capability::TEST_HOOKS
            } else {
                0
            };
            out(
                hv.start_mode_capability() | hv.vendor_capability() | test,
                0,
                0,
                0,
            )
        }
        Hypercall::HandleOpen => {
            if abi_major(args.r10) != abi_major(hypercall::ABI_VERSION) {
                return done(Status::VersionMismatch);
            }
            // Never 0 (that means "no handle"); unpredictable to other callers.
            let handle = host.entropy() | 1;
            match hv
                .handle
                .compare_exchange(0, handle, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => out(handle, 0, 0, 0),
                Err(_) => done(Status::Busy),
            }
        }
        Hypercall::HandleClose => {
            hv.handle.store(0, Ordering::Release);
            out(0, 0, 0, 0)
        }
        Hypercall::DebugOut => {
            host.log(format_args!(
                "cpu {}: debug.out {:#x}",
                caller.cpu, args.r11
            ));
            out(args.r10, 0, 0, 0)
        }
        Hypercall::PpId => out(caller.cpu as u64, 0, 0, 0),
        Hypercall::PpCount => out(hv.cpus(), 0, 0, 0),
        Hypercall::PpExitCount => {
            let (pp, first) = (args.r11, args.r12);
            if pp >= hv.cpus() || first >= EXIT_KINDS_MAX as u64 {
                return done(Status::InvalidArgument);
            }
            let (pp, first) = (pp as usize, first as usize);
            let c = |k: usize| hv.exit_count(pp, first + k);
            out(c(0), c(1), c(2), c(3))
        }
        Hypercall::HvMemory => {
            let (total, free) = host.mem_stats();
            out(total, free, 0, 0)
        }
        Hypercall::HvLog => {
            let (at, size) = host.log_ring();
            out(at, size, 0, 0)
        }
        Hypercall::HvStopPp => Outcome::StopThisCpu,
        // Served by test images only.
        Hypercall::HvTestFault if !TEST_HOOKS => done(Status::NotImplemented),
        Hypercall::HvTestFault => match args.r11 {
            test_fault::EXTENSION_PAGE_FAULT
            | test_fault::EXTENSION_INVALID_OPCODE
            | test_fault::EXTENSION_LOOSEN_VMCB => {
                Outcome::TestFault(args.r11)
            }
            _ => done(Status::InvalidArgument),
        },
        // Micro VMs run on SVM only so far (docs/intel-vmx.md).
        Hypercall::VmCreate if hv.is_vmx() => done(Status::NotImplemented),
        Hypercall::VmCreate => match host.vm_create() {
            Ok(vm) => out(vm, 0, 0, 0),
            Err(s) => done(s),
        },
        Hypercall::VmDestroy => {
            if hv.vcpus.vm_has_vcpus(args.r11) {
                return done(Status::Busy);
            }
            status_of(host.vm_destroy(args.r11))
        }
        Hypercall::VmMapMemory => status_of(host.vm_map(args.r11, args.r12, args.r13)),
        Hypercall::VmUnmapMemory => status_of(host.vm_unmap(args.r11, args.r12)),
        Hypercall::VcpuCreate => match host.vcpu_create(args.r11, args.r12) {
            Ok(vcpu) => {
                hv.vcpus.add(vcpu, args.r11, args.r13 as u32);
                out(vcpu, 0, 0, 0)
            }
            Err(s) => done(s),
        },
        Hypercall::VcpuDestroy => {
            // Held while destroyed: no CPU can start running it meanwhile.
            if !hv.vcpus.claim(args.r11, caller.cpu) {
                let known = hv.vcpus.vm_of(args.r11).is_some();
                return done(if known { Status::Busy } else { Status::InvalidArgument });
            }
            let s = host.vcpu_destroy(args.r11);
            if s == Status::Success {
                hv.vcpus.remove(args.r11);
            }
            hv.vcpus.release(args.r11);
            status_of(s)
        }
        Hypercall::VcpuRun => Outcome::Run(args.r11),
        Hypercall::VcpuGetRegisters => Outcome::Registers {
            vcpu: args.r11,
            set: None,
        },
        Hypercall::VcpuSetRegisters => Outcome::Registers {
            vcpu: args.r11,
            set: Some(args.r12),
        },
    }
}

/// A call that returns only a status (R10–R13 zero on success).
fn status_of(s: Status) -> Outcome {
    if s == Status::Success {
        Outcome::Done(s, Args::default())
    } else {
        done(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use microv_abi::hypercall::encode;
    use microv_abi::ExitKind;

    const KERNEL: CallerInfo = CallerInfo { cpl: 0, cpu: 1, guest: false };
    const USER: CallerInfo = CallerInfo { cpl: 3, cpu: 1, guest: false };
    const GUEST: CallerInfo = CallerInfo { cpl: 0, cpu: 1, guest: true };

    fn open(hv: &HvState, host: &mut FakeHost) -> u64 {
        host.next_entropy = 0x1234_5678_9abc_def0;
        match dispatch(
            encode(Hypercall::HandleOpen),
            Args {
                r10: hypercall::ABI_VERSION,
                ..Args::default()
            },
            KERNEL,
            hv,
            host,
        ) {
            Outcome::Done(Status::Success, a) => a.r10,
            other => panic!("{other:?}"),
        }
    }

    fn call(
        hv: &HvState,
        host: &mut FakeHost,
        c: Hypercall,
        who: CallerInfo,
        args: Args,
    ) -> Outcome {
        dispatch(encode(c), args, who, hv, host)
    }

    #[test]
    fn foreign_vmmcall_is_invalid_opcode_and_unknown_calls_are_reported() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        assert_eq!(
            dispatch(0x1234, Args::default(), KERNEL, &hv, &mut host),
            Outcome::InvalidOpcode
        );
        let unknown = (hypercall::SIGNATURE << 48) | (0x99 << 16);
        assert_eq!(
            dispatch(unknown, Args::default(), USER, &hv, &mut host),
            done(Status::UnknownCall)
        );
        let flagged = encode(Hypercall::IdVersion) | 1 << 40;
        assert_eq!(
            dispatch(flagged, Args::default(), KERNEL, &hv, &mut host),
            done(Status::UnknownCall)
        );
    }

    #[test]
    fn discovery_calls_work_from_anywhere() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let Outcome::Done(Status::Success, a) =
            call(&hv, &mut host, Hypercall::IdVersion, USER, Args::default())
        else {
            panic!()
        };
        assert_eq!(a.r10, hypercall::ABI_VERSION);
        let (major, minor, patch) = hypercall::decode_version(a.r11);
        assert_eq!(
            format!("{major}.{minor}.{patch}"),
            env!("CARGO_PKG_VERSION")
        );
        let Outcome::Done(Status::Success, a) = call(
            &hv,
            &mut host,
            Hypercall::IdCapabilities,
            USER,
            Args::default(),
        ) else {
            panic!()
        };
        assert_eq!(
            a.r10 & (capability::LATE_LAUNCH | capability::EARLY_BOOT),
            0,
            "mode not known yet"
        );
        for (mode, bit) in [
            (
                microv_abi::launch::StartMode::LateLaunch,
                capability::LATE_LAUNCH,
            ),
            (
                microv_abi::launch::StartMode::EarlyBoot,
                capability::EARLY_BOOT,
            ),
        ] {
            hv.start_mode.store(mode as u64, Ordering::Relaxed);
            let Outcome::Done(Status::Success, a) = call(
                &hv,
                &mut host,
                Hypercall::IdCapabilities,
                USER,
                Args::default(),
            ) else {
                panic!()
            };
            assert_eq!(
                a.r10 & (capability::LATE_LAUNCH | capability::EARLY_BOOT),
                bit
            );
        }
        assert_eq!(a.r10 & capability::TEST_HOOKS != 0, TEST_HOOKS);
        assert_eq!(a.r10 & (capability::AMD_SVM | capability::INTEL_VMX), capability::AMD_SVM);
        hv.set_vmx(true);
        let Outcome::Done(Status::Success, a) =
            call(&hv, &mut host, Hypercall::IdCapabilities, USER, Args::default())
        else {
            panic!()
        };
        assert_eq!(a.r10 & (capability::AMD_SVM | capability::INTEL_VMX), capability::INTEL_VMX);
    }

    #[test]
    fn micro_vms_wait_for_vmx() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        hv.set_vmx(true);
        let handle = open(&hv, &mut host);
        let r = call(&hv, &mut host, Hypercall::VmCreate, KERNEL, Args { r10: handle, ..Args::default() });
        assert_eq!(r, Outcome::Done(Status::NotImplemented, Args::default()));
        assert!(host.vm_calls.is_empty());
    }

    #[test]
    fn management_calls_need_ring_0_and_the_handle() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        assert_eq!(
            call(&hv, &mut host, Hypercall::HandleOpen, USER, Args::default()),
            done(Status::PermissionDenied)
        );
        assert_eq!(
            call(&hv, &mut host, Hypercall::PpId, KERNEL, Args::default()),
            done(Status::InvalidHandle)
        );
        let h = open(&hv, &mut host);
        assert_ne!(h, 0);
        let with = Args {
            r10: h,
            ..Args::default()
        };
        assert_eq!(
            call(&hv, &mut host, Hypercall::PpId, USER, with),
            done(Status::PermissionDenied)
        );
        assert_eq!(
            call(
                &hv,
                &mut host,
                Hypercall::PpId,
                KERNEL,
                Args { r10: h ^ 1, ..with }
            ),
            done(Status::InvalidHandle)
        );
        let Outcome::Done(Status::Success, a) = call(&hv, &mut host, Hypercall::PpId, KERNEL, with)
        else {
            panic!()
        };
        assert_eq!(a.r10, 1);
        assert_eq!(
            call(
                &hv,
                &mut host,
                Hypercall::HandleOpen,
                KERNEL,
                Args {
                    r10: hypercall::ABI_VERSION,
                    ..Args::default()
                }
            ),
            done(Status::Busy)
        );
        assert!(matches!(
            call(&hv, &mut host, Hypercall::HandleClose, KERNEL, with),
            Outcome::Done(Status::Success, _)
        ));
        assert_eq!(
            call(&hv, &mut host, Hypercall::PpId, KERNEL, with),
            done(Status::InvalidHandle)
        );
    }

    #[test]
    fn open_checks_the_version_and_never_returns_zero() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        assert_eq!(
            call(
                &hv,
                &mut host,
                Hypercall::HandleOpen,
                KERNEL,
                Args {
                    r10: 2 << 32,
                    ..Args::default()
                }
            ),
            done(Status::VersionMismatch)
        );
        host.next_entropy = 0;
        let Outcome::Done(Status::Success, a) = call(
            &hv,
            &mut host,
            Hypercall::HandleOpen,
            KERNEL,
            Args {
                r10: hypercall::ABI_VERSION,
                ..Args::default()
            },
        ) else {
            panic!()
        };
        assert_eq!(a.r10, 1);
    }

    #[test]
    fn counters_memory_debug_stop_and_reserved_calls() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        hv.cpu_count.store(2, Ordering::Relaxed);
        hv.count_exit(1, ExitKind::MsrRead);
        hv.count_exit(1, ExitKind::Cpuid);
        let h = open(&hv, &mut host);
        let a = |r11, r12| Args {
            r10: h,
            r11,
            r12,
            r13: 0,
        };
        let Outcome::Done(Status::Success, r) =
            call(&hv, &mut host, Hypercall::PpExitCount, KERNEL, a(1, 0))
        else {
            panic!()
        };
        assert_eq!((r.r10, r.r11, r.r12, r.r13), (1, 1, 0, 0));
        assert_eq!(
            call(&hv, &mut host, Hypercall::PpExitCount, KERNEL, a(2, 0)),
            done(Status::InvalidArgument)
        );
        assert_eq!(
            call(&hv, &mut host, Hypercall::PpExitCount, KERNEL, a(0, 16)),
            done(Status::InvalidArgument)
        );
        let Outcome::Done(Status::Success, r) =
            call(&hv, &mut host, Hypercall::PpExitCount, KERNEL, a(1, 12))
        else {
            panic!()
        };
        assert_eq!(r, Args::default());
        let Outcome::Done(Status::Success, r) =
            call(&hv, &mut host, Hypercall::PpCount, KERNEL, a(0, 0))
        else {
            panic!()
        };
        assert_eq!(r.r10, 2);
        let Outcome::Done(Status::Success, r) =
            call(&hv, &mut host, Hypercall::HvMemory, KERNEL, a(0, 0))
        else {
            panic!()
        };
        assert_eq!((r.r10, r.r11), (16384, 15000));
        let Outcome::Done(Status::Success, r) =
            call(&hv, &mut host, Hypercall::HvLog, KERNEL, a(0, 0))
        else {
            panic!()
        };
        assert_eq!((r.r10, r.r11), (0x7f00_0000, 16384));
        assert!(matches!(
            call(&hv, &mut host, Hypercall::DebugOut, KERNEL, a(0xabc, 0)),
            Outcome::Done(Status::Success, _)
        ));
        assert_eq!(host.lines, ["cpu 1: debug.out 0xabc"]);
        assert_eq!(
            call(&hv, &mut host, Hypercall::HvStopPp, KERNEL, a(0, 0)),
            Outcome::StopThisCpu
        );
        let expected = if TEST_HOOKS {
            Outcome::TestFault(1)
        } else {
            done(Status::NotImplemented)
        };
        assert_eq!(
            call(&hv, &mut host, Hypercall::HvTestFault, KERNEL, a(1, 0)),
            expected
        );
        if TEST_HOOKS {
            let loosen = test_fault::EXTENSION_LOOSEN_VMCB;
            assert_eq!(
                call(&hv, &mut host, Hypercall::HvTestFault, KERNEL, a(loosen, 0)),
                Outcome::TestFault(loosen)
            );
        }
        let bad_kind = if TEST_HOOKS {
            Status::InvalidArgument
        } else {
            Status::NotImplemented
        };
        assert_eq!(
            call(&hv, &mut host, Hypercall::HvTestFault, KERNEL, a(9, 0)),
            done(bad_kind)
        );
    }

    #[test]
    fn vm_calls_reach_the_microkernel_with_their_arguments() {
        let (hv, mut host) = (HvState::new(), FakeHost::default());
        let h = open(&hv, &mut host);
        let a = |r11, r12, r13| Args { r10: h, r11, r12, r13 };
        assert!(Hypercall::ALL.iter().all(|c| c.implemented()));
        let ok = |r10| Outcome::Done(Status::Success, Args { r10, ..Args::default() });
        assert_eq!(call(&hv, &mut host, Hypercall::VmCreate, KERNEL, a(0, 0, 0)), ok(1));
        assert_eq!(call(&hv, &mut host, Hypercall::VmMapMemory, KERNEL, a(5, 6, 7)), ok(0));
        assert_eq!(call(&hv, &mut host, Hypercall::VmUnmapMemory, KERNEL, a(5, 6, 0)), ok(0));
        assert_eq!(call(&hv, &mut host, Hypercall::VcpuCreate, KERNEL, a(1, 0x9000, 0)), ok(2));
        assert_eq!(hv.vcpus.vm_of(2), Some(1));
        // A VM with vCPUs is not destroyed; a running vCPU is not either.
        assert_eq!(call(&hv, &mut host, Hypercall::VmDestroy, KERNEL, a(1, 0, 0)), done(Status::Busy));
        assert!(hv.vcpus.claim(2, 0));
        assert_eq!(call(&hv, &mut host, Hypercall::VcpuDestroy, KERNEL, a(2, 0, 0)), done(Status::Busy));
        hv.vcpus.release(2);
        assert_eq!(
            call(&hv, &mut host, Hypercall::VcpuDestroy, KERNEL, a(9, 0, 0)),
            done(Status::InvalidArgument)
        );
        assert_eq!(call(&hv, &mut host, Hypercall::VcpuDestroy, KERNEL, a(2, 0, 0)), ok(0));
        assert_eq!(hv.vcpus.vm_of(2), None);
        assert_eq!(call(&hv, &mut host, Hypercall::VmDestroy, KERNEL, a(1, 0, 0)), ok(0));
        assert_eq!(
            host.vm_calls,
            vec![
                ("vm_create", [0, 0, 0]),
                ("vm_map", [5, 6, 7]),
                ("vm_unmap", [5, 6, 0]),
                ("vcpu_create", [1, 0x9000, 0]),
                ("vcpu_destroy", [2, 0, 0]),
                ("vm_destroy", [1, 0, 0]),
            ]
        );
        // The microkernel's refusals come back as they are.
        host.vm_status = Some(Status::MemoryRefused);
        assert_eq!(
            call(&hv, &mut host, Hypercall::VmMapMemory, KERNEL, a(5, 6, 7)),
            done(Status::MemoryRefused)
        );
        assert_eq!(call(&hv, &mut host, Hypercall::VmCreate, KERNEL, a(0, 0, 0)), done(Status::MemoryRefused));
        assert_eq!(
            call(&hv, &mut host, Hypercall::VcpuCreate, KERNEL, a(1, 0, 0)),
            done(Status::MemoryRefused)
        );
        // Running and register calls are the CPU's business (`hw`).
        assert_eq!(call(&hv, &mut host, Hypercall::VcpuRun, KERNEL, a(2, 0, 0)), Outcome::Run(2));
        assert_eq!(
            call(&hv, &mut host, Hypercall::VcpuSetRegisters, KERNEL, a(2, 3, 0)),
            Outcome::Registers { vcpu: 2, set: Some(3) }
        );
        assert_eq!(
            call(&hv, &mut host, Hypercall::VcpuGetRegisters, KERNEL, a(2, 0, 0)),
            Outcome::Registers { vcpu: 2, set: None }
        );
        // Root user space and guests may make none of them.
        for c in [Hypercall::VmCreate, Hypercall::VcpuRun] {
            assert_eq!(call(&hv, &mut host, c, USER, a(0, 0, 0)), done(Status::PermissionDenied));
            assert_eq!(call(&hv, &mut host, c, GUEST, a(0, 0, 0)), done(Status::PermissionDenied));
        }
    }

    #[test]
    fn version_digits_parse() {
        assert_eq!(parse_u16("0"), 0);
        assert_eq!(parse_u16("123"), 123);
        assert_eq!(parse_u16(""), 0);
    }

    #[test]
    fn args_round_trip_through_registers() {
        let mut gprs = [0u64; 16];
        let a = Args {
            r10: 1,
            r11: 2,
            r12: 3,
            r13: 4,
        };
        a.to_gprs(&mut gprs);
        assert_eq!(gprs[gpr::R12], 3);
        assert_eq!(Args::from_gprs(&gprs), a);
    }
}
