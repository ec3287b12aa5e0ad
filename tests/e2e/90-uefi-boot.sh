#!/bin/sh
# e2e-boot: uefi
# Early boot, first steps: OVMF runs microv.efi from the EFI system
# partition (`cargo xtask vm --boot uefi`). It reads microv.conf, checks the
# CPU and MicroV's two images as the CLI does, lists the OS's RAM from the
# memory map, allocates the pool (reserved memory, 2 MiB aligned) and gives
# it back, says plainly that it does not start MicroV from UEFI yet, and
# boots Linux through its EFI stub with the initramfs and command line
# microv.conf names, leaving what it printed in a volatile UEFI variable. In that Linux (EFI runtime services live) late
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
report_has "$R" "pool: 64 MiB of reserved memory at 0x"
report_has "$R" "pool given back"
report_has "$R" "MicroV not started: starting MicroV from UEFI is not built yet; booting the OS natively"
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
# The pool was whole 2 MiB chunks, and it is not kept: Linux's memory map
# has no reserved range there.
pool=$(sed -n 's/^pool: 64 MiB of reserved memory at 0x\([0-9a-f]*\)$/\1/p' "$R")
[ -n "$pool" ] || fail "no pool address in the report"
[ $((0x$pool % 0x200000)) -eq 0 ] || fail "the pool at 0x$pool is not 2 MiB aligned"
if grep -i "^ *0*$pool-.*reserved" /proc/iomem; then
    fail "the pool at 0x$pool is still reserved in Linux's memory map"
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

check "no MicroV yet, so late launch works as usual; a micro VM runs"
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
