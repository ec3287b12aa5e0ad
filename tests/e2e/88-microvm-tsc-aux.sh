#!/bin/sh
# TSC_AUX belongs to whoever runs (ARCHITECTURE.md, "Micro VMs"): a tiny
# guest (mv-guest-elf tsc-aux) reads TSC_AUX with RDTSCP, RDPID and RDMSR
# before and after it writes its own value, then with RDTSCP and RDPID
# around a thousand exits to the VMM; it must see 0 (its reset value) and
# then its own value, never the root's CPU number, and a write with bits
# 63:32 set keeps the low 32 (as AMD CPUs do). The root's RDTSCP and RDPID (tsc-aux, pinned to
# each CPU) must give every CPU its own number before, between, during and
# after the guests. QEMU 7.2's TCG has no RDPID (not even with -cpu
# ...,+rdpid): on the emulated machine RDPID raises #UD in the root and the
# guest alike (CPUID says so to both), and RDTSCP, which TCG runs in a guest
# without its intercept, is the instruction that reads TSC_AUX with no exit.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

# RDPID: the number each CPU reads with it ("none" where CPUID says the
# CPU lacks it; the root and guests see the same bit).
if [ "$(( ($(cpuid-query 7 | sed -n 's/.*ecx=\(0x[0-9a-f]*\).*/\1/p') >> 22) & 1))" -eq 1 ]; then
    RDPID=yes
else
    RDPID=none
fi
echo "  RDPID on this CPU: $RDPID"

# root_own ROUNDS WHEN: on every CPU, RDTSCP (and RDPID) give that CPU's
# number ROUNDS times in a row.
root_own() {
    local pid
    must tsc-aux "$1"
    for c in $(online_cpus); do
        pid=$c
        [ "$RDPID" = yes ] || pid=none
        out_has "cpu $c rdpid=$pid rdtscp=$c mismatches=0" ||
            fail "$2: CPU $c does not read its own number from TSC_AUX"
    done
}

# guest_saw WHEN: the guest output in $RUN_OUT shows 0, then its own value.
guest_saw() {
    [ "$RUN_RC" -eq 0 ] || fail "$1: microv run exited $RUN_RC"
    for line in \
        "before rdtscp: ecx=00000000" \
        "rdmsr TSC_AUX: ok 0000000000000000" \
        "wrmsr TSC_AUX=100000005: ok" \
        "rdmsr TSC_AUX: ok 0000000000000005" \
        "wrmsr TSC_AUX=c0ffee: ok" \
        "rdmsr TSC_AUX: ok 0000000000C0FFEE" \
        "after rdtscp: ecx=00C0FFEE" \
        "tsc-aux: end"; do
        out_has "$line" || fail "$1: no '$line' in the guest's output"
    done
    if [ "$RDPID" = yes ]; then
        out_has "before rdpid: rax=0000000000000000" || fail "$1: RDPID did not read 0 first"
        out_has "after rdpid: rax=0000000000C0FFEE" || fail "$1: RDPID did not read the guest's value"
    else
        out_has "before rdpid: #UD at " || fail "$1: RDPID did not raise #UD on a CPU without it"
    fi
    ! out_has "rdtscp: #UD" || fail "$1: RDTSCP raised #UD"
    ! out_has "unexpected exception" || fail "$1: the guest took an unexpected exception"
}

check "natively, every CPU reads its own number with RDTSCP (and RDPID)"
root_own 1000 "natively"

must microv start
check "under MicroV, every CPU still reads its own number"
root_own 1000 "under MicroV"

check "the guest's CPUID shows RDTSCP as the root's does; RDTSCP reads its TSC_AUX (0)"
mv-guest-elf cpuid >"$MVT_TMP/cpuid.elf"
must timeout 120 microv run --kernel "$MVT_TMP/cpuid.elf" --mem 32M
edx=$(printf '%s\n' "$RUN_OUT" | sed -n 's/^cpuid 80000001 .* edx=\([0-9A-F]*\).*/\1/p')
[ $(((0x$edx >> 27) & 1)) -eq 1 ] || fail "CPUID 0x80000001 EDX.RDTSCP is clear in the guest"
out_has "rdtscp:  ecx=00000000" || fail "the guest's RDTSCP did not read its TSC_AUX (0)"
if [ "$RDPID" = yes ]; then
    out_has "rdpid:  rax=0000000000000000" || fail "the guest's RDPID did not read its TSC_AUX (0)"
else
    out_has "rdpid: #UD at " || fail "RDPID did not raise #UD on a CPU without it"
fi

mv-guest-elf tsc-aux 1000 >"$MVT_TMP/tsc-aux.elf"
for c in $(online_cpus); do
    check "a guest on CPU $c (root TSC_AUX $c) sees 0, then its own 0xC0FFEE through 1000 exits to the VMM"
    run taskset -c "$c" timeout 300 microv run --kernel "$MVT_TMP/tsc-aux.elf" --mem 32M
    guest_saw "on CPU $c"
    out_has "tsc-aux rounds: 3e8 mismatches=0000000000000000" ||
        fail "on CPU $c: the guest read something else than its value between exits"
    check "after the guest on CPU $c, every CPU reads its own number"
    root_own 1000 "after the guest on CPU $c"
done

check "while a guest runs on CPU 1 (20000 exits), the root on CPU 1 reads 1 every time"
mv-guest-elf tsc-aux 20000 >"$MVT_TMP/tsc-aux-long.elf"
taskset -c 1 timeout 600 microv run --kernel "$MVT_TMP/tsc-aux-long.elf" --mem 32M \
    >"$MVT_TMP/long.out" 2>&1 &
VMM=$!
rounds=0
while kill -0 "$VMM" 2>/dev/null; do
    out=$(tsc-aux 2000 1) || fail "tsc-aux on CPU 1 failed: $out"
    [ "$out" = "cpu 1 rdpid=$([ "$RDPID" = yes ] && echo 1 || echo none) rdtscp=1 mismatches=0" ] ||
        fail "the root on CPU 1 read another TSC_AUX while a guest ran there: $out"
    rounds=$((rounds + 1))
done
RUN_RC=0
wait "$VMM" || RUN_RC=$?
RUN_OUT=$(cat "$MVT_TMP/long.out")
echo "  root checks on CPU 1 while the guest ran: $rounds (2000 reads each)"
printf '%s\n' "$RUN_OUT" | grep -E "^(tsc-aux|after|before|rdmsr|wrmsr)" | sed 's/^/  | /'
guest_saw "the long guest"
out_has "tsc-aux rounds: 4e20 mismatches=0000000000000000" ||
    fail "the long guest read something else than its value between exits"
[ "$rounds" -gt 0 ] || fail "the root never checked CPU 1 while the guest ran"

must microv stop
check "after microv stop, every CPU reads its own number"
root_own 1000 "after microv stop"
echo "microvm-tsc-aux: all checks passed"
