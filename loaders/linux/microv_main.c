// SPDX-License-Identifier: MIT
/*
 * MicroV's Linux driver: /dev/microv.
 *
 * START loads the hypervisor images into a pool of memory and enters the
 * microkernel on every online CPU (late launch); STOP asks MicroV to leave
 * every CPU and frees the pool; STATUS and LOG report; CREATE_VM hands out
 * micro-VM file descriptors (microv_vm.c). All policy lives in the
 * hypervisor and the `microv` CLI: this driver only allocates, copies, maps,
 * and calls.
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/io.h>
#include <linux/sizes.h>
#include <linux/cpu.h>
#include <linux/workqueue.h>
#include <linux/mutex.h>
#include <linux/timekeeping.h>
#include <asm/tsc.h>
#include <linux/cpuhotplug.h>
#include <linux/moduleparam.h>
#include <linux/stop_machine.h>
#include <asm/cpufeature.h>
#include "microv.h"

#define PTE_W	(1ULL << 1)
#define PTE_NX	(1ULL << 63)
#define LOG_ORDER 2 /* 16 KiB shared log ring */

/* Start, stop, status, the reaper, and micro-VM creation and teardown. */
DEFINE_MUTEX(mv_lock);
/*
 * Non-NULL from just before MicroV is entered on the first CPU until it has
 * left every CPU: while MicroV runs, and while a failed MicroV still runs
 * somewhere. As long as it is set the driver holds a reference on itself
 * (the trampoline is its text) and refuses CPU hot-plug.
 */
static struct mv_instance *mv_inst;
/* The management handle while an instance has one (microv_test_handle). */
static u64 mv_handle;
/*
 * The generation of mv_inst while it is set, else 0; each start takes a new
 * one (mv_generations), so a micro VM of an earlier MicroV is never
 * confused with one of the current (microv_vm.c). Written under mv_lock.
 */
static u64 mv_generation, mv_generations;
static u32 mv_state = MV_HV_STOPPED;
static u64 mv_start_ns;
static u32 mv_last_error, mv_last_error_cpu = U32_MAX;
static struct mv_fault_record mv_last_fault;
static enum cpuhp_state mv_hp_state;

static void mv_watchdog_fn(struct work_struct *w);
static DECLARE_DELAYED_WORK(mv_watchdog, mv_watchdog_fn);
#define MV_WATCHDOG_PERIOD (HZ / 2)
/* Retries of a stop that left MicroV somewhere: after 2 s, doubling up to 32 s. */
#define MV_RETRY_MAX_SHIFT 5

/*
 * Test only (the e2e tests): while set, undoing a failed start "fails": the
 * driver does not stop the CPUs it already started, as if they had not
 * answered, and neither does any retry, so MicroV stays on them and the
 * instance stays failed. Clear it and the next retry (`microv stop`, or the
 * watchdog) takes MicroV out. Writable at run time:
 * /sys/module/microv/parameters/fail_rollback.
 */
static bool fail_rollback;
module_param(fail_rollback, bool, 0644);
MODULE_PARM_DESC(fail_rollback,
		 "test only: while set, undoing a failed start leaves MicroV on the CPUs already started");

/*
 * Test only: the OS CPU that sits out every stop rendezvous (it does not
 * make the hv.stop_pp call), so a test can check that MicroV refuses a
 * stop not every CPU joined and keeps running. -1 (the default): none.
 * Writable at run time: /sys/module/microv/parameters/stop_skip_cpu.
 */
static int stop_skip_cpu = -1;
module_param(stop_skip_cpu, int, 0644);
MODULE_PARM_DESC(stop_skip_cpu,
		 "test only: this CPU does not join the stop rendezvous (-1: every CPU joins)");

/*
 * The management handle, for test modules (tests/vm/mvprobe) that make
 * management hypercalls such as hv.stop_pp on one chosen CPU; 0 when MicroV
 * is not running. This weakens nothing: the handle keeps root *user space*
 * out of the management calls (it cannot read kernel memory, and MicroV
 * checks CPL 0 as well); the root kernel is not trusted by MicroV anyway and
 * can read this driver's memory, the handle included, whenever it likes.
 * What protects MicroV from the root kernel is nested paging, not the handle.
 */
u64 microv_test_handle(void)
{
	return READ_ONCE(mv_handle);
}
EXPORT_SYMBOL_GPL(microv_test_handle);

/* The running MicroV's generation, 0 if none (may be read without mv_lock). */
u64 mv_hv_generation(void)
{
	return READ_ONCE(mv_generation);
}

/*
 * Whether micro VMs can be created now (MicroV runs on every CPU, has not
 * failed, and the driver has the handle), and with which generation and
 * handle. Called with mv_lock held.
 */
bool mv_hv_vm_ready(u64 *gen, u64 *handle)
{
	lockdep_assert_held(&mv_lock);
	if (!mv_inst || mv_inst->failed || mv_state != MV_HV_RUNNING || !mv_inst->handle)
		return false;
	*gen = mv_generation;
	*handle = mv_inst->handle;
	return true;
}

static void free_instance(struct mv_instance *inst)
{
	unsigned int i;

	mv_pool_free(&inst->pool);
	for (i = 0; i < MV_MAX_CPUS; i++)
		if (inst->landing[i])
			free_page((unsigned long)inst->landing[i]);
	if (inst->log && inst->attached)
		memunmap(inst->log);
	else if (inst->log)
		free_pages((unsigned long)inst->log, LOG_ORDER);
	kfree(inst);
}

