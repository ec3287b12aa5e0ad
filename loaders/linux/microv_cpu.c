// SPDX-License-Identifier: MIT
/*
 * Per-CPU work: capture the CPU's state, enter the microkernel, and later
 * ask MicroV to leave. Entry and the single-CPU calls run on their CPU
 * through work_on_cpu() (process context, so kernel_fpu_begin() is
 * allowed, which lets the hypervisor clobber vector registers); the stop
 * runs on every CPU at once through stop_machine() (see
 * mv_cpu_stop_rendezvous).
 */
#include <linux/kernel.h>
#include <linux/bug.h>
#include <linux/smp.h>
#include <asm/alternative.h>
#include <asm/asm.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/fpu/xcr.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/special_insns.h>
#include <asm/cpufeature.h>
#include "microv.h"

#define MSR_VM_CR_NUM 0xc0010114
#define VM_CR_SVMDIS (1ULL << 4)
/* Allowed-1 bits (high half): secondary controls; EPT, VPID, unrestricted guest. */
#define VMX_PROC_SECONDARY (1ULL << (32 + 31))
#define VMX_PROC2_NEEDED ((1ULL << (32 + 1)) | (1ULL << (32 + 5)) | (1ULL << (32 + 7)))
#define CPUID1_ECX_VMX (1U << 5)

/*
 * A hypercall: `vmmcall` on AMD, `vmcall` on Intel (both three bytes; the
 * kernel patches the right one in when it loads the module). Without MicroV
 * beneath us it raises #UD; the exception table entry turns that into a
 * return with RAX unchanged, which mv_hypercall_failed_natively()
 * recognises.
 */
u64 mv_hypercall(u64 call, u64 *r10, u64 *r11, u64 *r12, u64 *r13)
{
	register u64 a10 asm("r10") = *r10;
	register u64 a11 asm("r11") = *r11;
	register u64 a12 asm("r12") = *r12;
	register u64 a13 asm("r13") = *r13;
	u64 rax = call;

	asm volatile("1: " ALTERNATIVE("vmcall", "vmmcall", X86_FEATURE_VMMCALL) "\n2:\n"
		     _ASM_EXTABLE(1b, 2b)
		     : "+a"(rax), "+r"(a10), "+r"(a11), "+r"(a12), "+r"(a13)
		     :
		     : "memory");
	*r10 = a10;
	*r11 = a11;
	*r12 = a12;
	*r13 = a13;
	return rax;
}

bool mv_hypercall_failed_natively(u64 call, u64 status)
{
	return status == call;
}

static int check_svm(void)
{
	u64 vm_cr, efer;

	if (!boot_cpu_has(X86_FEATURE_SVM) || cpuid_eax(0x80000000) < 0x8000000a ||
	    !(cpuid_edx(0x8000000a) & 1))
		return MV_ERR_SVM_UNSUPPORTED;
	rdmsrl(MSR_VM_CR_NUM, vm_cr);
	if (vm_cr & VM_CR_SVMDIS)
		return MV_ERR_SVM_DISABLED;
	rdmsrl(MSR_EFER, efer);
	if (efer & EFER_SVME)
		return MV_ERR_SVM_IN_USE;
	return 0;
}

/*
 * VMX as MicroV needs it: enabled outside SMX and locked by the firmware
 * (Linux locks it at boot too), not in use, with EPT, VPID and unrestricted
 * guest among the secondary controls. Read with CPUID, not the kernel's
 * feature flags: those were taken at boot, before any hypervisor.
 */
static int check_vmx(void)
{
	u64 feat_ctl, procbased, procbased2;

	if (!(cpuid_ecx(1) & CPUID1_ECX_VMX))
		return MV_ERR_VMX_UNSUPPORTED;
	if (rdmsrl_safe(MSR_IA32_FEAT_CTL, &feat_ctl) || !(feat_ctl & FEAT_CTL_LOCKED) ||
	    !(feat_ctl & FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX))
		return MV_ERR_VMX_DISABLED;
	if (__read_cr4() & X86_CR4_VMXE)
		return MV_ERR_VMX_IN_USE;
	if (rdmsrl_safe(MSR_IA32_VMX_PROCBASED_CTLS, &procbased) ||
	    !(procbased & VMX_PROC_SECONDARY) ||
	    rdmsrl_safe(MSR_IA32_VMX_PROCBASED_CTLS2, &procbased2) ||
	    (procbased2 & VMX_PROC2_NEEDED) != VMX_PROC2_NEEDED)
		return MV_ERR_VMX_UNSUPPORTED;
	return 0;
}

