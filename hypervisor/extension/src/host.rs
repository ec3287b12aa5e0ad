//! What the exit handlers need from the machine, behind a trait so the
//! handlers run unchanged against a fake in host unit tests.

use core::fmt;

use microv_abi::hypercall::Status;
use microv_arch::cpuid::CpuidResult;

/// What became of a root APIC write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicOutcome {
    Written,
    /// An INIT or SIPI that could reach a CPU in MicroV, or an APIC ID
    /// change: not carried out.
    Refused,
    /// Not a register write the APIC's mode has.
    Invalid,
}

/// Services of the running hypervisor.
pub trait Host {
    /// The real CPU's answer to CPUID.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult;
    /// Pool pages: (total, free).
    fn mem_stats(&mut self) -> (u64, u64);
    /// The log ring as the loader gave it: address (the physical one
    /// after an early boot) and size in bytes.
    fn log_ring(&mut self) -> (u64, u64);
    /// Writes a line to the hypervisor log.
    fn log(&mut self, args: fmt::Arguments);
    /// A value no caller can predict (for handles).
    fn entropy(&mut self) -> u64;
    /// Reads an MSR on the real CPU; `None` if that raised #GP.
    fn msr_read(&mut self, index: u32) -> Option<u64>;
    /// Writes an MSR on the real CPU; false if that raised #GP.
    fn msr_write(&mut self, index: u32, value: u64) -> bool;
    /// Reads `size` bytes from an I/O port in [`crate::io::INTERCEPTED`].
    fn port_in(&mut self, port: u16, size: u8) -> u32;
    /// Writes `size` bytes to an I/O port in [`crate::io::INTERCEPTED`].
    fn port_out(&mut self, port: u16, size: u8, value: u32);
    /// Identity-maps the root's guest-physical address `gpa`, which took a
    /// nested page fault; false if it lies beyond what the CPU can address.
    fn map_root_gpa(&mut self, gpa: u64) -> bool;
    /// Up to 8 bytes of the root's code at linear address `la` (this CPU's
    /// root paging): the bytes, little-endian, and how many are valid.
    fn root_fetch(&mut self, la: u64) -> (u64, usize);
    /// Writes `value` to this CPU's local APIC register `offset` for the
    /// root (`x2apic`: the x2APIC ICR, `offset` 0x300), after the
    /// microkernel's check.
    fn apic_write(&mut self, offset: u32, value: u64, x2apic: bool) -> ApicOutcome;
    /// The time-stamp counter (guest time: guests run without a TSC offset).
    fn tsc(&mut self) -> u64;
    /// A new micro VM with empty nested tables; its id.
    fn vm_create(&mut self) -> Result<u64, Status>;
    /// Destroys VM `vm` (its vCPUs are gone).
    fn vm_destroy(&mut self, vm: u64) -> Status;
    /// `vm.map_memory`'s R11–R13, checked and mapped by the microkernel.
    fn vm_map(&mut self, vm_pages: u64, gpa_access: u64, hpa: u64) -> Status;
    /// `vm.unmap_memory`'s R11–R12.
    fn vm_unmap(&mut self, vm_pages: u64, gpa: u64) -> Status;
    /// A new guest vCPU of VM `vm` with its run page at root-physical
    /// `run_pa`, its VMCB in the reset state; its id.
    fn vcpu_create(&mut self, vm: u64, run_pa: u64) -> Result<u64, Status>;
    /// Destroys guest vCPU `vcpu` (not running).
    fn vcpu_destroy(&mut self, vcpu: u64) -> Status;
}

/// Test double.
#[cfg(test)]
pub mod fake {
    use super::*;

    #[derive(Default)]
    pub struct FakeHost {
        pub lines: Vec<String>,
        pub next_entropy: u64,
        /// MSRs that exist on the fake CPU; others raise #GP.
        pub msrs: std::collections::BTreeMap<u32, u64>,
        /// Values the fake I/O ports read as.
        pub ports: std::collections::BTreeMap<u16, u32>,
        /// Port writes: (port, size, value).
        pub port_writes: Vec<(u16, u8, u32)>,
        /// Guest-physical addresses mapped on demand; at or above
        /// `gpa_limit` (when non-zero) mapping fails.
        pub mapped_gpas: Vec<u64>,
        pub gpa_limit: u64,
        /// Micro VMs: ids handed out so far, and every VM call made, as
        /// (name, arguments). `vm_status` is what map/unmap/destroy return.
        pub next_id: u64,
        pub vm_calls: Vec<(&'static str, [u64; 3])>,
        pub vm_status: Option<Status>,
        pub tsc: u64,
        /// CPUID answers by leaf, instead of the made-up default.
        pub cpuid_answers: std::collections::BTreeMap<u32, CpuidResult>,
        /// The root's code as `root_fetch` reads it: linear address → byte.
        pub root_code: std::collections::BTreeMap<u64, u8>,
        /// APIC writes: (offset, value, x2apic); `apic_outcome` is the answer.
        pub apic_writes: Vec<(u32, u64, bool)>,
        pub apic_outcome: Option<ApicOutcome>,
    }

