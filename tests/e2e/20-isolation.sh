#!/bin/sh
# What the root VM (Linux) can and cannot see while MicroV runs beneath it:
# CPUID shows MicroV and hides SVM, kvm_amd refuses to load without harming
# the kernel, userspace gets only the discovery hypercalls, and neither
# Linux's kernel nor userspace can read the hypervisor's memory.
set -eu
. /usr/lib/microv-tests/e2e-lib.sh

ID_VERSION=0x764D000000000000
HANDLE_OPEN=0x764D000000010000
MAGIC_ASCII=MVKERNEL
MAGIC_HEX="4d 56 4b 45 52 4e 45 4c"
CONTROL=MVKERNELcontrol!
KERNEL_ELF=/usr/lib/microv/microv-kernel.elf

# hex16 FILE OFFSET: the 16 bytes at OFFSET in FILE as mvprobe prints them.
hex16() {
    od -An -v -tx1 -j "$2" -N 16 "$1" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
}

# le64 FILE OFFSET: the little-endian 64-bit number at OFFSET in FILE.
le64() {
    od -An -v -tu8 -j "$2" -N 8 "$1" | tr -d ' \n'
}

# probe_control PA WHEN: the probe reads the control page correctly.
probe_control() {
    probe "$1"
    case "$PROBE_LINE" in
    *"hex=$MAGIC_HEX 63 6f 6e 74 72 6f 6c 21 ascii=$CONTROL"*) ;;
    *) fail "$2: mvprobe did not read the control page at $1 (got: ${PROBE_LINE:-nothing})" ;;
    esac
}

# probe_hidden PA WHAT [SECRET_HEX]: the probe printed a line for PA that
# shows neither MicroV's magic nor SECRET_HEX.
probe_hidden() {
    probe "$1"
    case "$PROBE_LINE" in
    "mvprobe: pa=$1 hex="*) ;;
    *) fail "mvprobe printed no bytes for $2 at $1 (got: ${PROBE_LINE:-nothing})" ;;
    esac
    case "$PROBE_LINE" in
    *"$MAGIC_ASCII"* | *"$MAGIC_HEX"*)
        fail "the root kernel read MicroV's image header at $1 ($2): $PROBE_LINE" ;;
    esac
    if [ -n "${3:-}" ]; then
        case "$PROBE_LINE" in
        *"hex=$3 "*) fail "the root kernel read MicroV's own bytes at $1 ($2): $PROBE_LINE" ;;
        esac
    fi
}

check "control, natively: CPUID has no MicroV leaf, SVM is visible, vmmcall raises SIGILL"
native_everywhere

# An MSR outside the MSR permission map's ranges: beneath MicroV every
# access exits and is passed through to the real CPU (AMD's scalable
# machine-check registers live here; Linux polls them).
OUTSIDE_MSR=0xc0002000
check "control, natively: rdmsr/wrmsr of MSR $OUTSIDE_MSR"
probe_msr "$OUTSIDE_MSR"
case "$PROBE_LINE" in
"mvprobe: msr=$OUTSIDE_MSR read="*) native_msr_line=$PROBE_LINE ;;
*) fail "mvprobe printed no MSR line natively (got: ${PROBE_LINE:-nothing})" ;;
esac

# PCI configuration space goes through ports 0xCF8/0xCFC on this machine
# (i440FX, configuration mechanism 1): beneath MicroV those ports exit and
# the extension replays each access on the real port.
PCI_DEV=/sys/bus/pci/devices/0000:00:00.0/config
check "control, natively: the host bridge's PCI configuration space"
[ -r "$PCI_DEV" ] || fail "no $PCI_DEV to read"
native_pci=$(od -An -tx1 -v "$PCI_DEV" | tr -d ' \n')
[ -n "$native_pci" ] || fail "empty PCI configuration space natively"
echo "  first bytes: $(echo "$native_pci" | cut -c1-16)"

check "control, natively: mvprobe reads a page of known contents"
mv-physpage "$CONTROL" >"$MVT_TMP/physpage" &
physpage_pid=$!
i=0
while ! grep -qs "^pa=" "$MVT_TMP/physpage"; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "mv-physpage printed no address: $(cat "$MVT_TMP/physpage")"
    sleep 0.1
done
control_pa=$(sed -n 's/^pa=//p' "$MVT_TMP/physpage")
echo "  control page at $control_pa"
probe_control "$control_pa" "before start"

check "microv start"
must microv start
expect_running_on_all

for c in $(online_cpus); do
    check "CPU $c: CPUID 0x40000000 gives the signature MicroVMicroV"
    run taskset -c "$c" cpuid-query 0x40000000
    out_has "signature=MicroVMicroV" || fail "CPU $c: no MicroV signature: $RUN_OUT"
    out_has "eax=0x40000010" || fail "CPU $c: leaf 0x40000000 EAX is not the maximum leaf 0x40000010: $RUN_OUT"

    check "CPU $c: CPUID 0x80000001 hides SVM (ECX bit 2 clear)"
    svm_bit_on "$c"
    expect_eq "CPU $c: ECX.SVM beneath MicroV" "$SVM_BIT" 0
done

check "modprobe kvm_amd fails cleanly beneath MicroV"
run modprobe kvm_amd
[ "$RUN_RC" -ne 0 ] || fail "modprobe kvm_amd succeeded beneath MicroV"
if grep -q '^kvm_amd ' /proc/modules; then
    fail "kvm_amd is loaded beneath MicroV"
fi
[ ! -e /dev/kvm ] || fail "/dev/kvm exists beneath MicroV"
dmesg | grep -i 'kvm\|svm' | tail -n 5 | sed 's/^/  dmesg| /'

