/* The providers a host holds: pushed or persisted state, checked by the
 * keyset codec, built into locked-memory primaries; lookups and usage
 * counters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hostd-internal.h"

static void hprovider_fini(hprovider *p)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		nkp_primary_free(p->versions[i].primary);
	}
	free(p->versions);
	sodium_memzero(p, sizeof(*p));
}

void hstate_fini(hstate *s)
{
	if (s == NULL) {
		return;
	}
	for (size_t i = 0; i < s->n; i++) {
		hprovider_fini(&s->p[i]);
	}
	free(s->p);
	s->p = NULL;
	s->n = 0;
}

/* The primary `held` already has for this provider version with the
 * same key bytes, or NULL. */
static nkp_primary *held_primary(const hstate *held, const uint8_t id[static NKP_ID_BYTES],
				 const nkpi_keyset_version *v)
{
	for (size_t i = 0; held != NULL && i < held->n; i++) {
		const hprovider *p = &held->p[i];

		if (memcmp(p->id, id, NKP_ID_BYTES) != 0) {
			continue;
		}
		for (size_t j = 0; j < p->n_versions; j++) {
			nkp_primary *pr = p->versions[j].primary;

			if (p->versions[j].version == v->version &&
			    sodium_memcmp(nkpi_key_bytes(nkp_primary_key(pr)), v->key,
					  NKP_KEY_BYTES) == 0) {
				return pr;
			}
		}
	}
	return NULL;
}

static nkp_err version_build(const uint8_t id[static NKP_ID_BYTES], const nkpi_keyset_version *v,
			     const hstate *held, hversion *out)
{
	nkp_primary *same = held_primary(held, id, v);
	nkp_key *key = NULL;
	nkp_err err;

	/* Most pushes change one version or none: the others are shared with
	 * the held state (two locked blocks fewer to make and free per
	 * version and push). */
	if (same != NULL) {
		out->primary = nkpi_primary_ref(same);
		goto fill;
	}
	/* The key is only copied into the primary: a borrowed block (wiped on
	 * release) saves a sodium_malloc/sodium_free per version. */
	err = nkpi_key_borrow(&key);
	if (err != NKP_OK) {
		return err;
	}
	memcpy(nkpi_key_bytes_mut(key), v->key, NKP_KEY_BYTES);
	err = nkp_primary_new(id, v->version, key, &out->primary);
	nkpi_key_release(key);
	if (err != NKP_OK) {
		return err;
	}

fill:
	out->version = v->version;
	out->state = (nkp_version_state)v->state;
	out->created_unix = v->created_unix;
	return NKP_OK;
}

