//! The microkernel's syscall interface: how the extension (host ring 3)
//! asks the microkernel (host ring 0) for what only ring 0 can do, and how
//! the microkernel hands events to the extension. `docs/syscalls.md`
//! describes each call.
//!
//! A syscall is the `syscall` instruction with the number in RAX and
//! arguments in RDI, RSI and (for `VmMap` only) RDX. On return RAX holds a [`SysStatus`], RDX and R8
//! hold results; RCX and R11 are clobbered (by the instruction). The other
//! general-purpose registers are preserved; vector registers are not (the
//! microkernel's Rust code may use them), so callers treat them as
//! clobbered, as for a C call. Calls marked "does not return" end
//! the extension's current event: the next thing the extension sees is a
//! new upcall on a fresh stack.
//!
//! Upcalls enter the extension's entry point on the CPU's extension stack
//! with RDI = [`Upcall`], RSI = CPU index, RDX and R8 = arguments.

macro_rules! numbered {
    ($(#[$m:meta])* $name:ident { $( $(#[$vm:meta])* $variant:ident = $value:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u64)]
        pub enum $name { $( $(#[$vm])* $variant = $value, )* }
        impl $name {
            /// All values in numbering order.
            pub const ALL: &'static [$name] = &[$( $name::$variant, )*];
            /// Reads a raw value.
            pub const fn from_u64(v: u64) -> Option<Self> {
                match v { $( $value => Some($name::$variant), )* _ => None }
            }
        }
    };
}

numbered! {
    /// Syscall numbers (RAX).
    Syscall {
        /// Append RSI bytes at RDI (extension memory) to the hypervisor log.
        LogWrite = 0,
        /// Allocate RDI zeroed, physically contiguous pages (at most 64)
        /// from the pool and map them into the extension. RDX = virtual
        /// address, R8 = physical address.
        MemAlloc = 1,
        /// Pool usage: RDX = total pages, R8 = free pages.
        MemStats = 2,
        /// Create a guest vCPU state (VMCB, register page, FPU area) for VM
        /// RDI, whose run page is root-physical RSI (one page of ordinary
        /// root RAM). RDX = its id; its pages appear at
        /// [`vs_layout::vmcb`], [`vs_layout::gprs`] and [`vs_layout::run`].
        /// It runs on the VM's nested tables only, on one CPU at a time.
        VsCreate = 3,
        /// Run vCPU state RDI on this CPU: this CPU's root state, or a guest
        /// state no other CPU is running. Does not return: the exit arrives
        /// as an [`Upcall::Exit`].
        VsRun = 4,
        /// Put vCPU state RDI (this CPU's root vCPU) back onto the real CPU
        /// and leave this CPU, together with every other CPU running
        /// MicroV (a rendezvous). Returns only if refused: [`SysStatus::Busy`]
        /// when the other CPUs did not all ask in time, or
        /// [`SysStatus::InvalidArgument`] for a wrong id or a state the CPU
        /// cannot load.
        VsPromote = 5,
        /// The extension cannot go on: MicroV stops on this CPU, reporting
        /// [`crate::StartError`] RDI with detail RSI. Does not return.
        Fail = 6,
        /// Read MSR RDI on the real CPU for the root: RDX = its value, or
        /// [`SysStatus::Fault`] if the read raised #GP. Only MSRs outside
        /// the MSR permission map's ranges (those always exit) are allowed.
        MsrRead = 7,
        /// Write RSI to MSR RDI on the real CPU for the root; same rules as
        /// [`Syscall::MsrRead`].
        MsrWrite = 8,
        /// The root took a nested page fault at guest-physical address RDI:
        /// map it as bare metal has it (identity; pool chunks stay hidden).
        /// RDX = 1 if mapped (or already mapped), 0 if RDI is beyond what
        /// the CPU can address. The root's nested tables are the
        /// microkernel's: the extension cannot change them otherwise.
        RootMapGpa = 9,
        /// A new micro VM: empty nested page tables and an address-space
        /// id of its own. RDX = the VM's id.
        VmCreate = 10,
        /// Destroy VM RDI: its tables go back to the pool. Refused
        /// ([`SysStatus::Busy`]) while a vCPU state of it exists.
        VmDestroy = 11,
        /// Map root-physical RDX.. into VM `RDI & 0xffff_ffff` at
        /// guest-physical `RSI & !0xfff`, `RDI >> 32` pages, with the
        /// `run::map_access` bits in RSI's low bits. The microkernel checks
        /// every frame: ordinary root RAM, outside the pool, inside the
        /// CPU's and the guest's address width, nothing already mapped
        /// there ([`SysStatus::Refused`] / [`SysStatus::Busy`]).
        VmMap = 12,
        /// Unmap `RDI >> 32` pages at guest-physical RSI from VM
        /// `RDI & 0xffff_ffff`; every CPU flushes the VM's TLB entries
        /// before it runs the VM again. Refused ([`SysStatus::Busy`])
        /// while a vCPU of the VM runs.
        VmUnmap = 13,
        /// Destroy guest vCPU state RDI (not a root state; not running).
        VsDestroy = 14,
        /// The root's code, for emulating one of its instructions: the 8
        /// bytes at root linear address RDI, read through this CPU's root
        /// vCPU's page tables. RDX = the bytes (little-endian), R8 = how
        /// many are valid (0–8: the read stops at the first byte that is
        /// not mapped as the root's RAM).
        RootFetch = 15,
        /// Write RSI to this CPU's local APIC register at xAPIC offset RDI
        /// for the root; RDX = 1 for an x2APIC register (MSR `0x800 + RDI /
        /// 16`; the ICR takes all 64 bits of RSI). [`SysStatus::Refused`]
        /// for an INIT or SIPI that could reach a CPU in MicroV, an LVT
        /// entry delivering INIT, or an APIC ID change;
        /// [`SysStatus::InvalidArgument`] for an offset that is no register
        /// or an APIC mode other than RDX names.
        ApicWrite = 16,
    }
}

numbered! {
    /// What a syscall returns in RAX.
    SysStatus {
        Success = 0,
        /// No such syscall.
        UnknownSyscall = 1,
        /// An argument is out of range (bad id, size, or address).
        InvalidArgument = 2,
        /// The pool has no room.
        OutOfMemory = 3,
        /// The instruction raised #GP (for example the MSR does not exist).
        Fault = 4,
        /// `VsPromote`: not every CPU running MicroV asked to stop within
        /// the rendezvous timeout; MicroV keeps running on this CPU. VM
        /// calls: the VM or vCPU is in use.
        Busy = 5,
        /// A root-physical range given to a VM is not ordinary root RAM or
        /// overlaps the pool; `ApicWrite`: an IPI the root may not send.
        Refused = 6,
    }
}

numbered! {
    /// Why the microkernel entered the extension (RDI at entry).
    Upcall {
        /// First entry on a CPU. RDX = root vCPU state id for this CPU,
        /// R8 = number of CPUs.
        Bootstrap = 0,
        /// The vCPU state RDX exited; its VMCB and registers say why.
        Exit = 1,
    }
}

/// Where a vCPU state's pages appear in the extension.
pub mod vs_layout {
    /// Base of the window holding every vCPU state's VMCB and register page.
    pub const WINDOW: u64 = 0x0000_2000_0000_0000;
    /// Bytes per vCPU state in the window: VMCB page, register page, run
    /// page (guest states only).
    pub const STRIDE: u64 = 3 * 4096;
    /// Most vCPU states.
    pub const MAX_VS: u64 = 256;
    /// Extension address of the VMCB of state `id`.
    pub const fn vmcb(id: u64) -> u64 {
        WINDOW + id * STRIDE
    }
    /// Extension address of the register page ([`super::VsRegs`]) of state `id`.
    pub const fn gprs(id: u64) -> u64 {
        WINDOW + id * STRIDE + 4096
    }
    /// Extension address of guest state `id`'s run page
    /// ([`crate::run::RunPage`]): root memory, writable by the root.
    pub const fn run(id: u64) -> u64 {
        WINDOW + id * STRIDE + 2 * 4096
    }
}

/// A vCPU state's register page (at [`vs_layout::gprs`]): what the world
/// switch saves besides the VMCB.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsRegs {
    /// The general-purpose registers in x86 register-number order (RAX and
    /// RSP live in the VMCB; their slots here are unused).
    pub gprs: [u64; 16],
    /// The vCPU's XCR0. The extension sets it when it accepts an XSETBV;
    /// the microkernel checks it before every VMRUN and switches it in and
    /// out around the guest, so host code never runs on a guest's XCR0.
    pub xcr0: u64,
    /// A guest vCPU's TSC_AUX (32 bits; reset value 0). The extension keeps
    /// the guest's writes here; the microkernel checks it and has it in
    /// the MSR while, and only while, that guest runs (`kernel::tsc_aux`).
    /// Unused for a root vCPU: the root's value stays in the MSR.
    pub tsc_aux: u64,
}
const _: () = assert!(core::mem::offset_of!(VsRegs, xcr0) == 128);
const _: () = assert!(core::mem::offset_of!(VsRegs, tsc_aux) == 136);

/// I/O ports the extension may use directly from ring 3 (the microkernel's
/// TSS I/O permission bitmap allows exactly these): PCI configuration
/// (0xCF8–0xCFF, which includes the reset control port 0xCF9), so the
/// extension can replay the root's intercepted accesses to them.
pub const EXTENSION_PORTS: core::ops::RangeInclusive<u16> = 0xcf8..=0xcff;

/// Read-only copy of the [`crate::launch::BootInfo`] mapped into the extension.
pub const EXTENSION_BOOT_INFO: u64 = 0x0000_0000_3fff_e000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for &s in Syscall::ALL {
            assert_eq!(Syscall::from_u64(s as u64), Some(s));
        }
        for &s in SysStatus::ALL {
            assert_eq!(SysStatus::from_u64(s as u64), Some(s));
        }
        for &u in Upcall::ALL {
            assert_eq!(Upcall::from_u64(u as u64), Some(u));
        }
        assert_eq!(Syscall::from_u64(99), None);
    }

    #[test]
    fn vs_pages_are_adjacent_and_distinct() {
        assert_eq!(vs_layout::vmcb(0), vs_layout::WINDOW);
        assert_eq!(vs_layout::gprs(0), vs_layout::WINDOW + 4096);
        assert_eq!(vs_layout::vmcb(1), vs_layout::WINDOW + vs_layout::STRIDE);
        assert!(vs_layout::gprs(1) < vs_layout::run(1));
        assert!(vs_layout::run(1) < vs_layout::vmcb(2));
    }

    const _: () = assert!(vs_layout::gprs(vs_layout::MAX_VS) < crate::launch::EXTENSION_STACKS);
    const _: () = assert!(EXTENSION_BOOT_INFO + 8192 <= crate::launch::EXTENSION_BASE);
}
