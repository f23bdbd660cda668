/* Sessions on Noise_KK (nkp/private/session.h): the exchange nkpd and a host run,
 * and what an attacker gets out of it: replays, forged and stolen-key
 * handshakes, recorded traffic, garbage. The responder answers nothing
 * that does not authenticate: every refusal below is an error with no
 * frame out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "noise.h"
#include "session.h"
#include "wire.pb-c.h"

#define BUF_CAP 4096u
#define T0_MS 1000000u
#define WALL0_NS UINT64_C(1800000000000000000)

typedef struct pair {
	nkp_identity *svc, *host;
	nkpi_session *ini, *rsp;
} pair;

static pair P;

static void pair_make(pair *p, nkp_identity *svc, nkp_identity *host)
{
	p->svc = svc;
	p->host = host;
	cr_assert_eq(nkpi_session_new(svc, nkp_identity_public(host), false, &p->ini), NKP_OK);
	cr_assert_eq(nkpi_session_new(host, nkp_identity_public(svc), true, &p->rsp), NKP_OK);
}

static void pair_new(pair *p)
{
	nkp_identity *a, *b;

	cr_assert_eq(nkp_identity_generate(&a), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&b), NKP_OK);
	pair_make(p, a, b);
}

static void pair_free(pair *p)
{
	nkpi_session_free(p->ini);
	nkpi_session_free(p->rsp);
	nkp_identity_free(p->svc);
	nkp_identity_free(p->host);
	memset(p, 0, sizeof(*p));
}

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	nkpi_session_set_clock_ms(T0_MS);
	nkpi_session_set_wall_ns(0);
	pair_new(&P);
}

static void teardown(void)
{
	pair_free(&P);
	nkpi_session_set_clock_ms(0);
	nkpi_session_set_wall_ns(0);
}

TestSuite(session, .init = setup, .fini = teardown);

/* --- helpers -------------------------------------------------------------- */

typedef struct frame {
	uint8_t *b;
	size_t len;
} frame;

/* What the responder does with `f`: NKP_OK and a handshake answer, NKP_OK
 * and an opened request (then *rk and out), or an error and nothing. */
static nkp_err deliver(nkpi_session *rsp, const frame *f, frame *hs, uint8_t *out, size_t *outlen,
		       nkpi_session_reply *rk)
{
	uint8_t buf[BUF_CAP];
	size_t n = 0;
	nkpi_session_reply local;
	nkp_err err;

	hs->b = NULL;
	hs->len = 0;
	err = nkpi_session_open_request(rsp, f->b, f->len, buf, sizeof(buf), &n,
					rk != NULL ? rk : &local, &hs->b, &hs->len);
	if (err != NKP_OK) {
		cr_assert_null(hs->b, "an answer to a refused frame");
		return err;
	}
	if (out != NULL) {
		memcpy(out, buf, n);
		*outlen = n;
	}
	if (rk == NULL) {
		nkpi_session_reply_wipe(&local);
	}
	return NKP_OK;
}

/* What the responder says to `f` when all it expects is a refusal. */
static nkp_err refused(nkpi_session *rsp, const frame *f)
{
	frame hs;
	nkp_err err = deliver(rsp, f, &hs, NULL, NULL, NULL);

	free(hs.b);
	return err;
}

static frame init_frame(nkpi_session *ini)
{
	frame f;

	cr_assert_eq(nkpi_session_handshake_init(ini, &f.b, &f.len), NKP_OK);
	return f;
}

