#!/bin/sh
# The emulated machine itself: the CPU has SVM, both vCPUs are up, the CLI
# runs, and Linux's own KVM works (so later tests can tell MicroV's effects
# apart from the machine's).
set -eu

echo "check: the CPU advertises svm"
grep -qw svm /proc/cpuinfo

echo "check: 2 processors"
n=$(grep -c '^processor' /proc/cpuinfo)
if [ "$n" -ne 2 ]; then
    echo "FAIL: expected 2 processors, found $n"
    exit 1
fi

if [ -e /usr/bin/microv ]; then
    echo "check: microv --help exits 0"
    microv --help >/dev/null
else
    echo "skip: /usr/bin/microv is not installed"
fi

echo "check: modprobe kvm_amd"
if grep -q '^kvm_amd ' /proc/modules; then
    echo "kvm_amd already loaded"
else
    modprobe kvm_amd
fi
test -c /dev/kvm

echo "check: a KVM guest runs (kvm-smoke)"
kvm-smoke

echo "vm-sanity: all checks passed"
