// SPDX-License-Identifier: MIT
//
// tsc-aux [ROUNDS [CPU]]: on every online CPU (or only CPU), pinned there,
// reads TSC_AUX ROUNDS times (default 1) with RDPID and RDTSCP and prints
//
//   cpu N rdpid=X rdtscp=Y mismatches=M
//
// X and Y (hex) are the first readings, M the readings of either that
// differed from them. Linux keeps (node << 12) | cpu in TSC_AUX, so on a
// one-node machine X = Y = N. `rdpid=none` / `rdtscp=none` when CPUID says
// the CPU has no such instruction. Used by tests/e2e/88-microvm-tsc-aux.sh
// to check that a guest's TSC_AUX never leaks into the root.
//
// Built statically by `cargo xtask build` into target/microv/tsc-aux.

#define _GNU_SOURCE
#include <cpuid.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static uint64_t rdpid(void)
{
	uint64_t v;

	__asm__ volatile(".byte 0xf3, 0x0f, 0xc7, 0xf8" : "=a"(v)); /* rdpid rax */
	return v;
}

static uint32_t rdtscp(void)
{
	uint32_t lo, hi, aux;

	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	(void)lo;
	(void)hi;
	return aux;
}

static int one_cpu(int cpu, long rounds, int has_rdpid, int has_rdtscp)
{
	cpu_set_t set;
	uint64_t pid0 = 0;
	uint32_t tscp0 = 0;
	long i, mismatches = 0;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		perror("tsc-aux: sched_setaffinity");
		return 1;
	}
	if (has_rdpid)
		pid0 = rdpid();
	if (has_rdtscp)
		tscp0 = rdtscp();
	for (i = 1; i < rounds; i++) {
		if (has_rdpid && rdpid() != pid0)
			mismatches++;
		if (has_rdtscp && rdtscp() != tscp0)
			mismatches++;
	}
	printf("cpu %d", cpu);
	if (has_rdpid)
		printf(" rdpid=%llx", (unsigned long long)pid0);
	else
		printf(" rdpid=none");
	if (has_rdtscp)
		printf(" rdtscp=%x", tscp0);
	else
		printf(" rdtscp=none");
	printf(" mismatches=%ld\n", mismatches);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned a, b, c, d;
	int has_rdpid = 0, has_rdtscp = 0, cpu, rc = 0;
	long rounds = argc > 1 ? strtol(argv[1], NULL, 0) : 1;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (rounds < 1 || cpus < 1) {
		fprintf(stderr, "usage: tsc-aux [ROUNDS [CPU]]\n");
		return 2;
	}
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
		has_rdpid = c >> 22 & 1;
	if (__get_cpuid(0x80000001, &a, &b, &c, &d))
		has_rdtscp = d >> 27 & 1;
	if (argc > 2)
		return one_cpu(atoi(argv[2]), rounds, has_rdpid, has_rdtscp);
	for (cpu = 0; cpu < cpus; cpu++)
		rc |= one_cpu(cpu, rounds, has_rdpid, has_rdtscp);
	return rc;
}
