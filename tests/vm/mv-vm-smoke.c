// SPDX-License-Identifier: MIT
//
// mv-vm-smoke: runs a tiny micro VM on MicroV through the driver's VM and
// vCPU file descriptors, as a VMM would, and checks every exit.
//
//   mv-vm-smoke          a real-mode guest that writes 'O' and 'K' to port
//                        0x3f8, reads a byte from it (the tool answers 0x5a)
//                        and writes it back, writes to guest-physical
//                        0xf0000 (not RAM: an MMIO exit), then halts with
//                        interrupts off. The driver sleeps through a HLT
//                        (the VMM never sees one): a signal after 1 s ends
//                        that RUN with EINTR, and the run page must say
//                        INTERRUPTED with RIP past the HLT (printed as
//                        `hlt`). Prints each exit and `mv-vm-smoke: ok` when
//                        the sequence is exactly the expected one.
//   mv-vm-smoke spin     a guest that spins with interrupts off (`cli; jmp $`)
//                        forever; prints `mv-vm-smoke: spinning` once it is
//                        about to run (for preemption and kill -9 tests).
//   mv-vm-smoke hold     a VM with memory and a vCPU, held until SIGTERM;
//                        prints `mv-vm-smoke: holding`, then after the
//                        signal what GET_REGS and RUN answer (`... ok` or
//                        `... failed: <strerror> (errno N)`), and exits 0
//                        (for tests where MicroV goes away under a VM).
//   mv-vm-smoke abuse    a hostile VMM: bad sizes, addresses and ranges,
//                        wrong mmaps, ioctls on the wrong fd, a second thread
//                        on a running vCPU, fds closed while it runs. Each
//                        must be refused with the documented errno (and
//                        nothing may crash); prints `mv-vm-smoke: abuse ok`.
//
// The guest's APIC timer (real-mode guests that enable the x2APIC, put its
// timer in TSC-deadline mode with vector 0xEC and write a deadline MS
// milliseconds ahead, then `sti`; the vector's handler writes 'T' to port
// 0x3f8, which ends the test, and halts; a raised vector
// 0x41 writes 'K' the same way, and a guest that leaves its HLT without an
// interrupt writes 'S'). Each prints `mv-vm-smoke: entering` just before
// the first RUN, then `mv-vm-smoke: woke by 'C' after W ms (expected E ms,
// ratio R), thread cpu U ms, N EINTR` and `mv-vm-smoke: timer ok` (the
// e2e script judges the times):
//   mv-vm-smoke timer MS       the guest halts until its timer fires (the
//                              driver sleeps the halted vCPU in the host).
//   mv-vm-smoke timer-spin MS  the guest spins with interrupts on (`jmp $`)
//                              until its timer fires (the driver's host
//                              timer ends the run in time).
//   mv-vm-smoke kick           deadline 10 s; after 300 ms another thread
//                              raises vector 0x41 in the run page and
//                              wakes the halted vCPU with MV_IOC_VCPU_KICK.
//   mv-vm-smoke signal         deadline 10 s; at 200 ms a bare SIGUSR1 (RUN
//                              fails with EINTR, the tool runs again and the
//                              guest must stay halted), at 400 ms vector
//                              0x41 raised and SIGUSR1 (as the VMM's
//                              doorbell does).
//
// Exit status: 0 ok; 1 a check failed (the line says which); 2 usage;
// 3 the driver says this MicroV does not serve micro VMs (EOPNOTSUPP).
//
// Built statically by `cargo xtask build` into target/microv/mv-vm-smoke,
// with the driver's generated header (loaders/linux/microv_abi.h).

#define _GNU_SOURCE // mremap
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "microv_abi.h"

#define PAGE 4096UL
#define MIB (1UL << 20)
#define CODE_GPA 0x1000
#define PORT 0x3f8
#define IN_VALUE 0x5a
#define MMIO_GPA 0xf0000
#define MMIO_RIP 0x1010 /* the `mov [0], al` below */
#define MMIO_LEN 3
#define HLT_NEXT_RIP 0x1015
#define TIMEOUT_S 60

// 16-bit real mode, loaded at guest-physical CODE_GPA (CS base 0).
static const uint8_t smoke_code[] = {
	0xba, 0xf8, 0x03, // 1000: mov dx, 0x3f8
	0xb0, 'O',	  // 1003: mov al, 'O'
	0xee,		  // 1005: out dx, al
	0xb0, 'K',	  // 1006: mov al, 'K'
	0xee,		  // 1008: out dx, al
	0xec,		  // 1009: in al, dx
	0xee,		  // 100a: out dx, al
	0xb8, 0x00, 0xf0, // 100b: mov ax, 0xf000
	0x8e, 0xd8,	  // 100e: mov ds, ax
	0xa2, 0x00, 0x00, // 1010: mov [0], al  (0xf0000: not mapped)
	0xfa,		  // 1013: cli (nothing will wake it)
	0xf4,		  // 1014: hlt
	0xeb, 0xfe,	  // 1015: jmp $
};

