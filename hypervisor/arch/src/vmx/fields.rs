//! The VMCS fields MicroV uses (SDM Vol. 3D appendix B), as typed
//! [`Field`]s grouped by type: [`control`], [`exit_info`] (read-only),
//! [`guest`] and [`host`]. Enough to host a root VM built from a running
//! OS's captured state and Linux micro VMs: no tertiary controls, SGX,
//! SMM monitor, sub-page permissions or Intel PT fields. Each group also
//! lists its fields by name (`ALL`), to dump a VMCS a VM entry refused.

use super::vmcs::{Field, Natural, ReadOnly, Writable};

/// Declares a group's fields and its `ALL` list.
macro_rules! fields {
    ($access:ty; $($(#[$doc:meta])* $name:ident: $width:ty = $encoding:literal;)*) => {
        $($(#[$doc])* pub const $name: Field<$width, $access> = Field::new::<$encoding>();)*
        /// Every field of this group: name and encoding.
        pub const ALL: &[(&str, u32)] = &[$((stringify!($name), $encoding)),*];
    };
}

/// VM-execution, VM-exit and VM-entry control fields (type 0; tables B-1,
/// B-4, B-8, B-12).
pub mod control {
    use super::*;

    fields! { Writable;
        /// Virtual-processor identifier: tags the guest's TLB entries.
        VPID: u16 = 0x0000;
        POSTED_INTERRUPT_VECTOR: u16 = 0x0002;
        EPTP_INDEX: u16 = 0x0004;

        IO_BITMAP_A: u64 = 0x2000;
        IO_BITMAP_B: u64 = 0x2002;
        MSR_BITMAP: u64 = 0x2004;
        EXIT_MSR_STORE_ADDRESS: u64 = 0x2006;
        EXIT_MSR_LOAD_ADDRESS: u64 = 0x2008;
        ENTRY_MSR_LOAD_ADDRESS: u64 = 0x200A;
        PML_ADDRESS: u64 = 0x200E;
        TSC_OFFSET: u64 = 0x2010;
        VIRTUAL_APIC_ADDRESS: u64 = 0x2012;
        APIC_ACCESS_ADDRESS: u64 = 0x2014;
        POSTED_INTERRUPT_DESCRIPTOR: u64 = 0x2016;
        VM_FUNCTION_CONTROLS: u64 = 0x2018;
        /// The EPT pointer (`ept::Eptp`).
        EPTP: u64 = 0x201A;
        EOI_EXIT_BITMAP0: u64 = 0x201C;
        EOI_EXIT_BITMAP1: u64 = 0x201E;
        EOI_EXIT_BITMAP2: u64 = 0x2020;
        EOI_EXIT_BITMAP3: u64 = 0x2022;
        EPTP_LIST_ADDRESS: u64 = 0x2024;
        VMREAD_BITMAP: u64 = 0x2026;
        VMWRITE_BITMAP: u64 = 0x2028;
        VE_INFORMATION_ADDRESS: u64 = 0x202A;
        XSS_EXITING_BITMAP: u64 = 0x202C;
        TSC_MULTIPLIER: u64 = 0x2032;

        /// Pin-based controls (`controls::pin`).
        PIN_CONTROLS: u32 = 0x4000;
        /// Primary processor-based controls (`controls::primary`).
        PRIMARY_CONTROLS: u32 = 0x4002;
        /// Bit n set: exception n exits.
        EXCEPTION_BITMAP: u32 = 0x4004;
        PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
        PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
        CR3_TARGET_COUNT: u32 = 0x400A;
        /// VM-exit controls (`controls::exit`).
        EXIT_CONTROLS: u32 = 0x400C;
        EXIT_MSR_STORE_COUNT: u32 = 0x400E;
        EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
        /// VM-entry controls (`controls::entry`).
        ENTRY_CONTROLS: u32 = 0x4012;
        ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
        /// The event to inject at the next entry (`event::Interruption`).
        ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
        ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
        /// For injected software interrupts and exceptions: the length
        /// the return address skips.
        ENTRY_INSTRUCTION_LENGTH: u32 = 0x401A;
        TPR_THRESHOLD: u32 = 0x401C;
        /// Secondary processor-based controls (`controls::secondary`).
        SECONDARY_CONTROLS: u32 = 0x401E;
        PLE_GAP: u32 = 0x4020;
        PLE_WINDOW: u32 = 0x4022;

        /// CR0 bits the host owns: guest writes that change them exit, and
        /// guest reads see [`CR0_READ_SHADOW`]'s.
        CR0_GUEST_HOST_MASK: Natural = 0x6000;
        CR4_GUEST_HOST_MASK: Natural = 0x6002;
        CR0_READ_SHADOW: Natural = 0x6004;
        CR4_READ_SHADOW: Natural = 0x6006;
        CR3_TARGET0: Natural = 0x6008;
        CR3_TARGET1: Natural = 0x600A;
        CR3_TARGET2: Natural = 0x600C;
        CR3_TARGET3: Natural = 0x600E;
    }
}

/// Read-only VM-exit information fields (type 1; tables B-5, B-9, B-13).
pub mod exit_info {
    use super::*;

    fields! { ReadOnly;
        /// For EPT violations and misconfigurations.
        GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;

        /// Why the last VMX instruction failed (`InstructionError`).
        INSTRUCTION_ERROR: u32 = 0x4400;
        /// `exit::ExitReason`.
        REASON: u32 = 0x4402;
        /// The exception, NMI or interrupt that exited.
        INTERRUPTION_INFO: u32 = 0x4404;
        INTERRUPTION_ERROR_CODE: u32 = 0x4406;
        /// An event whose delivery the exit interrupted.
        IDT_VECTORING_INFO: u32 = 0x4408;
        IDT_VECTORING_ERROR_CODE: u32 = 0x440A;
        INSTRUCTION_LENGTH: u32 = 0x440C;
        INSTRUCTION_INFO: u32 = 0x440E;

        /// The exit qualification (`exit` and `ept` decode it).
        QUALIFICATION: Natural = 0x6400;
        IO_RCX: Natural = 0x6402;
        IO_RSI: Natural = 0x6404;
        IO_RDI: Natural = 0x6406;
        IO_RIP: Natural = 0x6408;
        GUEST_LINEAR_ADDRESS: Natural = 0x640A;
    }
}

/// Guest-state fields (type 2; tables B-2, B-6, B-10, B-14). Segments are
/// grouped in `segment`.
pub mod guest {
    use super::*;

    fields! { Writable;
        ES_SELECTOR: u16 = 0x0800;
        CS_SELECTOR: u16 = 0x0802;
        SS_SELECTOR: u16 = 0x0804;
        DS_SELECTOR: u16 = 0x0806;
        FS_SELECTOR: u16 = 0x0808;
        GS_SELECTOR: u16 = 0x080A;
        LDTR_SELECTOR: u16 = 0x080C;
        TR_SELECTOR: u16 = 0x080E;
        INTERRUPT_STATUS: u16 = 0x0810;
        PML_INDEX: u16 = 0x0812;

        /// All ones unless VMCS shadowing is used (else VM entry fails).
        VMCS_LINK_POINTER: u64 = 0x2800;
        DEBUGCTL: u64 = 0x2802;
        PAT: u64 = 0x2804;
        EFER: u64 = 0x2806;
        PERF_GLOBAL_CTRL: u64 = 0x2808;
        /// PAE paging's PDPTEs, loaded at entry with EPT.
        PDPTE0: u64 = 0x280A;
        PDPTE1: u64 = 0x280C;
        PDPTE2: u64 = 0x280E;
        PDPTE3: u64 = 0x2810;
        BNDCFGS: u64 = 0x2812;

        ES_LIMIT: u32 = 0x4800;
        CS_LIMIT: u32 = 0x4802;
        SS_LIMIT: u32 = 0x4804;
        DS_LIMIT: u32 = 0x4806;
        FS_LIMIT: u32 = 0x4808;
        GS_LIMIT: u32 = 0x480A;
        LDTR_LIMIT: u32 = 0x480C;
        TR_LIMIT: u32 = 0x480E;
        GDTR_LIMIT: u32 = 0x4810;
        IDTR_LIMIT: u32 = 0x4812;
        ES_ACCESS_RIGHTS: u32 = 0x4814;
        CS_ACCESS_RIGHTS: u32 = 0x4816;
        SS_ACCESS_RIGHTS: u32 = 0x4818;
        DS_ACCESS_RIGHTS: u32 = 0x481A;
        FS_ACCESS_RIGHTS: u32 = 0x481C;
        GS_ACCESS_RIGHTS: u32 = 0x481E;
        LDTR_ACCESS_RIGHTS: u32 = 0x4820;
        TR_ACCESS_RIGHTS: u32 = 0x4822;
        /// Blocking by STI, MOV SS, SMI, NMI (`event::interruptibility`).
        INTERRUPTIBILITY: u32 = 0x4824;
        /// Active, HLT, shutdown, wait-for-SIPI (`event::activity`).
        ACTIVITY_STATE: u32 = 0x4826;
        SMBASE: u32 = 0x4828;
        SYSENTER_CS: u32 = 0x482A;
        PREEMPTION_TIMER_VALUE: u32 = 0x482E;

        CR0: Natural = 0x6800;
        CR3: Natural = 0x6802;
        CR4: Natural = 0x6804;
        ES_BASE: Natural = 0x6806;
        CS_BASE: Natural = 0x6808;
        SS_BASE: Natural = 0x680A;
        DS_BASE: Natural = 0x680C;
        FS_BASE: Natural = 0x680E;
        GS_BASE: Natural = 0x6810;
        LDTR_BASE: Natural = 0x6812;
        TR_BASE: Natural = 0x6814;
        GDTR_BASE: Natural = 0x6816;
        IDTR_BASE: Natural = 0x6818;
        DR7: Natural = 0x681A;
        RSP: Natural = 0x681C;
        RIP: Natural = 0x681E;
        RFLAGS: Natural = 0x6820;
        PENDING_DEBUG_EXCEPTIONS: Natural = 0x6822;
        SYSENTER_ESP: Natural = 0x6824;
        SYSENTER_EIP: Natural = 0x6826;
        S_CET: Natural = 0x6828;
        SSP: Natural = 0x682A;
        INTERRUPT_SSP_TABLE_ADDRESS: Natural = 0x682C;
    }
}

/// Host-state fields (type 3; tables B-3, B-7, B-11, B-15): what every VM
/// exit loads.
pub mod host {
    use super::*;

    fields! { Writable;
        ES_SELECTOR: u16 = 0x0C00;
        CS_SELECTOR: u16 = 0x0C02;
        SS_SELECTOR: u16 = 0x0C04;
        DS_SELECTOR: u16 = 0x0C06;
        FS_SELECTOR: u16 = 0x0C08;
        GS_SELECTOR: u16 = 0x0C0A;
        TR_SELECTOR: u16 = 0x0C0C;

        PAT: u64 = 0x2C00;
        EFER: u64 = 0x2C02;
        PERF_GLOBAL_CTRL: u64 = 0x2C04;

        SYSENTER_CS: u32 = 0x4C00;

        CR0: Natural = 0x6C00;
        CR3: Natural = 0x6C02;
        CR4: Natural = 0x6C04;
        FS_BASE: Natural = 0x6C06;
        GS_BASE: Natural = 0x6C08;
        TR_BASE: Natural = 0x6C0A;
        GDTR_BASE: Natural = 0x6C0C;
        IDTR_BASE: Natural = 0x6C0E;
        SYSENTER_ESP: Natural = 0x6C10;
        SYSENTER_EIP: Natural = 0x6C12;
        RSP: Natural = 0x6C14;
        RIP: Natural = 0x6C16;
        S_CET: Natural = 0x6C18;
        SSP: Natural = 0x6C1A;
        INTERRUPT_SSP_TABLE_ADDRESS: Natural = 0x6C1C;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: [(u32, &[(&str, u32)]); 4] = [
        (0, control::ALL),
        (1, exit_info::ALL),
        (2, guest::ALL),
        (3, host::ALL),
    ];

    #[test]
    fn each_group_holds_its_type_once_per_encoding() {
        let mut seen = std::collections::BTreeSet::new();
        for (kind, fields) in GROUPS {
            for &(name, encoding) in fields {
                assert_eq!((encoding >> 10) & 3, kind, "{name}");
                assert!(seen.insert(encoding), "{name} {encoding:#x} twice");
            }
        }
        let sizes = GROUPS.map(|(_, fields)| fields.len());
        assert_eq!(sizes, [52, 15, 66, 26]);
    }

    #[test]
    fn groups_list_fields_by_name() {
        assert!(guest::ALL.contains(&("RIP", guest::RIP.encoding())));
        assert!(host::ALL.contains(&("CR3", 0x6c02)));
        assert_eq!(exit_info::ALL[0], ("GUEST_PHYSICAL_ADDRESS", 0x2400));
        assert_eq!(control::EPTP.encoding(), 0x201a);
    }
}
