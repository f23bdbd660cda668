/* Noise_KK_25519_ChaChaPoly_BLAKE2b (The Noise Protocol Framework,
 * revision 34) on libsodium. See noise.h.
 *
 *   HASH     BLAKE2b-512, BLOCKLEN 128
 *   HMAC     RFC 2104 over HASH (the spec asks for HMAC, not keyed BLAKE2b)
 *   HKDF     the spec's two- and three-output form (two used here)
 *   ENCRYPT  ChaCha20-Poly1305-IETF, nonce 32 zero bits ‖ u64le(n)
 *   DH       X25519; an all-zero result is refused
 *
 * The whole handshake object is one block of locked memory: it holds the
 * static and ephemeral secrets, the chaining key, the handshake key, DH
 * outputs and HMAC's keyed hash state, and is wiped on free. The block is
 * a slot of a slab (nkp/private/slab.c: sodium_allocarray chunks, locked, guard
 * pages around each chunk, out of core dumps) rather than a sodium_malloc
 * block of its own, whose nine system calls cost as much as the
 * handshake's X25519 operations. Temporaries (HMAC pads, HKDF outputs,
 * DH results) are wiped as soon as used. */
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "noise.h"

#define BLOCKLEN 128u
#define HASHLEN NKPI_NOISE_HASHLEN
#define DHLEN NKPI_NOISE_DHLEN
#define KEYLEN NKPI_NOISE_KEYLEN
#define TAGLEN NKPI_NOISE_TAGLEN
#define MAX_MSG NKPI_NOISE_MAX_MSG
#define NONCELEN crypto_aead_chacha20poly1305_ietf_NPUBBYTES

_Static_assert(HASHLEN == crypto_generichash_blake2b_BYTES_MAX, "BLAKE2b-512");
_Static_assert(KEYLEN == crypto_aead_chacha20poly1305_ietf_KEYBYTES, "cipher key");
_Static_assert(TAGLEN == crypto_aead_chacha20poly1305_ietf_ABYTES, "cipher tag");
_Static_assert(DHLEN == crypto_scalarmult_BYTES && DHLEN == crypto_scalarmult_SCALARBYTES,
	       "X25519");
_Static_assert(sizeof(NKPI_NOISE_PROTOCOL_NAME) - 1 <= HASHLEN, "name fits in h");

enum hs_state {
	HS_MSG1,  /* the initiator writes, the responder reads */
	HS_MSG2,  /* the responder writes, the initiator reads */
	HS_DONE,  /* both messages through: Split may run */
	HS_SPLIT, /* Split ran: nothing of value left */
	HS_DEAD,  /* an error: free it */
};

struct nkpi_noise_hs {
	/* HMAC's hash state: absorbs the key pads. First, for its alignment. */
	crypto_generichash_blake2b_state st;
	uint8_t pad[BLOCKLEN];
	uint8_t inner[HASHLEN];
	uint8_t temp_key[HASHLEN];
	uint8_t okm[HASHLEN];
	uint8_t dh[DHLEN];
	uint8_t s[DHLEN]; /* static secret */
	uint8_t e[DHLEN]; /* ephemeral secret */
	uint8_t ck[HASHLEN];
	uint8_t k[KEYLEN];
	uint8_t h[HASHLEN];
	uint8_t spub[DHLEN];
	uint8_t epub[DHLEN];
	uint8_t rs[DHLEN];
	uint8_t re[DHLEN];
	uint64_t n;
	enum hs_state state;
	bool initiator;
	bool has_e;
};

/* Slots are multiples of 64 bytes (the hash state's alignment) in chunks
 * whose end is page-aligned, so every slot is 64-byte aligned. */
_Static_assert(sizeof(struct nkpi_noise_hs) % 64 == 0, "slot alignment");
static nkpi_slab hs_slab = NKPI_SLAB_INIT(sizeof(struct nkpi_noise_hs));

/* Stands in for NULL with zero lengths: libsodium never gets a NULL buffer. */
static const uint8_t empty[1];

static void nonce_of(uint64_t n, uint8_t nonce[static NONCELEN])
{
	memset(nonce, 0, 4);
	for (unsigned i = 0; i < 8; i++) {
		nonce[4 + i] = (uint8_t)(n >> (8 * i));
	}
}

/* ENCRYPT without the reserved-nonce check (REKEY uses 2^64-1). Writes
 * len + TAGLEN bytes; `out` may equal `pt`. */
