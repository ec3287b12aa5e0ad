//! Builds the bare-metal hypervisor images: each crate is compiled as a
//! static library for the linux-gnu target (the only one the toolchain
//! has) without std, linked by GNU ld at its fixed address with the crate's
//! `link.ld`, and sealed (image size and checksum written into its header).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use microv_image::ImageKind;

/// One image to build.
struct Image {
    package: &'static str,
    lib: &'static str,
    dir: &'static str,
    features: &'static str,
    output: &'static str,
    kind: ImageKind,
    target_dir: &'static str,
}

const KERNEL: Image = Image {
    package: "microv-kernel",
    lib: "libmicrov_kernel.a",
    dir: "hypervisor/kernel",
    // `debugcon`: the log also goes to port 0xE9, which the emulated machine
    // saves (`--debugcon`, default target/microv/debugcon.log).
    features: "image,debugcon",
    output: "microv-kernel.elf",
    kind: ImageKind::Kernel,
    target_dir: "target/hv",
};
const EXTENSION: Image = Image {
    package: "microv-extension",
    lib: "libmicrov_extension.a",
    dir: "hypervisor/extension",
    features: "image",
    output: "microv-extension.elf",
    kind: ImageKind::Extension,
    target_dir: "target/hv",
};
/// The extension with `hv.test_fault` served, for the fault tests. Its own
/// target directory keeps the two feature sets from rebuilding each other.
const EXTENSION_TEST: Image = Image {
    features: "image,test-hooks",
    output: "microv-extension-test.elf",
    target_dir: "target/hv-test",
    ..EXTENSION
};

/// Builds `stage/microv-kernel.elf`, `stage/microv-extension.elf` and, with
/// `test_hooks`, `stage/microv-extension-test.elf`.
pub fn build(root: &Path, stage: &Path, test_hooks: bool) -> Result<()> {
    let mut images = vec![KERNEL, EXTENSION];
    if test_hooks {
        images.push(EXTENSION_TEST);
    }
    for image in &images {
        build_one(root, stage, image).with_context(|| format!("building {}", image.output))?;
    }
    Ok(())
}

fn build_one(root: &Path, stage: &Path, image: &Image) -> Result<()> {
    let target_dir = root.join(image.target_dir);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "rustc",
            "--quiet",
            "-p",
            image.package,
            "--profile",
            "hv",
            "--crate-type",
            "staticlib",
        ])
        .args(["--features", image.features])
        .arg("--target-dir")
        .arg(&target_dir)
        // Host code may use the red zone; interrupt-free ring 0 code could
        // too, but exceptions land on the same stack, so no red zone at all.
        .env("RUSTFLAGS", "-C no-redzone=yes -C force-frame-pointers=yes")
        .status()
        .context("running cargo rustc")?;
    if !status.success() {
        bail!("cargo rustc for {} failed", image.package);
    }
    let lib: PathBuf = target_dir.join("hv").join(image.lib);
    let output = stage.join(image.output);
    let script = root.join(image.dir).join("link.ld");
    let status = Command::new("ld")
        .args([
            "-static",
            "-nostdlib",
            "--gc-sections",
            "-z",
            "max-page-size=4096",
            "-z",
            "noexecstack",
        ])
        .arg("-T")
        .arg(&script)
        .arg("-o")
        .arg(&output)
        .arg(&lib)
        .status()
        .context("running ld (install binutils)")?;
    if !status.success() {
        bail!("linking {} failed", image.output);
    }
    let checksum = microv_image::seal_file(&output, image.kind)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("sealing {}", output.display()))?;
    println!(
        "images: {} ({} bytes, checksum {checksum:#018x})",
        output.display(),
        std::fs::metadata(&output)?.len()
    );
    Ok(())
}
