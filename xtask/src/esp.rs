//! `--boot uefi`: the machine boots OVMF, which runs microv.efi from an EFI
//! system partition the harness lays out in the run directory (QEMU serves
//! the directory as a FAT drive); microv.efi then boots Debian's kernel
//! through its EFI stub with the run's initramfs and command line.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::efi::EFI_APP;
use crate::prereq::{OVMF_CODE, OVMF_VARS};

/// How the emulated machine starts Linux.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Boot {
    /// QEMU loads the kernel and initramfs itself (-kernel, -initrd).
    #[default]
    Direct,
    /// OVMF runs microv.efi, which boots the kernel (early boot).
    Uefi,
}

/// Where the application and its files go on the partition (the firmware's
/// default boot path runs `\EFI\BOOT\BOOTX64.EFI`).
const BOOT_APP: &str = "EFI/BOOT/BOOTX64.EFI";
const MICROV_DIR: &str = "EFI/microv";

/// The microv.conf that boots `vmlinuz` and `initrd.img` from the
/// partition's MicroV directory with `cmdline`, and the `extra` lines; with
/// a `boot = next` line among them, only those (the firmware's next boot
/// entry boots the kernel: [`startup_script`]).
pub fn conf_text(cmdline: &str, extra: &[String]) -> String {
    let mut text = String::from("# Written by cargo xtask vm --boot uefi\n");
    if !boots_next(extra) {
        text.push_str(&format!(
            "kernel = \\EFI\\microv\\vmlinuz\n\
             initrd = \\EFI\\microv\\initrd.img\n\
             cmdline = {cmdline}\n"
        ));
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// True if the extra microv.conf lines hand over to the next boot entry.
fn boots_next(extra: &[String]) -> bool {
    extra
        .iter()
        .any(|l| l.split_once('=').is_some_and(|(k, v)| k.trim() == "boot" && v.trim() == "next"))
}

/// The UEFI shell's `startup.nsh`: OVMF's boot entry after the disk (whose
/// default path is microv.efi) is its shell, which runs this and so boots
/// the kernel the way another boot entry would, after microv.efi.
pub fn startup_script(cmdline: &str) -> String {
    format!("fs0:\n\\EFI\\microv\\vmlinuz initrd=\\EFI\\microv\\initrd.img {cmdline}\n")
}

/// Lays out the partition in `work/esp` (with `extra_conf` lines in
/// microv.conf and `files` put over the defaults) and copies OVMF's
/// variable store template to `work/OVMF_VARS.fd`; returns QEMU's
/// arguments for both and for the firmware.
pub fn prepare(
    work: &Path,
    stage: &Path,
    kernel: &Path,
    cpio: &Path,
    cmdline: &str,
    extra_conf: &[String],
    files: &[(String, PathBuf)],
) -> Result<Vec<String>> {
    let esp = work.join("esp");
    let dir = esp.join(MICROV_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let boot_app = esp.join(BOOT_APP);
    if let Some(parent) = boot_app.parent() {
        fs::create_dir_all(parent)?;
    }
    let app = stage.join(EFI_APP);
    let copies: [(PathBuf, PathBuf); 6] = [
        (app.clone(), boot_app),
        (app, dir.join(EFI_APP)),
        (
            stage.join("microv-kernel.elf"),
            dir.join("microv-kernel.elf"),
        ),
        (
            stage.join("microv-extension.elf"),
            dir.join("microv-extension.elf"),
        ),
        (kernel.to_path_buf(), dir.join("vmlinuz")),
        (cpio.to_path_buf(), dir.join("initrd.img")),
    ];
    for (from, to) in &copies {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    fs::write(dir.join("microv.conf"), conf_text(cmdline, extra_conf))?;
    if boots_next(extra_conf) {
        fs::write(esp.join("startup.nsh"), startup_script(cmdline))?;
    }
    // Files a test puts there instead (a broken image, say).
    for (on_esp, host) in files {
        let to = esp.join(on_esp);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(host, &to)
            .with_context(|| format!("copying {} to {}", host.display(), to.display()))?;
    }
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
    Ok(vec![
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
        "-drive".into(),
        format!("format=raw,file=fat:rw:{}", esp.display()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_boots_the_partitions_kernel() {
        let text = conf_text("console=ttyS0 panic=-1", &[]);
        assert!(text.contains("kernel = \\EFI\\microv\\vmlinuz\n"));
        assert!(text.contains("initrd = \\EFI\\microv\\initrd.img\n"));
        assert!(text.ends_with("cmdline = console=ttyS0 panic=-1\n"));
        let text = conf_text("quiet", &["microv = off".to_string()]);
        assert!(text.ends_with("cmdline = quiet\nmicrov = off\n"));
    }

    #[test]
    fn boot_next_leaves_the_kernel_to_the_shells_startup_script() {
        let text = conf_text("quiet", &["boot = next".to_string()]);
        assert!(!text.contains("kernel"), "{text}");
        assert!(text.ends_with("boot = next\n"));
        assert_eq!(
            startup_script("console=ttyS0"),
            "fs0:\n\\EFI\\microv\\vmlinuz initrd=\\EFI\\microv\\initrd.img console=ttyS0\n"
        );
        assert!(!boots_next(&["boot = nextish".to_string(), "microv = off".to_string()]));
    }
}
