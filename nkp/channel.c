/* The secure channel (include/nkp/channel.h, proto/wire.proto).
 *
 * Sender S (static s), recipient R (static r), per message ephemeral e/E:
 *
 *   k  = BLAKE2b-256("nkp-channel-v1" || DH(e, R) || DH(S, R) || E || S || R)
 *   ct = XChaCha20-Poly1305(k, nonce, msg,
 *        ad = "nkp-channel-v1" || u32le(1) || S || R || E)
 *
 * DH(e, R) gives forward secrecy towards the sender and confidentiality to
 * R; DH(S, R) authenticates the sender: only holders of s or r can compute
 * it. Both parties cache DH(S, R) per channel: X25519 is commutative,
 * s·R = s·(r·G) = r·(s·G) = r·S, so the sender's DH(s, R) and the
 * receiver's DH(r, S) are the same 32 bytes and one cached value serves
 * both directions. The hash input always names the sender first, so a
 * frame sent A -> B can never be opened as one sent B -> A. E, S and R are
 * hashed as well as bound as associated data: X25519 ignores the top bit of
 * a public key, so without them two encodings of one point would be
 * interchangeable on the wire. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/channel.h>
#include <nkp/log.h>

#include "internal.h"
#include "session.h"
#include "wire.pb-c.h"

#define LABEL "nkp-channel-v1"
#define LABEL_LEN (sizeof(LABEL) - 1)
#define AD_LEN (LABEL_LEN + 4 + 3 * NKP_PUBKEY_BYTES)
/* Longest PlainError text sent or reported, without the NUL. */
#define PLAIN_TEXT_MAX 256u

