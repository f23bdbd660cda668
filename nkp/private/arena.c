/* Per-thread arena of locked memory for unpacking messages with protobuf-c
 * (see nkpi_arena_allocator() in internal.h for the rules).
 *
 * protobuf-c allocates once per message, sub-message, string, bytes field
 * and repeated array. Here each allocation is a 16-byte aligned bump in
 * one sodium_malloc block per thread, so decoded key bytes sit only in
 * locked memory and a decode costs no malloc at all. Each block counts its
 * live allocations; when the count returns to zero the bytes used are
 * wiped and the bump pointer goes back to the start. An allocation that
 * does not fit goes to an overflow block (another locked block, shared by
 * later small allocations) or, if large, to a block of its own; those are
 * wiped and freed when their last allocation is. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"

/* Under ASan the arena stays (its wiping is what the tests check), but
 * every byte not handed out is poisoned: a read of a decoded message after
 * its free is reported as use-after-poison. Headers are poisoned too, so
 * an overflow of one allocation into the next is reported. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif

#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define NO_ASAN
#endif

#define ALIGN 16u
#define ALIGN_UP(n) (((n) + (ALIGN - 1)) & ~(size_t)(ALIGN - 1))

/* 64 KiB: a push or a reply decodes into a few KiB (a provider with three
 * versions: under 1 KiB), so a block holds a host's whole key set with
 * room for nested messages, yet a thread locks only 16 pages for it.
 * libsodium puts a 16-byte canary in front of each block: asking for
 * 64 KiB - 16 keeps it to exactly 16 pages. */
#define BLOCK_BYTES ((size_t)(64u << 10) - 16u)
/* Larger allocations get a block of their own instead of filling an
 * overflow block at once. */
#define OWN_BLOCK_MIN (BLOCK_BYTES / 4)
/* No single allocation beyond this (protobuf-c caps messages far lower). */
#define ALLOC_MAX ((size_t)UINT32_MAX)

#define HEAD_MAGIC 0x6e6b7061u /* "nkpa" */

struct arena;

typedef struct block {
	struct arena *owner; /* never changes: read from other threads */
	size_t cap;	     /* data bytes after this header */
	size_t used;	     /* bump offset into the data */
	size_t live;	     /* allocations not yet freed */
} block;

#define BLOCK_HEAD ALIGN_UP(sizeof(block))

/* In front of every allocation. */
typedef struct head {
	block *b;
	uint32_t size;
	uint32_t magic;
} head;

_Static_assert(sizeof(head) == ALIGN, "allocation header keeps 16-byte alignment");

typedef struct arena {
	ProtobufCAllocator pa;
	block *main;   /* kept for the thread's life */
	block *spill;  /* overflow block taking small allocations, or NULL */
	size_t live;   /* allocations not yet freed, all blocks */
	size_t blocks; /* overflow and own blocks alive */
} arena;

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static bool arena_key_ok;
static _Thread_local arena *mine;

_Noreturn static void misuse(const char *what)
{
	/* API misuse: abort loudly rather than corrupt a block another
	 * thread is using. No message bytes in the text. */
	fprintf(stderr, "nkp: arena misuse: %s\n", what);
	abort();
}

static uint8_t *block_data(block *b)
{
	return (uint8_t *)b + BLOCK_HEAD;
}

static block *block_new(arena *a, size_t cap)
{
	block *b = sodium_malloc(BLOCK_HEAD + cap);

	if (b == NULL) {
		return NULL;
	}
	b->owner = a;
	b->cap = cap;
	b->used = 0;
	b->live = 0;
	POISON(block_data(b), cap);
	return b;
}

static void block_wipe(block *b)
{
	UNPOISON(block_data(b), b->used);
	sodium_memzero(block_data(b), b->used);
	POISON(block_data(b), b->used);
	b->used = 0;
}

static void block_free(block *b)
{
	if (b == NULL) {
		return;
	}
	block_wipe(b);
	/* libsodium unmaps it: leave no stale poison behind for whatever
	 * is mapped there next. */
	UNPOISON(block_data(b), b->cap);
	sodium_free(b);
}

