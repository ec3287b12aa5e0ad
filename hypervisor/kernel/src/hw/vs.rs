//! vCPU states: a VMCB, the guest's register page and its FPU state. The
//! extension owns all policy and edits a *shadow* VMCB and the register
//! page, both mapped into it; the VMCB the CPU runs is private to the
//! microkernel, which copies the shadow in, checks the copy and runs it
//! (so no other CPU can change what was checked), and copies it back out
//! after the exit. The FPU area is private too.

use microv_abi::syscall::{vs_layout, VsRegs};
use microv_arch::xsave;
use spin::Mutex;

use super::mm::{Memory, Page, MEMORY};

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
}

const NO_VS: Option<Vs> = None;
static STATES: Mutex<[Option<Vs>; vs_layout::MAX_VS as usize]> =
    Mutex::new([NO_VS; vs_layout::MAX_VS as usize]);

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
        ([Some(vmcb), Some(shadow), Some(regs)], Some(fpu)) => Ok(Pages { vmcb, shadow, regs, fpu }),
        _ => {
            singles.into_iter().flatten().for_each(|p| mem.free(p, 1));
            Err(VsError::OutOfMemory)
        }
    }
}

/// Creates a vCPU state with an FPU area of `fpu_pages` pages and XCR0
/// `xcr0`; returns its id.
pub fn create(root_of: Option<u64>, fpu_pages: u64, xcr0: u64) -> Result<u64, VsError> {
    let mut states = STATES.lock();
    let id = states
        .iter()
        .position(Option::is_none)
        .ok_or(VsError::TooMany)? as u64;
    let mut mem = MEMORY.lock();
    let p = alloc_pages(&mut mem, fpu_pages)?;
    let user = [(vs_layout::vmcb(id), p.shadow.pa), (vs_layout::gprs(id), p.regs.pa)];
    if mem.map_user_pages(user.into_iter(), true, false).is_err() {
        // The two user pages may sit in another CPU's TLB for a moment:
        // they are never reused (leaked); the private ones go back.
        mem.free(p.vmcb, 1);
        mem.free(p.fpu, fpu_pages as usize);
        return Err(VsError::OutOfMemory);
    }
    // SAFETY: the FPU area was just allocated (zeroed) and is ours alone; an
    // all-zero XSAVE header means "initial state", MXCSR needs its default.
    unsafe { core::ptr::write((p.fpu.va + XSAVE_MXCSR) as *mut u32, MXCSR_DEFAULT) };
    // SAFETY: the register page was just allocated and zeroed (a valid
    // VsRegs); the extension learns its id only when this returns.
    unsafe { (*(p.regs.va as *mut VsRegs)).xcr0 = xcr0 };
    let vs = Vs {
        vmcb_pa: p.vmcb.pa,
        vmcb_va: p.vmcb.va,
        shadow_va: p.shadow.va,
        regs_va: p.regs.va,
        fpu_va: p.fpu.va,
        fpu_pages,
        root_of,
    };
    if let Some(slot) = states.get_mut(id as usize) {
        *slot = Some(vs);
    }
    Ok(id)
}

/// XCR0 of a new non-root vCPU: x87 only, as after reset.
pub const RESET_XCR0: u64 = xsave::X87;

/// Looks up a vCPU state (takes the global lock: keep off the exit path).
pub fn get(id: u64) -> Option<Vs> {
    STATES
        .lock()
        .get(usize::try_from(id).ok()?)
        .copied()
        .flatten()
}
