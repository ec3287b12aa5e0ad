//! Host unit tests: `cargo nextest run` if installed, else `cargo test`,
//! over the whole workspace and again for each other feature configuration
//! an image is built with, counting the tests from the runner's output.
//! (nextest does not run doctests; `cargo test --doc` would.)

use crate::util;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    /// The runner itself succeeded (it also fails when a test does not
    /// compile, which no count shows).
    pub ok: bool,
}

/// What each test run covers: the workspace as the host builds it, then
/// every other feature configuration an image is built with (the extension
/// of the fault tests' image serves `hv.test_fault`: `xtask/src/images.rs`).
const CONFIGURATIONS: &[&[&str]] = &[
    &["--workspace"],
    &["-p", "microv-extension", "--features", "test-hooks"],
];

pub fn run(root: &Path, filter: Option<&str>) -> Result<Counts> {
    let nextest = util::cargo(root)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut total = Counts {
        ok: true,
        ..Counts::default()
    };
    for selection in CONFIGURATIONS {
        let counts = run_one(root, nextest, selection, filter)?;
        total.passed += counts.passed;
        total.failed += counts.failed;
        total.ok &= counts.ok;
    }
    Ok(total)
}

/// One runner invocation over `selection` (cargo's package and feature
/// arguments).
fn run_one(root: &Path, nextest: bool, selection: &[&str], filter: Option<&str>) -> Result<Counts> {
    let mut cmd = util::cargo(root);
    if nextest {
        cmd.args(["nextest", "run"]).args(selection);
        // A --filter meant for the e2e scripts may match no unit test.
        cmd.args(["--no-fail-fast", "--no-tests=pass"]);
        cmd.args(filter);
    } else {
        cmd.arg("test").args(selection).arg("--no-fail-fast");
        if let Some(f) = filter {
            cmd.args(["--", f]);
        }
    }
    eprintln!("[xtask] $ {}", util::show(&cmd));
    // Both runners print their summaries on stdout (nextest: stderr), so read
    // both while passing them through.
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo")?;
    let stderr = child.stderr.take().context("cargo stderr")?;
    let err_thread = std::thread::spawn(move || {
        pass_through(BufReader::new(stderr), &mut std::io::stderr(), nextest)
    });
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut counts = pass_through(BufReader::new(stdout), &mut std::io::stdout(), nextest);
    let err_counts = err_thread.join().unwrap_or_default();
    counts.passed += err_counts.passed;
    counts.failed += err_counts.failed;
    counts.ok = child.wait().context("waiting for cargo")?.success();
    Ok(counts)
}

fn pass_through(input: impl BufRead, out: &mut impl Write, nextest: bool) -> Counts {
    let mut counts = Counts::default();
    for line in input.lines().map_while(Result::ok) {
        let _ = writeln!(out, "{line}");
        if let Some((p, f)) = parse_summary(&line, nextest) {
            counts.passed += p;
            counts.failed += f;
        }
    }
    counts
}

/// `test result: ok. 3 passed; 1 failed; ...` (cargo test, once per test
/// binary) or `Summary [...] 4 tests run: 3 passed, 1 failed, ...` (nextest).
/// Only the runner's own kind: nextest shows a failed test's captured output,
/// `test result:` line included, which must not count again.
fn parse_summary(line: &str, nextest: bool) -> Option<(u32, u32)> {
    let line = line.trim();
    if !line.starts_with(if nextest { "Summary" } else { "test result:" }) {
        return None;
    }
    let count = |word: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches([';', ',']) == word)
            .and_then(|w| w[0].parse::<u32>().ok())
            .unwrap_or(0)
    };
    Some((count("passed"), count("failed")))
}

#[cfg(test)]
mod tests {
    use super::parse_summary;

    #[test]
    fn summaries() {
        let cargo = "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(parse_summary(cargo, false), Some((3, 1)));
        assert_eq!(parse_summary(cargo, true), None, "a failed test's output");
        let nextest = "     Summary [   0.010s] 4 tests run: 3 passed, 1 failed, 0 skipped";
        assert_eq!(parse_summary(nextest, true), Some((3, 1)));
        assert_eq!(parse_summary(nextest, false), None);
        assert_eq!(parse_summary("running 4 tests", false), None);
    }
}
