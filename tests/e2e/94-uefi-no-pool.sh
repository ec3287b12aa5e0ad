#!/bin/sh
# e2e-boot: uefi
# e2e-smp: 1
# e2e-mem: 512M
# e2e-esp-conf: pool = 512M
# Early boot when the pool cannot be had (microv.conf asks for 512 MiB on a
# 512 MiB machine): microv.efi says it cannot allocate the pool, frees
# whatever it took, and boots Linux natively, which has its memory.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi could not allocate the pool, said so, and booted Linux natively"
uefi_report "$R"
report_has "$R" "this CPU has SVM with nested paging, enabled and unused"
report_has "$R" "MicroV not started: cannot allocate a pool of 512 MiB: OUT_OF_RESOURCES; booting the OS natively"
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
run cpuid-query 0x40000000
if out_has "signature=MicroVMicroV"; then
    fail "MicroV runs beneath Linux without its pool"
fi
total=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
echo "  MemTotal: $total kB"
# Nothing of a half-taken pool is missing from Linux: about all of the
# 512 MiB machine (less the firmware's and the kernel's own) is its.
[ "$total" -gt $((400 * 1024)) ] || fail "Linux has only $total kB of the 512 MiB machine"
echo "uefi-no-pool: all checks passed"
