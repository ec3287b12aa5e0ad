// SPDX-License-Identifier: MIT
//
// mv-physpage: holds one locked page of memory whose first bytes are a known
// pattern and prints its physical address, so a test can point mvprobe.ko at
// memory whose contents it knows (the control for the isolation test).
//
//   mv-physpage PATTERN      (at most 16 bytes; the rest of the page is zero)
//
// Prints `pa=0x...` (the physical address of the pattern's first byte, from
// /proc/self/pagemap, which needs root), then waits until it is killed.
//
// Built statically by `cargo xtask build` into target/microv/mv-physpage.

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_PFN_MASK ((1ULL << 55) - 1)

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t entry = 0;
	unsigned char *buf;
	int fd;

	if (argc != 2 || strlen(argv[1]) > 16) {
		fprintf(stderr, "usage: mv-physpage PATTERN (at most 16 bytes)\n");
		return 1;
	}
	buf = mmap(NULL, page, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mv-physpage: mmap");
		return 1;
	}
	memset(buf, 0, page);
	memcpy(buf, argv[1], strlen(argv[1]));
	if (mlock(buf, page)) {
		perror("mv-physpage: mlock");
		return 1;
	}
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 ||
	    pread(fd, &entry, sizeof(entry), (uintptr_t)buf / page * sizeof(entry)) != sizeof(entry)) {
		perror("mv-physpage: reading /proc/self/pagemap");
		return 1;
	}
	close(fd);
	if (!(entry & PAGEMAP_PRESENT) || !(entry & PAGEMAP_PFN_MASK)) {
		fprintf(stderr, "mv-physpage: no page frame number (pagemap entry 0x%" PRIx64
			"; not root?)\n", entry);
		return 1;
	}
	printf("pa=0x%llx\n", (unsigned long long)((entry & PAGEMAP_PFN_MASK) * (uint64_t)page));
	fflush(stdout);
	for (;;)
		pause();
}