static void encrypt_raw(const uint8_t k[static KEYLEN], uint64_t n, const uint8_t *ad, size_t adlen,
			const uint8_t *pt, size_t len, uint8_t *out)
{
	uint8_t nonce[NONCELEN];

	nonce_of(n, nonce);
	crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, len ? pt : empty, len,
						  adlen ? ad : empty, adlen, NULL, nonce, k);
}

/* DECRYPT that writes to `out` only once the tag has verified: libsodium's
 * combined call zeroes `out` on failure, so verify first (a NULL message
 * makes it check the tag only), then run the stream from block 1, as the
 * IETF construction does. `out` may equal `ct`. */
static nkp_err decrypt_raw(const uint8_t k[static KEYLEN], uint64_t n, const uint8_t *ad,
			   size_t adlen, const uint8_t *ct, size_t ctlen, uint8_t *out)
{
	uint8_t nonce[NONCELEN];
	size_t len = ctlen - TAGLEN;

	nonce_of(n, nonce);
	if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(NULL, NULL, len ? ct : empty, len,
							       ct + len, adlen ? ad : empty, adlen,
							       nonce, k) != 0) {
		return NKP_ERR_AUTH;
	}
	if (len > 0) {
		crypto_stream_chacha20_ietf_xor_ic(out, ct, len, nonce, 1u, k);
	}
	return NKP_OK;
}

/* --- symmetric state ----------------------------------------------------- */

static void hash2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
		  uint8_t out[static HASHLEN], crypto_generichash_blake2b_state *st)
{
	crypto_generichash_blake2b_init(st, NULL, 0, HASHLEN);
	crypto_generichash_blake2b_update(st, a, alen);
	if (blen > 0) {
		crypto_generichash_blake2b_update(st, b, blen);
	}
	crypto_generichash_blake2b_final(st, out, HASHLEN);
}

/* HMAC-HASH(key, d1 ‖ d2), RFC 2104. Keys here are HASHLEN bytes, never
 * over BLOCKLEN, so they are zero-padded and never hashed first. `out`
 * may alias `key` (the key is in the pad before `out` is written). */
static void hmac(nkpi_noise_hs *hs, const uint8_t key[static HASHLEN], const uint8_t *d1, size_t l1,
		 const uint8_t *d2, size_t l2, uint8_t out[static HASHLEN])
{
	memset(hs->pad, 0, BLOCKLEN);
	memcpy(hs->pad, key, HASHLEN);
	for (unsigned i = 0; i < BLOCKLEN; i++) {
		hs->pad[i] ^= 0x36u;
	}
	crypto_generichash_blake2b_init(&hs->st, NULL, 0, HASHLEN);
	crypto_generichash_blake2b_update(&hs->st, hs->pad, BLOCKLEN);
	if (l1 > 0) {
		crypto_generichash_blake2b_update(&hs->st, d1, l1);
	}
	if (l2 > 0) {
		crypto_generichash_blake2b_update(&hs->st, d2, l2);
	}
	crypto_generichash_blake2b_final(&hs->st, hs->inner, HASHLEN);
	for (unsigned i = 0; i < BLOCKLEN; i++) {
		hs->pad[i] ^= 0x36u ^ 0x5cu;
	}
	hash2(hs->pad, BLOCKLEN, hs->inner, HASHLEN, out, &hs->st);
	sodium_memzero(hs->pad, BLOCKLEN);
	sodium_memzero(hs->inner, HASHLEN);
	sodium_memzero(&hs->st, sizeof(hs->st));
}

/* HKDF(ck, ikm) with two outputs: out1 into `o1` (may be hs->ck), out2
 * into hs->okm. The caller wipes hs->okm. */
static void hkdf2(nkpi_noise_hs *hs, const uint8_t *ikm, size_t ikmlen, uint8_t o1[static HASHLEN])
{
	static const uint8_t one = 0x01, two = 0x02;

	hmac(hs, hs->ck, ikm, ikmlen, NULL, 0, hs->temp_key);
	hmac(hs, hs->temp_key, &one, 1, NULL, 0, o1);
	hmac(hs, hs->temp_key, o1, HASHLEN, &two, 1, hs->okm);
	sodium_memzero(hs->temp_key, HASHLEN);
}

static void mix_hash(nkpi_noise_hs *hs, const uint8_t *data, size_t len)
{
	crypto_generichash_blake2b_state st;

	hash2(hs->h, HASHLEN, data, len, hs->h, &st);
}

static void mix_key(nkpi_noise_hs *hs, const uint8_t *ikm, size_t len)
{
	hkdf2(hs, ikm, len, hs->ck);
	memcpy(hs->k, hs->okm, KEYLEN); /* HASHLEN 64: truncated to 32 */
	sodium_memzero(hs->okm, HASHLEN);
	hs->n = 0;
}

