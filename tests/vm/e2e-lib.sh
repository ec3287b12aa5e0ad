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

# kernel_healthy: no oops, BUG, panic or soft lockup in the kernel log, and
# the system still runs a fresh process.
kernel_healthy() {
    if dmesg | grep -E 'Oops|BUG:|BUG |general protection|Kernel panic|soft lockup|hard LOCKUP|Call Trace|RIP: ' >"$MVT_TMP/bad.log"; then
        cat "$MVT_TMP/bad.log"
        fail "the kernel log shows a crash or a lockup (above)"
    fi
    [ "$(echo alive | cat)" = alive ] || fail "cannot run a pipeline"
}

# kvm_works: loads kvm_amd and runs a real KVM guest with kvm-smoke, then
# unloads kvm_amd again (microv start refuses to run while it is loaded).
# Known flake of the emulator, not MicroV: under QEMU 7.2's multi-threaded
# TCG, kvm-smoke now and then hangs inside the kernel (soft lockup), with or
# without microv.ko loaded (never seen with -accel tcg,thread=single). The
# `timeout` cannot end that; the machine's own timeout does.
kvm_works() {
    if ! grep -q '^kvm_amd ' /proc/modules; then
        must modprobe kvm_amd
    fi
    [ -c /dev/kvm ] || fail "/dev/kvm does not exist after modprobe kvm_amd"
    must timeout 60 kvm-smoke
    out_has "kvm-smoke: ok" || fail "kvm-smoke did not report ok"
    must rmmod kvm_amd
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

# native_everywhere: no CPU runs beneath MicroV: CPUID shows no MicroV
# signature and the SVM bit, and a MicroV hypercall raises #UD (SIGILL).
native_everywhere() {
    local c
    for c in $(online_cpus); do
        if microv_visible_on "$c"; then
            fail "CPU $c still reports MicroV's CPUID signature"
        fi
        svm_bit_on "$c"
        expect_eq "CPU $c: CPUID 0x80000001 ECX.SVM" "$SVM_BIT" 1
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
