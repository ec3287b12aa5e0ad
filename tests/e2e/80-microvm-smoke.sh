#!/bin/sh
# Micro VMs through the driver's VM and vCPU file descriptors. mv-vm-smoke
# plays the VMM: a real-mode guest writes to a serial port, reads from it,
# touches memory that is not RAM and halts, and each exit is seen and
# completed exactly as expected; a hostile VMM's bad arguments are refused.
# A guest spinning with interrupts off never keeps the root from its own
# work (it runs only on the time its VMM thread donates, and every host
# interrupt ends the run). Closing the VMM's fds, and kill -9 of the VMM,
# leave nothing behind: MicroV's free pool and the kernel's page pins return
# to their baseline. `microv stop` is refused while a VM exists and works
# after; without MicroV the driver refuses VMs with ENODEV; a second start
# serves VMs again. A MicroV failure while a guest spins ends its VMM's run
# with ENODEV and frees its pins; a VM left open across the failure and a
# new start never touches the new MicroV's VMs (whose ids start over).
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

# pool_free: MicroV's free pool bytes (`microv status --json`).
pool_free() {
    status_json
    jget pool.free_bytes
}

# pins: pages pinned with FOLL_PIN and not released yet, machine-wide (the
# per-CPU vmstat counters folded first).
pins() {
    echo 1 >/proc/sys/vm/stat_refresh 2>/dev/null || true
    awk '$1 == "nr_foll_pin_acquired" { a = $2; n++ }
         $1 == "nr_foll_pin_released" { r = $2; n++ }
         END { if (n == 2) print a - r; else print "<missing>" }' /proc/vmstat
}

# back_to_baseline WHAT [pins]: within 5 s, MicroV's free pool equals
# $POOL0 (unless the second argument says `pins`: pins only) and the pin
# count equals $PINS0 (the VMM's fds are released as it exits).
back_to_baseline() {
    local i=0 p n want
    while :; do
        p=$(pool_free)
        n=$(pins)
        want=$POOL0
        [ "${2:-}" != pins ] || want=$p
        [ "$p" = "$want" ] && [ "$n" = "$PINS0" ] && break
        i=$((i + 1))
        if [ $i -ge 50 ]; then
            [ "$p" = "$want" ] ||
                fail "$1: MicroV's free pool is $p bytes, expected its baseline $POOL0 (a VM, vCPU or mapping leaked in MicroV)"
            fail "$1: $n pages are still pinned, expected the baseline $PINS0 (the driver leaked pins)"
        fi
        sleep 0.1
    done
    if [ "${2:-}" = pins ]; then
        echo "  $1: pinned pages $n (baseline); free pool $p bytes"
    else
        echo "  $1: free pool $p bytes, pinned pages $n (baseline)"
    fi
}

# smoke_ok: mv-vm-smoke runs its guest and reports exactly the expected exits.
smoke_ok() {
    run timeout 120 mv-vm-smoke
    [ "$RUN_RC" -ne 3 ] ||
        fail "this MicroV does not serve micro VMs (vm.create answered NotImplemented: EOPNOTSUPP)"
    [ "$RUN_RC" -eq 0 ] || fail "mv-vm-smoke exited $RUN_RC"
    printf '%s\n' "$RUN_OUT" | grep -E '^(io|mmio|hlt|shutdown|fail_entry|unhandled|unknown)' >"$MVT_TMP/exits" || true
    cat >"$MVT_TMP/expected" <<'EOF'
io out port 0x3f8 size 1 data 0x4f
io out port 0x3f8 size 1 data 0x4b
io in port 0x3f8 size 1
io out port 0x3f8 size 1 data 0x5a
mmio write gpa 0xf0000
hlt
EOF
    cmp -s "$MVT_TMP/exits" "$MVT_TMP/expected" ||
        fail "the guest's exits differ from the expected ones: got [$(tr '\n' ';' <"$MVT_TMP/exits")]"
    out_has "mv-vm-smoke: ok" || fail "mv-vm-smoke did not report ok"
}

# abuse_ok: mv-vm-smoke abuse: every hostile request refused as documented.
abuse_ok() {
    must timeout 120 mv-vm-smoke abuse
    out_has "mv-vm-smoke: abuse ok" || fail "mv-vm-smoke abuse did not report ok"
}

