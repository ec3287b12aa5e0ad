//! What the CPU says about VMX before any VMCS exists: IA32_VMX_BASIC
//! (SDM Vol. 3D A.1), IA32_VMX_MISC (A.6), the CR0/CR4 bits fixed in VMX
//! operation (A.7, A.8) and whether IA32_FEATURE_CONTROL lets VMXON run
//! (Vol. 3C 24.7).

use super::bit;
use crate::msr::feature_control::{LOCK, VMX_OUTSIDE_SMX};

/// The write-back memory type (SDM Vol. 3A 12.3), the only one MicroV
/// accepts for VMX structures and EPT walks.
pub const MEMORY_TYPE_WB: u8 = 6;

/// CR4.VMXE: VMXON needs it set, and VMX_CR4_FIXED0 reports it as fixed
/// to 1 while in VMX operation.
pub const CR4_VMXE: u64 = 1 << 13;
const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;

/// IA32_VMX_BASIC, decoded (SDM Vol. 3D A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic {
    /// Bits 30:0: written to the first four bytes of every VMXON and VMCS
    /// region.
    pub revision_id: u32,
    /// Bits 44:32: bytes to allocate for the VMXON region and each VMCS.
    pub region_size: u32,
    /// Bit 48: the VMX structures must lie below 4 GiB.
    pub addresses_32bit: bool,
    /// Bits 53:50: the memory type the CPU uses to reach VMX structures.
    pub memory_type: u8,
    /// Bit 54: VM exits for INS/OUTS report the VM-exit instruction
    /// information (segment, address size).
    pub ins_outs_info: bool,
    /// Bit 55: the IA32_VMX_TRUE_*_CTLS MSRs exist and say which default1
    /// controls may be 0.
    pub true_controls: bool,
    /// Bit 56: VM entry may inject a hardware exception with or without an
    /// error code, whatever its vector.
    pub any_error_code: bool,
}

/// Why MicroV cannot use a CPU's VMX as IA32_VMX_BASIC describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasicError {
    /// The region size is 0 or above 4096 (the architecture promises
    /// 1–4096; MicroV gives each region one page).
    RegionSize(u32),
    /// VMX structures must be reached with another type than write-back:
    /// MicroV maps its pool write-back only.
    MemoryType(u8),
    /// VMX structures must lie below 4 GiB, and MicroV's pool need not.
    Addresses32Bit,
}

impl VmxBasic {
    pub const fn decode(msr: u64) -> VmxBasic {
        VmxBasic {
            revision_id: (msr & 0x7fff_ffff) as u32,
            region_size: ((msr >> 32) & 0x1fff) as u32,
            addresses_32bit: bit(msr, 48),
            memory_type: ((msr >> 50) & 0xf) as u8,
            ins_outs_info: bit(msr, 54),
            true_controls: bit(msr, 55),
            any_error_code: bit(msr, 56),
        }
    }

    /// Checks that MicroV can place its VMX structures: one write-back page
    /// each, anywhere in physical memory.
    pub fn check(&self) -> Result<(), BasicError> {
        if self.region_size == 0 || self.region_size > 4096 {
            Err(BasicError::RegionSize(self.region_size))
        } else if self.memory_type != MEMORY_TYPE_WB {
            Err(BasicError::MemoryType(self.memory_type))
        } else if self.addresses_32bit {
            Err(BasicError::Addresses32Bit)
        } else {
            Ok(())
        }
    }
}

/// IA32_VMX_MISC, decoded (SDM Vol. 3D A.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxMisc {
    /// Bits 4:0: the VMX-preemption timer counts down by one each time
    /// bit `preemption_timer_rate` of the TSC changes.
    pub preemption_timer_rate: u8,
    /// Bit 5: VM exits store EFER.LMA in the "IA-32e mode guest" entry
    /// control (always so with unrestricted guest).
    pub exit_stores_lma: bool,
    /// Bit 6: activity state HLT can be entered.
    pub activity_hlt: bool,
    /// Bit 7: activity state shutdown can be entered.
    pub activity_shutdown: bool,
    /// Bit 8: activity state wait-for-SIPI can be entered.
    pub activity_wait_for_sipi: bool,
    /// Bits 24:16: how many CR3-target values the VMCS holds.
    pub cr3_targets: u16,
    /// Bits 27:25 as a count: the most entries an MSR-load or MSR-store
    /// list should have (512 × (N + 1)).
    pub max_msr_list: u32,
    /// Bit 29: VMWRITE may write the VM-exit information fields.
    pub vmwrite_exit_info: bool,
    /// Bit 30: VM entry may inject a software interrupt, software
    /// exception or privileged software exception with instruction length 0.
    pub zero_length_injection: bool,
}