/* `need` counts the header and is a multiple of ALIGN. */
static void *block_take(block *b, size_t need, size_t size)
{
	head *h;

	if (b == NULL || b->cap - b->used < need) {
		return NULL;
	}
	h = (head *)(block_data(b) + b->used);
	UNPOISON(h, sizeof(*h));
	h->b = b;
	h->size = (uint32_t)size;
	h->magic = HEAD_MAGIC;
	POISON(h, sizeof(*h));
	b->used += need;
	b->live++;
	UNPOISON(h + 1, size);
	return h + 1;
}

static void *take_new_block(arena *a, size_t need, size_t size)
{
	bool own = need > OWN_BLOCK_MIN;
	block *b = block_new(a, own ? need : BLOCK_BYTES);

	if (b == NULL) {
		return NULL;
	}
	a->blocks++;
	if (!own) {
		/* The previous overflow block, if any, is freed with its
		 * last allocation. */
		a->spill = b;
	}
	return block_take(b, need, size);
}

static void *arena_alloc(void *data, size_t size)
{
	arena *a = data;
	size_t need;
	void *p;

	if (a == NULL || a != mine) {
		misuse("a thread allocated from another thread's arena");
	}
	if (size > ALLOC_MAX) {
		return NULL;
	}
	need = ALIGN_UP(sizeof(head) + size);
	p = block_take(a->main, need, size);
	if (p == NULL) {
		p = block_take(a->spill, need, size);
	}
	if (p == NULL) {
		p = take_new_block(a, need, size);
	}
	if (p != NULL) {
		a->live++;
	}
	return p;
}

static void arena_free(void *data, void *p)
{
	head *h;
	block *b;
	arena *a;

	if (p == NULL) {
		return;
	}
	h = (head *)p - 1;
	UNPOISON(h, sizeof(*h));
	if (h->magic != HEAD_MAGIC) {
		misuse("freed a block the arena did not hand out, or freed it twice");
	}
	b = h->b;
	a = b->owner;
	if (a != mine || a != data) {
		misuse("a message unpacked on one thread was freed on another");
	}
	h->magic = 0;
	POISON(h, sizeof(*h) + h->size);
	b->live--;
	a->live--;
	if (b->live != 0) {
		return;
	}
	if (b == a->main) {
		block_wipe(b);
		return;
	}
	if (b == a->spill) {
		a->spill = NULL;
	}
	a->blocks--;
	block_free(b);
}

/* Thread exit. Every message must be freed by then: a later free would
 * come from another thread. */
static void arena_destroy(void *arg)
{
	arena *a = arg;

	if (a->live != 0) {
		misuse("a thread exited with unpacked messages not yet freed");
	}
	mine = NULL;
	block_free(a->main);
	free(a);
}

static void arena_key_init(void)
{
	arena_key_ok = pthread_key_create(&arena_key, arena_destroy) == 0;
}

static arena *arena_new(void)
{
	arena *a;

	pthread_once(&arena_once, arena_key_init);
	if (!arena_key_ok) {
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (a == NULL) {
		return NULL;
	}
	a->main = block_new(a, BLOCK_BYTES);
	if (a->main == NULL) {
		goto free_arena;
	}
	if (pthread_setspecific(arena_key, a) != 0) {
		goto free_main;
	}
	a->pa.alloc = arena_alloc;
	a->pa.free = arena_free;
	a->pa.allocator_data = a;
	mine = a;
	return a;

free_main:
	block_free(a->main);
free_arena:
	free(a);
	return NULL;
}

ProtobufCAllocator *nkpi_arena_allocator(void)
{
	arena *a = mine;

	if (a == NULL) {
		a = arena_new();
	}
	return a != NULL ? &a->pa : NULL;
}

void nkpi_arena_stats_get(nkpi_arena_stats *out)
{
	arena *a = mine;

	memset(out, 0, sizeof(*out));
	if (a != NULL) {
		out->live = a->live;
		out->used = a->main->used;
		out->cap = a->main->cap;
		out->blocks = a->blocks;
	}
}

/* Reads bytes that may be poisoned (freed): not instrumented. */
NO_ASAN static void copy_raw(uint8_t *dst, const volatile uint8_t *src, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		dst[i] = src[i];
	}
}

bool nkpi_arena_peek(uint8_t *dst, size_t len)
{
	arena *a = mine;

	if (a == NULL || len > a->main->cap) {
		return false;
	}
	copy_raw(dst, block_data(a->main), len);
	return true;
}
