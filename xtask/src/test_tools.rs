//! The guest-side test tools from `tests/vm/` besides kvm-smoke: small static
//! C programs for the e2e scripts and the benchmarks, the `mvprobe` test
//! module, the shell library the scripts source, and the benchmarks'
//! in-machine driver (`tests/bench/bench.sh`). `stage::build` builds them
//! into the stage and `initramfs::install_stage` installs them where
//! [`TOOLS`] says.

use crate::{prereq, stage, util};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Where the test-only files (not programs) go in the machine.
pub const TEST_DIR: &str = "usr/lib/microv-tests";

/// Static C programs: `tests/vm/<name>.c` → stage `<name>` → `/usr/bin/<name>`.
pub const PROGRAMS: &[&str] = &[
    "mv-hypercall",
    "cpuid-query",
    "mv-physpage",
    "cpuid-loop",
    "mv-sysbench",
    "mv-vm-smoke",
    "mv-guest-elf",
    "mv-bench-guest",
    "mv-bench-vm",
    "tsc-now",
    "tsc-aux",
];

/// The test module's name in the stage and in [`TEST_DIR`].
pub const MVPROBE: &str = "mvprobe.ko";

/// The e2e scripts' shared shell functions: `tests/vm/e2e-lib.sh`, sourced
/// from [`TEST_DIR`].
pub const E2E_LIB: &str = "e2e-lib.sh";

/// `cargo xtask bench`'s driver in the machine: `tests/bench/bench.sh`,
/// run from [`TEST_DIR`].
pub const BENCH_SCRIPT: &str = "bench.sh";

/// Every stage file of this module and the machine directory it goes to.
pub fn installs() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = PROGRAMS.iter().map(|p| (*p, "usr/bin")).collect();
    v.push((MVPROBE, TEST_DIR));
    v.push((E2E_LIB, TEST_DIR));
    v.push((BENCH_SCRIPT, TEST_DIR));
    v
}

/// Builds the programs and copies the library; builds mvprobe.ko when
/// `headers` (the kernel headers directory) is given.
pub fn build(root: &Path, stage: &Path, headers: Option<&Path>) -> Result<()> {
    let vm = root.join("tests/vm");
    // Programs may include the driver's generated ABI header.
    let abi = root.join(ABI_HEADER);
    let abi_dir = abi.parent().context("the ABI header has no directory")?;
    for name in PROGRAMS {
        let src = vm.join(format!("{name}.c"));
        let out = stage.join(name);
        if stage::is_newer(&out, &src) && stage::is_newer(&out, &abi) {
            continue;
        }
        let gcc = prereq::tool("gcc", "gcc libc6-dev")?;
        util::run(
            Command::new(gcc)
                .args(["-static", "-O2", "-Wall", "-Werror"])
                .arg("-I")
                .arg(abi_dir)
                .arg("-o")
                .arg(&out)
                .arg(&src),
        )
        .with_context(|| format!("building tests/vm/{name}.c (a static build needs libc6-dev)"))?;
    }
    util::copy_if_changed(&vm.join(E2E_LIB), &stage.join(E2E_LIB))?;
    util::copy_if_changed(
        &root.join("tests/bench").join(BENCH_SCRIPT),
        &stage.join(BENCH_SCRIPT),
    )?;
    match headers {
        Some(h) => build_mvprobe(root, stage, h)?,
        None => {
            let _ = fs::remove_file(stage.join(MVPROBE));
        }
    }
    Ok(())
}

/// The driver's generated ABI header, which mvprobe and the programs (e.g.
/// mv-vm-smoke) include for the hypercall numbers, statuses and ioctls.
const ABI_HEADER: &str = "loaders/linux/microv_abi.h";

/// Like the driver: Kbuild writes next to its sources, so build a copy of
/// every file in `tests/vm/mvprobe/` plus [`ABI_HEADER`].
fn build_mvprobe(root: &Path, stage: &Path, headers: &Path) -> Result<()> {
    let src = root.join("tests/vm/mvprobe");
    let build_dir = stage.join("mvprobe-build");
    let mut names = Vec::new();
    for entry in fs::read_dir(&src).with_context(|| format!("listing {}", src.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().context("a file without a name")?;
            util::copy_if_changed(&path, &build_dir.join(name))?;
            names.push(name.to_owned());
        }
    }
    let abi = root.join(ABI_HEADER);
    let abi_name = abi.file_name().context("the ABI header has no name")?;
    util::copy_if_changed(&abi, &build_dir.join(abi_name))?;
    names.push(abi_name.to_owned());
    // Sources that left tests/vm/mvprobe/ must not linger in the copy.
    for entry in fs::read_dir(&build_dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let text = name.to_string_lossy();
        // Kbuild generates `<module>.mod.c`; that one stays.
        let source =
            [".c", ".S", ".h"].iter().any(|ext| text.ends_with(ext)) && !text.ends_with(".mod.c");
        if path.is_file() && source && !names.contains(&name) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let make = prereq::tool("make", "make")?;
    util::run(
        Command::new(make)
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", build_dir.display()))
            .arg("modules"),
    )
    .context("building tests/vm/mvprobe (the test module)")?;
    let built = build_dir.join(MVPROBE);
    if !built.exists() {
        bail!("the mvprobe build produced no {}", built.display());
    }
    util::copy_if_changed(&built, &stage.join(MVPROBE))?;
    Ok(())
}
