#!/bin/sh
# Attack: the root kernel sends CPU 1 an INIT IPI while MicroV runs on it.
# An INIT must never reach a CPU in MicroV: QEMU 7.2 takes it in host mode
# and resets the CPU out of MicroV (a SIPI could then start it natively,
# with MicroV's memory in reach); AMD hardware keeps it pending and exits
# with it at every VMRUN. The root's APIC page is read-only in its nested
# tables, so the write to the ICR exits and the microkernel refuses it
# (kernel::ipi_guard). Before that check existed, CPU 1 stopped answering
# (RCU stall reports) and the machine hung. Shown here: MicroV logs the
# refusal, CPU 1 keeps doing the root's work beneath MicroV, stop works.
# The same check keeps the root from setting an LVT entry to deliver INIT
# (LINT0 is wired to the 8259, which the root programs) and from changing
# its APIC ID, while other APIC writes (the task priority) take effect.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "start; the probe loaded"
must microv start
expect_running_on_all
mvp_load

check "the root kernel on CPU 0 sends CPU 1 an INIT IPI"
must_mvp init cpu=0 target=1

# logged_refusal REG VALUE: MicroV's log says it refused VALUE for REG.
logged_refusal() {
    must microv log
    out_has "refused the root's write of $2 to APIC register $1" ||
        fail "no refusal of $2 for register $1 in MicroV's log: $RUN_OUT"
}

# refused_on_cpu1 REG VALUE: writing VALUE to CPU 1's REG changes nothing,
# and MicroV says it refused it.
refused_on_cpu1() {
    must_mvp apic cpu=1 reg="$1" value="$2"
    [ "$(mvp_get after)" = "$(mvp_get before)" ] || fail "register $1 changed: $MVP_OUT"
    logged_refusal "$1" "$2"
}

check "MicroV refused the INIT and said so"
logged_refusal 0x300 0xc500

check "LINT0 set to deliver INIT (masked) on CPU 1: refused, the entry unchanged"
refused_on_cpu1 0x350 0x10500

check "the APIC ID cannot change; the task priority can (and is put back)"
refused_on_cpu1 0x20 0x5000000
must_mvp apic cpu=1 reg=0x80 value=0x20
tpr=$(mvp_get before)
mvp_expect after=0x20
must_mvp apic cpu=1 reg=0x80 value="$tpr"
mvp_expect after="$tpr"

check "CPU 1 still runs the root's work beneath MicroV"
run timeout 10 taskset -c 1 cpuid-query 0x40000000
[ "$RUN_RC" -eq 0 ] || fail "CPU 1 does not run the root's work after the INIT (rc $RUN_RC)"
out_has "signature=MicroVMicroV" || fail "CPU 1 is no longer beneath MicroV: $RUN_OUT"
expect_running_on_all
kernel_healthy

check "stop works"
must microv stop
expect_state stopped
echo "attack-init-ipi: all checks passed"
