//! The application processors' way into MicroV (`crate::aps` has the plan):
//! the low block and the new MADT prepared before MicroV starts, the
//! ExitBootServices wrapper that starts the APs once the firmware is done
//! with them, and their entry.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use microv_abi::launch::{CpuLanding, PAGE_SIZE};
use microv_abi::StartError;
use microv_arch::{apic, instr, msr};
use uefi::boot::MemoryType;
use uefi::runtime::{VariableAttributes, VariableVendor};
use uefi::table::cfg::ConfigTableEntry;

use super::ap_stub;
use super::capture::capture;
use super::reserved::Reserved;
use super::start::ForAps;
use crate::acpi;
use crate::aps::{self, block, icr, state, Outcome, Params, Slot, StubOffsets};
use crate::record;

/// The SIPI vector's page must lie below 1 MiB (and above the real-mode
/// IVT and BIOS data).
const LOW_LIMIT: u64 = 0xA_0000;
/// Pages of the stack each AP runs microv.efi's entry on.
const STACK_PAGES: u64 = 4;
/// How long an AP has to answer, in milliseconds.
const ANSWER_MS: u64 = 1000;
/// Bytes kept for the lines the wrapper reports after the firmware is gone
/// (nothing can be allocated then).
const REPORT_ROOM: usize = 1024;

/// Everything the wrapper needs once boot services are gone: allocated
/// before, never freed (the OS keeps what MicroV runs on).
pub(super) struct Armed {
    low: Reserved,
    /// Kept: the APs run microv.efi's entry on these.
    _stacks: Reserved,
    madt: Reserved,
    madt_len: usize,
    old_madt: u64,
    xsdt: Option<u64>,
    rsdt: u64,
    tsc_khz: u64,
    aps: usize,
    /// `test-silent-cpu`'s slot: never sent INIT or STARTUP.
    silent: Option<usize>,
    /// The lines for [`record::CPUS_VARIABLE`], room reserved up front.
    lines: Vec<u8>,
}

impl Armed {
    fn params(&self) -> *mut Params {
        (self.low.addr() + block::PARAMS * PAGE_SIZE) as *mut Params
    }
}

/// ExitBootServices' type.
type ExitBootServices = unsafe extern "efiapi" fn(uefi_raw::Handle, usize) -> uefi_raw::Status;

/// The wrapped ExitBootServices (0: none), and what the wrapper needs.
static ORIGINAL: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicPtr<Armed> = AtomicPtr::new(core::ptr::null_mut());
/// The shared page, for the APs' entry.
static PARAMS: AtomicPtr<Params> = AtomicPtr::new(core::ptr::null_mut());

