#!/bin/sh
# Hostile micro VMs (issue 6): tiny 64-bit guests (mv-guest-elf, machine
# code written by hand) that attack from inside a VM, each booted with
# `microv run` on MicroV: a triple fault; every management hypercall from
# guest ring 0; the SVM instructions; reads far outside guest RAM and at the
# physical address of a root page holding a marker; wrmsr to ~24,800 MSRs
# and to the platform MSRs; out and in on every I/O port; CR3 pointing at
# garbage and outside RAM; self-IPI storms with interrupts off and on; a
# spin with interrupts off; CPUID and RDTSCP/RDPID; every kind of IPI to
# every APIC ID while another VM listens; XSETBV; EFER = 0 in long mode;
# halting forever. Each guest's own outcome is checked line by line, and
# each must stay contained: MicroV keeps running on every CPU, the kernel
# log is clean, the root's workload gives its reference checksums on every
# CPU, MicroV's free pool returns to its baseline, no VM is left behind, and
# a new guest (after the VM, or during it for the storms) still boots and
# prints.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

G=$MVT_TMP/hostile
mkdir -p "$G"
MARKER=MVHOSTILE1234567
# The marker's two 8-byte halves as a guest's 64-bit load prints them
# (little-endian): "MVHOSTIL" and "E1234567".
MARKER_Q0=4C4954534F48564D
MARKER_Q1=3736353433323145
# The marker's bytes in hex, as mvprobe's `phys` prints them.
MARKER_HEX=4d56484f5354494c4531323334353637
MANAGEMENT="handle.open handle.close debug.out pp.id pp.count pp.exit_count hv.memory
hv.stop_pp hv.test_fault vm.create vm.destroy vm.map_memory vm.unmap_memory
vcpu.create vcpu.destroy run.run run.get_registers run.set_registers"

for k in hello triple hypercalls svm msrs ports badcr3-ff badcr3-far ipi-cli ipi-sti spin cpuid \
    ipi-cross ipi-listen xsetbv efer halt-cli halt-sti; do
    mv-guest-elf "$k" >"$G/$k.elf" || fail "mv-guest-elf $k failed"
done

# now_cs: the root's uptime in hundredths of a second.
now_cs() {
    awk '{ printf "%d\n", $1 * 100 }' /proc/uptime
}

# secs CS: hundredths as seconds (1.23).
secs() {
    printf '%d.%02d' $(($1 / 100)) $(($1 % 100))
}

# vm KIND: runs guest KIND (60 s at most); sets RUN_OUT and RUN_RC.
vm() {
    run timeout 60 microv run --kernel "$G/$1.elf" --mem 32M
}

# out_lacks TEXT: $RUN_OUT does not contain TEXT.
out_lacks() {
    ! out_has "$1"
}

# hello_runs WHEN: a friendly guest boots, prints and powers off.
hello_runs() {
    vm hello
    [ "$RUN_RC" -eq 0 ] || fail "a hello guest $1 exited $RUN_RC"
    out_has "hello from a micro VM" || fail "a hello guest $1 printed nothing"
    out_has "the guest powered off" || fail "a hello guest $1 did not power off"
}

# pool_back WHAT: MicroV's free pool is at its baseline and no VM is
# listed (the driver may take a moment after a kill -9).
pool_back() {
    local i=0 free
    while :; do
        status_json
        free=$(jget pool.free_bytes)
        [ "$free" != "$POOL0" ] || [ "$(jget vm_count)" != 0 ] || break
        i=$((i + 1))
        [ $i -lt 50 ] || fail "after $1: free pool $free bytes (baseline $POOL0), vm_count $(jget vm_count)"
        sleep 0.1
    done
    echo "  pool back to $POOL0 bytes free, no VM listed"
}

# contained WHAT: MicroV runs on every CPU, Linux is healthy, the workload
# gives its reference checksums on every CPU, the pool is back to its
# baseline, and a new guest runs.
contained() {
    check "after $1: contained (MicroV on every CPU, workload checksums, pool at baseline, a new guest runs)"
    expect_running_on_all
    kernel_healthy
    workload_unchanged "after $1"
    pool_back "$1"
    hello_runs "after $1"
}

