//! VM entry's checks on the guest-state area (SDM Vol. 3C 27.3.1), made
//! on the translated state before it is written, so that a state the CPU
//! would refuse is refused with the field named instead of a VM-entry
//! failure. MicroV always enters with unrestricted guest, so the checks
//! are those for that setting (PE and PG may be 0; no RPL rules for SS
//! and data segments; CS may be a read/write data segment in real mode).
//! Virtual-8086 mode is refused (MicroV's guests are 64-bit; long mode
//! has none). Addresses must be canonical for 4-level paging, a little
//! stricter than the CPU on one with 57-bit linear addresses.

use microv_arch::msr::{self, efer};
use microv_arch::paging::is_canonical;
use microv_arch::vmx::caps::FixedBitsError;
use microv_arch::vmx::event::{activity, interruptibility as blocking, vector, Event, EventType};
use microv_arch::vmx::segment::UNUSABLE;

use crate::cpu_state::{cr0, cr4};
use crate::vmx_state::{GuestState, VmxCpu, VmxSegment};

/// A register a check names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
    Gdtr,
    Idtr,
    SysenterEsp,
    SysenterEip,
}

/// Which rule a segment register breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentRule {
    /// TR's or LDTR's selector points into an LDT (TI set).
    Selector,
    /// Not canonical, or bits 63:32 set where they must be 0.
    Base,
    /// A descriptor type the register cannot hold.
    Type,
    /// The S bit (code/data vs. system) is wrong.
    System,
    /// The DPL breaks the rules between CS and SS.
    Dpl,
    /// Not present (CS and TR must be; others if usable).
    Present,
    /// Reserved access-rights bits set.
    Reserved,
    /// 64-bit code with D set.
    DefaultSize,
    /// G does not match the limit.
    Granularity,
    /// TR is unusable.
    Unusable,
}

/// Why VM entry would refuse a guest state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStateError {
    /// CR0 breaks the bits VMX fixes.
    Cr0(FixedBitsError),
    /// CR0.PG without CR0.PE.
    Cr0PagingWithoutProtection,
    /// CR4 breaks the bits VMX fixes.
    Cr4(FixedBitsError),
    /// CR3 has bits beyond the physical-address width.
    Cr3(u64),
    /// DR7 has bits 63:32 set.
    Dr7(u64),
    /// EFER has bits reserved on Intel set.
    Efer(u64),
    /// EFER.LMA differs from the "IA-32e mode guest" control.
    EferLma(u64),
    /// Paging is on and EFER.LME differs from EFER.LMA.
    EferLme(u64),
    /// IA-32e mode without CR0.PG and CR4.PAE.
    LongModePaging,
    /// CR4.PCIDE outside IA-32e mode.
    Pcide,
    /// A PAT entry with a reserved memory type.
    Pat(u64),
    /// An address that must be canonical is not.
    NotCanonical(Reg),
    /// A segment register breaks a rule.
    Segment(Reg, SegmentRule),
    /// A GDTR or IDTR limit above 16 bits.
    DescriptorTableLimit(Reg),
    /// RIP too wide for the mode.
    Rip(u64),
    /// RFLAGS with reserved bits wrong, or IF clear for an injected
    /// interrupt.
    Rflags(u64),
    /// RFLAGS.VM: virtual-8086 mode is not supported.
    Virtual8086,
    /// An activity state MicroV does not enter, or HLT where it cannot be.
    Activity(u32),
    /// Interruptibility bits that contradict each other, RFLAGS.IF or the
    /// injected event.
    Interruptibility(u32),
    /// Pending debug exceptions with reserved bits, or a BS bit that does
    /// not match RFLAGS.TF inside a shadow.
    PendingDebug(u64),
}

type Result = core::result::Result<(), GuestStateError>;

/// Checks `s` as VM entry would (with "load debug controls", "load
/// IA32_EFER", "load IA32_PAT" and unrestricted guest on) against `cpu`.
pub fn check_guest(s: &GuestState, cpu: &VmxCpu) -> Result {
    control_registers(s, cpu)?;
    msrs(s)?;
    segments(s)?;
    descriptor_tables(s)?;
    rip_and_rflags(s)?;
    non_register_state(s)
}