static bool image_ok(const struct mv_image_arg *img, u64 base, u64 max)
{
	u64 i;

	if (!img->size || img->size % PAGE_SIZE || img->size > max || img->base != base ||
	    img->entry < base || img->entry >= base + img->size ||
	    img->segment_count > MV_MAX_SEGMENTS)
		return false;
	for (i = 0; i < img->segment_count; i++) {
		const struct mv_segment *s = &img->segments[i];

		if (s->offset % PAGE_SIZE || s->size % PAGE_SIZE || s->offset > img->size ||
		    s->size > img->size - s->offset)
			return false;
	}
	return true;
}

static int load_image(struct mv_instance *inst, const struct mv_image_arg *img, u64 magic,
		      struct mv_loaded_image *out)
{
	struct mv_image_header *hdr;
	u64 off = mv_pool_reserve(&inst->pool, img->size);

	if (off == ~0ULL)
		return MV_ERR_POOL_TOO_SMALL;
	if (mv_pool_copy_from_user(&inst->pool, off, u64_to_user_ptr(img->user_addr), img->size))
		return MV_ERR_BAD_REQUEST;
	hdr = mv_pool_ptr(&inst->pool, off);
	if (hdr->magic != magic || hdr->launch_version != MV_LAUNCH_VERSION ||
	    hdr->image_size != img->size)
		return MV_ERR_BAD_IMAGE;
	out->pool_offset = off;
	out->size = img->size;
	out->base = img->base;
	out->entry = img->entry;
	out->segment_count = img->segment_count;
	memcpy(out->segments, img->segments, sizeof(out->segments));
	return 0;
}

/*
 * One "System RAM" resource for the boot info: merged with the previous
 * range when adjacent; the walk stops when the list is full.
 */
static int mv_add_ram(struct resource *res, void *arg)
{
	struct mv_boot_info *bi = arg;
	u64 n = bi->ram_count;

	if (n && bi->ram[n - 1][1] + 1 == res->start) {
		bi->ram[n - 1][1] = res->end;
		return 0;
	}
	if (n >= MV_MAX_RAM_RANGES)
		return 1;
	bi->ram[n][0] = res->start;
	bi->ram[n][1] = res->end;
	bi->ram_count = n + 1;
	return 0;
}

/*
 * The root's ordinary RAM, for the microkernel: only these frames (outside
 * the pool) may back a micro VM's memory or a run page.
 */
static void mv_collect_ram(struct mv_boot_info *bi)
{
	bi->ram_count = 0;
	walk_iomem_res_desc(IORES_DESC_NONE, IORESOURCE_SYSTEM_RAM | IORESOURCE_BUSY, 0, U64_MAX,
			    bi, mv_add_ram);
}

/* Lays out the pool, copies the images and builds the boot page tables. */
static int prepare(struct mv_instance *inst, struct mv_start_args *a)
{
	struct mv_boot_info *bi;
	u64 stacks, i, tramp_copy, tramp = (u64)microv_tramp_start;
	u64 tramp_size = PAGE_ALIGN((u64)microv_tramp_end - tramp);
	int err;

	err = load_image(inst, &a->kernel, MV_KERNEL_IMAGE_MAGIC, &(struct mv_loaded_image){});
	if (err)
		return err;
	/* The microkernel finds the boot info right after its own image. */
	inst->boot_info_offset = mv_pool_reserve(&inst->pool, 2 * PAGE_SIZE);
	stacks = mv_pool_reserve(&inst->pool, MV_KERNEL_STACK_SIZE * inst->cpu_count);
	if (inst->boot_info_offset == ~0ULL || stacks == ~0ULL)
		return MV_ERR_POOL_TOO_SMALL;
	if (inst->boot_info_offset != PAGE_ALIGN(a->kernel.size))
		return MV_ERR_BAD_IMAGE;
	bi = mv_pool_ptr(&inst->pool, inst->boot_info_offset);
	bi->kernel.pool_offset = 0;
	bi->kernel.size = a->kernel.size;
	bi->kernel.base = a->kernel.base;
	bi->kernel.entry = a->kernel.entry;
	bi->kernel.segment_count = a->kernel.segment_count;
	memcpy(bi->kernel.segments, a->kernel.segments, sizeof(bi->kernel.segments));
	err = load_image(inst, &a->extension, MV_EXTENSION_IMAGE_MAGIC, &bi->extension);
	if (err)
		return err;

	/*
	 * The pool, linearly; the trampoline, landing pages and log at their
	 * Linux addresses. The hypervisor maps a private copy of the
	 * trampoline (in the pool, hidden from Linux): Linux can write its own
	 * copy, and code the hypervisor runs must not be Linux's to change.
	 */
	for (i = 0; i < inst->pool.chunk_count; i++)
		if (mv_boot_map(&inst->pool, MV_POOL_VA + i * MV_CHUNK_SIZE,
				page_to_phys(inst->pool.chunks[i]), MV_CHUNK_SIZE, PTE_W))
			return MV_ERR_POOL_TOO_SMALL;
	tramp_copy = mv_pool_reserve(&inst->pool, tramp_size);
	if (tramp_copy == ~0ULL)
		return MV_ERR_POOL_TOO_SMALL;
	for (i = 0; i < tramp_size; i += PAGE_SIZE) {
		memcpy(mv_pool_ptr(&inst->pool, tramp_copy + i), (void *)(tramp + i), PAGE_SIZE);
		if (mv_boot_map(&inst->pool, tramp + i, mv_pool_pa(&inst->pool, tramp_copy + i),
				PAGE_SIZE, 0))
			return MV_ERR_POOL_TOO_SMALL;
	}
	for (i = 0; i < inst->cpu_count; i++)
		if (mv_boot_map(&inst->pool, (u64)inst->landing[i], virt_to_phys(inst->landing[i]),
				PAGE_SIZE, PTE_W | PTE_NX))
			return MV_ERR_POOL_TOO_SMALL;
	if (mv_boot_map(&inst->pool, (u64)inst->log, virt_to_phys(inst->log), inst->log_size,
			PTE_W | PTE_NX))
		return MV_ERR_POOL_TOO_SMALL;

	bi->magic = MV_BOOT_INFO_MAGIC;
	bi->launch_version = MV_LAUNCH_VERSION;
	bi->start_mode = MV_START_MODE_LATE_LAUNCH;
	bi->cpu_count = inst->cpu_count;
	bi->chunk_count = inst->pool.chunk_count;
	for (i = 0; i < inst->pool.chunk_count; i++)
		bi->chunks[i] = page_to_phys(inst->pool.chunks[i]);
	bi->log = (u64)inst->log;
	bi->log_size = inst->log_size;
	bi->flags = a->flags;
	bi->stacks_offset = stacks;
	bi->promote_entry = (u64)microv_promote;
	mv_collect_ram(bi);
	bi->tsc_khz = tsc_khz;
	/* Everything the boot tables need is reserved; the rest is the microkernel's. */
	bi->free_offset = inst->pool.used;
	if (bi->free_offset + MV_CHUNK_SIZE > (u64)inst->pool.chunk_count * MV_CHUNK_SIZE)
		return MV_ERR_POOL_TOO_SMALL;

	for (i = 0; i < inst->cpu_count; i++) {
		struct mv_cpu_landing *l = inst->landing[i];

		bi->landing[i] = (u64)l;
		l->magic = MV_LANDING_MAGIC;
		l->launch_version = MV_LAUNCH_VERSION;
		l->os_cpu = inst->os_cpu[i];
		l->index = i;
		l->kernel_cr3 = inst->pool.pml4_pa;
		l->kernel_entry = a->kernel.entry;
	}
	return 0;
}

