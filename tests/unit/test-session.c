#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "session.h"
#include "frames.h"
#include "vectors.h"
#include "wire.pb-c.h"

/* The service (initiator) and a host (responder), pinned both ways, with
 * a session on each side as nkpd and the host plugin hold them. */
typedef struct {
	nkp_identity *svc, *host;
	nkp_channel *to_host, *to_svc;
	nkpi_session *ini, *rsp;
} pair;

static pair P;

#define BUF_CAP 4096u
#define T0_MS 1000000u

static void pair_make(pair *p, nkp_identity *svc, nkp_identity *host)
{
	memset(p, 0, sizeof(*p));
	p->svc = svc;
	p->host = host;
	cr_assert_eq(nkp_channel_new(svc, nkp_identity_public(host), &p->to_host), NKP_OK);
	cr_assert_eq(nkp_channel_new(host, nkp_identity_public(svc), &p->to_svc), NKP_OK);
	cr_assert_eq(nkpi_session_new(p->to_host, false, &p->ini), NKP_OK);
	cr_assert_eq(nkpi_session_new(p->to_svc, true, &p->rsp), NKP_OK);
}

static void pair_new(pair *p)
{
	nkp_identity *svc, *host;

	cr_assert_eq(nkp_identity_generate(&svc), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&host), NKP_OK);
	pair_make(p, svc, host);
}

static void pair_free(pair *p)
{
	nkpi_session_free(p->ini);
	nkpi_session_free(p->rsp);
	nkp_channel_free(p->to_host);
	nkp_channel_free(p->to_svc);
	nkp_identity_free(p->svc);
	nkp_identity_free(p->host);
	memset(p, 0, sizeof(*p));
}

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	pair_new(&P);
}

static void teardown(void)
{
	pair_free(&P);
	nkpi_session_set_clock_ms(0);
}

/* --- helpers ------------------------------------------------------------ */

static Nkp__Wire__Frame__KindCase frame_kind(const uint8_t *frame, size_t len)
{
	Nkp__Wire__Frame *f = nkp__wire__frame__unpack(NULL, len, frame);
	Nkp__Wire__Frame__KindCase kind;

	cr_assert_not_null(f);
	kind = f->kind_case;
	nkp__wire__frame__free_unpacked(f, NULL);
	return kind;
}

static void seal_request(nkpi_session *ini, const char *msg, uint8_t **frame, size_t *len)
{
	cr_assert_eq(nkpi_session_seal_request(ini, (const uint8_t *)msg, strlen(msg), frame, len),
		     NKP_OK);
}

/* The responder opens `req`, checks it carries `want`, and answers `reply`. */
static void serve(nkpi_session *rsp, const uint8_t *req, size_t reqlen, const char *want,
		  const char *reply, uint8_t **frame, size_t *len)
{
	uint8_t buf[BUF_CAP];
	size_t n = 0;
	nkpi_session_reply rk;

	cr_assert_eq(nkpi_session_open_request(rsp, req, reqlen, buf, sizeof(buf), &n, &rk),
		     NKP_OK);
	cr_assert_eq(n, strlen(want));
	cr_assert_eq(memcmp(buf, want, n), 0);
	cr_assert_eq(nkpi_session_seal_reply(rsp, &rk, (const uint8_t *)reply, strlen(reply), frame,
					     len),
		     NKP_OK);
	cr_assert_null(rk.k, "the reply key is given back");
	sodium_memzero(buf, sizeof(buf));
}

/* The initiator opens `rep` and checks it carries `want`. */
static void take_reply(nkpi_session *ini, const uint8_t *rep, size_t replen, const char *want)
{
	uint8_t buf[BUF_CAP];
	size_t n = 0;

	cr_assert_eq(nkpi_session_open_reply(ini, rep, replen, buf, sizeof(buf), &n, NULL, NULL, 0),
		     NKP_OK);
	cr_assert_eq(n, strlen(want));
	cr_assert_eq(memcmp(buf, want, n), 0);
}

/* One full exchange; returns the request's frame kind (the reply's is the same). */
static Nkp__Wire__Frame__KindCase exchange(pair *p, const char *msg, const char *reply)
{
	uint8_t *req, *rep;
	size_t reqlen, replen;
	Nkp__Wire__Frame__KindCase kind;

	seal_request(p->ini, msg, &req, &reqlen);
	kind = frame_kind(req, reqlen);
	serve(p->rsp, req, reqlen, msg, reply, &rep, &replen);
	cr_assert_eq(frame_kind(rep, replen), kind, "a reply is sealed as its request");
	take_reply(p->ini, rep, replen, reply);
	free(req);
	free(rep);
	return kind;
}

/* A responder call that must fail and leave nothing set. */
static nkp_err open_request_err(nkpi_session *rsp, const uint8_t *frame, size_t len)
{
	uint8_t buf[BUF_CAP];
	size_t n = 12345;
	nkpi_session_reply rk;
	nkp_err err;

	memset(&rk, 0x5a, sizeof(rk));
	err = nkpi_session_open_request(rsp, frame, len, buf, sizeof(buf), &n, &rk);
	cr_assert_neq(err, NKP_OK);
	cr_assert_eq(n, 12345, "length written on failure");
	cr_assert_eq(rk.mode, NKPI_REPLY_NONE, "reply state set on failure");
	cr_assert_null(rk.k, "reply key kept on failure");
	return err;
}

/* An initiator call that must fail; it leaves the initiator with no session. */
static nkp_err open_reply_err(nkpi_session *ini, const uint8_t *frame, size_t len)
{
	uint8_t buf[BUF_CAP];
	size_t n = 12345;
	nkp_err err;

	err = nkpi_session_open_reply(ini, frame, len, buf, sizeof(buf), &n, NULL, NULL, 0);
	cr_assert_neq(err, NKP_OK);
	cr_assert_eq(n, 12345, "length written on failure");
	cr_assert_not(nkpi_session_established(ini), "a failed exchange keeps the session");
	return err;
}

