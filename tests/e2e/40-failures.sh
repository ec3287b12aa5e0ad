#!/bin/sh
# MicroV refuses what it cannot do, says why, and leaves the machine as it
# was: a second start, a stop with nothing to stop, truncated and corrupt
# images, a pool too small, and a bring-up that fails on CPU 1 (after CPU 0
# started) or on CPU 0.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

KERNEL_ELF=/usr/lib/microv/microv-kernel.elf
# A failed start must give its pool back; allow for ordinary churn.
SLACK_KIB=$((16 * 1024))

# machine_fine WHAT: after a failure: MicroV not running, every CPU native,
# no memory kept, the kernel healthy.
machine_fine() {
    check "after $1: MicroV is not running, every CPU is native, no memory kept, kernel fine"
    expect_not_running
    native_everywhere
    free_now=$(mem_free_kib)
    [ "$free_now" -ge $((free_base - SLACK_KIB)) ] ||
        fail "after $1: MemFree is $free_now KiB, $((free_base - free_now)) KiB below the $free_base KiB before"
    kernel_healthy
}

# start_fails WHAT TEXT ARGS...: `microv start ARGS` exits 1 and says TEXT
# on stderr, with a hint.
start_fails() {
    what=$1
    text=$2
    shift 2
    check "$what: microv start $* fails and says \"$text\""
    RUN_RC=0
    microv start "$@" >"$MVT_TMP/out" 2>"$MVT_TMP/err" || RUN_RC=$?
    echo "  \$ microv start $* -> exit $RUN_RC"
    sed 's/^/  | /' "$MVT_TMP/out" "$MVT_TMP/err"
    expect_eq "$what: exit status" "$RUN_RC" 1
    grep -qF -- "$text" "$MVT_TMP/err" || fail "$what: stderr does not say \"$text\""
    grep -q '^microv: ' "$MVT_TMP/err" || fail "$what: no 'microv: ' error line on stderr"
    grep -q '^hint: ' "$MVT_TMP/err" || fail "$what: no 'hint: ' line on stderr"
    if grep -q 'started beneath' "$MVT_TMP/out"; then
        fail "$what: the failed start claims to have started"
    fi
}

check "MicroV is stopped after boot"
expect_state stopped
free_base=$(mem_free_kib)

# --- start twice ---------------------------------------------------------
check "start"
must microv start
expect_running_on_all

check "a second start fails with exit 1 and says already running"
run microv start
expect_eq "exit status of the second start" "$RUN_RC" 1
out_has "already running" || fail "second start did not say 'already running'"
out_has "hint: " || fail "second start gave no hint"

check "the first MicroV still runs on every CPU"
expect_running_on_all
for c in $(online_cpus); do
    microv_visible_on "$c" || fail "CPU $c lost MicroV after the refused second start"
done

check "stop works"
must microv stop
expect_state stopped
machine_fine "start twice"

# --- stop when not running ---------------------------------------------------
check "stop when not running fails with exit 1 and says not running"
run microv stop
expect_eq "exit status of stop when not running" "$RUN_RC" 1
out_has "not running" || fail "stop did not say 'not running'"
expect_state stopped
machine_fine "stop when not running"

# --- truncated image ---------------------------------------------------------
size=$(wc -c <"$KERNEL_ELF")
head -c $((size / 2)) "$KERNEL_ELF" >"$MVT_TMP/trunc.elf"
start_fails "truncated kernel image ($((size / 2)) of $size bytes)" "truncated" --kernel "$MVT_TMP/trunc.elf"
expect_state stopped
machine_fine "the truncated image"

# --- corrupt image -------------------------------------------------------------
# Flip one byte in the middle of the first PT_LOAD segment (the code).
[ "$(od -An -tu4 -j 64 -N 4 "$KERNEL_ELF" | tr -d ' ')" = 1 ] ||
    fail "$KERNEL_ELF: the first program header is not PT_LOAD"
seg_off=$(od -An -tu8 -j 72 -N 8 "$KERNEL_ELF" | tr -d ' ')
seg_size=$(od -An -tu8 -j 96 -N 8 "$KERNEL_ELF" | tr -d ' ')
at=$((seg_off + seg_size / 2))
cp "$KERNEL_ELF" "$MVT_TMP/corrupt.elf"
old=$(od -An -tu1 -j "$at" -N 1 "$MVT_TMP/corrupt.elf" | tr -d ' ')
new=$((old ^ 0xff))
printf "\\$(printf '%03o' "$new")" |
    dd of="$MVT_TMP/corrupt.elf" bs=1 seek="$at" count=1 conv=notrunc 2>/dev/null
got=$(od -An -tu1 -j "$at" -N 1 "$MVT_TMP/corrupt.elf" | tr -d ' ')
expect_eq "the flipped byte at offset $at" "$got" "$new"
cmp "$KERNEL_ELF" "$MVT_TMP/corrupt.elf" >/dev/null 2>&1 && fail "the corrupt copy equals the original"
[ "$(wc -c <"$MVT_TMP/corrupt.elf")" -eq "$size" ] || fail "the corrupt copy changed size"
echo "  flipped byte $at (segment at $seg_off, $seg_size bytes): $old -> $new"
start_fails "corrupt kernel image" "checksum" --kernel "$MVT_TMP/corrupt.elf"
expect_state stopped
machine_fine "the corrupt image"

# --- pool too small --------------------------------------------------------------
start_fails "a 2 MiB pool" "too small" --pool-size 2M
grep -q -- '--pool-size' "$MVT_TMP/err" || fail "the hint does not mention --pool-size"
expect_state stopped
machine_fine "the too-small pool"

# --- bring-up fails on CPU 1 --------------------------------------------------------
start_fails "bring-up failing on CPU 1" "CPU 1" --fail-cpu 1
status_json
echo "  last_error: code $(jget last_error.code) ($(jget last_error.name)), cpu $(jget last_error.cpu)"
expect_eq "last_error.cpu after --fail-cpu 1" "$(jget last_error.cpu)" 1
expect_eq "cpu_count after --fail-cpu 1" "$(jget cpu_count)" 0
machine_fine "--fail-cpu 1"

check "after --fail-cpu 1: a normal start runs on every CPU, and stop works"
must microv start
expect_running_on_all
for c in $(online_cpus); do
    microv_visible_on "$c" || fail "CPU $c does not show MicroV after the normal start"
done
must microv stop
expect_state stopped
machine_fine "the normal start after --fail-cpu"

# --- bring-up fails on CPU 0 (before any other CPU started) ----------------------
start_fails "bring-up failing on CPU 0" "CPU 0" --fail-cpu 0
status_json
expect_eq "last_error.cpu after --fail-cpu 0" "$(jget last_error.cpu)" 0
machine_fine "--fail-cpu 0"

check "Linux's KVM works (modprobe kvm_amd; kvm-smoke)"
kvm_works

echo "failures: all checks passed"
