//! Bringing a CPU under MicroV, running vCPUs on it, and handing it back.

use core::sync::atomic::Ordering;

use microv_abi::launch::{
    self, BootInfo, CpuLanding, FaultRecord, BOOT_INFO_MAGIC, EXTENSION_STACKS,
    EXTENSION_STACK_SIZE, EXTENSION_STACK_STRIDE, LAUNCH_VERSION, MAX_CHUNKS, MAX_CPUS, PAGE_SIZE,
    POOL_VA, SEGMENT_W, SEGMENT_X,
};
use microv_abi::syscall::{Upcall, EXTENSION_BOOT_INFO};
use microv_abi::StartError;
use microv_arch::descriptor::{
    attrib, encode_code_data, encode_interrupt_gate, encode_tss, selector,
};
use microv_arch::instr;
use microv_arch::msr;
use microv_arch::svm::Vmcb;

use super::asm;
use super::log::{self, log};
use super::mm::MEMORY;
use super::percpu::{self, PerCpu, SwitchArgs};
use super::vs;
use super::FAILED;
use crate::root;

const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const CR4_CET: u64 = 1 << 23;
const CR4_OSXSAVE: u64 = 1 << 18;
/// RFLAGS bits cleared on `syscall`: TF, IF, DF, NT, AC.
const SFMASK: u64 = 0x4_7700;
const IST_STACK_PAGES: usize = 4;
const EXT_STACK_PAGES: u64 = EXTENSION_STACK_SIZE / PAGE_SIZE;

fn boot_info(landing: &CpuLanding) -> Option<&'static BootInfo> {
    // SAFETY: the loader put the boot info in the pool at this address; it
    // is read-only for MicroV's lifetime.
    let bi = unsafe { (landing.boot_info as *const BootInfo).as_ref()? };
    (bi.magic == BOOT_INFO_MAGIC
        && bi.launch_version == LAUNCH_VERSION
        && bi.chunk_count as usize <= MAX_CHUNKS
        && bi.cpu_count as usize <= MAX_CPUS
        && bi.free_offset <= bi.pool_size())
    .then_some(bi)
}