/* MixKey(DH(priv, pub)); an all-zero result (a low-order public key) is
 * refused, as the spec allows and libsodium reports. */
static nkp_err mix_dh(nkpi_noise_hs *hs, const uint8_t priv[static DHLEN],
		      const uint8_t pub[static DHLEN])
{
	nkp_err err = NKP_OK;

	if (crypto_scalarmult(hs->dh, priv, pub) != 0 || sodium_is_zero(hs->dh, DHLEN)) {
		err = NKP_ERR_CRYPTO;
		goto wipe;
	}
	mix_key(hs, hs->dh, DHLEN);
wipe:
	sodium_memzero(hs->dh, DHLEN);
	return err;
}

/* EncryptAndHash: KK's payloads always follow a MixKey, so k is set. */
static void encrypt_and_hash(nkpi_noise_hs *hs, const uint8_t *pt, size_t len, uint8_t *out)
{
	encrypt_raw(hs->k, hs->n, hs->h, HASHLEN, pt, len, out);
	hs->n++;
	mix_hash(hs, out, len + TAGLEN);
}

/* DecryptAndHash with AD = the old h; the new h is taken from the
 * ciphertext before the plaintext may overwrite it. */
static nkp_err decrypt_and_hash(nkpi_noise_hs *hs, const uint8_t *ct, size_t ctlen, uint8_t *out)
{
	uint8_t h[HASHLEN];
	crypto_generichash_blake2b_state st;
	nkp_err err;

	hash2(hs->h, HASHLEN, ct, ctlen, h, &st);
	err = decrypt_raw(hs->k, hs->n, hs->h, HASHLEN, ct, ctlen, out);
	if (err == NKP_OK) {
		hs->n++;
		memcpy(hs->h, h, HASHLEN);
	}
	return err;
}

/* --- handshake ------------------------------------------------------------ */

nkp_err nkpi_noise_hs_new(bool initiator, const uint8_t s_secret[static NKPI_NOISE_DHLEN],
			  const uint8_t rs[static NKPI_NOISE_DHLEN], const uint8_t *prologue,
			  size_t prologue_len, nkpi_noise_hs **out)
{
	nkpi_noise_hs *hs;
	nkp_err err = NKP_OK;

	if (s_secret == NULL || rs == NULL || out == NULL ||
	    (prologue == NULL && prologue_len > 0)) {
		return NKP_ERR_INVALID;
	}
	hs = nkpi_slab_get(&hs_slab); /* zeroed */
	if (hs == NULL) {
		return NKP_ERR_NOMEM;
	}
	hs->initiator = initiator;
	memcpy(hs->s, s_secret, DHLEN);
	memcpy(hs->rs, rs, DHLEN);
	if (crypto_scalarmult_base(hs->spub, hs->s) != 0) {
		err = NKP_ERR_INVALID;
		goto free_hs;
	}

	/* InitializeSymmetric: the name (33 bytes) zero-padded into h. */
	memcpy(hs->h, NKPI_NOISE_PROTOCOL_NAME, sizeof(NKPI_NOISE_PROTOCOL_NAME) - 1);
	memcpy(hs->ck, hs->h, HASHLEN);
	mix_hash(hs, prologue_len ? prologue : empty, prologue_len);
	/* Pre-messages: -> s, <- s. */
	if (initiator) {
		mix_hash(hs, hs->spub, DHLEN);
		mix_hash(hs, hs->rs, DHLEN);
	} else {
		mix_hash(hs, hs->rs, DHLEN);
		mix_hash(hs, hs->spub, DHLEN);
	}
	hs->state = HS_MSG1;
	*out = hs;
	return NKP_OK;

free_hs:
	nkpi_noise_hs_free(hs);
	return err;
}

void nkpi_noise_hs_free(nkpi_noise_hs *hs)
{
	if (hs == NULL) {
		return;
	}
	nkpi_slab_put(&hs_slab, hs); /* wipes */
}

static bool our_turn_to_write(const nkpi_noise_hs *hs)
{
	return (hs->initiator && hs->state == HS_MSG1) || (!hs->initiator && hs->state == HS_MSG2);
}

static bool our_turn_to_read(const nkpi_noise_hs *hs)
{
	return (!hs->initiator && hs->state == HS_MSG1) || (hs->initiator && hs->state == HS_MSG2);
}