/// Prepares the APs before MicroV starts: the CPUs from the MADT (one
/// landing page each), the low block with the stub, the identity tables
/// and the mailbox, a stack each, and the MADT copy with the mailbox.
pub(super) fn prepare(for_aps: &ForAps, silent_cpu: Option<u8>) -> Result<Armed, String> {
    let rsdp = rsdp_address().ok_or("the firmware has no ACPI 2.0 tables")?;
    // SAFETY: the firmware's RSDP, identity-mapped; 36 bytes in ACPI 2.0.
    let root = acpi::rsdp(unsafe { bytes(rsdp, 36) }).map_err(|e| format!("ACPI RSDP: {e:?}"))?;
    let xsdt = root.xsdt;
    let (list, width) = match xsdt {
        Some(x) => (x, 8),
        None => (u64::from(root.rsdt), 4),
    };
    // SAFETY: the XSDT (or RSDT) the RSDP names: its header, then all of it.
    let list_bytes = unsafe { table(list) }.map_err(|e| format!("ACPI XSDT: {e:?}"))?;
    let old_madt = acpi::entries(list_bytes, width)
        .map_err(|e| format!("ACPI XSDT: {e:?}"))?
        .into_iter()
        // SAFETY: each address the XSDT lists is a table's header.
        .find(|&a| a != 0 && unsafe { bytes(a, 4) } == acpi::MADT)
        .ok_or("the ACPI tables have no MADT")?;
    // SAFETY: the MADT just found.
    let madt_bytes = unsafe { table(old_madt) }.map_err(|e| format!("MADT: {e:?}"))?;
    // The APs run microv.efi's entry (and read `PARAMS`) on the identity
    // tables, which map the low 4 GiB only.
    let entry = ap_entry as *const () as u64;
    let shared = core::ptr::addr_of!(PARAMS) as u64;
    if entry.max(shared) >= aps::IDENTITY_BYTES - (16 << 20) {
        return Err("microv.efi was loaded above 4 GiB, where its APs' start cannot reach it".into());
    }
    let bsp = instr::cpuid(1, 0).ebx >> 24;
    let ids: Vec<u32> = acpi::cpus(madt_bytes)
        .map_err(|e| format!("MADT: {e:?}"))?
        .into_iter()
        .filter(|c| c.enabled && c.apic_id != bsp)
        .map(|c| c.apic_id)
        .collect();
    if ids.len() != for_aps.landings.len() {
        return Err(format!(
            "the MADT lists {} other CPUs, the firmware started {}",
            ids.len(),
            for_aps.landings.len()
        ));
    }
    if ids.len() > aps::MAX_APS || ids.iter().any(|&id| id > 0xff) {
        return Err("more CPUs, or higher APIC IDs, than MicroV's AP start handles".into());
    }

    let low = Reserved::below(
        LOW_LIMIT,
        block::PAGES,
        MemoryType::RESERVED,
        "the APs' start block",
    )?;
    // Reserved: the APs' root VMs keep their stack pointers in it until
    // the OS gives them its own.
    let stacks = Reserved::pages(
        STACK_PAGES * ids.len() as u64,
        MemoryType::RESERVED,
        "the APs' stacks",
    )?;
    let new_madt = acpi::with_wakeup(madt_bytes, low.addr() + block::MAILBOX * PAGE_SIZE)
        .map_err(|e| format!("MADT: {e:?}"))?;
    let madt = Reserved::pages(
        (new_madt.len() as u64).div_ceil(PAGE_SIZE),
        MemoryType::ACPI_RECLAIM,
        "the new MADT",
    )?;
    // SAFETY: the pages just allocated for it, large enough.
    unsafe {
        core::ptr::copy_nonoverlapping(new_madt.as_ptr(), madt.start.as_ptr(), new_madt.len())
    };

    let code = ap_stub::microv_ap_start as *const () as u64;
    let end = ap_stub::microv_ap_end as *const () as u64;
    if !code.is_multiple_of(PAGE_SIZE) || end.saturating_sub(code) > PAGE_SIZE {
        return Err("microv.efi's AP stub is not one aligned page (a build problem)".into());
    }
    // SAFETY: microv.efi's own code (mapped, never written) into the low
    // block's first page, allocated above; they do not overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(code as *const u8, low.start.as_ptr(), (end - code) as usize)
    };
    let offset = |f: unsafe extern "C" fn()| f as *const () as u64 - code;
    let stub = StubOffsets {
        protected: offset(ap_stub::microv_ap_protected),
        long: offset(ap_stub::microv_ap_long),
        park: offset(ap_stub::microv_ap_park),
        halt: offset(ap_stub::microv_ap_halt),
    };
    let base = low.addr();
    let tables_len = aps::TABLE_PAGES * 512;
    // SAFETY: the block's table pages, ours alone, zeroed, aligned.
    let tables = unsafe {
        core::slice::from_raw_parts_mut((base + block::TABLES * PAGE_SIZE) as *mut u64, tables_len)
    };
    aps::identity_tables(tables, base + block::TABLES * PAGE_SIZE).ok_or("identity tables")?;
    let mut params = aps::params(base, stub, ap_entry as *const () as u64, for_aps.enter);
    params.slot_count = ids.len() as u32;
    // SAFETY: ring 0, natively (MicroV has not started); MTRRs exist on
    // every x86-64 CPU, and `mtrrs` reads only those MTRRCAP lists.
    params.mtrrs = aps::mtrrs(&mut |m| unsafe { instr::rdmsr(m) });
    for (i, ((slot, &id), &landing)) in params
        .slots
        .iter_mut()
        .zip(&ids)
        .zip(for_aps.landings)
        .enumerate()
    {
        slot.apic_id = id;
        slot.landing = landing;
        slot.stack_top = stacks.addr() + (i as u64 + 1) * STACK_PAGES * PAGE_SIZE;
    }
    let at = (base + block::PARAMS * PAGE_SIZE) as *mut Params;
    // SAFETY: the block's params page, ours alone; Params fits one page.
    unsafe { at.write(params) };
    Ok(Armed {
        low,
        _stacks: stacks,
        madt,
        madt_len: new_madt.len(),
        old_madt,
        xsdt,
        rsdt: u64::from(root.rsdt),
        tsc_khz: for_aps.tsc_khz,
        aps: ids.len(),
        silent: silent_cpu.map(|n| usize::from(n) - 1),
        lines: Vec::with_capacity(REPORT_ROOM),
    })
}

