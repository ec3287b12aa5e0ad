//! The run page: the one page a micro-VM vCPU shares with its VMM.
//!
//! The driver allocates it, passes its root-physical address to
//! `vcpu.create` and maps it into the VMM (`mmap` of the vCPU file
//! descriptor). MicroV writes every exit the VMM must see into it, with the
//! vCPU's registers ([`RunPage::regs`] says which); the VMM writes its
//! answers and requests into it before the next `run.run`. Everything here
//! is vendor-neutral: the same page serves AMD SVM today and Intel VMX
//! later.
//!
//! The root (and so the VMM) can write the page at any time, also while
//! MicroV reads it: MicroV copies each field it uses once and checks the
//! copy, never the page.

use crate::c_struct;

/// Why `run.run` returned ([`RunExit::reason`]).
pub mod exit_reason {
    /// Nothing happened yet (a fresh page).
    pub const NONE: u32 = 0;
    /// Port I/O: [`super::RunExit::io`] says which. An `out` is complete
    /// (RIP is past it); an `in` is completed at the next `run.run` with
    /// the value the VMM put in `io.data`. String I/O is [`STRING_IO`].
    pub const IO: u32 = 1;
    /// A guest-physical access outside the VM's memory:
    /// [`super::RunExit::mmio`]. RIP still points at the instruction: the
    /// VMM decodes it from guest memory and completes it through the
    /// registers ([`super::RunPage::regs`] and `set_regs`).
    pub const MMIO: u32 = 2;
    /// The guest executed HLT and nothing wakes it yet; RIP is past the
    /// HLT. It sleeps until [`super::RunExit::deadline`] (its APIC timer)
    /// or until the VMM raises an interrupt for it.
    pub const HLT: u32 = 3;
    /// The guest triple-faulted (a real machine would reset).
    pub const SHUTDOWN: u32 = 4;
    /// A host interrupt (or a signal for the VMM thread) ended the run;
    /// nothing to handle, the guest can simply be run again.
    pub const INTERRUPTED: u32 = 5;
    /// MicroV could not enter the guest: the register state is not one the
    /// CPU accepts. `qualification` holds the vendor's code, for reports.
    pub const FAIL_ENTRY: u32 = 6;
    /// The guest did something MicroV has no model for; the VM cannot go
    /// on. `qualification` holds the vendor's exit code, for reports.
    pub const UNHANDLED: u32 = 7;
    /// The vCPU sent interrupts (or INIT/SIPI) to other vCPUs of its VM:
    /// [`super::RunExit::kick`] names them (bit n = vCPU id n). The driver
    /// wakes each (or interrupts it if it runs) and runs this vCPU again;
    /// the VMM never sees this exit.
    pub const KICK: u32 = 8;
    /// The guest armed its APIC timer earlier than the host timer the
    /// driver armed for it ([`super::RunExit::deadline`] has the new
    /// deadline): the driver re-arms and runs the vCPU again; the VMM
    /// never sees this exit.
    pub const TIMER: u32 = 9;
    /// String port I/O (INS or OUTS, with or without REP):
    /// [`super::RunExit::io`] has the port, the element size, the
    /// direction, `rep` and `address_size` (`data` is unused). RIP is still
    /// at the instruction and nothing has moved: the VMM performs it
    /// between the port and guest memory (the segment, RSI/RDI, RCX and
    /// RFLAGS.DF are in the registers) and completes it through the
    /// registers ([`super::request::SET_REGS`]): RSI/RDI and RCX advanced,
    /// and RIP past the instruction once the count is done (until then the
    /// instruction runs again and exits again).
    pub const STRING_IO: u32 = 10;

    /// True if an exit of `reason` writes the special registers
    /// (segments, descriptor tables, control registers, EFER) to the run
    /// page's `regs`: the exits whose handling or report needs them. Every
    /// exit writes the general registers, RIP and RFLAGS; after the others
    /// the special registers are as they were (`run.get_registers`
    /// refreshes them).
    pub const fn writes_special_registers(reason: u32) -> bool {
        matches!(reason, MMIO | STRING_IO | SHUTDOWN | FAIL_ENTRY | UNHANDLED)
    }
}

/// [`RunExit::qualification`] of a `HLT` exit.
pub mod hlt {
    /// The guest halted (RFLAGS.IF in the registers says whether an
    /// interrupt can wake it).
    pub const HALTED: u64 = 0;
    /// A secondary vCPU waits for INIT/SIPI from another vCPU: it sleeps
    /// until it is kicked ([`super::exit_reason::KICK`]).
    pub const WAIT_FOR_SIPI: u64 = 1;
}

