/* Channel sessions (nkp/session.h, docs/PROTOCOL.md "Sessions").
 *
 * The per-message X25519 of the channel costs ~65 µs per operation on
 * small hosts, three per message pair on each side: at 2,500 hosts that
 * alone is seconds of CPU per rotation and most of the heartbeat cost. A
 * session pays it once per NKPI_SESSION_MAX_AGE_S per host and seals each
 * later exchange with two single-use symmetric keys from a one-way chain. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "session.h"

#define LABEL "nkp-session-v1"
#define LABEL_LEN (sizeof(LABEL) - 1)
#define ID_LABEL "nkp-session-id"
#define ID_LABEL_LEN (sizeof(ID_LABEL) - 1)
#define KDF_CONTEXT "nkpsess1"
#define AD_LEN (LABEL_LEN + 4 + NKPI_SESSION_ID_BYTES + 8 + 1)

enum { SUBKEY_REQUEST = 1, SUBKEY_REPLY = 2, SUBKEY_CHAIN = 3 };

_Static_assert(crypto_kdf_KEYBYTES == NKP_KEY_BYTES, "chain key size");
_Static_assert(sizeof(KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "KDF context size");

/* --- locked slots ------------------------------------------------------- */

/* A session's secrets: 128 bytes of locked memory, from a slab: one
 * sodium_malloc per session would cost a locked page and two guard pages
 * each (10 MiB of RSS at 2,500 hosts). */
#define SLOT_BYTES 128u

static nkpi_slab slots = NKPI_SLAB_INIT(SLOT_BYTES);

/* --- clock -------------------------------------------------------------- */

static _Atomic uint64_t fixed_clock_ms;

