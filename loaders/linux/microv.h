/* SPDX-License-Identifier: MIT */
/* MicroV's Linux driver: shared declarations. */
#ifndef MICROV_H
#define MICROV_H

#include <linux/types.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/mutex.h>
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

/* One CPU's part in a stop rendezvous (mv_cpu_stop_rendezvous). */
struct mv_cpu_stop {
	bool ran;		/* the callback ran on this CPU */
	bool was_running;	/* landing->running before the call */
	bool running;		/* landing->running after the call */
	u64 status;		/* what hv.stop_pp returned (MV_STOP_NOT_ISSUED: not called) */
};

/* mv_cpu_stop.status when the CPU did not make the call. */
#define MV_STOP_NOT_ISSUED (~0ULL)

/* Everything one start of MicroV owns. */
struct mv_instance {
	struct mv_pool pool;
	unsigned int cpu_count;
	int os_cpu[MV_MAX_CPUS];
	struct mv_cpu_landing *landing[MV_MAX_CPUS];
	/* MicroV may run beneath this CPU (entered, and not yet seen to leave). */
	bool started[MV_MAX_CPUS];
	void *log;
	u64 log_size;
	u64 boot_info_offset;
	u64 handle;
	u64 flags;
	/*
	 * MicroV must go but may still run on some CPU: it faulted, or a
	 * start failed and could not be undone, or a stop left some CPUs
	 * behind. The driver keeps the instance (and its module reference)
	 * and retries the stop until every CPU is native.
	 */
	bool failed;
	/* The instance is what is left of a failed start. */
	bool start_failed;
	/* Stop attempts since the instance failed (paces the retries). */
	unsigned int stop_retries;
	/* Scratch for the stop rendezvous; written only under mv_lock. */
	struct mv_cpu_stop stop[MV_MAX_CPUS];
	/* Test: the OS CPU that does not join the rendezvous, or -1. */
	int stop_skip_cpu;
	/*
	 * Early boot: microv.efi started MicroV before Linux, and the driver
	 * attached to it at load. It owns none of MicroV's memory (no pool,
	 * landing pages or log of its own) and cannot stop it.
	 */
	bool attached;
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
int mv_cpu_stop_rendezvous(void *instance);
long mv_cpu_open_handle(void *instance_and_index);
long mv_cpu_test_fault(void *instance_and_index);
int mv_cpu_check(u64 *detail);

/* microv_main.c: for test modules (tests/vm/mvprobe). */
u64 microv_test_handle(void);

/*
 * microv_main.c: for microv_vm.c. mv_lock serialises start, stop, status
 * and the failure reaper; the generation names one start of MicroV (0: none
 * runs); it changes only under mv_lock.
 */
extern struct mutex mv_lock;
u64 mv_hv_generation(void);
bool mv_hv_vm_ready(u64 *gen, u64 *handle);

/* microv_vm.c: micro-VM and vCPU file descriptors. */
long mv_vm_create_ioctl(void __user *arg);
long mv_vm_list_ioctl(void __user *arg);
unsigned int mv_vm_live_count(void);
void mv_vm_instance_gone(u64 gen);

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
