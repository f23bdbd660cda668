/* Identities of the two ends of nkp's wire protocol (nkpd and each host).
 *
 * Each party has a static X25519 identity; each pins the other's public
 * key. The sessions built on them (Noise_KK_25519_ChaChaPoly_BLAKE2b, see
 * docs/PROTOCOL.md) are private to nkp's own daemons: this header only
 * makes, persists and prints identities. */
#ifndef NKP_CHANNEL_H
#define NKP_CHANNEL_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

#define NKP_PUBKEY_BYTES 32u
/** Largest frame either side accepts (also set as NNG_OPT_RECVMAXSZ). */
#define NKP_FRAME_MAX (4u << 20)

typedef struct nkp_identity nkp_identity;

/** A new random X25519 identity. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_identity_generate(nkp_identity **out);
/** An identity whose secret scalar is `secret` (copied). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_identity_from_key(const nkp_key *secret, nkp_identity **out);
/** The secret scalar, to persist it (e.g. with nkp_keyfile_*). Owned by id. */
NKP_EXPORT const nkp_key *nkp_identity_secret(const nkp_identity *id);
NKP_EXPORT const uint8_t *nkp_identity_public(const nkp_identity *id);
NKP_EXPORT void nkp_identity_free(nkp_identity *id);

/** Public keys as base64 (standard alphabet, padded: 44 chars + NUL). */
NKP_EXPORT void nkp_pubkey_to_base64(const uint8_t pub[static NKP_PUBKEY_BYTES],
				     char out[static 45]);
NKP_EXPORT NKP_NODISCARD nkp_err nkp_pubkey_from_base64(const char *b64,
							uint8_t out[static NKP_PUBKEY_BYTES]);

/** NKP_OK if `pub` can serve as a peer's key: not a low-order point
 * (with which every shared secret would be all zeros). NKP_ERR_INVALID
 * otherwise. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_pubkey_check(const nkp_identity *self,
						  const uint8_t pub[static NKP_PUBKEY_BYTES]);

#endif
