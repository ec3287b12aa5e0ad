// SPDX-License-Identifier: MIT
//
// mv-sysbench: a syscall- and context-switch-heavy workload for measuring
// what MicroV costs the root VM (how many VM exits its hot paths take).
//
//   mv-sysbench getppid N      N getppid() system calls
//   mv-sysbench pingpong N     two processes pass a byte back and forth
//                              through two pipes N times (run it pinned to
//                              one CPU: every round trip is two context
//                              switches and four system calls)
//
// Prints one line, e.g. `getppid syscalls=1000000 elapsed_ns=...` or
// `pingpong round_trips=N syscalls=4N elapsed_ns=...`, and exits 0.
// Calls go through syscall(2), so no libc caching can skip them.
//
// Built statically by `cargo xtask build` into target/microv/mv-sysbench.

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int xfer(int fd, int write_it)
{
	char c = 'x';
	long r = write_it ? syscall(SYS_write, fd, &c, 1) : syscall(SYS_read, fd, &c, 1);

	return r == 1 ? 0 : -1;
}

static int pingpong(unsigned long long n)
{
	int ping[2], pong[2];
	pid_t child;
	int status;

	if (pipe(ping) || pipe(pong)) {
		perror("mv-sysbench: pipe");
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("mv-sysbench: fork");
		return 1;
	}
	if (child == 0) {
		for (unsigned long long i = 0; i < n; i++)
			if (xfer(ping[0], 0) || xfer(pong[1], 1))
				_exit(1);
		_exit(0);
	}
	uint64_t t0 = now_ns();
	for (unsigned long long i = 0; i < n; i++) {
		if (xfer(ping[1], 1) || xfer(pong[0], 0)) {
			fprintf(stderr, "mv-sysbench: pipe transfer failed: %s\n", strerror(errno));
			return 1;
		}
	}
	uint64_t t1 = now_ns();
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "mv-sysbench: the child failed\n");
		return 1;
	}
	printf("pingpong round_trips=%llu syscalls=%llu elapsed_ns=%llu\n", n, 4 * n,
	       (unsigned long long)(t1 - t0));
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long n;
	char *end;

	if (argc != 3) {
		fprintf(stderr, "usage: mv-sysbench getppid|pingpong N\n");
		return 1;
	}
	errno = 0;
	n = strtoull(argv[2], &end, 0);
	if (errno || *end || argv[2][0] == '-') {
		fprintf(stderr, "mv-sysbench: bad N `%s`\n", argv[2]);
		return 1;
	}
	if (!strcmp(argv[1], "pingpong"))
		return pingpong(n);
	if (strcmp(argv[1], "getppid")) {
		fprintf(stderr, "usage: mv-sysbench getppid|pingpong N\n");
		return 1;
	}
	uint64_t t0 = now_ns();
	for (unsigned long long i = 0; i < n; i++)
		syscall(SYS_getppid);
	uint64_t t1 = now_ns();
	printf("getppid syscalls=%llu elapsed_ns=%llu\n", n, (unsigned long long)(t1 - t0));
	return 0;
}
