/* Identities (include/nkp/channel.h): static X25519 key pairs and their
 * base64 form. The sessions built on them are in nkp/private/session.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/channel.h>

#include "internal.h"

_Static_assert(NKP_PUBKEY_BYTES == crypto_scalarmult_BYTES, "X25519 public key size");
_Static_assert(NKP_KEY_BYTES == crypto_scalarmult_SCALARBYTES, "X25519 scalar size");

struct nkp_identity {
	nkp_key *secret;
	uint8_t pub[NKP_PUBKEY_BYTES];
};

/* --- identities --------------------------------------------------------- */

/* Takes ownership of `secret` (freed on failure). */
static nkp_err identity_make(nkp_key *secret, nkp_identity **out)
{
	nkp_identity *id;
	nkp_err err = NKP_OK;

	id = calloc(1, sizeof(*id));
	if (id == NULL) {
		err = NKP_ERR_NOMEM;
		goto free_secret;
	}
	if (crypto_scalarmult_base(id->pub, nkpi_key_bytes(secret)) != 0) {
		err = NKP_ERR_CRYPTO;
		goto free_id;
	}
	id->secret = secret;
	*out = id;
	return NKP_OK;

free_id:
	free(id);
free_secret:
	nkp_key_free(secret);
	return err;
}

nkp_err nkp_identity_generate(nkp_identity **out)
{
	nkp_key *secret;
	nkp_err err;

	if (out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_key_generate(&secret);
	if (err != NKP_OK) {
		return err;
	}
	return identity_make(secret, out);
}

nkp_err nkp_identity_from_key(const nkp_key *secret, nkp_identity **out)
{
	nkp_key *copy;
	nkp_err err;

	if (secret == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_key_dup(secret, &copy);
	if (err != NKP_OK) {
		return err;
	}
	return identity_make(copy, out);
}

const nkp_key *nkp_identity_secret(const nkp_identity *id)
{
	return id->secret;
}

const uint8_t *nkp_identity_public(const nkp_identity *id)
{
	return id->pub;
}

void nkp_identity_free(nkp_identity *id)
{
	if (id == NULL) {
		return;
	}
	nkp_key_free(id->secret);
	sodium_memzero(id, sizeof(*id));
	free(id);
}

/* --- base64 ------------------------------------------------------------- */

void nkp_pubkey_to_base64(const uint8_t pub[static NKP_PUBKEY_BYTES], char out[static 45])
{
	sodium_bin2base64(out, 45, pub, NKP_PUBKEY_BYTES, sodium_base64_VARIANT_ORIGINAL);
}

nkp_err nkp_pubkey_from_base64(const char *b64, uint8_t out[static NKP_PUBKEY_BYTES])
{
	uint8_t tmp[NKP_PUBKEY_BYTES];
	const char *end = NULL;
	size_t n = 0;

	/* Exactly 44 characters of the padded standard alphabet, nothing
	 * ignored (checked here: libsodium 1.0.18 reads bytes 0x80-0xff as
	 * '/'); libsodium also refuses non-zero trailing bits, so each key
	 * has exactly one accepted spelling. */
	if (b64 == NULL || strnlen(b64, 45) != 44 || strspn(b64, NKP_BASE64_ALPHABET "=") != 44 ||
	    sodium_base642bin(tmp, sizeof(tmp), b64, 44, NULL, &n, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    n != NKP_PUBKEY_BYTES || end != b64 + 44) {
		return NKP_ERR_PARSE;
	}
	memcpy(out, tmp, NKP_PUBKEY_BYTES);
	return NKP_OK;
}

nkp_err nkp_pubkey_check(const nkp_identity *self, const uint8_t pub[static NKP_PUBKEY_BYTES])
{
	uint8_t dh[crypto_scalarmult_BYTES];
	int rc;

	if (self == NULL || pub == NULL) {
		return NKP_ERR_INVALID;
	}
	/* -1 means an all-zero result: a low-order point. */
	rc = crypto_scalarmult(dh, nkpi_key_bytes(self->secret), pub);
	sodium_memzero(dh, sizeof(dh));
	return rc == 0 ? NKP_OK : NKP_ERR_INVALID;
}
