#!/bin/sh
# The same VMM, kernel and initramfs on Linux's own KVM (`--backend kvm`,
# nested SVM in the emulated machine): the guest reaches its init and
# computes the root's checksum, as it does on MicroV (83); the string port
# I/O guest of 81 prints the same lines (KVM hands a `rep outs`/`ins` as one
# exit of several accesses). One emulated CPU:
# with two, QEMU's nested SVM sometimes leaves a KVM guest idle for good
# (vmm/README.md), which says nothing about MicroV or the VMM.
# e2e-smp: 1
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

N=50000
REF=$(seq 1 $N | sha256sum | cut -d' ' -f1)

check "MicroV is not running; kvm_amd loads"
expect_state stopped
modprobe kvm_amd || fail "kvm_amd does not load"

check "the guest on --backend kvm: the root's checksum"
MVT_GUEST_ARGS="--backend kvm"
guest_start kvm "mvguest.cpus mvguest.sum=$N"
guest_wait kvm "MICROV-GUEST-END"
guest_finish kvm
[ "$GUEST_RC" -eq 0 ] || fail "microv run --backend kvm exited $GUEST_RC"
expect_eq "the KVM guest's checksum" "$(guest_line kvm MICROV-SUM: | cut -d' ' -f2)" "$REF"
expect_eq "CPUs the KVM guest sees" "$(guest_line kvm MICROV-CPUS: | cut -d' ' -f2)" 1
check "string port I/O on --backend kvm: the same lines as on MicroV (81)"
mv-guest-elf strings >"$MVT_TMP/strings.elf"
must timeout 60 microv run --backend kvm --kernel "$MVT_TMP/strings.elf" --mem 32M
expect_strings_guest
out_has "the guest powered off" || fail "no power-off report"
rmmod kvm_amd
echo "microvm-kvm: all checks passed"