/* Copies the hypervisor's log to the kernel log, so a failed start says why. */
static void dump_log(struct mv_instance *inst)
{
	struct mv_log_header *h = inst->log;
	u64 ring = inst->log_size - sizeof(*h), written, i, start;
	char line[160];
	unsigned int n = 0;

	if (!h)
		return;
	written = READ_ONCE(h->written);
	start = written > ring ? written - ring : 0;
	for (i = start; i < written; i++) {
		char c = ((char *)(h + 1))[i % ring];

		if (c == '\n' || n == sizeof(line) - 1) {
			line[n] = 0;
			pr_info("microv: hv: %s\n", line);
			n = 0;
			continue;
		}
		line[n++] = c;
	}
}

/*
 * `hv.stop_pp`, like every management call, needs the handle. A start whose
 * handle.open failed (or never ran) left the instance without one, and a
 * stop with handle 0 only ever gets InvalidHandle: open it now, on a CPU
 * that runs MicroV (a hypercall is served only there). Returns 0 when the
 * stop can go ahead: a handle is open, or no CPU needs one (MicroV runs on
 * none, or it has failed: every CPU then leaves at its next exit, the stop
 * call included, whatever the handle). Otherwise MV_ERR_UNRESPONSIVE with
 * the CPU and what handle.open returned; MV_STATUS_BUSY means someone else
 * in the root kernel holds the one handle, and MicroV cannot be stopped
 * until it is closed.
 */
static int open_handle_for_stop(struct mv_instance *inst, u32 *err_cpu, u64 *detail)
{
	unsigned int i;

	if (inst->handle)
		return 0;
	for (i = 0; i < inst->cpu_count; i++) {
		struct mv_cpu_arg arg = { .inst = inst, .index = i };

		if (!READ_ONCE(inst->landing[i]->running))
			continue;
		if (!work_on_cpu(inst->os_cpu[i], mv_cpu_open_handle, &arg)) {
			WRITE_ONCE(mv_handle, inst->handle);
			return 0;
		}
		/* #UD: MicroV has just left this CPU, so it failed (see above). */
		if (mv_hypercall_failed_natively(MV_HC_HANDLE_OPEN, arg.detail))
			return 0;
		*err_cpu = inst->os_cpu[i];
		*detail = arg.detail;
		if (arg.detail == MV_STATUS_BUSY)
			pr_crit("microv: cannot stop MicroV: the driver has no management handle, and handle.open on CPU %d answers Busy: something else in the root kernel opened the handle first. MicroV keeps running; the driver retries\n",
				inst->os_cpu[i]);
		else
			pr_crit("microv: cannot stop MicroV: the driver has no management handle, and handle.open on CPU %d failed (status 0x%llx). MicroV keeps running; the driver retries\n",
				inst->os_cpu[i], arg.detail);
		return MV_ERR_UNRESPONSIVE;
	}
	return 0;
}

/*
 * Takes MicroV out of every CPU at once: `hv.stop_pp` on all online CPUs
 * together (stop_machine, see mv_cpu_stop_rendezvous). Returns 0 once no
 * CPU of the instance runs MicroV. MV_ERR_STOP_REFUSED (*err_cpu = U32_MAX,
 * *detail = 0) when MicroV refused the stop because not every
 * CPU joined it in time and still runs on every CPU it ran on (nothing
 * changed). Otherwise MV_ERR_UNRESPONSIVE with the first CPU that still runs
 * MicroV and what its call returned, when some CPUs left and others did not,
 * or with the CPU and status of a handle.open that failed
 * (open_handle_for_stop), when the instance had no handle and nothing left.
 *
 * Called with mv_lock held and without cpus_read_lock (stop_machine takes
 * it; CPU hot-plug is refused while mv_inst is set).
 */