check "start MicroV; note the pinned pages"
must microv start
expect_running_on_all
POOL0=$(pool_free)
PINS0=$(pins)
case "$POOL0" in '' | *[!0-9]*) fail "no pool.free_bytes in microv status --json ($POOL0)" ;; esac
[ "$PINS0" != "<missing>" ] || fail "/proc/vmstat has no nr_foll_pin_acquired/released"
echo "  at start: free pool $POOL0 bytes, pinned pages $PINS0"

check "a real-mode guest: out 'O', out 'K', in (answered 0x5a), out 0x5a, an MMIO write to 0xf0000, a hlt the driver holds until a signal"
smoke_ok
back_to_baseline "after the guest's VMM exited" pins

check "a hostile VMM: bad sizes, ranges, addresses, mmaps, fds; a second thread on a running vCPU; fds closed while it runs"
abuse_ok
back_to_baseline "after the hostile VMM exited" pins
kernel_healthy

# MicroV keeps some of what its first VMs and vCPUs allocated (tables that
# grow to the most VMs and vCPUs seen at once): the baseline is what is free
# now, and from here on every VM must give back all it took.
POOL0=$(pool_free)
echo "  baseline after the first VMs: free pool $POOL0 bytes, pinned pages $PINS0"

check "the same guest and the same hostile VMM again give MicroV's pool back to the byte"
smoke_ok
back_to_baseline "after the second guest's VMM exited"
abuse_ok
back_to_baseline "after the second hostile VMM exited"

check "a guest spinning with interrupts off (cli; jmp \$) on CPU 0"
workload_reference 20000
: >"$MVT_TMP/spin.out"
taskset -c 0 mv-vm-smoke spin >"$MVT_TMP/spin.out" 2>&1 &
SPIN=$!
wait_line "$MVT_TMP/spin.out" 'mv-vm-smoke: spinning' "$SPIN"
t0=$(cpu_ticks "$SPIN")
sleep 1
t1=$(cpu_ticks "$SPIN")
echo "  the VMM thread used $((t1 - t0)) ticks of CPU time in one second"
[ "$t1" -gt "$t0" ] || fail "the spinning guest's VMM thread used no CPU time: is the vCPU running?"
kill -0 "$SPIN" 2>/dev/null || fail "mv-vm-smoke spin died: $(cat "$MVT_TMP/spin.out")"

check "the root's own work completes on every CPU while the guest spins (CPU 0 included)"
start_s=$(date +%s)
workload_unchanged "while a micro VM spins on CPU 0"
for c in $(online_cpus); do
    timeout 120 taskset -c "$c" sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done' ||
        fail "a busy loop on CPU $c did not finish while the guest spins"
done
echo "  done in $(($(date +%s) - start_s)) s"
kill -0 "$SPIN" 2>/dev/null || fail "mv-vm-smoke spin died: $(cat "$MVT_TMP/spin.out")"
expect_running_on_all

check "microv stop is refused while the VM exists; MicroV keeps running"
run microv stop
[ "$RUN_RC" -ne 0 ] || fail "microv stop succeeded while a micro VM exists"
out_has "micro VMs are running" || fail "microv stop did not say micro VMs are running: $RUN_OUT"
expect_running_on_all
kill -0 "$SPIN" 2>/dev/null || fail "the refused stop ended the VMM: $(cat "$MVT_TMP/spin.out")"

check "microv status lists the VM with its VMM's pid (as the refusal's hint says)"
status_json
expect_eq "vm_count" "$(jget vm_count)" 1
expect_eq "vms.0.pid" "$(jget vms.0.pid)" "$SPIN"
expect_eq "vms.0.command" "$(jget vms.0.command)" mv-vm-smoke
expect_eq "vms.0.state" "$(jget vms.0.state)" live
n=$(jget vms.0.exits.interrupted)
[ "$n" -gt 0 ] || fail "the spinning VM's exits.interrupted is $n (host interrupts end its runs)"
echo "  vm $(jget vms.0.id) of pid $SPIN: $n interrupted runs, $(jget vms.0.exits_total) exits in all"

check "kill -9 of the VMM while its guest spins leaves nothing behind"
kill -9 "$SPIN"
rc=0
wait "$SPIN" || rc=$?
expect_eq "exit status of the killed VMM" "$rc" 137
back_to_baseline "after kill -9 of the VMM"
kernel_healthy

check "microv stop works once no VM exists"
must microv stop
out_has "every CPU is native" || fail "unexpected stop message: $RUN_OUT"
expect_state stopped