/// Shared set-up, done by the first CPU: the frame allocator, the log, and
/// the extension's image in its address space.
pub fn global_init(landing: &CpuLanding) -> Result<(), StartError> {
    let bi = boot_info(landing).ok_or(StartError::BadImage)?;
    *log::RING.lock() = (bi.log, bi.log_size);
    let mut mem = MEMORY.lock();
    mem.boot = bi;
    mem.root_pa = landing.kernel_cr3;
    let total = (bi.pool_size() / PAGE_SIZE) as usize;
    let reserved = bi.free_offset.div_ceil(PAGE_SIZE) as usize;
    mem.frames
        .init(total, reserved)
        .map_err(|_| StartError::PoolTooSmall)?;
    mem.harden(bi).map_err(|_| StartError::OutOfMemory)?;

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
    let bi_offset = landing.boot_info - POOL_VA;
    let bi_pa = bi.pool_pa(bi_offset).ok_or(StartError::BadImage)?;
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

/// Returns to the loader before anything on this CPU was changed.
pub fn early_return(landing: &mut CpuLanding, status: u64) -> ! {
    landing.status = status;
    landing.running = 0;
    landing.promote = root::early_frame(&landing.captured, status);
    let entry = landing.promote_entry;
    // SAFETY: the trampoline's promotion routine and the landing page are
    // mapped at the same address on both sides; CR0/CR4/TR/GS are unchanged.
    unsafe { asm::microv_promote_jump(landing as *mut CpuLanding as u64, 0, entry) }
}

fn alloc_va(pages: usize) -> Result<super::mm::Page, StartError> {
    MEMORY
        .lock()
        .alloc(pages)
        .map_err(|_| StartError::OutOfMemory)
}

/// Per-CPU bring-up, then the first upcall into the extension.
pub fn bring_up(landing: &mut CpuLanding) -> ! {
    let index = u64::from(landing.index);
    let percpu_page = match alloc_va(1) {
        Ok(p) => p,
        Err(e) => early_return(landing, e as u64),
    };
    let idt = alloc_va(1);
    let ist = alloc_va(IST_STACK_PAGES);
    let host_vmcb = alloc_va(1);
    let hsave = alloc_va(1);
    let ext_stack = alloc_va(EXT_STACK_PAGES as usize);
    let root_vs = vs::create(Some(index));
    let (Ok(idt), Ok(ist), Ok(host_vmcb), Ok(hsave), Ok(ext_stack), Ok(root_vs)) =
        (idt, ist, host_vmcb, hsave, ext_stack, root_vs)
    else {
        early_return(landing, StartError::OutOfMemory as u64)
    };
    let ext_stack_base = EXTENSION_STACKS + index * EXTENSION_STACK_STRIDE;
    if MEMORY
        .lock()
        .map_user(ext_stack_base, ext_stack.pa, EXT_STACK_PAGES, true, false)
        .is_err()
    {
        early_return(landing, StartError::OutOfMemory as u64)
    }
    let Some(root) = vs::get(root_vs) else {
        early_return(landing, StartError::KernelFault as u64)
    };
    // SAFETY: CR4 is readable in ring 0.
    if unsafe { instr::read_cr4() } & CR4_OSXSAVE == 0 {
        early_return(landing, StartError::UnsupportedCpuState as u64)
    }

    // Capture what VMSAVE covers (FS, GS, TR, LDTR, syscall MSRs) exactly
    // as the OS had it; the rest comes from the landing page.
    // SAFETY: EFER.SVME is set (trampoline); the VMCB page is ours.
    unsafe { instr::vmsave(root.vmcb_pa) };
    // SAFETY: the VMCB page is ours and mapped at vmcb_va.
    let vmcb = unsafe { &mut *(root.vmcb_va as *mut Vmcb) };
    if let Err((e, detail)) = root::root_save_area(&landing.captured, &mut vmcb.save, 0) {
        landing.detail = detail;
        early_return(landing, e as u64)
    }

    // This CPU's descriptor tables and per-CPU page.
    // SAFETY: the page was just allocated for this CPU.
    let pc = unsafe { &mut *(percpu_page.va as *mut PerCpu) };
    pc.self_va = percpu_page.va;
    pc.kernel_rsp = landing.kernel_stack_top;
    pc.ext_stack_top = ext_stack_base + EXTENSION_STACK_SIZE;
    pc.index = index;
    pc.landing = landing as *mut CpuLanding as u64;
    pc.root_vs = root_vs;
    pc.root = root;
    pc.host_vmcb_pa = host_vmcb.pa;
    pc.promote_entry = landing.promote_entry;
    pc.root_started = false;
    {
        let mem = MEMORY.lock();
        // SAFETY: boot is set by global_init.
        pc.ext_entry = unsafe { mem.boot.as_ref() }.map_or(0, |b| b.extension.entry);
    }
    let code = attrib::TYPE_CODE_RX_ACCESSED
        | attrib::S
        | attrib::PRESENT
        | attrib::LONG
        | attrib::GRANULARITY;
    let data = attrib::TYPE_DATA_RW_ACCESSED
        | attrib::S
        | attrib::PRESENT
        | attrib::DB
        | attrib::GRANULARITY;
    pc.gdt = [0; selector::GDT_ENTRIES];
    pc.gdt[1] = encode_code_data(code);
    pc.gdt[2] = encode_code_data(data);
    pc.gdt[4] = encode_code_data(data | attrib::dpl(3));
    pc.gdt[5] = encode_code_data(code | attrib::dpl(3));
    let tss_base = &pc.tss as *const _ as u64;
    let [tss_low, tss_high] = encode_tss(tss_base, core::mem::size_of_val(&pc.tss) as u32 - 1);
    pc.gdt[6] = tss_low;
    pc.gdt[7] = tss_high;
    pc.tss.ist[0] = ist.va + (IST_STACK_PAGES as u64) * PAGE_SIZE;
    pc.tss.rsp[0] = landing.kernel_stack_top;
    pc.tss.iomap_base = core::mem::size_of_val(&pc.tss) as u16;
    // SAFETY: the IDT page is ours; 32 gates of 16 bytes.
    let gates = unsafe { &mut *(idt.va as *mut [[u64; 2]; 256]) };
    for (v, gate) in gates.iter_mut().enumerate().take(32) {
        *gate = encode_interrupt_gate(
            asm::microv_exception_stubs as *const () as u64 + 16 * v as u64,
            selector::KERNEL_CODE,
            1,
        );
    }
    write_dtr(
        &mut pc.gdtr,
        (8 * selector::GDT_ENTRIES - 1) as u16,
        pc.gdt.as_ptr() as u64,
    );
    write_dtr(&mut pc.idtr, 4095, idt.va);
    // From here `fail` can find this CPU's data; the OS's GS base is safe in
    // the root vCPU state (VMSAVE above) and comes back on promotion.
    // SAFETY: ring 0; the page is this CPU's PerCpu.
    unsafe { instr::wrmsr(msr::GS_BASE, percpu_page.va) };

    if let Some(code) = injected_failure(index) {
        fail(code, index)
    }

    // From here the CPU runs on MicroV's state; failures go through `fail`,
    // which restores the root from its vCPU state.
    // SAFETY: ring 0; each value below is MicroV's own and valid: CR4 keeps
    // the OS's paging features minus SMAP/PKE/CET (the microkernel reads
    // extension memory), the GDT/IDT/TSS were built above, GS points at
    // this CPU's page, and the syscall MSRs at the gate.
    unsafe {
        let cr4 = instr::read_cr4() & !(CR4_SMAP | CR4_PKE | CR4_CET);
        instr::write_cr4(cr4);
        asm::microv_load_host_segments(pc.gdtr.as_ptr(), pc.idtr.as_ptr());
        instr::wrmsr(msr::GS_BASE, percpu_page.va);
        instr::wrmsr(msr::KERNEL_GS_BASE, 0);
        instr::wrmsr(msr::FS_BASE, 0);
        instr::wrmsr(
            msr::STAR,
            (u64::from(selector::USER_BASE) << 48) | (u64::from(selector::KERNEL_CODE) << 32),
        );
        instr::wrmsr(msr::LSTAR, asm::microv_syscall_entry as *const () as u64);
        instr::wrmsr(msr::CSTAR, 0);
        instr::wrmsr(msr::SFMASK, SFMASK);
        instr::wrmsr(msr::EFER, instr::rdmsr(msr::EFER) | msr::efer::SCE);
        instr::vmsave(host_vmcb.pa);
        instr::wrmsr(msr::VM_HSAVE_PA, hsave.pa);
    }
    log!("cpu {}: microkernel ready", index);
    // SAFETY: the per-CPU state is complete; the extension's entry and stack are mapped.
    unsafe {
        asm::microv_enter_extension(
            Upcall::Bootstrap as u64,
            index,
            root_vs,
            u64::from(cpu_count(landing)),
        )
    }
}

fn cpu_count(landing: &CpuLanding) -> u32 {
    boot_info(landing).map_or(0, |b| b.cpu_count)
}

fn injected_failure(index: u64) -> Option<StartError> {
    let flags = MEMORY.lock().boot_flags();
    let wanted = (flags >> launch::boot_flags::FAIL_CPU_SHIFT) & 0xff;
    (flags & launch::boot_flags::FAIL_CPU != 0 && wanted == index)
        .then_some(StartError::InjectedFailure)
}

fn write_dtr(buf: &mut [u8; 16], limit: u16, base: u64) {
    let mut bytes = [0u8; 16];
    let (l, b) = bytes.split_at_mut(2);
    l.copy_from_slice(&limit.to_le_bytes());
    if let Some(dst) = b.get_mut(..8) {
        dst.copy_from_slice(&base.to_le_bytes());
    }
    *buf = bytes;
}

/// Runs vCPU state `id` on this CPU until it exits, then hands the exit to
/// the extension. Never returns.
pub fn run(id: u64) -> Result<core::convert::Infallible, microv_abi::syscall::SysStatus> {
    let pc = percpu::current();
    let vs = lookup(pc, id).ok_or(microv_abi::syscall::SysStatus::InvalidArgument)?;
    if vs.root_of.is_some_and(|cpu| cpu != pc.index) {
        return Err(microv_abi::syscall::SysStatus::InvalidArgument);
    }
    let first_root_run = id == pc.root_vs && !pc.root_started;
    if first_root_run {
        // The loader's call returns as soon as the root runs: say so first.
        if let Some(l) = landing_of(pc) {
            l.running = 1;
        }
    }
    let mut args = SwitchArgs {
        vmcb_pa: vs.vmcb_pa,
        host_vmcb_pa: pc.host_vmcb_pa,
        gprs: vs.gprs_va as *mut [u64; 16],
        fpu: vs.fpu_va as *mut u8,
    };
    // SAFETY: the VMCB, register page and FPU area belong to this vCPU state;
    // the extension configured the VMCB; host state is in host_vmcb.
    unsafe { asm::microv_world_switch(&mut args) };
    // SAFETY: the VMCB page is this vCPU state's.
    let exit_code = unsafe { (*(vs.vmcb_va as *const Vmcb)).control.exit_code };
    if first_root_run && exit_code != microv_arch::svm::exit::INVALID {
        // The root ran: its RAX is its own now, not the loader's status.
        pc.root_started = true;
    }
    if FAILED.load(Ordering::Acquire) != 0 {
        // MicroV is going down: give the CPU back without handling the exit,
        // so the root re-executes the intercepted instruction natively.
        promote(pc.root_vs)
    }
    // SAFETY: the extension's entry and this CPU's stack are mapped.
    unsafe { asm::microv_enter_extension(Upcall::Exit as u64, pc.index, id, 0) }
}

/// A vCPU state: this CPU's root from its per-CPU copy, others from the table.
fn lookup(pc: &PerCpu, id: u64) -> Option<vs::Vs> {
    if id == pc.root_vs {
        Some(pc.root)
    } else {
        vs::get(id)
    }
}

fn landing_of(pc: &PerCpu) -> Option<&'static mut CpuLanding> {
    // SAFETY: the landing page stays mapped for MicroV's lifetime.
    unsafe { (pc.landing as *mut CpuLanding).as_mut() }
}

