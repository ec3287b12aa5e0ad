// SPDX-License-Identifier: MIT
/*
 * mv-bench-guest: the guests and the root-side stopwatch of `cargo xtask
 * bench` (tests/bench/bench.sh, docs/benchmarks.md).
 *
 *   mv-bench-guest CASE [N] > guest.elf
 *       writes a tiny 64-bit guest kernel for `microv run --kernel` (an
 *       ELF64 executable with one PT_LOAD at 16 MiB, entered in long mode
 *       with interrupts off as mv-guest-elf's guests are; the machine code
 *       is written out by hand below, each instruction with its assembly in
 *       a comment). It runs one exit WARMUP times, reads the TSC, runs it N
 *       times (default 1000), reads the TSC again, prints one line on COM1
 *       and powers off (ACPI PM1a control, port 0x600 <- 0x34):
 *
 *         MVBENCH case=CASE iterations=N tsc=0x… warmup=10 warmup_tsc=0x… rax=0x…
 *
 *       tsc is the TSC difference across the N iterations, warmup_tsc the
 *       one across the warm-up iterations (first-touch costs show there,
 *       not in tsc), rax what the last iteration left in RAX (the
 *       hypercall's status). Under QEMU's `-icount shift=0` the TSC counts
 *       instructions. Each iteration is the exit plus its loop: the guest
 *       instructions per iteration are given below.
 *
 *       CASE:
 *         hypercall  mov rax, 0x764D000000000000 (MicroV's id.version);
 *                    vmmcall. KVM takes the same instruction as its own
 *                    hypercall with an unknown number and answers
 *                    -KVM_ENOSYS: a full round trip on both. (4 per
 *                    iteration with the loop)
 *         cpuid      xor eax, eax; xor ecx, ecx; cpuid (leaf 0). (5)
 *         pio        out dx, al to port 0x3ff, COM1's scratch register: the
 *                    VMM's 16550A model keeps the byte and nothing else
 *                    happens, so the figure is the trip to the VMM and
 *                    back. (3)
 *         mmio       mov byte [rbx], 0x5a with RBX = 0xd000_0000, where no
 *                    RAM and no device is: the VMM counts the write as
 *                    unclaimed and drops it (MicroV's backend decodes the
 *                    instruction in the VMM with iced-x86; KVM decodes it
 *                    in the kernel). (3)
 *         timer      the local APIC's TSC-deadline timer: the guest puts
 *                    its APIC in x2APIC mode (IA32_APIC_BASE |= EN|EXTD:
 *                    MicroV's starts in x2APIC mode, KVM's in xAPIC mode),
 *                    enables it (SVR = 0x1ff), sets the LVT timer to
 *                    TSC-deadline mode with vector 0xec, whose handler
 *                    reads the TSC, writes EOI and returns. Per iteration:
 *                    IA32_TSC_DEADLINE = TSC + TIMER_DELAY, sti, spin
 *                    (pause; cmp; je) until the handler has run, cli. Here tsc
 *                    (and warmup_tsc) is not the loop's length but the sum
 *                    of the latencies from each deadline to its handler's
 *                    RDTSC, so per iteration it is the mean latency; rax is
 *                    the last iteration's latency, max the largest of the
 *                    measured ones, delay TIMER_DELAY. A guest whose LVT timer
 *                    does not take TSC-deadline mode prints an
 *                    "mv-bench-guest: ..." line and no MVBENCH line.
 *         halt-wake  the same with `sti; hlt; cli` (then cmp; je) instead
 *                    of the spin: the vCPU halts until the timer wakes it.
 *
 *   mv-bench-guest stamp MARK_CASE MARKER END_CASE CMD [ARG...]
 *       runs CMD with its stdout and stderr on a pipe, copies what it
 *       writes to our stdout, and reads the TSC when it starts, when a line
 *       holding MARKER has arrived, and when CMD has exited. Then prints
 *
 *         MVBENCH case=MARK_CASE iterations=1 tsc=0x… idle_ns=I   (start to MARKER)
 *         MVBENCH case=END_CASE iterations=1 tsc=0x… idle_ns=I status=S
 *
 *       (the first only if MARKER came), and exits with CMD's status. The
 *       root's clock, not the guest's: KVM offsets its guests' TSC, MicroV
 *       does not, so only the root's TSC means the same on both backends.
 *       idle_ns is how much of that the root's CPU spent idle (from
 *       /proc/uptime, 10 ms steps): under -icount sleep=off the TSC runs
 *       on while the CPU idles, so tsc - idle_ns is what was executed.
 *
 *   mv-bench-guest time CASE CMD [ARG...]
 *       as stamp without a marker: runs CMD (its output copied to ours),
 *       reads the TSC before and after, prints
 *
 *         MVBENCH case=CASE iterations=1 tsc=0x… idle_ns=I status=S
 *
 *       and exits with CMD's status. The TSC of wherever it runs: the
 *       root's, or inside a Linux guest (the guest initramfs has this tool,
 *       xtask/src/guest.rs) the guest's, whose differences count the same
 *       (MicroV does not offset it, KVM offsets it by a constant).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOAD_ADDR 0x1000000ull
#define CODE_MAX 0x1000u
#define WARMUP 10u
#define DEFAULT_ITERATIONS 1000u

/* MicroV's id.version (docs/hypercall-abi.md). */
#define ID_VERSION 0x764D000000000000ull
/* COM1's scratch register (0x3f8 + 7). */
#define SCRATCH_PORT 0x3ffu
/* Guest-physical: above the guest's RAM, in no device's range. */
#define MMIO_ADDR 0xd0000000u

