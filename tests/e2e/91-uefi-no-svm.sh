#!/bin/sh
# e2e-boot: uefi
# e2e-qemu: -cpu EPYC,-svm
# Early boot on a CPU without SVM (QEMU's EPYC model with SVM taken out): a
# failure must never keep the machine from booting. microv.efi finds no
# SVM before it loads or allocates anything, says so with what to do, and
# boots Linux natively; in that Linux `microv start` refuses with the same
# reason.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "microv.efi saw no SVM, said so, and booted Linux anyway"
R=$MVT_TMP/report
uefi_report "$R"
report_has "$R" "MicroV not started: this CPU has no AMD SVM with nested paging (MicroV needs an AMD CPU with AMD-V and nested paging (RVI)); booting the OS natively"
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
if grep -qF "microv-kernel.elf: " "$R"; then
    fail "microv.efi went on to the images on a CPU without SVM"
fi
grep -q svm /proc/cpuinfo && fail "the CPU has SVM: the script's e2e-qemu header did not take"

check "late launch refuses with the same reason"
run microv start
[ "$RUN_RC" -ne 0 ] || fail "microv start succeeded without SVM"
out_has "this CPU has no AMD SVM with nested paging" || fail "microv start gave another reason"
echo "uefi-no-svm: all checks passed"
