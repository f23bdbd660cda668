#include <sodium.h>

#include <nkp/wrap.h>

#include "internal.h"

nkp_err nkp_wrap_seal(const nkp_key *key, const uint8_t *ad, size_t adlen, const uint8_t *pt,
		      size_t ptlen, uint8_t nonce[static NKP_NONCE_BYTES], uint8_t *ct)
{
	if (key == NULL || (pt == NULL && ptlen > 0) || ct == NULL || (ad == NULL && adlen > 0)) {
		return NKP_ERR_INVALID;
	}
	randombytes_buf(nonce, NKP_NONCE_BYTES);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, pt, ptlen, ad, adlen, NULL, nonce,
						       nkpi_key_bytes(key)) != 0) {
		return NKP_ERR_CRYPTO;
	}
	return NKP_OK;
}

nkp_err nkp_wrap_open(const nkp_key *key, const uint8_t *ad, size_t adlen,
		      const uint8_t nonce[static NKP_NONCE_BYTES], const uint8_t *ct, size_t ctlen,
		      uint8_t *pt)
{
	if (key == NULL || ct == NULL || ctlen < NKP_TAG_BYTES || (ad == NULL && adlen > 0)) {
		return NKP_ERR_INVALID;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, ct, ctlen, ad, adlen, nonce,
						       nkpi_key_bytes(key)) != 0) {
		sodium_memzero(pt, ctlen - NKP_TAG_BYTES);
		return NKP_ERR_AUTH;
	}
	return NKP_OK;
}
