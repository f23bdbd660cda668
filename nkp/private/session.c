/* Sessions on Noise_KK (nkp/private/session.h, docs/PROTOCOL.md "Transport"). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <nkp/log.h>

#include "internal.h"
#include "noise.h"
#include "pbstrict.h"
#include "session.h"
#include "wire.pb-c.h"

#define PROLOGUE "nkp-wire-v1"
#define MAC1_LABEL "nkp-mac1"
#define INIT_NOISE_BYTES (NKPI_NOISE_HS_OVERHEAD + NKPI_SESSION_TIMESTAMP_BYTES)
#define RESP_NOISE_BYTES NKPI_NOISE_HS_OVERHEAD
#define CHUNK_CT (NKPI_SESSION_CHUNK + NKPI_NOISE_TAGLEN)

_Static_assert(NKP_PUBKEY_BYTES == NKPI_NOISE_DHLEN, "X25519 key size");
_Static_assert(CHUNK_CT == NKPI_NOISE_MAX_MSG, "a chunk is one Noise message");

/* --- clocks --------------------------------------------------------------- */

static _Atomic uint64_t fixed_clock_ms;
static _Atomic uint64_t fixed_wall_ns;
static pthread_mutex_t stamp_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_stamp_ns; /* the last timestamp this process made */

void nkpi_session_set_clock_ms(uint64_t now_ms)
{
	fixed_clock_ms = now_ms;
}

void nkpi_session_set_wall_ns(uint64_t now_ns)
{
	fixed_wall_ns = now_ns;
}

void nkpi_session_reset_timestamps(void)
{
	pthread_mutex_lock(&stamp_lock);
	last_stamp_ns = 0;
	pthread_mutex_unlock(&stamp_lock);
}

void nkpi_session_raise_timestamps(uint64_t floor_ns)
{
	pthread_mutex_lock(&stamp_lock);
	if (floor_ns > last_stamp_ns) {
		last_stamp_ns = floor_ns;
	}
	pthread_mutex_unlock(&stamp_lock);
}

uint64_t nkpi_session_last_timestamp(void)
{
	uint64_t ns;

	pthread_mutex_lock(&stamp_lock);
	ns = last_stamp_ns;
	pthread_mutex_unlock(&stamp_lock);
	return ns;
}

static uint64_t now_ms(void)
{
	uint64_t fixed = fixed_clock_ms;

	return fixed != 0 ? fixed : nkpi_mono_ms();
}

/* TAI64N (big-endian 2^62 + seconds, big-endian nanoseconds) of
 * max(now, last + 1 ns): strictly increasing within this process, even if
 * the wall clock steps back. */
static void timestamp(uint8_t out[static NKPI_SESSION_TIMESTAMP_BYTES])
{
	uint64_t ns = fixed_wall_ns;
	uint64_t sec;
	uint32_t nsec;

	if (ns == 0) {
		ns = nkpi_wall_ns();
	}
	pthread_mutex_lock(&stamp_lock);
	if (ns <= last_stamp_ns) {
		ns = last_stamp_ns + 1;
	}
	last_stamp_ns = ns;
	pthread_mutex_unlock(&stamp_lock);
	sec = (UINT64_C(1) << 62) + ns / 1000000000u;
	nsec = (uint32_t)(ns % 1000000000u);
	for (int i = 0; i < 8; i++) {
		out[i] = (uint8_t)(sec >> (56 - 8 * i));
	}
	for (int i = 0; i < 4; i++) {
		out[8 + i] = (uint8_t)(nsec >> (24 - 8 * i));
	}
}

/* --- sessions ------------------------------------------------------------- */

/* Secrets of a session: two keypairs of two 32-byte keys each, in one
 * slab slot (one sodium_malloc per peer would cost a locked page and two
 * guard pages each: 10 MiB at 2,500 hosts). */
#define SLOT_BYTES (4u * NKPI_NOISE_KEYLEN)

static nkpi_slab slots = NKPI_SLAB_INIT(SLOT_BYTES);

typedef struct keypair {
	bool valid;
	uint32_t local;	 /* our index: the receiver_index of frames to us */
	uint32_t remote; /* the peer's index: the receiver_index we send */
	uint64_t born_ms;
	uint64_t send_next;		/* the counter of our next frame */
	uint64_t recv_max;		/* highest counter received + 1; 0: none yet */
	uint64_t bitmap;		/* bit i: counter recv_max - 1 - i was received */
	nkpi_noise_cipher *send, *recv; /* in the slot */
} keypair;

/* A token bucket: tokens x 1000, refilled up to its burst. */
typedef struct bucket {
	uint64_t milli;
	uint64_t ms;
} bucket;

