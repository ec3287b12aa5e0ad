//! Host prerequisites: checks that the tools and the Debian kernel exist
//! before any long build starts, and says exactly what to install if not.
//! xtask never runs apt itself: installing is the user's (or CI's) decision.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Something a subcommand needs from the host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    Qemu,
    /// A *static* busybox: the initramfs has no C library.
    Busybox,
    Cpio,
    /// modinfo and depmod, to put KVM's modules into the initramfs.
    Kmod,
    /// gcc with a static libc, for the guest-side test programs.
    Gcc,
    Make,
    /// A Debian kernel image with its modules.
    Kernel,
    /// The headers matching that kernel, to build the driver.
    Headers,
    /// OVMF, the UEFI firmware for `--boot uefi`.
    Ovmf,
    /// Bochs and its firmware, for the Intel machine (`--cpu intel`).
    Bochs,
    /// grub-mkrescue with GRUB's BIOS platform and xorriso: the Intel
    /// machine boots Linux from a GRUB CD.
    GrubRescue,
}

/// OVMF's code and the template of its variable store (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// What the emulated machine needs (on top of the build).
pub const VM: &[Need] = &[
    Need::Qemu,
    Need::Busybox,
    Need::Cpio,
    Need::Kmod,
    Need::Kernel,
];

/// What the Intel machine needs on top of [`VM`].
pub const INTEL_VM: &[Need] = &[Need::Bochs, Need::GrubRescue];

/// The Debian kernel the emulated machine boots and the driver is built for.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub version: String,
    pub image: PathBuf,
    pub headers: PathBuf,
    pub modules: PathBuf,
}

/// Fails with one `apt-get install` line naming every missing package.
pub fn check(needs: &[Need]) -> Result<()> {
    let mut packages: Vec<&str> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut missing = |pkgs: &'static str, why: String| {
        if !problems.contains(&why) {
            problems.push(why);
        }
        for p in pkgs.split(' ') {
            if !packages.contains(&p) {
                packages.push(p);
            }
        }
    };
    for need in needs {
        match need {
            Need::Qemu => {
                if find_tool("qemu-system-x86_64").is_none() {
                    missing("qemu-system-x86", "qemu-system-x86_64 not found".into());
                }
            }
            Need::Busybox => match find_tool("busybox") {
                None => missing("busybox-static", "busybox not found".into()),
                Some(p) if !is_static_elf(&p) => missing(
                    "busybox-static",
                    format!(
                        "{} is dynamically linked; the initramfs needs a static one",
                        p.display()
                    ),
                ),
                Some(_) => {}
            },
            Need::Cpio => {
                if find_tool("cpio").is_none() {
                    missing("cpio", "cpio not found".into());
                }
            }
            Need::Kmod => {
                if find_tool("modinfo").is_none() || find_tool("depmod").is_none() {
                    missing("kmod", "modinfo/depmod not found".into());
                }
            }
            Need::Gcc => {
                if find_tool("gcc").is_none() {
                    missing("gcc libc6-dev", "gcc not found".into());
                }
            }
            Need::Make => {
                if find_tool("make").is_none() {
                    missing("make", "make not found".into());
                }
            }
            Need::Ovmf => {
                if !Path::new(OVMF_CODE).is_file() || !Path::new(OVMF_VARS).is_file() {
                    missing("ovmf", format!("{OVMF_CODE} or {OVMF_VARS} not found"));
                }
            }
            Need::Bochs => {
                // Bochs's package needs one of its display packages; the
                // VNC display the harness uses is in bochs itself, so any
                // will do: bochs-x is small (apt would otherwise take
                // bochs-wx and wxWidgets).
                if find_tool("bochs-bin").is_none() {
                    missing("bochs bochs-x", "bochs-bin not found".into());
                }
                for (file, pkg) in [
                    (crate::bochs::BIOS, "bochsbios"),
                    (crate::bochs::VGA_BIOS, "vgabios"),
                ] {
                    if !Path::new(file).is_file() {
                        missing(pkg, format!("{file} not found"));
                    }
                }
            }
            Need::GrubRescue => {
                if find_tool("grub-mkrescue").is_none() {
                    missing("grub-common", "grub-mkrescue not found".into());
                }
                if !Path::new(crate::bochs::GRUB_PC).is_dir() {
                    missing(
                        "grub-pc-bin",
                        format!("{} not found", crate::bochs::GRUB_PC),
                    );
                }
                if find_tool("xorriso").is_none() {
                    missing("xorriso", "xorriso not found".into());
                }
            }
            Need::Kernel | Need::Headers => {
                if let Err(why) = find_kernel() {
                    missing("linux-image-amd64 linux-headers-amd64", why);
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "missing host prerequisites:\n  - {}\ninstall them with:\n  apt-get install {}",
        problems.join("\n  - "),
        packages.join(" ")
    )
}

/// The newest `/boot/vmlinuz-*-amd64` whose headers are installed: the
/// machine's running kernel may not be a Debian one, so we never use `uname`.
pub fn kernel() -> Result<Kernel> {
    find_kernel().map_err(|why| {
        anyhow::anyhow!(
            "{why}; install them with:\n  apt-get install linux-image-amd64 linux-headers-amd64"
        )
    })
}

fn find_kernel() -> Result<Kernel, String> {
    let boot = fs::read_dir("/boot").map_err(|e| format!("cannot list /boot: {e}"))?;
    let mut versions: Vec<String> = boot
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|v| v.ends_with("-amd64"))
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let newest_with_headers = versions
        .iter()
        .rev()
        .find(|v| Path::new(&format!("/usr/src/linux-headers-{v}")).is_dir());
    let Some(version) = newest_with_headers else {
        return Err(format!(
            "no Debian kernel with matching headers (looked for /boot/vmlinuz-*-amd64 with \
             /usr/src/linux-headers-<version>; found kernels: [{}])",
            versions.join(", ")
        ));
    };
    let modules = PathBuf::from(format!("/lib/modules/{version}"));
    if !modules.join("kernel").is_dir() {
        return Err(format!(
            "{} has no modules (reinstall linux-image-{version})",
            modules.display()
        ));
    }
    Ok(Kernel {
        image: PathBuf::from(format!("/boot/vmlinuz-{version}")),
        headers: PathBuf::from(format!("/usr/src/linux-headers-{version}")),
        modules,
        version: version.clone(),
    })
}

/// Orders "6.1.0-56-amd64" after "6.1.0-9-amd64": compares the numbers in
/// the version, not the text.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Looks a tool up in PATH and the sbin directories (modinfo and depmod live
/// in /usr/sbin, which a non-root PATH often lacks).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| crate::util::is_executable(p))
}

/// Like [`find_tool`], but an error the user can act on.
pub fn tool(name: &str, package: &str) -> Result<PathBuf> {
    find_tool(name)
        .with_context(|| format!("{name} not found; install it with:\n  apt-get install {package}"))
}

/// A static ELF has no PT_INTERP program header (no dynamic loader).
fn is_static_elf(path: &Path) -> bool {
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // Only 64-bit little-endian ELF matters here (x86_64 hosts).
    if elf.get(0..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| u32_at(phoff as usize + i * phentsize) != Some(PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["6.1.0-56-amd64", "6.1.0-9-amd64", "5.10.0-30-amd64"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64"]);
    }

    #[test]
    fn static_detection() {
        // The xtask binary itself is dynamically linked; /bin/sh too.
        assert!(!is_static_elf(Path::new("/bin/sh")));
    }
}