# start_bg KIND TEXT: starts guest KIND in the background (VMM=pid, output
# in $G/KIND.out) and waits for TEXT on its console.
start_bg() {
    : >"$G/$1.out"
    microv run --kernel "$G/$1.elf" --mem 32M >"$G/$1.out" 2>&1 &
    VMM=$!
    wait_line "$G/$1.out" "$2" "$VMM"
}

# loaded_workloads WHAT: while a hostile guest runs, the workload on every
# CPU at once (each pinned) gives the reference checksums; sets WL_TIME
# (hundredths of a second for all of them).
loaded_workloads() {
    local c t0 pids=
    t0=$(now_cs)
    for c in $(online_cpus); do
        taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $G/wl-$c $WL_LINES" &
        pids="$pids $!"
    done
    for p in $pids; do
        wait "$p" || fail "$1: a pinned workload failed"
    done
    WL_TIME=$(($(now_cs) - t0))
    for c in $(online_cpus); do
        expect_eq "$1: workload checksums on CPU $c" "$(cat "$G/wl-$c/sums")" "$WL_SUMS"
    done
    echo "  workloads on every CPU at once: $(secs "$WL_TIME") s (idle: $(secs "$WL_IDLE") s)"
    [ "$WL_TIME" -le $((WL_IDLE * 10 + 500)) ] ||
        fail "$1: the root's workloads took $(secs "$WL_TIME") s, more than 10 times the idle $(secs "$WL_IDLE") s + 5 s"
}

# kill_vmm WHAT KIND: the VMM of guest KIND is still running; SIGKILL ends
# it within 5 s.
kill_vmm() {
    local t0 dt
    kill -0 "$VMM" 2>/dev/null || fail "$1: the VMM ended on its own: $(cat "$G/$2.out")"
    t0=$(now_cs)
    kill -9 "$VMM"
    wait "$VMM" 2>/dev/null || true
    dt=$(($(now_cs) - t0))
    echo "  kill -9 of the VMM took $(secs "$dt") s"
    [ "$dt" -le 500 ] || fail "$1: kill -9 took $(secs "$dt") s to end the VMM"
}

# vm_exits: the running VM's exit counts from microv status (one line).
vm_exits() {
    status_json
    grep '^vms.0.exits\.' "$MVT_TMP/status.flat" | tr '\n' ' '
}

check "natively: the workload's reference checksums and time"
t0=$(now_cs)
workload_reference 20000
WL_IDLE=$(($(now_cs) - t0))

