//! A vCPU's state on Intel VMX. The extension reads and writes every
//! vCPU as a VMCB (`arch::svm::Vmcb`: the save area and the control area's
//! exit fields) and a register page, whichever the CPU; on Intel the
//! microkernel translates that into the VMCS before each VM entry
//! ([`write_guest`]) and back after each exit (`vmx_exit::read_exit`), so
//! the extension's policy runs unchanged above both.
//!
//! What the VMCS does not hold, the world switch moves itself:
//!
//! - **RAX** is no VMCS field. [`write_guest`] puts the save area's RAX into
//!   the register page's RAX slot, so the world switch loads all fifteen
//!   GPRs (not RSP) from the register page before VMLAUNCH/VMRESUME and
//!   stores them back after the exit; `read_exit` moves RAX back into the
//!   save area, where the extension reads it. RSP, RIP and RFLAGS are VMCS
//!   fields.
//! - **CR2** and **DR6** are not switched by VM entry or exit: the world
//!   switch must load `save.cr2` right before the entry and store CR2 right
//!   after the exit (host code must not fault in between), and leave DR6
//!   alone (the save area's DR6 is neither read nor written).
//! - **KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK** are no VMCS fields
//!   either (AMD's VMLOAD/VMSAVE move them). The root's values pass
//!   through (no exits) and live in the MSRs while it runs, but MicroV's
//!   own syscall gate needs LSTAR, STAR, SFMASK and KERNEL_GS_BASE in
//!   host mode, so the world switch must store the root's after each exit
//!   and load them before each entry (the save area's fields, as VMSAVE
//!   leaves them on AMD: [`SYSCALL_MSRS`]), by RDMSR/WRMSR or the VMCS's
//!   MSR-load/store lists; promotion then loads them as on AMD. Guest
//!   micro VMs need the same switch (each has its own values).
//! - **XCR0, TSC_AUX, the FPU state**: as on AMD.
//!
//! State the VMCB cannot express stays in the VMCS from one exit to the
//! next: NMI blocking (interruptibility bit 3, which VM entry keeps),
//! pending debug exceptions, the PDPTEs of PAE paging. The guest's
//! DEBUGCTL is never applied: the policy keeps the root's value in the save
//! area without giving it to the CPU (`extension::msr`), as on AMD; the
//! field is 0 (VM exit clears the MSR for the host anyway).

use microv_abi::launch::gpr;
use microv_abi::syscall::VsRegs;
use microv_arch::descriptor::{attrib, Segment};
use microv_arch::msr::{self, efer};
use microv_arch::svm::{tlb, Control, SaveArea};
use microv_arch::vmx::caps::FixedBits;
use microv_arch::vmx::controls::entry;
use microv_arch::vmx::event::{activity, interruptibility, EventType};
use microv_arch::vmx::fields::{control, guest};
use microv_arch::vmx::instruction_error::VmFail;
use microv_arch::vmx::segment::{self, SegmentFields};
use microv_arch::vmx::vmcs::Vmcs;

use crate::cpu_state::cr0;
use crate::vmx_check::{self, GuestStateError};
use crate::vmx_event::{self, InjectContext, InjectError, Injection, Vectoring};

/// What the CPU allows, from its VMX capability MSRs (read at bring-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCpu {
    /// IA32_VMX_CR0_FIXED0/1 as read (the guest gets unrestricted guest's
    /// PE/PG freedom: [`VmxCpu::guest_cr0`]).
    pub cr0: FixedBits,
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4: FixedBits,
    /// IA32_VMX_MISC bit 30: software events of length 0 can be injected.
    pub zero_length_injection: bool,
    /// IA32_VMX_BASIC bit 54: INS/OUTS exits report their address size.
    pub ins_outs_info: bool,
    /// Physical-address width (CPUID 0x8000_0008 EAX[7:0]).
    pub phys_bits: u32,
}

impl VmxCpu {
    /// The CR0 bits a guest runs with under unrestricted guest.
    pub const fn guest_cr0(&self) -> FixedBits {
        self.cr0.unrestricted_cr0()
    }

    /// CR0 bits owned by MicroV (the guest/host mask): those VMX forces to
    /// 1 (NE), so the guest reads its own value from the read shadow and a
    /// write that changes one exits. Bits VMX forces to 0 stay the guest's:
    /// setting one faults in the guest, as on bare metal.
    pub const fn cr0_mask(&self) -> u64 {
        self.guest_cr0().must_be_one
    }

    /// CR4 bits owned by MicroV: VMXE (and whatever else VMX forces to 1).
    pub const fn cr4_mask(&self) -> u64 {
        self.cr4.must_be_one
    }
}

/// The MSRs the world switch must move itself (no VMCS fields); each is
/// kept in its save-area field ([`syscall_msr`], [`set_syscall_msr`]).
pub const SYSCALL_MSRS: [u32; 5] = [
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
];

