//! Why a VM exit happened: the exit-reason field (SDM Vol. 3C 25.9.1), the
//! basic exit reasons (Vol. 3D appendix C) and the exit qualifications of
//! control-register accesses, MOV DR and I/O instructions (Vol. 3C
//! 28.2.1). EPT violations are decoded in `ept`.

use super::bit;

/// Declares the basic exit reasons and their names.
macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $number:literal, $text:literal;)*) => {
        $($(#[$doc])* pub const $name: u16 = $number;)*
        /// Every basic exit reason and what the SDM calls it.
        pub const ALL: &[(u16, &str)] = &[$(($number, $text)),*];
    };
}

/// Basic exit reasons (SDM Vol. 3D table C-1), bits 15:0 of the exit
/// reason.
pub mod reason {
    reasons! {
        /// An exception in the exception bitmap, or an NMI with NMI exiting.
        EXCEPTION_OR_NMI = 0, "exception or NMI";
        EXTERNAL_INTERRUPT = 1, "external interrupt";
        TRIPLE_FAULT = 2, "triple fault";
        INIT = 3, "INIT signal";
        SIPI = 4, "start-up IPI";
        IO_SMI = 5, "I/O SMI";
        OTHER_SMI = 6, "other SMI";
        INTERRUPT_WINDOW = 7, "interrupt window";
        NMI_WINDOW = 8, "NMI window";
        TASK_SWITCH = 9, "task switch";
        CPUID = 10, "CPUID";
        GETSEC = 11, "GETSEC";
        HLT = 12, "HLT";
        INVD = 13, "INVD";
        INVLPG = 14, "INVLPG";
        RDPMC = 15, "RDPMC";
        RDTSC = 16, "RDTSC";
        RSM = 17, "RSM";
        VMCALL = 18, "VMCALL";
        VMCLEAR = 19, "VMCLEAR";
        VMLAUNCH = 20, "VMLAUNCH";
        VMPTRLD = 21, "VMPTRLD";
        VMPTRST = 22, "VMPTRST";
        VMREAD = 23, "VMREAD";
        VMRESUME = 24, "VMRESUME";
        VMWRITE = 25, "VMWRITE";
        VMXOFF = 26, "VMXOFF";
        VMXON = 27, "VMXON";
        /// MOV to/from CR0, CR3, CR4, CR8, CLTS or LMSW ([`CrAccess`](super::CrAccess)).
        CR_ACCESS = 28, "control-register access";
        /// [`MovDr`](super::MovDr).
        MOV_DR = 29, "MOV DR";
        /// [`IoAccess`](super::IoAccess).
        IO_INSTRUCTION = 30, "I/O instruction";
        RDMSR = 31, "RDMSR";
        WRMSR = 32, "WRMSR";
        /// A VM-entry failure (bit 31 set): the guest state failed the
        /// checks.
        INVALID_GUEST_STATE = 33, "VM-entry failure due to invalid guest state";
        /// A VM-entry failure: an entry in the MSR-load area.
        MSR_LOADING = 34, "VM-entry failure due to MSR loading";
        MWAIT = 36, "MWAIT";
        MONITOR_TRAP_FLAG = 37, "monitor trap flag";
        MONITOR = 39, "MONITOR";
        PAUSE = 40, "PAUSE";
        /// A VM-entry failure: a machine check during the entry.
        MACHINE_CHECK = 41, "VM-entry failure due to machine-check event";
        TPR_BELOW_THRESHOLD = 43, "TPR below threshold";
        APIC_ACCESS = 44, "APIC access";
        VIRTUALIZED_EOI = 45, "virtualized EOI";
        GDTR_IDTR_ACCESS = 46, "access to GDTR or IDTR";
        LDTR_TR_ACCESS = 47, "access to LDTR or TR";
        /// `ept::EptViolation`.
        EPT_VIOLATION = 48, "EPT violation";
        EPT_MISCONFIGURATION = 49, "EPT misconfiguration";
        INVEPT = 50, "INVEPT";
        RDTSCP = 51, "RDTSCP";
        PREEMPTION_TIMER = 52, "VMX-preemption timer expired";
        INVVPID = 53, "INVVPID";
        WBINVD = 54, "WBINVD or WBNOINVD";
        XSETBV = 55, "XSETBV";
        APIC_WRITE = 56, "APIC write";
        RDRAND = 57, "RDRAND";
        INVPCID = 58, "INVPCID";
        VMFUNC = 59, "VMFUNC";
        ENCLS = 60, "ENCLS";
        RDSEED = 61, "RDSEED";
        PML_FULL = 62, "page-modification log full";
        XSAVES = 63, "XSAVES";
        XRSTORS = 64, "XRSTORS";
        PCONFIG = 65, "PCONFIG";
        SPP_EVENT = 66, "SPP-related event";
        UMWAIT = 67, "UMWAIT";
        TPAUSE = 68, "TPAUSE";
        LOADIWKEY = 69, "LOADIWKEY";
        ENCLV = 70, "ENCLV";
        ENQCMD_PASID_FAILURE = 72, "ENQCMD PASID translation failure";
        ENQCMDS_PASID_FAILURE = 73, "ENQCMDS PASID translation failure";
        BUS_LOCK = 74, "bus lock";
        INSTRUCTION_TIMEOUT = 75, "instruction timeout";
    }

    /// What the SDM calls basic exit reason `basic`, for logs.
    pub fn name(basic: u16) -> &'static str {
        ALL.iter()
            .find(|(n, _)| *n == basic)
            .map_or("unknown exit reason", |(_, name)| name)
    }
}

