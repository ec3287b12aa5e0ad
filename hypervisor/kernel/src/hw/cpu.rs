//! Bringing a CPU under MicroV, running vCPUs on it, and handing it back.
//!
//! The house rule (ARCHITECTURE.md, "Host mode trusts nothing the root can
//! write"): host mode runs on MicroV's own GDT, IDT, TSS, GS, CR0, CR4,
//! DR7 and XCR0. Promotion checks every root value first, loads nothing of
//! the root's while a fault is still possible, takes the root's TR and GS
//! last, and leaves CR3 and everything after it to the trampoline.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::launch::{
    StartMode,
    self, BootInfo, CpuLanding, FaultRecord, PromoteFrame, EXTENSION_STACKS, EXTENSION_STACK_SIZE,
    EXTENSION_STACK_STRIDE, KERNEL_STACK_SIZE, PAGE_SIZE, POOL_VA, SEGMENT_W, SEGMENT_X,
};
use microv_abi::syscall::{SysStatus, Upcall, VsRegs, EXTENSION_BOOT_INFO, EXTENSION_PORTS};
use microv_abi::StartError;
use microv_arch::descriptor::selector;
use microv_arch::instr;
use microv_arch::msr;
use microv_arch::svm::{exit, tlb, SaveArea, Vmcb};
use microv_arch::vmcb_spans;
use microv_arch::xsave;

use super::asm;
use super::log::{self, log};
use super::mm::MEMORY;
use super::percpu::{self, PerCpu, SwitchArgs};
use super::vs;
use super::FAILED;
use crate::cpu_state::{self, Limits};
use crate::descriptors;
use crate::guest_vm::{AsidPool, Flush};
use crate::rendezvous::{Outcome, StopBarrier};
use crate::root;
use crate::tsc_aux::{self, TscAux};
use crate::vmcb_check::{self, Owner, RootTables};
use crate::vmcb_copy::copy_spans;
use microv_arch::cpuid::{self, Virtualization, LEAF_SVM_FEATURES};
use crate::vmx_host::HostState;
use microv_arch::vmx::caps::CR4_VMXE;

/// The busy bit of a TSS descriptor's type (bit 41 of its low half).
const TSS_BUSY: u64 = 1 << 41;

/// RFLAGS bits cleared on `syscall`: TF, IF, DF, NT, AC.
const SFMASK: u64 = 0x4_7700;
const IST_STACK_PAGES: u64 = 4;
/// Bytes of each CPU's exception (IST) stack.
pub const IST_STACK_SIZE: u64 = IST_STACK_PAGES * PAGE_SIZE;
const EXT_STACK_PAGES: u64 = EXTENSION_STACK_SIZE / PAGE_SIZE;
/// Largest XSAVE area MicroV gives a vCPU.
const MAX_FPU_PAGES: u64 = 4;
/// DR7 with every breakpoint disabled.
pub const DR7_INIT: u64 = 0x400;
/// How long a CPU waits at the stop rendezvous for the others when the TSC
/// frequency is unknown (TSC ticks; about a second on current CPUs).
const STOP_TIMEOUT_TICKS: u64 = 3_000_000_000;

/// How long a CPU waits at the stop rendezvous for the others: a second of
/// TSC ticks at the frequency the loader measured (an emulator's TSC may
/// run far slower than a real CPU's), else [`STOP_TIMEOUT_TICKS`].
fn stop_timeout_ticks() -> u64 {
    match TSC_KHZ.load(Ordering::Relaxed) {
        0 => STOP_TIMEOUT_TICKS,
        khz => khz.saturating_mul(1000),
    }
}

/// The TSC frequency from the boot info (kHz; 0 unknown), kept at start so
/// the stop path reads it without a lock.
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// CPUs in MicroV: entered (bring-up counts, so a stop cannot leave a CPU
/// behind that is still being brought up) and not yet left.
static IN_MICROV: AtomicU64 = AtomicU64::new(0);

/// Counts CPU `index` in; called once per CPU, first thing at entry. From
/// here on the root's INIT and SIPI cannot reach it (`root_apic`).
pub fn entered(index: u64) {
    IN_MICROV.fetch_add(1, Ordering::AcqRel);
    super::root_apic::entered(index);
}

/// Counts CPU `index` out, just before it leaves.
fn leaving(index: u64) {
    super::root_apic::leaving(index);
    IN_MICROV.fetch_sub(1, Ordering::AcqRel);
}
static STOP: StopBarrier = StopBarrier::new();
/// The second half of the stop rendezvous: every committed CPU has done its
/// last work in hypervisor memory and is about to load the root's state.
static READY: StopBarrier = StopBarrier::new();
/// What `microv_promote_final` loads (offsets used by the assembly).
#[repr(C)]
pub struct PromoteRegs {
    pub xcr0: u64,
    pub fpu: u64,
    pub pat: u64,
    pub cr2: u64,
    pub cr4: u64,
    pub cr0: u64,
    pub vmcb_pa: u64,
    pub landing: u64,
    pub entry: u64,
    pub cr3: u64,
}

/// A CPU's landing page. The root can write it at any time (other CPUs run
/// the root while this one is in host mode), so MicroV only ever writes it,
/// with volatile stores, and reads it once, at entry, into a private copy.
#[derive(Clone, Copy, Debug)]
pub struct Landing(*mut CpuLanding);

impl Landing {
    /// # Safety
    /// `va` is a landing page the loader mapped for MicroV's lifetime.
    pub unsafe fn new(va: u64) -> Self {
        Landing(va as *mut CpuLanding)
    }

    pub fn va(self) -> u64 {
        self.0 as u64
    }

