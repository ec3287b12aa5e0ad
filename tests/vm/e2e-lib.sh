# Shared shell functions for the end-to-end scripts in tests/e2e/.
# Installed in the machine at /usr/lib/microv-tests/e2e-lib.sh (see
# xtask/src/test_tools.rs); a script sources it with
#   . /usr/lib/microv-tests/e2e-lib.sh
# busybox sh; every function is safe under `set -eu`.

MVT_DIR=/usr/lib/microv-tests
MVT_TMP=${TMPDIR:-/tmp}/mvt
mkdir -p "$MVT_TMP"

# check TEXT: announces one assertion.
check() {
    echo "check: $*"
}

# fail WHY: the test failed; prints the reason and a little state, exits 1.
fail() {
    echo "FAIL: $*"
    echo "---- microv status (at failure) ----"
    microv status 2>&1 || true
    echo "---- last kernel messages ----"
    dmesg | tail -n 25 || true
    exit 1
}

# run CMD...: runs CMD with stdout+stderr captured; sets $RUN_OUT and
# $RUN_RC (never fails itself) and echoes both, indented, for the log.
run() {
    RUN_RC=0
    RUN_OUT=$("$@" 2>&1) || RUN_RC=$?
    echo "  \$ $* -> exit $RUN_RC"
    if [ -n "$RUN_OUT" ]; then
        printf '%s\n' "$RUN_OUT" | sed 's/^/  | /'
    fi
}

# must CMD...: runs CMD (captured as with run) and fails the test unless it
# exits 0.
must() {
    run "$@"
    [ "$RUN_RC" -eq 0 ] || fail "\`$*\` exited $RUN_RC"
}

# out_has TEXT: $RUN_OUT contains TEXT (fixed string, case-sensitive).
out_has() {
    printf '%s\n' "$RUN_OUT" | grep -qF -- "$1"
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
    [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"
}

# json_flatten: reads JSON on stdin and prints one `path=value` line per
# scalar: `state=running`, `cpus.0.exits.cpuid=12`, `fault=null`,
# `cpus.length=2`. Strings lose their quotes; newlines in them become spaces.
json_flatten() {
    awk '
    function fatal(why) { print "json_flatten: " why " at offset " pos > "/dev/stderr"; bad = 1; exit 1 }
    function ws() { while (pos <= n && index(" \t\r\n", substr(s, pos, 1)) > 0) pos++ }
    function str(   out, c) {
        if (substr(s, pos, 1) != "\"") fatal("expected a string")
        pos++; out = ""
        while (1) {
            if (pos > n) fatal("unterminated string")
            c = substr(s, pos, 1)
            if (c == "\"") break
            if (c == "\\") {
                pos++; c = substr(s, pos, 1)
                if (c == "n" || c == "r" || c == "t") c = " "
                else if (c == "u") { c = "?"; pos += 4 }
            }
            out = out c; pos++
        }
        pos++
        return out
    }
    function value(path,   c, k, i, p) {
        ws()
        if (pos > n) fatal("unexpected end")
        c = substr(s, pos, 1)
        if (c == "{") {
            pos++; ws()
            if (substr(s, pos, 1) == "}") { pos++; print path "={}"; return }
            while (1) {
                ws(); k = str(); ws()
                if (substr(s, pos, 1) != ":") fatal("expected :")
                pos++
                if (path == "") p = k; else p = path "." k
                value(p); ws()
                c = substr(s, pos, 1); pos++
                if (c == "}") return
                if (c != ",") fatal("expected , or }")
            }
        }
        if (c == "[") {
            pos++; ws(); i = 0
            if (substr(s, pos, 1) == "]") { pos++; print path ".length=0"; return }
            while (1) {
                value(path "." i); i++; ws()
                c = substr(s, pos, 1); pos++
                if (c == "]") { print path ".length=" i; return }
                if (c != ",") fatal("expected , or ]")
            }
        }
        if (c == "\"") { print path "=" str(); return }
        k = ""
        while (pos <= n) {
            c = substr(s, pos, 1)
            if (index(",}] \t\r\n", c) > 0) break
            k = k c; pos++
        }
        if (k == "") fatal("expected a value")
        print path "=" k
    }
    { s = s $0 "\n" }
    END {
        if (bad) exit 1
        n = length(s); pos = 1
        value("")
    }'
}

# status_json: runs `microv status --json` into $MVT_TMP/status.json and its
# flattened form into $MVT_TMP/status.flat (see json_flatten); fails the test
# if either step fails.
status_json() {
    microv status --json >"$MVT_TMP/status.json" 2>"$MVT_TMP/status.err" ||
        fail "microv status --json exited $?: $(cat "$MVT_TMP/status.err")"
    json_flatten <"$MVT_TMP/status.json" >"$MVT_TMP/status.flat" ||
        fail "microv status --json printed something that is not JSON: $(cat "$MVT_TMP/status.json")"
    grep -q '^state=' "$MVT_TMP/status.flat" ||
        fail "microv status --json has no state field: $(cat "$MVT_TMP/status.json")"
}

# jget KEY: one field of the last status_json (`cpus.1.state`); prints
# `<missing>` if there is no such field.
jget() {
    local v
    v=$(grep -m1 "^$1=" "$MVT_TMP/status.flat" | cut -d= -f2-) || true
    if grep -q "^$1=" "$MVT_TMP/status.flat"; then
        printf '%s\n' "$v"
    else
        printf '<missing>\n'
    fi
}

# cpu_field OSCPU FIELD: prints FIELD (`state`, `exits.cpuid`) of the
# cpus[] entry of the last status_json whose os_cpu is OSCPU, or <missing>.
cpu_field() {
    local n i
    n=$(jget cpus.length)
    case "$n" in '' | *[!0-9]*) n=0 ;; esac
    i=0
    while [ "$i" -lt "$n" ]; do
        if [ "$(jget cpus.$i.os_cpu)" = "$1" ]; then
            jget "cpus.$i.$2"
            return 0
        fi
        i=$((i + 1))
    done
    echo '<missing>'
}

