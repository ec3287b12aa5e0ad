#!/bin/sh
# When the extension (host ring 3) faults on one CPU, MicroV stops itself on
# every CPU, records the fault, and Linux goes on as if nothing happened; a
# later normal start works, and so does Linux's KVM. Needs the test
# extension (cargo xtask build --test-hooks) and `microv test-fault`.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

TEST_EXT=/usr/lib/microv/microv-extension-test.elf
LINES=200000

[ -f "$TEST_EXT" ] || fail "$TEST_EXT is missing (build with cargo xtask build --test-hooks)"

check "the workload natively, for reference"
workload "$MVT_TMP/native" "$LINES"
sums_native=$(cat "$MVT_TMP/native/sums")

check "test-fault is refused while the normal extension runs, and MicroV keeps running"
must microv start
expect_running_on_all
run microv test-fault --cpu 1 --kind page-fault
expect_eq "exit status of test-fault with the normal extension" "$RUN_RC" 1
out_has "test faults" || fail "test-fault with the normal extension did not say it needs the test image"
expect_running_on_all
must microv stop

# fault_round CPU KIND VECTOR: starts with the test extension, makes it fault
# on CPU with KIND, and checks that MicroV stopped everywhere with a fault
# record naming VECTOR and CPL 3, and that Linux is fine.
fault_round() {
    cpu=$1
    kind=$2
    vector=$3

    check "start with the test extension"
    must microv start --extension "$TEST_EXT"
    expect_running_on_all

    check "microv test-fault --cpu $cpu --kind $kind"
    must microv test-fault --cpu "$cpu" --kind "$kind"
    out_has "faulted on CPU $cpu" || fail "test-fault did not confirm the fault on CPU $cpu"

    check "status: failed, fault record: vector $vector, cpl 3, on CPU $cpu"
    status_json
    sed -n '/"fault"/,$p' "$MVT_TMP/status.json" | sed 's/^/  /'
    expect_eq "state after the extension fault" "$(jget state)" failed
    expect_eq "fault.vector" "$(jget fault.vector)" "$vector"
    expect_eq "fault.cpl" "$(jget fault.cpl)" 3
    expect_eq "fault.name" "$(jget fault.name)" extension_fault
    expect_eq "last_error.cpu" "$(jget last_error.cpu)" "$cpu"
    for c in $(online_cpus); do
        st=$(cpu_field "$c" state)
        [ "$st" != running ] || fail "CPU $c still runs MicroV after the fault on CPU $cpu"
    done

    check "MicroV stopped by itself on every CPU: all native"
    native_everywhere

    check "a stop now fails (nothing runs) and the state stays failed"
    run microv stop
    expect_eq "exit status of stop after the fault" "$RUN_RC" 1
    out_has "not running" || fail "stop after the fault did not say 'not running'"
    expect_not_running

    check "Linux is alive: the workload on every CPU gives the native checksums"
    for c in $(online_cpus); do
        taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/after$c $LINES"
        expect_eq "checksums on CPU $c after the fault" "$(cat "$MVT_TMP/after$c/sums")" "$sums_native"
    done
    kernel_healthy

    check "a normal start runs on every CPU again, and stop works"
    must microv start
    expect_running_on_all
    expect_eq "last_error after a good start" "$(jget last_error)" null
    expect_eq "fault after a good start" "$(jget fault)" null
    must microv stop
    expect_state stopped
    native_everywhere
}

fault_round 1 page-fault 14
fault_round 0 invalid-opcode 6

# A compromised extension: it turns nested paging and the VMRUN intercept
# off in the root's VMCB and asks the microkernel to run it. The microkernel
# must refuse that VMCB (vmcb_check), so the root never runs loose; the
# extension then stops MicroV with ExtensionError (detail 2: the syscall's
# InvalidArgument).
check "start with the test extension (compromised-extension round)"
must microv start --extension "$TEST_EXT"
expect_running_on_all
check "microv test-fault --cpu 1 --kind loosen-vmcb: the microkernel refuses the loosened VMCB"
must microv test-fault --cpu 1 --kind loosen-vmcb
status_json
expect_eq "state after the refused VMCB" "$(jget state)" failed
expect_eq "fault.name" "$(jget fault.name)" extension_error
expect_eq "fault.detail (SysStatus::InvalidArgument)" "$(jget fault.detail)" 2
expect_eq "fault.cpl" "$(jget fault.cpl)" 3
# The driver copies the failed instance's log to the kernel log.
dmesg | grep -F "refused to run vCPU state" >"$MVT_TMP/refused" ||
    fail "the microkernel did not log the refused VMCB"
sed 's/^/  /' "$MVT_TMP/refused"
check "the root never ran without nested paging: MicroV left every CPU, Linux is fine"
native_everywhere
for c in $(online_cpus); do
    taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/loose$c $LINES"
    expect_eq "checksums on CPU $c after the refused VMCB" "$(cat "$MVT_TMP/loose$c/sums")" "$sums_native"
done
kernel_healthy

check "Linux's KVM works (modprobe kvm_amd; kvm-smoke)"
kvm_works

check "the kernel log shows no crash"
kernel_healthy

echo "extension-fault: all checks passed"
