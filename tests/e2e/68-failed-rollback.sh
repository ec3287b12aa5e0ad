#!/bin/sh
# The review's failed-rollback case: a start fails on CPU 1 after CPU 0 has
# entered MicroV, and undoing it fails too (test parameter fail_rollback of
# microv.ko: the rollback and every retry leave MicroV on the CPUs already
# started, as if they had not answered). The driver must not forget that
# MicroV: it reports it `failed`, keeps its memory and itself loaded (rmmod
# refused), refuses a new start and fails each stop, and retries (`microv
# stop`, the watchdog) until one works. Once fail_rollback is cleared the
# retry brings every CPU back native, the memory comes back, the driver
# unloads, and a normal start/stop works.
#
# Two rounds, two ways for CPU 1's start to fail:
#  1. `microv start --fail-cpu 1`: MicroV itself fails CPU 1's bring-up. That
#     marks MicroV failed everywhere, so CPU 0 hands itself back to Linux at
#     its next exit whatever the driver does; the driver, whose rollback
#     "failed", must still keep the instance until a stop succeeds.
#  2. The driver's own check refuses CPU 1 (the root kernel set EFER.SVME
#     there first, with mvprobe: "another hypervisor is using SVM"): MicroV
#     has no failure of its own and really keeps running on CPU 0.
# CPU-bound user work runs pinned to CPU 1, the CPU that stays native.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

FAIL_ROLLBACK=/sys/module/microv/parameters/fail_rollback
MSR_EFER=0xc0000080
EFER_SVME=0x1000
# A failed start must give its pool back in the end; allow for ordinary churn.
SLACK_KIB=$((16 * 1024))
LINES=50000

# workload_on_cpu1 WHAT: the workload pinned to CPU 1 gives the native
# checksums.
workload_on_cpu1() {
    taskset -c 1 sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/wl1 $LINES" ||
        fail "$1: the workload failed on CPU 1"
    expect_eq "$1: workload checksums on CPU 1" "$(cat "$MVT_TMP/wl1/sums")" "$sums_native"
}

# set_fail_rollback Y|N
set_fail_rollback() {
    case "$1" in Y) echo 1 >"$FAIL_ROLLBACK" ;; N) echo 0 >"$FAIL_ROLLBACK" ;; esac
    expect_eq "fail_rollback" "$(cat "$FAIL_ROLLBACK")" "$1"
}

# cpu_word CPU: `microv` if CPUID on CPU shows MicroV's signature, else `native`.
cpu_word() {
    if microv_visible_on "$1"; then echo microv; else echo native; fi
}

# kept_failed WHAT CPU0: MicroV is reported failed, the driver keeps it (its
# pool, the module), CPU 1 is native; CPU 0 is CPU0 (`microv`: still runs
# MicroV, status says running, CPUID shows MicroV and hides SVM; `any`: not
# checked, only shown).
kept_failed() {
    local st0 sig0
    check "$1: state failed (status --json and text), the pool is kept, CPU 1 is native$([ "$2" = microv ] && echo ', CPU 0 still runs MicroV')"
    status_json
    st0=$(cpu_field 0 state)
    sig0=$(cpu_word 0)
    echo "  state=$(jget state) cpu_count=$(jget cpu_count) cpu0=$st0 (CPUID: $sig0) cpu1=$(cpu_field 1 state) pool.bytes=$(jget pool.bytes) last_error=$(jget last_error.name) on CPU $(jget last_error.cpu)"
    expect_eq "$1: microv status --json state" "$(jget state)" failed
    [ "$(jget pool.bytes)" -gt 0 ] || fail "$1: the pool is gone (pool.bytes $(jget pool.bytes)) though the driver could not take MicroV out"
    must microv status
    printf '%s\n' "$RUN_OUT" | grep -q '^state  *failed$' || fail "$1: microv status does not say 'state failed'"
    case "$(cpu_field 1 state)" in
    native | failed) ;;
    *) fail "$1: OS CPU 1 is '$(cpu_field 1 state)', expected native or failed (its start failed)" ;;
    esac
    expect_eq "$1: CPU 1 (CPUID 0x40000000)" "$(cpu_word 1)" native
    svm_bit_on 1
    expect_eq "$1: CPU 1: CPUID 0x80000001 ECX.SVM (native)" "$SVM_BIT" 1
    if [ "$2" = microv ]; then
        expect_eq "$1: state of OS CPU 0" "$st0" running
        expect_eq "$1: CPU 0 (CPUID 0x40000000)" "$sig0" microv
        svm_bit_on 0
        expect_eq "$1: CPU 0: CPUID 0x80000001 ECX.SVM (hidden beneath MicroV)" "$SVM_BIT" 0
    fi
    grep -q '^microv ' /proc/modules || fail "$1: microv.ko is gone"
}

