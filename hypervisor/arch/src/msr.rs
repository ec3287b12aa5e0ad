//! Model-specific register numbers and bits MicroV uses, and the root VM's
//! MSR policy ([`policy`]): one table that the extension builds the MSR
//! permission map and its exit handling from, and that the microkernel
//! checks every `MsrRead`/`MsrWrite` syscall against, so the two cannot
//! drift. `docs/msr-policy.md` is the same table with a reason per row (a
//! unit test in the extension keeps the two equal).

use crate::apic;
use crate::cpuid::CpuidResult;

pub const TSC: u32 = 0x0000_0010;
pub const APIC_BASE: u32 = 0x0000_001B;
/// Intel: feature control (VMXON allowed inside/outside SMX, lock).
pub const FEATURE_CONTROL: u32 = 0x0000_003A;
pub const TSC_ADJUST: u32 = 0x0000_003B;
pub const SPEC_CTRL: u32 = 0x0000_0048;
pub const PRED_CMD: u32 = 0x0000_0049;
pub const MTRR_CAP: u32 = 0x0000_00FE;
pub const SYSENTER_CS: u32 = 0x0000_0174;
pub const SYSENTER_ESP: u32 = 0x0000_0175;
pub const SYSENTER_EIP: u32 = 0x0000_0176;
pub const DEBUGCTL: u32 = 0x0000_01D9;
/// First of the four legacy last-branch/last-exception records (from/to).
pub const LAST_BRANCH_FROM_IP: u32 = 0x0000_01DB;
/// Last of the four legacy last-branch/last-exception records.
pub const LAST_INT_TO_IP: u32 = 0x0000_01DE;
/// First variable-range MTRR; with the fixed ones they fill 0x200–0x2FF.
pub const MTRR_FIRST: u32 = 0x0000_0200;
pub const PAT: u32 = 0x0000_0277;
pub const MTRR_DEF_TYPE: u32 = 0x0000_02FF;
/// Intel: the VMX capability MSRs (SDM Vol. 3D appendix A; decoded in
/// `vmx::caps` and `vmx::controls`). VMCS revision, region size and
/// memory type, true-controls support.
pub const VMX_BASIC: u32 = 0x0000_0480;
/// Allowed settings of the pin-based, primary processor-based, VM-exit and
/// VM-entry controls (allowed-0 in bits 31:0, allowed-1 in bits 63:32),
/// default1 controls forced to 1.
pub const VMX_PINBASED_CTLS: u32 = 0x0000_0481;
pub const VMX_PROCBASED_CTLS: u32 = 0x0000_0482;
pub const VMX_EXIT_CTLS: u32 = 0x0000_0483;
pub const VMX_ENTRY_CTLS: u32 = 0x0000_0484;
/// Preemption-timer rate, activity states, CR3-target count, MSR lists.
pub const VMX_MISC: u32 = 0x0000_0485;
/// CR0 and CR4 bits fixed in VMX operation: set in FIXED0, must be 1;
/// clear in FIXED1, must be 0.
pub const VMX_CR0_FIXED0: u32 = 0x0000_0486;
pub const VMX_CR0_FIXED1: u32 = 0x0000_0487;
pub const VMX_CR4_FIXED0: u32 = 0x0000_0488;
pub const VMX_CR4_FIXED1: u32 = 0x0000_0489;
/// Highest VMCS field index.
pub const VMX_VMCS_ENUM: u32 = 0x0000_048A;
/// Allowed settings of the secondary processor-based controls.
pub const VMX_PROCBASED_CTLS2: u32 = 0x0000_048B;
/// EPT and VPID capabilities.
pub const VMX_EPT_VPID_CAP: u32 = 0x0000_048C;
/// The same as the four `*_CTLS` above, default1 controls included as
/// they really are; present where VMX_BASIC bit 55 is set.
pub const VMX_TRUE_PINBASED_CTLS: u32 = 0x0000_048D;
pub const VMX_TRUE_PROCBASED_CTLS: u32 = 0x0000_048E;
pub const VMX_TRUE_EXIT_CTLS: u32 = 0x0000_048F;
pub const VMX_TRUE_ENTRY_CTLS: u32 = 0x0000_0490;
/// VM functions allowed.
pub const VMX_VMFUNC: u32 = 0x0000_0491;
pub const TSC_DEADLINE: u32 = 0x0000_06E0;
pub const X2APIC_FIRST: u32 = 0x0000_0800;
pub const X2APIC_LAST: u32 = 0x0000_08FF;
/// The x2APIC interrupt command register.
pub const X2APIC_ICR: u32 = crate::apic::X2APIC_ICR;
pub const XSS: u32 = 0x0000_0DA0;
pub const EFER: u32 = 0xC000_0080;
pub const STAR: u32 = 0xC000_0081;
pub const LSTAR: u32 = 0xC000_0082;
pub const CSTAR: u32 = 0xC000_0083;
pub const SFMASK: u32 = 0xC000_0084;
pub const FS_BASE: u32 = 0xC000_0100;
pub const GS_BASE: u32 = 0xC000_0101;
pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const TSC_AUX: u32 = 0xC000_0103;
/// AMD: SVM guest TSC ratio.
pub const TSC_RATIO: u32 = 0xC000_0104;
/// AMD: first scalable machine-check (SMCA) bank register.
pub const SMCA_FIRST: u32 = 0xC000_2000;
/// AMD: system configuration (memory encryption, MTRR/TOM2 DRAM enables).
pub const SYSCFG: u32 = 0xC001_0010;
/// AMD: hardware configuration (SMM lock, INVD behaviour, boost, …).
pub const HWCR: u32 = 0xC001_0015;
/// AMD: first I/O range register (IORR_BASE0); IORR_MASK1 is 0xC001_0019.
pub const IORR_FIRST: u32 = 0xC001_0016;
pub const IORR_LAST: u32 = 0xC001_0019;
pub const TOP_MEM: u32 = 0xC001_001A;
pub const TOP_MEM2: u32 = 0xC001_001D;
/// AMD: northbridge configuration (bit 46: extended PCI configuration
/// registers through port 0xCF8).
pub const NB_CFG: u32 = 0xC001_001F;
/// NB_CFG's EnableCf8ExtCfg.
pub const NB_CFG_EXT_CFG: u64 = 1 << 46;
/// AMD: microcode patch loader (write the patch's linear address).
pub const PATCH_LOADER: u32 = 0xC001_0020;
/// AMD: PCI MMIO configuration-space base.
pub const MMIO_CONF_BASE: u32 = 0xC001_0058;
/// AMD: P-state definitions 0–7.
pub const PSTATE_DEF_FIRST: u32 = 0xC001_0064;
pub const PSTATE_DEF_LAST: u32 = 0xC001_006B;
/// AMD: SMM base, TSEG address and mask.
pub const SMM_BASE: u32 = 0xC001_0111;
pub const SMM_MASK: u32 = 0xC001_0113;
/// AMD: SVM control (lock, SVMDIS).
pub const VM_CR: u32 = 0xC001_0114;
/// AMD: SMM control (enter/exit SMM, SMI cycles).
pub const SMM_CTL: u32 = 0xC001_0116;
/// AMD: physical address of the host save area used by VMRUN.
pub const VM_HSAVE_PA: u32 = 0xC001_0117;
/// AMD: load-store configuration; holds the SSBD bit on families 15h–18h.
pub const LS_CFG: u32 = 0xC001_1020;
/// AMD: decode configuration (LFENCE serialising and other chicken bits).
pub const DE_CFG: u32 = 0xC001_1029;
/// AMD: instruction-based sampling (IBS) registers.
pub const IBS_FIRST: u32 = 0xC001_1030;
pub const IBS_LAST: u32 = 0xC001_103D;
/// Range reserved for hypervisor-defined MSRs (Hyper-V, Xen).
pub const HYPERVISOR_FIRST: u32 = 0x4000_0000;
pub const HYPERVISOR_LAST: u32 = 0x4000_FFFF;
/// KVM's paravirtual MSRs (kvmclock, async page faults, steal time, …).
pub const KVM_FIRST: u32 = 0x4B56_4D00;
pub const KVM_LAST: u32 = 0x4B56_4DFF;
/// KVM's first paravirtual clock MSRs, at their old numbers.
pub const KVM_OLD_FIRST: u32 = 0x0000_0011;
pub const KVM_OLD_LAST: u32 = 0x0000_0012;

