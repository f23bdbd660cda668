#include <sys/prctl.h>
#include <sys/resource.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* 0: not probed yet, 1: locking works, 2: it failed. */
static atomic_int mlock_state;
static pthread_once_t mlock_once = PTHREAD_ONCE_INIT;

static void mlock_probe(void)
{
	struct rlimit rl = {0, 0};
	char limit[32] = "unknown";
	void *p = NULL;
	int e = 0;

	if (posix_memalign(&p, 4096, NKP_MLOCK_PROBE_BYTES) != 0) {
		atomic_store(&mlock_state, 1); /* no memory to probe with: say nothing */
		return;
	}
	if (sodium_mlock(p, NKP_MLOCK_PROBE_BYTES) == 0) {
		(void)sodium_munlock(p, NKP_MLOCK_PROBE_BYTES);
		free(p);
		atomic_store(&mlock_state, 1);
		return;
	}
	e = errno;
	free(p);
	atomic_store(&mlock_state, 2);
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
		if (rl.rlim_cur == RLIM_INFINITY) {
			snprintf(limit, sizeof(limit), "unlimited");
		} else {
			snprintf(limit, sizeof(limit), "%llu KiB",
				 (unsigned long long)rl.rlim_cur / 1024u);
		}
	}
	nkp_log(NKP_LOG_WARN, "NKP-MLOCK-FAILED",
		"cannot lock memory for keys (%s; RLIMIT_MEMLOCK %s): keys may be written to swap. "
		"Raise the limit (LimitMEMLOCK= in the unit, ulimit -l) to at least %u KiB or give "
		"the process CAP_IPC_LOCK",
		strerror(e), limit, NKP_MLOCK_PROBE_BYTES / 1024u);
}

bool nkp_memory_lock_check(void)
{
	if (sodium_init() < 0) {
		return false;
	}
	pthread_once(&mlock_once, mlock_probe);
	return atomic_load(&mlock_state) == 1;
}

const char *nkp_version(void)
{
	return NKP_VERSION_STRING;
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
