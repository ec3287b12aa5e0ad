//! End-to-end tests: each executable `tests/e2e/*.sh` runs in its own boot
//! of the emulated machine and passes when it exits 0.

use crate::initramfs::Add;
use crate::machine::{self, MachineArgs};
use crate::prereq::Kernel;
use crate::util;
use crate::vm::{self, Outcome};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One script's result.
#[derive(Debug)]
pub struct ScriptResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The scripts to run, sorted by name (numeric prefixes order them).
pub fn scripts(root: &Path, filter: Option<&str>) -> Result<Vec<PathBuf>> {
    let dir = root.join("tests/e2e");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".sh") || filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if util::is_executable(&path) {
            found.push(path);
        } else {
            eprintln!("[xtask] e2e: skipping {name}: not executable (chmod +x it)");
        }
    }
    found.sort();
    Ok(found)
}

/// Runs one script in a fresh machine; the console and the port 0xE9 output
/// are kept in `target/microv/e2e/<name>.{console,debugcon}.log`.
pub fn run_script(
    root: &Path,
    stage: &Path,
    kernel: &Kernel,
    args: &MachineArgs,
    script: &Path,
) -> Result<ScriptResult> {
    let name = script
        .file_name()
        .context("script without a name")?
        .to_string_lossy()
        .into_owned();
    let logs = stage.join("e2e");
    fs::create_dir_all(&logs)?;
    let vm_path = format!("/tests/{name}");
    let mut cfg = machine::config(root, args, vec![vm_path.clone()]);
    cfg.adds = vec![Add {
        host: script.to_path_buf(),
        vm: vm_path,
    }];
    cfg.console_log = Some(logs.join(format!("{name}.console.log")));
    cfg.debugcon = logs.join(format!("{name}.debugcon.log"));

    println!("==== e2e: {name} ====");
    let start = Instant::now();
    let outcome = vm::run(stage, kernel, &cfg)?;
    let secs = start.elapsed().as_secs_f64();
    let passed = outcome == Outcome::Exited(0);
    let mut detail = format!("{} in {secs:.1} s", outcome.describe());
    if !passed {
        detail.push_str(&format!(
            "; logs: {}/{name}.{{console,debugcon}}.log",
            logs.display()
        ));
    }
    println!(
        "==== e2e: {name}: {} ({detail}) ====",
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(ScriptResult {
        name,
        passed,
        detail,
    })
}