static void handshake(pair *p)
{
	frame i = init_frame(p->ini), r;

	cr_assert_eq(deliver(p->rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	cr_assert_not_null(r.b);
	cr_assert_eq(nkpi_session_handshake_finish(p->ini, r.b, r.len), NKP_OK);
	free(i.b);
	free(r.b);
}

static frame request(nkpi_session *ini, const char *msg)
{
	frame f;

	cr_assert_eq(
		nkpi_session_seal_request(ini, (const uint8_t *)msg, strlen(msg), &f.b, &f.len),
		NKP_OK);
	return f;
}

/* Delivers a request, checks it opened to `want`, answers `reply`. */
static frame serve(nkpi_session *rsp, const frame *req, const char *want, const char *reply)
{
	uint8_t out[BUF_CAP];
	size_t n = 0;
	nkpi_session_reply rk;
	frame hs, rep;

	nkp_err e = deliver(rsp, req, &hs, out, &n, &rk);

	cr_assert_eq(e, NKP_OK, "%s", nkp_strerror(e));
	cr_assert_null(hs.b);
	cr_assert_eq(n, strlen(want));
	cr_assert_eq(memcmp(out, want, n), 0);
	cr_assert_eq(nkpi_session_seal_reply(rsp, &rk, (const uint8_t *)reply, strlen(reply),
					     &rep.b, &rep.len),
		     NKP_OK);
	return rep;
}

static nkp_err take_reply(nkpi_session *ini, const frame *rep, const char *want)
{
	uint8_t out[BUF_CAP];
	size_t n = 0;
	nkp_err err = nkpi_session_open_reply(ini, rep->b, rep->len, out, sizeof(out), &n);

	if (err == NKP_OK && want != NULL) {
		cr_assert_eq(n, strlen(want));
		cr_assert_eq(memcmp(out, want, n), 0);
	}
	return err;
}

/* One whole exchange under the current session. */
static void exchange(pair *p, const char *msg, const char *reply)
{
	frame q = request(p->ini, msg);
	frame r = serve(p->rsp, &q, msg, reply);

	cr_assert_eq(take_reply(p->ini, &r, reply), NKP_OK);
	free(q.b);
	free(r.b);
}

static Nkp__Wire__Frame *unpack(const frame *f)
{
	Nkp__Wire__Frame *u = nkp__wire__frame__unpack(NULL, f->len, f->b);

	cr_assert_not_null(u);
	return u;
}

static frame repack(const Nkp__Wire__Frame *u)
{
	frame f;

	f.len = nkp__wire__frame__get_packed_size(u);
	f.b = malloc(f.len + 1);
	nkp__wire__frame__pack(u, f.b);
	return f;
}

static bool contains_bytes(const frame *f, const uint8_t *s, size_t n)
{
	for (size_t i = 0; i + n <= f->len; i++) {
		if (memcmp(f->b + i, s, n) == 0) {
			return true;
		}
	}
	return false;
}

static bool contains(const frame *f, const char *s)
{
	return contains_bytes(f, (const uint8_t *)s, strlen(s));
}

/* --- the exchange ---------------------------------------------------------- */

Test(session, a_handshake_then_requests_and_replies_in_transport_frames)
{
	frame i = init_frame(P.ini), r, q, a;
	Nkp__Wire__Frame *u;

	cr_assert(nkpi_session_needs_handshake(P.ini));
	u = unpack(&i);
	cr_assert_eq(u->kind_case, NKP__WIRE__FRAME__KIND_INIT);
	cr_assert_eq(u->init->noise.len, 32 + 12 + 16, "the handshake carries a timestamp only");
	cr_assert_eq(u->init->mac1.len, 16);
	nkp__wire__frame__free_unpacked(u, NULL);
	/* No static key travels. */
	cr_assert_not(contains_bytes(&i, nkp_identity_public(P.svc), 32));
	cr_assert_not(contains_bytes(&i, nkp_identity_public(P.host), 32));

	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	u = unpack(&r);
	cr_assert_eq(u->kind_case, NKP__WIRE__FRAME__KIND_RESP);
	cr_assert_eq(u->resp->noise.len, 48);
	nkp__wire__frame__free_unpacked(u, NULL);
	cr_assert_not(nkpi_session_established(P.rsp), "pending until the first Transport");
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r.b, r.len), NKP_OK);
	cr_assert(nkpi_session_established(P.ini));
	cr_assert_not(nkpi_session_needs_handshake(P.ini));

	q = request(P.ini, "push: the keys");
	cr_assert_not(contains(&q, "push: the keys"));
	u = unpack(&q);
	cr_assert_eq(u->kind_case, NKP__WIRE__FRAME__KIND_TRANSPORT);
	cr_assert_eq(u->transport->counter, 0);
	nkp__wire__frame__free_unpacked(u, NULL);
	a = serve(P.rsp, &q, "push: the keys", "ack");
	cr_assert(nkpi_session_established(P.rsp));
	cr_assert_eq(take_reply(P.ini, &a, "ack"), NKP_OK);
	for (int n = 0; n < 20; n++) {
		exchange(&P, "hello", "status");
	}
	free(i.b);
	free(r.b);
	free(q.b);
	free(a.b);
}

Test(session, a_large_message_travels_in_several_noise_messages)
{
	size_t len = 3 * NKPI_SESSION_CHUNK + 5;
	uint8_t *big = malloc(len), *out = malloc(len + 1);
	nkpi_session_reply rk;
	frame q, hs, r;
	size_t n = 0;

	randombytes_buf(big, len);
	handshake(&P);
	cr_assert_eq(nkpi_session_seal_request(P.ini, big, len, &q.b, &q.len), NKP_OK);
	cr_assert_eq(
		nkpi_session_open_request(P.rsp, q.b, q.len, out, len + 1, &n, &rk, &hs.b, &hs.len),
		NKP_OK);
	cr_assert_eq(n, len);
	cr_assert_eq(memcmp(out, big, len), 0);
	cr_assert_eq(nkpi_session_seal_reply(P.rsp, &rk, big, len, &r.b, &r.len), NKP_OK);
	cr_assert_eq(nkpi_session_open_reply(P.ini, r.b, r.len, out, len + 1, &n), NKP_OK);
	cr_assert_eq(memcmp(out, big, len), 0);
	/* The next frame's counter is past the four chunks. */
	free(q.b);
	q = request(P.ini, "next");
	{
		Nkp__Wire__Frame *u = unpack(&q);

		cr_assert_eq(u->transport->counter, 4);
		nkp__wire__frame__free_unpacked(u, NULL);
	}
	/* Dropping the last chunk is refused, not a shorter message. */
	free(r.b);
	cr_assert_eq(nkpi_session_seal_request(P.ini, big, len, &r.b, &r.len), NKP_OK);
	{
		Nkp__Wire__Frame *u = unpack(&r);
		frame cut;

		u->transport->ciphertext.len -= 5 + 16;
		cut = repack(u);
		cr_assert_eq(nkpi_session_open_request(P.rsp, cut.b, cut.len, out, len + 1, &n, &rk,
						       &hs.b, &hs.len),
			     NKP_ERR_AUTH);
		free(cut.b);
		nkp__wire__frame__free_unpacked(u, NULL);
	}
	free(q.b);
	free(r.b);
	free(big);
	free(out);
}

/* --- replays ------------------------------------------------------------- */

Test(session, a_replayed_transport_is_dropped_and_the_live_session_keeps_working)
{
	frame q, a;

	handshake(&P);
	q = request(P.ini, "push generation 7");
	a = serve(P.rsp, &q, "push generation 7", "ack 7");
	cr_assert_eq(take_reply(P.ini, &a, "ack 7"), NKP_OK);
	/* The captured request again, now and after more traffic. */
	cr_assert_eq(refused(P.rsp, &q), NKP_ERR_REPLAY);
	exchange(&P, "hello", "status");
	cr_assert_eq(refused(P.rsp, &q), NKP_ERR_REPLAY);
	/* A captured reply is refused by the initiator too. */
	cr_assert_eq(take_reply(P.ini, &a, NULL), NKP_ERR_REPLAY);
	exchange(&P, "hello", "status");
	free(q.b);
	free(a.b);
}