    /// One copy of the page: checked and used from then on.
    pub fn snapshot(self) -> CpuLanding {
        // SAFETY: the page is mapped (see `new`); a volatile read takes one
        // copy whatever the root writes meanwhile.
        unsafe { core::ptr::read_volatile(self.0) }
    }

    /// A field of the page, by offset (no reference to root-writable memory
    /// is ever made).
    fn field<T>(self, offset: usize) -> *mut T {
        self.0.cast::<u8>().wrapping_add(offset).cast::<T>()
    }

    fn store<T>(self, offset: usize, value: T) {
        let p = self.field::<T>(offset);
        // SAFETY: `offset` is a field of the mapped page (callers pass
        // `offset_of!` of a field of type T); a volatile store of it.
        unsafe { p.write_volatile(value) }
    }

    pub fn set_running(self, running: u32) {
        self.store(offset_of!(CpuLanding, running), running);
    }

    pub fn set_status(self, status: u64, detail: u64) {
        self.store(offset_of!(CpuLanding, status), status);
        self.store(offset_of!(CpuLanding, detail), detail);
    }

    pub fn set_fault(self, record: FaultRecord) {
        self.store(offset_of!(CpuLanding, fault), record);
    }

    pub fn set_promote(self, frame: PromoteFrame) {
        self.store(offset_of!(CpuLanding, promote), frame);
    }
}

/// The boot info, found from this image's own size (see `asm.rs`).
///
/// # Safety
/// `va` is the address the entry code computed from the sealed image size:
/// mapped, and the boot info page for MicroV's lifetime.
pub unsafe fn boot_info(va: u64) -> Option<&'static BootInfo> {
    // SAFETY: see the function's contract; the loader put the boot info
    // there, read-only for MicroV's lifetime.
    let bi = unsafe { (va as *const BootInfo).as_ref()? };
    bi.is_sane().then_some(bi)
}

/// Shared set-up, done by the first CPU: the frame allocator, the log, and
/// the extension's image in its address space.
pub fn global_init(bi: &'static BootInfo, bi_va: u64) -> Result<(), StartError> {
    {
        let mut ring = log::RING.lock();
        ring.base = bi.log;
        ring.size = bi.log_size;
    }
    percpu::set_kernel_stacks(POOL_VA + bi.stacks_offset, u64::from(bi.cpu_count));
    TSC_KHZ.store(bi.tsc_khz, Ordering::Relaxed);
    let mut mem = MEMORY.lock();
    mem.boot = bi;
    // SAFETY: ring 0; the trampoline switched to MicroV's tables.
    mem.root_pa = unsafe { instr::read_cr3() } & !(PAGE_SIZE - 1);
    let total = (bi.pool_size() / PAGE_SIZE) as usize;
    let reserved = bi.free_offset.div_ceil(PAGE_SIZE) as usize;
    mem.frames
        .init(total, reserved)
        .map_err(|_| StartError::PoolTooSmall)?;
    mem.harden(bi).map_err(|_| StartError::OutOfMemory)?;
    if is_vmx() {
        super::root_vm::build_vmx(&mut mem, bi)?;
    } else {
        super::root_vm::build(&mut mem, bi)?;
    }

    let ext = &bi.extension;
    for seg in ext.segments.iter().take(ext.segment_count as usize) {
        let pa = bi
            .pool_pa(ext.pool_offset + seg.offset)
            .ok_or(StartError::BadImage)?;
        mem.map_user(
            ext.base + seg.offset,
            pa,
            seg.size / PAGE_SIZE,
            seg.flags & SEGMENT_W != 0,
            seg.flags & SEGMENT_X != 0,
        )
        .map_err(|_| StartError::OutOfMemory)?;
    }
    let bi_pa = bi.pool_pa(bi_va - POOL_VA).ok_or(StartError::BadImage)?;
    mem.map_user(EXTENSION_BOOT_INFO, bi_pa, 2, false, false)
        .map_err(|_| StartError::OutOfMemory)?;
    drop(mem);
    log!(
        "microkernel: pool {} MiB, {} CPUs, extension at {:#x}",
        bi.pool_size() >> 20,
        bi.cpu_count,
        ext.entry
    );
    Ok(())
}

/// This CPU cannot run MicroV: back to the loader, as [`early_return`].
/// After an early boot no loader is left to take MicroV off the other CPUs
/// (the Linux driver does that after a late launch), so every CPU leaves
/// at its next exit, as after a failure.
fn refuse(
    bi: &BootInfo,
    landing: Landing,
    captured: &launch::CapturedState,
    index: u64,
    entry: u64,
    status: u64,
    detail: u64,
) -> ! {
    if bi.start_mode == StartMode::EarlyBoot as u32 {
        FAILED.store(status as u32, Ordering::Release);
    }
    early_return(landing, captured, index, entry, status, detail)
}

/// Returns to the loader before anything on this CPU was changed: the CPU
/// still has the state it entered with, so only CR3 and the frame matter.
pub fn early_return(
    landing: Landing,
    captured: &launch::CapturedState,
    index: u64,
    entry: u64,
    status: u64,
    detail: u64,
) -> ! {
    landing.set_status(status, detail);
    landing.set_running(0);
    landing.set_promote(root::early_frame(captured, status));
    leaving(index);
    // SAFETY: `entry` is the promotion routine of MicroV's private copy of
    // the trampoline, mapped at the same address on both sides; nothing of
    // the CPU's state was changed, so it takes RDI = landing, RAX = CR3.
    unsafe {
        core::arch::asm!("jmp {}", in(reg) entry, in("rdi") landing.va(), in("rax") captured.cr3,
            options(noreturn))
    }
}

fn alloc_va(pages: u64) -> Result<super::mm::Page, StartError> {
    MEMORY
        .lock()
        .alloc(pages as usize)
        .map_err(|_| StartError::OutOfMemory)
}

/// Everything a CPU allocates at bring-up.
struct CpuPages {
    percpu: super::mm::Page,
    idt: super::mm::Page,
    ist: super::mm::Page,
    host_vmcb: super::mm::Page,
    hsave: super::mm::Page,
    root_vs: u64,
}

fn alloc_cpu(index: u64, limits: &Limits, root_xcr0: u64) -> Result<CpuPages, StartError> {
    let fpu_pages = limits.xsave_size.div_ceil(PAGE_SIZE).max(1);
    if fpu_pages > MAX_FPU_PAGES {
        return Err(StartError::UnsupportedCpuState);
    }
    let pages = CpuPages {
        percpu: alloc_va(1)?,
        idt: alloc_va(1)?,
        ist: alloc_va(IST_STACK_PAGES)?,
        host_vmcb: alloc_va(1)?,
        hsave: alloc_va(1)?,
        root_vs: vs::create(index, fpu_pages, root_xcr0).map_err(|_| StartError::OutOfMemory)?,
    };
    let ext_stack = alloc_va(EXT_STACK_PAGES)?;
    MEMORY
        .lock()
        .map_user(
            ext_stack_base(index),
            ext_stack.pa,
            EXT_STACK_PAGES,
            true,
            false,
        )
        .map_err(|_| StartError::OutOfMemory)?;
    Ok(pages)
}

fn ext_stack_base(index: u64) -> u64 {
    EXTENSION_STACKS + index * EXTENSION_STACK_STRIDE
}

/// Per-CPU bring-up, then the first upcall into the extension.
pub fn bring_up(
    landing: Landing,
    captured: launch::CapturedState,
    index: u64,
    bi: &'static BootInfo,
) -> ! {
    let entry = bi.promote_entry;
    let mut cpuid = instr::cpuid;
    let limits = cpu_state::limits(&mut cpuid);
    if !xsave::xcr0_valid(captured.xcr0, limits.xcr0) {
        let code = StartError::UnsupportedCpuState as u64;
        refuse(bi, landing, &captured, index, entry, code, captured.xcr0)
    }
    let pages = match alloc_cpu(index, &limits, captured.xcr0) {
        Ok(p) => p,
        Err(e) => refuse(bi, landing, &captured, index, entry, e as u64, 0),
    };
    let Some(root) = vs::get(pages.root_vs) else {
        refuse(bi, landing, &captured, index, entry, StartError::KernelFault as u64, 0)
    };

    // Capture what VMSAVE covers (FS, GS, TR, LDTR, syscall MSRs) exactly
    // as the OS had it into the private VMCB; the rest comes from the
    // captured state. Then the extension's shadow gets a copy to start from.
    let vmx = is_vmx();
    if !vmx {
        // SAFETY: EFER.SVME is set (trampoline); the private VMCB is ours.
        unsafe { instr::vmsave(root.vmcb_pa) };
    }
    // SAFETY: the private VMCB is mapped only in the microkernel, and this
    // CPU's root state is not running; no other reference exists.
    let vmcb = unsafe { &mut *(root.vmcb_va as *mut Vmcb) };
    if vmx {
        root::vmsave_equivalent(&captured, &vmsave_msrs(), &mut vmcb.save);
    }
    if let Err((e, detail)) = root::root_save_area(&captured, &mut vmcb.save, 0) {
        refuse(bi, landing, &captured, index, entry, e as u64, detail)
    }
    copy_out(&root, &vmcb_spans::CONTROL_STATE);

    let pc_ptr = pages.percpu.va as *mut PerCpu;
    // SAFETY: the page was just allocated for this CPU, is page-aligned and
    // a page long (PerCpu fits, checked in percpu.rs); nothing else refers
    // to it. Writing a whole value makes every field valid.
    unsafe {
        pc_ptr.write(PerCpu {
            self_va: pages.percpu.va,
            kernel_rsp: POOL_VA + bi.stacks_offset + (index + 1) * KERNEL_STACK_SIZE,
            user_rsp: 0,
            ext_entry: bi.extension.entry,
            ext_stack_top: ext_stack_base(index) + EXTENSION_STACK_SIZE,
            index,
            landing: landing.va(),
            root_vs: pages.root_vs,
            root,
            host_vmcb_pa: pages.host_vmcb.pa,
            promote_entry: entry,
            limits,
            root_tables: None,
            entry_tables: (bi.start_mode == StartMode::EarlyBoot as u32).then_some(captured.cr3),
            asids: AsidPool::new(instr::cpuid(LEAF_SVM_FEATURES, 0).ebx),
            tsc_aux: TscAux::new(limits.tsc_aux),
            ext_tlb_generation: vs::EXT_TLB_GENERATION.load(Ordering::Acquire),
            root_started: false,
            leaving: false,
            in_exception: false,
            vmx: None,
            nmi_pending: false,
            gdt: [0; selector::GDT_ENTRIES],
            gdtr: [0; 16],
            idtr: [0; 16],
            tss: Default::default(),
            iomap: [0; percpu::IOMAP_BYTES],
        })
    };
    // SAFETY: initialized just above; from here on `pc` is the only
    // reference to this CPU's data during bring-up.
    let pc = unsafe { &mut *pc_ptr };
    build_descriptors(pc, pages.idt.va, pages.ist.va + IST_STACK_SIZE);
    percpu::register(index, pages.percpu.va, pages.ist.va);

    // From here the CPU runs on MicroV's own state; failures go through
    // `fail`, which promotes the root vCPU state built above. The root's own
    // values are safe in that state (VMSAVE and the captured state above).
    load_host_state(pc, &limits, pages.host_vmcb.pa, pages.hsave.pa, vmx);
    if vmx {
        // The VMXON region and the root's VMCS take the two pages AMD uses
        // for its host save areas.
        let caps = super::vmx::caps();
        let cr4 = caps.cr4.adjust(cpu_state::host_cr4(&limits) | CR4_VMXE);
        let host = vmx_host_state(pc, pages.idt.va, cr4);
        // SAFETY: the private VMCB, complete; read only here.
        let root_vmcb = unsafe { &*(pc.root.vmcb_va as *const Vmcb) };
        let vmxon = (pages.host_vmcb.va, pages.host_vmcb.pa);
        let vmcs = (pages.hsave.va, pages.hsave.pa);
        match super::vmx::start(index, &caps, vmxon, vmcs, root_vmcb, &host) {
            Ok(state) => pc.vmx = Some(state),
            Err((e, detail)) => fail(pc, e, detail),
        }
    }
    if bi.injected_failure_cpu() == Some(index) {
        fail(pc, StartError::InjectedFailure, index)
    }
    log!("cpu {}: microkernel ready", index);
    // SAFETY: the per-CPU state is complete; the extension's entry and
    // stack are mapped; GS is this CPU's page.
    unsafe {
        asm::microv_enter_extension(
            Upcall::Bootstrap as u64,
            index,
            pages.root_vs,
            u64::from(bi.cpu_count),
        )
    }
}