# expect_state STATE: `microv status --json` says STATE.
expect_state() {
    status_json
    expect_eq "microv status --json state" "$(jget state)" "$1"
}

# expect_running_on_all: running, cpu_count equals the number of online
# CPUs, and each of them is running.
expect_running_on_all() {
    local ncpu c
    status_json
    ncpu=$(grep -c '^processor' /proc/cpuinfo)
    expect_eq "state" "$(jget state)" running
    expect_eq "cpu_count" "$(jget cpu_count)" "$ncpu"
    expect_eq "length of cpus[]" "$(jget cpus.length)" "$ncpu"
    for c in $(online_cpus); do
        expect_eq "state of OS CPU $c" "$(cpu_field "$c" state)" running
    done
}

# expect_not_running: state is stopped or failed, never running.
expect_not_running() {
    local st
    status_json
    st=$(jget state)
    case "$st" in
    stopped | failed) ;;
    *) fail "microv status --json state is '$st', expected stopped or failed" ;;
    esac
}

# wait_line FILE TEXT PID: waits (30 s at most) until FILE has a line with
# TEXT; fails if PID exits first.
wait_line() {
    local i=0
    until grep -q "$2" "$1"; do
        kill -0 "$3" 2>/dev/null || fail "pid $3 exited before printing '$2': $(cat "$1")"
        i=$((i + 1))
        [ $i -lt 300 ] || fail "pid $3 did not print '$2' in 30 s: $(cat "$1")"
        sleep 0.1
    done
}

# cpu_ticks PID: utime + stime of PID, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# kernel_healthy: no oops, BUG, panic or soft lockup in the kernel log, and
# the system still runs a fresh process.
kernel_healthy() {
    if dmesg | grep -E 'Oops|BUG:|BUG |general protection|Kernel panic|soft lockup|hard LOCKUP|Call Trace|RIP: ' >"$MVT_TMP/bad.log"; then
        cat "$MVT_TMP/bad.log"
        fail "the kernel log shows a crash or a lockup (above)"
    fi
    [ "$(echo alive | cat)" = alive ] || fail "cannot run a pipeline"
}

# intel_cpu: true on an Intel CPU (the emulated Intel machine).
intel_cpu() {
    grep -m1 '^vendor_id' /proc/cpuinfo | grep -qw GenuineIntel
}

# kvm_module: Linux's KVM module for this CPU's vendor.
kvm_module() {
    if intel_cpu; then echo kvm_intel; else echo kvm_amd; fi
}

