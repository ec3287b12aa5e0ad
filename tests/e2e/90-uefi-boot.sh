#!/bin/sh
# e2e-boot: uefi
# Early boot on a two-CPU machine: OVMF runs microv.efi from the EFI system
# partition (`cargo xtask vm --boot uefi`). It reads microv.conf, checks the
# CPU and MicroV's two images as the CLI does, lists the OS's RAM from the
# memory map, says plainly that it starts MicroV on one CPU only so far
# (before it allocates anything), and boots Linux natively through its EFI
# stub with the initramfs and command line microv.conf names, leaving what
# it printed in a volatile UEFI variable. In that Linux (EFI runtime services live) late
# launch works as on a directly booted machine, and a micro VM runs.
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
report_has "$R" "this CPU has SVM with nested paging, enabled and unused"
report_has "$R" '\EFI\microv\microv-kernel.elf: '
report_has "$R" '\EFI\microv\microv-extension.elf: '
report_has "$R" "RAM for the OS: "
report_has "$R" "MicroV not started: this machine has 2 CPUs, and MicroV starts from UEFI on one CPU only so far (its application processors are not built yet); booting the OS natively"
if grep -qF "pool: " "$R"; then
    fail "microv.efi allocated a pool it could not use"
fi
# The RAM it counted is about the machine's 1 GiB (OVMF keeps some).
ram=$(sed -n 's/^RAM for the OS: \([0-9]*\) MiB in [0-9]* ranges$/\1/p' "$R")
[ "$ram" -gt 900 ] && [ "$ram" -le 1024 ] || fail "RAM for the OS: $ram MiB of a 1 GiB machine"
# The checksums it printed are the images' own, sealed in their headers:
# the image header opens the first loaded segment, at file offset 0x1000
# (the images' link.ld), and its checksum is at 16 into it.
for image in kernel extension; do
    sum=$(grep -F "microv-$image.elf: " "$R" | sed 's/.*checksum //')
    header=$(od -A n -t x8 -j $((0x1000 + 16)) -N 8 /usr/lib/microv/microv-$image.elf | tr -d ' ')
    expect_eq "microv-$image.elf's checksum" "$sum" "0x$header"
done

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
