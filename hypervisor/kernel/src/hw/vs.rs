//! vCPU states: a VMCB, the guest's register page and its FPU state. The
//! VMCB and register pages are mapped into the extension, which owns all
//! policy; the FPU area stays private to the microkernel.

use microv_abi::syscall::{vs_layout, VsRegs};
use microv_arch::xsave;
use spin::Mutex;

use super::mm::{Memory, Page, MEMORY};

/// Offset of MXCSR in the legacy XSAVE area.
const XSAVE_MXCSR: u64 = 24;
const MXCSR_DEFAULT: u32 = 0x1f80;

#[derive(Clone, Copy, Debug)]
pub struct Vs {
    pub vmcb_pa: u64,
    pub vmcb_va: u64,
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

/// Allocates a state's pages: VMCB, register page, FPU area; all or none.
fn alloc_pages(mem: &mut Memory, fpu_pages: u64) -> Result<[Page; 3], VsError> {
    let vmcb = mem.alloc(1).map_err(|_| VsError::OutOfMemory)?;
    let Ok(regs) = mem.alloc(1) else {
        mem.free(vmcb, 1);
        return Err(VsError::OutOfMemory);
    };
    let Ok(fpu) = mem.alloc(fpu_pages as usize) else {
        mem.free(vmcb, 1);
        mem.free(regs, 1);
        return Err(VsError::OutOfMemory);
    };
    Ok([vmcb, regs, fpu])
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
    let [vmcb, regs, fpu] = alloc_pages(&mut mem, fpu_pages)?;
    // Both pages are mapped or neither: a page must never stay mapped into
    // the extension after it went back to the allocator.
    let pages = [(vs_layout::vmcb(id), vmcb.pa), (vs_layout::gprs(id), regs.pa)];
    if mem.map_user_pages(pages.into_iter(), true, false).is_err()
    {
        mem.free(vmcb, 1);
        mem.free(regs, 1);
        mem.free(fpu, fpu_pages as usize);
        return Err(VsError::OutOfMemory);
    }
    // SAFETY: the FPU area was just allocated (zeroed) and is ours alone; an
    // all-zero XSAVE header means "initial state", MXCSR needs its default.
    unsafe { core::ptr::write((fpu.va + XSAVE_MXCSR) as *mut u32, MXCSR_DEFAULT) };
    // SAFETY: the register page was just allocated and is not yet known to
    // the extension (its id is returned below).
    unsafe { (*(regs.va as *mut VsRegs)).xcr0 = xcr0 };
    let vs = Vs {
        vmcb_pa: vmcb.pa,
        vmcb_va: vmcb.va,
        regs_va: regs.va,
        fpu_va: fpu.va,
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
