//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::size::parse_size;

/// Where `microv start` looks for the images unless told otherwise.
pub const DEFAULT_IMAGE_DIR: &str = "/usr/lib/microv";

const STATUS_HELP: &str = "\
Prints MicroV's state, how it was started, its ABI version and capabilities, \
its uptime, the memory it owns, each CPU's state and VM-exit counts, the micro \
VMs (each with its VMM's pid and command, vCPUs, memory and exits), and the \
last error and fault record if there is one.

With --json, prints one JSON object with these fields (names are stable):
  state             \"running\", \"stopped\" or \"failed\"
  start_mode        \"late_launch\", \"early_boot\" or null when stopped
  version           MicroV's version \"MAJOR.MINOR.PATCH\", or null when stopped
  abi_version       \"MAJOR.MINOR\"; abi_version_raw: the 64-bit value
  capabilities      names of the capability bits set (late_launch, early_boot,
                    amd_svm, intel_vmx, test_hooks, bit<N>); capabilities_raw
  uptime_ns         nanoseconds since start (0 when stopped)
  pool              {bytes, free_bytes, chunks, chunk_bytes, first_pa}
  cpu_count         number of CPUs MicroV runs on
  cpus              [{os_cpu, state (\"native\", \"running\" or \"failed\"),
                    exits_total, exits: {cpuid, rdmsr, wrmsr, vmmcall, npf,
                    svm_insn, init, shutdown, xsetbv, other, io,
                    apic}}]
  vm_count          micro VMs the driver holds (null: the driver cannot list
                    them)
  vms               null or [{id, pid (the VMM's), command, state (\"live\";
                    \"zombie\": closed but not yet destroyed; \"orphaned\": its
                    MicroV is gone), vcpus, memory_bytes, exits_total, exits:
                    {io, mmio, hlt, interrupted, shutdown, other}}] (RUN exits
                    counted by the driver; at most 64 listed)
  last_error        null or {code, name, message, advice, cpu (null when not
                    CPU-specific)}
  fault             null or {code, name, message, vector (null when not an
                    exception), vector_name, error_code, rip, cr2, cpl, detail}
Numbers are JSON integers (addresses included); names are snake_case.";

/// Start, stop and inspect MicroV, the micro-hypervisor that runs beneath Linux.
#[derive(Debug, Parser)]
#[command(name = "microv", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start MicroV beneath the running Linux on every online CPU.
    Start(StartOpts),
    /// Stop MicroV and return every CPU to native.
    Stop,
    /// Show MicroV's state, memory, CPUs, exit counts and micro VMs.
    #[command(long_about = STATUS_HELP)]
    Status {
        /// Print one JSON object instead of text (fields: see `microv status --help`).
        #[arg(long)]
        json: bool,
    },
    /// Print the hypervisor's log.
    Log,
    /// Boot a micro VM from a kernel image; its serial console is this
    /// terminal (Ctrl-A X ends it).
    #[command(long_about = crate::run::RUN_HELP)]
    Run(crate::run::RunOpts),
    /// Test only: make the extension fault on a CPU (needs the test
    /// extension image); MicroV must stop everywhere and say why.
    #[command(hide = true)]
    TestFault {
        /// The OS's number of the CPU.
        #[arg(long)]
        cpu: u32,
        /// What the extension does.
        #[arg(long, value_enum, default_value = "page-fault")]
        kind: FaultKind,
    },
}

/// Faults `microv test-fault` can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// Read an unmapped address in the extension.
    PageFault,
    /// Execute an invalid instruction in the extension.
    InvalidOpcode,
    /// Play a compromised extension: ask the microkernel to run the root
    /// with nested paging off (it must refuse).
    LoosenVmcb,
}

