// SPDX-License-Identifier: MIT
//
// cpuid-loop: runs CPUID (an instruction MicroV intercepts) in a tight loop
// in user space (CPL 3) for SECONDS seconds, so a test can make MicroV fail
// while this CPU keeps exiting from ring 3.
//
//   cpuid-loop SECONDS [LEAF]        (LEAF default 0)
//
// Prints `progress n=<CPUIDs so far> t=<ms>` about every 250 ms (flushed at
// once, so a file or pipe sees it live) and `done n=... t=...` at the end;
// exits 0. The clock is clock_gettime(CLOCK_MONOTONIC) (vDSO, no exit).
// Pin it with taskset.
//
// Built statically by `cargo xtask build` into target/microv/cpuid-loop.

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	unsigned long long seconds, leaf = 0, n = 0;
	uint64_t start, next, t;
	char *end;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: cpuid-loop SECONDS [LEAF]\n");
		return 1;
	}
	errno = 0;
	seconds = strtoull(argv[1], &end, 0);
	if (errno || *end || argv[1][0] == '-') {
		fprintf(stderr, "cpuid-loop: bad SECONDS `%s`\n", argv[1]);
		return 1;
	}
	if (argc == 3) {
		leaf = strtoull(argv[2], &end, 0);
		if (*end || leaf > UINT32_MAX) {
			fprintf(stderr, "cpuid-loop: bad LEAF `%s`\n", argv[2]);
			return 1;
		}
	}
	start = now_ms();
	next = start + 250;
	for (;;) {
		for (int i = 0; i < 64; i++) {
			uint32_t a = (uint32_t)leaf, b, c = 0, d;

			asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
			n++;
		}
		t = now_ms();
		if (t >= next) {
			printf("progress n=%llu t=%llu\n", n, (unsigned long long)(t - start));
			fflush(stdout);
			next = t + 250;
		}
		if (t - start >= seconds * 1000)
			break;
	}
	printf("done n=%llu t=%llu\n", n, (unsigned long long)(t - start));
	return 0;
}
