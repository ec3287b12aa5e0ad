//! What the microkernel checks in a VMCB before it runs it. The extension
//! owns policy, but it runs in ring 3: if it could hand the microkernel any
//! VMCB, a bug or a compromise there would turn the root loose (nested
//! paging off, foreign nested tables, SVM instructions or XSETBV not
//! intercepted). These checks keep the ring-0/ring-3 split meaningful.

use microv_arch::svm::{misc1, required, Control, NP_ENABLE};
use microv_arch::xsave;

/// V_GIF enable and AVIC enable in the VINTR control word: either would
/// let a guest skip exits MicroV relies on.
pub const VINTR_FORBIDDEN: u64 = (1 << 25) | (1 << 31);

/// VINTR's V_INTR_MASKING: with it, the guest's RFLAGS.IF masks only
/// virtual interrupts, and a host interrupt always ends the guest's run.
pub const V_INTR_MASKING: u64 = 1 << 24;

/// Intercepts a guest vCPU needs besides [`required`]: a host interrupt or
/// NMI must give the CPU back to the root at once.
pub const GUEST_MISC1: u32 = misc1::INTR | misc1::NMI;

/// Whose VMCB is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A root vCPU: it must use the root's tables (when they exist).
    Root(Option<RootTables>),
    /// A micro-VM vCPU: its VM's tables, and no way to hold the CPU.
    Guest(RootTables),
}

/// The nested tables and permission maps a vCPU runs on (the root's, or
/// one micro VM's), fixed by the microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTables {
    pub n_cr3: u64,
    pub iopm: u64,
    pub msrpm: u64,
}

impl RootTables {
    /// The tables `c` refers to.
    pub fn of(c: &Control) -> Self {
        RootTables {
            n_cr3: c.n_cr3,
            iopm: c.iopm_base_pa,
            msrpm: c.msrpm_base_pa,
        }
    }
}

/// Why a VMCB was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcbError {
    /// A required intercept is off.
    MissingIntercept,
    /// Nested paging is off, or other nested-paging modes (SEV, GMET…) are on.
    NestedPaging,
    /// A vCPU uses nested tables or permission maps that are not its own
    /// (the root's for a root vCPU, its VM's for a guest vCPU).
    ForeignTables,
    /// A guest vCPU could keep the CPU from the root: host interrupts or
    /// NMIs are not intercepted, or V_INTR_MASKING is off.
    HoldsCpu,
    /// ASID 0 is the host's.
    Asid,
    /// LBR or VMLOAD/VMSAVE virtualization, V_GIF or AVIC is on.
    Virtualization,
    /// The vCPU's XCR0 is one XSETBV would refuse.
    Xcr0,
}

