//! Turning the CPU state the loader captured into the root VM's vCPU, and a
//! vCPU's state back into what the trampoline loads when MicroV leaves.

use microv_abi::launch::{gpr, CapturedState, DescriptorTableRegister, PromoteFrame};
use microv_abi::StartError;
use microv_abi::launch::PROMOTE_GDT_ENTRIES;
use microv_arch::descriptor::{attrib, decode_code_data, decode_system, encode_system, Segment};
use microv_arch::msr::efer;
use microv_arch::svm::SaveArea;

const CR4_LA57: u64 = 1 << 12;
/// DR6's value after reset.
const DR6_INIT: u64 = 0xffff_0ff0;

/// What VMSAVE reads from the CPU on AMD, read with RDMSR where there is
/// no VMSAVE (Intel), before MicroV loads its own values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmsaveMsrs {
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
}

/// A data segment's attributes for FS or GS, whose descriptors the loader
/// does not capture: in 64-bit mode only the base (an MSR) and
/// presence matter; read/write, accessed, present, the selector's RPL.
const fn fs_gs_attrib(selector: u16) -> u16 {
    attrib::PRESENT | attrib::S | 0x3 | ((selector & 3) << 5)
}

/// Fills what VMSAVE fills on AMD: FS, GS, TR and LDTR (TR and LDTR from
/// the descriptors the loader captured) and the syscall and SYSENTER MSRs.
pub fn vmsave_equivalent(c: &CapturedState, m: &VmsaveMsrs, save: &mut SaveArea) {
    let data = |selector: u16, base: u64| Segment {
        selector,
        attrib: if selector & !3 == 0 { 0 } else { fs_gs_attrib(selector) },
        limit: if selector & !3 == 0 { 0 } else { u32::MAX },
        base,
    };
    save.fs = data(c.fs, m.fs_base);
    save.gs = data(c.gs, m.gs_base);
    save.tr = decode_system(c.tr, c.tr_desc);
    save.ldtr = decode_system(c.ldtr, c.ldtr_desc);
    save.kernel_gs_base = m.kernel_gs_base;
    save.star = m.star;
    save.lstar = m.lstar;
    save.cstar = m.cstar;
    save.sfmask = m.sfmask;
    save.sysenter_cs = m.sysenter_cs;
    save.sysenter_esp = m.sysenter_esp;
    save.sysenter_eip = m.sysenter_eip;
}

/// Fills the parts of the root vCPU's save area that VMSAVE does not:
/// CS/SS/DS/ES, descriptor tables, control registers, flags, stack and
/// resume point. `rax` is what the loader's call returns (0: started).
pub fn root_save_area(
    c: &CapturedState,
    save: &mut SaveArea,
    rax: u64,
) -> Result<(), (StartError, u64)> {
    if c.cr4 & CR4_LA57 != 0 {
        return Err((StartError::UnsupportedCpuState, c.cr4));
    }
    if c.efer & efer::LMA == 0 {
        return Err((StartError::UnsupportedCpuState, c.efer));
    }
    let cs = decode_code_data(c.cs, c.cs_desc);
    if cs.attrib & attrib::LONG == 0 || cs.attrib & attrib::PRESENT == 0 {
        return Err((StartError::UnsupportedCpuState, c.cs_desc));
    }
    save.cs = cs;
    save.ss = decode_code_data(c.ss, c.ss_desc);
    save.ds = decode_code_data(c.ds, c.ds_desc);
    save.es = decode_code_data(c.es, c.es_desc);
    save.gdtr = Segment {
        selector: 0,
        attrib: 0,
        limit: u32::from(c.gdtr.limit),
        base: c.gdtr.base,
    };
    save.idtr = Segment {
        selector: 0,
        attrib: 0,
        limit: u32::from(c.idtr.limit),
        base: c.idtr.base,
    };
    save.cpl = 0;
    save.efer = c.efer | efer::SVME;
    save.cr0 = c.cr0;
    save.cr3 = c.cr3;
    save.cr4 = c.cr4;
    save.dr7 = c.dr7;
    save.dr6 = DR6_INIT;
    save.rflags = c.rflags;
    save.rip = c.rip;
    save.rsp = c.rsp;
    save.rax = rax;
    save.g_pat = c.pat;
    Ok(())
}

fn dtr(s: &Segment) -> DescriptorTableRegister {
    DescriptorTableRegister {
        pad: [0; 3],
        limit: s.limit as u16,
        base: s.base,
    }
}

/// What the trampoline needs to resume a vCPU natively.
pub fn promote_frame(save: &SaveArea, gprs: &[u64; 16]) -> PromoteFrame {
    let mut frame = PromoteFrame::zeroed();
    frame.gprs = *gprs;
    if let Some(rax) = frame.gprs.get_mut(gpr::RAX) {
        *rax = save.rax;
    }
    if let Some(rsp) = frame.gprs.get_mut(gpr::RSP) {
        *rsp = save.rsp;
    }
    frame.rip = save.rip;
    frame.rsp = save.rsp;
    frame.rflags = save.rflags;
    frame.cr3 = save.cr3;
    frame.dr7 = save.dr7;
    frame.efer = save.efer & !efer::SVME;
    frame.cs = u64::from(save.cs.selector);
    frame.ss = u64::from(save.ss.selector);
    frame.ds = u64::from(save.ds.selector);
    frame.es = u64::from(save.es.selector);
    frame.gdtr = dtr(&save.gdtr);
    frame.idtr = dtr(&save.idtr);
    frame
}