/*
 * The timer cases' image beyond the code: the IDT (256 gates), then the
 * IDTR and the handler's TSC (0 until the handler has run).
 */
#define IDT_OFF 0x1000u
#define IDTR_OFF 0x2000u
#define VAR_T_OFF 0x2010u
#define TIMER_IMAGE 0x2018u
#define IDTR (LOAD_ADDR + IDTR_OFF)
#define VAR_T (LOAD_ADDR + VAR_T_OFF)
/* The timer's vector, and how far ahead of the TSC each deadline is. */
#define TIMER_VECTOR 0xecu
#define TIMER_DELAY 20000u

#define GUEST_TOOL "mv-bench-guest"
#define IMAGE_BYTES TIMER_IMAGE
#include "guest-code.h"

/* rdtsc; shl rdx, 32; or rax, rdx: RAX = the whole TSC */
static void read_tsc(void)
{
	const unsigned char op[] = {
		0x0f, 0x31,		/* rdtsc */
		0x48, 0xc1, 0xe2, 0x20,	/* shl rdx, 32 */
		0x48, 0x09, 0xd0,	/* or rax, rdx */
	};

	emit(op, sizeof(op));
}

/*
 * hex64: prints RAX as 16 hex digits on COM1; keeps RAX, RBX, RCX, RDX
 * (as mv-guest-elf's).
 */
static uint64_t emit_hex64(void)
{
	const unsigned char head[] = {
		0x50, 0x53, 0x51, 0x52,	/* push rax; push rbx; push rcx; push rdx */
		0x48, 0x89, 0xc3,	/* mov rbx, rax */
		0xb9, 0x10, 0x00, 0x00, 0x00, /* mov ecx, 16 */
	};
	uint64_t at = here();

	emit(head, sizeof(head));
	emit(hex_digits_and_return, sizeof(hex_digits_and_return));
	return at;
}

/* The instructions of one iteration, without the loop. */
static void body(const char *kind)
{
	if (!strcmp(kind, "hypercall")) {
		const unsigned char op[] = {
			0x48, 0xb8,	/* mov rax, ID_VERSION */
		};
		uint64_t rax = ID_VERSION;

		emit(op, sizeof(op));
		emit(&rax, 8);
		emit("\x0f\x01\xd9", 3); /* vmmcall */
	} else if (!strcmp(kind, "cpuid")) {
		emit("\x31\xc0", 2);	/* xor eax, eax */
		emit("\x31\xc9", 2);	/* xor ecx, ecx */
		emit("\x0f\xa2", 2);	/* cpuid */
	} else if (!strcmp(kind, "pio")) {
		byte(0xee);		/* out dx, al (DX = SCRATCH_PORT) */
	} else {
		emit("\xc6\x03\x5a", 3); /* mov byte [rbx], 0x5a (RBX = MMIO_ADDR) */
	}
}

