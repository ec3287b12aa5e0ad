//! `cargo xtask build`: builds every artifact that goes into the emulated
//! machine into the stage directory, `target/microv/`.

use crate::prereq::{self, Need};
use crate::{efi, guest, images, test_tools, util};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File names inside the stage. The initramfs installer uses the same names.
pub const CLI: &str = "microv";
pub const MODULE: &str = "microv.ko";
pub const KVM_SMOKE: &str = "kvm-smoke";

/// Builds everything into `stage_dir(root)` and returns that directory.
pub fn build(root: &Path, test_hooks: bool) -> Result<PathBuf> {
    let stage = util::stage_dir(root);
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let needs_module = root.join("loaders/linux/Kbuild").exists();
    // busybox and cpio: the guest initramfs of the e2e tests.
    let mut needs = vec![Need::Gcc, Need::Busybox, Need::Cpio];
    if needs_module {
        needs.extend([Need::Make, Need::Kernel, Need::Headers]);
    }
    prereq::check(&needs)?;

    build_cli(root, &stage)?;
    // Images before the module: the driver's Kbuild may embed them.
    images::build(root, &stage, test_hooks).context("building the hypervisor images")?;
    efi::build(root, &stage).context("building microv.efi")?;
    if needs_module {
        build_module(root, &stage)?;
    } else {
        // Never leave a stale driver in the stage that the VM would load.
        let _ = fs::remove_file(stage.join(MODULE));
        eprintln!("[xtask] warning: loaders/linux/Kbuild does not exist yet; skipping microv.ko");
    }
    build_guest_programs(root, &stage)?;
    let headers = if needs_module {
        Some(prereq::kernel()?.headers)
    } else {
        None
    };
    test_tools::build(root, &stage, headers.as_deref()).context("building the guest test tools")?;
    guest::build(root, &stage).context("building the micro VM guest's initramfs")?;
    eprintln!("[xtask] stage ready: {}", stage.display());
    Ok(stage)
}

/// The CLI runs in the initramfs, which has no glibc: link it statically.
/// `--target` keeps RUSTFLAGS away from build scripts and proc macros (which
/// cannot be static), and its own target dir keeps the flags from
/// invalidating the normal build.
fn build_cli(root: &Path, stage: &Path) -> Result<()> {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let target_dir = root.join("target/static");
    util::run(
        util::cargo(root)
            .args([
                "build",
                "--release",
                "-p",
                "microv-cli",
                "--target",
                TRIPLE,
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )
    .context("building the microv CLI")?;
    let built = target_dir.join(TRIPLE).join("release").join(CLI);
    util::copy_if_changed(&built, &stage.join(CLI))?;
    Ok(())
}

/// Kbuild writes its objects next to the sources, so it builds a copy in the
/// stage and keeps `loaders/linux/` clean.
fn build_module(root: &Path, stage: &Path) -> Result<()> {
    let kernel = prereq::kernel()?;
    let src = root.join("loaders/linux");
    let build_dir = stage.join("module-build");
    copy_module_sources(&src, &build_dir)?;
    let make = prereq::tool("make", "make")?;
    util::run(
        Command::new(make)
            .arg("-C")
            .arg(&kernel.headers)
            .arg(format!("M={}", build_dir.display()))
            // Lets the Kbuild find the images if it embeds them.
            .arg(format!("MICROV_STAGE={}", stage.display()))
            .arg("modules"),
    )
    .with_context(|| format!("building the driver for kernel {}", kernel.version))?;
    let built = build_dir.join(MODULE);
    if !built.exists() {
        bail!("the driver build succeeded but produced no {} (is `obj-m += microv.o` in loaders/linux/Kbuild?)", built.display());
    }
    util::copy_if_changed(&built, &stage.join(MODULE))?;
    Ok(())
}

/// Copies the driver's sources (not build products) into the build dir,
/// recursively, only rewriting files that changed so `make` stays incremental.
fn copy_module_sources(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            copy_module_sources(&path, &dst.join(&name))?;
        } else if is_module_source(&name) {
            util::copy_if_changed(&path, &dst.join(&name))?;
        }
    }
    Ok(())
}

fn is_module_source(name: &str) -> bool {
    matches!(name, "Kbuild" | "Makefile")
        || [".c", ".h", ".S", ".lds"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Guest-side test helpers from `tests/vm/`, linked statically for the
/// initramfs.
fn build_guest_programs(root: &Path, stage: &Path) -> Result<()> {
    let src = root.join("tests/vm/kvm-smoke.c");
    let out = stage.join(KVM_SMOKE);
    if is_newer(&out, &src) {
        return Ok(());
    }
    let gcc = prereq::tool("gcc", "gcc libc6-dev")?;
    util::run(
        Command::new(gcc)
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(&src),
    )
    .context("building tests/vm/kvm-smoke.c (a static build needs libc6-dev)")
}

/// Whether `out` exists and is at least as new as `src`.
pub fn is_newer(out: &Path, src: &Path) -> bool {
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((mtime(out), mtime(src)), (Some(o), Some(s)) if o >= s)
}
