//! Application processors in early boot: what microv.efi prepares for
//! them and how it decides what the OS gets.
//!
//! The firmware keeps its APs until the OS exits boot services, and at
//! that moment sends every one of them INIT–SIPI–SIPI (EDK2 parks them in
//! reserved memory). An INIT must never reach a CPU that runs MicroV (the
//! CPU would reset out of it, or hold the INIT pending and exit on every
//! VMRUN), so the APs enter MicroV just after: microv.efi wraps
//! ExitBootServices, and once the firmware is done it starts each AP at a
//! small real-mode stub (`efi/ap_stub.rs`) in reserved low memory. The stub
//! goes to long mode on identity-mapped tables ([`identity_tables`]) and
//! calls into microv.efi, which captures the AP's state and enters MicroV
//! through the trampoline; the AP's root VM then waits at the ACPI
//! Multiprocessor Wakeup mailbox (`acpi`), which the OS uses to start it.
//! Linux never sends these CPUs INIT or SIPI.
//!
//! Everything the stub and the entry share is one [`Params`] page.

use core::sync::atomic::{AtomicU32, AtomicU64};

use microv_abi::launch::MAX_CPUS;
use microv_arch::msr;

/// The most APs (every CPU but the one microv.efi runs on).
pub const MAX_APS: usize = MAX_CPUS - 1;

/// Pages of the low block the SIPI starts APs in (below 1 MiB, reserved):
/// the stub's code, [`Params`], the identity tables, the mailbox.
pub mod block {
    /// The stub's code (the SIPI vector names this page).
    pub const CODE: u64 = 0;
    /// [`super::Params`].
    pub const PARAMS: u64 = 1;
    /// PML4, PDPT and four page directories ([`super::identity_tables`]).
    pub const TABLES: u64 = 2;
    /// The ACPI wakeup mailbox.
    pub const MAILBOX: u64 = 8;
    /// The whole block.
    pub const PAGES: u64 = 9;
}

/// Pages of identity tables: PML4, PDPT, four page directories.
pub const TABLE_PAGES: usize = 6;
/// Bytes the identity tables map (the low 4 GiB, in 2 MiB pages).
pub const IDENTITY_BYTES: u64 = 4 << 30;

/// An AP's progress, in [`Slot::state`].
pub mod state {
    /// Not heard from yet.
    pub const WAITING: u32 = 0;
    /// Runs beneath MicroV, its root VM at the mailbox.
    pub const ENTERED: u32 = 1;
    /// MicroV refused it; native, halted ([`super::Slot::status`] says why).
    pub const FAILED: u32 = 2;
    /// Left MicroV after another CPU failed; native, halted.
    pub const NATIVE: u32 = 3;
    /// The stub claimed the slot (from WAITING) and is on its way in.
    pub const STARTING: u32 = 4;
    /// microv.efi gave up waiting (from WAITING): an AP that arrives later
    /// finds its slot taken and halts in the low block, never running
    /// microv.efi's code, which the OS may have reused by then.
    pub const ABANDONED: u32 = 5;
}

/// Selectors of the stub's GDT (also the APs' root state until the OS
/// loads its own).
pub mod selector {
    pub const CODE32: u16 = 0x08;
    pub const DATA: u16 = 0x10;
    pub const CODE64: u16 = 0x18;
}

/// One AP, as the stub finds it (by APIC ID) and microv.efi watches it.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    pub apic_id: u32,
    /// [`state`].
    pub state: AtomicU32,
    /// The MicroV status after a failed entry (written before the state).
    pub status: AtomicU64,
    /// The AP's landing page (identity-mapped).
    pub landing: u64,
    /// The top of the stack microv.efi's entry runs on.
    pub stack_top: u64,
}

