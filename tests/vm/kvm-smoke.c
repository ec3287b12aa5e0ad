// SPDX-License-Identifier: MIT
//
// kvm-smoke: proves that Linux's own KVM works in the machine it runs in.
// It creates a VM with one vCPU, runs a few real-mode instructions that
// compute a value and write it to an I/O port, then HLT, and checks that KVM
// reported exactly that. Used by the e2e tests to check the emulated machine
// (and, later, that MicroV lets KVM keep working beneath it).
//
// Built statically by `cargo xtask build` into target/microv/kvm-smoke.

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUEST_MEM_SIZE 0x10000
#define CODE_ADDR 0x1000
#define PORT 0x10
#define START 0x1234
#define EXPECTED (START + 10 + 9 + 8 + 7 + 6 + 5 + 4 + 3 + 2 + 1)

// 16-bit real-mode code: ax = START + sum(10..1); out PORT, ax; hlt.
static const uint8_t code[] = {
	0xb8, START & 0xff, START >> 8, // mov ax, START
	0xb9, 0x0a, 0x00,		// mov cx, 10
	0x01, 0xc8,			// again: add ax, cx
	0xe2, 0xfc,			// loop again
	0xe7, PORT,			// out PORT, ax
	0xf4,				// hlt
};

static int fail(const char *what)
{
	printf("kvm-smoke: FAILED: %s: %s\n", what, strerror(errno));
	return 1;
}

static const char *exit_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_IO: return "KVM_EXIT_IO";
	case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
	case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
	case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN (guest triple fault)";
	case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
	default: return "another exit";
	}
}

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("open /dev/kvm (is kvm_amd loaded? try: modprobe kvm_amd)");
	int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		printf("kvm-smoke: FAILED: KVM API version %d, expected %d\n", api, KVM_API_VERSION);
		return 1;
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");

	uint8_t *mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap guest memory");
	memcpy(mem + CODE_ADDR, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM_SIZE,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < (int)sizeof(struct kvm_run))
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run");

	// Real mode at 0000:CODE_ADDR.
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_ADDR, .rflags = 0x2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");

	// Expect exactly: one OUT of EXPECTED to PORT, then HLT.
	int seen_out = 0;
	uint16_t value = 0;
	for (int i = 0; i < 16; i++) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return fail("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != PORT ||
			    run->io.size != 2 || run->io.count != 1 || seen_out) {
				printf("kvm-smoke: FAILED: unexpected I/O exit: dir %u port 0x%x size %u count %u\n",
				       run->io.direction, run->io.port, run->io.size, run->io.count);
				return 1;
			}
			memcpy(&value, (uint8_t *)run + run->io.data_offset, sizeof(value));
			seen_out = 1;
			break;
		case KVM_EXIT_HLT:
			if (!seen_out) {
				printf("kvm-smoke: FAILED: guest halted without writing to port 0x%x\n", PORT);
				return 1;
			}
			if (value != EXPECTED) {
				printf("kvm-smoke: FAILED: guest wrote 0x%x, expected 0x%x\n", value, EXPECTED);
				return 1;
			}
			printf("kvm-smoke: ok (guest wrote 0x%x)\n", value);
			return 0;
		default:
			printf("kvm-smoke: FAILED: unexpected exit %u (%s)", run->exit_reason,
			       exit_name(run->exit_reason));
			if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
				printf(", hardware reason 0x%llx",
				       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
				printf(", suberror %u", run->internal.suberror);
			printf("\n");
			return 1;
		}
	}
	printf("kvm-smoke: FAILED: no HLT after 16 exits\n");
	return 1;
}
