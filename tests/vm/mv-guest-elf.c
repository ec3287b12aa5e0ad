// SPDX-License-Identifier: MIT
/*
 * mv-guest-elf KIND > guest.elf: writes a tiny 64-bit guest "kernel" (an
 * ELF64 executable with one PT_LOAD at 16 MiB) for `microv run --kernel`.
 * The VMM enters it in long mode as it enters a vmlinux. Kinds:
 *   hello    prints "hello from a micro VM" on COM1, then powers off
 *            (ACPI PM1a control, port 0x600 <- 0x34: SLP_EN with S5)
 *   reset    prints "bye", then resets through the i8042 (port 0x64 <- 0xfe)
 *   mmio     stores 0x5a to guest-physical 0xd000_0000 (no device there:
 *            the VMM reports an MMIO write it has no device for), then
 *            prints "after mmio" and powers off
 *   spin     cli; jmp $ (a hostile guest: never exits on its own)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define LOAD_ADDR 0x1000000ull

static unsigned char code[4096];
static size_t len;

static void emit(const void *p, size_t n)
{
	memcpy(code + len, p, n);
	len += n;
}

static void byte(unsigned char b)
{
	emit(&b, 1);
}

/* mov dx, port; then for each byte: mov al, b; out dx, al */
static void print(const char *s)
{
	const unsigned char mov_dx[] = { 0x66, 0xba, 0xf8, 0x03 };

	emit(mov_dx, sizeof(mov_dx));
	for (; *s; s++) {
		byte(0xb0);
		byte((unsigned char)*s);
		byte(0xee);
	}
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

static void put64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

int main(int argc, char **argv)
{
	const char *kind = argc > 1 ? argv[1] : "";
	unsigned char elf[0x78] = { 0x7f, 'E', 'L', 'F', 2, 1, 1, 0 };
	uint16_t u16;
	uint32_t u32;

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
		const unsigned char spin[] = { 0xfa, 0xeb, 0xfe };

		emit(spin, sizeof(spin));
	} else {
		fprintf(stderr, "usage: mv-guest-elf hello|reset|mmio|spin > guest.elf\n");
		return 2;
	}
	u16 = 2;			/* ET_EXEC */
	memcpy(elf + 16, &u16, 2);
	u16 = 0x3e;			/* x86-64 */
	memcpy(elf + 18, &u16, 2);
	u32 = 1;
	memcpy(elf + 20, &u32, 4);
	put64(elf + 24, LOAD_ADDR);	/* entry */
	put64(elf + 32, 0x40);		/* program headers */
	u16 = 0x40;
	memcpy(elf + 52, &u16, 2);
	u16 = 0x38;
	memcpy(elf + 54, &u16, 2);
	u16 = 1;
	memcpy(elf + 56, &u16, 2);
	u32 = 1;			/* PT_LOAD */
	memcpy(elf + 0x40, &u32, 4);
	u32 = 5;			/* R+X */
	memcpy(elf + 0x44, &u32, 4);
	put64(elf + 0x48, sizeof(elf));	/* file offset */
	put64(elf + 0x50, LOAD_ADDR);
	put64(elf + 0x58, LOAD_ADDR);
	put64(elf + 0x60, len);
	put64(elf + 0x68, len);
	put64(elf + 0x70, 0x1000);
	if (fwrite(elf, sizeof(elf), 1, stdout) != 1 || fwrite(code, len, 1, stdout) != 1) {
		perror("mv-guest-elf");
		return 1;
	}
	return 0;
}