# kvm_works: loads kvm_amd (kvm_intel on Intel) and runs a real KVM guest
# with kvm-smoke, then unloads it again (microv start refuses to run while
# it is loaded).
# Known flake of the emulator, not MicroV: under QEMU 7.2's multi-threaded
# TCG, kvm-smoke now and then hangs inside the kernel (soft lockup), with or
# without microv.ko loaded (never seen with -accel tcg,thread=single). The
# `timeout` cannot end that; the machine's own timeout does.
kvm_works() {
    local kvm
    kvm=$(kvm_module)
    if ! grep -q "^$kvm " /proc/modules; then
        must modprobe "$kvm"
    fi
    [ -c /dev/kvm ] || fail "/dev/kvm does not exist after modprobe $kvm"
    must timeout 120 kvm-smoke
    out_has "kvm-smoke: ok" || fail "kvm-smoke did not report ok"
    must rmmod "$kvm"
}

# probe PA: reads 16 bytes at physical address PA with mvprobe.ko and sets
# $PROBE_LINE to the line it printed (empty if none). insmod itself always
# fails ("Try again"): the module unloads itself on purpose.
PROBE_SEQ=0
probe() {
    probe_run "pa=$1" 'mvprobe: '
}

# probe_msr MSR: reads MSR with rdmsr_safe and writes it back (mvprobe.ko
# msr=); sets PROBE_LINE to the probe's line, `mvprobe: msr=... read=...`.
probe_msr() {
    probe_run "msr=$1" 'mvprobe: msr='
}

# probe_run PARAM PREFIX: inserts mvprobe.ko with PARAM and sets PROBE_LINE
# to the last kernel-log line starting with PREFIX since the insertion.
probe_run() {
    local marker
    PROBE_SEQ=$((PROBE_SEQ + 1))
    marker="mvt-probe-marker-$$-$PROBE_SEQ"
    echo "$marker" >/dev/kmsg
    run insmod "$MVT_DIR/mvprobe.ko" "$1"
    [ "$RUN_RC" -ne 0 ] || fail "insmod mvprobe.ko succeeded; it should always refuse to stay loaded"
    PROBE_LINE=$(dmesg | sed -n "/$marker/,\$p" | grep "$2" | tail -n 1 | sed 's/^.*mvprobe: /mvprobe: /') || true
    echo "  probe: ${PROBE_LINE:-<no mvprobe line in dmesg>}"
}

# online_cpus: the OS numbers of the online CPUs, one per line.
online_cpus() {
    awk -F'[ \t:]+' '/^processor/ { print $2 }' /proc/cpuinfo
}

# microv_visible_on CPU: succeeds if CPUID 0x40000000 on that CPU shows
# MicroV's signature "MicroVMicroV", returns 1 if it shows anything else.
microv_visible_on() {
    local q
    q=$(taskset -c "$1" cpuid-query 0x40000000) || fail "cpuid-query on CPU $1 failed: $q"
    case "$q" in
    *signature=MicroVMicroV*) return 0 ;;
    *signature=*) return 1 ;;
    *) fail "cpuid-query printed no signature: $q" ;;
    esac
}

# svm_bit_on CPU: sets $SVM_BIT to CPUID 0x80000001 ECX bit 2 (SVM) on that
# CPU.
svm_bit_on() {
    local q ecx
    q=$(taskset -c "$1" cpuid-query 0x80000001) || fail "cpuid-query on CPU $1 failed: $q"
    ecx=$(printf '%s\n' "$q" | sed -n 's/.*ecx=\(0x[0-9a-f]*\).*/\1/p')
    [ -n "$ecx" ] || fail "cpuid-query 0x80000001 printed no ecx: $q"
    SVM_BIT=$(((ecx >> 2) & 1))
}

# virt_bit_on CPU: sets $VIRT_BIT to the CPU's virtualization bit in CPUID
# on that CPU: SVM (0x80000001 ECX bit 2) on AMD, VMX (1 ECX bit 5) on Intel.
virt_bit_on() {
    local q ecx
    if intel_cpu; then
        q=$(taskset -c "$1" cpuid-query 1) || fail "cpuid-query on CPU $1 failed: $q"
        ecx=$(printf '%s\n' "$q" | sed -n 's/.*ecx=\(0x[0-9a-f]*\).*/\1/p')
        [ -n "$ecx" ] || fail "cpuid-query 1 printed no ecx: $q"
        VIRT_BIT=$(((ecx >> 5) & 1))
    else
        svm_bit_on "$1"
        VIRT_BIT=$SVM_BIT
    fi
}