/// The exit-reason field (SDM Vol. 3C 25.9.1), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason {
    /// Bits 15:0: one of [`reason`].
    pub basic: u16,
    /// Bit 26: a bus lock was asserted with this exit (VMM bus-lock
    /// detection).
    pub bus_lock: bool,
    /// Bit 27: the exit came from enclave mode.
    pub enclave: bool,
    /// Bit 28: an SMM exit left a monitor-trap-flag exit pending.
    pub pending_mtf: bool,
    /// Bit 29: an SMM exit from VMX root operation.
    pub from_root: bool,
    /// Bit 31: not an exit but a VM entry that failed after loading guest
    /// state (invalid guest state, MSR loading, machine check): the host
    /// state was loaded as for an exit.
    pub entry_failure: bool,
}

impl ExitReason {
    pub const fn decode(field: u32) -> ExitReason {
        let f = field as u64;
        ExitReason {
            basic: field as u16,
            bus_lock: bit(f, 26),
            enclave: bit(f, 27),
            pending_mtf: bit(f, 28),
            from_root: bit(f, 29),
            entry_failure: bit(f, 31),
        }
    }
}

/// A general-purpose register as exit qualifications number it: 0 RAX,
/// 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8–15 R8–R15.
pub type Gpr = u8;

/// A control-register access (SDM Vol. 3C table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV to CR`cr` from `gpr`.
    MovTo { cr: u8, gpr: Gpr },
    /// MOV from CR`cr` to `gpr`.
    MovFrom { cr: u8, gpr: Gpr },
    /// CLTS (CR0.TS cleared).
    Clts,
    /// LMSW with the 16-bit `source`, a memory operand if `memory`.
    Lmsw { source: u16, memory: bool },
}

impl CrAccess {
    pub const fn decode(qualification: u64) -> CrAccess {
        let q = qualification;
        let cr = (q & 0xf) as u8;
        let gpr = ((q >> 8) & 0xf) as u8;
        match (q >> 4) & 3 {
            0 => CrAccess::MovTo { cr, gpr },
            1 => CrAccess::MovFrom { cr, gpr },
            2 => CrAccess::Clts,
            _ => CrAccess::Lmsw {
                source: (q >> 16) as u16,
                memory: bit(q, 6),
            },
        }
    }
}

/// A MOV to or from a debug register (SDM Vol. 3C table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovDr {
    pub dr: u8,
    /// True for MOV to DR`dr`, false for MOV from it.
    pub to_dr: bool,
    pub gpr: Gpr,
}

impl MovDr {
    pub const fn decode(qualification: u64) -> MovDr {
        MovDr {
            dr: (qualification & 7) as u8,
            to_dr: !bit(qualification, 4),
            gpr: ((qualification >> 8) & 0xf) as u8,
        }
    }
}