Test(session, a_replayed_handshake_init_is_refused_by_its_timestamp)
{
	frame i = init_frame(P.ini), r;

	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r.b, r.len), NKP_OK);
	free(r.b);
	exchange(&P, "hello", "status");
	/* The same init again: nothing new, no answer, the session stays. */
	cr_assert_eq(refused(P.rsp, &i), NKP_ERR_REPLAY);
	exchange(&P, "hello", "status");
	/* An older init made later (a wall clock stepped back) is still newer:
	 * the initiator's timestamps never go back. */
	nkpi_session_set_wall_ns(WALL0_NS);
	handshake(&P);
	nkpi_session_set_wall_ns(WALL0_NS - 1000000000);
	handshake(&P);
	exchange(&P, "hello", "status");
	free(i.b);
}

Test(session, a_new_handshake_keeps_the_current_session_until_its_first_transport)
{
	frame old1, old2, i, r, q;

	handshake(&P);
	exchange(&P, "hello", "status");
	old1 = request(P.ini, "under the old session 1");
	old2 = request(P.ini, "under the old session 2");
	/* A rekey: the responder now holds the current and a pending one. */
	i = init_frame(P.ini);
	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	free(serve(P.rsp, &old1, "under the old session 1", "still here").b);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r.b, r.len), NKP_OK);
	/* The first Transport under the new one promotes it; the old goes. */
	q = request(P.ini, "under the new session");
	free(serve(P.rsp, &q, "under the new session", "ok").b);
	cr_assert_eq(refused(P.rsp, &old2), NKP_ERR_SESSION);
	exchange(&P, "hello", "status");
	free(old1.b);
	free(old2.b);
	free(i.b);
	free(r.b);
	free(q.b);
}

Test(session, an_unconfirmed_handshake_replaced_or_lost_costs_nothing)
{
	frame i1, i2, r1, r2;

	handshake(&P);
	exchange(&P, "hello", "status"); /* confirms it */
	i1 = init_frame(P.ini);
	cr_assert_eq(deliver(P.rsp, &i1, &r1, NULL, NULL, NULL), NKP_OK);
	/* The initiator gave up on it (its answer lost) and starts again;
	 * the late answer matches nothing. */
	i2 = init_frame(P.ini);
	free(i2.b);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r1.b, r1.len), NKP_ERR_STATE);
	cr_assert(nkpi_session_established(P.ini), "a failed rekey keeps the current session");
	exchange(&P, "hello", "status");
	i2 = init_frame(P.ini);
	cr_assert_eq(deliver(P.rsp, &i2, &r2, NULL, NULL, NULL), NKP_OK);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r2.b, r2.len), NKP_OK);
	exchange(&P, "hello", "status");
	free(i1.b);
	free(i2.b);
	free(r1.b);
	free(r2.b);
}

/* --- stolen keys ------------------------------------------------------------ */

/* A Noise_KK initiator's first message written by someone who holds the
 * responder's static secret r instead of the initiator's s: ss = DH(r, S)
 * equals DH(s, R). From the responder's answer it derives what it can
 * (se needs s or e_h: it has neither and uses DH(r, E_h)). */
typedef struct forger {
	uint8_t ck[64], h[64], k[32];
	uint64_t n;
	uint8_t e[32], E[32];
} forger;

static void hmac_b2(const uint8_t *key, const uint8_t *a, size_t alen, const uint8_t *b,
		    size_t blen, uint8_t out[64])
{
	uint8_t kb[128] = {0}, pad[128], inner[64];
	crypto_generichash_state st;

	memcpy(kb, key, 64);
	for (int i = 0; i < 128; i++) {
		pad[i] = kb[i] ^ 0x36;
	}
	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, pad, 128);
	crypto_generichash_update(&st, a, alen);
	crypto_generichash_update(&st, b, blen);
	crypto_generichash_final(&st, inner, 64);
	for (int i = 0; i < 128; i++) {
		pad[i] = kb[i] ^ 0x5c;
	}
	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, pad, 128);
	crypto_generichash_update(&st, inner, 64);
	crypto_generichash_final(&st, out, 64);
}

static void hkdf2(const uint8_t ck[64], const uint8_t *ikm, size_t len, uint8_t o1[64],
		  uint8_t o2[64])
{
	uint8_t tk[64], one = 1, two = 2;

	hmac_b2(ck, ikm, len, NULL, 0, tk);
	hmac_b2(tk, &one, 1, NULL, 0, o1);
	hmac_b2(tk, o1, 64, &two, 1, o2);
}

static void f_mix_hash(forger *f, const uint8_t *d, size_t len)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, f->h, 64);
	crypto_generichash_update(&st, d, len);
	crypto_generichash_final(&st, f->h, 64);
}

static void f_mix_key(forger *f, const uint8_t *sk, const uint8_t *pk)
{
	uint8_t dh[32], o1[64], o2[64];

	cr_assert_eq(crypto_scalarmult(dh, sk, pk), 0);
	hkdf2(f->ck, dh, 32, o1, o2);
	memcpy(f->ck, o1, 64);
	memcpy(f->k, o2, 32);
	f->n = 0;
}

static void f_nonce(uint8_t n[12], uint64_t v)
{
	memset(n, 0, 12);
	for (int i = 0; i < 8; i++) {
		n[4 + i] = (uint8_t)(v >> (8 * i));
	}
}

