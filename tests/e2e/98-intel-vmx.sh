#!/bin/sh
# e2e-cpu: intel
# e2e-debugcon-has: root EPT maps
# MicroV on the emulated Intel machine (Bochs, Haswell: VMX with EPT, VPID,
# unrestricted guest), two CPUs: the same commands as on AMD. microv start
# brings both CPUs beneath MicroV's VMX world switch (the root's EPT hides
# the pool; the debugcon header above checks the microkernel built it);
# status names intel_vmx; CPUID says MicroV on each CPU and hides VMX, so
# kvm_intel refuses to load; a workload gives its native checksums beneath
# MicroV; hypercalls (vmcall) and the exit counters work; the pool reads as
# zeros from the root; stop returns every CPU native and VMX is Linux's
# again (kvm_intel runs a KVM guest); start/stop repeats.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "the machine: GenuineIntel with VMX (EPT, VPID, unrestricted guest), no SVM, 2 CPUs"
grep -m1 '^vendor_id' /proc/cpuinfo | grep -qw GenuineIntel ||
    fail "not an Intel CPU: $(grep -m1 '^vendor_id' /proc/cpuinfo)"
VMX_FLAGS=$(grep -m1 '^vmx flags' /proc/cpuinfo) || fail "no 'vmx flags' line in /proc/cpuinfo"
for flag in ept vpid unrestricted_guest; do
    printf '%s\n' "$VMX_FLAGS" | grep -qw "$flag" || fail "no $flag among the VMX flags"
done
if grep -qw svm /proc/cpuinfo; then
    fail "the Intel machine's CPU has SVM"
fi
expect_eq "processors" "$(grep -c '^processor' /proc/cpuinfo)" 2
grep -q '^Vulnerable' /sys/devices/system/cpu/vulnerabilities/meltdown ||
    fail "page-table isolation is on (the harness boots with pti=off)"

# leaf1_ecx CPU: CPUID leaf 1 ECX on that CPU, as cpuid-query prints it.
leaf1_ecx() {
    taskset -c "$1" cpuid-query 1 | sed -n 's/.*ecx=\(0x[0-9a-f]*\).*/\1/p'
}

check "natively: VMX in CPUID on each CPU; the workload's reference checksums"
for c in $(online_cpus); do
    [ $(($(leaf1_ecx "$c") & 0x20)) -ne 0 ] || fail "CPU $c: no VMX in CPUID natively"
done
workload_reference 20000
free_base=$(mem_free_kib)

check "microv start: both CPUs beneath MicroV, status names intel_vmx"
must microv start
out_has "started beneath Linux on 2 CPUs" || fail "microv start said: $RUN_OUT"
expect_running_on_all
status_json
caps=$(grep '^capabilities\.' "$MVT_TMP/status.flat" | cut -d= -f2- | tr '\n' ' ')
echo "  capabilities: $caps"
case " $caps" in
*" intel_vmx "*) ;;
*) fail "capabilities do not name intel_vmx: $caps" ;;
esac
case " $caps" in
*" amd_svm "*) fail "an Intel machine reports amd_svm: $caps" ;;
esac
must microv status
out_has "intel_vmx" || fail "microv status does not name intel_vmx"

check "CPUID says MicroV on each CPU and hides VMX"
for c in $(online_cpus); do
    microv_visible_on "$c" || fail "CPU $c does not report MicroV's CPUID signature"
    [ $(($(leaf1_ecx "$c") & 0x20)) -eq 0 ] || fail "CPU $c still shows VMX in CPUID"
done

check "kvm_intel refuses to load while MicroV runs, and nothing breaks"
run modprobe kvm_intel
[ "$RUN_RC" -ne 0 ] || fail "kvm_intel loaded beneath MicroV"
if grep -q '^kvm_intel ' /proc/modules; then
    fail "kvm_intel is loaded"
fi
expect_running_on_all

check "the workload beneath MicroV gives the native checksums on each CPU"
workload_unchanged "beneath MicroV"

check "exits are counted per CPU (CPUID, hypercalls, APIC writes)"
status_json
for c in $(online_cpus); do
    [ "$(cpu_field "$c" exits.cpuid)" -gt 0 ] || fail "CPU $c counted no CPUID exit"
    [ "$(cpu_field "$c" exits.vmmcall)" -gt 0 ] || fail "CPU $c counted no hypercall"
done

check "the root kernel cannot read MicroV's image at the pool's first page"
first_pa=$(printf '0x%x' "$(jget pool.first_pa)")
[ "$first_pa" != 0x0 ] || fail "no pool address in microv status"
probe "$first_pa"
case "$PROBE_LINE" in
"mvprobe: pa=$first_pa hex=00 00 00 00 00 00 00 00 "*) ;;
*) fail "the root read more than zeros at the pool ($first_pa): ${PROBE_LINE:-nothing}" ;;
esac
kernel_healthy

check "microv stop: every CPU native, VMX back in CPUID, memory returned"
must microv stop
expect_state stopped
for c in $(online_cpus); do
    if microv_visible_on "$c"; then
        fail "CPU $c still reports MicroV"
    fi
    [ $(($(leaf1_ecx "$c") & 0x20)) -ne 0 ] || fail "CPU $c: no VMX in CPUID after stop"
done
free_now=$(mem_free_kib)
[ "$free_now" -ge $((free_base - 16 * 1024)) ] ||
    fail "MemFree is $free_now KiB, $((free_base - free_now)) KiB below the $free_base KiB before"

check "start and stop twice more"
for i in 1 2; do
    must microv start
    expect_running_on_all
    must microv stop
    expect_state stopped
done

check "a bring-up that fails on CPU 1 (--fail-cpu 1) leaves every CPU native"
run microv start --fail-cpu 1
[ "$RUN_RC" -ne 0 ] || fail "the start with --fail-cpu 1 succeeded"
out_has "bring-up failed on purpose" || fail "microv start said: $RUN_OUT"
expect_state stopped
for c in $(online_cpus); do
    if microv_visible_on "$c"; then
        fail "CPU $c still reports MicroV after the failed start"
    fi
done
kernel_healthy

check "VMX is Linux's again: kvm_intel loads and runs a KVM guest"
must modprobe kvm_intel
must timeout 120 kvm-smoke
out_has "kvm-smoke: ok" || fail "kvm-smoke did not report ok"

check "microv start refuses while kvm_intel is loaded"
run microv start
[ "$RUN_RC" -ne 0 ] || fail "microv start succeeded with kvm_intel loaded"
out_has "kvm_intel" || fail "microv start said: $RUN_OUT"
expect_state stopped
must rmmod kvm_intel
workload_unchanged "after stop"
kernel_healthy
echo "intel-vmx: all checks passed"
