//! Intel VMX on this CPU: VMX operation, the current VMCS as the
//! `arch::vmx::vmcs::Vmcs` the logic modules write through, and the world
//! switch around `microv_vmx_world_switch`. The decisions (controls, guest
//! and host state, exit translation) are the host-tested `vmx_*` modules'.

use microv_abi::syscall::VsRegs;
use microv_abi::StartError;
use microv_arch::cpuid::LEAF_ADDRESS_SIZES;
use microv_arch::instr;
use microv_arch::instr::vmx as insn;
use microv_arch::msr;
use microv_arch::svm::{event, Vmcb};
use microv_arch::vmx::caps::{FixedBits, VmxBasic, VmxMisc, CR4_VMXE};
use microv_arch::vmx::ept::{EptCaps, Eptp};
use microv_arch::vmx::event::interruptibility;
use microv_arch::vmx::fields::{exit_info, guest};
use microv_arch::vmx::instruction_error::{outcome, VmFail};
use microv_arch::vmx::region::RegionHeader;
use microv_arch::vmx::vmcs::Vmcs;

use super::asm;
use super::log::log;
use super::percpu::VmxSwitchArgs;
use crate::vmx_event::Vectoring;
use crate::vmx_exit;
use crate::vmx_host::{self, HostState};
use crate::vmx_root::{self, RootTables};
use crate::vmx_state::{self, EntryError, VmxCpu};

/// The current VMCS, through VMREAD and VMWRITE.
pub struct HwVmcs;

impl Vmcs for HwVmcs {
    fn vmread(&mut self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: VMREAD only reads the current VMCS; this type is used
        // only in VMX root operation (after `enable`).
        let (value, rflags) = unsafe { insn::vmread(encoding) };
        outcome(rflags, instruction_error).map(|()| value)
    }

    fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: as above; what is written is the caller's decision, made
        // by the host-tested modules, and takes effect at the next entry.
        let rflags = unsafe { insn::vmwrite(encoding, value) };
        outcome(rflags, instruction_error)
    }
}

/// The VM-instruction error of the current VMCS (after a VMfailValid).
fn instruction_error() -> u32 {
    // SAFETY: VMREAD of a read-only field of the current VMCS.
    let (value, _) = unsafe { insn::vmread(exit_info::INSTRUCTION_ERROR.encoding()) };
    value as u32
}

/// What this CPU's VMX allows, read once at bring-up.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub basic: VmxBasic,
    pub cr0: FixedBits,
    pub cr4: FixedBits,
}

/// Reads this CPU's VMX capabilities.
pub fn caps() -> Caps {
    // SAFETY: ring 0 on a CPU with VMX (checked by the loader and by
    // `cpuid::virtualization`): these capability MSRs exist.
    let read = |index| unsafe { instr::rdmsr(index) };
    Caps {
        basic: VmxBasic::decode(read(msr::VMX_BASIC)),
        cr0: FixedBits::new(read(msr::VMX_CR0_FIXED0), read(msr::VMX_CR0_FIXED1)),
        cr4: FixedBits::new(read(msr::VMX_CR4_FIXED0), read(msr::VMX_CR4_FIXED1)),
    }
}

/// Why VMX operation could not start on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    Basic(microv_arch::vmx::caps::BasicError),
    /// MicroV's host CR0 breaks the fixed bits (bits that must be set,
    /// bits that must be clear).
    Cr0(u64, u64),
    Vmxon(VmFail),
}

/// Enters VMX operation: CR4.VMXE within the fixed bits, then VMXON with
/// the region at `region_va`/`region_pa` (a zeroed pool page).
pub fn enable(caps: &Caps, host_cr0: u64, host_cr4: u64, region_va: u64, region_pa: u64)
    -> Result<(), EnableError> {
    caps.basic.check().map_err(EnableError::Basic)?;
    if let Err(e) = caps.cr0.check(host_cr0) {
        return Err(EnableError::Cr0(e.must_set, e.must_clear));
    }
    let header = region_va as *mut RegionHeader;
    // SAFETY: the page is this CPU's VMXON region, just allocated and
    // mapped only in the microkernel; the header is its first 8 bytes.
    unsafe { header.write_volatile(RegionHeader::new(caps.basic.revision_id)) };
    // SAFETY: ring 0; the value keeps every bit MicroV's host state needs
    // and the VMX fixed bits (VMXE among them).
    unsafe { instr::write_cr4(caps.cr4.adjust(host_cr4 | CR4_VMXE)) };
    // SAFETY: CR4.VMXE and CR0 are within the fixed bits, the loader
    // checked IA32_FEATURE_CONTROL, the region carries the revision.
    let rflags = unsafe { insn::vmxon(region_pa) };
    outcome(rflags, || 0).map_err(EnableError::Vmxon)
}