/// Adds to `frame` what VMLOAD loads on AMD and Intel has no instruction
/// for: TR and LDTR, as copies of their descriptors (TR's marked available,
/// as LTR needs) in the frame's own small GDT. False if a selector lies
/// beyond that GDT (the CPU cannot be handed back then).
pub fn promote_tr_ldtr(save: &SaveArea, frame: &mut PromoteFrame) -> bool {
    for (seg, is_tr) in [(&save.tr, true), (&save.ldtr, false)] {
        let index = usize::from(seg.selector >> 3);
        if seg.selector & !3 == 0 {
            continue;
        }
        if index + 1 >= PROMOTE_GDT_ENTRIES || seg.selector & 4 != 0 {
            return false;
        }
        let mut copy = *seg;
        if is_tr {
            copy.attrib = copy.attrib & !0xf | attrib::TYPE_TSS_AVAILABLE;
        }
        let [low, high] = encode_system(&copy);
        if let Some(slots) = frame.tr_gdt.get_mut(index..index + 2) {
            slots.copy_from_slice(&[low, high]);
        }
    }
    frame.tr = u64::from(save.tr.selector);
    frame.ldtr = u64::from(save.ldtr.selector);
    frame.tr_gdtr = DescriptorTableRegister {
        pad: [0; 3],
        limit: (PROMOTE_GDT_ENTRIES * 8 - 1) as u16,
        base: 0,
    };
    true
}

