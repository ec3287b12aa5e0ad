//! Each root vCPU's intercepts: what the root exits on. Its nested tables
//! and permission maps are the microkernel's (`kernel::root_tables`), which
//! sets them in every root VMCB itself.

use microv_arch::svm::{misc1, misc2, required, tlb, Vmcb, NP_ENABLE};

/// ASID of every root vCPU (ASID 0 is the host's).
pub const ROOT_ASID: u32 = 1;

/// Configures a root vCPU's control area (its state came from the CPU).
pub fn configure_vmcb(vmcb: &mut Vmcb) {
    let c = &mut vmcb.control;
    c.intercept_cr = 0;
    c.intercept_dr = 0;
    c.intercept_exceptions = 0;
    // Interrupts and NMIs go straight to the root: no exits for them.
    // What the microkernel requires (svm::required), plus MicroV's policy:
    // CPUID (to hide SVM and identify MicroV) and VMMCALL (hypercalls).
    c.intercept_misc1 = required::MISC1 | misc1::CPUID;
    c.intercept_misc2 = required::MISC2 | misc2::VMMCALL;
    c.intercept_misc3 = 0;
    c.tsc_offset = 0;
    c.guest_asid = ROOT_ASID;
    // The first run flushes whatever the ASID held; later runs need nothing.
    c.tlb_control = tlb::FLUSH_ALL;
    c.vintr = 0;
    c.np_control = NP_ENABLE;
    c.event_inj = 0;
    c.clean_bits = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn vmcb_configuration() {
        let mut v = Box::new(Vmcb::new_zeroed());
        v.control.event_inj = 5;
        configure_vmcb(&mut v);
        assert_eq!(v.control.guest_asid, ROOT_ASID);
        assert_eq!(
            v.control.intercept_misc1 & required::MISC1,
            required::MISC1,
            "what the microkernel requires"
        );
        assert_ne!(
            v.control.intercept_misc2 & misc2::VMRUN,
            0,
            "VMRUN must be intercepted"
        );
        assert_eq!(v.control.intercept_misc1 & (misc1::INTR | misc1::NMI), 0);
        assert_eq!(v.control.np_control, NP_ENABLE);
        assert_eq!(v.control.event_inj, 0);
    }
}
