// SPDX-License-Identifier: MIT
//
// mv-hypercall: executes one hypercall from user space (ring 3) with the
// registers given on the command line and prints what came back, so the e2e
// tests can check how MicroV treats hypercalls from the root VM's userspace.
// The instruction is `vmmcall` on AMD and `vmcall` on Intel (CPUID vendor).
//
//   mv-hypercall [--repeat N] RAX [R10 [R11 [R12 [R13]]]]
//                                                (hex with 0x, or decimal)
//
// With --repeat N it makes the call N more times (the same registers each
// time) and prints `repeat=N tsc_per_call=T`: the TSC ticks per round trip,
// which are instructions in the deterministic emulated machines (QEMU with
// `-icount shift=0`, Bochs with `clock: sync=none`).
//
// Prints `rax=0x... r10=0x... r11=0x... r12=0x... r13=0x...` and exits 0, or
// prints `sigill` and exits 2 if the instruction raised #UD (no hypervisor,
// or a RAX without MicroV's signature). Any other signal the instruction
// raises is reported as `signal=N` with exit 3 (a nested KVM on Intel, for
// example, answers a ring-3 vmmcall with #GP). Exits 1 on a usage error.
//
// Built statically by `cargo xtask build` into target/microv/mv-hypercall.

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sigjmp_buf on_signal;

static void signal_handler(int sig)
{
	siglongjmp(on_signal, sig);
}

static int parse(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	// Base 0: 0x... is hex, anything else decimal (a leading 0 would be
	// octal; nobody writes hypercall numbers that way).
	*out = strtoull(s, &end, 0);
	return errno == 0 && *s != '\0' && *s != '-' && *end == '\0' ? 0 : -1;
}

static int intel;

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* One hypercall with the five registers in `r` (updated in place). */
static void hypercall(uint64_t r[5])
{
	register uint64_t rax asm("rax") = r[0];
	register uint64_t r10 asm("r10") = r[1];
	register uint64_t r11 asm("r11") = r[2];
	register uint64_t r12 asm("r12") = r[3];
	register uint64_t r13 asm("r13") = r[4];

	if (intel)
		asm volatile("vmcall"
			     : "+r"(rax), "+r"(r10), "+r"(r11), "+r"(r12), "+r"(r13)
			     :
			     : "memory");
	else
		asm volatile("vmmcall"
			     : "+r"(rax), "+r"(r10), "+r"(r11), "+r"(r12), "+r"(r13)
			     :
			     : "memory");
	r[0] = rax;
	r[1] = r10;
	r[2] = r11;
	r[3] = r12;
	r[4] = r13;
}

int main(int argc, char **argv)
{
	uint64_t in[5] = { 0 };
	uint64_t repeat = 0;
	struct sigaction sa;
	uint32_t vendor[3];
	int first = 1;

	if (argc > 2 && !strcmp(argv[1], "--repeat")) {
		if (parse(argv[2], &repeat) || repeat == 0) {
			fprintf(stderr, "mv-hypercall: --repeat takes a count above 0\n");
			return 1;
		}
		first = 3;
	}
	if (argc - first < 1 || argc - first > 5) {
		fprintf(stderr, "usage: mv-hypercall [--repeat N] RAX [R10 [R11 [R12 [R13]]]]\n");
		return 1;
	}
	for (int i = first; i < argc; i++) {
		if (parse(argv[i], &in[i - first])) {
			fprintf(stderr, "mv-hypercall: `%s` is not a number\n", argv[i]);
			return 1;
		}
	}
	asm volatile("cpuid" : "=b"(vendor[0]), "=d"(vendor[1]), "=c"(vendor[2]) : "a"(0));
	intel = !memcmp(vendor, "GenuineIntel", 12);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = signal_handler;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGILL, &sa, NULL) || sigaction(SIGSEGV, &sa, NULL) ||
	    sigaction(SIGBUS, &sa, NULL)) {
		perror("mv-hypercall: sigaction");
		return 1;
	}

	uint64_t out[5];
	int sig = sigsetjmp(on_signal, 1);
	if (sig == SIGILL) {
		printf("sigill\n");
		return 2;
	}
	if (sig) {
		printf("signal=%d (%s)\n", sig, strsignal(sig));
		return 3;
	}

	memcpy(out, in, sizeof(out));
	hypercall(out);

	printf("rax=0x%" PRIx64 " r10=0x%" PRIx64 " r11=0x%" PRIx64
	       " r12=0x%" PRIx64 " r13=0x%" PRIx64 "\n",
	       out[0], out[1], out[2], out[3], out[4]);
	if (repeat) {
		uint64_t r[5], start = rdtsc();

		for (uint64_t i = 0; i < repeat; i++) {
			memcpy(r, in, sizeof(r));
			hypercall(r);
		}
		printf("repeat=%" PRIu64 " tsc_per_call=%" PRIu64 "\n", repeat,
		       (rdtsc() - start) / repeat);
	}
	return 0;
}