# The test extension serves hv.test_fault (TEST_HOOKS): a guest that got
# past the privilege check with it would make MicroV fault.
check "start MicroV (test extension); the root's PCI configuration, SYSCFG and TOP_MEM for later"
must microv start --extension /usr/lib/microv/microv-extension-test.elf
expect_running_on_all
PCI0=$(cat /sys/bus/pci/devices/*/config | sha256sum | cut -d' ' -f1)
echo "  PCI configuration space of $(ls /sys/bus/pci/devices | wc -l) devices: sha256 $PCI0"
mvp_load
for c in $(online_cpus); do
    for m in 0xc0010010 0xc001001a; do
        must_mvp wrmsr cpu="$c" msr="$m" count=0
        eval "MSR0_${c}_$m=\"$(mvp_get read) $(mvp_get value)\""
    done
done

# MicroV keeps a destroyed vCPU's state pages for the next vCPU, and the
# first VM builds the guests' shared maps: the baseline is taken once two
# VMs have run at the same time (as during the storms below).
check "harmless guests first, two at a time (a spinning one and a hello); the pool baseline after them"
start_bg spin "spin: start"
hello_runs "beside a spinning guest"
kill -9 "$VMM"
wait "$VMM" 2>/dev/null || true
hello_runs "first alone"
status_json
POOL0=$(jget pool.free_bytes)
echo "  baseline: $POOL0 bytes free"

# ---- 1. triple fault ----------------------------------------------------------
check "1. triple fault (IDT limit 0, int3): the VMM reports it and ends with status 0"
vm triple
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
out_has "triple: start" || fail "the guest did not start"
out_lacks "survived" || fail "the guest survived int3 with a zero-limit IDT"
out_has "the guest reset itself (triple fault)" || fail "no triple-fault report"
out_has "shutdown 1" || fail "no shutdown exit counted"
contained "a triple fault"

# ---- 2. management hypercalls ----------------------------------------------------
check "2. every management hypercall from guest ring 0 (R10 a made-up handle, R11 = 1: hv.test_fault's page fault) is refused (PermissionDenied); id.* work; a foreign vmmcall and vmcall raise #UD"
vm hypercalls
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
n=0
for name in $MANAGEMENT; do
    line=$(printf '%s\n' "$RUN_OUT" | grep " $name status=") || fail "no line for $name"
    case "$line" in
    *" $name status=0000000000000003") n=$((n + 1)) ;;
    *) fail "$name from the guest: $line (expected status 3, PermissionDenied)" ;;
    esac
done
expect_eq "management calls refused" "$n" 18
expect_eq "hc lines" "$(printf '%s\n' "$RUN_OUT" | grep -c '^hc ')" 18
out_has "hv.stop_pp refused: r10=5EED5EED5EED5EED r11=0000000000000001" ||
    fail "a refused call changed R10/R11"
out_has "id.version status=0000000000000000 r10=0000000100000000 " || fail "id.version did not report ABI 1.0"
out_has "id.capabilities status=0000000000000000 r10=8000000000000101" ||
    fail "id.capabilities did not report LATE_LAUNCH|AMD_SVM|TEST_HOOKS"
out_has "unknown group status=0000000000000001" || fail "an unknown call was not UnknownCall"
out_has "flag bits status=0000000000000001" || fail "flag bits were not UnknownCall"
out_has "foreign vmmcall rax=0: #UD at " || fail "a foreign vmmcall did not raise #UD"
out_has "vmcall: #UD at " || fail "vmcall did not raise #UD"
out_has "hypercalls: end" || fail "the guest did not finish"
contained "management hypercalls from a guest (hv.test_fault, live in this extension, among them)"

# ---- 3. SVM instructions -------------------------------------------------------------
check "3. vmrun, vmload, vmsave, stgi, clgi, skinit, invlpga each raise #UD in the guest"
vm svm
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
for i in vmrun vmload vmsave stgi clgi skinit invlpga; do
    out_has "$i: #UD at " || fail "$i did not raise #UD"
done
out_has "svm: end" || fail "the guest did not finish"
contained "SVM instructions in a guest"

# ---- 4. reads outside guest RAM ----------------------------------------------------------
check "4. reads at 1 GiB, 4 GiB, 512 GiB - 4 KiB and at a root page's physical address never reach root memory"
mv-physpage "$MARKER" >"$G/physpage" &
PHYSPAGE=$!
wait_line "$G/physpage" '^pa=' "$PHYSPAGE"
PA=$(sed -n 's/^pa=//p' "$G/physpage")
must_mvp phys pa="$PA"
[ "$(mvp_get hex)" = "$MARKER_HEX" ] || fail "control: the root does not see its marker at $PA: $MVP_OUT"
mv-guest-elf readfar "$PA" >"$G/readfar.elf"
vm readfar
kill "$PHYSPAGE"
wait "$PHYSPAGE" 2>/dev/null || true
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
for a in 0000000040000000 0000000100000000 0000007FFFFFF000; do
    out_has "read $a = FFFFFFFFFFFFFFFF" || fail "the read at $a did not float high (no device there)"
done
out_lacks "$MARKER_Q0" && out_lacks "$MARKER_Q1" && out_lacks "MVHOSTIL" ||
    fail "the guest read the root's marker"
pa_hex=$(printf '%016X' "$PA")
if [ $((PA)) -ge $((32 << 20)) ]; then
    out_has "read $pa_hex = FFFFFFFFFFFFFFFF" || fail "the read at the root page's address $PA did not float high"
    out_has "mmio_read 5" || fail "expected 5 MMIO reads"
else
    echo "  $PA is inside the guest's 32 MiB: the guest read its own RAM there"
    out_has "mmio_read 3" || fail "expected 3 MMIO reads"
fi
out_has "readfar: end" || fail "the guest did not finish"
contained "reads outside guest RAM"

# ---- 5. MSRs -------------------------------------------------------------------------
check "5. wrmsr 0 to every MSR of 0-0x1fff, 0xc0000000-0xc0001fff, 0xc0010000-0xc0011fff, 0x40000000-0x400000ff; the platform MSRs"
vm msrs
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
sweep=$(printf '%s\n' "$RUN_OUT" | sed -n 's/^msr sweep: //p')
[ -n "$sweep" ] || fail "no sweep summary"
faulted=$((0x$(echo "$sweep" | sed -n 's/.*faulted=\([0-9A-F]*\).*/\1/p')))
accepted=$((0x$(echo "$sweep" | sed -n 's/.*accepted=\([0-9A-F]*\).*/\1/p')))
echo "  $faulted MSR writes raised #GP, $accepted were accepted"
expect_eq "MSRs swept" $((faulted + accepted)) $((3 * 0x2000 + 0x100 - 1))
oks=$(printf '%s\n' "$RUN_OUT" | sed -n 's/^wrmsr ok //p')
expect_eq "'wrmsr ok' lines" "$(printf '%s\n' "$oks" | grep -c .)" "$accepted"
echo "  accepted: $(echo $oks)"
# Accepted writes go to the guest's own state (SYSENTER, PAT, TSC_DEADLINE,
# the x2APIC, the SYSCALL MSRs, FS/GS bases, ...) or are ignored; none may
# be a platform MSR: TSC, APIC_BASE, microcode, DEBUGCTL, XSS, MTRRs,
# machine-check banks, SYSCFG, HWCR, IORRs, TOP_MEM/TOP_MEM2, the patch
# loader, the MMIO configuration base, SMM and SVM (VM_CR, VM_HSAVE_PA).
for m in $oks; do
    case "$m" in
    00000277) ;;
    00000010 | 0000001B | 0000008B | 000001D9 | 00000DA0 | 000002[0-9A-F][0-9A-F] | 000004[0-7][0-9A-F] | \
        C001001[0-9A-D] | C0010020 | C0010058 | C001011[1-8])
        fail "the guest's write of 0 to platform MSR 0x$m was accepted"
        ;;
    esac
