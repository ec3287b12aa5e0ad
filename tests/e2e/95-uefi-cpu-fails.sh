#!/bin/sh
# e2e-boot: uefi
# e2e-esp-conf: test-fail-cpu = 1
# Early boot where an application processor does not come up: microv.conf's
# test switch makes CPU 1's bring-up fail inside the microkernel (as
# `microv start --fail-cpu 1` does for a late launch). MicroV starts on the
# CPU microv.efi runs on; when Linux exits boot services CPU 1 is refused,
# so MicroV stops on every CPU, the MADT is left as the firmware made it,
# and Linux boots natively on both CPUs. What happened is in microv.efi's
# non-volatile variable for the OS; there a late launch works.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi started MicroV on the first CPU, then said CPU 1 did not come up"
uefi_report "$R"
report_has "$R" "MicroV runs beneath the firmware on this CPU (CPUID 0x40000000: MicroVMicroV)"
report_has "$R" "the other 1 CPUs enter MicroV when the OS exits boot services"
C=$MVT_TMP/cpus
uefi_cpus_report "$C" || fail "microv.efi left no word about the CPU that failed"
report_has "$C" "microv.efi: CPU 1 did not come up under MicroV: bring-up failed on purpose (test flag --fail-cpu) (status 14); MicroV stopped on every CPU and the OS boots natively"

check "Linux runs natively on both CPUs, started as usual"
madt_has_mailbox && fail "the MADT has a wakeup mailbox although MicroV stopped"
dmesg | grep -q "smp: Brought up 1 node, 2 CPUs" || fail "Linux did not bring up both CPUs"
for c in 0 1; do
    run taskset -c $c cpuid-query 0x40000000
    if out_has "signature=MicroVMicroV"; then
        fail "CPU $c still says MicroV"
    fi
done
echo "  no MicroV signature on CPU 0 or CPU 1"
must microv status
out_has "state          stopped" || fail "microv status does not say stopped"

check "a late launch works on the natively booted machine"
must microv start
must microv status
out_has "late launch" || fail "microv status does not say late launch"
out_has "cpus           2" || fail "the late launch is not on both CPUs"
must microv stop
echo "uefi-cpu-fails: all checks passed"