check "without MicroV the driver refuses VMs (ENODEV)"
run timeout 60 mv-vm-smoke
[ "$RUN_RC" -eq 1 ] || fail "mv-vm-smoke exited $RUN_RC without MicroV, expected 1"
out_has "MV_IOC_CREATE_VM" && out_has "ENODEV" || fail "mv-vm-smoke did not fail with ENODEV at CREATE_VM: $RUN_OUT"

check "a second start (the test extension) serves VMs again"
must microv start --extension /usr/lib/microv/microv-extension-test.elf
smoke_ok
back_to_baseline "after the guest on the second start" pins

check "MicroV fails (test-fault on CPU 1) while a guest spins on CPU 0 and another VM is held open"
: >"$MVT_TMP/spin2.out"
: >"$MVT_TMP/hold.out"
# The held VM first: it gets the id the next start's first VM will get too.
mv-vm-smoke hold >"$MVT_TMP/hold.out" 2>&1 &
HOLD=$!
wait_line "$MVT_TMP/hold.out" 'mv-vm-smoke: holding' "$HOLD"
taskset -c 0 mv-vm-smoke spin >"$MVT_TMP/spin2.out" 2>&1 &
SPIN=$!
wait_line "$MVT_TMP/spin2.out" 'mv-vm-smoke: spinning' "$SPIN"
sleep 1
must taskset -c 1 microv test-fault --cpu 1 --kind page-fault
rc=0
wait "$SPIN" || rc=$?
sed 's/^/  spin: /' "$MVT_TMP/spin2.out"
expect_eq "exit status of the spinning VMM after the failure" "$rc" 1
grep -q 'MV_IOC_VCPU_RUN: No such device' "$MVT_TMP/spin2.out" ||
    fail "the spinning VMM's RUN did not fail with ENODEV"
expect_not_running
kernel_healthy
status_json
expect_eq "vm_count after the failure (the held VM)" "$(jget vm_count)" 1
expect_eq "the held VM's pid" "$(jget vms.0.pid)" "$HOLD"
expect_eq "the held VM's state" "$(jget vms.0.state)" orphaned

check "the driver cannot be unloaded while a VM fd is open, even with MicroV gone"
run rmmod microv
[ "$RUN_RC" -ne 0 ] || fail "rmmod microv succeeded while mv-vm-smoke hold keeps a VM fd open"
grep -q '^microv ' /proc/modules || fail "microv.ko is gone while a VM fd is open"

check "MicroV starts again; the VM held across the failure never touches the new MicroV's VMs"
must microv start
expect_running_on_all
# The first VMs of this start settle MicroV's own tables (see above).
smoke_ok
abuse_ok
POOL0=$(pool_free)
: >"$MVT_TMP/spin3.out"
taskset -c 0 mv-vm-smoke spin >"$MVT_TMP/spin3.out" 2>&1 &
SPIN=$!
wait_line "$MVT_TMP/spin3.out" 'mv-vm-smoke: spinning' "$SPIN"
echo "  held (failed MicroV): $(grep -m1 '^mv-vm-smoke: vm' "$MVT_TMP/hold.out"); spinning (new MicroV): $(grep -m1 '^mv-vm-smoke: vm' "$MVT_TMP/spin3.out")"
# Ids start over with each MicroV: the held VM's calls and its teardown
# must not reach the new MicroV's VM of the same id.
kill -TERM "$HOLD"
wait "$HOLD" || fail "mv-vm-smoke hold exited $?: $(cat "$MVT_TMP/hold.out")"
sed 's/^/  hold: /' "$MVT_TMP/hold.out"
grep -q 'GET_REGS failed: No such device' "$MVT_TMP/hold.out" ||
    fail "GET_REGS on the VM of the failed MicroV did not fail with ENODEV"
grep -q 'RUN failed: No such device' "$MVT_TMP/hold.out" ||
    fail "RUN on the VM of the failed MicroV did not fail with ENODEV"
sleep 1
kill -0 "$SPIN" 2>/dev/null || fail "the new MicroV's guest died when the old VM closed: $(cat "$MVT_TMP/spin3.out")"
run microv stop
out_has "micro VMs are running" || fail "microv stop was not refused while the new guest runs: $RUN_OUT"
kill -9 "$SPIN"
wait "$SPIN" || true
back_to_baseline "after the new guest was killed"
must microv stop
expect_state stopped
kernel_healthy

echo "microvm-smoke: all checks passed"