done
for m in 00000174 00000277 C0000081 C0000100; do
    printf '%s\n' "$oks" | grep -qx "$m" || fail "the guest could not write its own MSR 0x$m"
done
if printf '%s\n' "$oks" | grep -q '^40000'; then
    fail "a write to the hypervisor MSR range 0x40000000-0x400000ff was accepted"
fi
for n in APIC_BASE EFER VM_HSAVE_PA VM_CR SYSCFG TOP_MEM TOP_MEM2 HWCR MTRR_DEF_TYPE PATCH_LOADER TSC; do
    printf '%s\n' "$RUN_OUT" | grep -q "^wrmsr $n=[0-9a-f]*: #GP$" || fail "wrmsr $n did not raise #GP"
done
for n in VM_HSAVE_PA VM_CR SYSCFG TOP_MEM; do
    out_has "rdmsr $n: #GP" || fail "rdmsr $n did not raise #GP"
done
out_has "rdmsr EFER: ok 0000000000000500" || fail "the guest's EFER is not LME|LMA (SVME must stay hidden)"
out_has "rdmsr APIC_BASE: ok 00000000FEE00D00" || fail "APIC_BASE moved or changed mode"
out_has "msrs: end" || fail "the guest did not finish"
for c in $(online_cpus); do
    for m in 0xc0010010 0xc001001a; do
        must_mvp wrmsr cpu="$c" msr="$m" count=0
        eval "before=\$MSR0_${c}_$m"
        expect_eq "the root's MSR $m on CPU $c (read, value)" "$(mvp_get read) $(mvp_get value)" "$before"
    done