pub mod efer {
    use crate::cpuid::CpuidResult;

    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    pub const SVME: u64 = 1 << 12;
    /// Long-mode segment limit enable.
    pub const LMSLE: u64 = 1 << 13;
    /// Fast FXSAVE/FXRSTOR.
    pub const FFXSR: u64 = 1 << 14;
    /// Translation cache extension.
    pub const TCE: u64 = 1 << 15;
    /// Automatic IBRS.
    pub const AUTOIBRS: u64 = 1 << 21;

    /// CPUID 0x8000_0001 EDX bit 25: FFXSR is implemented.
    pub const CPUID_EXT1_EDX_FFXSR: u32 = 1 << 25;
    /// CPUID 0x8000_0001 ECX bit 17: TCE is implemented.
    pub const CPUID_EXT1_ECX_TCE: u32 = 1 << 17;
    /// CPUID 0x8000_0008 EBX bit 20 (EferLmsleUnsupported): LMSLE must be 0.
    pub const CPUID_EXT8_EBX_LMSLE_UNSUPPORTED: u32 = 1 << 20;
    /// CPUID 0x8000_0021 EAX bit 8: Automatic IBRS is implemented.
    pub const CPUID_EXT21_EAX_AUTOIBRS: u32 = 1 << 8;

    /// The optional EFER bits (LMSLE, FFXSR, TCE, AUTOIBRS) this CPU
    /// implements, read through `cpuid(leaf, subleaf)`. VMRUN fails on a
    /// guest EFER with a bit the CPU lacks, so these are the only optional
    /// bits a guest may set. A leaf above the CPU's highest extended leaf
    /// means "not implemented", as does LMSLE without leaf 0x8000_0008:
    /// refusing a bit costs the guest a #GP, accepting a wrong one stops
    /// MicroV.
    pub fn optional_supported(cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult) -> u64 {
        let max = cpuid(0x8000_0000, 0).eax;
        let leaf = |cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult, l: u32| {
            if max >= l {
                cpuid(l, 0)
            } else {
                CpuidResult::default()
            }
        };
        let ext1 = leaf(cpuid, 0x8000_0001);
        let ext8 = leaf(cpuid, 0x8000_0008);
        let ext21 = leaf(cpuid, 0x8000_0021);
        let mut bits = 0;
        if ext1.edx & CPUID_EXT1_EDX_FFXSR != 0 {
            bits |= FFXSR;
        }
        if ext1.ecx & CPUID_EXT1_ECX_TCE != 0 {
            bits |= TCE;
        }
        if max >= 0x8000_0008 && ext8.ebx & CPUID_EXT8_EBX_LMSLE_UNSUPPORTED == 0 {
            bits |= LMSLE;
        }
        if ext21.eax & CPUID_EXT21_EAX_AUTOIBRS != 0 {
            bits |= AUTOIBRS;
        }
        bits
    }
}