/// The save area's value of `index`, one of [`SYSCALL_MSRS`].
pub fn syscall_msr(save: &SaveArea, index: u32) -> Option<u64> {
    match index {
        msr::KERNEL_GS_BASE => Some(save.kernel_gs_base),
        msr::STAR => Some(save.star),
        msr::LSTAR => Some(save.lstar),
        msr::CSTAR => Some(save.cstar),
        msr::SFMASK => Some(save.sfmask),
        _ => None,
    }
}

/// Stores the guest's `value` of `index`, one of [`SYSCALL_MSRS`]; false
/// for any other MSR.
pub fn set_syscall_msr(save: &mut SaveArea, index: u32, value: u64) -> bool {
    let slot = match index {
        msr::KERNEL_GS_BASE => &mut save.kernel_gs_base,
        msr::STAR => &mut save.star,
        msr::LSTAR => &mut save.lstar,
        msr::CSTAR => &mut save.cstar,
        msr::SFMASK => &mut save.sfmask,
        _ => return false,
    };
    *slot = value;
    true
}

/// One guest segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxSegment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// VMX access rights (`segment::access_rights`).
    pub rights: u32,
}

/// Every guest-state field [`write_guest`] writes, as it writes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestState {
    /// CR0 and CR4 as the CPU runs them (fixed bits forced).
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// The guest's own CR0 and CR4, which its reads of the masked bits see.
    pub cr0_shadow: u64,
    pub cr4_shadow: u64,
    pub dr7: u64,
    pub debugctl: u64,
    pub efer: u64,
    pub pat: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub es: VmxSegment,
    pub cs: VmxSegment,
    pub ss: VmxSegment,
    pub ds: VmxSegment,
    pub fs: VmxSegment,
    pub gs: VmxSegment,
    pub ldtr: VmxSegment,
    pub tr: VmxSegment,
    pub gdtr_base: u64,
    pub gdtr_limit: u32,
    pub idtr_base: u64,
    pub idtr_limit: u32,
    pub sysenter_cs: u32,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub interruptibility: u32,
    pub activity: u32,
    pub pending_debug: u64,
    /// The "IA-32e mode guest" VM-entry control.
    pub ia32e: bool,
    pub injection: Option<Injection>,
}

/// The VMCS values [`write_guest`] keeps: what only the VMCS remembers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub interruptibility: u32,
    pub pending_debug: u64,
}

/// What the world switch must do besides VMRESUME.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Nothing.
    None,
    /// The vCPU's own translations (TLB_CONTROL 3 or 7): INVVPID for its
    /// VPID, INVEPT for its EPTP.
    Guest,
    /// Every translation (TLB_CONTROL 1): INVEPT and INVVPID, all contexts.
    All,
}

/// Why a vCPU state cannot be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// VMREAD or VMWRITE failed.
    Vmcs(VmFail),
    /// The extension's EVENTINJ cannot be injected.
    Event(InjectError),
    /// A TLB_CONTROL value SVM does not define.
    TlbControl(u8),
    /// The state would fail VM entry's checks.
    Guest(GuestStateError),
}

impl From<VmFail> for EntryError {
    fn from(e: VmFail) -> Self {
        EntryError::Vmcs(e)
    }
}

/// Translates the vCPU's VMCB (`save`, `control`) into the current VMCS,
/// checks it first against VM entry's guest-state checks, and puts RAX
/// into `regs` for the world switch. `redeliver` is the event the previous
/// exit interrupted (`vmx_exit::ExitRecord::vectoring`).
pub fn write_guest(
    save: &SaveArea,
    control: &Control,
    regs: &mut VsRegs,
    redeliver: Option<&Vectoring>,
    cpu: &VmxCpu,
    vmcs: &mut dyn Vmcs,
) -> Result<Flush, EntryError> {
    let flush = match control.tlb_control {
        tlb::DO_NOTHING => Flush::None,
        tlb::FLUSH_ALL => Flush::All,
        tlb::FLUSH_GUEST | TLB_FLUSH_GUEST_NON_GLOBAL => Flush::Guest,
        other => return Err(EntryError::TlbControl(other)),
    };
    let kept = Kept {
        interruptibility: guest::INTERRUPTIBILITY.read(vmcs)?,
        pending_debug: guest::PENDING_DEBUG_EXCEPTIONS.read(vmcs)?,
    };
    let state = translate(save, control, kept, redeliver, cpu)?;
    vmx_check::check_guest(&state, cpu).map_err(EntryError::Guest)?;
    write(&state, vmcs)?;
    if let Some(rax) = regs.gprs.get_mut(gpr::RAX) {
        *rax = save.rax;
    }
    Ok(flush)
}

/// TLB_CONTROL 7: flush this guest's non-global translations.
const TLB_FLUSH_GUEST_NON_GLOBAL: u8 = 7;

