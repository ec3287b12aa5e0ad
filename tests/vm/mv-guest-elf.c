// SPDX-License-Identifier: MIT
/*
 * mv-guest-elf KIND [ARG] > guest.elf: writes a tiny 64-bit guest "kernel"
 * (an ELF64 executable with one PT_LOAD at 16 MiB) for `microv run
 * --kernel`. The VMM enters it in long mode as it enters a vmlinux (CPL 0,
 * interrupts off, the first 4 GiB identity-mapped with 2 MiB pages by the
 * tables at 0x9000, an IDT with limit 0, RSP 0x8ff0; see
 * vmm/src/boot/cpu_state.rs). The machine code is written out by hand
 * below, each instruction with its assembly in a comment.
 *
 * Friendly kinds:
 *   hello    prints "hello from a micro VM" on COM1, then powers off
 *            (ACPI PM1a control, port 0x600 <- 0x34: SLP_EN with S5)
 *   reset    prints "bye", then resets through the i8042 (port 0x64 <- 0xfe)
 *   mmio     stores 0x5a to guest-physical 0xd000_0000 (no device there:
 *            the VMM reports an MMIO write it has no device for), then
 *            prints "after mmio" and powers off
 *   spin     prints "spin: start (cli; jmp $)", then cli; jmp $ (never
 *            exits on its own)
 *   strings  string port I/O (tests/e2e/81): "strings: start", then
 *            rep outsb/outsw/outsd to COM1 (a UART register is a byte:
 *            wider elements send their low byte), outsb without rep,
 *            rep outsb downwards (std), across a 4 KiB page boundary,
 *            words with one across a boundary, a count of 0, 32-bit
 *            addresses, each printing its own `strings: ...` line; rep
 *            insb and insb from the UART's scratch register, printed
 *            back as "strings: rep insb: ssss!"; "strings: end". A line
 *            "strings: ... is wrong" says RSI, RDI or RCX is not what the
 *            CPU leaves.
 *
 * Hostile kinds (tests/e2e/84-hostile-guests.sh). Each prints "KIND: start"
 * first and, if it gets that far, "KIND: end" before it powers off. Those
 * with an IDT catch every exception they do not expect with a stub that
 * prints "unexpected exception, vector N" and powers off.
 *   triple      loads an IDT with limit 0, then int3: #BP, #GP, #DF, a
 *               triple fault (never prints "triple: survived int3")
 *   hypercalls  vmmcall with RAX = every management call of
 *               docs/hypercall-abi.md (R10 a made-up odd handle, R11 = 1,
 *               R12 = R13 = 0): one line `hc RAX NAME status=S` each; then
 *               id.version and id.capabilities with their results, an
 *               unknown call, flag bits set, R10 after a refused call, and
 *               a foreign vmmcall (RAX = 0) and vmcall, each of which
 *               should raise #UD ("#UD at RIP" from the handler)
  *   svm         vmrun, vmload, vmsave, stgi, clgi, skinit, invlpga (RAX =
 *               ECX = 0): `NAME: ` and then the #UD handler's "#UD at RIP"
 *   readfar PA  its own page tables (the boot tables plus 2 MiB identity
 *               mappings above 4 GiB), then 8-byte reads at guest-physical
 *               0x4000_0000, 0x1_0000_0000, 0x7f_ffff_f000, PA and PA + 8:
 *               `read ADDR = VALUE` each (16 hex digits)
 *   msrs        with a #GP handler: wrmsr 0 to every MSR in 0–0x1FFF,
 *               0xC000_0000–0xC000_1FFF (but EFER), 0xC001_0000–0xC001_1FFF
 *               and 0x4000_0000–0x4000_00FF, printing `wrmsr ok MSR` for
 *               each one that did not fault and then `msr sweep: faulted=N
 *               accepted=M` (hex); then named platform MSRs written with
 *               hostile values and read (`wrmsr NAME=V: #GP|ok`,
 *               `rdmsr NAME: #GP|ok VALUE`)
 *   ports       out of 0 (byte) to every port 0–0xFFFF but COM1
 *               (0x3f8–0x3ff), then in (byte) from every port: `in PORT =
 *               VALUE` for each that did not read 0xff, and `ports: out N,
 *               in N, not ff N` (hex)
 *   badcr3-ff   loads CR3 with a page full of 0xff bytes (every entry
 *               present with reserved bits set): #PF, then a triple fault
 *   badcr3-far  loads CR3 with guest-physical 0x7f_0000_0000 (no RAM): the
 *               next fetch's table walk leaves guest RAM
 *   ipi-cli     enables the x2APIC (SVR 0x1ff), and with interrupts off
 *               sends itself 0x10000 self-IPIs (MSR 0x83f, vectors
 *               0x20–0xff in turn); then sti; nop; cli delivers what is
 *               pending to a handler that counts and EOIs: `ipi-cli:
 *               delivered N` (hex: 0xe0, each vector once), then
 *               `ipi-cli: storming` and self-IPIs with interrupts off
 *               forever
 *   ipi-sti     enables the x2APIC; a handler for vector 0x40 EOIs, sends
 *               0x40 to itself again and counts, printing `tick N` every
 *               0x1000 interrupts; the main code sends the first one, then
 *               sti and loops (hlt) forever: an endless interrupt storm
 *   cpuid       CPUID 0x40000000 (`cpuid 40000000 eax=.. ebx=7263694DMicr
 *               ...`: each register in hex, then as text), 0x40000010, 1,
 *               0x80000001 and 0x8000000a; then rdtscp (` ecx=` what it
 *               left in ECX) and rdpid (` rax=`), which read the guest's
 *               own TSC_AUX, or raise #UD where the CPU lacks them
 *   tsc-aux [N] with #UD and #GP handlers: `before rdpid: rax=..` and
 *               `before rdtscp: ecx=..` (TSC_AUX as the guest found it),
 *               `rdmsr TSC_AUX`, `wrmsr TSC_AUX=100000005` and `rdmsr
 *               TSC_AUX` (bits 63:32 dropped, as on AMD: 5), `wrmsr
 *               TSC_AUX=C0FFEE`, `rdmsr
 *               TSC_AUX`, `after rdpid`/`after rdtscp`; then N rounds
 *               (default 1000) of an `out` to COM1's scratch register
 *               (0x3ff: an exit to the VMM, so the root runs in between),
 *               rdpid (if CPUID 7 ECX bit 22 says the CPU has it) and
 *               rdtscp: `tsc-aux rounds: N mismatches=M` counts the reads
 *               that were not 0xC0FFEE
 *   ipi-cross   with interrupts off, every kind of x2APIC ICR write (fixed
 *               to the APIC ID in EDX, all-but-self, all-including-self,
 *               INIT, STARTUP, NMI) to every APIC ID 0-255, forever; prints
 *               `ipi-cross: storming`, then `ipi-cross: rounds N` every 4
 *               rounds (another VM's vCPU has APIC ID 0 too)
 *   ipi-listen  with interrupts off, ORs together the x2APIC's IRR (MSRs
 *               0x820-0x827) read 0x800 times: `ipi-listen: irr=N`; then
 *               sti; nop; cli, where a pending vector would print
 *               `ipi-listen: interrupt` (and an NMI the unexpected-vector
 *               line)
 *   efer        rdmsr EFER, wrmsr EFER = 0 (long mode, paging on: #GP on
 *               hardware, LME cannot be cleared with CR0.PG set), rdmsr
 *               EFER, each as `rdmsr EFER: ok VALUE` / `wrmsr EFER=0: #GP|ok`
 *   xsetbv      sets CR4.OSXSAVE, then xgetbv and xsetbv of XCR0 = 1
 *               (valid), 5 (AVX without SSE), 0, all ones, XCR1 = 1, and
 *               XCR0 = 3 (valid): `xsetbv XCRn=V: #GP|ok`, `xgetbv XCR0=V`
 *   nmi         self-NMIs through the x2APIC's ICR: the handler counts
 *               them and, the first time, sends another and spins (it must
 *               wait for the handler's IRET: never nested); one more with
 *               interrupts off; `nmi: delivered 3 nested 0` (in hex)
 *   halt-cli    cli, then hlt forever (nothing can wake it)
 *   halt-sti    sti, then hlt forever (no timer armed, nothing sends it an
 *               interrupt)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_ADDR 0x1000000ull

/*
 * The image, loaded at LOAD_ADDR (identity-mapped: virtual = physical):
 *   +0x0000  code
 *   +0x8000  IDT (256 gates)
 *   +0x9000  our IDTR (limit 0xfff, base the IDT), +0x9010 one with limit 0
 *   +0x9100  variables (qwords)
 *   +0xa000  page-table pages (readfar), the page of 0xff bytes (badcr3-ff)
 */
#define CODE_MAX 0x8000u
#define IDT_OFF 0x8000u
#define IDTR_OFF 0x9000u
#define IDTR0_OFF 0x9010u
#define VAR_IRQ_OFF 0x9100u
#define PT_OFF 0xa000u
#define IMAGE_MAX 0x10000u

#define IDT (LOAD_ADDR + IDT_OFF)
#define IDTR (LOAD_ADDR + IDTR_OFF)
#define IDTR0 (LOAD_ADDR + IDTR0_OFF)
#define VAR_IRQ (LOAD_ADDR + VAR_IRQ_OFF)

/* The boot tables (vmm/src/boot/layout.rs): four page directories here. */
#define BOOT_PD 0xb000ull

#define GUEST_TOOL "mv-guest-elf"
#define IMAGE_BYTES IMAGE_MAX
#include "guest-code.h"

