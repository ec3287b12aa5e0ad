//! vCPU states: a VMCB, the guest's register page and its FPU state. The
//! extension owns all policy and edits a *shadow* VMCB and the register
//! page, both mapped into it; the VMCB the CPU runs is private to the
//! microkernel, which copies the shadow in, checks the copy and runs it
//! (so no other CPU can change what was checked), and copies it back out
//! after the exit. The FPU area is private too.

use core::sync::atomic::{AtomicU64, Ordering};

use microv_abi::syscall::{vs_layout, SysStatus, VsRegs};
use microv_arch::mapper;
use microv_arch::xsave;
use spin::Mutex;

use super::mm::{Memory, Page, MEMORY};
use crate::guest_vm::VcpuAsid;

/// Offset of MXCSR in the legacy XSAVE area.
const XSAVE_MXCSR: u64 = 24;
const MXCSR_DEFAULT: u32 = 0x1f80;

#[derive(Clone, Copy, Debug)]
pub struct Vs {
    /// The VMCB the CPU runs: the microkernel's alone.
    pub vmcb_pa: u64,
    pub vmcb_va: u64,
    /// The VMCB the extension edits (mapped at `vs_layout::vmcb(id)`).
    pub shadow_va: u64,
    pub regs_va: u64,
    pub fpu_va: u64,
    pub fpu_pages: u64,
    /// The CPU whose root vCPU this is, if it is one: it may run only there.
    pub root_of: Option<u64>,
    /// The micro VM a guest state belongs to.
    pub vm: Option<u64>,
    /// False once destroyed: the pages stay for the next guest state.
    pub live: bool,
}

const NO_VS: Option<Vs> = None;
const MAX: usize = vs_layout::MAX_VS as usize;
static STATES: Mutex<[Option<Vs>; MAX]> = Mutex::new([NO_VS; MAX]);

/// Which CPU runs each state right now ([`NOT_RUNNING`] if none): a state
/// runs on one CPU at a time, whatever the extension asks.
static RUNNING: [AtomicU64; MAX] = [const { AtomicU64::new(NOT_RUNNING) }; MAX];
const NOT_RUNNING: u64 = u64::MAX;

/// Each guest state's ASID (private to the microkernel).
static ASIDS: Mutex<[VcpuAsid; MAX]> = Mutex::new([VcpuAsid::NEW; MAX]);

/// Bumped whenever a page the extension could reach is unmapped: each CPU
/// flushes its TLB before it next enters the extension.
pub static EXT_TLB_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Why a vCPU state could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VsError {
    OutOfMemory,
    TooMany,
}

/// A state's pages: the private VMCB, the shadow VMCB, the register page
/// and the FPU area.
struct Pages {
    vmcb: Page,
    shadow: Page,
    regs: Page,
    fpu: Page,
}

/// Allocates a state's pages; all or none.
fn alloc_pages(mem: &mut Memory, fpu_pages: u64) -> Result<Pages, VsError> {
    let mut singles = [None; 3];
    for slot in singles.iter_mut() {
        match mem.alloc(1) {
            Ok(p) => *slot = Some(p),
            Err(_) => break,
        }
    }
    let fpu = match singles {
        [Some(_), Some(_), Some(_)] => mem.alloc(fpu_pages as usize).ok(),
        _ => None,
    };
    match (singles, fpu) {
        ([Some(vmcb), Some(shadow), Some(regs)], Some(fpu)) => Ok(Pages {
            vmcb,
            shadow,
            regs,
            fpu,
        }),
        _ => {
            singles.into_iter().flatten().for_each(|p| mem.free(p, 1));
            Err(VsError::OutOfMemory)
        }
    }
}

/// Creates a root vCPU state for CPU `root_of` with an FPU area of
/// `fpu_pages` pages and XCR0 `xcr0`; returns its id.
pub fn create(root_of: u64, fpu_pages: u64, xcr0: u64) -> Result<u64, VsError> {
    let mut states = STATES.lock();
    let id = states
        .iter()
        .position(Option::is_none)
        .ok_or(VsError::TooMany)? as u64;
    let mut mem = MEMORY.lock();
    let p = alloc_pages(&mut mem, fpu_pages)?;
    let user = [
        (vs_layout::vmcb(id), p.shadow.pa),
        (vs_layout::gprs(id), p.regs.pa),
    ];
    if mem.map_user_pages(user.into_iter(), true, false).is_err() {
        // The two user pages may sit in another CPU's TLB for a moment:
        // they are never reused (leaked); the private ones go back.
        mem.free(p.vmcb, 1);
        mem.free(p.fpu, fpu_pages as usize);
        return Err(VsError::OutOfMemory);
    }
    init_fpu_and_xcr0(p.fpu.va, p.regs.va, xcr0);
    let vs = Vs {
        vmcb_pa: p.vmcb.pa,
        vmcb_va: p.vmcb.va,
        shadow_va: p.shadow.va,
        regs_va: p.regs.va,
        fpu_va: p.fpu.va,
        fpu_pages,
        root_of: Some(root_of),
        vm: None,
        live: true,
    };
    if let Some(slot) = states.get_mut(id as usize) {
        *slot = Some(vs);
    }
    Ok(id)
}

