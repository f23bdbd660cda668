#include <pthread.h>
#include <string.h>

#include <sodium.h>

#include <nkp/key.h>

#include "internal.h"

/* The struct lives at the start of a sodium_malloc block: guard pages around
 * it, mlock'ed where the limit allows, wiped by sodium_free. */
struct nkp_key {
	uint8_t bytes[NKP_KEY_BYTES];
};

static nkp_err key_alloc(nkp_key **out)
{
	nkp_key *k = sodium_malloc(sizeof(*k));

	if (k == NULL) {
		return NKP_ERR_NOMEM;
	}
	*out = k;
	return NKP_OK;
}

nkp_err nkp_key_generate(nkp_key **out)
{
	nkp_key *k;
	nkp_err err = key_alloc(&k);

	if (err != NKP_OK) {
		return err;
	}
	randombytes_buf(k->bytes, sizeof(k->bytes));
	*out = k;
	return NKP_OK;
}

nkp_err nkp_key_from_bytes(const uint8_t bytes[static NKP_KEY_BYTES], nkp_key **out)
{
	nkp_key *k;
	nkp_err err = key_alloc(&k);

	if (err != NKP_OK) {
		return err;
	}
	memcpy(k->bytes, bytes, NKP_KEY_BYTES);
	*out = k;
	return NKP_OK;
}

nkp_err nkp_key_dup(const nkp_key *key, nkp_key **out)
{
	return nkp_key_from_bytes(key->bytes, out);
}

nkp_err nkp_key_derive(const nkp_key *parent, uint64_t id, const char ctx[static 8], nkp_key **out)
{
	nkp_key *k;
	nkp_err err = key_alloc(&k);

	if (err != NKP_OK) {
		return err;
	}
	if (crypto_kdf_derive_from_key(k->bytes, sizeof(k->bytes), id, ctx, parent->bytes) != 0) {
		sodium_free(k);
		return NKP_ERR_CRYPTO;
	}
	*out = k;
	return NKP_OK;
}

nkp_err nkpi_key_derive_borrowed(const nkp_key *parent, uint64_t id, const char ctx[static 8],
				 nkp_key **out)
{
	nkp_err err = nkpi_key_borrow(out);

	if (err != NKP_OK) {
		return err;
	}
	if (crypto_kdf_derive_from_key((*out)->bytes, NKP_KEY_BYTES, id, ctx, parent->bytes) != 0) {
		nkpi_key_release(*out);
		*out = NULL;
		return NKP_ERR_CRYPTO;
	}
	return NKP_OK;
}

/* Hosts make a primary, so a pair, for every version a push brings. */
static nkpi_slab pair_slab = NKPI_SLAB_INIT(2 * sizeof(nkp_key));

nkp_key *nkpi_key_pair_new(const nkp_key *key, uint64_t id, const char ctx[static 8])
{
	nkp_key *pair = nkpi_slab_get(&pair_slab);

	if (pair == NULL) {
		return NULL;
	}
	memcpy(pair[0].bytes, key->bytes, NKP_KEY_BYTES);
	if (crypto_kdf_derive_from_key(pair[1].bytes, NKP_KEY_BYTES, id, ctx, key->bytes) != 0) {
		nkpi_slab_put(&pair_slab, pair);
		return NULL;
	}
	return pair;
}

void nkpi_key_pair_free(nkp_key *pair)
{
	nkpi_slab_put(&pair_slab, pair);
}

nkp_key *nkpi_key_pair_second(nkp_key *pair)
{
	return pair + 1;
}

bool nkp_key_equal(const nkp_key *a, const nkp_key *b)
{
	return sodium_memcmp(a->bytes, b->bytes, NKP_KEY_BYTES) == 0;
}

void nkp_key_export(const nkp_key *key, uint8_t out[static NKP_KEY_BYTES])
{
	memcpy(out, key->bytes, NKP_KEY_BYTES);
}

void nkp_key_free(nkp_key *key)
{
	/* sodium_free wipes the whole region before unmapping it. */
	sodium_free(key);
}

