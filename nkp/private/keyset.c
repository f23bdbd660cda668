/* The keyset codec (nkp/private/keyset.h): one encoder and one checker of
 * ProviderKeys, for the push and for a host's key files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nkp/provider.h>

#include "internal.h"
#include "keyset.h"

_Noreturn static void misuse(const char *what)
{
	/* A caller broke the encoder's contract: abort loudly rather than
	 * pack a message with holes. No key byte in the text. */
	fprintf(stderr, "nkp: keyset encoder misuse: %s\n", what);
	abort();
}

/* ---- encoding ---- */

nkp_err nkpi_keyset_enc_init(nkpi_keyset_enc *e, size_t max_providers, size_t max_versions)
{
	size_t pk, pkp, vk, vkp;
	uint8_t *b;

	memset(e, 0, sizeof(*e));
	if (max_providers > SIZE_MAX / 4 / sizeof(*e->pk) ||
	    max_versions > SIZE_MAX / 4 / sizeof(*e->vk)) {
		return NKP_ERR_NOMEM;
	}
	pk = (max_providers + 1) * sizeof(*e->pk);
	pkp = (max_providers + 1) * sizeof(*e->providers);
	vk = (max_versions + 1) * sizeof(*e->vk);
	vkp = (max_versions + 1) * sizeof(*e->vkp);
	/* Every array holds pointer-aligned structures or pointers: back to
	 * back in one block, each stays aligned. */
	b = calloc(1, pk + pkp + vk + vkp);
	if (b == NULL) {
		return NKP_ERR_NOMEM;
	}
	e->block = b;
	e->pk = (Nkp__Wire__ProviderKeys *)(void *)b;
	e->vk = (Nkp__Wire__VersionKey *)(void *)(b + pk);
	e->providers = (Nkp__Wire__ProviderKeys **)(void *)(b + pk + vk);
	e->vkp = (Nkp__Wire__VersionKey **)(void *)(b + pk + vk + pkp);
	e->max_providers = max_providers;
	e->max_versions = max_versions;
	return NKP_OK;
}

void nkpi_keyset_enc_provider(nkpi_keyset_enc *e, const nkpi_keyset_provider *p)
{
	Nkp__Wire__ProviderKeys *pk;

	if (e->n_providers >= e->max_providers) {
		misuse("more providers than reserved");
	}
	pk = &e->pk[e->n_providers];
	nkp__wire__provider_keys__init(pk);
	/* Packing only reads them: the casts drop const for protobuf-c. */
	pk->id.data = (uint8_t *)p->id;
	pk->id.len = NKP_ID_BYTES;
	pk->name = (char *)p->name;
	pk->is_default = p->is_default;
	pk->backed_up = p->backed_up;
	pk->tpm_only = p->tpm_only;
	pk->versions = &e->vkp[e->n_versions];
	pk->n_versions = 0;
	e->providers[e->n_providers++] = pk;
}

void nkpi_keyset_enc_version(nkpi_keyset_enc *e, const nkpi_keyset_version *v)
{
	Nkp__Wire__VersionKey *vk;

	if (e->n_providers == 0 || e->n_versions >= e->max_versions) {
		misuse("a version without a provider, or more than reserved");
	}
	vk = &e->vk[e->n_versions];
	nkp__wire__version_key__init(vk);
	vk->version = v->version;
	vk->state = v->state;
	vk->created_unix = v->created_unix;
	vk->key.data = (uint8_t *)v->key;
	vk->key.len = NKP_KEY_BYTES;
	e->vkp[e->n_versions++] = vk;
	e->pk[e->n_providers - 1].n_versions++;
}

void nkpi_keyset_enc_fini(nkpi_keyset_enc *e)
{
	if (e == NULL) {
		return;
	}
	free(e->block);
	memset(e, 0, sizeof(*e));
}

/* ---- decoding ---- */

static bool name_valid(const char *name)
{
	size_t len = name == NULL ? 0 : strlen(name);

	if (len == 0 || len > NKPI_KEYSET_MAX_NAME) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
			return false;
		}
	}
	return true;
}