/// Bit 0 of the VMCB's interrupt shadow: the STI or MOV SS shadow.
pub const INTERRUPT_SHADOW: u64 = 1;

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
/// Pending debug exceptions bit 14: a single step is pending.
const PENDING_BS: u64 = 1 << 14;
/// Access-rights bits 6:5.
const DPL_SHIFT: u32 = 5;

/// The VMX guest state for `save` and `control`, given what the VMCS
/// keeps (`kept`).
pub fn translate(
    save: &SaveArea,
    control: &Control,
    kept: Kept,
    redeliver: Option<&Vectoring>,
    cpu: &VmxCpu,
) -> Result<GuestState, EntryError> {
    let cx = InjectContext {
        rip: save.rip,
        next_rip: control.next_rip,
        protected_mode: save.cr0 & cr0::PE != 0,
        zero_length: cpu.zero_length_injection,
    };
    let injection =
        vmx_event::injection(control.event_inj, &cx, redeliver).map_err(EntryError::Event)?;
    let interruptibility = interruptibility_for(
        kept.interruptibility,
        control.interrupt_shadow & INTERRUPT_SHADOW != 0,
        save.rflags,
        injection.as_ref(),
    );
    let blocking = interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS;
    let pending_debug = if interruptibility & blocking != 0 {
        // VM entry requires BS to say whether a single step is pending
        // (TF set, and BTF clear: DEBUGCTL is 0).
        if save.rflags & RFLAGS_TF != 0 {
            kept.pending_debug | PENDING_BS
        } else {
            kept.pending_debug & !PENDING_BS
        }
    } else {
        kept.pending_debug
    };
    let efer = save.efer & !efer::SVME;
    let mut ss = vmx_segment(&save.ss);
    // CPL is SS.DPL on VMX, even for an unusable SS.
    ss.rights = ss.rights & !(3 << DPL_SHIFT) | u32::from(save.cpl & 3) << DPL_SHIFT;
    Ok(GuestState {
        cr0: save.cr0 | cpu.guest_cr0().must_be_one,
        cr3: save.cr3,
        cr4: save.cr4 | cpu.cr4.must_be_one,
        cr0_shadow: save.cr0,
        cr4_shadow: save.cr4,
        dr7: save.dr7,
        debugctl: 0,
        efer,
        pat: save.g_pat,
        rsp: save.rsp,
        rip: save.rip,
        rflags: save.rflags,
        es: vmx_segment(&save.es),
        cs: vmx_segment(&save.cs),
        ss,
        ds: vmx_segment(&save.ds),
        fs: vmx_segment(&save.fs),
        gs: vmx_segment(&save.gs),
        ldtr: vmx_segment(&save.ldtr),
        tr: vmx_segment(&save.tr),
        gdtr_base: save.gdtr.base,
        gdtr_limit: save.gdtr.limit,
        idtr_base: save.idtr.base,
        idtr_limit: save.idtr.limit,
        sysenter_cs: save.sysenter_cs as u32,
        sysenter_esp: save.sysenter_esp,
        sysenter_eip: save.sysenter_eip,
        interruptibility,
        // The VMCB has no activity state: a vCPU resumes active after any
        // exit, as on AMD (a HLT the root ran natively ends early).
        activity: activity::ACTIVE,
        pending_debug,
        ia32e: efer & efer::LMA != 0,
        injection,
    })
}

/// The interruptibility state to enter with: NMI blocking as the VMCS
/// keeps it, the VMCB's interrupt shadow as blocking by STI (or MOV SS,
/// if that is what the CPU reported, or interrupts are off), and none of
/// them where the injected event needs them clear (VM entry injects
/// through any shadow, as SVM does).
fn interruptibility_for(
    kept: u32,
    shadow: bool,
    rflags: u64,
    injection: Option<&Injection>,
) -> u32 {
    use interruptibility::{BLOCKING_BY_MOV_SS, BLOCKING_BY_NMI, BLOCKING_BY_STI};
    let mut value = kept & BLOCKING_BY_NMI;
    if shadow {
        value |= if kept & BLOCKING_BY_MOV_SS != 0 || rflags & RFLAGS_IF == 0 {
            BLOCKING_BY_MOV_SS
        } else {
            BLOCKING_BY_STI
        };
    }
    let injected = |kind| injection.is_some_and(|i| vmx_event::is_kind(i.info, kind));
    if injected(EventType::ExternalInterrupt) || injected(EventType::Nmi) {
        value &= !(BLOCKING_BY_STI | BLOCKING_BY_MOV_SS);
    }
    if injected(EventType::Nmi) {
        // The injected NMI blocks NMIs again as it is delivered.
        value &= !BLOCKING_BY_NMI;
    }
    value
}