/* mov r14d, count; 1: body; dec r14d; jnz 1b */
static void loop(const char *kind, uint32_t count)
{
	uint64_t top;

	emit("\x41\xbe", 2);		/* mov r14d, count */
	imm32(count);
	top = here();
	body(kind);
	emit("\x41\xff\xce", 3);	/* dec r14d */
	emit("\x0f\x85", 2);		/* jnz 1b */
	rel32_to(top);
}

/*
 * The registers the bodies use, set after each TSC read (RDTSC leaves EDX
 * and EAX, CPUID EBX and EDX, behind); neither backend's answer to an
 * exit touches them. Three instructions, inside the measured span.
 */
static void operands(void)
{
	emit("\xba", 1);		/* mov edx, SCRATCH_PORT */
	imm32(SCRATCH_PORT);
	emit("\xbb", 1);		/* mov ebx, MMIO_ADDR */
	imm32(MMIO_ADDR);
	emit("\xb8\x5a\x00\x00\x00", 5); /* mov eax, 0x5a */
}

/*
 * The MVBENCH line's common part, for `print`: the measured TSC difference
 * (R12), the warm-up's (R15) and the last answer (RBP), in hex; the caller
 * ends the line.
 */
static void result_line(const char *kind, uint32_t iterations, uint64_t hex64)
{
	char line[128];

	snprintf(line, sizeof(line), "MVBENCH case=%s iterations=%u tsc=0x", kind, iterations);
	print(line);
	emit("\x4c\x89\xe0", 3);	/* mov rax, r12 */
	call(hex64);
	snprintf(line, sizeof(line), " warmup=%u warmup_tsc=0x", WARMUP);
	print(line);
	emit("\x4c\x89\xf8", 3);	/* mov rax, r15 */
	call(hex64);
	print(" rax=0x");
	emit("\x48\x89\xe8", 3);	/* mov rax, rbp */
	call(hex64);
}

static void guest(const char *kind, uint32_t iterations)
{
	uint64_t hex64;
	size_t over;

	byte(0xe9);			/* jmp over hex64 (rel32 landed below) */
	over = len;
	imm32(0);
	hex64 = emit_hex64();
	{
		int32_t rel = (int32_t)(len - (over + 4));

		memcpy(image + over, &rel, 4);
	}
	read_tsc();
	emit("\x48\x89\xc6", 3);	/* mov rsi, rax: warm-up start */
	operands();
	loop(kind, WARMUP);
	read_tsc();
	emit("\x49\x89\xc7", 3);	/* mov r15, rax: start */
	operands();
	loop(kind, iterations);
	emit("\x48\x89\xc5", 3);	/* mov rbp, rax: the last answer */
	read_tsc();
	emit("\x4c\x29\xf8", 3);	/* sub rax, r15: the measured loop */
	emit("\x49\x29\xf7", 3);	/* sub r15, rsi: the warm-up loop */
	emit("\x49\x89\xc4", 3);	/* mov r12, rax */

	result_line(kind, iterations, hex64);
	print("\n");
	/* mov dx, 0x600; mov al, 0x34; out dx, al; hlt; jmp $-1 */
	emit("\x66\xba\x00\x06\xb0\x34\xee\xf4\xeb\xfd", 10);
}

/* ---- timer, halt-wake: the TSC-deadline timer's latency ---------------- */

/* An interrupt gate (present, DPL 0, type 0xe) for `vector` to `handler`. */
static void gate(unsigned vector, uint64_t handler)
{
	unsigned char *g = image + IDT_OFF + vector * 16;

	memset(g, 0, 16);
	put16(g, (uint16_t)handler);
	g[2] = 0x10;			/* selector: the boot code segment */
	g[5] = 0x8e;
	put16(g + 6, (uint16_t)(handler >> 16));
	put32(g + 8, (uint32_t)(handler >> 32));
}