/* Checks this CPU can run MicroV; returns 0 or an MV_ERR_* code. */
int mv_cpu_check(u64 *detail)
{
	int err;

	if (boot_cpu_data.x86_vendor == X86_VENDOR_INTEL)
		err = check_vmx();
	else
		err = check_svm();
	if (err)
		return err;
	if (__read_cr4() & X86_CR4_LA57) {
		*detail = __read_cr4();
		return MV_ERR_UNSUPPORTED_CPU_STATE;
	}
	return 0;
}

static u64 descriptor(const struct desc_ptr *gdt, u16 sel)
{
	if (!(sel & ~7) || (sel & 4) || (sel | 7) > gdt->size)
		return 0;
	return *(const u64 *)(gdt->address + (sel & ~7));
}

/* A 16-byte system descriptor (TSS, LDT), zeros if the selector is null. */
static void system_descriptor(const struct desc_ptr *gdt, u16 sel, u64 out[2])
{
	out[0] = 0;
	out[1] = 0;
	if (!(sel & ~7) || (sel & 4) || (sel | 15) > gdt->size)
		return;
	out[0] = *(const u64 *)(gdt->address + (sel & ~7));
	out[1] = *(const u64 *)(gdt->address + (sel & ~7) + 8);
}

static void capture(struct mv_captured_state *s)
{
	struct desc_ptr gdt, idt;
	unsigned long dr7;
	u16 sel;

	s->cr0 = read_cr0();
	s->cr3 = __read_cr3();
	s->cr4 = __read_cr4();
	rdmsrl(MSR_EFER, s->efer);
	rdmsrl(MSR_IA32_CR_PAT, s->pat);
	asm volatile("mov %%db7, %0" : "=r"(dr7));
	s->dr7 = dr7;
	s->xcr0 = (s->cr4 & X86_CR4_OSXSAVE) ? xgetbv(0) : 0;
	native_store_gdt(&gdt);
	store_idt(&idt);
	s->gdtr.limit = gdt.size;
	s->gdtr.base = gdt.address;
	s->idtr.limit = idt.size;
	s->idtr.base = idt.address;
	savesegment(cs, sel); s->cs = sel;
	savesegment(ss, sel); s->ss = sel;
	savesegment(ds, sel); s->ds = sel;
	savesegment(es, sel); s->es = sel;
	savesegment(fs, sel); s->fs = sel;
	savesegment(gs, sel); s->gs = sel;
	asm volatile("str %0" : "=r"(sel)); s->tr = sel;
	asm volatile("sldt %0" : "=r"(sel)); s->ldtr = sel;
	s->cs_desc = descriptor(&gdt, s->cs);
	s->ss_desc = descriptor(&gdt, s->ss);
	s->ds_desc = descriptor(&gdt, s->ds);
	s->es_desc = descriptor(&gdt, s->es);
	system_descriptor(&gdt, s->tr, s->tr_desc);
	system_descriptor(&gdt, s->ldtr, s->ldtr_desc);
}

long mv_cpu_start(void *p)
{
	struct mv_cpu_arg *arg = p;
	struct mv_cpu_landing *l = arg->inst->landing[arg->index];
	unsigned long flags;
	u64 status;
	int err;

	err = mv_cpu_check(&arg->detail);
	if (err)
		return err;

	kernel_fpu_begin();
	local_irq_save(flags);
	capture(&l->captured);
	l->status = 0;
	l->detail = 0;
	status = microv_enter(l);
	local_irq_restore(flags);
	kernel_fpu_end();

	arg->detail = l->detail;
	return status;
}

/*
 * handle.open on this CPU; stores the handle in the instance. On failure
 * arg->detail is the status: MV_STATUS_BUSY if a handle is already open,
 * MV_HC_HANDLE_OPEN itself if MicroV does not run on this CPU (#UD).
 */
