//! A root vCPU's VMX controls: the same exits as its VMCB's intercepts on
//! AMD (`extension::root_vm::configure_vmcb`), adjusted to what the CPU
//! allows (SDM Vol. 3C 25.6–25.8; Vol. 3D A.3–A.5).
//!
//! - **No exits for interrupts or NMIs.** On AMD the root takes them with
//!   no intercept (host mode holds them with GIF clear until the next
//!   VMRUN). Here external-interrupt and NMI exiting are off, so they go
//!   straight to the root's IDT; an interrupt arriving in host mode waits
//!   (host RFLAGS.IF is 0 after every exit). An NMI does not wait: VMX
//!   root operation has no GIF, so the microkernel's NMI handler must
//!   note it and the world switch inject it at the next entry.
//!   "Acknowledge interrupt on exit" stays off: an interrupt exit (none is
//!   asked for) would leave the interrupt pending, as SVM's does.
//! - **The same instruction exits.** CPUID, INVD, XSETBV, GETSEC and the
//!   VMX instructions always exit on VMX (as CPUID, INVD, XSETBV and the
//!   SVM instructions are intercepted on AMD); MSRs and ports exit as the
//!   bitmaps say; nothing else (no HLT, CR3, CR8, MOV DR, RDTSC, PAUSE,
//!   MWAIT exits). RDTSCP (which also governs RDPID), INVPCID, XSAVES and
//!   UMWAIT/TPAUSE stay enabled where the CPU offers them, as the root has
//!   them natively.
//! - **EPT, VPID and unrestricted guest** are required: the root may run
//!   in any mode it switches to (real mode on its way to a reboot).
//! - **Guest and host state** switch EFER and PAT on entry and exit, and
//!   DR7 (with DEBUGCTL, which the guest never gets: `vmx_state`); the
//!   host runs in 64-bit mode.
//!
//! Controls the CPU forces to 1 where MicroV needs them 0 (CR3 exiting on
//! a CPU without the TRUE_ capability MSRs, say) are refused: the root
//! would take exits its policy does not handle.

use microv_arch::svm::Vmcb;
use microv_arch::vmx::controls::{
    self, entry, exit, pin, primary, secondary, ControlError, Controls, Request, Settings,
};
use microv_arch::vmx::ept::Eptp;
use microv_arch::vmx::event::activity;
use microv_arch::vmx::fields::{control, guest};
use microv_arch::vmx::instruction_error::VmFail;
use microv_arch::vmx::vmcs::Vmcs;

use microv_arch::msr::efer;

use crate::vmx_state::VmxCpu;

/// VPID of every root vCPU (0 tags VMX root operation's own
/// translations), as ASID 1 is on AMD.
pub const ROOT_VPID: u16 = 1;

/// The root's tables, built by the microkernel (`root_tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTables {
    /// The root's EPT, checked against the CPU's EPT capabilities.
    pub eptp: Eptp,
    /// Physical address of the 4 KiB MSR bitmap.
    pub msr_bitmap: u64,
    /// Physical addresses of I/O bitmaps A (ports 0–0x7fff) and B.
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
}

/// Why the root's controls cannot be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlsError {
    /// A required control is missing (or the capability MSR is broken).
    Control(ControlError),
    /// The CPU forces to 1 controls the root must run without.
    Forced {
        controls: Controls,
        bits: u32,
    },
    Vmcs(VmFail),
}

impl From<ControlError> for ControlsError {
    fn from(e: ControlError) -> Self {
        ControlsError::Control(e)
    }
}

impl From<VmFail> for ControlsError {
    fn from(e: VmFail) -> Self {
        ControlsError::Vmcs(e)
    }
}

/// Required and wanted controls of a root vCPU.
pub const REQUEST: Request = Request {
    pin: (0, 0),
    primary: (primary::MSR_BITMAPS | primary::IO_BITMAPS, 0),
    secondary: (
        secondary::EPT | secondary::VPID | secondary::UNRESTRICTED_GUEST,
        secondary::RDTSCP | secondary::INVPCID | secondary::XSAVES | secondary::USER_WAIT_PAUSE,
    ),
    exit: (
        exit::HOST_ADDRESS_SPACE_SIZE
            | exit::SAVE_DEBUG_CONTROLS
            | exit::SAVE_PAT
            | exit::LOAD_PAT
            | exit::SAVE_EFER
            | exit::LOAD_EFER,
        0,
    ),
    // IA-32e mode guest is asked for so that its absence is an error; each
    // entry sets it from the guest's EFER.LMA.
    entry: (
        entry::LOAD_DEBUG_CONTROLS | entry::LOAD_PAT | entry::LOAD_EFER | entry::IA32E_MODE_GUEST,
        0,
    ),
};