/// Loads MicroV's own CPU state: control registers, XCR0, DR7, descriptor
/// tables, segment bases, PAT and syscall MSRs; then saves it as the host
/// state VMRUN returns to.
fn load_host_state(pc: &PerCpu, limits: &Limits, host_vmcb_pa: u64, hsave_pa: u64, vmx: bool) {
    // SAFETY: ring 0; DR7 = 0x400 disarms every breakpoint.
    unsafe { instr::write_dr7(DR7_INIT) };
    // SAFETY: ring 0; protected mode with paging as now, MicroV's flags.
    unsafe { instr::write_cr0(cpu_state::HOST_CR0) };
    // SAFETY: ring 0; PAE stays on, only bits this CPU has (`limits`).
    unsafe { instr::write_cr4(cpu_state::host_cr4(limits)) };
    // SAFETY: CR4.OSXSAVE is set; x87|SSE is valid on every x86-64 CPU.
    unsafe { instr::xsetbv0(xsave::HOST_XCR0) };
    // SAFETY: the GDT, IDT and TSS in `pc` were built for this CPU and
    // stay mapped; the selectors match them.
    unsafe { asm::microv_load_host_segments(pc.gdtr.as_ptr(), pc.idtr.as_ptr()) };
    let msrs = [
        (msr::EFER, host_efer(vmx)),
        (msr::GS_BASE, pc.self_va),
        (msr::FS_BASE, 0),
        (msr::PAT, msr::PAT_DEFAULT),
    ];
    for (index, value) in msrs.into_iter().chain(host_syscall_msrs()) {
        // SAFETY: ring 0; each is an architectural MSR given MicroV's own
        // valid value (EFER keeps LME/LMA, and SVME on AMD, as they are).
        unsafe { instr::wrmsr(index, value) };
    }
    if vmx {
        return;
    }
    // SAFETY: EFER.SVME is set; the page is this CPU's host VMCB.
    unsafe { instr::vmsave(host_vmcb_pa) };
    // SAFETY: ring 0; the page is this CPU's host save area.
    unsafe { instr::wrmsr(msr::VM_HSAVE_PA, hsave_pa) };
}

/// True on a CPU with Intel VMX (the world switch is VMX's there).
pub fn is_vmx() -> bool {
    cpuid::virtualization(&mut instr::cpuid) == Virtualization::Vmx
}

/// MicroV's EFER: long mode, SYSCALL, NX, and SVME where SVM is used.
fn host_efer(vmx: bool) -> u64 {
    if vmx {
        cpu_state::HOST_EFER & !msr::efer::SVME
    } else {
        cpu_state::HOST_EFER
    }
}

/// MicroV's syscall MSRs (its gate for the extension), which VMX does not
/// switch: loaded at bring-up, and again after every VM exit on Intel.
fn host_syscall_msrs() -> [(u32, u64); 5] {
    let syscall_cs =
        (u64::from(selector::USER_BASE) << 48) | (u64::from(selector::KERNEL_CODE) << 32);
    [
        (msr::KERNEL_GS_BASE, 0),
        (msr::STAR, syscall_cs),
        (msr::LSTAR, asm::microv_syscall_entry as *const () as u64),
        (msr::CSTAR, 0),
        (msr::SFMASK, SFMASK),
    ]
}

/// What VMSAVE would read on AMD, read with RDMSR before MicroV loads its
/// own values (Intel).
fn vmsave_msrs() -> root::VmsaveMsrs {
    // SAFETY: ring 0; architectural MSRs of every x86-64 CPU; reading
    // them has no effect.
    let read = |index| unsafe { instr::rdmsr(index) };
    root::VmsaveMsrs {
        fs_base: read(msr::FS_BASE),
        gs_base: read(msr::GS_BASE),
        kernel_gs_base: read(msr::KERNEL_GS_BASE),
        star: read(msr::STAR),
        lstar: read(msr::LSTAR),
        cstar: read(msr::CSTAR),
        sfmask: read(msr::SFMASK),
        sysenter_cs: read(msr::SYSENTER_CS),
        sysenter_esp: read(msr::SYSENTER_ESP),
        sysenter_eip: read(msr::SYSENTER_EIP),
    }
}

