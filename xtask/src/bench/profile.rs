//! `cargo xtask bench --profile CASE`: where MicroV's instructions go in
//! one exit case. Boots the bench machine (one CPU, `-icount`) with the
//! hotblocks TCG plugin (`xtask/plugins/hotblocks.c`), runs only CASE on
//! MicroV with many iterations, and attributes the instructions of the
//! measured loop (the guest's second to third RDTSC) to functions of the
//! microkernel, the extension, the driver, the root kernel and the VMM
//! ([`symbols`]). Writes `target/bench/profile-CASE.txt`.

use super::{parse, symbols, DETERMINISM};
use crate::bench::symbols::{Component, Profile, Region, Symbolizer};
use crate::initramfs::Add;
use crate::machine;
use crate::test_tools;
use crate::vm::{self, Outcome};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The exit cases a profile can run.
pub const CASES: [&str; 4] = ["hypercall", "cpuid", "pio", "mmio"];

/// Where mv-bench-guest loads its guest (`LOAD_ADDR`, `CODE_MAX` in
/// tests/vm/mv-bench-guest.c): its RDTSCs are the plugin's marks, and
/// its addresses are the guest's in the profile.
const GUEST_LO: u64 = 0x100_0000;
const GUEST_HI: u64 = 0x100_1000;
/// The guest reads the TSC before the warm-up, before the measured loop
/// and after it: marks 2 and 3 bracket the measured loop.
const MARK_ON: u32 = 2;
const MARK_OFF: u32 = 3;

/// Blocks the plugin lists (the rest is counted in its total).
const TOP_BLOCKS: u32 = 50_000;
/// Functions in the report.
const TOP_FUNCTIONS: usize = 40;

/// The microkernel's part of the address space (the canonical upper
/// half's hole below Linux's direct map, ARCHITECTURE.md "Memory"):
/// addresses in it outside the image are still the microkernel's.
const MICROKERNEL_HOLE: (u64, u64) = (0xffff_8000_0000_0000, 0xffff_8800_0000_0000);

/// The serial port bench.sh writes the symbols to (the machine's second
/// one: QEMU writes it to a host file).
const SYMBOLS_TTY: &str = "/dev/ttyS1";

pub struct ProfileArgs<'a> {
    pub case: &'a str,
    pub iterations: u32,
    pub no_build: bool,
    pub timeout: u64,
    pub keep: bool,
}

