/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * mvprobe's attack window (see mvprobe_main.c, command `hijack`).
 *
 * mvp_window_run(struct mvp_window *w) runs, with interrupts off, a
 * hypercall on a CPU whose state the root kernel has made hostile: its own
 * IDT (so nothing below depends on Linux's per-CPU data), optionally a fake
 * TR, a fake GS base and attack values for CR0, CR4, DR0 and DR7. It records
 * what the CPU looks like when control comes back, whether the `vmmcall`
 * returned or an exception arrived instead (for example the #UD of a
 * `vmmcall` re-executed after MicroV handed the CPU back), then restores
 * every register it changed and returns.
 *
 * Between loading the fake state and the recovery point the stack pointer
 * does not move, so an exception anywhere in the window can be turned into
 * a jump to mvp_window_recover. Nothing here touches GS-relative data.
 *
 * Offsets: struct mvp_window in mvprobe_main.c (checked there with
 * _Static_assert). Registers: the ABI's order (RAX RCX RDX RBX RSP RBP RSI
 * RDI R8..R15), 8 bytes each.
 */
#include <linux/linkage.h>
#include <asm/alternative.h>
#include <asm/cpufeatures.h>

#define W_PROBE_IDTR	0
#define W_RW_GDTR	16
#define W_ORIG_GDTR	32
#define W_ORIG_IDTR	48
#define W_FAKE_TR	64
#define W_ORIG_TR	72
#define W_TSS_DESC	80
#define W_FAKE_GS	88
#define W_ORIG_GS	96
#define W_ATTACK_CR0	104
#define W_ATTACK_CR4	112
#define W_ATTACK_DR7	120
#define W_ATTACK_DR0	128
#define W_ORIG_CR0	136
#define W_ORIG_CR4	144
#define W_ORIG_DR7	152
#define W_ORIG_DR0	160
#define W_IN		168
#define W_OUT		296
#define W_HOW		424
#define W_EXC_VECTOR	432
#define W_EXC_ERROR	440
#define W_EXC_RIP	448
#define W_TR_AFTER	456
#define W_GS_AFTER	464
#define W_KGS_AFTER	472
#define W_EFER_AFTER	480
#define W_CR0_AFTER	488
#define W_CR4_AFTER	496
#define W_DR7_AFTER	504
#define W_DR0_AFTER	512
#define W_GDTR_AFTER	520
#define W_IDTR_AFTER	536
#define W_SAVED_RSP	552
#define W_FLAGS		560
#define W_EXC_RSP	568

#define FLAG_TR		1
#define FLAG_GS		2
#define FLAG_CRDR	4

#define MSR_GS		0xc0000101
#define MSR_KGS		0xc0000102
#define MSR_EFER	0xc0000080
#define KERNEL_CS	0x10
#define MAX_EXCEPTIONS	8

	.text
	.intel_syntax noprefix

/* Stores RAX..R15 (not RSP) at W_OUT of the window in RDI; the original RDI
 * is at [rsp]. Clobbers RAX after storing it. */
.macro SAVE_GPRS
	mov [rdi + W_OUT + 0], rax
	mov [rdi + W_OUT + 8], rcx
	mov [rdi + W_OUT + 16], rdx
	mov [rdi + W_OUT + 24], rbx
	mov [rdi + W_OUT + 40], rbp
	mov [rdi + W_OUT + 48], rsi
	mov [rdi + W_OUT + 64], r8
	mov [rdi + W_OUT + 72], r9
	mov [rdi + W_OUT + 80], r10
	mov [rdi + W_OUT + 88], r11
	mov [rdi + W_OUT + 96], r12
	mov [rdi + W_OUT + 104], r13
	mov [rdi + W_OUT + 112], r14
	mov [rdi + W_OUT + 120], r15
	mov rax, [rsp]
	mov [rdi + W_OUT + 56], rax
.endm