static Nkp__Wire__SessionEnvelope *session_of(Nkp__Wire__Frame *f)
{
	cr_assert_not_null(f);
	cr_assert_eq(f->kind_case, NKP__WIRE__FRAME__KIND_SESSION);
	return f->session;
}

static bool is_refusal(nkp_err err)
{
	return err == NKP_ERR_AUTH || err == NKP_ERR_PARSE || err == NKP_ERR_REPLAY ||
	       err == NKP_ERR_SESSION || err == NKP_ERR_FORMAT_VERSION;
}

/* The initiator gets the PlainError a responder without the session sends. */
static void refuse_with_session_error(nkpi_session *ini)
{
	uint8_t *pe, buf[BUF_CAP];
	size_t pelen, n = 77;
	nkp_err peer = NKP_OK;
	char text[64] = "";

	cr_assert_eq(nkp_frame_plain_error(NKP_ERR_SESSION, "no such session", &pe, &pelen),
		     NKP_OK);
	cr_assert_eq(nkpi_session_open_reply(ini, pe, pelen, buf, sizeof(buf), &n, &peer, text,
					     sizeof(text)),
		     NKP_ERR_REFUSED);
	cr_assert_eq(peer, NKP_ERR_SESSION);
	cr_assert_str_eq(text, "no such session");
	cr_assert_eq(n, 77);
	cr_assert_not(nkpi_session_established(ini));
	free(pe);
}

/* --- establishing and using a session ----------------------------------- */

Test(session, first_exchange_is_channel_sealed_and_later_ones_are_session_frames, .init = setup,
     .fini = teardown)
{
	cr_assert_not(nkpi_session_established(P.ini));
	cr_assert_not(nkpi_session_established(P.rsp));
	cr_assert_eq(exchange(&P, "status?", "boot nonce 1, generation 0"),
		     NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert(nkpi_session_established(P.ini));
	cr_assert(nkpi_session_established(P.rsp));
	cr_assert_eq(exchange(&P, "push: generation 1", "applied 1"),
		     NKP__WIRE__FRAME__KIND_SESSION);
	cr_assert_eq(exchange(&P, "", ""), NKP__WIRE__FRAME__KIND_SESSION, "empty messages too");
	cr_assert(nkpi_session_established(P.ini));
	cr_assert(nkpi_session_established(P.rsp));
}

Test(session, many_exchanges_in_a_row_count_up_in_one_session, .init = setup, .fini = teardown)
{
	uint8_t id[NKPI_SESSION_ID_BYTES];

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	for (uint64_t i = 0; i < 100; i++) {
		uint8_t *req, *rep;
		size_t reqlen, replen;
		char msg[64], ans[64];
		Nkp__Wire__Frame *fq, *fp;

		snprintf(msg, sizeof(msg), "heartbeat %llu", (unsigned long long)i);
		snprintf(ans, sizeof(ans), "alive %llu", (unsigned long long)i);
		seal_request(P.ini, msg, &req, &reqlen);
		serve(P.rsp, req, reqlen, msg, ans, &rep, &replen);
		take_reply(P.ini, rep, replen, ans);
		fq = nkp__wire__frame__unpack(NULL, reqlen, req);
		fp = nkp__wire__frame__unpack(NULL, replen, rep);
		cr_assert_eq(session_of(fq)->counter, i, "request %llu", (unsigned long long)i);
		cr_assert_eq(session_of(fp)->counter, i, "reply %llu", (unsigned long long)i);
		cr_assert_not(fq->session->reply);
		cr_assert(fp->session->reply);
		cr_assert_eq(fq->session->session_id.len, sizeof(id));
		if (i == 0) {
			memcpy(id, fq->session->session_id.data, sizeof(id));
		}
		cr_assert_eq(memcmp(fq->session->session_id.data, id, sizeof(id)), 0);
		cr_assert_eq(memcmp(fp->session->session_id.data, id, sizeof(id)), 0);
		nkp__wire__frame__free_unpacked(fq, NULL);
		nkp__wire__frame__free_unpacked(fp, NULL);
		free(req);
		free(rep);
	}
}

Test(session, session_frames_are_smaller_than_channel_sealed_ones, .init = setup, .fini = teardown)
{
	static const char msg[] = "push: providers p1 v1 v2, generation 9";
	static const char ans[] = "applied generation 9";
	uint8_t *req[2], *rep[2];
	size_t reqlen[2], replen[2];

	for (int i = 0; i < 2; i++) {
		seal_request(P.ini, msg, &req[i], &reqlen[i]);
		serve(P.rsp, req[i], reqlen[i], msg, ans, &rep[i], &replen[i]);
		take_reply(P.ini, rep[i], replen[i], ans);
	}
	cr_assert_eq(frame_kind(req[0], reqlen[0]), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(frame_kind(req[1], reqlen[1]), NKP__WIRE__FRAME__KIND_SESSION);
	/* No sender, recipient or ephemeral key and no nonce: 3 * 32 + 24
	 * bytes of keys and nonce against a 16-byte id and a counter. */
	cr_assert_geq(reqlen[0], reqlen[1] + 96, "%zu vs %zu", reqlen[0], reqlen[1]);
	cr_assert_geq(replen[0], replen[1] + 96, "%zu vs %zu", replen[0], replen[1]);
	for (int i = 0; i < 2; i++) {
		free(req[i]);
		free(rep[i]);
	}
}

Test(session, plaintext_never_appears_in_any_frame, .init = setup, .fini = teardown)
{
	uint8_t pattern[64];
	uint8_t buf[BUF_CAP];

	for (size_t i = 0; i < sizeof(pattern); i++) {
		pattern[i] = (uint8_t)(0xa0 ^ (i * 7));
	}
	for (int i = 0; i < 10; i++) {
		uint8_t *frames[2];
		size_t lens[2], n = 0;
		nkpi_session_reply rk;

		cr_assert_eq(nkpi_session_seal_request(P.ini, pattern, sizeof(pattern), &frames[0],
						       &lens[0]),
			     NKP_OK);
		cr_assert_eq(nkpi_session_open_request(P.rsp, frames[0], lens[0], buf, sizeof(buf),
						       &n, &rk),
			     NKP_OK);
		cr_assert_eq(n, sizeof(pattern));
		cr_assert_eq(memcmp(buf, pattern, n), 0);
		cr_assert_eq(nkpi_session_seal_reply(P.rsp, &rk, pattern, sizeof(pattern),
						     &frames[1], &lens[1]),
			     NKP_OK);
		cr_assert_eq(nkpi_session_open_reply(P.ini, frames[1], lens[1], buf, sizeof(buf),
						     &n, NULL, NULL, 0),
			     NKP_OK);
		cr_assert_eq(memcmp(buf, pattern, n), 0);
		for (int f = 0; f < 2; f++) {
			/* Not the message, nor any 8-byte run of it. */
			for (size_t at = 0; at + 8 <= lens[f]; at++) {
				for (size_t k = 0; k + 8 <= sizeof(pattern); k++) {
					cr_assert_neq(memcmp(frames[f] + at, pattern + k, 8), 0,
						      "exchange %d frame %d offset %zu", i, f, at);
				}
			}
			free(frames[f]);
		}
	}
	cr_assert(nkpi_session_established(P.ini));
}

/* --- replays and stale frames ------------------------------------------- */

Test(session, replayed_request_is_refused_and_the_responder_still_answers, .init = setup,
     .fini = teardown)
{
	uint8_t *req, *rep;
	size_t reqlen, replen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "rotate: stage v2", &req, &reqlen);
	serve(P.rsp, req, reqlen, "rotate: stage v2", "staged", &rep, &replen);
	take_reply(P.ini, rep, replen, "staged");
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_REPLAY);
	cr_assert(nkpi_session_established(P.rsp), "a replay does not end the session");
	cr_assert_eq(exchange(&P, "rotate: promote v2", "promoted"),
		     NKP__WIRE__FRAME__KIND_SESSION);
	/* Still a replay two exchanges later. */
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_REPLAY);
	cr_assert_eq(exchange(&P, "status?", "ok"), NKP__WIRE__FRAME__KIND_SESSION);
	free(req);
	free(rep);
}

