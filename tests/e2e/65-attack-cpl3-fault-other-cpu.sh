#!/bin/sh
# Attack: a MicroV failure while a user process runs CPUID at CPL 3. A
# pinned loop runs CPUID at CPL 3 on one CPU (each CPUID exits) while the
# test extension is made to fault on the other CPU, so the loop's CPU is
# handed back at an exit taken at CPL 3 (the trampoline must not build its
# IRET frame on the user stack from ring 0: SMAP turns that into a double
# fault). Expected: no panic or double fault, MicroV stopped with its fault
# record, the loop still runs, Linux healthy, workload checksums unchanged.
# Both directions: loop on CPU 1 / fault on CPU 0, then loop on CPU 0 /
# fault on CPU 1. Needs the test extension.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

check "the workload natively, for reference"
workload_reference 50000

cpl3_fault_round 1 0
cpl3_fault_round 0 1

echo "attack-cpl3-fault-other-cpu: all checks passed"
