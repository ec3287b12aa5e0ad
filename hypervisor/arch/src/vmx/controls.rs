//! The VM-execution, VM-exit and VM-entry controls (SDM Vol. 3C 25.6–25.8)
//! and their adjustment to the settings a CPU allows (Vol. 3D A.3–A.5).
//!
//! Each set of controls has a capability MSR: bit X of its low half set
//! means control X must be 1, bit X of its high half clear means it must
//! be 0. A hypervisor asks for controls it cannot run without (required)
//! and ones it uses if present (wanted); [`adjust`] gives the value to
//! write or names the required controls the CPU lacks.

use crate::msr;

/// Pin-based VM-execution controls (SDM Vol. 3C 25.6.1).
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (25.6.2).
pub mod primary {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const TERTIARY_CONTROLS: u32 = 1 << 17;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// The secondary controls apply (else they count as all 0).
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (25.6.2).
pub mod secondary {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// RDTSCP runs (else it raises #UD).
    pub const RDTSCP: u32 = 1 << 3;
    pub const VIRTUALIZE_X2APIC: u32 = 1 << 4;
    pub const VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Guests may run unpaged and in real mode (needs [`EPT`]).
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub const RDRAND_EXITING: u32 = 1 << 11;
    /// INVPCID runs (else it raises #UD).
    pub const INVPCID: u32 = 1 << 12;
    pub const VM_FUNCTIONS: u32 = 1 << 13;
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    pub const ENCLS_EXITING: u32 = 1 << 15;
    pub const RDSEED_EXITING: u32 = 1 << 16;
    pub const PML: u32 = 1 << 17;
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 19;
    /// XSAVES and XRSTORS run (else they raise #UD).
    pub const XSAVES: u32 = 1 << 20;
    pub const MODE_BASED_EPT_EXECUTE: u32 = 1 << 22;
    pub const EPT_SUB_PAGE_WRITE: u32 = 1 << 23;
    pub const PT_USES_GUEST_PHYSICAL: u32 = 1 << 24;
    pub const TSC_SCALING: u32 = 1 << 25;
    /// UMWAIT, UMONITOR and TPAUSE run (else they raise #UD).
    pub const USER_WAIT_PAUSE: u32 = 1 << 26;
    pub const ENCLV_EXITING: u32 = 1 << 28;
    pub const BUS_LOCK_DETECTION: u32 = 1 << 30;
    pub const INSTRUCTION_TIMEOUT: u32 = 1 << 31;
}

/// VM-exit controls (25.7.1).
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// The exit acknowledges the external interrupt and stores its vector.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
    pub const CLEAR_BNDCFGS: u32 = 1 << 23;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 24;
    pub const CLEAR_RTIT_CTL: u32 = 1 << 25;
    pub const CLEAR_LBR_CTL: u32 = 1 << 26;
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    pub const LOAD_PKRS: u32 = 1 << 29;
}

/// VM-entry controls (25.8.1).
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest runs in IA-32e mode (EFER.LMA after the entry).
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
    pub const LOAD_BNDCFGS: u32 = 1 << 16;
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 17;
    pub const LOAD_RTIT_CTL: u32 = 1 << 18;
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    pub const LOAD_LBR_CTL: u32 = 1 << 21;
    pub const LOAD_PKRS: u32 = 1 << 22;
}

/// One set of 32-bit controls with a capability MSR of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controls {
    Pin,
    Primary,
    Secondary,
    Exit,
    Entry,
}

impl Controls {
    /// The MSR reporting this set's allowed settings: the TRUE_ one where
    /// IA32_VMX_BASIC bit 55 (`true_controls`) says they exist, since only
    /// it says which default1 controls may be 0 (SDM Vol. 3D A.2). The
    /// secondary controls have no default1 class and no TRUE_ MSR.
    pub const fn capability_msr(self, true_controls: bool) -> u32 {
        match (self, true_controls) {
            (Controls::Pin, false) => msr::VMX_PINBASED_CTLS,
            (Controls::Pin, true) => msr::VMX_TRUE_PINBASED_CTLS,
            (Controls::Primary, false) => msr::VMX_PROCBASED_CTLS,
            (Controls::Primary, true) => msr::VMX_TRUE_PROCBASED_CTLS,
            (Controls::Secondary, _) => msr::VMX_PROCBASED_CTLS2,
            (Controls::Exit, false) => msr::VMX_EXIT_CTLS,
            (Controls::Exit, true) => msr::VMX_TRUE_EXIT_CTLS,
            (Controls::Entry, false) => msr::VMX_ENTRY_CTLS,
            (Controls::Entry, true) => msr::VMX_TRUE_ENTRY_CTLS,
        }
    }
}