Test(session, old_reply_is_refused_and_the_initiator_starts_over, .init = setup,
     .fini = teardown)
{
	uint8_t *req, *rep, *old_rep;
	size_t reqlen, replen, old_replen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1", &req, &reqlen);
	serve(P.rsp, req, reqlen, "push 1", "applied 1", &old_rep, &old_replen);
	take_reply(P.ini, old_rep, old_replen, "applied 1");
	free(req);

	seal_request(P.ini, "push 2", &req, &reqlen);
	serve(P.rsp, req, reqlen, "push 2", "applied 2", &rep, &replen);
	cr_assert_eq(open_reply_err(P.ini, old_rep, old_replen), NKP_ERR_REPLAY);
	free(req);
	free(old_rep);

	cr_assert_eq(exchange(&P, "hello again", "hi"), NKP__WIRE__FRAME__KIND_SEALED,
		     "after a failed exchange the next request makes a new session");
	cr_assert(nkpi_session_established(P.rsp));
	free(rep);

	/* The same reply twice: the second finds no exchange in flight. */
	seal_request(P.ini, "push 3", &req, &reqlen);
	cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SESSION);
	serve(P.rsp, req, reqlen, "push 3", "applied 3", &rep, &replen);
	take_reply(P.ini, rep, replen, "applied 3");
	cr_assert_eq(open_reply_err(P.ini, rep, replen), NKP_ERR_STATE);
	free(req);
	free(rep);
	cr_assert_eq(exchange(&P, "push 4", "applied 4"), NKP__WIRE__FRAME__KIND_SEALED);
}

Test(session, every_flipped_bit_of_a_session_request_is_refused_and_changes_nothing,
     .init = setup, .fini = teardown)
{
	uint8_t *req, *rep;
	size_t reqlen, replen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 1", "applied 1"), NKP__WIRE__FRAME__KIND_SESSION);
	seal_request(P.ini, "push 2: providers p1 v1", &req, &reqlen);
	for (size_t i = 0; i < reqlen; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			nkp_err err;

			req[i] ^= (uint8_t)(1u << bit);
			err = open_request_err(P.rsp, req, reqlen);
			cr_assert(is_refusal(err), "byte %zu bit %u: %s", i, bit,
				  nkp_strerror(err));
			req[i] ^= (uint8_t)(1u << bit);
		}
	}
	serve(P.rsp, req, reqlen, "push 2: providers p1 v1", "applied 2", &rep, &replen);
	take_reply(P.ini, rep, replen, "applied 2");
	free(req);
	free(rep);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SESSION);
}

Test(session, every_truncation_of_a_session_request_is_refused_and_changes_nothing,
     .init = setup, .fini = teardown)
{
	uint8_t *req, *rep, *copy;
	size_t reqlen, replen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1: providers p1 v1", &req, &reqlen);
	for (size_t n = 0; n < reqlen; n++) {
		nkp_err err;

		/* An exact-size copy, so ASan sees any read past the end. */
		copy = malloc(n > 0 ? n : 1);
		memcpy(copy, req, n);
		err = open_request_err(P.rsp, copy, n);
		cr_assert(is_refusal(err), "length %zu: %s", n, nkp_strerror(err));
		free(copy);
	}
	serve(P.rsp, req, reqlen, "push 1: providers p1 v1", "applied 1", &rep, &replen);
	take_reply(P.ini, rep, replen, "applied 1");
	free(req);
	free(rep);
}

