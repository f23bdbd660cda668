/* Key wrapping: XChaCha20-Poly1305-IETF with a random 24-byte nonce and
 * associated data. */
#ifndef NKP_WRAP_H
#define NKP_WRAP_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

/** Seals `ptlen` bytes of `pt` under `key` with associated data `ad`.
 * Writes a fresh random nonce to `nonce` and ptlen + NKP_TAG_BYTES bytes to
 * `ct`. Errors: NKP_ERR_INVALID, NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_wrap_seal(const nkp_key *key, const uint8_t *ad, size_t adlen,
					       const uint8_t *pt, size_t ptlen,
					       uint8_t nonce[static NKP_NONCE_BYTES], uint8_t *ct);

/** Opens `ct` (ctlen bytes, tag included) into `pt` (ctlen - NKP_TAG_BYTES
 * bytes). On failure `pt` is wiped and NKP_ERR_AUTH returned: tampered data,
 * the wrong key or the wrong associated data. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_wrap_open(const nkp_key *key, const uint8_t *ad, size_t adlen,
					       const uint8_t nonce[static NKP_NONCE_BYTES],
					       const uint8_t *ct, size_t ctlen, uint8_t *pt);

#endif
