//! Per-CPU data, reached through GS in ring 0.

use core::mem::offset_of;

use microv_arch::descriptor::{selector, Tss};

/// One page per CPU. The first fields are read by the assembly at fixed
/// offsets (checked below).
#[repr(C, align(4096))]
pub struct PerCpu {
    pub self_va: u64,
    pub kernel_rsp: u64,
    pub user_rsp: u64,
    pub ext_entry: u64,
    pub ext_stack_top: u64,
    pub index: u64,
    pub landing: u64,
    pub root_vs: u64,
    /// The root vCPU state's pages, copied at bring-up so the exit path
    /// needs no look-up under the global vCPU-state lock.
    pub root: super::vs::Vs,
    pub host_vmcb_pa: u64,
    /// The trampoline's promotion routine, copied at bring-up: the landing
    /// page is Linux's memory, so it is not read again when leaving.
    pub promote_entry: u64,
    /// Set once the root vCPU has run: a failure after that must not
    /// overwrite the root's RAX with an error code.
    pub root_started: bool,
    pub gdt: [u64; selector::GDT_ENTRIES],
    pub gdtr: [u8; 16],
    pub idtr: [u8; 16],
    pub tss: Tss,
}
const _: () = {
    assert!(offset_of!(PerCpu, kernel_rsp) == 8);
    assert!(offset_of!(PerCpu, user_rsp) == 16);
    assert!(offset_of!(PerCpu, ext_entry) == 24);
    assert!(offset_of!(PerCpu, ext_stack_top) == 32);
    assert!(core::mem::size_of::<PerCpu>() <= 4096);
};

/// Arguments of the world switch (offsets used by the assembly).
#[repr(C)]
pub struct SwitchArgs {
    pub vmcb_pa: u64,
    pub host_vmcb_pa: u64,
    pub gprs: *mut [u64; 16],
    pub fpu: *mut u8,
}
const _: () = {
    assert!(offset_of!(SwitchArgs, host_vmcb_pa) == 8);
    assert!(offset_of!(SwitchArgs, gprs) == 16);
    assert!(offset_of!(SwitchArgs, fpu) == 24);
};

/// This CPU's data.
pub fn current() -> &'static mut PerCpu {
    let p: u64;
    // SAFETY: in ring 0 GS.base always points at this CPU's PerCpu page,
    // whose first field holds its own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: the page is owned by this CPU alone; ring 0 code on this CPU
    // runs one thing at a time (GIF is clear), so no other reference is live.
    unsafe { &mut *(p as *mut PerCpu) }
}
