//! Micro VMs as the microkernel keeps them: each VM's nested page tables
//! and the permission maps every guest shares (intercept everything). The
//! checks and the table logic are `crate::guest_vm`; this is the table of
//! VMs, the pool pages and the syscalls.

use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::launch::{MAX_RAM_RANGES, PAGE_SIZE};
use microv_abi::syscall::SysStatus;
use microv_arch::mapper::MapError;
use microv_arch::paging::ENTRIES;
use microv_arch::svm::{IOPM_SIZE, MSRPM_SIZE};
use spin::Mutex;

use super::mm::{Memory, Page, MEMORY};
use crate::guest_vm::{self, Refusal, RootMemory, MAX_VMS};
use crate::vmcb_check::RootTables;

/// One micro VM.
#[derive(Clone, Copy, Debug)]
struct Vm {
    n_cr3: u64,
    /// Bumped at every unmap: vCPUs flush their TLB entries before they
    /// run again.
    generation: u64,
    /// vCPU states that belong to it.
    vcpus: u32,
    /// Of those, how many are running on some CPU now.
    running: u32,
}

struct Vms {
    slots: [Option<Vm>; MAX_VMS],
    /// The MSR and I/O permission maps every guest uses: all ones, so every
    /// MSR access and every port exits. Built at the first `VmCreate`.
    maps: Option<(u64, u64)>,
}

static VMS: Mutex<Vms> = Mutex::new(Vms {
    slots: [None; MAX_VMS],
    maps: None,
});

/// Mapping generations, shared by all VMs so that none repeats.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

fn page_of(mem: &Memory, pa: u64) -> Option<Page> {
    let bi = mem.boot()?;
    let offset = bi.pool_offset(pa)?;
    Some(Page {
        offset,
        pa,
        va: microv_abi::launch::POOL_VA + offset,
    })
}

/// Permission maps with every bit set, in fresh pool pages.
fn build_maps(mem: &mut Memory) -> Result<(u64, u64), SysStatus> {
    let mut filled = |bytes: usize| -> Result<u64, SysStatus> {
        let count = bytes.div_ceil(PAGE_SIZE as usize);
        let page = mem.alloc(count).map_err(|_| SysStatus::OutOfMemory)?;
        // SAFETY: the pages were just allocated, contiguous, for this one
        // use; they are never freed or mapped to ring 3.
        unsafe { core::ptr::write_bytes(page.va as *mut u8, 0xff, count * PAGE_SIZE as usize) };
        Ok(page.pa)
    };
    Ok((filled(MSRPM_SIZE)?, filled(IOPM_SIZE)?))
}

/// `VmCreate`: a VM with empty tables; its id.
pub fn create() -> Result<u64, SysStatus> {
    let mut vms = VMS.lock();
    let slot = vms
        .slots
        .iter()
        .position(Option::is_none)
        .ok_or(SysStatus::OutOfMemory)?;
    let mut mem = MEMORY.lock();
    if vms.maps.is_none() {
        vms.maps = Some(build_maps(&mut mem)?);
    }
    let root = mem.alloc(1).map_err(|_| SysStatus::OutOfMemory)?;
    drop(mem);
    if let Some(s) = vms.slots.get_mut(slot) {
        *s = Some(Vm {
            n_cr3: root.pa,
            generation: next_generation(),
            vcpus: 0,
            running: 0,
        });
    }
    Ok(slot as u64)
}

fn vm_mut(vms: &mut Vms, id: u64) -> Result<&mut Vm, SysStatus> {
    usize::try_from(id)
        .ok()
        .and_then(|i| vms.slots.get_mut(i))
        .and_then(Option::as_mut)
        .ok_or(SysStatus::InvalidArgument)
}

/// `VmDestroy`: frees the VM's tables; refused while it has vCPU states.
pub fn destroy(id: u64) -> SysStatus {
    let mut vms = VMS.lock();
    let vm = match vm_mut(&mut vms, id) {
        Ok(vm) => *vm,
        Err(e) => return e,
    };
    if vm.vcpus != 0 {
        return SysStatus::Busy;
    }
    let mut mem = MEMORY.lock();
    guest_vm::free_tables(&mut *mem, vm.n_cr3, &mut |mem: &mut Memory, pa| {
        if let Some(p) = page_of(mem, pa) {
            mem.free(p, 1);
        }
    });
    if let Some(s) = usize::try_from(id).ok().and_then(|i| vms.slots.get_mut(i)) {
        *s = None;
    }
    SysStatus::Success
}

fn refusal(r: Refusal) -> SysStatus {
    match r {
        Refusal::Range => SysStatus::InvalidArgument,
        Refusal::NotRam | Refusal::Pool => SysStatus::Refused,
    }
}