check "the kernel is alive after the failed modprobe and MicroV still runs"
kernel_healthy
expect_running_on_all

for c in $(online_cpus); do
    check "CPU $c, ring 3: id.version returns status 0 and ABI 1.0"
    run taskset -c "$c" mv-hypercall "$ID_VERSION"
    expect_eq "exit of mv-hypercall id.version" "$RUN_RC" 0
    case "$RUN_OUT" in
    "rax=0x0 r10=0x100000000 "*) ;;
    *) fail "CPU $c: id.version from ring 3 returned: $RUN_OUT" ;;
    esac

    check "CPU $c, ring 3: handle.open is refused with PermissionDenied (3)"
    run taskset -c "$c" mv-hypercall "$HANDLE_OPEN" 0x100000000
    expect_eq "exit of mv-hypercall handle.open" "$RUN_RC" 0
    case "$RUN_OUT" in
    "rax=0x3 "*) ;;
    *) fail "CPU $c: handle.open from ring 3 returned: $RUN_OUT" ;;
    esac

    check "CPU $c, ring 3: a vmmcall without MicroV's signature raises SIGILL"
    run taskset -c "$c" mv-hypercall 0x1234
    [ "$RUN_RC" -eq 2 ] && out_has sigill || fail "CPU $c: foreign vmmcall gave exit $RUN_RC: $RUN_OUT"
done

check "MicroV still runs on every CPU after the userspace hypercalls"
expect_running_on_all

status_json
first_pa=$(printf '0x%x' "$(jget pool.first_pa)")
pool_bytes=$(jget pool.bytes)
echo "  pool: $pool_bytes bytes, first byte at $first_pa"
[ "$first_pa" != 0x0 ] || fail "status reports no pool address"

# Bytes MicroV placed in its pool: the microkernel image is flattened from
# its first PT_LOAD segment on, which starts with the image header.
[ "$(od -An -tu4 -j 64 -N 4 "$KERNEL_ELF" | tr -d ' ')" = 1 ] ||
    fail "$KERNEL_ELF: the first program header is not PT_LOAD"
seg_off=$(le64 "$KERNEL_ELF" 72)
seg_size=$(le64 "$KERNEL_ELF" 96)
header_hex=$(hex16 "$KERNEL_ELF" "$seg_off")
echo "  image header: $header_hex"
case "$header_hex" in
"$MAGIC_HEX"*) ;;
*) fail "$KERNEL_ELF does not start its first segment with MVKERNEL: $header_hex" ;;
esac

check "control, beneath MicroV: mvprobe still reads ordinary memory"
probe_control "$control_pa" "beneath MicroV"

check "the root kernel cannot read the hypervisor's first page (image header)"
probe_hidden "$first_pa" "pool.first_pa" "$header_hex"

if [ "$seg_size" -ge $((0x1010)) ]; then
    code_hex=$(hex16 "$KERNEL_ELF" $((seg_off + 0x1000)))
    check "the root kernel cannot read the microkernel's code (pool page 1: $code_hex)"
    probe_hidden "$(printf '0x%x' $((first_pa + 0x1000)))" "pool page 1" "$code_hex"
fi

check "beneath MicroV, rdmsr/wrmsr of MSR $OUTSIDE_MSR behave exactly as natively"
status_json
exits_before=0
for cpu in $(online_cpus); do
    r=$(cpu_field "$cpu" exits.rdmsr); w=$(cpu_field "$cpu" exits.wrmsr)
    exits_before=$((exits_before + r + w))
done
probe_msr "$OUTSIDE_MSR"
[ "$PROBE_LINE" = "$native_msr_line" ] ||
    fail "MSR $OUTSIDE_MSR beneath MicroV gave '$PROBE_LINE', natively '$native_msr_line'"
status_json
exits_after=0
for cpu in $(online_cpus); do
    r=$(cpu_field "$cpu" exits.rdmsr); w=$(cpu_field "$cpu" exits.wrmsr)
    exits_after=$((exits_after + r + w))
done
echo "  rdmsr+wrmsr exits: $exits_before -> $exits_after"
[ "$exits_after" -ge $((exits_before + 2)) ] ||
    fail "the MSR accesses did not exit to MicroV ($exits_before -> $exits_after)"

check "beneath MicroV, PCI configuration reads give exactly the native bytes, through MicroV"
status_json
io_before=0
for cpu in $(online_cpus); do io_before=$((io_before + $(cpu_field "$cpu" exits.io))); done
pci_now=$(od -An -tx1 -v "$PCI_DEV" | tr -d ' \n')
[ "$pci_now" = "$native_pci" ] || fail "PCI configuration space differs beneath MicroV"
status_json
io_after=0
for cpu in $(online_cpus); do io_after=$((io_after + $(cpu_field "$cpu" exits.io))); done
echo "  io exits: $io_before -> $io_after"
# 256 bytes read as 64 dwords: an address write and a data read each.
[ "$io_after" -ge $((io_before + 64)) ] ||
    fail "the PCI configuration accesses did not exit to MicroV ($io_before -> $io_after)"

check "MicroV still runs after the probes, and the kernel is fine"
expect_running_on_all
kernel_healthy

check "microv stop works"
must microv stop
expect_state stopped
native_everywhere

check "after stop, the driver gave the pool back scrubbed (no hypervisor bytes left)"
probe_hidden "$first_pa" "old pool.first_pa after stop" "$header_hex"

check "control, after stop: mvprobe reads the control page"
probe_control "$control_pa" "after stop"
kill "$physpage_pid"
wait "$physpage_pid" 2>/dev/null || true

check "the kernel log shows no crash"
kernel_healthy

echo "isolation: all checks passed"