/// The frame for returning to the loader before any state was changed
/// (bring-up failed early): the captured state with RAX = `status`.
pub fn early_frame(c: &CapturedState, status: u64) -> PromoteFrame {
    let mut frame = PromoteFrame::zeroed();
    if let Some(rax) = frame.gprs.get_mut(gpr::RAX) {
        *rax = status;
    }
    frame.rip = c.rip;
    frame.rsp = c.rsp;
    frame.rflags = c.rflags;
    frame.cr3 = c.cr3;
    frame.dr7 = c.dr7;
    frame.efer = c.efer & !efer::SVME;
    frame.cs = u64::from(c.cs);
    frame.ss = u64::from(c.ss);
    frame.ds = u64::from(c.ds);
    frame.es = u64::from(c.es);
    frame.gdtr = c.gdtr;
    frame.idtr = c.idtr;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    /// A CPU state as Linux 6.1 has it in a kernel thread.
    pub fn linux_state() -> CapturedState {
        let mut c = CapturedState::zeroed();
        c.cr0 = 0x8005_0033;
        c.cr3 = 0x10_c000;
        c.cr4 = 0x3506f0;
        c.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE;
        c.rflags = 0x2;
        c.rsp = 0xffff_c900_0001_3e58;
        c.rip = 0xffff_ffff_c0a0_0040;
        c.pat = 0x0407_0506_0007_0406;
        c.dr7 = 0x400;
        c.gdtr.limit = 0x7f;
        c.gdtr.base = 0xffff_fe00_0000_1000;
        c.idtr.limit = 0xfff;
        c.idtr.base = 0xffff_fe00_0000_0000;
        c.cs = 0x10;
        c.cs_desc = 0x00af_9b00_0000_ffff;
        c.ss = 0x18;
        c.ss_desc = 0x00cf_9300_0000_ffff;
        c.tr = 0x40;
        c
    }

    fn save_area() -> Box<SaveArea> {
        Box::new(SaveArea::new_zeroed())
    }

    #[test]
    fn linux_state_becomes_a_long_mode_vcpu() {
        let c = linux_state();
        let mut s = save_area();
        root_save_area(&c, &mut s, 0).unwrap();
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.cs.attrib, 0xa9b);
        assert_eq!(s.ss.attrib, 0xc93);
        assert_eq!(s.ds.attrib, 0, "null DS is unusable");
        assert_eq!(
            s.efer & efer::SVME,
            efer::SVME,
            "VMRUN requires guest EFER.SVME"
        );
        assert_eq!((s.rip, s.rsp, s.rax, s.g_pat), (c.rip, c.rsp, 0, c.pat));
        assert_eq!((s.gdtr.base, s.gdtr.limit), (c.gdtr.base, 0x7f));
        assert_eq!((s.idtr.base, s.idtr.limit), (c.idtr.base, 0xfff));
        assert_eq!(
            (s.cr0, s.cr3, s.cr4, s.dr7, s.dr6),
            (c.cr0, c.cr3, c.cr4, 0x400, DR6_INIT)
        );
    }

    #[test]
    fn refuses_states_it_cannot_run() {
        let mut s = save_area();
        let mut c = linux_state();
        c.cr4 |= CR4_LA57;
        assert_eq!(
            root_save_area(&c, &mut s, 0),
            Err((StartError::UnsupportedCpuState, c.cr4))
        );
        let mut c = linux_state();
        c.efer &= !efer::LMA;
        assert!(root_save_area(&c, &mut s, 0).is_err());
        let mut c = linux_state();
        c.cs_desc = 0x00cf_9b00_0000_ffff; // 32-bit code segment
        assert!(root_save_area(&c, &mut s, 0).is_err());
    }

    #[test]
    fn promotion_round_trips_the_captured_state() {
        let c = linux_state();
        let mut s = save_area();
        root_save_area(&c, &mut s, 7).unwrap();
        let mut gprs = [0u64; 16];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = 0x100 + i as u64;
        }
        let f = promote_frame(&s, &gprs);
        assert_eq!(f.gprs[gpr::RAX], 7);
        assert_eq!(f.gprs[gpr::RBX], 0x103);
        assert_eq!(f.gprs[gpr::R15], 0x10f);
        assert_eq!(f.efer, c.efer, "EFER.SVME is dropped");
        assert_eq!(
            (f.rip, f.rsp, f.rflags, f.cr3),
            (c.rip, c.rsp, c.rflags, c.cr3)
        );
        assert_eq!((f.cs, f.ss, f.ds, f.es), (0x10, 0x18, 0, 0));
        assert_eq!(f.gdtr, c.gdtr);
        assert_eq!(f.idtr, c.idtr);
        assert_eq!(f.dr7, 0x400);
    }

    #[test]
    fn fills_what_vmsave_would() {
        let mut c = linux_state();
        c.tr = 0x40;
        c.tr_desc = [0x0000_8b00_3000_4087, 0xffff_fe00];
        c.gs = 0x2b;
        let m = VmsaveMsrs {
            gs_base: 0xffff_8880_1234_0000,
            kernel_gs_base: 7,
            star: 1,
            lstar: 2,
            cstar: 3,
            sfmask: 4,
            sysenter_cs: 0x10,
            sysenter_esp: 5,
            sysenter_eip: 6,
            ..VmsaveMsrs::default()
        };
        let mut save = save_area();
        vmsave_equivalent(&c, &m, &mut save);
        assert_eq!(save.tr.base, 0xffff_fe00_0000_3000);
        assert_eq!((save.tr.selector, save.tr.attrib, save.tr.limit), (0x40, 0x8b, 0x4087));
        assert_eq!(save.ldtr, Segment::default());
        assert_eq!(save.fs, Segment::default(), "a null FS is unusable");
        assert_eq!(save.gs.base, 0xffff_8880_1234_0000);
        assert_eq!(save.gs.attrib, attrib::PRESENT | attrib::S | 0x3 | (3 << 5));
        assert_eq!(
            [save.kernel_gs_base, save.star, save.lstar, save.cstar, save.sfmask],
            [7, 1, 2, 3, 4]
        );
        assert_eq!([save.sysenter_cs, save.sysenter_esp, save.sysenter_eip], [0x10, 5, 6]);
    }

    #[test]
    fn tr_and_ldtr_go_into_the_frames_own_gdt() {
        let mut save = save_area();
        save.tr = decode_system(0x40, [0x0000_8b00_3000_4087, 0xffff_fe00]);
        let mut frame = PromoteFrame::zeroed();
        assert!(promote_tr_ldtr(&save, &mut frame));
        assert_eq!(frame.tr, 0x40);
        assert_eq!(frame.ldtr, 0);
        assert_eq!(frame.tr_gdt[8], 0x0000_8900_3000_4087, "available, not busy");
        assert_eq!(frame.tr_gdt[9], 0xffff_fe00);
        assert_eq!(frame.tr_gdtr.limit, 255);
        save.ldtr = decode_system(0x50, [0x0000_8200_1000_00ff, 0]);
        assert!(promote_tr_ldtr(&save, &mut frame));
        assert_eq!((frame.ldtr, frame.tr_gdt[10]), (0x50, 0x0000_8200_1000_00ff));
        save.tr.selector = 0xf8;
        assert!(!promote_tr_ldtr(&save, &mut frame), "beyond the frame's GDT");
        save.tr.selector = 0x44;
        assert!(!promote_tr_ldtr(&save, &mut frame), "an LDT selector");
    }

    #[test]
    fn early_frame_returns_the_status() {
        let c = linux_state();
        let f = early_frame(&c, StartError::OutOfMemory as u64);
        assert_eq!(f.gprs[gpr::RAX], 5);
        assert_eq!(
            (f.rip, f.rsp, f.cr3, f.cs, f.efer),
            (c.rip, c.rsp, c.cr3, 0x10, c.efer)
        );
        assert_eq!(f.gdtr, c.gdtr);
        assert_eq!(f.dr7, c.dr7);
    }
}