/// Puts this CPU's root vCPU state back onto the real CPU. Never returns.
pub fn promote(id: u64) -> ! {
    let pc = percpu::current();
    let (Some(vs), Some(landing)) = (lookup(pc, id), landing_of(pc)) else {
        log!("cpu {}: no root state to promote; halting", pc.index);
        instr::halt_forever()
    };
    // SAFETY: the VMCB and register pages are this vCPU state's.
    let (save, gprs) = unsafe {
        (
            &(*(vs.vmcb_va as *const Vmcb)).save,
            &*(vs.gprs_va as *const [u64; 16]),
        )
    };
    landing.promote = root::promote_frame(save, gprs);
    landing.running = 0;
    let entry = pc.promote_entry;
    let landing_va = landing as *mut CpuLanding as u64;
    log!("cpu {}: handing the CPU back to the root", pc.index);
    // SAFETY: from here the CPU takes on the root's state piece by piece;
    // nothing below touches GS-relative data (VMLOAD replaces GS) and the
    // last step jumps to the trampoline mapped on both sides.
    unsafe {
        instr::vmload(vs.vmcb_pa);
        instr::wrmsr(msr::PAT, save.g_pat);
        instr::wrmsr(msr::VM_HSAVE_PA, 0);
        core::arch::asm!("mov dr7, {}", in(reg) save.dr7, options(nostack));
        instr::write_cr2(save.cr2);
        instr::write_cr0(save.cr0);
        instr::write_cr4(save.cr4);
        asm::microv_promote_jump(landing_va, vs.fpu_va, entry)
    }
}

