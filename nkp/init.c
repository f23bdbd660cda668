#include <sys/prctl.h>
#include <sys/resource.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"

nkp_err nkp_init(void)
{
	/* 0: initialised now, 1: already was, -1: failure. */
	return sodium_init() < 0 ? NKP_ERR_CRYPTO : NKP_OK;
}

nkp_err nkp_harden_process(void)
{
	struct rlimit none = {0, 0};
	nkp_err err = NKP_OK;

	if (setrlimit(RLIMIT_CORE, &none) != 0) {
		err = NKP_ERR_PERM;
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		err = NKP_ERR_PERM;
	}
	return err;
}

const char *nkp_version(void)
{
	return NKP_VERSION_STRING;
}

static _Atomic uint64_t fixed_clock;

uint64_t nkpi_now(void)
{
	uint64_t fixed = atomic_load(&fixed_clock);

	return fixed != 0 ? fixed : (uint64_t)time(NULL);
}

void nkpi_set_clock(uint64_t fixed_unix)
{
	atomic_store(&fixed_clock, fixed_unix);
}

/* protobuf-c allocator that wipes on free. A size header in front of each
 * block lets free know how much to wipe. */
typedef struct {
	size_t size;
	max_align_t align_;
} block_head;

static void *wiping_alloc(void *data, size_t size)
{
	block_head *h;

	(void)data;
	h = malloc(sizeof(*h) + size);
	if (h == NULL) {
		return NULL;
	}
	h->size = size;
	return h + 1;
}

static void wiping_free(void *data, void *p)
{
	block_head *h;

	(void)data;
	if (p == NULL) {
		return;
	}
	h = (block_head *)p - 1;
	sodium_memzero(p, h->size);
	free(h);
}

ProtobufCAllocator nkpi_wiping_allocator = {
	.alloc = wiping_alloc,
	.free = wiping_free,
	.allocator_data = NULL,
};
