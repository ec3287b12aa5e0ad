#!/bin/sh
# Attack: hijack the promotion path with hv.stop_pp. On CPU 1, with
# interrupts off, the root kernel (mvprobe) loads TR with a fake TSS whose
# IST1 points at a page it owns, points MSR GS_BASE at a fake per-CPU page,
# then clears CR4.OSXSAVE, or sets CR0.TS, or arms a DR0/DR7 execute
# breakpoint on the trampoline's promotion code, and asks MicroV to stop on
# that CPU alone. MicroV must refuse (Busy: a stop takes every CPU at once),
# keep running everywhere, and never run host code on the root's TR, GS,
# CR0, CR4 or DR7: the fake pages stay untouched and no register the root
# sees holds hypervisor data. After each variant: MicroV still runs, Linux
# is healthy and the workload checksums are unchanged.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

BUSY=7

check "the workload natively, for reference"
workload_reference 50000

check "start; the probe gets the management handle"
must microv start
expect_running_on_all
mvp_load
mvp_need_handle
promote=$(kallsyms_addr microv_promote)
echo "  DR0 target: microv_promote at $promote (the trampoline's promotion code)"

for variant in osxsave ts dr7 none; do
    check "CPU 1, fake TSS + GS + $variant: hv.stop_pp from this one CPU is refused with Busy ($BUSY)"
    mvp hijack cpu=1 call=stop variant=$variant dr0=$promote
    [ "$MVP_RC" -eq 0 ] || fail "the probe could not run the hijack: $MVP_OUT"
    mvp_expect how=returned status=$BUSY

    check "CPU 1, $variant: the CPU still has the root's own (fake) TR and GS base, CR0, CR4, DR0 and DR7"
    mvp_expect tr_fake=1 gs_fake=1 cr0_kept=1 cr4_kept=1 dr7_kept=1 dr0_kept=1

    check "CPU 1, $variant: no register holds MicroV data, every register but RAX is as the root left it"
    mvp_expect leak=none regs=same

    check "CPU 1, $variant: the fake per-CPU page, fake TSS and IST page are untouched"
    mvp_expect percpu=untouched tss=untouched ist=untouched

    after_attack "the $variant hijack of hv.stop_pp" running
done

check "a normal stop works afterwards"
must microv stop
expect_state stopped
native_everywhere
kernel_healthy

echo "attack-hijack-stop: all checks passed"