/// MicroV cannot go on on this CPU: record why, make every CPU leave at its
/// next exit, and give this CPU back to the root.
pub fn fail(code: StartError, detail: u64) -> ! {
    fail_with(FaultRecord {
        code: code as u32,
        vector: u32::MAX,
        error_code: 0,
        rip: 0,
        cr2: 0,
        cpl: 0,
        detail,
    })
}

/// As [`fail`], with a full fault record.
pub fn fail_with(record: FaultRecord) -> ! {
    FAILED.store(record.code, Ordering::Release);
    let pc = percpu::current();
    log!(
        "cpu {}: MicroV stops: error {} (vector {:#x}, rip {:#x}, detail {:#x})",
        pc.index,
        record.code,
        record.vector,
        record.rip,
        record.detail
    );
    if let Some(l) = landing_of(pc) {
        l.fault = record;
        l.status = u64::from(record.code);
        l.detail = record.detail;
    }
    if !pc.root_started {
        // Bring-up failed: the loader's call returns the error.
        if let Some(vs) = lookup(pc, pc.root_vs) {
            // SAFETY: the VMCB page is this CPU's root vCPU state.
            unsafe { (*(vs.vmcb_va as *mut Vmcb)).save.rax = u64::from(record.code) };
        }
    }
    promote(pc.root_vs)
}