/// Once MicroV runs on this CPU: wraps the firmware's ExitBootServices so
/// the APs start when the OS exits boot services.
/// False if the firmware's tables cannot be reached (MicroV must then not
/// go on on this CPU alone).
pub(super) fn arm(armed: Armed) -> bool {
    let Some(bs) = boot_services() else {
        return false;
    };
    // SAFETY: the boot services table the system table names; this
    // application is the only code running (no other CPU touches it).
    let original = unsafe { (*bs).exit_boot_services } as usize;
    PARAMS.store(armed.params(), Ordering::Release);
    ORIGINAL.store(original, Ordering::Release);
    ARMED.store(
        alloc::boxed::Box::leak(alloc::boxed::Box::new(armed)),
        Ordering::Release,
    );
    set_exit_boot_services(exit_boot_services);
    true
}

/// The firmware's boot services table, while boot services run.
fn boot_services() -> Option<*mut uefi_raw::table::boot::BootServices> {
    let st = uefi::table::system_table_raw()?;
    // SAFETY: the firmware's system table, live while boot services run.
    let bs = unsafe { st.as_ref() }.boot_services;
    (!bs.is_null()).then_some(bs)
}

/// The firmware's ExitBootServices that `arm` wrapped, if it is wrapped.
fn original() -> Option<ExitBootServices> {
    let f = ORIGINAL.load(Ordering::Acquire);
    // SAFETY: `arm` stored the firmware's own function here (a non-zero
    // function address of this type).
    (f != 0).then(|| unsafe { core::mem::transmute::<usize, ExitBootServices>(f) })
}

/// Deletes a previous boot's [`record::CPUS_VARIABLE`]: it would mislead
/// (each boot that starts MicroV on more than one CPU writes its own if
/// not every CPU came in).
pub(super) fn forget_previous_outcome() {
    let name = cpus_variable();
    if let Some(name) = name_of(&name) {
        let _ = uefi::runtime::delete_variable(name, &VariableVendor(record::VENDOR));
    }
}

/// Installs `f` as ExitBootServices, with the table's CRC made right.
fn set_exit_boot_services(f: ExitBootServices) {
    let Some(bs) = boot_services() else { return };
    // SAFETY: the boot services table; this application is the only code
    // running (no other CPU touches it); `f` has the signature.
    unsafe { (*bs).exit_boot_services = f };
    // SAFETY: as above (the CRC is computed with the field at zero).
    unsafe { (*bs).header.crc = 0 };
    // SAFETY: as above.
    let size = unsafe { (*bs).header.size } as usize;
    // SAFETY: as above.
    let crc32 = unsafe { (*bs).calculate_crc32 };
    let mut crc = 0u32;
    // SAFETY: the firmware's CRC service over its own table.
    let _ = unsafe { crc32(bs.cast(), size, &mut crc) };
    // SAFETY: as above.
    unsafe { (*bs).header.crc = crc };
}

/// Puts the firmware's ExitBootServices back (MicroV stopped before any
/// OS ran: nothing is to start the APs into).
pub(super) fn disarm() {
    ARMED.store(core::ptr::null_mut(), Ordering::Release);
    if let Some(f) = original() {
        set_exit_boot_services(f);
        ORIGINAL.store(0, Ordering::Release);
    }
}