static bool state_valid(uint32_t s)
{
	return s == NKP_VERSION_STAGED || s == NKP_VERSION_ACTIVE || s == NKP_VERSION_DECRYPT_ONLY;
}

static nkp_err provider_check(const Nkp__Wire__ProviderKeys *p)
{
	size_t active = 0;

	if (nkpi_has_unknown(&p->base) || p->id.len != NKP_ID_BYTES || !name_valid(p->name) ||
	    p->n_versions == 0 || p->n_versions > NKPI_KEYSET_MAX_VERSIONS) {
		return NKP_ERR_PARSE;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		const Nkp__Wire__VersionKey *v = p->versions[i];

		if (v == NULL || nkpi_has_unknown(&v->base) || v->version == 0 ||
		    !state_valid(v->state) || v->key.len != NKP_KEY_BYTES) {
			return NKP_ERR_PARSE;
		}
		active += v->state == NKP_VERSION_ACTIVE;
		for (size_t j = 0; j < i; j++) {
			if (p->versions[j]->version == v->version) {
				return NKP_ERR_PARSE;
			}
		}
	}
	return active <= 1 ? NKP_OK : NKP_ERR_PARSE;
}

nkp_err nkpi_keyset_check(size_t n, Nkp__Wire__ProviderKeys *const *p, nkpi_keyset *out)
{
	size_t defaults = 0, versions = 0;

	if (n > NKPI_PUSH_MAX_PROVIDERS) {
		return NKP_ERR_TOO_LARGE;
	}
	for (size_t i = 0; i < n; i++) {
		if (p[i] == NULL || provider_check(p[i]) != NKP_OK) {
			return NKP_ERR_PARSE;
		}
		versions += p[i]->n_versions;
		if (versions > NKPI_PUSH_MAX_VERSIONS) {
			return NKP_ERR_TOO_LARGE;
		}
		defaults += p[i]->is_default;
		for (size_t j = 0; j < i; j++) {
			if (memcmp(p[j]->id.data, p[i]->id.data, NKP_ID_BYTES) == 0 ||
			    strcmp(p[j]->name, p[i]->name) == 0) {
				return NKP_ERR_PARSE;
			}
		}
	}
	if (defaults > 1) {
		return NKP_ERR_PARSE;
	}
	out->n_providers = n;
	out->providers = p;
	return NKP_OK;
}

void nkpi_keyset_provider_at(const nkpi_keyset *ks, size_t i, nkpi_keyset_provider *out)
{
	const Nkp__Wire__ProviderKeys *p = ks->providers[i];

	out->id = p->id.data;
	out->name = p->name;
	out->is_default = p->is_default;
	out->backed_up = p->backed_up;
	out->tpm_only = p->tpm_only;
	out->n_versions = p->n_versions;
}

void nkpi_keyset_version_at(const nkpi_keyset *ks, size_t i, size_t j, nkpi_keyset_version *out)
{
	const Nkp__Wire__VersionKey *v = ks->providers[i]->versions[j];

	out->version = v->version;
	out->state = v->state;
	out->created_unix = v->created_unix;
	out->key = v->key.data;
}

Nkp__Wire__DesiredState *nkpi_keyset_desired_unpack(const uint8_t *bytes, size_t len,
						    ProtobufCAllocator *alloc)
{
	Nkp__Wire__DesiredState *ds = NULL;

	/* The bytes are a field of the sealed push, opaque to the frame's
	 * strict check: checked here before protobuf-c allocates for them. */
	if (nkpi_pb_strict(&nkp__wire__desired_state__descriptor, bytes, len) == NKP_OK) {
		ds = nkp__wire__desired_state__unpack(alloc, len, bytes);
	}
	if (ds != NULL && nkpi_has_unknown(&ds->base)) {
		nkp__wire__desired_state__free_unpacked(ds, alloc);
		ds = NULL;
	}
	return ds;
}