nkp_err nkpi_noise_hs_set_ephemeral(nkpi_noise_hs *hs,
				    const uint8_t e_secret[static NKPI_NOISE_DHLEN])
{
	if (hs == NULL || e_secret == NULL) {
		return NKP_ERR_INVALID;
	}
	/* Before the message that sends it: the initiator's first, the
	 * responder's second (or before it reads the first). */
	if (hs->has_e || hs->state > HS_MSG2 || (hs->initiator && hs->state != HS_MSG1)) {
		return NKP_ERR_STATE;
	}
	memcpy(hs->e, e_secret, DHLEN);
	if (crypto_scalarmult_base(hs->epub, hs->e) != 0) {
		sodium_memzero(hs->e, DHLEN);
		return NKP_ERR_INVALID;
	}
	hs->has_e = true;
	return NKP_OK;
}

static nkp_err make_ephemeral(nkpi_noise_hs *hs)
{
	if (hs->has_e) {
		return NKP_OK;
	}
	randombytes_buf(hs->e, DHLEN);
	if (crypto_scalarmult_base(hs->epub, hs->e) != 0) {
		return NKP_ERR_CRYPTO;
	}
	hs->has_e = true;
	return NKP_OK;
}

/* The DH tokens of a message, once `e`/`re` is in place:
 *   -> e, es, ss    initiator: DH(e, rs), DH(s, rs)   responder: DH(s, re), DH(s, rs)
 *   <- e, ee, se    initiator: DH(e, re), DH(s, re)   responder: DH(e, re), DH(e, rs) */
static nkp_err mix_tokens(nkpi_noise_hs *hs)
{
	nkp_err err;

	if (hs->state == HS_MSG1) {
		err = hs->initiator ? mix_dh(hs, hs->e, hs->rs) : mix_dh(hs, hs->s, hs->re);
		if (err == NKP_OK) {
			err = mix_dh(hs, hs->s, hs->rs);
		}
	} else {
		err = mix_dh(hs, hs->e, hs->re);
		if (err == NKP_OK) {
			err = hs->initiator ? mix_dh(hs, hs->s, hs->re) : mix_dh(hs, hs->e, hs->rs);
		}
	}
	return err;
}

nkp_err nkpi_noise_hs_write(nkpi_noise_hs *hs, const uint8_t *payload, size_t len, uint8_t *out,
			    size_t cap, size_t *outlen)
{
	nkp_err err;

	if (hs == NULL) {
		return NKP_ERR_INVALID;
	}
	if (out == NULL || outlen == NULL || (payload == NULL && len > 0)) {
		err = NKP_ERR_INVALID;
		goto dead;
	}
	if (!our_turn_to_write(hs)) {
		err = NKP_ERR_STATE;
		goto dead;
	}
	if (len > MAX_MSG - NKPI_NOISE_HS_OVERHEAD || cap < len + NKPI_NOISE_HS_OVERHEAD) {
		err = NKP_ERR_TOO_LARGE;
		goto dead;
	}
	err = make_ephemeral(hs);
	if (err != NKP_OK) {
		goto dead;
	}
	mix_hash(hs, hs->epub, DHLEN);
	err = mix_tokens(hs);
	if (err != NKP_OK) {
		goto dead;
	}
	/* `out` is touched only now that nothing can fail. */
	memcpy(out, hs->epub, DHLEN);
	encrypt_and_hash(hs, payload, len, out + DHLEN);
	*outlen = len + NKPI_NOISE_HS_OVERHEAD;
	hs->state = hs->state == HS_MSG1 ? HS_MSG2 : HS_DONE;
	return NKP_OK;

dead:
	hs->state = HS_DEAD;
	return err;
}

nkp_err nkpi_noise_hs_read(nkpi_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
			   size_t cap, size_t *payload_len)
{
	nkp_err err;

	if (hs == NULL) {
		return NKP_ERR_INVALID;
	}
	if ((msg == NULL && len > 0) || payload_len == NULL) {
		err = NKP_ERR_INVALID;
		goto dead;
	}
	if (!our_turn_to_read(hs)) {
		err = NKP_ERR_STATE;
		goto dead;
	}
	if (len < NKPI_NOISE_HS_OVERHEAD) {
		err = NKP_ERR_PARSE;
		goto dead;
	}
	if (len > MAX_MSG || cap < len - NKPI_NOISE_HS_OVERHEAD) {
		err = NKP_ERR_TOO_LARGE;
		goto dead;
	}
	if (payload == NULL && len > NKPI_NOISE_HS_OVERHEAD) {
		err = NKP_ERR_INVALID;
		goto dead;
	}
	if (hs->state == HS_MSG2 && !hs->has_e) {
		/* The initiator reads the second message only after writing
		 * the first, which made e. */
		err = NKP_ERR_STATE;
		goto dead;
	}
	memcpy(hs->re, msg, DHLEN);
	mix_hash(hs, hs->re, DHLEN);
	err = mix_tokens(hs);
	if (err != NKP_OK) {
		goto dead;
	}
	err = decrypt_and_hash(hs, msg + DHLEN, len - DHLEN, payload);
	if (err != NKP_OK) {
		goto dead;
	}
	*payload_len = len - NKPI_NOISE_HS_OVERHEAD;
	hs->state = hs->state == HS_MSG1 ? HS_MSG2 : HS_DONE;
	return NKP_OK;

dead:
	hs->state = HS_DEAD;
	return err;
}

