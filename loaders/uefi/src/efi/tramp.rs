//! The trampoline: the one page of code that runs on both the firmware's
//! page tables and the hypervisor's. It is the Linux driver's own
//! (`loaders/linux/microv_tramp.S`, assembled into microv.efi by
//! `xtask/src/efi.rs`), so the microkernel's contract with it is the same
//! in both ways in: entry with RDI = the landing page, promotion back with
//! RDI = the landing page and RAX = the root's CR3. microv.efi runs it from
//! a copy (`start`): its code has no absolute references.

use microv_abi::launch::CpuLanding;

extern "C" {
    /// Enters MicroV on this CPU; 0 once it runs beneath the firmware, else
    /// a `StartError` code.
    pub fn microv_enter(landing: *mut CpuLanding) -> u64;
    /// Where the microkernel hands a CPU back (promotion).
    pub fn microv_promote();
    /// The trampoline's page, and the end of its code.
    pub fn microv_tramp_start();
    pub fn microv_tramp_end();
}
