// SPDX-License-Identifier: MIT
//
// cpuid-query: runs CPUID with the given leaf (and subleaf, default 0) and
// prints the four registers; for the hypervisor leaf 0x40000000 it also
// prints the 12-byte vendor signature from EBX, ECX, EDX.
//
//   cpuid-query LEAF [SUBLEAF]     (hex with 0x, or decimal)
//
// Built statically by `cargo xtask build` into target/microv/cpuid-query.

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(const char *s, uint32_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *s == '\0' || *s == '-' || *end != '\0' || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t leaf, subleaf = 0, a, b, c, d;

	if (argc < 2 || argc > 3 || parse(argv[1], &leaf) ||
	    (argc == 3 && parse(argv[2], &subleaf))) {
		fprintf(stderr, "usage: cpuid-query LEAF [SUBLEAF]\n");
		return 1;
	}
	// Not <cpuid.h>'s __get_cpuid: it refuses leaves above the maximum
	// basic/extended leaf, and the hypervisor range is neither.
	asm volatile("cpuid"
		     : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
		     : "a"(leaf), "c"(subleaf));
	printf("eax=0x%08x ebx=0x%08x ecx=0x%08x edx=0x%08x\n", a, b, c, d);
	if (leaf == 0x40000000) {
		char sig[13];
		memcpy(sig, &b, 4);
		memcpy(sig + 4, &c, 4);
		memcpy(sig + 8, &d, 4);
		sig[12] = '\0';
		for (int i = 0; i < 12; i++)
			if (sig[i] < 0x20 || sig[i] > 0x7e)
				sig[i] = '.';
		printf("signature=%s\n", sig);
	}
	return 0;
}
