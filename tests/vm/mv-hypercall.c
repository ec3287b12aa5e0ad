// SPDX-License-Identifier: MIT
//
// mv-hypercall: executes one `vmmcall` from user space (ring 3) with the
// registers given on the command line and prints what came back, so the e2e
// tests can check how MicroV treats hypercalls from the root VM's userspace.
//
//   mv-hypercall RAX [R10 [R11 [R12 [R13]]]]     (hex with 0x, or decimal)
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

int main(int argc, char **argv)
{
	uint64_t in[5] = { 0 };
	struct sigaction sa;

	if (argc < 2 || argc > 6) {
		fprintf(stderr, "usage: mv-hypercall RAX [R10 [R11 [R12 [R13]]]]\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		if (parse(argv[i], &in[i - 1])) {
			fprintf(stderr, "mv-hypercall: `%s` is not a number\n", argv[i]);
			return 1;
		}
	}

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

	register uint64_t rax asm("rax") = in[0];
	register uint64_t r10 asm("r10") = in[1];
	register uint64_t r11 asm("r11") = in[2];
	register uint64_t r12 asm("r12") = in[3];
	register uint64_t r13 asm("r13") = in[4];
	asm volatile("vmmcall"
		     : "+r"(rax), "+r"(r10), "+r"(r11), "+r"(r12), "+r"(r13)
		     :
		     : "memory");
	out[0] = rax;
	out[1] = r10;
	out[2] = r11;
	out[3] = r12;
	out[4] = r13;

	printf("rax=0x%" PRIx64 " r10=0x%" PRIx64 " r11=0x%" PRIx64
	       " r12=0x%" PRIx64 " r13=0x%" PRIx64 "\n",
	       out[0], out[1], out[2], out[3], out[4]);
	return 0;
}