fn map_error(e: MapError) -> SysStatus {
    match e {
        MapError::OutOfMemory => SysStatus::OutOfMemory,
        MapError::AlreadyMapped => SysStatus::Busy,
        MapError::BadTable | MapError::Misaligned => SysStatus::InvalidArgument,
    }
}

/// Checks root frames against the boot info's RAM map and the pool.
pub fn check_frames(mem: &Memory, hpa: u64, pages: u64) -> Result<(), SysStatus> {
    let bi = mem.boot().ok_or(SysStatus::InvalidArgument)?;
    let chunks = bi.chunks.get(..bi.chunk_count as usize).unwrap_or_default();
    let ram_count = (bi.ram_count as usize).min(MAX_RAM_RANGES);
    let ram = bi.ram.get(..ram_count).unwrap_or_default();
    let root = RootMemory {
        pool: chunks,
        ram,
        max_pa: super::root_vm::max_pa().ok_or(SysStatus::InvalidArgument)?,
    };
    guest_vm::check_frames(&root, hpa, pages).map_err(refusal)
}

/// `VmMap`: see `abi::syscall::Syscall::VmMap` for the arguments.
pub fn map(vm_pages: u64, gpa_access: u64, hpa: u64) -> SysStatus {
    let (id, pages) = microv_abi::run::split_map_r11(vm_pages);
    let gpa = gpa_access & !(PAGE_SIZE - 1);
    let access = gpa_access & (PAGE_SIZE - 1);
    let flags = match guest_vm::leaf_flags(access)
        .and_then(|f| guest_vm::check_guest_range(gpa, pages).map(|_| f))
    {
        Ok(f) => f,
        Err(r) => return refusal(r),
    };
    let mut vms = VMS.lock();
    let n_cr3 = match vm_mut(&mut vms, id) {
        Ok(vm) => vm.n_cr3,
        Err(e) => return e,
    };
    let mut mem = MEMORY.lock();
    if let Err(e) = check_frames(&mem, hpa, pages) {
        return e;
    }
    match guest_vm::map_range(&mut *mem, n_cr3, gpa, hpa, pages, flags) {
        Ok(()) => SysStatus::Success,
        Err(e) => map_error(e),
    }
}

/// `VmUnmap`: refused while a vCPU of the VM runs; every vCPU flushes its
/// TLB entries before it runs again.
pub fn unmap(vm_pages: u64, gpa: u64) -> SysStatus {
    let (id, pages) = microv_abi::run::split_map_r11(vm_pages);
    if let Err(r) = guest_vm::check_guest_range(gpa, pages) {
        return refusal(r);
    }
    let mut vms = VMS.lock();
    let vm = match vm_mut(&mut vms, id) {
        Ok(vm) => vm,
        Err(e) => return e,
    };
    if vm.running != 0 {
        return SysStatus::Busy;
    }
    let mut mem = MEMORY.lock();
    let done = guest_vm::unmap_range(&mut *mem, vm.n_cr3, gpa, pages);
    vm.generation = next_generation();
    match done {
        Ok(()) => SysStatus::Success,
        Err(e) => map_error(e),
    }
}

/// Counts a new vCPU state into VM `id`.
pub fn attach(id: u64) -> Result<(), SysStatus> {
    let mut vms = VMS.lock();
    let vm = vm_mut(&mut vms, id)?;
    vm.vcpus += 1;
    Ok(())
}

/// Counts a destroyed vCPU state out of VM `id`.
pub fn detach(id: u64) {
    if let Ok(vm) = vm_mut(&mut VMS.lock(), id) {
        vm.vcpus = vm.vcpus.saturating_sub(1);
    }
}

/// What a guest vCPU of VM `id` runs on, and the VM's mapping generation;
/// counts the vCPU as running until [`leave`].
pub fn enter(id: u64) -> Result<(RootTables, u64), SysStatus> {
    let mut vms = VMS.lock();
    let (msrpm, iopm) = vms.maps.ok_or(SysStatus::InvalidArgument)?;
    let vm = vm_mut(&mut vms, id)?;
    vm.running += 1;
    Ok((
        RootTables {
            n_cr3: vm.n_cr3,
            iopm,
            msrpm,
        },
        vm.generation,
    ))
}

/// The vCPU of VM `id` that [`enter`] counted has stopped running.
pub fn leave(id: u64) {
    if let Ok(vm) = vm_mut(&mut VMS.lock(), id) {
        vm.running = vm.running.saturating_sub(1);
    }
}

const _: () = assert!(ENTRIES == 512);