fn control_registers(s: &GuestState, cpu: &VmxCpu) -> Result {
    use GuestStateError as E;
    cpu.guest_cr0().check(s.cr0).map_err(E::Cr0)?;
    if s.cr0 & cr0::PG != 0 && s.cr0 & cr0::PE == 0 {
        return Err(E::Cr0PagingWithoutProtection);
    }
    cpu.cr4.check(s.cr4).map_err(E::Cr4)?;
    if s.cr3.checked_shr(cpu.phys_bits).unwrap_or(0) != 0 {
        return Err(E::Cr3(s.cr3));
    }
    if s.dr7 >> 32 != 0 {
        return Err(E::Dr7(s.dr7));
    }
    if s.ia32e && (s.cr0 & cr0::PG == 0 || s.cr4 & cr4::PAE == 0) {
        return Err(E::LongModePaging);
    }
    if !s.ia32e && s.cr4 & cr4::PCIDE != 0 {
        return Err(E::Pcide);
    }
    Ok(())
}

/// EFER bits an Intel CPU defines.
const EFER_INTEL: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE;

fn msrs(s: &GuestState) -> Result {
    use GuestStateError as E;
    if s.efer & !EFER_INTEL != 0 {
        return Err(E::Efer(s.efer));
    }
    if (s.efer & efer::LMA != 0) != s.ia32e {
        return Err(E::EferLma(s.efer));
    }
    if s.cr0 & cr0::PG != 0 && (s.efer & efer::LME != 0) != s.ia32e {
        return Err(E::EferLme(s.efer));
    }
    if !msr::pat_valid(s.pat) {
        return Err(E::Pat(s.pat));
    }
    if !is_canonical(s.sysenter_esp) {
        return Err(E::NotCanonical(Reg::SysenterEsp));
    }
    if !is_canonical(s.sysenter_eip) {
        return Err(E::NotCanonical(Reg::SysenterEip));
    }
    Ok(())
}

/// Access-rights fields.
mod ar {
    pub const TYPE: u32 = 0xf;
    pub const ACCESSED: u32 = 1 << 0;
    pub const READABLE: u32 = 1 << 1;
    pub const CODE: u32 = 1 << 3;
    pub const S: u32 = 1 << 4;
    pub const P: u32 = 1 << 7;
    pub const L: u32 = 1 << 13;
    pub const DB: u32 = 1 << 14;
    pub const G: u32 = 1 << 15;
    /// Bits 11:8 and 31:17.
    pub const RESERVED: u32 = 0xf00 | 0xfffe_0000;
    pub const fn dpl(rights: u32) -> u32 {
        (rights >> 5) & 3
    }
}

/// Descriptor types.
const TYPE_DATA_RW_ACCESSED: u32 = 3;
const TYPE_TSS16_BUSY: u32 = 3;
const TYPE_TSS_BUSY: u32 = 11;
const TYPE_LDT: u32 = 2;
const SELECTOR_TI: u16 = 1 << 2;

const fn usable(s: &VmxSegment) -> bool {
    s.rights & UNUSABLE == 0
}

