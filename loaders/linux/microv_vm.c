// SPDX-License-Identifier: MIT
/*
 * Micro VMs: the VM and vCPU file descriptors.
 *
 * MV_IOC_CREATE_VM on /dev/microv returns a VM fd ("microv-vm"); on it
 * MV_IOC_VM_MAP_MEMORY gives the VM some of the caller's memory and
 * MV_IOC_VM_CREATE_VCPU returns a vCPU fd ("microv-vcpu"), whose mmap is the
 * vCPU's run page and whose ioctls run it and read and load its registers.
 * Closing the last reference destroys the object in MicroV and frees what
 * the driver holds for it. MicroV decides everything; the driver pins,
 * allocates, forwards and cleans up.
 *
 * The VMM (root user space) is not trusted: every argument is checked
 * before anything is pinned or called, every failure undoes what the call
 * did, and no fd can outlive what it points to (a vCPU fd holds its VM fd,
 * every fd holds the module).
 *
 * Lifetimes. A VM or vCPU belongs to one start of MicroV, its generation
 * (mv_hv_generation()). When that MicroV is gone from every CPU (stopped or
 * failed and reaped) its VMs are gone with it: the driver frees their pages
 * and never sends their ids to a later MicroV. While it is alive, a page
 * MicroV may still use (a pinned guest page, a run page) goes back to Linux
 * only after MicroV has let go of it (the unmap, destroy or vcpu.destroy
 * call succeeded). If that call fails, the VM stays on mv_vms as a zombie,
 * with its pages, until that MicroV is gone (mv_vm_instance_gone); zombies
 * do not keep MicroV from stopping (nothing can run them).
 *
 * Errors (errno of the VM and vCPU ioctls, and of MV_IOC_CREATE_VM, which
 * has no error_code field): ENODEV MicroV is not running, or the MicroV the
 * VM belonged to is gone; EOPNOTSUPP this MicroV does not serve micro VMs;
 * ENOSPC MicroV's pool is full (or too many regions in one VM); ENOMEM the
 * kernel is out of memory; EPERM MicroV refuses the memory
 * (MemoryRefused); EBUSY the vCPU is in use (another thread runs it, or
 * MicroV answered Busy); EEXIST the guest-physical range is already
 * mapped; EINVAL a bad argument; EFAULT a bad user address; EINTR a signal;
 * EIO anything else (logged, rate-limited).
 *
 * Locking: mv_lock (microv_main.c) orders VM creation against stop and
 * covers mv_vms, the zombie state and each VM's stuck_vcpus, and every
 * teardown decision (so the generation cannot change under it). vm->lock
 * covers a VM's regions and counters; it is never taken with mv_lock held
 * the other way round (mv_lock first, if both). vcpu->lock serialises RUN,
 * GET_REGS and SET_REGS of one vCPU; KICK takes no lock (it must reach a
 * RUN that holds vcpu->lock).
 *
 * Time. MicroV emulates each vCPU's x2APIC timer (TSC-deadline mode) and
 * fires it when it enters the vCPU at or after the deadline; every exit
 * tells the driver the deadline (exit.deadline, a TSC value; 0: disarmed).
 * RUN turns that into host time: before each entry it arms a per-vCPU
 * hrtimer, pinned to the CPU that enters, for the deadline (the interrupt
 * ends the guest's run, the driver enters again and MicroV fires the
 * timer: the callback does nothing; a guest that moves its deadline
 * earlier exits with TIMER for the driver to re-arm); and a HLT sleeps in
 * the host, interruptibly, until the deadline (if armed), a KICK, a signal,
 * or a vector the VMM raised in the run page. The run page is the VMM's to
 * write too, so the deadline read from it is a hint: a VMM that changes it
 * only mistimes its own vCPU.
 */
#include <linux/anon_inodes.h>
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/list.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>
#include <asm/msr.h>
#include <asm/processor-flags.h>
#include <asm/tsc.h>
#include "microv.h"

/* Regions (one per MV_MAP_MAX_PAGES pages of a map call) per VM. */
#define MV_VM_MAX_REGIONS 4096
/* vcpu.destroy answered Busy: tries, 1 ms apart, before giving up. */
#define MV_VCPU_DESTROY_TRIES 100
#define MV_MAP_ALL (MV_MAP_READ | MV_MAP_WRITE | MV_MAP_EXECUTE)
/* run.set_registers / run.get_registers: general registers and special ones. */
#define MV_REGS_ALL 3
/*
 * Driver-private hypercall status: the MicroV this VM belongs to is gone
 * (another generation, `vmmcall` raised #UD, or the handle is no longer
 * valid). Never a real status (those are small).
 */
#define MV_GONE (~0ULL)
/*
 * Longest host timer or sleep armed at once for a guest deadline: a later
 * (or absurd) deadline is reached in steps, so nothing overflows. A host
 * timer that expires early costs one INTERRUPTED exit; a sleep that ends
 * early sleeps again.
 */
#define MV_TIMER_MAX_NS (10 * NSEC_PER_SEC)
/* Without a known TSC frequency a deadline is polled this often. */
#define MV_TIMER_POLL_NS (1 * NSEC_PER_MSEC)
/* A halted vCPU checks this often that its MicroV is still there. */
#define MV_HALT_CHECK_NS (1 * NSEC_PER_SEC)

