#!/bin/sh
# The in-machine half of `cargo xtask bench` (docs/benchmarks.md): runs every
# case under MicroV, then under Linux's KVM with the same VMM and the same
# guests (`microv run --backend kvm`), in one boot of the emulated machine
# (xtask boots it under `-icount shift=0,sleep=off` with one CPU, so the TSC
# counts instructions). Installed as /usr/lib/microv-tests/bench.sh.
#
#   bench.sh [--quick] [--repeats K] [--iterations N] [--only CASE]
#            [--backend microv|kvm] [--symbols FILE]
#
# --repeats K runs each case K times on each backend (default 2; --quick is
# --repeats 1); --iterations N is the exit cases' loop count (default 1000).
# --only CASE runs just that case (an exit case, or linux-boot), --backend B
# just that backend. --symbols FILE is for `cargo xtask bench --profile`
# (FILE is a serial port that QEMU writes to a host file): it writes there
# what maps the profile's addresses to symbols: the root kernel's text
# symbols from /proc/kallsyms (`kallsyms ADDR TYPE NAME [MODULE]`, the
# driver's included; KASLR moves them every boot) and, for each exit case
# run, the VMM's mappings of /usr/bin/microv (`maps START-END PERMS OFFSET
# ... PATH`, polled from /proc/PID/maps as it starts: a static PIE lands at
# a random address), then `end`.
#
# Besides the exit cases and the Linux boot (on both backends), unless
# --only is given:
#
#   workload           WORKLOAD_JOB (a fixed busybox pipeline) timed by
#                      `mv-bench-guest time`: in the Linux guest on each
#                      backend (`mvguest.bench=`, guest-init.sh; the guest's
#                      TSC), and in the root with MicroV stopped (tagged
#                      backend=native; the root's TSC)
#   root-workload      the same job in the root beneath MicroV with no VM
#                      (backend=microv)
#   vm-create-destroy  `mv-bench-vm create-destroy`: an empty 256 MiB VM with
#                      one vCPU, VM_ITERATIONS times, on each backend
#   root-exits-idle, root-exits-busy, memory
#                      MicroV only, read from `microv status --json`, printed
#                      as `MVBENCH-STAT backend=microv rep=R case=C key=value…`:
#                      the root's exits (all CPUs, `exits`; `vmmcall` of them
#                      are hypercalls, mostly the status reads themselves)
#                      over `ns` of MicroV's uptime while the root sleeps
#                      IDLE_S seconds, and during mv-sysbench (`syscalls`);
#                      the pool's size and free bytes once started, before
#                      and with a VM of 256 MiB and 1 vCPU, before and with
#                      one of 2 vCPUs, and after
#
# Prints each guest's result tagged with its backend and repeat:
#
#   MVBENCH backend=microv rep=1 case=pio iterations=1000 tsc=0x… …
#
# (the guest's own fields after rep=; mv-bench-guest's comment has them),
# and `MVBENCH-ERROR backend=B rep=R case=C: why` plus the run's output for
# a run that gave no figure. xtask parses these lines off the console.
# Exits 0 when every run gave its figures.
set -eu

REPEATS=2
# Emulated seconds a guest run may take (a boot and the workload take ~8).
GUEST_TIMEOUT_S=300
ITERATIONS=1000
ONLY=
BACKEND=
SYMBOLS=
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) REPEATS=1 ;;
    --repeats) REPEATS=$2; shift ;;
    --iterations) ITERATIONS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --backend) BACKEND=$2; shift ;;
    --symbols) SYMBOLS=$2; shift ;;
    *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

EXIT_CASES="hypercall cpuid pio mmio timer halt-wake"
BOOT_CASE=linux-boot
# The cases beyond the exits and the boot (none with --only).
EXTRA=yes
case "$ONLY" in
'') ;;
hypercall | cpuid | pio | mmio | timer | halt-wake) EXIT_CASES=$ONLY; BOOT_CASE=; EXTRA= ;;
linux-boot) EXIT_CASES=; EXTRA= ;;
*) echo "bench: unknown case $ONLY (hypercall, cpuid, pio, mmio, timer, halt-wake, linux-boot)" >&2; exit 2 ;;
esac
case "$BACKEND" in
'' | microv | kvm) ;;
*) echo "bench: unknown backend $BACKEND (microv, kvm)" >&2; exit 2 ;;
esac
GUEST=/usr/lib/microv-tests/guest
# The tests' Linux guest as e2e-lib.sh boots it, `quiet` so the kernel's
# boot messages (each byte a port write to the VMM) do not dominate.
BOOT_CMDLINE='console=ttyS0 reboot=k panic=1 quiet'
T=/tmp/bench
mkdir -p "$T"
failures=0
# The workload: CPU- and memory-bound, a fixed input, busybox only (the same
# static busybox in the root and in the guest). guest-init.sh's
# mvguest.bench=N runs exactly this with N = WORKLOAD_N.
WORKLOAD_N=200000
WORKLOAD_JOB="busybox seq 1 $WORKLOAD_N | busybox gzip -c | busybox sha256sum"
# vm-create-destroy's count (after one warm-up), and how long the root
# sleeps for its idle exits, and the syscall load of its busy ones.
VM_ITERATIONS=5
IDLE_S=2
SYS_GETPPID=200000
SYS_PINGPONG=20000