# refuses_everything WHAT: while the rollback keeps failing, rmmod, a new
# start and a stop are refused, and the workload on CPU 1 is unchanged.
refuses_everything() {
    check "$1: rmmod microv is refused (the driver holds itself while MicroV may run)"
    run rmmod microv
    [ "$RUN_RC" -ne 0 ] || fail "$1: rmmod microv succeeded"
    grep -q '^microv ' /proc/modules || fail "$1: microv.ko is gone after the refused rmmod"

    check "$1: a new microv start is refused: already running"
    run microv start
    expect_eq "$1: exit status of the new start" "$RUN_RC" 1
    out_has "already running" || fail "$1: the new start did not say 'already running'"

    check "$1: microv stop fails (exit 1) and names CPU 0, as the rollback still fails"
    run microv stop
    expect_eq "$1: exit status of the stop" "$RUN_RC" 1
    out_has "CPU 0" || fail "$1: the failed stop does not name CPU 0"

    check "$1: the workload on CPU 1 gives the native checksums"
    workload_on_cpu1 "$1"
}

# retry_works WHAT: fail_rollback off; `microv stop` (or the watchdog's
# retry, if it comes first) takes MicroV out: stopped, every CPU native,
# pool released, MemFree back.
retry_works() {
    check "$1: fail_rollback off: microv stop (or the watchdog's retry) brings every CPU back native"
    set_fail_rollback N
    run microv stop
    if [ "$RUN_RC" -eq 0 ]; then
        out_has "every CPU is native" || fail "$1: unexpected stop message: $RUN_OUT"
        echo "  microv stop took MicroV out"
    else
        expect_eq "$1: exit status of the stop" "$RUN_RC" 1
        out_has "not running" || fail "$1: the stop failed, and not because MicroV had gone: $RUN_OUT"
        echo "  the watchdog took MicroV out just before microv stop"
    fi
    dmesg | grep 'microv:' | tail -n 2 | sed 's/^/  dmesg| /'
    expect_state stopped
    expect_eq "$1: cpu_count after the stop" "$(jget cpu_count)" 0
    expect_eq "$1: pool.bytes after the stop" "$(jget pool.bytes)" 0
    native_everywhere

    check "$1: the memory came back (MemFree within $SLACK_KIB KiB of before)"
    free_now=$(mem_free_kib)
    echo "  MemFree: $free_base KiB before, $free_held KiB while failed, $free_now KiB now"
    [ "$free_now" -ge $((free_base - SLACK_KIB)) ] ||
        fail "$1: MemFree is $free_now KiB, $((free_base - free_now)) KiB below the $free_base KiB before"
    kernel_healthy
}

# memory_held WHAT: MemFree shows the pool still allocated.
memory_held() {
    local pool_kib
    free_held=$(mem_free_kib)
    pool_kib=$(($(jget pool.bytes) / 1024))
    echo "  MemFree while failed: $free_held KiB ($((free_base - free_held)) KiB below before; pool $pool_kib KiB)"
    [ $((free_base - free_held)) -ge $((pool_kib / 2)) ] ||
        fail "$1: MemFree fell only $((free_base - free_held)) KiB: the $pool_kib KiB pool was freed though the driver could not take MicroV out"
}

check "MicroV is stopped after boot; microv.ko has the fail_rollback test parameter, off"
expect_state stopped
[ -w "$FAIL_ROLLBACK" ] || fail "$FAIL_ROLLBACK does not exist or is not writable"
expect_eq "fail_rollback at load" "$(cat "$FAIL_ROLLBACK")" N
free_base=$(mem_free_kib)
echo "  MemFree before: $free_base KiB"

