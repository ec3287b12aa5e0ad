#!/bin/sh
# e2e-boot: uefi
# e2e-smp: 1
# Early boot on a one-CPU machine: microv.efi starts MicroV beneath the
# firmware (its pool, landing page, log and trampoline in memory the OS
# never gets), checks that CPUID now says MicroV, and boots Linux, which
# runs as the root VM from its first instruction: CPUID says MicroV, SVM is
# hidden and kvm_amd refused, the pool is not Linux's RAM and reading it
# gives no hypervisor data. The driver attaches to the running MicroV at
# load: `microv status` says early boot with the CPU running and its
# counters, a micro VM runs, `microv stop` refuses with the reason, and a
# late launch on top refuses cleanly.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi started MicroV beneath the firmware"
uefi_report "$R"
report_has "$R" "MicroV runs beneath the firmware on this CPU (CPUID 0x40000000: MicroVMicroV)"
report_has "$R" "MicroV is running"
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
pool=$(sed -n 's/^pool: 64 MiB of reserved memory at 0x\([0-9a-f]*\)$/\1/p' "$R")
[ -n "$pool" ] || fail "no pool address in the report"
[ $((0x$pool % 0x200000)) -eq 0 ] || fail "the pool at 0x$pool is not 2 MiB aligned"

check "Linux runs as the root VM: CPUID says MicroV, SVM is hidden, kvm_amd is refused"
run cpuid-query 0x40000000
out_has "signature=MicroVMicroV" || fail "no MicroV signature in the root: $RUN_OUT"
if grep -qw svm /proc/cpuinfo; then
    fail "the root sees SVM"
fi
run modprobe kvm_amd
[ "$RUN_RC" -ne 0 ] || fail "kvm_amd loaded beneath MicroV"
dmesg | grep -q "kvm: no hardware support for 'kvm_amd'" || fail "kvm_amd failed for another reason"

check "the pool is not Linux's RAM, and reading it gives no hypervisor data"
start=$((0x$pool)); end=$((0x$pool + 64 * 1024 * 1024 - 1))
grep -i "System RAM" /proc/iomem | while IFS='-: ' read -r first last _; do
    if [ $((0x$first)) -le $end ] && [ $((0x$last)) -ge $start ]; then
        fail "Linux has the pool (0x$pool) in its RAM: $first-$last"
    fi
done
grep -i "^ *0*$pool-" /proc/iomem | sed 's/^/  iomem: /'
probe "0x$pool"
echo "  $PROBE_LINE"
# The microkernel's image, header first (magic MVKERNEL), is what lies
# there: the root must read zeros, the page nested paging shows in its place.
case "$PROBE_LINE" in
"mvprobe: pa=0x$pool hex=00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "*) ;;
*) fail "the root did not read zeros at the pool's first page: ${PROBE_LINE:-nothing}" ;;
esac

check "the driver attached: microv status says early boot, the CPU runs, exits are counted"
dmesg | grep -q "microv: attached to MicroV, started at boot (early boot), on 1 CPUs" ||
    fail "the driver did not say it attached"
must microv status
out_has "state          running" || fail "microv status does not say running"
out_has "started        early boot (before the OS, by the UEFI loader)" || fail "not early boot"
out_has "memory         64 MiB pool" || fail "not MicroV's 64 MiB pool"
status_json
[ "$(cpu_field 0 state)" = running ] || fail "CPU 0 is $(cpu_field 0 state)"
cpuid_exits=$(cpu_field 0 exits.cpuid)
# The firmware and Linux's boot alone run CPUID thousands of times.
[ "$cpuid_exits" -gt 1000 ] || fail "only $cpuid_exits CPUID exits counted since boot"
echo "  CPU 0: $cpuid_exits CPUID exits since MicroV started beneath the firmware"

check "a micro VM runs on the early-booted MicroV"
mv-guest-elf hello >"$MVT_TMP/hello.elf"
must timeout 60 microv run --kernel "$MVT_TMP/hello.elf" --mem 32M
out_has "hello from a micro VM" || fail "the guest's output is missing"
out_has "the guest powered off" || fail "no power-off report"

check "microv stop refuses: MicroV started at boot stays until the machine restarts"
run microv stop
[ "$RUN_RC" -ne 0 ] || fail "microv stop succeeded"
out_has "MicroV was started at boot, before Linux (early boot)" || fail "microv stop gave another reason"
must microv status
out_has "state          running" || fail "MicroV is not running after the refused stop"

check "a late launch on top of the running MicroV refuses cleanly"
run microv start
[ "$RUN_RC" -ne 0 ] || fail "microv start succeeded beneath a running MicroV"
out_has "MicroV was started at boot, before Linux (early boot)" || fail "microv start gave another reason"
echo "uefi-early-boot: all checks passed"