# native_everywhere: no CPU runs beneath MicroV: CPUID shows no MicroV
# signature and the SVM (or VMX) bit, and a MicroV hypercall raises #UD
# (SIGILL).
native_everywhere() {
    local c
    for c in $(online_cpus); do
        if microv_visible_on "$c"; then
            fail "CPU $c still reports MicroV's CPUID signature"
        fi
        virt_bit_on "$c"
        expect_eq "CPU $c: CPUID's SVM/VMX bit" "$VIRT_BIT" 1
        run taskset -c "$c" mv-hypercall 0x764D000000000000
        [ "$RUN_RC" -eq 2 ] && out_has sigill ||
            fail "CPU $c: id.version hypercall did not raise SIGILL (exit $RUN_RC: $RUN_OUT)"
    done
}

# mem_free_kib: MemFree from /proc/meminfo, in KiB.
mem_free_kib() {
    awk '/^MemFree:/ { print $2 }' /proc/meminfo
}

# make_data FILE LINES: deterministic pseudo-random text (a 32-bit LCG, 9
# bytes a line) in FILE.
make_data() {
    awk -v n="$2" 'BEGIN { x = 12345; for (i = 0; i < n; i++) { x = (x * 69069 + 1) % 4294967296; printf "%08x\n", x } }' >"$1"
}

# workload DIR LINES: generates data in DIR, compresses it and decompresses
# it again; writes DIR/sums: the data's sha256, the round trip's sha256 and
# the compressed stream's sha256.
workload() {
    mkdir -p "$1"
    make_data "$1/data" "$2"
    gzip -c "$1/data" >"$1/data.gz"
    {
        sha256sum <"$1/data" | cut -d' ' -f1
        gzip -c <"$1/data" | gunzip -c | sha256sum | cut -d' ' -f1
        sha256sum <"$1/data.gz" | cut -d' ' -f1
    } >"$1/sums"
    rm -f "$1/data" "$1/data.gz"
}

# ---- the attack tests (tests/e2e/6x-attack-*.sh) ------------------------------

# mvprobe.ko loaded without parameters stays resident and takes commands
# here (see tests/vm/mvprobe/mvprobe_main.c for the commands and results).
MVP_CTL=/sys/kernel/debug/mvprobe/ctl

# mvp_load: loads mvprobe.ko resident, unless it already is.
mvp_load() {
    if [ ! -e "$MVP_CTL" ]; then
        grep -qs ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug
        must insmod "$MVT_DIR/mvprobe.ko"
    fi
    [ -e "$MVP_CTL" ] || fail "mvprobe.ko is loaded but $MVP_CTL does not exist"
}

# mvp COMMAND...: runs one mvprobe command; sets $MVP_OUT (its result lines)
# and $MVP_RC (0, or the exit status of the failed write) and echoes them.
# The command is echoed first, so a log that ends there says what killed the
# machine.
mvp() {
    echo "  mvprobe> $*"
    MVP_RC=0
    echo "$*" >"$MVP_CTL" 2>"$MVT_TMP/mvp.err" || MVP_RC=$?
    MVP_OUT=$(cat "$MVP_CTL")
    printf '%s\n' "$MVP_OUT" | sed 's/^/  mvprobe< /'
    if [ "$MVP_RC" -ne 0 ]; then
        echo "  mvprobe: the command was refused (exit $MVP_RC): $(cat "$MVT_TMP/mvp.err")"
    fi
}

# must_mvp COMMAND...: as mvp, and fails the test unless the command ran.
must_mvp() {
    mvp "$@"
    [ "$MVP_RC" -eq 0 ] || fail "mvprobe command '$*' failed: $MVP_OUT"
}

# mvp_get KEY: the value of the first `KEY=value` word in $MVP_OUT, or
# <missing>.
mvp_get() {
    local v
    v=$(printf '%s\n' "$MVP_OUT" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1)
    printf '%s\n' "${v:-<missing>}"
}

# mvp_expect KEY=VALUE...: each KEY of the last mvprobe result has VALUE.
mvp_expect() {
    local kv k v
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        expect_eq "mvprobe $k" "$(mvp_get "$k")" "$v"
    done
}