/// A VMCB segment as the VMCS holds it. Usable code and data segments are
/// marked accessed, as VM entry requires (the CPU sets the bit whenever
/// it loads a descriptor; only the hidden copy could lack it).
pub fn vmx_segment(s: &Segment) -> VmxSegment {
    let mut rights = segment::access_rights(s.attrib);
    if rights & segment::UNUSABLE == 0 && s.attrib & attrib::S != 0 {
        rights |= 1;
    }
    VmxSegment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        rights,
    }
}

/// Writes `state` into the current VMCS.
pub fn write(state: &GuestState, vmcs: &mut dyn Vmcs) -> Result<(), VmFail> {
    guest::CR0.write(vmcs, state.cr0)?;
    guest::CR3.write(vmcs, state.cr3)?;
    guest::CR4.write(vmcs, state.cr4)?;
    control::CR0_READ_SHADOW.write(vmcs, state.cr0_shadow)?;
    control::CR4_READ_SHADOW.write(vmcs, state.cr4_shadow)?;
    guest::DR7.write(vmcs, state.dr7)?;
    guest::DEBUGCTL.write(vmcs, state.debugctl)?;
    guest::EFER.write(vmcs, state.efer)?;
    guest::PAT.write(vmcs, state.pat)?;
    guest::RSP.write(vmcs, state.rsp)?;
    guest::RIP.write(vmcs, state.rip)?;
    guest::RFLAGS.write(vmcs, state.rflags)?;
    for (s, f) in segments(state) {
        f.selector.write(vmcs, s.selector)?;
        f.base.write(vmcs, s.base)?;
        f.limit.write(vmcs, s.limit)?;
        f.access_rights.write(vmcs, s.rights)?;
    }
    guest::GDTR_BASE.write(vmcs, state.gdtr_base)?;
    guest::GDTR_LIMIT.write(vmcs, state.gdtr_limit)?;
    guest::IDTR_BASE.write(vmcs, state.idtr_base)?;
    guest::IDTR_LIMIT.write(vmcs, state.idtr_limit)?;
    guest::SYSENTER_CS.write(vmcs, state.sysenter_cs)?;
    guest::SYSENTER_ESP.write(vmcs, state.sysenter_esp)?;
    guest::SYSENTER_EIP.write(vmcs, state.sysenter_eip)?;
    guest::INTERRUPTIBILITY.write(vmcs, state.interruptibility)?;
    guest::ACTIVITY_STATE.write(vmcs, state.activity)?;
    guest::PENDING_DEBUG_EXCEPTIONS.write(vmcs, state.pending_debug)?;
    let entry_controls = control::ENTRY_CONTROLS.read(vmcs)?;
    let ia32e = if state.ia32e {
        entry::IA32E_MODE_GUEST
    } else {
        0
    };
    control::ENTRY_CONTROLS.write(vmcs, entry_controls & !entry::IA32E_MODE_GUEST | ia32e)?;
    match state.injection {
        Some(i) => {
            control::ENTRY_INTERRUPTION_INFO.write(vmcs, i.info)?;
            control::ENTRY_EXCEPTION_ERROR_CODE.write(vmcs, i.error_code)?;
            control::ENTRY_INSTRUCTION_LENGTH.write(vmcs, i.instruction_length)
        }
        None => control::ENTRY_INTERRUPTION_INFO.write(vmcs, 0),
    }
}

/// The eight segment registers with their fields.
fn segments(state: &GuestState) -> [(&VmxSegment, SegmentFields); 8] {
    [
        (&state.es, segment::ES),
        (&state.cs, segment::CS),
        (&state.ss, segment::SS),
        (&state.ds, segment::DS),
        (&state.fs, segment::FS),
        (&state.gs, segment::GS),
        (&state.ldtr, segment::LDTR),
        (&state.tr, segment::TR),
    ]
}