/* An instruction OP (its bytes) with the absolute address `at` as disp32. */
static void abs32(const char *op, size_t n, uint64_t at)
{
	emit(op, n);
	imm32((uint32_t)at);
}

/*
 * The timer's handler: reads the TSC into VAR_T, writes EOI, returns.
 * Keeps every register.
 */
static uint64_t emit_timer_handler(void)
{
	uint64_t at = here();

	emit("\x50\x51\x52", 3);	/* push rax; push rcx; push rdx */
	read_tsc();
	abs32("\x48\x89\x04\x25", 4, VAR_T); /* mov [VAR_T], rax */
	emit("\xb9\x0b\x08\x00\x00", 5); /* mov ecx, 0x80b (EOI) */
	emit("\x31\xc0\x31\xd2", 4);	/* xor eax, eax; xor edx, edx */
	emit("\x0f\x30", 2);		/* wrmsr */
	emit("\x5a\x59\x58", 3);	/* pop rdx; pop rcx; pop rax */
	emit("\x48\xcf", 2);		/* iretq */
	return at;
}

/*
 * The APIC in x2APIC mode and enabled, the LVT timer in TSC-deadline mode
 * with TIMER_VECTOR, the IDT loaded. If the LVT timer reads back in another
 * mode (no TSC-deadline timer), says so and jumps to `fail` (patched by the
 * caller: the returned offset of the rel32).
 */
static size_t timer_setup(void)
{
	size_t fail;

	abs32("\x0f\x01\x1c\x25", 4, IDTR); /* lidt [IDTR] */
	emit("\xb9\x1b\x00\x00\x00", 5); /* mov ecx, 0x1b (IA32_APIC_BASE) */
	emit("\x0f\x32", 2);		/* rdmsr */
	emit("\x0d\x00\x0c\x00\x00", 5); /* or eax, 0xc00 (EN | EXTD) */
	emit("\x0f\x30", 2);		/* wrmsr */
	emit("\xb9\x0f\x08\x00\x00", 5); /* mov ecx, 0x80f (SVR) */
	emit("\xb8\xff\x01\x00\x00", 5); /* mov eax, 0x1ff */
	emit("\x31\xd2", 2);		/* xor edx, edx */
	emit("\x0f\x30", 2);		/* wrmsr */
	emit("\xb9\x32\x08\x00\x00", 5); /* mov ecx, 0x832 (LVT timer) */
	byte(0xb8);			/* mov eax, 2 << 17 | TIMER_VECTOR */
	imm32(2u << 17 | TIMER_VECTOR);
	emit("\x0f\x30", 2);		/* wrmsr */
	emit("\x0f\x32", 2);		/* rdmsr */
	emit("\x25\x00\x00\x06\x00", 5); /* and eax, 3 << 17 */
	emit("\x3d\x00\x00\x04\x00", 5); /* cmp eax, 2 << 17 */
	emit("\x0f\x85", 2);		/* jne fail */
	fail = len;
	imm32(0);
	return fail;
}

/*
 * One iteration, `count` times: arm the deadline D = TSC + TIMER_DELAY,
 * wait for the handler with interrupts on (spin or hlt), add VAR_T - D to
 * R13. RAX holds the last latency.
 */