/// This CPU's VMX state, kept in its `PerCpu`.
#[derive(Clone, Copy, Debug)]
pub struct VmxState {
    /// The root vCPU's VMCS (current on this CPU from bring-up on).
    pub root_vmcs_pa: u64,
    /// VMLAUNCH done: the next entry is a VMRESUME.
    pub launched: bool,
    pub cpu: VmxCpu,
    /// The event the last exit interrupted, delivered again at the next
    /// entry.
    pub redeliver: Option<Vectoring>,
}

/// What the logic modules need to know of this CPU's VMX.
pub fn vmx_cpu(caps: &Caps) -> VmxCpu {
    // SAFETY: ring 0 on a CPU with VMX: the capability MSR exists.
    let misc = VmxMisc::decode(unsafe { instr::rdmsr(msr::VMX_MISC) });
    VmxCpu {
        cr0: caps.cr0,
        cr4: caps.cr4,
        zero_length_injection: misc.zero_length_injection,
        ins_outs_info: caps.basic.ins_outs_info,
        phys_bits: instr::cpuid(LEAF_ADDRESS_SIZES, 0).eax & 0xff,
    }
}

/// Why the root's VMCS could not be set up (logged; the start fails with
/// `VmxUnsupported` and the detail).
fn refuse<E: core::fmt::Debug>(index: u64, what: &str, e: E) -> (StartError, u64) {
    log!("cpu {}: VMX: {}: {:?}", index, what, e);
    (StartError::VmxUnsupported, 0)
}

/// VMX operation on this CPU and the root's VMCS made current and set up:
/// controls from the root's VMCB (`vmx_root`), its tables, the host state.
pub fn start(
    index: u64,
    caps: &Caps,
    vmxon: (u64, u64),
    vmcs: (u64, u64),
    root_vmcb: &Vmcb,
    host: &HostState,
) -> Result<VmxState, (StartError, u64)> {
    let cpu = vmx_cpu(caps);
    enable(caps, host.cr0, host.cr4, vmxon.0, vmxon.1).map_err(|e| refuse(index, "VMXON", e))?;
    let header = vmcs.0 as *mut RegionHeader;
    // SAFETY: the page is this CPU's root VMCS region, just allocated and
    // mapped only in the microkernel; the header is its first 8 bytes.
    unsafe { header.write_volatile(RegionHeader::new(caps.basic.revision_id)) };
    // SAFETY: VMX root operation; the region is MicroV's, with the revision.
    let cleared = unsafe { insn::vmclear(vmcs.1) };
    outcome(cleared, instruction_error).map_err(|e| refuse(index, "VMCLEAR", e))?;
    // SAFETY: as above; the VMCS is this CPU's alone.
    let loaded = unsafe { insn::vmptrld(vmcs.1) };
    outcome(loaded, instruction_error).map_err(|e| refuse(index, "VMPTRLD", e))?;
    let built = super::root_vm::vmx_tables().ok_or((StartError::KernelFault, 0))?;
    // SAFETY: ring 0; the capability MSR exists where EPT does.
    let ept_caps = EptCaps::decode(unsafe { instr::rdmsr(msr::VMX_EPT_VPID_CAP) });
    let eptp = Eptp::new(built.ept_pml4, false, &ept_caps).map_err(|e| refuse(index, "EPTP", e))?;
    let tables = RootTables {
        eptp,
        msr_bitmap: built.msr_bitmap,
        io_bitmap_a: built.io_bitmap_a,
        io_bitmap_b: built.io_bitmap_b,
    };
    // SAFETY: ring 0; `vmx_root` reads only the VMX capability MSRs.
    let mut rdmsr = |index| unsafe { instr::rdmsr(index) };
    let vmcs_dyn: &mut dyn Vmcs = &mut HwVmcs;
    vmx_root::root_controls(caps.basic.true_controls, &mut rdmsr, &cpu, &tables, root_vmcb, vmcs_dyn)
        .map_err(|e| refuse(index, "root controls", e))?;
    vmx_host::check_host(host, &cpu).map_err(|e| refuse(index, "host state", e))?;
    vmx_host::host_state(host, &mut HwVmcs).map_err(|e| refuse(index, "host state", e))?;
    Ok(VmxState {
        root_vmcs_pa: vmcs.1,
        launched: false,
        cpu,
        redeliver: None,
    })
}

/// Why the root could not be entered.
#[derive(Clone, Copy, Debug)]
pub enum RunError {
    Entry(EntryError),
    /// VMLAUNCH/VMRESUME failed: RFLAGS, and the VM-instruction error.
    Fail(u64, u32),
    Exit(VmFail),
}

impl RunError {
    /// Logs the failure on CPU `index`.
    pub fn log(&self, index: u64) {
        match self {
            RunError::Entry(e) => log!("cpu {}: VMX: the state cannot be entered: {:?}", index, e),
            RunError::Fail(rflags, error) => log!(
                "cpu {}: VMX: VM entry failed (RFLAGS {:#x}, VM-instruction error {} {})",
                index,
                rflags,
                error,
                microv_arch::vmx::instruction_error::InstructionError(*error).name()
            ),
            RunError::Exit(e) => log!("cpu {}: VMX: reading the exit failed: {:?}", index, e),
        }
    }
}