static const uint8_t spin_code[] = {
	0xfa,	    // cli
	0xeb, 0xfe, // jmp $
};

// The exits the smoke guest must produce, in order.
static const char *const expected[] = {
	"io out port 0x3f8 size 1 data 0x4f",
	"io out port 0x3f8 size 1 data 0x4b",
	"io in port 0x3f8 size 1",
	"io out port 0x3f8 size 1 data 0x5a",
	"mmio write gpa 0xf0000",
};
#define EXPECTED_EXITS (sizeof(expected) / sizeof(expected[0]))

static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

static void on_kick(int sig)
{
	(void)sig;
}

static int failures;

__attribute__((format(printf, 1, 2))) static void failf(const char *fmt, ...)
{
	va_list ap;

	printf("mv-vm-smoke: FAILED: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	failures++;
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double thread_cpu_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int die(const char *what)
{
	int e = errno;

	printf("mv-vm-smoke: FAILED: %s: %s (errno %d%s)\n", what, strerror(e), e,
	       e == ENODEV ? ", ENODEV: MicroV is not running" : "");
	return e == EOPNOTSUPP ? 3 : 1;
}

struct vm {
	int dev, vm, vcpu;
	uint8_t *mem; // 2 MiB, 2 MiB aligned
	struct mv_run_page *run;
};

static void *alloc_aligned(size_t size, size_t align)
{
	uint8_t *p = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	return (void *)a;
}

static int map_memory(int vmfd, void *addr, uint64_t size, uint64_t gpa, uint64_t flags)
{
	struct mv_map_memory_args a = {
		.user_addr = (uint64_t)(uintptr_t)addr,
		.size = size,
		.gpa = gpa,
		.flags = flags,
	};

	return ioctl(vmfd, MV_IOC_VM_MAP_MEMORY, &a);
}

static int create_vm(int dev, uint64_t *id)
{
	struct mv_create_vm_args a = { 0 };
	int fd = ioctl(dev, MV_IOC_CREATE_VM, &a);

	if (fd >= 0 && id)
		*id = a.vm_id;
	return fd;
}

static int create_vcpu(int vmfd, uint32_t apic_id, uint64_t *id)
{
	struct mv_create_vcpu_args a = { .apic_id = apic_id };
	int fd = ioctl(vmfd, MV_IOC_VM_CREATE_VCPU, &a);

	if (fd >= 0 && id)
		*id = a.vcpu_id;
	return fd;
}

static int vcpu_ioctl(int fd, unsigned long req)
{
	struct mv_vcpu_args a = { 0 };

	return ioctl(fd, req, &a);
}

static void seg(struct mv_run_segment *s, uint16_t attributes)
{
	s->base = 0;
	s->limit = 0xffff;
	s->selector = 0;
	s->attributes = attributes;
}

// Real mode at CODE_GPA: GET_REGS, edit, SET_REGS (as a VMM would).
static int set_real_mode(struct vm *v)
{
	struct mv_run_regs *r = &v->run->regs;

	if (vcpu_ioctl(v->vcpu, MV_IOC_VCPU_GET_REGS))
		return -1;
	memset(r->gprs, 0, sizeof(r->gprs));
	r->gprs[4] = 0xff00; // rsp
	r->rip = CODE_GPA;
	r->rflags = 2;
	r->cr0 = 0x10; // ET
	r->cr2 = 0;
	r->cr3 = 0;
	r->cr4 = 0;
	r->efer = 0;
	seg(&r->cs, 0x9b);
	seg(&r->ds, 0x93);
	seg(&r->es, 0x93);
	seg(&r->fs, 0x93);
	seg(&r->gs, 0x93);
	seg(&r->ss, 0x93);
	seg(&r->tr, 0x8b);
	seg(&r->ldt, 0x82);
	r->gdt.base = 0;
	r->gdt.limit = 0xffff;
	r->idt.base = 0;
	r->idt.limit = 0x3ff;
	return vcpu_ioctl(v->vcpu, MV_IOC_VCPU_SET_REGS);
}

// A VM with 64 KiB of RAM at 0 (code at CODE_GPA) and 1 MiB at 1 MiB (the
// second half of the buffer, unused by the guest: a second region, one
// physically contiguous run if the kernel gave it a huge page), one vCPU
// with its run page mapped, registers in real mode.
static int setup(struct vm *v, const uint8_t *code, size_t len)
{
	uint64_t vm_id, vcpu_id;

	memset(v, 0, sizeof(*v));
	v->vm = v->vcpu = -1;
	v->dev = open("/dev/microv", O_RDWR | O_CLOEXEC);
	if (v->dev < 0)
		return die("open /dev/microv");
	v->vm = create_vm(v->dev, &vm_id);
	if (v->vm < 0)
		return die("MV_IOC_CREATE_VM");
	v->mem = alloc_aligned(2 * MIB, 2 * MIB);
	if (!v->mem)
		return die("mmap guest memory");
	memset(v->mem, 0xf4, 2 * MIB); // hlt everywhere
	memcpy(v->mem + CODE_GPA, code, len);
	if (map_memory(v->vm, v->mem, 64 * 1024, 0, 0))
		return die("MV_IOC_VM_MAP_MEMORY (64 KiB at 0)");
	if (map_memory(v->vm, v->mem + MIB, MIB, MIB, MV_MAP_READ | MV_MAP_WRITE))
		return die("MV_IOC_VM_MAP_MEMORY (1 MiB at 1 MiB)");
	v->vcpu = create_vcpu(v->vm, 0, &vcpu_id);
	if (v->vcpu < 0)
		return die("MV_IOC_VM_CREATE_VCPU");
	v->run = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED)
		return die("mmap of the run page");
	if (set_real_mode(v))
		return die("setting the registers (GET_REGS/SET_REGS)");
	printf("mv-vm-smoke: vm %llu vcpu %llu\n", (unsigned long long)vm_id,
	       (unsigned long long)vcpu_id);
	return 0;
}

// Describes the exit in the run page the way `expected` spells it.
static void describe(const struct mv_run_page *run, char *buf, size_t n)
{
	const struct mv_run_exit *e = &run->exit;
	uint64_t mask;

	switch (e->reason) {
	case MV_EXIT_IO:
		if (e->io.direction) {
			snprintf(buf, n, "io in port 0x%x size %u", e->io.port, e->io.size);
			break;
		}
		mask = e->io.size >= 8 ? ~0ULL : (1ULL << (8 * e->io.size)) - 1;
		snprintf(buf, n, "io out port 0x%x size %u data 0x%llx", e->io.port, e->io.size,
			 (unsigned long long)(e->io.data & mask));
		break;
	case MV_EXIT_MMIO:
		snprintf(buf, n, "mmio %s gpa 0x%llx", e->mmio.access & 1 ? "write" : "read",
			 (unsigned long long)e->mmio.gpa);
		break;
	case MV_EXIT_HLT:
		snprintf(buf, n, "hlt");
		break;
	case MV_EXIT_SHUTDOWN:
		snprintf(buf, n, "shutdown (triple fault) at rip 0x%llx",
			 (unsigned long long)run->regs.rip);
		break;
	case MV_EXIT_FAIL_ENTRY:
		snprintf(buf, n, "fail_entry qualification 0x%llx",
			 (unsigned long long)e->qualification);
		break;
	case MV_EXIT_UNHANDLED:
		snprintf(buf, n, "unhandled qualification 0x%llx at rip 0x%llx",
			 (unsigned long long)e->qualification, (unsigned long long)run->regs.rip);
		break;
	default:
		snprintf(buf, n, "unknown exit reason %u", e->reason);
	}
}

// RUN, again after a signal that did not time the test out.
static int run_once(struct vm *v)
{
	for (;;) {
		if (!vcpu_ioctl(v->vcpu, MV_IOC_VCPU_RUN))
			return 0;
		if (errno != EINTR)
			return -1;
		if (v->run->exit.reason != MV_EXIT_INTERRUPTED) {
			failf("RUN failed with EINTR but the run page says exit %u, not INTERRUPTED",
			      v->run->exit.reason);
		}
		if (timed_out) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
}

// The smoke guest's last instructions, `cli; hlt`: the driver sleeps
// through the HLT, so only a signal (SIGALRM, 1 s on) ends that RUN: EINTR,
// with the HLT done (RIP past it) and the run page saying INTERRUPTED.
static int halted(struct vm *v)
{
	char line[160];

	alarm(0);
	timed_out = 0;
	alarm(1);
	if (run_once(v) == 0) {
		describe(v->run, line, sizeof(line));
		failf("the halted guest's RUN returned: %s", line);
		return 1;
	}
	if (errno != ETIMEDOUT)
		return die("MV_IOC_VCPU_RUN");
	if (v->run->exit.reason != MV_EXIT_INTERRUPTED || v->run->regs.rip != HLT_NEXT_RIP) {
		failf("after the HLT: exit %u, rip 0x%llx; expected INTERRUPTED, rip 0x%x (past the hlt)",
		      v->run->exit.reason, (unsigned long long)v->run->regs.rip, HLT_NEXT_RIP);
		return 1;
	}
	printf("hlt\n");
	if (failures)
		return 1;
	printf("mv-vm-smoke: ok\n");
	return 0;
}

static int smoke(void)
{
	struct vm v;
	char line[160];
	unsigned int n = 0;
	int rc = setup(&v, smoke_code, sizeof(smoke_code));

	if (rc)
		return rc;
	signal(SIGALRM, on_alarm);
	alarm(TIMEOUT_S);
	for (;;) {
		if (run_once(&v))
			return die(timed_out ? "the guest did not halt in time" : "MV_IOC_VCPU_RUN");
		describe(v.run, line, sizeof(line));
		printf("%s\n", line);
		fflush(stdout);
		if (n >= EXPECTED_EXITS || strcmp(line, expected[n])) {
			failf("exit %u is `%s`, expected `%s`", n, line,
			      n < EXPECTED_EXITS ? expected[n] : "none (the guest should have halted)");
			return 1;
		}
		n++;
		switch (v.run->exit.reason) {
		case MV_EXIT_IO:
			if (v.run->exit.io.direction == 1)
				v.run->exit.io.data = IN_VALUE; // the value `in` reads
			break;
		case MV_EXIT_MMIO:
			// Completed by the VMM: the store goes nowhere; skip it.
			if (v.run->regs.rip != MMIO_RIP) {
				failf("the MMIO exit's rip is 0x%llx, expected 0x%x",
				      (unsigned long long)v.run->regs.rip, MMIO_RIP);
				return 1;
			}
			v.run->regs.rip += MMIO_LEN;
			v.run->request |= 1; // SET_REGS: load regs (rip) before running
			return halted(&v);
		}
	}
}

static int spin(void)
{
	struct vm v;
	char line[160];
	int rc = setup(&v, spin_code, sizeof(spin_code));

	if (rc)
		return rc;
	printf("mv-vm-smoke: spinning\n");
	fflush(stdout);
	for (;;) {
		if (vcpu_ioctl(v.vcpu, MV_IOC_VCPU_RUN) == 0)
			break;
		if (errno != EINTR)
			return die("MV_IOC_VCPU_RUN");
	}
	describe(v.run, line, sizeof(line));
	failf("the spinning guest exited: %s", line);
	return 1;
}

static void report(const char *what, int rc)
{
	if (rc)
		printf("mv-vm-smoke: %s failed: %s (errno %d)\n", what, strerror(errno), errno);
	else
		printf("mv-vm-smoke: %s ok\n", what);
}

static int hold(void)
{
	struct vm v;
	sigset_t set;
	int sig, rc;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	rc = setup(&v, smoke_code, sizeof(smoke_code));
	if (rc)
		return rc;
	printf("mv-vm-smoke: holding\n");
	sigwait(&set, &sig);
	report("GET_REGS", vcpu_ioctl(v.vcpu, MV_IOC_VCPU_GET_REGS));
	report("RUN", vcpu_ioctl(v.vcpu, MV_IOC_VCPU_RUN));
	return 0;
}

// ---- abuse ------------------------------------------------------------------

// expect WHAT RESULT ERRNO: RESULT (an ioctl's or mmap's) failed with ERRNO.
static void expect_err(const char *what, long result, int want)
{
	int e = errno;

	if (result != -1)
		failf("%s: succeeded, expected errno %d (%s)", what, want, strerror(want));
	else if (e != want)
		failf("%s: errno %d (%s), expected %d (%s)", what, e, strerror(e), want, strerror(want));
	else {
		printf("refused: %s: %s\n", what, strerror(want));
	}
}

struct runner {
	int vcpu;
	int rc, err;
};

static void *runner_fn(void *p)
{
	struct runner *r = p;
	struct mv_vcpu_args a = { 0 };

	r->rc = ioctl(r->vcpu, MV_IOC_VCPU_RUN, &a);
	r->err = errno;
	return NULL;
}

// Creates VMs (vmfd < 0) or vCPUs of vmfd until the driver refuses one
// (MicroV's tables or pool are full), then closes them all.
static void exhaust(int dev, int vmfd)
{
	enum { MOST = 3000 };
	static int fds[MOST];
	struct rlimit rl = { MOST + 100, MOST + 100 };
	const char *what = vmfd < 0 ? "VM" : "vCPU";
	int n, e;

	setrlimit(RLIMIT_NOFILE, &rl);
	for (n = 0; n < MOST; n++) {
		fds[n] = vmfd < 0 ? create_vm(dev, NULL) : create_vcpu(vmfd, n, NULL);
		if (fds[n] < 0)
			break;
	}
	e = errno;
	if (n == MOST)
		failf("%d %ss and MicroV accepted every one", MOST, what);
	else if (e != ENOSPC && e != EBUSY && e != EINVAL)
		failf("%s %d: %s (errno %d); expected ENOSPC, EBUSY or EINVAL", what, n + 1,
		      strerror(e), e);
	else
		printf("refused: %s %d (MicroV is full): %s\n", what, n + 1, strerror(e));
	while (n--)
		close(fds[n]);
}

static int abuse(void)
{
	struct vm v;
	uint8_t *ro, *hole;
	void *p;
	int fd, vm2, vc2, rc = setup(&v, spin_code, sizeof(spin_code));
	struct mv_create_vcpu_args ca = { .apic_id = 1, .reserved = 1 };
	struct runner runner;
	pthread_t t;
	struct sigaction sa;
	struct timespec ms50 = { 0, 50 * 1000 * 1000 };
	uint64_t lim = MV_GUEST_PHYS_LIMIT;

	if (rc)
		return rc;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;
	sigaction(SIGUSR1, &sa, NULL); // no SA_RESTART: RUN must come back with EINTR
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);

	// Bad map arguments: refused before anything is pinned.
	expect_err("map size 0", map_memory(v.vm, v.mem, 0, 0x200000, 0), EINVAL);
	expect_err("map size not a page multiple", map_memory(v.vm, v.mem, 100, 0x200000, 0), EINVAL);
	expect_err("map unaligned user address", map_memory(v.vm, v.mem + 1, PAGE, 0x200000, 0), EINVAL);
	expect_err("map unaligned gpa", map_memory(v.vm, v.mem, PAGE, 0x200001, 0), EINVAL);
	expect_err("map unknown flags", map_memory(v.vm, v.mem, PAGE, 0x200000, 8), EINVAL);
	expect_err("map past the guest-physical limit",
		   map_memory(v.vm, v.mem, 2 * PAGE, lim - PAGE, 0), EINVAL);
	expect_err("map gpa + size overflowing",
		   map_memory(v.vm, v.mem, 2 * PAGE, ~0ULL & ~(PAGE - 1), 0), EINVAL);
	expect_err("map size overflowing (2^64 - 4 KiB)",
		   map_memory(v.vm, v.mem, ~0ULL & ~(PAGE - 1), PAGE, 0), EINVAL);
	expect_err("map a kernel address",
		   map_memory(v.vm, (void *)0xffff888000000000ULL, PAGE, 0x200000, 0), EFAULT);
	expect_err("map a user range running past the top of user space",
		   map_memory(v.vm, (void *)0x7ffffffff000ULL, 2 * PAGE, 0x200000, 0), EFAULT);
	hole = alloc_aligned(4 * PAGE, PAGE);
	munmap(hole, 4 * PAGE);
	expect_err("map unmapped user memory", map_memory(v.vm, hole, 4 * PAGE, 0x200000, 0), EFAULT);
	hole = alloc_aligned(4 * PAGE, PAGE);
	memset(hole, 1, 4 * PAGE);
	munmap(hole + 2 * PAGE, PAGE);
	expect_err("map a range whose third page is not mapped (two pinned, then unpinned)",
		   map_memory(v.vm, hole, 4 * PAGE, 0x200000, 0), EFAULT);
	ro = mmap(NULL, 4 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	expect_err("map read-only user memory", map_memory(v.vm, ro, 4 * PAGE, 0x200000, 0), EFAULT);
	expect_err("map the run page as guest memory",
		   map_memory(v.vm, v.run, PAGE, 0x200000, 0), EFAULT);
	expect_err("map over already mapped gpa 0x8000",
		   map_memory(v.vm, v.mem + 0x100000, 0x10000, 0x8000, 0), EEXIST);
	expect_err("map overlapping the end of the 1 MiB region",
		   map_memory(v.vm, v.mem, 2 * PAGE, 0x1ff000, 0), EEXIST);
	// The same user page twice, at different guest addresses: allowed.
	if (map_memory(v.vm, v.mem, PAGE, 0x300000, 0) ||
	    map_memory(v.vm, v.mem, PAGE, 0x301000, MV_MAP_READ))
		failf("mapping one user page at two gpas: %s", strerror(errno));

	// vCPU creation and the run page mapping.
	expect_err("create vcpu with reserved != 0", ioctl(v.vm, MV_IOC_VM_CREATE_VCPU, &ca), EINVAL);
	expect_err("create vcpu with a bad pointer",
		   ioctl(v.vm, MV_IOC_VM_CREATE_VCPU, (void *)16), EFAULT);
	p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
	expect_err("mmap two pages of the run page", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, PAGE);
	expect_err("mmap the run page at offset 4096", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, v.vcpu, 0);
	expect_err("mmap the run page MAP_PRIVATE", p == MAP_FAILED ? -1 : 0, EINVAL);
	p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, v.vm, 0);
	expect_err("mmap the VM fd", p == MAP_FAILED ? -1 : 0, ENODEV);
	if (mremap(v.run, PAGE, 2 * PAGE, 0) != MAP_FAILED)
		failf("the run page mapping grew with mremap");

	// ioctls on the wrong fd.
	expect_err("RUN on the VM fd", vcpu_ioctl(v.vm, MV_IOC_VCPU_RUN), ENOTTY);
	expect_err("MAP_MEMORY on the vCPU fd", map_memory(v.vcpu, v.mem, PAGE, 0x400000, 0), ENOTTY);
	expect_err("CREATE_VM on the VM fd", ioctl(v.vm, MV_IOC_CREATE_VM, &(struct mv_create_vm_args){ 0 }), ENOTTY);
	expect_err("START on the VM fd", ioctl(v.vm, MV_IOC_START, NULL), ENOTTY);
	expect_err("an unknown ioctl on the vCPU fd", ioctl(v.vcpu, 0x4d7f, NULL), ENOTTY);
	expect_err("VM_CREATE_VCPU on /dev/microv", ioctl(v.dev, MV_IOC_VM_CREATE_VCPU, &ca), ENOTTY);

	// A second thread on a running vCPU; then every fd closed while it runs.
	runner.vcpu = v.vcpu;
	runner.rc = 0;
	alarm(TIMEOUT_S); // a lost kick: SIGALRM ends the RUN (or kills us)
	if (pthread_create(&t, NULL, runner_fn, &runner)) {
		failf("pthread_create");
		return 1;
	}
	for (int i = 0; i < 4; i++)
		nanosleep(&ms50, NULL); // the runner is in the guest by now
	expect_err("RUN while another thread runs the vCPU", vcpu_ioctl(v.vcpu, MV_IOC_VCPU_RUN), EBUSY);
	expect_err("GET_REGS while another thread runs the vCPU",
		   vcpu_ioctl(v.vcpu, MV_IOC_VCPU_GET_REGS), EBUSY);
	expect_err("SET_REGS while another thread runs the vCPU",
		   vcpu_ioctl(v.vcpu, MV_IOC_VCPU_SET_REGS), EBUSY);
	munmap(v.run, PAGE);
	close(v.vcpu);
	close(v.vm);
	nanosleep(&ms50, NULL);
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	alarm(0);
	if (runner.rc != -1 || runner.err != EINTR)
		failf("the kicked RUN returned %d, errno %d; expected -1, EINTR", runner.rc,
		      runner.err);
	else
		printf("ended: RUN kicked by a signal after its fds were closed: %s\n",
		       strerror(EINTR));

	// Close orders: the VM fd before its vCPU fd, and a vCPU never mapped.
	vm2 = create_vm(v.dev, NULL);
	if (vm2 < 0)
		return die("MV_IOC_CREATE_VM (second VM)");
	if (map_memory(vm2, v.mem, 64 * 1024, 0, 0))
		return die("MV_IOC_VM_MAP_MEMORY (second VM)");
	vc2 = create_vcpu(vm2, 0, NULL);
	fd = create_vcpu(vm2, 1, NULL);
	if (vc2 < 0 || fd < 0)
		return die("MV_IOC_VM_CREATE_VCPU (second VM)");
	close(vm2);
	close(fd);
	// The vCPU holds its VM: it still works with the VM fd closed.
	if (vcpu_ioctl(vc2, MV_IOC_VCPU_GET_REGS))
		failf("GET_REGS after the VM fd was closed: %s", strerror(errno));
	close(vc2);

	// Many VMs, created and dropped.
	for (int i = 0; i < 64; i++) {
		fd = create_vm(v.dev, NULL);
		if (fd < 0)
			return die("MV_IOC_CREATE_VM (loop)");
		close(fd);
	}

	// Until MicroV says no: VMs, then vCPUs of one VM. Then all closed.
	exhaust(v.dev, -1);
	vm2 = create_vm(v.dev, NULL);
	if (vm2 < 0)
		return die("MV_IOC_CREATE_VM (after the VMs ran out)");
	exhaust(v.dev, vm2);
	close(vm2);
	fd = create_vm(v.dev, NULL);
	if (fd < 0)
		return die("MV_IOC_CREATE_VM (after the vCPUs ran out)");
	close(fd);
	if (failures)
		return 1;
	printf("mv-vm-smoke: abuse ok\n");
	return 0;
}

// ---- the guest's APIC timer -------------------------------------------------

#define TIMER_VECTOR 0xec
#define RAISED_VECTOR 0x41
#define TIMER_ISR 0x1100
#define RAISED_ISR 0x1110

// Builds the timer guest at CODE_GPA (real mode, CS base 0): the deadline
// delta in TSC cycles comes in EDI:ESI. `spin`: wait in `jmp $` with
// interrupts on instead of HLT.
static size_t timer_code(uint8_t *c, int spin)
{
	static const uint8_t head[] = {
		0x66, 0xb9, 0x0f, 0x08, 0, 0,	    // mov ecx, 0x80f (SVR)
		0x66, 0xb8, 0xff, 0x01, 0, 0,	    // mov eax, 0x1ff (enabled)
		0x66, 0x31, 0xd2,		    // xor edx, edx
		0x0f, 0x30,			    // wrmsr
		0x66, 0xb9, 0x32, 0x08, 0, 0,	    // mov ecx, 0x832 (LVT timer)
		0x66, 0xb8, TIMER_VECTOR, 0, 4, 0, // mov eax, (2 << 17) | 0xec
		0x0f, 0x30,			    // wrmsr
		0x0f, 0x31,			    // rdtsc
		0x66, 0x01, 0xf0,		    // add eax, esi
		0x66, 0x11, 0xfa,		    // adc edx, edi
		0x66, 0xb9, 0xe0, 0x06, 0, 0,	    // mov ecx, 0x6e0 (TSC deadline)
		0x0f, 0x30,			    // wrmsr
		0xfb,				    // sti
	};
	static const uint8_t halt[] = {
		0xf4,		  // hlt
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'S',	  // mov al, 'S': left HLT without an interrupt
		0xee,		  // out dx, al
		0xeb, 0xf7,	  // jmp (the hlt)
	};
	static const uint8_t loop[] = { 0xeb, 0xfe }; // jmp $
	size_t n = sizeof(head);

	memcpy(c, head, n);
	memcpy(c + n, spin ? loop : halt, spin ? sizeof(loop) : sizeof(halt));
	return n + (spin ? sizeof(loop) : sizeof(halt));
}

// An interrupt handler at `at`: writes `mark` to port 0x3f8, halts with
// interrupts off; and its real-mode IVT entry.
static void isr(uint8_t *mem, uint8_t vector, uint16_t at, char mark)
{
	const uint8_t code[] = {
		0xba, 0xf8, 0x03,    // mov dx, 0x3f8
		0xb0, (uint8_t)mark, // mov al, mark
		0xee,		     // out dx, al
		0xf4,		     // hlt
		0xeb, 0xfd,	     // jmp (the hlt)
	};

	memcpy(mem + at, code, sizeof(code));
	mem[vector * 4] = at & 0xff; // offset, then segment 0
	mem[vector * 4 + 1] = at >> 8;
	mem[vector * 4 + 2] = 0;
	mem[vector * 4 + 3] = 0;
}

// TSC ticks per millisecond, measured against CLOCK_MONOTONIC.
static double tsc_per_ms(void)
{
	struct timespec d = { 0, 200 * 1000 * 1000 };
	double t0 = now_ms(), t1;
	uint64_t c0 = __builtin_ia32_rdtsc(), c1;

	nanosleep(&d, NULL);
	c1 = __builtin_ia32_rdtsc();
	t1 = now_ms();
	return (double)(c1 - c0) / (t1 - t0);
}

enum poke { POKE_NONE, POKE_KICK, POKE_SIGNAL };

struct poker {
	struct vm *v;
	pthread_t main;
	enum poke how;
	double t0;
};

static void sleep_until(double t_ms)
{
	uint64_t ns = (uint64_t)(t_ms * 1e6);
	struct timespec t = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
}

static void raise_vector(struct mv_run_page *run, unsigned int vector)
{
	__atomic_fetch_or(&run->raise[vector / 64], 1ULL << (vector % 64), __ATOMIC_SEQ_CST);
}

static void *poker_fn(void *p)
{
	struct poker *k = p;

	if (k->how == POKE_KICK) {
		sleep_until(k->t0 + 300);
		raise_vector(k->v->run, RAISED_VECTOR);
		if (ioctl(k->v->vcpu, MV_IOC_VCPU_KICK, NULL))
			failf("MV_IOC_VCPU_KICK: %s", strerror(errno));
	} else {
		sleep_until(k->t0 + 200);
		pthread_kill(k->main, SIGUSR1); // nothing raised: must not wake the guest
		sleep_until(k->t0 + 400);
		raise_vector(k->v->run, RAISED_VECTOR);
		pthread_kill(k->main, SIGUSR1);
	}
	return NULL;
}

static int timer(const char *mode, unsigned int delay_ms, int spin, enum poke how)
{
	struct vm v;
	uint8_t code[128];
	size_t len = timer_code(code, spin);
	char mark = how == POKE_NONE ? 'T' : 'K', seen = 0;
	unsigned int expect_ms = how == POKE_NONE ? delay_ms : how == POKE_KICK ? 300 : 400;
	unsigned int eintr = 0;
	double per_ms = tsc_per_ms(), t0, cpu0, woke = 0, cpu = 0;
	uint64_t delta = (uint64_t)(per_ms * delay_ms);
	struct sigaction sa;
	struct poker k;
	pthread_t t;
	char line[160];
	int rc = setup(&v, code, len);

	if (rc)
		return rc;
	isr(v.mem, TIMER_VECTOR, TIMER_ISR, 'T');
	isr(v.mem, RAISED_VECTOR, RAISED_ISR, 'K');
	v.run->regs.gprs[6] = delta & 0xffffffff; // esi
	v.run->regs.gprs[7] = delta >> 32;	  // edi
	if (vcpu_ioctl(v.vcpu, MV_IOC_VCPU_SET_REGS))
		return die("MV_IOC_VCPU_SET_REGS (the deadline's delta)");
	printf("mv-vm-smoke: %s: deadline %u ms ahead (%llu TSC ticks at %.0f per ms)\n", mode,
	       delay_ms, (unsigned long long)delta, per_ms);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;
	sigaction(SIGUSR1, &sa, NULL); // no SA_RESTART: RUN comes back with EINTR
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	alarm(TIMEOUT_S);
	printf("mv-vm-smoke: entering\n");
	fflush(stdout);
	t0 = now_ms();
	cpu0 = thread_cpu_ms();
	k = (struct poker){ .v = &v, .main = pthread_self(), .how = how, .t0 = t0 };
	if (how != POKE_NONE && pthread_create(&t, NULL, poker_fn, &k)) {
		failf("pthread_create");
		return 1;
	}
	for (;;) {
		if (vcpu_ioctl(v.vcpu, MV_IOC_VCPU_RUN)) {
			if (errno != EINTR)
				return die("MV_IOC_VCPU_RUN");
			if (timed_out)
				return die("the guest's timer did not wake it in time");
			if (v.run->exit.reason != MV_EXIT_INTERRUPTED)
				failf("RUN failed with EINTR but the run page says exit %u",
				      v.run->exit.reason);
			eintr++;
			continue;
		}
		describe(v.run, line, sizeof(line));
		if (v.run->exit.reason == MV_EXIT_IO && v.run->exit.io.port == PORT &&
		    !v.run->exit.io.direction && !seen) {
			woke = now_ms() - t0;
			cpu = thread_cpu_ms() - cpu0;
			seen = (char)v.run->exit.io.data;
			printf("%s\n", line);
			break; // the handler then halts for good
		}
		failf("unexpected exit: %s (rip 0x%llx)", line, (unsigned long long)v.run->regs.rip);
		return 1;
	}
	alarm(0);
	if (how != POKE_NONE)
		pthread_join(t, NULL);
	printf("mv-vm-smoke: woke by '%c' after %.1f ms (expected %u ms, ratio %.2f), thread cpu %.1f ms, %u EINTR\n",
	       seen, woke, expect_ms, woke / expect_ms, cpu, eintr);
	if (seen != mark)
		failf("the guest wrote '%c', expected '%c'%s", seen, mark,
		      seen == 'S' ? " (it left HLT without an interrupt)" : "");
	if (failures)
		return 1;
	printf("mv-vm-smoke: timer ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 1)
		return smoke();
	if (argc == 2 && !strcmp(argv[1], "spin"))
		return spin();
	if (argc == 2 && !strcmp(argv[1], "hold"))
		return hold();
	if (argc == 2 && !strcmp(argv[1], "abuse"))
		return abuse();
	if (argc == 3 && (!strcmp(argv[1], "timer") || !strcmp(argv[1], "timer-spin")) &&
	    atoi(argv[2]) > 0)
		return timer(argv[1], (unsigned int)atoi(argv[2]), argv[1][5] == '-', POKE_NONE);
	if (argc == 2 && !strcmp(argv[1], "kick"))
		return timer("kick", 10000, 0, POKE_KICK);
	if (argc == 2 && !strcmp(argv[1], "signal"))
		return timer("signal", 10000, 0, POKE_SIGNAL);
	fprintf(stderr, "usage: mv-vm-smoke [spin|hold|abuse|timer MS|timer-spin MS|kick|signal]\n");
	return 2;
}
