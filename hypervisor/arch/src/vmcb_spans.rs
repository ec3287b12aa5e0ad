//! Which parts of a VMCB a copy must move.
//!
//! The microkernel runs a private copy of each vCPU's VMCB and lets the
//! extension edit a shadow (`hw::cpu::copy_in`/`copy_out` in the
//! microkernel). Every exit copies one way and every entry the other, so
//! each copy moves only what can matter, in whole quadwords:
//!
//! - the save area's fields, [`SAVE`], both ways: the CPU writes them all
//!   between `VMRUN` and the next exit (`#VMEXIT` saves the guest's state,
//!   and the world switch's `VMSAVE` saves FS, GS, TR, LDTR and the syscall
//!   MSRs);
//! - with them, of the control area: every field ([`CONTROL_STATE`]) into
//!   the private copy, and into the shadow once at bring-up; after each exit
//!   only what the CPU writes ([`CONTROL_EXIT`]), so the fields only the
//!   VMCB's owner writes (intercepts, permission maps, nested CR3, ASID)
//!   stay as the extension left them.
//!
//! The reserved stretches between fields are left out.

use core::mem::offset_of;

use crate::svm::{Control, SaveArea, Vmcb, VMCB_STATE_BYTES};

/// A run of whole quadwords at a byte offset into the VMCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub qwords: usize,
}

impl Span {
    /// The span from byte `start` up to byte `end`, both quadword-aligned
    /// (checked where the constants are built: a misaligned one does not
    /// compile).
    const fn between(start: usize, end: usize) -> Span {
        assert!(start.is_multiple_of(8) && end.is_multiple_of(8) && start < end);
        Span {
            offset: start,
            qwords: (end - start) / 8,
        }
    }

    /// The byte offset just past the span.
    pub const fn end(&self) -> usize {
        self.offset + self.qwords * 8
    }
}

const fn control(offset: usize) -> usize {
    offset_of!(Vmcb, control) + offset
}

const fn save(offset: usize) -> usize {
    offset_of!(Vmcb, save) + offset
}

/// The quadword holding `offset` (CPL is a byte inside one).
const fn qword_of(offset: usize) -> usize {
    offset - offset % 8
}

/// The save area's fields: segments ES..TR; CPL and EFER; CR4..RIP;
/// RSP..CR2; G_PAT..LASTEXCPTO. The CPU writes all of them on an exit
/// except the last run (G_PAT, DEBUGCTL and the LBR fields), which is
/// copied back too: a guest's PAT writes may land there.
pub const SAVE: [Span; 5] = [
    Span::between(
        save(offset_of!(SaveArea, es)),
        save(offset_of!(SaveArea, reserved_4a0)),
    ),
    Span::between(
        save(qword_of(offset_of!(SaveArea, cpl))),
        save(offset_of!(SaveArea, reserved_4d8)),
    ),
    Span::between(
        save(offset_of!(SaveArea, cr4)),
        save(offset_of!(SaveArea, reserved_580)),
    ),
    Span::between(
        save(offset_of!(SaveArea, rsp)),
        save(offset_of!(SaveArea, reserved_648)),
    ),
    Span::between(save(offset_of!(SaveArea, g_pat)), VMCB_STATE_BYTES),
];

/// Every field of the control area.
pub const CONTROL_STATE: [Span; 2] = [
    Span::between(
        control(offset_of!(Control, intercept_cr)),
        control(offset_of!(Control, reserved_018)),
    ),
    Span::between(
        control(qword_of(offset_of!(Control, pause_filter_threshold))),
        control(offset_of!(Control, reserved_0e0)),
    ),
];

/// The control fields the CPU can have changed when a vCPU exits: the
/// virtual interrupt and interrupt shadow, the exit's code, information
/// and interrupted event, EVENTINJ (cleared once taken), next RIP and the
/// fetched instruction bytes.
pub const CONTROL_EXIT: [Span; 3] = [
    Span::between(
        control(offset_of!(Control, vintr)),
        control(offset_of!(Control, np_control)),
    ),
    Span::between(
        control(offset_of!(Control, event_inj)),
        control(offset_of!(Control, n_cr3)),
    ),
    Span::between(
        control(offset_of!(Control, next_rip)),
        control(offset_of!(Control, reserved_0e0)),
    ),
];

/// True if the spans are in order, apart, and end inside the VMCB's
/// state.
const fn well_formed(spans: &[Span]) -> bool {
    well_formed_after(spans, 0)
}

const fn well_formed_after(spans: &[Span], after: usize) -> bool {
    match spans {
        [] => after <= VMCB_STATE_BYTES,
        [s, rest @ ..] => s.offset >= after && s.qwords > 0 && well_formed_after(rest, s.end()),
    }
}