impl FaultKind {
    /// The `hv.test_fault` argument.
    pub fn code(self) -> u32 {
        use microv_abi::hypercall::test_fault;
        match self {
            FaultKind::PageFault => test_fault::EXTENSION_PAGE_FAULT as u32,
            FaultKind::InvalidOpcode => test_fault::EXTENSION_INVALID_OPCODE as u32,
            FaultKind::LoosenVmcb => test_fault::EXTENSION_LOOSEN_VMCB as u32,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct StartOpts {
    /// Memory MicroV takes for itself: a multiple of 2 MiB, at most 512 MiB
    /// (e.g. 64M, 256M) [default: 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub pool_size: Option<u64>,
    /// The microkernel image [default: <image dir>/microv-kernel.elf].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The extension image [default: <image dir>/microv-extension.elf].
    #[arg(long, value_name = "PATH")]
    pub extension: Option<PathBuf>,
    /// Directory holding both images.
    #[arg(long, value_name = "DIR", env = "MICROV_IMAGE_DIR", default_value = DEFAULT_IMAGE_DIR)]
    pub image_dir: PathBuf,
    /// Test only: make bring-up fail on the CPU with this MicroV index.
    #[arg(long, value_name = "N", hide = true)]
    pub fail_cpu: Option<u8>,
}

impl StartOpts {
    /// The pool size asked for.
    pub fn pool_size(&self) -> u64 {
        self.pool_size
            .unwrap_or(microv_abi::launch::DEFAULT_POOL_SIZE)
    }

    /// The microkernel's path.
    pub fn kernel_path(&self) -> PathBuf {
        self.kernel.clone().unwrap_or_else(|| {
            self.image_dir
                .join(microv_image::ImageKind::Kernel.file_name())
        })
    }

    /// The extension's path.
    pub fn extension_path(&self) -> PathBuf {
        self.extension.clone().unwrap_or_else(|| {
            self.image_dir
                .join(microv_image::ImageKind::Extension.file_name())
        })
    }

    /// The boot flags these options ask for.
    pub fn flags(&self) -> u64 {
        use microv_abi::launch::boot_flags::{FAIL_CPU, FAIL_CPU_SHIFT};
        match self.fail_cpu {
            Some(n) => FAIL_CPU | (u64::from(n) << FAIL_CPU_SHIFT),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn start(args: &[&str]) -> StartOpts {
        let mut v = vec!["microv", "start"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Start(o) => o,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn start_defaults_and_options() {
        // (MICROV_IMAGE_DIR is not set in the test environment.)
        if std::env::var_os("MICROV_IMAGE_DIR").is_none() {
            let o = start(&[]);
            assert_eq!(o.pool_size(), 64 << 20, "the --pool-size help says 64M");
            assert_eq!(
                o.kernel_path(),
                PathBuf::from("/usr/lib/microv/microv-kernel.elf")
            );
            assert_eq!(
                o.extension_path(),
                PathBuf::from("/usr/lib/microv/microv-extension.elf")
            );
            assert_eq!(o.flags(), 0);
        }
        let o = start(&[
            "--pool-size",
            "128M",
            "--image-dir",
            "/x",
            "--kernel",
            "/k.elf",
        ]);
        assert_eq!(o.pool_size(), 128 << 20);
        assert_eq!(o.kernel_path(), PathBuf::from("/k.elf"));
        assert_eq!(o.extension_path(), PathBuf::from("/x/microv-extension.elf"));
        let o = start(&["--fail-cpu", "3"]);
        assert_eq!(o.flags(), 1 | (3 << 8));
        assert!(Cli::try_parse_from(["microv", "start", "--fail-cpu", "256"]).is_err());
        assert!(Cli::try_parse_from(["microv", "start", "--pool-size", "64Q"]).is_err());
    }

    #[test]
    fn fail_cpu_is_hidden_and_json_fields_are_documented() {
        let mut cmd = Cli::command();
        let start = cmd
            .find_subcommand_mut("start")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!start.contains("fail-cpu"), "{start}");
        let status = cmd
            .find_subcommand_mut("status")
            .unwrap()
            .render_long_help()
            .to_string();
        for field in [
            "state",
            "start_mode",
            "pool",
            "cpus",
            "last_error",
            "fault",
            "exits_total",
            "vm_count",
            "vms",
            "memory_bytes",
        ] {
            assert!(status.contains(field), "{field} missing from status --help");
        }
    }
}