long mv_cpu_open_handle(void *p)
{
	struct mv_cpu_arg *arg = p;
	u64 r10 = MV_ABI_VERSION, r11 = 0, r12 = 0, r13 = 0;
	u64 status = mv_hypercall(MV_HC_HANDLE_OPEN, &r10, &r11, &r12, &r13);

	if (status != MV_STATUS_SUCCESS) {
		arg->detail = status;
		return -EIO;
	}
	arg->inst->handle = r10;
	return 0;
}

/* hv.test_fault on this CPU (test images); returns the hypercall status. */
long mv_cpu_test_fault(void *p)
{
	struct mv_cpu_arg *arg = p;
	u64 r10 = arg->inst->handle, r11 = arg->detail, r12 = 0, r13 = 0;

	arg->detail = mv_hypercall(MV_HC_HV_TEST_FAULT, &r10, &r11, &r12, &r13);
	return 0;
}

static int cpu_index(const struct mv_instance *inst, int cpu)
{
	unsigned int i;

	for (i = 0; i < inst->cpu_count; i++)
		if (inst->os_cpu[i] == cpu)
			return i;
	return -1;
}

/*
 * The stop rendezvous: a stop_machine() callback, so it runs on every
 * online CPU at the same time, each in its stopper thread with interrupts
 * off. Every CPU makes the `hv.stop_pp` call; MicroV holds each one in
 * host mode until all the CPUs it runs on have called, then hands them all
 * back together (or, if one does not come in time, answers MV_STATUS_BUSY
 * everywhere and keeps running). A CPU that MicroV has already left (a
 * fault, a failed start, an earlier partial stop) takes #UD on `vmmcall`,
 * which mv_hypercall's fix-up turns into a return with RAX unchanged: it
 * simply reports "not running". The caller (microv_main.c) reads the
 * per-CPU results in inst->stop[] afterwards.
 *
 * kernel_fpu_begin() here: the stopper is a kernel thread in task context,
 * not in an interrupt, and it cannot have preempted a kernel-FPU section
 * (kernel_fpu_begin disables preemption), so irq_fpu_usable() is true with
 * interrupts off: in 6.1 it returns true for any !in_hardirq() caller that
 * is not already inside kernel_fpu_begin(), and newer kernels support
 * interrupts-off callers explicitly. For a kernel thread kernel_fpu_begin()
 * saves nothing (the interrupted task's registers were saved when the
 * stopper was switched in) and invalidates this CPU's FPU-owner cache, so
 * every task reloads its own registers from memory afterwards, whatever
 * the hypervisor left in them. Should that ever not hold, this CPU does
 * not make the call (and warns): the rendezvous then cannot complete and
 * MicroV refuses the whole stop, rather than leave a CPU with the wrong
 * registers. (The test parameter stop_skip_cpu makes a CPU sit out the
 * same way.)
 */
int mv_cpu_stop_rendezvous(void *p)
{
	struct mv_instance *inst = p;
	int cpu = smp_processor_id();
	int i = cpu_index(inst, cpu);
	u64 r10, r11 = 0, r12 = 0, r13 = 0;
	struct mv_cpu_landing *l;
	struct mv_cpu_stop *s;

	if (i < 0)
		return 0;
	s = &inst->stop[i];
	l = inst->landing[i];
	s->ran = true;
	s->was_running = READ_ONCE(l->running);
	s->status = MV_STOP_NOT_ISSUED;
	if (cpu == inst->stop_skip_cpu || WARN_ON_ONCE(!irq_fpu_usable())) {
		s->running = READ_ONCE(l->running);
		return 0;
	}
	r10 = inst->handle;
	kernel_fpu_begin();
	s->status = mv_hypercall(MV_HC_HV_STOP_PP, &r10, &r11, &r12, &r13);
	kernel_fpu_end();
	/*
	 * The microkernel clears `running` when it hands the CPU back. (EFER
	 * cannot tell: MicroV hides EFER.SVME from the root.)
	 */
	s->running = READ_ONCE(l->running);
	return 0;
}
