#!/bin/sh
# e2e-cpu: amd intel
# Attack: hijack a failure-time promotion. As in 60-attack-hijack-stop.sh
# (fake TSS with IST1 on a page the root owns, fake GS base, then CR4.OSXSAVE
# cleared, CR0.TS set or a DR7 breakpoint on the promotion code), but CPU 1
# then makes the test extension fault (hv.test_fault, a page fault in ring
# 3), so MicroV fails and hands the CPUs back. The CPU must come back native
# with exactly the state the root had (its fake TR and GS base, its CR0/CR4/
# DR7), the re-executed hypercall (vmmcall, or vmcall on Intel) raising #UD as on bare metal; no register
# may hold hypervisor data and the fake pages stay untouched. MicroV stops
# everywhere with a fault record; Linux is healthy, the workload checksums
# are unchanged, and MicroV starts again. Needs the test extension.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

TEST_EXT=/usr/lib/microv/microv-extension-test.elf
[ -f "$TEST_EXT" ] || fail "$TEST_EXT is missing (build with cargo xtask build --test-hooks)"

check "the workload natively, for reference"
workload_reference 50000
mvp_load

for variant in osxsave ts dr7 none; do
    check "start with the test extension"
    must microv start --extension "$TEST_EXT"
    expect_running_on_all
    mvp_need_handle
    promote=$(kallsyms_addr microv_promote)

    check "CPU 1, fake TSS + GS + $variant, hv.test_fault: the CPU comes back native with the root's own state"
    mvp hijack cpu=1 call=fault variant=$variant dr0=$promote kind=1
    [ "$MVP_RC" -eq 0 ] || fail "the probe could not run the hijack: $MVP_OUT"
    case "$(mvp_get how)" in
    exception)
        echo "  the vmmcall re-executed natively and raised vector $(mvp_get vector)"
        mvp_expect vector=6 at_call=1
        ;;
    returned)
        echo "  note: the hypercall returned status $(mvp_get status) instead of re-executing natively"
        ;;
    *) fail "the probe did not say how control came back: $MVP_OUT" ;;
    esac

    check "CPU 1, $variant: TR and GS base are exactly the root's fake ones; CR0, CR4, DR0, DR7 the root's"
    mvp_expect tr_fake=1 gs_fake=1 cr0_kept=1 cr4_kept=1 dr7_kept=1 dr0_kept=1

    check "CPU 1, $variant: no register holds MicroV data, the registers are as the root left them"
    mvp_expect leak=none regs=same

    check "CPU 1, $variant: the fake per-CPU page, fake TSS and IST page are untouched"
    mvp_expect percpu=untouched tss=untouched ist=untouched

    check "CPU 1, $variant: MicroV stopped itself everywhere with the fault record of the injected failure"
    expect_fault_record 1

    after_attack "the $variant hijack of a failure-time promotion" stopped
done

check "a normal start works afterwards, and stop"
must microv start
expect_running_on_all
must microv stop
expect_state stopped
native_everywhere
kernel_healthy

echo "attack-hijack-fault: all checks passed"