/// An I/O instruction (SDM Vol. 3C table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// 1, 2 or 4 bytes.
    pub size: u8,
    /// IN or INS (else OUT or OUTS).
    pub input: bool,
    /// INS or OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// The port was an immediate operand (else DX).
    pub immediate: bool,
    pub port: u16,
}

impl IoAccess {
    /// `None` for an access size the SDM leaves unused (2, or above 3).
    pub const fn decode(qualification: u64) -> Option<IoAccess> {
        let q = qualification;
        let size = match q & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        Some(IoAccess {
            size,
            input: bit(q, 3),
            string: bit(q, 4),
            rep: bit(q, 5),
            immediate: bit(q, 6),
            port: (q >> 16) as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_numbers_and_names() {
        assert_eq!(reason::name(reason::EPT_VIOLATION), "EPT violation");
        assert_eq!(reason::name(reason::CPUID), "CPUID");
        assert_eq!(reason::name(35), "unknown exit reason");
        assert_eq!(reason::name(u16::MAX), "unknown exit reason");
        for (i, (n, _)) in reason::ALL.iter().enumerate() {
            assert!(
                reason::ALL[..i].iter().all(|(m, _)| m < n),
                "sorted, once: {n}"
            );
        }
        assert_eq!(reason::ALL.len(), 72);
    }

    #[test]
    fn the_exit_reason_splits() {
        assert_eq!(
            ExitReason::decode(30),
            ExitReason {
                basic: reason::IO_INSTRUCTION,
                bus_lock: false,
                enclave: false,
                pending_mtf: false,
                from_root: false,
                entry_failure: false,
            }
        );
        let failed = ExitReason::decode(0x8000_0021);
        assert!(failed.entry_failure);
        assert_eq!(failed.basic, reason::INVALID_GUEST_STATE);
        let flags = ExitReason::decode(0x3c00_0001);
        assert!(flags.bus_lock && flags.enclave && flags.pending_mtf && flags.from_root);
        assert!(!flags.entry_failure);
        assert_eq!(flags.basic, reason::EXTERNAL_INTERRUPT);
    }

    #[test]
    fn cr_accesses_decode() {
        // mov cr3, rax; mov rbx, cr8; clts; lmsw [mem] with 0x0011.
        assert_eq!(CrAccess::decode(0x003), CrAccess::MovTo { cr: 3, gpr: 0 });
        assert_eq!(CrAccess::decode(0x318), CrAccess::MovFrom { cr: 8, gpr: 3 });
        assert_eq!(CrAccess::decode(0x020), CrAccess::Clts);
        assert_eq!(
            CrAccess::decode(0x0011_0070),
            CrAccess::Lmsw {
                source: 0x11,
                memory: true,
            }
        );
        assert_eq!(
            CrAccess::decode(0xffff_0530),
            CrAccess::Lmsw {
                source: 0xffff,
                memory: false,
            }
        );
        assert_eq!(CrAccess::decode(0xf04), CrAccess::MovTo { cr: 4, gpr: 15 });
    }

    #[test]
    fn mov_dr_decodes() {
        // mov dr7, rcx; mov r12, dr6.
        assert_eq!(
            MovDr::decode(0x107),
            MovDr {
                dr: 7,
                to_dr: true,
                gpr: 1,
            }
        );
        assert_eq!(
            MovDr::decode(0xc16),
            MovDr {
                dr: 6,
                to_dr: false,
                gpr: 12,
            }
        );
    }

    #[test]
    fn io_accesses_decode() {
        // out dx, al to 0xcf8... as a dword; in al, 0x71; rep insw from dx.
        assert_eq!(
            IoAccess::decode(0x0cf8_0003),
            Some(IoAccess {
                size: 4,
                input: false,
                string: false,
                rep: false,
                immediate: false,
                port: 0xcf8,
            })
        );
        let imm = IoAccess::decode(0x0071_0048).unwrap();
        assert_eq!(
            (imm.size, imm.input, imm.immediate, imm.port),
            (1, true, true, 0x71)
        );
        let rep = IoAccess::decode(0x01f0_0039).unwrap();
        assert_eq!(
            (rep.size, rep.input, rep.string, rep.rep),
            (2, true, true, true)
        );
        assert_eq!(IoAccess::decode(2), None);
        assert_eq!(IoAccess::decode(0x60_0007), None);
    }
}
