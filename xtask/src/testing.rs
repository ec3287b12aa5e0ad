//! `cargo xtask test`: unit tests, coverage, end-to-end scripts, and one
//! summary ending in `N passed, N failed`.

use crate::e2e::{self, ScriptResult};
use crate::lint;
use crate::machine::{self, MachineArgs};
use crate::vm::Machine;
use crate::{coverage, unit};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Only the end-to-end scripts.
    #[arg(long, conflicts_with = "unit_only")]
    pub e2e_only: bool,
    /// Only the host unit tests (and coverage).
    #[arg(long)]
    pub unit_only: bool,
    /// Only tests whose name contains NAME (unit test names and e2e script names).
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// Skip the coverage measurement (it rebuilds and reruns the tests).
    #[arg(long)]
    pub no_coverage: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
}

pub fn run(root: &Path, args: &TestArgs) -> Result<i32> {
    let filter = args.filter.as_deref();
    let mut unit_counts = None;
    let mut coverage_line = None;
    let mut lint_failures: Option<Vec<&str>> = None;
    if !args.e2e_only {
        println!("==== unit tests ====");
        let counts = unit::run(root, filter)?;
        println!("==== lints ====");
        lint_failures = Some(lint::run(root)?);
        if !args.no_coverage {
            println!("==== coverage ====");
            coverage_line = Some(match coverage::run(root) {
                Ok(Some(_)) => "measured (see the coverage: lines above)".to_string(),
                Ok(None) => "skipped (cargo install cargo-tarpaulin --locked)".to_string(),
                Err(e) => {
                    println!("coverage: not measured: {e:#}");
                    "failed to measure (not counted as a test failure)".to_string()
                }
            });
        }
        unit_counts = Some(counts);
    }
    let mut e2e_results: Vec<ScriptResult> = Vec::new();
    if !args.unit_only {
        e2e_results = run_e2e(root, args)?;
    }

    println!("==== summary ====");
    let mut passed = 0;
    let mut failed = 0;
    if let Some(c) = &unit_counts {
        // A runner that failed without a failing test did not compile.
        let broken = !c.ok && c.failed == 0;
        println!(
            "unit tests: {} passed, {} failed{}",
            c.passed,
            c.failed,
            if broken {
                " (the test run itself failed: build error? counted as 1 failure)"
            } else {
                ""
            }
        );
        passed += c.passed;
        failed += c.failed + u32::from(broken);
    }
    if let Some(lints) = &lint_failures {
        // Each clippy pass counts as one test.
        let total = crate::lint::RUN_COUNT as u32;
        let bad = lints.len() as u32;
        if lints.is_empty() {
            println!("lints: clippy clean ({total} passes)");
        } else {
            println!("lints: clippy FAILED for: {}", lints.join(", "));
        }
        passed += total - bad;
        failed += bad;
    }
    if let Some(line) = coverage_line {
        println!("coverage: {line}");
    }
    for r in &e2e_results {
        println!(
            "e2e {}: {} ({})",
            r.name,
            if r.passed { "PASS" } else { "FAIL" },
            r.detail
        );
        if r.passed {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if !args.unit_only && e2e_results.is_empty() {
        println!("e2e: no executable tests/e2e/*.sh matched");
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Builds once (with test hooks), then boots one machine per script. A
/// build failure fails every script rather than hiding them. Scripts for the
/// Intel machine (Bochs, one host thread) run one after another beside the
/// AMD ones (QEMU, one host thread), their consoles only in their logs.
fn run_e2e(root: &Path, args: &TestArgs) -> Result<Vec<ScriptResult>> {
    let scripts = e2e::scripts(root, args.filter.as_deref())?;
    if scripts.is_empty() {
        return Ok(Vec::new());
    }
    // --smp defaults to 2, as the scripts expect.
    let machine_args = &args.machine;
    let prepared = e2e::check_prerequisites(machine_args, &scripts)
        .and_then(|()| machine::prepare(root, machine_args, true));
    let (stage, kernel) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            println!("e2e: cannot prepare the machine: {e:#}");
            return Ok(scripts
                .iter()
                .map(|s| failed(s, "build or prerequisites failed".to_string()))
                .collect());
        }
    };
    let on = |machine: Machine| -> Vec<PathBuf> {
        scripts
            .iter()
            .filter(|s| e2e::machines_of(machine_args, s).contains(&machine))
            .cloned()
            .collect()
    };
    let (intel, amd) = (on(Machine::Intel), on(Machine::Amd));
    let run_all = |scripts: &[PathBuf], machine: Machine, echo: bool| -> Vec<ScriptResult> {
        scripts
            .iter()
            .map(|script| {
                e2e::run_script(root, &stage, &kernel, machine_args, script, machine, echo)
                    .unwrap_or_else(|e| failed(script, format!("could not run: {e:#}")))
            })
            .collect()
    };
    let mut results = if intel.is_empty() || amd.is_empty() {
        let mut results = run_all(&amd, Machine::Amd, true);
        results.extend(run_all(&intel, Machine::Intel, true));
        results
    } else {
        println!(
            "==== e2e: {} script(s) on the Intel machine run beside the AMD ones; their consoles: {}/e2e/NAME.console.log ====",
            intel.len(),
            stage.display()
        );
        std::thread::scope(|scope| {
            let beside = scope.spawn(|| run_all(&intel, Machine::Intel, false));
            let mut results = run_all(&amd, Machine::Amd, true);
            match beside.join() {
                Ok(more) => results.extend(more),
                Err(_) => results.extend(
                    intel
                        .iter()
                        .map(|s| failed(s, "the Intel machine's runner panicked".to_string())),
                ),
            }
            results
        })
    };
    results.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(results)
}

/// A failed script's result with `detail`.
fn failed(script: &Path, detail: String) -> ScriptResult {
    ScriptResult {
        name: script
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        passed: false,
        detail,
    }
}