/// The host state every VM exit loads: MicroV's, as `load_host_state`
/// left it (its RSP is set before each entry).
fn vmx_host_state(pc: &PerCpu, idt_va: u64, cr4: u64) -> HostState {
    // SAFETY: ring 0; reading CR3 has no effect.
    let cr3 = unsafe { instr::read_cr3() };
    HostState {
        cr0: cpu_state::HOST_CR0,
        cr3,
        cr4,
        cs: selector::KERNEL_CODE,
        ss: selector::KERNEL_DATA,
        ds: selector::KERNEL_DATA,
        es: selector::KERNEL_DATA,
        fs: 0,
        gs: 0,
        tr: selector::TSS,
        fs_base: 0,
        gs_base: pc.self_va,
        tr_base: &pc.tss as *const _ as u64,
        gdtr_base: pc.gdt.as_ptr() as u64,
        idtr_base: idt_va,
        sysenter_cs: 0,
        sysenter_esp: 0,
        sysenter_eip: 0,
        efer: host_efer(true),
        pat: msr::PAT_DEFAULT,
        rsp: 0,
        rip: asm::microv_vmx_exit as *const () as u64,
    }
}


/// This CPU's GDT, TSS (with the I/O bitmap that lets ring 3 reach
/// [`EXTENSION_PORTS`]) and IDT (every exception on IST 1, whose top is `ist_top`).
fn build_descriptors(pc: &mut PerCpu, idt_va: u64, ist_top: u64) {
    let tss_limit = core::mem::size_of_val(&pc.tss) + core::mem::size_of_val(&pc.iomap) - 1;
    pc.gdt = descriptors::gdt(&pc.tss as *const _ as u64, tss_limit as u32);
    pc.tss = Default::default();
    pc.tss.ist[0] = ist_top;
    pc.tss.rsp[0] = pc.kernel_rsp;
    pc.tss.iomap_base = core::mem::size_of_val(&pc.tss) as u16;
    pc.iomap = crate::iomap::bitmap(EXTENSION_PORTS);
    // SAFETY: the IDT page is this CPU's, just allocated and zeroed; 256
    // gates of 16 bytes fill it exactly; nothing else refers to it yet.
    let gates = unsafe { &mut *(idt_va as *mut [[u64; 2]; 256]) };
    descriptors::exception_gates(gates, asm::microv_exception_stubs as *const () as u64);
    pc.gdtr = descriptors::dtr(
        (8 * selector::GDT_ENTRIES - 1) as u16,
        pc.gdt.as_ptr() as u64,
    );
    pc.idtr = descriptors::dtr(4095, idt_va);
}

/// Copies vCPU state `vs`'s shadow VMCB (the extension's) into its private
/// VMCB, the one the CPU runs; returns the private copy. For a root vCPU
/// the microkernel's own tables go in, whatever the shadow says (a guest's
/// go in with [`guest_copy_in`]).
fn copy_in(pc: &mut PerCpu, vs: &vs::Vs) -> &'static mut Vmcb {
    // SAFETY: both pages are this state's; the private one is mapped only
    // here and used by this CPU only. The shadow may change under the copy
    // (another CPU's extension): a torn copy is still a copy, and only the
    // copy is checked and run.
    unsafe { copy_spans(vs.shadow_va as *const u8, vs.vmcb_va as *mut u8, &vmcb_spans::CONTROL_STATE) };
    // SAFETY: initialized just above (every bit pattern is a valid Vmcb);
    // the only reference to the private VMCB.
    let private = unsafe { &mut *(vs.vmcb_va as *mut Vmcb) };
    if vs.root_of.is_some() {
        if let Some(t) = pc.root_tables.or_else(super::root_vm::tables) {
            pc.root_tables = Some(t);
            private.control.n_cr3 = t.n_cr3;
            private.control.iopm_base_pa = t.iopm;
            private.control.msrpm_base_pa = t.msrpm;
        }
    }
    private
}

/// A guest vCPU's private VMCB: the shadow's copy with its VM's tables and
/// permission maps, and the ASID and TLB flush the microkernel chose.
fn guest_copy_in(
    pc: &mut PerCpu,
    vs: &vs::Vs,
    tables: RootTables,
    asid: u32,
    flush: Flush,
) -> &'static mut Vmcb {
    let private = copy_in(pc, vs);
    private.control.n_cr3 = tables.n_cr3;
    private.control.iopm_base_pa = tables.iopm;
    private.control.msrpm_base_pa = tables.msrpm;
    private.control.guest_asid = asid;
    private.control.tlb_control = match flush {
        Flush::Nothing => tlb::DO_NOTHING,
        Flush::Asid => tlb::FLUSH_GUEST,
        Flush::All => tlb::FLUSH_ALL,
    };
    private
}

/// Copies the private VMCB out to the shadow, for the extension to handle:
/// the save area and the `control` spans (after an exit what the CPU wrote,
/// [`vmcb_spans::CONTROL_EXIT`]; at bring-up all of it).
fn copy_out(vs: &vs::Vs, control: &[vmcb_spans::Span]) {
    // SAFETY: both pages are this state's; the extension on this CPU is in
    // the microkernel (this is its syscall), so it reads the copy after.
    unsafe { copy_spans(vs.vmcb_va as *const u8, vs.shadow_va as *mut u8, control) };
}

