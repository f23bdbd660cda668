/* The secure channel between the management service and host plugins
 * (proto/wire.proto, docs/PROTOCOL.md).
 *
 * Each party has a static X25519 identity. A channel pins one peer's public
 * key. Every message is sealed to the peer's static key and authenticated
 * as ours, with a fresh ephemeral key per message:
 *
 *   k = BLAKE2b-256("nkp-channel-v1" || DH(e, R) || DH(S, R) || E || S || R)
 *   Envelope.ciphertext = XChaCha20-Poly1305(k, nonce, msg,
 *                         ad = "nkp-channel-v1" || u32le(version) || S || R || E)
 *
 * DH(S, R) is computed once per channel. Freshness (challenges, boot nonces,
 * generations) is the job of the messages inside, not of the channel. */
#ifndef NKP_CHANNEL_H
#define NKP_CHANNEL_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

#define NKP_PUBKEY_BYTES 32u
#define NKP_PROTOCOL_VERSION 1u
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
NKP_EXPORT void nkp_pubkey_to_base64(const uint8_t pub[static NKP_PUBKEY_BYTES], char out[static 45]);
NKP_EXPORT NKP_NODISCARD nkp_err nkp_pubkey_from_base64(const char *b64,
							uint8_t out[static NKP_PUBKEY_BYTES]);

typedef struct nkp_channel nkp_channel;

/** A channel from `self` (borrowed; must outlive the channel) to the peer
 * whose static public key is `peer`. Errors: NKP_ERR_NOMEM,
 * NKP_ERR_INVALID (peer key is a low-order point). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_channel_new(const nkp_identity *self,
						 const uint8_t peer[static NKP_PUBKEY_BYTES],
						 nkp_channel **out);
NKP_EXPORT const uint8_t *nkp_channel_peer(const nkp_channel *ch);
NKP_EXPORT void nkp_channel_free(nkp_channel *ch);

/** Seals `len` bytes of `msg` into a serialized Frame (malloc'd; free()).
 * Thread-safe for a given channel. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_channel_seal(const nkp_channel *ch, const uint8_t *msg,
						  size_t len, uint8_t **frame, size_t *framelen);

/** Opens a serialized Frame from the peer. *msg is sodium_malloc'd (it may
 * carry keys): free with nkp_secure_free(). Errors: NKP_ERR_TOO_LARGE,
 * NKP_ERR_PARSE, NKP_ERR_FORMAT_VERSION, NKP_ERR_UNTRUSTED_PEER (sealed by
 * another key, or to another recipient), NKP_ERR_AUTH (tampered),
 * NKP_ERR_REFUSED (the frame is a PlainError: its code and text are in
 * *peer_code and peer_text if not NULL). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_channel_open(const nkp_channel *ch, const uint8_t *frame,
						  size_t len, uint8_t **msg, size_t *msglen,
						  nkp_err *peer_code, char *peer_text,
						  size_t peer_text_size);

/** Reads the sender key of a sealed frame without opening it, so a
 * receiver can tell an unenrolled peer. Errors as nkp_channel_open. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_frame_sender(const uint8_t *frame, size_t len,
						  uint8_t sender[static NKP_PUBKEY_BYTES]);

/** A serialized PlainError frame (malloc'd), for peers we cannot
 * authenticate. `text` must not contain secrets. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_frame_plain_error(nkp_err code, const char *text,
						       uint8_t **frame, size_t *framelen);

#endif