/* The VM's RUN exit counters (mv_vm.exits), for MV_IOC_LIST_VMS. */
enum {
	MV_VM_EXITS_IO,
	MV_VM_EXITS_MMIO,
	MV_VM_EXITS_HLT,
	MV_VM_EXITS_INTERRUPTED,
	MV_VM_EXITS_SHUTDOWN,
	MV_VM_EXITS_OTHER,
	MV_VM_EXITS_COUNT,
};

/* Guest memory from one map call: at most MV_MAP_MAX_PAGES pinned pages. */
struct mv_region {
	struct list_head node;
	u64 gpa;
	u64 npages;
	/* Pages [0, mapped) are mapped in MicroV, in whole runs (run_len). */
	u64 mapped;
	u64 flags;
	struct page **pages;
};

struct mv_vm {
	struct list_head node;		/* mv_vms (mv_lock) */
	u64 id;
	u64 gen;			/* MicroV's generation at creation */
	u64 handle;			/* that MicroV's management handle */
	/* For `microv status`: who created it. */
	pid_t pid;
	char comm[TASK_COMM_LEN];
	/* The fd is closed, but MicroV did not destroy the VM (mv_lock). */
	bool zombie;
	/* run.run exits of all its vCPUs, by MV_VM_EXITS_*. */
	atomic64_t exits[MV_VM_EXITS_COUNT];
	/* vCPUs MicroV did not destroy; their run pages stay (mv_lock). */
	struct list_head stuck_vcpus;
	struct mutex lock;		/* the fields below */
	struct list_head regions;
	unsigned int region_count;
	u64 mem_bytes;			/* pinned guest memory */
	unsigned int vcpu_count;
	struct list_head vcpus;		/* live vCPUs (mv_vcpu.live), for kicks */
};

struct mv_vcpu {
	struct list_head node;		/* vm->stuck_vcpus once stuck */
	struct list_head live;		/* vm->vcpus while it has an fd (vm->lock) */
	struct mv_vm *vm;
	struct file *vm_file;		/* keeps the VM alive */
	u64 id;
	u32 apic_id;
	struct page *run_page;
	struct mutex lock;		/* RUN, GET_REGS, SET_REGS */
	/*
	 * The host timer for the guest's APIC timer, armed before each entry
	 * (vcpu->lock): for TSC value timer_tsc (0: not armed) on CPU
	 * timer_cpu.
	 */
	struct hrtimer timer;
	u64 timer_tsc;
	int timer_cpu;
	/*
	 * A HLT sleep a signal cut short (vcpu->lock): the next RUN sleeps on,
	 * until halt_deadline, unless woken.
	 */
	bool halted;
	u64 halt_deadline;
	/* Wake-ups (KICK). A RUN sleeping in a HLT waits on wq. */
	wait_queue_head_t wq;
	/* A kick not yet seen by an entry or a HLT sleep. */
	atomic_t kicked;
	/* In the guest (between the entry's setup and run.run's return) on cpu. */
	bool in_guest;
	int cpu;
};

/* Every VM not yet freed: live ones (with an fd) and zombies. Under mv_lock. */
static LIST_HEAD(mv_vms);

/*
 * One VM hypercall with the VM's handle; *r10 (if not NULL) receives R10.
 * Made on whatever CPU this thread runs on: the handle is valid on every
 * CPU and `vmmcall` is one instruction. Returns the status, or MV_GONE.
 */
static u64 vm_call(const struct mv_vm *vm, u64 call, u64 r11, u64 r12, u64 r13, u64 *r10_out)
{
	u64 r10 = vm->handle, st;

	if (mv_hv_generation() != vm->gen)
		return MV_GONE;
	st = mv_hypercall(call, &r10, &r11, &r12, &r13);
	if (mv_hypercall_failed_natively(call, st) || st == MV_STATUS_INVALID_HANDLE)
		return MV_GONE;
	if (r10_out)
		*r10_out = r10;
	return st;
}

static int status_errno(u64 st, const char *what)
{
	switch (st) {
	case MV_STATUS_SUCCESS: return 0;
	case MV_GONE: return -ENODEV;
	case MV_STATUS_NOT_IMPLEMENTED: return -EOPNOTSUPP;
	case MV_STATUS_INVALID_ARGUMENT: return -EINVAL;
	case MV_STATUS_BUSY: return -EBUSY;
	case MV_STATUS_OUT_OF_MEMORY: return -ENOSPC;
	case MV_STATUS_MEMORY_REFUSED: return -EPERM;
	default:
		pr_warn_ratelimited("microv: %s failed with status 0x%llx\n", what, st);
		return -EIO;
	}
}

/* Pages from i on that are physically contiguous: one vm.map_memory. */
static u64 run_len(const struct mv_region *r, u64 i)
{
	unsigned long pfn = page_to_pfn(r->pages[i]);
	u64 n = 1;

	while (i + n < r->npages && page_to_pfn(r->pages[i + n]) == pfn + n)
		n++;
	return n;
}