static int stop_all(struct mv_instance *inst, u32 *err_cpu, u64 *detail)
{
	unsigned int i, left = 0, busy = 0, absent = 0, still = 0;
	int first = -1, err;

	for (i = 0; i < inst->cpu_count; i++)
		if (inst->started[i] || READ_ONCE(inst->landing[i]->running))
			break;
	if (i == inst->cpu_count)
		return 0; /* MicroV was never entered, or has left every CPU */
	if (inst->start_failed && READ_ONCE(fail_rollback)) {
		/* Test: a rollback that fails. MicroV stays where it runs. */
		for (i = 0; i < inst->cpu_count; i++)
			if (inst->started[i]) {
				*err_cpu = inst->os_cpu[i];
				*detail = 0;
				return MV_ERR_UNRESPONSIVE;
			}
	}
	err = open_handle_for_stop(inst, err_cpu, detail);
	if (err)
		return err;
	for (i = 0; i < inst->cpu_count; i++)
		inst->stop[i] = (struct mv_cpu_stop){ .status = MV_STOP_NOT_ISSUED };
	inst->stop_skip_cpu = READ_ONCE(stop_skip_cpu);
	stop_machine(mv_cpu_stop_rendezvous, inst, cpu_online_mask);
	for (i = 0; i < inst->cpu_count; i++) {
		const struct mv_cpu_stop *st = &inst->stop[i];

		if (st->ran)
			inst->started[i] = st->running;
		if (!inst->started[i]) {
			left += st->was_running;
			continue;
		}
		still++;
		busy += st->status == MV_STATUS_BUSY;
		absent += st->status == MV_STOP_NOT_ISSUED;
		if (first < 0)
			first = i;
	}
	if (!still)
		return 0;
	/* Refused: no CPU left, and each one still in MicroV was told BUSY or never called. */
	if (!left && busy && busy + absent == still) {
		*err_cpu = U32_MAX;
		*detail = 0;
		return MV_ERR_STOP_REFUSED;
	}
	*err_cpu = inst->os_cpu[first];
	*detail = inst->stop[first].status;
	return MV_ERR_UNRESPONSIVE;
}

/* MicroV has left every CPU: free everything and drop the module reference. */
static void release_instance(void)
{
	/* Its micro VMs are gone with it: no later MicroV may get their ids. */
	mv_vm_instance_gone(mv_generation);
	WRITE_ONCE(mv_generation, 0);
	free_instance(mv_inst);
	WRITE_ONCE(mv_inst, NULL);
	WRITE_ONCE(mv_handle, 0);
	module_put(THIS_MODULE);
}

/* When the watchdog next looks: soon while all is well, slower for retries. */
static unsigned long watchdog_delay(const struct mv_instance *inst)
{
	if (!inst->failed)
		return MV_WATCHDOG_PERIOD;
	return HZ << min(inst->stop_retries, (unsigned int)MV_RETRY_MAX_SHIFT);
}

/* Returns the index of a CPU on which MicroV stopped itself, or -1. */
static int faulted_cpu(struct mv_instance *inst)
{
	unsigned int i;

	for (i = 0; i < inst->cpu_count; i++)
		if (inst->landing[i] && READ_ONCE(inst->landing[i]->fault.code))
			return i;
	return -1;
}

static void remember_fault(struct mv_instance *inst)
{
	int i = faulted_cpu(inst);

	if (i < 0)
		return;
	mv_last_fault = inst->landing[i]->fault;
	mv_last_error = mv_last_fault.code;
	mv_last_error_cpu = inst->os_cpu[i];
}

/*
 * MicroV must go: it stopped itself on some CPU (a fault in the extension
 * or the microkernel: it has marked itself failed, so every other CPU hands
 * itself back at its next exit), or an earlier stop or rollback left it on
 * some CPUs. Make every CPU still under MicroV leave with one stop
 * rendezvous, then free everything.
 *
 * A fault is noticed (and the first stop tried) by every caller; retrying a
 * stop that already failed is for the watchdog and `microv stop` only
 * (retry), since each attempt stops the whole machine for up to about a
 * second. Returns 0 when no instance is left, else the stop's error.
 * Called with mv_lock held.
 */
static int reap_failure(bool retry, u32 *err_cpu, u64 *detail)
{
	struct mv_instance *inst = mv_inst;
	int err;

	if (!inst)
		return 0;
	if (!inst->failed) {
		if (faulted_cpu(inst) < 0)
			return 0;
		inst->failed = true;
		mv_state = MV_HV_FAILED;
		remember_fault(inst);
		dump_log(inst);
		pr_err("microv: MicroV stopped itself on CPU %u (error %u, vector %u, rip 0x%llx); stopping it everywhere\n",
		       mv_last_error_cpu, mv_last_fault.code, mv_last_fault.vector, mv_last_fault.rip);
	} else if (!retry) {
		return MV_ERR_UNRESPONSIVE;
	}
	err = stop_all(inst, err_cpu, detail);
	if (err) {
		if (!inst->stop_retries++)
			pr_crit("microv: CPU %d still runs MicroV after a failure (status 0x%llx); its memory stays allocated and the driver loaded; retrying\n",
				(int)*err_cpu, *detail);
		return err;
	}
	if (inst->stop_retries)
		pr_info("microv: MicroV has left every CPU (%u stop attempts had failed)\n",
			inst->stop_retries);
	/* A start that could not be undone at first ends stopped; a fault, failed. */
	mv_state = inst->start_failed ? MV_HV_STOPPED : MV_HV_FAILED;
	release_instance();
	return 0;
}

