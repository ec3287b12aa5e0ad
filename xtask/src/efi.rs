//! Builds microv.efi: `loaders/uefi` as a static library for the linux-gnu
//! target (the only one the toolchain has), linked by GNU ld as a PIE at
//! address 0 with `loaders/uefi/link.ld`, then converted to a PE32+ EFI
//! application by objcopy. The trampoline is the Linux driver's assembly
//! source, assembled by gcc and linked in. The application relocates itself
//! at entry (`loaders/uefi/src/efi/entry.rs`), which handles only relative
//! relocations: the build refuses an image with any other kind.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The application's file name in the stage.
pub const EFI_APP: &str = "microv.efi";

/// The trampoline both loaders use (the driver's Kbuild builds it too).
const TRAMPOLINE: &str = "loaders/linux/microv_tramp.S";

/// The ELF sections that make up the PE file (everything else — symbol
/// tables, hash tables — stays behind).
const PE_SECTIONS: [&str; 6] = [".text", ".reloc", ".rodata", ".data", ".dynamic", ".rela"];

/// Builds `stage/microv.efi`.
pub fn build(root: &Path, stage: &Path) -> Result<()> {
    let target_dir = root.join("target/efi");
    util::run(
        util::cargo(root)
            .args([
                "rustc",
                "--quiet",
                "-p",
                "microv-uefi",
                "--profile",
                "hv",
                "--crate-type",
                "staticlib",
                "--features",
                "image",
                "--target-dir",
            ])
            .arg(&target_dir),
    )
    .context("building loaders/uefi")?;
    let lib = target_dir.join("hv/libmicrov_uefi.a");
    let tramp = target_dir.join("microv_tramp.o");
    util::run(
        Command::new("gcc")
            .args(["-c", "-D__ASSEMBLY__", "-I"])
            .arg(root.join("loaders/linux"))
            .arg(root.join(TRAMPOLINE))
            .arg("-o")
            .arg(&tramp),
    )
    .context("assembling the trampoline (install gcc)")?;
    let elf = target_dir.join("microv-efi.so");
    util::run(
        Command::new("ld")
            .args([
                "-pie",
                "--no-dynamic-linker",
                "-nostdlib",
                "-z",
                "nocombreloc",
            ])
            .args(["-z", "norelro", "-z", "noexecstack", "--gc-sections", "-e", "efi_main", "-T"])
            .arg(root.join("loaders/uefi/link.ld"))
            .arg("-o")
            .arg(&elf)
            .arg(&tramp)
            .arg(&lib),
    )
    .context("linking microv.efi (install binutils)")?;
    check_relocations(&elf)?;
    let out = stage.join(EFI_APP);
    let mut objcopy = Command::new("objcopy");
    for section in PE_SECTIONS {
        objcopy.args(["-j", section]);
    }
    util::run(
        objcopy
            .args(["--target=efi-app-x86_64", "--subsystem=10"])
            .arg(&elf)
            .arg(&out),
    )
    .context("converting microv.efi to PE32+")?;
    println!(
        "efi: {} ({} bytes)",
        out.display(),
        std::fs::metadata(&out)?.len()
    );
    Ok(())
}

/// Refuses relocations other than `R_X86_64_RELATIVE`, which the
/// application's entry cannot apply.
fn check_relocations(elf: &Path) -> Result<()> {
    let out = Command::new("readelf")
        .args(["-rW"])
        .arg(elf)
        .output()
        .context("running readelf (install binutils)")?;
    if !out.status.success() {
        bail!("readelf -r {} failed", elf.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let others = foreign_relocations(&text);
    if !others.is_empty() {
        bail!(
            "{} has relocations its entry cannot apply (only R_X86_64_RELATIVE):\n{}",
            elf.display(),
            others.join("\n")
        );
    }
    Ok(())
}

/// The lines of `readelf -rW` output with a relocation type other than
/// `R_X86_64_RELATIVE`.
fn foreign_relocations(readelf: &str) -> Vec<String> {
    readelf
        .lines()
        .filter(|l| l.contains("R_X86_64_") && !l.contains("R_X86_64_RELATIVE"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::foreign_relocations;

    #[test]
    fn only_relative_relocations_pass() {
        let ok = "Relocation section '.rela.dyn' at offset 0x1000 contains 2 entries:\n\
                  000000001008  000000000008 R_X86_64_RELATIVE                    2040\n";
        assert!(foreign_relocations(ok).is_empty());
        let bad = "000000001010  000100000006 R_X86_64_GLOB_DAT  0000000000000000 foo + 0\n";
        assert_eq!(foreign_relocations(&format!("{ok}{bad}")).len(), 1);
    }
}