/* HandshakeInit as the service, from the host's secret only. */
static frame forge_init(forger *f, const uint8_t *r, const uint8_t *R, const uint8_t *S)
{
	Nkp__Wire__Frame fr = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__HandshakeInit in = NKP__WIRE__HANDSHAKE_INIT__INIT;
	uint8_t noise[60], ts[12], nn[12], mkey[32], mac[16], idx[4] = {7, 0, 0, 0};
	crypto_generichash_state st;

	memset(f, 0, sizeof(*f));
	memcpy(f->h, NKPI_NOISE_PROTOCOL_NAME, sizeof(NKPI_NOISE_PROTOCOL_NAME) - 1);
	memcpy(f->ck, f->h, 64);
	f_mix_hash(f, (const uint8_t *)"nkp-wire-v1", 11);
	f_mix_hash(f, S, 32);
	f_mix_hash(f, R, 32);
	randombytes_buf(f->e, 32);
	crypto_scalarmult_base(f->E, f->e);
	memcpy(noise, f->E, 32);
	f_mix_hash(f, f->E, 32);
	f_mix_key(f, f->e, R); /* es */
	f_mix_key(f, r, S);    /* ss = DH(r, S) = DH(s, R): the KCI step */
	/* A timestamp far in the future. */
	memset(ts, 0, sizeof(ts));
	ts[0] = 0x7f;
	f_nonce(nn, f->n++);
	crypto_aead_chacha20poly1305_ietf_encrypt(noise + 32, NULL, ts, 12, f->h, 64, NULL, nn,
						  f->k);
	f_mix_hash(f, noise + 32, 28);
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)"nkp-mac1", 8);
	crypto_generichash_update(&st, R, 32);
	crypto_generichash_final(&st, mkey, 32);
	crypto_generichash_init(&st, mkey, 32, 16);
	crypto_generichash_update(&st, idx, 4);
	crypto_generichash_update(&st, noise, 60);
	crypto_generichash_final(&st, mac, 16);
	in.sender_index = 7;
	in.noise = (ProtobufCBinaryData){60, noise};
	in.mac1 = (ProtobufCBinaryData){16, mac};
	fr.kind_case = NKP__WIRE__FRAME__KIND_INIT;
	fr.init = &in;
	return repack(&fr);
}

Test(session, with_the_hosts_secret_a_forged_handshake_gets_no_usable_session_and_no_push)
{
	const uint8_t *r = nkpi_key_bytes(nkp_identity_secret(P.host));
	const uint8_t *R = nkp_identity_public(P.host), *S = nkp_identity_public(P.svc);
	forger f;
	frame i, resp, forged;
	Nkp__Wire__Frame *u, t = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__Transport tr = NKP__WIRE__TRANSPORT__INIT;
	uint8_t o1[64], o2[64], ct[64], nn[12], ad[8] = {4};
	uint8_t *pt = (uint8_t *)"push";

	handshake(&P);
	exchange(&P, "hello", "status");
	/* Noise KK's first message is not KCI-resistant: the host accepts
	 * the forgery and answers (a pending session, nothing more). */
	i = forge_init(&f, r, R, S);
	cr_assert_eq(deliver(P.rsp, &i, &resp, NULL, NULL, NULL), NKP_OK);
	/* The answer's se = DH(e_h, S) needs s or e_h: the forger has
	 * neither. Its best keys, from DH(e, E_h) and DH(r, E_h): */
	u = unpack(&resp);
	f_mix_hash(&f, u->resp->noise.data, 32);
	f_mix_key(&f, f.e, u->resp->noise.data); /* ee */
	f_mix_key(&f, r, u->resp->noise.data);	 /* se: wrong, there is no other choice */
	f_nonce(nn, 0);
	cr_assert_neq(crypto_aead_chacha20poly1305_ietf_decrypt(
			      ct, NULL, NULL, u->resp->noise.data + 32, 16, f.h, 64, nn, f.k),
		      0, "the forger authenticated the host's answer");
	hkdf2(f.ck, NULL, 0, o1, o2);
	/* A push under those keys is dropped: no reply, nothing applied. */
	crypto_aead_chacha20poly1305_ietf_encrypt(ct, NULL, pt, 4, ad, 8, NULL, nn, o1);
	tr.receiver_index = u->resp->sender_index;
	tr.counter = 0;
	tr.ciphertext = (ProtobufCBinaryData){4 + 16, ct};
	t.kind_case = NKP__WIRE__FRAME__KIND_TRANSPORT;
	t.transport = &tr;
	forged = repack(&t);
	cr_assert_eq(refused(P.rsp, &forged), NKP_ERR_AUTH);
	/* The honest session was never replaced. */
	exchange(&P, "hello", "status");
	nkp__wire__frame__free_unpacked(u, NULL);
	free(i.b);
	free(resp.b);
	free(forged.b);
}

