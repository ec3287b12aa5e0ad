//! AMD SVM: the VMCB layout (APM vol. 2, appendix B), intercept bits, exit
//! codes, event injection and the MSR permission map.

use core::mem::offset_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::descriptor::Segment;

/// The virtual machine control block: one 4 KiB page per vCPU.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Vmcb {
    pub control: Control,
    pub save: SaveArea,
}

/// How much of a VMCB holds state: the control area and the state-save
/// area up to its last architectural field (LASTEXCPTO, ending at 0x698).
/// The rest of the page is reserved (SEV-ES state MicroV does not use), so
/// a copy of a VMCB need not move it.
pub const VMCB_STATE_BYTES: usize = offset_of!(Vmcb, save) + offset_of!(SaveArea, reserved_698);

/// VMCB control area (offsets 0x000–0x3ff).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Control {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    pub reserved_018: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    pub reserved_05d: [u8; 3],
    pub vintr: u64,
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub np_control: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    pub event_inj: u64,
    pub n_cr3: u64,
    pub virt_ext: u64,
    pub clean_bits: u32,
    pub reserved_0c4: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    pub reserved_0e0: [u8; 0x320],
}

/// VMCB state-save area (offsets 0x400–0xfff).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SaveArea {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    pub reserved_4a0: [u8; 0x2b],
    pub cpl: u8,
    pub reserved_4cc: u32,
    pub efer: u64,
    pub reserved_4d8: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub reserved_580: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_648: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_698: [u8; 0x968],
}

const _: () = {
    assert!(core::mem::size_of::<Vmcb>() == 4096);
    assert!(core::mem::size_of::<Control>() == 0x400);
    assert!(offset_of!(Control, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(Control, iopm_base_pa) == 0x040);
    assert!(offset_of!(Control, msrpm_base_pa) == 0x048);
    assert!(offset_of!(Control, tsc_offset) == 0x050);
    assert!(offset_of!(Control, guest_asid) == 0x058);
    assert!(offset_of!(Control, tlb_control) == 0x05c);
    assert!(offset_of!(Control, vintr) == 0x060);
    assert!(offset_of!(Control, interrupt_shadow) == 0x068);
    assert!(offset_of!(Control, exit_code) == 0x070);
    assert!(offset_of!(Control, exit_info1) == 0x078);
    assert!(offset_of!(Control, exit_info2) == 0x080);
    assert!(offset_of!(Control, exit_int_info) == 0x088);
    assert!(offset_of!(Control, np_control) == 0x090);
    assert!(offset_of!(Control, event_inj) == 0x0a8);
    assert!(offset_of!(Control, n_cr3) == 0x0b0);
    assert!(offset_of!(Control, clean_bits) == 0x0c0);
    assert!(offset_of!(Control, next_rip) == 0x0c8);
    assert!(offset_of!(Control, insn_len) == 0x0d0);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(VMCB_STATE_BYTES == 0x698);
    assert!(offset_of!(SaveArea, cs) == 0x010);
    assert!(offset_of!(SaveArea, gdtr) == 0x060);
    assert!(offset_of!(SaveArea, tr) == 0x090);
    assert!(offset_of!(SaveArea, cpl) == 0x0cb);
    assert!(offset_of!(SaveArea, efer) == 0x0d0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, cr3) == 0x150);
    assert!(offset_of!(SaveArea, cr0) == 0x158);
    assert!(offset_of!(SaveArea, dr7) == 0x160);
    assert!(offset_of!(SaveArea, rflags) == 0x170);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1d8);
    assert!(offset_of!(SaveArea, rax) == 0x1f8);
    assert!(offset_of!(SaveArea, star) == 0x200);
    assert!(offset_of!(SaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
    assert!(offset_of!(SaveArea, dbgctl) == 0x270);
    assert!(core::mem::size_of::<SaveArea>() == 0xc00);
};

/// Fields of [`Control::vintr`] (VMCB offset 0x060): the virtual
/// interrupt the CPU delivers itself, when the guest's RFLAGS.IF allows.
pub mod vintr {
    /// V_IRQ: a virtual interrupt is pending; the CPU clears it as the
    /// guest takes the interrupt.
    pub const V_IRQ: u64 = 1 << 8;
    /// V_INTR_PRIO (bits 19:16): the pending interrupt's priority class.
    pub const PRIO_SHIFT: u32 = 16;
    /// V_IGN_TPR: deliver regardless of V_TPR (MicroV's APIC applies the
    /// task priority before it offers a vector).
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// V_INTR_VECTOR (bits 39:32): the pending interrupt's vector.
    pub const VECTOR_SHIFT: u32 = 32;
    /// Everything that describes the pending virtual interrupt.
    pub const OFFER: u64 = V_IRQ | 0xf << PRIO_SHIFT | V_IGN_TPR | 0xff << VECTOR_SHIFT;

    /// The VINTR bits that offer `vector`.
    pub const fn offer(vector: u8) -> u64 {
        V_IRQ | (((vector >> 4) as u64) << PRIO_SHIFT) | V_IGN_TPR | (vector as u64) << VECTOR_SHIFT
    }

    /// The vector `word` offers or offered (0: none).
    pub const fn vector(word: u64) -> u8 {
        (word >> VECTOR_SHIFT) as u8
    }
}

/// Bits of [`Control::intercept_misc1`] (VMCB offset 0x00c).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const IRET: u32 = 1 << 20;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of [`Control::intercept_misc2`] (VMCB offset 0x010).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const XSETBV: u32 = 1 << 13;
}

