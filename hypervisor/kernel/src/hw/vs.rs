//! vCPU states: a VMCB, the guest's general-purpose registers and its FPU
//! state. The VMCB and register pages are mapped into the extension, which
//! owns all policy; the FPU area stays private to the microkernel.

use microv_abi::syscall::vs_layout;
use spin::Mutex;

use super::mm::MEMORY;

/// Offset of MXCSR in the legacy XSAVE area.
const XSAVE_MXCSR: usize = 24;
const MXCSR_DEFAULT: u32 = 0x1f80;

#[derive(Clone, Copy, Debug)]
pub struct Vs {
    pub vmcb_pa: u64,
    pub vmcb_va: u64,
    pub gprs_va: u64,
    pub fpu_va: u64,
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

/// Creates a vCPU state; returns its id.
pub fn create(root_of: Option<u64>) -> Result<u64, VsError> {
    let mut states = STATES.lock();
    let id = states
        .iter()
        .position(Option::is_none)
        .ok_or(VsError::TooMany)? as u64;
    let mut mem = MEMORY.lock();
    let mut pages = [None; 3];
    for slot in pages.iter_mut() {
        match mem.alloc(1) {
            Ok(p) => *slot = Some(p),
            Err(_) => break,
        }
    }
    let [Some(vmcb), Some(gprs), Some(fpu)] = pages else {
        pages.into_iter().flatten().for_each(|p| mem.free(p, 1));
        return Err(VsError::OutOfMemory);
    };
    // A failed mapping leaves at most page-table pages behind, which stay
    // usable for the next vCPU state at the same address.
    if mem
        .map_user(vs_layout::vmcb(id), vmcb.pa, 1, true, false)
        .is_err()
        || mem
            .map_user(vs_layout::gprs(id), gprs.pa, 1, true, false)
            .is_err()
    {
        [vmcb, gprs, fpu].into_iter().for_each(|p| mem.free(p, 1));
        return Err(VsError::OutOfMemory);
    }
    // SAFETY: the FPU page was just allocated (zeroed) and is ours alone; an
    // all-zero XSAVE header means "initial state", MXCSR needs its default.
    unsafe { core::ptr::write((fpu.va as usize + XSAVE_MXCSR) as *mut u32, MXCSR_DEFAULT) };
    let vs = Vs {
        vmcb_pa: vmcb.pa,
        vmcb_va: vmcb.va,
        gprs_va: gprs.va,
        fpu_va: fpu.va,
        root_of,
    };
    if let Some(slot) = states.get_mut(id as usize) {
        *slot = Some(vs);
    }
    Ok(id)
}

/// Looks up a vCPU state (takes the global lock: keep off the exit path).
pub fn get(id: u64) -> Option<Vs> {
    STATES
        .lock()
        .get(usize::try_from(id).ok()?)
        .copied()
        .flatten()
}