_Static_assert(NKP_PUBKEY_BYTES == crypto_scalarmult_BYTES, "X25519 public key size");
_Static_assert(NKP_KEY_BYTES == crypto_scalarmult_SCALARBYTES, "X25519 scalar size");
_Static_assert(NKP_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "AEAD key size");
_Static_assert(NKP_NONCE_BYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce size");
_Static_assert(NKP_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag size");

struct nkp_identity {
	nkp_key *secret;
	uint8_t pub[NKP_PUBKEY_BYTES];
};

struct nkp_channel {
	const nkp_identity *self;
	uint8_t peer[NKP_PUBKEY_BYTES];
	/* DH(self, peer) in sodium_malloc memory. Not mprotect'ed while idle:
	 * seal and open run concurrently on one channel, and toggling page
	 * protection from several threads would race. */
	nkp_key *static_dh;
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
	 * ignored; libsodium also refuses non-zero trailing bits, so each key
	 * has exactly one accepted spelling. */
	if (b64 == NULL || strnlen(b64, 45) != 44 ||
	    sodium_base642bin(tmp, sizeof(tmp), b64, 44, NULL, &n, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    n != NKP_PUBKEY_BYTES || end != b64 + 44) {
		return NKP_ERR_PARSE;
	}
	memcpy(out, tmp, NKP_PUBKEY_BYTES);
	return NKP_OK;
}

/* --- channels ----------------------------------------------------------- */

nkp_err nkp_channel_new(const nkp_identity *self, const uint8_t peer[static NKP_PUBKEY_BYTES],
			nkp_channel **out)
{
	uint8_t dh[crypto_scalarmult_BYTES];
	nkp_channel *ch;
	nkp_err err = NKP_OK;

	if (self == NULL || peer == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	/* -1 means an all-zero result: the peer key is a low-order point and
	 * the "shared" secret would be known to everyone. */
	if (crypto_scalarmult(dh, nkpi_key_bytes(self->secret), peer) != 0) {
		err = NKP_ERR_INVALID;
		goto wipe;
	}
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		err = NKP_ERR_NOMEM;
		goto wipe;
	}
	err = nkp_key_from_bytes(dh, &ch->static_dh);
	if (err != NKP_OK) {
		free(ch);
		goto wipe;
	}
	ch->self = self;
	memcpy(ch->peer, peer, NKP_PUBKEY_BYTES);
	*out = ch;

wipe:
	sodium_memzero(dh, sizeof(dh));
	return err;
}

const uint8_t *nkp_channel_peer(const nkp_channel *ch)
{
	return ch->peer;
}

void nkp_channel_free(nkp_channel *ch)
{
	if (ch == NULL) {
		return;
	}
	nkp_key_free(ch->static_dh);
	sodium_memzero(ch, sizeof(*ch));
	free(ch);
}

/* k = BLAKE2b-256(label || eph_dh || static_dh || E || S || R). */
static nkp_err derive_key(uint8_t k[static NKP_KEY_BYTES], const uint8_t *eph_dh,
			  const nkp_key *static_dh, const uint8_t *eph, const uint8_t *sender,
			  const uint8_t *recipient)
{
	crypto_generichash_state st;
	int rc;

	rc = crypto_generichash_init(&st, NULL, 0, NKP_KEY_BYTES);
	rc |= crypto_generichash_update(&st, (const uint8_t *)LABEL, LABEL_LEN);
	rc |= crypto_generichash_update(&st, eph_dh, crypto_scalarmult_BYTES);
	rc |= crypto_generichash_update(&st, nkpi_key_bytes(static_dh), NKP_KEY_BYTES);
	rc |= crypto_generichash_update(&st, eph, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_update(&st, sender, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_update(&st, recipient, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_final(&st, k, NKP_KEY_BYTES);
	sodium_memzero(&st, sizeof(st));
	return rc == 0 ? NKP_OK : NKP_ERR_CRYPTO;
}

/* ad = label || u32le(version) || S || R || E. */
static void build_ad(uint8_t ad[static AD_LEN], const uint8_t *sender, const uint8_t *recipient,
		     const uint8_t *eph)
{
	uint8_t *p = ad;

	memcpy(p, LABEL, LABEL_LEN);
	p += LABEL_LEN;
	nkpi_store32_le(p, NKP_PROTOCOL_VERSION);
	p += 4;
	memcpy(p, sender, NKP_PUBKEY_BYTES);
	p += NKP_PUBKEY_BYTES;
	memcpy(p, recipient, NKP_PUBKEY_BYTES);
	p += NKP_PUBKEY_BYTES;
	memcpy(p, eph, NKP_PUBKEY_BYTES);
}

/* A ProtobufCBuffer over one preallocated block. Seal encrypts the
 * ciphertext straight into its final place at the end of the frame, so
 * packing must not copy it onto itself; any other source inside the block
 * would mean the layout is not what seal computed. */
typedef struct {
	ProtobufCBuffer base;
	uint8_t *out;
	size_t cap;
	size_t pos;
	bool ok;
} fixed_buffer;

static void fixed_append(ProtobufCBuffer *buf, size_t len, const uint8_t *data)
{
	fixed_buffer *fb = (fixed_buffer *)buf;
	uintptr_t src = (uintptr_t)data;
	uintptr_t lo = (uintptr_t)fb->out;

	if (!fb->ok || len == 0) {
		return;
	}
	if (len > fb->cap - fb->pos) {
		fb->ok = false;
		return;
	}
	if (data == fb->out + fb->pos) {
		fb->pos += len;
		return;
	}
	if (src >= lo && src < lo + fb->cap) {
		fb->ok = false;
		return;
	}
	memcpy(fb->out + fb->pos, data, len);
	fb->pos += len;
}

/* Computes E and k for a new message to the channel's peer; e_out (if not
 * NULL, locked memory) receives the ephemeral secret for a session. */
static nkp_err seal_key(const nkp_channel *ch, uint8_t eph[static NKP_PUBKEY_BYTES],
			uint8_t k[static NKP_KEY_BYTES], uint8_t *e_out)
{
	uint8_t e[crypto_scalarmult_SCALARBYTES];
	uint8_t dh[crypto_scalarmult_BYTES];
	nkp_err err = NKP_ERR_CRYPTO;

	randombytes_buf(e, sizeof(e));
	if (crypto_scalarmult_base(eph, e) != 0) {
		goto wipe;
	}
	/* The peer key passed the low-order check in nkp_channel_new, and
	 * libsodium clamps e, so this cannot fail; checked all the same. */
	if (crypto_scalarmult(dh, e, ch->peer) != 0) {
		goto wipe;
	}
	err = derive_key(k, dh, ch->static_dh, eph, ch->self->pub, ch->peer);
	if (err == NKP_OK && e_out != NULL) {
		memcpy(e_out, e, sizeof(e));
	}

wipe:
	sodium_memzero(e, sizeof(e));
	sodium_memzero(dh, sizeof(dh));
	return err;
}

/* Encrypts into the tail of one malloc'd block and packs the frame around
 * it: the frame is the only allocation of a seal. */
nkp_err nkpi_frame_seal(Nkp__Wire__Frame *f, ProtobufCBinaryData *ct_field, const uint8_t *k,
			const uint8_t *nonce, const uint8_t *ad, size_t adlen, const uint8_t *msg,
			size_t len, uint8_t **frame, size_t *framelen)
{
	fixed_buffer fb = {.base = {.append = fixed_append}, .ok = true};
	size_t size;
	uint8_t *ct;

	/* Length only: sized first, then encrypted into its final place. */
	ct_field->len = len + NKP_TAG_BYTES;
	ct_field->data = NULL;
	size = protobuf_c_message_get_packed_size(&f->base);

	if (size > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	fb.out = malloc(size);
	if (fb.out == NULL) {
		return NKP_ERR_NOMEM;
	}
	fb.cap = size;
	ct = fb.out + size - ct_field->len;
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, msg, len, ad, adlen, NULL, nonce,
						       k) != 0) {
		free(fb.out);
		return NKP_ERR_CRYPTO;
	}
	ct_field->data = ct;
	protobuf_c_message_pack_to_buffer(&f->base, &fb.base);
	if (!fb.ok || fb.pos != size) {
		nkp_log(NKP_LOG_ERR, "NKP-CHANNEL-INTERNAL", "frame layout differs from its size");
		abort();
	}
	*frame = fb.out;
	*framelen = size;
	return NKP_OK;
}

nkp_err nkpi_channel_seal_keyed(const nkp_channel *ch, const uint8_t *msg, size_t len,
				uint8_t **frame, size_t *framelen, uint8_t *e_out,
				uint8_t eph_out[static NKP_PUBKEY_BYTES], uint8_t *k_out)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__Envelope env = NKP__WIRE__ENVELOPE__INIT;
	uint8_t eph[NKP_PUBKEY_BYTES];
	uint8_t k[NKP_KEY_BYTES];
	uint8_t nonce[NKP_NONCE_BYTES];
	uint8_t ad[AD_LEN];
	nkp_err err;

	if (ch == NULL || (msg == NULL && len > 0) || frame == NULL || framelen == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	err = seal_key(ch, eph, k, e_out);
	if (err != NKP_OK) {
		goto wipe;
	}
	memcpy(eph_out, eph, NKP_PUBKEY_BYTES);
	randombytes_buf(nonce, sizeof(nonce));
	build_ad(ad, ch->self->pub, ch->peer, eph);

	env.protocol_version = NKP_PROTOCOL_VERSION;
	env.sender = (ProtobufCBinaryData){NKP_PUBKEY_BYTES, (uint8_t *)ch->self->pub};
	env.recipient = (ProtobufCBinaryData){NKP_PUBKEY_BYTES, (uint8_t *)ch->peer};
	env.ephemeral = (ProtobufCBinaryData){NKP_PUBKEY_BYTES, eph};
	env.nonce = (ProtobufCBinaryData){NKP_NONCE_BYTES, nonce};
	f.kind_case = NKP__WIRE__FRAME__KIND_SEALED;
	f.sealed = &env;
	err = nkpi_frame_seal(&f, &env.ciphertext, k, nonce, ad, AD_LEN, msg, len, frame,
			      framelen);
	if (err == NKP_OK && k_out != NULL) {
		memcpy(k_out, k, sizeof(k));
	}

wipe:
	sodium_memzero(k, sizeof(k));
	return err;
}

nkp_err nkp_channel_seal(const nkp_channel *ch, const uint8_t *msg, size_t len, uint8_t **frame,
			 size_t *framelen)
{
	uint8_t eph[NKP_PUBKEY_BYTES];

	return nkpi_channel_seal_keyed(ch, msg, len, frame, framelen, NULL, eph, NULL);
}

/* --- parsing ------------------------------------------------------------ */

static nkp_err envelope_check(const Nkp__Wire__Envelope *env)
{
	/* Version first: a newer peer may send fields we do not know, and
	 * deserves "unknown version" rather than "malformed". */
	if (env->protocol_version != NKP_PROTOCOL_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&env->base) || env->sender.len != NKP_PUBKEY_BYTES ||
	    env->recipient.len != NKP_PUBKEY_BYTES || env->ephemeral.len != NKP_PUBKEY_BYTES ||
	    env->nonce.len != NKP_NONCE_BYTES || env->ciphertext.len < NKP_TAG_BYTES) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

static nkp_err session_envelope_check(const Nkp__Wire__SessionEnvelope *env)
{
	if (env->protocol_version != NKP_PROTOCOL_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&env->base) || env->session_id.len != NKPI_SESSION_ID_BYTES ||
	    env->ciphertext.len < NKP_TAG_BYTES) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

nkp_err nkpi_frame_parse(const uint8_t *frame, size_t len, Nkp__Wire__Frame **out)
{
	Nkp__Wire__Frame *f;
	nkp_err err = NKP_ERR_PARSE;

	if (len > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	if (frame == NULL || len == 0) {
		return NKP_ERR_PARSE;
	}
	f = nkp__wire__frame__unpack(NULL, len, frame);
	if (f == NULL) {
		return NKP_ERR_PARSE;
	}
	if (nkpi_has_unknown(&f->base)) {
		goto free_frame;
	}
	switch (f->kind_case) {
	case NKP__WIRE__FRAME__KIND_SEALED:
		err = envelope_check(f->sealed);
		break;
	case NKP__WIRE__FRAME__KIND_SESSION:
		err = session_envelope_check(f->session);
		break;
	case NKP__WIRE__FRAME__KIND_PLAIN_ERROR:
		if (!nkpi_has_unknown(&f->plain_error->base)) {
			err = NKP_ERR_REFUSED;
		}
		break;
	default:
		break;
	}
	if (err == NKP_OK || err == NKP_ERR_REFUSED) {
		*out = f;
		return err;
	}

free_frame:
	nkp__wire__frame__free_unpacked(f, NULL);
	return err;
}

/* Printable ASCII only, at most PLAIN_TEXT_MAX characters and size - 1. */
static void sanitize_text(const char *in, char *out, size_t size)
{
	size_t n = 0;

	if (in != NULL) {
		for (; in[n] != '\0' && n + 1 < size && n < PLAIN_TEXT_MAX; n++) {
			unsigned char c = (unsigned char)in[n];

			out[n] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
		}
	}
	out[n] = '\0';
}

nkp_err nkpi_plain_error_report(const Nkp__Wire__PlainError *pe, nkp_err *peer_code,
				char *peer_text, size_t peer_text_size)
{
	if (peer_code != NULL) {
		/* The code is the peer's word, unauthenticated: only a real,
		 * non-success nkp_err is passed on. */
		*peer_code = (pe->code > NKP_OK && pe->code < NKP_ERR__COUNT) ? (nkp_err)pe->code
									      : NKP_ERR_REFUSED;
	}
	if (peer_text != NULL && peer_text_size > 0) {
		sanitize_text(pe->message, peer_text, peer_text_size);
	}
	return NKP_ERR_REFUSED;
}

nkp_err nkpi_envelope_open(const nkp_channel *ch, const Nkp__Wire__Envelope *env, uint8_t *pt,
			   uint8_t *k_out)
{
	const uint8_t *us = ch->self->pub;
	uint8_t dh[crypto_scalarmult_BYTES];
	uint8_t k[NKP_KEY_BYTES];
	uint8_t ad[AD_LEN];
	nkp_err err;

	if (sodium_memcmp(env->sender.data, ch->peer, NKP_PUBKEY_BYTES) != 0 ||
	    sodium_memcmp(env->recipient.data, us, NKP_PUBKEY_BYTES) != 0) {
		return NKP_ERR_UNTRUSTED_PEER;
	}
	/* A low-order ephemeral key gives an all-zero DH(r, E): refused. */
	if (crypto_scalarmult(dh, nkpi_key_bytes(ch->self->secret), env->ephemeral.data) != 0) {
		err = NKP_ERR_AUTH;
		goto wipe;
	}
	err = derive_key(k, dh, ch->static_dh, env->ephemeral.data, ch->peer, us);
	if (err != NKP_OK) {
		goto wipe;
	}
	build_ad(ad, ch->peer, us, env->ephemeral.data);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, env->ciphertext.data,
						       env->ciphertext.len, ad, AD_LEN,
						       env->nonce.data, k) != 0) {
		err = NKP_ERR_AUTH;
	} else if (k_out != NULL) {
		memcpy(k_out, k, sizeof(k));
	}

wipe:
	sodium_memzero(dh, sizeof(dh));
	sodium_memzero(k, sizeof(k));
	return err;
}

/* Parses `frame` and opens it into `buf` (cap bytes), or into a new
 * sodium_malloc block when buf is NULL (returned in *msg). */
static nkp_err channel_open(const nkp_channel *ch, const uint8_t *frame, size_t len, uint8_t *buf,
			    size_t cap, uint8_t **msg, size_t *msglen, nkp_err *peer_code,
			    char *peer_text, size_t peer_text_size)
{
	Nkp__Wire__Frame *f = NULL;
	uint8_t *pt = buf;
	size_t ptlen;
	nkp_err err;

	err = nkpi_frame_parse(frame, len, &f);
	if (err == NKP_ERR_REFUSED) {
		err = nkpi_plain_error_report(f->plain_error, peer_code, peer_text, peer_text_size);
		goto free_frame;
	}
	if (err != NKP_OK) {
		goto free_frame;
	}
	if (f->kind_case == NKP__WIRE__FRAME__KIND_SESSION) {
		err = NKP_ERR_SESSION; /* a channel alone holds no session */
		goto free_frame;
	}
	ptlen = f->sealed->ciphertext.len - NKP_TAG_BYTES;
	if (pt == NULL) {
		pt = sodium_malloc(ptlen > 0 ? ptlen : 1);
		err = pt == NULL ? NKP_ERR_NOMEM : NKP_OK;
	} else if (ptlen > cap) {
		err = NKP_ERR_TOO_LARGE;
	}
	if (err == NKP_OK) {
		err = nkpi_envelope_open(ch, f->sealed, pt, NULL);
	}
	if (err == NKP_OK) {
		if (msg != NULL) {
			*msg = pt;
		}
		*msglen = ptlen;
	} else if (pt != buf) {
		sodium_free(pt);
	}

free_frame:
	if (f != NULL) {
		nkp__wire__frame__free_unpacked(f, NULL);
	}
	return err;
}

nkp_err nkp_channel_open(const nkp_channel *ch, const uint8_t *frame, size_t len, uint8_t **msg,
			 size_t *msglen, nkp_err *peer_code, char *peer_text,
			 size_t peer_text_size)
{
	if (ch == NULL || msg == NULL || msglen == NULL) {
		return NKP_ERR_INVALID;
	}
	return channel_open(ch, frame, len, NULL, 0, msg, msglen, peer_code, peer_text,
			    peer_text_size);
}

nkp_err nkpi_channel_open_into(const nkp_channel *ch, const uint8_t *frame, size_t len,
			       uint8_t *buf, size_t cap, size_t *msglen, nkp_err *peer_code,
			       char *peer_text, size_t peer_text_size)
{
	if (ch == NULL || buf == NULL || msglen == NULL) {
		return NKP_ERR_INVALID;
	}
	return channel_open(ch, frame, len, buf, cap, NULL, msglen, peer_code, peer_text,
			    peer_text_size);
}

nkp_err nkp_frame_sender(const uint8_t *frame, size_t len, uint8_t sender[static NKP_PUBKEY_BYTES])
{
	Nkp__Wire__Frame *f = NULL;
	nkp_err err;

	if (sender == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkpi_frame_parse(frame, len, &f);
	if (err == NKP_OK && f->kind_case == NKP__WIRE__FRAME__KIND_SESSION) {
		err = NKP_ERR_SESSION; /* sessions carry no sender key */
	} else if (err == NKP_OK) {
		memcpy(sender, f->sealed->sender.data, NKP_PUBKEY_BYTES);
	}
	if (f != NULL) {
		nkp__wire__frame__free_unpacked(f, NULL);
	}
	return err;
}

nkp_err nkp_frame_plain_error(nkp_err code, const char *text, uint8_t **frame, size_t *framelen)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__PlainError pe = NKP__WIRE__PLAIN_ERROR__INIT;
	char clean[PLAIN_TEXT_MAX + 1];
	uint8_t *out;
	size_t size;

	if (code <= NKP_OK || code >= NKP_ERR__COUNT || frame == NULL || framelen == NULL) {
		return NKP_ERR_INVALID;
	}
	sanitize_text(text, clean, sizeof(clean));
	pe.code = (uint32_t)code;
	pe.message = clean;
	f.kind_case = NKP__WIRE__FRAME__KIND_PLAIN_ERROR;
	f.plain_error = &pe;
	size = protobuf_c_message_get_packed_size(&f.base);
	out = malloc(size);
	if (out == NULL) {
		return NKP_ERR_NOMEM;
	}
	if (protobuf_c_message_pack(&f.base, out) != size) {
		free(out);
		return NKP_ERR_CRYPTO;
	}
	*frame = out;
	*framelen = size;
	return NKP_OK;
}