/* Maps the region run by run; r->mapped says how far it got. */
static u64 map_region(struct mv_vm *vm, struct mv_region *r)
{
	u64 i, n, st;

	for (i = 0; i < r->npages; i += n) {
		n = run_len(r, i);
		st = vm_call(vm, MV_HC_VM_MAP_MEMORY, (n << 32) | vm->id,
			     (r->gpa + i * PAGE_SIZE) | r->flags, page_to_phys(r->pages[i]), NULL);
		if (st != MV_STATUS_SUCCESS)
			return st;
		r->mapped = i + n;
		cond_resched();
	}
	return MV_STATUS_SUCCESS;
}

/* Unmaps what map_region mapped; false if MicroV refused some of it. */
static bool unmap_region(struct mv_vm *vm, struct mv_region *r)
{
	bool ok = true;
	u64 i, n;

	for (i = 0; i < r->mapped; i += n) {
		n = run_len(r, i);
		if (vm_call(vm, MV_HC_VM_UNMAP_MEMORY, (n << 32) | vm->id, r->gpa + i * PAGE_SIZE,
			    0, NULL) != MV_STATUS_SUCCESS)
			ok = false;
	}
	if (ok)
		r->mapped = 0;
	return ok;
}

/* Gives a region's pages back (MicroV no longer maps them) and frees it. */
static void free_region(struct mv_region *r)
{
	unpin_user_pages_dirty_lock(r->pages, r->npages, r->flags & MV_MAP_WRITE);
	kvfree(r->pages);
	kfree(r);
}

/* Everything the driver holds for a VM MicroV no longer has (or is gone). */
static void free_vm(struct mv_vm *vm)
{
	struct mv_region *r, *rn;
	struct mv_vcpu *v, *vn;

	list_for_each_entry_safe(r, rn, &vm->regions, node) {
		list_del(&r->node);
		free_region(r);
		cond_resched();
	}
	list_for_each_entry_safe(v, vn, &vm->stuck_vcpus, node) {
		list_del(&v->node);
		__free_page(v->run_page);
		kfree(v);
	}
	kfree(vm);
}

/*
 * The VM's fd is gone (or was never handed out): unmap its memory and
 * destroy it in MicroV, then free it; or keep it as a zombie if its MicroV
 * still runs but did not let go of it.
 */
static void vm_teardown(struct mv_vm *vm)
{
	struct mv_region *r;
	bool keep = false;
	u64 st;

	mutex_lock(&mv_lock);
	if (mv_hv_generation() == vm->gen) {
		/* Failures here are not final: vm.destroy drops every mapping. */
		list_for_each_entry(r, &vm->regions, node)
			unmap_region(vm, r);
		st = vm_call(vm, MV_HC_VM_DESTROY, vm->id, 0, 0, NULL);
		/* Under mv_lock the generation is stable: MicroV really still runs. */
		keep = st != MV_STATUS_SUCCESS && mv_hv_generation() == vm->gen;
		if (keep)
			pr_err("microv: vm.destroy of VM %llu failed (status 0x%llx); keeping its %llu bytes pinned until MicroV stops\n",
			       vm->id, st, vm->mem_bytes);
	}
	if (keep)
		vm->zombie = true;
	else
		list_del(&vm->node);
	mutex_unlock(&mv_lock);
	if (!keep)
		free_vm(vm);
}

/*
 * A vCPU whose fd is gone (or was never handed out): destroy it in MicroV
 * and free its run page, unless MicroV still has it (then the page stays
 * with the VM), and drop its reference on the VM.
 */
static void vcpu_teardown(struct mv_vcpu *v)
{
	struct mv_vm *vm = v->vm;
	struct file *vm_file = v->vm_file;
	bool stuck;
	unsigned int tries = 0;
	u64 st;

	for (;;) {
		mutex_lock(&mv_lock);
		/*
		 * Busy means it runs; nobody can run it now (its fd's last user
		 * is gone), so Busy can only be a moment's: try again.
		 */
		st = vm_call(vm, MV_HC_VCPU_DESTROY, v->id, 0, 0, NULL);
		if (st != MV_STATUS_BUSY || ++tries >= MV_VCPU_DESTROY_TRIES)
			break;
		mutex_unlock(&mv_lock);
		msleep(1);
	}
	stuck = st != MV_STATUS_SUCCESS && mv_hv_generation() == vm->gen;
	if (stuck) {
		/* MicroV may still write the run page: it must not go back to Linux. */
		list_add_tail(&v->node, &vm->stuck_vcpus);
		pr_err("microv: vcpu.destroy of vCPU %llu (VM %llu) failed (status 0x%llx); keeping its run page until MicroV stops\n",
		       v->id, vm->id, st);
	}
	mutex_unlock(&mv_lock);

	mutex_lock(&vm->lock);
	WRITE_ONCE(vm->vcpu_count, vm->vcpu_count - 1);
	list_del(&v->live);
	mutex_unlock(&vm->lock);
	/* RUN cancels it on its way out; nothing runs the vCPU now. */
	hrtimer_cancel(&v->timer);
	if (!stuck) {
		__free_page(v->run_page);
		kfree(v);
	}
	fput(vm_file);
}

/* ---- the vCPU fd ---------------------------------------------------------- */