Test(session, every_flipped_byte_of_a_session_reply_is_refused, .init = setup,
     .fini = teardown)
{
	size_t replen = 0;

	for (size_t i = 0; i == 0 || i < replen; i++) {
		uint8_t *req, *rep;
		size_t reqlen;
		nkp_err err;

		cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
		seal_request(P.ini, "status?", &req, &reqlen);
		serve(P.rsp, req, reqlen, "status?", "generation 5", &rep, &replen);
		rep[i] ^= (uint8_t)(1u << (i % 8));
		err = open_reply_err(P.ini, rep, replen);
		cr_assert(is_refusal(err), "byte %zu: %s", i, nkp_strerror(err));
		free(req);
		free(rep);
	}
}

/* A channel-sealed frame carries no counter: freshness of a handshake is
 * the job of the messages inside (challenges, generations). A replayed
 * handshake costs at most one exchange, and never yields a usable key. */
Test(session, replayed_handshake_frames_cost_at_most_one_exchange, .init = setup,
     .fini = teardown)
{
	uint8_t *hs_req, *hs_rep, *req, *rep;
	size_t hs_reqlen, hs_replen, reqlen, replen;

	seal_request(P.ini, "hello", &hs_req, &hs_reqlen);
	serve(P.rsp, hs_req, hs_reqlen, "hello", "hi", &hs_rep, &hs_replen);
	take_reply(P.ini, hs_rep, hs_replen, "hi");
	cr_assert_eq(exchange(&P, "push 1", "applied 1"), NKP__WIRE__FRAME__KIND_SESSION);

	/* The old handshake request again: the responder answers it with a
	 * session nobody else holds, and drops the live one. */
	serve(P.rsp, hs_req, hs_reqlen, "hello", "hi", &rep, &replen);
	free(rep);
	seal_request(P.ini, "push 2", &req, &reqlen);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_SESSION);
	refuse_with_session_error(P.ini);
	free(req);
	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);

	/* The old handshake reply to a new handshake: what it makes on the
	 * initiator's side is a session the responder does not hold. */
	nkpi_session_reset(P.ini);
	seal_request(P.ini, "hello again", &req, &reqlen);
	free(req);
	take_reply(P.ini, hs_rep, hs_replen, "hi");
	seal_request(P.ini, "push 3", &req, &reqlen);
	cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SESSION);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_SESSION);
	refuse_with_session_error(P.ini);
	free(req);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 4", "applied 4"), NKP__WIRE__FRAME__KIND_SESSION);
	free(hs_req);
	free(hs_rep);
}

/* --- restarts and expiry ------------------------------------------------ */

Test(session, restarted_responder_refuses_session_frames_and_a_new_handshake_recovers,
     .init = setup, .fini = teardown)
{
	uint8_t *req;
	size_t reqlen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 1", "applied 1"), NKP__WIRE__FRAME__KIND_SESSION);
	nkpi_session_free(P.rsp);
	cr_assert_eq(nkpi_session_new(P.to_svc, true, &P.rsp), NKP_OK);
	cr_assert_not(nkpi_session_established(P.rsp));

	seal_request(P.ini, "push 2", &req, &reqlen);
	cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SESSION);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_SESSION);
	refuse_with_session_error(P.ini);
	free(req);

	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SESSION);
}

Test(session, initiator_makes_a_new_session_after_its_maximum_age, .init = setup,
     .fini = teardown)
{
	const uint64_t age_ms = NKPI_SESSION_MAX_AGE_S * 1000u;

	nkpi_session_set_clock_ms(T0_MS);
	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	nkpi_session_set_clock_ms(T0_MS + age_ms - 1);
	cr_assert_eq(exchange(&P, "push 1", "applied 1"), NKP__WIRE__FRAME__KIND_SESSION);
	nkpi_session_set_clock_ms(T0_MS + age_ms);
	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);
	nkpi_session_set_clock_ms(T0_MS + 2 * age_ms - 1);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SESSION);
}

Test(session, responder_forgets_a_session_after_its_age, .init = setup, .fini = teardown)
{
	const uint64_t age_ms = NKPI_SESSION_RESPONDER_AGE_S * 1000u;
	uint8_t *req, *rep;
	size_t reqlen, replen;

	nkpi_session_set_clock_ms(T0_MS);
	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);

	/* The initiator's clock stays under its own age; only the
	 * responder's moves on. */
	seal_request(P.ini, "push 1", &req, &reqlen);
	nkpi_session_set_clock_ms(T0_MS + age_ms - 1);
	serve(P.rsp, req, reqlen, "push 1", "applied 1", &rep, &replen);
	nkpi_session_set_clock_ms(T0_MS);
	take_reply(P.ini, rep, replen, "applied 1");
	free(req);
	free(rep);

	seal_request(P.ini, "push 2", &req, &reqlen);
	cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SESSION);
	nkpi_session_set_clock_ms(T0_MS + age_ms);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_SESSION);
	cr_assert_not(nkpi_session_established(P.rsp), "an expired session is forgotten");
	nkpi_session_set_clock_ms(T0_MS);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_SESSION,
		     "and stays forgotten");
	refuse_with_session_error(P.ini);
	free(req);
	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SESSION);
}

Test(session, reset_makes_the_next_exchange_channel_sealed, .init = setup, .fini = teardown)
{
	uint8_t *old_req, *rep;
	size_t old_reqlen, replen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1", &old_req, &old_reqlen);
	serve(P.rsp, old_req, old_reqlen, "push 1", "applied 1", &rep, &replen);
	take_reply(P.ini, rep, replen, "applied 1");
	free(rep);

	nkpi_session_reset(P.ini);
	cr_assert_not(nkpi_session_established(P.ini));
	cr_assert(nkpi_session_established(P.rsp));
	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "push 3", "applied 3"), NKP__WIRE__FRAME__KIND_SESSION);
	/* The responder dropped the old session for the new one. */
	cr_assert_eq(open_request_err(P.rsp, old_req, old_reqlen), NKP_ERR_SESSION);
	free(old_req);

	nkpi_session_reset(P.rsp);
	cr_assert_not(nkpi_session_established(P.rsp));
	nkpi_session_reset(NULL);
}