pub fn run(root: &Path, args: &ProfileArgs) -> Result<i32> {
    let case = args.case;
    if !CASES.contains(&case) {
        bail!("--profile takes an exit case: {}", CASES.join(", "));
    }
    let out = root.join("target/bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let plugin = build_plugin(root, &out)?;
    let blocks_file = out.join(format!("profile-{case}.blocks"));
    let symbols_file = out.join(format!("profile-{case}.symbols"));
    for p in [&blocks_file, &symbols_file, &plugin] {
        if p.to_string_lossy().contains(',') {
            bail!(
                "{} has a comma, which QEMU's option syntax cannot take",
                p.display()
            );
        }
    }
    let _ = fs::remove_file(&blocks_file);
    let _ = fs::remove_file(&symbols_file);

    let mut qemu_arg: Vec<String> = DETERMINISM.iter().map(|a| (*a).to_string()).collect();
    qemu_arg.extend([
        "-plugin".to_string(),
        format!(
            "{},out={},top={TOP_BLOCKS},mark_lo={GUEST_LO:#x},mark_hi={GUEST_HI:#x},on={MARK_ON},off={MARK_OFF}",
            plugin.display(),
            blocks_file.display()
        ),
        // The console stays on stdio (what -nographic gives by default);
        // the second port, ttyS1 in the machine, goes to the symbols file.
        "-serial".to_string(),
        "mon:stdio".to_string(),
        "-serial".to_string(),
        format!("file:{}", symbols_file.display()),
    ]);
    let machine_args = super::bench_machine(args.timeout, args.no_build, args.keep, qemu_arg);
    let (stage, kernel) = machine::prepare(root, &machine_args, false)?;
    // bench.sh from the source tree, not the stage: --no-build keeps an
    // older stage, and the profile needs the script's --only and --symbols.
    let script_dir = format!("/{}/profile/", test_tools::TEST_DIR);
    let command = format!(
        "sh {script_dir}{} --only {case} --backend microv --repeats 1 --iterations {} --symbols {SYMBOLS_TTY}",
        test_tools::BENCH_SCRIPT,
        args.iterations
    );
    let mut cfg = machine::config(root, &machine_args, vec![command]);
    cfg.adds.push(Add {
        host: root.join("tests/bench").join(test_tools::BENCH_SCRIPT),
        vm: script_dir,
    });
    cfg.timeout = Some(Duration::from_secs(args.timeout));
    let console_log = out.join(format!("profile-{case}.console.log"));
    cfg.console_log = Some(console_log.clone());
    cfg.debugcon = out.join(format!("profile-{case}.debugcon.log"));
    let outcome = vm::run(&stage, &kernel, &cfg)?;
    if outcome != Outcome::Exited(0) {
        println!("bench: profile: FAILED: {}", outcome.describe());
        return Ok(outcome.exit_code().max(1));
    }

    let blocks = symbols::parse_blocks(
        &fs::read_to_string(&blocks_file)
            .with_context(|| format!("reading the plugin's {}", blocks_file.display()))?,
    );
    let machine_symbols = symbols::parse_machine(
        &fs::read_to_string(&symbols_file)
            .with_context(|| format!("reading {}", symbols_file.display()))?,
    );
    let console = fs::read_to_string(&console_log)
        .with_context(|| format!("reading {}", console_log.display()))?;
    let sample = parse::parse(&console)
        .samples
        .into_iter()
        .find(|s| s.case == case && s.backend == "microv");

    let mut notes = Vec::new();
    if !machine_symbols.complete {
        notes.push("the symbols file is incomplete (no `end` line)".to_string());
    }
    if !blocks.window.starts_with("closed") {
        notes.push(format!(
            "the measuring window did not close (plugin: `window {}`): the counts are not the loop's",
            blocks.window
        ));
    }
    let symbolizer = symbolizer(&stage, &machine_symbols, &mut notes)?;
    let profile = symbols::attribute(&blocks, &symbolizer);
    let header = Header {
        case,
        iterations: u64::from(args.iterations),
        window: &blocks.window,
        listed: blocks.blocks.len(),
        bench_tsc: sample.map(|s| s.tsc),
        notes: &notes,
    };
    let text = format_report(&header, &profile);
    let report = out.join(format!("profile-{case}.txt"));
    fs::write(&report, &text).with_context(|| format!("writing {}", report.display()))?;
    println!("\n{text}");
    println!(
        "bench: profile: {} (blocks: {}, symbols: {}, console: {})",
        report.display(),
        blocks_file.display(),
        symbols_file.display(),
        console_log.display()
    );
    Ok(0)
}

/// `gcc -shared -fPIC` of the plugin into `out/hotblocks.so`.
fn build_plugin(root: &Path, out: &Path) -> Result<PathBuf> {
    let src = root.join("xtask/plugins/hotblocks.c");
    let so = out.join("hotblocks.so");
    if crate::stage::is_newer(&so, &src) {
        return Ok(so);
    }
    let status = Command::new("gcc")
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fvisibility=hidden",
        ])
        .arg("-o")
        .arg(&so)
        .arg(&src)
        .status()
        .context("running gcc (apt-get install gcc)")?;
    if !status.success() {
        bail!("building the QEMU plugin {} failed", src.display());
    }
    Ok(so)
}

/// `nm -n -S -C --defined-only FILE`'s code symbols.
fn nm(file: &Path) -> Result<Vec<symbols::Symbol>> {
    let out = Command::new("nm")
        .args(["-n", "-S", "-C", "--defined-only"])
        .arg(file)
        .output()
        .context("running nm (apt-get install binutils)")?;
    if !out.status.success() {
        bail!("nm {} failed", file.display());
    }
    Ok(symbols::parse_nm(&String::from_utf8_lossy(&out.stdout)))
}

/// The regions, most specific first: the hypervisor images at their link
/// addresses, the driver and the root kernel from the machine's kallsyms,
/// the VMM at its load address, the guest, the microkernel's hole.
fn symbolizer(
    stage: &Path,
    machine: &symbols::MachineSymbols,
    notes: &mut Vec<String>,
) -> Result<Symbolizer> {
    let mut s = Symbolizer::default();
    for (file, component) in [
        ("microv-kernel.elf", Component::Microkernel),
        ("microv-extension.elf", Component::Extension),
    ] {
        match Region::spanning(component, nm(&stage.join(file))?, 1) {
            Some(r) => s.push(r),
            None => notes.push(format!("no symbols in {file}")),
        }
    }
    match Region::spanning(Component::Driver, machine.driver.clone(), 0x1000) {
        Some(r) => s.push(r),
        None => notes.push("no [microv] symbols in the machine's kallsyms".into()),
    }
    match Region::spanning(Component::RootKernel, machine.kernel.clone(), 0x1000) {
        Some(r) => s.push(r),
        None => notes.push("no kernel symbols from the machine".into()),
    }
    match (machine.vmm_bias, machine.vmm_text) {
        (Some(bias), Some((lo, hi))) => {
            let syms = Region::biased(nm(&stage.join("microv"))?, bias);
            s.push(Region::new(Component::User, lo, hi, syms));
        }
        _ => notes.push("no mappings of the VMM: its addresses are `user (no symbol)`".into()),
    }
    s.push(Region::new(
        Component::Guest,
        GUEST_LO,
        GUEST_HI,
        Vec::new(),
    ));
    s.push(Region::new(
        Component::Microkernel,
        MICROKERNEL_HOLE.0,
        MICROKERNEL_HOLE.1,
        Vec::new(),
    ));
    Ok(s)
}