/// One VM entry of the vCPU whose VMCB (MicroV's private copy) is at
/// `vmcb_va` and register page at `regs_va`, on the current VMCS, until
/// its next exit; the synthesized SVM exit code. The root's syscall MSRs
/// go onto the CPU for the run (VMX does not switch them; `host_msrs` are
/// MicroV's, put back after), and TR is reloaded after it (a VM exit cuts
/// TR's limit to 0x67, below MicroV's I/O permission bitmap).
pub fn run(
    state: &mut VmxState,
    vmcb_va: u64,
    regs_va: u64,
    fpu_va: u64,
    xcr0: u64,
    host_msrs: &[(u32, u64)],
    reload_tr: &dyn Fn(),
) -> Result<u64, RunError> {
    let vmcb = vmcb_va as *mut Vmcb;
    let regs = regs_va as *mut VsRegs;
    {
        // SAFETY: MicroV's private VMCB and this vCPU's register page,
        // mapped; this CPU alone uses them while it runs the vCPU, and
        // these references end before the world switch writes them.
        let v = unsafe { &*vmcb };
        // SAFETY: as above, for the register page.
        let r = unsafe { &mut *regs };
        vmx_state::write_guest(&v.save, &v.control, r, state.redeliver.as_ref(), &state.cpu, &mut HwVmcs)
            .map_err(RunError::Entry)?;
        for index in vmx_state::SYSCALL_MSRS {
            if let Some(value) = vmx_state::syscall_msr(&v.save, index) {
                // SAFETY: ring 0; the root's own value of a syscall MSR,
                // which host code does not use until it is replaced below.
                unsafe { instr::wrmsr(index, value) };
            }
        }
    }
    // SAFETY: reads a field of the private VMCB; the reference ends here.
    let cr2 = unsafe { (*vmcb).save.cr2 };
    let mut args = VmxSwitchArgs {
        regs,
        fpu: fpu_va as *mut u8,
        xcr0,
        cr2,
        launched: u64::from(state.launched),
        fail_rflags: 0,
    };
    // SAFETY: the current VMCS holds checked guest state (write_guest) and
    // the host state set at bring-up; the register page and FPU area are
    // this vCPU's; XCR0 was checked by the caller.
    unsafe { asm::microv_vmx_world_switch(&mut args) };
    // SAFETY: the private VMCB again, after the world switch is done.
    let v = unsafe { &mut *vmcb };
    for index in vmx_state::SYSCALL_MSRS {
        // SAFETY: ring 0; reading a syscall MSR has no effect.
        let value = unsafe { instr::rdmsr(index) };
        vmx_state::set_syscall_msr(&mut v.save, index, value);
    }
    for &(index, value) in host_msrs {
        // SAFETY: ring 0; MicroV's own values, as at bring-up.
        unsafe { instr::wrmsr(index, value) };
    }
    reload_tr();
    if args.fail_rflags != 0 {
        return Err(RunError::Fail(args.fail_rflags, instruction_error()));
    }
    state.launched = true;
    v.save.cr2 = args.cr2;
    // SAFETY: the register page, after the world switch wrote it.
    let r = unsafe { &*regs };
    let record = vmx_exit::read_exit(&mut HwVmcs, &state.cpu, &mut v.save, &mut v.control, r)
        .map_err(RunError::Exit)?;
    state.redeliver = record.vectoring;
    Ok(v.control.exit_code)
}

/// Leaves VMX operation on this CPU: the VMCS at `vmcs_pa` written back
/// and inactive, then VMXOFF. Failures are only logged: the CPU is on its
/// way back to the root either way.
pub fn leave(vmcs_pa: u64) {
    // SAFETY: VMX root operation; the region is this CPU's root VMCS.
    let cleared = unsafe { insn::vmclear(vmcs_pa) };
    // SAFETY: VMX root operation; no VMCS is needed again on this CPU.
    let off = unsafe { insn::vmxoff() };
    if outcome(cleared, || 0).is_err() || outcome(off, || 0).is_err() {
        log!("VMX: VMCLEAR or VMXOFF failed while leaving");
    }
}

/// Puts an NMI that arrived in host mode into the vCPU's event injection
/// (the VMCB at `vmcb_va`, MicroV's private copy), if nothing else is
/// being injected and the guest does not block NMIs now (an NMI handler
/// runs: VM entry would refuse the injection); true if it did. Otherwise
/// the NMI stays pending for a later entry.
pub fn deliver_nmi(vmcb_va: u64) -> bool {
    // SAFETY: MicroV's private VMCB of the vCPU this CPU is about to run;
    // no other reference to it exists here.
    let v = unsafe { &mut *(vmcb_va as *mut Vmcb) };
    if v.control.event_inj & event::VALID != 0 {
        return false;
    }
    let open = guest::INTERRUPTIBILITY
        .read(&mut HwVmcs)
        .is_ok_and(|i| i & interruptibility::BLOCKING_BY_NMI == 0);
    if !open {
        return false;
    }
    v.control.event_inj = event::nmi();
    true
}