/// Intercepts every vCPU MicroV runs must have, whatever else its policy
/// adds: the microkernel refuses a VMCB without them, and the extension
/// starts every root VMCB from them.
pub mod required {
    use super::{misc1, misc2};

    /// MSR and I/O permission maps (the platform stays MicroV's), INIT and
    /// shutdown (they would reset the CPU from under MicroV), INVLPGA, and
    /// INVD (it would drop dirty cache lines of hypervisor memory).
    pub const MISC1: u32 = misc1::MSR_PROT
        | misc1::IOIO_PROT
        | misc1::INIT
        | misc1::SHUTDOWN
        | misc1::INVLPGA
        | misc1::INVD;
    /// Every SVM instruction (no VMs beneath MicroV, no GIF changes) and
    /// XSETBV (XCR0 is switched by the microkernel).
    pub const MISC2: u32 = misc2::VMRUN
        | misc2::VMLOAD
        | misc2::VMSAVE
        | misc2::STGI
        | misc2::CLGI
        | misc2::SKINIT
        | misc2::XSETBV;
}

/// [`Control::np_control`]: enable nested paging.
pub const NP_ENABLE: u64 = 1 << 0;

/// [`Control::tlb_control`] values.
pub mod tlb {
    pub const DO_NOTHING: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID only.
    pub const FLUSH_GUEST: u8 = 3;
}

/// #VMEXIT codes.
pub mod exit {
    /// Reads of CR0–CR15 (plus the register number).
    pub const CR_READ_BASE: u64 = 0x00;
    /// Writes of CR0–CR15 (plus the register number).
    pub const CR_WRITE_BASE: u64 = 0x10;
    /// Reads of DR0–DR15 (plus the register number).
    pub const DR_READ_BASE: u64 = 0x20;
    /// Writes of DR0–DR15 (plus the register number).
    pub const DR_WRITE_BASE: u64 = 0x30;
    /// Exception n exits with `EXCEPTION_BASE + n`.
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    /// The virtual-interrupt window opened (V_IRQ with the intercept).
    pub const VINTR: u64 = 0x64;
    pub const RDTSC: u64 = 0x6e;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const RSM: u64 = 0x73;
    pub const IRET: u64 = 0x74;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPG: u64 = 0x79;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const XSETBV: u64 = 0x8d;
    pub const INVPCID: u64 = 0xa2;
    pub const NPF: u64 = 0x400;
    /// VMRUN found an inconsistent guest state.
    pub const INVALID: u64 = u64::MAX;
}