/// Checks a VMCB control area and the vCPU's XCR0 before VMRUN.
pub fn check(c: &Control, xcr0: u64, supported_xcr0: u64, owner: Owner) -> Result<(), VmcbError> {
    if c.intercept_misc1 & required::MISC1 != required::MISC1
        || c.intercept_misc2 & required::MISC2 != required::MISC2
    {
        return Err(VmcbError::MissingIntercept);
    }
    if c.np_control != NP_ENABLE {
        return Err(VmcbError::NestedPaging);
    }
    let tables = match owner {
        Owner::Root(t) => t,
        Owner::Guest(t) => {
            if c.intercept_misc1 & GUEST_MISC1 != GUEST_MISC1 || c.vintr & V_INTR_MASKING == 0 {
                return Err(VmcbError::HoldsCpu);
            }
            Some(t)
        }
    };
    if tables.is_some_and(|t| t != RootTables::of(c)) {
        return Err(VmcbError::ForeignTables);
    }
    if c.guest_asid == 0 {
        return Err(VmcbError::Asid);
    }
    if c.virt_ext != 0 || c.vintr & VINTR_FORBIDDEN != 0 {
        return Err(VmcbError::Virtualization);
    }
    if !xsave::xcr0_valid(xcr0, supported_xcr0) {
        return Err(VmcbError::Xcr0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::svm::{misc1, misc2, Vmcb};
    use zerocopy::FromZeros;

    type Change = fn(&mut Control);

    const TABLES: RootTables = RootTables {
        n_cr3: 0x1000,
        iopm: 0x4000,
        msrpm: 0x8000,
    };

    fn good() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::new_zeroed());
        let c = &mut v.control;
        c.intercept_misc1 = required::MISC1 | misc1::CPUID;
        c.intercept_misc2 = required::MISC2 | misc2::VMMCALL;
        c.np_control = NP_ENABLE;
        c.n_cr3 = TABLES.n_cr3;
        c.iopm_base_pa = TABLES.iopm;
        c.msrpm_base_pa = TABLES.msrpm;
        c.guest_asid = 1;
        v
    }

    #[test]
    fn accepts_the_roots_vmcb() {
        assert_eq!(
            check(&good().control, 3, 7, Owner::Root(Some(TABLES))),
            Ok(())
        );
        assert_eq!(RootTables::of(&good().control), TABLES);
    }

    #[test]
    fn refuses_every_loosening() {
        let cases: [(Change, VmcbError); 12] = [
            (
                |c| c.intercept_misc1 &= !misc1::MSR_PROT,
                VmcbError::MissingIntercept,
            ),
            (
                |c| c.intercept_misc1 &= !misc1::IOIO_PROT,
                VmcbError::MissingIntercept,
            ),
            (
                |c| c.intercept_misc1 &= !misc1::SHUTDOWN,
                VmcbError::MissingIntercept,
            ),
            (
                |c| c.intercept_misc2 &= !misc2::VMRUN,
                VmcbError::MissingIntercept,
            ),
            (
                |c| c.intercept_misc2 &= !misc2::XSETBV,
                VmcbError::MissingIntercept,
            ),
            (|c| c.np_control = 0, VmcbError::NestedPaging),
            (|c| c.np_control = NP_ENABLE | 2, VmcbError::NestedPaging),
            (|c| c.n_cr3 = 0x2000, VmcbError::ForeignTables),
            (|c| c.msrpm_base_pa = 0, VmcbError::ForeignTables),
            (|c| c.guest_asid = 0, VmcbError::Asid),
            (|c| c.virt_ext = 2, VmcbError::Virtualization),
            (|c| c.vintr = 1 << 31, VmcbError::Virtualization),
        ];
        for (change, expected) in cases {
            let mut v = good();
            change(&mut v.control);
            assert_eq!(
                check(&v.control, 3, 7, Owner::Root(Some(TABLES))),
                Err(expected)
            );
        }
        assert_eq!(
            check(&good().control, 5, 7, Owner::Root(Some(TABLES))),
            Err(VmcbError::Xcr0)
        );
        let mut v = good();
        v.control.n_cr3 = 0x2000;
        assert_eq!(
            check(&v.control, 3, 7, Owner::Root(None)),
            Ok(()),
            "before the root's tables exist"
        );
    }

    #[test]
    fn a_guest_needs_its_own_tables_and_cannot_hold_the_cpu() {
        let mut v = good();
        v.control.intercept_misc1 |= GUEST_MISC1;
        v.control.vintr = V_INTR_MASKING;
        assert_eq!(check(&v.control, 3, 7, Owner::Guest(TABLES)), Ok(()));
        let other = RootTables {
            n_cr3: 0x9000,
            ..TABLES
        };
        assert_eq!(
            check(&v.control, 3, 7, Owner::Guest(other)),
            Err(VmcbError::ForeignTables)
        );
        let cases: [Change; 3] = [
            |c| c.intercept_misc1 &= !misc1::INTR,
            |c| c.intercept_misc1 &= !misc1::NMI,
            |c| c.vintr = 0,
        ];
        for change in cases {
            let mut w = v.clone();
            change(&mut w.control);
            assert_eq!(
                check(&w.control, 3, 7, Owner::Guest(TABLES)),
                Err(VmcbError::HoldsCpu)
            );
        }
        // The root's rules still apply to guests.
        v.control.intercept_misc2 &= !misc2::VMRUN;
        assert_eq!(
            check(&v.control, 3, 7, Owner::Guest(TABLES)),
            Err(VmcbError::MissingIntercept)
        );
    }
}
