//! Line coverage of the hypervisor crates with cargo-tarpaulin (it needs no
//! llvm-tools component, which this toolchain cannot get).

use crate::util;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The crates whose coverage we report: the code that runs beneath Linux.
const PACKAGES: &[&str] = &[
    "microv-kernel",
    "microv-extension",
    "microv-arch",
    "microv-abi",
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
    let mut cmd = util::cargo(root);
    cmd.arg("tarpaulin");
    for (name, _) in &present {
        cmd.args(["-p", name]);
    }
    // Its own target dir: tarpaulin's instrumentation flags would otherwise
    // invalidate the normal build.
    cmd.args([
        "--skip-clean",
        "--color",
        "Never",
        "--out",
        "Json",
        "--output-dir",
    ])
    .arg(&out_dir)
    .arg("--target-dir")
    .arg(out_dir.join("build"));
    util::run(&mut cmd).context("cargo tarpaulin failed")?;

    let report_path = out_dir.join("tarpaulin-report.json");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .with_context(|| format!("reading {}", report_path.display()))?,
    )
    .with_context(|| format!("parsing {}", report_path.display()))?;
    let files = report["files"]
        .as_array()
        .context("tarpaulin report without `files`")?;
    let mut result: Vec<CrateCoverage> = present
        .iter()
        .map(|(name, _)| CrateCoverage {
            package: name.clone(),
            covered: 0,
            coverable: 0,
        })
        .collect();
    for file in files {
        let path = file_path(&file["path"]);
        // The deepest crate directory containing the file owns it.
        let owner = present
            .iter()
            .enumerate()
            .filter(|(_, (_, dir))| path.starts_with(dir))
            .max_by_key(|(_, (_, dir))| dir.components().count());
        if let Some((i, _)) = owner {
            result[i].covered += file["covered"].as_u64().unwrap_or(0);
            result[i].coverable += file["coverable"].as_u64().unwrap_or(0);
        }
    }
    for c in &result {
        println!("{}", line(&c.package, c.covered, c.coverable));
    }
    let (covered, coverable) = result
        .iter()
        .fold((0, 0), |(a, b), c| (a + c.covered, b + c.coverable));
    println!(
        "{}; report: {}",
        line("total", covered, coverable),
        report_path.display()
    );
    Ok(Some(result))
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