/// Why a set of controls cannot be what the hypervisor needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// Required controls the CPU does not allow to be 1.
    Missing { controls: Controls, bits: u32 },
    /// Controls the capability MSR says must be 1 and must be 0 at once:
    /// no setting passes VM entry (a broken outer hypervisor's MSR).
    Contradictory { controls: Controls, bits: u32 },
}

/// The setting of `controls` to write: `required | wanted`, less the
/// wanted controls the CPU lacks, plus those it forces to 1, checked
/// against `capability` (the value of [`Controls::capability_msr`]).
pub const fn adjust(
    controls: Controls,
    capability: u64,
    required: u32,
    wanted: u32,
) -> Result<u32, ControlError> {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    let contradictory = must_be_one & !may_be_one;
    let missing = required & !may_be_one;
    if contradictory != 0 {
        Err(ControlError::Contradictory {
            controls,
            bits: contradictory,
        })
    } else if missing != 0 {
        Err(ControlError::Missing {
            controls,
            bits: missing,
        })
    } else {
        Ok((required | wanted) & may_be_one | must_be_one)
    }
}

/// The default1 class of each set (SDM Vol. 3D A.2): reserved controls
/// that the capability MSRs without TRUE_ report as forced to 1.
pub mod default1 {
    pub const PIN: u32 = 0x16;
    pub const PRIMARY: u32 = 0x0401_e172;
    pub const EXIT: u32 = 0x0003_6dff;
    pub const ENTRY: u32 = 0x0000_11ff;
}

/// A capability MSR's value (what [`adjust`] reads): `must_be_one` in the
/// low half, `may_be_one` in the high half. For fakes of a CPU.
pub const fn capability(must_be_one: u32, may_be_one: u32) -> u64 {
    (may_be_one as u64) << 32 | must_be_one as u64
}

/// Required and wanted bits of every set of controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// (required, wanted) pin-based controls.
    pub pin: (u32, u32),
    /// (required, wanted) primary processor-based controls; the secondary
    /// controls' activation is added by [`adjust_all`].
    pub primary: (u32, u32),
    /// (required, wanted) secondary processor-based controls.
    pub secondary: (u32, u32),
    /// (required, wanted) VM-exit controls.
    pub exit: (u32, u32),
    /// (required, wanted) VM-entry controls.
    pub entry: (u32, u32),
}

/// The values to write to the five control fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub pin: u32,
    pub primary: u32,
    pub secondary: u32,
    pub exit: u32,
    pub entry: u32,
}