void nkp_wipe(void *p, size_t len)
{
	if (p != NULL) {
		sodium_memzero(p, len);
	}
}

const uint8_t *nkpi_key_bytes(const nkp_key *k)
{
	return k->bytes;
}

uint8_t *nkpi_key_bytes_mut(nkp_key *k)
{
	return k->bytes;
}

/* Per-thread cache of locked key blocks for one call's temporaries (VM KEKs
 * on every unwrap): sodium_malloc costs several system calls, an unwrap only
 * two AEAD opens. Cached blocks are always wiped; the cache is freed when
 * its thread exits. */
#define TEMP_CACHE 4

typedef struct temp_cache {
	size_t n;
	nkp_key *keys[TEMP_CACHE];
} temp_cache;

static pthread_key_t temp_key;
static pthread_once_t temp_once = PTHREAD_ONCE_INIT;
static bool temp_ok;

static void temp_cache_free(void *arg)
{
	temp_cache *c = arg;

	for (size_t i = 0; i < c->n; i++) {
		sodium_free(c->keys[i]);
	}
	free(c);
}

static void temp_init(void)
{
	temp_ok = pthread_key_create(&temp_key, temp_cache_free) == 0;
}

static temp_cache *temp_get(void)
{
	temp_cache *c;

	pthread_once(&temp_once, temp_init);
	if (!temp_ok) {
		return NULL;
	}
	c = pthread_getspecific(temp_key);
	if (c == NULL) {
		c = calloc(1, sizeof(*c));
		if (c != NULL && pthread_setspecific(temp_key, c) != 0) {
			free(c);
			c = NULL;
		}
	}
	return c;
}

/* Per-thread locked scratch buffer for packed or opened messages that may
 * carry keys (see nkpi_scratch in internal.h). Freed, wiped, when its
 * thread exits. */
typedef struct scratch {
	uint8_t *buf;
	size_t cap;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_ok;

static void scratch_free(void *arg)
{
	scratch *sc = arg;

	sodium_free(sc->buf);
	free(sc);
}

static void scratch_init(void)
{
	scratch_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

static scratch *scratch_get(void)
{
	scratch *sc;

	pthread_once(&scratch_once, scratch_init);
	if (!scratch_ok) {
		return NULL;
	}
	sc = pthread_getspecific(scratch_key);
	if (sc == NULL) {
		sc = calloc(1, sizeof(*sc));
		if (sc != NULL && pthread_setspecific(scratch_key, sc) != 0) {
			free(sc);
			sc = NULL;
		}
	}
	return sc;
}

/* A buffer grown past this for one large message is given back at the next
 * small one, so a thread does not keep megabytes locked for nothing. */
#define SCRATCH_KEEP (64u << 10)

uint8_t *nkpi_scratch(size_t len)
{
	scratch *sc = scratch_get();
	size_t cap;

	if (sc == NULL) {
		return NULL;
	}
	if (sc->cap < len || (sc->cap > SCRATCH_KEEP && len <= SCRATCH_KEEP)) {
		cap = len + len / 2;
		if (len <= SCRATCH_KEEP && cap > SCRATCH_KEEP) {
			cap = SCRATCH_KEEP; /* never given back: no reallocation per call */
		}
		cap = cap < 4096 ? 4096 : cap;
		sodium_free(sc->buf);
		sc->cap = 0;
		sc->buf = sodium_malloc(cap);
		if (sc->buf == NULL) {
			return NULL;
		}
		sc->cap = cap;
	}
	return sc->buf;
}

nkp_err nkpi_key_borrow(nkp_key **out)
{
	temp_cache *c = temp_get();

	if (c != NULL && c->n > 0) {
		*out = c->keys[--c->n];
		return NKP_OK;
	}
	return key_alloc(out);
}

void nkpi_key_release(nkp_key *k)
{
	temp_cache *c;

	if (k == NULL) {
		return;
	}
	sodium_memzero(k->bytes, sizeof(k->bytes));
	c = temp_get();
	if (c != NULL && c->n < TEMP_CACHE) {
		c->keys[c->n++] = k;
		return;
	}
	sodium_free(k);
}
