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
    }
}
