#!/bin/sh
# e2e-boot: uefi
# Early boot on a two-CPU machine: microv.efi starts MicroV beneath the
# firmware on the CPU it runs on (its pool, landing pages, log and
# trampoline in memory the OS never gets), checks that CPUID now says
# MicroV, and boots Linux, which runs as the root VM from its first
# instruction. When Linux exits boot services the other CPU enters MicroV
# and waits at the ACPI wakeup mailbox microv.efi added to the MADT; Linux
# starts it there (no INIT or SIPI reaches it). On every CPU CPUID says
# MicroV; SVM is hidden and kvm_amd refused; the pool is not Linux's RAM
# and reading it gives no hypervisor data. The driver attaches to the
# running MicroV at load: `microv status` says early boot with both CPUs
# running and their counters, `microv log` shows MicroV's log from the
# firmware on, a micro VM runs, `microv stop` refuses with
# the reason, and a late launch on top refuses cleanly.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

R=$MVT_TMP/report
check "microv.efi started MicroV beneath the firmware"
uefi_report "$R"
report_has "$R" "this CPU has SVM with nested paging, enabled and unused"
report_has "$R" '\EFI\microv\microv-kernel.elf: '
report_has "$R" '\EFI\microv\microv-extension.elf: '
report_has "$R" "RAM for the OS: "
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
report_has "$R" "MicroV runs beneath the firmware on this CPU (CPUID 0x40000000: MicroVMicroV)"
report_has "$R" "the other 1 CPUs enter MicroV when the OS exits boot services"
report_has "$R" "MicroV is running"
report_has "$R" 'starting \EFI\microv\vmlinuz with "console=ttyS0 panic=-1 quiet'
pool=$(sed -n 's/^pool: 64 MiB of reserved memory at 0x\([0-9a-f]*\)$/\1/p' "$R")
[ -n "$pool" ] || fail "no pool address in the report"
[ $((0x$pool % 0x200000)) -eq 0 ] || fail "the pool at 0x$pool is not 2 MiB aligned"

check "both CPUs came in: Linux started CPU 1 at MicroV's ACPI wakeup mailbox"
if uefi_cpus_report "$MVT_TMP/cpus"; then
    fail "microv.efi reported CPUs that did not come in"
fi
madt_has_mailbox || fail "the MADT Linux uses has no wakeup mailbox"
echo "  the MADT has an ACPI Multiprocessor Wakeup structure"
dmesg | grep -q "smp: Brought up 1 node, 2 CPUs" || fail "Linux did not bring up both CPUs"
expect_eq "online CPUs" "$(cat /sys/devices/system/cpu/online)" "0-1"

check "Linux runs as the root VM on every CPU: CPUID says MicroV, SVM is hidden, kvm_amd is refused"
for c in 0 1; do
    run taskset -c $c cpuid-query 0x40000000
    out_has "signature=MicroVMicroV" || fail "no MicroV signature on CPU $c: $RUN_OUT"
    echo "  CPU $c: signature=MicroVMicroV"
done
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

check "the driver attached: microv status says early boot, both CPUs run, exits are counted"
dmesg | grep -q "microv: attached to MicroV, started at boot (early boot), on 2 CPUs" ||
    fail "the driver did not say it attached"
must microv status
out_has "state          running" || fail "microv status does not say running"
out_has "started        early boot (before the OS, by the UEFI loader)" || fail "not early boot"
out_has "memory         64 MiB pool" || fail "not MicroV's 64 MiB pool"
out_has "cpus           2" || fail "microv status does not count 2 CPUs"
status_json
for c in 0 1; do
    [ "$(cpu_field $c state)" = running ] || fail "CPU $c is $(cpu_field $c state)"
done
# Uptime from Linux's start, not from the driver's attach: Linux has been
# up for seconds when this runs.
up=$(jget uptime_ns)
[ "${up:-0}" -ge 1000000000 ] || fail "microv status's uptime counts from the driver's attach: ${up:-none} ns"
echo "  uptime: $up ns (Linux's: $(cut -d' ' -f1 /proc/uptime) s)"
cpuid_exits=$(cpu_field 0 exits.cpuid)
# The firmware and Linux's boot alone run CPUID thousands of times.
[ "$cpuid_exits" -gt 1000 ] || fail "only $cpuid_exits CPUID exits counted since boot"
echo "  CPU 0: $cpuid_exits CPUID exits since MicroV started beneath the firmware"
# Linux's bring-up of CPU 1 (its identification, microcode and feature
# checks) runs CPUID hundreds of times.
before=$(cpu_field 1 exits.cpuid)
[ "$before" -gt 100 ] || fail "only $before CPUID exits on CPU 1"
run taskset -c 1 cpuid-query 0x40000000
status_json
after=$(cpu_field 1 exits.cpuid)
[ "$after" -gt "$before" ] || fail "a CPUID on CPU 1 was not counted by MicroV ($before, then $after)"
echo "  CPU 1: $before CPUID exits since Linux started it, $after after one more"

check "microv log shows MicroV's log since the firmware: both CPUs brought up"
must microv log
out_has "microkernel: pool 64 MiB, 2 CPUs" || fail "microv log lacks the microkernel's start"
out_has "cpu 0: starting the root vCPU" || fail "microv log lacks CPU 0's start"
out_has "cpu 1: starting the root vCPU" || fail "microv log lacks CPU 1's start"

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