/* The host timer's interrupt is what ends the guest's run; nothing to do. */
static enum hrtimer_restart vcpu_timer_fn(struct hrtimer *t)
{
	return HRTIMER_NORESTART;
}

static void vcpu_timer_init(struct mv_vcpu *v)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(&v->timer, vcpu_timer_fn, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
#else
	hrtimer_init(&v->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	v->timer.function = vcpu_timer_fn;
#endif
}

/*
 * Nanoseconds until TSC value `deadline` (0 if it has passed), at most
 * MV_TIMER_MAX_NS, rounded up: a timer for it never expires before it.
 */
static u64 tsc_ns_until(u64 deadline)
{
	unsigned int khz = READ_ONCE(tsc_khz);
	u64 now = rdtsc(), delta;

	if (deadline <= now)
		return 0;
	if (!khz)
		return MV_TIMER_POLL_NS;
	delta = deadline - now;
	/* khz * 10^4 cycles = 10 s; no overflow below 1.8 PHz. */
	if (delta >= (u64)khz * (MV_TIMER_MAX_NS / NSEC_PER_MSEC))
		return MV_TIMER_MAX_NS;
	return mul_u64_u32_div(delta, NSEC_PER_MSEC, khz) + 1;
}

/*
 * Before an entry, preemption off: the host timer for `deadline` on this
 * CPU. A deadline that has passed needs none: MicroV fires the guest's
 * timer at this entry.
 */
static void vcpu_arm_timer(struct mv_vcpu *v, u64 deadline)
{
	int cpu = smp_processor_id();
	u64 ns = deadline ? tsc_ns_until(deadline) : 0;

	if (!ns) {
		if (v->timer_tsc) {
			hrtimer_try_to_cancel(&v->timer);
			v->timer_tsc = 0;
		}
		return;
	}
	if (v->timer_tsc == deadline && v->timer_cpu == cpu && hrtimer_is_queued(&v->timer))
		return;
	hrtimer_start(&v->timer, ns_to_ktime(ns), HRTIMER_MODE_REL_PINNED_HARD);
	v->timer_tsc = deadline;
	v->timer_cpu = cpu;
}

/* The VMM raised a vector in the run page that MicroV has not taken yet. */
static bool vcpu_raised(const struct mv_run_page *run)
{
	return READ_ONCE(run->raise[0]) | READ_ONCE(run->raise[1]) |
	       READ_ONCE(run->raise[2]) | READ_ONCE(run->raise[3]);
}

/*
 * A HLT: sleeps until TSC value `deadline` (U64_MAX: the timer is not
 * armed), a kick, or a signal, unless a kick or a raised
 * vector is already there. The checks come after the task is on the wait
 * queue and marked sleeping, so a kick (which sets `kicked`, then wakes
 * the queue) is never lost, nor a vector raised before it. Returns 0 to
 * enter the guest again (also when the VM's MicroV is gone: the entry then
 * fails with ENODEV), -EINTR for a signal.
 */
static int vcpu_halt(struct mv_vcpu *v, const struct mv_run_page *run, u64 deadline)
{
	DEFINE_WAIT(wait);
	ktime_t expires;
	int ret = 0;
	u64 ns;

	for (;;) {
		prepare_to_wait(&v->wq, &wait, TASK_INTERRUPTIBLE);
		if (atomic_xchg(&v->kicked, 0) || vcpu_raised(run))
			break;
		if (signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		ns = tsc_ns_until(deadline);
		if (!ns || mv_hv_generation() != v->vm->gen)
			break;
		expires = ktime_add_ns(ktime_get(), min_t(u64, ns, MV_HALT_CHECK_NS));
		schedule_hrtimeout_range(&expires, current->timer_slack_ns, HRTIMER_MODE_ABS);
	}
	finish_wait(&v->wq, &wait);
	return ret;
}

static void vcpu_kick(struct mv_vcpu *v);

/*
 * A KICK exit: wakes (or interrupts) every vCPU of `vm` whose id is in the
 * run page's 256-bit set: another vCPU sent it an interrupt or INIT/SIPI.
 */
static void vm_kick_set(struct mv_vm *vm, const struct mv_run_page *run)
{
	struct mv_vcpu *w;
	u64 set[4];
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(set); i++)
		set[i] = READ_ONCE(run->exit.kick[i]);
	mutex_lock(&vm->lock);
	list_for_each_entry(w, &vm->vcpus, live)
		if (w->id < 64 * ARRAY_SIZE(set) && (set[w->id / 64] >> (w->id % 64)) & 1)
			vcpu_kick(w);
	mutex_unlock(&vm->lock);
}

static void count_exit(struct mv_vm *vm, u64 reason)
{
	unsigned int i;

	switch (reason) {
	case MV_EXIT_IO:
	case MV_EXIT_STRING_IO: i = MV_VM_EXITS_IO; break;
	case MV_EXIT_MMIO: i = MV_VM_EXITS_MMIO; break;
	case MV_EXIT_HLT: i = MV_VM_EXITS_HLT; break;
	case MV_EXIT_INTERRUPTED: i = MV_VM_EXITS_INTERRUPTED; break;
	case MV_EXIT_SHUTDOWN: i = MV_VM_EXITS_SHUTDOWN; break;
	default: i = MV_VM_EXITS_OTHER; break;
	}
	atomic64_inc(&vm->exits[i]);
}

/*
 * One run.run on this CPU, with the host timer armed for `deadline` and
 * the vCPU marked in the guest for KICK. Preemption stays off so that the
 * pinned timer and the CPU KICK interrupts are the ones the guest runs on.
 * A kick before this entry is served by it (MicroV takes the raised
 * vectors as it enters), so it is consumed here; one that comes later
 * finds in_guest set (the full barrier orders the two) and interrupts the
 * guest, or stays for the next HLT sleep.
 */
static u64 vcpu_enter(struct mv_vcpu *v, u64 deadline, u64 *reason)
{
	u64 st;

	preempt_disable();
	vcpu_arm_timer(v, deadline);
	atomic_set(&v->kicked, 0);
	WRITE_ONCE(v->cpu, smp_processor_id());
	smp_store_mb(v->in_guest, true);
	st = vm_call(v->vm, MV_HC_RUN_RUN, v->id, 0, 0, reason);
	WRITE_ONCE(v->in_guest, false);
	preempt_enable();
	return st;
}

/*
 * RUN: enters the guest until an exit the VMM must handle. A host interrupt
 * ends a run with MV_EXIT_INTERRUPTED (the root takes it right after the
 * vmmcall); the driver then lets the scheduler in and runs again, unless a
 * signal is pending: then the run page says INTERRUPTED and RUN fails with
 * EINTR (the VMM's kick, or a kill). A signal that arrives between the check
 * and the vmmcall ends the run at the next host interrupt (a timer tick at
 * the latest). KICK and TIMER exits are served here too, and a HLT sleeps
 * here (vcpu_halt) and runs again: the VMM never sees one. A HLT sleep a
 * signal cuts short is resumed by the next RUN, so a signal never wakes the
 * guest from HLT early. The host timer is cancelled on the way out: while
 * the VMM handles an exit the guest does not run.
 */
static long vcpu_run(struct mv_vcpu *v)
{
	struct mv_run_page *run = page_address(v->run_page);
	u64 st, deadline, reason = MV_EXIT_NONE;
	long ret = 0;

	if (v->halted) {
		/* The VMM asking for something at entry ends the HLT too. */
		if (!READ_ONCE(run->request)) {
			ret = vcpu_halt(v, run, v->halt_deadline);
			if (ret) {
				WRITE_ONCE(run->exit.reason, MV_EXIT_INTERRUPTED);
				return ret;
			}
		}
		v->halted = false;
	}
	/* The last exit's deadline: the guest's timer may be armed already. */
	deadline = READ_ONCE(run->exit.deadline);
	for (;;) {
		if (signal_pending(current)) {
			reason = MV_EXIT_INTERRUPTED;
			ret = -EINTR;
			break;
		}
		st = vcpu_enter(v, deadline, &reason);
		if (st != MV_STATUS_SUCCESS) {
			ret = status_errno(st, "run.run");
			goto out;
		}
		count_exit(v->vm, reason);
		deadline = READ_ONCE(run->exit.deadline);
		/* TIMER: the loop re-arms the host timer for the new deadline. */
		if (reason == MV_EXIT_INTERRUPTED || reason == MV_EXIT_TIMER) {
			cond_resched();
			continue;
		}
		if (reason == MV_EXIT_KICK) {
			vm_kick_set(v->vm, run);
			continue;
		}
		if (reason != MV_EXIT_HLT)
			break;
		/*
		 * A HLT, or a secondary vCPU before its SIPI: nothing but its
		 * timer (if armed), a raised vector or a kick wakes it, as on
		 * hardware (a vector MicroV then finds masked, or a HLT with
		 * interrupts off, just halts again). The VMM need not know.
		 */
		ret = vcpu_halt(v, run, deadline ?: U64_MAX);
		if (ret) {
			v->halted = true;
			v->halt_deadline = deadline ?: U64_MAX;
			reason = MV_EXIT_INTERRUPTED;
			break;
		}
	}
	/* R10 is authoritative; the page is root-writable anyway. */
	WRITE_ONCE(run->exit.reason, (u32)reason);
out:
	hrtimer_cancel(&v->timer);
	v->timer_tsc = 0;
	return ret;
}

/* Nothing to do: the IPI itself ends the guest's run on that CPU. */
static void vcpu_kick_ipi(void *unused)
{
}

/*
 * KICK: see struct mv_vcpu_args in the ABI. The VMM raises vectors in the
 * run page first (atomic ORs) and kicks after, so whatever this kick
 * misses (the vCPU was not yet in the guest, not yet asleep) the entry or
 * the sleep's checks see.
 */
static void vcpu_kick(struct mv_vcpu *v)
{
	atomic_set(&v->kicked, 1);
	smp_mb();
	wake_up_interruptible(&v->wq);
	if (READ_ONCE(v->in_guest))
		smp_call_function_single(READ_ONCE(v->cpu), vcpu_kick_ipi, NULL, 0);
}

static long mv_vcpu_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct mv_vcpu *v = f->private_data;
	long ret;

	/* The argument (struct mv_vcpu_args) carries nothing: it is not read. */
	if (cmd == MV_IOC_VCPU_KICK) {
		vcpu_kick(v);
		return 0;
	}
	if (cmd != MV_IOC_VCPU_RUN && cmd != MV_IOC_VCPU_GET_REGS && cmd != MV_IOC_VCPU_SET_REGS)
		return -ENOTTY;
	/*
	 * One thread drives a vCPU. A second one gets EBUSY at once rather
	 * than wait: RUN can last until a signal, and MicroV's own answer to a
	 * vCPU used from two CPUs is Busy too.
	 */
	if (!mutex_trylock(&v->lock))
		return -EBUSY;
	switch (cmd) {
	case MV_IOC_VCPU_RUN:
		ret = vcpu_run(v);
		break;
	case MV_IOC_VCPU_GET_REGS:
		ret = status_errno(vm_call(v->vm, MV_HC_RUN_GET_REGISTERS, v->id, MV_REGS_ALL, 0,
					   NULL), "run.get_registers");
		break;
	default:
		ret = status_errno(vm_call(v->vm, MV_HC_RUN_SET_REGISTERS, v->id, MV_REGS_ALL, 0,
					   NULL), "run.set_registers");
		/* New registers: whatever HLT the vCPU was in is over. */
		if (!ret)
			v->halted = false;
		break;
	}
	mutex_unlock(&v->lock);
	return ret;
}

