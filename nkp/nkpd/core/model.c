/* The service model: providers with their versions and keys, enrolled
 * hosts. Lookups, versions, copies and freeing; callers hold nkpd_svc.lock. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/kms.h"

nkpd_provider *nkpd_model_provider_find(const nkpd_svc *s, const char *name)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (strcmp(s->providers[i]->name, name) == 0) {
			return s->providers[i];
		}
	}
	return NULL;
}

nkpd_provider *nkpd_model_provider_find_id(const nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES])
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (memcmp(s->providers[i]->id, id, NKP_ID_BYTES) == 0) {
			return s->providers[i];
		}
	}
	return NULL;
}

nkpd_provider *nkpd_model_provider_default(const nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (s->providers[i]->is_default) {
			return s->providers[i];
		}
	}
	return NULL;
}

nkpd_host *nkpd_model_host_find(const nkpd_svc *s, const char *name)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (strcmp(s->hosts[i]->conf.name, name) == 0) {
			return s->hosts[i];
		}
	}
	return NULL;
}

nkpd_version *nkpd_model_version_find(const nkpd_provider *p, uint32_t version)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version == version) {
			return &p->versions[i];
		}
	}
	return NULL;
}

static nkpd_version *version_in_state(const nkpd_provider *p, nkp_version_state st)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].state == st) {
			return &p->versions[i];
		}
	}
	return NULL;
}

nkpd_version *nkpd_model_version_active(const nkpd_provider *p)
{
	return version_in_state(p, NKP_VERSION_ACTIVE);
}

nkpd_version *nkpd_model_version_staged(const nkpd_provider *p)
{
	return version_in_state(p, NKP_VERSION_STAGED);
}

uint32_t nkpd_model_version_max(const nkpd_provider *p)
{
	uint32_t max = 0;

	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version > max) {
			max = p->versions[i].version;
		}
	}
	return max;
}

void nkpd_model_provider_free(nkpd_provider *p)
{
	if (p == NULL) {
		return;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		nkp_key_free(p->versions[i].key);
	}
	free(p->versions);
	free(p->kms_keys);
	nkpd_kms_unref(p->kms);
	sodium_memzero(p, sizeof(*p));
	free(p);
}

/* Takes ownership of `key` on success only. Versions stay sorted. */
nkp_err nkpd_model_add_version(nkpd_provider *p, uint32_t version, nkp_version_state st,
			       uint64_t created, nkp_key *key)
{
	nkpd_version *v;
	size_t at = p->n_versions;

	if (version == 0 || nkpd_model_version_find(p, version) != NULL ||
	    p->n_versions >= NKP_BACKUP_MAX_VERSIONS) {
		return NKP_ERR_INVALID;
	}
	v = realloc(p->versions, (p->n_versions + 1) * sizeof(*v));
	if (v == NULL) {
		return NKP_ERR_NOMEM;
	}
	p->versions = v;
	while (at > 0 && v[at - 1].version > version) {
		v[at] = v[at - 1];
		at--;
	}
	v[at] = (nkpd_version){
		.version = version, .state = st, .created_unix = created, .key = key};
	p->n_versions++;
	return NKP_OK;
}

void nkpd_model_remove_version(nkpd_provider *p, uint32_t version)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version == version) {
			nkp_key_free(p->versions[i].key);
			memmove(&p->versions[i], &p->versions[i + 1],
				(p->n_versions - i - 1) * sizeof(p->versions[0]));
			p->n_versions--;
			return;
		}
	}
}

nkp_err nkpd_model_provider_dup(const nkpd_provider *p, nkpd_provider **out)
{
	nkpd_provider *c = calloc(1, sizeof(*c));
	nkp_err err = NKP_OK;

	if (c == NULL) {
		return NKP_ERR_NOMEM;
	}
	*c = *p;
	c->versions = NULL;
	c->n_versions = 0;
	nkpd_kms_ref(c->kms);
	c->kms_keys = NULL;
	c->n_kms_keys = 0;
	if (p->n_kms_keys != 0) {
		c->kms_keys = malloc(p->n_kms_keys * sizeof(*c->kms_keys));
		if (c->kms_keys == NULL) {
			nkpd_model_provider_free(c);
			return NKP_ERR_NOMEM;
		}
		memcpy(c->kms_keys, p->kms_keys, p->n_kms_keys * sizeof(*c->kms_keys));
		c->n_kms_keys = p->n_kms_keys;
	}
	for (size_t i = 0; i < p->n_versions && err == NKP_OK; i++) {
		nkp_key *k = NULL;
		const nkpd_version *v = &p->versions[i];

		err = nkp_key_dup(v->key, &k);
		if (err == NKP_OK) {
			err = nkpd_model_add_version(c, v->version, v->state, v->created_unix, k);
			if (err != NKP_OK) {
				nkp_key_free(k);
			}
		}
	}
	if (err != NKP_OK) {
		nkpd_model_provider_free(c);
		return err;
	}
	*out = c;
	return NKP_OK;
}

void nkpd_model_host_free(nkpd_host *h)
{
	if (h == NULL) {
		return;
	}
	/* The sync engine freed h->link when it stopped. */
	nkpd_desired_release(h->wipe_snap);
	free(h->st.usage);
	free(h->conf.ek_ca);
	free(h);
}

void nkpd_model_free(nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		nkpd_model_provider_free(s->providers[i]);
	}
	free(s->providers);
	s->providers = NULL;
	s->n_providers = 0;
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_model_host_free(s->hosts[i]);
	}
	free(s->hosts);
	s->hosts = NULL;
	s->n_hosts = 0;
	s->n_baselines = 0;
}

bool nkpd_model_has_trusted(const nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (s->providers[i]->tpm_only) {
			return true;
		}
	}
	return false;
}

nkpd_baseline *nkpd_model_baseline_find(nkpd_svc *s, const char *name)
{
	for (size_t i = 0; i < s->n_baselines; i++) {
		if (strcmp(s->baselines[i].name, name) == 0) {
			return &s->baselines[i];
		}
	}
	return NULL;
}