done
contained "a guest's MSR writes"

# ---- 6. I/O ports ----------------------------------------------------------------------
check "6. out 0 to every port (but COM1) and in from every port: only the VMM's devices answer; the root's PCI configuration is unchanged"
vm ports
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
out_has "ports: out 0000FFF8, in 00010000, not ff " || fail "the port summary is not as expected"
answered=$(printf '%s\n' "$RUN_OUT" | sed -n 's/^in \([0-9A-F]*\) = .*/\1/p')
for p in $answered; do
    # The PIT 0x40-0x43 (a running count may read 0xff by chance) and its
    # port 0x61, the i8042 0x60 and 0x64, the CMOS clock 0x70-0x71, COM1
    # 0x3f8-0x3ff, ACPI power 0x600-0x602.
    case "$p" in
    0000004[0-3] | 0000006[014] | 0000007[01] | 000003F[89A-F] | 0000060[0-2]) ;;
    *) fail "port 0x$p answered something but all ones: not one of the VMM's devices" ;;
    esac
done
for p in 00000060 00000061 00000064 00000070 00000071 000003F8 000003FD 00000600; do
    printf '%s\n' "$answered" | grep -qx "$p" || fail "port 0x$p (one of the VMM's devices) did not answer"
done
echo "  ports that answered: $(printf '%s\n' "$answered" | sed 's/^0000//' | tr '\n' ' ')"
out_has "io_in 65536" || fail "not every in exited to the VMM"
out_has "ports: end" || fail "the guest did not finish"
expect_eq "sha256 of the root's PCI configuration space" \
    "$(cat /sys/bus/pci/devices/*/config | sha256sum | cut -d' ' -f1)" "$PCI0"
contained "out and in on every port"

# ---- 7. garbage page tables ------------------------------------------------------------------
check "7a. CR3 = a page of 0xff bytes: #PF on the next fetch, then a triple fault"
vm badcr3-ff
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
out_has "badcr3-ff: start" || fail "the guest did not start"
out_lacks "survived" || fail "the guest ran on garbage page tables"
out_has "the guest reset itself (triple fault)" || fail "no triple-fault report"
contained "garbage page tables"

check "7b. CR3 outside guest RAM (0x7f00000000): the table walk leaves guest RAM; the VMM reports it or the guest triple-faults"
vm badcr3-far
out_has "badcr3-far: start" || fail "the guest did not start"
out_lacks "survived" || fail "the guest ran with its page tables outside RAM"
if [ "$RUN_RC" -eq 0 ]; then
    out_has "triple fault" || fail "microv run exited 0 without a triple fault"
else
    out_has "0x7f00000000" || fail "the VMM's error does not name the address (exit $RUN_RC)"
fi
contained "page tables outside guest RAM"

# ---- 8. self-IPI storm, interrupts off ----------------------------------------------------------
check "8. x2APIC self-IPIs with interrupts off, delivered once interrupts are on, then a storm with interrupts off"
start_bg ipi-cli "ipi-cli: storming"
grep -q "ipi-cli: delivered 00000000000000E0" "$G/ipi-cli.out" ||
    fail "the 224 pending vectors were not delivered once each: $(cat "$G/ipi-cli.out")"
sleep 1
echo "  the storming VM: $(vm_exits)"
loaded_workloads "during the interrupts-off IPI storm"
hello_runs "during the interrupts-off IPI storm"
kill_vmm "the interrupts-off IPI storm" ipi-cli
contained "an interrupts-off self-IPI storm"

# ---- 9. self-IPI storm, interrupts on ---------------------------------------------------------
check "9. a self-IPI storm with interrupts on (the handler EOIs and sends again): the root's work completes, SIGKILL ends it"
start_bg ipi-sti "tick "
ticks0=$(grep -c '^tick ' "$G/ipi-sti.out")
loaded_workloads "during the interrupts-on IPI storm"
hello_runs "during the interrupts-on IPI storm"
ticks1=$(grep -c '^tick ' "$G/ipi-sti.out")
echo "  the storm went on meanwhile: $ticks0 -> $ticks1 ticks of 0x1000 interrupts; $(tail -n 1 "$G/ipi-sti.out")"
[ "$ticks1" -gt "$ticks0" ] || fail "the storming guest made no progress while the root worked"
echo "  the storming VM: $(vm_exits)"
kill_vmm "the interrupts-on IPI storm" ipi-sti
contained "an interrupts-on self-IPI storm"