/* RDX:RAX of MSR \msr into [rdi + \off]. */
.macro SAVE_MSR msr, off
	mov ecx, \msr
	rdmsr
	shl rdx, 32
	or rax, rdx
	mov [rdi + \off], rax
.endm

	.globl mvp_window_run
	.type mvp_window_run, @function
mvp_window_run:
	push rbp
	push rbx
	push r12
	push r13
	push r14
	push r15
	pushfq
	cli
	mov [rip + mvp_cur], rdi
	mov qword ptr [rip + mvp_exc_count], 0
	mov [rdi + W_SAVED_RSP], rsp
	lidt [rdi + W_PROBE_IDTR + 6]

	test qword ptr [rdi + W_FLAGS], FLAG_TR
	jz 1f
	lgdt [rdi + W_RW_GDTR + 6]
	mov rax, [rdi + W_FAKE_TR]
	ltr ax
1:
	test qword ptr [rdi + W_FLAGS], FLAG_GS
	jz 2f
	mov ecx, MSR_GS
	mov eax, [rdi + W_FAKE_GS]
	mov edx, [rdi + W_FAKE_GS + 4]
	wrmsr
2:
	test qword ptr [rdi + W_FLAGS], FLAG_CRDR
	jz 3f
	mov rax, [rdi + W_ATTACK_DR0]
	mov dr0, rax
	mov rax, [rdi + W_ATTACK_DR7]
	mov dr7, rax
	mov rax, [rdi + W_ATTACK_CR0]
	mov cr0, rax
	mov rax, [rdi + W_ATTACK_CR4]
	mov cr4, rax
3:
	mov rcx, [rdi + W_IN + 8]
	mov rdx, [rdi + W_IN + 16]
	mov rbx, [rdi + W_IN + 24]
	mov rbp, [rdi + W_IN + 40]
	mov rsi, [rdi + W_IN + 48]
	mov r8,  [rdi + W_IN + 64]
	mov r9,  [rdi + W_IN + 72]
	mov r10, [rdi + W_IN + 80]
	mov r11, [rdi + W_IN + 88]
	mov r12, [rdi + W_IN + 96]
	mov r13, [rdi + W_IN + 104]
	mov r14, [rdi + W_IN + 112]
	mov r15, [rdi + W_IN + 120]
	mov rax, [rdi + W_IN + 0]
	mov rdi, [rdi + W_IN + 56]
	.globl mvp_window_call
mvp_window_call:
	/* vmmcall on AMD, vmcall on Intel (both three bytes). */
	ALTERNATIVE "vmcall", "vmmcall", X86_FEATURE_VMMCALL
	/* The hypercall returned: record the registers as they came back. */
	push rdi
	mov rdi, [rip + mvp_cur]
	SAVE_GPRS
	mov qword ptr [rdi + W_HOW], 0
	/* fall through (the recovery reloads RSP) */

	.globl mvp_window_recover
mvp_window_recover:
	mov rdi, [rip + mvp_cur]
	mov rsp, [rdi + W_SAVED_RSP]
	str ax
	movzx eax, ax
	mov [rdi + W_TR_AFTER], rax
	SAVE_MSR MSR_GS, W_GS_AFTER
	SAVE_MSR MSR_KGS, W_KGS_AFTER
	SAVE_MSR MSR_EFER, W_EFER_AFTER
	mov rax, cr0
	mov [rdi + W_CR0_AFTER], rax
	mov rax, cr4
	mov [rdi + W_CR4_AFTER], rax
	mov rax, dr7
	mov [rdi + W_DR7_AFTER], rax
	mov rax, dr0
	mov [rdi + W_DR0_AFTER], rax
	sgdt [rdi + W_GDTR_AFTER + 6]
	sidt [rdi + W_IDTR_AFTER + 6]

	/* Put everything back the way Linux had it. */
	mov rax, [rdi + W_ORIG_DR7]
	mov dr7, rax
	mov rax, [rdi + W_ORIG_DR0]
	mov dr0, rax
	mov rax, [rdi + W_ORIG_CR0]
	mov cr0, rax
	mov rax, [rdi + W_ORIG_CR4]
	mov cr4, rax
	mov ecx, MSR_GS
	mov eax, [rdi + W_ORIG_GS]
	mov edx, [rdi + W_ORIG_GS + 4]
	wrmsr
	/* LTR needs an available descriptor and writes the busy bit: do it in
	 * the writable GDT, as Linux's native_load_tr_desc() does. */
	lgdt [rdi + W_RW_GDTR + 6]
	mov rax, [rdi + W_TSS_DESC]
	btr qword ptr [rax], 41
	mov rax, [rdi + W_ORIG_TR]
	ltr ax
	lgdt [rdi + W_ORIG_GDTR + 6]
	lidt [rdi + W_ORIG_IDTR + 6]
	popfq
	pop r15
	pop r14
	pop r13
	pop r12
	pop rbx
	pop rbp
	ret
	.size mvp_window_run, . - mvp_window_run