const _: () = {
    assert!(well_formed(&CONTROL_STATE) && CONTROL_STATE[1].end() <= SAVE[0].offset);
    assert!(well_formed(&CONTROL_EXIT) && CONTROL_EXIT[2].end() <= SAVE[0].offset);
    assert!(well_formed(&SAVE));
};

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromZeros, IntoBytes};

    fn covered(control: &[Span], byte: usize) -> bool {
        control
            .iter()
            .chain(&SAVE)
            .any(|s| (s.offset..s.end()).contains(&byte))
    }

    /// A VMCB whose architectural fields are all ones and whose reserved
    /// stretches are zero.
    fn every_field() -> Vmcb {
        let mut v = Vmcb::new_zeroed();
        v.as_mut_bytes().fill(0xff);
        let c = &mut v.control;
        c.reserved_018 = [0; 0x24];
        c.reserved_05d = [0; 3];
        c.reserved_0c4 = 0;
        c.reserved_0e0 = [0; 0x320];
        let s = &mut v.save;
        s.reserved_4a0 = [0; 0x2b];
        s.reserved_4cc = 0;
        s.reserved_4d8 = [0; 0x70];
        s.reserved_580 = [0; 0x58];
        s.reserved_648 = [0; 0x20];
        s.reserved_698 = [0; 0x968];
        v
    }

    #[test]
    fn state_covers_every_field() {
        let v = every_field();
        for (i, b) in v.as_bytes().iter().enumerate() {
            if *b != 0 {
                assert!(covered(&CONTROL_STATE, i), "field byte {i:#x} not copied");
            }
        }
    }

    #[test]
    fn state_leaves_out_the_long_reserved_stretches() {
        let bytes =
            |control: &[Span]| -> usize { control.iter().chain(&SAVE).map(|s| s.qwords * 8).sum() };
        assert_eq!(
            bytes(&CONTROL_STATE),
            0x18 + 0xa8 + 0xa0 + 0x10 + 0x38 + 0x70 + 0x30
        );
        assert_eq!(
            bytes(&CONTROL_EXIT),
            0x30 + 0x8 + 0x18 + 0xa0 + 0x10 + 0x38 + 0x70 + 0x30
        );
        assert!(!covered(
            &CONTROL_STATE,
            offset_of!(Vmcb, control) + offset_of!(Control, reserved_0e0)
        ));
        assert!(!covered(
            &CONTROL_STATE,
            offset_of!(Vmcb, save) + offset_of!(SaveArea, reserved_4d8)
        ));
    }

    #[test]
    fn exit_covers_what_the_cpu_writes() {
        let mut v = Vmcb::new_zeroed();
        let c = &mut v.control;
        c.vintr = u64::MAX;
        c.interrupt_shadow = u64::MAX;
        c.exit_code = u64::MAX;
        c.exit_info1 = u64::MAX;
        c.exit_info2 = u64::MAX;
        c.exit_int_info = u64::MAX;
        c.event_inj = u64::MAX;
        c.next_rip = u64::MAX;
        c.insn_len = u8::MAX;
        c.insn_bytes = [0xff; 15];
        let save_fields = every_field().save;
        v.save = save_fields;
        for (i, b) in v.as_bytes().iter().enumerate() {
            if *b != 0 {
                assert!(
                    covered(&CONTROL_EXIT, i),
                    "byte {i:#x} the CPU writes is not copied back"
                );
            }
        }
    }

    #[test]
    fn exit_leaves_the_owners_control_fields() {
        for field in [
            offset_of!(Control, intercept_cr),
            offset_of!(Control, iopm_base_pa),
            offset_of!(Control, msrpm_base_pa),
            offset_of!(Control, tsc_offset),
            offset_of!(Control, guest_asid),
            offset_of!(Control, np_control),
            offset_of!(Control, n_cr3),
            offset_of!(Control, clean_bits),
        ] {
            assert!(
                !covered(&CONTROL_EXIT, field),
                "owner's field {field:#x} copied back"
            );
            assert!(covered(&CONTROL_STATE, field));
        }
    }

    #[test]
    fn spans_are_checked() {
        assert!(well_formed(&[Span::between(0, 8), Span::between(8, 16)]));
        assert!(!well_formed(&[Span::between(8, 16), Span::between(0, 8)]));
        assert!(!well_formed(&[Span::between(0, 16), Span::between(8, 24)]));
        assert!(!well_formed(&[Span::between(0x690, 0x6a0)]));
        assert!(!well_formed(&[Span {
            offset: 0,
            qwords: 0
        }]));
        assert_eq!(
            Span::between(0x10, 0x30),
            Span {
                offset: 0x10,
                qwords: 4
            }
        );
    }
}