# mvp_need_handle: the driver exports microv_test_handle() and MicroV runs
# (the probe's management hypercalls need the handle).
mvp_need_handle() {
    must_mvp info
    [ "$(mvp_get handle)" = yes ] ||
        fail "mvprobe has no management handle (handle=$(mvp_get handle)): microv.ko must export u64 microv_test_handle(void) and MicroV must run"
}

# exits_of CPU KIND: that CPU's count of exits of KIND (`wrmsr`, `xsetbv`)
# in a fresh `microv status --json`.
exits_of() {
    status_json
    cpu_field "$1" "exits.$2"
}

# kallsyms_addr SYMBOL: the address of SYMBOL in /proc/kallsyms (0x...), or
# fails the test.
kallsyms_addr() {
    local a
    a=$(awk -v s="$1" '$3 == s { print $1; exit }' /proc/kallsyms)
    case "$a" in
    '' | 0000000000000000) fail "no address for $1 in /proc/kallsyms (kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict))" ;;
    esac
    echo "0x$a"
}

# workload_reference LINES: runs the workload (see `workload`) once, for
# reference; sets WL_LINES and WL_SUMS.
workload_reference() {
    WL_LINES=$1
    workload "$MVT_TMP/wl-ref" "$WL_LINES"
    WL_SUMS=$(cat "$MVT_TMP/wl-ref/sums")
    echo "  workload reference ($WL_LINES lines): $(echo $WL_SUMS)"
}

# workload_unchanged WHAT: the workload on every CPU gives WL_SUMS again.
workload_unchanged() {
    local c
    for c in $(online_cpus); do
        taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $MVT_TMP/wl-$c $WL_LINES" ||
            fail "$1: the workload failed on CPU $c"
        expect_eq "$1: workload checksums on CPU $c" "$(cat "$MVT_TMP/wl-$c/sums")" "$WL_SUMS"
    done
}

# after_attack WHAT running|stopped: MicroV still runs on every CPU (or has
# stopped: not running, every CPU native), the kernel is healthy, and the
# workload still gives its reference checksums.
after_attack() {
    check "after $1: MicroV $2, Linux healthy, workload checksums unchanged"
    case "$2" in
    running) expect_running_on_all ;;
    stopped)
        expect_not_running
        native_everywhere
        ;;
    *) fail "after_attack: unknown expectation '$2'" ;;
    esac
    kernel_healthy
    workload_unchanged "after $1"
}

# expect_fault_record CPU: MicroV stopped itself after `hv.test_fault` kind
# 1 on CPU: state failed, fault record of a page fault (14) in the extension
# (CPL 3), reported on CPU, and no CPU still running MicroV. The driver's
# watchdog (every 0.5 s) or the status call itself reaps the other CPUs.
expect_fault_record() {
    local c st
    status_json
    sed -n '/"fault"/,$p' "$MVT_TMP/status.json" | sed 's/^/  /'
    expect_eq "state after the injected failure" "$(jget state)" failed
    expect_eq "fault.name" "$(jget fault.name)" extension_fault
    expect_eq "fault.vector" "$(jget fault.vector)" 14
    expect_eq "fault.cpl" "$(jget fault.cpl)" 3
    expect_eq "last_error.cpu" "$(jget last_error.cpu)" "$1"
    for c in $(online_cpus); do
        st=$(cpu_field "$c" state)
        [ "$st" != running ] || fail "CPU $c still runs MicroV after the failure on CPU $1"
    done
}

# loop_progress FILE: the CPUID count of the last `progress n=...` line
# cpuid-loop wrote to FILE (0 if none yet).
loop_progress() {
    local n
    n=$(sed -n 's/^progress n=\([0-9]*\).*/\1/p' "$1" | tail -n 1)
    echo "${n:-0}"
}

