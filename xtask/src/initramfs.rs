//! Builds the emulated machine's initramfs: busybox, the staged MicroV
//! artifacts, the micro VM guest of the tests (`guest.rs`), Linux's KVM
//! modules (so tests can run KVM inside the machine), extra files from
//! `--add`, and the generated `/init`.

use crate::prereq::{self, Kernel};
use crate::util;
use crate::{guest, stage, test_tools};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Modules to install with their dependencies besides the machine's KVM
/// module (`kvm_amd` or `kvm_intel`): efivarfs (a UEFI-booted machine reads
/// microv.efi's report from a UEFI variable).
const MODULES: &[&str] = &["efivarfs"];

/// `--add HOST_PATH:VM_PATH`: a VM_PATH ending in `/` is a directory to put
/// the host file or directory into.
#[derive(Clone, Debug)]
pub struct Add {
    pub host: PathBuf,
    pub vm: String,
}

impl std::str::FromStr for Add {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, vm) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST_PATH:VM_PATH"))?;
        if host.is_empty() || !vm.starts_with('/') {
            return Err(format!(
                "`{s}`: HOST_PATH must be non-empty and VM_PATH absolute"
            ));
        }
        Ok(Add {
            host: host.into(),
            vm: vm.into(),
        })
    }
}

/// Builds the tree in `work/root` and packs it into `work/initramfs.cpio`,
/// with Linux's KVM module `kvm_module` for the machine's CPU.
pub fn build(
    work: &Path,
    stage: &Path,
    kernel: &Kernel,
    kvm_module: &str,
    adds: &[Add],
    init: &str,
) -> Result<PathBuf> {
    let root = work.join("root");
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/lib/microv",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = prereq::tool("busybox", "busybox-static")?;
    fs::copy(&busybox, root.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;

    install_stage(stage, &root)?;
    guest::install(stage, kernel, &root)?;
    install_kernel_modules(kernel, kvm_module, &root)?;
    for add in adds {
        let mut dest = root.join(add.vm.trim_start_matches('/'));
        if add.vm.ends_with('/') {
            let name = add
                .host
                .file_name()
                .with_context(|| format!("{} has no file name", add.host.display()))?;
            dest = dest.join(name);
        }
        util::copy_tree(&add.host, &dest)
            .with_context(|| format!("--add {}:{}", add.host.display(), add.vm))?;
    }

    let init_path = root.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;

    let cpio = work.join("initramfs.cpio");
    pack(&root, &cpio)?;
    Ok(cpio)
}

/// Puts whatever the stage holds where the machine expects it: the CLI and
/// guest helpers in /usr/bin, the driver and the images in /usr/lib/microv,
/// the test module and the e2e library in /usr/lib/microv-tests.
fn install_stage(stage: &Path, root: &Path) -> Result<()> {
    let mut installs = vec![
        (stage::CLI, "usr/bin"),
        (stage::KVM_SMOKE, "usr/bin"),
        (stage::MODULE, "usr/lib/microv"),
    ];
    installs.extend(test_tools::installs());
    for (name, dest) in installs {
        let src = stage.join(name);
        if src.exists() {
            util::copy_tree(&src, &root.join(dest).join(name))?;
        }
    }
    for entry in fs::read_dir(stage).with_context(|| format!("listing {}", stage.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "elf") {
            let name = path.file_name().context("stage entry without a name")?;
            util::copy_tree(&path, &root.join("usr/lib/microv").join(name))?;
        }
    }
    Ok(())
}

/// Copies `kvm_module`, the modules in [`MODULES`] and everything they
/// depend on, under their usual paths, then runs depmod so busybox
/// `modprobe kvm_amd` (or `kvm_intel`) works.
fn install_kernel_modules(kernel: &Kernel, kvm_module: &str, root: &Path) -> Result<()> {
    let modinfo = prereq::tool("modinfo", "kmod")?;
    let depmod = prereq::tool("depmod", "kmod")?;
    let dest_base = root.join("lib/modules").join(&kernel.version);
    let mut todo: Vec<String> = MODULES
        .iter()
        .chain([&kvm_module])
        .map(|s| s.to_string())
        .collect();
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = todo.pop() {
        if done.contains(&name) {
            continue;
        }
        let file = modinfo_field(&modinfo, kernel, &name, "filename")?;
        // Built-in modules have no file; nothing to copy.
        if file != "(builtin)" {
            let src = PathBuf::from(&file);
            let rel = src.strip_prefix(&kernel.modules).with_context(|| {
                format!(
                    "module {name} ({file}) is not under {}",
                    kernel.modules.display()
                )
            })?;
            install_module(&src, &dest_base.join(rel))?;
        }
        let deps = modinfo_field(&modinfo, kernel, &name, "depends")?;
        todo.extend(
            deps.split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        );
        done.push(name);
    }
    // modprobe needs to know which modules are built in, or it looks for
    // files that do not exist.
    for meta in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = kernel.modules.join(meta);
        if src.exists() {
            fs::copy(&src, dest_base.join(meta))?;
        }
    }
    let status = Command::new(&depmod)
        .arg("-b")
        .arg(root)
        .arg(&kernel.version)
        .status()
        .context("running depmod")?;
    if !status.success() {
        bail!(
            "depmod -b {} {} failed ({status})",
            root.display(),
            kernel.version
        );
    }
    Ok(())
}

fn modinfo_field(modinfo: &Path, kernel: &Kernel, module: &str, field: &str) -> Result<String> {
    let out = Command::new(modinfo)
        .args(["-k", &kernel.version, "-F", field, module])
        .output()
        .context("running modinfo")?;
    if !out.status.success() {
        bail!(
            "modinfo -k {} {module} failed: {}\n(is linux-image-{} fully installed?)",
            kernel.version,
            String::from_utf8_lossy(&out.stderr).trim(),
            kernel.version
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Copies one module, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz`: busybox's
/// modprobe cannot read every compression.
fn install_module(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest.parent().context("module path without parent")?)?;
    let name = src.to_string_lossy();
    let decompressor = [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext));
    let Some((ext, tool)) = decompressor else {
        fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
        return Ok(());
    };
    let dest = PathBuf::from(dest.to_string_lossy().replace(ext, ".ko"));
    let out = Command::new(tool)
        .args(["-d", "-c"])
        .arg(src)
        .output()
        .with_context(|| format!("running {tool} to decompress {}", src.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} -d {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(&dest, out.stdout)?;
    Ok(())
}

/// Packs `root` as a newc cpio archive owned by root (the kernel unpacks it
/// as the initial root filesystem).
pub fn pack(root: &Path, cpio_path: &Path) -> Result<()> {
    let mut paths = Vec::new();
    list(root, Path::new("."), &mut paths)?;
    let out =
        fs::File::create(cpio_path).with_context(|| format!("creating {}", cpio_path.display()))?;
    let cpio = prereq::tool("cpio", "cpio")?;
    let mut child = Command::new(cpio)
        .args(["--quiet", "--null", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("starting cpio")?;
    let mut stdin = child.stdin.take().context("cpio stdin")?;
    for p in &paths {
        stdin.write_all(p.as_os_str().as_encoded_bytes())?;
        stdin.write_all(b"\0")?;
    }
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        bail!("cpio failed ({status}) packing {}", root.display());
    }
    Ok(())
}

/// Every path under `dir`, parents before children, as `./relative` paths.
fn list(base: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let full = base.join(rel);
    if fs::symlink_metadata(&full)?.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(&full)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            list(base, &rel.join(e.file_name()), out)?;
        }
    }
    Ok(())
}