/// Bits of [`FEATURE_CONTROL`] (SDM Vol. 4 table 2-2; VMXON's conditions
/// in Vol. 3C 24.7): the firmware sets them and locks the MSR until reset.
pub mod feature_control {
    /// Writes fault until reset; VMXON faults while this is clear.
    pub const LOCK: u64 = 1 << 0;
    /// VMXON allowed inside SMX operation (Intel TXT).
    pub const VMX_INSIDE_SMX: u64 = 1 << 1;
    /// VMXON allowed outside SMX operation: where MicroV runs.
    pub const VMX_OUTSIDE_SMX: u64 = 1 << 2;
}

pub mod vm_cr {
    /// Writes to SVMDIS are locked.
    pub const LOCK: u64 = 1 << 3;
    /// SVM is disabled: setting EFER.SVME faults.
    pub const SVMDIS: u64 = 1 << 4;
}

pub mod hwcr {
    /// Core performance boost disabled (Linux's cpufreq `boost` switch).
    pub const CPB_DIS: u64 = 1 << 25;
    /// Instructions-retired counter (IRPERF) enabled.
    pub const IRPERF_EN: u64 = 1 << 30;
}

pub mod debugctl {
    /// The bits AMD defines: LBR (0), BTF (1), PB0–PB3 (2–5). The rest are
    /// reserved and fault when set.
    pub const DEFINED: u64 = 0x3f;
}

/// Power-on value of the PAT MSR (WB, WT, UC-, UC, repeated).
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// True if every byte of `pat` is a memory type WRMSR accepts (UC, WC, WT,
/// WP, WB, UC-); anything else raises #GP.
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// The bit of LS_CFG that disables speculative store bypass on this CPU
/// family (AMD's SSBD white paper; the bit Linux toggles per task on CPUs
/// without SSBD in SPEC_CTRL), or 0 where LS_CFG has none.
pub fn ls_cfg_ssbd_bit(cpuid_leaf1: CpuidResult) -> u64 {
    let base = (cpuid_leaf1.eax >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((cpuid_leaf1.eax >> 20) & 0xff)
    } else {
        base
    };
    match family {
        0x15 => 1 << 54,
        0x16 => 1 << 33,
        0x17 | 0x18 => 1 << 10,
        _ => 0,
    }
}

