#!/bin/sh
# e2e-boot: uefi
# e2e-smp: 1
# e2e-esp-file: EFI/microv/microv-extension.elf=tests/e2e/93-uefi-bad-image.sh
# Early boot with a broken image (this script stands in for the extension
# on the EFI system partition): microv.efi refuses it exactly as the CLI
# would, before allocating anything, says which file and why, and boots
# Linux natively; there, MicroV is not beneath Linux and a late launch
# (with the installed images) works.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi refused the broken extension and booted Linux natively"
uefi_report "$R"
report_has "$R" '\EFI\microv\microv-kernel.elf: '
report_has "$R" 'MicroV not started: \EFI\microv\microv-extension.elf: not an ELF file (it does not start with \x7fELF); booting the OS natively'
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
if grep -qF "pool: " "$R"; then
    fail "microv.efi allocated a pool for a broken image"
fi
run cpuid-query 0x40000000
if out_has "signature=MicroVMicroV"; then
    fail "MicroV runs beneath Linux although its image was refused"
fi

check "a late launch with the installed images works"
must microv start
must microv status
out_has "late launch" || fail "microv status does not say late launch"
must microv stop
echo "uefi-bad-image: all checks passed"