Test(session, with_both_static_secrets_recorded_traffic_stays_secret)
{
	const char *secret_push = "push: primary key 0123456789abcdef";
	frame i = init_frame(P.ini), r, q, a;
	nkpi_noise_hs *thief = NULL;
	nkpi_noise_cipher c1, c2;
	uint8_t out[BUF_CAP], noise[64], ts[16];
	size_t n = 0;
	Nkp__Wire__Frame *ui, *ur, *uq;
	const uint8_t *s = nkpi_key_bytes(nkp_identity_secret(P.svc));
	const uint8_t *hsec = nkpi_key_bytes(nkp_identity_secret(P.host));

	/* Recorded: the whole session, a push in it. */
	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r.b, r.len), NKP_OK);
	q = request(P.ini, secret_push);
	a = serve(P.rsp, &q, secret_push, "ack");
	/* Both processes end; their ephemerals are gone. Everything a thief
	 * of both state directories holds: s, r, the recorded frames. */
	nkpi_session_reset(P.ini);
	nkpi_session_reset(P.rsp);
	cr_assert_not(contains(&q, "primary key"));
	ui = unpack(&i);
	ur = unpack(&r);
	uq = unpack(&q);
	/* 1. As the host: it reads the recorded init (its payload is only a
	 * timestamp), answers with its own ephemeral, splits: other keys. */
	cr_assert_eq(nkpi_noise_hs_new(false, hsec, nkp_identity_public(P.svc),
				       (const uint8_t *)"nkp-wire-v1", 11, &thief),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_read(thief, ui->init->noise.data, ui->init->noise.len, ts,
					sizeof(ts), &n),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_write(thief, NULL, 0, noise, sizeof(noise), &n), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_split(thief, &c2, &c1, NULL), NKP_OK);
	cr_assert_neq(nkpi_noise_decrypt(
			      &c1, uq->transport->counter, (const uint8_t *)"\x22\0\0\0\0\0\0\0", 8,
			      uq->transport->ciphertext.data, uq->transport->ciphertext.len, out),
		      NKP_OK);
	nkpi_noise_hs_free(thief);
	/* 2. As the service: a new init with a new ephemeral; the recorded
	 * answer does not authenticate against it. */
	cr_assert_eq(nkpi_noise_hs_new(true, s, nkp_identity_public(P.host),
				       (const uint8_t *)"nkp-wire-v1", 11, &thief),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_write(thief, ts, 12, noise, sizeof(noise), &n), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_read(thief, ur->resp->noise.data, ur->resp->noise.len, ts,
					sizeof(ts), &n),
		     NKP_ERR_AUTH);
	nkpi_noise_hs_free(thief);
	/* 3. The recorded push replayed to the live host: no session. */
	cr_assert_eq(refused(P.rsp, &q), NKP_ERR_SESSION);
	nkp__wire__frame__free_unpacked(ui, NULL);
	nkp__wire__frame__free_unpacked(ur, NULL);
	nkp__wire__frame__free_unpacked(uq, NULL);
	free(i.b);
	free(r.b);
	free(q.b);
	free(a.b);
}

Test(session, another_service_gets_no_answer)
{
	nkp_identity *other;
	nkpi_session *rogue;
	frame i;

	cr_assert_eq(nkp_identity_generate(&other), NKP_OK);
	cr_assert_eq(nkpi_session_new(other, nkp_identity_public(P.host), false, &rogue), NKP_OK);
	i = init_frame(rogue);
	cr_assert_eq(refused(P.rsp, &i), NKP_ERR_AUTH);
	free(i.b);
	nkpi_session_free(rogue);
	nkp_identity_free(other);
}

/* --- garbage and the cost of strangers --------------------------------------- */

Test(session, garbage_truncations_flips_and_unknown_indexes_get_no_answer)
{
	uint8_t junk[300];
	frame g = {junk, sizeof(junk)}, i, q, x;
	Nkp__Wire__Frame *u;

	randombytes_buf(junk, sizeof(junk));
	cr_assert_neq(refused(P.rsp, &g), NKP_OK);
	g.len = 0;
	cr_assert_eq(refused(P.rsp, &g), NKP_ERR_PARSE);

	i = init_frame(P.ini);
	for (size_t cut = 0; cut < i.len; cut++) {
		x = (frame){i.b, cut};
		cr_assert_neq(refused(P.rsp, &x), NKP_OK, "init cut to %zu answered", cut);
	}
	for (size_t b = 0; b < i.len; b++) {
		i.b[b] ^= 0x01;
		cr_assert_neq(refused(P.rsp, &i), NKP_OK, "init with byte %zu flipped answered", b);
		i.b[b] ^= 0x01;
	}
	free(i.b);
	handshake(&P);
	q = request(P.ini, "hello");
	for (size_t cut = 0; cut < q.len; cut++) {
		x = (frame){q.b, cut};
		cr_assert_neq(refused(P.rsp, &x), NKP_OK, "transport cut to %zu answered", cut);
	}
	for (size_t b = 0; b < q.len; b++) {
		q.b[b] ^= 0x80;
		cr_assert_neq(refused(P.rsp, &q), NKP_OK, "transport byte %zu flipped answered", b);
		q.b[b] ^= 0x80;
	}
	u = unpack(&q);
	u->transport->receiver_index ^= 1;
	x = repack(u);
	cr_assert_eq(refused(P.rsp, &x), NKP_ERR_SESSION);
	free(x.b);
	/* A response sent to the responder is not a request. */
	nkp__wire__frame__free_unpacked(u, NULL);
	/* None of it hurt the session: the original frame still opens. */
	free(serve(P.rsp, &q, "hello", "status").b);
	free(q.b);
}

Test(session, a_wrong_mac1_is_refused_before_any_dh_or_rate_token)
{
	frame i, bad;
	Nkp__Wire__Frame *u;

	/* More bad-mac1 inits than the burst: none takes a token. */
	for (unsigned n = 0; n < 2 * NKPI_SESSION_HS_BURST; n++) {
		i = init_frame(P.ini);
		u = unpack(&i);
		u->init->mac1.data[n % 16] ^= 1;
		bad = repack(u);
		cr_assert_eq(refused(P.rsp, &bad), NKP_ERR_AUTH);
		nkp__wire__frame__free_unpacked(u, NULL);
		free(bad.b);
		free(i.b);
	}
	handshake(&P);
	exchange(&P, "hello", "status");
}

