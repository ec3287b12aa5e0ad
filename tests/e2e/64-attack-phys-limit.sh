#!/bin/sh
# Attack: root accesses far above RAM, at and beyond the top of the
# nested-paging map. MicroV maps guest-physical space for the root up to
# npt_limit = 2^min(phys_bits, 42) (2^39 without 1 GiB pages) at start, maps
# a faulting address below 2^phys_bits on demand (an `npf` exit) and gives
# #GP beyond it. The probe reads 16 bytes (ioremap below 2^phys_bits, a
# hand-built PTE at or above it) at: the last page below 2^phys_bits,
# half-way up, the nested-paging limit and 16 MiB above it, and 2^phys_bits
# (reserved PTE bits: #PF in the root itself). Natively first, then beneath
# MicroV, then after `microv stop`: each read must give the same answer
# every time (bytes or fault), MicroV must keep running, and every read
# above the limit must take a nested page fault (its `npf` count grows).
# QEMU's default phys-bits (40) puts nothing above the limit, so this test
# runs with 48 (1 TiB = 2^40 < npt_limit = 4 TiB < 2^48 = 256 TiB):
# e2e-qemu: -cpu EPYC,+svm,+npt,phys-bits=48
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "the workload natively, for reference"
workload_reference 50000
mvp_load

must_mvp info
bits=$(mvp_get phys_bits)
limit=$(mvp_get npt_limit)
top=$((1 << bits))
echo "  phys_bits=$bits (2^phys_bits = $(printf '0x%x' $top)), nested-paging limit $limit"
check "the machine has addresses above the nested-paging limit (the script's e2e-qemu header asks for phys-bits=48)"
[ $((limit)) -lt "$top" ] ||
    fail "phys_bits=$bits: every guest-physical address the root can form is below the nested-paging limit ($limit); QEMU did not get this script's -cpu ...,phys-bits=48 (a --qemu-arg=-cpu on the command line overrides it)"
[ $((limit)) -ge $((1 << 42)) ] ||
    fail "the nested-paging limit $limit is below 4 TiB: no 1 GiB pages? The reads above 4 TiB need them"
addrs="$(printf '0x%x' $((top - 4096))) $(printf '0x%x' $((top / 2)))"
# limit + 1 GiB: MicroV maps on demand a gigabyte at a time (where no pool
# chunk lies in it), so each address below must lie in its own gigabyte.
addrs="$addrs $(printf '0x%x' $((limit))) $(printf '0x%x' $((limit + 0x40000000)))"
addrs="$addrs $(printf '0x%x' $top)"
echo "  addresses: $addrs"

# above_limit PA: PA is at or above the nested-paging map and below
# 2^phys_bits: MicroV must map it on demand (a nested page fault).
above_limit() {
    [ $(($1)) -ge $((limit)) ] && [ $(($1)) -lt "$top" ]
}

# npf_total: sets NPF to the npf exits of every CPU, from a fresh status.
npf_total() {
    local c n
    status_json
    NPF=0
    for c in $(online_cpus); do
        n=$(cpu_field "$c" exits.npf)
        case "$n" in '' | *[!0-9]*) fail "CPU $c has no npf exit count in microv status --json ($n)" ;; esac
        NPF=$((NPF + n))
    done
}

# result_of PA: how the probe read PA and what it got, as one word.
result_of() {
    mvp phys pa="$1"
    [ "$MVP_RC" -eq 0 ] || fail "the probe refused to read $1: $MVP_OUT"
    echo "$(mvp_get how):$(mvp_get result):$(mvp_get hex)" >"$MVT_TMP/phys.res"
}

check "natively: read each address (the bare-metal answers)"
for a in $addrs; do
    result_of "$a"
    eval "native_$a=\$(cat \"\$MVT_TMP/phys.res\")"
done

check "start"
must microv start
expect_running_on_all
npf_total
npf_before=$NPF

for a in $addrs; do
    eval "want=\$native_$a"
    npf_total
    n0=$NPF
    if above_limit "$a"; then
        check "beneath MicroV: reading $a (above the $limit map, below 2^$bits) takes a nested page fault, MicroV maps it and the root gets the bare-metal answer ($want); MicroV keeps running"
    else
        check "beneath MicroV: reading $a gives the bare-metal answer ($want), MicroV keeps running"
    fi
    result_of "$a"
    expect_eq "the read at $a beneath MicroV" "$(cat "$MVT_TMP/phys.res")" "$want"
    npf_total
    n1=$NPF
    echo "  npf exits: $n0 -> $n1"
    if above_limit "$a"; then
        [ "$n1" -gt "$n0" ] ||
            fail "the read at $a, above the nested-paging map, took no nested page fault (npf $n0 -> $n1)"
    fi
    expect_running_on_all
    kernel_healthy
done
npf_total
npf_after=$NPF
echo "  nested page faults (npf exits) during the reads: $npf_before -> $npf_after"
check "the npf exit count grew (the reads above the map exited to MicroV)"
[ "$npf_after" -gt "$npf_before" ] || fail "no npf exit during the reads above the map ($npf_before -> $npf_after)"

after_attack "the reads above RAM" running

check "stop; the same reads natively again give the same answers"
must microv stop
expect_state stopped
for a in $addrs; do
    eval "want=\$native_$a"
    result_of "$a"
    expect_eq "the read at $a after stop" "$(cat "$MVT_TMP/phys.res")" "$want"
    if above_limit "$a"; then
        echo "  $a (at or above the $limit map): $want natively before start, beneath MicroV and after stop"
    fi
done
native_everywhere
kernel_healthy

echo "attack-phys-limit: all checks passed"
