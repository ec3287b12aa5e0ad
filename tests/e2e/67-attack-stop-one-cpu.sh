#!/bin/sh
# Attack: a stop that would leave one CPU in MicroV. The root kernel
# (mvprobe) issues hv.stop_pp on one CPU only, with the management handle.
# A stop must take every CPU at once: MicroV refuses (Busy = 7) within
# about a second and keeps running on every CPU. Then a normal
# `microv stop` works. Tried from CPU 1 and from CPU 0. After each: Linux
# healthy, workload checksums unchanged.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

BUSY=7
# "About a second", with room for the emulator's slowness.
MAX_NS=3000000000

check "the workload natively, for reference"
workload_reference 50000
mvp_load

check "start; the probe gets the management handle"
must microv start
expect_running_on_all
mvp_need_handle

for c in 1 0; do
    check "hv.stop_pp on CPU $c alone is refused with Busy ($BUSY) within about a second"
    must_mvp stoppp cpu=$c
    ns=$(mvp_get elapsed_ns)
    echo "  the hypercall took $ns ns"
    mvp_expect status=$BUSY
    [ "$ns" -lt "$MAX_NS" ] || fail "hv.stop_pp on CPU $c took $ns ns"

    check "MicroV still runs on every CPU, CPU $c included"
    mvp_expect visible_after=1
    expect_running_on_all
    for d in $(online_cpus); do
        microv_visible_on "$d" || fail "CPU $d no longer shows MicroV after hv.stop_pp on CPU $c"
    done
    after_attack "hv.stop_pp on CPU $c alone" running
done

check "a normal microv stop works afterwards"
must microv stop
out_has "every CPU is native" || fail "unexpected stop message: $RUN_OUT"
expect_state stopped
native_everywhere
workload_unchanged "after the normal stop"
kernel_healthy

echo "attack-stop-one-cpu: all checks passed"
