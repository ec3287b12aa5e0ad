#!/bin/sh
# e2e-boot: uefi
# e2e-esp-conf: test-silent-cpu = 1
# Early boot where an application processor never answers: microv.conf's
# test switch makes microv.efi send CPU 1 no INIT or STARTUP at all, as if
# it were dead. After a second microv.efi gives it up, marks it absent in
# the MADT it gives the OS, and says so in its non-volatile variable (this
# runs after boot services, where nothing may be allocated); Linux boots on
# the other CPU beneath MicroV and never tries CPU 1.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi gave up on CPU 1 and said so"
uefi_report "$R"
report_has "$R" "the other 1 CPUs enter MicroV when the OS exits boot services"
C=$MVT_TMP/cpus
uefi_cpus_report "$C" || fail "microv.efi left no word about the CPU that never answered"
report_has "$C" "microv.efi: CPU 1 (APIC ID 1) did not come into MicroV in time; the OS will not use it"

check "Linux runs beneath MicroV on CPU 0 alone, started from the MADT microv.efi gave it"
madt_has_mailbox || fail "the MADT Linux uses has no wakeup mailbox"
dmesg | grep -q "smp: Brought up 1 node, 1 CPU" || fail "Linux did not come up on one CPU"
expect_eq "online CPUs" "$(cat /sys/devices/system/cpu/online)" "0"
run cpuid-query 0x40000000
out_has "signature=MicroVMicroV" || fail "no MicroV signature on CPU 0: $RUN_OUT"
must microv status
out_has "started        early boot (before the OS, by the UEFI loader)" || fail "not early boot"
status_json
[ "$(cpu_field 0 state)" = running ] || fail "CPU 0 is $(cpu_field 0 state)"
echo "uefi-cpu-silent: all checks passed"
