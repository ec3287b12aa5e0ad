// SPDX-License-Identifier: MIT
/*
 * hotblocks: a QEMU 7.2 TCG plugin for `cargo xtask bench --profile`
 * (docs/benchmarks.md, "Profiling"). It counts, per translation block
 * (keyed by the guest virtual address of its first instruction), how many
 * instructions of it were executed, and writes the hottest blocks to a file
 * when QEMU exits.
 *
 *   qemu-system-x86_64 ... -plugin hotblocks.so,out=FILE[,top=N]
 *       [,mark_lo=A,mark_hi=B,on=I,off=J]
 *
 * Counting: every instruction of a block adds 1 to its block's counter (an
 * inline add, no callback), so an exit in the middle of a block (an
 * intercepted CPUID, VMMCALL or OUT, a page fault) counts only what ran,
 * unlike runs x length. Each start of a block also adds 1 to its `runs`.
 * Blocks translated again at the same address (after a flush, or shorter
 * under -icount) share one record.
 *
 * Window: with mark_lo/mark_hi, every RDTSC (0f 31) whose address is in
 * [mark_lo, mark_hi) is a mark; the counts reported are those between the
 * start of mark number `on` and the start of mark number `off` (1-based).
 * For mv-bench-guest's guest (loaded at 16 MiB) marks 2 and 3 bracket the
 * measured loop, so the total equals the benchmark's TSC difference to
 * within a few instructions. Without a window: the whole run. The counters
 * are never reset: the plugin takes a snapshot of all of them at each mark
 * and reports differences.
 *
 * Output (text): `#` lines (total, window state), then one line per block,
 * hottest first:  0xVADDR EXECUTED RUNS INSNS PERCENT
 *
 * One vCPU and single-threaded TCG are assumed (the bench machine): the
 * inline adds are not atomic.
 *
 * QEMU's own qemu-plugin.h is GPL-2.0-or-later, so it is not vendored here
 * (this repository is MIT). The declarations below are written from QEMU
 * 7.2's documented plugin API (API version 1): the names, signatures and
 * the layout of qemu_info_t are interface facts, not copied code.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the QEMU 7.2 plugin API, as much as is used ----------------------- */

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

typedef struct {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	bool system_emulation;
	union {
		struct {
			int smp_vcpus;
			int max_vcpus;
		} system;
	};
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
						enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
					    qemu_plugin_vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

EXPORT extern int qemu_plugin_version;
EXPORT int qemu_plugin_version = 1;
EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

/* ---- the plugin -------------------------------------------------------- */

struct block {
	uint64_t vaddr;
	uint64_t executed;	/* instructions, bumped inline */
	uint64_t runs;		/* block starts, bumped inline */
	uint64_t on_executed, on_runs;	/* snapshot at the window's start */
	uint64_t off_executed, off_runs; /* snapshot at its end */
	uint64_t insns;		/* the longest translation seen */
};

#define SLAB 4096

static struct block **slabs;	/* blocks never move: QEMU holds pointers */
static size_t nblocks, nslabs;
static struct block **table;	/* open addressing on vaddr */
static size_t table_size;

static const char *out_path;
static size_t top = 200;
static uint64_t mark_lo, mark_hi, mark_on, mark_off;
static uint64_t marks;
static int window;		/* 0 before `on`, 1 inside, 2 after `off` */

static struct block *block_at(size_t i)
{
	return &slabs[i / SLAB][i % SLAB];
}

static size_t slot(uint64_t vaddr, size_t size)
{
	return (size_t)((vaddr * 0x9e3779b97f4a7c15ull) >> 20) & (size - 1);
}

static void grow(void)
{
	size_t size = table_size ? table_size * 2 : 1 << 16;
	struct block **t = calloc(size, sizeof(*t));

	if (!t)
		abort();
	for (size_t i = 0; i < nblocks; i++) {
		struct block *b = block_at(i);
		size_t s = slot(b->vaddr, size);

		while (t[s])
			s = (s + 1) & (size - 1);
		t[s] = b;
	}
	free(table);
	table = t;
	table_size = size;
}

static struct block *lookup(uint64_t vaddr)
{
	size_t s;
	struct block *b;

	if (2 * (nblocks + 1) > table_size)
		grow();
	for (s = slot(vaddr, table_size); table[s]; s = (s + 1) & (table_size - 1))
		if (table[s]->vaddr == vaddr)
			return table[s];
	if (nblocks % SLAB == 0) {
		slabs = realloc(slabs, (nslabs + 1) * sizeof(*slabs));
		if (!slabs)
			abort();
		slabs[nslabs] = calloc(SLAB, sizeof(struct block));
		if (!slabs[nslabs])
			abort();
		nslabs++;
	}
	b = block_at(nblocks++);
	b->vaddr = vaddr;
	table[s] = b;
	return b;
}

/* Called before a mark's RDTSC executes. */
static void on_mark(unsigned int vcpu, void *udata)
{
	(void)vcpu;
	(void)udata;
	marks++;
	if (window == 0 && marks == mark_on) {
		for (size_t i = 0; i < nblocks; i++) {
			block_at(i)->on_executed = block_at(i)->executed;
			block_at(i)->on_runs = block_at(i)->runs;
		}
		window = 1;
	} else if (window == 1 && marks == mark_off) {
		for (size_t i = 0; i < nblocks; i++) {
			block_at(i)->off_executed = block_at(i)->executed;
			block_at(i)->off_runs = block_at(i)->runs;
		}
		window = 2;
	}
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct block *b = lookup(qemu_plugin_tb_vaddr(tb));

	(void)id;
	if (n > b->insns)
		b->insns = n;
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint64_t pc = qemu_plugin_insn_vaddr(insn);
		const uint8_t *op = qemu_plugin_insn_data(insn);

		qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
							   &b->executed, 1);
		if (mark_hi > mark_lo && pc >= mark_lo && pc < mark_hi &&
		    qemu_plugin_insn_size(insn) == 2 && op[0] == 0x0f && op[1] == 0x31)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS,
							       NULL);
	}
}