/// The root VM's MSR policy.
pub mod policy {
    use core::cmp::Ordering;

    use super::*;

    /// What one direction (read or write) of an MSR access gets.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Action {
        /// No exit: the access runs on the real CPU in guest mode.
        Pass,
        /// Exits; MicroV answers from the root vCPU's own state and never
        /// touches the real MSR.
        Emulate,
        /// Exits; the extension checks the access and has the microkernel
        /// do it on the real CPU (`MsrRead`/`MsrWrite`).
        Checked,
        /// Exits; #GP, as on a CPU without the MSR.
        Refuse,
    }

    /// One range of MSRs and what reads and writes of them get.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Rule {
        pub first: u32,
        pub last: u32,
        pub read: Action,
        pub write: Action,
    }

    const fn r(first: u32, last: u32, read: Action, write: Action) -> Rule {
        Rule {
            first,
            last,
            read,
            write,
        }
    }

    use Action::{Checked, Emulate, Pass, Refuse};

    /// Every MSR range with a policy of its own, sorted, not overlapping.
    /// `docs/msr-policy.md` gives each row's reason. MSRs not listed get
    /// [`default_rule`].
    pub const RULES: [Rule; 68] = [
        r(TSC, TSC, Pass, Refuse),
        r(KVM_OLD_FIRST, KVM_OLD_LAST, Refuse, Refuse),
        r(APIC_BASE, APIC_BASE, Checked, Emulate),
        r(FEATURE_CONTROL, FEATURE_CONTROL, Checked, Refuse),
        r(TSC_ADJUST, TSC_ADJUST, Pass, Refuse),
        r(SPEC_CTRL, SPEC_CTRL, Pass, Pass),
        r(PRED_CMD, PRED_CMD, Pass, Pass),
        r(0x0000_008B, 0x0000_008B, Pass, Refuse), // PATCH_LEVEL
        r(0x0000_00E7, 0x0000_00E8, Pass, Refuse), // MPERF, APERF
        r(MTRR_CAP, MTRR_CAP, Pass, Refuse),
        r(0x0000_010B, 0x0000_010B, Pass, Pass), // FLUSH_CMD
        r(SYSENTER_CS, SYSENTER_EIP, Pass, Pass),
        r(0x0000_0179, 0x0000_017B, Pass, Checked), // MCG_CAP, MCG_STATUS, MCG_CTL
        r(DEBUGCTL, DEBUGCTL, Emulate, Emulate),
        r(LAST_BRANCH_FROM_IP, LAST_INT_TO_IP, Emulate, Refuse),
        r(MTRR_FIRST, PAT - 1, Checked, Emulate),
        r(PAT, PAT, Emulate, Emulate),
        r(PAT + 1, MTRR_DEF_TYPE, Checked, Emulate),
        r(0x0000_0400, 0x0000_047F, Pass, Checked), // MCi_CTL/STATUS/ADDR/MISC
        r(TSC_DEADLINE, TSC_DEADLINE, Pass, Pass),
        r(X2APIC_FIRST, apic::X2APIC_LVT_CMCI - 1, Pass, Pass),
        // IPIs and LVT entries exit: the root may not INIT a CPU in MicroV,
        // nor have an interrupt pin do it.
        r(apic::X2APIC_LVT_CMCI, X2APIC_ICR, Pass, Emulate),
        r(X2APIC_ICR + 1, X2APIC_ICR + 1, Pass, Pass),
        r(apic::X2APIC_LVT_TIMER, apic::X2APIC_LVT_ERROR, Pass, Emulate),
        r(apic::X2APIC_LVT_ERROR + 1, X2APIC_LAST, Pass, Pass),
        r(0x0000_0C81, 0x0000_0C81, Pass, Checked), // L3_QOS_CFG
        r(0x0000_0C8D, 0x0000_0C8F, Pass, Pass),    // QM_EVTSEL, QM_CTR, PQR_ASSOC
        r(0x0000_0C90, 0x0000_0C9F, Pass, Checked), // L3 cache allocation masks
        r(XSS, XSS, Pass, Refuse),
        r(HYPERVISOR_FIRST, HYPERVISOR_LAST, Refuse, Refuse),
        r(KVM_FIRST, KVM_LAST, Refuse, Refuse),
        r(EFER, EFER, Emulate, Emulate),
        r(STAR, SFMASK, Pass, Pass),
        r(0xC000_00E7, 0xC000_00E9, Pass, Refuse), // MPERF_RO, APERF_RO, IRPERF
        r(FS_BASE, TSC_AUX, Pass, Pass),
        r(TSC_RATIO, TSC_RATIO, Refuse, Refuse),
        r(0xC000_0200, 0xC000_020F, Pass, Checked), // memory bandwidth allocation
        r(0xC000_0280, 0xC000_028F, Pass, Checked), // slow-memory bandwidth allocation
        r(0xC000_0300, 0xC000_0303, Pass, Pass),    // PerfMonV2 global control/status
        r(SMCA_FIRST, 0xC000_2FFF, Checked, Checked),
        r(0xC001_0000, 0xC001_0007, Pass, Pass), // PERF_CTL0–3, PERF_CTR0–3
        r(SYSCFG, SYSCFG, Pass, Refuse),
        r(HWCR, HWCR, Checked, Emulate),
        r(IORR_FIRST, IORR_LAST, Pass, Refuse),
        r(TOP_MEM, TOP_MEM, Pass, Refuse),
        r(TOP_MEM2, TOP_MEM2, Pass, Refuse),
        r(NB_CFG, NB_CFG, Checked, Checked),
        r(PATCH_LOADER, PATCH_LOADER, Refuse, Emulate),
        r(MMIO_CONF_BASE, MMIO_CONF_BASE, Pass, Refuse),
        r(0xC001_0061, 0xC001_0061, Pass, Refuse), // P-state current limit
        r(0xC001_0062, 0xC001_0062, Pass, Pass),   // P-state control
        r(0xC001_0063, PSTATE_DEF_LAST, Pass, Refuse), // P-state status, definitions
        r(SMM_BASE, SMM_MASK, Pass, Refuse),
        r(VM_CR, VM_CR, Emulate, Refuse),
        r(SMM_CTL, SMM_CTL, Refuse, Refuse),
        r(VM_HSAVE_PA, VM_HSAVE_PA, Emulate, Refuse),
        r(0xC001_011F, 0xC001_011F, Pass, Pass), // VIRT_SPEC_CTRL
        r(0xC001_0200, 0xC001_020B, Pass, Pass), // PERF_CTL0–5, PERF_CTR0–5
        r(0xC001_0230, 0xC001_023B, Pass, Checked), // L3 performance counters
        r(0xC001_0240, 0xC001_025F, Pass, Checked), // data-fabric performance counters
        r(0xC001_02B0, 0xC001_02B2, Pass, Checked), // CPPC_CAP1, CPPC_ENABLE, CPPC_CAP2
        r(0xC001_02B3, 0xC001_02B3, Pass, Pass), // CPPC_REQ
        r(0xC001_02B4, 0xC001_02B4, Pass, Checked), // CPPC_STATUS
        r(0xC001_1019, 0xC001_101B, Pass, Checked), // DR1–DR3 address masks
        r(LS_CFG, LS_CFG, Pass, Checked),
        r(0xC001_1027, 0xC001_1027, Pass, Checked), // DR0 address mask
        r(DE_CFG, DE_CFG, Pass, Refuse),
        r(IBS_FIRST, IBS_LAST, Refuse, Refuse),
    ];

    /// The rule for MSRs [`RULES`] does not list, wherever they lie: every
    /// access exits and raises #GP. Inside the permission map's ranges the
    /// map's intercept bits make it exit; outside them (the map cannot
    /// cover those) every access exits anyway. MSRs there that Linux uses
    /// have rows of their own (AMD's SMCA banks are `Checked`).
    pub const fn default_rule(index: u32) -> Rule {
        r(index, index, Refuse, Refuse)
    }

    /// The rule that applies to MSR `index`.
    pub fn rule(index: u32) -> Rule {
        let found = RULES.binary_search_by(|r| {
            if r.last < index {
                Ordering::Less
            } else if r.first > index {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        found
            .ok()
            .and_then(|i| RULES.get(i).copied())
            .unwrap_or(default_rule(index))
    }

    /// MSRs the microkernel programs for itself or whose real value the
    /// root must never learn: never read or written for ring 3, whatever
    /// the table says. (Those switched by VMLOAD/VMSAVE/VMRUN may still be
    /// `Pass`: the root then uses its own copy, not the host's.)
    pub const HOST_OWNED: [(u32, u32); 9] = [
        (SYSENTER_CS, SYSENTER_EIP),
        (DEBUGCTL, DEBUGCTL),
        (LAST_BRANCH_FROM_IP, LAST_INT_TO_IP),
        (PAT, PAT),
        (XSS, XSS),
        (EFER, SFMASK),
        (FS_BASE, KERNEL_GS_BASE),
        (VM_CR, VM_CR),
        (VM_HSAVE_PA, VM_HSAVE_PA),
    ];

    /// MSRs whose real value must never be changed on the root's behalf:
    /// they steer the hypervisor's own memory accesses, caches, clock,
    /// debugging or code (MTRRs, TOM, IORRs, SYSCFG, HWCR, the APIC window,
    /// SMM, microcode, …). Every write to them exits (never `Pass`) and is
    /// emulated or refused, never `Checked`.
    pub const NEVER_WRITTEN: [(u32, u32); 22] = [
        (TSC, TSC),
        (KVM_OLD_FIRST, KVM_OLD_LAST),
        (APIC_BASE, APIC_BASE),
        (TSC_ADJUST, TSC_ADJUST),
        (MTRR_CAP, MTRR_CAP),
        (DEBUGCTL, DEBUGCTL),
        (LAST_BRANCH_FROM_IP, LAST_INT_TO_IP),
        (MTRR_FIRST, MTRR_DEF_TYPE),
        (XSS, XSS),
        (HYPERVISOR_FIRST, HYPERVISOR_LAST),
        (KVM_FIRST, KVM_LAST),
        (EFER, EFER),
        (TSC_RATIO, TSC_RATIO),
        (SYSCFG, SYSCFG),
        (HWCR, TOP_MEM),
        // Not NB_CFG between them: its one bit Linux sets is checked.
        (TOP_MEM2, NB_CFG - 1),
        (PATCH_LOADER, PATCH_LOADER),
        (MMIO_CONF_BASE, MMIO_CONF_BASE),
        (PSTATE_DEF_FIRST, PSTATE_DEF_LAST),
        (SMM_BASE, VM_HSAVE_PA),
        (DE_CFG, DE_CFG),
        (IBS_FIRST, IBS_LAST),
    ];

    fn listed(ranges: &[(u32, u32)], index: u32) -> bool {
        ranges.iter().any(|&(a, b)| a <= index && index <= b)
    }

    /// True if ring 3 may have the microkernel read (`write` false) or
    /// write MSR `index` on the real CPU: only what the policy marks
    /// `Checked` (reads also where writes are checked, so the extension
    /// can compare a write with the current value), never a host-owned
    /// MSR, never a write of a dangerous one.
    pub fn real_access_allowed(index: u32, write: bool) -> bool {
        if listed(&HOST_OWNED, index) || (write && listed(&NEVER_WRITTEN, index)) {
            return false;
        }
        let rule = rule(index);
        if write {
            rule.write == Checked
        } else {
            rule.read == Checked || rule.write == Checked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::policy::{self, default_rule, real_access_allowed, rule, Action, RULES};
    use super::*;
    use crate::svm::msr_always_exits;

    fn in_ranges(ranges: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
        ranges.iter().flat_map(|&(a, b)| a..=b)
    }

    #[test]
    fn rules_are_sorted_disjoint_and_on_one_side_of_the_map() {
        for pair in RULES.windows(2) {
            assert!(pair[0].last < pair[1].first, "{:x?}", pair);
        }
        for r in RULES {
            assert!(r.first <= r.last, "{r:x?}");
            assert_eq!(
                msr_always_exits(r.first),
                msr_always_exits(r.last),
                "{r:x?} straddles the permission map's ranges"
            );
            if msr_always_exits(r.first) {
                // The map cannot let these through.
                assert!(r.read != Action::Pass && r.write != Action::Pass, "{r:x?}");
            }
        }
    }

    #[test]
    fn lookups_find_rows_and_defaults() {
        assert_eq!(rule(PAT).read, Action::Emulate);
        assert_eq!(rule(MTRR_FIRST + 0x50).write, Action::Emulate);
        assert_eq!(rule(X2APIC_FIRST + 0x30).write, Action::Emulate);
        assert_eq!(rule(X2APIC_FIRST + 0x2e).write, Action::Pass);
        assert_eq!(rule(X2APIC_FIRST + 0x2f).write, Action::Emulate);
        assert_eq!(rule(X2APIC_FIRST + 0x35).write, Action::Emulate);
        assert_eq!(rule(X2APIC_FIRST + 0x38).write, Action::Pass);
        assert_eq!(rule(X2APIC_FIRST + 0x31).write, Action::Pass);
        assert_eq!(rule(0xC000_2001).read, Action::Checked);
        // Unlisted MSRs are refused inside the permission map's ranges and
        // outside them alike.
        for index in [
            0,
            0x1234,
            0xC000_0085,
            0xC001_1FFF,
            0x2000,
            0xC000_3000,
            0xC001_2000,
            0x8000_0000,
            u32::MAX,
        ] {
            assert_eq!(rule(index), default_rule(index));
            assert_eq!(
                (rule(index).read, rule(index).write),
                (Action::Refuse, Action::Refuse),
                "{index:#x}"
            );
        }
        // Outside the map, only listed rows are anything but refused: the
        // SMCA banks (checked), whose first bank the e2e test compares
        // with the native value.
        assert_eq!(
            (rule(SMCA_FIRST).read, rule(SMCA_FIRST).write),
            (Action::Checked, Action::Checked)
        );
        assert_eq!(rule(0xC000_2FFF).read, Action::Checked);
    }

    #[test]
    fn dangerous_msrs_are_never_written_on_the_real_cpu() {
        for index in in_ranges(&policy::NEVER_WRITTEN) {
            let w = rule(index).write;
            assert!(
                w == Action::Emulate || w == Action::Refuse,
                "{index:#x}: writes must exit and never reach the CPU"
            );
            assert!(!real_access_allowed(index, true), "{index:#x}");
        }
        for index in [
            APIC_BASE,
            MTRR_CAP,
            0x250,
            MTRR_DEF_TYPE,
            SYSCFG,
            HWCR,
            IORR_FIRST,
            IORR_LAST,
            TOP_MEM,
            TOP_MEM2,
            SMM_BASE + 1,
            SMM_MASK,
            SMM_CTL,
            PATCH_LOADER,
            DEBUGCTL,
            XSS,
            TSC,
            TSC_ADJUST,
            VM_CR,
            VM_HSAVE_PA,
            EFER,
        ] {
            assert!(
                in_ranges(&policy::NEVER_WRITTEN).any(|i| i == index),
                "{index:#x}"
            );
        }
    }

    #[test]
    fn host_owned_msrs_never_reach_ring_3() {
        for index in in_ranges(&policy::HOST_OWNED) {
            let r = rule(index);
            assert!(
                r.read != Action::Checked && r.write != Action::Checked,
                "{index:#x}"
            );
            assert!(!real_access_allowed(index, false), "{index:#x}");
            assert!(!real_access_allowed(index, true), "{index:#x}");
        }
        for index in [
            EFER,
            STAR,
            LSTAR,
            CSTAR,
            SFMASK,
            FS_BASE,
            GS_BASE,
            KERNEL_GS_BASE,
            SYSENTER_CS,
            SYSENTER_EIP,
            VM_CR,
            VM_HSAVE_PA,
            PAT,
            XSS,
        ] {
            assert!(
                in_ranges(&policy::HOST_OWNED).any(|i| i == index),
                "{index:#x}"
            );
        }
    }

    #[test]
    fn checked_writes_are_readable_for_the_check() {
        // The guard lets ring 3 read where writes are checked; that is only
        // sound if such reads are harmless (passed or checked themselves).
        for r in RULES.iter().filter(|r| r.write == Action::Checked) {
            assert!(matches!(r.read, Action::Pass | Action::Checked), "{r:x?}");
        }
    }

    #[test]
    fn ring_3_reaches_only_checked_msrs() {
        let allowed = |i, w| real_access_allowed(i, w);
        assert!(
            allowed(0xC000_2001, false) && allowed(0xC000_2001, true),
            "SMCA"
        );
        for index in [0x2000, 0xC000_3000, 0xC001_2000, u32::MAX] {
            assert!(
                !allowed(index, false) && !allowed(index, true),
                "{index:#x}: outside the map, unlisted"
            );
        }
        assert!(allowed(0x401, true) && allowed(0x401, false), "MC0_STATUS");
        assert!(allowed(LS_CFG, false) && allowed(LS_CFG, true));
        assert!(allowed(HWCR, false) && !allowed(HWCR, true));
        assert!(allowed(APIC_BASE, false) && !allowed(APIC_BASE, true));
        for (index, what) in [
            (SPEC_CTRL, "passes: no exit, no syscall"),
            (TSC_AUX, "passes"),
            (0x1234, "unlisted in the map"),
            (HYPERVISOR_FIRST, "an outer hypervisor's MSRs"),
            (KVM_FIRST + 1, "kvmclock"),
            (MTRR_FIRST, "MTRR"),
            (PATCH_LOADER, "microcode"),
            (TSC, "the hypervisor's clock"),
        ] {
            assert!(!allowed(index, true), "{index:#x}: {what}");
        }
        assert!(!allowed(PATCH_LOADER, false) && !allowed(TSC, false));
    }

    fn cpu(
        max_ext: u32,
        ext1: (u32, u32),
        ext8_ebx: u32,
        ext21_eax: u32,
    ) -> impl FnMut(u32, u32) -> CpuidResult {
        move |leaf, _| match leaf {
            0x8000_0000 => CpuidResult {
                eax: max_ext,
                ..Default::default()
            },
            0x8000_0001 => CpuidResult {
                ecx: ext1.0,
                edx: ext1.1,
                ..Default::default()
            },
            0x8000_0008 => CpuidResult {
                ebx: ext8_ebx,
                ..Default::default()
            },
            0x8000_0021 => CpuidResult {
                eax: ext21_eax,
                ..Default::default()
            },
            _ => CpuidResult {
                eax: u32::MAX,
                ebx: u32::MAX,
                ecx: u32::MAX,
                edx: u32::MAX,
            },
        }
    }

    #[test]
    fn optional_efer_bits_follow_cpuid() {
        use efer::*;
        let all = |max| cpu(max, (u32::MAX, u32::MAX), 0, u32::MAX);
        assert_eq!(
            optional_supported(&mut all(0x8000_0021)),
            LMSLE | FFXSR | TCE | AUTOIBRS
        );
        assert_eq!(
            optional_supported(&mut all(0x8000_0008)),
            LMSLE | FFXSR | TCE
        );
        assert_eq!(
            optional_supported(&mut all(0x8000_0001)),
            FFXSR | TCE,
            "no leaf 8: no LMSLE"
        );
        assert_eq!(optional_supported(&mut all(0x8000_0000)), 0);
        let mut zen = cpu(
            0x8000_0021,
            (CPUID_EXT1_ECX_TCE, 0),
            CPUID_EXT8_EBX_LMSLE_UNSUPPORTED,
            0,
        );
        assert_eq!(optional_supported(&mut zen), TCE);
        let mut old = cpu(0x8000_0008, (0, CPUID_EXT1_EDX_FFXSR), 0, 0);
        assert_eq!(optional_supported(&mut old), FFXSR | LMSLE);
        let mut zen4 = cpu(
            0x8000_0021,
            (0, 0),
            CPUID_EXT8_EBX_LMSLE_UNSUPPORTED,
            CPUID_EXT21_EAX_AUTOIBRS,
        );
        assert_eq!(optional_supported(&mut zen4), AUTOIBRS);
    }

    #[test]
    fn pat_and_ssbd_helpers() {
        assert!(pat_valid(PAT_DEFAULT));
        assert!(pat_valid(0x0407_0506_0007_0406));
        assert!(!pat_valid(0x02));
        assert!(!pat_valid(0x0300));
        assert!(!pat_valid(0x0800_0000_0000_0000));
        let family = |base: u32, ext: u32| CpuidResult {
            eax: (ext << 20) | (base << 8),
            ..Default::default()
        };
        assert_eq!(ls_cfg_ssbd_bit(family(0xf, 6)), 1 << 54);
        assert_eq!(ls_cfg_ssbd_bit(family(0xf, 7)), 1 << 33);
        assert_eq!(ls_cfg_ssbd_bit(family(0xf, 8)), 1 << 10);
        assert_eq!(ls_cfg_ssbd_bit(family(0xf, 9)), 1 << 10);
        assert_eq!(
            ls_cfg_ssbd_bit(family(0xf, 0xa)),
            0,
            "Zen 3+: SSBD in SPEC_CTRL"
        );
        assert_eq!(
            ls_cfg_ssbd_bit(family(6, 0xff)),
            0,
            "extended family only counts for 0xf"
        );
    }
}