    impl FakeHost {
        fn vm_call(&mut self, name: &'static str, args: [u64; 3]) -> Status {
            self.vm_calls.push((name, args));
            self.vm_status.unwrap_or(Status::Success)
        }
        fn new_id(&mut self, name: &'static str, args: [u64; 3]) -> Result<u64, Status> {
            match self.vm_call(name, args) {
                Status::Success => {
                    self.next_id += 1;
                    Ok(self.next_id)
                }
                s => Err(s),
            }
        }
    }

    impl Host for FakeHost {
        fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
            if let Some(r) = self.cpuid_answers.get(&leaf) {
                return *r;
            }
            CpuidResult {
                eax: leaf,
                ebx: subleaf,
                ecx: u32::MAX,
                edx: 0x1234,
            }
        }
        fn mem_stats(&mut self) -> (u64, u64) {
            (16384, 15000)
        }
        fn log_ring(&mut self) -> (u64, u64) {
            (0x7f00_0000, 16384)
        }
        fn log(&mut self, args: fmt::Arguments) {
            self.lines.push(args.to_string());
        }
        fn entropy(&mut self) -> u64 {
            self.next_entropy
        }
        fn msr_read(&mut self, index: u32) -> Option<u64> {
            self.msrs.get(&index).copied()
        }
        fn msr_write(&mut self, index: u32, value: u64) -> bool {
            self.msrs.get_mut(&index).map(|v| *v = value).is_some()
        }
        fn port_in(&mut self, port: u16, _size: u8) -> u32 {
            self.ports.get(&port).copied().unwrap_or(u32::MAX)
        }
        fn port_out(&mut self, port: u16, size: u8, value: u32) {
            self.port_writes.push((port, size, value));
        }
        fn map_root_gpa(&mut self, gpa: u64) -> bool {
            if self.gpa_limit != 0 && gpa >= self.gpa_limit {
                return false;
            }
            self.mapped_gpas.push(gpa);
            true
        }
        fn root_fetch(&mut self, la: u64) -> (u64, usize) {
            let mut bytes = [0u8; 8];
            for (i, b) in bytes.iter_mut().enumerate() {
                match self.root_code.get(&(la + i as u64)) {
                    Some(v) => *b = *v,
                    None => return (u64::from_le_bytes(bytes), i),
                }
            }
            (u64::from_le_bytes(bytes), 8)
        }
        fn apic_write(&mut self, offset: u32, value: u64, x2apic: bool) -> ApicOutcome {
            self.apic_writes.push((offset, value, x2apic));
            self.apic_outcome.unwrap_or(ApicOutcome::Written)
        }
        fn tsc(&mut self) -> u64 {
            self.tsc
        }
        fn vm_create(&mut self) -> Result<u64, Status> {
            self.new_id("vm_create", [0; 3])
        }
        fn vm_destroy(&mut self, vm: u64) -> Status {
            self.vm_call("vm_destroy", [vm, 0, 0])
        }
        fn vm_map(&mut self, vm_pages: u64, gpa_access: u64, hpa: u64) -> Status {
            self.vm_call("vm_map", [vm_pages, gpa_access, hpa])
        }
        fn vm_unmap(&mut self, vm_pages: u64, gpa: u64) -> Status {
            self.vm_call("vm_unmap", [vm_pages, gpa, 0])
        }
        fn vcpu_create(&mut self, vm: u64, run_pa: u64) -> Result<u64, Status> {
            self.new_id("vcpu_create", [vm, run_pa, 0])
        }
        fn vcpu_destroy(&mut self, vcpu: u64) -> Status {
            self.vm_call("vcpu_destroy", [vcpu, 0, 0])
        }
    }
}