fn segments(s: &GuestState) -> Result {
    use SegmentRule as R;
    if s.rflags & RFLAGS_VM != 0 {
        return Err(GuestStateError::Virtual8086);
    }
    let fail = |reg, rule| Err(GuestStateError::Segment(reg, rule));
    // Selectors and bases.
    if s.tr.selector & SELECTOR_TI != 0 {
        return fail(Reg::Tr, R::Selector);
    }
    if usable(&s.ldtr) && s.ldtr.selector & SELECTOR_TI != 0 {
        return fail(Reg::Ldtr, R::Selector);
    }
    for (reg, seg) in [(Reg::Tr, &s.tr), (Reg::Fs, &s.fs), (Reg::Gs, &s.gs)] {
        if !is_canonical(seg.base) {
            return fail(reg, R::Base);
        }
    }
    if usable(&s.ldtr) && !is_canonical(s.ldtr.base) {
        return fail(Reg::Ldtr, R::Base);
    }
    if s.cs.base >> 32 != 0 {
        return fail(Reg::Cs, R::Base);
    }
    for (reg, seg) in [(Reg::Ss, &s.ss), (Reg::Ds, &s.ds), (Reg::Es, &s.es)] {
        if usable(seg) && seg.base >> 32 != 0 {
            return fail(reg, R::Base);
        }
    }
    code_segment(s)?;
    stack_segment(s)?;
    for (reg, seg) in [
        (Reg::Ds, &s.ds),
        (Reg::Es, &s.es),
        (Reg::Fs, &s.fs),
        (Reg::Gs, &s.gs),
    ] {
        if usable(seg) {
            let kind = seg.rights & ar::TYPE;
            if kind & ar::ACCESSED == 0 || kind & ar::CODE != 0 && kind & ar::READABLE == 0 {
                return fail(reg, R::Type);
            }
            code_data_common(reg, seg)?;
        }
    }
    task_register(s)?;
    if usable(&s.ldtr) {
        if s.ldtr.rights & ar::TYPE != TYPE_LDT || s.ldtr.rights & ar::S != 0 {
            return fail(Reg::Ldtr, R::Type);
        }
        system_common(Reg::Ldtr, &s.ldtr)?;
    }
    Ok(())
}

fn code_segment(s: &GuestState) -> Result {
    use SegmentRule as R;
    let fail = |rule| Err(GuestStateError::Segment(Reg::Cs, rule));
    let (cs, kind) = (&s.cs, s.cs.rights & ar::TYPE);
    let (dpl, ss_dpl) = (ar::dpl(cs.rights), ar::dpl(s.ss.rights));
    match kind {
        TYPE_DATA_RW_ACCESSED if dpl != 0 => return fail(R::Dpl),
        9 | 11 if dpl != ss_dpl => return fail(R::Dpl),
        13 | 15 if dpl > ss_dpl => return fail(R::Dpl),
        TYPE_DATA_RW_ACCESSED | 9 | 11 | 13 | 15 => {}
        _ => return fail(R::Type),
    }
    if s.ia32e && cs.rights & ar::L != 0 && cs.rights & ar::DB != 0 {
        return fail(R::DefaultSize);
    }
    code_data_common(Reg::Cs, cs)
}

fn stack_segment(s: &GuestState) -> Result {
    let fail = |rule| Err(GuestStateError::Segment(Reg::Ss, rule));
    let real_mode_cs = s.cs.rights & ar::TYPE == TYPE_DATA_RW_ACCESSED;
    if (real_mode_cs || s.cr0 & cr0::PE == 0) && ar::dpl(s.ss.rights) != 0 {
        return fail(SegmentRule::Dpl);
    }
    if !usable(&s.ss) {
        return Ok(());
    }
    if !matches!(s.ss.rights & ar::TYPE, 3 | 7) {
        return fail(SegmentRule::Type);
    }
    code_data_common(Reg::Ss, &s.ss)
}

/// S, P, reserved bits and G of CS or a usable data segment.
fn code_data_common(reg: Reg, seg: &VmxSegment) -> Result {
    use SegmentRule as R;
    let fail = |rule| Err(GuestStateError::Segment(reg, rule));
    if seg.rights & ar::S == 0 {
        return fail(R::System);
    }
    if seg.rights & ar::P == 0 {
        return fail(R::Present);
    }
    if seg.rights & ar::RESERVED != 0 {
        return fail(R::Reserved);
    }
    granularity(reg, seg)
}

/// P, reserved bits (11:8, 31:17) and G of TR or a usable LDTR.
fn system_common(reg: Reg, seg: &VmxSegment) -> Result {
    use SegmentRule as R;
    let fail = |rule| Err(GuestStateError::Segment(reg, rule));
    if seg.rights & ar::P == 0 {
        return fail(R::Present);
    }
    if seg.rights & ar::RESERVED != 0 {
        return fail(R::Reserved);
    }
    granularity(reg, seg)
}

/// G must be 0 if any of limit bits 11:0 is 0, and 1 if any of 31:20 is 1.
fn granularity(reg: Reg, seg: &VmxSegment) -> Result {
    let g = seg.rights & ar::G != 0;
    if (seg.limit & 0xfff != 0xfff && g) || (seg.limit >> 20 != 0 && !g) {
        return Err(GuestStateError::Segment(reg, SegmentRule::Granularity));
    }
    Ok(())
}