impl VmxMisc {
    pub const fn decode(msr: u64) -> VmxMisc {
        VmxMisc {
            preemption_timer_rate: (msr & 0x1f) as u8,
            exit_stores_lma: bit(msr, 5),
            activity_hlt: bit(msr, 6),
            activity_shutdown: bit(msr, 7),
            activity_wait_for_sipi: bit(msr, 8),
            cr3_targets: ((msr >> 16) & 0x1ff) as u16,
            max_msr_list: 512 * (((msr >> 25) & 7) as u32 + 1),
            vmwrite_exit_info: bit(msr, 29),
            zero_length_injection: bit(msr, 30),
        }
    }

    /// The VMX-preemption timer value that expires after `tsc_ticks` TSC
    /// ticks (rounded down: never later than asked), saturated at the
    /// field's 32 bits (SDM Vol. 3C 26.5.1).
    pub const fn preemption_timer_value(&self, tsc_ticks: u64) -> u32 {
        let ticks = tsc_ticks >> self.preemption_timer_rate;
        if ticks > u32::MAX as u64 {
            u32::MAX
        } else {
            ticks as u32
        }
    }
}

/// What IA32_FEATURE_CONTROL allows (SDM Vol. 3C 24.7): VMXON outside SMX
/// needs the lock bit and the outside-SMX enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMX outside SMX enabled: VMXON may run.
    Usable,
    /// Locked with VMX outside SMX disabled (the firmware's "VT-x off"):
    /// VMXON faults until the next reset.
    LockedOff,
    /// Not locked (the firmware left it to the OS): writing this value
    /// enables VMX outside SMX and locks the MSR until reset.
    EnableAndLock(u64),
}

/// Reads IA32_FEATURE_CONTROL's value `msr`.
pub const fn feature_control(msr: u64) -> FeatureControl {
    if msr & LOCK == 0 {
        FeatureControl::EnableAndLock(msr | LOCK | VMX_OUTSIDE_SMX)
    } else if msr & VMX_OUTSIDE_SMX == 0 {
        FeatureControl::LockedOff
    } else {
        FeatureControl::Usable
    }
}

/// The bits of CR0 or CR4 fixed in VMX operation (SDM Vol. 3D A.7, A.8):
/// VMXON and VM entry fail on a value outside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBits {
    /// IA32_VMX_CR*_FIXED0: bits that must be 1.
    pub must_be_one: u64,
    /// IA32_VMX_CR*_FIXED1: bits that may be 1 (the rest must be 0).
    pub may_be_one: u64,
}

/// The bits of a control-register value that break [`FixedBits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedBitsError {
    /// Clear, but must be 1.
    pub must_set: u64,
    /// Set, but must be 0.
    pub must_clear: u64,
}

impl FixedBits {
    /// From the FIXED0 and FIXED1 MSRs of one register.
    pub const fn new(fixed0: u64, fixed1: u64) -> FixedBits {
        FixedBits {
            must_be_one: fixed0,
            may_be_one: fixed1,
        }
    }

    /// `value` with the fixed bits forced: what host CR0/CR4 become.
    pub const fn adjust(&self, value: u64) -> u64 {
        (value | self.must_be_one) & self.may_be_one
    }

    /// Whether `value` keeps the fixed bits, and which it breaks: for a
    /// guest's value, where changing it would change the guest.
    pub const fn check(&self, value: u64) -> Result<(), FixedBitsError> {
        let must_set = self.must_be_one & !value;
        let must_clear = value & !self.may_be_one;
        if must_set == 0 && must_clear == 0 {
            Ok(())
        } else {
            Err(FixedBitsError {
                must_set,
                must_clear,
            })
        }
    }