/* --- frames in the wrong place ------------------------------------------ */

Test(session, frame_of_one_session_does_not_open_in_another, .init = setup, .fini = teardown)
{
	pair q, r;
	uint8_t *req, *rep, *q_req, *q_rep;
	size_t reqlen, replen, q_reqlen, q_replen;

	pair_new(&q); /* another service and host */
	/* The same service to another host. */
	cr_assert_eq(nkp_identity_from_key(nkp_identity_secret(P.svc), &r.svc), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&r.host), NKP_OK);
	pair_make(&r, r.svc, r.host);
	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&q, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&r, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);

	seal_request(P.ini, "for host P", &req, &reqlen);
	cr_assert_eq(open_request_err(q.rsp, req, reqlen), NKP_ERR_SESSION);
	cr_assert_eq(open_request_err(r.rsp, req, reqlen), NKP_ERR_SESSION);
	seal_request(q.ini, "for host Q", &q_req, &q_reqlen);
	serve(q.rsp, q_req, q_reqlen, "for host Q", "from host Q", &q_rep, &q_replen);
	serve(P.rsp, req, reqlen, "for host P", "from host P", &rep, &replen);
	/* Both at counter 0 of their sessions: the id still tells them apart. */
	cr_assert_eq(open_reply_err(P.ini, q_rep, q_replen), NKP_ERR_REPLAY);
	cr_assert_eq(open_reply_err(q.ini, rep, replen), NKP_ERR_REPLAY);
	free(req);
	free(rep);
	free(q_req);
	free(q_rep);

	/* A host's first exchange with the wrong service is refused too. */
	seal_request(q.ini, "from the wrong service", &req, &reqlen);
	cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(open_request_err(P.rsp, req, reqlen), NKP_ERR_UNTRUSTED_PEER);
	free(req);
	cr_assert_eq(exchange(&P, "still here", "yes"), NKP__WIRE__FRAME__KIND_SEALED);
	cr_assert_eq(exchange(&P, "still here", "yes"), NKP__WIRE__FRAME__KIND_SESSION);
	pair_free(&q);
	pair_free(&r);
}

Test(session, reply_sent_as_request_and_request_taken_as_reply_are_refused, .init = setup,
     .fini = teardown)
{
	uint8_t *req, *rep;
	size_t reqlen, replen;

	/* Channel-sealed: the initiator's own request is not from the host. */
	seal_request(P.ini, "hello", &req, &reqlen);
	cr_assert_eq(open_reply_err(P.ini, req, reqlen), NKP_ERR_UNTRUSTED_PEER);
	free(req);

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1", &req, &reqlen);
	serve(P.rsp, req, reqlen, "push 1", "applied 1", &rep, &replen);
	cr_assert_eq(open_request_err(P.rsp, rep, replen), NKP_ERR_PARSE);
	take_reply(P.ini, rep, replen, "applied 1");
	free(req);
	free(rep);

	seal_request(P.ini, "push 2", &req, &reqlen);
	cr_assert_eq(open_reply_err(P.ini, req, reqlen), NKP_ERR_REPLAY);
	free(req);
	cr_assert_eq(exchange(&P, "push 2", "applied 2"), NKP__WIRE__FRAME__KIND_SEALED);
}

/* Unpacks a session frame, lets `edit` change its envelope, packs it again
 * with `extra` raw bytes appended inside the envelope. */
static void reframe(const uint8_t *frame, size_t len,
		    void (*edit)(Nkp__Wire__SessionEnvelope *), const uint8_t *extra,
		    size_t extralen, uint8_t **out, size_t *outlen)
{
	Nkp__Wire__Frame *f = nkp__wire__frame__unpack(NULL, len, frame);

	session_of(f);
	if (edit != NULL) {
		edit(f->session);
	}
	/* 0x1a: field 3 (session), length-delimited */
	frame_pack_envelope(0x1a, &f->session->base, extra, extralen, out, outlen);
	nkp__wire__frame__free_unpacked(f, NULL);
}

static void set_version_2(Nkp__Wire__SessionEnvelope *env)
{
	env->protocol_version = 2;
}

static void set_version_0(Nkp__Wire__SessionEnvelope *env)
{
	env->protocol_version = 0;
}

static void short_id(Nkp__Wire__SessionEnvelope *env)
{
	env->session_id.len--;
}

static void short_ciphertext(Nkp__Wire__SessionEnvelope *env)
{
	env->ciphertext.len = NKP_TAG_BYTES - 1;
}

static void next_counter(Nkp__Wire__SessionEnvelope *env)
{
	env->counter++;
}

Test(session, other_protocol_versions_and_malformed_envelopes_are_refused_as_such,
     .init = setup, .fini = teardown)
{
	static const uint8_t new_field[] = {0x78, 0x01}; /* field 15, varint 1 */
	struct {
		void (*edit)(Nkp__Wire__SessionEnvelope *);
		const uint8_t *extra;
		size_t extralen;
		nkp_err want;
	} cases[] = {
		{set_version_2, NULL, 0, NKP_ERR_FORMAT_VERSION},
		{set_version_0, NULL, 0, NKP_ERR_FORMAT_VERSION},
		{set_version_2, new_field, sizeof(new_field), NKP_ERR_FORMAT_VERSION},
		{NULL, new_field, sizeof(new_field), NKP_ERR_PARSE},
		{short_id, NULL, 0, NKP_ERR_PARSE},
		{short_ciphertext, NULL, 0, NKP_ERR_PARSE},
		{next_counter, NULL, 0, NKP_ERR_REPLAY},
	};
	uint8_t *req, *rep, *v;
	size_t reqlen, replen, vlen;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1", &req, &reqlen);
	reframe(req, reqlen, NULL, NULL, 0, &v, &vlen);
	cr_assert_eq(vlen, reqlen, "the test helper reframes faithfully");
	cr_assert_eq(memcmp(v, req, reqlen), 0);
	free(v);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		reframe(req, reqlen, cases[i].edit, cases[i].extra, cases[i].extralen, &v, &vlen);
		cr_assert_eq(open_request_err(P.rsp, v, vlen), cases[i].want, "request case %zu",
			     i);
		free(v);
	}
	serve(P.rsp, req, reqlen, "push 1", "applied 1", &rep, &replen);
	take_reply(P.ini, rep, replen, "applied 1");
	free(req);
	free(rep);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		seal_request(P.ini, "push", &req, &reqlen);
		cr_assert_eq(frame_kind(req, reqlen), NKP__WIRE__FRAME__KIND_SESSION);
		serve(P.rsp, req, reqlen, "push", "applied", &rep, &replen);
		reframe(rep, replen, cases[i].edit, cases[i].extra, cases[i].extralen, &v, &vlen);
		cr_assert_eq(open_reply_err(P.ini, v, vlen), cases[i].want, "reply case %zu", i);
		free(v);
		free(req);
		free(rep);
		cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	}
}