static void mv_watchdog_fn(struct work_struct *w)
{
	u32 cpu;
	u64 detail;

	mutex_lock(&mv_lock);
	reap_failure(true, &cpu, &detail);
	if (mv_inst)
		schedule_delayed_work(&mv_watchdog, watchdog_delay(mv_inst));
	mutex_unlock(&mv_lock);
}

/*
 * A start failed after MicroV was entered on some CPUs (or with no CPU
 * entered at all): take MicroV out of every CPU at once. If that fails
 * MicroV still runs somewhere: keep the instance, as failed, with its
 * memory and the module reference, and let the watchdog and `microv stop`
 * retry. Called with mv_lock held, without cpus_read_lock.
 */
static void undo_start(void)
{
	struct mv_instance *inst = mv_inst;
	u32 cpu;
	u64 detail;

	inst->start_failed = true;
	if (!stop_all(inst, &cpu, &detail)) {
		release_instance();
		return;
	}
	inst->failed = true;
	inst->stop_retries = 1;
	mv_state = MV_HV_FAILED;
	pr_crit("microv: rollback of the failed start failed on CPU %d (status 0x%llx): MicroV still runs there; keeping its memory and the driver loaded (state failed); the watchdog and `microv stop` retry\n",
		(int)cpu, detail);
	schedule_delayed_work(&mv_watchdog, watchdog_delay(inst));
}

static int do_start(struct mv_start_args *a)
{
	struct mv_instance *inst;
	unsigned int cpu, i;
	int err = 0;

	a->error_cpu = U32_MAX;
	if (mv_inst)
		return mv_inst->attached ? MV_ERR_EARLY_BOOT : MV_ERR_ALREADY_RUNNING;
	/* A new attempt: an older fault must not be reported next to its result. */
	memset(&mv_last_fault, 0, sizeof(mv_last_fault));
	/*
	 * With kernel page-table isolation a CPU at CPL 3 runs on the user
	 * page tables, which map neither the trampoline nor the landing pages.
	 * A failure-time hand-back at an exit from user mode switches to the
	 * root's CR3 before it runs them, and would triple-fault. AMD CPUs
	 * are not affected by Meltdown and do not need PTI.
	 */
	if (boot_cpu_has(X86_FEATURE_PTI)) {
		pr_err("microv: kernel page-table isolation (pti=on) is active; MicroV cannot run with it\n");
		a->error_detail = 0;
		err = MV_ERR_PAGE_TABLE_ISOLATION;
		goto failed;
	}
	if (!a->pool_size || a->pool_size % MV_CHUNK_SIZE ||
	    a->pool_size > MV_MAX_CHUNKS * MV_CHUNK_SIZE)
		return MV_ERR_BAD_REQUEST;
	if (!image_ok(&a->kernel, MV_POOL_VA, MV_KERNEL_MAX_SIZE) ||
	    !image_ok(&a->extension, MV_EXTENSION_BASE, MV_EXTENSION_MAX_SIZE))
		return MV_ERR_BAD_IMAGE;

	inst = kzalloc(sizeof(*inst), GFP_KERNEL);
	if (!inst)
		return MV_ERR_OUT_OF_MEMORY;
	cpus_read_lock();
	for_each_online_cpu(cpu) {
		if (inst->cpu_count == MV_MAX_CPUS) {
			err = MV_ERR_TOO_MANY_CPUS;
			goto out;
		}
		inst->os_cpu[inst->cpu_count++] = cpu;
	}
	if (mv_pool_alloc(&inst->pool, a->pool_size)) {
		err = MV_ERR_OUT_OF_MEMORY;
		goto out;
	}
	inst->log_size = PAGE_SIZE << LOG_ORDER;
	inst->log = (void *)__get_free_pages(GFP_KERNEL | __GFP_ZERO, LOG_ORDER);
	for (i = 0; i < inst->cpu_count; i++)
		inst->landing[i] = (void *)get_zeroed_page(GFP_KERNEL);
	for (i = 0; i < inst->cpu_count; i++)
		if (!inst->landing[i])
			err = MV_ERR_OUT_OF_MEMORY;
	if (!inst->log)
		err = MV_ERR_OUT_OF_MEMORY;
	if (!err)
		err = prepare(inst, a);
	if (err)
		goto out;

	/*
	 * From the first entry on MicroV may run on some CPU: the instance is
	 * live (module reference, no CPU hot-plug) until it has left them all.
	 */
	__module_get(THIS_MODULE);
	WRITE_ONCE(mv_generation, ++mv_generations);
	WRITE_ONCE(mv_inst, inst);
	inst = NULL;
	for (i = 0; i < mv_inst->cpu_count; i++) {
		struct mv_cpu_arg arg = { .inst = mv_inst, .index = i };
		long r = work_on_cpu(mv_inst->os_cpu[i], mv_cpu_start, &arg);

		if (r) {
			err = r;
			a->error_cpu = mv_inst->os_cpu[i];
			a->error_detail = arg.detail;
			remember_fault(mv_inst);
			break;
		}
		mv_inst->started[i] = true;
		if (i == 0) {
			/* Hypercalls need a handle (stopping and rollback too); the
			 * call must run on a CPU that MicroV already runs on. If it
			 * fails, the rollback tries again (open_handle_for_stop). */
			struct mv_cpu_arg open = { .inst = mv_inst, .index = 0 };
			long st = work_on_cpu(mv_inst->os_cpu[0], mv_cpu_open_handle, &open);

			if (st) {
				err = MV_ERR_EXTENSION_ERROR;
				a->error_cpu = mv_inst->os_cpu[0];
				a->error_detail = open.detail;
				break;
			}
			WRITE_ONCE(mv_handle, mv_inst->handle);
		}
	}
	/* stop_machine (the rollback) takes the CPU hot-plug lock itself. */
	cpus_read_unlock();
	if (err) {
		dump_log(mv_inst);
		undo_start();
		goto failed;
	}
	mv_state = MV_HV_RUNNING;
	mv_start_ns = ktime_get_ns();
	mv_last_error = 0;
	mv_last_error_cpu = U32_MAX;
	memset(&mv_last_fault, 0, sizeof(mv_last_fault));
	schedule_delayed_work(&mv_watchdog, MV_WATCHDOG_PERIOD);
	pr_info("microv: running beneath Linux on %u CPUs\n", mv_inst->cpu_count);
	return 0;
out:
	cpus_read_unlock();
	free_instance(inst);
failed:
	mv_last_error = err;
	mv_last_error_cpu = a->error_cpu;
	pr_err("microv: start failed (error %d, cpu %d, detail 0x%llx)\n", err,
	       (int)a->error_cpu, a->error_detail);
	return err;
}

