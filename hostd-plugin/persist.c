/* keys.nkp: the applied providers, generation and usage, sealed under the
 * host sealing key. Serialised key bytes only ever sit in sodium_malloc
 * memory (the per-thread scratch buffer for the packed message) and are
 * wiped after use. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <sodium.h>

#include <nkp/file.h>

#include "hostd-internal.h"

#define KEYS_LABEL "nkp-host-keys"
#define KEYS_FORMAT_VERSION 1u

uint64_t hostd_now(void)
{
	return nkpi_now();
}

/* Wire form of the held providers. The key fields point at the held
 * primaries' own locked key bytes (packing only reads them): no copy. */
typedef struct wire_state {
	Nkp__Wire__ProviderKeys *providers;
	Nkp__Wire__ProviderKeys **pp;
	Nkp__Wire__VersionKey *versions;
	Nkp__Wire__VersionKey **vp;
	size_t n_versions;
} wire_state;

static void wire_state_fini(wire_state *w)
{
	free(w->providers);
	free(w->pp);
	free(w->versions);
	free(w->vp);
}

static void wire_provider(const hprovider *p, Nkp__Wire__ProviderKeys *wp,
			  Nkp__Wire__VersionKey **vp, Nkp__Wire__VersionKey *vs)
{
	nkp__wire__provider_keys__init(wp);
	wp->id.data = (uint8_t *)p->id;
	wp->id.len = NKP_ID_BYTES;
	wp->name = (char *)p->name;
	wp->is_default = p->is_default;
	wp->backed_up = p->backed_up;
	wp->tpm_only = p->tpm_only;
	wp->n_versions = p->n_versions;
	wp->versions = vp;
	for (size_t j = 0; j < p->n_versions; j++) {
		const hversion *v = &p->versions[j];

		nkp__wire__version_key__init(&vs[j]);
		vs[j].version = v->version;
		vs[j].state = v->state;
		vs[j].created_unix = v->created_unix;
		vs[j].key.data = (uint8_t *)nkpi_key_bytes(nkp_primary_key(v->primary));
		vs[j].key.len = NKP_KEY_BYTES;
		vp[j] = &vs[j];
	}
}

static nkp_err wire_state_init(const hstate *s, wire_state *w)
{
	size_t k = 0;

	memset(w, 0, sizeof(*w));
	for (size_t i = 0; i < s->n; i++) {
		w->n_versions += s->p[i].n_versions;
	}
	w->providers = calloc(s->n + 1, sizeof(*w->providers));
	w->pp = calloc(s->n + 1, sizeof(*w->pp));
	w->versions = calloc(w->n_versions + 1, sizeof(*w->versions));
	w->vp = calloc(w->n_versions + 1, sizeof(*w->vp));
	if (w->providers == NULL || w->pp == NULL || w->versions == NULL || w->vp == NULL) {
		wire_state_fini(w);
		return NKP_ERR_NOMEM;
	}
	for (size_t i = 0; i < s->n; i++) {
		wire_provider(&s->p[i], &w->providers[i], &w->vp[k], &w->versions[k]);
		w->pp[i] = &w->providers[i];
		k += s->p[i].n_versions;
	}
	return NKP_OK;
}

static nkp_err save_locked(nkp_hostd *h, const hstate *s, uint64_t generation)
{
	Nkp__Hoststate__HostKeys msg = NKP__HOSTSTATE__HOST_KEYS__INIT;
	Nkp__Wire__VersionUsage **usage = NULL;
	size_t n_usage = 0, len;
	wire_state w;
	uint8_t *buf;
	nkp_err err = wire_state_init(s, &w);

	if (err != NKP_OK) {
		return err;
	}
	err = hstate_usage(s, &usage, &n_usage);
	if (err != NKP_OK) {
		goto out_wire;
	}
	msg.format_version = KEYS_FORMAT_VERSION;
	msg.service_key.data = h->service_key;
	msg.service_key.len = NKP_PUBKEY_BYTES;
	msg.applied_generation = generation;
	msg.n_providers = s->n;
	msg.providers = w.pp;
	msg.n_usage = n_usage;
	msg.usage = usage;
	msg.saved_unix = hostd_now();
	len = nkp__hoststate__host_keys__get_packed_size(&msg);
	/* Packed into this thread's locked scratch buffer (no sodium_malloc
	 * per save); wiped as soon as it is written. */
	buf = nkpi_scratch(len + 1);
	if (buf == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_usage;
	}
	nkp__hoststate__host_keys__pack(&msg, buf);
	err = nkp_sealfile_write(h->keys_path, h->seal_key, KEYS_LABEL, buf, len);
	sodium_memzero(buf, len);
	if (err == NKP_OK) {
		atomic_store(&h->usage_dirty, false);
		atomic_store(&h->last_flush, hostd_now());
	}
out_usage:
	hstate_usage_free(usage, n_usage);
out_wire:
	wire_state_fini(&w);
	return err;
}

