//! The micro VM guest of the end-to-end tests: Debian's kernel (the one the
//! emulated machine boots, [`Kernel::image`]) and a small initramfs of
//! static busybox, `tests/vm/guest-init.sh` as `/init`, which follows
//! `mvguest.*` words on the guest's kernel command line, and
//! [`BENCH_TOOL`] (the benchmark's stopwatch, for `mvguest.bench=`). `stage::build`
//! builds the initramfs into the stage ([`STAGE_INITRD`]);
//! `initramfs::build` installs both into every machine under [`DIR`], so any
//! e2e script can `microv run --kernel /usr/lib/microv-tests/guest/vmlinuz
//! --initrd /usr/lib/microv-tests/guest/initrd.cpio`.

use crate::initramfs;
use crate::prereq::{self, Kernel};
use anyhow::{Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The guest's `/init`, relative to the workspace root.
pub const INIT_SOURCE: &str = "tests/vm/guest-init.sh";

/// The guest initramfs in the stage.
pub const STAGE_INITRD: &str = "guest-initrd.cpio";

/// Where the guest goes in the machine.
pub const DIR: &str = "usr/lib/microv-tests/guest";
/// Its kernel (a copy of the machine's `/boot/vmlinuz-KVER`) in [`DIR`].
pub const KERNEL: &str = "vmlinuz";
/// Its initramfs in [`DIR`].
pub const INITRD: &str = "initrd.cpio";

/// The static test program (built into the stage by `test_tools::build`
/// before this) that goes into the guest as `/bin/`[`BENCH_TOOL`]: its
/// `time` mode reads the guest's TSC around `mvguest.bench=`'s job.
pub const BENCH_TOOL: &str = "mv-bench-guest";

/// Builds the guest initramfs into `stage/`[`STAGE_INITRD`]: `/init`,
/// `/bin/busybox` (static, the same one as the machine's), `/bin/sh`,
/// `/bin/`[`BENCH_TOOL`] and the directories `/init` mounts on. Cheap
/// (about 3 MB), so always rebuilt.
pub fn build(root: &Path, stage: &Path) -> Result<()> {
    let work = stage.join("guest-build");
    let tree = work.join("root");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp",
    ] {
        fs::create_dir_all(tree.join(dir))?;
    }
    let busybox = prereq::tool("busybox", "busybox-static")?;
    fs::copy(&busybox, tree.join("bin/busybox")).context("copying busybox")?;
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))?;
    let bench = stage.join(BENCH_TOOL);
    fs::copy(&bench, tree.join("bin").join(BENCH_TOOL))
        .with_context(|| format!("copying {}", bench.display()))?;
    let init = tree.join("init");
    fs::copy(root.join(INIT_SOURCE), &init).with_context(|| format!("copying {INIT_SOURCE}"))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let cpio = work.join(STAGE_INITRD);
    initramfs::pack(&tree, &cpio)?;
    let staged = stage.join(STAGE_INITRD);
    fs::rename(&cpio, &staged)
        .with_context(|| format!("moving the guest initramfs to {}", staged.display()))?;
    Ok(())
}

/// Puts the kernel and the staged initramfs into the machine's tree `root`
/// under [`DIR`] (nothing if the stage has no guest initramfs).
pub fn install(stage: &Path, kernel: &Kernel, root: &Path) -> Result<()> {
    let initrd = stage.join(STAGE_INITRD);
    if !initrd.exists() {
        return Ok(());
    }
    let dir = root.join(DIR);
    fs::create_dir_all(&dir)?;
    fs::copy(&initrd, dir.join(INITRD)).with_context(|| format!("copying {}", initrd.display()))?;
    fs::copy(&kernel.image, dir.join(KERNEL))
        .with_context(|| format!("copying {}", kernel.image.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools;

    fn read(rel: &str) -> String {
        let root = crate::util::workspace_root();
        fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    #[test]
    fn the_e2e_library_looks_for_the_guest_where_it_is_installed() {
        assert_eq!(DIR, format!("{}/guest", test_tools::TEST_DIR));
        let lib = read("tests/vm/e2e-lib.sh");
        assert!(lib.contains(&format!("MVT_DIR=/{}\n", test_tools::TEST_DIR)));
        assert!(lib.contains(&format!("MVT_GUEST_KERNEL=$MVT_DIR/guest/{KERNEL}\n")));
        assert!(lib.contains(&format!("MVT_GUEST_INITRD=$MVT_DIR/guest/{INITRD}\n")));
    }

    #[test]
    fn the_guest_init_runs_on_busybox_alone_and_never_exits() {
        let init = read(INIT_SOURCE);
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        // Every instruction the header documents is handled.
        for word in [
            "mvguest.sum=",
            "mvguest.cpus",
            "mvguest.sleep=",
            "mvguest.shell",
            "mvguest.bench=",
            "mvguest.end=poweroff | mvguest.end=reboot",
        ] {
            assert!(
                init.contains(&format!("    {word}")),
                "{word} is not handled"
            );
        }
        assert!(init.trim_end().ends_with("while :; do sleep 3600; done"));
        // mvguest.bench= times its job with the tool the initramfs carries.
        assert!(init.contains(&format!("{BENCH_TOOL} time workload ")));
        assert!(test_tools::PROGRAMS.contains(&BENCH_TOOL));
    }
}
