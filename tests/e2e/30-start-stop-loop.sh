#!/bin/sh
# Starting and stopping MicroV many times in one boot: every start runs on
# every CPU, every stop returns them all, no memory leaks from one round to
# the next, and at the end the CPUs are native enough for Linux's own KVM.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

ROUNDS=20
# MicroV takes a 64 MiB pool each round; a leak of even one round shows.
LEAK_SLACK_KIB=$((16 * 1024))

check "MicroV is stopped after boot"
expect_state stopped
free_before=$(mem_free_kib)

n=0
while [ "$n" -lt "$ROUNDS" ]; do
    r=$((n + 1))
    check "round $r/$ROUNDS: start, running on every CPU, stop, stopped"
    run microv start
    [ "$RUN_RC" -eq 0 ] || fail "round $r: microv start exited $RUN_RC: $RUN_OUT"
    expect_running_on_all
    for c in $(online_cpus); do
        microv_visible_on "$c" || fail "round $r: CPU $c does not show MicroV's CPUID signature"
    done
    run microv stop
    [ "$RUN_RC" -eq 0 ] || fail "round $r: microv stop exited $RUN_RC: $RUN_OUT"
    expect_state stopped
    for c in $(online_cpus); do
        if microv_visible_on "$c"; then
            fail "round $r: CPU $c still shows MicroV's CPUID signature after stop"
        fi
    done
    n=$r
done
echo "start/stop cycles completed: $n"
expect_eq "completed cycles" "$n" "$ROUNDS"

check "no memory leaked over $ROUNDS rounds"
free_after=$(mem_free_kib)
echo "  MemFree: $free_before KiB before, $free_after KiB after"
[ "$free_after" -ge $((free_before - LEAK_SLACK_KIB)) ] ||
    fail "MemFree dropped by $((free_before - free_after)) KiB over $ROUNDS rounds"

check "every CPU is native after the last stop"
native_everywhere

check "Linux's KVM works after the last stop (modprobe kvm_amd; kvm-smoke)"
kvm_works

check "the kernel log shows no crash"
kernel_healthy

echo "start-stop-loop: $n cycles, all checks passed"