# cpl3_fault_round LOOP_CPUS FAULT_CPU: with the test extension running,
# pinned `cpuid-loop`s run CPUID at CPL 3 on each of LOOP_CPUS (each CPUID
# exits to MicroV) while `microv test-fault --cpu FAULT_CPU` makes the
# extension fault. Then: no panic and no double fault, MicroV stopped with
# the fault record, every CPU native, the loops still make progress, and
# Linux is healthy with unchanged workload checksums. Needs WL_* from
# workload_reference.
cpl3_fault_round() {
    local cpus=$1 fault_cpu=$2 c pids= n0 n1 i
    check "start with the test extension"
    must microv start --extension /usr/lib/microv/microv-extension-test.elf
    expect_running_on_all

    check "user loops run CPUID at CPL 3 on CPU(s) $cpus"
    for c in $cpus; do
        : >"$MVT_TMP/loop$c.out"
        taskset -c "$c" cpuid-loop 120 >"$MVT_TMP/loop$c.out" 2>&1 &
        pids="$pids $!"
    done
    for c in $cpus; do
        i=0
        while [ "$(loop_progress "$MVT_TMP/loop$c.out")" -eq 0 ]; do
            i=$((i + 1))
            [ $i -lt 100 ] || fail "cpuid-loop on CPU $c printed no progress: $(cat "$MVT_TMP/loop$c.out")"
            sleep 0.1
        done
        echo "  CPU $c loop: $(tail -n 1 "$MVT_TMP/loop$c.out")"
    done
    status_json
    for c in $cpus; do
        echo "  CPU $c cpuid exits so far: $(cpu_field "$c" exits.cpuid)"
    done

    # The command itself runs on FAULT_CPU, so the loops on the other CPUs
    # keep exiting at CPL 3 undisturbed when MicroV fails.
    check "microv test-fault --cpu $fault_cpu (run on CPU $fault_cpu) while the loops run"
    must taskset -c "$fault_cpu" microv test-fault --cpu "$fault_cpu" --kind page-fault
    out_has "faulted on CPU $fault_cpu" || fail "test-fault did not confirm the fault on CPU $fault_cpu"

    check "MicroV stopped with the fault record; every CPU is native"
    expect_fault_record "$fault_cpu"
    native_everywhere

    check "no panic, no double fault; the kernel log is clean"
    if dmesg | grep -iE 'double fault|microv_promote' >"$MVT_TMP/df.log"; then
        cat "$MVT_TMP/df.log"
        fail "the kernel log mentions a double fault or the promotion code"
    fi
    kernel_healthy

    check "the user loops on CPU(s) $cpus are still running and making progress"
    for c in $cpus; do
        n0=$(loop_progress "$MVT_TMP/loop$c.out")
        sleep 1
        n1=$(loop_progress "$MVT_TMP/loop$c.out")
        echo "  CPU $c loop: $n0 -> $n1 CPUIDs; $(tail -n 1 "$MVT_TMP/loop$c.out")"
        [ "$n1" -gt "$n0" ] || fail "the loop on CPU $c made no progress after the failure ($n0 -> $n1)"
    done
    for p in $pids; do
        kill -0 "$p" 2>/dev/null || fail "a cpuid-loop (pid $p) died"
        kill "$p"
        wait "$p" 2>/dev/null || true
    done

    after_attack "a failure while CPU(s) $cpus ran CPUID at CPL 3" stopped
}

# ---- the micro VM guest (tests/e2e/83-microvm-linux.sh) ----------------------

# Debian's kernel and a busybox initramfs whose /init follows the `mvguest.*`
# words of its kernel command line (tests/vm/guest-init.sh; xtask/src/guest.rs
# installs both in every machine).
MVT_GUEST_KERNEL=$MVT_DIR/guest/vmlinuz
MVT_GUEST_INITRD=$MVT_DIR/guest/initrd.cpio
# `microv run --cmdline` replaces the VMM's default, so start from it.
MVT_GUEST_CMDLINE='console=ttyS0 reboot=k panic=1'
# Seconds a guest may take from `microv run` to its end (about 20-30 s of
# emulated time per boot of Debian's kernel under TCG).
MVT_GUEST_TIMEOUT=300
# Extra `microv run` options for guest_start (e.g. --cpus 2, --backend kvm).
MVT_GUEST_ARGS=${MVT_GUEST_ARGS:-}
# Guest memory for guest_start.
MVT_GUEST_MEM=${MVT_GUEST_MEM:-256M}

# uptime_s: the root's uptime in seconds (two decimals).
uptime_s() {
    cut -d' ' -f1 /proc/uptime
}