/// [`RunIo::direction`].
pub mod io_direction {
    pub const OUT: u8 = 0;
    pub const IN: u8 = 1;
}

/// [`RunMmio::access`] bits.
pub mod mmio_access {
    pub const WRITE: u64 = 1 << 0;
    pub const FETCH: u64 = 1 << 1;
}

/// Bits of [`RunPage::request`]: what the VMM asks for at the next
/// `run.run` (MicroV clears each bit it has acted on).
pub mod request {
    /// Load [`super::RunPage::regs`] into the vCPU first (the general
    /// registers, RIP and RFLAGS).
    pub const SET_REGS: u64 = 1 << 0;
    /// Load the special registers (segments, tables, control registers,
    /// EFER) too.
    pub const SET_SREGS: u64 = 1 << 1;
    /// Perform [`super::RunPage::apic`] on the vCPU's local APIC, after the
    /// registers are loaded (see [`super::APIC_MMIO_BASE`]).
    pub const APIC_ACCESS: u64 = 1 << 2;
}

/// Where a vCPU's local APIC answers MMIO once the guest has switched it
/// from x2APIC to xAPIC mode (Linux does, under a hypervisor it does not
/// know, when it finds no interrupt remapping). MicroV cannot decode
/// instructions (the CPU gives no decode assists), so such an access exits
/// to the VMM as MMIO; the VMM decodes it and hands it back with
/// [`request::APIC_ACCESS`] and [`RunApic`], together with
/// [`request::SET_REGS`] and RIP past the instruction.
pub const APIC_MMIO_BASE: u64 = 0xfee0_0000;

c_struct! {
    /// A segment register as the architecture defines it (not a vendor's
    /// packing): `attributes` holds descriptor bits 40–47 (type, S, DPL, P)
    /// in bits 0–7 and bits 52–55 (AVL, L, D/B, G) in bits 8–11.
    pub struct RunSegment as "mv_run_segment" {
        pub base: u64,
        pub limit: u32,
        pub selector: u16,
        pub attributes: u16,
    }
}

c_struct! {
    /// A descriptor-table register (GDTR, IDTR).
    pub struct RunTable as "mv_run_table" {
        pub base: u64,
        pub limit: u64,
    }
}

c_struct! {
    /// A vCPU's registers, in x86 register-number order for the general
    /// registers (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15).
    pub struct RunRegs as "mv_run_regs" {
        pub gprs: [u64; 16],
        pub rip: u64,
        pub rflags: u64,
        pub cr0: u64,
        pub cr2: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub efer: u64,
        pub cs: RunSegment,
        pub ds: RunSegment,
        pub es: RunSegment,
        pub fs: RunSegment,
        pub gs: RunSegment,
        pub ss: RunSegment,
        pub tr: RunSegment,
        pub ldt: RunSegment,
        pub gdt: RunTable,
        pub idt: RunTable,
    }
}

c_struct! {
    /// A port I/O exit.
    pub struct RunIo as "mv_run_io" {
        pub port: u16,
        /// 1, 2 or 4 bytes.
        pub size: u8,
        /// [`io_direction`].
        pub direction: u8,
        /// `STRING_IO`: 1 if the instruction has a REP prefix (RCX, or
        /// ECX or CX by `address_size`, counts the elements); 0 otherwise.
        pub rep: u8,
        /// `STRING_IO`: the address size in bytes (2, 4 or 8), which
        /// says how much of RSI/RDI and RCX the instruction uses, or 0 if
        /// the CPU does not report it (QEMU's TCG does not: the VMM takes
        /// it from the instruction); 0 for other exits.
        pub address_size: u8,
        pub reserved: u16,
        /// `out`: the value written (low `size` bytes). `in`: the VMM
        /// writes the value the guest reads here before the next `run.run`.
        pub data: u64,
    }
}

c_struct! {
    /// An access outside the VM's memory.
    pub struct RunMmio as "mv_run_mmio" {
        pub gpa: u64,
        /// [`mmio_access`] bits, as far as the CPU reports them.
        pub access: u64,
    }
}

