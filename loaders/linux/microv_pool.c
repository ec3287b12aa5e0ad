// SPDX-License-Identifier: MIT
/*
 * The hypervisor's memory pool and its boot page tables.
 *
 * The pool is a set of naturally aligned 2 MiB chunks: the root VM's nested
 * page tables can then hide each chunk with one entry, and the microkernel
 * maps the pool linearly at MV_POOL_VA with 2 MiB pages.
 */
#include <linux/gfp.h>
#include <linux/uaccess.h>
#include <linux/string.h>
#include "microv.h"

#define PTE_P	(1ULL << 0)
#define PTE_W	(1ULL << 1)
#define PTE_PS	(1ULL << 7)
#define PTE_NX	(1ULL << 63)
#define PTE_ADDR 0x000ffffffffff000ULL

int mv_pool_alloc(struct mv_pool *pool, u64 size)
{
	unsigned int i, n = size / MV_CHUNK_SIZE;

	memset(pool, 0, sizeof(*pool));
	for (i = 0; i < n; i++) {
		pool->chunks[i] = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN, MV_CHUNK_ORDER);
		if (!pool->chunks[i]) {
			mv_pool_free(pool);
			return -ENOMEM;
		}
		pool->chunk_count = i + 1;
	}
	return 0;
}

void mv_pool_free(struct mv_pool *pool)
{
	unsigned int i;

	/* The hypervisor's memory goes back to Linux scrubbed. */
	for (i = 0; i < pool->chunk_count; i++) {
		memset(page_address(pool->chunks[i]), 0, MV_CHUNK_SIZE);
		__free_pages(pool->chunks[i], MV_CHUNK_ORDER);
	}
	pool->chunk_count = 0;
}

void *mv_pool_ptr(struct mv_pool *pool, u64 offset)
{
	u64 chunk = offset / MV_CHUNK_SIZE;

	if (chunk >= pool->chunk_count)
		return NULL;
	return (char *)page_address(pool->chunks[chunk]) + offset % MV_CHUNK_SIZE;
}

u64 mv_pool_pa(struct mv_pool *pool, u64 offset)
{
	u64 chunk = offset / MV_CHUNK_SIZE;

	if (chunk >= pool->chunk_count)
		return 0;
	return page_to_phys(pool->chunks[chunk]) + offset % MV_CHUNK_SIZE;
}

int mv_pool_copy_from_user(struct mv_pool *pool, u64 offset, const void __user *src, u64 size)
{
	while (size) {
		u64 room = MV_CHUNK_SIZE - offset % MV_CHUNK_SIZE;
		u64 n = min(room, size);
		void *dst = mv_pool_ptr(pool, offset);

		if (!dst)
			return -EINVAL;
		if (copy_from_user(dst, src, n))
			return -EFAULT;
		offset += n;
		src = (const char __user *)src + n;
		size -= n;
	}
	return 0;
}

/* Takes `size` bytes (page multiple) of the pool; returns the offset or ~0. */
u64 mv_pool_reserve(struct mv_pool *pool, u64 size)
{
	u64 offset = pool->used;

	size = PAGE_ALIGN(size);
	if (offset + size > (u64)pool->chunk_count * MV_CHUNK_SIZE)
		return ~0ULL;
	pool->used += size;
	return offset;
}

static u64 *table_at(struct mv_pool *pool, u64 pa)
{
	unsigned int i;

	for (i = 0; i < pool->chunk_count; i++) {
		u64 base = page_to_phys(pool->chunks[i]);

		if (pa >= base && pa < base + MV_CHUNK_SIZE)
			return (u64 *)((char *)page_address(pool->chunks[i]) + (pa - base));
	}
	return NULL;
}

/* Returns the table an entry points to, allocating it from the pool. */
static u64 *next_table(struct mv_pool *pool, u64 *entry)
{
	u64 off;

	if (*entry & PTE_P)
		return (*entry & PTE_PS) ? NULL : table_at(pool, *entry & PTE_ADDR);
	off = mv_pool_reserve(pool, PAGE_SIZE);
	if (off == ~0ULL)
		return NULL;
	*entry = mv_pool_pa(pool, off) | PTE_P | PTE_W;
	return mv_pool_ptr(pool, off);
}

/*
 * Maps [va, va + size) to [pa, pa + size) in the boot page tables, with 2 MiB
 * pages where both addresses and the size allow, else 4 KiB pages.
 */
int mv_boot_map(struct mv_pool *pool, u64 va, u64 pa, u64 size, u64 flags)
{
	if (!pool->pml4_pa) {
		u64 off = mv_pool_reserve(pool, PAGE_SIZE);

		if (off == ~0ULL)
			return -ENOMEM;
		pool->pml4_pa = mv_pool_pa(pool, off);
	}
	while (size) {
		u64 *pml4 = table_at(pool, pool->pml4_pa);
		u64 *pdpt, *pd, *pt;
		bool large = !(va % MV_CHUNK_SIZE) && !(pa % MV_CHUNK_SIZE) && size >= MV_CHUNK_SIZE;

		if (!pml4)
			return -EINVAL;
		pdpt = next_table(pool, &pml4[(va >> 39) & 511]);
		if (!pdpt)
			return -ENOMEM;
		pd = next_table(pool, &pdpt[(va >> 30) & 511]);
		if (!pd)
			return -ENOMEM;
		if (large) {
			pd[(va >> 21) & 511] = pa | flags | PTE_P | PTE_PS;
			va += MV_CHUNK_SIZE;
			pa += MV_CHUNK_SIZE;
			size -= MV_CHUNK_SIZE;
			continue;
		}
		pt = next_table(pool, &pd[(va >> 21) & 511]);
		if (!pt)
			return -ENOMEM;
		pt[(va >> 12) & 511] = pa | flags | PTE_P;
		va += PAGE_SIZE;
		pa += PAGE_SIZE;
		size -= min_t(u64, size, PAGE_SIZE);
	}
	return 0;
}