/// Runs vCPU state `id` on this CPU until it exits, then hands the exit to
/// the extension. Returns only if the state may not run here: this CPU's
/// root state, or a live guest state no other CPU is running.
pub fn run(pc: &mut PerCpu, id: u64) -> Result<core::convert::Infallible, SysStatus> {
    let vs = lookup(pc, id).ok_or(SysStatus::InvalidArgument)?;
    if vs.root_of == Some(pc.index) {
        run_root(pc, id, &vs)?;
        if FAILED.load(Ordering::Acquire) != 0 {
            // MicroV is going down: give the CPU back without handling the
            // exit, so the root re-executes the intercepted instruction
            // natively.
            promote_or_halt(pc, None)
        }
    } else {
        // Guests run on SVM only so far: never VMRUN on an Intel CPU.
        if pc.vmx.is_some() {
            return Err(SysStatus::InvalidArgument);
        }
        let vm = vs.vm.ok_or(SysStatus::InvalidArgument)?;
        if !vs::claim(id, pc.index) {
            return Err(SysStatus::Busy);
        }
        let done = run_guest(pc, id, &vs, vm);
        vs::release(id);
        done?;
        if FAILED.load(Ordering::Acquire) != 0 {
            // The root's pending exit (its run call) is abandoned: the root
            // re-executes it natively and sees MicroV gone.
            promote_or_halt(pc, None)
        }
    }
    flush_stale_extension_mappings(pc);
    // SAFETY: the extension's entry and this CPU's stack are mapped.
    unsafe { asm::microv_enter_extension(Upcall::Exit as u64, pc.index, id, 0) }
}

/// Drops this CPU's TLB entries for extension pages another CPU unmapped
/// since this CPU last entered the extension (a destroyed vCPU's run page).
fn flush_stale_extension_mappings(pc: &mut PerCpu) {
    let generation = vs::EXT_TLB_GENERATION.load(Ordering::Acquire);
    if pc.ext_tlb_generation != generation {
        pc.ext_tlb_generation = generation;
        super::mm::flush_tlb();
    }
}

/// The XCR0 in a state's register page (checked before use).
fn regs_xcr0(vs: &vs::Vs) -> u64 {
    let xcr0_field = (vs.regs_va as *const u8).wrapping_add(offset_of!(VsRegs, xcr0));
    // SAFETY: the register page is this state's and mapped; one read.
    unsafe { core::ptr::read_volatile(xcr0_field.cast::<u64>()) }
}

/// The TSC_AUX in a guest state's register page (checked before use).
fn regs_tsc_aux(vs: &vs::Vs) -> u64 {
    let field = (vs.regs_va as *const u8).wrapping_add(offset_of!(VsRegs, tsc_aux));
    // SAFETY: the register page is this state's and mapped; one read.
    unsafe { core::ptr::read_volatile(field.cast::<u64>()) }
}

/// This CPU's TSC_AUX MSR, for [`TscAux`] (which decides every access).
struct TscAuxMsr;

impl tsc_aux::Msr for TscAuxMsr {
    fn read(&mut self) -> u64 {
        // SAFETY: ring 0; `TscAux` reads only on a CPU that has TSC_AUX.
        unsafe { instr::rdmsr(msr::TSC_AUX) }
    }
    fn write(&mut self, value: u64) {
        // SAFETY: ring 0; `TscAux` writes only on a CPU that has TSC_AUX,
        // a value read from it or a guest's checked 32-bit one.
        unsafe { instr::wrmsr(msr::TSC_AUX, value) }
    }
}

/// One VMRUN of a checked private VMCB; the exit code.
fn switch(vs: &vs::Vs, pc: &PerCpu, xcr0: u64) -> u64 {
    let mut args = SwitchArgs {
        vmcb_pa: vs.vmcb_pa,
        host_vmcb_pa: pc.host_vmcb_pa,
        regs: vs.regs_va as *mut VsRegs,
        fpu: vs.fpu_va as *mut u8,
        xcr0,
    };
    // SAFETY: the caller checked the private VMCB, which no one else can
    // write; the register page and FPU area belong to this state; XCR0 is
    // valid; host state is in host_vmcb.
    unsafe { asm::microv_world_switch(&mut args) };
    let exit_code_field = (vs.vmcb_va as *const u8)
        .wrapping_add(offset_of!(Vmcb, control) + offset_of!(microv_arch::svm::Control, exit_code))
        .cast::<u64>();
    // SAFETY: the private VMCB is mapped; VMRUN wrote the exit code behind
    // the compiler's back (the reference the caller checked is not used
    // again), hence a volatile read through a fresh pointer.
    let exit_code = unsafe { core::ptr::read_volatile(exit_code_field) };
    copy_out(vs, &vmcb_spans::CONTROL_EXIT);
    exit_code
}

/// One VM entry on Intel: the private VMCB into the VMCS, the run, the exit
/// back into the private VMCB and out to the shadow; the exit code. A
/// state VMX cannot enter ends as an invalid-state exit (the extension
/// stops MicroV), with the reason in the log.
fn vmx_switch(pc: &mut PerCpu, vs: &vs::Vs, xcr0: u64) -> u64 {
    let Some(mut state) = pc.vmx else {
        return exit::INVALID;
    };
    let host_msrs = host_syscall_msrs();
    let tss_slot = pc.gdt.as_mut_ptr().wrapping_add(usize::from(selector::TSS >> 3));
    let reload = || {
        // SAFETY: this CPU's GDT slot of its own TSS, in its PerCpu page;
        // nothing else touches it during the world switch.
        unsafe { *tss_slot &= !TSS_BUSY };
        // SAFETY: ring 0; MicroV's TSS descriptor, just marked available.
        unsafe {
            core::arch::asm!("ltr {0:x}", in(reg) selector::TSS, options(nostack, preserves_flags))
        };
    };
    if pc.nmi_pending && super::vmx::deliver_nmi(vs.vmcb_va) {
        pc.nmi_pending = false;
    }
    let result = super::vmx::run(
        &mut state,
        vs.vmcb_va,
        vs.regs_va,
        vs.fpu_va,
        xcr0,
        &host_msrs,
        &reload,
    );
    pc.vmx = Some(state);
    match result {
        Ok(code) => {
            copy_out(vs, &vmcb_spans::CONTROL_EXIT);
            code
        }
        Err(e) => {
            e.log(pc.index);
            exit::INVALID
        }
    }
}

