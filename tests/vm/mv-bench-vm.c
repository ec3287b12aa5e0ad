// SPDX-License-Identifier: MIT
//
// mv-bench-vm: the VM-lifetime cases of `cargo xtask bench`
// (tests/bench/bench.sh, docs/benchmarks.md).
//
//   mv-bench-vm create-destroy microv|kvm N
//       creates and destroys an empty VM N times (after one warm-up time):
//       each time opens the device (/dev/microv or /dev/kvm), creates a VM,
//       maps 256 MiB of anonymous memory (2 MiB aligned, MADV_HUGEPAGE, as
//       the VMM does) at guest-physical 0, creates one vCPU (MicroV: APIC
//       ID 0; KVM: vCPU 0), then closes the vCPU, the VM and the device and
//       unmaps the memory. The guest never runs. Prints
//
//         MVBENCH case=vm-create-destroy iterations=N tsc=0x… warmup=1 warmup_tsc=0x…
//
//       (the root's TSC around the N times, and around the warm-up).
//       MicroV pins the memory and builds its nested page tables when it is
//       mapped; KVM only records the region (it faults pages in when the
//       guest touches them): the figure is what each backend does for a VM
//       that never runs.
//
//   mv-bench-vm hold VCPUS
//       a MicroV VM with 256 MiB mapped and VCPUS vCPUs (APIC IDs 0, 1, …),
//       held until SIGTERM or SIGINT; prints `mv-bench-vm: holding` once it
//       is set up (for reading MicroV's free pool meanwhile), exits 0.
//
// Exit status: 0 ok; 1 a call failed (the line says which); 2 usage.
// Built statically by `cargo xtask build` with the driver's generated
// header (loaders/linux/microv_abi.h).

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "microv_abi.h"

#define MIB (1UL << 20)
#define VM_BYTES (256 * MIB)
#define HUGE (2 * MIB)

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static int fail(const char *what)
{
	fprintf(stderr, "mv-bench-vm: %s failed: %s (errno %d)\n", what, strerror(errno), errno);
	return -1;
}

struct vm {
	int dev, vm, vcpus[2];
	int nvcpus;
	void *map;		/* what mmap returned */
	uint8_t *mem;		/* 2 MiB aligned inside it */
};

static int memory(struct vm *v)
{
	v->map = mmap(NULL, VM_BYTES + HUGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (v->map == MAP_FAILED)
		return fail("mmap of the guest memory");
	v->mem = (uint8_t *)(((uintptr_t)v->map + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	madvise(v->mem, VM_BYTES, MADV_HUGEPAGE);
	return 0;
}

static int create_microv(struct vm *v, int nvcpus)
{
	struct mv_create_vm_args c = { 0 };
	int i;

	v->dev = open("/dev/microv", O_RDWR | O_CLOEXEC);
	if (v->dev < 0)
		return fail("open /dev/microv");
	v->vm = ioctl(v->dev, MV_IOC_CREATE_VM, &c);
	if (v->vm < 0)
		return fail("MV_IOC_CREATE_VM");
	if (memory(v))
		return -1;
	struct mv_map_memory_args m = {
		.user_addr = (uint64_t)(uintptr_t)v->mem,
		.size = VM_BYTES,
		.gpa = 0,
		.flags = MV_MAP_READ | MV_MAP_WRITE | MV_MAP_EXECUTE,
	};
	if (ioctl(v->vm, MV_IOC_VM_MAP_MEMORY, &m))
		return fail("MV_IOC_VM_MAP_MEMORY (256 MiB at 0)");
	for (i = 0; i < nvcpus; i++) {
		struct mv_create_vcpu_args a = { .apic_id = (uint32_t)i };

		v->vcpus[i] = ioctl(v->vm, MV_IOC_VM_CREATE_VCPU, &a);
		if (v->vcpus[i] < 0)
			return fail("MV_IOC_VM_CREATE_VCPU");
		v->nvcpus = i + 1;
	}
	return 0;
}

static int create_kvm(struct vm *v)
{
	v->dev = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->dev < 0)
		return fail("open /dev/kvm");
	v->vm = ioctl(v->dev, KVM_CREATE_VM, 0);
	if (v->vm < 0)
		return fail("KVM_CREATE_VM");
	if (memory(v))
		return -1;
	struct kvm_userspace_memory_region r = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = VM_BYTES,
		.userspace_addr = (uint64_t)(uintptr_t)v->mem,
	};
	if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r))
		return fail("KVM_SET_USER_MEMORY_REGION (256 MiB at 0)");
	v->vcpus[0] = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	if (v->vcpus[0] < 0)
		return fail("KVM_CREATE_VCPU");
	v->nvcpus = 1;
	return 0;
}

static void destroy(struct vm *v)
{
	int i;

	for (i = 0; i < v->nvcpus; i++)
		close(v->vcpus[i]);
	if (v->vm >= 0)
		close(v->vm);
	if (v->dev >= 0)
		close(v->dev);
	if (v->map && v->map != MAP_FAILED)
		munmap(v->map, VM_BYTES + HUGE);
}

static int once(int kvm)
{
	struct vm v = { .dev = -1, .vm = -1 };
	int rc = kvm ? create_kvm(&v) : create_microv(&v, 1);

	destroy(&v);
	return rc;
}

static int create_destroy(int kvm, unsigned long n)
{
	uint64_t t0, t1, t2;
	unsigned long i;

	t0 = rdtsc();
	if (once(kvm))
		return 1;
	t1 = rdtsc();
	for (i = 0; i < n; i++)
		if (once(kvm))
			return 1;
	t2 = rdtsc();
	printf("MVBENCH case=vm-create-destroy iterations=%lu tsc=0x%016llX warmup=1 warmup_tsc=0x%016llX\n",
	       n, (unsigned long long)(t2 - t1), (unsigned long long)(t1 - t0));
	return 0;
}

static void on_term(int sig)
{
	(void)sig;
}

static int hold(int nvcpus)
{
	struct vm v = { .dev = -1, .vm = -1 };
	struct sigaction sa;
	sigset_t block, old;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old);
	if (create_microv(&v, nvcpus)) {
		destroy(&v);
		return 1;
	}
	printf("mv-bench-vm: holding\n");
	fflush(stdout);
	sigsuspend(&old);
	destroy(&v);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: mv-bench-vm create-destroy microv|kvm N\n"
			"       mv-bench-vm hold 1|2\n");
	exit(2);
}

int main(int argc, char **argv)
{
	char *end;
	unsigned long n;

	if (argc == 4 && !strcmp(argv[1], "create-destroy")) {
		int kvm = !strcmp(argv[2], "kvm");

		if (!kvm && strcmp(argv[2], "microv"))
			usage();
		n = strtoul(argv[3], &end, 0);
		if (*end || n == 0 || n > 100000)
			usage();
		return create_destroy(kvm, n);
	}
	if (argc == 3 && !strcmp(argv[1], "hold")) {
		n = strtoul(argv[2], &end, 0);
		if (*end || n < 1 || n > 2)
			usage();
		return hold((int)n);
	}
	usage();
	return 2;
}