/// Controls that must stay 0, per set.
const FORBIDDEN: [(Controls, u32); 5] = [
    (
        Controls::Pin,
        pin::EXTERNAL_INTERRUPT_EXITING
            | pin::NMI_EXITING
            | pin::VIRTUAL_NMIS
            | pin::PREEMPTION_TIMER
            | pin::POSTED_INTERRUPTS,
    ),
    (
        Controls::Primary,
        primary::INTERRUPT_WINDOW_EXITING
            | primary::HLT_EXITING
            | primary::INVLPG_EXITING
            | primary::MWAIT_EXITING
            | primary::RDPMC_EXITING
            | primary::RDTSC_EXITING
            | primary::CR3_LOAD_EXITING
            | primary::CR3_STORE_EXITING
            | primary::TERTIARY_CONTROLS
            | primary::CR8_LOAD_EXITING
            | primary::CR8_STORE_EXITING
            | primary::TPR_SHADOW
            | primary::NMI_WINDOW_EXITING
            | primary::MOV_DR_EXITING
            | primary::MONITOR_TRAP_FLAG
            | primary::MONITOR_EXITING
            | primary::PAUSE_EXITING,
    ),
    // The secondary controls have no default-1 class: anything forced
    // there is unknown to MicroV.
    (
        Controls::Secondary,
        !(REQUEST.secondary.0 | REQUEST.secondary.1),
    ),
    (
        Controls::Exit,
        exit::ACK_INTERRUPT_ON_EXIT
            | exit::LOAD_PERF_GLOBAL_CTRL
            | exit::SAVE_PREEMPTION_TIMER
            | exit::LOAD_CET_STATE
            | exit::LOAD_PKRS,
    ),
    (
        Controls::Entry,
        entry::ENTRY_TO_SMM
            | entry::DEACTIVATE_DUAL_MONITOR
            | entry::LOAD_PERF_GLOBAL_CTRL
            | entry::LOAD_BNDCFGS
            | entry::LOAD_RTIT_CTL
            | entry::LOAD_CET_STATE
            | entry::LOAD_LBR_CTL
            | entry::LOAD_PKRS,
    ),
];

/// The root's control settings for a CPU whose capability MSRs `rdmsr`
/// reads (TRUE_ ones if `true_controls`, IA32_VMX_BASIC bit 55).
pub fn root_settings(
    true_controls: bool,
    rdmsr: &mut dyn FnMut(u32) -> u64,
) -> Result<Settings, ControlsError> {
    let s = controls::adjust_all(true_controls, rdmsr, &REQUEST)?;
    for (controls, forbidden) in FORBIDDEN {
        let value = match controls {
            Controls::Pin => s.pin,
            Controls::Primary => s.primary,
            Controls::Secondary => s.secondary,
            Controls::Exit => s.exit,
            Controls::Entry => s.entry,
        };
        if value & forbidden != 0 {
            return Err(ControlsError::Forced {
                controls,
                bits: value & forbidden,
            });
        }
    }
    Ok(s)
}