fn task_register(s: &GuestState) -> Result {
    use SegmentRule as R;
    let fail = |rule| Err(GuestStateError::Segment(Reg::Tr, rule));
    if !usable(&s.tr) {
        return fail(R::Unusable);
    }
    let kind = s.tr.rights & ar::TYPE;
    let allowed = kind == TYPE_TSS_BUSY || !s.ia32e && kind == TYPE_TSS16_BUSY;
    if !allowed || s.tr.rights & ar::S != 0 {
        return fail(R::Type);
    }
    system_common(Reg::Tr, &s.tr)
}

fn descriptor_tables(s: &GuestState) -> Result {
    use GuestStateError as E;
    for (reg, base, limit) in [
        (Reg::Gdtr, s.gdtr_base, s.gdtr_limit),
        (Reg::Idtr, s.idtr_base, s.idtr_limit),
    ] {
        if !is_canonical(base) {
            return Err(E::NotCanonical(reg));
        }
        if limit >> 16 != 0 {
            return Err(E::DescriptorTableLimit(reg));
        }
    }
    Ok(())
}

const RFLAGS_FIXED1: u64 = 1 << 1;
/// Bits 63:22, 15, 5 and 3.
const RFLAGS_RESERVED: u64 = !0x3f_ffff | 1 << 15 | 1 << 5 | 1 << 3;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;

fn rip_and_rflags(s: &GuestState) -> Result {
    use GuestStateError as E;
    let long_code = s.ia32e && s.cs.rights & ar::L != 0;
    if long_code && !is_canonical(s.rip) || !long_code && s.rip >> 32 != 0 {
        return Err(E::Rip(s.rip));
    }
    if s.rflags & RFLAGS_RESERVED != 0 || s.rflags & RFLAGS_FIXED1 == 0 {
        return Err(E::Rflags(s.rflags));
    }
    if injected(s, EventType::ExternalInterrupt) && s.rflags & RFLAGS_IF == 0 {
        return Err(E::Rflags(s.rflags));
    }
    Ok(())
}

/// The injected event, if it is of `kind`.
fn injected_event(s: &GuestState) -> Option<Event> {
    s.injection.and_then(|i| Event::decode(i.info))
}

fn injected(s: &GuestState, kind: EventType) -> bool {
    injected_event(s).is_some_and(|e| e.kind == kind)
}

/// Interruptibility bits 31:5 (enclave interruption, bit 4, is SGX's:
/// MicroV never sets it either).
const INTERRUPTIBILITY_RESERVED: u32 = !0xf | blocking::ENCLAVE_INTERRUPTION;
/// Pending debug exceptions bits 11:4, 13, 15 and 63:17.
const PENDING_DEBUG_RESERVED: u64 = 0xff0 | 1 << 13 | 1 << 15 | !0x1_ffff;
const PENDING_BS: u64 = 1 << 14;

fn non_register_state(s: &GuestState) -> Result {
    use GuestStateError as E;
    let i = s.interruptibility;
    let shadow = i & (blocking::BLOCKING_BY_STI | blocking::BLOCKING_BY_MOV_SS);
    let event = injected_event(s);
    // Activity: active, or HLT at CPL 0 out of any shadow with an event
    // HLT may take.
    match s.activity {
        activity::ACTIVE => {}
        activity::HLT
            if ar::dpl(s.ss.rights) == 0
                && shadow == 0
                && event.is_none_or(|e| match e.kind {
                    EventType::ExternalInterrupt | EventType::Nmi => true,
                    EventType::HardwareException => matches!(e.vector, vector::DB | vector::MC),
                    _ => false,
                }) => {}
        other => return Err(E::Activity(other)),
    }
    let stopped_by = |kind| event.is_some_and(|e| e.kind == kind) && shadow != 0;
    if i & INTERRUPTIBILITY_RESERVED != 0
        || shadow == blocking::BLOCKING_BY_STI | blocking::BLOCKING_BY_MOV_SS
        || i & blocking::BLOCKING_BY_STI != 0 && s.rflags & RFLAGS_IF == 0
        || i & blocking::BLOCKING_BY_SMI != 0
        || stopped_by(EventType::ExternalInterrupt)
        || stopped_by(EventType::Nmi)
    {
        return Err(E::Interruptibility(i));
    }
    let p = s.pending_debug;
    let stepping = s.rflags & RFLAGS_TF != 0 && s.debugctl & DEBUGCTL_BTF == 0;
    let halted = s.activity == activity::HLT;
    if p & PENDING_DEBUG_RESERVED != 0
        || (shadow != 0 || halted) && (p & PENDING_BS != 0) != stepping
    {
        return Err(E::PendingDebug(p));
    }
    Ok(())
}