/// The page the stub and microv.efi's AP entry share.
#[repr(C)]
#[derive(Debug)]
pub struct Params {
    /// Null, 32-bit code, data, 64-bit code ([`gdt`]).
    pub gdt: [u64; 4],
    /// LGDT's operand: limit, then the base (32 bits is all real mode
    /// loads; the upper half is zero).
    pub gdtr: [u16; 5],
    /// LIDT's operand in long mode: an empty IDT (any exception before the
    /// OS loads its own shuts the machine down rather than running
    /// whatever lies at address 0).
    pub idtr: [u16; 5],
    /// Far pointers (32-bit offset, selector) for the jumps into 32-bit
    /// protected mode and into long mode.
    pub far32: [u16; 3],
    pub far64: [u16; 3],
    /// The identity tables' root (below 4 GiB).
    pub cr3: u32,
    pub slot_count: u32,
    /// microv.efi's AP entry, called with RDI = the AP's slot.
    pub entry: u64,
    /// The trampoline copy's `microv_enter`.
    pub enter: u64,
    /// The stub's mailbox wait and native halt, in the low block.
    pub park: u64,
    pub halt: u64,
    /// The ACPI wakeup mailbox.
    pub mailbox: u64,
    /// Set when MicroV failed on some CPU: every AP at the mailbox leaves.
    pub leave: AtomicU32,
    pub pad: u32,
    /// The bootstrap CPU's MTRRs (MSR, value), which every AP takes before
    /// it enters: an INIT may reset them (QEMU's does), and Linux expects
    /// the firmware to have made all CPUs agree.
    pub mtrrs: [[u64; 2]; MAX_MTRRS],
    pub slots: [Slot; MAX_APS],
}

/// MTRR MSRs.
/// (MTRRcap, the first variable range and MTRRdefType are `arch::msr`'s.)
pub mod mtrr {
    pub const FIXED: [u32; 11] = [
        0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
    ];
    /// MTRRCAP: variable range count, fixed ranges supported.
    pub const CAP_VCNT: u64 = 0xff;
    pub const CAP_FIX: u64 = 1 << 8;
}
/// Fixed ranges, up to 16 variable pairs, and the default type.
pub const MAX_MTRRS: usize = 11 + 32 + 1;

/// The MTRRs to copy, in the order to write them: the default type last
/// (it enables them), after the fixed and variable ranges. `read` reads an
/// MSR of the CPU that has them right.
pub fn mtrrs(read: &mut dyn FnMut(u32) -> u64) -> [[u64; 2]; MAX_MTRRS] {
    let cap = read(msr::MTRR_CAP);
    let mut out = [[0u64; 2]; MAX_MTRRS];
    let fixed = if cap & mtrr::CAP_FIX != 0 {
        &mtrr::FIXED[..]
    } else {
        &[]
    };
    let pairs = (cap & mtrr::CAP_VCNT).min(16) as u32;
    let variable = (0..2 * pairs).map(|i| msr::MTRR_FIRST + i);
    let all = fixed
        .iter()
        .copied()
        .chain(variable)
        .chain([msr::MTRR_DEF_TYPE]);
    for (slot, msr) in out.iter_mut().zip(all) {
        *slot = [u64::from(msr), read(msr)];
    }
    out
}

const _: () = assert!(core::mem::size_of::<Params>() <= 4096);
const _: () = assert!(core::mem::size_of::<Slot>() == 32);

/// Flat 4 GiB descriptors: null, 32-bit code, data, 64-bit code.
pub const fn gdt() -> [u64; 4] {
    [
        0,
        0x00cf_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00af_9b00_0000_ffff,
    ]
}

/// Where the stub's code lies relative to its page (from the linked stub).
#[derive(Debug, Clone, Copy)]
pub struct StubOffsets {
    pub protected: u64,
    pub long: u64,
    pub park: u64,
    pub halt: u64,
}

