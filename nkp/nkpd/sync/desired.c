/* Desired-state snapshots (docs/PROTOCOL.md "Reconciler"): after each
 * commit the model is copied into an immutable, reference-counted
 * snapshot and packed once as the nkp.wire.DesiredState every host gets,
 * so pushes are sealed outside nkpd_svc.lock. Keys live in one
 * sodium_malloc block. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "session.h"
#include "sync/engine.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

static nkp_err desired_fill(const nkpd_svc *s, nkpd_desired *d);

static nkp_err desired_fill(const nkpd_svc *s, nkpd_desired *d)
{
	size_t ki = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		const nkpd_provider *p = s->providers[i];
		nkpd_desired_provider *dp = &d->providers[i];

		memcpy(dp->id, p->id, NKP_ID_BYTES);
		memcpy(dp->name, p->name, sizeof(dp->name));
		dp->is_default = p->is_default;
		dp->backed_up = p->backed_up;
		dp->tpm_only = p->tpm_only;
		dp->key_index = ki;
		dp->n_versions = p->n_versions;
		dp->versions = calloc(p->n_versions + 1, sizeof(*dp->versions));
		if (dp->versions == NULL) {
			return NKP_ERR_NOMEM;
		}
		for (size_t j = 0; j < p->n_versions; j++, ki++) {
			dp->versions[j].version = p->versions[j].version;
			dp->versions[j].state = (uint32_t)p->versions[j].state;
			dp->versions[j].created_unix = p->versions[j].created_unix;
			nkp_key_export(p->versions[j].key, d->keys + ki * NKP_KEY_BYTES);
		}
	}
	return NKP_OK;
}

nkp_err nkpd_sync_desired_build(const nkpd_svc *s, nkpd_desired **out)
{
	nkpd_desired *d = calloc(1, sizeof(*d));
	size_t nk = 0;
	nkp_err err = NKP_ERR_NOMEM;

	if (d == NULL) {
		return NKP_ERR_NOMEM;
	}
	atomic_init(&d->refs, 1);
	for (size_t i = 0; i < s->n_providers; i++) {
		nk += s->providers[i]->n_versions;
	}
	d->epoch = s->epoch;
	d->generation = s->generation;
	d->n_providers = s->n_providers;
	d->n_keys = nk;
	d->providers = calloc(s->n_providers + 1, sizeof(*d->providers));
	d->keys = sodium_malloc((nk + 1) * NKP_KEY_BYTES);
	if (d->providers != NULL && d->keys != NULL) {
		err = desired_fill(s, d);
	}
	if (err == NKP_OK) {
		err = nkpd_sync_desired_pack(d);
	}
	if (err != NKP_OK) {
		nkpd_desired_release(d);
		return err;
	}
	*out = d;
	return NKP_OK;
}

/* The wire form of a push points into the snapshot's arrays. Up to a few
 * providers and versions (the common case) it lives on the stack: no
 * allocation per host and push. */
#define PUSH_STACK_PROVIDERS 8u
#define PUSH_STACK_KEYS 64u

typedef struct push_arrays {
	Nkp__Wire__ProviderKeys *pk;
	Nkp__Wire__ProviderKeys **pkp;
	Nkp__Wire__VersionKey *vk;
	Nkp__Wire__VersionKey **vkp;
	bool heap;
	Nkp__Wire__ProviderKeys pk_s[PUSH_STACK_PROVIDERS];
	Nkp__Wire__ProviderKeys *pkp_s[PUSH_STACK_PROVIDERS];
	Nkp__Wire__VersionKey vk_s[PUSH_STACK_KEYS];
	Nkp__Wire__VersionKey *vkp_s[PUSH_STACK_KEYS];
} push_arrays;

static bool push_arrays_init(push_arrays *a, const nkpd_desired *d)
{
	a->heap = d->n_providers > PUSH_STACK_PROVIDERS || d->n_keys > PUSH_STACK_KEYS;
	if (!a->heap) {
		a->pk = a->pk_s;
		a->pkp = a->pkp_s;
		a->vk = a->vk_s;
		a->vkp = a->vkp_s;
		return true;
	}
	a->pk = calloc(d->n_providers + 1, sizeof(*a->pk));
	a->pkp = calloc(d->n_providers + 1, sizeof(*a->pkp));
	a->vk = calloc(d->n_keys + 1, sizeof(*a->vk));
	a->vkp = calloc(d->n_keys + 1, sizeof(*a->vkp));
	return a->pk != NULL && a->pkp != NULL && a->vk != NULL && a->vkp != NULL;
}

static void push_arrays_fini(push_arrays *a)
{
	if (a->heap) {
		free(a->pk);
		free(a->pkp);
		free(a->vk);
		free(a->vkp);
	}
}

/* tpm-only providers are left out: no host is attested yet. */
static void fill_desired(const nkpd_desired *d, push_arrays *a, Nkp__Wire__DesiredState *ds)
{
	size_t np = 0, vi = 0;

	for (size_t i = 0; i < d->n_providers; i++) {
		const nkpd_desired_provider *dp = &d->providers[i];
		Nkp__Wire__ProviderKeys *pk = &a->pk[np];

		if (dp->tpm_only) {
			continue;
		}
		nkp__wire__provider_keys__init(pk);
		pk->id.data = (uint8_t *)dp->id;
		pk->id.len = NKP_ID_BYTES;
		pk->name = (char *)dp->name;
		pk->is_default = dp->is_default;
		pk->backed_up = dp->backed_up;
		pk->tpm_only = dp->tpm_only;
		pk->versions = &a->vkp[vi];
		pk->n_versions = dp->n_versions;
		for (size_t j = 0; j < dp->n_versions; j++, vi++) {
			Nkp__Wire__VersionKey *vk = &a->vk[vi];

			nkp__wire__version_key__init(vk);
			vk->version = dp->versions[j].version;
			vk->state = dp->versions[j].state;
			vk->created_unix = dp->versions[j].created_unix;
			vk->key.data = d->keys + (dp->key_index + j) * NKP_KEY_BYTES;
			vk->key.len = NKP_KEY_BYTES;
			a->vkp[vi] = vk;
		}
		a->pkp[np++] = pk;
	}
	ds->epoch = d->epoch;
	ds->counter = d->generation;
	ds->providers = a->pkp;
	ds->n_providers = np;
}

/* Serializes `d` once (at each committed change, not per host and push)
 * into locked memory, and digests exactly those bytes. */
nkp_err nkpd_sync_desired_pack(nkpd_desired *d)
{
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	push_arrays a;
	nkp_err err = NKP_ERR_NOMEM;

	if (push_arrays_init(&a, d)) {
		fill_desired(d, &a, &ds);
		d->packed_len = nkp__wire__desired_state__get_packed_size(&ds);
		d->packed = sodium_malloc(d->packed_len + 1);
		if (d->packed != NULL) {
			nkp__wire__desired_state__pack(&ds, d->packed);
			nkpi_desired_digest(d->packed, d->packed_len, d->digest);
			err = NKP_OK;
		}
	}
	push_arrays_fini(&a);
	return err;
}