/// Reads what the guest can change without an exit back into `save` and
/// `control`'s interrupt shadow, and RAX from `regs` (where the world
/// switch stored it). CR0 and CR4 come back as the guest sees them (the
/// masked bits from the read shadows); EFER keeps the save area's SVME
/// (the extension's policy keeps it set, as AMD requires; VMX has no such
/// bit); CPL is SS.DPL.
pub fn read_guest(
    vmcs: &mut dyn Vmcs,
    cpu: &VmxCpu,
    save: &mut SaveArea,
    control: &mut Control,
    regs: &VsRegs,
) -> Result<(), VmFail> {
    let merge = |real: u64, shadow: u64, mask: u64| real & !mask | shadow & mask;
    save.cr0 = merge(
        guest::CR0.read(vmcs)?,
        control::CR0_READ_SHADOW.read(vmcs)?,
        cpu.cr0_mask(),
    );
    save.cr3 = guest::CR3.read(vmcs)?;
    save.cr4 = merge(
        guest::CR4.read(vmcs)?,
        control::CR4_READ_SHADOW.read(vmcs)?,
        cpu.cr4_mask(),
    );
    save.dr7 = guest::DR7.read(vmcs)?;
    save.efer = guest::EFER.read(vmcs)? & !efer::SVME | save.efer & efer::SVME;
    save.g_pat = guest::PAT.read(vmcs)?;
    save.rsp = guest::RSP.read(vmcs)?;
    save.rip = guest::RIP.read(vmcs)?;
    save.rflags = guest::RFLAGS.read(vmcs)?;
    if let Some(rax) = regs.gprs.get(gpr::RAX) {
        save.rax = *rax;
    }
    let ss_rights = guest::SS_ACCESS_RIGHTS.read(vmcs)?;
    save.cpl = ((ss_rights >> DPL_SHIFT) & 3) as u8;
    for (slot, fields) in [
        (&mut save.es, segment::ES),
        (&mut save.cs, segment::CS),
        (&mut save.ss, segment::SS),
        (&mut save.ds, segment::DS),
        (&mut save.fs, segment::FS),
        (&mut save.gs, segment::GS),
        (&mut save.ldtr, segment::LDTR),
        (&mut save.tr, segment::TR),
    ] {
        *slot = fields.read(vmcs)?;
    }
    save.gdtr = Segment {
        selector: 0,
        attrib: 0,
        limit: guest::GDTR_LIMIT.read(vmcs)?,
        base: guest::GDTR_BASE.read(vmcs)?,
    };
    save.idtr = Segment {
        selector: 0,
        attrib: 0,
        limit: guest::IDTR_LIMIT.read(vmcs)?,
        base: guest::IDTR_BASE.read(vmcs)?,
    };
    save.sysenter_cs = u64::from(guest::SYSENTER_CS.read(vmcs)?);
    save.sysenter_esp = guest::SYSENTER_ESP.read(vmcs)?;
    save.sysenter_eip = guest::SYSENTER_EIP.read(vmcs)?;
    let blocking = interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS;
    let shadow = if guest::INTERRUPTIBILITY.read(vmcs)? & blocking != 0 {
        INTERRUPT_SHADOW
    } else {
        0
    };
    control.interrupt_shadow = control.interrupt_shadow & !INTERRUPT_SHADOW | shadow;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use microv_arch::svm::{event as svm_event, Vmcb};
    use microv_arch::vmx::vmcs::fake::FakeVmcs;
    use zerocopy::FromZeros;

    /// A CPU as most report it: CR0 PE, NE, PG fixed to 1; CR4 VMXE fixed,
    /// bits up to PKE (22) and CET (23) supported; 46-bit physical
    /// addresses; length-0 software injection; INS/OUTS information.
    pub fn cpu() -> VmxCpu {
        VmxCpu {
            cr0: FixedBits::new(0x8000_0021, 0xffff_ffff),
            cr4: FixedBits::new(1 << 13, 0x00ff_ffff & !(1 << 12) & !(1 << 19)),
            zero_length_injection: true,
            ins_outs_info: true,
            phys_bits: 46,
        }
    }

    /// Linux 6.1's root vCPU in a kernel thread, as the VMCB holds it.
    pub fn linux() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::new_zeroed());
        let s = &mut v.save;
        let seg = |selector, attrib, limit, base| Segment {
            selector,
            attrib,
            limit,
            base,
        };
        s.cs = seg(0x10, 0xa9b, 0xffff_ffff, 0);
        s.ss = seg(0x18, 0xc93, 0xffff_ffff, 0);
        s.ds = Segment::default();
        s.es = Segment::default();
        s.fs = seg(0, 0, 0, 0x7f3e_a000_0740);
        s.gs = seg(0, 0, 0, 0xffff_8881_3bc0_0000);
        s.ldtr = Segment::default();
        s.tr = seg(0x40, 0x8b, 0x4087, 0xffff_fe00_0000_3000);
        s.gdtr = seg(0, 0, 0x7f, 0xffff_fe00_0000_1000);
        s.idtr = seg(0, 0, 0xfff, 0xffff_fe00_0000_0000);
        s.cpl = 0;
        s.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
        s.cr0 = 0x8005_0033;
        s.cr3 = 0x10_c000;
        s.cr4 = 0x3606f0;
        s.dr7 = 0x400;
        s.dr6 = 0xffff_0ff0;
        s.rflags = 0x246;
        s.rip = 0xffff_ffff_8100_0040;
        s.rsp = 0xffff_c900_0001_3e58;
        s.rax = 0x1234;
        s.sysenter_cs = 0x10;
        s.sysenter_esp = 0xffff_fe00_0000_5000;
        s.sysenter_eip = 0xffff_ffff_8160_1234;
        s.g_pat = 0x0407_0506_0007_0406;
        s.dbgctl = 1;
        v
    }

    /// Linux's state as VMX runs it.
    pub fn long_mode() -> GuestState {
        let v = linux();
        translate(&v.save, &v.control, Kept::default(), None, &cpu()).unwrap()
    }

    /// A VMCS with the fields `write_guest` keeps.
    fn fresh_vmcs() -> FakeVmcs {
        let mut vmcs = FakeVmcs::default();
        guest::INTERRUPTIBILITY.write(&mut vmcs, 0).unwrap();
        guest::PENDING_DEBUG_EXCEPTIONS.write(&mut vmcs, 0).unwrap();
        control::ENTRY_CONTROLS.write(&mut vmcs, 0x11ff).unwrap();
        vmcs
    }

    fn field(vmcs: &FakeVmcs, encoding: u32) -> u64 {
        vmcs.fields[&encoding]
    }

    #[test]
    fn linux_is_written_as_vmx_runs_it() {
        let v = linux();
        let (mut vmcs, mut regs) = (fresh_vmcs(), VsRegs::default());
        let flush = write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs);
        assert_eq!(flush, Ok(Flush::None));
        // Control registers: VMXE in the real CR4 only, the guest's own
        // values in the shadows; EFER without SVME, and IA-32e mode entry
        // from its LMA; DEBUGCTL never applied; segments' access rights in
        // VMX's layout, null ones unusable.
        let expected = [
            (guest::CR0.encoding(), 0x8005_0033),
            (guest::CR4.encoding(), 0x3626f0),
            (control::CR4_READ_SHADOW.encoding(), 0x3606f0),
            (control::CR0_READ_SHADOW.encoding(), 0x8005_0033),
            (guest::CR3.encoding(), 0x10_c000),
            (guest::EFER.encoding(), 0xd01),
            (control::ENTRY_CONTROLS.encoding(), 0x11ff | 1 << 9),
            (guest::PAT.encoding(), 0x0407_0506_0007_0406),
            (guest::DEBUGCTL.encoding(), 0),
            (guest::DR7.encoding(), 0x400),
            (guest::RIP.encoding(), 0xffff_ffff_8100_0040),
            (guest::RSP.encoding(), 0xffff_c900_0001_3e58),
            (guest::RFLAGS.encoding(), 0x246),
            (guest::CS_ACCESS_RIGHTS.encoding(), 0xa09b),
            (guest::SS_ACCESS_RIGHTS.encoding(), 0xc093),
            (guest::DS_ACCESS_RIGHTS.encoding(), 0x1_0000),
            (guest::TR_ACCESS_RIGHTS.encoding(), 0x8b),
            (guest::GS_BASE.encoding(), 0xffff_8881_3bc0_0000),
            (guest::TR_LIMIT.encoding(), 0x4087),
            (guest::GDTR_BASE.encoding(), 0xffff_fe00_0000_1000),
            (guest::IDTR_LIMIT.encoding(), 0xfff),
            (guest::SYSENTER_CS.encoding(), 0x10),
            (guest::SYSENTER_EIP.encoding(), 0xffff_ffff_8160_1234),
            (guest::ACTIVITY_STATE.encoding(), 0),
            (guest::INTERRUPTIBILITY.encoding(), 0),
            (control::ENTRY_INTERRUPTION_INFO.encoding(), 0),
        ];
        for (encoding, value) in expected {
            assert_eq!(field(&vmcs, encoding), value, "{encoding:#x}");
        }
        // RAX goes to the register page for the world switch.
        assert_eq!(regs.gprs[gpr::RAX], 0x1234);
    }

    #[test]
    fn a_round_trip_gives_the_state_back() {
        let v = linux();
        let (mut vmcs, mut regs) = (fresh_vmcs(), VsRegs::default());
        write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs).unwrap();
        let mut back = Box::new(Vmcb::new_zeroed());
        back.save.efer = efer::SVME;
        read_guest(&mut vmcs, &cpu(), &mut back.save, &mut back.control, &regs).unwrap();
        // Everything the guest can change comes back as it was; DEBUGCTL
        // and DR6 stay the save area's (the policy's and the CPU's).
        let mut expected = v.clone();
        expected.save.dbgctl = 0;
        expected.save.dr6 = 0;
        assert_eq!(back.save.as_bytes(), expected.save.as_bytes());
        // What the guest changed while it ran comes back: the masked CR4
        // bit from the shadow, LMA from the CPU, CPL from SS.
        guest::CR4.write(&mut vmcs, 0x3626f0 | 1 << 7).unwrap();
        guest::EFER.write(&mut vmcs, 0x501).unwrap();
        guest::SS_ACCESS_RIGHTS.write(&mut vmcs, 0xc0f3).unwrap();
        guest::INTERRUPTIBILITY
            .write(&mut vmcs, interruptibility::BLOCKING_BY_MOV_SS)
            .unwrap();
        regs.gprs[gpr::RAX] = 0x77;
        read_guest(&mut vmcs, &cpu(), &mut back.save, &mut back.control, &regs).unwrap();
        assert_eq!(back.save.cr4, 0x3606f0 | 1 << 7);
        assert_eq!(back.save.efer, 0x501 | efer::SVME);
        assert_eq!((back.save.cpl, back.save.ss.attrib), (3, 0xcf3));
        assert_eq!((back.control.interrupt_shadow, back.save.rax), (1, 0x77));
    }

    use zerocopy::IntoBytes;

    #[test]
    fn the_shadow_keeps_nmi_blocking_and_picks_sti_or_mov_ss() {
        use interruptibility::*;
        let v = linux();
        let kept = |i| Kept {
            interruptibility: i,
            pending_debug: 0,
        };
        let mut c = v.control;
        let state = |c: &Control, s: &SaveArea, k| translate(s, c, k, None, &cpu()).unwrap();
        // NMI blocking is the VMCS's; the shadow becomes STI blocking.
        c.interrupt_shadow = 1;
        assert_eq!(
            state(&c, &v.save, kept(BLOCKING_BY_NMI)).interruptibility,
            BLOCKING_BY_NMI | BLOCKING_BY_STI
        );
        // MOV SS if the CPU said so, or if interrupts are off.
        assert_eq!(
            state(&c, &v.save, kept(BLOCKING_BY_MOV_SS)).interruptibility,
            BLOCKING_BY_MOV_SS
        );
        let mut cli = v.save;
        cli.rflags = 0x46;
        assert_eq!(
            state(&c, &cli, kept(0)).interruptibility,
            BLOCKING_BY_MOV_SS
        );
        // The extension ended the shadow (it moved past the instruction).
        c.interrupt_shadow = 0;
        assert_eq!(
            state(&c, &v.save, kept(BLOCKING_BY_STI | BLOCKING_BY_NMI)).interruptibility,
            BLOCKING_BY_NMI
        );
        // Injected interrupts and NMIs go in through the shadow; an NMI
        // through NMI blocking too.
        c.interrupt_shadow = 1;
        c.event_inj = svm_event::interrupt(0x30);
        assert_eq!(
            state(&c, &v.save, kept(BLOCKING_BY_NMI)).interruptibility,
            BLOCKING_BY_NMI
        );
        c.event_inj = svm_event::nmi();
        assert_eq!(
            state(&c, &v.save, kept(BLOCKING_BY_NMI | BLOCKING_BY_STI)).interruptibility,
            0
        );
        // An exception keeps the shadow.
        c.event_inj = svm_event::exception(6);
        assert_eq!(
            state(&c, &v.save, kept(0)).interruptibility,
            BLOCKING_BY_STI
        );
    }

    #[test]
    fn single_steps_in_a_shadow_are_pending() {
        let mut v = linux();
        v.control.interrupt_shadow = 1;
        v.save.rflags |= RFLAGS_TF;
        let kept = Kept {
            interruptibility: 0,
            pending_debug: 0b1,
        };
        let s = translate(&v.save, &v.control, kept, None, &cpu()).unwrap();
        assert_eq!(s.pending_debug, PENDING_BS | 1);
        assert_eq!(vmx_check::check_guest(&s, &cpu()), Ok(()));
        v.save.rflags &= !RFLAGS_TF;
        let kept = Kept {
            pending_debug: PENDING_BS,
            ..kept
        };
        assert_eq!(
            translate(&v.save, &v.control, kept, None, &cpu())
                .unwrap()
                .pending_debug,
            0
        );
        v.control.interrupt_shadow = 0;
        assert_eq!(
            translate(&v.save, &v.control, kept, None, &cpu())
                .unwrap()
                .pending_debug,
            PENDING_BS,
            "outside a shadow the VMCS's value stands"
        );
    }

    #[test]
    fn segments_translate_for_vmx() {
        // An unaccessed data segment is marked accessed; a system segment
        // is left alone; SS carries the CPL even when unusable.
        for (attrib, rights) in [(0xcf2, 0xc0f3), (0x82, 0x82)] {
            let s = Segment {
                selector: 0x50,
                attrib,
                limit: 0xffff_ffff,
                base: 0,
            };
            assert_eq!(vmx_segment(&s).rights, rights);
        }
        let mut v = linux();
        v.save.ss = Segment::default();
        v.save.cpl = 3;
        let s = translate(&v.save, &v.control, Kept::default(), None, &cpu()).unwrap();
        assert_eq!(s.ss.rights, segment::UNUSABLE | 3 << 5);
    }

    #[test]
    fn events_go_into_the_entry_fields() {
        let mut v = linux();
        v.control.event_inj = svm_event::exception_with_code(13, 0x10);
        let (mut vmcs, mut regs) = (fresh_vmcs(), VsRegs::default());
        write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs).unwrap();
        assert_eq!(
            field(&vmcs, control::ENTRY_INTERRUPTION_INFO.encoding()),
            0x8000_0b0d
        );
        assert_eq!(
            field(&vmcs, control::ENTRY_EXCEPTION_ERROR_CODE.encoding()),
            0x10
        );
        // Re-delivering INT3 with its length.
        let int3 = Vectoring {
            info: 0x8000_0603,
            error_code: 0,
            instruction_length: 1,
        };
        v.control.event_inj = int3.to_svm().unwrap();
        write_guest(
            &v.save,
            &v.control,
            &mut regs,
            Some(&int3),
            &cpu(),
            &mut vmcs,
        )
        .unwrap();
        assert_eq!(
            field(&vmcs, control::ENTRY_INTERRUPTION_INFO.encoding()),
            0x8000_0603
        );
        assert_eq!(
            field(&vmcs, control::ENTRY_INSTRUCTION_LENGTH.encoding()),
            1
        );
        // A bad one is refused before anything is written.
        v.control.event_inj = svm_event::exception(40);
        let mut untouched = fresh_vmcs();
        assert_eq!(
            write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut untouched),
            Err(EntryError::Event(InjectError::Vector(
                svm_event::exception(40)
            )))
        );
        assert_eq!(untouched.fields.len(), 3);
    }

    #[test]
    fn entries_are_refused_with_the_reason() {
        let enter = |v: &Vmcb, vmcs: &mut FakeVmcs| {
            write_guest(
                &v.save,
                &v.control,
                &mut VsRegs::default(),
                None,
                &cpu(),
                vmcs,
            )
        };
        let mut v = linux();
        v.control.tlb_control = 2;
        assert_eq!(enter(&v, &mut fresh_vmcs()), Err(EntryError::TlbControl(2)));
        for (value, flush) in [(1, Flush::All), (3, Flush::Guest), (7, Flush::Guest)] {
            v.control.tlb_control = value;
            assert_eq!(enter(&v, &mut fresh_vmcs()), Ok(flush));
        }
        v.control.tlb_control = 0;
        v.save.tr.attrib = 0x89;
        assert_eq!(
            enter(&v, &mut fresh_vmcs()),
            Err(EntryError::Guest(GuestStateError::Segment(
                crate::vmx_check::Reg::Tr,
                crate::vmx_check::SegmentRule::Type
            )))
        );
        // A VMCS without the kept fields: the VMREAD failure is reported.
        v.save.tr.attrib = 0x8b;
        assert!(matches!(
            enter(&v, &mut FakeVmcs::default()),
            Err(EntryError::Vmcs(_))
        ));
    }

    #[test]
    fn a_root_in_real_mode_enters_without_ia32e_mode() {
        // On its way to a reboot: unpaged, real mode at the reset vector.
        let mut v = linux();
        let s = &mut v.save;
        s.cr0 = cr0::ET | cr0::NE;
        s.cr4 = 0;
        s.efer = efer::SVME;
        s.cs = Segment {
            selector: 0xf000,
            attrib: 0x9b,
            limit: 0xffff,
            base: 0xf_0000,
        };
        s.ss = Segment {
            selector: 0,
            attrib: 0x93,
            limit: 0xffff,
            base: 0,
        };
        (s.rip, s.rflags) = (0xfff0, 2);
        let mut vmcs = fresh_vmcs();
        control::ENTRY_CONTROLS
            .write(&mut vmcs, 0x11ff | entry::IA32E_MODE_GUEST)
            .unwrap();
        let mut regs = VsRegs::default();
        assert_eq!(
            write_guest(&v.save, &v.control, &mut regs, None, &cpu(), &mut vmcs),
            Ok(Flush::None)
        );
        assert_eq!(control::ENTRY_CONTROLS.read(&mut vmcs), Ok(0x11ff));
        assert_eq!(guest::CR0.read(&mut vmcs), Ok(0x30), "PE and PG stay off");
        assert_eq!(guest::CR4.read(&mut vmcs), Ok(1 << 13));
        assert_eq!(guest::EFER.read(&mut vmcs), Ok(0));
    }

    #[test]
    fn syscall_msrs_live_in_the_save_area() {
        let mut v = linux();
        for (i, index) in SYSCALL_MSRS.iter().enumerate() {
            assert!(set_syscall_msr(&mut v.save, *index, 0x100 + i as u64));
        }
        assert_eq!(v.save.kernel_gs_base, 0x100);
        assert_eq!(
            (v.save.star, v.save.lstar, v.save.cstar, v.save.sfmask),
            (0x101, 0x102, 0x103, 0x104)
        );
        let values: Vec<_> = SYSCALL_MSRS
            .iter()
            .map(|&i| syscall_msr(&v.save, i))
            .collect();
        assert_eq!(
            values,
            [
                Some(0x100),
                Some(0x101),
                Some(0x102),
                Some(0x103),
                Some(0x104)
            ]
        );
        assert_eq!(syscall_msr(&v.save, msr::EFER), None);
        assert!(!set_syscall_msr(&mut v.save, msr::EFER, 0));
    }

    #[test]
    fn masks_cover_what_vmx_forces() {
        let c = cpu();
        assert_eq!(c.cr0_mask(), cr0::NE);
        assert_eq!(c.cr4_mask(), 1 << 13);
    }
}