/*
 * The run page, shared: offset 0, exactly one page, MAP_SHARED. Mapped as
 * a raw PFN range (VM_IO | VM_PFNMAP), so the VMM cannot pin it (to make it
 * guest memory, say) or hand it to O_DIRECT; the mapping holds the file, so
 * the page lives until the last mapping and the fd are both gone.
 */
static int mv_vcpu_mmap(struct file *f, struct vm_area_struct *vma)
{
	struct mv_vcpu *v = f->private_data;

	if (vma->vm_pgoff || vma->vm_end - vma->vm_start != PAGE_SIZE ||
	    !(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	return remap_pfn_range(vma, vma->vm_start, page_to_pfn(v->run_page), PAGE_SIZE,
			       vma->vm_page_prot);
}

static int mv_vcpu_release(struct inode *inode, struct file *f)
{
	vcpu_teardown(f->private_data);
	return 0;
}

static const struct file_operations mv_vcpu_fops = {
	.owner = THIS_MODULE,
	.release = mv_vcpu_release,
	.unlocked_ioctl = mv_vcpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = mv_vcpu_mmap,
	.llseek = noop_llseek,
};

/* ---- the VM fd ---------------------------------------------------------------- */

static bool overlaps(const struct mv_vm *vm, u64 gpa, u64 size)
{
	const struct mv_region *r;

	list_for_each_entry(r, &vm->regions, node)
		if (gpa < r->gpa + r->npages * PAGE_SIZE && r->gpa < gpa + size)
			return true;
	return false;
}

/* Pins all of a region's pages, or none. */
static int pin_region(struct mv_region *r, u64 uaddr)
{
	u64 done = 0;
	long got = 0;

	/* FOLL_WRITE always: a page pinned read-only could be swapped under the guest by COW. */
	while (done < r->npages) {
		got = pin_user_pages_fast(uaddr + done * PAGE_SIZE, r->npages - done,
					  FOLL_WRITE | FOLL_LONGTERM, r->pages + done);
		if (got <= 0)
			break;
		done += got;
	}
	if (done == r->npages)
		return 0;
	if (done)
		unpin_user_pages(r->pages, done);
	return got < 0 ? got : -EFAULT;
}

/*
 * MAP_MEMORY: `size` bytes of the caller's memory at `user_addr` become
 * guest-physical [gpa, gpa + size). The memory must be writable by the
 * caller. Split into regions of at most MV_MAP_MAX_PAGES pages; each is
 * pinned for the VM's lifetime and mapped with one vm.map_memory per
 * physically contiguous run. All or nothing: a failure unmaps and unpins
 * whatever this call did.
 */
static long vm_map_memory(struct mv_vm *vm, struct mv_map_memory_args __user *u)
{
	struct mv_map_memory_args a;
	struct mv_region *r, *rn;
	LIST_HEAD(made);
	u64 flags, pages, chunks, done, n, st;
	unsigned int kept = 0;
	long ret = 0;

	if (copy_from_user(&a, u, sizeof(a)))
		return -EFAULT;
	flags = a.flags ? a.flags : MV_MAP_ALL;
	if (flags & ~MV_MAP_ALL)
		return -EINVAL;
	if (!a.size || !PAGE_ALIGNED(a.size) || !PAGE_ALIGNED(a.user_addr) || !PAGE_ALIGNED(a.gpa))
		return -EINVAL;
	/* Written so that nothing overflows. */
	if (a.gpa >= MV_GUEST_PHYS_LIMIT || a.size > MV_GUEST_PHYS_LIMIT - a.gpa)
		return -EINVAL;
	if (!access_ok(u64_to_user_ptr(a.user_addr), a.size))
		return -EFAULT;
	if (mv_hv_generation() != vm->gen)
		return -ENODEV;
	pages = a.size >> PAGE_SHIFT;
	chunks = DIV_ROUND_UP(pages, MV_MAP_MAX_PAGES);

	mutex_lock(&vm->lock);
	if (chunks > MV_VM_MAX_REGIONS - vm->region_count) {
		ret = -ENOSPC;
		goto out;
	}
	if (overlaps(vm, a.gpa, a.size)) {
		ret = -EEXIST;
		goto out;
	}
	for (done = 0; done < pages; done += n) {
		n = min_t(u64, pages - done, MV_MAP_MAX_PAGES);
		r = kzalloc(sizeof(*r), GFP_KERNEL_ACCOUNT);
		if (r)
			r->pages = kvcalloc(n, sizeof(*r->pages), GFP_KERNEL_ACCOUNT);
		if (!r || !r->pages) {
			kfree(r);
			ret = -ENOMEM;
			break;
		}
		r->gpa = a.gpa + done * PAGE_SIZE;
		r->npages = n;
		r->flags = flags;
		ret = pin_region(r, a.user_addr + done * PAGE_SIZE);
		if (ret) {
			kvfree(r->pages);
			kfree(r);
			break;
		}
		list_add_tail(&r->node, &made);
		st = map_region(vm, r);
		if (st != MV_STATUS_SUCCESS) {
			ret = status_errno(st, "vm.map_memory");
			break;
		}
	}
	list_for_each_entry_safe(r, rn, &made, node) {
		if (ret && unmap_region(vm, r)) {
			list_del(&r->node);
			free_region(r);
			continue;
		}
		/*
		 * Mapped (or MicroV kept it mapped while we tried to take it
		 * back: the VM keeps the pages pinned until vm.destroy).
		 */
		list_move_tail(&r->node, &vm->regions);
		vm->region_count++;
		WRITE_ONCE(vm->mem_bytes, vm->mem_bytes + r->npages * PAGE_SIZE);
		kept += !!ret;
	}
	if (kept)
		pr_warn("microv: VM %llu: a failed map left %u regions mapped in MicroV; they stay pinned until the VM is destroyed\n",
			vm->id, kept);
out:
	mutex_unlock(&vm->lock);
	return ret;
}

/*
 * CREATE_VCPU: a zeroed run page, vcpu.create, and a vCPU fd that holds a
 * reference on the VM fd (so the VM outlives its vCPUs, and vm.destroy
 * comes after every vcpu.destroy).
 */
static long vm_create_vcpu(struct file *vm_file, struct mv_vm *vm,
			   struct mv_create_vcpu_args __user *u)
{
	struct mv_create_vcpu_args a;
	struct mv_vcpu *v;
	struct file *file;
	int fd;
	u64 st;

	if (copy_from_user(&a, u, sizeof(a)))
		return -EFAULT;
	if (a.reserved)
		return -EINVAL;
	v = kzalloc(sizeof(*v), GFP_KERNEL_ACCOUNT);
	if (!v)
		return -ENOMEM;
	v->run_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!v->run_page) {
		kfree(v);
		return -ENOMEM;
	}
	mutex_init(&v->lock);
	vcpu_timer_init(v);
	init_waitqueue_head(&v->wq);
	v->vm = vm;
	v->apic_id = a.apic_id;
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		__free_page(v->run_page);
		kfree(v);
		return fd;
	}
	st = vm_call(vm, MV_HC_VCPU_CREATE, vm->id, page_to_phys(v->run_page), a.apic_id, &v->id);
	if (st != MV_STATUS_SUCCESS) {
		put_unused_fd(fd);
		__free_page(v->run_page);
		kfree(v);
		return status_errno(st, "vcpu.create");
	}
	v->vm_file = get_file(vm_file);
	mutex_lock(&vm->lock);
	WRITE_ONCE(vm->vcpu_count, vm->vcpu_count + 1);
	list_add_tail(&v->live, &vm->vcpus);
	mutex_unlock(&vm->lock);

	file = anon_inode_getfile("microv-vcpu", &mv_vcpu_fops, v, O_RDWR | O_CLOEXEC);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		vcpu_teardown(v);
		return PTR_ERR(file);
	}
	a.vcpu_id = v->id;
	if (copy_to_user(u, &a, sizeof(a))) {
		put_unused_fd(fd);
		fput(file);	/* its release tears the vCPU down */
		return -EFAULT;
	}
	fd_install(fd, file);
	return fd;
}