/// Event injection ([`Control::event_inj`]).
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
    pub const TYPE_INTERRUPT: u64 = 0;
    pub const TYPE_NMI: u64 = 2 << 8;
    /// INTn (the return address is the VMCB's next RIP).
    pub const TYPE_SOFTWARE_INTERRUPT: u64 = 4 << 8;
    /// The event-type field (bits 10:8).
    pub const TYPE_MASK: u64 = 7 << 8;
    /// The NMI's vector.
    pub const NMI_VECTOR: u64 = 2;

    /// A non-maskable interrupt.
    pub const fn nmi() -> u64 {
        VALID | TYPE_NMI | NMI_VECTOR
    }

    /// An external interrupt with `vector`.
    pub const fn interrupt(vector: u8) -> u64 {
        VALID | TYPE_INTERRUPT | vector as u64
    }

    /// An exception with no error code.
    pub const fn exception(vector: u8) -> u64 {
        VALID | TYPE_EXCEPTION | vector as u64
    }
    /// An exception with an error code.
    pub const fn exception_with_code(vector: u8, code: u32) -> u64 {
        VALID | TYPE_EXCEPTION | ERROR_CODE_VALID | vector as u64 | (code as u64) << 32
    }
}

/// EXITINFO1 of an IOIO exit (APM vol. 2, "IOIO Intercepts").
pub mod ioio {
    pub const IN: u64 = 1 << 0;
    pub const STRING: u64 = 1 << 2;
    pub const REP: u64 = 1 << 3;
    pub const SIZE8: u64 = 1 << 4;
    pub const SIZE16: u64 = 1 << 5;
    pub const SIZE32: u64 = 1 << 6;
    pub const ADDR16: u64 = 1 << 7;
    pub const ADDR32: u64 = 1 << 8;
    pub const ADDR64: u64 = 1 << 9;
    /// Bits 12:10: the segment of a string instruction's source (ES 0,
    /// CS 1, SS 2, DS 3, FS 4, GS 5), with decode assists.
    pub const SEGMENT_SHIFT: u32 = 10;
    pub const PORT_SHIFT: u32 = 16;
}

/// EXITINFO1 of a nested page fault (APM vol. 2, "Nested Page Faults").
pub mod npf {
    /// The page was present (a permission fault).
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// A user-mode (CPL 3) access.
    pub const USER: u64 = 1 << 2;
    pub const FETCH: u64 = 1 << 4;
    /// The fault was on the guest's final physical address.
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    /// The fault was on a guest page-table access.
    pub const PAGE_TABLE: u64 = 1 << 33;
}

/// Exception vectors MicroV injects.
pub mod vector {
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
}

/// Size of the MSR permission map.
pub const MSRPM_SIZE: usize = 8192;
/// Size of the I/O permission map.
pub const IOPM_SIZE: usize = 12288;

/// Where the read-intercept bit of `msr` lives in the MSR permission map:
/// `(byte offset, bit)`; the write bit is the next bit. `None` for MSRs the
/// map does not cover (those always exit when MSR_PROT is set).
pub const fn msrpm_position(msr: u32) -> Option<(usize, u8)> {
    let (base, first) = match msr {
        0x0000_0000..=0x0000_1fff => (0x000, 0x0000_0000),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    let bit_index = ((msr - first) as usize) * 2;
    Some((base + bit_index / 8, (bit_index % 8) as u8))
}

/// True for MSRs the permission map cannot cover: with MSR interception on,
/// every access to them exits.
pub const fn msr_always_exits(msr: u32) -> bool {
    msrpm_position(msr).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msr;

    #[test]
    fn msrpm_positions_match_the_manual() {
        assert_eq!(msrpm_position(msr::EFER), Some((0x820, 0)));
        assert_eq!(msrpm_position(msr::VM_CR), Some((0x1045, 0)));
        assert_eq!(msrpm_position(msr::VM_HSAVE_PA), Some((0x1045, 6)));
        assert_eq!(msrpm_position(0x1fff), Some((0x7ff, 6)));
        assert_eq!(msrpm_position(0x2000), None);
        assert_eq!(msrpm_position(0xc002_0000), None);
        assert!(msr_always_exits(0xc000_2000) && !msr_always_exits(msr::EFER));
    }

    #[test]
    fn event_encoding() {
        assert_eq!(event::exception(vector::UD), 0x8000_0306);
        assert_eq!(event::exception_with_code(vector::GP, 0), 0x8000_0b0d);
    }
}