static void timer_loop(const char *kind, uint32_t count)
{
	uint64_t top, wait;

	emit("\x41\xbe", 2);		/* mov r14d, count */
	imm32(count);
	top = here();
	abs32("\x48\xc7\x04\x25", 4, VAR_T); /* mov qword [VAR_T], 0 */
	imm32(0);
	read_tsc();
	emit("\x48\x05", 2);		/* add rax, TIMER_DELAY */
	imm32(TIMER_DELAY);
	emit("\x48\x89\xc3", 3);	/* mov rbx, rax: the deadline */
	emit("\x48\x89\xc2", 3);	/* mov rdx, rax */
	emit("\x48\xc1\xea\x20", 4);	/* shr rdx, 32 */
	emit("\xb9\xe0\x06\x00\x00", 5); /* mov ecx, 0x6e0 (IA32_TSC_DEADLINE) */
	emit("\x0f\x30", 2);		/* wrmsr */
	if (!strcmp(kind, "halt-wake")) {
		/* 1: sti; hlt (in sti's shadow); cli; cmp; je 1b */
		wait = here();
		byte(0xfb);
		byte(0xf4);
		byte(0xfa);
	} else {
		/* sti; 1: pause; cmp; je 1b; cli (interrupts on throughout) */
		byte(0xfb);
		wait = here();
		emit("\xf3\x90", 2);
	}
	abs32("\x48\x83\x3c\x25", 4, VAR_T); /* cmp qword [VAR_T], 0 */
	byte(0);
	emit("\x0f\x84", 2);		/* je 1b */
	rel32_to(wait);
	if (strcmp(kind, "halt-wake"))
		byte(0xfa);		/* cli */
	abs32("\x48\x8b\x04\x25", 4, VAR_T); /* mov rax, [VAR_T] */
	emit("\x48\x29\xd8", 3);	/* sub rax, rbx */
	emit("\x49\x01\xc5", 3);	/* add r13, rax */
	emit("\x4c\x39\xc8", 3);	/* cmp rax, r9 */
	emit("\x4c\x0f\x47\xc8", 4);	/* cmova r9, rax: the largest */
	emit("\x41\xff\xce", 3);	/* dec r14d */
	emit("\x0f\x85", 2);		/* jnz top */
	rel32_to(top);
}

static void timer_guest(const char *kind, uint32_t iterations)
{
	unsigned char *idtr = image + IDTR_OFF;
	uint64_t hex64, handler;
	char line[128];
	size_t over, fail;
	int32_t rel;

	byte(0xe9);			/* jmp over hex64 and the handler */
	over = len;
	imm32(0);
	hex64 = emit_hex64();
	handler = emit_timer_handler();
	rel = (int32_t)(len - (over + 4));
	memcpy(image + over, &rel, 4);
	memset(image + CODE_MAX, 0, TIMER_IMAGE - CODE_MAX);
	gate(TIMER_VECTOR, handler);
	put16(idtr, 0xfff);		/* limit: 256 gates */
	put64(idtr + 2, LOAD_ADDR + IDT_OFF);

	fail = timer_setup();
	emit("\x45\x31\xed", 3);	/* xor r13d, r13d */
	timer_loop(kind, WARMUP);
	emit("\x4d\x89\xef", 3);	/* mov r15, r13: the warm-up's latencies */
	emit("\x45\x31\xed", 3);	/* xor r13d, r13d */
	emit("\x45\x31\xc9", 3);	/* xor r9d, r9d */
	timer_loop(kind, iterations);
	emit("\x48\x89\xc5", 3);	/* mov rbp, rax: the last latency */
	emit("\x4d\x89\xec", 3);	/* mov r12, r13: the measured latencies */

	result_line(kind, iterations, hex64);
	print(" max=0x");
	emit("\x4c\x89\xc8", 3);	/* mov rax, r9 */
	call(hex64);
	snprintf(line, sizeof(line), " delay=%u\n", TIMER_DELAY);
	print(line);
	byte(0xe9);			/* jmp off */
	over = len;
	imm32(0);
	/* fail: the LVT timer took no TSC-deadline mode (EAX: its mode bits) */
	rel = (int32_t)(len - (fail + 4));
	memcpy(image + fail, &rel, 4);
	snprintf(line, sizeof(line), GUEST_TOOL ": %s: no TSC-deadline mode (LVT timer mode bits 0x", kind);
	print(line);
	call(hex64);
	print(")\n");
	rel = (int32_t)(len - (over + 4));
	memcpy(image + over, &rel, 4);
	/* off: mov dx, 0x600; mov al, 0x34; out dx, al; hlt; jmp $-1 */
	emit("\x66\xba\x00\x06\xb0\x34\xee\xf4\xeb\xfd", 10);
}

/* ---- stamp: the root's stopwatch ---------------------------------------- */

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/*
 * The root's idle time in ns, from /proc/uptime (10 ms resolution; one CPU
 * in the bench machine, so it is that CPU's). Under -icount sleep=off the
 * TSC runs on while the CPU is idle (QEMU skips to the next timer), so the
 * idle time tells instructions from waiting. ~0 if it cannot be read.
 */
