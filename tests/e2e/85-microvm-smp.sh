#!/bin/sh
# A 2-vCPU Linux micro VM on MicroV: the guest brings up its second vCPU
# through INIT/SIPI, sees 2 CPUs, runs a job pinned to each at once (both
# CPUs show busy time in its /proc/stat) and computes the root's checksum.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

N=50000
REF=$(seq 1 $N | sha256sum | cut -d' ' -f1)
echo "  the root's checksum of seq 1 $N: $REF"

pool_free() {
    status_json
    jget pool.free_bytes
}

must microv start

check "a 2-vCPU guest on MicroV: both vCPUs up, work on both, the root's checksum"
MVT_GUEST_ARGS="--cpus 2"
guest_start smp "mvguest.cpus mvguest.sum=$N mvguest.work=20000"
guest_wait smp "MICROV-GUEST-END"
guest_finish smp
[ "$GUEST_RC" -eq 0 ] || fail "microv run --cpus 2 exited $GUEST_RC"
expect_eq "CPUs the guest sees" "$(guest_line smp MICROV-CPUS: | cut -d' ' -f2)" 2
expect_eq "the guest's checksum" "$(guest_line smp MICROV-SUM: | cut -d' ' -f2)" "$REF"
work=$(guest_line smp MICROV-WORK:)
echo "  per-CPU busy ticks in the guest: ${work#MICROV-WORK: }"
for c in cpu0 cpu1; do
    t=$(printf '%s\n' "$work" | tr ' ' '\n' | sed -n "s/^$c=//p")
    [ -n "$t" ] && [ "$t" -gt 0 ] || fail "the guest's $c did no work: $work"
done
if grep -qE 'BUG:|Oops|Kernel panic|rcu: INFO|detected stalls?' "$MVT_TMP/smp.out"; then
    fail "the guest kernel complained$(guest_crash smp)"
fi
POOL0=$(pool_free)
echo "  free pool after the guest: $POOL0 bytes"

must microv stop
echo "microvm-smp: all checks passed"
