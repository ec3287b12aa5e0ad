//! `microv run`: boot a micro VM with the VMM library, the guest's serial
//! console on this terminal.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use vmm::console::RawTerminal;
use vmm::{BackendKind, Console, VmConfig, VmmError};

use crate::error::CliError;
use crate::size::{mib, parse_size};

pub const RUN_HELP: &str = "\
Boots a Linux guest straight from a kernel image (a bzImage such as \
/boot/vmlinuz-<version>, or an ELF vmlinux) with an optional initramfs. The \
guest's serial console (ttyS0) is this terminal, both ways; when stdin is a \
terminal it is put in raw mode. Ctrl-A X ends the VM; Ctrl-A Ctrl-A sends \
Ctrl-A to the guest.

The guest's `poweroff` or `reboot` ends the command with status 0; a VMM or \
backend failure ends it with status 1.

Backends: `microv` (the default) runs the guest beneath Linux on MicroV, \
which must be running (`microv start`); `kvm` runs it on Linux's KVM \
(/dev/kvm). The command never falls back from one to the other.";

/// Where the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// MicroV, beneath Linux (/dev/microv).
    Microv,
    /// Linux's KVM (/dev/kvm).
    Kvm,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunOpts {
    /// The guest kernel: a bzImage (e.g. /boot/vmlinuz-<version>) or an ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// The initramfs the kernel unpacks as its root file system.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Guest memory (e.g. 256M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub mem: u64,
    /// Virtual CPUs (one VMM thread each).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(vmm::config::MAX_CPUS)))]
    pub cpus: u8,
    /// The kernel command line; replaces the default.
    #[arg(long, value_name = "TEXT", default_value = vmm::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Where the guest runs.
    #[arg(long, value_enum, default_value = "microv")]
    pub backend: Backend,
}

impl RunOpts {
    pub fn config(&self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            memory: self.mem,
            cpus: self.cpus,
            cmdline: self.cmdline.clone(),
            backend: match self.backend {
                Backend::Microv => BackendKind::MicroV,
                Backend::Kvm => BackendKind::Kvm,
            },
        }
    }
}

/// A VMM error as `microv: run failed: …` with a hint; errors the user
/// cannot act on get the hint to report them.
fn failed(e: &VmmError) -> CliError {
    CliError::usage(
        format!("run failed: {e}"),
        e.hint().unwrap_or_else(|| {
            "this is a VMM or backend failure, not a mistake in the command; \
             please report it with the guest's console output"
                .into()
        }),
    )
}

/// Runs the VM; a clean end (power-off, reboot, Ctrl-A X) is success.
pub fn run(opts: &RunOpts, err: &mut dyn Write) -> Result<(), CliError> {
    let config = opts.config();
    let stdin = io::stdin();
    // Restored when dropped, before anything below prints.
    let raw = RawTerminal::enter(stdin.as_fd()).map_err(|e| failed(&VmmError::Console(e)))?;
    // The guest writes to its own handle on fd 1: `main` holds the lock of
    // Rust's `Stdout` for the whole command, and vCPU threads must not wait
    // for it.
    let stdout = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| failed(&VmmError::Console(e)))?;
    let console = Console {
        input: Some(Box::new(io::stdin())),
        output: Box::new(File::from(stdout)),
    };
    let result = vmm::run(&config, console);
    drop(raw);
    let report = result.map_err(|e| failed(&e))?;
    // The guest's last line may lack a newline; ours starts on a fresh one.
    writeln!(
        err,
        "\nmicrov: {} after {:.2} s ({} vCPU{}, {}; exits: {})",
        report.reason.describe(),
        report.elapsed.as_secs_f64(),
        config.cpus,
        if config.cpus == 1 { "" } else { "s" },
        mib(config.memory),
        report.exits.summary(),
    )?;
    let ports = report.exits.ports_summary();
    if !ports.is_empty() {
        writeln!(err, "microv: busiest ports (exits): {ports}")?;
    }
    if report.reason.is_clean() {
        Ok(())
    } else {
        Err(CliError::usage(
            format!("the VM stopped: {}", report.reason.describe()),
            "see the guest's console output above",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> Result<RunOpts, clap::Error> {
        let mut v = vec!["microv", "run"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.command {
            Command::Run(o) => o,
            c => panic!("{c:?}"),
        })
    }

    #[test]
    fn defaults_match_the_vmm() {
        let o = parse(&["--kernel", "/boot/vmlinuz"]).unwrap();
        let c = o.config();
        assert_eq!(c.memory, vmm::DEFAULT_MEMORY);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.cmdline, "console=ttyS0 reboot=k panic=1");
        assert_eq!(c.backend, BackendKind::MicroV);
        assert_eq!(c.initrd, None);
    }

    #[test]
    fn options_parse() {
        let o = parse(&[
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--mem",
            "1G",
            "--cpus",
            "4",
            "--cmdline",
            "console=ttyS0 quiet",
            "--backend",
            "kvm",
        ])
        .unwrap();
        let c = o.config();
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.initrd, Some(PathBuf::from("/i")));
        assert_eq!((c.memory, c.cpus), (1 << 30, 4));
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        assert_eq!(c.backend, BackendKind::Kvm);
        for bad in [
            &["--initrd", "/i"][..],
            &["--kernel", "/k", "--cpus", "0"],
            &["--kernel", "/k", "--cpus", "65"],
            &["--kernel", "/k", "--mem", "lots"],
            &["--kernel", "/k", "--backend", "xen"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn help_explains_the_console_and_backends() {
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        for s in [
            "Ctrl-A X",
            "--backend",
            "kvm",
            "status 0",
            "--initrd",
            "microv start",
        ] {
            assert!(help.contains(s), "{s} missing from run --help");
        }
    }

    #[test]
    fn errors_come_with_hints() {
        let r = failed(&VmmError::Backend(vmm::backend::BackendError::NotRunning {
            backend: "MicroV",
        }))
        .render();
        assert_eq!(
            r,
            "microv: run failed: MicroV is not running\n\
             hint: start it with `microv start`\n"
        );
        let r = failed(&VmmError::Backend(
            vmm::backend::BackendError::DeviceMissing {
                device: "/dev/microv",
            },
        ))
        .render();
        assert!(
            r.starts_with(
                "microv: run failed: /dev/microv does not exist\nhint: load MicroV's driver"
            ),
            "{r}"
        );
        let r = failed(&VmmError::VcpuStuck(0)).render();
        assert!(r.contains("hint: this is a VMM or backend failure"), "{r}");
    }

    #[test]
    fn microv_backend_needs_microv_and_missing_kernels_are_named() {
        let mut err = Vec::new();
        let o = parse(&["--kernel", "/boot/vmlinuz"]).unwrap();
        let r = run(&o, &mut err).unwrap_err().render();
        // No /dev/microv here, or MicroV not running, or no permission:
        // each says what to do.
        assert!(r.starts_with("microv: run failed: "), "{r}");
        assert!(r.contains("\nhint: "), "{r}");
        if !std::path::Path::new("/dev/microv").exists() {
            assert!(r.contains("/dev/microv does not exist"), "{r}");
            assert!(r.contains("`microv start`"), "{r}");
        }
        let o = parse(&["--kernel", "/nonexistent/vmlinuz", "--backend", "kvm"]).unwrap();
        let r = run(&o, &mut err).unwrap_err().render();
        // Whether /dev/kvm or the kernel is checked first, both say what to do.
        assert!(r.starts_with("microv: run failed: "), "{r}");
        assert!(r.contains("\nhint: "), "{r}");
    }
}
