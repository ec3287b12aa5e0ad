//! Intel VMX: the pure definitions and decisions a hypervisor on VT-x
//! needs, host-tested like the rest of this crate. References are to the
//! Intel SDM, Vol. 3C for chapters (numbered as since 2023: 24 VMX
//! introduction, 25 the VMCS, 27 VM entries, 28 VM exits, 29 EPT, 31 the
//! VMX instructions; older editions number them one lower) and Vol. 3D
//! for appendices A (capability MSRs), B (VMCS encodings) and C (exit
//! reasons).
//!
//! - [`caps`]: VMX_BASIC, VMX_MISC, IA32_FEATURE_CONTROL and the CR0/CR4
//!   bits fixed in VMX operation.
//! - [`controls`]: the VM-execution, VM-exit and VM-entry control bits and
//!   their adjustment to what the CPU allows.

pub mod caps;
pub mod controls;
