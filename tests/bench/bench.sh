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

EXIT_CASES="hypercall cpuid pio mmio"
BOOT_CASE=linux-boot
case "$ONLY" in
'') ;;
hypercall | cpuid | pio | mmio) EXIT_CASES=$ONLY; BOOT_CASE= ;;
linux-boot) EXIT_CASES= ;;
*) echo "bench: unknown case $ONLY (hypercall, cpuid, pio, mmio, linux-boot)" >&2; exit 2 ;;
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
    if [ -z "$SYMBOLS" ]; then
        microv run --backend "$1" --kernel "$T/$3.elf" --mem 32M </dev/null >"$out" 2>&1 ||
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

# backend BACKEND: every case REPEATS times, repeat by repeat.
backend() {
    rep=1
    while [ "$rep" -le "$REPEATS" ]; do
        for c in $EXIT_CASES; do
            exit_case "$1" "$rep" "$c"
        done
        [ -z "$BOOT_CASE" ] || linux_boot "$1" "$rep"
        rep=$((rep + 1))
    done
}

if [ -n "$SYMBOLS" ]; then
    # Text symbols only (the profile maps code addresses): about 3 MB.
    echo "bench: kernel symbols to $SYMBOLS"
    grep '^[0-9a-f]* [tTwW] ' /proc/kallsyms | sed 's/^/kallsyms /' >>"$SYMBOLS"
fi

if [ "$BACKEND" != kvm ]; then
    echo "bench: MicroV (repeats $REPEATS, iterations $ITERATIONS)"
    microv start
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