Test(session, handshakes_are_rate_limited_per_address)
{
	frame i, r;

	for (unsigned n = 0; n < NKPI_SESSION_HS_PEER_BURST; n++) {
		i = init_frame(P.ini);
		cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK, "init %u", n);
		free(i.b);
		free(r.b);
	}
	i = init_frame(P.ini);
	cr_assert_eq(refused(P.rsp, &i), NKP_ERR_REFUSED);
	free(i.b);
	/* A second later: NKPI_SESSION_HS_PEER_PER_S more. */
	nkpi_session_set_clock_ms(T0_MS + 1000);
	for (unsigned n = 0; n < NKPI_SESSION_HS_PEER_PER_S; n++) {
		i = init_frame(P.ini);
		cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK, "init %u", n);
		free(i.b);
		free(r.b);
	}
	i = init_frame(P.ini);
	cr_assert_eq(refused(P.rsp, &i), NKP_ERR_REFUSED);
	free(i.b);
}

/* --- counters, window, budgets ------------------------------------------------ */

Test(session, counters_out_of_order_in_the_window_open_once_and_old_ones_are_dropped)
{
	frame q[80];

	handshake(&P);
	for (int n = 0; n < 80; n++) {
		char m[16];

		snprintf(m, sizeof(m), "req %d", n);
		q[n] = request(P.ini, m);
	}
	free(serve(P.rsp, &q[5], "req 5", "ok").b);
	free(serve(P.rsp, &q[3], "req 3", "ok").b);
	cr_assert_eq(refused(P.rsp, &q[3]), NKP_ERR_REPLAY);
	cr_assert_eq(refused(P.rsp, &q[5]), NKP_ERR_REPLAY);
	free(serve(P.rsp, &q[4], "req 4", "ok").b);
	free(serve(P.rsp, &q[79], "req 79", "ok").b);
	/* 79 - 10 > 64: too old to tell, dropped. */
	cr_assert_eq(refused(P.rsp, &q[10]), NKP_ERR_REPLAY);
	free(serve(P.rsp, &q[20], "req 20", "ok").b);
	cr_assert_eq(refused(P.rsp, &q[20]), NKP_ERR_REPLAY);
	for (int n = 0; n < 80; n++) {
		free(q[n].b);
	}
}

Test(session, a_counter_past_the_message_budget_is_dropped)
{
	frame q, x;
	Nkp__Wire__Frame *u;

	handshake(&P);
	q = request(P.ini, "hello");
	u = unpack(&q);
	u->transport->counter = NKPI_SESSION_REJECT_AFTER_MSGS;
	x = repack(u);
	cr_assert_eq(refused(P.rsp, &x), NKP_ERR_REPLAY);
	free(x.b);
	u->transport->counter = UINT64_MAX;
	x = repack(u);
	cr_assert_eq(refused(P.rsp, &x), NKP_ERR_REPLAY);
	free(x.b);
	nkp__wire__frame__free_unpacked(u, NULL);
	free(serve(P.rsp, &q, "hello", "ok").b);
	free(q.b);
}

Test(session, the_initiator_rekeys_after_its_message_budget)
{
	handshake(&P);
	exchange(&P, "hello", "status");
	nkpi_session_skip_to(P.ini, NKPI_SESSION_REKEY_AFTER_MSGS - 1);
	cr_assert_not(nkpi_session_needs_handshake(P.ini));
	exchange(&P, "hello", "status");
	cr_assert(nkpi_session_needs_handshake(P.ini));
	cr_assert(nkpi_session_usable(P.ini), "still usable while the rekey runs");
	handshake(&P);
	cr_assert_not(nkpi_session_needs_handshake(P.ini));
	exchange(&P, "hello", "status");
	/* Near the responder's limit the initiator stops sending under it. */
	nkpi_session_skip_to(P.ini, NKPI_SESSION_REJECT_AFTER_MSGS - 2);
	cr_assert_not(nkpi_session_usable(P.ini));
	{
		frame q;

		cr_assert_eq(
			nkpi_session_seal_request(P.ini, (const uint8_t *)"x", 1, &q.b, &q.len),
			NKP_ERR_SESSION);
	}
}

Test(session, the_initiator_rekeys_after_its_time_budget_and_the_responder_drops_old_sessions)
{
	frame q;

	handshake(&P);
	exchange(&P, "hello", "status");
	nkpi_session_set_clock_ms(T0_MS + NKPI_SESSION_REKEY_AFTER_MS - 1);
	cr_assert_not(nkpi_session_needs_handshake(P.ini));
	nkpi_session_set_clock_ms(T0_MS + NKPI_SESSION_REKEY_AFTER_MS);
	cr_assert(nkpi_session_needs_handshake(P.ini));
	exchange(&P, "hello", "status"); /* still usable */
	q = request(P.ini, "late");
	nkpi_session_set_clock_ms(T0_MS + NKPI_SESSION_REJECT_AFTER_MS);
	cr_assert_not(nkpi_session_usable(P.ini));
	cr_assert_eq(refused(P.rsp, &q), NKP_ERR_SESSION);
	cr_assert_not(nkpi_session_established(P.rsp), "an expired session is wiped");
	handshake(&P);
	exchange(&P, "hello", "status");
	free(q.b);
}

Test(session, reset_wipes_both_sides_sessions)
{
	frame q;

	handshake(&P);
	exchange(&P, "hello", "status");
	q = request(P.ini, "hello");
	nkpi_session_reset(P.ini);
	cr_assert_not(nkpi_session_established(P.ini));
	cr_assert(nkpi_session_needs_handshake(P.ini));
	nkpi_session_reset(P.rsp);
	cr_assert_not(nkpi_session_established(P.rsp));
	cr_assert_eq(refused(P.rsp, &q), NKP_ERR_SESSION);
	nkpi_session_reset(NULL);
	handshake(&P);
	exchange(&P, "hello", "status");
	free(q.b);
}

