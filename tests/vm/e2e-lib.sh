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
    v=$(grep -m1 "^$1=" "$MVT_TMP/status.flat" | cut -d= -f2-) || true
    if grep -q "^$1=" "$MVT_TMP/status.flat"; then
        printf '%s\n' "$v"
    else
        printf '<missing>\n'
    fi
}

# expect_state STATE: `microv status --json` says STATE.
expect_state() {
    status_json
    expect_eq "microv status --json state" "$(jget state)" "$1"
}

# expect_running_on_all: running, cpu_count equals the number of online
# CPUs, and each of them is running.
expect_running_on_all() {
    status_json
    ncpu=$(grep -c '^processor' /proc/cpuinfo)
    expect_eq "state" "$(jget state)" running
    expect_eq "cpu_count" "$(jget cpu_count)" "$ncpu"
    expect_eq "length of cpus[]" "$(jget cpus.length)" "$ncpu"
    i=0
    while [ "$i" -lt "$ncpu" ]; do
        expect_eq "cpus[$i].state" "$(jget cpus.$i.state)" running
        i=$((i + 1))
    done
}

# expect_not_running: state is stopped or failed, never running.
expect_not_running() {
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
kvm_works() {
    if ! grep -q '^kvm_amd ' /proc/modules; then
        must modprobe kvm_amd
    fi
    [ -c /dev/kvm ] || fail "/dev/kvm does not exist after modprobe kvm_amd"
    must kvm-smoke
    out_has "kvm-smoke: ok" || fail "kvm-smoke did not report ok"
    must rmmod kvm_amd
}

# probe PA: reads 16 bytes at physical address PA with mvprobe.ko and sets
# $PROBE_LINE to the line it printed (empty if none). insmod itself always
# fails ("Try again"): the module unloads itself on purpose.
PROBE_SEQ=0
probe() {
    PROBE_SEQ=$((PROBE_SEQ + 1))
    marker="mvt-probe-marker-$$-$PROBE_SEQ"
    echo "$marker" >/dev/kmsg
    run insmod "$MVT_DIR/mvprobe.ko" "pa=$1"
    [ "$RUN_RC" -ne 0 ] || fail "insmod mvprobe.ko succeeded; it should always refuse to stay loaded"
    PROBE_LINE=$(dmesg | sed -n "/$marker/,\$p" | grep 'mvprobe: ' | tail -n 1 | sed 's/^.*mvprobe: /mvprobe: /') || true
    echo "  probe: ${PROBE_LINE:-<no mvprobe line in dmesg>}"
}