/// The firmware's ExitBootServices, then the APs.
extern "efiapi" fn exit_boot_services(image: uefi_raw::Handle, key: usize) -> uefi_raw::Status {
    // Installed only after `arm` stored the original; never without it.
    let Some(original) = original() else {
        return uefi_raw::Status::ABORTED;
    };
    // SAFETY: the caller's arguments, as the firmware expects them.
    let status = unsafe { original(image, key) };
    if status != uefi_raw::Status::SUCCESS {
        return status;
    }
    let armed = ARMED.swap(core::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: leaked by `arm`; swapped out, so this is its only user.
    if let Some(a) = unsafe { armed.as_mut() } {
        start_aps(a);
    }
    status
}

/// Starts every AP, waits for each, and tells the OS what it gets.
fn start_aps(a: &mut Armed) {
    let params = a.params();
    let apic = Apic::new();
    let ticks_per_ms = a.tsc_khz.max(1);
    // SAFETY: the shared page (written in `prepare`); the APs change their
    // slots only through the atomics.
    let slots = unsafe { &(*params).slots };
    let slots = slots.get(..a.aps).unwrap_or_default();
    let page = a.low.addr() + block::CODE * PAGE_SIZE;
    for (i, slot) in slots.iter().enumerate() {
        if a.silent == Some(i) {
            continue;
        }
        apic.send(slot.apic_id, icr::INIT);
        delay(ticks_per_ms * 10);
        apic.send(slot.apic_id, icr::startup(page));
        delay(ticks_per_ms / 5);
        if slot.state.load(Ordering::Acquire) == state::WAITING {
            apic.send(slot.apic_id, icr::startup(page));
        }
    }
    let on_the_way = |s: &Slot| matches!(s.state.load(Ordering::Acquire), state::WAITING | state::STARTING);
    let deadline = instr::rdtsc().wrapping_add(ticks_per_ms * ANSWER_MS);
    while slots.iter().any(on_the_way) && instr::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    // An AP not heard from by now is given up: if it starts later it finds
    // its slot taken and halts in the low block.
    for slot in slots {
        let _ = slot.state.compare_exchange(
            state::WAITING,
            state::ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    let states: [(u32, u64); aps::MAX_APS] = core::array::from_fn(|i| {
        slots.get(i).map_or((state::ENTERED, 0), |s| {
            // The state first: a FAILED AP stored its status before it.
            let st = s.state.load(Ordering::Acquire);
            (st, s.status.load(Ordering::Acquire))
        })
    });
    let states = states.get(..a.aps).unwrap_or_default();
    match aps::outcome(states) {
        Outcome::AllIn => {
            // `microv status` shows every CPU running: nothing to report.
            install_madt(a, slots);
            return;
        }
        Outcome::Missing(_) => {
            install_madt(a, slots);
            for (i, slot) in slots.iter().enumerate() {
                if slot.state.load(Ordering::Acquire) != state::ENTERED {
                    a.say(format_args!(
                        "CPU {} (APIC ID {}) did not come into MicroV in time; the OS will not use it",
                        i + 1,
                        slot.apic_id
                    ));
                }
            }
        }
        Outcome::Failed { cpu, status } => {
            // SAFETY: the shared page; the flag is an atomic.
            unsafe { (*params).leave.store(1, Ordering::Release) };
            // One exit: MicroV, failed (a refused CPU stops it everywhere
            // after an early boot), gives this CPU back natively.
            let _ = instr::cpuid(0, 0);
            let deadline = instr::rdtsc().wrapping_add(ticks_per_ms * ANSWER_MS);
            while slots
                .iter()
                .any(|s| s.state.load(Ordering::Acquire) == state::ENTERED)
                && instr::rdtsc() < deadline
            {
                core::hint::spin_loop();
            }
            let why = StartError::from_u32(status as u32).map_or("unknown error", |e| e.message());
            if super::start::microv_runs() {
                a.say(format_args!(
                    "CPU {cpu} did not come up under MicroV: {why} (status {status}); MicroV did not stop, and the OS boots on it without that CPU's mailbox"
                ));
            } else {
                a.say(format_args!(
                    "CPU {cpu} did not come up under MicroV: {why} (status {status}); MicroV stopped on every CPU and the OS boots natively"
                ));
            }
        }
    }
    publish(a);
}

impl Armed {
    /// Adds a line to the report without allocating.
    fn say(&mut self, args: core::fmt::Arguments) {
        let mut line = Line {
            buf: [0; 256],
            len: 0,
        };
        let _ = line.write_str("microv.efi: ");
        let _ = line.write_fmt(args);
        let room = self.lines.capacity() - self.lines.len();
        let text = line
            .buf
            .get(..line.len.min(room.saturating_sub(1)))
            .unwrap_or_default();
        self.lines.extend_from_slice(text);
        if self.lines.len() < self.lines.capacity() {
            self.lines.push(b'\n');
        }
    }
}

/// A line of text in a fixed buffer (cut at its end).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Points the XSDT (and RSDT) at the MADT copy with the mailbox, with the
/// APs not in MicroV marked unusable.
fn install_madt(a: &Armed, slots: &[Slot]) {
    // SAFETY: the copy's pages, ours (prepared before boot services ended).
    let madt = unsafe { core::slice::from_raw_parts_mut(a.madt.start.as_ptr(), a.madt_len) };
    for slot in slots {
        if slot.state.load(Ordering::Acquire) != state::ENTERED {
            let _ = acpi::disable(madt, slot.apic_id);
        }
    }
    let new = a.madt.addr();
    for (list, width) in [(a.xsdt, 8), (Some(a.rsdt), 4)] {
        if let Some(list) = list.filter(|&l| l != 0) {
            // SAFETY: the firmware's XSDT/RSDT, still in place (the OS has
            // not reclaimed anything yet), changed by this CPU alone.
            if let Ok(bytes) = unsafe { table_mut(list) } {
                let _ = acpi::replace_entry(bytes, width, a.old_madt, new);
            }
        }
    }
}

/// Leaves the APs' lines for the OS in [`record::CPUS_VARIABLE`].
fn publish(a: &Armed) {
    let name = cpus_variable();
    let Some(name) = name_of(&name) else { return };
    let _ = uefi::runtime::set_variable(
        name,
        &VariableVendor(record::VENDOR),
        VariableAttributes::NON_VOLATILE
            | VariableAttributes::BOOTSERVICE_ACCESS
            | VariableAttributes::RUNTIME_ACCESS,
        &a.lines,
    );
}

/// [`record::CPUS_VARIABLE`] as UCS-2, NUL-terminated, without allocating.
fn cpus_variable() -> [u16; 32] {
    let mut name = [0u16; 32];
    for (slot, unit) in name
        .iter_mut()
        .take(31)
        .zip(record::CPUS_VARIABLE.encode_utf16())
    {
        *slot = unit;
    }
    name
}

fn name_of(name: &[u16; 32]) -> Option<&uefi::CStr16> {
    uefi::CStr16::from_u16_until_nul(name).ok()
}

/// The local APIC of this CPU, in the mode the firmware left it.
struct Apic {
    x2apic: bool,
    base: u64,
}

impl Apic {
    fn new() -> Apic {
        // SAFETY: ring 0 (the root VM at CPL 0); IA32_APIC_BASE exists.
        let base = unsafe { instr::rdmsr(msr::APIC_BASE) };
        Apic {
            x2apic: base & apic::BASE_EXTD != 0,
            base: base & apic::BASE_ADDRESS_MASK,
        }
    }

    /// Sends the IPI `low` to the APIC `id` and waits until it is out.
    fn send(&self, id: u32, low: u32) {
        if self.x2apic {
            // SAFETY: ring 0; the x2APIC's ICR takes the whole command.
            unsafe { instr::wrmsr(apic::X2APIC_ICR, (u64::from(id) << 32) | u64::from(low)) };
            return;
        }
        let high = (self.base + u64::from(apic::ICR_HIGH)) as *mut u32;
        let icr = (self.base + u64::from(apic::ICR_LOW)) as *mut u32;
        // SAFETY: the xAPIC's registers, identity-mapped uncached by the
        // firmware; this CPU alone sends IPIs now.
        unsafe { high.write_volatile(id << 24) };
        // SAFETY: as above.
        unsafe { icr.write_volatile(low) };
        for _ in 0..1_000_000 {
            // SAFETY: as above.
            if unsafe { icr.read_volatile() } & icr::PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Spins for `ticks` TSC ticks.
fn delay(ticks: u64) {
    let end = instr::rdtsc().wrapping_add(ticks);
    while instr::rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// An AP's way in, from the stub, on its own stack: capture, enter, then
/// wait at the mailbox as the root VM (or halt natively if refused).
extern "C" fn ap_entry(slot: *mut Slot) -> ! {
    let params = PARAMS.load(Ordering::Acquire);
    // SAFETY: `arm` stored the shared page before any AP was started.
    let Some(p) = (unsafe { params.as_ref() }) else {
        halt()
    };
    // SAFETY: the stub passes this AP's own slot, in the shared page for
    // good; it is changed only through its atomics.
    let slot = unsafe { &*slot };
    take_mtrrs(p);
    let landing = slot.landing as *mut CpuLanding;
    // SAFETY: this AP's landing page, written by microv.efi before, now
    // this AP's alone; interrupts are off since the SIPI.
    capture(unsafe { &mut (*landing).captured });
    // SAFETY: the trampoline copy's `microv_enter`.
    let enter: unsafe extern "C" fn(*mut CpuLanding) -> u64 =
        unsafe { core::mem::transmute(p.enter as usize) };
    // SAFETY: the landing page is complete; the trampoline returns here.
    let status = unsafe { enter(landing) };
    if status == 0 {
        slot.state.store(state::ENTERED, Ordering::Release);
        // SAFETY: the stub's mailbox wait in the low block (never returns).
        let park: unsafe extern "C" fn(u64, u32, *const AtomicU32, *const AtomicU32) -> ! =
            unsafe { core::mem::transmute(p.park as usize) };
        // SAFETY: the mailbox and the flags live in the low block for good.
        unsafe { park(p.mailbox, slot.apic_id, &p.leave, &slot.state) }
    }
    slot.status.store(status, Ordering::Release);
    slot.state.store(state::FAILED, Ordering::Release);
    // Natively again: halt in the low block, not in microv.efi's code
    // (the OS reuses that memory).
    // SAFETY: the stub's halt loop in the low block (never returns).
    let stop: unsafe extern "C" fn() -> ! = unsafe { core::mem::transmute(p.halt as usize) };
    // SAFETY: as above.
    unsafe { stop() }
}

/// Makes this AP's MTRRs the bootstrap CPU's (off while they change).
fn take_mtrrs(p: &Params) {
    // SAFETY: ring 0, natively; disabling the MTRRs first is the
    // documented way to change them.
    unsafe { instr::wrmsr(msr::MTRR_DEF_TYPE, 0) };
    for &[msr, value] in p.mtrrs.iter().take_while(|e| e[0] != 0) {
        // SAFETY: an MTRR the bootstrap CPU has (the same model), with its
        // value there.
        unsafe { instr::wrmsr(msr as u32, value) };
    }
}

fn halt() -> ! {
    loop {
        // SAFETY: stops this CPU; interrupts are off.
        unsafe { core::arch::asm!("cli", "hlt") };
    }
}

/// The ACPI 2.0 RSDP from the firmware's configuration table.
fn rsdp_address() -> Option<u64> {
    uefi::system::with_config_table(|t| {
        t.iter()
            .find(|e| e.guid == ConfigTableEntry::ACPI2_GUID)
            .map(|e| e.address as u64)
    })
}

/// `len` bytes at the physical (identity-mapped) address `at`.
///
/// # Safety
/// `at..at + len` is mapped firmware memory that is not written meanwhile.
unsafe fn bytes(at: u64, len: usize) -> &'static [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts(at as *const u8, len) }
}

/// The whole ACPI table at `at` (its header's length).
///
/// # Safety
/// As [`bytes`], for the table's header and then its length.
unsafe fn table(at: u64) -> Result<&'static [u8], acpi::AcpiError> {
    // SAFETY: the caller's promise (a header lies there).
    let len = acpi::length(unsafe { bytes(at, 36) })?;
    // SAFETY: the caller's promise (the table is that long).
    Ok(unsafe { bytes(at, len) })
}

/// As [`table`], writable.
///
/// # Safety
/// As [`table`], and nothing else refers to the table meanwhile.
unsafe fn table_mut(at: u64) -> Result<&'static mut [u8], acpi::AcpiError> {
    // SAFETY: the caller's promise.
    let len = acpi::length(unsafe { bytes(at, 36) })?;
    // SAFETY: the caller's promise.
    Ok(unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len) })
}
