#!/bin/sh
# e2e-boot: uefi
# e2e-esp-conf: microv = off
# microv.efi with `microv = off` in microv.conf, on a two-CPU machine: OVMF
# runs it from the EFI system partition (`cargo xtask vm --boot uefi`). It
# reads microv.conf, checks the CPU and MicroV's two images as the CLI
# does, lists the OS's RAM from the memory map, says it does not start
# MicroV (before it allocates anything), and boots Linux natively through
# its EFI stub with the initramfs and command line microv.conf names (the
# firmware's MADT unchanged),
# leaving what it printed in a volatile UEFI variable. In that Linux (EFI
# runtime services live) late launch works as on a directly booted
# machine, and a micro VM runs.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "Linux came up through microv.efi and the EFI stub"
[ -d /sys/firmware/efi ] || fail "no /sys/firmware/efi: this Linux was not booted by UEFI"
grep -q 'initrd=\\EFI\\microv\\initrd.img' /proc/cmdline ||
    fail "the command line is not microv.conf's: $(cat /proc/cmdline)"
echo "  /proc/cmdline: $(cat /proc/cmdline)"

check "microv.efi's report, from its UEFI variable"
R=$MVT_TMP/report
uefi_report "$R"
report_has "$R" "MicroV 0.1.0 (early boot)"
report_has "$R" 'MicroV not started: microv = off in \EFI\microv\microv.conf; booting the OS natively'
if grep -qF "pool: " "$R"; then
    fail "microv.efi allocated a pool although microv = off"
fi
run cpuid-query 0x40000000
if out_has "signature=MicroVMicroV"; then
    fail "MicroV runs beneath Linux although microv = off"
fi
madt_has_mailbox && fail "the MADT has a wakeup mailbox although MicroV did not start"

check "no MicroV, so late launch works as usual; a micro VM runs"
must microv status
out_has "state          stopped" || fail "microv status does not say stopped"
must microv start
must microv status
out_has "late launch" || fail "microv status does not say late launch"
mv-guest-elf hello >"$MVT_TMP/hello.elf"
must timeout 60 microv run --kernel "$MVT_TMP/hello.elf" --mem 32M
out_has "hello from a micro VM" || fail "the guest's output is missing"
must microv stop
echo "uefi-boot: all checks passed"
