//! The root VM's nested page tables and permission maps, built by the first
//! CPU in pool pages ring 3 cannot reach (`crate::root_tables` is the
//! logic). The microkernel puts them in every root VMCB it runs.

use microv_abi::launch::{BootInfo, PAGE_SIZE};
use microv_abi::StartError;
use microv_arch::cpuid::{EXT1_EDX_PAGE1GB, LEAF_ADDRESS_SIZES};
use microv_arch::instr;
use microv_arch::paging::ENTRIES;
use microv_arch::svm::{IOPM_SIZE, MSRPM_SIZE};
use spin::Mutex;

use super::log::log;
use super::mm::{Memory, MEMORY};
use crate::root_tables::{self, ept, identity::Identity, vmx as vmx_tables};
use microv_arch::msr;
use microv_arch::mtrr::Mtrrs;
use microv_arch::vmx::bitmaps::{IO_BITMAP_SIZE, MSR_BITMAP_SIZE};
use microv_arch::vmx::ept::EptCaps;
use crate::vmcb_check::RootTables;

/// What the on-demand mapping needs besides the tables' addresses.
#[derive(Clone, Copy, Debug)]
struct Built {
    tables: RootTables,
    hiding_table: u64,
    max_pa: u64,
    huge_pages: bool,
}

static BUILT: Mutex<Option<Built>> = Mutex::new(None);

/// The root's tables on Intel VMX: its EPT and the VMX permission maps.
#[derive(Clone, Copy, Debug)]
pub struct VmxTables {
    /// Physical address of the EPT's top table (PML4).
    pub ept_pml4: u64,
    pub msr_bitmap: u64,
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
}

/// What the on-demand EPT mapping needs besides the tables' addresses.
#[derive(Clone, Copy, Debug)]
struct VmxBuilt {
    tables: VmxTables,
    hiding_table: u64,
    huge_pages: bool,
    apic: u64,
    max_pa: u64,
    mtrrs: Mtrrs,
}

static VMX_BUILT: Mutex<Option<VmxBuilt>> = Mutex::new(None);

/// Builds the root's VMX tables (first CPU, at start, on Intel): the EPT
/// identity map with the pool hidden, the APIC page read-only and memory
/// types from the MTRRs, and the MSR and I/O bitmaps from the same policy
/// as AMD's maps.
pub fn build_vmx(mem: &mut Memory, bi: &BootInfo) -> Result<VmxTables, StartError> {
    let (msr_bitmap, msr_pa) = pages::<[u8; MSR_BITMAP_SIZE]>(mem)?;
    vmx_tables::fill_msr_bitmap(msr_bitmap);
    let (io_a, io_a_pa) = pages::<[u8; IO_BITMAP_SIZE]>(mem)?;
    let (io_b, io_b_pa) = pages::<[u8; IO_BITMAP_SIZE]>(mem)?;
    vmx_tables::fill_io_bitmaps(io_a, io_b);
    // SAFETY: ring 0; the MTRRs exist on every CPU with VMX (CPUID 1 EDX
    // MTRR is architectural there) and reading them has no effect.
    let mtrrs = Mtrrs::read(|index| unsafe { instr::rdmsr(index) });
    let (_dummy, dummy_pa) = pages::<[u8; PAGE_SIZE as usize]>(mem)?;
    let (hiding, hiding_pa) = pages::<[u64; ENTRIES]>(mem)?;
    ept::fill_hiding_table(hiding, dummy_pa, &mtrrs);
    let (_, pml4) = pages::<[u64; ENTRIES]>(mem)?;
    // SAFETY: as above; the capability MSR exists where EPT does (checked
    // by the loader).
    let caps = EptCaps::decode(unsafe { instr::rdmsr(msr::VMX_EPT_VPID_CAP) });
    let phys_bits = instr::cpuid(LEAF_ADDRESS_SIZES, 0).eax & 0xff;
    let limit = root_tables::phys_limit(phys_bits, caps.pages_1g);
    let chunks = bi.chunks.get(..bi.chunk_count as usize).unwrap_or_default();
    // The root's APIC writes exit (its INIT and SIPI are checked); MicroV
    // maps the page for itself to carry out the rest.
    let apic = super::root_apic::apic_page();
    let shape = Identity {
        huge_pages: caps.pages_1g,
        hidden: chunks,
        hiding_table: hiding_pa,
        read_only: Some(apic),
    };
    ept::build(mem, pml4, limit, &mtrrs, &shape).map_err(|_| StartError::OutOfMemory)?;
    super::root_apic::map(mem, apic).map_err(|_| StartError::OutOfMemory)?;
    let tables = VmxTables {
        ept_pml4: pml4,
        msr_bitmap: msr_pa,
        io_bitmap_a: io_a_pa,
        io_bitmap_b: io_b_pa,
    };
    *VMX_BUILT.lock() = Some(VmxBuilt {
        tables,
        hiding_table: hiding_pa,
        huge_pages: caps.pages_1g,
        apic,
        max_pa: 1u64 << phys_bits.clamp(32, 52),
        mtrrs,
    });
    log!(
        "microkernel: root EPT maps {} GiB with {} pages, hiding {} MiB of hypervisor memory",
        limit >> 30,
        if caps.pages_1g { "1 GiB" } else { "2 MiB" },
        chunks.len() * 2
    );
    Ok(tables)
}