for c in $EXIT_CASES; do
    mv-bench-guest "$c" "$ITERATIONS" >"$T/$c.elf"
done

# report BACKEND REP CASE OUT: the run's MVBENCH lines, tagged, or an error;
# then `microv run`'s closing line (why the VM stopped, its exits by kind)
# and the size of the run's output, which tell where a figure's
# instructions went.
report() {
    bytes=$(wc -c <"$4")
    grep '^microv: ' "$4" | sed "s/^microv: /bench: $1 rep=$2 $3: /; s/\$/; $bytes bytes of output/" || true
    if grep -q '^MVBENCH ' "$4"; then
        grep '^MVBENCH ' "$4" | sed "s/^MVBENCH /MVBENCH backend=$1 rep=$2 /"
    else
        echo "MVBENCH-ERROR backend=$1 rep=$2 case=$3: no figure; its output:"
        sed 's/^/  | /' "$4"
        failures=$((failures + 1))
    fi
}

# exit_case BACKEND REP CASE
exit_case() {
    out="$T/$1-$2-$3.out"
    # A failed run still reports whatever figure it printed.
    # (timeout: a timer case whose interrupt never came would wait forever)
    if [ -z "$SYMBOLS" ]; then
        timeout "$GUEST_TIMEOUT_S" microv run --backend "$1" --kernel "$T/$3.elf" --mem 32M </dev/null >"$out" 2>&1 ||
            echo "bench: microv run --backend $1 ($3) exited $?" >>"$out"
    else
        microv run --backend "$1" --kernel "$T/$3.elf" --mem 32M </dev/null >"$out" 2>&1 &
        pid=$!
        vmm_maps "$pid"
        wait "$pid" || echo "bench: microv run --backend $1 ($3) exited $?" >>"$out"
    fi
    report "$1" "$2" "$3" "$out"
}

# vmm_maps PID: once PID has exec'd /usr/bin/microv, its mappings of it
# (for --symbols); polls every 10 ms, then leaves the CPU to the run.
vmm_maps() {
    while kill -0 "$1" 2>/dev/null; do
        if grep -q ' /usr/bin/microv$' "/proc/$1/maps" 2>/dev/null; then
            grep ' /usr/bin/microv$' "/proc/$1/maps" | sed 's/^/maps /' >>"$SYMBOLS"
            return
        fi
        sleep 0.01
    done
}

# linux_boot BACKEND REP: the root's TSC from `microv run` starting to the
# guest init's first line, and to the VMM's exit after the guest's poweroff.
linux_boot() {
    out="$T/$1-$2-linux-boot.out"
    mv-bench-guest stamp linux-boot-init MICROV-GUEST-INIT linux-boot-exit \
        microv run --backend "$1" --kernel "$GUEST/vmlinuz" --initrd "$GUEST/initrd.cpio" \
        --mem 256M --cmdline "$BOOT_CMDLINE" </dev/null >"$out" 2>&1 || true
    if ! grep -q '^MVBENCH case=linux-boot-init ' "$out"; then
        echo "MVBENCH-ERROR backend=$1 rep=$2 case=linux-boot-init: the guest's init never printed"
        failures=$((failures + 1))
    fi
    report "$1" "$2" linux-boot "$out"
}

# clean OUT: OUT without the CRs a guest's serial console adds.
clean() {
    tr -d '\r' <"$1" >"$1.clean"
    mv "$1.clean" "$1"
}

