//! Model-specific register numbers and bits MicroV uses.

pub const EFER: u32 = 0xC000_0080;
pub const STAR: u32 = 0xC000_0081;
pub const LSTAR: u32 = 0xC000_0082;
pub const CSTAR: u32 = 0xC000_0083;
pub const SFMASK: u32 = 0xC000_0084;
pub const FS_BASE: u32 = 0xC000_0100;
pub const GS_BASE: u32 = 0xC000_0101;
pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const PAT: u32 = 0x0000_0277;
pub const DEBUGCTL: u32 = 0x0000_01D9;
/// AMD: SVM control (lock, SVMDIS).
pub const VM_CR: u32 = 0xC001_0114;
/// AMD: physical address of the host save area used by VMRUN.
pub const VM_HSAVE_PA: u32 = 0xC001_0117;

pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    pub const SVME: u64 = 1 << 12;
}

pub mod vm_cr {
    /// Writes to SVMDIS are locked.
    pub const LOCK: u64 = 1 << 3;
    /// SVM is disabled: setting EFER.SVME faults.
    pub const SVMDIS: u64 = 1 << 4;
}

/// Power-on value of the PAT MSR (WB, WT, UC-, UC, repeated).
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