/// Runs this CPU's root vCPU state once.
fn run_root(pc: &mut PerCpu, id: u64, vs: &vs::Vs) -> Result<u64, SysStatus> {
    let xcr0 = regs_xcr0(vs);
    let vmcb = copy_in(pc, vs);
    let owner = Owner::Root(pc.root_tables);
    if let Err(e) = vmcb_check::check(&vmcb.control, xcr0, pc.limits.xcr0, owner) {
        log!(
            "cpu {}: refused to run vCPU state {}: {:?}",
            pc.index,
            id,
            e
        );
        return Err(SysStatus::InvalidArgument);
    }
    pc.tsc_aux.enter_root(&mut TscAuxMsr);
    let first_root_run = id == pc.root_vs && !pc.root_started;
    if first_root_run {
        // The loader's call returns as soon as the root runs: say so first.
        landing_of(pc).set_running(1);
    }
    let exit_code = if pc.vmx.is_some() {
        vmx_switch(pc, vs, xcr0)
    } else {
        switch(vs, pc, xcr0)
    };
    if first_root_run && exit_code != exit::INVALID {
        // The root ran: its RAX is its own now, not the loader's status.
        pc.root_started = true;
    }
    Ok(exit_code)
}

/// Runs guest vCPU state `id` of VM `vm` once (the caller claimed it).
fn run_guest(pc: &mut PerCpu, id: u64, vs: &vs::Vs, vm: u64) -> Result<u64, SysStatus> {
    let (tables, generation) = super::guest::enter(vm)?;
    let done = run_guest_on(pc, id, vs, tables, generation);
    super::guest::leave(vm);
    done
}

fn run_guest_on(
    pc: &mut PerCpu,
    id: u64,
    vs: &vs::Vs,
    tables: RootTables,
    generation: u64,
) -> Result<u64, SysStatus> {
    let cpu = pc.index;
    let (asid, flush) =
        vs::asid(id, &mut pc.asids, cpu, generation).ok_or(SysStatus::InvalidArgument)?;
    let xcr0 = regs_xcr0(vs);
    let raw_tsc_aux = regs_tsc_aux(vs);
    let Some(guest_tsc_aux) = tsc_aux::guest_value(raw_tsc_aux) else {
        log!(
            "cpu {}: refused to run guest vCPU state {}: TSC_AUX {:#x}",
            pc.index,
            id,
            raw_tsc_aux
        );
        return Err(SysStatus::InvalidArgument);
    };
    let vmcb = guest_copy_in(pc, vs, tables, asid, flush);
    if let Err(e) = vmcb_check::check(&vmcb.control, xcr0, pc.limits.xcr0, Owner::Guest(tables)) {
        log!(
            "cpu {}: refused to run guest vCPU state {}: {:?}",
            pc.index,
            id,
            e
        );
        return Err(SysStatus::InvalidArgument);
    }
    pc.tsc_aux.enter_guest(guest_tsc_aux, &mut TscAuxMsr);
    Ok(switch(vs, pc, xcr0))
}

/// A vCPU state: this CPU's root from its per-CPU copy, others from the table.
fn lookup(pc: &PerCpu, id: u64) -> Option<vs::Vs> {
    if id == pc.root_vs {
        Some(pc.root)
    } else {
        vs::get(id)
    }
}

fn landing_of(pc: &PerCpu) -> Landing {
    // SAFETY: bring-up stored this CPU's landing page, which the loader
    // maps for MicroV's lifetime.
    unsafe { Landing::new(pc.landing) }
}

/// `VsPromote`: leaves this CPU together with every other CPU that runs
/// the root (the stop rendezvous). Returns only if refused.
pub fn stop(pc: &mut PerCpu, id: u64) -> SysStatus {
    if id != pc.root_vs {
        return SysStatus::InvalidArgument;
    }
    if let Err(e) = check_root(pc) {
        log!("cpu {}: root state cannot be loaded: {:?}", pc.index, e);
        return SysStatus::InvalidArgument;
    }
    let timeout = stop_timeout_ticks();
    let start = instr::rdtsc();
    let outcome = STOP.arrive_and_wait(&|| IN_MICROV.load(Ordering::Acquire), &mut || {
        instr::rdtsc().wrapping_sub(start) > timeout
    });
    match outcome {
        Outcome::Leave => {
            let committed = STOP.waiting();
            promote_or_halt(pc, Some(committed))
        }
        Outcome::Refused => {
            log!(
                "cpu {}: stop refused: not every CPU asked to stop",
                pc.index
            );
            SysStatus::Busy
        }
    }
}

/// This CPU's root vCPU state as it will be loaded: the shadow VMCB copied
/// into the private one (which `VMLOAD` then reads, so nothing can change
/// between the checks and the load), and a copy of the registers.
fn root_copy(pc: &mut PerCpu) -> (SaveArea, VsRegs) {
    let root = pc.root;
    let save = copy_in(pc, &root).save;
    // SAFETY: the register page is this CPU's root state's, mapped; a
    // volatile read takes one snapshot that later writes cannot change.
    let regs = unsafe { core::ptr::read_volatile(root.regs_va as *const VsRegs) };
    (save, regs)
}

fn check_root(pc: &mut PerCpu) -> Result<(), cpu_state::Refused> {
    let (save, regs) = root_copy(pc);
    cpu_state::check_tables(save.cr3, pc.entry_tables)
        .and_then(|()| cpu_state::check_promotable(&save, regs.xcr0, &pc.limits))
}