# ---- 10. spin with interrupts off -------------------------------------------------------------
check "10. a guest spinning with interrupts off: the workload completes on every CPU, SIGKILL ends it promptly"
start_bg spin "spin: start"
for c in $(online_cpus); do
    t0=$(now_cs)
    taskset -c "$c" sh -c ". $MVT_DIR/e2e-lib.sh; workload $G/spin-$c $WL_LINES" ||
        fail "the workload pinned to CPU $c failed"
    echo "  workload pinned to CPU $c: $(secs $(($(now_cs) - t0))) s"
    expect_eq "workload checksums on CPU $c" "$(cat "$G/spin-$c/sums")" "$WL_SUMS"
done
loaded_workloads "during the spin"
hello_runs "during the spin"
kill_vmm "the spin" spin
contained "a spin with interrupts off"

# ---- 11. CPUID, RDTSCP, RDPID ----------------------------------------------------------------
check "11. CPUID shows MicroV and hides SVM and VMX; RDTSCP and RDPID read the guest's own TSC_AUX (0) or raise #UD as the root's CPU does"
vm cpuid
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
out_has "cpuid 40000000 eax=40000010 ebx=7263694DMicr ecx=694D566FoVMi edx=566F7263croV" ||
    fail "CPUID 0x40000000 does not say MicroVMicroV"
reg() {
    printf '%s\n' "$RUN_OUT" | sed -n "s/^cpuid $1 .* $2=\([0-9A-F]*\).*/\1/p"
}
ecx1=$((0x$(reg 00000001 ecx)))
[ $((ecx1 >> 31 & 1)) -eq 1 ] || fail "CPUID 1 ECX.hypervisor is clear"
[ $((ecx1 >> 5 & 1)) -eq 0 ] || fail "CPUID 1 ECX.VMX is set"
[ $(((0x$(reg 80000001 ecx) >> 2) & 1)) -eq 0 ] || fail "CPUID 0x80000001 ECX.SVM is set"
out_has "cpuid 8000000a eax=00000000 ebx=00000000 ecx=00000000 edx=00000000" ||
    fail "CPUID 0x8000000a (SVM features) is not empty"
# The guest sees RDTSCP as the root does (TSC_AUX is switched: the guest
# reads its own, 0 after reset, never the root's CPU number).
root_rdtscp=$((($(cpuid-query 0x80000001 | sed -n 's/.*edx=\(0x[0-9a-f]*\).*/\1/p') >> 27) & 1))
[ $(((0x$(reg 80000001 edx) >> 27) & 1)) -eq "$root_rdtscp" ] ||
    fail "CPUID 0x80000001 EDX.RDTSCP differs from the root's ($root_rdtscp)"
if [ "$root_rdtscp" -eq 1 ]; then
    out_has "rdtscp:  ecx=00000000" || fail "RDTSCP did not read the guest's TSC_AUX (0)"
else
    out_has "rdtscp: #UD at " || fail "RDTSCP did not raise #UD on a CPU without it"
fi
# The emulated EPYC has no RDPID (88-microvm-tsc-aux.sh runs with it).
out_has "rdpid: #UD at " || out_has "rdpid:  rax=0000000000000000" ||
    fail "RDPID neither raised #UD nor read the guest's TSC_AUX (0)"
out_has "cpuid: end" || fail "the guest did not finish"
contained "CPUID, RDTSCP and RDPID"