static nkp_err provider_build(const nkpi_keyset *ks, size_t i, const hstate *held, hprovider *out)
{
	nkpi_keyset_provider p;
	nkp_err err = NKP_OK;

	nkpi_keyset_provider_at(ks, i, &p);
	memcpy(out->id, p.id, NKP_ID_BYTES);
	snprintf(out->name, sizeof(out->name), "%s", p.name);
	out->is_default = p.is_default;
	out->backed_up = p.backed_up;
	out->tpm_only = p.tpm_only;
	out->versions = calloc(p.n_versions, sizeof(*out->versions));
	if (out->versions == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (size_t j = 0; j < p.n_versions && err == NKP_OK; j++) {
		nkpi_keyset_version v;

		nkpi_keyset_version_at(ks, i, j, &v);
		err = version_build(out->id, &v, held, &out->versions[j]);
		if (err == NKP_OK) {
			out->n_versions++;
		}
	}
	return err;
}

nkp_err hstate_build(const nkpi_keyset *ks, const hstate *held, hstate *out)
{
	hstate s = {0};
	nkp_err err = NKP_OK;

	if (ks->n_providers > 0) {
		s.p = calloc(ks->n_providers, sizeof(*s.p));
		if (s.p == NULL) {
			return NKP_ERR_NOMEM;
		}
	}
	for (size_t i = 0; i < ks->n_providers; i++) {
		/* Counted before building so a half-built provider is freed too. */
		s.n++;
		err = provider_build(ks, i, held, &s.p[i]);
		if (err != NKP_OK) {
			goto fail_state;
		}
	}
	*out = s;
	return NKP_OK;

fail_state:
	hstate_fini(&s);
	return err;
}

static void version_copy_usage(hversion *to, const hversion *from)
{
	atomic_store(&to->keysafes, atomic_load(&from->keysafes));
	atomic_store(&to->created, atomic_load(&from->created));
	atomic_store(&to->rewrapped, atomic_load(&from->rewrapped));
	atomic_store(&to->unwrapped, atomic_load(&from->unwrapped));
	atomic_store(&to->last_used, atomic_load(&from->last_used));
}

void hstate_carry_usage(hstate *s, const hstate *old)
{
	for (size_t i = 0; i < s->n; i++) {
		const hprovider *op = hstate_find_id(old, s->p[i].id);

		for (size_t j = 0; op != NULL && j < s->p[i].n_versions; j++) {
			const hversion *ov = hprovider_version(op, s->p[i].versions[j].version);

			if (ov != NULL) {
				version_copy_usage(&s->p[i].versions[j], ov);
			}
		}
	}
}

void hstate_load_usage(hstate *s, size_t n, Nkp__Wire__VersionUsage *const *u)
{
	for (size_t i = 0; i < n; i++) {
		hprovider *p;
		hversion *v;

		if (u[i] == NULL || u[i]->provider_id.len != NKP_ID_BYTES) {
			continue;
		}
		p = hstate_find_id(s, u[i]->provider_id.data);
		v = p == NULL ? NULL : hprovider_version(p, u[i]->version);
		if (v == NULL) {
			continue;
		}
		atomic_store(&v->keysafes,
			     (int64_t)(u[i]->keysafes > INT64_MAX ? INT64_MAX : u[i]->keysafes));
		atomic_store(&v->created, u[i]->created);
		atomic_store(&v->rewrapped, u[i]->rewrapped);
		atomic_store(&v->unwrapped, u[i]->unwrapped);
		atomic_store(&v->last_used, u[i]->last_used_unix);
	}
}

hprovider *hstate_find_id(const hstate *s, const uint8_t id[static NKP_ID_BYTES])
{
	for (size_t i = 0; i < s->n; i++) {
		if (memcmp(s->p[i].id, id, NKP_ID_BYTES) == 0) {
			return &s->p[i];
		}
	}
	return NULL;
}

hprovider *hstate_find_name(const hstate *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->p[i].name, name) == 0) {
			return &s->p[i];
		}
	}
	return NULL;
}

hprovider *hstate_find_default(const hstate *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i].is_default) {
			return &s->p[i];
		}
	}
	return NULL;
}

hversion *hprovider_version(const hprovider *p, uint32_t version)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version == version) {
			return &p->versions[i];
		}
	}
	return NULL;
}

hversion *hprovider_active(const hprovider *p)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].state == NKP_VERSION_ACTIVE) {
			return &p->versions[i];
		}
	}
	return NULL;
}

static nkp_err usage_one(const hprovider *p, const hversion *v, Nkp__Wire__VersionUsage **out)
{
	Nkp__Wire__VersionUsage *u = malloc(sizeof(*u) + NKP_ID_BYTES);
	int64_t known = atomic_load(&v->keysafes);

	if (u == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__wire__version_usage__init(u);
	memcpy(u + 1, p->id, NKP_ID_BYTES);
	u->provider_id.data = (uint8_t *)(u + 1);
	u->provider_id.len = NKP_ID_BYTES;
	u->version = v->version;
	u->keysafes = known < 0 ? 0 : (uint64_t)known;
	u->created = atomic_load(&v->created);
	u->rewrapped = atomic_load(&v->rewrapped);
	u->unwrapped = atomic_load(&v->unwrapped);
	u->last_used_unix = atomic_load(&v->last_used);
	*out = u;
	return NKP_OK;
}

nkp_err hstate_usage(const hstate *s, Nkp__Wire__VersionUsage ***out, size_t *n)
{
	size_t total = 0, k = 0;
	Nkp__Wire__VersionUsage **u;
	nkp_err err = NKP_OK;

	for (size_t i = 0; i < s->n; i++) {
		total += s->p[i].n_versions;
	}
	u = calloc(total + 1, sizeof(*u));
	if (u == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (size_t i = 0; i < s->n && err == NKP_OK; i++) {
		for (size_t j = 0; j < s->p[i].n_versions && err == NKP_OK; j++) {
			err = usage_one(&s->p[i], &s->p[i].versions[j], &u[k]);
			k += err == NKP_OK;
		}
	}
	if (err != NKP_OK) {
		hstate_usage_free(u, k);
		return err;
	}
	*out = u;
	*n = k;
	return NKP_OK;
}

void hstate_usage_free(Nkp__Wire__VersionUsage **u, size_t n)
{
	if (u == NULL) {
		return;
	}
	for (size_t i = 0; i < n; i++) {
		free(u[i]);
	}
	free(u);
}
