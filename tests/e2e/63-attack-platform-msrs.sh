#!/bin/sh
# Attack: reprogram the platform through MSRs. The root kernel (mvprobe, CPU
# 1, interrupts off) reads each MSR below with rdmsr_safe and writes the
# value back with wrmsr_safe (PATCH_LOADER is write-only: it writes 0), so
# even a write that reaches the hardware changes nothing. Natively first:
# that also shows which of them the emulated CPU (TCG) implements. Beneath
# MicroV every one of these writes must exit to MicroV (CPU 1's `wrmsr` exit
# count grows, and so does the count the probe reads itself with interrupts
# off), and MicroV must keep running. At the end: Linux healthy, workload
# checksums unchanged, stop works.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

# MSR:name[:value to write instead of the value read]
MSRS="0x1b:APIC_BASE 0x200:MTRR_PHYSBASE0 0x201:MTRR_PHYSMASK0 0x2ff:MTRR_DEF_TYPE
0xc0010010:SYSCFG 0xc0010015:HWCR 0xc001001a:TOP_MEM 0xc001001d:TOP_MEM2
0xc0010016:IORR_BASE0 0xc0010017:IORR_MASK0 0xc0010112:SMM_ADDR
0xc0010020:PATCH_LOADER:0 0x1d9:DEBUGCTL 0xda0:XSS 0x10:TSC"

probe_args() {
    case "$1" in
    *:*:*) echo "msr=${1%%:*} value=${1##*:}" ;;
    *) echo "msr=${1%%:*}" ;;
    esac
}
name_of() {
    local rest=${1#*:}
    echo "${rest%%:*}"
}

check "the workload natively, for reference"
workload_reference 50000
mvp_load

check "natively: read and write back each MSR on CPU 1 (what the emulated CPU implements)"
for m in $MSRS; do
    must_mvp wrmsr cpu=1 $(probe_args "$m")
    eval "native_${m%%:*}=\"read=$(mvp_get read) write=$(mvp_get write)\""
done
echo "  natively (TCG):"
for m in $MSRS; do
    eval "echo \"    ${m%%:*} $(name_of "$m"): \$native_${m%%:*}\""
done

check "start; the probe gets the management handle"
must microv start
expect_running_on_all
mvp_need_handle

missing=
for m in $MSRS; do
    msr=${m%%:*}
    name=$(name_of "$m")
    before=$(exits_of 1 wrmsr)
    check "beneath MicroV: write $name ($msr) on CPU 1; MicroV keeps running"
    mvp wrmsr cpu=1 $(probe_args "$m")
    [ "$MVP_RC" -eq 0 ] || fail "the probe could not write $name: $MVP_OUT"
    after=$(exits_of 1 wrmsr)
    hv=$(mvp_get hv_wrmsr_exits)
    eval "nat=\$native_$msr"
    echo "  $name: read=$(mvp_get read) write=$(mvp_get write) (natively $nat); CPU 1 wrmsr exits $before -> $after; counted by the probe: $hv"
    if [ "$after" -lt $((before + 1)) ] || { [ "$hv" != n/a ] && [ "$hv" -lt 1 ]; }; then
        missing="$missing $name"
    fi
    expect_running_on_all
    kernel_healthy
done

check "every platform MSR write exited to MicroV (its wrmsr exit count grew)"
[ -z "$missing" ] || fail "these MSR writes took no exit:$missing"

after_attack "the platform MSR writes" running

check "stop works"
must microv stop
expect_state stopped
native_everywhere
kernel_healthy

echo "attack-platform-msrs: all checks passed"