# ---- 12. IPIs across VMs -----------------------------------------------------------------
check "12. a guest sends every kind of IPI to every APIC ID, forever; a second VM (its vCPU also APIC ID 0) receives nothing"
start_bg ipi-cross "ipi-cross: rounds "
rounds0=$(grep -c '^ipi-cross: rounds ' "$G/ipi-cross.out")
vm ipi-listen
rounds1=$(grep -c '^ipi-cross: rounds ' "$G/ipi-cross.out")
[ "$RUN_RC" -eq 0 ] || fail "the listening guest's microv run exited $RUN_RC"
out_has "ipi-listen: irr=00000000" || fail "the listening guest's IRR saw vectors from the other VM"
out_lacks "ipi-listen: interrupt" || fail "the listening guest took an interrupt it never asked for"
out_lacks "unexpected exception" || fail "the listening guest took an exception (an NMI?)"
out_has "ipi-listen: end" || fail "the listening guest did not finish"
echo "  the sender went on meanwhile: $rounds0 -> $rounds1 lines of 4 rounds (256 APIC IDs x 6 ICR writes each)"
[ "$rounds1" -gt "$rounds0" ] || fail "the sending guest made no progress while the listener ran"
kill_vmm "the IPI sender" ipi-cross
contained "IPIs to every APIC ID"

# ---- 13. XCR0 -----------------------------------------------------------------------------
check "13. XSETBV in a guest: valid values are the guest's own, invalid ones raise #GP; the root's XCR0 is unchanged"
xcr0_view() {
    local c
    for c in $(online_cpus); do
        printf 'cpu%s:%s ' "$c" "$(taskset -c "$c" cpuid-query 0xd)"
    done
}
XSAVE0=$(xcr0_view)
vm xsetbv
[ "$RUN_RC" -eq 0 ] || fail "microv run exited $RUN_RC"
out_has "xsetbv XCR0=1: ok" || fail "XCR0 = x87 was refused"
for v in XCR0=5 XCR0=0 XCR0=ffffffffffffffff XCR1=1; do
    out_has "xsetbv $v: #GP" || fail "xsetbv $v did not raise #GP"
done
out_has "xsetbv XCR0=3: ok" || fail "XCR0 = x87|SSE was refused"
out_has "xgetbv XCR0=0000000000000003" || fail "the guest does not read back its own XCR0"
out_has "xsetbv: end" || fail "the guest did not finish"
expect_eq "CPUID 0xd (XSAVE sizes for the current XCR0) on every CPU" "$(xcr0_view)" "$XSAVE0"
contained "XSETBV from a guest"

# ---- 14. EFER ------------------------------------------------------------------------------
check "14. EFER = 0 in long mode with paging on: #GP on hardware; at worst the guest wrecks itself"
vm efer
out_has "rdmsr EFER: ok 0000000000000500" || fail "the guest's EFER is not LME|LMA"
if out_has "wrmsr EFER=0: #GP"; then
    out_has "efer: end" || fail "the guest did not finish after the #GP"
else
    echo "  note: MicroV accepted EFER = 0 with CR0.PG set (hardware raises #GP); the guest went on in a mode it cannot run in:"
    printf '%s\n' "$RUN_OUT" | tail -n 1 | sed 's/^/    /'
    [ "$RUN_RC" -eq 0 ] && out_has "triple fault" || out_has "run failed" ||
        fail "the guest neither faulted nor finished cleanly"
fi
contained "EFER = 0 in long mode"

# ---- 15. halted forever ------------------------------------------------------------------------
check "15. guests halted forever (cli; hlt and sti; hlt with nothing to wake them): cheap for the root, SIGKILL ends them"
for k in halt-cli halt-sti; do
    start_bg "$k" "$k: start"
    sleep 0.5
    t0=$(cpu_ticks "$VMM")
    sleep 2
    t1=$(cpu_ticks "$VMM")
    echo "  $k: its VMM used $((t1 - t0)) ticks of CPU time in 2 s; $(vm_exits)"
    [ $((t1 - t0)) -le 150 ] || fail "$k: the VMM of a halted guest used $((t1 - t0)) ticks in 2 s"
    kill_vmm "$k" "$k"
done
contained "guests halted forever"

check "MicroV stops cleanly after all of it"
must microv stop
expect_state stopped
echo "hostile-guests: all checks passed"