c_struct! {
    /// The last exit.
    pub struct RunExit as "mv_run_exit" {
        /// An [`exit_reason`] value.
        pub reason: u32,
        pub reserved: u32,
        /// Vendor detail for `FAIL_ENTRY` and `UNHANDLED`; 0 otherwise.
        pub qualification: u64,
        pub io: RunIo,
        pub mmio: RunMmio,
        /// When the vCPU's APIC timer fires, as a TSC value (0: disarmed),
        /// at every exit: the driver arms a host timer for it before it
        /// runs the vCPU again, and a halted vCPU sleeps until then.
        pub deadline: u64,
        /// `KICK`: the vCPUs to wake (a 256-bit set of vCPU ids).
        pub kick: [u64; 4],
    }
}

c_struct! {
    /// A decoded xAPIC MMIO access for MicroV's local APIC.
    pub struct RunApic as "mv_run_apic" {
        /// Offset in the APIC page (the register's address − [`APIC_MMIO_BASE`]).
        pub offset: u32,
        /// 1: a 32-bit write of `value`; 0: a 32-bit read into `gpr`.
        pub write: u32,
        pub value: u32,
        /// The x86 register number (RAX = 0 … R15 = 15) a read loads,
        /// zero-extended to 64 bits as a 32-bit `mov` does.
        pub gpr: u32,
    }
}

c_struct! {
    /// The shared page ([`RUN_PAGE_SIZE`] bytes; the rest is reserved).
    pub struct RunPage as "mv_run_page" {
        /// [`request`] bits, set by the VMM.
        pub request: u64,
        /// Interrupt vectors the VMM raises (a 256-bit set, bit v = vector
        /// v): MicroV takes them into the vCPU's interrupt controller at
        /// the next `run.run`, each word with one atomic exchange, so bits
        /// the VMM sets meanwhile (with atomic ORs) are never lost.
        pub raise: [u64; 4],
        pub exit: RunExit,
        /// The registers at the last exit: every exit writes the general
        /// registers, RIP and RFLAGS, and the exits
        /// [`exit_reason::writes_special_registers`] names write the rest
        /// (`run.get_registers` writes all of them); loaded by
        /// `run.set_registers` and by [`request::SET_REGS`].
        pub regs: RunRegs,
        /// The access [`request::APIC_ACCESS`] asks for.
        pub apic: RunApic,
    }
}

/// Size of the run page.
pub const RUN_PAGE_SIZE: usize = 4096;
const _: () = assert!(core::mem::size_of::<RunPage>() <= RUN_PAGE_SIZE);
const _: () = assert!(core::mem::size_of::<RunSegment>() == 16);
const _: () = assert!(core::mem::offset_of!(RunPage, exit) == 40);

/// `vm.map_memory` access flags (low bits of R12).
pub mod map_access {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    pub const ALL: u64 = READ | WRITE | EXECUTE;
}

/// Largest guest-physical address space a micro VM has: 512 GiB (one
/// top-level nested-table entry), so its tables never need more levels.
pub const GUEST_PHYS_LIMIT: u64 = 1 << 39;

/// Most pages one `vm.map_memory` maps (R11 bits 63:32 carry the count).
pub const MAP_MAX_PAGES: u64 = 1 << 20;

/// R11 of `vm.map_memory` and `vm.unmap_memory`: the VM id and the page count.
pub const fn map_r11(vm: u64, pages: u64) -> u64 {
    (pages << 32) | (vm & 0xffff_ffff)
}

/// Splits R11 of `vm.map_memory` into (VM id, page count).
pub const fn split_map_r11(r11: u64) -> (u64, u64) {
    (r11 & 0xffff_ffff, r11 >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_arguments_round_trip() {
        assert_eq!(split_map_r11(map_r11(7, 512)), (7, 512));
        assert_eq!(split_map_r11(map_r11(0, MAP_MAX_PAGES)), (0, MAP_MAX_PAGES));
    }

    #[test]
    fn exits_that_need_special_registers_carry_them() {
        use exit_reason::*;
        for r in [MMIO, STRING_IO, SHUTDOWN, FAIL_ENTRY, UNHANDLED] {
            assert!(writes_special_registers(r), "reason {r}");
        }
        for r in [NONE, IO, HLT, INTERRUPTED, KICK, TIMER] {
            assert!(!writes_special_registers(r), "reason {r}");
        }
    }

    #[test]
    fn a_fresh_page_reports_no_exit() {
        let p = RunPage::zeroed();
        assert_eq!(p.exit.reason, exit_reason::NONE);
        assert_eq!(p.request, 0);
    }
}
