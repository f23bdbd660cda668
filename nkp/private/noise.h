/* Noise_KK_25519_ChaChaPoly_BLAKE2b (The Noise Protocol Framework,
 * revision 34), on libsodium. In-tree only: nkpd and the host plugin build
 * their sessions on it (nkp/private/session.c); never installed.
 *
 *   KK:
 *     -> s
 *     <- s
 *     ...
 *     -> e, es, ss
 *     <- e, ee, se
 *
 * Both static keys are pinned in advance, so none travels on the wire.
 * The handshake object holds every handshake secret (static and ephemeral
 * secrets, chaining key, DH outputs) in one block of locked memory (a slot
 * of a sodium_allocarray slab, see nkp/private/slab.c), wiped when it is freed. Split hands out two
 * cipher states; a cipher state's key is a secret and must live in locked memory (a slab slot or a
 * sodium_malloc block): nkpi_noise_cipher is a plain struct so that the
 * caller can place it there.
 *
 * Transport messages use explicit nonces (as WireGuard does): the caller
 * keeps the counters and the replay window, the cipher state only the key.
 * Nonce 2^64-1 is reserved by the spec and refused. */
#ifndef NKP_NOISE_H
#define NKP_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/err.h>

#define NKPI_NOISE_PROTOCOL_NAME "Noise_KK_25519_ChaChaPoly_BLAKE2b"
#define NKPI_NOISE_DHLEN 32u
#define NKPI_NOISE_HASHLEN 64u
#define NKPI_NOISE_KEYLEN 32u
#define NKPI_NOISE_TAGLEN 16u
/* The spec's limit for any Noise message. */
#define NKPI_NOISE_MAX_MSG 65535u
/* Bytes a handshake message adds to its payload: KK's messages carry one
 * ephemeral key and an encrypted payload. */
#define NKPI_NOISE_HS_OVERHEAD (NKPI_NOISE_DHLEN + NKPI_NOISE_TAGLEN)
#define NKPI_NOISE_NONCE_MAX UINT64_MAX /* reserved: never used */

/** One direction of a transport: the key only (locked memory, see above). */
typedef struct nkpi_noise_cipher {
	uint8_t k[NKPI_NOISE_KEYLEN];
} nkpi_noise_cipher;

typedef struct nkpi_noise_hs nkpi_noise_hs;

/** A KK handshake. `s_secret` is our static X25519 secret, `rs` the peer's
 * pinned static public key, `prologue` bound into the transcript (may be
 * NULL when `prologue_len` is 0). A fresh ephemeral is drawn when the
 * first message is written (or set with nkpi_noise_hs_set_ephemeral).
 * Copies what it needs; free with nkpi_noise_hs_free (wipes).
 * Errors: NKP_ERR_NOMEM, NKP_ERR_INVALID. */
__attribute__((warn_unused_result)) nkp_err
nkpi_noise_hs_new(bool initiator, const uint8_t s_secret[static NKPI_NOISE_DHLEN],
		  const uint8_t rs[static NKPI_NOISE_DHLEN], const uint8_t *prologue,
		  size_t prologue_len, nkpi_noise_hs **out);
void nkpi_noise_hs_free(nkpi_noise_hs *hs);

/** Known-answer tests only: use this ephemeral secret instead of a random
 * one. Call before the handshake message that makes the ephemeral. */
__attribute__((warn_unused_result)) nkp_err
nkpi_noise_hs_set_ephemeral(nkpi_noise_hs *hs, const uint8_t e_secret[static NKPI_NOISE_DHLEN]);

/** Writes our next handshake message with `payload` into `out` (`cap`
 * bytes; it needs len + NKPI_NOISE_HS_OVERHEAD). Errors: NKP_ERR_STATE
 * (not our turn, or done), NKP_ERR_TOO_LARGE, NKP_ERR_CRYPTO (a DH result
 * of all zeros). On error the handshake is dead: free it. */
__attribute__((warn_unused_result)) nkp_err nkpi_noise_hs_write(nkpi_noise_hs *hs,
								const uint8_t *payload, size_t len,
								uint8_t *out, size_t cap,
								size_t *outlen);

/** Reads the peer's next handshake message; its payload goes to `payload`
 * (`cap` bytes; len - NKPI_NOISE_HS_OVERHEAD). Errors: NKP_ERR_STATE,
 * NKP_ERR_PARSE (too short), NKP_ERR_TOO_LARGE, NKP_ERR_AUTH (does not
 * authenticate: not from the pinned peer, or altered), NKP_ERR_CRYPTO
 * (the peer's ephemeral gives a DH result of all zeros). On error the
 * handshake is dead: free it. Nothing is written to `payload` unless it
 * authenticated. */
__attribute__((warn_unused_result)) nkp_err nkpi_noise_hs_read(nkpi_noise_hs *hs,
							       const uint8_t *msg, size_t len,
							       uint8_t *payload, size_t cap,
							       size_t *payload_len);

/** True once both handshake messages were written/read. */
bool nkpi_noise_hs_done(const nkpi_noise_hs *hs);

/** Split: our sending and receiving cipher states (initiator: c1 sends,
 * c2 receives; responder the reverse) and the handshake hash h (may be
 * NULL). Only when done (else NKP_ERR_STATE). The handshake object keeps
 * nothing of value afterwards; free it. */
__attribute__((warn_unused_result)) nkp_err nkpi_noise_hs_split(nkpi_noise_hs *hs,
								nkpi_noise_cipher *send,
								nkpi_noise_cipher *recv,
								uint8_t h[NKPI_NOISE_HASHLEN]);

/** ENCRYPT(k, n, ad, plaintext) of the spec: ChaCha20-Poly1305-IETF with
 * nonce 32 zero bits ‖ u64le(n). Writes len + NKPI_NOISE_TAGLEN bytes to
 * `out` (may equal `pt`). Errors: NKP_ERR_INVALID (n is the reserved
 * nonce), NKP_ERR_TOO_LARGE (over the Noise message limit). */
__attribute__((warn_unused_result)) nkp_err nkpi_noise_encrypt(const nkpi_noise_cipher *c,
							       uint64_t n, const uint8_t *ad,
							       size_t adlen, const uint8_t *pt,
							       size_t len, uint8_t *out);

/** DECRYPT: writes ctlen - NKPI_NOISE_TAGLEN bytes to `out` (may equal
 * `ct`) only if the tag verifies. Errors: NKP_ERR_INVALID, NKP_ERR_PARSE
 * (shorter than a tag), NKP_ERR_TOO_LARGE (over the Noise message limit),
 * NKP_ERR_AUTH. */
__attribute__((warn_unused_result)) nkp_err nkpi_noise_decrypt(const nkpi_noise_cipher *c,
							       uint64_t n, const uint8_t *ad,
							       size_t adlen, const uint8_t *ct,
							       size_t ctlen, uint8_t *out);

/** REKEY of the spec: k = first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zero
 * bytes). Wipes the old key. */
void nkpi_noise_rekey(nkpi_noise_cipher *c);

/** Wipes a cipher state. Accepts NULL. */
void nkpi_noise_cipher_wipe(nkpi_noise_cipher *c);

#endif