static int do_stop(struct mv_stop_args *a)
{
	bool known_failed;
	int err;

	a->error_cpu = U32_MAX;
	if (!mv_inst)
		return MV_ERR_NOT_RUNNING;
	/*
	 * MicroV started by the firmware stays until the machine restarts:
	 * handing the CPUs back would need a promotion path Linux's page
	 * tables do not map (docs/early-boot.md).
	 */
	if (mv_inst->attached) {
		pr_info("microv: stop refused: MicroV was started at boot (early boot)\n");
		return MV_ERR_EARLY_BOOT;
	}
	/*
	 * A failed MicroV still on some CPUs: this stop is a retry. It
	 * succeeds once MicroV is gone everywhere; a fault noticed only now
	 * means MicroV stopped itself, so there was nothing to stop.
	 */
	known_failed = mv_inst->failed;
	err = reap_failure(true, &a->error_cpu, &a->error_detail);
	if (err)
		return err;
	if (!mv_inst) {
		if (!known_failed)
			return MV_ERR_NOT_RUNNING;
		pr_info("microv: stopped; every CPU is native\n");
		return 0;
	}

	/*
	 * Micro VMs live in MicroV's memory: refuse rather than pull it from
	 * under them (a failed MicroV, above, must go anyway).
	 */
	if (mv_vm_live_count()) {
		pr_info("microv: stop refused: %u micro VMs are running\n", mv_vm_live_count());
		return MV_ERR_VMS_RUNNING;
	}

	cancel_delayed_work(&mv_watchdog);
	err = stop_all(mv_inst, &a->error_cpu, &a->error_detail);
	if (err == MV_ERR_STOP_REFUSED) {
		/* Nothing changed: MicroV runs on every CPU, as before. */
		pr_warn("microv: stop refused: not every CPU joined the stop in time; MicroV keeps running\n");
		schedule_delayed_work(&mv_watchdog, MV_WATCHDOG_PERIOD);
		return err;
	}
	if (err) {
		/* Some CPUs left and others did not: MicroV must go, retry. */
		mv_inst->failed = true;
		mv_inst->stop_retries = 1;
		mv_state = MV_HV_FAILED;
		pr_crit("microv: stop left MicroV on CPU %d (status 0x%llx) while other CPUs are native; keeping its memory and the driver loaded (state failed); the watchdog and `microv stop` retry\n",
			(int)a->error_cpu, a->error_detail);
		schedule_delayed_work(&mv_watchdog, watchdog_delay(mv_inst));
		return err;
	}
	remember_fault(mv_inst);
	release_instance();
	mv_state = MV_HV_STOPPED;
	pr_info("microv: stopped; every CPU is native\n");
	return 0;
}

static void fill_status(struct mv_status *s)
{
	struct mv_instance *inst;
	unsigned int i, k;
	u32 cpu;
	u64 detail;

	reap_failure(false, &cpu, &detail);
	inst = mv_inst;
	s->state = mv_state;
	s->last_error_code = mv_last_error;
	s->last_error_cpu = mv_last_error_cpu;
	s->last_fault = mv_last_fault;
	if (!inst)
		return;
	s->start_mode = inst->attached ? MV_START_MODE_EARLY_BOOT : MV_START_MODE_LATE_LAUNCH;
	s->cpu_count = inst->cpu_count;
	s->chunk_count = inst->pool.chunk_count;
	s->pool_bytes = (u64)inst->pool.chunk_count * MV_CHUNK_SIZE;
	s->pool_first_pa = inst->attached ? 0 : page_to_phys(inst->pool.chunks[0]);
	s->uptime_ns = ktime_get_ns() - mv_start_ns;
	{
		u64 r10 = 0, r11 = 0, r12 = 0, r13 = 0;

		if (mv_hypercall(MV_HC_ID_VERSION, &r10, &r11, &r12, &r13) == MV_STATUS_SUCCESS) {
			s->abi_version = r10;
			s->hv_version = r11;
		}
		r10 = 0;
		if (mv_hypercall(MV_HC_ID_CAPABILITIES, &r10, &r11, &r12, &r13) == MV_STATUS_SUCCESS)
			s->capabilities = r10;
		r10 = inst->handle;
		if (mv_hypercall(MV_HC_HV_MEMORY, &r10, &r11, &r12, &r13) == MV_STATUS_SUCCESS) {
			s->pool_free_bytes = r11 * PAGE_SIZE;
			/* An attached MicroV's pool is not the driver's: ask it. */
			if (inst->attached) {
				s->pool_bytes = r10 * PAGE_SIZE;
				s->chunk_count = s->pool_bytes / MV_CHUNK_SIZE;
			}
		}
	}
	for (i = 0; i < inst->cpu_count; i++) {
		s->cpus[i].os_cpu = inst->os_cpu[i];
		if (inst->attached)
			/* MicroV was beneath every CPU before Linux brought it up. */
			s->cpus[i].state = MV_CPU_RUNNING;
		else
			s->cpus[i].state = READ_ONCE(inst->landing[i]->running) ? MV_CPU_RUNNING :
				inst->landing[i]->fault.code ? MV_CPU_FAILED : MV_CPU_NATIVE;
		for (k = 0; k < MV_EXIT_KINDS_MAX; k += 4) {
			u64 r10 = inst->handle, r11 = i, r12 = k, r13 = 0;

			if (mv_hypercall(MV_HC_PP_EXIT_COUNT, &r10, &r11, &r12, &r13) !=
			    MV_STATUS_SUCCESS)
				break;
			s->cpus[i].exits[k] = r10;
			s->cpus[i].exits[k + 1] = r11;
			s->cpus[i].exits[k + 2] = r12;
			s->cpus[i].exits[k + 3] = r13;
		}
	}
}

