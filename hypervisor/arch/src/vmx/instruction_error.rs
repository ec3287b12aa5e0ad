//! How VMX instructions fail (SDM Vol. 3C 31.2) and the VM-instruction
//! error numbers a failure with a current VMCS leaves (31.4).

/// A failed VMX instruction (VMXON, VMPTRLD, VMREAD, VMWRITE, VMLAUNCH,
/// INVEPT, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid (RFLAGS.CF): no current VMCS to hold an error number.
    Invalid,
    /// VMfailValid (RFLAGS.ZF): the reason, read from the VM-instruction
    /// error field of the current VMCS.
    Valid(InstructionError),
}

const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_ZF: u64 = 1 << 6;

/// The outcome of a VMX instruction from the RFLAGS it left: success (CF
/// and ZF clear), VMfailInvalid (CF) or VMfailValid (ZF), whose number
/// `error_field` reads from the current VMCS (only then).
pub fn outcome(rflags: u64, error_field: impl FnOnce() -> u32) -> Result<(), VmFail> {
    if rflags & RFLAGS_CF != 0 {
        Err(VmFail::Invalid)
    } else if rflags & RFLAGS_ZF != 0 {
        Err(VmFail::Valid(InstructionError(error_field())))
    } else {
        Ok(())
    }
}

/// A VM-instruction error number (SDM Vol. 3C table 31-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionError(pub u32);

impl InstructionError {
    pub const VMCALL_IN_ROOT: Self = Self(1);
    pub const VMCLEAR_INVALID_ADDRESS: Self = Self(2);
    pub const VMCLEAR_VMXON_POINTER: Self = Self(3);
    pub const VMLAUNCH_NOT_CLEAR: Self = Self(4);
    pub const VMRESUME_NOT_LAUNCHED: Self = Self(5);
    pub const VMRESUME_AFTER_VMXOFF: Self = Self(6);
    /// VM entry checks failed on the VM-execution, exit or entry controls.
    pub const ENTRY_INVALID_CONTROLS: Self = Self(7);
    /// VM entry checks failed on the host-state area.
    pub const ENTRY_INVALID_HOST_STATE: Self = Self(8);
    pub const VMPTRLD_INVALID_ADDRESS: Self = Self(9);
    pub const VMPTRLD_VMXON_POINTER: Self = Self(10);
    pub const VMPTRLD_WRONG_REVISION: Self = Self(11);
    /// VMREAD or VMWRITE of a field this CPU does not have.
    pub const UNSUPPORTED_FIELD: Self = Self(12);
    pub const VMWRITE_READ_ONLY: Self = Self(13);
    pub const VMXON_IN_ROOT: Self = Self(15);
    pub const ENTRY_INVALID_EXECUTIVE_VMCS: Self = Self(16);
    pub const ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS: Self = Self(17);
    pub const ENTRY_EXECUTIVE_NOT_VMXON: Self = Self(18);
    pub const VMCALL_NOT_CLEAR: Self = Self(19);
    pub const VMCALL_INVALID_EXIT_CONTROLS: Self = Self(20);
    pub const VMCALL_WRONG_MSEG_REVISION: Self = Self(22);
    pub const VMXOFF_DUAL_MONITOR: Self = Self(23);
    pub const VMCALL_INVALID_SMM_FEATURES: Self = Self(24);
    pub const ENTRY_INVALID_EXECUTIVE_CONTROLS: Self = Self(25);
    /// VM entry with events blocked by MOV SS (the instruction after a MOV
    /// SS or POP SS).
    pub const ENTRY_BLOCKED_BY_MOV_SS: Self = Self(26);
    pub const INVALID_INVEPT_INVVPID_OPERAND: Self = Self(28);