/// Puts this CPU's root vCPU state back onto the real CPU; if it cannot be
/// loaded safely, halts this CPU (stopping MicroV's use of it) instead. For
/// a stop, `together` is the number of CPUs leaving: they all finish their
/// work in hypervisor memory before any of them becomes native.
fn promote_or_halt(pc: &mut PerCpu, together: Option<u64>) -> ! {
    if pc.leaving {
        log!("cpu {}: promotion started twice; halting", pc.index);
        instr::halt_forever()
    }
    pc.leaving = true;
    let (save, regs) = root_copy(pc);
    let promotable = cpu_state::check_tables(save.cr3, pc.entry_tables)
        .and_then(|()| cpu_state::check_promotable(&save, regs.xcr0, &pc.limits));
    if let Err(e) = promotable {
        if let cpu_state::Refused::OsTables(_) = e {
            log!(
                "cpu {}: MicroV started at boot cannot hand this CPU back: the OS's page tables do not map the trampoline; halting",
                pc.index
            );
        } else {
            log!(
                "cpu {}: root state cannot be loaded ({:?}); halting",
                pc.index,
                e
            );
        }
        instr::halt_forever()
    }
    // A guest may have run last on this CPU (a failure while handling its
    // exit): the root gets its own TSC_AUX back.
    pc.tsc_aux.enter_root(&mut TscAuxMsr);
    let landing = landing_of(pc);
    let mut frame = root::promote_frame(&save, &regs.gprs);
    if pc.vmx.is_some() && !root::promote_tr_ldtr(&save, &mut frame) {
        log!(
            "cpu {}: the root's TR {:#x} or LDTR {:#x} lies beyond what MicroV can load on Intel; halting",
            pc.index,
            save.tr.selector,
            save.ldtr.selector
        );
        instr::halt_forever()
    }
    landing.set_promote(frame);
    landing.set_running(0);
    leaving(pc.index);
    log!("cpu {}: handing the CPU back to the root", pc.index);
    let vmcb_pa = match pc.vmx {
        Some(state) => {
            leave_vmx(&state, &save);
            0
        }
        None => {
            // SAFETY: ring 0; the host save area is not needed once this
            // CPU leaves.
            unsafe { instr::wrmsr(msr::VM_HSAVE_PA, 0) };
            pc.root.vmcb_pa
        }
    };
    let out = PromoteRegs {
        xcr0: regs.xcr0,
        fpu: pc.root.fpu_va,
        pat: save.g_pat,
        cr2: save.cr2,
        cr4: save.cr4,
        cr0: save.cr0,
        vmcb_pa,
        landing: pc.landing,
        entry: pc.promote_entry,
        cr3: save.cr3,
    };
    if let Some(n) = together {
        let timeout = stop_timeout_ticks();
        let start = instr::rdtsc();
        // After the commit there is no way back: a CPU that never arrives
        // (it halted) only delays the others by the timeout.
        let _ = READY.arrive_and_wait(&|| n, &mut || {
            instr::rdtsc().wrapping_sub(start) > timeout
        });
    }
    // SAFETY: every value was checked above (check_promotable), so the
    // final sequence cannot fault; the FPU area and VMCB are this CPU's root
    // vCPU state; `entry` is MicroV's private trampoline copy.
    unsafe { asm::microv_promote_final(&out) }
}

/// Intel: leaves VMX operation (the root's VMCS written back, VMX off; CR4
/// loses VMXE with the root's CR4 next) and loads what VMLOAD loads on AMD
/// but the trampoline does not: FS and GS bases, the syscall and SYSENTER
/// MSRs. From here no host code uses GS or the syscall gate.
fn leave_vmx(state: &super::vmx::VmxState, save: &SaveArea) {
    super::vmx::leave(state.root_vmcs_pa);
    let msrs = [
        (msr::FS_BASE, save.fs.base),
        (msr::GS_BASE, save.gs.base),
        (msr::KERNEL_GS_BASE, save.kernel_gs_base),
        (msr::STAR, save.star),
        (msr::LSTAR, save.lstar),
        (msr::CSTAR, save.cstar),
        (msr::SFMASK, save.sfmask),
        (msr::SYSENTER_CS, save.sysenter_cs),
        (msr::SYSENTER_ESP, save.sysenter_esp),
        (msr::SYSENTER_EIP, save.sysenter_eip),
    ];
    for (index, value) in msrs {
        // SAFETY: ring 0; the root's own values of architectural MSRs,
        // which held them before MicroV (checked canonical by VM entry).
        unsafe { instr::wrmsr(index, value) };
    }
}

/// MicroV cannot go on on this CPU: record why, make every CPU leave at its
/// next exit, and give this CPU back to the root.
pub fn fail(pc: &mut PerCpu, code: StartError, detail: u64) -> ! {
    fail_with(
        pc,
        FaultRecord {
            code: code as u32,
            vector: u32::MAX,
            error_code: 0,
            rip: 0,
            cr2: 0,
            cpl: 0,
            detail,
        },
    )
}

/// As [`fail`], with a full fault record.
pub fn fail_with(pc: &mut PerCpu, record: FaultRecord) -> ! {
    FAILED.store(record.code, Ordering::Release);
    log!(
        "cpu {}: MicroV stops: error {} (vector {:#x}, rip {:#x}, detail {:#x})",
        pc.index,
        record.code,
        record.vector,
        record.rip,
        record.detail
    );
    let l = landing_of(pc);
    l.set_fault(record);
    l.set_status(u64::from(record.code), record.detail);
    if !pc.root_started {
        // Bring-up failed: the loader's call returns the error.
        let rax = (pc.root.shadow_va as *mut u8)
            .wrapping_add(offset_of!(Vmcb, save) + offset_of!(SaveArea, rax))
            .cast::<u64>();
        // SAFETY: the shadow VMCB is this CPU's root state's, mapped; the
        // store goes into what promotion copies in next.
        unsafe { rax.write_volatile(u64::from(record.code)) };
    }
    promote_or_halt(pc, None)
}