Test(session, channel_open_and_frame_sender_refuse_session_frames, .init = setup,
     .fini = teardown)
{
	uint8_t *req, *msg = NULL, sender[NKP_PUBKEY_BYTES], before[NKP_PUBKEY_BYTES];
	size_t reqlen, msglen = 5;

	cr_assert_eq(exchange(&P, "hello", "hi"), NKP__WIRE__FRAME__KIND_SEALED);
	seal_request(P.ini, "push 1", &req, &reqlen);
	cr_assert_eq(nkp_channel_open(P.to_svc, req, reqlen, &msg, &msglen, NULL, NULL, 0),
		     NKP_ERR_SESSION);
	cr_assert_null(msg);
	cr_assert_eq(msglen, 5);
	memset(sender, 0x3c, sizeof(sender));
	memcpy(before, sender, sizeof(sender));
	cr_assert_eq(nkp_frame_sender(req, reqlen, sender), NKP_ERR_SESSION);
	cr_assert_eq(memcmp(sender, before, sizeof(sender)), 0);
	free(req);
}

Test(session, bad_arguments_and_small_buffers_are_refused, .init = setup, .fini = teardown)
{
	uint8_t *req, *rep, small[4], buf[BUF_CAP];
	size_t reqlen, replen, n = 9;
	nkpi_session *s = (nkpi_session *)0x1;
	nkpi_session_reply rk;

	cr_assert_eq(nkpi_session_new(NULL, false, &s), NKP_ERR_INVALID);
	cr_assert_eq(s, (nkpi_session *)0x1, "out-parameter written on failure");
	cr_assert_eq(nkpi_session_new(P.to_host, false, NULL), NKP_ERR_INVALID);
	cr_assert_eq(nkpi_session_seal_request(P.rsp, (const uint8_t *)"x", 1, &req, &reqlen),
		     NKP_ERR_INVALID, "a responder does not initiate");
	cr_assert_eq(nkpi_session_seal_request(P.ini, NULL, 1, &req, &reqlen), NKP_ERR_INVALID);
	buf[0] = 0x1a; /* a session envelope's tag, and nothing after it */
	cr_assert_eq(open_reply_err(P.ini, buf, 1), NKP_ERR_PARSE);
	cr_assert_eq(open_reply_err(P.ini, NULL, 0), NKP_ERR_PARSE);

	seal_request(P.ini, "a request longer than four bytes", &req, &reqlen);
	cr_assert_eq(nkpi_session_open_request(P.ini, req, reqlen, buf, sizeof(buf), &n, &rk),
		     NKP_ERR_INVALID, "an initiator does not answer");
	cr_assert_eq(nkpi_session_open_request(P.rsp, req, reqlen, small, sizeof(small), &n, &rk),
		     NKP_ERR_TOO_LARGE);
	cr_assert_eq(n, 9);
	serve(P.rsp, req, reqlen, "a request longer than four bytes", "a long enough reply", &rep,
	      &replen);
	cr_assert_eq(nkpi_session_open_reply(P.ini, rep, replen, small, sizeof(small), &n, NULL,
					     NULL, 0),
		     NKP_ERR_TOO_LARGE);
	cr_assert_not(nkpi_session_established(P.ini));
	free(req);
	free(rep);

	/* A wiped reply state seals nothing. */
	memset(&rk, 0, sizeof(rk));
	req = NULL;
	cr_assert_eq(nkpi_session_seal_reply(P.rsp, &rk, (const uint8_t *)"x", 1, &req, &reqlen),
		     NKP_ERR_STATE);
	cr_assert_null(req);
	nkpi_session_reply_wipe(NULL);
	nkpi_session_free(NULL);
}

/* --- known-answer vector ------------------------------------------------ */

/* session-v1.bin: four frames, each a u32 little-endian length and the
 * serialized Frame (tests/vectors/session-v1.txt). */
#define KAT_FRAMES 4

typedef struct {
	uint8_t *frame[KAT_FRAMES];
	size_t len[KAT_FRAMES];
} kat_frames;

static const char *const kat_msg_keys[KAT_FRAMES] = {"request_1", "reply_1", "request_2",
						     "reply_2"};

static void kat_pack(const kat_frames *k, uint8_t **out, size_t *outlen)
{
	size_t total = 0, n = 0;
	uint8_t *buf;

	for (int i = 0; i < KAT_FRAMES; i++) {
		total += 4 + k->len[i];
	}
	buf = malloc(total);
	cr_assert_not_null(buf);
	for (int i = 0; i < KAT_FRAMES; i++) {
		nkpi_store32_le(buf + n, (uint32_t)k->len[i]);
		memcpy(buf + n + 4, k->frame[i], k->len[i]);
		n += 4 + k->len[i];
	}
	*out = buf;
	*outlen = total;
}