/// The root's VMX tables, once built.
pub fn vmx_tables() -> Option<VmxTables> {
    VMX_BUILT.lock().map(|b| b.tables)
}

/// Zeroed pool pages for a `T` (all-zero is a valid `T` for the arrays
/// used here); its hypervisor address and physical address.
fn pages<T>(mem: &mut Memory) -> Result<(&'static mut T, u64), StartError> {
    let count = core::mem::size_of::<T>().div_ceil(PAGE_SIZE as usize);
    let page = mem.alloc(count).map_err(|_| StartError::OutOfMemory)?;
    // SAFETY: the pages were just allocated, zeroed, for this one use, are
    // contiguous and large enough, and are never freed or mapped to ring 3.
    Ok((unsafe { &mut *(page.va as *mut T) }, page.pa))
}

/// Builds the root's tables (first CPU, at start).
pub fn build(mem: &mut Memory, bi: &BootInfo) -> Result<RootTables, StartError> {
    let (msrpm, msrpm_pa) = pages::<[u8; MSRPM_SIZE]>(mem)?;
    root_tables::fill_msrpm(msrpm);
    let (iopm, iopm_pa) = pages::<[u8; IOPM_SIZE]>(mem)?;
    root_tables::fill_iopm(iopm);
    let (_dummy, dummy_pa) = pages::<[u8; PAGE_SIZE as usize]>(mem)?;
    let (hiding, hiding_pa) = pages::<[u64; ENTRIES]>(mem)?;
    root_tables::fill_hiding_table(hiding, dummy_pa);
    let (_, n_cr3) = pages::<[u64; ENTRIES]>(mem)?;

    let huge = instr::cpuid(0x8000_0001, 0).edx & EXT1_EDX_PAGE1GB != 0;
    let phys_bits = instr::cpuid(LEAF_ADDRESS_SIZES, 0).eax & 0xff;
    let limit = root_tables::phys_limit(phys_bits, huge);
    let chunks = bi.chunks.get(..bi.chunk_count as usize).unwrap_or_default();
    // The root's APIC writes exit (its INIT and SIPI are checked); MicroV
    // maps the page for itself to carry out the rest.
    let apic = super::root_apic::apic_page();
    root_tables::build_npt(mem, n_cr3, limit, huge, chunks, hiding_pa, Some(apic))
        .map_err(|_| StartError::OutOfMemory)?;
    super::root_apic::map(mem, apic).map_err(|_| StartError::OutOfMemory)?;
    let tables = RootTables {
        n_cr3,
        iopm: iopm_pa,
        msrpm: msrpm_pa,
    };
    *BUILT.lock() = Some(Built {
        tables,
        hiding_table: hiding_pa,
        max_pa: 1u64 << phys_bits.clamp(32, 52),
        huge_pages: huge,
    });
    log!(
        "microkernel: root nested paging maps {} GiB with {} pages, hiding {} MiB of hypervisor memory",
        limit >> 30,
        if huge { "1 GiB" } else { "2 MiB" },
        chunks.len() * 2
    );
    Ok(tables)
}

/// The root's tables, once built.
pub fn tables() -> Option<RootTables> {
    BUILT.lock().map(|b| b.tables)
}

/// First physical address the CPU cannot address (from CPUID, read once
/// when the root's tables were built, AMD's or Intel's).
pub fn max_pa() -> Option<u64> {
    BUILT
        .lock()
        .map(|b| b.max_pa)
        .or_else(|| VMX_BUILT.lock().map(|b| b.max_pa))
}

/// `RootMapGpa`: maps the root's faulting guest-physical address `gpa`.
pub fn map_gpa(gpa: u64) -> Result<bool, StartError> {
    if let Some(v) = *VMX_BUILT.lock() {
        return map_gpa_ept(&v, gpa);
    }
    let Some(b) = *BUILT.lock() else {
        return Err(StartError::KernelFault);
    };
    let mut mem = MEMORY.lock();
    let bi = mem.boot().ok_or(StartError::KernelFault)?;
    let chunks = bi.chunks.get(..bi.chunk_count as usize).unwrap_or_default();
    root_tables::map_on_demand(
        &mut *mem,
        b.tables.n_cr3,
        gpa,
        b.max_pa,
        b.huge_pages,
        chunks,
        b.hiding_table,
    )
    .map_err(|_| StartError::OutOfMemory)
}

/// `RootMapGpa` on Intel: the EPT's identity page holding `gpa`.
fn map_gpa_ept(v: &VmxBuilt, gpa: u64) -> Result<bool, StartError> {
    let mut mem = MEMORY.lock();
    let bi = mem.boot().ok_or(StartError::KernelFault)?;
    let chunks = bi.chunks.get(..bi.chunk_count as usize).unwrap_or_default();
    let shape = Identity {
        huge_pages: v.huge_pages,
        hidden: chunks,
        hiding_table: v.hiding_table,
        read_only: Some(v.apic),
    };
    ept::map_on_demand(&mut *mem, v.tables.ept_pml4, gpa, v.max_pa, &v.mtrrs, &shape)
        .map_err(|_| StartError::OutOfMemory)
}
