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
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "start; the probe loaded"
must microv start
expect_running_on_all
mvp_load

check "the root kernel on CPU 0 sends CPU 1 an INIT IPI"
must_mvp init cpu=0 target=1

check "MicroV refused the INIT and said so"
must microv log
out_has "refused the root's write of 0xc500 to APIC register 0x300" ||
    fail "no refusal in MicroV's log: $RUN_OUT"

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
