//! Per-CPU data. The syscall gate reaches it through GS (after `swapgs`,
//! GS is KERNEL_GS_BASE, which only the microkernel writes); exceptions and
//! panics find it from the stack pointer (`from_stack`), never from GS,
//! which may hold anything when they strike.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::launch::MAX_CPUS;
use microv_abi::syscall::EXTENSION_PORTS;
use microv_arch::descriptor::{selector, Tss};

use crate::cpu_state::Limits;
use crate::stacks;
use crate::vmcb_check::RootTables;

/// Bytes of the TSS I/O permission bitmap: one bit per port up to the last
/// port ring 3 may use, then the 0xFF byte the CPU requires after it.
pub const IOMAP_BYTES: usize = crate::iomap::bytes_for(*EXTENSION_PORTS.end());

/// One page per CPU. The first fields are read by the assembly at fixed
/// offsets (`asm.rs` takes them from `offset_of!`).
#[repr(C, align(4096))]
pub struct PerCpu {
    pub self_va: u64,
    pub kernel_rsp: u64,
    pub user_rsp: u64,
    pub ext_entry: u64,
    pub ext_stack_top: u64,
    pub index: u64,
    /// This CPU's landing page: written (status, fault record, promotion
    /// frame), never trusted.
    pub landing: u64,
    pub root_vs: u64,
    /// The root vCPU state's pages, copied at bring-up so the exit path
    /// needs no look-up under the global vCPU-state lock.
    pub root: super::vs::Vs,
    pub host_vmcb_pa: u64,
    /// The trampoline's promotion routine (from the boot info).
    pub promote_entry: u64,
    /// What the CPU supports (CPUID, read at bring-up).
    pub limits: Limits,
    /// The root's nested tables and permission maps, once known.
    pub root_tables: Option<RootTables>,
    /// After an early boot, the page tables this CPU entered with (the
    /// only root tables that map the trampoline): promotion is possible
    /// only while the root still runs on them (`cpu_state::check_tables`).
    pub entry_tables: Option<u64>,
    /// This CPU's ASIDs for guest vCPUs.
    pub asids: crate::guest_vm::AsidPool,
    /// What this CPU's TSC_AUX holds: the root's value or a guest's.
    pub tsc_aux: crate::tsc_aux::TscAux,
    /// The extension-mapping generation this CPU's TLB is clean for
    /// (`vs::EXT_TLB_GENERATION`).
    pub ext_tlb_generation: u64,
    /// Set once the root vCPU has run: a failure after that must not
    /// overwrite the root's RAX with an error code.
    pub root_started: bool,
    /// Set when promotion begins: a fault from then on halts the CPU
    /// rather than promoting again.
    pub leaving: bool,
    /// Set while the exception handler runs: a nested fault halts.
    pub in_exception: bool,
    /// Intel: this CPU's VMX state (None on AMD).
    pub vmx: Option<super::vmx::VmxState>,
    /// Intel: an NMI arrived in host mode; the root gets it at its next
    /// entry that can take one.
    pub nmi_pending: bool,
    pub gdt: [u64; selector::GDT_ENTRIES],
    pub gdtr: [u8; 16],
    pub idtr: [u8; 16],
    pub tss: Tss,
    /// The TSS's I/O permission bitmap (directly after it).
    pub iomap: [u8; IOMAP_BYTES],
}
const _: () = {
    assert!(offset_of!(PerCpu, self_va) == 0);
    assert!(offset_of!(PerCpu, iomap) == offset_of!(PerCpu, tss) + core::mem::size_of::<Tss>());
    assert!(core::mem::size_of::<PerCpu>() <= 4096);
};

/// Arguments of the world switch (offsets used by the assembly).
#[repr(C)]
pub struct SwitchArgs {
    pub vmcb_pa: u64,
    pub host_vmcb_pa: u64,
    pub regs: *mut microv_abi::syscall::VsRegs,
    pub fpu: *mut u8,
    /// The guest's XCR0, checked: loaded before its FPU state and VMRUN.
    pub xcr0: u64,
}

/// What `microv_vmx_world_switch` takes and gives back (offsets used by the
/// assembly).
#[repr(C)]
pub struct VmxSwitchArgs {
    pub regs: *mut microv_abi::syscall::VsRegs,
    pub fpu: *mut u8,
    /// The guest's XCR0, checked: loaded before its FPU state.
    pub xcr0: u64,
    /// The guest's CR2: in before the entry, out after the exit.
    pub cr2: u64,
    /// Nonzero once the current VMCS was launched (VMRESUME, not VMLAUNCH).
    pub launched: u64,
    /// 0 after a VM exit; after a VMfail, RFLAGS with bit 63 set.
    pub fail_rflags: u64,
}

/// Where every CPU's data and exception stack are, for `from_stack`.
struct Slot {
    percpu: AtomicU64,
    ist_low: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    percpu: AtomicU64::new(0),
    ist_low: AtomicU64::new(0),
};
static SLOTS: [Slot; MAX_CPUS] = [EMPTY; MAX_CPUS];
/// Hypervisor address of the first CPU's kernel stack and the CPU count.
static KERNEL_STACKS: AtomicU64 = AtomicU64::new(0);
static CPU_COUNT: AtomicU64 = AtomicU64::new(0);

/// Records where the kernel stacks are (first CPU, at start).
pub fn set_kernel_stacks(va: u64, cpu_count: u64) {
    KERNEL_STACKS.store(va, Ordering::Release);
    CPU_COUNT.store(cpu_count, Ordering::Release);
}

/// Records CPU `index`'s data page and exception stack.
pub fn register(index: u64, percpu: u64, ist_low: u64) {
    if let Some(s) = usize::try_from(index).ok().and_then(|i| SLOTS.get(i)) {
        s.ist_low.store(ist_low, Ordering::Release);
        s.percpu.store(percpu, Ordering::Release);
    }
}

/// The CPU whose kernel or exception stack holds `rsp`.
pub fn cpu_of_stack(rsp: u64) -> Option<usize> {
    let count = (CPU_COUNT.load(Ordering::Acquire) as usize).min(MAX_CPUS);
    let ists = SLOTS.iter().map(|s| s.ist_low.load(Ordering::Acquire));
    stacks::cpu_of(
        rsp,
        KERNEL_STACKS.load(Ordering::Acquire),
        count,
        ists,
        super::cpu::IST_STACK_SIZE,
    )
}

/// This CPU's data, found from the stack pointer `rsp`.
///
/// # Safety
/// The caller must hold no other reference to this CPU's `PerCpu` that it
/// will use again (exception and panic paths, which never return to code
/// holding one, except the MSR fix-up, which does not call this).
pub unsafe fn from_stack(rsp: u64) -> Option<&'static mut PerCpu> {
    let cpu = cpu_of_stack(rsp)?;
    let p = SLOTS.get(cpu)?.percpu.load(Ordering::Acquire);
    // SAFETY: a registered page is this CPU's PerCpu for MicroV's lifetime;
    // the caller guarantees no other live reference.
    unsafe { (p as *mut PerCpu).as_mut() }
}

/// This CPU's data as the syscall gate passes it (`gs:[0]`).
///
/// # Safety
/// `p` is this CPU's `PerCpu` and no other reference to it is live.
pub unsafe fn from_gate(p: u64) -> Option<&'static mut PerCpu> {
    // SAFETY: see the function's contract.
    unsafe { (p as *mut PerCpu).as_mut() }
}