nkp_err hostd_save(nkp_hostd *h, const hstate *s, uint64_t generation)
{
	nkp_err err;

	pthread_mutex_lock(&h->save_lock);
	err = save_locked(h, s, generation);
	pthread_mutex_unlock(&h->save_lock);
	return err;
}

static nkp_err keys_check(const Nkp__Hoststate__HostKeys *m)
{
	if (nkpi_has_unknown(&m->base)) {
		return NKP_ERR_PARSE;
	}
	if (m->format_version != KEYS_FORMAT_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (m->service_key.len != 0 && m->service_key.len != NKP_PUBKEY_BYTES) {
		return NKP_ERR_PARSE;
	}
	return hstate_validate(m->n_providers, m->providers);
}

/* Loads keys.nkp into h (called from open, before anyone else sees h).
 * Absent: nothing held yet. Temp files a crash left mid-write are removed. */
nkp_err hostd_load(nkp_hostd *h)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Hoststate__HostKeys *m;
	nkp_err err = nkp_sealfile_read(h->keys_path, h->seal_key, KEYS_LABEL, &buf, &len);

	if (err == NKP_OK || err == NKP_ERR_NOT_FOUND) {
		nkp_file_remove_stale_temps(h->keys_path);
	}
	if (err == NKP_ERR_NOT_FOUND) {
		return NKP_OK;
	}
	if (err != NKP_OK) {
		goto out_failed;
	}
	m = nkp__hoststate__host_keys__unpack(&nkpi_wiping_allocator, len, buf);
	if (m == NULL) {
		err = NKP_ERR_PARSE;
		goto out_buf;
	}
	err = keys_check(m);
	if (err == NKP_OK) {
		err = hstate_build(m->n_providers, m->providers, NULL, &h->state);
	}
	if (err == NKP_OK) {
		hstate_load_usage(&h->state, m->n_usage, m->usage);
		/* A generation counts only for the service that pushed it. */
		h->generation = m->service_key.len == NKP_PUBKEY_BYTES &&
						sodium_memcmp(m->service_key.data, h->service_key,
							      NKP_PUBKEY_BYTES) == 0
					? m->applied_generation
					: 0;
	}
	nkp__hoststate__host_keys__free_unpacked(m, &nkpi_wiping_allocator);
out_buf:
	nkp_secure_free(buf);
out_failed:
	if (err != NKP_OK && err != NKP_ERR_NOMEM && err != NKP_ERR_IO && err != NKP_ERR_PERM) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-KEYS",
			"%s is damaged or was tampered with (%s); it is left as it is and nothing "
			"starts on it. Move it aside and start again: the host then holds no key "
			"until the service pushes them back", h->keys_path, nkp_strerror(err));
	}
	return err;
}

void hostd_maybe_flush(nkp_hostd *h, uint64_t min_age)
{
	uint64_t now = hostd_now();

	if (!atomic_load(&h->usage_dirty) || now < atomic_load(&h->last_flush) + min_age) {
		return;
	}
	pthread_rwlock_rdlock(&h->lock);
	if (hostd_save(h, &h->state, h->generation) != NKP_OK) {
		nkp_event(h->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->host_name,
			  "could not save usage counters to %s", h->keys_path);
		/* Try again later, not on every call. */
		atomic_store(&h->last_flush, now);
	}
	pthread_rwlock_unlock(&h->lock);
}

nkp_err nkp_hostd_flush(nkp_hostd *h)
{
	nkp_err err = NKP_OK;

	if (h == NULL) {
		return NKP_ERR_INVALID;
	}
	pthread_rwlock_rdlock(&h->lock);
	if (atomic_load(&h->usage_dirty)) {
		err = hostd_save(h, &h->state, h->generation);
	}
	pthread_rwlock_unlock(&h->lock);
	return err;
}
