// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * mvprobe: a test-only module that reads 16 bytes of physical memory through
 * the kernel's direct map and prints them, so the isolation test can check
 * that the root VM's kernel cannot see MicroV's memory.
 *
 *   insmod mvprobe.ko pa=0x12345000
 *
 * dmesg gets one line:
 *   mvprobe: pa=0x12345000 hex=4d 56 ... ascii=MV..
 * (or `mvprobe: pa=... error: ...` when the address cannot be read).
 * Init then returns -EAGAIN so the module never stays loaded: insmod fails
 * with "Try again"/"Resource temporarily unavailable"; that is expected.
 *
 *   insmod mvprobe.ko msr=0xc0002000
 *
 * instead reads that MSR with rdmsr_safe and writes the value back with
 * wrmsr_safe, and prints `mvprobe: msr=... read=ok|fault value=... write=ok|fault`,
 * so a test can compare an MSR access beneath MicroV with the native one.
 *
 * Built by `cargo xtask build` against the same kernel headers as microv.ko;
 * installed in the machine at /usr/lib/microv-tests/mvprobe.ko.
 */
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/uaccess.h>
#include <asm/msr.h>

#define MVPROBE_LEN 16

static unsigned long long pa = ~0ULL;
module_param(pa, ullong, 0);
MODULE_PARM_DESC(pa, "physical address to read 16 bytes from");

static unsigned long long msr = ~0ULL;
module_param(msr, ullong, 0);
MODULE_PARM_DESC(msr, "MSR to read and write back (instead of pa=)");

static int mvprobe_msr(void)
{
	u64 value = 0;
	int rd = rdmsrl_safe((u32)msr, &value);
	int wr = wrmsrl_safe((u32)msr, value);

	pr_info("mvprobe: msr=%#llx read=%s value=%#llx write=%s\n", msr,
		rd ? "fault" : "ok", value, wr ? "fault" : "ok");
	return -EAGAIN;
}

static int __init mvprobe_init(void)
{
	u8 buf[MVPROBE_LEN];
	char ascii[MVPROBE_LEN + 1];
	void *va;
	int i;

	if (msr != ~0ULL)
		return mvprobe_msr();
	if (pa == ~0ULL) {
		pr_info("mvprobe: error: no pa= given\n");
		return -EINVAL;
	}
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
	/* A fault (a hole in the direct map) becomes an error, not an oops. */
	if (copy_from_kernel_nofault(buf, va, sizeof(buf))) {
		pr_info("mvprobe: pa=%#llx error: reading the direct map faulted\n", pa);
		return -EFAULT;
	}
	for (i = 0; i < MVPROBE_LEN; i++)
		ascii[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '.';
	ascii[MVPROBE_LEN] = '\0';
	pr_info("mvprobe: pa=%#llx hex=%*ph ascii=%s\n", pa, MVPROBE_LEN, buf, ascii);
	return -EAGAIN;
}

module_init(mvprobe_init);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_DESCRIPTION("MicroV test probe: reads physical memory through the direct map");
