// SPDX-License-Identifier: MIT
//
// tsc-now: prints the time-stamp counter, `tsc=N` (decimal). Under QEMU's
// -icount shift=0 the TSC counts the instructions the machine has run since
// reset, so the first thing a machine's init runs can stamp how long the
// boot took (docs/early-boot.md).
//
// Built statically by `cargo xtask build` into target/microv/tsc-now.

#include <stdint.h>
#include <stdio.h>

int main(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	printf("tsc=%llu\n", (unsigned long long)hi << 32 | lo);
	return 0;
}
