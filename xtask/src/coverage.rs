//! Line coverage of the hypervisor crates with cargo-tarpaulin (it needs no
//! llvm-tools component, which this toolchain cannot get), in every feature
//! configuration the images are built with: a line counts as covered if a
//! test in any configuration runs it.

use crate::util;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The crates whose coverage we report: the code that runs beneath Linux,
/// and microv.efi's, which runs before it.
const PACKAGES: &[&str] = &[
    "microv-kernel",
    "microv-extension",
    "microv-arch",
    "microv-abi",
    "microv-uefi",
];

/// One tarpaulin run: its packages (those of [`PACKAGES`] it tests), extra
/// cargo arguments, and the directory under `target/tarpaulin/` its report
/// goes to.
struct Configuration {
    packages: &'static [&'static str],
    args: &'static [&'static str],
    report_dir: &'static str,
}

/// The host build, then the extension as the fault tests' image is built
/// (`test-hooks`, see `xtask/src/images.rs`).
const CONFIGURATIONS: &[Configuration] = &[
    Configuration {
        packages: PACKAGES,
        args: &[],
        report_dir: "",
    },
    Configuration {
        packages: &["microv-extension"],
        args: &["--features", "test-hooks"],
        report_dir: "test-hooks",
    },
];

/// Lines covered / coverable for one crate.
#[derive(Debug)]
pub struct CrateCoverage {
    pub package: String,
    pub covered: u64,
    pub coverable: u64,
}