static long mv_vm_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct mv_vm *vm = f->private_data;
	void __user *u = (void __user *)arg;

	switch (cmd) {
	case MV_IOC_VM_MAP_MEMORY:
		return vm_map_memory(vm, u);
	case MV_IOC_VM_CREATE_VCPU:
		return vm_create_vcpu(f, vm, u);
	default:
		return -ENOTTY;
	}
}

/* The last reference: every vCPU fd (each holds one) is gone too. */
static int mv_vm_release(struct inode *inode, struct file *f)
{
	vm_teardown(f->private_data);
	return 0;
}

static const struct file_operations mv_vm_fops = {
	.owner = THIS_MODULE,
	.release = mv_vm_release,
	.unlocked_ioctl = mv_vm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/*
 * MV_IOC_CREATE_VM (CAP_SYS_ADMIN was checked on /dev/microv). Takes
 * mv_lock only around vm.create, so that a stop either sees the VM or
 * comes first. Returns the VM fd.
 */
long mv_vm_create_ioctl(void __user *u)
{
	struct mv_create_vm_args a = {};
	struct mv_vm *vm;
	struct file *file;
	int fd;
	u64 st;

	vm = kzalloc(sizeof(*vm), GFP_KERNEL_ACCOUNT);
	if (!vm)
		return -ENOMEM;
	INIT_LIST_HEAD(&vm->regions);
	INIT_LIST_HEAD(&vm->vcpus);
	INIT_LIST_HEAD(&vm->stuck_vcpus);
	mutex_init(&vm->lock);
	vm->pid = task_tgid_nr(current);
	get_task_comm(vm->comm, current);
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		kfree(vm);
		return fd;
	}

	mutex_lock(&mv_lock);
	if (!mv_hv_vm_ready(&vm->gen, &vm->handle)) {
		mutex_unlock(&mv_lock);
		put_unused_fd(fd);
		kfree(vm);
		return -ENODEV;
	}
	st = vm_call(vm, MV_HC_VM_CREATE, 0, 0, 0, &vm->id);
	/* map_memory and unmap_memory carry the VM id in 32 bits. */
	if (st == MV_STATUS_SUCCESS && vm->id > U32_MAX) {
		pr_warn_ratelimited("microv: vm.create returned VM id 0x%llx, which does not fit the map calls\n",
				    vm->id);
		list_add_tail(&vm->node, &mv_vms);
		mutex_unlock(&mv_lock);
		put_unused_fd(fd);
		vm_teardown(vm);
		return -EIO;
	}
	if (st != MV_STATUS_SUCCESS) {
		mutex_unlock(&mv_lock);
		put_unused_fd(fd);
		kfree(vm);
		return status_errno(st, "vm.create");
	}
	list_add_tail(&vm->node, &mv_vms);
	mutex_unlock(&mv_lock);

	file = anon_inode_getfile("microv-vm", &mv_vm_fops, vm, O_RDWR | O_CLOEXEC);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		vm_teardown(vm);
		return PTR_ERR(file);
	}
	a.vm_id = vm->id;
	if (copy_to_user(u, &a, sizeof(a))) {
		put_unused_fd(fd);
		fput(file);	/* its release tears the VM down */
		return -EFAULT;
	}
	fd_install(fd, file);
	return fd;
}

