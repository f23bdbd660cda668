#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/provider.h>

#include "internal.h"

struct nkp_primary {
	_Atomic unsigned refs; /* nkpi_primary_ref; freed when the last goes */
	uint8_t provider_id[NKP_ID_BYTES];
	uint32_t version;
	nkp_key *key; /* one locked block: key, then kek_key */
	nkp_key *kek_key;
};

/* crypto_kdf context of the subkey that seals VM KEKs. */
static const char kek_ctx[8] = {'n', 'k', 'p', 'k', 'e', 'k', '0', '1'};

const char *nkp_version_state_name(nkp_version_state s)
{
	switch (s) {
	case NKP_VERSION_STAGED:
		return "staged";
	case NKP_VERSION_ACTIVE:
		return "active";
	case NKP_VERSION_DECRYPT_ONLY:
		return "decrypt-only";
	}
	return "unknown";
}

bool nkp_version_state_parse(const char *name, nkp_version_state *out)
{
	static const nkp_version_state all[] = {NKP_VERSION_STAGED, NKP_VERSION_ACTIVE,
						NKP_VERSION_DECRYPT_ONLY};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(name, nkp_version_state_name(all[i])) == 0) {
			*out = all[i];
			return true;
		}
	}
	return false;
}

nkp_err nkp_primary_new(const uint8_t provider_id[static NKP_ID_BYTES], uint32_t version,
			const nkp_key *key, nkp_primary **out)
{
	nkp_primary *p;

	if (version == 0 || key == NULL) {
		return NKP_ERR_INVALID;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	p->refs = 1;
	memcpy(p->provider_id, provider_id, NKP_ID_BYTES);
	p->version = version;
	/* Key and KEK subkey share one locked slab slot: hosts make a
	 * primary for every version they get. */
	p->key = nkpi_key_pair_new(key, 1, kek_ctx);
	if (p->key == NULL) {
		free(p);
		return NKP_ERR_NOMEM;
	}
	p->kek_key = nkpi_key_pair_second(p->key);
	*out = p;
	return NKP_OK;
}

const uint8_t *nkp_primary_provider_id(const nkp_primary *p)
{
	return p->provider_id;
}

uint32_t nkp_primary_version(const nkp_primary *p)
{
	return p->version;
}

const nkp_key *nkp_primary_key(const nkp_primary *p)
{
	return p->key;
}

const nkp_key *nkp_primary_kek_key(const nkp_primary *p)
{
	return p->kek_key;
}

nkp_primary *nkpi_primary_ref(nkp_primary *p)
{
	atomic_fetch_add(&p->refs, 1);
	return p;
}

void nkp_primary_free(nkp_primary *p)
{
	if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1) {
		return;
	}
	nkpi_key_pair_free(p->key); /* the slot of both keys */
	free(p);
}

void nkp_id_to_hex(const uint8_t id[static NKP_ID_BYTES], char out[static 33])
{
	sodium_bin2hex(out, 33, id, NKP_ID_BYTES);
}

nkp_err nkp_id_from_hex(const char *hex, uint8_t out[static NKP_ID_BYTES])
{
	uint8_t tmp[NKP_ID_BYTES];
	size_t n = 0;
	const char *end = NULL;

	if (hex == NULL || strlen(hex) != 2 * NKP_ID_BYTES ||
	    sodium_hex2bin(tmp, sizeof(tmp), hex, strlen(hex), NULL, &n, &end) != 0 ||
	    n != NKP_ID_BYTES || *end != '\0') {
		return NKP_ERR_PARSE;
	}
	memcpy(out, tmp, NKP_ID_BYTES);
	return NKP_OK;
}