/// Creates a guest vCPU state for VM `vm` whose run page is root-physical
/// `run_pa`, reusing a destroyed guest state's pages when there is one.
pub fn create_guest(vm: u64, run_pa: u64, fpu_pages: u64) -> Result<u64, SysStatus> {
    let mut states = STATES.lock();
    let retired = states.iter().position(|s| {
        s.is_some_and(|v| !v.live && v.root_of.is_none() && v.fpu_pages == fpu_pages)
    });
    let mut mem = MEMORY.lock();
    super::guest::check_frames(&mem, run_pa, 1)?;
    let (id, mut vs) = match retired {
        Some(id) => match states.get(id).copied().flatten() {
            Some(vs) => (id as u64, vs),
            None => return Err(SysStatus::InvalidArgument),
        },
        None => {
            drop(mem);
            drop(states);
            let id = create(u64::MAX, fpu_pages, RESET_XCR0).map_err(|e| match e {
                VsError::OutOfMemory => SysStatus::OutOfMemory,
                VsError::TooMany => SysStatus::InvalidArgument,
            })?;
            states = STATES.lock();
            mem = MEMORY.lock();
            let vs = states
                .get(id as usize)
                .copied()
                .flatten()
                .ok_or(SysStatus::InvalidArgument)?;
            (id, vs)
        }
    };
    super::guest::attach(vm)?;
    if mem
        .map_user(vs_layout::run(id), run_pa, 1, true, false)
        .is_err()
    {
        super::guest::detach(vm);
        return Err(SysStatus::OutOfMemory);
    }
    reset(&vs);
    vs.root_of = None;
    vs.vm = Some(vm);
    vs.live = true;
    if let Some(slot) = states.get_mut(id as usize) {
        *slot = Some(vs);
    }
    if let Some(a) = ASIDS.lock().get_mut(id as usize) {
        *a = VcpuAsid::NEW;
    }
    Ok(id)
}

/// A guest state's pages as after creation: zeroed VMCBs and registers,
/// the FPU in its initial state, XCR0 at its reset value.
fn reset(vs: &Vs) {
    for va in [vs.vmcb_va, vs.shadow_va, vs.regs_va] {
        // SAFETY: each is one of this state's pool pages; the state is not
        // running (retired or new) and the extension does not know its id.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, 4096) };
    }
    // SAFETY: as above, for the FPU area's pages.
    unsafe { core::ptr::write_bytes(vs.fpu_va as *mut u8, 0, (vs.fpu_pages * 4096) as usize) };
    init_fpu_and_xcr0(vs.fpu_va, vs.regs_va, RESET_XCR0);
}

fn init_fpu_and_xcr0(fpu_va: u64, regs_va: u64, xcr0: u64) {
    // SAFETY: the FPU area is this state's, zeroed and not in use; an
    // all-zero XSAVE header means "initial state", MXCSR needs its default.
    unsafe { core::ptr::write((fpu_va + XSAVE_MXCSR) as *mut u32, MXCSR_DEFAULT) };
    // SAFETY: the register page is this state's, zeroed (a valid VsRegs)
    // and not in use.
    unsafe { (*(regs_va as *mut VsRegs)).xcr0 = xcr0 };
}

/// Destroys guest state `id`: refused while it runs. Its run page is
/// unmapped from the extension (every CPU flushes before it next enters
/// the extension); its other pages wait for the next guest state.
pub fn destroy(id: u64) -> SysStatus {
    let mut states = STATES.lock();
    let Some(slot) = usize::try_from(id).ok().and_then(|i| states.get_mut(i)) else {
        return SysStatus::InvalidArgument;
    };
    let Some(vs) = slot.as_mut().filter(|v| v.live && v.root_of.is_none()) else {
        return SysStatus::InvalidArgument;
    };
    let Some(claim) = RUNNING.get(id as usize) else {
        return SysStatus::InvalidArgument;
    };
    // Claim it for good: no CPU can start running it from here on.
    if claim
        .compare_exchange(
            NOT_RUNNING,
            u64::MAX - 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return SysStatus::Busy;
    }
    vs.live = false;
    if let Some(vm) = vs.vm.take() {
        super::guest::detach(vm);
    }
    let mut mem = MEMORY.lock();
    let root = mem.root_pa;
    mapper::unmap(&mut *mem, root, vs_layout::run(id), 1);
    EXT_TLB_GENERATION.fetch_add(1, Ordering::AcqRel);
    // SAFETY: ring 0; dropping this CPU's entry now, the others flush
    // before their next upcall.
    unsafe { microv_arch::instr::invlpg(vs_layout::run(id)) };
    claim.store(NOT_RUNNING, Ordering::Release);
    SysStatus::Success
}

/// Claims state `id` for this CPU (`cpu`) while it runs; false if another
/// CPU runs it or it was destroyed.
pub fn claim(id: u64, cpu: u64) -> bool {
    RUNNING.get(id as usize).is_some_and(|c| {
        c.compare_exchange(NOT_RUNNING, cpu, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// Ends [`claim`].
pub fn release(id: u64) {
    if let Some(c) = RUNNING.get(id as usize) {
        c.store(NOT_RUNNING, Ordering::Release);
    }
}

/// The ASID guest state `id` runs with on this CPU and the flush it needs.
pub fn asid(
    id: u64,
    pool: &mut crate::guest_vm::AsidPool,
    cpu: u64,
    vm_generation: u64,
) -> Option<(u32, crate::guest_vm::Flush)> {
    let mut asids = ASIDS.lock();
    let a = asids.get_mut(id as usize)?;
    pool.assign(a, cpu, vm_generation)
}

/// XCR0 of a new guest vCPU: x87 only, as after reset.
pub const RESET_XCR0: u64 = xsave::X87;

/// Looks up a live vCPU state.
pub fn get(id: u64) -> Option<Vs> {
    STATES
        .lock()
        .get(usize::try_from(id).ok()?)
        .copied()
        .flatten()
        .filter(|v| v.live)
}