check "the workload natively on CPU 1, for reference"
taskset -c 1 sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/wl-native $LINES"
sums_native=$(cat "$MVT_TMP/wl-native/sums")
echo "  native: $(echo $sums_native)"

# --- round 1: MicroV fails CPU 1's bring-up (--fail-cpu 1) ----------------------
R=--fail-cpu
check "$R: fail_rollback on"
set_fail_rollback Y

check "$R: microv start --fail-cpu 1 fails on CPU 1 (exit 1), without claiming to have started"
run microv start --fail-cpu 1
expect_eq "exit status of the failed start" "$RUN_RC" 1
out_has "CPU 1" || fail "the failed start does not name CPU 1"
if out_has "started beneath"; then
    fail "the failed start claims to have started"
fi
dmesg | grep 'microv:' | tail -n 4 | sed 's/^/  dmesg| /'

kept_failed "$R" any
expect_eq "$R: last_error.cpu" "$(jget last_error.cpu)" 1
expect_eq "$R: last_error.name" "$(jget last_error.name)" injected_failure
memory_held "$R"
refuses_everything "$R"
kept_failed "$R, after the refused stop" any
kernel_healthy
retry_works "$R"

# --- round 2: the driver refuses CPU 1; MicroV keeps running on CPU 0 -----------
R=svm-in-use
check "$R: the root kernel sets EFER.SVME on CPU 1 (natively), so the driver's check refuses CPU 1"
mvp_load
must_mvp wrmsr cpu=1 msr=$MSR_EFER
efer1=$(mvp_get value)
case "$efer1" in 0x*) ;; *) fail "could not read EFER on CPU 1: $MVP_OUT" ;; esac
must_mvp wrmsr cpu=1 msr=$MSR_EFER value=$(printf '0x%x' $((efer1 | EFER_SVME)))
expect_eq "EFER on CPU 1 after the write" "$(mvp_get after_value)" "$(printf '0x%x' $((efer1 | EFER_SVME)))"

check "$R: fail_rollback on"
set_fail_rollback Y

check "$R: microv start fails on CPU 1 (exit 1): SVM in use there"
run microv start
t_failed=$(date +%s)
expect_eq "exit status of the failed start" "$RUN_RC" 1
out_has "CPU 1" || fail "the failed start does not name CPU 1"
out_has "using SVM" || fail "the failed start does not say SVM is in use"
if out_has "started beneath"; then
    fail "the failed start claims to have started"
fi
dmesg | grep 'microv:' | tail -n 3 | sed 's/^/  dmesg| /'

kept_failed "$R" microv
expect_eq "$R: last_error.cpu" "$(jget last_error.cpu)" 1
expect_eq "$R: last_error.name" "$(jget last_error.name)" svm_in_use
memory_held "$R"
refuses_everything "$R"
# The watchdog retries 2 s after the failed rollback, then 4 s later, ...:
# give it time for its first retry, which must fail like the rollback.
while [ $(($(date +%s) - t_failed)) -lt 3 ]; do sleep 0.5; done
kept_failed "$R, after the refused stop and the watchdog's retries" microv
kernel_healthy
retry_works "$R"

check "$R: EFER.SVME cleared on CPU 1 again"
must_mvp wrmsr cpu=1 msr=$MSR_EFER value=$efer1
expect_eq "EFER on CPU 1 after the restore" "$(mvp_get after_value)" "$efer1"
must rmmod mvprobe

# --- afterwards ---------------------------------------------------------------
check "rmmod microv works now, and the driver loads again"
must rmmod microv
[ ! -e /dev/microv ] || fail "/dev/microv still exists after rmmod"
must insmod /usr/lib/microv/microv.ko
expect_eq "fail_rollback after reloading" "$(cat "$FAIL_ROLLBACK")" N

check "a normal start runs on every CPU, and stop works"
must microv start
expect_running_on_all
for c in $(online_cpus); do
    microv_visible_on "$c" || fail "CPU $c does not show MicroV after the normal start"
done
must microv stop
expect_state stopped
native_everywhere

check "Linux is healthy: the workload on CPU 1 still gives the native checksums"
workload_on_cpu1 "after the stop"
kernel_healthy

echo "failed-rollback: all checks passed"