void nkpi_session_set_clock_ms(uint64_t now_ms)
{
	fixed_clock_ms = now_ms;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	uint64_t fixed = fixed_clock_ms;

	if (fixed != 0) {
		return fixed;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- sessions ----------------------------------------------------------- */

typedef enum { PENDING_NONE, PENDING_FULL, PENDING_SESSION } pending_kind;

struct nkpi_session {
	const nkp_channel *ch;
	bool responder;
	pthread_mutex_t lock; /* responder: two requests may be answered at once */
	bool ready;
	uint8_t id[NKPI_SESSION_ID_BYTES];
	uint64_t next;    /* number of the next exchange */
	uint64_t born_ms; /* monotonic */
	/* initiator: the exchange in flight */
	pending_kind pending;
	uint64_t pending_counter;
	uint8_t pending_eph[NKP_PUBKEY_BYTES];
	/* locked: ck | e | k_req | k_rep */
	uint8_t *sec;
};

#define SEC_CK(s) ((s)->sec)
#define SEC_E(s) ((s)->sec + 32)
#define SEC_KREQ(s) ((s)->sec + 64)
#define SEC_KREP(s) ((s)->sec + 96)

nkp_err nkpi_session_new(const nkp_channel *ch, bool responder, nkpi_session **out)
{
	nkpi_session *s;

	if (ch == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return NKP_ERR_NOMEM;
	}
	s->sec = nkpi_slab_get(&slots);
	if (s->sec == NULL) {
		free(s);
		return NKP_ERR_NOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->ch = ch;
	s->responder = responder;
	*out = s;
	return NKP_OK;
}

/* Lock held (responder). */
static void forget(nkpi_session *s)
{
	sodium_memzero(s->sec, SLOT_BYTES);
	sodium_memzero(s->id, sizeof(s->id));
	s->ready = false;
	s->next = 0;
	s->pending = PENDING_NONE;
}

void nkpi_session_reset(nkpi_session *s)
{
	if (s == NULL) {
		return;
	}
	pthread_mutex_lock(&s->lock);
	forget(s);
	pthread_mutex_unlock(&s->lock);
}

void nkpi_session_free(nkpi_session *s)
{
	if (s == NULL) {
		return;
	}
	nkpi_slab_put(&slots, s->sec);
	pthread_mutex_destroy(&s->lock);
	sodium_memzero(s, sizeof(*s));
	free(s);
}

bool nkpi_session_established(nkpi_session *s)
{
	bool ready;

	pthread_mutex_lock(&s->lock);
	ready = s->ready;
	pthread_mutex_unlock(&s->lock);
	return ready;
}

/* root (into ck) and id from the first exchange; eph_req/eph_rep are E and E_h. */
static nkp_err derive_root(uint8_t ck[static 32], uint8_t id[static NKPI_SESSION_ID_BYTES],
			   const uint8_t *ee, const uint8_t *k_req, const uint8_t *k_rep,
			   const uint8_t *eph_req, const uint8_t *eph_rep)
{
	crypto_generichash_state st;
	int rc;

	rc = crypto_generichash_init(&st, NULL, 0, 32);
	rc |= crypto_generichash_update(&st, (const uint8_t *)LABEL, LABEL_LEN);
	rc |= crypto_generichash_update(&st, ee, crypto_scalarmult_BYTES);
	rc |= crypto_generichash_update(&st, k_req, NKP_KEY_BYTES);
	rc |= crypto_generichash_update(&st, k_rep, NKP_KEY_BYTES);
	rc |= crypto_generichash_update(&st, eph_req, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_update(&st, eph_rep, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_final(&st, ck, 32);
	rc |= crypto_generichash_init(&st, NULL, 0, NKPI_SESSION_ID_BYTES);
	rc |= crypto_generichash_update(&st, (const uint8_t *)ID_LABEL, ID_LABEL_LEN);
	rc |= crypto_generichash_update(&st, eph_req, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_update(&st, eph_rep, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_final(&st, id, NKPI_SESSION_ID_BYTES);
	sodium_memzero(&st, sizeof(st));
	return rc == 0 ? NKP_OK : NKP_ERR_CRYPTO;
}

/* The keys of exchange i from ck_i, and ck_i+1 in place of ck_i. */
static void chain_step(uint8_t ck[static 32], uint8_t *k_req, uint8_t *k_rep)
{
	uint8_t next[32];

	crypto_kdf_derive_from_key(k_req, NKP_KEY_BYTES, SUBKEY_REQUEST, KDF_CONTEXT, ck);
	crypto_kdf_derive_from_key(k_rep, NKP_KEY_BYTES, SUBKEY_REPLY, KDF_CONTEXT, ck);
	crypto_kdf_derive_from_key(next, sizeof(next), SUBKEY_CHAIN, KDF_CONTEXT, ck);
	memcpy(ck, next, sizeof(next));
	sodium_memzero(next, sizeof(next));
}

/* ad = label || u32le(version) || id || u64le(counter) || u8(reply);
 * nonce = u64le(counter) || u8(reply) || zeros (each key seals once). */
static void build_ad_nonce(uint8_t ad[static AD_LEN], uint8_t nonce[static NKP_NONCE_BYTES],
			   const uint8_t *id, uint64_t counter, bool reply)
{
	uint8_t *p = ad;

	memcpy(p, LABEL, LABEL_LEN);
	p += LABEL_LEN;
	nkpi_store32_le(p, NKP_PROTOCOL_VERSION);
	p += 4;
	memcpy(p, id, NKPI_SESSION_ID_BYTES);
	p += NKPI_SESSION_ID_BYTES;
	nkpi_store32_le(p, (uint32_t)counter);
	nkpi_store32_le(p + 4, (uint32_t)(counter >> 32));
	p[8] = reply ? 1 : 0;
	memset(nonce, 0, NKP_NONCE_BYTES);
	memcpy(nonce, p, 9);
}

static nkp_err session_seal(const uint8_t *id, uint64_t counter, bool reply, const uint8_t *k,
			    const uint8_t *msg, size_t len, uint8_t **frame, size_t *framelen)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__SessionEnvelope env = NKP__WIRE__SESSION_ENVELOPE__INIT;
	uint8_t ad[AD_LEN];
	uint8_t nonce[NKP_NONCE_BYTES];

	if (len > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	build_ad_nonce(ad, nonce, id, counter, reply);
	env.protocol_version = NKP_PROTOCOL_VERSION;
	env.session_id = (ProtobufCBinaryData){NKPI_SESSION_ID_BYTES, (uint8_t *)id};
	env.counter = counter;
	env.reply = reply;
	f.kind_case = NKP__WIRE__FRAME__KIND_SESSION;
	f.session = &env;
	return nkpi_frame_seal(&f, &env.ciphertext, k, nonce, ad, AD_LEN, msg, len, frame,
			       framelen);
}

static nkp_err session_open(const Nkp__Wire__SessionEnvelope *env, const uint8_t *k, uint8_t *pt)
{
	uint8_t ad[AD_LEN];
	uint8_t nonce[NKP_NONCE_BYTES];

	build_ad_nonce(ad, nonce, env->session_id.data, env->counter, env->reply);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, env->ciphertext.data,
						       env->ciphertext.len, ad, AD_LEN, nonce,
						       k) != 0) {
		return NKP_ERR_AUTH;
	}
	return NKP_OK;
}

static bool live(const nkpi_session *s, uint64_t max_age_s)
{
	return s->ready && now_ms() - s->born_ms < max_age_s * 1000u && s->next < UINT64_MAX;
}

/* --- initiator ---------------------------------------------------------- */

nkp_err nkpi_session_seal_request(nkpi_session *s, const uint8_t *msg, size_t len,
				  uint8_t **frame, size_t *framelen)
{
	nkp_err err;

	if (s == NULL || s->responder || (msg == NULL && len > 0) || frame == NULL ||
	    framelen == NULL) {
		return NKP_ERR_INVALID;
	}
	s->pending = PENDING_NONE;
	if (live(s, NKPI_SESSION_MAX_AGE_S)) {
		uint64_t i = s->next++;

		chain_step(SEC_CK(s), SEC_KREQ(s), SEC_KREP(s));
		err = session_seal(s->id, i, false, SEC_KREQ(s), msg, len, frame, framelen);
		sodium_memzero(SEC_KREQ(s), NKP_KEY_BYTES);
		if (err != NKP_OK) {
			forget(s);
			return err;
		}
		s->pending = PENDING_SESSION;
		s->pending_counter = i;
		return NKP_OK;
	}
	forget(s);
	err = nkpi_channel_seal_keyed(s->ch, msg, len, frame, framelen, SEC_E(s), s->pending_eph,
				      SEC_KREQ(s));
	if (err != NKP_OK) {
		forget(s);
		return err;
	}
	s->pending = PENDING_FULL;
	return NKP_OK;
}

/* The reply to a channel-sealed request: opens it and makes the session. */
static nkp_err open_full_reply(nkpi_session *s, const Nkp__Wire__Envelope *env, uint8_t *pt)
{
	uint8_t ee[crypto_scalarmult_BYTES];
	nkp_err err;

	err = nkpi_envelope_open(s->ch, env, pt, SEC_KREP(s));
	if (err != NKP_OK) {
		return err;
	}
	if (crypto_scalarmult(ee, SEC_E(s), env->ephemeral.data) != 0) {
		err = NKP_ERR_AUTH;
		goto wipe;
	}
	err = derive_root(SEC_CK(s), s->id, ee, SEC_KREQ(s), SEC_KREP(s), s->pending_eph,
			  env->ephemeral.data);
	if (err == NKP_OK) {
		s->ready = true;
		s->next = 0;
		s->born_ms = now_ms();
	}

wipe:
	sodium_memzero(ee, sizeof(ee));
	return err;
}

static nkp_err open_session_reply(nkpi_session *s, const Nkp__Wire__SessionEnvelope *env,
				  uint8_t *pt)
{
	if (!env->reply || env->counter != s->pending_counter ||
	    sodium_memcmp(env->session_id.data, s->id, NKPI_SESSION_ID_BYTES) != 0) {
		return NKP_ERR_REPLAY;
	}
	return session_open(env, SEC_KREP(s), pt);
}

nkp_err nkpi_session_open_reply(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				size_t cap, size_t *msglen, nkp_err *peer_code, char *peer_text,
				size_t peer_text_size)
{
	Nkp__Wire__Frame *f = NULL;
	ProtobufCBinaryData ct;
	pending_kind pending;
	nkp_err err;

	if (s == NULL || s->responder || buf == NULL || msglen == NULL) {
		return NKP_ERR_INVALID;
	}
	pending = s->pending;
	s->pending = PENDING_NONE;
	err = nkpi_frame_parse(frame, len, &f);
	if (err == NKP_ERR_REFUSED) {
		err = nkpi_plain_error_report(f->plain_error, peer_code, peer_text,
					      peer_text_size);
		goto fail;
	}
	if (err != NKP_OK) {
		goto fail;
	}
	if ((pending == PENDING_FULL && f->kind_case != NKP__WIRE__FRAME__KIND_SEALED) ||
	    (pending == PENDING_SESSION && f->kind_case != NKP__WIRE__FRAME__KIND_SESSION)) {
		err = NKP_ERR_PARSE;
		goto fail;
	}
	if (pending == PENDING_NONE) {
		err = NKP_ERR_STATE;
		goto fail;
	}
	ct = pending == PENDING_FULL ? f->sealed->ciphertext : f->session->ciphertext;
	if (ct.len - NKP_TAG_BYTES > cap) {
		err = NKP_ERR_TOO_LARGE;
		goto fail;
	}
	err = pending == PENDING_FULL ? open_full_reply(s, f->sealed, buf)
				      : open_session_reply(s, f->session, buf);
	if (err != NKP_OK) {
		goto fail;
	}
	*msglen = ct.len - NKP_TAG_BYTES;
	sodium_memzero(SEC_E(s), 3 * NKP_KEY_BYTES); /* e, k_req, k_rep: used */
	nkp__wire__frame__free_unpacked(f, NULL);
	return NKP_OK;

fail:
	forget(s);
	if (f != NULL) {
		nkp__wire__frame__free_unpacked(f, NULL);
	}
	return err;
}

/* --- responder ---------------------------------------------------------- */

void nkpi_session_reply_wipe(nkpi_session_reply *rk)
{
	if (rk == NULL) {
		return;
	}
	if (rk->k != NULL) {
		nkpi_key_release(rk->k);
	}
	sodium_memzero(rk, sizeof(*rk));
}

/* Lock held. Opens exchange env->counter of our session into pt; on
 * success the chain moves on and rk->k holds the reply key. Nothing
 * changes on failure. */
static nkp_err open_session_request(nkpi_session *s, const Nkp__Wire__SessionEnvelope *env,
				    uint8_t *pt, nkpi_session_reply *rk)
{
	uint8_t ck[32];
	uint8_t k_req[NKP_KEY_BYTES];
	nkp_err err;

	if (s->ready && !live(s, NKPI_SESSION_RESPONDER_AGE_S)) {
		forget(s); /* expired: its chain key goes now */
	}
	if (!s->ready || sodium_memcmp(env->session_id.data, s->id, NKPI_SESSION_ID_BYTES) != 0) {
		return NKP_ERR_SESSION;
	}
	/* The initiator never reuses a number nor skips one (after a lost
	 * exchange it starts a new session): anything else is a replay. */
	if (env->counter != s->next) {
		return NKP_ERR_REPLAY;
	}
	memcpy(ck, SEC_CK(s), sizeof(ck));
	chain_step(ck, k_req, nkpi_key_bytes_mut(rk->k));
	err = session_open(env, k_req, pt);
	if (err == NKP_OK) {
		memcpy(SEC_CK(s), ck, sizeof(ck));
		s->next++;
		rk->mode = NKPI_REPLY_SESSION;
		memcpy(rk->id, s->id, sizeof(rk->id));
		rk->counter = env->counter;
	}
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(k_req, sizeof(k_req));
	return err;
}

nkp_err nkpi_session_open_request(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				  size_t cap, size_t *msglen, nkpi_session_reply *rk)
{
	Nkp__Wire__Frame *f = NULL;
	ProtobufCBinaryData ct;
	nkp_err err;

	if (s == NULL || !s->responder || buf == NULL || msglen == NULL || rk == NULL) {
		return NKP_ERR_INVALID;
	}
	memset(rk, 0, sizeof(*rk));
	err = nkpi_frame_parse(frame, len, &f);
	if (err != NKP_OK) {
		goto out;
	}
	if (f->kind_case == NKP__WIRE__FRAME__KIND_SESSION && f->session->reply) {
		err = NKP_ERR_PARSE; /* a reply is never a request */
		goto out;
	}
	ct = f->kind_case == NKP__WIRE__FRAME__KIND_SEALED ? f->sealed->ciphertext
							   : f->session->ciphertext;
	if (ct.len - NKP_TAG_BYTES > cap) {
		err = NKP_ERR_TOO_LARGE;
		goto out;
	}
	err = nkpi_key_borrow(&rk->k);
	if (err != NKP_OK) {
		goto out;
	}
	if (f->kind_case == NKP__WIRE__FRAME__KIND_SEALED) {
		err = nkpi_envelope_open(s->ch, f->sealed, buf, nkpi_key_bytes_mut(rk->k));
		if (err == NKP_OK) {
			rk->mode = NKPI_REPLY_FULL;
			memcpy(rk->eph, f->sealed->ephemeral.data, NKP_PUBKEY_BYTES);
		}
	} else {
		pthread_mutex_lock(&s->lock);
		err = open_session_request(s, f->session, buf, rk);
		pthread_mutex_unlock(&s->lock);
	}
	if (err == NKP_OK) {
		*msglen = ct.len - NKP_TAG_BYTES;
	}

out:
	if (err != NKP_OK) {
		nkpi_session_reply_wipe(rk);
	}
	if (f != NULL) {
		nkp__wire__frame__free_unpacked(f, NULL);
	}
	return err;
}

/* Seals the reply to a channel-sealed request and makes the new session. */
static nkp_err seal_full_reply(nkpi_session *s, const nkpi_session_reply *rk, const uint8_t *msg,
			       size_t len, uint8_t **frame, size_t *framelen)
{
	nkp_key *e_h = NULL;
	uint8_t eph[NKP_PUBKEY_BYTES];
	uint8_t k_rep[NKP_KEY_BYTES];
	uint8_t ee[crypto_scalarmult_BYTES];
	uint8_t ck[32];
	uint8_t id[NKPI_SESSION_ID_BYTES];
	bool made;
	nkp_err err;

	err = nkpi_key_borrow(&e_h);
	if (err != NKP_OK) {
		return err;
	}
	err = nkpi_channel_seal_keyed(s->ch, msg, len, frame, framelen, nkpi_key_bytes_mut(e_h),
				      eph, k_rep);
	if (err != NKP_OK) {
		goto wipe;
	}
	/* Should this fail, the reply still goes out; the initiator's next
	 * session frame then gets NKP_ERR_SESSION and a new handshake. */
	made = crypto_scalarmult(ee, nkpi_key_bytes(e_h), rk->eph) == 0 &&
	       derive_root(ck, id, ee, nkpi_key_bytes(rk->k), k_rep, rk->eph, eph) == NKP_OK;
	pthread_mutex_lock(&s->lock);
	forget(s);
	if (made) {
		memcpy(SEC_CK(s), ck, sizeof(ck));
		memcpy(s->id, id, sizeof(id));
		s->ready = true;
		s->born_ms = now_ms();
	}
	pthread_mutex_unlock(&s->lock);

wipe:
	sodium_memzero(k_rep, sizeof(k_rep));
	sodium_memzero(ee, sizeof(ee));
	sodium_memzero(ck, sizeof(ck));
	nkpi_key_release(e_h);
	return err;
}

nkp_err nkpi_session_seal_reply(nkpi_session *s, nkpi_session_reply *rk, const uint8_t *msg,
				size_t len, uint8_t **frame, size_t *framelen)
{
	nkp_err err = NKP_ERR_STATE;

	if (s == NULL || !s->responder || rk == NULL || (msg == NULL && len > 0) ||
	    frame == NULL || framelen == NULL) {
		nkpi_session_reply_wipe(rk);
		return NKP_ERR_INVALID;
	}
	if (rk->mode == NKPI_REPLY_SESSION) {
		err = session_seal(rk->id, rk->counter, true, nkpi_key_bytes(rk->k), msg, len, frame,
				   framelen);
	} else if (rk->mode == NKPI_REPLY_FULL) {
		err = seal_full_reply(s, rk, msg, len, frame, framelen);
	}
	nkpi_session_reply_wipe(rk);
	return err;
}
