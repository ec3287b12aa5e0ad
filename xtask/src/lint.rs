//! `cargo clippy` with warnings denied, over the host crates and over the
//! image-only code of the microkernel, the extension and microv.efi
//! (feature `image`), where the no-panic rules matter most.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// One clippy run: what it covers and its extra arguments.
const RUNS: &[(&str, &[&str])] = &[
    ("workspace", &["--workspace", "--all-targets"]),
    (
        "microkernel image code",
        &["-p", "microv-kernel", "--features", "image,debugcon"],
    ),
    (
        "extension image code",
        &["-p", "microv-extension", "--features", "image,test-hooks"],
    ),
    (
        "UEFI application code",
        &["-p", "microv-uefi", "--features", "image"],
    ),
];

/// How many passes [`run`] makes.
pub const RUN_COUNT: usize = RUNS.len();

/// Runs every clippy pass; returns the names of the passes that failed.
pub fn run(root: &Path) -> Result<Vec<&'static str>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut failed = Vec::new();
    for (name, args) in RUNS {
        println!("[xtask] clippy: {name}");
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(["clippy", "--quiet"])
            .args(*args)
            // Image features change the crates' cfg: keep them apart from
            // the host build's artifacts.
            .args(["--target-dir", "target/clippy"])
            .args(["--", "-D", "warnings"])
            .status()
            .context("running cargo clippy")?;
        if !status.success() {
            failed.push(*name);
        }
    }
    Ok(failed)
}