/// Adjusts every set of `request` to the capability MSRs read through
/// `rdmsr` (TRUE_ ones if `true_controls`). The primary controls activate
/// the secondary ones when any are required, or wanted and available; the
/// secondary MSR is read only when the CPU has them (it may not exist
/// otherwise), and without them the secondary controls are 0.
pub fn adjust_all(
    true_controls: bool,
    rdmsr: &mut dyn FnMut(u32) -> u64,
    request: &Request,
) -> Result<Settings, ControlError> {
    let mut cap = |c: Controls| rdmsr(c.capability_msr(true_controls));
    let (required, wanted) = request.secondary;
    let activate = if required != 0 {
        (primary::SECONDARY_CONTROLS, 0)
    } else if wanted != 0 {
        (0, primary::SECONDARY_CONTROLS)
    } else {
        (0, 0)
    };
    let primary = adjust(
        Controls::Primary,
        cap(Controls::Primary),
        request.primary.0 | activate.0,
        request.primary.1 | activate.1,
    )?;
    let secondary = if primary & primary::SECONDARY_CONTROLS != 0 {
        adjust(
            Controls::Secondary,
            cap(Controls::Secondary),
            required,
            wanted,
        )?
    } else {
        0
    };
    Ok(Settings {
        pin: adjust(
            Controls::Pin,
            cap(Controls::Pin),
            request.pin.0,
            request.pin.1,
        )?,
        primary,
        secondary,
        exit: adjust(
            Controls::Exit,
            cap(Controls::Exit),
            request.exit.0,
            request.exit.1,
        )?,
        entry: adjust(
            Controls::Entry,
            cap(Controls::Entry),
            request.entry.0,
            request.entry.1,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use capability as cap;
    use default1::{
        ENTRY as ENTRY_DEFAULT1, EXIT as EXIT_DEFAULT1, PIN as PIN_DEFAULT1,
        PRIMARY as PRIMARY_DEFAULT1,
    };

    #[test]
    fn adjusting_keeps_forced_bits_and_drops_unavailable_wishes() {
        let msr = cap(
            PIN_DEFAULT1,
            PIN_DEFAULT1 | pin::NMI_EXITING | pin::VIRTUAL_NMIS,
        );
        assert_eq!(
            adjust(
                Controls::Pin,
                msr,
                pin::NMI_EXITING,
                pin::PREEMPTION_TIMER | pin::VIRTUAL_NMIS
            ),
            Ok(PIN_DEFAULT1 | pin::NMI_EXITING | pin::VIRTUAL_NMIS)
        );
        assert_eq!(
            adjust(
                Controls::Pin,
                msr,
                pin::PREEMPTION_TIMER | pin::NMI_EXITING,
                0
            ),
            Err(ControlError::Missing {
                controls: Controls::Pin,
                bits: pin::PREEMPTION_TIMER,
            })
        );
        assert_eq!(
            adjust(Controls::Exit, cap(1 << 3, 0), 0, 0),
            Err(ControlError::Contradictory {
                controls: Controls::Exit,
                bits: 1 << 3,
            })
        );
    }

    #[test]
    fn true_msrs_are_used_when_basic_says_so() {
        use Controls::*;
        assert_eq!(Pin.capability_msr(false), 0x481);
        assert_eq!(Primary.capability_msr(false), 0x482);
        assert_eq!(Exit.capability_msr(false), 0x483);
        assert_eq!(Entry.capability_msr(false), 0x484);
        assert_eq!(Secondary.capability_msr(false), 0x48b);
        assert_eq!(Pin.capability_msr(true), 0x48d);
        assert_eq!(Primary.capability_msr(true), 0x48e);
        assert_eq!(Exit.capability_msr(true), 0x48f);
        assert_eq!(Entry.capability_msr(true), 0x490);
        assert_eq!(Secondary.capability_msr(true), 0x48b);
    }

    /// A CPU with true controls: default1 bits CR3 load/store exiting may
    /// be 0, EPT, VPID and unrestricted guest exist.
    fn cpu(secondary: bool) -> impl FnMut(u32) -> u64 {
        let primary_may = if secondary {
            u32::MAX
        } else {
            !primary::SECONDARY_CONTROLS
        };
        move |index| match index {
            msr::VMX_TRUE_PINBASED_CTLS => cap(PIN_DEFAULT1, 0xff),
            msr::VMX_TRUE_PROCBASED_CTLS => cap(
                PRIMARY_DEFAULT1 & !(primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING),
                primary_may,
            ),
            msr::VMX_PROCBASED_CTLS2 if secondary => cap(
                0,
                secondary::EPT | secondary::VPID | secondary::UNRESTRICTED_GUEST,
            ),
            msr::VMX_TRUE_EXIT_CTLS => cap(EXIT_DEFAULT1 & !exit::SAVE_DEBUG_CONTROLS, u32::MAX),
            msr::VMX_TRUE_ENTRY_CTLS => cap(ENTRY_DEFAULT1 & !entry::LOAD_DEBUG_CONTROLS, u32::MAX),
            other => panic!("unexpected read of MSR {other:#x}"),
        }
    }

    #[test]
    fn adjusting_every_set_activates_secondary_controls_as_needed() {
        let request = Request {
            pin: (pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING, 0),
            primary: (primary::MSR_BITMAPS | primary::IO_BITMAPS, 0),
            secondary: (secondary::EPT, secondary::VPID | secondary::XSAVES),
            exit: (exit::HOST_ADDRESS_SPACE_SIZE | exit::LOAD_EFER, 0),
            entry: (entry::LOAD_EFER, 0),
        };
        let s = adjust_all(true, &mut cpu(true), &request).unwrap();
        assert_eq!(s.pin, PIN_DEFAULT1 | 0b1001);
        assert_eq!(
            s.primary & primary::SECONDARY_CONTROLS,
            primary::SECONDARY_CONTROLS
        );
        assert_eq!(s.primary & primary::CR3_LOAD_EXITING, 0, "true controls");
        assert_eq!(s.secondary, secondary::EPT | secondary::VPID);
        assert_eq!(s.exit & exit::SAVE_DEBUG_CONTROLS, 0);
        assert_eq!(
            s.entry & (entry::LOAD_EFER | entry::LOAD_DEBUG_CONTROLS),
            entry::LOAD_EFER
        );
        // Only wanted: activated if available, and then 0 without them.
        let wants = Request {
            secondary: (0, secondary::VPID),
            ..Request::default()
        };
        let s = adjust_all(true, &mut cpu(true), &wants).unwrap();
        assert_eq!(s.secondary, secondary::VPID);
        let s = adjust_all(true, &mut cpu(false), &wants).unwrap();
        assert_eq!(
            (s.primary & primary::SECONDARY_CONTROLS, s.secondary),
            (0, 0)
        );
        // Nothing asked for: the secondary MSR is never read.
        let s = adjust_all(true, &mut cpu(true), &Request::default()).unwrap();
        assert_eq!(
            (s.primary & primary::SECONDARY_CONTROLS, s.secondary),
            (0, 0)
        );
    }

    #[test]
    fn adjusting_every_set_names_what_is_missing() {
        let needs_ept = Request {
            secondary: (secondary::EPT, 0),
            ..Request::default()
        };
        assert_eq!(
            adjust_all(true, &mut cpu(false), &needs_ept),
            Err(ControlError::Missing {
                controls: Controls::Primary,
                bits: primary::SECONDARY_CONTROLS,
            })
        );
        let needs_pml = Request {
            secondary: (secondary::EPT | secondary::PML, 0),
            ..Request::default()
        };
        assert_eq!(
            adjust_all(true, &mut cpu(true), &needs_pml),
            Err(ControlError::Missing {
                controls: Controls::Secondary,
                bits: secondary::PML,
            })
        );
        let needs_posted = Request {
            pin: (pin::POSTED_INTERRUPTS | 1 << 8, 0),
            ..Request::default()
        };
        assert_eq!(
            adjust_all(true, &mut cpu(true), &needs_posted),
            Err(ControlError::Missing {
                controls: Controls::Pin,
                bits: 1 << 8,
            })
        );
        // Without true controls the plain MSRs are read.
        let mut old = |index| match index {
            msr::VMX_PINBASED_CTLS => cap(PIN_DEFAULT1, PIN_DEFAULT1),
            msr::VMX_PROCBASED_CTLS => cap(PRIMARY_DEFAULT1, u32::MAX),
            msr::VMX_EXIT_CTLS => cap(EXIT_DEFAULT1, EXIT_DEFAULT1),
            msr::VMX_ENTRY_CTLS => cap(ENTRY_DEFAULT1, ENTRY_DEFAULT1),
            other => panic!("unexpected read of MSR {other:#x}"),
        };
        let s = adjust_all(false, &mut old, &Request::default()).unwrap();
        assert_eq!(
            s,
            Settings {
                pin: PIN_DEFAULT1,
                primary: PRIMARY_DEFAULT1,
                secondary: 0,
                exit: EXIT_DEFAULT1,
                entry: ENTRY_DEFAULT1,
            }
        );
        let needs_efer = Request {
            exit: (exit::LOAD_EFER, 0),
            ..Request::default()
        };
        assert_eq!(
            adjust_all(false, &mut old, &needs_efer),
            Err(ControlError::Missing {
                controls: Controls::Exit,
                bits: exit::LOAD_EFER,
            })
        );
        let needs_entry_efer = Request {
            entry: (entry::LOAD_EFER, 0),
            ..Request::default()
        };
        assert_eq!(
            adjust_all(false, &mut old, &needs_entry_efer).map_err(|e| match e {
                ControlError::Missing { controls, .. } => controls,
                ControlError::Contradictory { controls, .. } => controls,
            }),
            Err(Controls::Entry)
        );
    }
}