struct nkpi_session {
	pthread_mutex_t lock;
	bool responder;
	const nkp_identity *self;
	uint8_t peer[NKP_PUBKEY_BYTES];
	uint8_t mac1_key[32]; /* of the responder's public key: not secret */
	uint8_t *slot;
	keypair kp[2];
	int cur; /* kp[cur] current, kp[1 - cur] pending (responder) */
	/* initiator: the handshake in progress */
	nkpi_noise_hs *hs;
	uint32_t hs_local;
	bool fixed;
	uint8_t fixed_e[32];
	uint32_t fixed_index;
	/* responder: the last timestamp accepted, the handshake buckets
	 * (host-wide, and per peer address), the ephemerals seen */
	uint8_t last_ts[NKPI_SESSION_TIMESTAMP_BYTES];
	bucket all;
	bucket peers[NKPI_SESSION_HS_PEERS];
	uint64_t peer_key[NKPI_SESSION_HS_PEERS];
	uint64_t peer_used[NKPI_SESSION_HS_PEERS]; /* 0: a free entry */
	uint64_t peer_clock;
	uint8_t seen_e[NKPI_SESSION_SEEN_E][32];
	unsigned seen_next;
};

static void kp_wipe(keypair *k)
{
	nkpi_noise_cipher *send = k->send, *recv = k->recv;

	nkpi_noise_cipher_wipe(send);
	nkpi_noise_cipher_wipe(recv);
	memset(k, 0, sizeof(*k));
	k->send = send;
	k->recv = recv;
}

static nkp_err mac1_key(const uint8_t *responder_pub, uint8_t out[static 32])
{
	crypto_generichash_state st;
	int rc;

	rc = crypto_generichash_init(&st, NULL, 0, 32);
	rc |= crypto_generichash_update(&st, (const uint8_t *)MAC1_LABEL, sizeof(MAC1_LABEL) - 1);
	rc |= crypto_generichash_update(&st, responder_pub, NKP_PUBKEY_BYTES);
	rc |= crypto_generichash_final(&st, out, 32);
	return rc == 0 ? NKP_OK : NKP_ERR_CRYPTO;
}

static void mac1(const uint8_t key[static 32], uint32_t sender_index, const uint8_t *noise,
		 size_t len, uint8_t out[static NKPI_SESSION_MAC_BYTES])
{
	crypto_generichash_state st;
	uint8_t idx[4];

	nkpi_store32_le(idx, sender_index);
	crypto_generichash_init(&st, key, 32, NKPI_SESSION_MAC_BYTES);
	crypto_generichash_update(&st, idx, sizeof(idx));
	crypto_generichash_update(&st, noise, len);
	crypto_generichash_final(&st, out, NKPI_SESSION_MAC_BYTES);
}