/// Sets up the current VMCS for the root vCPU whose VMCB is `vmcb`
/// (captured state, intercepts as the extension configured them):
/// controls, tables, the exception bitmap from its exception intercepts,
/// the CR0/CR4 guest/host masks and read shadows, and the guest state
/// `vmx_state::write_guest` keeps from one entry to the next. The guest
/// registers themselves are written at each entry.
pub fn root_controls(
    true_controls: bool,
    rdmsr: &mut dyn FnMut(u32) -> u64,
    cpu: &VmxCpu,
    tables: &RootTables,
    vmcb: &Vmcb,
    vmcs: &mut dyn Vmcs,
) -> Result<Settings, ControlsError> {
    let s = root_settings(true_controls, rdmsr)?;
    let ia32e = if vmcb.save.efer & efer::LMA != 0 {
        entry::IA32E_MODE_GUEST
    } else {
        0
    };
    control::PIN_CONTROLS.write(vmcs, s.pin)?;
    control::PRIMARY_CONTROLS.write(vmcs, s.primary)?;
    control::SECONDARY_CONTROLS.write(vmcs, s.secondary)?;
    control::EXIT_CONTROLS.write(vmcs, s.exit)?;
    control::ENTRY_CONTROLS.write(vmcs, s.entry & !entry::IA32E_MODE_GUEST | ia32e)?;
    control::EXCEPTION_BITMAP.write(vmcs, vmcb.control.intercept_exceptions)?;
    // With these, bit 14 alone decides whether a #PF exits, as on AMD.
    control::PAGE_FAULT_ERROR_CODE_MASK.write(vmcs, 0)?;
    control::PAGE_FAULT_ERROR_CODE_MATCH.write(vmcs, 0)?;
    control::CR3_TARGET_COUNT.write(vmcs, 0)?;
    control::CR0_GUEST_HOST_MASK.write(vmcs, cpu.cr0_mask())?;
    control::CR4_GUEST_HOST_MASK.write(vmcs, cpu.cr4_mask())?;
    control::CR0_READ_SHADOW.write(vmcs, vmcb.save.cr0)?;
    control::CR4_READ_SHADOW.write(vmcs, vmcb.save.cr4)?;
    control::IO_BITMAP_A.write(vmcs, tables.io_bitmap_a)?;
    control::IO_BITMAP_B.write(vmcs, tables.io_bitmap_b)?;
    control::MSR_BITMAP.write(vmcs, tables.msr_bitmap)?;
    control::EPTP.write(vmcs, tables.eptp.0)?;
    control::VPID.write(vmcs, ROOT_VPID)?;
    control::TSC_OFFSET.write(vmcs, 0)?;
    control::EXIT_MSR_STORE_COUNT.write(vmcs, 0)?;
    control::EXIT_MSR_LOAD_COUNT.write(vmcs, 0)?;
    control::ENTRY_MSR_LOAD_COUNT.write(vmcs, 0)?;
    control::ENTRY_INTERRUPTION_INFO.write(vmcs, 0)?;
    guest::VMCS_LINK_POINTER.write(vmcs, u64::MAX)?;
    guest::INTERRUPTIBILITY.write(vmcs, 0)?;
    guest::ACTIVITY_STATE.write(vmcs, activity::ACTIVE)?;
    guest::PENDING_DEBUG_EXCEPTIONS.write(vmcs, 0)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx_state::{self, tests::cpu, tests::linux};
    use microv_abi::syscall::VsRegs;
    use microv_arch::msr;
    use microv_arch::vmx::ept::EptCaps;
    use microv_arch::vmx::vmcs::fake::FakeVmcs;

    use controls::capability as cap;
    use controls::default1::{
        ENTRY as ENTRY_DEFAULT1, EXIT as EXIT_DEFAULT1, PIN as PIN_DEFAULT1,
        PRIMARY as PRIMARY_DEFAULT1,
    };

    /// Secondary controls of a Skylake server: no UMWAIT/TPAUSE.
    const SKYLAKE_SECONDARY: u32 = 0x0053_7fff;

    /// A Skylake-era CPU: TRUE_ MSRs, so CR3 exiting and the debug-control
    /// switches may be 0; `secondary` as allowed-1 secondary controls.
    fn skylake(secondary: u32) -> impl FnMut(u32) -> u64 {
        move |index| match index {
            msr::VMX_TRUE_PINBASED_CTLS => cap(PIN_DEFAULT1, 0xff),
            msr::VMX_TRUE_PROCBASED_CTLS => cap(
                PRIMARY_DEFAULT1 & !(primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING),
                0xfff9_fffe,
            ),
            msr::VMX_PROCBASED_CTLS2 => cap(0, secondary),
            msr::VMX_TRUE_EXIT_CTLS => cap(EXIT_DEFAULT1 & !exit::SAVE_DEBUG_CONTROLS, 0x01ff_ffff),
            msr::VMX_TRUE_ENTRY_CTLS => {
                cap(ENTRY_DEFAULT1 & !entry::LOAD_DEBUG_CONTROLS, 0x0003_ffff)
            }
            other => panic!("unexpected read of MSR {other:#x}"),
        }
    }

    #[test]
    fn a_skylake_gets_the_roots_controls() {
        let s = root_settings(true, &mut skylake(SKYLAKE_SECONDARY)).unwrap();
        assert_eq!(s.pin, PIN_DEFAULT1, "no interrupt or NMI exits");
        assert_eq!(
            s.primary,
            PRIMARY_DEFAULT1 & !(primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING)
                | primary::MSR_BITMAPS
                | primary::IO_BITMAPS
                | primary::SECONDARY_CONTROLS
        );
        assert_eq!(
            s.primary & primary::HLT_EXITING,
            0,
            "the root halts natively"
        );
        // UMWAIT/TPAUSE is wanted but this CPU lacks it: left out.
        assert_eq!(
            s.secondary,
            secondary::EPT
                | secondary::VPID
                | secondary::UNRESTRICTED_GUEST
                | secondary::RDTSCP
                | secondary::INVPCID
                | secondary::XSAVES
        );
        assert_eq!(s.exit & exit::ACK_INTERRUPT_ON_EXIT, 0);
        assert_eq!(
            s.exit & REQUEST.exit.0,
            REQUEST.exit.0,
            "64-bit host, EFER/PAT/debug switched"
        );
        assert_eq!(s.entry & REQUEST.entry.0, REQUEST.entry.0);
        // A CPU with UMWAIT/TPAUSE keeps it for the root.
        let s = root_settings(
            true,
            &mut skylake(SKYLAKE_SECONDARY | secondary::USER_WAIT_PAUSE),
        )
        .unwrap();
        assert_ne!(s.secondary & secondary::USER_WAIT_PAUSE, 0);
    }

    #[test]
    fn a_cpu_without_what_the_root_needs_is_refused() {
        assert_eq!(
            root_settings(
                true,
                &mut skylake(SKYLAKE_SECONDARY & !secondary::UNRESTRICTED_GUEST)
            ),
            Err(ControlsError::Control(ControlError::Missing {
                controls: Controls::Secondary,
                bits: secondary::UNRESTRICTED_GUEST,
            }))
        );
        // Without TRUE_ MSRs CR3 exiting is forced on: the root would exit
        // on every address-space switch, which its policy does not handle.
        let mut old = |index| match index {
            msr::VMX_PINBASED_CTLS => cap(PIN_DEFAULT1, 0xff),
            msr::VMX_PROCBASED_CTLS => cap(PRIMARY_DEFAULT1, 0xfff9_fffe),
            msr::VMX_PROCBASED_CTLS2 => cap(0, SKYLAKE_SECONDARY),
            msr::VMX_EXIT_CTLS => cap(EXIT_DEFAULT1, 0x01ff_ffff),
            msr::VMX_ENTRY_CTLS => cap(ENTRY_DEFAULT1, 0x0003_ffff),
            other => panic!("unexpected read of MSR {other:#x}"),
        };
        assert_eq!(
            root_settings(false, &mut old),
            Err(ControlsError::Forced {
                controls: Controls::Primary,
                bits: primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING,
            })
        );
        // A secondary control MicroV does not know, forced on.
        let mut odd = |index| match index {
            msr::VMX_PROCBASED_CTLS2 => cap(secondary::PML, SKYLAKE_SECONDARY),
            other => skylake(SKYLAKE_SECONDARY)(other),
        };
        assert_eq!(
            root_settings(true, &mut odd),
            Err(ControlsError::Forced {
                controls: Controls::Secondary,
                bits: secondary::PML,
            })
        );
        // No EFER switching on exit.
        let mut no_efer = |index| match index {
            msr::VMX_TRUE_EXIT_CTLS => cap(0, 0x01ff_ffff & !exit::LOAD_EFER),
            other => skylake(SKYLAKE_SECONDARY)(other),
        };
        assert_eq!(
            root_settings(true, &mut no_efer),
            Err(ControlsError::Control(ControlError::Missing {
                controls: Controls::Exit,
                bits: exit::LOAD_EFER,
            }))
        );
    }

    fn tables() -> RootTables {
        let caps = EptCaps::decode(0x0f01_0633_4141);
        RootTables {
            eptp: Eptp::new(0x40_0000, false, &caps).unwrap(),
            msr_bitmap: 0x41_0000,
            io_bitmap_a: 0x42_0000,
            io_bitmap_b: 0x42_1000,
        }
    }

    /// A VMCS whose every VMWRITE fails (no current VMCS).
    struct NoVmcs;

    impl Vmcs for NoVmcs {
        fn vmread(&mut self, _: u32) -> Result<u64, VmFail> {
            Err(VmFail::Invalid)
        }
        fn vmwrite(&mut self, _: u32, _: u64) -> Result<(), VmFail> {
            Err(VmFail::Invalid)
        }
    }

    #[test]
    fn a_failing_vmwrite_is_reported() {
        let v = linux();
        assert_eq!(
            root_controls(
                true,
                &mut skylake(SKYLAKE_SECONDARY),
                &cpu(),
                &tables(),
                &v,
                &mut NoVmcs
            ),
            Err(ControlsError::Vmcs(VmFail::Invalid))
        );
    }

    #[test]
    fn the_vmcs_is_set_up_for_the_root() {
        let v = linux();
        let mut vmcs = FakeVmcs::default();
        let s = root_controls(
            true,
            &mut skylake(SKYLAKE_SECONDARY),
            &cpu(),
            &tables(),
            &v,
            &mut vmcs,
        )
        .unwrap();
        let read = |vmcs: &mut FakeVmcs, encoding| vmcs.vmread(encoding).unwrap();
        assert_eq!(
            read(&mut vmcs, control::PRIMARY_CONTROLS.encoding()),
            u64::from(s.primary)
        );
        assert_eq!(
            read(&mut vmcs, control::SECONDARY_CONTROLS.encoding()),
            u64::from(s.secondary)
        );
        assert_eq!(
            read(&mut vmcs, control::ENTRY_CONTROLS.encoding())
                & u64::from(entry::IA32E_MODE_GUEST),
            u64::from(entry::IA32E_MODE_GUEST),
            "Linux runs in long mode"
        );
        assert_eq!(read(&mut vmcs, control::EXCEPTION_BITMAP.encoding()), 0);
        assert_eq!(
            read(&mut vmcs, control::CR0_GUEST_HOST_MASK.encoding()),
            0x20
        );
        assert_eq!(
            read(&mut vmcs, control::CR4_GUEST_HOST_MASK.encoding()),
            0x2000
        );
        assert_eq!(
            read(&mut vmcs, control::CR4_READ_SHADOW.encoding()),
            v.save.cr4
        );
        assert_eq!(read(&mut vmcs, control::EPTP.encoding()), 0x40_001e);
        assert_eq!(read(&mut vmcs, control::MSR_BITMAP.encoding()), 0x41_0000);
        assert_eq!(read(&mut vmcs, control::IO_BITMAP_B.encoding()), 0x42_1000);
        assert_eq!(read(&mut vmcs, control::VPID.encoding()), 1);
        assert_eq!(
            read(&mut vmcs, guest::VMCS_LINK_POINTER.encoding()),
            u64::MAX
        );
        // The exception intercepts the extension chose carry over.
        let mut with_pf = linux();
        with_pf.control.intercept_exceptions = 1 << 14;
        root_controls(
            true,
            &mut skylake(SKYLAKE_SECONDARY),
            &cpu(),
            &tables(),
            &with_pf,
            &mut vmcs,
        )
        .unwrap();
        assert_eq!(
            read(&mut vmcs, control::EXCEPTION_BITMAP.encoding()),
            1 << 14
        );
        // The guest state then goes in on top.
        let mut regs = VsRegs::default();
        assert_eq!(
            vmx_state::write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs),
            Ok(vmx_state::Flush::None)
        );
        // A real-mode root: no IA-32e mode.
        let mut real = linux();
        real.save.efer = efer::SVME;
        root_controls(
            true,
            &mut skylake(SKYLAKE_SECONDARY),
            &cpu(),
            &tables(),
            &real,
            &mut vmcs,
        )
        .unwrap();
        assert_eq!(
            read(&mut vmcs, control::ENTRY_CONTROLS.encoding())
                & u64::from(entry::IA32E_MODE_GUEST),
            0
        );
    }
}