    /// A guest's CR0 bits with "unrestricted guest" on: PE and PG may then
    /// be 0 in the guest (SDM Vol. 3C 27.3.1.1), so real mode runs.
    pub const fn unrestricted_cr0(&self) -> FixedBits {
        FixedBits {
            must_be_one: self.must_be_one & !(CR0_PE | CR0_PG),
            may_be_one: self.may_be_one,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VMX_BASIC of a recent core: revision 4, 4 KiB regions, write-back,
    /// INS/OUTS information, true controls, any error code.
    const BASIC: u64 = 0x01da_1000_0000_0004;

    #[test]
    fn basic_decodes_and_checks() {
        let b = VmxBasic::decode(BASIC);
        assert_eq!(
            b,
            VmxBasic {
                revision_id: 4,
                region_size: 4096,
                addresses_32bit: false,
                memory_type: MEMORY_TYPE_WB,
                ins_outs_info: true,
                true_controls: true,
                any_error_code: true,
            }
        );
        assert_eq!(b.check(), Ok(()));
        // Bit 31 is not part of the revision.
        assert_eq!(VmxBasic::decode(0x8000_0012).revision_id, 0x12);
        assert!(!VmxBasic::decode(0).true_controls);
    }

    #[test]
    fn basic_refuses_what_microv_cannot_place() {
        let with = |f: fn(&mut VmxBasic)| {
            let mut b = VmxBasic::decode(BASIC);
            f(&mut b);
            b.check()
        };
        assert_eq!(with(|b| b.region_size = 0), Err(BasicError::RegionSize(0)));
        assert_eq!(
            with(|b| b.region_size = 8192),
            Err(BasicError::RegionSize(8192))
        );
        assert_eq!(with(|b| b.region_size = 1024), Ok(()));
        assert_eq!(with(|b| b.memory_type = 0), Err(BasicError::MemoryType(0)));
        assert_eq!(
            VmxBasic::decode(BASIC | 1 << 48).check(),
            Err(BasicError::Addresses32Bit)
        );
    }

    #[test]
    fn misc_decodes_and_scales_the_preemption_timer() {
        // Rate 5, LMA stored, HLT/shutdown/wait-for-SIPI, 4 CR3 targets,
        // MSR lists of 512, VMWRITE to exit information, zero-length
        // injection.
        let m = VmxMisc::decode(0x6000_0000 | 4 << 16 | 0x1e5);
        assert_eq!(
            m,
            VmxMisc {
                preemption_timer_rate: 5,
                exit_stores_lma: true,
                activity_hlt: true,
                activity_shutdown: true,
                activity_wait_for_sipi: true,
                cr3_targets: 4,
                max_msr_list: 512,
                vmwrite_exit_info: true,
                zero_length_injection: true,
            }
        );
        assert_eq!(VmxMisc::decode(7 << 25).max_msr_list, 4096);
        assert_eq!(m.preemption_timer_value(1000), 31, "rounded down");
        assert_eq!(m.preemption_timer_value(0), 0);
        assert_eq!(m.preemption_timer_value(u64::MAX), u32::MAX);
        assert_eq!(VmxMisc::decode(0).preemption_timer_value(1000), 1000);
    }

    #[test]
    fn feature_control_decides_whether_vmxon_may_run() {
        assert_eq!(
            feature_control(LOCK | VMX_OUTSIDE_SMX),
            FeatureControl::Usable
        );
        assert_eq!(feature_control(LOCK), FeatureControl::LockedOff);
        assert_eq!(
            feature_control(crate::msr::feature_control::VMX_INSIDE_SMX | LOCK),
            FeatureControl::LockedOff,
            "inside SMX only"
        );
        // Unlocked: other bits (SGX, LMCE, …) are kept.
        assert_eq!(
            feature_control(1 << 20),
            FeatureControl::EnableAndLock(1 << 20 | LOCK | VMX_OUTSIDE_SMX)
        );
    }

    #[test]
    fn fixed_bits_adjust_and_check() {
        // CR0 as most CPUs report it: PE, NE, PG fixed to 1; all may be 1.
        let cr0 = FixedBits::new(0x8000_0021, 0xffff_ffff);
        assert_eq!(cr0.adjust(0x11), 0x8000_0031);
        assert_eq!(
            cr0.adjust(1 << 40),
            0x8000_0021,
            "bits above FIXED1 dropped"
        );
        assert_eq!(cr0.check(0x8005_0033), Ok(()));
        assert_eq!(
            cr0.check(0x11 | 1 << 40),
            Err(FixedBitsError {
                must_set: 0x8000_0020,
                must_clear: 1 << 40,
            })
        );
        let guest = cr0.unrestricted_cr0();
        assert_eq!(guest.check(0x30), Ok(()), "real mode, NE set");
        assert_eq!(
            guest.check(0x10).map_err(|e| e.must_set),
            Err(0x20),
            "NE stays fixed"
        );
        let cr4 = FixedBits::new(CR4_VMXE, 0x3727ff);
        assert_eq!(cr4.adjust(0x20), 0x2020);
        assert_eq!(cr4.check(0x2020), Ok(()));
    }
}