    /// Every defined number and what the SDM calls it, for logs.
    pub const ALL: [(InstructionError, &'static str); 25] = [
        (
            Self::VMCALL_IN_ROOT,
            "VMCALL executed in VMX root operation",
        ),
        (
            Self::VMCLEAR_INVALID_ADDRESS,
            "VMCLEAR with invalid physical address",
        ),
        (Self::VMCLEAR_VMXON_POINTER, "VMCLEAR with VMXON pointer"),
        (Self::VMLAUNCH_NOT_CLEAR, "VMLAUNCH with non-clear VMCS"),
        (
            Self::VMRESUME_NOT_LAUNCHED,
            "VMRESUME with non-launched VMCS",
        ),
        (Self::VMRESUME_AFTER_VMXOFF, "VMRESUME after VMXOFF"),
        (
            Self::ENTRY_INVALID_CONTROLS,
            "VM entry with invalid control field(s)",
        ),
        (
            Self::ENTRY_INVALID_HOST_STATE,
            "VM entry with invalid host-state field(s)",
        ),
        (
            Self::VMPTRLD_INVALID_ADDRESS,
            "VMPTRLD with invalid physical address",
        ),
        (Self::VMPTRLD_VMXON_POINTER, "VMPTRLD with VMXON pointer"),
        (
            Self::VMPTRLD_WRONG_REVISION,
            "VMPTRLD with incorrect VMCS revision identifier",
        ),
        (
            Self::UNSUPPORTED_FIELD,
            "VMREAD/VMWRITE from/to unsupported VMCS component",
        ),
        (
            Self::VMWRITE_READ_ONLY,
            "VMWRITE to read-only VMCS component",
        ),
        (Self::VMXON_IN_ROOT, "VMXON executed in VMX root operation"),
        (
            Self::ENTRY_INVALID_EXECUTIVE_VMCS,
            "VM entry with invalid executive-VMCS pointer",
        ),
        (
            Self::ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS,
            "VM entry with non-launched executive VMCS",
        ),
        (
            Self::ENTRY_EXECUTIVE_NOT_VMXON,
            "VM entry with executive-VMCS pointer not VMXON pointer",
        ),
        (Self::VMCALL_NOT_CLEAR, "VMCALL with non-clear VMCS"),
        (
            Self::VMCALL_INVALID_EXIT_CONTROLS,
            "VMCALL with invalid VM-exit control fields",
        ),
        (
            Self::VMCALL_WRONG_MSEG_REVISION,
            "VMCALL with incorrect MSEG revision identifier",
        ),
        (
            Self::VMXOFF_DUAL_MONITOR,
            "VMXOFF under dual-monitor treatment of SMIs and SMM",
        ),
        (
            Self::VMCALL_INVALID_SMM_FEATURES,
            "VMCALL with invalid SMM-monitor features",
        ),
        (
            Self::ENTRY_INVALID_EXECUTIVE_CONTROLS,
            "VM entry with invalid VM-execution control fields in executive VMCS",
        ),
        (
            Self::ENTRY_BLOCKED_BY_MOV_SS,
            "VM entry with events blocked by MOV SS",
        ),
        (
            Self::INVALID_INVEPT_INVVPID_OPERAND,
            "invalid operand to INVEPT/INVVPID",
        ),
    ];

    /// What the SDM calls this error, or "unknown VM-instruction error".
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("unknown VM-instruction error", |(_, name)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rflags_tell_success_and_both_failures() {
        let never = || panic!("no error number without VMfailValid");
        assert_eq!(outcome(0x2, never), Ok(()));
        assert_eq!(outcome(0x2 | RFLAGS_CF, never), Err(VmFail::Invalid));
        assert_eq!(
            outcome(0x2 | RFLAGS_ZF, || 7),
            Err(VmFail::Valid(InstructionError::ENTRY_INVALID_CONTROLS))
        );
    }

    #[test]
    fn every_number_has_one_name() {
        for (i, (e, name)) in InstructionError::ALL.iter().enumerate() {
            assert_eq!(e.name(), *name);
            assert!(
                InstructionError::ALL[..i].iter().all(|(o, _)| o != e),
                "{e:?}"
            );
        }
        assert_eq!(
            InstructionError(28).name(),
            "invalid operand to INVEPT/INVVPID"
        );
        for unknown in [0, 14, 21, 27, 29, u32::MAX] {
            assert_eq!(
                InstructionError(unknown).name(),
                "unknown VM-instruction error"
            );
        }
    }
}
