// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mvprobe: a test-only module for the root VM's kernel. It plays the root
 * kernel as an attacker would, so the end-to-end tests can check what
 * MicroV lets the root do. Only the emulated machine ever loads it.
 *
 * Two ways to use it.
 *
 * 1. One shot (the isolation test), the module never stays loaded:
 *
 *      insmod mvprobe.ko pa=0x12345000   # 16 bytes of RAM through the direct map
 *      insmod mvprobe.ko msr=0xc0002000  # rdmsr_safe, then write the value back
 *
 *    dmesg gets `mvprobe: pa=... hex=.. ascii=..` or `mvprobe: msr=...
 *    read=ok|fault value=... write=ok|fault`; init returns -EAGAIN, so insmod
 *    fails with "Try again" on purpose.
 *
 * 2. Resident (the attack tests): `insmod mvprobe.ko` without parameters
 *    creates /sys/kernel/debug/mvprobe/ctl. Write one command line to it,
 *    then read it: the read returns the last command's result, one or more
 *    lines of `key=value` words (also copied to dmesg). A write fails with
 *    EINVAL for a malformed command, ENOENT when the driver does not export
 *    microv_test_handle(), ENODEV when it has no handle (MicroV is not
 *    running); the result then says why (`error=...`). Numbers are hex with
 *    0x or decimal. `cpu=N` runs the command on OS CPU N (default 0) in a
 *    kworker bound to it, with interrupts off for the part that matters.
 *
 *    info
 *        phys_bits, npt_limit (what MicroV maps for the root:
 *        2^min(phys_bits, 42) with 1 GiB pages, else 2^min(phys_bits, 39)),
 *        xcr0, xcr0_supported, handle=yes|no-export|not-running.
 *    hijack cpu=N call=stop|fault variant=osxsave|ts|dr7|none [dr0=ADDR] [kind=K]
 *        The promotion hijack. With interrupts off and its own IDT loaded,
 *        the probe loads TR with a fake TSS (in a free GDT slot; IST1 points
 *        at the top of a page the probe owns), points MSR GS_BASE at a fake
 *        per-CPU page (every qword a recognizable 0x6d767...), then per
 *        variant clears CR4.OSXSAVE, sets CR0.TS, or arms DR0 (execute
 *        breakpoint at ADDR, e.g. the trampoline's microv_promote) in DR7,
 *        and issues hv.stop_pp (call=stop) or hv.test_fault with kind K
 *        (call=fault, default 1 = page fault in the extension) with the
 *        handle from microv_test_handle(). Every other GPR holds a marker.
 *        It records how control came back (`how=returned status=S` or
 *        `how=exception vector=V at_call=0|1`), TR, GS_BASE, CR0, CR4, DR7
 *        (`tr_fake=1` etc.: still the root's attack values), whether any
 *        GPR differs from what the probe loaded (`regs=same`), whether any
 *        register or fake page holds a MicroV magic or a hypervisor address
 *        (`leak=none`), and whether the fake pages changed
 *        (`percpu=untouched tss=untouched ist=untouched`). Then it restores
 *        TR, GS_BASE, CR0, CR4, DR0, DR7, the GDT and IDT.
 *    xcr0 cpu=N value=V|unsupported [loops=L]
 *        XSETBV XCR0 = V (`unsupported`: the current XCR0 plus the lowest
 *        bit CPUID 0xD does not offer) with an exception-table fix-up, then
 *        CPUID 1 and 0xD, then L more CPUID 0xD exits whose XSAVE size
 *        (EBX, which follows XCR0) goes into a checksum, then restores XCR0. Prints old, value, fault=0|1, readback, d0_ebx
 *        (XSAVE size for the current XCR0), osxsave, sum, restore, final.
 *    wrmsr cpu=N msr=M [value=V] [count=K]
 *        rdmsr_safe M, then K times wrmsr_safe of V (default: the value
 *        read, or 0 when the read faulted), then reads it again. With a
 *        handle it also counts this CPU's rdmsr/wrmsr exits around the
 *        accesses (pp.exit_count, interrupts off): hv_wrmsr_exits=N.
 *    phys pa=PA
 *        Reads 16 bytes at physical address PA: RAM through the direct map,
 *        other addresses below 2^phys_bits through ioremap, addresses at or
 *        above it through a PTE built with vmap_pfn (reserved bits set).
 *        Prints how=..., result=ok hex=... or result=fault|refused.
 *    stoppp cpu=N
 *        hv.stop_pp on that one CPU only; prints status, elapsed_ns and
 *        whether CPUID 0x40000000 still shows MicroV there afterwards.
 *    init target=N
 *        Sends OS CPU N an INIT IPI (level assert, as CPU bring-up does)
 *        from the calling CPU (cpu=, default 0): the attack of taking a CPU
 *        away from MicroV (tests/e2e/69-attack-init-ipi.sh).
 *    apic reg=R value=V
 *        On the calling CPU (cpu=, default 0), with interrupts off: reads
 *        xAPIC register R, writes V to it, reads it again; prints
 *        `before=`, `wrote=`, `after=` (xAPIC mode only).
 *
 * Built by `cargo xtask build` against the same kernel headers as microv.ko
 * (with a copy of loaders/linux/microv_abi.h); installed in the machine at
 * /usr/lib/microv-tests/mvprobe.ko.
 */
#include <linux/cpu.h>
#include <linux/debugfs.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <asm/alternative.h>
#include <asm/apic.h>
#include <asm/asm.h>
#include <asm/debugreg.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/fpu/xcr.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/special_insns.h>
#include "microv_abi.h"

#define MVPROBE_LEN 16

/* ---- one-shot mode (module parameters) ----------------------------------- */

static unsigned long long pa = ~0ULL;
module_param(pa, ullong, 0);
MODULE_PARM_DESC(pa, "one shot: physical address to read 16 bytes from");

static unsigned long long msr = ~0ULL;
module_param(msr, ullong, 0);
MODULE_PARM_DESC(msr, "one shot: MSR to read and write back (instead of pa=)");

static int mvprobe_msr_once(void)
{
	u64 value = 0;
	int rd = rdmsrl_safe((u32)msr, &value);
	int wr = wrmsrl_safe((u32)msr, value);

	pr_info("mvprobe: msr=%#llx read=%s value=%#llx write=%s\n", msr,
		rd ? "fault" : "ok", value, wr ? "fault" : "ok");
	return -EAGAIN;
}

static int mvprobe_pa_once(void)
{
	u8 buf[MVPROBE_LEN];
	char ascii[MVPROBE_LEN + 1];
	void *va;
	int i;

	/* The 16 bytes must not straddle two page frames. */
	if ((pa & ~PAGE_MASK) > PAGE_SIZE - MVPROBE_LEN) {
		pr_info("mvprobe: pa=%#llx error: 16 bytes from here cross a page\n", pa);
		return -EINVAL;
	}
	if (!pfn_valid(PHYS_PFN(pa))) {
		pr_info("mvprobe: pa=%#llx error: no valid page frame\n", pa);
		return -EINVAL;
	}
	va = phys_to_virt(pa);
	/*
	 * A fault (a hole in the direct map) becomes an error, not an oops,
	 * unless the page is one Linux leaves out of its direct map (reserved
	 * memory, such as an early-booted MicroV's pool): that one is read
	 * through a mapping of its own.
	 */
	if (copy_from_kernel_nofault(buf, va, sizeof(buf))) {
		void *m = page_is_ram(PHYS_PFN(pa)) ? NULL :
			  memremap(pa & PAGE_MASK, PAGE_SIZE, MEMREMAP_WB);

		if (!m || copy_from_kernel_nofault(buf, m + (pa & ~PAGE_MASK), sizeof(buf))) {
			if (m)
				memunmap(m);
			pr_info("mvprobe: pa=%#llx error: reading the direct map faulted\n", pa);
			return -EFAULT;
		}
		memunmap(m);
	}
	for (i = 0; i < MVPROBE_LEN; i++)
		ascii[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '.';
	ascii[MVPROBE_LEN] = '\0';
	pr_info("mvprobe: pa=%#llx hex=%*ph ascii=%s\n", pa, MVPROBE_LEN, buf, ascii);
	return -EAGAIN;
}

/* ---- results ----------------------------------------------------------------- */

static DEFINE_MUTEX(mvp_lock);
static char mvp_res[4096];
static size_t mvp_res_len;

static __printf(1, 2) void out(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mvp_res_len += vscnprintf(mvp_res + mvp_res_len, sizeof(mvp_res) - mvp_res_len, fmt, ap);
	va_end(ap);
}

/* ---- hardware helpers -------------------------------------------------------- */

/* The driver's test hook: the management handle (0 when MicroV is not
 * running). Looked up with symbol_get so that this module loads (and the
 * one-shot probes work) with a driver that does not export it. */
extern u64 microv_test_handle(void);

static int get_handle(u64 *h)
{
	u64 (*fn)(void) = symbol_get(microv_test_handle);

	*h = 0;
	if (!fn)
		return -ENOENT;
	*h = fn();
	symbol_put(microv_test_handle);
	return *h ? 0 : -ENODEV;
}

static const char *handle_error(int err)
{
	return err == -ENOENT ? "no-export" : err == -ENODEV ? "not-running" : "ok";
}

/* A hypercall (vmmcall on AMD, vmcall on Intel); without MicroV it raises
 * #UD and RAX comes back as is. */
static u64 hypercall(u64 call, u64 *r10, u64 *r11, u64 *r12, u64 *r13)
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

static void cpuid2(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static bool microv_visible(void)
{
	u32 a, b, c, d;

	cpuid2(0x40000000, 0, &a, &b, &c, &d);
	return b == 0x7263694d && c == 0x694d566f && d == 0x566f7263; /* "Micr" "oVMi" "croV" */
}

/* Returns 0, or 1 when XSETBV raised an exception (#GP). */
static int xsetbv_safe(u32 index, u64 value)
{
	int err = 1;

	asm volatile("1: xsetbv\n\t"
		     "xor %[err], %[err]\n"
		     "2:\n" _ASM_EXTABLE(1b, 2b)
		     : [err] "+r"(err)
		     : "a"((u32)value), "d"((u32)(value >> 32)), "c"(index)
		     : "memory");
	return err;
}

static u32 phys_bits(void)
{
	u32 a, b, c, d;

	cpuid2(0x80000000, 0, &a, &b, &c, &d);
	if (a < 0x80000008)
		return 36;
	cpuid2(0x80000008, 0, &a, &b, &c, &d);
	return a & 0xff;
}

/* What MicroV maps for the root (hypervisor/extension/src/root_vm.rs). */
static u64 npt_limit(u32 bits)
{
	u32 a, b, c, d, cap;

	cpuid2(0x80000001, 0, &a, &b, &c, &d);
	cap = (d & (1u << 26)) ? 42 : 39; /* 1 GiB pages or not */
	return 1ULL << clamp(bits, 32u, cap);
}

/* Exit kinds (abi/src/exits.rs; the C header has only their count). */
#define EXIT_RDMSR 1
#define EXIT_WRMSR 2

/* Per-CPU exit counts of MicroV's CPU `pp` for kinds 0..3 (cpuid, rdmsr,
 * wrmsr, vmmcall); false without MicroV. */
static bool exit_counts(u64 handle, u64 pp, u64 c[4])
{
	u64 r10 = handle, r11 = pp, r12 = 0, r13 = 0;

	if (hypercall(MV_HC_PP_EXIT_COUNT, &r10, &r11, &r12, &r13) != MV_STATUS_SUCCESS)
		return false;
	c[0] = r10;
	c[1] = r11;
	c[2] = r12;
	c[3] = r13;
	return true;
}

static bool my_pp(u64 handle, u64 *pp)
{
	u64 r10 = handle, r11 = 0, r12 = 0, r13 = 0;

	if (hypercall(MV_HC_PP_ID, &r10, &r11, &r12, &r13) != MV_STATUS_SUCCESS)
		return false;
	*pp = r10;
	return true;
}

/* ---- hijack: the promotion path with a hostile root CPU state -------------- */

struct mvp_dtr {
	u16 pad[3];
	u16 limit; /* lgdt/lidt/sgdt/sidt operate at offset 6 */
	u64 base;
};

enum { R_AX, R_CX, R_DX, R_BX, R_SP, R_BP, R_SI, R_DI, R_8, R_9, R_10, R_11, R_12, R_13, R_14, R_15 };
static const char *const reg_names[16] = {
	"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
};

#define WIN_TR 1
#define WIN_GS 2
#define WIN_CRDR 4

/* Shared with mvprobe_window.S: keep the offsets in step. */
struct mvp_window {
	struct mvp_dtr probe_idtr;
	struct mvp_dtr rw_gdtr;
	struct mvp_dtr orig_gdtr;
	struct mvp_dtr orig_idtr;
	u64 fake_tr, orig_tr, tss_desc, fake_gs, orig_gs;
	u64 attack_cr0, attack_cr4, attack_dr7, attack_dr0;
	u64 orig_cr0, orig_cr4, orig_dr7, orig_dr0;
	u64 in[16];
	u64 out[16];
	u64 how, exc_vector, exc_error, exc_rip;
	u64 tr_after, gs_after, kgs_after, efer_after;
	u64 cr0_after, cr4_after, dr7_after, dr0_after;
	struct mvp_dtr gdtr_after;
	struct mvp_dtr idtr_after;
	u64 saved_rsp, flags, exc_rsp;
};
_Static_assert(offsetof(struct mvp_window, fake_tr) == 64, "fake_tr");
_Static_assert(offsetof(struct mvp_window, orig_dr0) == 160, "orig_dr0");
_Static_assert(offsetof(struct mvp_window, in) == 168, "in");
_Static_assert(offsetof(struct mvp_window, out) == 296, "out");
_Static_assert(offsetof(struct mvp_window, how) == 424, "how");
_Static_assert(offsetof(struct mvp_window, tr_after) == 456, "tr_after");
_Static_assert(offsetof(struct mvp_window, dr0_after) == 512, "dr0_after");
_Static_assert(offsetof(struct mvp_window, gdtr_after) == 520, "gdtr_after");
_Static_assert(offsetof(struct mvp_window, saved_rsp) == 552, "saved_rsp");
_Static_assert(offsetof(struct mvp_window, exc_rsp) == 568, "exc_rsp");

/* mvprobe_window.S */
void mvp_window_run(struct mvp_window *w);
extern char mvp_window_call[], mvp_exc_stubs[];
struct mvp_window *mvp_cur;
u64 mvp_exc_count, mvp_nmi_count, mvp_db_count, mvp_last_dr6;

static u64 mvp_idt[32][2] __aligned(16);

static void build_idt(void)
{
	int v;

	for (v = 0; v < 32; v++) {
		u64 a = (u64)mvp_exc_stubs + 32 * v;

		/* 64-bit interrupt gate, DPL 0, no IST: every exception on the
		 * current stack, none through the (fake) TSS. */
		mvp_idt[v][0] = (a & 0xffff) | ((u64)__KERNEL_CS << 16) | (0xeULL << 40) |
				(1ULL << 47) | (((a >> 16) & 0xffff) << 48);
		mvp_idt[v][1] = a >> 32;
	}
}

#define PAT_PERCPU 1
#define PAT_TSS 2
#define PAT_IST 3
#define MARKER(i) (0x6d76705200000000ULL | ((u64)(i) << 8)) /* "mvpR" */

static u64 pattern(int kind, unsigned int off)
{
	return 0x6d76700000000000ULL | ((u64)kind << 36) | off; /* "mvp" */
}

enum { V_NONE, V_OSXSAVE, V_TS, V_DR7 };

struct hijack {
	bool fault;
	int variant;
	u64 dr0, kind, handle;
	u64 *page[3];		/* fake per-CPU, fake TSS, IST stack */
	u64 *snap[3];		/* their contents before the attack */
	struct mvp_window w;
	int slot;
};

static void fake_tss_desc(u64 base, u32 limit, u64 d[2])
{
	d[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
	       ((u64)((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	d[1] = base >> 32;
}

static long hijack_on_cpu(void *p)
{
	struct hijack *h = p;
	struct mvp_window *w = &h->w;
	u64 *gdt = (u64 *)get_current_gdt_rw();
	struct x86_hw_tss *tss = (struct x86_hw_tss *)h->page[1];
	struct desc_ptr gdtr, idtr;
	u64 desc[2], saved[2];
	unsigned long flags;
	u16 tr, ldtr;
	int i;

	for (i = 0; i < 512; i++) {
		h->page[0][i] = pattern(PAT_PERCPU, 8 * i);
		h->page[1][i] = pattern(PAT_TSS, 8 * i);
		h->page[2][i] = pattern(PAT_IST, 8 * i);
	}
	/* This CPU's own TSS, except IST1 (every microkernel exception gate
	 * uses IST1) on the probe's page. */
	memcpy(tss, &this_cpu_ptr(&cpu_tss_rw)->x86_tss, sizeof(*tss));
	tss->ist[0] = (u64)h->page[2] + PAGE_SIZE;
	tss->io_bitmap_base = sizeof(*tss);
	for (i = 0; i < 3; i++)
		memcpy(h->snap[i], h->page[i], PAGE_SIZE);

	kernel_fpu_begin();
	local_irq_save(flags);
	native_store_gdt(&gdtr);
	store_idt(&idtr);
	asm volatile("str %0" : "=r"(tr));
	asm volatile("sldt %0" : "=r"(ldtr));
	/* A free pair of GDT slots: the LDT's when no LDT is loaded, else TLS. */
	h->slot = ldtr ? GDT_ENTRY_TLS_MIN : GDT_ENTRY_LDT;
	saved[0] = gdt[h->slot];
	saved[1] = gdt[h->slot + 1];
	fake_tss_desc((u64)tss, sizeof(*tss) - 1, desc);
	gdt[h->slot] = desc[0];
	gdt[h->slot + 1] = desc[1];

	memset(w, 0, sizeof(*w));
	w->probe_idtr.limit = sizeof(mvp_idt) - 1;
	w->probe_idtr.base = (u64)mvp_idt;
	w->rw_gdtr.limit = GDT_SIZE - 1;
	w->rw_gdtr.base = (u64)gdt;
	w->orig_gdtr.limit = gdtr.size;
	w->orig_gdtr.base = gdtr.address;
	w->orig_idtr.limit = idtr.size;
	w->orig_idtr.base = idtr.address;
	w->fake_tr = h->slot * 8;
	w->orig_tr = tr;
	w->tss_desc = (u64)&gdt[GDT_ENTRY_TSS];
	w->fake_gs = (u64)h->page[0];
	rdmsrl(MSR_GS_BASE, w->orig_gs);
	w->orig_cr0 = native_read_cr0();
	w->orig_cr4 = native_read_cr4();
	w->orig_dr7 = native_get_debugreg(7);
	w->orig_dr0 = native_get_debugreg(0);
	w->attack_cr0 = w->orig_cr0;
	w->attack_cr4 = w->orig_cr4;
	w->attack_dr7 = w->orig_dr7;
	w->attack_dr0 = w->orig_dr0;
	switch (h->variant) {
	case V_OSXSAVE:
		w->attack_cr4 &= ~X86_CR4_OSXSAVE;
		break;
	case V_TS:
		w->attack_cr0 |= X86_CR0_TS;
		break;
	case V_DR7:
		/* L0, execute breakpoint (R/W0 = LEN0 = 0) at DR0. */
		w->attack_dr0 = h->dr0;
		w->attack_dr7 = (w->orig_dr7 & ~0xf0003ULL) | 0x1;
		break;
	}
	w->flags = WIN_TR | WIN_GS | WIN_CRDR;
	for (i = 0; i < 16; i++)
		w->in[i] = MARKER(i);
	w->in[R_AX] = h->fault ? MV_HC_HV_TEST_FAULT : MV_HC_HV_STOP_PP;
	w->in[R_10] = h->handle;
	if (h->fault)
		w->in[R_11] = h->kind;
	mvp_nmi_count = 0;
	mvp_db_count = 0;

	mvp_window_run(w);

	gdt[h->slot] = saved[0];
	gdt[h->slot + 1] = saved[1];
	local_irq_restore(flags);
	kernel_fpu_end();
	return 0;
}

/* A MicroV magic, or an address in the hole where the hypervisor lives
 * (0xffff8000'00000000.., which Linux never uses). */
static bool hv_value(u64 v)
{
	return v == MV_KERNEL_IMAGE_MAGIC || v == MV_EXTENSION_IMAGE_MAGIC ||
	       v == MV_BOOT_INFO_MAGIC ||
	       (v >= MV_POOL_VA && v < 0xffff880000000000ULL);
}

static void report_page(const char *name, const u64 *now, const u64 *before)
{
	int i, n = 0, first = -1;

	for (i = 0; i < 512; i++)
		if (now[i] != before[i]) {
			n++;
			if (first < 0)
				first = i;
		}
	if (!n) {
		out(" %s=untouched", name);
		return;
	}
	out(" %s=changed:%d-qwords-from+%#x", name, n, first * 8);
}

static void report_page_detail(const char *name, const u64 *now, const u64 *before)
{
	int i, shown = 0;

	for (i = 0; i < 512 && shown < 8; i++)
		if (now[i] != before[i]) {
			out("%s+%#x=%#llx(was %#llx) ", name, i * 8, now[i], before[i]);
			shown++;
		}
}

static void report_hijack(struct hijack *h, int cpu)
{
	static const char *const variants[] = { "none", "osxsave", "ts", "dr7" };
	struct mvp_window *w = &h->w;
	bool leak = false, regs_same = true;
	int i, k;

	out("op=hijack cpu=%d call=%s variant=%s", cpu, h->fault ? "fault" : "stop",
	    variants[h->variant]);
	if (w->how == 0)
		out(" how=returned status=%llu vector=-", w->out[R_AX]);
	else
		out(" how=exception status=- vector=%llu at_call=%d error_code=%#llx", w->exc_vector,
		    w->exc_rip == (u64)mvp_window_call, w->exc_error);
	out(" tr_fake=%d gs_fake=%d cr0_kept=%d cr4_kept=%d dr7_kept=%d dr0_kept=%d",
	    w->tr_after == w->fake_tr, w->gs_after == w->fake_gs, w->cr0_after == w->attack_cr0,
	    w->cr4_after == w->attack_cr4, w->dr7_after == w->attack_dr7,
	    w->dr0_after == w->attack_dr0);
	/* RAX carries the status when the call returned; nothing else may change. */
	for (i = w->how == 0 ? 1 : 0; i < 16; i++)
		if (i != R_SP && w->out[i] != w->in[i])
			regs_same = false;
	out(" regs=%s", regs_same ? "same" : "changed");
	for (i = 0; i < 16; i++)
		if (i != R_SP && hv_value(w->out[i]))
			leak = true;
	for (k = 0; k < 3; k++)
		for (i = 0; i < 512; i++)
			if (hv_value(h->page[k][i]))
				leak = true;
	out(" leak=%s", leak ? "yes" : "none");
	report_page("percpu", h->page[0], h->snap[0]);
	report_page("tss", h->page[1], h->snap[1]);
	report_page("ist", h->page[2], h->snap[2]);
	out(" nmi=%llu db=%llu\n", mvp_nmi_count, mvp_db_count);

	out("detail: tr=%#llx fake_tr=%#llx gs=%#llx fake_gs=%#llx kgs=%#llx efer=%#llx cr0=%#llx/%#llx cr4=%#llx/%#llx dr7=%#llx/%#llx dr0=%#llx idt=%#llx(probe %#llx) gdt=%#llx exc_rip=%#llx call_rip=%#llx exc_rsp=%#llx dr6=%#llx\n",
	    w->tr_after, w->fake_tr, w->gs_after, w->fake_gs, w->kgs_after, w->efer_after,
	    w->cr0_after, w->attack_cr0, w->cr4_after, w->attack_cr4, w->dr7_after, w->attack_dr7,
	    w->dr0_after, w->idtr_after.base, w->probe_idtr.base, w->gdtr_after.base, w->exc_rip,
	    (u64)mvp_window_call, w->exc_rsp, mvp_last_dr6);
	out("regs:");
	for (i = 0; i < 16; i++)
		if (i != R_SP)
			out(" %s=%#llx%s", reg_names[i], w->out[i],
			    w->out[i] == w->in[i] ? "" : "(changed)");
	out("\n");
	if (!regs_same || leak || memcmp(h->page[0], h->snap[0], PAGE_SIZE) ||
	    memcmp(h->page[1], h->snap[1], PAGE_SIZE) || memcmp(h->page[2], h->snap[2], PAGE_SIZE)) {
		out("changes: ");
		report_page_detail("percpu", h->page[0], h->snap[0]);
		report_page_detail("tss", h->page[1], h->snap[1]);
		report_page_detail("ist", h->page[2], h->snap[2]);
		out("\n");
	}
}

/* ---- xcr0 ------------------------------------------------------------------- */

struct xcr0_args {
	u64 value;
	bool unsupported;
	unsigned long loops;
	u64 old, supported, readback, final, sum;
	u32 d0_ebx_before, d0_ebx, cpuid1_ecx;
	int fault, restore_fault;
};

static long xcr0_set_on_cpu(void *p)
{
	struct xcr0_args *x = p;
	unsigned long flags, i;
	u32 a, b, c, d;
	u64 sum = 0xcbf29ce484222325ULL;

	kernel_fpu_begin();
	local_irq_save(flags);
	x->old = xgetbv(XCR_XFEATURE_ENABLED_MASK);
	cpuid2(0xd, 0, &a, &b, &c, &d);
	x->supported = a | (u64)d << 32;
	x->d0_ebx_before = b;
	if (x->unsupported) {
		int bit;

		for (bit = 2; bit < 63 && (x->supported & BIT_ULL(bit)); bit++)
			;
		x->value = x->old | BIT_ULL(bit);
	}
	x->fault = xsetbv_safe(XCR_XFEATURE_ENABLED_MASK, x->value);
	x->readback = xgetbv(XCR_XFEATURE_ENABLED_MASK);
	cpuid2(0xd, 0, &a, &b, &c, &d);
	x->d0_ebx = b;
	cpuid2(1, 0, &a, &b, &c, &d);
	x->cpuid1_ecx = c;
	/* A little work with exits in it while XCR0 is lowered: the XSAVE
	 * size for the current XCR0 (CPUID 0xD.0 EBX), again and again, mixed
	 * into an FNV-1a hash with the loop counter. */
	for (i = 0; i < x->loops; i++) {
		cpuid2(0xd, 0, &a, &b, &c, &d);
		sum = (sum ^ b ^ ((u64)i << 32)) * 0x100000001b3ULL;
	}
	x->sum = sum;
	x->restore_fault = xsetbv_safe(XCR_XFEATURE_ENABLED_MASK, x->old);
	x->final = xgetbv(XCR_XFEATURE_ENABLED_MASK);
	local_irq_restore(flags);
	kernel_fpu_end();
	return 0;
}

/* ---- wrmsr ------------------------------------------------------------------ */

struct wrmsr_args {
	u32 msr;
	bool have_value;
	u64 value;
	unsigned long count;
	u64 handle;
	/* out */
	int rd, wr, rd_after;
	u64 read, wrote, after;
	bool counted;
	u64 before_c[4], after_c[4];
};

static long msr_write_on_cpu(void *p)
{
	struct wrmsr_args *m = p;
	unsigned long flags, i;
	u64 pp = 0;

	local_irq_save(flags);
	m->counted = m->handle && my_pp(m->handle, &pp) && exit_counts(m->handle, pp, m->before_c);
	m->rd = rdmsrl_safe(m->msr, &m->read);
	m->wrote = m->have_value ? m->value : m->rd ? 0 : m->read;
	m->wr = 0;
	for (i = 0; i < m->count; i++)
		m->wr |= wrmsrl_safe(m->msr, m->wrote);
	m->rd_after = rdmsrl_safe(m->msr, &m->after);
	if (m->counted)
		m->counted = exit_counts(m->handle, pp, m->after_c);
	local_irq_restore(flags);
	return 0;
}

/* ---- stop_pp on one CPU --------------------------------------------------------- */

struct stoppp_args {
	u64 handle, status, ns;
	bool visible_before, visible_after;
};

static long stop_pp_on_cpu(void *p)
{
	struct stoppp_args *s = p;
	u64 r10 = s->handle, r11 = 0, r12 = 0, r13 = 0, t0;
	unsigned long flags;

	s->visible_before = microv_visible();
	kernel_fpu_begin();
	local_irq_save(flags);
	t0 = ktime_get_ns();
	s->status = hypercall(MV_HC_HV_STOP_PP, &r10, &r11, &r12, &r13);
	s->ns = ktime_get_ns() - t0;
	local_irq_restore(flags);
	kernel_fpu_end();
	s->visible_after = microv_visible();
	return 0;
}

/* ---- commands ----------------------------------------------------------------- */

#define MAX_ARGS 12

struct cmd {
	char *op;
	int n;
	char *key[MAX_ARGS];
	char *val[MAX_ARGS];
};

static const char *arg(struct cmd *c, const char *key)
{
	int i;

	for (i = 0; i < c->n; i++)
		if (!strcmp(c->key[i], key))
			return c->val[i];
	return NULL;
}

/* Number argument `key` (hex with 0x, or decimal), or `def` if absent. */
static int num(struct cmd *c, const char *key, u64 def, u64 *v)
{
	const char *s = arg(c, key);

	*v = def;
	if (!s)
		return 0;
	if (kstrtoull(s, 0, v)) {
		out("error=bad-number %s=%s\n", key, s);
		return -EINVAL;
	}
	return 0;
}

static int cpu_arg(struct cmd *c, int *cpu)
{
	u64 v;
	int err = num(c, "cpu", 0, &v);

	if (err)
		return err;
	if (v >= nr_cpu_ids || !cpu_online(v)) {
		out("error=cpu-not-online cpu=%llu\n", v);
		return -EINVAL;
	}
	*cpu = v;
	return 0;
}

static int need_handle(u64 *h)
{
	int err = get_handle(h);

	if (err)
		out("error=no-handle handle=%s (the driver must export microv_test_handle() and MicroV must run)\n",
		    handle_error(err));
	return err;
}

static int do_info(struct cmd *c)
{
	u64 h;
	int herr = get_handle(&h);
	u32 bits = phys_bits(), a, b, cx, d;
	u64 xcr0 = (native_read_cr4() & X86_CR4_OSXSAVE) ? xgetbv(XCR_XFEATURE_ENABLED_MASK) : 0;

	cpuid2(0xd, 0, &a, &b, &cx, &d);
	out("op=info phys_bits=%u npt_limit=%#llx xcr0=%#llx xcr0_supported=%#llx handle=%s cpus=%u\n",
	    bits, npt_limit(bits), xcr0, a | (u64)d << 32, herr ? handle_error(herr) : "yes",
	    num_online_cpus());
	return 0;
}

static int do_hijack(struct cmd *c)
{
	const char *call = arg(c, "call"), *variant = arg(c, "variant");
	struct hijack *h;
	int cpu, err, i;

	err = cpu_arg(c, &cpu);
	if (err)
		return err;
	h = kzalloc(sizeof(*h), GFP_KERNEL);
	if (!h)
		return -ENOMEM;
	err = num(c, "dr0", 0, &h->dr0) ?: num(c, "kind", 1, &h->kind);
	if (err)
		goto free;
	err = -EINVAL;
	if (!call || (strcmp(call, "stop") && strcmp(call, "fault"))) {
		out("error=call-must-be-stop-or-fault\n");
		goto free;
	}
	h->fault = !strcmp(call, "fault");
	if (!variant || !strcmp(variant, "none")) {
		h->variant = V_NONE;
	} else if (!strcmp(variant, "osxsave")) {
		h->variant = V_OSXSAVE;
	} else if (!strcmp(variant, "ts")) {
		h->variant = V_TS;
	} else if (!strcmp(variant, "dr7")) {
		h->variant = V_DR7;
		if (!h->dr0) {
			out("error=variant-dr7-needs-dr0\n");
			goto free;
		}
	} else {
		out("error=unknown-variant %s\n", variant);
		goto free;
	}
	err = need_handle(&h->handle);
	if (err)
		goto free;
	err = -ENOMEM;
	for (i = 0; i < 3; i++) {
		h->page[i] = (u64 *)get_zeroed_page(GFP_KERNEL);
		h->snap[i] = (u64 *)get_zeroed_page(GFP_KERNEL);
		if (!h->page[i] || !h->snap[i])
			goto free;
	}
	pr_info("mvprobe: hijack on CPU %d: call=%s variant=%s (if the machine dies now, MicroV's promotion path ran on the root's TR/GS/CR/DR)\n",
		cpu, call, variant ? variant : "none");
	work_on_cpu(cpu, hijack_on_cpu, h);
	report_hijack(h, cpu);
	err = 0;
free:
	for (i = 0; i < 3; i++) {
		if (h->page[i])
			free_page((unsigned long)h->page[i]);
		if (h->snap[i])
			free_page((unsigned long)h->snap[i]);
	}
	kfree(h);
	return err;
}

static int do_xcr0(struct cmd *c)
{
	struct xcr0_args x = {};
	const char *v = arg(c, "value");
	u64 loops;
	int cpu, err;

	err = cpu_arg(c, &cpu) ?: num(c, "loops", 200, &loops);
	if (err)
		return err;
	x.loops = loops;
	if (!v) {
		out("error=value-missing\n");
		return -EINVAL;
	}
	if (!strcmp(v, "unsupported"))
		x.unsupported = true;
	else if (kstrtoull(v, 0, &x.value)) {
		out("error=bad-number value=%s\n", v);
		return -EINVAL;
	}
	work_on_cpu(cpu, xcr0_set_on_cpu, &x);
	out("op=xcr0 cpu=%d old=%#llx value=%#llx fault=%d readback=%#llx d0_ebx=%#x d0_ebx_before=%#x osxsave=%u sum=%#llx restore=%s final=%#llx supported=%#llx\n",
	    cpu, x.old, x.value, x.fault, x.readback, x.d0_ebx, x.d0_ebx_before,
	    (x.cpuid1_ecx >> 27) & 1, x.sum, x.restore_fault ? "fault" : "ok", x.final,
	    x.supported);
	return 0;
}

static int do_wrmsr(struct cmd *c)
{
	struct wrmsr_args m = {};
	u64 idx, count;
	int cpu, err;

	err = cpu_arg(c, &cpu) ?: num(c, "msr", ~0ULL, &idx) ?: num(c, "count", 1, &count);
	if (err)
		return err;
	if (idx > U32_MAX) {
		out("error=msr-missing\n");
		return -EINVAL;
	}
	m.msr = idx;
	m.count = count;
	m.have_value = arg(c, "value") != NULL;
	err = num(c, "value", 0, &m.value);
	if (err)
		return err;
	get_handle(&m.handle);
	work_on_cpu(cpu, msr_write_on_cpu, &m);
	out("op=wrmsr cpu=%d msr=%#x read=%s value=%#llx wrote=%#llx write=%s after=%s after_value=%#llx count=%lu",
	    cpu, m.msr, m.rd ? "fault" : "ok", m.rd ? 0 : m.read, m.wrote, m.wr ? "fault" : "ok",
	    m.rd_after ? "fault" : "ok", m.rd_after ? 0 : m.after, m.count);
	if (m.counted)
		out(" hv_rdmsr_exits=%llu hv_wrmsr_exits=%llu\n",
		    m.after_c[EXIT_RDMSR] - m.before_c[EXIT_RDMSR],
		    m.after_c[EXIT_WRMSR] - m.before_c[EXIT_WRMSR]);
	else
		out(" hv_rdmsr_exits=n/a hv_wrmsr_exits=n/a\n");
	return 0;
}

static int do_phys(struct cmd *c)
{
	u64 addr, off, pfn;
	u32 bits = phys_bits();
	u8 buf[MVPROBE_LEN];
	const char *how;
	void __iomem *io;
	void *va;
	int err, fault = 0;

	err = num(c, "pa", ~0ULL, &addr);
	if (err)
		return err;
	off = addr & ~PAGE_MASK;
	if (addr == ~0ULL || off > PAGE_SIZE - MVPROBE_LEN) {
		out("error=pa-missing-or-crosses-a-page\n");
		return -EINVAL;
	}
	out("op=phys pa=%#llx phys_bits=%u npt_limit=%#llx", addr, bits, npt_limit(bits));
	pfn = addr >> PAGE_SHIFT;
	if (bits < 64 && addr < (1ULL << bits) && pfn_valid(pfn)) {
		how = "direct-map";
		fault = copy_from_kernel_nofault(buf, phys_to_virt(addr), sizeof(buf));
	} else if (bits < 64 && addr < (1ULL << bits)) {
		how = "ioremap";
		io = ioremap(addr - off, PAGE_SIZE);
		if (!io) {
			out(" how=%s result=refused\n", how);
			return 0;
		}
		memcpy_fromio(buf, io + off, sizeof(buf));
		iounmap(io);
	} else {
		unsigned long pfns[1] = { pfn };

		how = "pte-above-maxphyaddr";
		va = vmap_pfn(pfns, 1, pgprot_noncached(PAGE_KERNEL));
		if (!va) {
			out(" how=%s result=refused\n", how);
			return 0;
		}
		fault = copy_from_kernel_nofault(buf, va + off, sizeof(buf));
		vunmap(va);
	}
	if (fault)
		out(" how=%s result=fault\n", how);
	else
		out(" how=%s result=ok hex=%*phN\n", how, MVPROBE_LEN, buf);
	return 0;
}

static int do_stoppp(struct cmd *c)
{
	struct stoppp_args s = {};
	int cpu, err;

	err = cpu_arg(c, &cpu) ?: need_handle(&s.handle);
	if (err)
		return err;
	work_on_cpu(cpu, stop_pp_on_cpu, &s);
	out("op=stoppp cpu=%d status=%llu elapsed_ns=%llu visible_before=%d visible_after=%d\n", cpu,
	    s.status, s.ns, s.visible_before, s.visible_after);
	return 0;
}

struct init_args {
	u32 apic_id;
};

static long init_from_cpu(void *arg)
{
	struct init_args *a = arg;
	unsigned long flags;

	local_irq_save(flags);
	apic_icr_write(APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT, a->apic_id);
	local_irq_restore(flags);
	return 0;
}

static int do_init(struct cmd *c)
{
	struct init_args a = {};
	u64 target;
	int cpu, err;

	err = cpu_arg(c, &cpu) ?: num(c, "target", ~0ULL, &target);
	if (err)
		return err;
	if (target >= nr_cpu_ids || !cpu_online(target) || target == cpu) {
		out("error=target-must-be-another-online-cpu\n");
		return -EINVAL;
	}
	a.apic_id = per_cpu(x86_cpu_to_apicid, target);
	out("op=init cpu=%d target=%llu apic_id=%u", cpu, target, a.apic_id);
	work_on_cpu(cpu, init_from_cpu, &a);
	out(" sent=1\n");
	return 0;
}

struct apic_args {
	u32 reg, value, before, after;
};

static long apic_on_cpu(void *arg)
{
	struct apic_args *a = arg;
	unsigned long flags;

	local_irq_save(flags);
	a->before = apic_read(a->reg);
	apic_write(a->reg, a->value);
	a->after = apic_read(a->reg);
	local_irq_restore(flags);
	return 0;
}

static int do_apic(struct cmd *c)
{
	struct apic_args a = {};
	u64 reg, value;
	int cpu, err;

	err = cpu_arg(c, &cpu) ?: num(c, "reg", ~0ULL, &reg) ?: num(c, "value", ~0ULL, &value);
	if (err)
		return err;
	if (x2apic_mode || reg >= 0x1000 || reg % 16 || value > 0xffffffffULL) {
		out("error=needs-xapic-and-a-32-bit-register\n");
		return -EINVAL;
	}
	a.reg = reg;
	a.value = value;
	work_on_cpu(cpu, apic_on_cpu, &a);
	out("op=apic cpu=%d reg=%#x before=%#x wrote=%#x after=%#x\n", cpu, a.reg, a.before,
	    a.value, a.after);
	return 0;
}

static int dispatch(char *line)
{
	struct cmd c = {};
	char *tok;

	while ((tok = strsep(&line, " \t\n")) != NULL) {
		char *eq;

		if (!*tok)
			continue;
		if (!c.op) {
			c.op = tok;
			continue;
		}
		eq = strchr(tok, '=');
		if (!eq || c.n == MAX_ARGS) {
			out("error=bad-argument %s (want key=value)\n", tok);
			return -EINVAL;
		}
		*eq = '\0';
		c.key[c.n] = tok;
		c.val[c.n++] = eq + 1;
	}
	if (!c.op) {
		out("error=empty-command\n");
		return -EINVAL;
	}
	if (!strcmp(c.op, "info"))
		return do_info(&c);
	if (!strcmp(c.op, "hijack"))
		return do_hijack(&c);
	if (!strcmp(c.op, "xcr0"))
		return do_xcr0(&c);
	if (!strcmp(c.op, "wrmsr"))
		return do_wrmsr(&c);
	if (!strcmp(c.op, "phys"))
		return do_phys(&c);
	if (!strcmp(c.op, "stoppp"))
		return do_stoppp(&c);
	if (!strcmp(c.op, "init"))
		return do_init(&c);
	if (!strcmp(c.op, "apic"))
		return do_apic(&c);
	out("error=unknown-command %s\n", c.op);
	return -EINVAL;
}

static ssize_t ctl_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[256], copy[256];
	char *line, *next;
	int err;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';
	strscpy(copy, strim(buf), sizeof(copy));
	mutex_lock(&mvp_lock);
	mvp_res_len = 0;
	mvp_res[0] = '\0';
	err = dispatch(buf);
	pr_info("mvprobe: command: %s (%d)\n", copy, err);
	for (line = mvp_res; line && *line; line = next) {
		next = strchr(line, '\n');
		pr_info("mvprobe: %.*s\n", next ? (int)(next - line) : (int)strlen(line), line);
		if (next)
			next++;
	}
	mutex_unlock(&mvp_lock);
	return err ? err : len;
}

static ssize_t ctl_read(struct file *f, char __user *ubuf, size_t len, loff_t *ppos)
{
	ssize_t n;

	mutex_lock(&mvp_lock);
	n = simple_read_from_buffer(ubuf, len, ppos, mvp_res, mvp_res_len);
	mutex_unlock(&mvp_lock);
	return n;
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.write = ctl_write,
	.read = ctl_read,
	.llseek = default_llseek,
};

static struct dentry *mvp_dir;

static int __init mvprobe_init(void)
{
	if (msr != ~0ULL)
		return mvprobe_msr_once();
	if (pa != ~0ULL)
		return mvprobe_pa_once();
	build_idt();
	mvp_dir = debugfs_create_dir("mvprobe", NULL);
	debugfs_create_file("ctl", 0600, mvp_dir, NULL, &ctl_fops);
	pr_info("mvprobe: resident; commands go to /sys/kernel/debug/mvprobe/ctl\n");
	return 0;
}

static void __exit mvprobe_exit(void)
{
	debugfs_remove_recursive(mvp_dir);
}

module_init(mvprobe_init);
module_exit(mvprobe_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("MicroV test probe: plays an attacker in the root VM's kernel");
