#!/bin/sh
# The whole life of one MicroV: start it beneath the running Linux, check
# that it runs on every CPU, that Linux keeps computing exactly what it
# computes natively (on both CPUs at once), that VM exits happen and are
# counted, that the hypervisor logs; stop it, and check that every CPU is
# native again: no MicroV CPUID leaf, SVM visible, Linux's own KVM works.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

LINES=300000 # 2.7 MB of data per CPU
NCPU=$(grep -c '^processor' /proc/cpuinfo)

check "MicroV is stopped after boot"
expect_state stopped

check "the workload natively (before microv start), on each CPU"
for c in $(online_cpus); do
    taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/native$c $LINES"
done
sums_native=$(cat "$MVT_TMP/native0/sums")
echo "  native: $(echo $sums_native)"
set -- $sums_native
[ $# -eq 3 ] || fail "the native workload printed $# checksums, expected 3"
expect_eq "native gzip round trip sha256" "$2" "$1"
for c in $(online_cpus); do
    expect_eq "native checksums on CPU $c" "$(cat "$MVT_TMP/native$c/sums")" "$sums_native"
done

check "microv start"
must microv start
out_has "started beneath Linux on $NCPU CPUs" || fail "unexpected start message: $RUN_OUT"

check "status --json: running, cpu_count $NCPU, every CPU running"
expect_running_on_all
for c in $(online_cpus); do
    microv_visible_on "$c" || fail "CPU $c does not show MicroV's CPUID signature after start"
done

check "the same workload beneath MicroV, on all CPUs at once, gives the same checksums"
pids=
for c in $(online_cpus); do
    taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/hv$c $LINES" &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p" || fail "the workload (pid $p) failed beneath MicroV"
done
for c in $(online_cpus); do
    got=$(cat "$MVT_TMP/hv$c/sums")
    echo "  CPU $c beneath MicroV: $(echo $got)"
    expect_eq "checksums (data, gzip round trip, gzip stream) on CPU $c" "$got" "$sums_native"
done

check "MicroV is still running on every CPU after the workload"
expect_running_on_all

check "CPUID exits are counted on each CPU"
N=25
status_json
for c in $(online_cpus); do
    eval "before_$c=\$(cpu_field $c exits.cpuid)"
done
for c in $(online_cpus); do
    i=0
    while [ $i -lt $N ]; do
        taskset -c "$c" cpuid-query 0 >/dev/null
        i=$((i + 1))
    done
done
status_json
total=0
for c in $(online_cpus); do
    eval "b=\$before_$c"
    a=$(cpu_field "$c" exits.cpuid)
    v=$(cpu_field "$c" exits.vmmcall)
    t=$(cpu_field "$c" exits_total)
    echo "  CPU $c: cpuid exits $b -> $a, vmmcall exits $v, total $t"
    [ "$a" -ge $((b + N)) ] || fail "CPU $c: $N CPUID instructions moved the cpuid exit count only from $b to $a"
    [ "$t" -ge "$a" ] || fail "CPU $c: exits_total $t is below the cpuid count $a"
    total=$((total + v))
done
[ "$total" -gt 0 ] || fail "no vmmcall exits at all, though status itself makes hypercalls"

check "microv log is not empty and mentions every CPU"
must microv log
[ -n "$RUN_OUT" ] || fail "microv log printed nothing"
for c in $(seq 0 $((NCPU - 1))); do
    out_has "cpu $c" || fail "microv log does not mention cpu $c"
done

check "the driver cannot be unloaded while MicroV runs (its trampoline is in use)"
run rmmod microv
[ "$RUN_RC" -ne 0 ] || fail "rmmod microv succeeded while MicroV runs"
grep -q '^microv ' /proc/modules || fail "microv.ko is gone while MicroV runs"
expect_state running

check "microv stop"
must microv stop
out_has "every CPU is native" || fail "unexpected stop message: $RUN_OUT"

check "status --json: stopped, no CPUs"
expect_state stopped
expect_eq "cpu_count after stop" "$(jget cpu_count)" 0
expect_eq "pool.bytes after stop" "$(jget pool.bytes)" 0

check "every CPU is native: no MicroV CPUID leaf, SVM visible, hypercalls raise #UD"
native_everywhere

check "the workload after stop still gives the native checksums"
workload "$MVT_TMP/after" "$LINES"
expect_eq "checksums after stop" "$(cat "$MVT_TMP/after/sums")" "$sums_native"

check "after stop the driver unloads cleanly and loads again"
must rmmod microv
[ ! -e /dev/microv ] || fail "/dev/microv still exists after rmmod"
must insmod /usr/lib/microv/microv.ko
must microv start
expect_state running
must microv stop
expect_state stopped

check "Linux's KVM works after stop (modprobe kvm_amd; kvm-smoke)"
kvm_works

check "the kernel log shows no crash"
kernel_healthy

echo "lifecycle: all checks passed"