/* Points k's frames into buf (no copies). */
static void kat_unpack(const uint8_t *buf, size_t len, kat_frames *k)
{
	size_t n = 0;

	for (int i = 0; i < KAT_FRAMES; i++) {
		uint32_t flen;

		cr_assert_leq(4, len - n, "frame %d: no length", i);
		flen = (uint32_t)buf[n] | (uint32_t)buf[n + 1] << 8 | (uint32_t)buf[n + 2] << 16 |
		       (uint32_t)buf[n + 3] << 24;
		cr_assert_leq(flen, len - n - 4, "frame %d: past the end", i);
		k->frame[i] = (uint8_t *)buf + n + 4;
		k->len[i] = flen;
		n += 4 + flen;
	}
	cr_assert_eq(n, len, "bytes after the last frame");
}

static nkp_identity *kat_identity(const char *key)
{
	uint8_t secret[NKP_KEY_BYTES];
	nkp_identity *id;
	nkp_key *k;

	vec_hex(key, secret, sizeof(secret));
	cr_assert_eq(nkp_key_from_bytes(secret, &k), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(k, &id), NKP_OK);
	nkp_key_free(k);
	sodium_memzero(secret, sizeof(secret));
	return id;
}

static void kat_msg(int i, char *out, size_t size)
{
	vec_str(kat_msg_keys[i], out, size);
}

/* The four frames with the library, RNG draws counted from 0 at the first seal. */
static void kat_generate(pair *p, kat_frames *k)
{
	char m[KAT_FRAMES][256];

	for (int i = 0; i < KAT_FRAMES; i++) {
		kat_msg(i, m[i], sizeof(m[i]));
	}
	rng_calls = 0;
	for (int x = 0; x < 2; x++) {
		seal_request(p->ini, m[2 * x], &k->frame[2 * x], &k->len[2 * x]);
		serve(p->rsp, k->frame[2 * x], k->len[2 * x], m[2 * x], m[2 * x + 1],
		      &k->frame[2 * x + 1], &k->len[2 * x + 1]);
		take_reply(p->ini, k->frame[2 * x + 1], k->len[2 * x + 1], m[2 * x + 1]);
	}
	cr_assert_eq(rng_calls, 4, "draws: e, request nonce, e_h, reply nonce");
}

static void blake2b(uint8_t *out, size_t outlen, const uint8_t *const *parts,
		    const size_t *lens, size_t n)
{
	crypto_generichash_state st;

	cr_assert_eq(crypto_generichash_init(&st, NULL, 0, outlen), 0);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(crypto_generichash_update(&st, parts[i], lens[i]), 0);
	}
	cr_assert_eq(crypto_generichash_final(&st, out, outlen), 0);
}

/* Channel key of a message from (x, X) with ephemeral e to R; opens `env`
 * with it, following include/nkp/channel.h, and checks it carries `want`. */
static void kat_channel_key(uint8_t k[32], const uint8_t e[32], const uint8_t x[32],
			    const uint8_t *X, const uint8_t *R, const Nkp__Wire__Envelope *env,
			    const char *want)
{
	uint8_t E[32], dh1[32], dh2[32], ad[14 + 4 + 96], pt[256];
	const uint8_t *parts[] = {(const uint8_t *)"nkp-channel-v1", dh1, dh2, E, X, R};
	const size_t lens[] = {14, 32, 32, 32, 32, 32};

	cr_assert_eq(crypto_scalarmult_base(E, e), 0);
	cr_assert_eq(env->ephemeral.len, 32);
	cr_assert_eq(memcmp(env->ephemeral.data, E, 32), 0, "ephemeral key is not the draw");
	cr_assert_eq(crypto_scalarmult(dh1, e, R), 0);
	cr_assert_eq(crypto_scalarmult(dh2, x, R), 0);
	blake2b(k, 32, parts, lens, 6);
	memcpy(ad, "nkp-channel-v1\x01\x00\x00\x00", 18);
	memcpy(ad + 18, X, 32);
	memcpy(ad + 50, R, 32);
	memcpy(ad + 82, E, 32);
	cr_assert_leq(env->ciphertext.len, sizeof(pt));
	cr_assert_eq(crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL,
								env->ciphertext.data,
								env->ciphertext.len, ad, sizeof(ad),
								env->nonce.data, k),
		     0);
	cr_assert_eq(env->ciphertext.len - 16, strlen(want));
	cr_assert_eq(memcmp(pt, want, strlen(want)), 0);
}

static void kat_session_open(const Nkp__Wire__SessionEnvelope *env, const uint8_t ck[32],
			     const uint8_t id[16], bool reply, const char *want)
{
	uint8_t k[32], want_k[32], ad[14 + 4 + 16 + 9], nonce[24] = {0}, pt[256];

	crypto_kdf_derive_from_key(k, 32, reply ? 2 : 1, "nkpsess1", ck);
	if (regen_vectors()) {
		print_hex(reply ? "k_rep_0" : "k_req_0", k, 32);
	}
	vec_hex(reply ? "k_rep_0" : "k_req_0", want_k, 32);
	cr_assert_eq(memcmp(k, want_k, 32), 0, "%s", reply ? "k_rep_0" : "k_req_0");
	cr_assert_eq(env->protocol_version, vec_u64("protocol_version"));
	cr_assert_eq(env->counter, 0);
	cr_assert_eq(env->reply, reply);
	cr_assert_eq(env->session_id.len, 16);
	cr_assert_eq(memcmp(env->session_id.data, id, 16), 0);
	memcpy(ad, "nkp-session-v1\x01\x00\x00\x00", 18);
	memcpy(ad + 18, id, 16);
	memset(ad + 34, 0, 8);
	ad[42] = reply ? 1 : 0;
	memcpy(nonce, ad + 34, 9);
	cr_assert_leq(env->ciphertext.len, sizeof(pt));
	cr_assert_eq(crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL,
								env->ciphertext.data,
								env->ciphertext.len, ad, sizeof(ad),
								nonce, k),
		     0);
	cr_assert_eq(env->ciphertext.len - 16, strlen(want));
	cr_assert_eq(memcmp(pt, want, strlen(want)), 0);
}

