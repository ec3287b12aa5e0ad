#!/bin/sh
# Four Linux micro VMs at once on the 2-CPU machine (128 MiB each): every one
# boots to its init, computes the root's checksum and powers off with
# status 0; `microv status` lists four VMs while they run, and none after;
# MicroV's free pool is then exactly where four tiny guests at once left it.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

N=20000
REF=$(seq 1 $N | sha256sum | cut -d' ' -f1)
MVT_GUEST_TIMEOUT=600
MVT_GUEST_MEM=128M

pool_free() {
    status_json
    jget pool.free_bytes
}

# vms: how many VMs microv status lists.
vms() {
    microv status | sed -n 's/^vms *//p'
}

# wait_vms N TENTHS WHY: until microv status lists N VMs, polling every
# 0.1 s for at most TENTHS polls; else fail with WHY.
wait_vms() {
    i=0
    until [ "$(vms)" = "$1" ]; do
        i=$((i + 1))
        [ $i -lt "$2" ] || fail "$3 (last: $(vms) VMs)$(microv status | sed -n '/^ *vm /,$p')"
        sleep 0.1
    done
}

# spinning G: tiny guest G printed its line, so its vCPU exists and runs.
spinning() {
    grep -qF "spin: start" "$MVT_TMP/tiny$1.out"
}

must microv start
# The first VM builds the guests' permission maps, and a destroyed vCPU's
# pages wait for the next vCPU (the pool's use plateaus at the most vCPUs
# ever alive at once): take the baseline after four spinning tiny guests
# have run at the same time, so the pool already holds four vCPU states'
# pages. A VM is listed as soon as it is created, before its VMM has mapped
# its memory and created its vCPU: wait until each guest has printed.
mv-guest-elf spin >"$MVT_TMP/spin.elf"
pids=""
for g in 1 2 3 4; do
    microv run --kernel "$MVT_TMP/spin.elf" --mem 32M >"$MVT_TMP/tiny$g.out" 2>&1 &
    pids="$pids $!"
done
wait_vms 4 200 "four spinning tiny guests never ran at once"
n=0
for g in 1 2 3 4; do
    if spinning $g; then n=$((n + 1)); fi
done
echo "  when microv status first listed 4 VMs, $n of the tiny guests had run"
i=0
until spinning 1 && spinning 2 && spinning 3 && spinning 4; do
    i=$((i + 1))
    [ $i -lt 300 ] || fail "the four tiny guests never all ran: $(cat "$MVT_TMP"/tiny?.out)"
    sleep 0.1
done
# shellcheck disable=SC2086 # a list of pids
kill -9 $pids
wait 2>/dev/null || true
wait_vms 0 100 "the spinning tiny guests did not go away"
POOL0=$(pool_free)
echo "  baseline after four tiny guests at once: $POOL0 bytes free"

check "four guests at once"
for g in g1 g2 g3 g4; do
    guest_start "$g" "mvguest.sum=$N"
    sleep 1
done
wait_vms 4 200 "microv status never listed 4 VMs"
echo "  microv status lists 4 VMs"
microv status | sed -n '/^ *vm /,$p'
for g in g1 g2 g3 g4; do
    guest_wait "$g" "MICROV-GUEST-END"
done
for g in g1 g2 g3 g4; do
    guest_finish "$g" >/dev/null
    [ "$GUEST_RC" -eq 0 ] || fail "guest $g: microv run exited $GUEST_RC"
    expect_eq "guest $g's checksum" "$(guest_line "$g" MICROV-SUM: | cut -d' ' -f2)" "$REF"
    if grep -qE 'BUG:|Oops|Kernel panic' "$MVT_TMP/$g.out"; then
        fail "guest $g's kernel complained$(guest_crash "$g")"
    fi
    echo "  guest $g: checksum $REF, powered off, exited 0"
done

check "no VM is left; MicroV's free pool is back at the baseline four tiny guests left"
wait_vms 0 50 "VMs still listed after every VMM ended"
expect_eq "free pool bytes after four Linux guests" "$(pool_free)" "$POOL0"
echo "  free pool: $POOL0 bytes, as after four tiny guests"
must microv stop
echo "microvm-four: all checks passed"
