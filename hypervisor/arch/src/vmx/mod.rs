//! Intel VMX: the pure definitions and decisions a hypervisor on VT-x
//! needs, host-tested like the rest of this crate. References are to the
//! Intel SDM, Vol. 3C for chapters (numbered as in recent editions: 24 VMX
//! introduction, 25 the VMCS, 27 VM entries, 28 VM exits, 29 EPT, 31 the
//! VMX instructions; older editions number them one lower) and Vol. 3D
//! for appendices A (capability MSRs), B (VMCS encodings) and C (exit
//! reasons).
//!
//! - [`caps`]: VMX_BASIC, VMX_MISC, IA32_FEATURE_CONTROL and the CR0/CR4
//!   bits fixed in VMX operation.
//! - [`controls`]: the VM-execution, VM-exit and VM-entry control bits and
//!   their adjustment to what the CPU allows.
//! - [`vmcs`]: typed field encodings, checked while compiling, and the
//!   [`vmcs::Vmcs`] trait VMREAD/VMWRITE (or a fake) implement;
//!   [`fields`] lists the fields, [`segment`] groups the guest segment
//!   registers and converts their access rights from the VMCB layout.
//! - [`ept`]: extended page tables (entries, the mapper format, the EPT
//!   pointer, capabilities, EPT-violation qualifications); [`invalidate`]:
//!   INVEPT and INVVPID types and descriptors.
//! - [`exit`]: exit reasons and the qualifications of CR, MOV DR and I/O
//!   exits; [`event`]: injecting events and decoding reported ones, the
//!   interruptibility and activity states.
//! - [`bitmaps`]: where an MSR's or a port's exit bit lives in the MSR
//!   and I/O bitmaps.
//! - [`region`]: the VMXON/VMCS region header.
//! - [`instruction_error`]: how VMX instructions fail, and why.

pub mod bitmaps;
pub mod caps;
pub mod controls;
pub mod ept;
pub mod event;
pub mod exit;
pub mod fields;
pub mod instruction_error;
pub mod invalidate;
pub mod region;
pub mod segment;
pub mod vmcs;

/// Bit `n` of `value`: the decoders read MSRs and qualifications bit by bit.
const fn bit(value: u64, n: u32) -> bool {
    value & 1 << n != 0
}