Test(session, frames_of_the_wrong_kind_or_direction_are_refused)
{
	frame i, r, q, a;

	i = init_frame(P.ini);
	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	/* A response is no request, an init no response. */
	cr_assert_eq(refused(P.rsp, &r), NKP_ERR_PARSE);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, i.b, i.len), NKP_ERR_PARSE);
	i = (free(i.b), init_frame(P.ini));
	free(r.b);
	cr_assert_eq(deliver(P.rsp, &i, &r, NULL, NULL, NULL), NKP_OK);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, r.b, r.len), NKP_OK);
	q = request(P.ini, "hello");
	a = serve(P.rsp, &q, "hello", "status");
	/* A reply sent back to the responder; a request taken as a reply. */
	cr_assert_neq(refused(P.rsp, &a), NKP_OK);
	cr_assert_neq(take_reply(P.ini, &q, NULL), NKP_OK);
	cr_assert_eq(take_reply(P.ini, &a, "status"), NKP_OK);
	free(i.b);
	free(r.b);
	free(q.b);
	free(a.b);
}

Test(session, bad_arguments_are_refused)
{
	nkpi_session *s = (nkpi_session *)0x1;
	static const uint8_t zero[32] = {0};
	uint8_t buf[8];
	size_t n = 0;
	nkpi_session_reply rk;
	uint8_t *f = NULL;
	size_t fl = 0;

	cr_assert_eq(nkpi_session_new(P.svc, zero, false, &s), NKP_ERR_INVALID);
	cr_assert_eq(s, (nkpi_session *)0x1, "out-parameter written on failure");
	cr_assert_eq(nkpi_session_new(NULL, zero, false, &s), NKP_ERR_INVALID);
	cr_assert_eq(nkpi_session_handshake_init(P.rsp, &f, &fl), NKP_ERR_INVALID);
	cr_assert_eq(nkpi_session_seal_request(P.ini, (const uint8_t *)"x", 1, &f, &fl),
		     NKP_ERR_SESSION);
	cr_assert_eq(nkpi_session_open_request(P.ini, buf, 1, buf, sizeof(buf), &n, &rk, &f, &fl),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkpi_session_handshake_finish(P.ini, buf, 0), NKP_ERR_PARSE);
	nkpi_session_reply_wipe(NULL);
	nkpi_session_free(NULL);
}

/* --- known-answer vector -------------------------------------------------------- */

/* tests/vectors/session-v2.bin: the Frames of one session with fixed
 * statics, ephemerals, indexes and timestamp (session-v2.txt), each as a
 * u32 little-endian length and the bytes: init, resp, a request and its
 * reply. Regenerated by hand with tests/vectors/gen-session-v2.c. */
static nkp_identity *kat_identity(uint8_t first)
{
	uint8_t b[32];
	nkp_key *k;
	nkp_identity *id;

	for (int i = 0; i < 32; i++) {
		b[i] = (uint8_t)(first + i);
	}
	cr_assert_eq(nkp_key_from_bytes(b, &k), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(k, &id), NKP_OK);
	nkp_key_free(k);
	return id;
}

#include "session-kat.h"

Test(session, known_answer_vector)
{
	uint8_t *want = NULL, *got;
	size_t wantlen = 0, gotlen = 0;
	char path[1024];
	pair p;

	pair_free(&P);
	pair_make(&p, kat_identity(0x01), kat_identity(0x81));
	got = session_kat(&p.ini, &p.rsp, &gotlen);
	snprintf(path, sizeof(path), "%s/session-v2.bin", NKP_VECTORS_DIR);
	cr_assert_eq(nkp_file_read(path, 1 << 20, &want, &wantlen), NKP_OK);
	cr_assert_eq(gotlen, wantlen);
	cr_assert_eq(memcmp(got, want, wantlen), 0, "the frames differ from session-v2.bin");
	free(got);
	free(want);
	pair_free(&p);
	pair_new(&P);
}

/* --- attacks on the handshake budget, the frame parser and the window ------- */

/* One recorded genuine HandshakeInit, replayed faster than the bucket
 * refills, costs no token: the service still gets its handshakes. */
Test(session, a_replayed_init_spends_no_handshake_token)
{
	frame rec = init_frame(P.ini), r, i;
	unsigned refused_genuine = 0;

	cr_assert_eq(deliver(P.rsp, &rec, &r, NULL, NULL, NULL), NKP_OK);
	free(r.b);
	for (unsigned sec = 0; sec < 60; sec++) {
		nkpi_session_set_clock_ms(T0_MS + 1000u * sec);
		for (unsigned k = 0; k < (sec == 0 ? 200u : 125u); k++) {
			nkp_err e = refused(P.rsp, &rec);

			cr_assert(e == NKP_ERR_REPLAY || e == NKP_ERR_REFUSED);
		}
		if (sec % 5 == 0) {
			i = init_frame(P.ini);
			refused_genuine += refused(P.rsp, &i) != NKP_OK;
			free(i.b);
		}
	}
	cr_assert_eq(refused_genuine, 0, "%u genuine handshakes refused", refused_genuine);
	free(rec.b);
}

/* A stranger at another address, making fresh inits with a valid mac1
 * (the host's public key is no secret), spends its own bucket only. */