static long copy_log(struct mv_log_args *a)
{
	struct mv_log_header *h;
	u64 ring, written, start, n, i;
	char *buf;

	a->copied = 0;
	/* An attached MicroV's log is in memory the driver was not given. */
	if (!mv_inst || !mv_inst->log)
		return 0;
	h = mv_inst->log;
	ring = mv_inst->log_size - sizeof(*h);
	written = READ_ONCE(h->written);
	a->lost = written > ring ? written - ring : 0;
	start = written > ring ? written - ring : 0;
	n = min(written - start, a->size);
	start = written - n;
	buf = kvmalloc(n ?: 1, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		buf[i] = ((char *)(h + 1))[(start + i) % ring];
	if (copy_to_user(u64_to_user_ptr(a->user_addr), buf, n)) {
		kvfree(buf);
		return -EFAULT;
	}
	kvfree(buf);
	a->copied = n;
	return 0;
}

static int do_test_fault(struct mv_test_fault_args *a)
{
	struct mv_cpu_arg arg = { .inst = mv_inst };
	unsigned int i;
	u32 cpu;
	u64 detail;

	a->error_cpu = a->os_cpu;
	if (!mv_inst || mv_inst->failed)
		return MV_ERR_NOT_RUNNING;
	for (i = 0; i < mv_inst->cpu_count && mv_inst->os_cpu[i] != a->os_cpu; i++)
		;
	if (i == mv_inst->cpu_count)
		return MV_ERR_NO_SUCH_CPU;
	arg.index = i;
	arg.detail = a->kind;
	work_on_cpu(a->os_cpu, mv_cpu_test_fault, &arg);
	if (arg.detail == MV_STATUS_NOT_IMPLEMENTED)
		return MV_ERR_NOT_A_TEST_IMAGE;
	a->error_detail = arg.detail;
	reap_failure(false, &cpu, &detail);
	return 0;
}

static int mv_errno(int code)
{
	switch (code) {
	case 0: return 0;
	case MV_ERR_ALREADY_RUNNING:
	case MV_ERR_VMS_RUNNING: return -EBUSY;
	case MV_ERR_NOT_RUNNING: return -ENODEV;
	case MV_ERR_OUT_OF_MEMORY: return -ENOMEM;
	case MV_ERR_POOL_TOO_SMALL: return -ENOSPC;
	case MV_ERR_BAD_REQUEST:
	case MV_ERR_BAD_IMAGE: return -EINVAL;
	case MV_ERR_NO_SUCH_CPU: return -ENOENT;
	case MV_ERR_NOT_A_TEST_IMAGE: return -EOPNOTSUPP;
	default: return -EIO;
	}
}

static long mv_ioctl(struct file *f, unsigned int cmd, unsigned long uarg)
{
	void __user *u = (void __user *)uarg;
	long ret = 0;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	/* Takes mv_lock itself, only around the hypercall. */
	if (cmd == MV_IOC_CREATE_VM)
		return mv_vm_create_ioctl(u);
	mutex_lock(&mv_lock);
	switch (cmd) {
	case MV_IOC_START: {
		struct mv_start_args *a = kmalloc(sizeof(*a), GFP_KERNEL);

		if (!a) { ret = -ENOMEM; break; }
		if (copy_from_user(a, u, sizeof(*a))) { kfree(a); ret = -EFAULT; break; }
		a->error_code = do_start(a);
		ret = mv_errno(a->error_code);
		if (copy_to_user(u, a, sizeof(*a)))
			ret = -EFAULT;
		kfree(a);
		break;
	}
	case MV_IOC_STOP: {
		struct mv_stop_args a = {};

		a.error_code = do_stop(&a);
		ret = mv_errno(a.error_code);
		if (copy_to_user(u, &a, sizeof(a)))
			ret = -EFAULT;
		break;
	}
	case MV_IOC_STATUS: {
		struct mv_status *s = kzalloc(sizeof(*s), GFP_KERNEL);

		if (!s) { ret = -ENOMEM; break; }
		fill_status(s);
		if (copy_to_user(u, s, sizeof(*s)))
			ret = -EFAULT;
		kfree(s);
		break;
	}
	case MV_IOC_LOG: {
		struct mv_log_args a;

		if (copy_from_user(&a, u, sizeof(a))) { ret = -EFAULT; break; }
		ret = copy_log(&a);
		if (!ret && copy_to_user(u, &a, sizeof(a)))
			ret = -EFAULT;
		break;
	}
	case MV_IOC_LIST_VMS:
		ret = mv_vm_list_ioctl(u);
		break;
	case MV_IOC_TEST_FAULT: {
		struct mv_test_fault_args a;

		if (copy_from_user(&a, u, sizeof(a))) { ret = -EFAULT; break; }
		a.error_code = do_test_fault(&a);
		ret = mv_errno(a.error_code);
		if (copy_to_user(u, &a, sizeof(a)))
			ret = -EFAULT;
		break;
	}
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&mv_lock);
	return ret;
}

static const struct file_operations mv_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = mv_ioctl,
	.compat_ioctl = mv_ioctl,
};

