/* SPDX-License-Identifier: MIT */
/* MicroV's Linux driver: shared declarations. */
#ifndef MICROV_H
#define MICROV_H

#include <linux/types.h>
#include <linux/mm.h>
#include <linux/io.h>
#include "microv_abi.h"

#define MV_CHUNK_ORDER 9 /* 2 MiB */

/* The hypervisor's memory: 2 MiB chunks, mapped linearly at MV_POOL_VA. */
struct mv_pool {
	unsigned int chunk_count;
	struct page *chunks[MV_MAX_CHUNKS];
	/* Driver-side bump pointer while laying out images, stacks, tables. */
	u64 used;
	u64 pml4_pa;
};

/* Everything one start of MicroV owns. */
struct mv_instance {
	struct mv_pool pool;
	unsigned int cpu_count;
	int os_cpu[MV_MAX_CPUS];
	struct mv_cpu_landing *landing[MV_MAX_CPUS];
	bool started[MV_MAX_CPUS];
	void *log;
	u64 log_size;
	u64 boot_info_offset;
	u64 handle;
	u64 flags;
};

/* microv_pool.c */
int mv_pool_alloc(struct mv_pool *pool, u64 size);
void mv_pool_free(struct mv_pool *pool);
void *mv_pool_ptr(struct mv_pool *pool, u64 offset);
u64 mv_pool_pa(struct mv_pool *pool, u64 offset);
int mv_pool_copy_from_user(struct mv_pool *pool, u64 offset, const void __user *src, u64 size);
u64 mv_pool_reserve(struct mv_pool *pool, u64 size);
int mv_boot_map(struct mv_pool *pool, u64 va, u64 pa, u64 size, u64 flags);

/* microv_cpu.c */
u64 mv_hypercall(u64 call, u64 *r10, u64 *r11, u64 *r12, u64 *r13);
bool mv_hypercall_failed_natively(u64 call, u64 status);
long mv_cpu_start(void *instance_and_index);
long mv_cpu_stop(void *instance_and_index);
long mv_cpu_open_handle(void *instance_and_index);
long mv_cpu_test_fault(void *instance_and_index);
int mv_cpu_check_svm(u64 *detail);

/* Trampoline (microv_tramp.S). */
u64 microv_enter(struct mv_cpu_landing *landing);
void microv_promote(void);
extern char microv_tramp_start[], microv_tramp_end[];

struct mv_cpu_arg {
	struct mv_instance *inst;
	unsigned int index;
	u64 detail;
};

#endif