nkp_err nkpi_session_new(const nkp_identity *self, const uint8_t peer[static NKP_PUBKEY_BYTES],
			 bool responder, nkpi_session **out)
{
	uint8_t dh[crypto_scalarmult_BYTES];
	nkpi_session *s;
	int low;

	if (self == NULL || peer == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	/* A low-order peer key makes every DH with it all zeros. */
	low = crypto_scalarmult(dh, nkpi_key_bytes(nkp_identity_secret(self)), peer);
	sodium_memzero(dh, sizeof(dh));
	if (low != 0) {
		return NKP_ERR_INVALID;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return NKP_ERR_NOMEM;
	}
	s->slot = nkpi_slab_get(&slots);
	if (s->slot == NULL ||
	    mac1_key(responder ? nkp_identity_public(self) : peer, s->mac1_key) != NKP_OK) {
		nkpi_slab_put(&slots, s->slot);
		free(s);
		return NKP_ERR_NOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->responder = responder;
	s->self = self;
	memcpy(s->peer, peer, NKP_PUBKEY_BYTES);
	for (int i = 0; i < 2; i++) {
		s->kp[i].send = (nkpi_noise_cipher *)(s->slot + (2 * i) * NKPI_NOISE_KEYLEN);
		s->kp[i].recv = (nkpi_noise_cipher *)(s->slot + (2 * i + 1) * NKPI_NOISE_KEYLEN);
	}
	s->all.milli = NKPI_SESSION_HS_BURST * 1000u;
	s->all.ms = now_ms();
	*out = s;
	return NKP_OK;
}

/* Lock held. */
static void forget(nkpi_session *s)
{
	kp_wipe(&s->kp[0]);
	kp_wipe(&s->kp[1]);
	s->cur = 0;
	nkpi_noise_hs_free(s->hs);
	s->hs = NULL;
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
	forget(s);
	nkpi_slab_put(&slots, s->slot);
	pthread_mutex_destroy(&s->lock);
	sodium_memzero(s, sizeof(*s));
	free(s);
}

bool nkpi_session_established(nkpi_session *s)
{
	bool v;

	pthread_mutex_lock(&s->lock);
	v = s->kp[s->cur].valid;
	pthread_mutex_unlock(&s->lock);
	return v;
}

void nkpi_session_fix_next(nkpi_session *s, const uint8_t e_secret[static 32], uint32_t index)
{
	pthread_mutex_lock(&s->lock);
	memcpy(s->fixed_e, e_secret, 32);
	s->fixed_index = index;
	s->fixed = true;
	pthread_mutex_unlock(&s->lock);
}

void nkpi_session_skip_to(nkpi_session *s, uint64_t n)
{
	pthread_mutex_lock(&s->lock);
	s->kp[s->cur].send_next = n;
	pthread_mutex_unlock(&s->lock);
}

/* Lock held. A fresh index unlike the ones we hold (or the fixed one). */
static uint32_t new_index(nkpi_session *s)
{
	uint32_t i;

	if (s->fixed) {
		return s->fixed_index;
	}
	do {
		i = randombytes_random();
	} while ((s->kp[0].valid && s->kp[0].local == i) ||
		 (s->kp[1].valid && s->kp[1].local == i));
	return i;
}

/* Lock held. A new handshake object; uses (and clears) a fixed ephemeral. */
static nkp_err hs_begin(nkpi_session *s, bool initiator, nkpi_noise_hs **out)
{
	nkp_err err;

	err = nkpi_noise_hs_new(initiator, nkpi_key_bytes(nkp_identity_secret(s->self)), s->peer,
				(const uint8_t *)PROLOGUE, sizeof(PROLOGUE) - 1, out);
	if (err == NKP_OK && s->fixed) {
		err = nkpi_noise_hs_set_ephemeral(*out, s->fixed_e);
		if (err != NKP_OK) {
			nkpi_noise_hs_free(*out);
		}
	}
	return err;
}

/* Lock held. Splits a finished handshake into `k`. */
static nkp_err hs_into(nkpi_noise_hs *hs, keypair *k, uint32_t local, uint32_t remote)
{
	nkp_err err;

	kp_wipe(k);
	err = nkpi_noise_hs_split(hs, k->send, k->recv, NULL);
	if (err == NKP_OK) {
		k->valid = true;
		k->local = local;
		k->remote = remote;
		k->born_ms = now_ms();
	} else {
		kp_wipe(k);
	}
	return err;
}

/* --- frames --------------------------------------------------------------- */

static nkp_err pack_frame(const Nkp__Wire__Frame *f, uint8_t **frame, size_t *framelen)
{
	size_t size = protobuf_c_message_get_packed_size(&f->base);
	uint8_t *out;

	if (size > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	out = malloc(size > 0 ? size : 1);
	if (out == NULL) {
		return NKP_ERR_NOMEM;
	}
	if (protobuf_c_message_pack(&f->base, out) != size) {
		free(out);
		return NKP_ERR_CRYPTO;
	}
	*frame = out;
	*framelen = size;
	return NKP_OK;
}

/* Unpacks a frame; NKP_OK only for a known kind without unknown fields.
 * The ciphertext of a Transport may be long: the caller sizes its buffer. */
static nkp_err parse(const uint8_t *frame, size_t len, Nkp__Wire__Frame **out)
{
	Nkp__Wire__Frame *f;
	const ProtobufCMessage *inner = NULL;
	nkp_err err;

	if (len > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	if (frame == NULL || len == 0) {
		return NKP_ERR_PARSE;
	}
	/* Unknown fields, wrong wire types and deep nesting are refused
	 * before protobuf-c allocates anything for them. */
	err = nkpi_pb_strict(&nkp__wire__frame__descriptor, frame, len);
	if (err != NKP_OK) {
		return err;
	}
	f = nkp__wire__frame__unpack(NULL, len, frame);
	if (f == NULL) {
		return NKP_ERR_PARSE;
	}
	switch (f->kind_case) {
	case NKP__WIRE__FRAME__KIND_INIT:
		inner = &f->init->base;
		break;
	case NKP__WIRE__FRAME__KIND_RESP:
		inner = &f->resp->base;
		break;
	case NKP__WIRE__FRAME__KIND_TRANSPORT:
		inner = &f->transport->base;
		break;
	default:
		break;
	}
	if (inner == NULL || nkpi_has_unknown(&f->base) || nkpi_has_unknown(inner)) {
		nkp__wire__frame__free_unpacked(f, NULL);
		return NKP_ERR_PARSE;
	}
	*out = f;
	return NKP_OK;
}

/* Chunks of a plaintext of `len` bytes (at least one, for an empty one). */
static size_t chunks_for(size_t len)
{
	return len == 0 ? 1 : (len + NKPI_SESSION_CHUNK - 1) / NKPI_SESSION_CHUNK;
}

/* A ProtobufCBuffer over one preallocated block, so that the ciphertext is
 * written in its final place and packing does not copy it onto itself. */
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

	if (!fb->ok || len == 0) {
		return;
	}
	if (len > fb->cap - fb->pos) {
		fb->ok = false;
		return;
	}
	if (data != fb->out + fb->pos) {
		memcpy(fb->out + fb->pos, data, len);
	}
	fb->pos += len;
}

/* A Transport frame: `msg` in chunks of ENC(k, counter + i, u64le(len)). */
static nkp_err seal_transport(const nkpi_noise_cipher *k, uint32_t receiver, uint64_t counter,
			      const uint8_t *msg, size_t len, uint8_t **frame, size_t *framelen)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__Transport t = NKP__WIRE__TRANSPORT__INIT;
	fixed_buffer fb = {.base = {.append = fixed_append}, .ok = true};
	size_t n = chunks_for(len);
	uint8_t ad[8];
	uint8_t *ct;
	size_t size;
	nkp_err err = NKP_OK;

	if (len > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	t.receiver_index = receiver;
	t.counter = counter;
	t.ciphertext.len = len + n * NKPI_NOISE_TAGLEN;
	f.kind_case = NKP__WIRE__FRAME__KIND_TRANSPORT;
	f.transport = &t;
	size = protobuf_c_message_get_packed_size(&f.base);
	if (size > NKP_FRAME_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	fb.out = malloc(size);
	if (fb.out == NULL) {
		return NKP_ERR_NOMEM;
	}
	fb.cap = size;
	ct = fb.out + size - t.ciphertext.len;
	nkpi_store32_le(ad, (uint32_t)len);
	nkpi_store32_le(ad + 4, (uint32_t)((uint64_t)len >> 32));
	for (size_t i = 0; i < n && err == NKP_OK; i++) {
		size_t off = i * NKPI_SESSION_CHUNK;
		size_t part = len - off < NKPI_SESSION_CHUNK ? len - off : NKPI_SESSION_CHUNK;

		err = nkpi_noise_encrypt(k, counter + i, ad, sizeof(ad), msg + off, part,
					 ct + i * CHUNK_CT);
	}
	if (err != NKP_OK) {
		free(fb.out);
		return err;
	}
	t.ciphertext.data = ct;
	protobuf_c_message_pack_to_buffer(&f.base, &fb.base);
	if (!fb.ok || fb.pos != size) {
		nkp_log(NKP_LOG_ERR, "NKP-SESSION-INTERNAL", "frame layout differs from its size");
		abort();
	}
	*frame = fb.out;
	*framelen = size;
	return NKP_OK;
}

/* Chunks in a ciphertext of `ctlen` bytes, or 0 if it is not one sender
 * would make (every chunk but the last full, none empty but a lone one). */
static size_t chunks_in(size_t ctlen)
{
	size_t n, last;

	if (ctlen < NKPI_NOISE_TAGLEN) {
		return 0;
	}
	n = (ctlen + CHUNK_CT - 1) / CHUNK_CT;
	last = ctlen - (n - 1) * CHUNK_CT;
	if (last < NKPI_NOISE_TAGLEN || (n > 1 && last == NKPI_NOISE_TAGLEN)) {
		return 0;
	}
	return n;
}

/* Replay window (RFC 6479 in one 64-bit word). */
static bool window_ok(const keypair *k, uint64_t n)
{
	if (n >= k->recv_max) {
		return true;
	}
	if (k->recv_max - n > NKPI_SESSION_WINDOW) {
		return false; /* too old to tell */
	}
	return (k->bitmap & (UINT64_C(1) << (k->recv_max - 1 - n))) == 0;
}

static void window_mark(keypair *k, uint64_t n)
{
	if (n >= k->recv_max) {
		uint64_t shift = n + 1 - k->recv_max;

		k->bitmap = shift >= 64 ? 0 : k->bitmap << shift;
		k->bitmap |= 1;
		k->recv_max = n + 1;
	} else {
		k->bitmap |= UINT64_C(1) << (k->recv_max - 1 - n);
	}
}

static bool expired(const keypair *k, uint64_t now)
{
	return now - k->born_ms >= NKPI_SESSION_REJECT_AFTER_MS;
}

/* Checks a Transport against `k` and opens it into buf (cap bytes): the
 * window moves only once it authenticated. */
static nkp_err open_transport(keypair *k, const Nkp__Wire__Transport *t, uint8_t *buf, size_t cap,
			      size_t *msglen)
{
	size_t n = chunks_in(t->ciphertext.len);
	size_t len;
	uint8_t ad[8];
	nkp_err err = NKP_OK;

	if (n == 0) {
		return NKP_ERR_PARSE;
	}
	len = t->ciphertext.len - n * NKPI_NOISE_TAGLEN;
	if (len > cap) {
		return NKP_ERR_TOO_LARGE;
	}
	if (t->counter >= NKPI_SESSION_REJECT_AFTER_MSGS ||
	    NKPI_SESSION_REJECT_AFTER_MSGS - t->counter < n) {
		return NKP_ERR_REPLAY;
	}
	/* A frame of n chunks uses the nonces counter .. counter + n - 1:
	 * none may have been seen, or chunks of two frames could be spliced
	 * under a counter the window never marked. */
	for (size_t i = 0; i < n; i++) {
		if (!window_ok(k, t->counter + i)) {
			return NKP_ERR_REPLAY;
		}
	}
	nkpi_store32_le(ad, (uint32_t)len);
	nkpi_store32_le(ad + 4, (uint32_t)((uint64_t)len >> 32));
	for (size_t i = 0; i < n && err == NKP_OK; i++) {
		size_t off = i * CHUNK_CT;
		size_t part =
			t->ciphertext.len - off < CHUNK_CT ? t->ciphertext.len - off : CHUNK_CT;

		err = nkpi_noise_decrypt(k->recv, t->counter + i, ad, sizeof(ad),
					 t->ciphertext.data + off, part,
					 buf + i * NKPI_SESSION_CHUNK);
	}
	if (err != NKP_OK) {
		sodium_memzero(buf, len);
		return NKP_ERR_AUTH;
	}
	for (size_t i = 0; i < n; i++) {
		window_mark(k, t->counter + i);
	}
	*msglen = len;
	return NKP_OK;
}

/* --- initiator ------------------------------------------------------------ */

static bool usable_locked(const nkpi_session *s, uint64_t now)
{
	const keypair *k = &s->kp[s->cur];

	/* Room for the largest frame under the responder's budget. */
	return k->valid && !expired(k, now) &&
	       k->send_next <
		       NKPI_SESSION_REJECT_AFTER_MSGS - (NKP_FRAME_MAX / NKPI_SESSION_CHUNK + 1);
}

bool nkpi_session_needs_handshake(nkpi_session *s)
{
	const keypair *k;
	bool need;

	pthread_mutex_lock(&s->lock);
	k = &s->kp[s->cur];
	need = !usable_locked(s, now_ms()) ||
	       now_ms() - k->born_ms >= NKPI_SESSION_REKEY_AFTER_MS ||
	       k->send_next >= NKPI_SESSION_REKEY_AFTER_MSGS;
	pthread_mutex_unlock(&s->lock);
	return need;
}

bool nkpi_session_usable(nkpi_session *s)
{
	bool ok;

	pthread_mutex_lock(&s->lock);
	ok = usable_locked(s, now_ms());
	pthread_mutex_unlock(&s->lock);
	return ok;
}

nkp_err nkpi_session_handshake_init(nkpi_session *s, uint8_t **frame, size_t *framelen)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__HandshakeInit init = NKP__WIRE__HANDSHAKE_INIT__INIT;
	uint8_t ts[NKPI_SESSION_TIMESTAMP_BYTES];
	uint8_t noise[INIT_NOISE_BYTES];
	uint8_t mac[NKPI_SESSION_MAC_BYTES];
	size_t nlen = 0;
	nkp_err err;

	if (s == NULL || s->responder || frame == NULL || framelen == NULL) {
		return NKP_ERR_INVALID;
	}
	pthread_mutex_lock(&s->lock);
	nkpi_noise_hs_free(s->hs);
	s->hs = NULL;
	err = hs_begin(s, true, &s->hs);
	if (err != NKP_OK) {
		s->hs = NULL;
		goto out;
	}
	s->hs_local = new_index(s);
	s->fixed = false;
	timestamp(ts);
	err = nkpi_noise_hs_write(s->hs, ts, sizeof(ts), noise, sizeof(noise), &nlen);
	if (err != NKP_OK || nlen != sizeof(noise)) {
		err = err != NKP_OK ? err : NKP_ERR_CRYPTO;
		goto drop;
	}
	mac1(s->mac1_key, s->hs_local, noise, sizeof(noise), mac);
	init.sender_index = s->hs_local;
	init.noise = (ProtobufCBinaryData){sizeof(noise), noise};
	init.mac1 = (ProtobufCBinaryData){sizeof(mac), mac};
	f.kind_case = NKP__WIRE__FRAME__KIND_INIT;
	f.init = &init;
	err = pack_frame(&f, frame, framelen);
	if (err == NKP_OK) {
		goto out;
	}

drop:
	nkpi_noise_hs_free(s->hs);
	s->hs = NULL;
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

nkp_err nkpi_session_handshake_finish(nkpi_session *s, const uint8_t *frame, size_t len)
{
	Nkp__Wire__Frame *f = NULL;
	const Nkp__Wire__HandshakeResp *r;
	uint8_t payload[1];
	size_t plen = 0;
	nkp_err err;

	if (s == NULL || s->responder) {
		return NKP_ERR_INVALID;
	}
	err = parse(frame, len, &f);
	if (err != NKP_OK) {
		goto drop;
	}
	pthread_mutex_lock(&s->lock);
	r = f->resp;
	if (s->hs == NULL) {
		err = NKP_ERR_STATE;
	} else if (f->kind_case != NKP__WIRE__FRAME__KIND_RESP ||
		   r->noise.len != RESP_NOISE_BYTES) {
		err = NKP_ERR_PARSE;
	} else if (r->receiver_index != s->hs_local) {
		err = NKP_ERR_STATE;
	} else {
		err = nkpi_noise_hs_read(s->hs, r->noise.data, r->noise.len, payload,
					 sizeof(payload), &plen);
	}
	if (err == NKP_OK && plen != 0) {
		err = NKP_ERR_PARSE;
	}
	if (err == NKP_OK) {
		/* Confirmed by the responder's message: it replaces ours. */
		err = hs_into(s->hs, &s->kp[1 - s->cur], s->hs_local, r->sender_index);
		if (err == NKP_OK) {
			kp_wipe(&s->kp[s->cur]);
			s->cur = 1 - s->cur;
		}
	}
	nkpi_noise_hs_free(s->hs);
	s->hs = NULL;
	pthread_mutex_unlock(&s->lock);
	nkp__wire__frame__free_unpacked(f, NULL);
	return err;

drop:
	pthread_mutex_lock(&s->lock);
	nkpi_noise_hs_free(s->hs);
	s->hs = NULL;
	pthread_mutex_unlock(&s->lock);
	return err;
}

nkp_err nkpi_session_seal_request(nkpi_session *s, const uint8_t *msg, size_t len, uint8_t **frame,
				  size_t *framelen)
{
	keypair *k;
	nkp_err err;

	if (s == NULL || s->responder || (msg == NULL && len > 0) || frame == NULL ||
	    framelen == NULL) {
		return NKP_ERR_INVALID;
	}
	pthread_mutex_lock(&s->lock);
	k = &s->kp[s->cur];
	if (!usable_locked(s, now_ms())) {
		err = NKP_ERR_SESSION;
	} else {
		err = seal_transport(k->send, k->remote, k->send_next, msg, len, frame, framelen);
		if (err == NKP_OK) {
			k->send_next += chunks_for(len);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

nkp_err nkpi_session_open_reply(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				size_t cap, size_t *msglen)
{
	Nkp__Wire__Frame *f = NULL;
	keypair *k;
	nkp_err err;

	if (s == NULL || s->responder || buf == NULL || msglen == NULL) {
		return NKP_ERR_INVALID;
	}
	err = parse(frame, len, &f);
	if (err != NKP_OK) {
		return err;
	}
	pthread_mutex_lock(&s->lock);
	k = &s->kp[s->cur];
	if (f->kind_case != NKP__WIRE__FRAME__KIND_TRANSPORT) {
		err = NKP_ERR_PARSE;
	} else if (!k->valid || f->transport->receiver_index != k->local) {
		err = NKP_ERR_SESSION;
	} else if (expired(k, now_ms())) {
		err = NKP_ERR_SESSION;
	} else {
		err = open_transport(k, f->transport, buf, cap, msglen);
	}
	pthread_mutex_unlock(&s->lock);
	nkp__wire__frame__free_unpacked(f, NULL);
	return err;
}

/* --- responder ------------------------------------------------------------ */

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

/* Refills `b` (per_s tokens a second, up to burst) to `now`; true if it
 * holds a whole token. */
static bool refill(bucket *b, uint64_t now, uint64_t per_s, uint64_t burst)
{
	uint64_t cap = burst * 1000u;

	if (now > b->ms) {
		uint64_t add = (now - b->ms) * per_s;

		b->milli = b->milli >= cap || cap - b->milli <= add ? cap : b->milli + add;
		b->ms = now;
	} else if (now < b->ms) {
		b->ms = now; /* a test clock went back */
	}
	return b->milli >= 1000u;
}

/* Lock held. The bucket of peer address `peer`: its entry, or the least
 * recently used one, started full. */
static bucket *peer_bucket(nkpi_session *s, uint64_t peer, uint64_t now)
{
	size_t lru = 0;

	for (size_t i = 0; i < NKPI_SESSION_HS_PEERS; i++) {
		if (s->peer_used[i] != 0 && s->peer_key[i] == peer) {
			s->peer_used[i] = ++s->peer_clock;
			return &s->peers[i];
		}
		if (s->peer_used[i] < s->peer_used[lru]) {
			lru = i;
		}
	}
	s->peer_key[lru] = peer;
	s->peer_used[lru] = ++s->peer_clock;
	s->peers[lru].milli = NKPI_SESSION_HS_PEER_BURST * 1000u;
	s->peers[lru].ms = now;
	return &s->peers[lru];
}

/* Lock held. One token of the peer's bucket and one of the host-wide
 * one, if both have one; a refusal spends neither. */
static bool take_token(nkpi_session *s, uint64_t peer)
{
	uint64_t now = now_ms();
	bucket *b = peer_bucket(s, peer, now);

	if (!refill(b, now, NKPI_SESSION_HS_PEER_PER_S, NKPI_SESSION_HS_PEER_BURST) ||
	    !refill(&s->all, now, NKPI_SESSION_HS_PER_S, NKPI_SESSION_HS_BURST)) {
		return false;
	}
	b->milli -= 1000u;
	s->all.milli -= 1000u;
	return true;
}

/* Lock held. True if the ephemeral `e` came in one of the last
 * NKPI_SESSION_SEEN_E inits that took a token (remember_ephemeral). */
static bool seen_ephemeral(nkpi_session *s, const uint8_t e[static 32])
{
	for (size_t i = 0; i < NKPI_SESSION_SEEN_E; i++) {
		if (sodium_memcmp(s->seen_e[i], e, 32) == 0) {
			return true;
		}
	}
	return false;
}

static void remember_ephemeral(nkpi_session *s, const uint8_t e[static 32])
{
	memcpy(s->seen_e[s->seen_next], e, 32);
	s->seen_next = (s->seen_next + 1) % NKPI_SESSION_SEEN_E;
}

/* Lock held. mac1, the ephemerals seen, rate limit, Noise, timestamp;
 * then the pending session and the response. Nothing but the buckets and
 * the ring of ephemerals changes unless all pass. */
static nkp_err on_init(nkpi_session *s, uint64_t peer, const Nkp__Wire__HandshakeInit *in,
		       uint8_t **hs_reply, size_t *hs_replylen)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__HandshakeResp resp = NKP__WIRE__HANDSHAKE_RESP__INIT;
	nkpi_noise_hs *hs = NULL;
	keypair *pending = &s->kp[1 - s->cur];
	uint8_t mac[NKPI_SESSION_MAC_BYTES];
	uint8_t ts[NKPI_SESSION_TIMESTAMP_BYTES];
	uint8_t noise[RESP_NOISE_BYTES];
	size_t tslen = 0, nlen = 0;
	uint32_t local;
	nkp_err err;

	if (in->noise.len != INIT_NOISE_BYTES || in->mac1.len != NKPI_SESSION_MAC_BYTES) {
		return NKP_ERR_PARSE;
	}
	mac1(s->mac1_key, in->sender_index, in->noise.data, in->noise.len, mac);
	if (sodium_memcmp(mac, in->mac1.data, sizeof(mac)) != 0) {
		return NKP_ERR_AUTH;
	}
	/* A replayed init costs no token: its ephemeral was seen. */
	if (seen_ephemeral(s, in->noise.data)) {
		return NKP_ERR_REPLAY;
	}
	if (!take_token(s, peer)) {
		return NKP_ERR_REFUSED;
	}
	remember_ephemeral(s, in->noise.data);
	err = hs_begin(s, false, &hs);
	if (err != NKP_OK) {
		return err;
	}
	err = nkpi_noise_hs_read(hs, in->noise.data, in->noise.len, ts, sizeof(ts), &tslen);
	if (err == NKP_OK && tslen != sizeof(ts)) {
		err = NKP_ERR_PARSE;
	}
	if (err != NKP_OK) {
		goto free_hs;
	}
	/* Big-endian TAI64N: byte order is time order. */
	if (memcmp(ts, s->last_ts, sizeof(ts)) <= 0) {
		err = NKP_ERR_REPLAY;
		goto free_hs;
	}
	err = nkpi_noise_hs_write(hs, NULL, 0, noise, sizeof(noise), &nlen);
	if (err != NKP_OK) {
		goto free_hs;
	}
	local = new_index(s);
	s->fixed = false;
	err = hs_into(hs, pending, local, in->sender_index);
	if (err != NKP_OK) {
		goto free_hs;
	}
	resp.sender_index = local;
	resp.receiver_index = in->sender_index;
	resp.noise = (ProtobufCBinaryData){nlen, noise};
	f.kind_case = NKP__WIRE__FRAME__KIND_RESP;
	f.resp = &resp;
	err = pack_frame(&f, hs_reply, hs_replylen);
	if (err != NKP_OK) {
		kp_wipe(pending);
		goto free_hs;
	}
	memcpy(s->last_ts, ts, sizeof(ts));

free_hs:
	nkpi_noise_hs_free(hs);
	return err;
}

/* Lock held. A Transport to one of our sessions; promotes a pending one
 * whose first frame authenticates. */
static nkp_err on_transport(nkpi_session *s, const Nkp__Wire__Transport *t, uint8_t *buf,
			    size_t cap, size_t *msglen, nkpi_session_reply *rk)
{
	uint64_t now = now_ms();
	int which = -1;
	keypair *k;
	nkp_err err;

	for (int i = 0; i < 2; i++) {
		if (s->kp[i].valid && s->kp[i].local == t->receiver_index) {
			which = i;
		}
	}
	if (which < 0) {
		return NKP_ERR_SESSION;
	}
	k = &s->kp[which];
	if (expired(k, now)) {
		kp_wipe(k); /* its keys go now */
		return NKP_ERR_SESSION;
	}
	err = nkpi_key_borrow(&rk->k);
	if (err != NKP_OK) {
		return err;
	}
	err = open_transport(k, t, buf, cap, msglen);
	if (err != NKP_OK) {
		return err;
	}
	if (which != s->cur) {
		/* Confirmed: the pending session becomes current. */
		kp_wipe(&s->kp[s->cur]);
		s->cur = which;
	}
	memcpy(nkpi_key_bytes_mut(rk->k), k->send->k, NKPI_NOISE_KEYLEN);
	rk->local = k->local;
	rk->remote = k->remote;
	return NKP_OK;
}

nkp_err nkpi_session_open_request(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				  size_t cap, size_t *msglen, nkpi_session_reply *rk,
				  uint8_t **hs_reply, size_t *hs_replylen)
{
	return nkpi_session_open_request_from(s, 0, frame, len, buf, cap, msglen, rk, hs_reply,
					      hs_replylen);
}

nkp_err nkpi_session_open_request_from(nkpi_session *s, uint64_t peer, const uint8_t *frame,
				       size_t len, uint8_t *buf, size_t cap, size_t *msglen,
				       nkpi_session_reply *rk, uint8_t **hs_reply,
				       size_t *hs_replylen)
{
	Nkp__Wire__Frame *f = NULL;
	nkp_err err;

	if (s == NULL || !s->responder || buf == NULL || msglen == NULL || rk == NULL ||
	    hs_reply == NULL || hs_replylen == NULL) {
		return NKP_ERR_INVALID;
	}
	memset(rk, 0, sizeof(*rk));
	*hs_reply = NULL;
	err = parse(frame, len, &f);
	if (err != NKP_OK) {
		return err;
	}
	pthread_mutex_lock(&s->lock);
	switch (f->kind_case) {
	case NKP__WIRE__FRAME__KIND_INIT:
		err = on_init(s, peer, f->init, hs_reply, hs_replylen);
		if (err == NKP_OK) {
			*msglen = 0;
		}
		break;
	case NKP__WIRE__FRAME__KIND_TRANSPORT:
		err = on_transport(s, f->transport, buf, cap, msglen, rk);
		break;
	default:
		err = NKP_ERR_PARSE; /* a response is never a request */
		break;
	}
	pthread_mutex_unlock(&s->lock);
	if (err != NKP_OK) {
		nkpi_session_reply_wipe(rk);
	}
	nkp__wire__frame__free_unpacked(f, NULL);
	return err;
}

nkp_err nkpi_session_seal_reply(nkpi_session *s, nkpi_session_reply *rk, const uint8_t *msg,
				size_t len, uint8_t **frame, size_t *framelen)
{
	nkpi_noise_cipher *k;
	uint64_t counter = 0;
	nkp_err err = NKP_ERR_SESSION;

	if (s == NULL || !s->responder || rk == NULL || rk->k == NULL || (msg == NULL && len > 0) ||
	    frame == NULL || framelen == NULL) {
		nkpi_session_reply_wipe(rk);
		return NKP_ERR_INVALID;
	}
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < 2; i++) {
		keypair *kp = &s->kp[i];

		if (kp->valid && kp->local == rk->local && kp->send_next < UINT64_MAX / 2) {
			counter = kp->send_next;
			kp->send_next += chunks_for(len);
			err = NKP_OK;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (err == NKP_OK) {
		k = (nkpi_noise_cipher *)nkpi_key_bytes_mut(rk->k);
		err = seal_transport(k, rk->remote, counter, msg, len, frame, framelen);
	}
	nkpi_session_reply_wipe(rk);
	return err;
}