/// Runs tarpaulin and prints one `coverage:` line per crate and a total.
/// Ok(None) if tarpaulin is not installed.
pub fn run(root: &Path) -> Result<Option<Vec<CrateCoverage>>> {
    let installed = util::cargo(root)
        .args(["tarpaulin", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("coverage: skipped, cargo-tarpaulin is not installed; install it with:\n  cargo install cargo-tarpaulin --locked");
        return Ok(None);
    }
    let dirs = package_dirs(root)?;
    let present: Vec<&(String, PathBuf)> = dirs
        .iter()
        .filter(|(name, _)| PACKAGES.contains(&name.as_str()))
        .collect();
    if present.is_empty() {
        bail!("none of {PACKAGES:?} is in the workspace");
    }
    let out_dir = root.join("target/tarpaulin");
    let mut lines = LineMap::new();
    let mut reports = Vec::new();
    for config in CONFIGURATIONS {
        let packages: Vec<&str> = config
            .packages
            .iter()
            .copied()
            .filter(|p| present.iter().any(|(name, _)| name == p))
            .collect();
        if packages.is_empty() {
            continue;
        }
        let report_dir = out_dir.join(config.report_dir);
        let mut cmd = util::cargo(root);
        cmd.arg("tarpaulin");
        for name in &packages {
            cmd.args(["-p", name]);
        }
        cmd.args(config.args);
        // Its own target dir: tarpaulin's instrumentation flags would
        // otherwise invalidate the normal build.
        cmd.args([
            "--skip-clean",
            "--color",
            "Never",
            "--out",
            "Json",
            "--output-dir",
        ])
        .arg(&report_dir)
        .arg("--target-dir")
        .arg(out_dir.join("build"));
        util::run(&mut cmd)
            .with_context(|| format!("cargo tarpaulin {} failed", config.args.join(" ")))?;

        let report_path = report_dir.join("tarpaulin-report.json");
        let report: Value = serde_json::from_slice(
            &std::fs::read(&report_path)
                .with_context(|| format!("reading {}", report_path.display()))?,
        )
        .with_context(|| format!("parsing {}", report_path.display()))?;
        merge(&mut lines, &report)?;
        reports.push(report_path.display().to_string());
    }
    let mut result: Vec<CrateCoverage> = present
        .iter()
        .map(|(name, _)| CrateCoverage {
            package: name.clone(),
            covered: 0,
            coverable: 0,
        })
        .collect();
    for (path, file_lines) in &lines {
        // The deepest crate directory containing the file owns it.
        let owner = present
            .iter()
            .enumerate()
            .filter(|(_, (_, dir))| path.starts_with(dir))
            .max_by_key(|(_, (_, dir))| dir.components().count());
        if let Some((i, _)) = owner {
            result[i].covered += file_lines.values().filter(|&&hit| hit).count() as u64;
            result[i].coverable += file_lines.len() as u64;
        }
    }
    for c in &result {
        println!("{}", line(&c.package, c.covered, c.coverable));
    }
    let (covered, coverable) = result
        .iter()
        .fold((0, 0), |(a, b), c| (a + c.covered, b + c.coverable));
    println!(
        "{}; reports: {}",
        line("total", covered, coverable),
        reports.join(", ")
    );
    Ok(Some(result))
}

/// For each source file, each coverable line and whether a test ran it.
type LineMap = BTreeMap<PathBuf, HashMap<u64, bool>>;

/// Adds a tarpaulin JSON report to `lines`: a line is coverable if any
/// report lists it, covered if any report saw it run.
fn merge(lines: &mut LineMap, report: &Value) -> Result<()> {
    let files = report["files"]
        .as_array()
        .context("tarpaulin report without `files`")?;
    for file in files {
        let file_lines = lines.entry(file_path(&file["path"])).or_default();
        let traces = file["traces"]
            .as_array()
            .context("tarpaulin report: a file without `traces`")?;
        for trace in traces {
            let line = trace["line"]
                .as_u64()
                .context("tarpaulin report: a trace without `line`")?;
            let hit = trace["stats"]["Line"].as_u64().unwrap_or(0) > 0;
            *file_lines.entry(line).or_default() |= hit;
        }
    }
    Ok(())
}

/// `coverage: 74.58% of lines in microv-arch (88/118)`.
fn line(what: &str, covered: u64, coverable: u64) -> String {
    if coverable == 0 {
        return format!("coverage: no coverable lines in {what} (no tests reach it)");
    }
    let percent = covered as f64 * 100.0 / coverable as f64;
    format!("coverage: {percent:.2}% of lines in {what} ({covered}/{coverable})")
}

/// Tarpaulin writes a path either as a string or as its components.
fn file_path(v: &Value) -> PathBuf {
    match v {
        Value::String(s) => PathBuf::from(s),
        Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
        _ => PathBuf::new(),
    }
}

/// (package name, crate directory) for every workspace member.
fn package_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = util::cargo(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata without packages")?;
    Ok(packages
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_string();
            let dir = Path::new(p["manifest_path"].as_str()?)
                .parent()?
                .to_path_buf();
            Some((name, dir))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merged_reports_count_a_line_covered_by_either() {
        let plain = json!({"files": [
            {"path": ["/w", "a.rs"], "traces": [
                {"line": 1, "stats": {"Line": 2}},
                {"line": 2, "stats": {"Line": 0}},
                {"line": 3, "stats": {"Line": 0}},
            ]},
            {"path": "/w/b.rs", "traces": [{"line": 7, "stats": {"Line": 1}}]},
        ]});
        let hooks = json!({"files": [
            {"path": "/w/a.rs", "traces": [
                {"line": 2, "stats": {"Line": 5}},
                {"line": 3, "stats": {"Line": 0}},
                {"line": 9, "stats": {"Line": 0}},
            ]},
        ]});
        let mut lines = LineMap::new();
        merge(&mut lines, &plain).unwrap();
        merge(&mut lines, &hooks).unwrap();
        let a = &lines[Path::new("/w/a.rs")];
        assert_eq!(a.len(), 4, "lines 1, 2, 3 and 9");
        assert_eq!(a.values().filter(|&&hit| hit).count(), 2, "lines 1 and 2");
        assert_eq!(lines[Path::new("/w/b.rs")].len(), 1);
        assert!(merge(&mut lines, &json!({})).is_err());
    }
}