/// The shared page for a low block at `base` (below 1 MiB), before slots.
pub fn params(base: u64, stub: StubOffsets, entry: u64, enter: u64) -> Params {
    let params_pa = base + block::PARAMS * 4096;
    let gdt_pa = params_pa + core::mem::offset_of!(Params, gdt) as u64;
    let far = |offset: u64, sel: u16| {
        let at = base + offset;
        [at as u16, (at >> 16) as u16, sel]
    };
    Params {
        gdt: gdt(),
        gdtr: [31, gdt_pa as u16, (gdt_pa >> 16) as u16, 0, 0],
        idtr: [0; 5],
        far32: far(stub.protected, selector::CODE32),
        far64: far(stub.long, selector::CODE64),
        cr3: (base + block::TABLES * 4096) as u32,
        slot_count: 0,
        entry,
        enter,
        park: base + stub.park,
        halt: base + stub.halt,
        mailbox: base + block::MAILBOX * 4096,
        leave: AtomicU32::new(0),
        pad: 0,
        mtrrs: [[0; 2]; MAX_MTRRS],
        slots: core::array::from_fn(|_| Slot {
            apic_id: u32::MAX,
            state: AtomicU32::new(state::WAITING),
            status: AtomicU64::new(0),
            landing: 0,
            stack_top: 0,
        }),
    }
}

/// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;

/// Fills `words` (the [`TABLE_PAGES`] pages at `pa`) with tables that map
/// the low 4 GiB to itself in 2 MiB pages; returns the root (CR3).
pub fn identity_tables(words: &mut [u64], pa: u64) -> Option<u64> {
    if words.len() != TABLE_PAGES * 512 {
        return None;
    }
    words.fill(0);
    let (pml4, rest) = words.split_at_mut(512);
    let (pdpt, pds) = rest.split_at_mut(512);
    *pml4.first_mut()? = (pa + 4096) | PRESENT | WRITABLE;
    for (i, entry) in pdpt.iter_mut().take(4).enumerate() {
        *entry = (pa + (2 + i as u64) * 4096) | PRESENT | WRITABLE;
    }
    for (i, entry) in pds.iter_mut().enumerate() {
        *entry = ((i as u64) << 21) | PRESENT | WRITABLE | HUGE;
    }
    Some(pa)
}

/// ICR values (the low word) for an INIT and a STARTUP at `page`.
pub mod icr {
    /// INIT, level assert.
    pub const INIT: u32 = 0x0000_4500;
    /// Delivery status: the IPI is still being sent.
    pub const PENDING: u32 = 1 << 12;

    /// STARTUP at the page `page` (below 1 MiB).
    pub fn startup(page: u64) -> u32 {
        0x0000_4600 | ((page >> 12) & 0xff) as u32
    }
}

/// What the OS is told once every AP has been heard from (or the wait
/// gave up).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every AP runs beneath MicroV: the OS starts them at the mailbox.
    AllIn,
    /// MicroV failed on the first of these CPUs (index, status) and stops
    /// everywhere: every CPU leaves and the OS boots natively.
    Failed { cpu: usize, status: u64 },
    /// This many APs never came in (abandoned, or stuck on the way): the
    /// OS is told they are absent and uses the others beneath MicroV.
    Missing(usize),
}