static size_t image_len; /* bytes of the image written out */

static void imm64(uint64_t v)
{
	emit(&v, 8);
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Marks bytes from image offset `off` as part of the file. */
static void used(size_t off, size_t n)
{
	if (off + n > IMAGE_MAX)
		die("the image does not fit");
	if (off + n > image_len)
		image_len = off + n;
}

/* ---- instructions ------------------------------------------------------ */

enum reg { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };

/* Condition codes for jcc (low nibble of 0x0f 0x8c). */
enum cc { CC_B = 0x2, CC_AE = 0x3, CC_E = 0x4, CC_NE = 0x5, CC_BE = 0x6, CC_A = 0x7 };

/* jmp target: e9 rel32 */
static void jmp(uint64_t target)
{
	byte(0xe9);
	rel32_to(target);
}

/* jCC target: 0f 8c rel32 */
static void jcc(enum cc cc, uint64_t target)
{
	byte(0x0f);
	byte(0x80 | cc);
	rel32_to(target);
}

/* A forward jump (jmp rel32, or jCC rel32 when cc >= 0) to be landed. */
static size_t jump_fwd(int cc)
{
	size_t at;

	if (cc >= 0) {
		byte(0x0f);
		byte(0x80 | cc);
	} else {
		byte(0xe9);
	}
	at = len;
	imm32(0);
	return at;
}

/* Lands the forward jump whose rel32 is at `at` here. */
static void land(size_t at)
{
	int32_t rel = (int32_t)(len - (at + 4));

	memcpy(image + at, &rel, 4);
}

/* mov r64, imm64: REX.W(+B) b8+r imm64 */
static void mov_imm64(enum reg r, uint64_t v)
{
	byte(0x48 | (r >= R8));
	byte(0xb8 | (r & 7));
	imm64(v);
}

/* mov r32, imm32 (zero-extends): (41) b8+r imm32 */
static void mov_imm32(enum reg r, uint32_t v)
{
	if (r >= R8)
		byte(0x41);
	byte(0xb8 | (r & 7));
	imm32(v);
}

/* lidt [abs32]: 0f 01 1c 25 disp32 */
static void lidt(uint64_t at)
{
	const unsigned char op[] = { 0x0f, 0x01, 0x1c, 0x25 };

	emit(op, sizeof(op));
	imm32((uint32_t)at);
}

/* mov rax, [abs32]: 48 8b 04 25 disp32 */
static void load_rax(uint64_t at)
{
	const unsigned char op[] = { 0x48, 0x8b, 0x04, 0x25 };

	emit(op, sizeof(op));
	imm32((uint32_t)at);
}

/* inc qword [abs32]: 48 ff 04 25 disp32 */
static void inc_var(uint64_t at)
{
	const unsigned char op[] = { 0x48, 0xff, 0x04, 0x25 };

	emit(op, sizeof(op));
	imm32((uint32_t)at);
}

/* wrmsr: 0f 30 */
static void wrmsr(void)
{
	byte(0x0f);
	byte(0x30);
}

/* rdmsr: 0f 32 */
static void rdmsr(void)
{
	byte(0x0f);
	byte(0x32);
}

/* vmmcall: 0f 01 d9 */
static void vmmcall(void)
{
	const unsigned char op[] = { 0x0f, 0x01, 0xd9 };

	emit(op, sizeof(op));
}

/* push rax (50); push rdx (52); print; pop rdx (5a); pop rax (58) */
static void say(const char *s)
{
	byte(0x50);
	byte(0x52);
	print(s);
	byte(0x5a);
	byte(0x58);
}

/* say() of a formatted line: FMT takes a number, then a string */
static void sayf(const char *fmt, unsigned long long a, const char *b)
{
	char buf[160];

	snprintf(buf, sizeof(buf), fmt, a, b);
	say(buf);
}

/* say() of A then B */
static void say2(const char *a, const char *b)
{
	char buf[160];

	snprintf(buf, sizeof(buf), "%s%s", a, b);
	say(buf);
}

/* mov dx, port; mov al, value; out dx, al; hlt; jmp $-1 */
static void out_then_halt(uint16_t port, uint8_t value)
{
	byte(0x66);
	byte(0xba);
	emit(&port, 2);
	byte(0xb0);
	byte(value);
	byte(0xee);
	byte(0xf4);
	byte(0xeb);
	byte(0xfd);
}

static void power_off(void)
{
	out_then_halt(0x600, 0x34);
}

/* ---- subroutines and handlers ------------------------------------------ */

static uint64_t hex64_at, hex32_at, put4_at, unexpected_at, ud_at, gp_at, gp3_at;

/*
 * hex64: prints RAX as 16 hex digits on COM1; hex32: EAX as 8. Every
 * register is kept (flags are not).
 */
static void emit_hex(void)
{
	/* push rax; push rbx; push rcx; push rdx */
	const unsigned char save[] = { 0x50, 0x53, 0x51, 0x52 };
	/* mov rbx, rax */
	const unsigned char rbx_rax[] = { 0x48, 0x89, 0xc3 };
	size_t to_loop;

	hex64_at = here();
	emit(save, sizeof(save));
	emit(rbx_rax, sizeof(rbx_rax));
	mov_imm32(RCX, 16);		/* mov ecx, 16 */
	to_loop = jump_fwd(-1);		/* jmp loop */
	hex32_at = here();
	emit(save, sizeof(save));
	emit(rbx_rax, sizeof(rbx_rax));
	{
		const unsigned char shl[] = { 0x48, 0xc1, 0xe3, 0x20 }; /* shl rbx, 32 */

		emit(shl, sizeof(shl));
	}
	mov_imm32(RCX, 8);		/* mov ecx, 8 */
	land(to_loop);
	emit(hex_digits_and_return, sizeof(hex_digits_and_return));
}

/* put4: prints EAX's four bytes as characters, lowest first; keeps registers. */
static void emit_put4(void)
{
	const unsigned char code[] = {
		0x50, 0x52,		/* push rax; push rdx */
		0x66, 0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
		0xee,			/* out dx, al */
		0xc1, 0xe8, 0x08,	/* shr eax, 8 */
		0xee,			/* out dx, al */
		0xc1, 0xe8, 0x08,	/* shr eax, 8 */
		0xee,			/* out dx, al */
		0xc1, 0xe8, 0x08,	/* shr eax, 8 */
		0xee,			/* out dx, al */
		0x5a, 0x58,		/* pop rdx; pop rax */
		0xc3,			/* ret */
	};

	put4_at = here();
	emit(code, sizeof(code));
}

/*
 * unexpected: reached from a stub `push VECTOR; jmp unexpected`; prints the
 * vector and powers off.
 */
static void emit_unexpected(void)
{
	unexpected_at = here();
	say("unexpected exception, vector ");
	byte(0x58);			/* pop rax */
	call(hex32_at);			/* call hex32 */
	say("\n");
	power_off();
}

/*
 * #UD (no error code): prints "#UD at RIP", moves the saved RIP past a
 * 3-byte instruction (every one this file makes fault so is 3 bytes), and
 * returns.
 */
static void emit_ud_handler(void)
{
	const unsigned char code[] = {
		0x50,				/* push rax */
		0x48, 0x8b, 0x44, 0x24, 0x08,	/* mov rax, [rsp + 8] (the saved RIP) */
	};
	const unsigned char tail[] = {
		0x58,				/* pop rax */
		0x48, 0x83, 0x04, 0x24, 0x03,	/* add qword [rsp], 3 */
		0x48, 0xcf,			/* iretq */
	};

	ud_at = here();
	say("#UD at ");
	emit(code, sizeof(code));
	call(hex64_at);			/* call hex64 */
	emit(tail, sizeof(tail));
}

/*
 * #GP (with an error code), for the MSR sweep: sets R15 = 1, moves the
 * saved RIP past the 2-byte rdmsr/wrmsr, drops the error code, returns.
 * gp3: the same past a 3-byte instruction.
 */
static void emit_gp_handler(void)
{
	const unsigned char code[] = {
		0x41, 0xbf, 0x01, 0x00, 0x00, 0x00, /* mov r15d, 1 */
		0x48, 0x83, 0x44, 0x24, 0x08, 0x02, /* add qword [rsp + 8], 2 */
		0x48, 0x83, 0xc4, 0x08,		    /* add rsp, 8 */
		0x48, 0xcf,			    /* iretq */
	};

	gp_at = here();
	emit(code, sizeof(code));
	/* the same for a 3-byte instruction (xsetbv): add qword [rsp + 8], 3 */
	gp3_at = here();
	emit(code, sizeof(code));
	image[gp3_at - LOAD_ADDR + 11] = 3;
}

/* An interrupt gate (present, DPL 0, type 0xe) for `vector` to `handler`. */
static void gate(unsigned vector, uint64_t handler)
{
	unsigned char *g = image + IDT_OFF + vector * 16;

	memset(g, 0, 16);
	g[0] = handler & 0xff;
	g[1] = (handler >> 8) & 0xff;
	g[2] = 0x10;			/* selector: the boot code segment */
	g[5] = 0x8e;
	g[6] = (handler >> 16) & 0xff;
	g[7] = (handler >> 24) & 0xff;
	memcpy(g + 8, (const unsigned char *)&handler + 4, 4);
}

/*
 * Starts a hostile kind: jmp over the subroutines, the subroutines, stubs
 * for exceptions 0–31 (`push VECTOR; jmp unexpected`), the IDT and both
 * IDTRs in the image; then "KIND: start".
 */
static void prologue(const char *kind)
{
	size_t over = jump_fwd(-1);	/* jmp main */
	unsigned char *idtr = image + IDTR_OFF;
	unsigned v;

	emit_hex();
	emit_put4();
	emit_unexpected();
	emit_ud_handler();
	emit_gp_handler();
	for (v = 0; v < 32; v++) {
		gate(v, here());
		byte(0x6a);		/* push VECTOR */
		byte((unsigned char)v);
		jmp(unexpected_at);	/* jmp unexpected */
	}
	used(IDT_OFF, 4096);
	idtr[0] = 0xff;			/* limit 0xfff: 256 gates */
	idtr[1] = 0x0f;
	put64(idtr + 2, IDT);
	used(IDTR_OFF, 10);
	used(IDTR0_OFF, 10);		/* limit 0, base 0 */
	used(VAR_IRQ_OFF, 8);
	land(over);
	say2(kind, ": start\n");
}

/* "KIND: end", then power off. */
static void epilogue(const char *kind)
{
	say2(kind, ": end\n");
	power_off();
}

/* ---- page tables (readfar, badcr3-ff) ---------------------------------- */

static size_t pt_next = PT_OFF;

/* A zeroed page of the image: its guest-physical address. */
static uint64_t pt_alloc(void)
{
	size_t off = pt_next;

	used(off, 4096);
	pt_next += 4096;
	memset(image + off, 0, 4096);
	return LOAD_ADDR + off;
}

static unsigned char *pt_entry(uint64_t table, uint64_t index)
{
	return image + (table - LOAD_ADDR) + index * 8;
}

/*
 * A PML4 whose first 4 GiB are the boot tables' page directories; the
 * table's address.
 */
static uint64_t pt_new(void)
{
	uint64_t pml4 = pt_alloc(), pdpt = pt_alloc();
	unsigned i;

	put64(pt_entry(pml4, 0), pdpt | 3);	/* present, writable */
	for (i = 0; i < 4; i++)
		put64(pt_entry(pdpt, i), (BOOT_PD + i * 4096) | 3);
	return pml4;
}

/* Identity-maps the 2 MiB around `addr` (at or above 4 GiB) under `pml4`. */
static void pt_map(uint64_t pml4, uint64_t addr)
{
	unsigned char *e = pt_entry(pml4, (addr >> 39) & 511);

	if (addr < (4ull << 30))
		return;			/* the boot tables map it */
	if (!get64(e))
		put64(e, pt_alloc() | 3);
	e = pt_entry(get64(e) & ~0xfffull, (addr >> 30) & 511);
	if (!get64(e))
		put64(e, pt_alloc() | 3);
	e = pt_entry(get64(e) & ~0xfffull, (addr >> 21) & 511);
	put64(e, (addr & ~0x1fffffull) | 0x83);	/* present, writable, 2 MiB */
}

/* ---- the kinds --------------------------------------------------------- */

struct call {
	uint64_t rax;
	const char *name;
};

static const struct call management[] = {
	{ 0x764D000000010000ull, "handle.open" },
	{ 0x764D000000010001ull, "handle.close" },
	{ 0x764D000000020000ull, "debug.out" },
	{ 0x764D000000030000ull, "pp.id" },
	{ 0x764D000000030001ull, "pp.count" },
	{ 0x764D000000030002ull, "pp.exit_count" },
	{ 0x764D000000040000ull, "hv.memory" },
	{ 0x764D000000040001ull, "hv.stop_pp" },
	{ 0x764D000000040002ull, "hv.test_fault" },
	{ 0x764D000000050000ull, "vm.create" },
	{ 0x764D000000050001ull, "vm.destroy" },
	{ 0x764D000000050002ull, "vm.map_memory" },
	{ 0x764D000000050003ull, "vm.unmap_memory" },
	{ 0x764D000000060000ull, "vcpu.create" },
	{ 0x764D000000060001ull, "vcpu.destroy" },
	{ 0x764D000000070000ull, "run.run" },
	{ 0x764D000000070001ull, "run.get_registers" },
	{ 0x764D000000070002ull, "run.set_registers" },
};

/* A made-up handle (handles are odd) in R10 of refused calls. */
#define FAKE_HANDLE 0x5eed5eed5eed5eedull

static void kind_triple(void)
{
	prologue("triple");
	lidt(IDTR0);			/* lidt [IDTR0]: limit 0 */
	byte(0xcc);			/* int3 */
	say("triple: survived int3\n");
	epilogue("triple");
}

/* vmmcall with RAX = `rax`, R10 = `r10`, R11 = 1, R12 = R13 = 0. */
static void hypercall(uint64_t rax, uint64_t r10)
{
	mov_imm64(RAX, rax);		/* mov rax, CALL */
	mov_imm64(R10, r10);		/* mov r10, R10 */
	mov_imm32(R11, 1);		/* mov r11d, 1 */
	mov_imm32(R12, 0);		/* mov r12d, 0 */
	mov_imm32(R13, 0);		/* mov r13d, 0 */
	vmmcall();			/* vmmcall */
}

/* mov rax, r10 (4c 89 d0) / r11 (4c 89 d8); call hex64 */
static void print_r10(void)
{
	const unsigned char op[] = { 0x4c, 0x89, 0xd0 };

	emit(op, sizeof(op));
	call(hex64_at);
}

static void print_r11(void)
{
	const unsigned char op[] = { 0x4c, 0x89, 0xd8 };

	emit(op, sizeof(op));
	call(hex64_at);
}

static void kind_hypercalls(void)
{
	size_t i;

	prologue("hypercalls");
	lidt(IDTR);			/* lidt [IDTR] */
	gate(6, ud_at);
	for (i = 0; i < sizeof(management) / sizeof(management[0]); i++) {
		hypercall(management[i].rax, FAKE_HANDLE);
		sayf("hc %016llX %s status=", management[i].rax, management[i].name);
		call(hex64_at);		/* call hex64 (RAX: the status) */
		say("\n");
	}
	/* A refused call leaves R10–R13 as they were. */
	hypercall(0x764D000000040001ull, FAKE_HANDLE);
	say("hv.stop_pp refused: r10=");
	print_r10();
	say(" r11=");
	print_r11();
	say("\n");
	hypercall(0x764D000000000000ull, 0);
	say("id.version status=");
	call(hex64_at);
	say(" r10=");
	print_r10();
	say(" r11=");
	print_r11();
	say("\n");
	hypercall(0x764D000000000001ull, 0);
	say("id.capabilities status=");
	call(hex64_at);
	say(" r10=");
	print_r10();
	say("\n");
	hypercall(0x764D00000FFF0000ull, 0);
	say("unknown group status=");
	call(hex64_at);
	say("\n");
	hypercall(0x764D000100040001ull, 0);
	say("flag bits status=");
	call(hex64_at);
	say("\n");
	say("foreign vmmcall rax=0: ");
	hypercall(0, 0);
	say("\n");
	say("vmcall: ");
	{
		const unsigned char op[] = { 0x0f, 0x01, 0xc1 }; /* vmcall */

		emit(op, sizeof(op));
	}
	say("\n");
	epilogue("hypercalls");
}

static void kind_svm(void)
{
	static const struct {
		unsigned char modrm;
		const char *name;
	} insns[] = {
		{ 0xd8, "vmrun" }, { 0xda, "vmload" }, { 0xdb, "vmsave" }, { 0xdc, "stgi" },
		{ 0xdd, "clgi" },  { 0xde, "skinit" }, { 0xdf, "invlpga" },
	};
	size_t i;

	prologue("svm");
	lidt(IDTR);
	gate(6, ud_at);
	for (i = 0; i < sizeof(insns) / sizeof(insns[0]); i++) {
		say2(insns[i].name, ": ");
		mov_imm32(RAX, 0);	/* mov eax, 0 */
		mov_imm32(RCX, 0);	/* mov ecx, 0 */
		byte(0x0f);		/* vmrun / vmload / ...: 0f 01 MODRM */
		byte(0x01);
		byte(insns[i].modrm);
		say("\n");
	}
	epilogue("svm");
}

static void kind_readfar(uint64_t pa)
{
	const uint64_t addrs[] = { 0x40000000ull, 0x100000000ull, 0x7ffffff000ull, pa, pa + 8 };
	const unsigned char deref[] = { 0x48, 0x8b, 0x00 };		/* mov rax, [rax] */
	const unsigned char to_cr3[] = { 0x0f, 0x22, 0xd8 };		/* mov cr3, rax */
	uint64_t pml4;
	size_t i;

	pml4 = pt_new();
	for (i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++)
		pt_map(pml4, addrs[i]);
	prologue("readfar");
	mov_imm64(RAX, pml4);		/* mov rax, PML4 */
	emit(to_cr3, sizeof(to_cr3));
	for (i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		sayf("read %016llX = %s", addrs[i], "");
		mov_imm64(RAX, addrs[i]);	/* mov rax, ADDR */
		emit(deref, sizeof(deref));
		call(hex64_at);
		say("\n");
	}
	epilogue("readfar");
}

/* wrmsr of EDX:EAX = 0 to every MSR in [lo, hi) but `skip`; see kind_msrs. */
static void msr_sweep(uint32_t lo, uint32_t hi, uint32_t skip)
{
	const unsigned char clear[] = {
		0x31, 0xc0,		/* xor eax, eax */
		0x31, 0xd2,		/* xor edx, edx */
		0x45, 0x31, 0xff,	/* xor r15d, r15d */
	};
	const unsigned char test_r15[] = { 0x45, 0x85, 0xff };	/* test r15d, r15d */
	const unsigned char inc_r14[] = { 0x49, 0xff, 0xc6 };	/* inc r14 */
	const unsigned char inc_r13[] = { 0x49, 0xff, 0xc5 };	/* inc r13 */
	const unsigned char eax_ecx[] = { 0x89, 0xc8 };		/* mov eax, ecx */
	const unsigned char inc_ecx[] = { 0xff, 0xc1 };		/* inc ecx */
	uint64_t top;
	size_t to_next, faulted, to_next2;

	mov_imm32(RCX, lo);		/* mov ecx, LO */
	top = here();
	byte(0x81);			/* cmp ecx, SKIP */
	byte(0xf9);
	imm32(skip);
	to_next = jump_fwd(CC_E);	/* je next */
	emit(clear, sizeof(clear));
	wrmsr();			/* wrmsr */
	emit(test_r15, sizeof(test_r15));
	faulted = jump_fwd(CC_NE);	/* jnz faulted */
	emit(inc_r13, sizeof(inc_r13));
	say("wrmsr ok ");
	emit(eax_ecx, sizeof(eax_ecx));
	call(hex32_at);
	say("\n");
	to_next2 = jump_fwd(-1);	/* jmp next */
	land(faulted);			/* faulted: */
	emit(inc_r14, sizeof(inc_r14));
	land(to_next);			/* next: */
	land(to_next2);
	emit(inc_ecx, sizeof(inc_ecx));
	byte(0x81);			/* cmp ecx, HI */
	byte(0xf9);
	imm32(hi);
	jcc(CC_NE, top);		/* jne top */
}

/* `wrmsr NAME=VALUE: #GP|ok` */
static void msr_write_named(uint32_t msr, uint64_t value, const char *name)
{
	const unsigned char clear_r15[] = { 0x45, 0x31, 0xff };	/* xor r15d, r15d */
	const unsigned char test_r15[] = { 0x45, 0x85, 0xff };	/* test r15d, r15d */
	size_t ok, done;
	char buf[96];

	snprintf(buf, sizeof(buf), "wrmsr %s=%llx: ", name, (unsigned long long)value);
	say(buf);
	mov_imm32(RCX, msr);		/* mov ecx, MSR */
	mov_imm32(RAX, (uint32_t)value);	/* mov eax, low half */
	mov_imm32(RDX, (uint32_t)(value >> 32));	/* mov edx, high half */
	emit(clear_r15, sizeof(clear_r15));
	wrmsr();
	emit(test_r15, sizeof(test_r15));
	ok = jump_fwd(CC_E);		/* jz ok */
	say("#GP\n");
	done = jump_fwd(-1);		/* jmp done */
	land(ok);
	say("ok\n");
	land(done);
}

/* `rdmsr NAME: #GP|ok VALUE` */
static void msr_read_named(uint32_t msr, const char *name)
{
	const unsigned char clear_r15[] = { 0x45, 0x31, 0xff };	/* xor r15d, r15d */
	const unsigned char test_r15[] = { 0x45, 0x85, 0xff };	/* test r15d, r15d */
	const unsigned char join[] = {
		0x48, 0xc1, 0xe2, 0x20, /* shl rdx, 32 */
		0x89, 0xc0,		/* mov eax, eax */
		0x48, 0x09, 0xd0,	/* or rax, rdx */
	};
	size_t ok, done;

	say2("rdmsr ", name);
	say(": ");
	mov_imm32(RCX, msr);		/* mov ecx, MSR */
	emit(clear_r15, sizeof(clear_r15));
	rdmsr();
	emit(test_r15, sizeof(test_r15));
	ok = jump_fwd(CC_E);		/* jz ok */
	say("#GP\n");
	done = jump_fwd(-1);		/* jmp done */
	land(ok);
	emit(join, sizeof(join));
	say("ok ");
	call(hex64_at);
	say("\n");
	land(done);
}

static void kind_msrs(void)
{
	const unsigned char clear[] = {
		0x4d, 0x31, 0xf6,	/* xor r14, r14: MSRs that faulted */
		0x4d, 0x31, 0xed,	/* xor r13, r13: MSRs that did not */
	};
	const unsigned char r14_rax[] = { 0x4c, 0x89, 0xf0 };	/* mov rax, r14 */
	const unsigned char r13_rax[] = { 0x4c, 0x89, 0xe8 };	/* mov rax, r13 */

	prologue("msrs");
	lidt(IDTR);
	gate(13, gp_at);
	emit(clear, sizeof(clear));
	msr_sweep(0, 0x2000, 0xffffffffu);
	msr_sweep(0xc0000000u, 0xc0002000u, 0xc0000080u); /* but EFER (below) */
	msr_sweep(0xc0010000u, 0xc0012000u, 0xffffffffu);
	msr_sweep(0x40000000u, 0x40000100u, 0xffffffffu);
	say("msr sweep: faulted=");
	emit(r14_rax, sizeof(r14_rax));
	call(hex64_at);
	say(" accepted=");
	emit(r13_rax, sizeof(r13_rax));
	call(hex64_at);
	say("\n");
	msr_write_named(0x1b, 0xfed00d00ull, "APIC_BASE");	/* another base, EN|EXTD|BSP */
	msr_write_named(0xc0000080u, 0x1d01ull, "EFER");	/* SVME|LMA|LME|SCE */
	msr_write_named(0xc0010117u, 0x1000ull, "VM_HSAVE_PA");
	msr_write_named(0xc0010114u, 0x18ull, "VM_CR");		/* LOCK|SVMDIS */
	msr_write_named(0xc0010010u, 0ull, "SYSCFG");
	msr_write_named(0xc001001au, 0x1000000ull, "TOP_MEM");
	msr_write_named(0xc001001du, 0ull, "TOP_MEM2");
	msr_write_named(0xc0010015u, 0ull, "HWCR");
	msr_write_named(0x2ffu, 0ull, "MTRR_DEF_TYPE");
	msr_write_named(0xc0010020u, 0x1000ull, "PATCH_LOADER");
	msr_write_named(0x10u, 0ull, "TSC");
	msr_read_named(0xc0010117u, "VM_HSAVE_PA");
	msr_read_named(0xc0010114u, "VM_CR");
	msr_read_named(0xc0010010u, "SYSCFG");
	msr_read_named(0xc001001au, "TOP_MEM");
	msr_read_named(0xc0000080u, "EFER");
	msr_read_named(0x1bu, "APIC_BASE");
	epilogue("msrs");
}

static void kind_ports(void)
{
	const unsigned char loop_out[] = {
		0x31, 0xc9,			/*     xor ecx, ecx */
		0x31, 0xc0,			/*     xor eax, eax */
		0x81, 0xf9, 0xf8, 0x03, 0x00, 0x00, /* 1: cmp ecx, 0x3f8 */
		0x72, 0x08,			/*     jb 2f */
		0x81, 0xf9, 0xff, 0x03, 0x00, 0x00, /*     cmp ecx, 0x3ff */
		0x76, 0x06,			/*     jbe 3f (COM1: skip) */
		0x89, 0xca,			/* 2:  mov edx, ecx */
		0xee,				/*     out dx, al */
		0x49, 0xff, 0xc6,		/*     inc r14 */
		0xff, 0xc1,			/* 3:  inc ecx */
		0x81, 0xf9, 0x00, 0x00, 0x01, 0x00, /*     cmp ecx, 0x10000 */
		0x75, 0xe0,			/*     jne 1b */
	};
	const unsigned char clear[] = {
		0x4d, 0x31, 0xf6,		/* xor r14, r14: outs */
		0x4d, 0x31, 0xed,		/* xor r13, r13: ins */
		0x4d, 0x31, 0xe4,		/* xor r12, r12: ins that did not read 0xff */
	};
	const unsigned char in_head[] = {
		0x31, 0xc9,			/*     xor ecx, ecx */
		0x89, 0xca,			/* 1:  mov edx, ecx */
		0xec,				/*     in al, dx */
		0x49, 0xff, 0xc5,		/*     inc r13 */
		0x3c, 0xff,			/*     cmp al, 0xff */
	};
	const unsigned char in_seen[] = {
		0x49, 0xff, 0xc4,		/*     inc r12 */
		0x0f, 0xb6, 0xd8,		/*     movzx ebx, al */
	};
	const unsigned char ebx_eax[] = { 0x89, 0xd8 };	/* mov eax, ebx */
	const unsigned char ecx_eax[] = { 0x89, 0xc8 };	/* mov eax, ecx */
	const unsigned char in_tail_cmp[] = {
		0xff, 0xc1,			/* 2:  inc ecx */
		0x81, 0xf9, 0x00, 0x00, 0x01, 0x00, /*     cmp ecx, 0x10000 */
	};
	const unsigned char r14_rax[] = { 0x4c, 0x89, 0xf0 };	/* mov rax, r14 */
	const unsigned char r13_rax[] = { 0x4c, 0x89, 0xe8 };	/* mov rax, r13 */
	const unsigned char r12_rax[] = { 0x4c, 0x89, 0xe0 };	/* mov rax, r12 */
	uint64_t top;
	size_t skip;

	prologue("ports");
	emit(clear, sizeof(clear));
	emit(loop_out, sizeof(loop_out));
	say("ports: every out done\n");
	top = here() + 2;		/* label 1 of in_head */
	emit(in_head, sizeof(in_head));
	skip = jump_fwd(CC_E);		/* je 2f */
	emit(in_seen, sizeof(in_seen));
	say("in ");
	emit(ecx_eax, sizeof(ecx_eax));
	call(hex32_at);			/* the port */
	say(" = ");
	emit(ebx_eax, sizeof(ebx_eax));
	call(hex32_at);			/* the value */
	say("\n");
	land(skip);
	emit(in_tail_cmp, sizeof(in_tail_cmp));
	jcc(CC_NE, top);		/* jne 1b */
	say("ports: out ");
	emit(r14_rax, sizeof(r14_rax));
	call(hex32_at);
	say(", in ");
	emit(r13_rax, sizeof(r13_rax));
	call(hex32_at);
	say(", not ff ");
	emit(r12_rax, sizeof(r12_rax));
	call(hex32_at);
	say("\n");
	epilogue("ports");
}

static void kind_badcr3(const char *kind, uint64_t cr3)
{
	const unsigned char to_cr3[] = { 0x0f, 0x22, 0xd8 };	/* mov cr3, rax */

	prologue(kind);
	mov_imm64(RAX, cr3);		/* mov rax, CR3 */
	emit(to_cr3, sizeof(to_cr3));
	say2(kind, ": survived\n");
	epilogue(kind);
}

/* x2APIC on (it is in x2APIC mode from reset): SVR = 0x1ff (enabled, spurious 0xff). */
static void apic_enable(void)
{
	mov_imm32(RCX, 0x80f);		/* mov ecx, 0x80f (SVR) */
	mov_imm32(RAX, 0x1ff);		/* mov eax, 0x1ff */
	mov_imm32(RDX, 0);		/* mov edx, 0 */
	wrmsr();
}

/*
 * Self-IPIs of vectors 0x20–0xff in turn, with interrupts off: `count`
 * of them, or forever (count 0).
 */
static void ipi_loop(uint32_t count)
{
	const unsigned char body[] = {
		0x31, 0xd2,			/*     xor edx, edx */
		0xb9, 0x3f, 0x08, 0x00, 0x00,	/*     mov ecx, 0x83f (SELF_IPI) */
		0xbb, 0x20, 0x00, 0x00, 0x00,	/*     mov ebx, 0x20 */
		0x89, 0xd8,			/* 1:  mov eax, ebx */
		0x0f, 0x30,			/*     wrmsr */
		0xff, 0xc3,			/*     inc ebx */
		0x81, 0xfb, 0x00, 0x01, 0x00, 0x00, /*  cmp ebx, 0x100 */
		0x72, 0x05,			/*     jb 2f */
		0xbb, 0x20, 0x00, 0x00, 0x00,	/*     mov ebx, 0x20 */
	};					/* 2: */
	uint64_t top;

	byte(0xfa);			/* cli */
	mov_imm32(RSI, count);		/* mov esi, COUNT */
	emit(body, 12);
	top = here();
	emit(body + 12, sizeof(body) - 12);
	if (count) {
		byte(0xff);		/* dec esi */
		byte(0xce);
		jcc(CC_NE, top);	/* jnz 1b */
	} else {
		jmp(top);		/* jmp 1b */
	}
}

static void kind_ipi_cli(void)
{
	const unsigned char handler[] = {
		0x50, 0x51, 0x52,		/* push rax; push rcx; push rdx */
		0x48, 0xff, 0x04, 0x25, 0, 0, 0, 0, /* inc qword [VAR_IRQ] */
		0xb9, 0x0b, 0x08, 0x00, 0x00,	/* mov ecx, 0x80b (EOI) */
		0x31, 0xc0,			/* xor eax, eax */
		0x31, 0xd2,			/* xor edx, edx */
		0x0f, 0x30,			/* wrmsr */
		0x5a, 0x59, 0x58,		/* pop rdx; pop rcx; pop rax */
		0x48, 0xcf,			/* iretq */
	};
	uint64_t h;
	size_t over;
	unsigned v;

	prologue("ipi-cli");
	over = jump_fwd(-1);		/* jmp over the handler */
	h = here();
	emit(handler, sizeof(handler));
	land(over);
	memcpy(image + (h - LOAD_ADDR) + 7, &(uint32_t){ (uint32_t)VAR_IRQ }, 4);
	for (v = 0x20; v < 0x100; v++)
		gate(v, h);
	lidt(IDTR);
	apic_enable();
	ipi_loop(0x10000);
	say("ipi-cli: sent 0x10000 self-IPIs with interrupts off\n");
	byte(0xfb);			/* sti */
	byte(0x90);			/* nop (the sti shadow) */
	byte(0xfa);			/* cli */
	say("ipi-cli: delivered ");
	load_rax(VAR_IRQ);		/* mov rax, [VAR_IRQ] */
	call(hex64_at);
	say("\nipi-cli: storming\n");
	ipi_loop(0);
	epilogue("ipi-cli");		/* never reached */
}

static void kind_ipi_sti(void)
{
	const unsigned char handler[] = {
		0x50, 0x51, 0x52,		/* push rax; push rcx; push rdx */
		0xb9, 0x0b, 0x08, 0x00, 0x00,	/* mov ecx, 0x80b (EOI) */
		0x31, 0xc0,			/* xor eax, eax */
		0x31, 0xd2,			/* xor edx, edx */
		0x0f, 0x30,			/* wrmsr */
		0xb9, 0x3f, 0x08, 0x00, 0x00,	/* mov ecx, 0x83f (SELF_IPI) */
		0xb8, 0x40, 0x00, 0x00, 0x00,	/* mov eax, 0x40 */
		0x0f, 0x30,			/* wrmsr */
	};
	const unsigned char tail[] = {
		0x5a, 0x59, 0x58,		/* pop rdx; pop rcx; pop rax */
		0x48, 0xcf,			/* iretq */
	};
	size_t quiet, over;
	uint64_t h, top;

	prologue("ipi-sti");
	over = jump_fwd(-1);		/* jmp over the handler */
	h = here();
	emit(handler, sizeof(handler));
	inc_var(VAR_IRQ);		/* inc qword [VAR_IRQ] */
	/* test word [VAR_IRQ], 0xfff: 66 f7 04 25 disp32 imm16 */
	byte(0x66);
	byte(0xf7);
	byte(0x04);
	byte(0x25);
	imm32((uint32_t)VAR_IRQ);
	byte(0xff);
	byte(0x0f);
	quiet = jump_fwd(CC_NE);	/* jnz quiet */
	say("tick ");
	load_rax(VAR_IRQ);
	call(hex64_at);
	say("\n");
	land(quiet);
	emit(tail, sizeof(tail));
	land(over);
	gate(0x40, h);
	lidt(IDTR);
	apic_enable();
	mov_imm32(RCX, 0x83f);		/* mov ecx, 0x83f: the first self-IPI */
	mov_imm32(RAX, 0x40);		/* mov eax, 0x40 */
	wrmsr();			/* (edx is still 0) */
	say("ipi-sti: storming\n");
	top = here();
	byte(0xfb);			/* 1: sti */
	byte(0xf4);			/*    hlt */
	jmp(top);			/*    jmp 1b */
	epilogue("ipi-sti");		/* never reached */
}

/* cpuid LEAF (subleaf 0), then `cpuid LEAF eax=.. ebx=.. ecx=.. edx=..` */
static void cpuid_line(uint32_t leaf, int sig)
{
	const unsigned char op[] = { 0x0f, 0xa2 };	/* cpuid */
	const unsigned char save[] = { 0x52, 0x51, 0x53 };	/* push rdx; push rcx; push rbx */
	const unsigned char pop_rax[] = { 0x58 };	/* pop rax */
	char buf[32];

	mov_imm32(RAX, leaf);		/* mov eax, LEAF */
	mov_imm32(RCX, 0);		/* mov ecx, 0 */
	emit(op, sizeof(op));
	emit(save, sizeof(save));
	snprintf(buf, sizeof(buf), "cpuid %08x eax=", leaf);
	say(buf);
	call(hex32_at);
	say(" ebx=");
	emit(pop_rax, 1);
	call(hex32_at);
	if (sig)
		call(put4_at);
	say(" ecx=");
	emit(pop_rax, 1);
	call(hex32_at);
	if (sig)
		call(put4_at);
	say(" edx=");
	emit(pop_rax, 1);
	call(hex32_at);
	if (sig)
		call(put4_at);
	say("\n");
}

static void kind_cpuid(void)
{
	const unsigned char rdtscp[] = { 0x0f, 0x01, 0xf9 };
	const unsigned char rdpid[] = { 0xf3, 0x0f, 0xc7, 0xf8 };	/* rdpid rax */

	prologue("cpuid");
	lidt(IDTR);
	gate(6, ud_at);
	cpuid_line(0x40000000u, 1);
	cpuid_line(0x40000010u, 0);
	cpuid_line(1, 0);
	cpuid_line(0x80000001u, 0);
	cpuid_line(0x8000000au, 0);
	/* The TSC_AUX an rdtscp that did not fault would leave in ECX. */
	say("rdtscp: ");
	mov_imm32(RCX, 0xffffffffu);	/* mov ecx, 0xffffffff */
	emit(rdtscp, sizeof(rdtscp));	/* rdtscp */
	say(" ecx=");
	byte(0x89);			/* mov eax, ecx */
	byte(0xc8);
	call(hex32_at);
	say("\n");
	/*
	 * rdpid rax is 4 bytes, f3 0f c7 f8; the #UD handler skips 3 and so
	 * lands on the f8, which is clc: either way the code goes on after it.
	 */
	say("rdpid: ");
	mov_imm64(RAX, ~0ull);		/* mov rax, -1 */
	emit(rdpid, sizeof(rdpid));	/* rdpid rax */
	say(" rax=");
	call(hex64_at);
	say("\n");
	epilogue("cpuid");
}

/* rdpid and rdtscp: `LABEL rdpid: rax=..`, `LABEL rdtscp: ecx=..` */
static void tsc_aux_reads(const char *label)
{
	const unsigned char rdtscp[] = { 0x0f, 0x01, 0xf9 };
	const unsigned char rdpid[] = { 0xf3, 0x0f, 0xc7, 0xf8 };	/* rdpid rax */
	const unsigned char eax_ecx[] = { 0x89, 0xc8 };	/* mov eax, ecx */

	say2(label, " rdpid: ");
	mov_imm64(RAX, ~0ull);		/* mov rax, -1 */
	emit(rdpid, sizeof(rdpid));	/* rdpid rax (#UD: the handler lands on f8, clc) */
	say("rax=");
	call(hex64_at);
	say("\n");
	say2(label, " rdtscp: ");
	mov_imm32(RCX, 0xffffffffu);	/* mov ecx, 0xffffffff */
	emit(rdtscp, sizeof(rdtscp));	/* rdtscp */
	say("ecx=");
	emit(eax_ecx, sizeof(eax_ecx));
	call(hex32_at);
	say("\n");
}

/* The guest's own TSC_AUX: see the comment at the top. */
#define TSC_AUX_MSR 0xc0000103u
#define TSC_AUX_VALUE 0xc0ffeeu

static void kind_tsc_aux(uint32_t rounds)
{
	const unsigned char has_rdpid[] = {
		0xb8, 0x07, 0x00, 0x00, 0x00,	/* mov eax, 7 */
		0x31, 0xc9,			/* xor ecx, ecx */
		0x0f, 0xa2,			/* cpuid */
		0xc1, 0xe9, 0x16,		/* shr ecx, 22 */
		0x83, 0xe1, 0x01,		/* and ecx, 1 */
		0x41, 0x89, 0xcc,		/* mov r12d, ecx: RDPID? */
	};
	const unsigned char round[] = {
		0x66, 0xba, 0xff, 0x03,		/* mov dx, 0x3ff */
		0xee,				/* out dx, al */
		0x45, 0x85, 0xe4,		/* test r12d, r12d */
		0x74, 0x0f,			/* jz 1f (no RDPID) */
		0xf3, 0x0f, 0xc7, 0xf8,		/* rdpid rax */
		0x48, 0x3d, 0xee, 0xff, 0xc0, 0x00, /* cmp rax, 0xc0ffee */
		0x74, 0x03,			/* je 1f */
		0x49, 0xff, 0xc5,		/* inc r13 */
		0x0f, 0x01, 0xf9,		/* 1: rdtscp */
		0x81, 0xf9, 0xee, 0xff, 0xc0, 0x00, /* cmp ecx, 0xc0ffee */
		0x74, 0x03,			/* je 2f */
		0x49, 0xff, 0xc5,		/* inc r13 */
		0x41, 0xff, 0xce,		/* 2: dec r14d */
	};
	const unsigned char clear_r13[] = { 0x4d, 0x31, 0xed };	/* xor r13, r13 */
	const unsigned char r13_rax[] = { 0x4c, 0x89, 0xe8 };	/* mov rax, r13 */
	uint64_t top;

	prologue("tsc-aux");
	lidt(IDTR);
	gate(6, ud_at);
	gate(13, gp_at);
	tsc_aux_reads("before");
	msr_read_named(TSC_AUX_MSR, "TSC_AUX");
	msr_write_named(TSC_AUX_MSR, 0x100000005ull, "TSC_AUX");
	msr_read_named(TSC_AUX_MSR, "TSC_AUX");
	msr_write_named(TSC_AUX_MSR, TSC_AUX_VALUE, "TSC_AUX");
	msr_read_named(TSC_AUX_MSR, "TSC_AUX");
	tsc_aux_reads("after");
	emit(has_rdpid, sizeof(has_rdpid));
	mov_imm32(R14, rounds);		/* mov r14d, ROUNDS */
	emit(clear_r13, sizeof(clear_r13));
	top = here();
	emit(round, sizeof(round));
	jcc(CC_NE, top);		/* jnz top */
	sayf("tsc-aux rounds: %llx mismatches=%s", rounds, "");
	emit(r13_rax, sizeof(r13_rax));
	call(hex64_at);
	say("\n");
	epilogue("tsc-aux");
}

/*
 * The cross-VM IPI attack: every kind of x2APIC ICR write to every APIC ID
 * (a VM's only vCPU has APIC ID 0, as another VM's does), forever.
 */
static void kind_ipi_cross(void)
{
	static const uint32_t icr[] = {
		0x00000041,	/* fixed, vector 0x41, to the APIC ID in EDX */
		0x000c0042,	/* fixed, vector 0x42, all but self */
		0x00080043,	/* fixed, vector 0x43, all including self */
		0x00000500,	/* INIT */
		0x00000610,	/* STARTUP, vector 0x10 */
		0x00000400,	/* NMI */
	};
	const unsigned char next[] = {
		0xff, 0xc3,			/* inc ebx */
		0x81, 0xfb, 0x00, 0x01, 0x00, 0x00, /* cmp ebx, 0x100 */
	};
	const unsigned char round[] = {
		0x49, 0xff, 0xc4,		/* inc r12 */
		0x41, 0xf7, 0xc4, 0x03, 0x00, 0x00, 0x00, /* test r12d, 3 */
	};
	const unsigned char r12_rax[] = { 0x4c, 0x89, 0xe0 };	/* mov rax, r12 */
	uint64_t outer, inner;
	size_t i, quiet;

	prologue("ipi-cross");
	/* Its NMIs to its own APIC ID reach it: an NMI handler that returns. */
	quiet = jump_fwd(-1);		/* jmp over the handler */
	gate(2, here());
	byte(0x48);			/* iretq */
	byte(0xcf);
	land(quiet);
	lidt(IDTR);
	apic_enable();
	byte(0xfa);			/* cli */
	byte(0x4d);			/* xor r12, r12: rounds */
	byte(0x31);
	byte(0xe4);
	say("ipi-cross: storming\n");
	outer = here();
	byte(0x31);			/* xor ebx, ebx: the destination */
	byte(0xdb);
	inner = here();
	mov_imm32(RCX, 0x830);		/* mov ecx, 0x830 (ICR) */
	byte(0x89);			/* mov edx, ebx */
	byte(0xda);
	for (i = 0; i < sizeof(icr) / sizeof(icr[0]); i++) {
		mov_imm32(RAX, icr[i]);	/* mov eax, ICR */
		wrmsr();		/* wrmsr */
	}
	emit(next, sizeof(next));
	jcc(CC_B, inner);		/* jb inner */
	emit(round, sizeof(round));
	quiet = jump_fwd(CC_NE);	/* jnz quiet: a line every 4 rounds */
	say("ipi-cross: rounds ");
	emit(r12_rax, sizeof(r12_rax));
	call(hex64_at);
	say("\n");
	land(quiet);
	jmp(outer);			/* jmp outer */
}

/*
 * The other side: with interrupts off, reads the x2APIC's IRR (MSRs
 * 0x820-0x827) 0x800 times and ORs them together, prints the result,
 * then takes whatever is pending (a handler for 0x20-0xff prints
 * "ipi-listen: interrupt" and EOIs; an NMI reaches the unexpected-vector
 * stub).
 */
static void kind_ipi_listen(void)
{
	const unsigned char handler[] = {
		0x50, 0x51, 0x52,		/* push rax; push rcx; push rdx */
		0xb9, 0x0b, 0x08, 0x00, 0x00,	/* mov ecx, 0x80b (EOI) */
		0x31, 0xc0,			/* xor eax, eax */
		0x31, 0xd2,			/* xor edx, edx */
		0x0f, 0x30,			/* wrmsr */
		0x5a, 0x59, 0x58,		/* pop rdx; pop rcx; pop rax */
		0x48, 0xcf,			/* iretq */
	};
	const unsigned char poll[] = {
		0x45, 0x31, 0xe4,		/*     xor r12d, r12d */
		0xbe, 0x00, 0x08, 0x00, 0x00,	/*     mov esi, 0x800 */
		0xb9, 0x20, 0x08, 0x00, 0x00,	/* 1:  mov ecx, 0x820 (IRR0) */
		0x0f, 0x32,			/* 2:  rdmsr */
		0x41, 0x09, 0xc4,		/*     or r12d, eax */
		0xff, 0xc1,			/*     inc ecx */
		0x81, 0xf9, 0x28, 0x08, 0x00, 0x00, /*  cmp ecx, 0x828 */
		0x75, 0xf1,			/*     jne 2b */
		0xff, 0xce,			/*     dec esi */
		0x75, 0xe8,			/*     jnz 1b */
	};
	const unsigned char r12_rax[] = { 0x4c, 0x89, 0xe0 };	/* mov rax, r12 */
	uint64_t h;
	size_t over;
	unsigned v;

	prologue("ipi-listen");
	over = jump_fwd(-1);		/* jmp over the handler */
	h = here();
	say("ipi-listen: interrupt\n");
	emit(handler, sizeof(handler));
	land(over);
	for (v = 0x20; v < 0x100; v++)
		gate(v, h);
	lidt(IDTR);
	apic_enable();
	byte(0xfa);			/* cli */
	emit(poll, sizeof(poll));
	say("ipi-listen: irr=");
	emit(r12_rax, sizeof(r12_rax));
	call(hex32_at);
	say("\n");
	byte(0xfb);			/* sti */
	byte(0x90);			/* nop */
	byte(0xfa);			/* cli */
	epilogue("ipi-listen");
}

/*
 * EFER = 0 while in long mode with paging on: clearing LME with CR0.PG
 * set raises #GP on hardware.
 */
static void kind_efer(void)
{
	prologue("efer");
	lidt(IDTR);
	gate(13, gp_at);
	msr_read_named(0xc0000080u, "EFER");
	msr_write_named(0xc0000080u, 0, "EFER");
	msr_read_named(0xc0000080u, "EFER");
	epilogue("efer");
}

/* xsetbv XCR[index] = value: `xsetbv XCR<index>=<value>: #GP|ok` */
static void xsetbv_named(uint32_t index, uint64_t value)
{
	const unsigned char clear_r15[] = { 0x45, 0x31, 0xff };	/* xor r15d, r15d */
	const unsigned char test_r15[] = { 0x45, 0x85, 0xff };	/* test r15d, r15d */
	const unsigned char op[] = { 0x0f, 0x01, 0xd1 };	/* xsetbv */
	size_t ok, done;
	char buf[96];

	snprintf(buf, sizeof(buf), "xsetbv XCR%u=%llx: ", index, (unsigned long long)value);
	say(buf);
	mov_imm32(RCX, index);		/* mov ecx, INDEX */
	mov_imm32(RAX, (uint32_t)value);	/* mov eax, low half */
	mov_imm32(RDX, (uint32_t)(value >> 32));	/* mov edx, high half */
	emit(clear_r15, sizeof(clear_r15));
	emit(op, sizeof(op));
	emit(test_r15, sizeof(test_r15));
	ok = jump_fwd(CC_E);		/* jz ok */
	say("#GP\n");
	done = jump_fwd(-1);		/* jmp done */
	land(ok);
	say("ok\n");
	land(done);
}

/* `xgetbv XCR0=<value>` */
static void xgetbv_line(void)
{
	const unsigned char code[] = {
		0x31, 0xc9,			/* xor ecx, ecx */
		0x0f, 0x01, 0xd0,		/* xgetbv */
		0x48, 0xc1, 0xe2, 0x20,		/* shl rdx, 32 */
		0x89, 0xc0,			/* mov eax, eax */
		0x48, 0x09, 0xd0,		/* or rax, rdx */
	};

	say("xgetbv XCR0=");
	emit(code, sizeof(code));
	call(hex64_at);
	say("\n");
}

/*
 * XCR0 from a guest: CR4.OSXSAVE on, then valid and invalid XSETBVs
 * (MicroV switches XCR0 between the root and guests).
 */
static void kind_xsetbv(void)
{
	const unsigned char osxsave[] = {
		0x0f, 0x20, 0xe0,		/* mov rax, cr4 */
		0x48, 0x0f, 0xba, 0xe8, 0x12,	/* bts rax, 18 (OSXSAVE) */
		0x0f, 0x22, 0xe0,		/* mov cr4, rax */
	};

	prologue("xsetbv");
	lidt(IDTR);
	gate(6, ud_at);
	gate(13, gp3_at);
	emit(osxsave, sizeof(osxsave));
	xgetbv_line();
	xsetbv_named(0, 1);		/* x87 only: valid */
	xgetbv_line();
	xsetbv_named(0, 5);		/* AVX without SSE */
	xsetbv_named(0, 0);		/* x87 clear */
	xsetbv_named(0, ~0ull);		/* everything */
	xsetbv_named(1, 1);		/* XCR1 */
	xsetbv_named(0, 3);		/* x87 | SSE: valid */
	xgetbv_line();
	epilogue("xsetbv");
}

/*
 * NMIs (x2APIC ICR, delivery mode NMI, shorthand self): the handler counts
 * them, notes one that arrives while it runs (nested), and the first time
 * sends itself another NMI and spins, which must wait for its IRET. Then
 * one with interrupts off. Prints `nmi: delivered N nested M` (3 and 0).
 */
/*
 * Two CPUIDs: exits. MicroV unblocks NMIs at the first exit after the
 * handler's IRET has run, and injects a pending one at the entry after.
 */
static void cpuid_exits(void)
{
	for (int i = 0; i < 2; i++) {
		mov_imm32(RAX, 0);
		byte(0x0f);		/* cpuid */
		byte(0xa2);
	}
}

static void kind_nmi(void)
{
	const unsigned char cmp_in[] = { 0x48, 0x83, 0x3c, 0x25, 0, 0, 0, 0, 0 }; /* cmp qword [VAR_IN], 0 */
	const unsigned char cmp_one[] = { 0x48, 0x83, 0x3c, 0x25, 0, 0, 0, 0, 1 }; /* cmp qword [VAR_NMI], 1 */
	const unsigned char set_in[] = { 0x48, 0xc7, 0x04, 0x25, 0, 0, 0, 0 }; /* mov qword [VAR_IN], imm32 */
	const uint64_t var_nmi = VAR_IRQ, var_nested = VAR_IRQ + 8, var_in = VAR_IRQ + 16;
	const unsigned char spin[] = {
		0xb9, 0xa0, 0x86, 0x01, 0x00,	/* mov ecx, 100000 */
		0xff, 0xc9,			/* 1: dec ecx */
		0x75, 0xfc,			/* jnz 1b */
	};
	unsigned char op[16];
	size_t over, not_nested, not_first;
	uint64_t h;

	prologue("nmi");
	used(VAR_IRQ_OFF, 24);
	over = jump_fwd(-1);		/* jmp over the handler */
	h = here();
	byte(0x50);			/* push rax; push rcx; push rdx */
	byte(0x51);
	byte(0x52);
	memcpy(op, cmp_in, sizeof(cmp_in));
	memcpy(op + 4, &(uint32_t){ (uint32_t)var_in }, 4);
	emit(op, sizeof(cmp_in));
	not_nested = jump_fwd(CC_E);	/* je: not nested */
	inc_var(var_nested);
	land(not_nested);
	memcpy(op, set_in, sizeof(set_in));
	memcpy(op + 4, &(uint32_t){ (uint32_t)var_in }, 4);
	memcpy(op + 8, &(uint32_t){ 1 }, 4);
	emit(op, sizeof(set_in) + 4);	/* mov qword [VAR_IN], 1 */
	inc_var(var_nmi);
	memcpy(op, cmp_one, sizeof(cmp_one));
	memcpy(op + 4, &(uint32_t){ (uint32_t)var_nmi }, 4);
	emit(op, sizeof(cmp_one));
	not_first = jump_fwd(CC_NE);	/* jne: not the first */
	mov_imm32(RCX, 0x830);		/* ICR: self, NMI */
	mov_imm32(RAX, 1 << 18 | 4 << 8);
	mov_imm32(RDX, 0);
	wrmsr();
	emit(spin, sizeof(spin));
	land(not_first);
	memcpy(op, set_in, sizeof(set_in));
	memcpy(op + 4, &(uint32_t){ (uint32_t)var_in }, 4);
	memcpy(op + 8, &(uint32_t){ 0 }, 4);
	emit(op, sizeof(set_in) + 4);	/* mov qword [VAR_IN], 0 */
	byte(0x5a);			/* pop rdx; pop rcx; pop rax */
	byte(0x59);
	byte(0x58);
	byte(0x48);			/* iretq */
	byte(0xcf);
	land(over);
	gate(2, h);
	lidt(IDTR);
	apic_enable();
	mov_imm32(RCX, 0x830);		/* the first self-NMI */
	mov_imm32(RAX, 1 << 18 | 4 << 8);
	mov_imm32(RDX, 0);
	wrmsr();
	cpuid_exits();			/* the second goes in after its IRET */
	byte(0xfa);			/* cli: the third arrives anyway */
	mov_imm32(RCX, 0x830);
	mov_imm32(RAX, 1 << 18 | 4 << 8);
	mov_imm32(RDX, 0);
	wrmsr();
	cpuid_exits();
	say("nmi: delivered ");
	load_rax(var_nmi);
	call(hex64_at);
	say(" nested ");
	load_rax(var_nested);
	call(hex64_at);
	say("\n");
	epilogue("nmi");
}

/* ---- string I/O ---------------------------------------------------------- */

/* String data lives from image offset 0xc000 (past the page tables). */
#define STR_OFF 0xc000u
#define STR_ACROSS_OFF 0xcff0u	/* 16 bytes before a 4 KiB boundary */
#define STR_ODD_OFF 0xdff9u	/* a word element straddles 0xe000 */
#define STR_BUF_OFF 0xe800u	/* what rep insb stores */

static size_t str_next = STR_OFF;

/*
 * Puts `n` elements of `size` bytes at image offset `off`, element i's low
 * byte being s[i] (the rest 0); its guest address.
 */
static uint64_t str_put_at(size_t off, const char *s, size_t n, unsigned size)
{
	size_t i;

	used(off, n * size);
	memset(image + off, 0, n * size);
	for (i = 0; i < n; i++)
		image[off + i * size] = (unsigned char)s[i];
	return LOAD_ADDR + off;
}

static uint64_t str_put(const char *s, unsigned size)
{
	size_t n = strlen(s);
	uint64_t at = str_put_at(str_next, s, n, size);

	str_next += (n * size + 15) & ~(size_t)15;
	return at;
}

/* mov dx, port: 66 ba imm16 */
static void mov_dx(uint16_t port)
{
	byte(0x66);
	byte(0xba);
	emit(&port, 2);
}

/*
 * Unless REG == VALUE (cmp REG, RAX after mov rax, VALUE): prints
 * "strings: WHAT is wrong". Clobbers RAX and the flags.
 */
static void expect_reg(enum reg r, uint64_t value, const char *what)
{
	size_t ok;

	mov_imm64(RAX, value);
	byte(0x48);			/* cmp r64, rax: 48 39 /r */
	byte(0x39);
	byte(0xc0 | r);
	ok = jump_fwd(CC_E);		/* je ok */
	say2(what, " is wrong\n");
	land(ok);
}

/*
 * `[prefix] rep outs` of the `n` elements of `size` bytes at `at`
 * (opcode 6e for bytes, 6f with 66 for words, 6f for dwords) to COM1,
 * then checks RSI and RCX. RCX's upper half holds junk when the address
 * size is 32 bits (a32): only ECX counts, and the CPU zero-extends it.
 */
static void rep_outs_at(uint64_t at, size_t n, unsigned size, int a32, const char *what)
{
	mov_imm64(RSI, at);
	mov_imm64(RCX, a32 ? 0xdead000000000000ull | n : n);
	mov_dx(0x3f8);
	if (a32)
		byte(0x67);
	if (size == 2)
		byte(0x66);
	byte(0xf3);			/* rep */
	byte(size == 1 ? 0x6e : 0x6f);	/* outsb / outsw / outsd */
	expect_reg(RSI, at + n * size, what);
	expect_reg(RCX, 0, what);
}

/* rep_outs_at() of `s`, stored next in the string area. */
static void rep_outs(const char *s, unsigned size, int a32, const char *what)
{
	rep_outs_at(str_put(s, size), strlen(s), size, a32, what);
}

/*
 * String port I/O, each kind once: rep outsb/outsw/outsd to COM1 (a UART
 * register is a byte: wider elements send their low byte), outsb without
 * rep, rep outsb downwards (std), across a 4 KiB page boundary, with a
 * word across one, with a count of 0 and with 32-bit addresses; rep insb
 * from the UART's scratch register into memory, printed back. RSI, RDI
 * and RCX are checked after each ("strings: ... is wrong").
 */
static void kind_strings(void)
{
	const char *one = "strings: outsb\n";
	const char *down = "strings: std rep outsb\n";
	const char *across = "strings: across a page boundary\n";
	const char *odd = "strings: rep outsw across a page\n";
	char reversed[64];
	uint64_t at, buf;
	size_t i, n;

	prologue("strings");
	lidt(IDTR);
	byte(0xfc);			/* cld */
	rep_outs("strings: rep outsb\n", 1, 0, "strings: rep outsb");
	rep_outs("strings: rep outsw\n", 2, 0, "strings: rep outsw");
	rep_outs("strings: rep outsd\n", 4, 0, "strings: rep outsd");

	/* outsb without rep, once per byte: RSI moves, RCX stays. */
	at = str_put(one, 1);
	mov_imm64(RSI, at);
	mov_imm64(RCX, 0x1234);
	mov_dx(0x3f8);
	for (i = 0; i < strlen(one); i++)
		byte(0x6e);		/* outsb */
	expect_reg(RSI, at + strlen(one), "strings: outsb");
	expect_reg(RCX, 0x1234, "strings: outsb");

	/* Downwards: the string stored reversed, RSI at its last byte. */
	n = strlen(down);
	for (i = 0; i < n; i++)
		reversed[i] = down[n - 1 - i];
	reversed[n] = 0;
	at = str_put(reversed, 1);
	mov_imm64(RSI, at + n - 1);
	mov_imm64(RCX, n);
	byte(0xfd);			/* std */
	byte(0xf3);			/* rep outsb */
	byte(0x6e);
	byte(0xfc);			/* cld */
	expect_reg(RSI, at - 1, "strings: std rep outsb");
	expect_reg(RCX, 0, "strings: std rep outsb");

	/* Across a page boundary: the VMM moves it in two batches. */
	n = strlen(across);
	at = str_put_at(STR_ACROSS_OFF, across, n, 1);
	rep_outs_at(at, n, 1, 0, "strings: across");

	/* Words from an odd address: one straddles the boundary. */
	n = strlen(odd);
	at = str_put_at(STR_ODD_OFF, odd, n, 2);
	rep_outs_at(at, n, 2, 0, "strings: odd rep outsw");

	/* A count of 0: nothing moves, the instruction ends. */
	mov_imm64(RSI, at);
	mov_imm64(RCX, 0);
	byte(0xf3);			/* rep outsb */
	byte(0x6e);
	expect_reg(RSI, at, "strings: rep outsb of 0");

	rep_outs("strings: a32 rep outsb\n", 1, 1, "strings: a32 rep outsb");

	/* rep insb: the scratch register (0x3ff) read 4 times, then 1 insb. */
	buf = LOAD_ADDR + STR_BUF_OFF;
	used(STR_BUF_OFF, 8);
	mov_dx(0x3ff);
	mov_imm32(RAX, 's');		/* mov eax, 's'; out dx, al */
	byte(0xee);
	mov_imm64(RDI, buf);
	mov_imm64(RCX, 4);
	byte(0xf3);			/* rep insb */
	byte(0x6c);
	expect_reg(RDI, buf + 4, "strings: rep insb");
	expect_reg(RCX, 0, "strings: rep insb");
	mov_dx(0x3ff);
	mov_imm32(RAX, '!');
	byte(0xee);
	byte(0x6c);			/* insb */
	expect_reg(RDI, buf + 5, "strings: insb");
	say("strings: rep insb: ");
	mov_imm64(RSI, buf);
	mov_imm64(RCX, 5);
	mov_dx(0x3f8);
	byte(0xf3);			/* rep outsb */
	byte(0x6e);
	say("\n");
	epilogue("strings");
}

/* hlt forever, with interrupts off (cli) or on (sti) and nothing to wake it */
static void kind_halt(const char *kind, int sti)
{
	uint64_t top;

	prologue(kind);
	byte(sti ? 0xfb : 0xfa);	/* sti / cli */
	top = here();
	byte(0xf4);			/* 1: hlt */
	jmp(top);			/*    jmp 1b */
}

int main(int argc, char **argv)
{
	const char *kind = argc > 1 ? argv[1] : "";

	if (!strcmp(kind, "hello")) {
		print("hello from a micro VM\n");
		out_then_halt(0x600, 0x34);
	} else if (!strcmp(kind, "reset")) {
		print("bye\n");
		out_then_halt(0x64, 0xfe);
	} else if (!strcmp(kind, "mmio")) {
		/* mov eax, 0xd0000000; mov byte [rax], 0x5a */
		const unsigned char store[] = { 0xb8, 0x00, 0x00, 0x00, 0xd0, 0xc6, 0x00, 0x5a };

		emit(store, sizeof(store));
		print("after mmio\n");
		out_then_halt(0x600, 0x34);
	} else if (!strcmp(kind, "spin")) {
		const unsigned char spin[] = { 0xfa, 0xeb, 0xfe }; /* cli; jmp $ */

		print("spin: start (cli; jmp $)\n");
		emit(spin, sizeof(spin));
	} else if (!strcmp(kind, "triple")) {
		kind_triple();
	} else if (!strcmp(kind, "hypercalls")) {
		kind_hypercalls();
	} else if (!strcmp(kind, "svm")) {
		kind_svm();
	} else if (!strcmp(kind, "readfar") && argc == 3) {
		char *end;
		unsigned long long pa = strtoull(argv[2], &end, 0);

		if (*end || pa & 7)
			die("readfar: PA must be a number, 8-byte aligned");
		kind_readfar(pa);
	} else if (!strcmp(kind, "msrs")) {
		kind_msrs();
	} else if (!strcmp(kind, "ports")) {
		kind_ports();
	} else if (!strcmp(kind, "badcr3-ff")) {
		uint64_t page = pt_alloc();

		memset(image + (page - LOAD_ADDR), 0xff, 4096);
		kind_badcr3(kind, page);
	} else if (!strcmp(kind, "badcr3-far")) {
		kind_badcr3(kind, 0x7f00000000ull);
	} else if (!strcmp(kind, "ipi-cli")) {
		kind_ipi_cli();
	} else if (!strcmp(kind, "ipi-sti")) {
		kind_ipi_sti();
	} else if (!strcmp(kind, "cpuid")) {
		kind_cpuid();
	} else if (!strcmp(kind, "tsc-aux") && argc <= 3) {
		char *end = "";
		unsigned long rounds = argc == 3 ? strtoul(argv[2], &end, 0) : 1000;

		if (*end || rounds == 0 || rounds > 0xffffffffu)
			die("tsc-aux: N must be a number from 1 to 0xffffffff");
		kind_tsc_aux((uint32_t)rounds);
	} else if (!strcmp(kind, "ipi-cross")) {
		kind_ipi_cross();
	} else if (!strcmp(kind, "ipi-listen")) {
		kind_ipi_listen();
	} else if (!strcmp(kind, "efer")) {
		kind_efer();
	} else if (!strcmp(kind, "xsetbv")) {
		kind_xsetbv();
	} else if (!strcmp(kind, "nmi")) {
		kind_nmi();
	} else if (!strcmp(kind, "strings")) {
		kind_strings();
	} else if (!strcmp(kind, "halt-cli")) {
		kind_halt(kind, 0);
	} else if (!strcmp(kind, "halt-sti")) {
		kind_halt(kind, 1);
	} else {
		fprintf(stderr,
			"usage: mv-guest-elf hello|reset|mmio|spin|triple|hypercalls|svm|"
			"readfar PA|msrs|ports|badcr3-ff|badcr3-far|ipi-cli|ipi-sti|cpuid|tsc-aux [N]|ipi-cross|"
			"ipi-listen|efer|xsetbv|nmi|strings|halt-cli|halt-sti > guest.elf\n");
		return 2;
	}
	if (len > image_len)
		image_len = len;
	return write_elf(image_len);
}
