#!/bin/sh
# `microv run` on MicroV (the default backend): the VMM boots tiny 64-bit
# guests (mv-guest-elf) in long mode, as it boots a vmlinux. Each guest's
# serial output comes back on stdout; power-off and a keyboard-controller
# reset each end the command with status 0; an MMIO store to an address
# with no device is decoded by the VMM (iced-x86) and completed, and the
# guest carries on; string port I/O (rep/no rep, ins/outs, byte/word/
# dword, downwards, across pages) is emulated by the VMM; NMIs it sends
# itself arrive one at a time; a guest that spins with interrupts off is ended by
# SIGKILL of its VMM and leaves MicroV's pool as it was. Without MicroV
# `microv run` says so, with a hint.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

pool_free() {
    status_json
    jget pool.free_bytes
}

for kind in hello reset mmio spin nmi strings; do
    mv-guest-elf "$kind" >"$MVT_TMP/$kind.elf"
done

check "without MicroV, microv run refuses clearly"
run microv run --kernel "$MVT_TMP/hello.elf" --mem 32M
[ "$RUN_RC" -ne 0 ] || fail "microv run succeeded without MicroV"
out_has "MicroV is not running" || fail "no 'MicroV is not running' in the error"
out_has "hint: start it with \`microv start\`" || fail "no hint to start MicroV"

must microv start

check "a guest prints and powers off: exit 0, its output on stdout"
must timeout 60 microv run --kernel "$MVT_TMP/hello.elf" --mem 32M
out_has "hello from a micro VM" || fail "the guest's output is missing"
out_has "the guest powered off" || fail "no power-off report"
# The first VM builds the guests' permission maps, and a destroyed vCPU's
# pages wait for the next vCPU: from here on the pool must stay flat.
POOL0=$(pool_free)

check "a guest resets through the keyboard controller: exit 0"
must timeout 60 microv run --kernel "$MVT_TMP/reset.elf" --mem 32M
out_has "bye" || fail "the guest's output is missing"
out_has "keyboard controller reset" || fail "no reset report"

check "an MMIO store is decoded and completed by the VMM; the guest goes on"
must timeout 60 microv run --kernel "$MVT_TMP/mmio.elf" --mem 32M
out_has "after mmio" || fail "the guest did not carry on after its MMIO store"
out_has "mmio_write 1" || fail "the MMIO write was not counted once"

check "string port I/O: rep/no rep outs and ins, all widths, std, across pages, count 0, 32-bit addresses"
must timeout 60 microv run --kernel "$MVT_TMP/strings.elf" --mem 32M
expect_strings_guest
out_has "the guest powered off" || fail "no power-off report"

check "self-NMIs: each delivered once, never nested in the NMI handler, also with interrupts off"
must timeout 60 microv run --kernel "$MVT_TMP/nmi.elf" --mem 32M
out_has "nmi: delivered 0000000000000003 nested 0000000000000000" ||
    fail "not three NMIs one at a time: $(printf '%s\n' "$RUN_OUT" | grep '^nmi' | tr '\n' ';')"
out_has "nmi: end" || fail "the guest did not finish"

check "the pool is back to its baseline after four more VMs"
expect_eq "free pool bytes" "$(pool_free)" "$POOL0"

check "a guest spinning with interrupts off: the root keeps working, SIGKILL ends it"
microv run --kernel "$MVT_TMP/spin.elf" --mem 32M >"$MVT_TMP/spin.out" 2>&1 &
VMM=$!
sleep 1
kill -0 "$VMM" 2>/dev/null || fail "the spinning guest's VMM ended on its own: $(cat "$MVT_TMP/spin.out")"
must workload "$MVT_TMP/w" 20000
kill -9 "$VMM"
wait "$VMM" 2>/dev/null || true
i=0
while [ "$(pool_free)" != "$POOL0" ]; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "the pool did not return to its baseline after kill -9: $(pool_free) != $POOL0"
    sleep 0.1
done
echo "  pool back to $POOL0 bytes free"

must microv stop
echo "microvm-run: all checks passed"
