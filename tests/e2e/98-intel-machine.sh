#!/bin/sh
# e2e-cpu: intel
# e2e-debugcon-has: 98-intel-machine: port 0xE9 reaches the host
# The emulated Intel machine (Bochs, `cargo xtask vm --cpu intel`): an Intel
# CPU with VMX (EPT, VPID, unrestricted guest) on both CPUs; Linux's own
# kvm_intel runs a KVM guest on it. The driver's VMX checks pass (VMX on
# and locked by the firmware, not in use, EPT/VPID/unrestricted guest) and
# the microkernel, which has only SVM's world switch so far, refuses with
# that reason: the start fails cleanly and leaves nothing behind (stopped,
# no pool, no CPU beneath it, the driver unloads), and VMX is still Linux's.
# Port 0xE9 reaches the host's debugcon log (the header above; the harness
# checks it after the run).
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

# A failed start must not keep memory; allow for ordinary churn.
SLACK_KIB=$((16 * 1024))

check "the CPU is GenuineIntel with VMX (EPT, VPID, unrestricted guest) and no SVM, on 2 CPUs"
grep -m1 '^vendor_id' /proc/cpuinfo | grep -qw GenuineIntel ||
    fail "not an Intel CPU: $(grep -m1 '^vendor_id' /proc/cpuinfo)"
grep -qw vmx /proc/cpuinfo || fail "no vmx flag in /proc/cpuinfo"
if grep -qw svm /proc/cpuinfo; then
    fail "the Intel machine's CPU has SVM"
fi
expect_eq "processors" "$(grep -c '^processor' /proc/cpuinfo)" 2
VMX_FLAGS=$(grep -m1 '^vmx flags' /proc/cpuinfo) || fail "no 'vmx flags' line in /proc/cpuinfo"
echo "  | $VMX_FLAGS"
for flag in ept vpid unrestricted_guest; do
    printf '%s\n' "$VMX_FLAGS" | grep -qw "$flag" || fail "no $flag among the VMX flags"
done

check "Linux runs without page-table isolation (the harness boots it with pti=off)"
grep -q '^Vulnerable' /sys/devices/system/cpu/vulnerabilities/meltdown ||
    fail "Meltdown mitigation: $(cat /sys/devices/system/cpu/vulnerabilities/meltdown)"

check "the driver is loaded and MicroV is stopped"
grep -q '^microv ' /proc/modules || fail "microv.ko is not loaded"
expect_state stopped
free_base=$(mem_free_kib)

NOT_READY="this CPU's Intel VMX is usable, but this MicroV build cannot run on VMX yet"

check "microv start refuses: VMX is usable, MicroV's VMX world switch is not there yet"
run microv start
expect_eq "microv start's exit status" "$RUN_RC" 1
out_has "$NOT_READY" || fail "microv start gave another reason"
if out_has "started beneath"; then
    fail "microv start claims it started"
fi

check "microv status: stopped, with the reason, no CPU and no pool"
status_json
expect_eq "state" "$(jget state)" stopped
expect_eq "last error" "$(jget last_error.name)" vmx_not_ready
expect_eq "CPUs" "$(jget cpu_count)" 0
expect_eq "pool bytes" "$(jget pool.bytes)" 0
must microv status
out_has "$NOT_READY" || fail "microv status does not give the reason"

check "nothing is left: no CPU shows MicroV, no memory kept, the kernel is clean"
for c in $(online_cpus); do
    if microv_visible_on "$c"; then
        fail "CPU $c reports MicroV's CPUID signature"
    fi
done
free_now=$(mem_free_kib)
[ "$free_now" -ge $((free_base - SLACK_KIB)) ] ||
    fail "MemFree is $free_now KiB, $((free_base - free_now)) KiB below the $free_base KiB before"
kernel_healthy

check "the driver unloads and loads again; a second start refuses the same way"
must rmmod microv
must insmod /usr/lib/microv/microv.ko
run microv start
expect_eq "the second start's exit status" "$RUN_RC" 1
out_has "$NOT_READY" || fail "the second start gave another reason"
expect_state stopped

check "VMX is still Linux's: kvm_intel loads and runs a KVM guest (kvm-smoke)"
must modprobe kvm_intel
[ -c /dev/kvm ] || fail "/dev/kvm does not exist after modprobe kvm_intel"
must timeout 120 kvm-smoke
out_has "kvm-smoke: ok" || fail "kvm-smoke did not report ok"
must rmmod kvm_intel
kernel_healthy

check "port 0xE9: a line for the host's debugcon log"
# /dev/port moves to the next port with every byte: one write per byte.
for byte in $(printf '98-intel-machine: port 0xE9 reaches the host\n' | od -An -tu1); do
    # shellcheck disable=SC2059 # the format is the byte, in octal
    printf "\\$(printf %o "$byte")" | dd of=/dev/port bs=1 seek=233 count=1 2>/dev/null ||
        fail "cannot write port 0xE9 through /dev/port"
done
echo "intel-machine: all checks passed"