/* Opens the checked-in frames with libsodium alone, following the
 * construction documented in nkp/session.h. */
static void kat_decode(const kat_frames *k)
{
	uint8_t s[32], h[32], S[32], H[32], e[32], e_h[32], E[32], E_h[32], ee[32];
	uint8_t k_req[32], k_rep[32], root[32], id[16], want[32];
	const uint8_t *root_parts[] = {(const uint8_t *)"nkp-session-v1", ee, k_req, k_rep, E, E_h};
	const size_t root_lens[] = {14, 32, 32, 32, 32, 32};
	const uint8_t *id_parts[] = {(const uint8_t *)"nkp-session-id", E, E_h};
	const size_t id_lens[] = {14, 32, 32};
	Nkp__Wire__Frame *f[KAT_FRAMES];
	char m[KAT_FRAMES][256];

	for (int i = 0; i < KAT_FRAMES; i++) {
		kat_msg(i, m[i], sizeof(m[i]));
		f[i] = nkp__wire__frame__unpack(NULL, k->len[i], k->frame[i]);
		cr_assert_not_null(f[i]);
		cr_assert_eq(f[i]->kind_case, i < 2 ? NKP__WIRE__FRAME__KIND_SEALED
						    : NKP__WIRE__FRAME__KIND_SESSION);
	}
	vec_hex("service_secret", s, 32);
	vec_hex("host_secret", h, 32);
	cr_assert_eq(crypto_scalarmult_base(S, s), 0);
	cr_assert_eq(crypto_scalarmult_base(H, h), 0);
	rng_calls = 0;
	det_buf(e, 32);
	rng_calls = 2;
	det_buf(e_h, 32);
	cr_assert_eq(crypto_scalarmult_base(E, e), 0);
	cr_assert_eq(crypto_scalarmult_base(E_h, e_h), 0);
	kat_channel_key(k_req, e, s, S, H, f[0]->sealed, m[0]);
	kat_channel_key(k_rep, e_h, h, H, S, f[1]->sealed, m[1]);
	cr_assert_eq(crypto_scalarmult(ee, e, E_h), 0);
	blake2b(root, 32, root_parts, root_lens, 6);
	blake2b(id, 16, id_parts, id_lens, 3);
	if (regen_vectors()) {
		print_hex("root_key", root, 32);
		print_hex("session_id", id, 16);
	}
	vec_hex("root_key", want, 32);
	cr_assert_eq(memcmp(root, want, 32), 0, "root key");
	vec_hex("session_id", want, 16);
	cr_assert_eq(memcmp(id, want, 16), 0, "session id");
	kat_session_open(f[2]->session, root, id, false, m[2]);
	kat_session_open(f[3]->session, root, id, true, m[3]);
	for (int i = 0; i < KAT_FRAMES; i++) {
		nkp__wire__frame__free_unpacked(f[i], NULL);
	}
}

/* A fresh initiator and responder from the fixed identities open the
 * checked-in frames; their own frames are the same bytes. */
static void kat_replay(const kat_frames *k)
{
	char m[KAT_FRAMES][256];
	kat_frames mine;
	uint8_t buf[BUF_CAP];
	size_t n;
	nkpi_session_reply rk;
	pair p;

	for (int i = 0; i < KAT_FRAMES; i++) {
		kat_msg(i, m[i], sizeof(m[i]));
	}
	pair_make(&p, kat_identity("service_secret"), kat_identity("host_secret"));
	for (int x = 0; x < 2; x++) {
		int q = 2 * x, r = 2 * x + 1;

		rng_calls = 0;
		seal_request(p.ini, m[q], &mine.frame[q], &mine.len[q]);
		cr_assert_eq(mine.len[q], k->len[q]);
		cr_assert_eq(memcmp(mine.frame[q], k->frame[q], k->len[q]), 0, "frame %d", q);
		cr_assert_eq(nkpi_session_open_request(p.rsp, k->frame[q], k->len[q], buf,
						       sizeof(buf), &n, &rk),
			     NKP_OK);
		cr_assert_eq(n, strlen(m[q]));
		cr_assert_eq(memcmp(buf, m[q], n), 0);
		rng_calls = 2;
		cr_assert_eq(nkpi_session_seal_reply(p.rsp, &rk, (const uint8_t *)m[r],
						     strlen(m[r]), &mine.frame[r], &mine.len[r]),
			     NKP_OK);
		cr_assert_eq(mine.len[r], k->len[r]);
		cr_assert_eq(memcmp(mine.frame[r], k->frame[r], k->len[r]), 0, "frame %d", r);
		take_reply(p.ini, k->frame[r], k->len[r], m[r]);
	}
	for (int i = 0; i < KAT_FRAMES; i++) {
		free(mine.frame[i]);
	}
	pair_free(&p);
}

Test(session, known_answer_vector)
{
	kat_frames k;
	uint8_t *bin, *want = NULL;
	size_t binlen, wantlen = 0;
	pair p;

	vec_load("session-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	/* Before nkp_init: libsodium takes its RNG once, at start-up. */
	cr_assert_eq(randombytes_set_implementation(&det_rng), 0);
	cr_assert_eq(nkp_init(), NKP_OK);
	nkpi_session_set_clock_ms(T0_MS);
	pair_make(&p, kat_identity("service_secret"), kat_identity("host_secret"));
	kat_generate(&p, &k);
	kat_pack(&k, &bin, &binlen);
	vec_check_bin("session-v1.bin", bin, binlen);
	for (int i = 0; i < KAT_FRAMES; i++) {
		free(k.frame[i]);
	}
	pair_free(&p);
	free(bin);

	cr_assert_eq(nkp_file_read(vec_path("session-v1.bin"), 1 << 20, &want, &wantlen), NKP_OK);
	kat_unpack(want, wantlen, &k);
	kat_decode(&k);
	kat_replay(&k);
	free(want);
	free(vec_text);
	nkpi_session_set_clock_ms(0);
}