/// Decides from each slot's (state, status) what the OS gets. Allocates
/// nothing: it runs after the firmware's boot services are gone.
pub fn outcome(slots: &[(u32, u64)]) -> Outcome {
    if let Some((i, &(_, status))) =
        slots.iter().enumerate().find(|(_, &(s, _))| s == state::FAILED || s == state::NATIVE)
    {
        // CPU index: the APs follow the CPU microv.efi runs on (index 0).
        return Outcome::Failed { cpu: i + 1, status };
    }
    match slots.iter().filter(|&&(s, _)| s != state::ENTERED).count() {
        0 => Outcome::AllIn,
        n => Outcome::Missing(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn identity_tables_map_the_low_4_gib_to_itself() {
        let mut words = vec![7u64; TABLE_PAGES * 512];
        let pa = 0x9_0000;
        assert_eq!(identity_tables(&mut words, pa), Some(pa));
        assert_eq!(words[0], 0x9_1000 | 3);
        assert!(words[1..512].iter().all(|&w| w == 0));
        assert_eq!(&words[512..516], &[0x9_2003, 0x9_3003, 0x9_4003, 0x9_5003]);
        assert!(words[516..1024].iter().all(|&w| w == 0));
        // Walk a few addresses through the tables.
        for va in [0u64, 0x9_f123, 0x3fff_e000, 0xfee0_0000, 0xffff_ffff] {
            let pdpt = (words[0] & !0xfff) - pa;
            let pd = words[(pdpt / 8) as usize + (va >> 30) as usize] & !0xfff;
            let pde = words[((pd - pa) / 8) as usize + ((va >> 21) & 511) as usize];
            assert_eq!(pde & 0x83, 0x83);
            assert_eq!((pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff), va);
        }
        assert_eq!(identity_tables(&mut words[..100], pa), None);
    }

    #[test]
    fn the_shared_page_points_into_the_low_block() {
        let stub = StubOffsets {
            protected: 0x40,
            long: 0x80,
            park: 0x100,
            halt: 0x140,
        };
        let p = params(0x8_0000, stub, 0xdead_0000, 0xbeef_0000);
        let gdt_pa = 0x8_1000 + offset_of!(Params, gdt) as u64;
        assert_eq!(p.gdtr, [31, gdt_pa as u16, (gdt_pa >> 16) as u16, 0, 0]);
        assert_eq!(p.far32, [0x0040, 0x8, selector::CODE32]);
        assert_eq!(p.far64, [0x0080, 0x8, selector::CODE64]);
        assert_eq!((p.cr3, p.park, p.halt), (0x8_2000, 0x8_0100, 0x8_0140));
        assert_eq!(p.mailbox, 0x8_8000);
        assert_eq!((p.entry, p.enter), (0xdead_0000, 0xbeef_0000));
        assert!(p.slots.iter().all(|s| s.apic_id == u32::MAX));
        // The descriptors: 32-bit code (D), data, 64-bit code (L), all DPL 0.
        assert_eq!(p.gdt[1] >> 40 & 0xff, 0x9b);
        assert_eq!(p.gdt[1] >> 52 & 0xf, 0xc);
        assert_eq!(p.gdt[2] >> 40 & 0xff, 0x93);
        assert_eq!(p.gdt[3] >> 52 & 0xf, 0xa);
    }

    #[test]
    fn mtrrs_are_copied_fixed_then_variable_then_the_default_type() {
        let mut read = |msr: u32| match msr {
            0xFE => 0x102, // fixed ranges, two variable pairs
            m => u64::from(m) * 3,
        };
        let m = mtrrs(&mut read);
        let msrs: Vec<u64> = m.iter().map(|e| e[0]).take_while(|&e| e != 0).collect();
        assert_eq!(msrs.len(), 11 + 4 + 1);
        assert_eq!(&msrs[..2], &[0x250, 0x258]);
        assert_eq!(&msrs[11..], &[0x200, 0x201, 0x202, 0x203, 0x2FF]);
        assert!(m.iter().take(16).all(|e| e[1] == e[0] * 3));
        let mut none = |msr: u32| if msr == 0xFE { 0 } else { 1 };
        assert_eq!(mtrrs(&mut none)[0], [0x2FF, 1], "only the default type");
        assert_eq!(mtrrs(&mut none)[1], [0, 0]);
    }

    #[test]
    fn startup_ipis_name_the_page() {
        assert_eq!(icr::startup(0x9_f000), 0x469f);
        assert_eq!(icr::startup(0x1000), 0x4601);
        assert_eq!(icr::INIT & 0x700, 0x500);
    }

    #[test]
    fn the_outcome_follows_the_slots() {
        use state::*;
        assert_eq!(outcome(&[]), Outcome::AllIn);
        assert_eq!(outcome(&[(ENTERED, 0), (ENTERED, 0)]), Outcome::AllIn);
        assert_eq!(
            outcome(&[(ENTERED, 0), (FAILED, 26), (FAILED, 5)]),
            Outcome::Failed { cpu: 2, status: 26 }
        );
        assert_eq!(
            outcome(&[(ABANDONED, 0), (NATIVE, 0)]),
            Outcome::Failed { cpu: 2, status: 0 }
        );
        assert_eq!(
            outcome(&[(ENTERED, 0), (ABANDONED, 0), (STARTING, 0)]),
            Outcome::Missing(2)
        );
    }
}
