//! `cargo xtask bench`: MicroV against Linux's KVM, same VMM, same guests,
//! in one boot of the emulated machine under `-icount shift=0,sleep=off`
//! (the TSC counts instructions, so the counts repeat). The machine runs
//! `tests/bench/bench.sh`; this module boots it, then reads the figures
//! off its console ([`parse`]) and writes the report ([`report`]) and its
//! chart ([`chart`]) to `target/bench/`. The method is in `docs/benchmarks.md`.

pub mod chart;
pub mod parse;
pub mod profile;
pub mod report;
pub mod symbols;

use crate::machine::{self, MachineArgs};
use crate::test_tools;
use crate::vm::{self, Outcome};
use anyhow::{Context, Result};
use clap::Args;
use std::fs;
use std::path::Path;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// One repeat of each case per backend instead of two (what CI runs:
    /// it proves every case still gives a figure).
    #[arg(long, conflicts_with = "repeats")]
    pub quick: bool,
    /// Runs of each case on each backend.
    #[arg(long, value_name = "K", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeats: u32,
    /// Loop count of the exit cases (after 10 warm-up iterations)
    /// [default: 1000; with --profile 100000].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub iterations: Option<u32>,
    /// Instead of the comparison: where MicroV's instructions go in one exit
    /// case (hypercall, cpuid, pio, mmio), per function, under a QEMU
    /// plugin; writes target/bench/profile-CASE.txt.
    #[arg(long, value_name = "CASE", conflicts_with_all = ["quick", "repeats"])]
    pub profile: Option<String>,
    /// Use what is already in target/microv/ instead of building.
    #[arg(long)]
    pub no_build: bool,
    /// Seconds before the machine is killed (default: 1200 with --quick,
    /// what CI can afford, else 5400).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Keep the run's directory under target/microv/runs/.
    #[arg(long)]
    pub keep: bool,
}

/// Deterministic guest time: one tick per instruction (shift=0), and idle
/// time skipped instead of slept through (sleep=off); and deterministic
/// randomness: QEMU's RDRAND (and so the kernel's KASLR, hash seeds and
/// stack canaries) from a fixed seed instead of the host's entropy.
const DETERMINISM: [&str; 4] = ["-icount", "shift=0,sleep=off", "-seed", "1"];

/// One emulated CPU: KVM nested in QEMU's SVM is unreliable with two
/// (vmm/README.md), and with one the guest's vCPU thread, the root and the
/// hypervisor all take turns on the CPU whose TSC is read.
const SMP: u32 = 1;

/// Loop count of the exit cases.
const ITERATIONS: u32 = 1000;
/// ... and under --profile, where the loop should outweigh the rest of
/// the run many times.
const PROFILE_ITERATIONS: u32 = 100_000;

/// How long a bench machine may run: a full run takes a few minutes, a
/// quick one (CI's) about two.
const FULL_TIMEOUT_S: u64 = 5400;
const QUICK_TIMEOUT_S: u64 = 1200;

/// The bench machine (one CPU, 1 GiB) with these extra QEMU arguments.
fn bench_machine(timeout: u64, no_build: bool, keep: bool, qemu_arg: Vec<String>) -> MachineArgs {
    MachineArgs {
        cpu: None,
        smp: SMP,
        mem: "1G".into(),
        timeout: Some(timeout),
        no_build,
        test_hooks: false,
        no_insmod: false,
        append: Vec::new(),
        qemu_arg,
        keep,
        boot: crate::esp::Boot::Direct,
        esp_conf: Vec::new(),
        esp_file: Vec::new(),
    }
}

pub fn run(root: &Path, args: &BenchArgs) -> Result<i32> {
    if let Some(case) = &args.profile {
        return profile::run(
            root,
            &profile::ProfileArgs {
                case,
                iterations: args.iterations.unwrap_or(PROFILE_ITERATIONS),
                no_build: args.no_build,
                timeout: args.timeout.unwrap_or(FULL_TIMEOUT_S),
                keep: args.keep,
            },
        );
    }
    let iterations = args.iterations.unwrap_or(ITERATIONS);
    let repeats = if args.quick { 1 } else { args.repeats };
    let timeout = args
        .timeout
        .unwrap_or(if args.quick { QUICK_TIMEOUT_S } else { FULL_TIMEOUT_S });
    let determinism = DETERMINISM.iter().map(|a| (*a).to_string()).collect();
    let machine_args = bench_machine(timeout, args.no_build, args.keep, determinism);
    let (stage, kernel) = machine::prepare(root, &machine_args, false)?;
    let out = root.join("target/bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let command = format!(
        "sh /{}/{} --repeats {repeats} --iterations {}",
        test_tools::TEST_DIR,
        test_tools::BENCH_SCRIPT,
        iterations
    );
    let mut cfg = machine::config(root, &machine_args, vec![command]);
    cfg.timeout = Some(Duration::from_secs(timeout));
    let console_log = out.join("console.log");
    cfg.console_log = Some(console_log.clone());
    cfg.debugcon = out.join("debugcon.log");
    let outcome = vm::run(&stage, &kernel, &cfg)?;

    let text = fs::read_to_string(&console_log)
        .with_context(|| format!("reading {}", console_log.display()))?;
    let setup = report::Setup {
        qemu: format!(
            "-accel tcg,thread=single -cpu {} -smp {SMP} -m {} {}",
            vm::DEFAULT_CPU,
            cfg.mem,
            DETERMINISM.join(" ")
        ),
        kernel: kernel.version.clone(),
        repeats,
        iterations,
    };
    let mut report = report::build(setup, &parse::parse(&text));
    report.images = report::images(&stage);
    let md = out.join("report.md");
    let json = out.join("report.json");
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    fs::write(&json, format!("{:#}\n", report.json()))
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = out.join("report.svg");
    fs::write(&svg, chart::svg(&report)?).with_context(|| format!("writing {}", svg.display()))?;

    println!("\n==== bench: instructions (TSC under -icount shift=0), {repeats} repeat(s) ====");
    print!("{}", report.table());
    if let Some(idle) = report.idle_table() {
        println!("\nthe Linux boot: emulated time (ns) = idle + executed instructions");
        print!("{idle}");
    }
    if let Some(w) = report.workload_table() {
        println!(
            "\nthe workload: instructions in total (guest: the guest's TSC; root: the root's)"
        );
        print!("{w}");
    }
    if let Some(m) = report.microv_table() {
        println!("\nMicroV alone (seconds: emulated, 1 ns per instruction)");
        print!("{m}");
    }
    for e in &report.errors {
        println!("bench: error: {e}");
    }
    let missing = report.missing();
    if !missing.is_empty() {
        println!("bench: missing: {}", missing.join(", "));
    }
    println!(
        "bench: {}, {} and {} (console: {})",
        md.display(),
        json.display(),
        svg.display(),
        console_log.display()
    );
    if outcome != Outcome::Exited(0) {
        println!("bench: FAILED: {}", outcome.describe());
        return Ok(outcome.exit_code().max(1));
    }
    Ok(if missing.is_empty() && report.errors.is_empty() {
        0
    } else {
        1
    })
}