/*
 * MV_IOC_LIST_VMS (mv_lock held): every VM on mv_vms, in creation order,
 * as far as struct mv_vm_list holds them.
 */
long mv_vm_list_ioctl(void __user *u)
{
	struct mv_vm_list *l;
	struct mv_vm_info *e;
	const struct mv_vm *vm;
	u64 gen = mv_hv_generation();
	long ret = 0;

	lockdep_assert_held(&mv_lock);
	l = kzalloc(sizeof(*l), GFP_KERNEL);
	if (!l)
		return -ENOMEM;
	list_for_each_entry(vm, &mv_vms, node) {
		l->total++;
		if (l->count >= MV_VM_LIST_MAX)
			continue;
		e = &l->vms[l->count++];
		e->vm_id = vm->id;
		e->pid = vm->pid;
		e->vcpu_count = READ_ONCE(vm->vcpu_count);
		e->state = vm->gen != gen ? MV_VM_ORPHANED : vm->zombie ? MV_VM_ZOMBIE : MV_VM_LIVE;
		BUILD_BUG_ON(sizeof(e->comm) != sizeof(vm->comm));
		memcpy(e->comm, vm->comm, sizeof(e->comm));
		e->memory_bytes = READ_ONCE(vm->mem_bytes);
		e->exits.io = atomic64_read(&vm->exits[MV_VM_EXITS_IO]);
		e->exits.mmio = atomic64_read(&vm->exits[MV_VM_EXITS_MMIO]);
		e->exits.hlt = atomic64_read(&vm->exits[MV_VM_EXITS_HLT]);
		e->exits.interrupted = atomic64_read(&vm->exits[MV_VM_EXITS_INTERRUPTED]);
		e->exits.shutdown = atomic64_read(&vm->exits[MV_VM_EXITS_SHUTDOWN]);
		e->exits.other = atomic64_read(&vm->exits[MV_VM_EXITS_OTHER]);
	}
	if (copy_to_user(u, l, sizeof(*l)))
		ret = -EFAULT;
	kfree(l);
	return ret;
}

/* VMs that keep MicroV from stopping: with an fd, of the running MicroV. */
unsigned int mv_vm_live_count(void)
{
	const struct mv_vm *vm;
	unsigned int n = 0;
	u64 gen = mv_hv_generation();

	lockdep_assert_held(&mv_lock);
	list_for_each_entry(vm, &mv_vms, node)
		n += !vm->zombie && vm->gen == gen;
	return n;
}

/*
 * MicroV generation `gen` has left every CPU and its memory is being
 * freed: nothing can use its zombies' pages any more.
 */
void mv_vm_instance_gone(u64 gen)
{
	struct mv_vm *vm, *n;

	lockdep_assert_held(&mv_lock);
	list_for_each_entry_safe(vm, n, &mv_vms, node) {
		if (!vm->zombie || vm->gen != gen)
			continue;
		list_del(&vm->node);
		free_vm(vm);
	}
}