# guest_workload BACKEND REP: the workload in the Linux guest, timed by the
# guest (`mvguest.bench=`).
guest_workload() {
    out="$T/$1-$2-workload.out"
    tries=0
    while :; do
        tries=$((tries + 1))
        timeout "$GUEST_TIMEOUT_S" microv run --backend "$1" --kernel "$GUEST/vmlinuz" \
            --initrd "$GUEST/initrd.cpio" --mem 256M \
            --cmdline "$BOOT_CMDLINE mvguest.bench=$WORKLOAD_N" </dev/null >"$out" 2>&1 ||
            echo "bench: microv run --backend $1 (workload) exited $?" >>"$out"
        # KVM nested in QEMU's SVM now and then leaves a guest idle for good
        # (vmm/README.md): one more try, said out loud.
        if grep -q '^MVBENCH ' "$out" || [ "$1" != kvm ] || [ $tries -ge 2 ]; then
            break
        fi
        echo "bench: $1 rep=$2 workload: no figure within $GUEST_TIMEOUT_S s; trying once more"
    done
    clean "$out"
    report "$1" "$2" workload "$out"
}

# root_workload TAG REP CASE: the workload in the root, timed by the root.
root_workload() {
    out="$T/$1-$2-$3.out"
    mv-bench-guest time "$3" sh -c "$WORKLOAD_JOB" >"$out" 2>&1 || true
    report "$1" "$2" "$3" "$out"
}

native_workload() { root_workload native "$1" workload; }
beneath_workload() { root_workload microv "$1" root-workload; }

# vm_create BACKEND REP
vm_create() {
    out="$T/$1-$2-vm-create-destroy.out"
    mv-bench-vm create-destroy "$1" "$VM_ITERATIONS" >"$out" 2>&1 || true
    report "$1" "$2" vm-create-destroy "$out"
}

# json_num FILE KEY...: each KEY's first number in `microv status --json`
# output FILE, space-separated (empty if absent).
json_num() {
    f=$1
    shift
    for k in "$@"; do
        grep -o "\"$k\": *[0-9]*" "$f" | head -n 1 | sed 's/.*: *//'
    done | tr '\n' ' '
}

# exits FILE: "EXITS VMMCALL UPTIME_NS" of a status: exits summed over the
# CPUs (no VM exists while this is read, so every exits_total is a CPU's).
exits() {
    e=$(grep -o '"exits_total": *[0-9]*' "$1" | awk '{ t += $NF } END { print t + 0 }')
    v=$(grep -o '"vmmcall": *[0-9]*' "$1" | awk '{ t += $NF } END { print t + 0 }')
    echo "$e $v $(json_num "$1" uptime_ns)"
}

# stat_line REP CASE PROBE0 PROBE1 BEFORE AFTER [MORE]: the MVBENCH-STAT
# line of the exits between two statuses, less those of the probe: the same
# pair of statuses around `sleep 0`. Starting a program (`microv status`,
# `sleep`, the C library's CPUID at start-up) takes exits of its own, which
# are the measurement's, not the root's at rest.
stat_line() {
    set -- "$1" "$2" "$(exits "$3")" "$(exits "$4")" "$(exits "$5")" "$(exits "$6")" "${7:-}"
    echo "$3 $4 $5 $6" | awk -v rep="$1" -v c="$2" -v more="$7" '{
        if ($3 == "" || $6 == "" || $9 == "" || $12 == "") { print "MVBENCH-ERROR backend=microv rep=" rep " case=" c ": no uptime_ns in microv status --json"; exit }
        pe = $4 - $1; pv = $5 - $2; pn = $6 - $3
        m = $10 - $7; e = m - pe; v = ($11 - $8) - pv
        # The probe can take a few more exits than the measured pair did
        # (programs start with slightly different work): none at rest.
        if (e < 0) e = 0
        if (v < 0) v = 0
        printf "MVBENCH-STAT backend=microv rep=%s case=%s exits=%d vmmcall=%d ns=%d measured_exits=%d probe_exits=%d%s\n", rep, c, e, v, ($12 - $9) - pn, m, pe, more
    }'
}

# root_exits REP: exits of the root beneath MicroV (no VM), idle and busy.
root_exits() {
    microv status --json >"$T/p0.json"
    sleep 0
    microv status --json >"$T/p1.json"
    microv status --json >"$T/s0.json"
    sleep "$IDLE_S"
    microv status --json >"$T/s1.json"
    stat_line "$1" root-exits-idle "$T/p0.json" "$T/p1.json" "$T/s0.json" "$T/s1.json"
    microv status --json >"$T/s2.json"
    { mv-sysbench getppid "$SYS_GETPPID" && mv-sysbench pingpong "$SYS_PINGPONG"; } >"$T/sys.out" 2>&1 ||
        echo "MVBENCH-ERROR backend=microv rep=$1 case=root-exits-busy: mv-sysbench failed: $(cat "$T/sys.out")"
    microv status --json >"$T/s3.json"
    sys=$(sed -n 's/.*syscalls=\([0-9]*\).*/\1/p' "$T/sys.out" | awk '{ t += $1 } END { print t + 0 }')
    stat_line "$1" root-exits-busy "$T/p0.json" "$T/p1.json" "$T/s2.json" "$T/s3.json" " syscalls=$sys"
}

# held VCPUS: "FREE_BEFORE FREE_DURING", MicroV's free pool bytes just
# before a VM of 256 MiB and VCPUS vCPUs is created and while it is held.
held() {
    microv status --json >"$T/hold0.json"
    : >"$T/hold.out"
    mv-bench-vm hold "$1" >"$T/hold.out" 2>&1 &
    pid=$!
    n=0
    while ! grep -q holding "$T/hold.out" && kill -0 "$pid" 2>/dev/null && [ $n -lt 600 ]; do
        sleep 0.05
        n=$((n + 1))
    done
    microv status --json >"$T/hold1.json"
    kill "$pid" 2>/dev/null || true
    wait "$pid" || true
    if grep -q holding "$T/hold.out"; then
        echo "$(json_num "$T/hold0.json" free_bytes)$(json_num "$T/hold1.json" free_bytes)"
    else
        sed 's/^/bench: mv-bench-vm hold: /' "$T/hold.out" >&2
    fi
}

# memory REP: MicroV's pool: its size and free bytes once started; the free
# bytes before and with a held VM of 1 vCPU, then of 2 vCPUs, each in a
# MicroV started afresh (MicroV keeps a destroyed VM's vCPU pages for the
# next one, and the first VM builds the guests' permission maps: each VM is
# the first of its MicroV); the free bytes after the second.
memory() {
    microv stop >/dev/null
    microv start >/dev/null
    microv status --json >"$T/m0.json"
    base=$(json_num "$T/m0.json" bytes free_bytes)
    one=$(held 1)
    microv stop >/dev/null
    microv start >/dev/null
    two=$(held 2)
    microv status --json >"$T/m1.json"
    after=$(json_num "$T/m1.json" free_bytes)
    # shellcheck disable=SC2086 # the words are numbers
    set -- "$1" $base $one $two $after
    if [ $# -eq 8 ]; then
        echo "MVBENCH-STAT backend=microv rep=$1 case=memory pool_bytes=$2 free_started=$3" \
            "free_before_1vcpu=$4 free_vm_1vcpu=$5 free_before_2vcpus=$6 free_vm_2vcpus=$7 free_after=$8"
    else
        echo "MVBENCH-ERROR backend=microv rep=$1 case=memory: the pool could not be read ($*)"
        failures=$((failures + 1))
    fi
}

# backend BACKEND: every case REPEATS times, repeat by repeat.
backend() {
    rep=1
    while [ "$rep" -le "$REPEATS" ]; do
        for c in $EXIT_CASES; do
            exit_case "$1" "$rep" "$c"
        done
        [ -z "$BOOT_CASE" ] || linux_boot "$1" "$rep"
        if [ -n "$EXTRA" ]; then
            guest_workload "$1" "$rep"
            vm_create "$1" "$rep"
        fi
        rep=$((rep + 1))
    done
}

# repeat FUNCTION ARG...: FUNCTION REP ARG... for every repeat.
repeat() {
    f=$1
    shift
    r=1
    while [ "$r" -le "$REPEATS" ]; do
        "$f" "$r" "$@"
        r=$((r + 1))
    done
}

if [ -n "$SYMBOLS" ]; then
    # Text symbols only (the profile maps code addresses): about 3 MB.
    echo "bench: kernel symbols to $SYMBOLS"
    grep '^[0-9a-f]* [tTwW] ' /proc/kallsyms | sed 's/^/kallsyms /' >>"$SYMBOLS"
fi

if [ "$BACKEND" != kvm ]; then
    if [ -n "$EXTRA" ]; then
        echo "bench: the workload in the root, natively (MicroV stopped)"
        sh -c "$WORKLOAD_JOB" >/dev/null # warm-up
        repeat native_workload
    fi
    echo "bench: MicroV (repeats $REPEATS, iterations $ITERATIONS)"
    microv start
    if [ -n "$EXTRA" ]; then
        repeat memory
        sh -c "$WORKLOAD_JOB" >/dev/null # warm-up
        repeat beneath_workload
        repeat root_exits
    fi
    backend microv
    microv stop
fi

if [ "$BACKEND" != microv ]; then
    echo "bench: KVM (kvm_amd)"
    modprobe kvm_amd
    backend kvm
    rmmod kvm_amd
fi

[ -z "$SYMBOLS" ] || echo end >>"$SYMBOLS"
echo "bench: done, $failures run(s) without a figure"
[ "$failures" -eq 0 ]