# stamp: copies stdin to stdout line by line, each line without its CR and
# prefixed with the root's uptime when it arrived (so the host time of a
# guest's output line can be read off later).
stamp() {
    awk '{ sub(/\r$/, ""); getline up < "/proc/uptime"; close("/proc/uptime"); split(up, u, " "); printf "%s %s\n", u[1], $0; fflush() }'
}

# guest_start NAME WORDS [INPUT]: boots the test guest in the background:
# `microv run --mem $MVT_GUEST_MEM` with the kernel command line
# "$MVT_GUEST_CMDLINE WORDS", stdin from INPUT (default /dev/null), under a
# timeout of MVT_GUEST_TIMEOUT. Its output (stdout and stderr), stamped, goes
# to $MVT_TMP/NAME.out, the VMM's pid to NAME.pid, and, when it has ended,
# `<exit status> <root uptime>` to NAME.rc, and the pid of the background job
# that writes all of that to NAME.job. Sets GUEST_T0 (root uptime at the
# start).
guest_start() {
    local name=$1 words=$2 input=${3:-/dev/null}
    rm -f "$MVT_TMP/$name.rc" "$MVT_TMP/$name.pid" "$MVT_TMP/$name.job"
    : >"$MVT_TMP/$name.out"
    echo "  \$ microv run $MVT_GUEST_ARGS --kernel $MVT_GUEST_KERNEL --initrd $MVT_GUEST_INITRD --mem $MVT_GUEST_MEM --cmdline '$MVT_GUEST_CMDLINE $words' <$input &"
    GUEST_T0=$(uptime_s)
    (
        # timeout execs microv in its own pid, so $! is the VMM's.
        # shellcheck disable=SC2086 # MVT_GUEST_ARGS is words on purpose
        timeout "$MVT_GUEST_TIMEOUT" microv run $MVT_GUEST_ARGS --kernel "$MVT_GUEST_KERNEL" \
            --initrd "$MVT_GUEST_INITRD" --mem "$MVT_GUEST_MEM" \
            --cmdline "$MVT_GUEST_CMDLINE $words" <"$input" 2>&1 &
        echo $! >"$MVT_TMP/$name.pid"
        rc=0
        wait $! || rc=$?
        echo "$rc $(uptime_s)" >"$MVT_TMP/$name.rc"
    ) | stamp >"$MVT_TMP/$name.out" &
    echo $! >"$MVT_TMP/$name.job"
}

# guest_pid NAME: the pid of NAME's VMM.
guest_pid() {
    local i=0
    until [ -s "$MVT_TMP/$1.pid" ]; do
        i=$((i + 1))
        [ $i -lt 100 ] || fail "guest $1: no VMM pid after 10 s"
        sleep 0.1
    done
    cat "$MVT_TMP/$1.pid"
}

# guest_wait NAME TEXT: waits until the guest's output has a line with TEXT
# (a fixed string); fails if the VMM ends first or after MVT_GUEST_TIMEOUT.
guest_wait() {
    local i=0 limit=$((MVT_GUEST_TIMEOUT * 5))
    until grep -qF -- "$2" "$MVT_TMP/$1.out"; do
        if [ -e "$MVT_TMP/$1.rc" ]; then
            # The output may have been written just before the status.
            sleep 0.2
            grep -qF -- "$2" "$MVT_TMP/$1.out" && return 0
            guest_show "$1"
            # With panic=N a panicking guest reboots: microv run exits 0.
            fail "guest $1: microv run ended (status $(cut -d' ' -f1 "$MVT_TMP/$1.rc")) before printing '$2'$(guest_crash "$1")"
        fi
        i=$((i + 1))
        [ $i -lt $limit ] || {
            guest_show "$1"
            fail "guest $1: no '$2' in $MVT_GUEST_TIMEOUT s$(guest_crash "$1")"
        }
        sleep 0.2
    done
}

# guest_crash NAME: `; the guest's kernel: <first BUG/Oops/panic line>` if
# its output has one, else nothing.
guest_crash() {
    local line
    line=$(grep -E -m1 'BUG:|Oops|Kernel panic' "$MVT_TMP/$1.out" | cut -d' ' -f2-) || true
    [ -z "$line" ] || printf '; the guest kernel: %s' "$line"
}

# guest_show NAME: the guest's output so far, indented, each line after the
# root uptime it arrived at.
guest_show() {
    sed 's/^/  guest| /' "$MVT_TMP/$1.out"
}

