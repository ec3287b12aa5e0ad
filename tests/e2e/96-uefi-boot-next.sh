#!/bin/sh
# e2e-boot: uefi
# e2e-esp-conf: boot = next
# Early boot handing over to the firmware's next boot entry (`boot = next`,
# the set-up for a real machine, where GRUB or the distribution's entry
# follows MicroV's): microv.efi starts MicroV, then starts the boot entry
# after its own itself (it must stay loaded for the other CPUs), here OVMF's
# UEFI shell, whose startup.nsh (written by the harness) boots Linux. When
# that Linux exits boot services, CPU 1 comes in as with a kernel line:
# Linux runs as the root VM on both CPUs and the driver attaches.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi started MicroV, then the next boot entry, which booted this Linux"
uefi_report "$R"
report_has "$R" "MicroV runs beneath the firmware on this CPU (CPUID 0x40000000: MicroVMicroV)"
report_has "$R" "the other 1 CPUs enter MicroV when the OS exits boot services"
report_has "$R" 'starting the next boot entry, Boot'
report_has "$R" '"EFI Internal Shell"'
grep -q '^\\EFI\\microv\\vmlinuz initrd=\\EFI\\microv\\initrd.img ' /proc/cmdline ||
    fail "this Linux was not started by the shell's startup.nsh: $(cat /proc/cmdline)"
echo "  /proc/cmdline: $(cat /proc/cmdline)"

check "both CPUs run beneath MicroV, and the driver attached"
if uefi_cpus_report "$MVT_TMP/cpus"; then
    fail "microv.efi reported CPUs that did not come in"
fi
madt_has_mailbox || fail "the MADT Linux uses has no wakeup mailbox"
for c in 0 1; do
    run taskset -c $c cpuid-query 0x40000000
    out_has "signature=MicroVMicroV" || fail "no MicroV signature on CPU $c: $RUN_OUT"
done
must microv status
out_has "started        early boot (before the OS, by the UEFI loader)" || fail "not early boot"
status_json
for c in 0 1; do
    [ "$(cpu_field $c state)" = running ] || fail "CPU $c is $(cpu_field $c state)"
done
echo "uefi-boot-next: all checks passed"
