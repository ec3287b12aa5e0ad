//! What the exit handlers need from the machine, behind a trait so the
//! handlers run unchanged against a fake in host unit tests.

use core::fmt;

use microv_arch::cpuid::CpuidResult;

/// Services of the running hypervisor.
pub trait Host {
    /// The real CPU's answer to CPUID.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult;
    /// Pool pages: (total, free).
    fn mem_stats(&mut self) -> (u64, u64);
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
    }

    impl Host for FakeHost {
        fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
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
    }
}
