//! The root's local APIC writes and the code they come from: `RootFetch`
//! and `ApicWrite` (`crate::root_walk` and `crate::ipi_guard` are the
//! logic; this file maps pages and touches the APIC).

use microv_abi::launch::{MAX_CPUS, PAGE_SIZE};
use microv_abi::syscall::SysStatus;
use microv_arch::apic::{self, ICR_HIGH};
use microv_arch::mapper::{self, MapError};
use microv_arch::paging::{NO_EXECUTE, PRESENT, WRITABLE};
use microv_arch::svm::Vmcb;
use microv_arch::{instr, msr};

use super::asm;
use super::mm::{Memory, MEMORY};
use super::percpu::PerCpu;
use crate::ipi_guard::{self, ApicRefusal, MicrovCpus};
use crate::root_walk::{self, Paging, RootPhys};

/// Where MicroV maps the local APIC page, uncached (in the hypervisor's
/// hole of the address space, far above the pool).
const APIC_VA: u64 = 0xffff_8700_0000_0000;
/// Each CPU's window onto one root page, for `RootFetch`.
const WINDOW_VA: u64 = APIC_VA + 0x20_0000;
/// Page-level cache disable and write-through: the APIC page is MMIO.
const UNCACHED: u64 = (1 << 4) | (1 << 3);

/// The CPUs in MicroV, by APIC ID.
pub static CPUS: MicrovCpus<MAX_CPUS> = MicrovCpus::new();

/// This CPU (index `index`) entered MicroV.
pub fn entered(index: u64) {
    CPUS.enter(index as usize, ipi_guard::apic_id(&mut instr::cpuid));
}

/// This CPU is about to leave MicroV.
pub fn leaving(index: u64) {
    CPUS.leave(index as usize);
}

/// The local APIC page's physical address (the same on every CPU: the root
/// may not move it, `msr` policy). Read on the first CPU at start.
pub fn apic_page() -> u64 {
    // SAFETY: ring 0; APIC_BASE exists on every CPU MicroV runs on.
    unsafe { instr::rdmsr(msr::APIC_BASE) & apic::BASE_ADDRESS_MASK }
}

/// Maps the local APIC page for the microkernel (first CPU, at start).
pub fn map(mem: &mut Memory, page: u64) -> Result<(), MapError> {
    let root = mem.root_pa;
    let flags = WRITABLE | NO_EXECUTE | UNCACHED;
    mapper::map(mem, root, APIC_VA, page, 1, flags, WRITABLE)
}

fn apic_read(offset: u32) -> u32 {
    let reg = (APIC_VA + u64::from(offset)) as *const u32;
    // SAFETY: APIC_VA maps this CPU's local APIC registers (uncached);
    // `offset` is a register's (below 0x400, 16-byte aligned: checked by
    // the callers or a constant).
    unsafe { reg.read_volatile() }
}

fn apic_write(offset: u32, value: u32) {
    let reg = (APIC_VA + u64::from(offset)) as *mut u32;
    // SAFETY: as in `apic_read`; the value was checked by `ipi_guard`.
    unsafe { reg.write_volatile(value) }
}

/// `ApicWrite`: see `abi::syscall::Syscall::ApicWrite`.
pub fn write(offset: u64, value: u64, x2apic: u64) -> SysStatus {
    // SAFETY: ring 0; APIC_BASE exists on every CPU MicroV runs on.
    let base = unsafe { instr::rdmsr(msr::APIC_BASE) };
    let in_x2apic = base & apic::BASE_EXTD != 0;
    let Ok(offset) = u32::try_from(offset) else {
        return SysStatus::InvalidArgument;
    };
    if in_x2apic != (x2apic == 1) {
        return SysStatus::InvalidArgument;
    }
    let checked = ipi_guard::check_write(
        offset,
        value,
        in_x2apic,
        &mut || apic_read(ICR_HIGH),
        &mut || ipi_guard::apic_id(&mut instr::cpuid),
        &CPUS,
    );
    match checked {
        Err(ApicRefusal::BadOffset) => SysStatus::InvalidArgument,
        Err(ApicRefusal::Refused) => SysStatus::Refused,
        Ok(()) if in_x2apic => {
            let msr = apic::X2APIC_FIRST + offset / apic::REGISTER_STRIDE;
            // SAFETY: ring 0; #GP (a register the x2APIC does not have, or
            // reserved bits) is recovered from; the value was checked above.
            match unsafe { asm::microv_wrmsr_safe(msr, value) } {
                0 => SysStatus::Success,
                _ => SysStatus::Fault,
            }
        }
        Ok(()) => {
            apic_write(offset, value as u32);
            SysStatus::Success
        }
    }
}

/// Root RAM seen through this CPU's window page, one mapped page at a time.
struct Window<'a> {
    mem: &'a mut Memory,
    va: u64,
    mapped: Option<u64>,
}

impl Window<'_> {
    fn set(&mut self, entry: u64) -> bool {
        let root = self.mem.root_pa;
        let done = mapper::replace_entry(self.mem, root, self.va, 1, entry).is_ok();
        // SAFETY: ring 0; only this CPU uses its window, so dropping its
        // own TLB entry is enough.
        unsafe { instr::invlpg(self.va) };
        done
    }
}

impl RootPhys for Window<'_> {
    fn read_u64(&mut self, pa: u64) -> Option<u64> {
        let page = pa & !(PAGE_SIZE - 1);
        if self.mapped != Some(page) {
            super::guest::check_frames(self.mem, page, 1).ok()?;
            if !self.set(page | PRESENT | NO_EXECUTE) {
                return None;
            }
            self.mapped = Some(page);
        }
        let at = (self.va + (pa & (PAGE_SIZE - 1) & !7)) as *const u64;
        // SAFETY: the window maps the root RAM page `page` (checked: not
        // the pool, not device memory), read-only, on this CPU; the read
        // is aligned and inside the page. The root may change it meanwhile:
        // a volatile read takes whatever is there.
        Some(unsafe { at.read_volatile() })
    }
}

/// `RootFetch`: see `abi::syscall::Syscall::RootFetch`.
pub fn fetch(pc: &PerCpu, la: u64) -> (u64, u64) {
    // SAFETY: this CPU's root VMCB, written only by this CPU (it is in
    // the microkernel now); a snapshot of its paging registers.
    let save = unsafe { &(*(pc.root.vmcb_va as *const Vmcb)).save };
    let paging = Paging {
        cr0: save.cr0,
        cr3: save.cr3,
        cr4: save.cr4,
        efer: save.efer,
    };
    let mut mem = MEMORY.lock();
    let root = mem.root_pa;
    let va = WINDOW_VA + pc.index * PAGE_SIZE;
    // The first use creates the window's tables; later ones find it made.
    match mapper::map(&mut *mem, root, va, 0, 1, NO_EXECUTE, WRITABLE) {
        Ok(()) | Err(MapError::AlreadyMapped) => {}
        Err(_) => return (0, 0),
    }
    let mut window = Window {
        mem: &mut mem,
        va,
        mapped: None,
    };
    let mut bytes = [0u8; 8];
    let valid = root_walk::read(&mut window, &paging, la, &mut bytes);
    window.set(0);
    (u64::from_le_bytes(bytes), valid as u64)
}