Test(session, a_stranger_at_another_address_cannot_spend_the_services_bucket)
{
	nkp_identity *x;
	nkpi_session *atk;
	uint64_t svc_addr = 0x1111, atk_addr = 0x2222;
	unsigned refused_genuine = 0;
	uint8_t buf[BUF_CAP];
	size_t n;

	cr_assert_eq(nkp_identity_generate(&x), NKP_OK);
	cr_assert_eq(nkpi_session_new(x, nkp_identity_public(P.host), false, &atk), NKP_OK);
	for (unsigned sec = 0; sec < 60; sec++) {
		nkpi_session_set_clock_ms(T0_MS + 1000u * sec);
		for (unsigned k = 0; k < 30u; k++) {
			frame a = init_frame(atk), hs = {0};
			nkpi_session_reply rk;
			nkp_err e = nkpi_session_open_request_from(P.rsp, atk_addr, a.b, a.len, buf,
								   sizeof(buf), &n, &rk, &hs.b,
								   &hs.len);

			cr_assert(e == NKP_ERR_AUTH || e == NKP_ERR_REFUSED);
			cr_assert_null(hs.b);
			free(a.b);
		}
		if (sec % 5 == 0) {
			frame i = init_frame(P.ini), hs = {0};
			nkpi_session_reply rk;
			nkp_err e = nkpi_session_open_request_from(P.rsp, svc_addr, i.b, i.len, buf,
								   sizeof(buf), &n, &rk, &hs.b,
								   &hs.len);

			refused_genuine += e != NKP_OK;
			nkpi_session_reply_wipe(&rk);
			free(hs.b);
			free(i.b);
		}
	}
	cr_assert_eq(refused_genuine, 0, "%u genuine handshakes refused", refused_genuine);
	nkpi_session_free(atk);
	nkp_identity_free(x);
}

static long maxrss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* Whoever answers nkpd's REQ socket sends 4 MiB of unknown fields: they
 * are refused before protobuf-c allocates for them. */
Test(session, a_reply_of_unknown_fields_is_refused_before_unpacking)
{
	size_t len = NKP_FRAME_MAX - 16, pos = 0, n = 0;
	uint8_t *f = malloc(len), *out = malloc(len + 1);
	long before;

	handshake(&P);
	f[pos++] = 0x32; /* transport, empty */
	f[pos++] = 0x00;
	while (pos + 3 <= len) { /* unknown varint field 16 */
		f[pos++] = 0x80;
		f[pos++] = 0x01;
		f[pos++] = 0x00;
	}
	before = maxrss_kb();
	cr_assert_eq(nkpi_session_open_reply(P.ini, f, pos, out, len + 1, &n), NKP_ERR_PARSE);
	cr_assert_lt(maxrss_kb() - before, 16 * 1024, "unpacking cost %ld KiB",
		     maxrss_kb() - before);
	free(f);
	free(out);
}

/* Chunks of two sent frames spliced under a counter the window never
 * marked do not open as a message nobody sent. */
Test(session, spliced_chunks_of_two_frames_do_not_open)
{
	size_t len = 2 * NKPI_SESSION_CHUNK, cap = 3 * NKPI_SESSION_CHUNK;
	size_t cct = NKPI_SESSION_CHUNK + 16, n = 0;
	uint8_t *a = malloc(len), *b = malloc(len), *out = malloc(cap), *ct = malloc(2 * cct);
	frame fa, fb, hs, sp;
	Nkp__Wire__Frame *ua, *ub;
	nkpi_session_reply rk;

	memset(a, 'A', len);
	memset(b, 'B', len);
	handshake(&P);
	cr_assert_eq(nkpi_session_seal_request(P.ini, a, len, &fa.b, &fa.len), NKP_OK);
	cr_assert_eq(nkpi_session_seal_request(P.ini, b, len, &fb.b, &fb.len), NKP_OK);
	for (int k = 0; k < 2; k++) {
		frame *f = k == 0 ? &fa : &fb;

		cr_assert_eq(nkpi_session_open_request(P.rsp, f->b, f->len, out, cap, &n, &rk,
						       &hs.b, &hs.len),
			     NKP_OK);
		nkpi_session_reply_wipe(&rk);
	}
	ua = unpack(&fa);
	ub = unpack(&fb);
	cr_assert_eq(ub->transport->counter, 2);
	memcpy(ct, ua->transport->ciphertext.data + cct, cct); /* A's chunk 1: nonce 1 */
	memcpy(ct + cct, ub->transport->ciphertext.data, cct); /* B's chunk 0: nonce 2 */
	ua->transport->counter = 1;
	free(ua->transport->ciphertext.data);
	ua->transport->ciphertext.data = ct;
	sp = repack(ua);
	cr_assert_eq(
		nkpi_session_open_request(P.rsp, sp.b, sp.len, out, cap, &n, &rk, &hs.b, &hs.len),
		NKP_ERR_REPLAY);
	nkpi_session_reply_wipe(&rk);
	nkp__wire__frame__free_unpacked(ua, NULL);
	nkp__wire__frame__free_unpacked(ub, NULL);
	free(a);
	free(b);
	free(out);
	free(fa.b);
	free(fb.b);
	free(sp.b);
}

/* Many addresses, each under its own budget, still meet the host-wide
 * backstop. */
Test(session, the_host_wide_bucket_bounds_many_addresses)
{
	nkp_identity *x;
	nkpi_session *atk;
	uint8_t buf[BUF_CAP];
	unsigned took = 0;
	size_t n;

	cr_assert_eq(nkp_identity_generate(&x), NKP_OK);
	cr_assert_eq(nkpi_session_new(x, nkp_identity_public(P.host), false, &atk), NKP_OK);
	for (uint64_t addr = 1; addr <= 2 * NKPI_SESSION_HS_BURST; addr++) {
		frame a = init_frame(atk), hs = {0};
		nkpi_session_reply rk;
		nkp_err e = nkpi_session_open_request_from(P.rsp, addr, a.b, a.len, buf,
							   sizeof(buf), &n, &rk, &hs.b, &hs.len);

		cr_assert(e == NKP_ERR_AUTH || e == NKP_ERR_REFUSED);
		took += e == NKP_ERR_AUTH; /* it got as far as Noise */
		free(a.b);
	}
	cr_assert_eq(took, NKPI_SESSION_HS_BURST);
	nkpi_session_free(atk);
	nkp_identity_free(x);
}