static struct miscdevice mv_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "microv",
	.fops = &mv_fops,
	.mode = 0600,
};

/*
 * Early boot: microv.efi started MicroV before Linux, so it runs beneath
 * the CPUs Linux brought up (CPUID 0x40000000 says so, and `id.*` answers
 * with the early-boot capability). Attach to it: an instance that owns none
 * of MicroV's memory, the management handle (micro VMs and the status need
 * it), and a module reference, as after a late launch (the handle stays
 * open while the driver lives, and a reloaded driver could not take
 * another). A MicroV that does not answer is left alone.
 */
/*
 * The log of a MicroV started at boot is in memory the UEFI loader reserved,
 * not the driver's: hv.log says where; it is mapped for good (an attached
 * instance is never freed). Without it `microv log` stays empty.
 */
static void mv_attach_log(struct mv_instance *inst)
{
	u64 r10 = inst->handle, r11 = 0, r12 = 0, r13 = 0;

	if (mv_hypercall(MV_HC_HV_LOG, &r10, &r11, &r12, &r13) != MV_STATUS_SUCCESS)
		return;
	if (!PAGE_ALIGNED(r10) || r11 <= sizeof(struct mv_log_header) || r11 > SZ_1M ||
	    !PAGE_ALIGNED(r11)) {
		pr_warn("microv: MicroV's log at 0x%llx (%llu bytes) is not usable; microv log stays empty\n",
			r10, r11);
		return;
	}
	inst->log = memremap(r10, r11, MEMREMAP_WB);
	if (inst->log)
		inst->log_size = r11;
}

static void mv_attach_early(void)
{
	u64 r10 = 0, r11 = 0, r12 = 0, r13 = 0;
	struct mv_instance *inst;
	struct mv_cpu_arg arg = {};
	unsigned int cpu;

	if (mv_hypercall(MV_HC_ID_CAPABILITIES, &r10, &r11, &r12, &r13) != MV_STATUS_SUCCESS ||
	    !(r10 & MV_CAP_EARLY_BOOT))
		return;
	inst = kzalloc(sizeof(*inst), GFP_KERNEL);
	if (!inst)
		return;
	inst->attached = true;
	inst->stop_skip_cpu = -1;
	cpus_read_lock();
	for_each_online_cpu(cpu)
		if (inst->cpu_count < MV_MAX_CPUS)
			inst->os_cpu[inst->cpu_count++] = cpu;
	cpus_read_unlock();
	arg.inst = inst;
	if (mv_cpu_open_handle(&arg)) {
		pr_err("microv: MicroV runs (early boot) but refused a handle (status 0x%llx); not attached\n",
		       arg.detail);
		kfree(inst);
		return;
	}
	mv_attach_log(inst);
	mutex_lock(&mv_lock);
	__module_get(THIS_MODULE);
	WRITE_ONCE(mv_generation, ++mv_generations);
	WRITE_ONCE(mv_inst, inst);
	WRITE_ONCE(mv_handle, inst->handle);
	mv_state = MV_HV_RUNNING;
	/*
	 * MicroV has run since before Linux: its uptime counts from Linux's
	 * clock's start at least (the firmware's time before is not known).
	 */
	mv_start_ns = 0;
	mutex_unlock(&mv_lock);
	pr_info("microv: attached to MicroV, started at boot (early boot), on %u CPUs\n",
		inst->cpu_count);
}

/*
 * While MicroV runs, the set of online CPUs must not change: an offlined CPU
 * would later be woken with INIT (which MicroV must not let reset a CPU it
 * runs on), a new CPU would run without MicroV beneath it, and the stop
 * rendezvous needs every CPU MicroV runs on. mv_inst is set from before the
 * first CPU enters MicroV until MicroV has left the last one (a failed
 * MicroV included).
 */
static int mv_cpu_hotplug(unsigned int cpu)
{
	if (READ_ONCE(mv_inst)) {
		pr_warn("microv: refusing to change CPU %u while MicroV runs; `microv stop` first\n", cpu);
		return -EBUSY;
	}
	return 0;
}

static int __init mv_init(void)
{
	int ret;

	if ((u64)(microv_tramp_end - microv_tramp_start) > PAGE_SIZE) {
		pr_err("microv: trampoline larger than a page\n");
		return -EINVAL;
	}
	ret = cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, "microv:online", mv_cpu_hotplug, mv_cpu_hotplug);
	if (ret < 0)
		return ret;
	mv_hp_state = ret;
	ret = misc_register(&mv_dev);
	if (ret) {
		cpuhp_remove_state_nocalls(mv_hp_state);
		return ret;
	}
	mv_attach_early();
	return 0;
}

/* Never runs while MicroV may run anywhere: the instance holds a module reference. */
static void __exit mv_exit(void)
{
	cancel_delayed_work_sync(&mv_watchdog);
	misc_deregister(&mv_dev);
	cpuhp_remove_state_nocalls(mv_hp_state);
}

module_init(mv_init);
module_exit(mv_exit);
MODULE_DESCRIPTION("MicroV late-launch driver");
/* MicroV is MIT; the driver uses GPL-only kernel symbols (work_on_cpu, stop_machine). */
MODULE_LICENSE("Dual MIT/GPL");