static uint64_t idle_ns(void)
{
	unsigned long long s = 0, cs = 0;
	FILE *f = fopen("/proc/uptime", "r");

	if (!f)
		return ~0ull;
	if (fscanf(f, "%*s %llu.%2llu", &s, &cs) != 2)
		s = cs = ~0ull;
	fclose(f);
	if (s == ~0ull)
		return ~0ull;
	return s * 1000000000ull + cs * 10000000ull;
}

/* " idle_ns=N", the idle time from `from` to `to`, if both were read. */
static void idle_field(uint64_t from, uint64_t to)
{
	if (from != ~0ull && to != ~0ull && to >= from)
		printf(" idle_ns=%llu", (unsigned long long)(to - from));
}

static int stamp(const char *mark_case, const char *marker, const char *end_case, char **cmd)
{
	char chunk[4096], line[4096];
	size_t used = 0;
	uint64_t start, marked = 0, end, idle0, idle_marked = 0, idle_end;
	int fds[2], status, found = 0;
	pid_t pid;
	ssize_t n;

	if (pipe(fds))
		die("pipe failed");
	fflush(stdout);
	idle0 = idle_ns();
	start = rdtsc();
	pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[1]);
		execvp(cmd[0], cmd);
		perror(cmd[0]);
		_exit(127);
	}
	close(fds[1]);
	while ((n = read(fds[0], chunk, sizeof(chunk))) > 0) {
		ssize_t i;

		/* Read first, copy after: the stamp is when the bytes arrived. */
		uint64_t now = rdtsc();

		for (i = 0; i < n; i++) {
			if (chunk[i] != '\n') {
				/* An overlong line keeps its start: the marker leads its line. */
				if (used < sizeof(line) - 1)
					line[used++] = chunk[i];
				continue;
			}
			line[used] = 0;
			if (!found && marker && strstr(line, marker)) {
				found = 1;
				marked = now - start;
				idle_marked = idle_ns();
			}
			used = 0;
		}
		fwrite(chunk, 1, (size_t)n, stdout);
	}
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid failed");
	end = rdtsc() - start;
	idle_end = idle_ns();
	status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (found) {
		printf("MVBENCH case=%s iterations=1 tsc=0x%016llX", mark_case,
		       (unsigned long long)marked);
		idle_field(idle0, idle_marked);
		printf("\n");
	}
	printf("MVBENCH case=%s iterations=1 tsc=0x%016llX", end_case, (unsigned long long)end);
	idle_field(idle0, idle_end);
	printf(" status=%d\n", status);
	return status;
}

static void usage(void)
{
	fprintf(stderr, "usage: mv-bench-guest hypercall|cpuid|pio|mmio|timer|halt-wake [N] > guest.elf\n"
			"       mv-bench-guest stamp MARK_CASE MARKER END_CASE CMD [ARG...]\n"
			"       mv-bench-guest time CASE CMD [ARG...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *kind = argc > 1 ? argv[1] : "";
	unsigned long n = DEFAULT_ITERATIONS;

	if (!strcmp(kind, "stamp")) {
		if (argc < 6)
			usage();
		return stamp(argv[2], argv[3], argv[4], argv + 5);
	}
	if (!strcmp(kind, "time")) {
		if (argc < 4)
			usage();
		return stamp(NULL, NULL, argv[2], argv + 3);
	}
	if (strcmp(kind, "hypercall") && strcmp(kind, "cpuid") && strcmp(kind, "pio") &&
	    strcmp(kind, "mmio") && strcmp(kind, "timer") && strcmp(kind, "halt-wake"))
		usage();
	if (argc > 3)
		usage();
	if (argc == 3) {
		char *end;

		n = strtoul(argv[2], &end, 0);
		if (*end || n == 0 || n > 0xffffffffu)
			die("N must be a number from 1 to 2^32 - 1");
	}
	if (!strcmp(kind, "timer") || !strcmp(kind, "halt-wake")) {
		timer_guest(kind, (uint32_t)n);
		return write_elf(TIMER_IMAGE);
	}
	guest(kind, (uint32_t)n);
	return write_elf(len);
}
