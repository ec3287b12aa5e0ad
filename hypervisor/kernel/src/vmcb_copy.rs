//! Copies between a vCPU state's shadow VMCB (the extension's) and its
//! private one (the CPU's), span by span (`microv_arch::vmcb_spans`): each
//! exit and entry moves about a third of what the whole state would be.

use microv_arch::vmcb_spans::{Span, SAVE};

/// Copies the `control` spans and the save area's ([`SAVE`]) of the VMCB
/// page at `from` to the one at `to`; every other byte of `to` stays as it
/// is.
///
/// # Safety
/// `from` and `to` are distinct mapped VMCB pages (4 KiB, quadword
/// aligned), the spans lie inside one (`vmcb_spans` checks its constants
/// at compile time), and nothing else writes `to` meanwhile. `from` may
/// change under the copy (a torn copy is still a copy; only `to` is
/// checked and run).
#[inline(always)]
pub unsafe fn copy_spans(from: *const u8, to: *mut u8, control: &[Span]) {
    // Two plain loops over constant arrays, inlined: the compiler unrolls
    // them into one `rep movsq` with its three operands per span.
    for span in control {
        // SAFETY: the caller's promise.
        unsafe { copy_span(from, to, span) };
    }
    for span in &SAVE {
        // SAFETY: the caller's promise.
        unsafe { copy_span(from, to, span) };
    }
}

/// # Safety
/// As for [`copy_spans`], for one span.
#[inline(always)]
unsafe fn copy_span(from: *const u8, to: *mut u8, span: &Span) {
    // SAFETY: the caller's promise: the span lies inside both pages, which
    // do not overlap; the offsets are quadword-aligned.
    unsafe {
        microv_rt::string::copy_qwords(
            to.wrapping_add(span.offset).cast::<u64>(),
            from.wrapping_add(span.offset).cast::<u64>(),
            span.qwords,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::svm::Vmcb;
    use microv_arch::vmcb_spans::{CONTROL_EXIT, CONTROL_STATE};
    use zerocopy::{FromZeros, IntoBytes};

    fn copied(control: &[Span]) -> Vmcb {
        let mut from = Vmcb::new_zeroed();
        for (i, b) in from.as_mut_bytes().iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        let mut to = Vmcb::new_zeroed();
        // SAFETY: two distinct VMCBs on this stack; the spans are the
        // checked constants.
        unsafe {
            copy_spans(
                from.as_bytes().as_ptr(),
                to.as_mut_bytes().as_mut_ptr(),
                control,
            )
        };
        for (i, (t, f)) in to.as_bytes().iter().zip(from.as_bytes()).enumerate() {
            let inside = control
                .iter()
                .chain(&SAVE)
                .any(|s| (s.offset..s.end()).contains(&i));
            assert_eq!(*t, if inside { *f } else { 0 }, "byte {i:#x}");
        }
        to
    }

    #[test]
    fn copies_exactly_the_spans() {
        let v = copied(&CONTROL_STATE);
        assert_ne!(v.save.rip, 0);
        assert_ne!(v.control.intercept_misc1, 0);
        let v = copied(&CONTROL_EXIT);
        assert_ne!(v.control.exit_code, 0);
        assert_eq!(v.control.n_cr3, 0);
    }
}
