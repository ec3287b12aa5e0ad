/* SPDX-License-Identifier: MIT */
/*
 * MicroV's trampoline: the only code that runs on both the OS's (or the
 * firmware's) page tables and the hypervisor's. The loader maps these pages
 * (and each CPU's landing page) at the same virtual address in the
 * hypervisor's address space, so switching CR3 here never pulls the code
 * or data from under us. Both loaders use this one file: the Linux driver
 * (Kbuild) and microv.efi (`xtask/src/efi.rs` assembles it with
 * -D__ASSEMBLY__ and links it in; its code has no absolute references, so
 * microv.efi runs it from a copy of the page).
 */
#include "microv_abi.h"

#define MSR_EFER_NUM	0xc0000080
#define EFER_SVME_BIT	12
#define CPUID_EXT1	0x80000001
#define EXT1_ECX_SVM_BIT	2

/*
 * Jumps to \label unless this CPU has AMD SVM (CPUID 0x80000001 ECX bit 2).
 * Clobbers RAX, RBX, RCX, RDX. On Intel there is no GIF and no EFER.SVME:
 * the microkernel turns VMX on itself (VMXON).
 */
.macro unless_svm label
	mov eax, CPUID_EXT1
	cpuid
	bt ecx, EXT1_ECX_SVM_BIT
	jnc \label
.endm

#define CAP(f)	(MVOFF_mv_cpu_landing_captured + MVOFF_mv_captured_state_##f)
#define PF(f)	(MVOFF_mv_cpu_landing_promote + MVOFF_mv_promote_frame_##f)
#define GPR(r)	(PF(gprs) + 8 * MV_GPR_##r)

	.section .text.microv_tramp, "ax"
	.balign 4096
	.globl microv_tramp_start
microv_tramp_start:

/*
 * u64 microv_enter(struct mv_cpu_landing *landing)
 *
 * Called with interrupts off and the landing page's captured state filled in
 * by C. Records RSP/RFLAGS/resume RIP, on AMD turns on EFER.SVME and clears
 * GIF (so no NMI can reach a Linux handler while CR3 is the hypervisor's;
 * Intel has no GIF: an NMI before the microkernel loads its IDT would find
 * Linux's handler, a window of a few instructions), switches to
 * the hypervisor's page tables and stack and jumps to the microkernel. We come
 * back at microv_resume: as the root VM on success (RAX = 0), or natively
 * through microv_promote with RAX = an MV_ERR_* code.
 */
	.globl microv_enter
	.type microv_enter, @function
microv_enter:
	.intel_syntax noprefix
	push rbp
	push rbx
	push r12
	push r13
	push r14
	push r15
	pushfq
	mov [rdi + CAP(rsp)], rsp
	lea rax, [rip + microv_resume]
	mov [rdi + CAP(rip)], rax
	pushfq
	pop rax
	mov [rdi + CAP(rflags)], rax

	unless_svm 1f
	mov ecx, MSR_EFER_NUM
	rdmsr
	bts eax, EFER_SVME_BIT
	wrmsr
	clgi
1:
	mov rax, [rdi + MVOFF_mv_cpu_landing_kernel_cr3]
	mov rbx, [rdi + MVOFF_mv_cpu_landing_kernel_entry]
	mov cr3, rax
	/*
	 * rdi: the landing page, mapped at this address on both sides. The
	 * microkernel takes its stack from its boot info, not from here.
	 */
	xor ebp, ebp
	jmp rbx

microv_resume:
	popfq
	pop r15
	pop r14
	pop r13
	pop r12
	pop rbx
	pop rbp
	ret
	.size microv_enter, . - microv_enter

/*
 * microv_promote: the microkernel jumps here (its private copy of this page,
 * at the same address) with RDI = landing page and RAX = the root's CR3,
 * after loading the root's XCR0, FPU state, PAT, CR2, CR4, CR0 and, last,
 * what VMLOAD covers (FS, GS, TR, LDTR, syscall MSRs). The first thing done
 * here is the switch to the root's page tables: everything read after that
 * is the root's own memory through its own tables, so the hypervisor trusts
 * none of it. Then the root's descriptor tables (and, on Intel, its TR and LDTR), the IRET frame on the
 * landing page's own small stack (never the interrupted stack, which may be
 * a user stack), DR7 (breakpoints can now only hit root code), GIF (AMD),
 * the root's EFER (SVME off), and IRET into the root's state: the CPU is
 * native again.
 */
	.globl microv_promote
	.type microv_promote, @function
microv_promote:
	endbr64
	mov cr3, rax
	lgdt [rdi + PF(gdtr) + 6]
	lidt [rdi + PF(idtr) + 6]
	/*
	 * Intel (tr != 0; VMLOAD did this on AMD): TR and LDTR from the
	 * frame's own GDT, which holds copies of their descriptors with TR's
	 * marked available (the root's own is busy, and Linux maps its GDT
	 * read-only); then the root's GDT again.
	 */
	mov rax, [rdi + PF(tr)]
	test rax, rax
	jz 2f
	lea rax, [rdi + PF(tr_gdt)]
	mov [rdi + PF(tr_gdtr) + 8], rax
	lgdt [rdi + PF(tr_gdtr) + 6]
	mov rax, [rdi + PF(tr)]
	ltr ax
	mov rax, [rdi + PF(ldtr)]
	lldt ax
	lgdt [rdi + PF(gdtr) + 6]
2:
	mov rax, [rdi + PF(ds)]
	mov ds, ax
	mov rax, [rdi + PF(es)]
	mov es, ax
	lea rsp, [rdi + MVOFF_mv_cpu_landing_iret_stack + 8 * MV_LANDING_IRET_STACK_WORDS]

	push qword ptr [rdi + PF(ss)]
	push qword ptr [rdi + PF(rsp)]
	push qword ptr [rdi + PF(rflags)]
	push qword ptr [rdi + PF(cs)]
	push qword ptr [rdi + PF(rip)]

	mov rax, [rdi + PF(dr7)]
	mov dr7, rax
	unless_svm 1f
	stgi
1:
	mov ecx, MSR_EFER_NUM
	mov eax, [rdi + PF(efer)]
	mov edx, [rdi + PF(efer) + 4]
	wrmsr

	mov rax, [rdi + GPR(RAX)]
	mov rcx, [rdi + GPR(RCX)]
	mov rdx, [rdi + GPR(RDX)]
	mov rbx, [rdi + GPR(RBX)]
	mov rbp, [rdi + GPR(RBP)]
	mov rsi, [rdi + GPR(RSI)]
	mov r8,  [rdi + GPR(R8)]
	mov r9,  [rdi + GPR(R9)]
	mov r10, [rdi + GPR(R10)]
	mov r11, [rdi + GPR(R11)]
	mov r12, [rdi + GPR(R12)]
	mov r13, [rdi + GPR(R13)]
	mov r14, [rdi + GPR(R14)]
	mov r15, [rdi + GPR(R15)]
	mov rdi, [rdi + GPR(RDI)]
	iretq
	.size microv_promote, . - microv_promote
	.att_syntax prefix

	.globl microv_tramp_end
microv_tramp_end:
