#!/bin/sh
# Attack: as 65-attack-cpl3-fault-other-cpu.sh, but the failure is injected
# on the CPU that runs the CPL-3 CPUID loop (its own exit is the driver's,
# at CPL 0, with the user loop preempted), then with loops on both CPUs and
# the failure on CPU 0. Expected: no panic or double fault, MicroV stopped
# with its fault record, the loops still run, Linux healthy, workload
# checksums unchanged. Needs the test extension.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "the workload natively, for reference"
workload_reference 50000

cpl3_fault_round 1 1
cpl3_fault_round "0 1" 0

echo "attack-cpl3-fault-same-cpu: all checks passed"