/// What the report says above the tables.
pub struct Header<'a> {
    pub case: &'a str,
    pub iterations: u64,
    pub window: &'a str,
    /// Blocks the plugin listed.
    pub listed: usize,
    /// The guest's own TSC difference over the loop, from its MVBENCH line.
    pub bench_tsc: Option<u64>,
    pub notes: &'a [String],
}

/// The report: totals, instructions per component, then the top functions
/// grouped by component.
pub fn format_report(h: &Header, p: &Profile) -> String {
    let per = |n: u64| n as f64 / h.iterations.max(1) as f64;
    let share = |n: u64| 100.0 * n as f64 / p.total.max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# profile: {} on MicroV, {} iterations (cargo xtask bench --profile {})",
        h.case, h.iterations, h.case
    );
    let _ = writeln!(
        s,
        "# instructions counted per translation block by QEMU's TCG (hotblocks plugin), the \
         guest's measured loop only (plugin window: {}), each block's at its start address",
        h.window
    );
    let _ = write!(
        s,
        "# total {} instructions = {:.1} per iteration",
        p.total,
        per(p.total)
    );
    match h.bench_tsc {
        Some(tsc) => {
            let _ = writeln!(
                s,
                "; the guest's TSC: {tsc} = {:.1} per iteration",
                per(tsc)
            );
        }
        None => {
            let _ = writeln!(s, "; no MVBENCH line from the guest");
        }
    }
    let _ = writeln!(s, "# {} blocks listed by the plugin", h.listed);
    for n in h.notes {
        let _ = writeln!(s, "# NOTE: {n}");
    }
    let _ = writeln!(s, "\n## by component\n");
    let _ = writeln!(
        s,
        "| component | instructions | per iteration | share |\n|---|---:|---:|---:|"
    );
    for (c, n) in &p.components {
        let _ = writeln!(s, "| {c} | {n} | {:.1} | {:.1}% |", per(*n), share(*n));
    }
    let top: Vec<&(Component, String, u64)> = p.functions.iter().take(TOP_FUNCTIONS).collect();
    let _ = writeln!(s, "\n## top {} functions, by component\n", top.len());
    let _ = writeln!(
        s,
        "| component | function | instructions | per iteration | share |\n|---|---|---:|---:|---:|"
    );
    for (c, _) in &p.components {
        for (fc, f, n) in top.iter().filter(|f| f.0 == *c).map(|f| (&f.0, &f.1, f.2)) {
            let _ = writeln!(
                s,
                "| {fc} | `{f}` | {n} | {:.1} | {:.2}% |",
                per(n),
                share(n)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_groups_the_top_functions_by_component() {
        let p = Profile {
            total: 1000,
            functions: vec![
                (Component::Microkernel, "a".into(), 500),
                (Component::Extension, "b".into(), 300),
                (Component::Microkernel, "c".into(), 150),
                (Component::Guest, symbols::NO_SYMBOL.into(), 50),
            ],
            components: vec![
                (Component::Microkernel, 650),
                (Component::Extension, 300),
                (Component::Guest, 50),
            ],
        };
        let notes = vec!["x".to_string()];
        let h = Header {
            case: "hypercall",
            iterations: 10,
            window: "closed marks 3 on 2 off 3",
            listed: 4,
            bench_tsc: Some(990),
            notes: &notes,
        };
        let r = format_report(&h, &p);
        assert!(r.contains("# total 1000 instructions = 100.0 per iteration; the guest's TSC: 990 = 99.0 per iteration"));
        assert!(r.contains("# NOTE: x"));
        assert!(r.contains("| microkernel | 650 | 65.0 | 65.0% |"));
        let a = r
            .find("| microkernel | `a` | 500 | 50.0 | 50.00% |")
            .unwrap();
        let c = r
            .find("| microkernel | `c` | 150 | 15.0 | 15.00% |")
            .unwrap();
        let b = r.find("| extension | `b` |").unwrap();
        // Grouped: both microkernel functions before the extension's.
        assert!(a < c && c < b);
    }
}
