#!/bin/sh
# The guest's APIC timer on MicroV, through the driver (mv-vm-smoke plays the
# VMM; its guests program the x2APIC's TSC-deadline timer): a halted guest
# sleeps in the host until its deadline and wakes on time; a guest spinning
# with interrupts on gets its timer interrupt on time (the driver's host
# timer); MV_IOC_VCPU_KICK and a signal with a raised vector wake a halted
# vCPU long before its deadline, and a bare signal does not wake the guest
# at all; a halted guest uses no CPU; `microv status` lists the running VM
# with its VMM's pid, command, vCPUs, memory and exits; a MicroV failure
# ends a halted guest's RUN (ENODEV) within seconds, not at its deadline.
#
# Times are host times measured by mv-vm-smoke from just before its first
# RUN, so they include the entry and the guest's setup; under TCG those are
# slow, hence the wide bounds (never early: at least 0.9x; at most 3x).
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

LOW=0.9
HIGH=3

# field TEXT NAME: the number after NAME in mv-vm-smoke's `woke by` line.
field() {
    printf '%s\n' "$1" | sed -n "s/^mv-vm-smoke: woke by .*$2 \([0-9.]*\).*/\1/p" | head -n 1
}

# in_range VALUE LOW HIGH: LOW <= VALUE <= HIGH (decimals).
in_range() {
    awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v != "" && v + 0 >= lo + 0 && v + 0 <= hi + 0) }'
}

# timed MODE [MS]: runs mv-vm-smoke MODE MS; it must report `timer ok` and
# a wake-up within LOW..HIGH times the expected time. Sets WOKE_CPU_MS.
timed() {
    local ratio
    run timeout 120 mv-vm-smoke "$@"
    [ "$RUN_RC" -ne 3 ] ||
        fail "this MicroV does not serve micro VMs (EOPNOTSUPP)"
    [ "$RUN_RC" -eq 0 ] || fail "mv-vm-smoke $* exited $RUN_RC"
    out_has "mv-vm-smoke: timer ok" || fail "mv-vm-smoke $* did not report ok"
    ratio=$(field "$RUN_OUT" ratio)
    in_range "$ratio" "$LOW" "$HIGH" ||
        fail "mv-vm-smoke $*: woke after ${ratio:-?} times the expected time, expected $LOW..$HIGH"
    WOKE_CPU_MS=$(field "$RUN_OUT" 'thread cpu')
    echo "  mv-vm-smoke $*: ratio $ratio, thread cpu ${WOKE_CPU_MS} ms"
}

check "start MicroV"
must microv start
expect_running_on_all

check "a halted guest wakes at its timer's deadline: 200 ms, then 1 s"
timed timer 200
timed timer 1000
# Halted for about a second: the thread slept (entries and setup only).
in_range "$WOKE_CPU_MS" 0 250 ||
    fail "the VMM thread used $WOKE_CPU_MS ms of CPU while its guest halted for 1 s (it should sleep)"

check "a guest spinning with interrupts on gets its timer interrupt on time: 200 ms, then 1 s"
timed timer-spin 200
timed timer-spin 1000

check "MV_IOC_VCPU_KICK wakes a halted vCPU (deadline 10 s) for a raised vector after 300 ms"
timed kick

check "a bare signal does not wake a halted guest; a raised vector and a signal (the doorbell's way) do, after 400 ms"
timed signal
eintr=$(printf '%s\n' "$RUN_OUT" | sed -n 's/^mv-vm-smoke: woke by .*, \([0-9]*\) EINTR$/\1/p')
[ "${eintr:-0}" -ge 2 ] || fail "RUN failed with EINTR ${eintr:-0} times, expected 2 (two signals)"

check "a guest halted with a deadline 5 s ahead uses no CPU; microv status lists its VM"
: >"$MVT_TMP/idle.out"
taskset -c 0 mv-vm-smoke timer 5000 >"$MVT_TMP/idle.out" 2>&1 &
IDLE=$!
wait_line "$MVT_TMP/idle.out" 'mv-vm-smoke: entering' "$IDLE"
sleep 0.5
t0=$(cpu_ticks "$IDLE")
sleep 2
t1=$(cpu_ticks "$IDLE")
echo "  the halted guest's VMM used $((t1 - t0)) ticks of CPU time in 2 s ($(getconf CLK_TCK 2>/dev/null || echo 100) per second)"
[ $((t1 - t0)) -le 10 ] || fail "the VMM of a halted guest used $((t1 - t0)) ticks in 2 s (it should sleep)"

status_json
expect_eq "vm_count" "$(jget vm_count)" 1
expect_eq "vms.0.pid" "$(jget vms.0.pid)" "$IDLE"
expect_eq "vms.0.command" "$(jget vms.0.command)" mv-vm-smoke
expect_eq "vms.0.state" "$(jget vms.0.state)" live
expect_eq "vms.0.vcpus" "$(jget vms.0.vcpus)" 1
expect_eq "vms.0.memory_bytes" "$(jget vms.0.memory_bytes)" $((64 * 1024 + 1024 * 1024))
hlt=$(jget vms.0.exits.hlt)
[ "$hlt" -ge 1 ] || fail "the halted VM's exits.hlt is $hlt, expected at least 1"
expect_eq "vms.0.exits.io" "$(jget vms.0.exits.io)" 0
echo "  listed: vm $(jget vms.0.id), pid $(jget vms.0.pid), exits $(grep '^vms.0.exits\.' "$MVT_TMP/status.flat" | tr '\n' ' ')"
must microv status
out_has "vms            1" || fail "microv status has no 'vms 1' line"
printf '%s\n' "$RUN_OUT" | grep -qE "^ +[0-9]+ +$IDLE +mv-vm-smoke +live +1 +1\.1 MiB " ||
    fail "microv status does not list the VM with pid $IDLE"

rc=0
wait "$IDLE" || rc=$?
sed 's/^/  idle: /' "$MVT_TMP/idle.out"
[ "$rc" -eq 0 ] || fail "mv-vm-smoke timer 5000 exited $rc"
ratio=$(field "$(cat "$MVT_TMP/idle.out")" ratio)
in_range "$ratio" "$LOW" "$HIGH" || fail "the 5 s guest woke after $ratio times its delay"

check "the VM is gone from microv status once its VMM exited"
status_json
expect_eq "vm_count" "$(jget vm_count)" 0
must microv stop
expect_state stopped

check "MicroV fails (test-fault on CPU 1) while a guest halts with a deadline 60 s ahead: its RUN ends with ENODEV within seconds"
must microv start --extension /usr/lib/microv/microv-extension-test.elf
: >"$MVT_TMP/far.out"
taskset -c 0 mv-vm-smoke timer 60000 >"$MVT_TMP/far.out" 2>&1 &
FAR=$!
wait_line "$MVT_TMP/far.out" 'mv-vm-smoke: entering' "$FAR"
sleep 0.5
must taskset -c 1 microv test-fault --cpu 1 --kind page-fault
start_s=$(date +%s)
rc=0
wait "$FAR" || rc=$?
took=$(($(date +%s) - start_s))
sed 's/^/  far: /' "$MVT_TMP/far.out"
echo "  the halted guest's RUN returned $took s after the failure"
expect_eq "exit status of the halted guest's VMM after the failure" "$rc" 1
grep -q 'MV_IOC_VCPU_RUN: No such device' "$MVT_TMP/far.out" ||
    fail "the halted guest's RUN did not fail with ENODEV"
[ "$took" -le 5 ] || fail "the halted guest's RUN took $took s to notice MicroV was gone"
expect_not_running
kernel_healthy

echo "microvm-timer: all checks passed"