const DEBUGCTL_BTF: u64 = 1 << 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx_event::Injection;
    use crate::vmx_state::tests::{cpu, long_mode};
    use microv_arch::vmx::caps::FixedBits;

    fn with(f: impl FnOnce(&mut GuestState)) -> Result {
        let mut s = long_mode();
        f(&mut s);
        check_guest(&s, &cpu())
    }

    fn seg(reg: Reg, rule: SegmentRule) -> Result {
        Err(GuestStateError::Segment(reg, rule))
    }

    #[test]
    fn linux_in_long_mode_passes() {
        assert_eq!(with(|_| {}), Ok(()));
    }

    #[test]
    fn control_registers_keep_the_fixed_bits() {
        use GuestStateError as E;
        let cr0 = |v: u64| with(|s| s.cr0 = v);
        assert_eq!(
            cr0(0x8005_0013),
            Err(E::Cr0(FixedBitsError {
                must_set: cr0::NE,
                must_clear: 0,
            }))
        );
        assert!(matches!(cr0(0x8005_0033 | 1 << 40), Err(E::Cr0(_))));
        // Unrestricted guest: paging and protection may be off (not PG alone).
        let real = |s: &mut GuestState| {
            s.cr0 = 0x30;
            s.cr4 = FIXED_CR4;
            s.ia32e = false;
            s.efer = 0;
            s.rip = 0x7c00;
        };
        assert_eq!(
            with(|s| {
                real(s);
                s.cs.rights = 0x9b;
                s.cs.limit = 0xffff;
            }),
            Ok(())
        );
        assert_eq!(
            with(|s| {
                real(s);
                s.cr0 = 0x8000_0030;
            }),
            Err(E::Cr0PagingWithoutProtection)
        );
        assert!(
            matches!(with(|s| s.cr4 &= !(1 << 13)), Err(E::Cr4(_))),
            "VMXE"
        );
        assert!(
            matches!(with(|s| s.cr4 |= 1 << 30), Err(E::Cr4(_))),
            "unsupported"
        );
        assert_eq!(with(|s| s.cr3 = 1 << 46), Err(E::Cr3(1 << 46)));
        assert_eq!(with(|s| s.cr3 = (1 << 46) - 0x1000), Ok(()));
        assert_eq!(
            with(|s| s.dr7 = 1 << 32 | 0x400),
            Err(E::Dr7(1 << 32 | 0x400))
        );
        assert_eq!(with(|s| s.cr4 &= !cr4::PAE), Err(E::LongModePaging));
        assert_eq!(
            with(|s| {
                real(s);
                s.cr4 |= cr4::PCIDE;
            }),
            Err(E::Pcide)
        );
    }

    const FIXED_CR4: u64 = 1 << 13;

    #[test]
    fn msrs_follow_the_mode() {
        use GuestStateError as E;
        let lme_lma = efer::LME | efer::LMA;
        assert_eq!(
            with(|s| s.efer |= efer::SVME),
            Err(E::Efer(0xd01 | efer::SVME))
        );
        assert_eq!(
            with(|s| {
                s.ia32e = false;
                s.cr4 &= !cr4::PCIDE;
            }),
            Err(E::EferLma(0xd01))
        );
        assert_eq!(
            with(|s| {
                s.efer &= !lme_lma;
                s.efer |= efer::LME;
                s.ia32e = false;
                s.cs.rights &= !ar::L;
                s.cr4 &= !cr4::PCIDE;
            }),
            Err(E::EferLme(0x901))
        );
        assert_eq!(with(|s| s.pat = 0x0207_0406), Err(E::Pat(0x0207_0406)));
        assert_eq!(
            with(|s| s.sysenter_esp = 1 << 47),
            Err(E::NotCanonical(Reg::SysenterEsp))
        );
        assert_eq!(
            with(|s| s.sysenter_eip = 1 << 50),
            Err(E::NotCanonical(Reg::SysenterEip))
        );
    }

    #[test]
    fn segments_in_64_bit_mode() {
        use SegmentRule as R;
        // CS: 64-bit code with D set, a data type, DPL not SS's.
        assert_eq!(
            with(|s| s.cs.rights |= ar::DB),
            seg(Reg::Cs, R::DefaultSize)
        );
        assert_eq!(
            with(|s| s.cs.rights = s.cs.rights & !0xf | 0x1),
            seg(Reg::Cs, R::Type)
        );
        assert_eq!(with(|s| s.cs.rights |= 3 << 5), seg(Reg::Cs, R::Dpl));
        assert_eq!(with(|s| s.cs.rights = UNUSABLE), seg(Reg::Cs, R::Type));
        assert_eq!(with(|s| s.cs.rights &= !ar::P), seg(Reg::Cs, R::Present));
        assert_eq!(with(|s| s.cs.rights |= 1 << 8), seg(Reg::Cs, R::Reserved));
        assert_eq!(with(|s| s.cs.rights &= !ar::S), seg(Reg::Cs, R::System));
        assert_eq!(with(|s| s.cs.base = 1 << 32), seg(Reg::Cs, R::Base));
        // Conforming code may have a DPL below CPL.
        assert_eq!(
            with(|s| {
                s.cs.rights = s.cs.rights & !0xf | 0xf;
                s.ss.rights |= 3 << 5;
            }),
            Ok(())
        );
        assert_eq!(with(|s| s.cs.rights |= 0xc | 3 << 5), seg(Reg::Cs, R::Dpl));
        // SS: usable only as writable data; an unusable SS is fine.
        assert_eq!(
            with(|s| s.ss.rights = s.ss.rights & !0xf | 0x1),
            seg(Reg::Ss, R::Type)
        );
        assert_eq!(with(|s| s.ss.rights = UNUSABLE), Ok(()));
        assert_eq!(with(|s| s.ss.base = 1 << 32), seg(Reg::Ss, R::Base));
        // Data segments: accessed, readable code, G matching the limit.
        assert_eq!(with(|s| s.ds.rights = 0xc092), seg(Reg::Ds, R::Type));
        let code = VmxSegment {
            selector: 0x10,
            base: 0,
            limit: 0xffff_ffff,
            rights: 0xc09b,
        };
        assert_eq!(
            with(|s| s.es = VmxSegment {
                rights: 0xc099,
                ..code
            }),
            seg(Reg::Es, R::Type)
        );
        assert_eq!(with(|s| s.es = code), Ok(()));
        let data = VmxSegment {
            rights: 0xc093,
            ..code
        };
        assert_eq!(
            with(|s| s.fs = VmxSegment {
                limit: 0xff00,
                ..data
            }),
            seg(Reg::Fs, R::Granularity)
        );
        assert_eq!(
            with(|s| s.gs = VmxSegment {
                rights: 0x93,
                limit: 0x10_0000,
                ..data
            }),
            seg(Reg::Gs, R::Granularity)
        );
        assert_eq!(
            with(|s| s.gs = VmxSegment {
                rights: 0x93,
                limit: 0xf_ffff,
                ..data
            }),
            Ok(())
        );
        assert_eq!(with(|s| s.fs.base = 1 << 47), seg(Reg::Fs, R::Base));
        assert_eq!(
            with(|s| s.ds = VmxSegment {
                base: 1 << 32,
                ..data
            }),
            seg(Reg::Ds, R::Base)
        );
        assert_eq!(
            with(|s| s.ds = VmxSegment {
                rights: UNUSABLE,
                base: 1 << 47,
                ..data
            }),
            Ok(())
        );
        // TR: a busy 64-bit TSS, never unusable, from the GDT.
        assert_eq!(with(|s| s.tr.rights = 0x89), seg(Reg::Tr, R::Type));
        assert_eq!(with(|s| s.tr.rights = 0x83), seg(Reg::Tr, R::Type));
        assert_eq!(with(|s| s.tr.rights = UNUSABLE), seg(Reg::Tr, R::Unusable));
        assert_eq!(with(|s| s.tr.rights = 0x0b), seg(Reg::Tr, R::Present));
        assert_eq!(with(|s| s.tr.rights |= 1 << 17), seg(Reg::Tr, R::Reserved));
        assert_eq!(with(|s| s.tr.selector |= 4), seg(Reg::Tr, R::Selector));
        assert_eq!(with(|s| s.tr.base = 1 << 63), seg(Reg::Tr, R::Base));
        // LDTR: checked only if usable.
        assert_eq!(with(|s| s.ldtr.selector = 4), Ok(()));
        let ldt = VmxSegment {
            selector: 0x50,
            base: 0xffff_8000_0000_0000,
            limit: 0xfff,
            rights: 0x82,
        };
        assert_eq!(with(|s| s.ldtr = ldt), Ok(()));
        assert_eq!(
            with(|s| s.ldtr = VmxSegment {
                selector: 0x54,
                ..ldt
            }),
            seg(Reg::Ldtr, R::Selector)
        );
        assert_eq!(
            with(|s| s.ldtr = VmxSegment {
                rights: 0x83,
                ..ldt
            }),
            seg(Reg::Ldtr, R::Type)
        );
        assert_eq!(
            with(|s| s.ldtr = VmxSegment {
                rights: 0x02,
                ..ldt
            }),
            seg(Reg::Ldtr, R::Present)
        );
        assert_eq!(
            with(|s| s.ldtr = VmxSegment {
                base: 1 << 60,
                ..ldt
            }),
            seg(Reg::Ldtr, R::Base)
        );
        assert_eq!(
            with(|s| s.rflags |= RFLAGS_VM),
            Err(GuestStateError::Virtual8086)
        );
    }

    #[test]
    fn segments_outside_long_mode() {
        use SegmentRule as R;
        let protected32 = |s: &mut GuestState| {
            s.ia32e = false;
            s.efer = 0;
            s.cr4 &= !cr4::PCIDE;
            s.cs.rights = 0xc09b;
            s.rip = 0xc010_0000;
        };
        assert_eq!(with(protected32), Ok(()));
        // A 32-bit OS may run on a 16-bit busy TSS.
        assert_eq!(
            with(|s| {
                protected32(s);
                s.tr.rights = 0x83;
            }),
            Ok(())
        );
        assert_eq!(
            with(|s| {
                protected32(s);
                s.rip = 1 << 32;
            }),
            Err(GuestStateError::Rip(1 << 32))
        );
        // Real mode (unrestricted guest): CS may be data, SS.DPL must be 0.
        let real = |s: &mut GuestState| {
            protected32(s);
            s.cr0 = 0x30;
            s.cs.rights = 0x93;
            s.cs.limit = 0xffff;
            s.rip = 0xfff0;
        };
        assert_eq!(with(real), Ok(()));
        assert_eq!(
            with(|s| {
                real(s);
                s.ss.rights |= 3 << 5;
            }),
            seg(Reg::Ss, R::Dpl)
        );
        assert_eq!(
            with(|s| {
                real(s);
                s.cs.rights |= 1 << 5;
            }),
            seg(Reg::Cs, R::Dpl)
        );
    }

    #[test]
    fn descriptor_tables_rip_and_rflags() {
        use GuestStateError as E;
        assert_eq!(
            with(|s| s.gdtr_base = 1 << 48),
            Err(E::NotCanonical(Reg::Gdtr))
        );
        assert_eq!(
            with(|s| s.idtr_limit = 0x1_0000),
            Err(E::DescriptorTableLimit(Reg::Idtr))
        );
        assert_eq!(with(|s| s.rip = 1 << 47), Err(E::Rip(1 << 47)));
        assert_eq!(with(|s| s.rflags = 0x202 | 1 << 3), Err(E::Rflags(0x20a)));
        assert_eq!(with(|s| s.rflags = 0x200), Err(E::Rflags(0x200)));
        assert_eq!(
            with(|s| s.rflags = 0x202 | 1 << 22),
            Err(E::Rflags(0x40_0202))
        );
    }

    fn event(info: u32) -> Option<Injection> {
        Some(Injection {
            info,
            error_code: 0,
            instruction_length: 0,
        })
    }

    #[test]
    fn interruptibility_and_activity_agree() {
        use blocking::*;
        use GuestStateError as E;
        let shadowed = |i: u32| move |s: &mut GuestState| s.interruptibility = i;
        assert_eq!(with(shadowed(BLOCKING_BY_STI)), Ok(()));
        assert_eq!(with(shadowed(BLOCKING_BY_NMI | BLOCKING_BY_MOV_SS)), Ok(()));
        for bad in [
            BLOCKING_BY_STI | BLOCKING_BY_MOV_SS,
            BLOCKING_BY_SMI,
            1 << 4,
            1 << 5,
        ] {
            assert_eq!(with(shadowed(bad)), Err(E::Interruptibility(bad)));
        }
        assert_eq!(
            with(|s| {
                s.interruptibility = BLOCKING_BY_STI;
                s.rflags = 2;
            }),
            Err(E::Interruptibility(BLOCKING_BY_STI))
        );
        // An interrupt or NMI cannot be injected into a shadow; an
        // interrupt needs IF.
        for info in [0x8000_0030, 0x8000_0202] {
            assert_eq!(
                with(|s| {
                    s.interruptibility = BLOCKING_BY_MOV_SS;
                    s.injection = event(info);
                }),
                Err(E::Interruptibility(BLOCKING_BY_MOV_SS))
            );
        }
        assert_eq!(with(|s| s.injection = event(0x8000_0030)), Ok(()));
        assert_eq!(
            with(|s| {
                s.injection = event(0x8000_0030);
                s.rflags = 2;
            }),
            Err(E::Rflags(2))
        );
        // HLT: at CPL 0, outside shadows, with an event HLT can take.
        assert_eq!(with(|s| s.activity = activity::HLT), Ok(()));
        assert_eq!(
            with(|s| {
                s.activity = activity::HLT;
                s.injection = event(0x8000_0301);
            }),
            Ok(())
        );
        assert_eq!(
            with(|s| {
                s.activity = activity::HLT;
                s.injection = event(0x8000_0306);
            }),
            Err(E::Activity(activity::HLT))
        );
        assert_eq!(
            with(|s| {
                s.activity = activity::HLT;
                s.ss.rights |= 3 << 5;
                s.cs.rights |= 3 << 5;
            }),
            Err(E::Activity(activity::HLT))
        );
        assert_eq!(
            with(|s| {
                s.activity = activity::HLT;
                s.interruptibility = BLOCKING_BY_STI;
            }),
            Err(E::Activity(activity::HLT))
        );
        assert_eq!(
            with(|s| s.activity = activity::SHUTDOWN),
            Err(E::Activity(2))
        );
    }

    #[test]
    fn pending_debug_exceptions_follow_single_stepping() {
        use GuestStateError as E;
        assert_eq!(
            with(|s| s.pending_debug = 1 << 4),
            Err(E::PendingDebug(1 << 4))
        );
        assert_eq!(
            with(|s| s.pending_debug = PENDING_BS),
            Ok(()),
            "no shadow: not checked"
        );
        let stepping = |s: &mut GuestState| {
            s.interruptibility = blocking::BLOCKING_BY_STI;
            s.rflags |= RFLAGS_TF;
        };
        assert_eq!(with(stepping), Err(E::PendingDebug(0)));
        assert_eq!(
            with(|s| {
                stepping(s);
                s.pending_debug = PENDING_BS;
            }),
            Ok(())
        );
        assert_eq!(
            with(|s| {
                stepping(s);
                s.pending_debug = PENDING_BS;
                s.debugctl = DEBUGCTL_BTF;
            }),
            Err(E::PendingDebug(PENDING_BS))
        );
    }

    #[test]
    fn fixed_cr4_matches_the_sample_cpu() {
        assert_eq!(cpu().cr4, FixedBits::new(FIXED_CR4, cpu().cr4.may_be_one));
    }
}