bool nkpi_noise_hs_done(const nkpi_noise_hs *hs)
{
	return hs != NULL && (hs->state == HS_DONE || hs->state == HS_SPLIT);
}

nkp_err nkpi_noise_hs_split(nkpi_noise_hs *hs, nkpi_noise_cipher *send, nkpi_noise_cipher *recv,
			    uint8_t h[NKPI_NOISE_HASHLEN])
{
	bool initiator;

	if (hs == NULL || send == NULL || recv == NULL) {
		return NKP_ERR_INVALID;
	}
	if (hs->state != HS_DONE) {
		return NKP_ERR_STATE;
	}
	/* temp_k1, temp_k2 = HKDF(ck, zerolen, 2), each truncated to 32. */
	hkdf2(hs, NULL, 0, hs->ck);
	if (hs->initiator) {
		memcpy(send->k, hs->ck, KEYLEN);
		memcpy(recv->k, hs->okm, KEYLEN);
	} else {
		memcpy(recv->k, hs->ck, KEYLEN);
		memcpy(send->k, hs->okm, KEYLEN);
	}
	if (h != NULL) {
		memcpy(h, hs->h, HASHLEN);
	}
	/* Keep only the flags: every secret goes now. */
	initiator = hs->initiator;
	sodium_memzero(hs, sizeof(*hs));
	hs->initiator = initiator;
	hs->state = HS_SPLIT;
	return NKP_OK;
}

/* --- transport ------------------------------------------------------------ */

nkp_err nkpi_noise_encrypt(const nkpi_noise_cipher *c, uint64_t n, const uint8_t *ad, size_t adlen,
			   const uint8_t *pt, size_t len, uint8_t *out)
{
	if (c == NULL || out == NULL || (ad == NULL && adlen > 0) || (pt == NULL && len > 0)) {
		return NKP_ERR_INVALID;
	}
	if (n == NKPI_NOISE_NONCE_MAX) {
		return NKP_ERR_INVALID;
	}
	if (len > MAX_MSG - TAGLEN) {
		return NKP_ERR_TOO_LARGE;
	}
	encrypt_raw(c->k, n, ad, adlen, pt, len, out);
	return NKP_OK;
}

nkp_err nkpi_noise_decrypt(const nkpi_noise_cipher *c, uint64_t n, const uint8_t *ad, size_t adlen,
			   const uint8_t *ct, size_t ctlen, uint8_t *out)
{
	if (c == NULL || (ad == NULL && adlen > 0) || (ct == NULL && ctlen > 0) ||
	    (out == NULL && ctlen > TAGLEN)) {
		return NKP_ERR_INVALID;
	}
	if (n == NKPI_NOISE_NONCE_MAX) {
		return NKP_ERR_INVALID;
	}
	if (ctlen < TAGLEN) {
		return NKP_ERR_PARSE;
	}
	if (ctlen > MAX_MSG) {
		return NKP_ERR_TOO_LARGE;
	}
	return decrypt_raw(c->k, n, ad, adlen, ct, ctlen, out);
}

void nkpi_noise_rekey(nkpi_noise_cipher *c)
{
	static const uint8_t zeros[KEYLEN];
	uint8_t buf[KEYLEN + TAGLEN];

	if (c == NULL) {
		return;
	}
	encrypt_raw(c->k, NKPI_NOISE_NONCE_MAX, NULL, 0, zeros, KEYLEN, buf);
	memcpy(c->k, buf, KEYLEN);
	sodium_memzero(buf, sizeof(buf));
}

void nkpi_noise_cipher_wipe(nkpi_noise_cipher *c)
{
	if (c != NULL) {
		sodium_memzero(c, sizeof(*c));
	}
}
