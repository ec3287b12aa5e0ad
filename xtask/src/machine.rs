//! Command-line options for the emulated machine, shared by `vm`, `demo` and
//! `test`, and the `vm` subcommand itself.

use crate::esp::Boot;
use crate::initramfs::Add;
use crate::prereq::{self, Kernel};
use crate::vm::{self, Machine, Outcome, VmConfig};
use crate::{stage, util};
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct MachineArgs {
    /// `intel`: the emulated Intel machine (Bochs, VMX) instead of the AMD
    /// one (QEMU, SVM). Anything else is a QEMU CPU model that replaces the
    /// default EPYC,+svm,+npt (like --qemu-arg=-cpu --qemu-arg=MODEL).
    #[arg(long, value_name = "intel|MODEL")]
    pub cpu: Option<String>,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// Guest memory, in QEMU's syntax (512M, 1G, ...).
    #[arg(long, default_value = "1G")]
    pub mem: String,
    /// Seconds before the machine is killed [default: 600 with a command,
    /// none for an interactive shell].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Use what is already in target/microv/ instead of building.
    #[arg(long)]
    pub no_build: bool,
    /// Build the extension with test hooks too.
    #[arg(long)]
    pub test_hooks: bool,
    /// Do not load /usr/lib/microv/microv.ko before the command.
    #[arg(long)]
    pub no_insmod: bool,
    /// Extra kernel command-line word (repeatable), e.g. --append loglevel=7.
    #[arg(long, value_name = "WORD")]
    pub append: Vec<String>,
    /// Extra QEMU argument (repeatable), e.g. --qemu-arg=-icount --qemu-arg=shift=0.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_arg: Vec<String>,
    /// Keep the run's directory (initramfs, init script) under target/microv/runs/.
    #[arg(long)]
    pub keep: bool,
    /// How the machine starts Linux: `direct` (QEMU loads it) or `uefi`
    /// (OVMF runs microv.efi from an EFI system partition, which boots it).
    #[arg(long, value_enum, default_value_t = Boot::Direct)]
    pub boot: Boot,
    /// An extra microv.conf line for `--boot uefi` (repeatable), e.g.
    /// --esp-conf 'microv = off' to boot the same way without MicroV.
    #[arg(long, value_name = "LINE")]
    pub esp_conf: Vec<String>,
    /// A file put on the EFI system partition for `--boot uefi`, over the
    /// default (repeatable), e.g. --esp-file startup.nsh=/tmp/exit.nsh.
    #[arg(long, value_name = "ESP_PATH=FILE", value_parser = esp_file)]
    pub esp_file: Vec<(String, PathBuf)>,
}

impl MachineArgs {
    /// The machine `--cpu` selects.
    pub fn machine(&self) -> Machine {
        match self.cpu.as_deref() {
            Some(Machine::INTEL) => Machine::Intel,
            _ => Machine::Amd,
        }
    }

    /// The extra QEMU arguments: `--qemu-arg`s, then `-cpu MODEL` for a
    /// `--cpu` that names a QEMU model (so it wins).
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = self.qemu_arg.clone();
        if let (Some(model), Machine::Amd) = (&self.cpu, self.machine()) {
            args.extend(["-cpu".to_string(), model.clone()]);
        }
        args
    }
}

/// `ESP_PATH=FILE` of `--esp-file`.
fn esp_file(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((on_esp, file)) if !on_esp.is_empty() && !file.is_empty() => {
            Ok((on_esp.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("`{arg}`: expected ESP_PATH=FILE")),
    }
}

#[derive(Args, Clone, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Copy a host file or directory into the machine (repeatable). A VM_PATH
    /// ending in / is a directory to put it in.
    #[arg(long = "add", value_name = "HOST_PATH:VM_PATH")]
    pub adds: Vec<Add>,
    /// Where to save the hypervisor's port 0xE9 output.
    #[arg(long, value_name = "FILE")]
    pub debugcon: Option<PathBuf>,
    /// The command to run in the machine, after `--`. One argument is run
    /// as a shell script; several are quoted word by word.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Checks prerequisites and builds (unless --no-build): what every machine
/// run needs first.
pub fn prepare(root: &Path, args: &MachineArgs, test_hooks: bool) -> Result<(PathBuf, Kernel)> {
    prereq::check(prereq::VM)?;
    if args.boot == Boot::Uefi {
        prereq::check(&[prereq::Need::Ovmf])?;
    }
    if args.machine() == Machine::Intel {
        prereq::check(prereq::INTEL_VM)?;
    }
    let stage = if args.no_build {
        let stage = util::stage_dir(root);
        if !stage.is_dir() {
            bail!(
                "{} does not exist; run `cargo xtask build` or drop --no-build",
                stage.display()
            );
        }
        stage
    } else {
        stage::build(root, test_hooks || args.test_hooks)?
    };
    Ok((stage, prereq::kernel()?))
}

/// The machine configuration for these options.
pub fn config(root: &Path, args: &MachineArgs, command: Vec<String>) -> VmConfig {
    let default_timeout = if command.is_empty() { None } else { Some(600) };
    VmConfig {
        machine: args.machine(),
        smp: args.smp,
        mem: args.mem.clone(),
        adds: Vec::new(),
        timeout: args.timeout.or(default_timeout).map(Duration::from_secs),
        command,
        insmod: !args.no_insmod,
        append: args.append.clone(),
        qemu_args: args.qemu_args(),
        debugcon: util::stage_dir(root).join("debugcon.log"),
        console_log: None,
        echo: true,
        keep: args.keep,
        boot: args.boot,
        esp_conf: args.esp_conf.clone(),
        esp_files: args.esp_file.clone(),
    }
}

/// `cargo xtask vm`.
pub fn run_vm(root: &Path, args: &VmArgs) -> Result<i32> {
    let (stage, kernel) = prepare(root, &args.machine, false)?;
    let mut cfg = config(root, &args.machine, args.command.clone());
    cfg.adds = args.adds.clone();
    if let Some(path) = &args.debugcon {
        cfg.debugcon = path.clone();
    }
    let outcome = vm::run(&stage, &kernel, &cfg)?;
    match outcome {
        Outcome::Exited(0) => {}
        _ => eprintln!("[xtask] vm: {}", outcome.describe()),
    }
    Ok(outcome.exit_code())
}
