//! `cargo xtask demo`: both ways in, in the emulated machine. Late launch:
//! load the driver, start MicroV beneath the running Linux, boot a Linux
//! micro VM on it (Debian's kernel and the tests' busybox initramfs), show
//! it in `microv status` while it runs, let it power off, stop MicroV. Early
//! boot: a one-CPU machine whose firmware runs microv.efi, which starts
//! MicroV before Linux; Linux's driver attaches, a micro VM runs, and
//! `microv stop` refuses.

use crate::esp::Boot;
use crate::machine::{self, MachineArgs};
use crate::prereq::{self, Need};
use crate::vm::{self, Outcome};
use anyhow::Result;
use std::path::Path;

const SCRIPT: &str = "set -e
echo 'demo: microv start'; microv start
echo 'demo: microv status'; microv status
echo 'demo: Linux keeps working as the root VM: compressing 4 MiB and checking it'
dd if=/dev/zero bs=1M count=4 2>/dev/null | tr '\\0' 'm' > /tmp/data
gzip -c /tmp/data | gunzip -c | cmp - /tmp/data && echo 'demo: round trip identical'
G=/usr/lib/microv-tests/guest
echo 'demo: microv run: a Linux micro VM on MicroV (its console follows, prefixed guest|)'
microv run --kernel $G/vmlinuz --initrd $G/initrd.cpio --mem 256M \
    --cmdline 'console=ttyS0 reboot=k panic=1 quiet mvguest.sum=50000 mvguest.cpus mvguest.sleep=3' \
    </dev/null 2>&1 | sed 's/^/guest| /' &
i=0
# Until the VM is set up: its vCPU made and its memory mapped.
until microv status | grep -q 'live *1 *256 MiB' || [ $i -ge 120 ]; do sleep 1; i=$((i + 1)); done
echo 'demo: microv status while the micro VM runs'; microv status
wait
echo \"demo: the root computes the same checksum: $(seq 1 50000 | sha256sum | cut -d' ' -f1)\"
echo 'demo: microv log'; microv log | tail -n 8
echo 'demo: microv stop'; microv stop
echo 'demo: microv status'; microv status | head -1
echo 'demo: late launch done'";

/// The early-boot machine's command (one CPU: microv.efi starts MicroV on
/// one CPU only so far).
const EARLY_SCRIPT: &str = "set -e
echo 'demo: early boot: the firmware ran microv.efi, which started MicroV, then this Linux'
echo 'demo: Linux started its second CPU at the ACPI wakeup mailbox microv.efi added: it runs beneath MicroV too'
dmesg | grep -E 'smp: Brought up|microv: attached'
echo 'demo: microv status'; microv status
echo 'demo: a micro VM on the MicroV started at boot'
mv-guest-elf hello >/tmp/hello.elf
microv run --kernel /tmp/hello.elf --mem 32M </dev/null
echo 'demo: microv stop (refused: MicroV started at boot stays until the machine restarts)'
microv stop || true
echo 'demo: early boot done'";

pub fn run(root: &Path, args: &MachineArgs) -> Result<i32> {
    prereq::check(&[Need::Ovmf])?;
    let (stage, kernel) = machine::prepare(root, args, false)?;
    let cfg = machine::config(root, args, vec![SCRIPT.to_string()]);
    let outcome = vm::run(&stage, &kernel, &cfg)?;
    if outcome != Outcome::Exited(0) {
        return Ok(failed(&outcome, "the driver (target/microv/microv.ko), the hypervisor images (target/microv/*.elf) and the CLI's start/status/stop"));
    }
    let mut early = machine::config(root, args, vec![EARLY_SCRIPT.to_string()]);
    early.boot = Boot::Uefi;
    let outcome = vm::run(&stage, &kernel, &early)?;
    if outcome != Outcome::Exited(0) {
        return Ok(failed(
            &outcome,
            "OVMF (Debian's ovmf), microv.efi (target/microv/microv.efi) and the driver's attach",
        ));
    }
    println!(
        "demo: MicroV started beneath a running Linux, ran a Linux micro VM, reported its status and stopped; \
         then it started from UEFI before Linux, and Linux ran on it as the root VM with a micro VM beside it"
    );
    Ok(0)
}

fn failed(outcome: &Outcome, needs: &str) -> i32 {
    println!(
        "demo: FAILED: {}.\n\
         This part of the demo needs {needs}; the 'demo:' lines above show which step failed.",
        outcome.describe()
    );
    outcome.exit_code()
}