/* A block's counts over the window (the whole run without one). */
static uint64_t executed(const struct block *b)
{
	switch (window) {
	case 1:
		return b->executed - b->on_executed;
	case 2:
		return b->off_executed - b->on_executed;
	default:
		return b->executed;
	}
}

static uint64_t runs(const struct block *b)
{
	switch (window) {
	case 1:
		return b->runs - b->on_runs;
	case 2:
		return b->off_runs - b->on_runs;
	default:
		return b->runs;
	}
}

static int hotter(const void *a, const void *b)
{
	uint64_t x = executed(*(struct block *const *)a);
	uint64_t y = executed(*(struct block *const *)b);

	return x < y ? 1 : x > y ? -1 : 0;
}

static void report(qemu_plugin_id_t id, void *udata)
{
	static const char *const state[] = { "not-started", "open", "closed" };
	struct block **sorted = malloc((nblocks + 1) * sizeof(*sorted));
	uint64_t total = 0;
	size_t shown = 0;
	FILE *f;

	(void)id;
	(void)udata;
	if (!sorted)
		abort();
	for (size_t i = 0; i < nblocks; i++) {
		sorted[i] = block_at(i);
		total += executed(sorted[i]);
	}
	qsort(sorted, nblocks, sizeof(*sorted), hotter);
	f = fopen(out_path, "w");
	if (!f) {
		qemu_plugin_outs("hotblocks: cannot write the output file\n");
		free(sorted);
		return;
	}
	fprintf(f, "# hotblocks: instructions executed per translation block\n");
	fprintf(f, "# total %" PRIu64 "\n", total);
	fprintf(f, "# blocks %zu\n", nblocks);
	if (mark_hi > mark_lo)
		fprintf(f, "# window %s marks %" PRIu64 " on %" PRIu64 " off %" PRIu64 "\n",
			state[window], marks, mark_on, mark_off);
	else
		fprintf(f, "# window none\n");
	fprintf(f, "# vaddr executed runs insns percent\n");
	for (size_t i = 0; i < nblocks && (top == 0 || shown < top); i++) {
		uint64_t e = executed(sorted[i]);

		if (!e)
			break;
		fprintf(f, "0x%016" PRIx64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %.4f\n",
			sorted[i]->vaddr, e, runs(sorted[i]), sorted[i]->insns,
			100.0 * (double)e / (double)total);
		shown++;
	}
	fclose(f);
	free(sorted);
}

static bool number(const char *arg, const char *key, uint64_t *value)
{
	size_t n = strlen(key);
	char *end;

	if (strncmp(arg, key, n) || arg[n] != '=')
		return false;
	*value = strtoull(arg + n + 1, &end, 0);
	return *end == 0;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	uint64_t v;

	if (info->system_emulation && info->system.smp_vcpus != 1)
		qemu_plugin_outs("hotblocks: more than one vCPU: counts are not exact\n");
	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "out=", 4))
			out_path = argv[i] + 4;
		else if (number(argv[i], "top", &v))
			top = (size_t)v;
		else if (!number(argv[i], "mark_lo", &mark_lo) &&
			 !number(argv[i], "mark_hi", &mark_hi) &&
			 !number(argv[i], "on", &mark_on) && !number(argv[i], "off", &mark_off)) {
			fprintf(stderr, "hotblocks: unknown argument %s\n", argv[i]);
			return 1;
		}
	}
	if (!out_path) {
		fprintf(stderr, "hotblocks: out=FILE is required\n");
		return 1;
	}
	if (mark_hi > mark_lo && (mark_on == 0 || mark_off <= mark_on)) {
		fprintf(stderr, "hotblocks: a window needs 0 < on < off\n");
		return 1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
	qemu_plugin_register_atexit_cb(id, report, NULL);
	return 0;
}