/* ---- the probe's IDT: 32 exception stubs, 32 bytes apart ---- */
.macro STUB v, has_err
	.balign 32
	.if \has_err == 0
	push 0
	.endif
	push \v
	jmp mvp_exc_common
.endm

	.balign 32
	.globl mvp_exc_stubs
mvp_exc_stubs:
	STUB 0, 0
	STUB 1, 0
	STUB 2, 0
	STUB 3, 0
	STUB 4, 0
	STUB 5, 0
	STUB 6, 0
	STUB 7, 0
	STUB 8, 1
	STUB 9, 0
	STUB 10, 1
	STUB 11, 1
	STUB 12, 1
	STUB 13, 1
	STUB 14, 1
	STUB 15, 0
	STUB 16, 0
	STUB 17, 1
	STUB 18, 0
	STUB 19, 0
	STUB 20, 0
	STUB 21, 1
	STUB 22, 0
	STUB 23, 0
	STUB 24, 0
	STUB 25, 0
	STUB 26, 0
	STUB 27, 0
	STUB 28, 0
	STUB 29, 1
	STUB 30, 1
	STUB 31, 0

/*
 * [rsp]: vector, +8 error code, +16 RIP, +24 CS, +32 RFLAGS, +40 RSP, +48 SS.
 * NMI: counted and resumed. #DB: counted (DR6 kept) and resumed with RF.
 * Anything else: registers and frame recorded, then resumed at
 * mvp_window_recover.
 */
mvp_exc_common:
	cmp qword ptr [rsp], 2
	je .Lnmi
	cmp qword ptr [rsp], 1
	je .Ldb
	inc qword ptr [rip + mvp_exc_count]
	cmp qword ptr [rip + mvp_exc_count], MAX_EXCEPTIONS
	ja .Lstuck
	push rdi
	mov rdi, [rip + mvp_cur]
	SAVE_GPRS
	pop rax
	mov rax, [rsp]
	mov [rdi + W_EXC_VECTOR], rax
	mov rax, [rsp + 8]
	mov [rdi + W_EXC_ERROR], rax
	mov rax, [rsp + 16]
	mov [rdi + W_EXC_RIP], rax
	mov rax, [rsp + 40]
	mov [rdi + W_EXC_RSP], rax
	mov qword ptr [rdi + W_HOW], 1
	lea rax, [rip + mvp_window_recover]
	mov [rsp + 16], rax
	mov qword ptr [rsp + 24], KERNEL_CS
	add rsp, 16
	iretq
.Lnmi:
	inc qword ptr [rip + mvp_nmi_count]
	add rsp, 16
	iretq
.Ldb:
	inc qword ptr [rip + mvp_db_count]
	push rax
	mov rax, dr6
	mov [rip + mvp_last_dr6], rax
	pop rax
	or qword ptr [rsp + 32], 0x10000
	add rsp, 16
	iretq
.Lstuck:
	/* Exceptions keep coming: stop here rather than loop (the machine's
	 * timeout ends the test). */
	cli
	hlt
	jmp .Lstuck

	.att_syntax prefix