# guest_finish NAME: waits for NAME's `microv run` to end (NAME's own job:
# with several guests running they end in any order) and shows its output;
# sets GUEST_RC (its exit status) and GUEST_T1 (root uptime then).
guest_finish() {
    wait "$(cat "$MVT_TMP/$1.job")" 2>/dev/null || true
    [ -e "$MVT_TMP/$1.rc" ] || fail "guest $1: the output ended but microv run left no status"
    GUEST_RC=$(cut -d' ' -f1 "$MVT_TMP/$1.rc")
    GUEST_T1=$(cut -d' ' -f2 "$MVT_TMP/$1.rc")
    guest_show "$1"
    echo "  microv run ($1) exited $GUEST_RC after $(awk -v a="$GUEST_T0" -v b="$GUEST_T1" 'BEGIN { printf "%.2f", b - a }') s of host time"
}

# guest_line NAME TEXT: the first output line of NAME with TEXT, without its
# stamp (empty if none).
guest_line() {
    grep -F -m1 -- "$2" "$MVT_TMP/$1.out" | cut -d' ' -f2- || true
}

# guest_when NAME TEXT: the root uptime at which the first line with TEXT
# arrived (empty if none).
guest_when() {
    grep -F -m1 -- "$2" "$MVT_TMP/$1.out" | cut -d' ' -f1 || true
}

# uefi_report FILE: microv.efi's report (the lines it printed before it
# booted this Linux), from its volatile UEFI variable, into FILE; shown
# indented. Fails if this Linux was not booted through microv.efi.
uefi_report() {
    local var=/sys/firmware/efi/efivars/MicroVBoot-a3c96db2-04ba-470a-84da-534392210347
    [ -d /sys/firmware/efi ] || fail "no /sys/firmware/efi: this Linux was not booted by UEFI"
    modprobe efivarfs
    grep -q ' /sys/firmware/efi/efivars ' /proc/mounts ||
        mount -t efivarfs efivarfs /sys/firmware/efi/efivars
    [ -e "$var" ] || fail "no $var: microv.efi left no report"
    # Four attribute bytes, then the text.
    tail -c +5 "$var" >"$1"
    sed 's/^/  | /' "$1"
}

# uefi_cpus_report FILE: what microv.efi wrote when not every CPU came into
# MicroV as the OS exited boot services (its non-volatile variable), into
# FILE, shown indented; returns 1 (FILE empty) if there is none, as after
# a boot where every CPU came in. Call uefi_report first (it mounts
# efivarfs).
uefi_cpus_report() {
    local var=/sys/firmware/efi/efivars/MicroVBootCpus-a3c96db2-04ba-470a-84da-534392210347
    : >"$1"
    [ -e "$var" ] || return 1
    tail -c +5 "$var" >"$1"
    sed 's/^/  | /' "$1"
}

# madt_has_mailbox: true if the MADT Linux uses has an ACPI Multiprocessor
# Wakeup structure (type 0x10, length 16) among its entries.
madt_has_mailbox() {
    # shellcheck disable=SC2046
    set -- $(od -A n -t x1 -v -j 44 /sys/firmware/acpi/tables/APIC)
    while [ $# -ge 2 ]; do
        [ "$1" = 10 ] && [ "$2" = 10 ] && return 0
        [ $((0x$2)) -ge 2 ] || return 1
        shift $((0x$2)) 2>/dev/null || return 1
    done
    return 1
}

# report_has FILE TEXT: fails unless FILE has a line with TEXT (fixed).
report_has() {
    grep -qF -- "$2" "$1" || fail "microv.efi's report has no line with '$2'"
}

# expect_strings_guest: $RUN_OUT (a `microv run` of `mv-guest-elf
# strings`) has exactly the guest's lines for string port I/O, in order.
expect_strings_guest() {
    expect_eq "the strings guest's lines" \
        "$(printf '%s\n' "$RUN_OUT" | grep '^strings:' | tr '\n' ';')" \
"strings: start;strings: rep outsb;strings: rep outsw;strings: rep outsd;strings: outsb;\
strings: std rep outsb;strings: across a page boundary;strings: rep outsw across a page;\
strings: a32 rep outsb;strings: rep insb: ssss!;strings: end;"
}
