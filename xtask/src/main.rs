//! `cargo xtask`: MicroV's developer harness. Builds the hypervisor, the
//! driver and the CLI, and runs them in an emulated AMD machine (QEMU TCG
//! emulates SVM) or an emulated Intel machine (Bochs emulates VMX) booted
//! from Debian's kernel.

mod bench;
mod bochs;
mod coverage;
mod demo;
mod e2e;
mod efi;
mod esp;
mod gen_header;
mod guest;
mod images;
mod init;
mod initramfs;
mod lint;
mod machine;
mod prereq;
mod stage;
mod test_tools;
mod testing;
mod unit;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "MicroV developer harness: build, run the emulated machine, test"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the CLI, the driver, the hypervisor images and the guest test
    /// helpers into target/microv/.
    Build {
        /// Also build the extension with test hooks (microv-extension-test.elf).
        #[arg(long)]
        test_hooks: bool,
    },
    /// Boot the emulated AMD machine (or with --cpu intel the Intel one)
    /// with MicroV installed and run COMMAND in it as root; exits with
    /// COMMAND's exit status. Without COMMAND, opens an interactive shell
    /// (Ctrl-A X quits QEMU; AMD machine only).
    Vm(machine::VmArgs),
    /// Unit tests, coverage, and the end-to-end scripts in tests/e2e/.
    Test(testing::TestArgs),
    /// Start, query and stop MicroV in the emulated machine.
    Demo(machine::MachineArgs),
    /// Regenerate loaders/linux/microv_abi.h from the microv-abi crate.
    GenHeader,
    /// Benchmarks: every case on MicroV, then on KVM with the same VMM and
    /// guests, in one emulated machine under -icount (instructions); writes
    /// target/bench/report.{md,json}.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let root = util::workspace_root();
    let result = match cli.cmd {
        Cmd::Build { test_hooks } => stage::build(&root, test_hooks).map(|_| 0),
        Cmd::Vm(args) => machine::run_vm(&root, &args),
        Cmd::Test(args) => testing::run(&root, &args),
        Cmd::Demo(args) => demo::run(&root, &args),
        Cmd::GenHeader => gen_header::run(&root).map(|_| 0),
        Cmd::Bench(args) => bench::run(&root, &args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("[xtask] error: {err:#}");
            std::process::exit(1);
        }
    }
}
