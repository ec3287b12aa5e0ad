/* SPDX-License-Identifier: MIT */
/*
 * The x86-64 code emitter the hand-written guest generators share
 * (mv-guest-elf, mv-bench-guest): machine code appended to `image`, at
 * guest address LOAD_ADDR + offset. The includer defines GUEST_TOOL (its
 * name, for errors), LOAD_ADDR, CODE_MAX (how much code fits) and
 * IMAGE_BYTES (the image buffer, CODE_MAX or more), then includes this.
 */
#ifndef GUEST_CODE_H
#define GUEST_CODE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char image[IMAGE_BYTES];
static size_t len; /* code bytes so far */

static void die(const char *why)
{
	fprintf(stderr, GUEST_TOOL ": %s\n", why);
	exit(1);
}

static void emit(const void *p, size_t n)
{
	if (len + n > CODE_MAX)
		die("the code does not fit");
	memcpy(image + len, p, n);
	len += n;
}

static void byte(unsigned char b)
{
	emit(&b, 1);
}

static void imm32(uint32_t v)
{
	emit(&v, 4);
}

/* The guest address of the next byte. */
static uint64_t here(void)
{
	return LOAD_ADDR + len;
}

/* A 32-bit displacement from the end of this field to `target`. */
static void rel32_to(uint64_t target)
{
	int64_t rel = (int64_t)(target - (here() + 4));

	imm32((uint32_t)(int32_t)rel);
}

/* call target: e8 rel32 */
static void call(uint64_t target)
{
	byte(0xe8);
	rel32_to(target);
}

/* mov dx, 0x3f8; then for each byte: mov al, b; out dx, al (clobbers al, dx) */
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

/*
 * The tail of the hex printers: with RAX, RBX, RCX and RDX pushed (in that
 * order), the value in RBX and the digit count in ECX, prints that many hex
 * digits of RBX, from the top, on COM1, restores the four and returns.
 */
static const unsigned char hex_digits_and_return[] = {
	0x66, 0xba, 0xf8, 0x03, /*     mov dx, 0x3f8 */
	0x48, 0xc1, 0xc3, 0x04, /* 1:  rol rbx, 4 */
	0x88, 0xd8,		/*     mov al, bl */
	0x24, 0x0f,		/*     and al, 0x0f */
	0x04, 0x30,		/*     add al, '0' */
	0x3c, 0x39,		/*     cmp al, '9' */
	0x76, 0x02,		/*     jbe 2f */
	0x04, 0x07,		/*     add al, 'A' - '9' - 1 */
	0xee,			/* 2:  out dx, al */
	0xff, 0xc9,		/*     dec ecx */
	0x75, 0xeb,		/*     jnz 1b */
	0x5a, 0x59, 0x5b, 0x58, /*     pop rdx; pop rcx; pop rbx; pop rax */
	0xc3,			/*     ret */
};

static void put16(unsigned char *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* ELF64 header and one PT_LOAD (R+X) of the image at LOAD_ADDR. */
static int write_elf(size_t size)
{
	unsigned char elf[0x78] = { 0x7f, 'E', 'L', 'F', 2, 1, 1, 0 };

	put16(elf + 16, 2);		/* ET_EXEC */
	put16(elf + 18, 0x3e);		/* x86-64 */
	put32(elf + 20, 1);
	put64(elf + 24, LOAD_ADDR);	/* entry */
	put64(elf + 32, 0x40);		/* program headers */
	put16(elf + 52, 0x40);
	put16(elf + 54, 0x38);
	put16(elf + 56, 1);
	put32(elf + 0x40, 1);		/* PT_LOAD */
	put32(elf + 0x44, 5);		/* R+X */
	put64(elf + 0x48, sizeof(elf));	/* file offset */
	put64(elf + 0x50, LOAD_ADDR);
	put64(elf + 0x58, LOAD_ADDR);
	put64(elf + 0x60, size);
	put64(elf + 0x68, size);
	put64(elf + 0x70, 0x1000);
	if (fwrite(elf, sizeof(elf), 1, stdout) != 1 || fwrite(image, size, 1, stdout) != 1) {
		perror(GUEST_TOOL);
		return 1;
	}
	return 0;
}

#endif
