/* The host half of the sync protocol: nkp_hostd_handle_frame and the
 * listener, driven by a fake management service. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "test-util.h"
#include "waitscale.h"

static char *dir;
static tu_service svc;

static void setup(void)
{
	nkp_log_set_sink(NULL, NULL);
	dir = tu_tmpdir();
	tu_service_new(&svc);
}

static void teardown(void)
{
	tu_service_free(&svc);
	tu_rmdir(dir);
	free(dir);
}

TestSuite(hostd_service, .init = setup, .fini = teardown);

static void assert_ack(Nkp__Wire__Message *r, uint64_t generation)
{
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK, "not acked: %s",
		     r->body_case == NKP__WIRE__MESSAGE__BODY_REFUSAL ? r->refusal->message : "?");
	cr_assert_eq(r->push_ack->applied_generation, generation);
	cr_assert_eq(r->push_ack->boot_nonce.len, 16);
}

static void assert_refused(Nkp__Wire__Message *r, nkp_err code, uint64_t applied)
{
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_REFUSAL);
	cr_assert_eq(r->refusal->code, (uint32_t)code, "code %u: %s", r->refusal->code,
		     r->refusal->message);
	cr_assert_eq(r->refusal->applied_generation, applied);
	cr_assert_eq(r->refusal->boot_nonce.len, 16);
}

static uint64_t held_generation(nkp_hostd *h, size_t *n_providers)
{
	nkp_hostd_status *st = NULL;
	uint64_t g;

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	g = st->generation;
	if (n_providers != NULL) {
		*n_providers = st->n_providers;
	}
	nkp_hostd_status_free(st);
	return g;
}

Test(hostd_service, hello_returns_status_with_boot_nonce_and_no_tpm)
{
	nkp_hostd *h = tu_host(dir, &svc);
	Nkp__Wire__Message *a = tu_hello(&svc, h), *b = tu_hello(&svc, h);

	cr_assert_eq(a->status->applied_generation, 0);
	cr_assert_not(a->status->tpm);
	cr_assert_str_eq(a->status->host_name, "h1");
	cr_assert_eq(a->status->boot_nonce.len, 16);
	cr_assert_eq(memcmp(a->status->boot_nonce.data, b->status->boot_nonce.data, 16), 0);
	tu_msg_free(a);
	tu_msg_free(b);
	nkp_hostd_close(h);
}

Test(hostd_service, each_open_draws_a_new_boot_nonce)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nkp_hostd_status *s1 = NULL, *s2 = NULL;

	cr_assert_eq(nkp_hostd_status_get(h, &s1), NKP_OK);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(nkp_hostd_status_get(h, &s2), NKP_OK);
	cr_assert_neq(memcmp(s1->boot_nonce, s2->boot_nonce, 16), 0);
	nkp_hostd_status_free(s1);
	nkp_hostd_status_free(s2);
	nkp_hostd_close(h);
}

Test(hostd_service, push_is_applied_persisted_and_survives_reopen)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	nkp_hostd_status *st = NULL;
	Nkp__Wire__Message *r;
	size_t n = 0;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 5, NULL, &p, 1);
	assert_ack(r, 5);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, &n), 5);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);

	h = tu_reopen(dir);
	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(st->generation, 5);
	cr_assert_eq(st->n_providers, 1);
	cr_assert_str_eq(st->providers[0].name, "gold");
	cr_assert_eq(memcmp(st->providers[0].id, p.id, 16), 0);
	cr_assert(st->providers[0].is_default);
	cr_assert(st->providers[0].backed_up);
	cr_assert_eq(st->providers[0].n_versions, 1);
	cr_assert_eq(st->providers[0].versions[0].state, NKP_VERSION_ACTIVE);
	nkp_hostd_status_free(st);
	r = tu_hello(&svc, h);
	cr_assert_eq(r->status->applied_generation, 5);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_service, replayed_push_is_refused_in_the_same_boot)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	size_t len = 0;
	uint8_t *frame;
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	frame = tu_push_frame(&svc, h, 3, &p, 1, &len);
	nkp_err dropped = NKP_OK;

	r = tu_raw(&svc, h, frame, len, NULL);
	assert_ack(r, 3);
	tu_msg_free(r);
	/* The same Transport again: its counter was seen; no answer. */
	cr_assert_null(tu_raw(&svc, h, frame, len, &dropped));
	cr_assert_eq(dropped, NKP_ERR_REPLAY);
	free(frame);
	cr_assert_eq(held_generation(h, NULL), 3);
	/* The session still works. */
	tu_msg_free(tu_hello(&svc, h));
	nkp_hostd_close(h);
}

Test(hostd_service, replayed_push_is_refused_after_reopen)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p, q;
	size_t len = 0;
	uint8_t *frame;
	Nkp__Wire__Message *r;
	size_t n = 0;
	nkp_err dropped = NKP_OK;

	tu_provider_init(&p, "gold", true, true);
	tu_provider_init(&q, "silver", false, true);
	/* Captured but never delivered: a higher generation than applied. */
	frame = tu_push_frame(&svc, h, 9, &q, 1, &len);
	r = tu_push(&svc, h, 2, NULL, &p, 1);
	assert_ack(r, 2);
	tu_msg_free(r);
	nkp_hostd_close(h);

	h = tu_reopen(dir);
	/* The session it was sealed under died with the old process. */
	cr_assert_null(tu_raw(&svc, h, frame, len, &dropped));
	cr_assert_eq(dropped, NKP_ERR_SESSION);
	cr_assert_eq(held_generation(h, &n), 2);
	cr_assert_eq(n, 1);
	free(frame);
	nkp_hostd_close(h);
}

Test(hostd_service, stale_generation_is_refused_and_state_kept)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p, q;
	Nkp__Wire__Message *r;
	size_t n = 0;

	tu_provider_init(&p, "gold", true, true);
	tu_provider_init(&q, "silver", false, true);
	r = tu_push(&svc, h, 7, NULL, &p, 1);
	assert_ack(r, 7);
	tu_msg_free(r);
	r = tu_push(&svc, h, 7, NULL, &q, 1);
	assert_refused(r, NKP_ERR_REPLAY, 7);
	tu_msg_free(r);
	r = tu_push(&svc, h, 6, NULL, &q, 1);
	assert_refused(r, NKP_ERR_REPLAY, 7);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, &n), 7);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);
}

Test(hostd_service, push_with_wrong_boot_nonce_is_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	uint8_t nonce[16];
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	randombytes_buf(nonce, sizeof(nonce));
	r = tu_push(&svc, h, 1, nonce, &p, 1);
	assert_refused(r, NKP_ERR_REPLAY, 0);
	cr_assert_neq(memcmp(r->refusal->boot_nonce.data, nonce, 16), 0);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, NULL), 0);
	nkp_hostd_close(h);
}

Test(hostd_service, another_service_gets_no_answer_and_no_session)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_service other;
	uint8_t *init = NULL, *reply = NULL;
	size_t ilen = 0, rlen = 0;

	tu_service_new(&other);
	cr_assert_eq(nkpi_session_new(other.id, nkp_hostd_public_key(h), false, &other.sess),
		     NKP_OK);
	/* It knows the host's public key (so mac1 passes) but not the pinned
	 * service's secret: the handshake does not authenticate. */
	cr_assert_eq(nkpi_session_handshake_init(other.sess, &init, &ilen), NKP_OK);
	cr_assert_eq(nkp_hostd_handle_frame(h, init, ilen, &reply, &rlen), NKP_ERR_AUTH);
	cr_assert_null(reply, "a stranger got an answer");
	free(init);
	cr_assert_eq(held_generation(h, NULL), 0);
	tu_service_free(&other);
	nkp_hostd_close(h);
}

Test(hostd_service, garbage_and_truncated_frames_are_refused_and_nothing_is_lost)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p, q;
	uint8_t garbage[300], *frame;
	size_t len = 0, n = 0;
	nkp_err plain = NKP_OK;
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	tu_provider_init(&q, "silver", false, true);
	r = tu_push(&svc, h, 1, NULL, &p, 1);
	assert_ack(r, 1);
	tu_msg_free(r);

	randombytes_buf(garbage, sizeof(garbage));
	cr_assert_null(tu_raw(&svc, h, garbage, sizeof(garbage), &plain));
	cr_assert_neq(plain, NKP_OK);
	plain = NKP_OK;
	cr_assert_null(tu_raw(&svc, h, garbage, 0, &plain));
	cr_assert_neq(plain, NKP_OK);

	frame = tu_push_frame(&svc, h, 2, &q, 1, &len);
	for (size_t cut = 1; cut < len; cut += len / 7 + 1) {
		plain = NKP_OK;
		r = tu_raw(&svc, h, frame, cut, &plain);
		cr_assert_null(r, "truncated frame of %zu bytes was answered", cut);
		cr_assert_neq(plain, NKP_OK);
	}
	/* One flipped byte in the ciphertext. */
	frame[len - 3] ^= 0x40;
	plain = NKP_OK;
	cr_assert_null(tu_raw(&svc, h, frame, len, &plain));
	cr_assert_neq(plain, NKP_OK);
	free(frame);

	cr_assert_eq(held_generation(h, &n), 1);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(held_generation(h, &n), 1);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);
}

Test(hostd_service, push_with_invalid_contents_is_refused_and_state_kept)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p, bad;
	Nkp__Wire__Message *r;
	size_t n = 0;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 1, NULL, &p, 1);
	assert_ack(r, 1);
	tu_msg_free(r);

	/* Two active versions. */
	tu_provider_init(&bad, "bad", false, true);
	bad.n_versions = 2;
	bad.versions[1] = bad.versions[0];
	bad.versions[1].version = 2;
	r = tu_push(&svc, h, 2, NULL, &bad, 1);
	assert_refused(r, NKP_ERR_PARSE, 1);
	tu_msg_free(r);

	/* Version 0; then an empty name; then duplicate ids. */
	tu_provider_init(&bad, "bad", false, true);
	bad.versions[0].version = 0;
	r = tu_push(&svc, h, 2, NULL, &bad, 1);
	assert_refused(r, NKP_ERR_PARSE, 1);
	tu_msg_free(r);
	tu_provider_init(&bad, "", false, true);
	r = tu_push(&svc, h, 2, NULL, &bad, 1);
	assert_refused(r, NKP_ERR_PARSE, 1);
	tu_msg_free(r);
	{
		tu_provider two[2] = {p, p};

		two[1].name = "copy";
		r = tu_push(&svc, h, 2, NULL, two, 2);
		assert_refused(r, NKP_ERR_PARSE, 1);
		tu_msg_free(r);
	}
	cr_assert_eq(held_generation(h, &n), 1);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);
}

Test(hostd_service, push_that_cannot_be_written_is_refused_and_old_state_kept)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p, q;
	Nkp__Wire__Message *r;
	size_t n = 0;

	tu_provider_init(&p, "gold", true, true);
	tu_provider_init(&q, "silver", false, true);
	r = tu_push(&svc, h, 1, NULL, &p, 1);
	assert_ack(r, 1);
	tu_msg_free(r);

	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	r = tu_push(&svc, h, 2, NULL, &q, 1);
	nkpi_file_fail_next_writes(0, NKP_OK);
	assert_refused(r, NKP_ERR_NOSPC, 1);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, &n), 1);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);

	h = tu_reopen(dir);
	cr_assert_eq(held_generation(h, &n), 1);
	/* The same generation goes through once the disk has room. */
	r = tu_push(&svc, h, 2, NULL, &q, 1);
	assert_ack(r, 2);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_service, empty_push_wipes_every_provider)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	Nkp__Wire__Message *r;
	size_t n = 1;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 1, NULL, &p, 1);
	assert_ack(r, 1);
	tu_msg_free(r);
	r = tu_push(&svc, h, 2, NULL, NULL, 0);
	assert_ack(r, 2);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, &n), 2);
	cr_assert_eq(n, 0);
	nkp_hostd_close(h);
}

Test(hostd_service, repinning_another_service_keeps_keys_and_restarts_generation)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	tu_service fresh;
	Nkp__Wire__Message *r;
	size_t n = 0;
	nkp_err plain = NKP_OK;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 40, NULL, &p, 1);
	assert_ack(r, 40);
	tu_msg_free(r);
	nkp_hostd_close(h);

	tu_service_new(&fresh);
	h = tu_host(dir, &fresh);
	cr_assert_eq(held_generation(h, &n), 0);
	cr_assert_eq(n, 1);
	r = tu_push(&fresh, h, 1, NULL, &p, 1);
	assert_ack(r, 1);
	tu_msg_free(r);
	/* The old service is no longer trusted: its handshake gets no answer. */
	nkpi_session_free(svc.sess);
	cr_assert_eq(nkpi_session_new(svc.id, nkp_hostd_public_key(h), false, &svc.sess), NKP_OK);
	{
		uint8_t *init = NULL, *reply = NULL;
		size_t ilen = 0, rlen = 0;

		cr_assert_eq(nkpi_session_handshake_init(svc.sess, &init, &ilen), NKP_OK);
		plain = nkp_hostd_handle_frame(h, init, ilen, &reply, &rlen);
		cr_assert_eq(plain, NKP_ERR_AUTH);
		cr_assert_null(reply);
		free(init);
	}
	tu_service_free(&fresh);
	nkp_hostd_close(h);
}

static uint64_t dropped_frames(nkp_hostd *h)
{
	nkp_hostd_status *st = NULL;
	uint64_t n;

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	n = st->dropped_frames;
	nkp_hostd_status_free(st);
	return n;
}

Test(hostd_service, listener_serves_the_protocol_over_tcp)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nng_socket s;
	nng_msg *msg = NULL;
	uint8_t *frame = NULL, *body = NULL, *out = NULL;
	size_t flen = 0, blen, olen = 0;
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT, *r;
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	uint8_t ch[16] = {3};

	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_ERR_STATE);
	cr_assert_not_null(nkp_hostd_listen_url(h));
	cr_assert_null(strstr(nkp_hostd_listen_url(h), ":0"));
	hello.challenge.data = ch;
	hello.challenge.len = 16;
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = &hello;
	blen = nkp__wire__message__get_packed_size(&m);
	body = malloc(blen);
	nkp__wire__message__pack(&m, body);

	cr_assert_eq(nng_req0_open(&s), 0);
	cr_assert_eq(nng_dial(s, nkp_hostd_listen_url(h), NULL, 0), 0);
	cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000 * (int)tu_wait_scale()), 0);
	/* Garbage first: no reply, only a count, and the listener keeps
	 * serving (the request the service sends next replaces it). */
	cr_assert_eq(nng_send(s, "garbage", 7, 0), 0);
	for (unsigned i = 0; i < 500u * tu_wait_scale() && dropped_frames(h) == 0; i++) {
		nng_msleep(10);
	}
	cr_assert_eq(dropped_frames(h), 1);
	/* The handshake, then the request in a Transport. */
	cr_assert_eq(nkpi_session_handshake_init(svc.sess, &frame, &flen), NKP_OK);
	cr_assert_eq(nng_send(s, frame, flen, 0), 0);
	free(frame);
	cr_assert_eq(nng_recvmsg(s, &msg, 0), 0);
	cr_assert_eq(nkpi_session_handshake_finish(svc.sess, nng_msg_body(msg), nng_msg_len(msg)),
		     NKP_OK);
	nng_msg_free(msg);
	cr_assert_eq(nkpi_session_seal_request(svc.sess, body, blen, &frame, &flen), NKP_OK);
	free(body);
	cr_assert_eq(nng_send(s, frame, flen, 0), 0);
	free(frame);
	cr_assert_eq(nng_recvmsg(s, &msg, 0), 0);
	out = malloc(nng_msg_len(msg) + 1);
	cr_assert_eq(nkpi_session_open_reply(svc.sess, nng_msg_body(msg), nng_msg_len(msg), out,
					     nng_msg_len(msg) + 1, &olen),
		     NKP_OK);
	nng_msg_free(msg);
	r = nkp__wire__message__unpack(NULL, olen, out);
	cr_assert_not_null(r);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	tu_msg_free(r);
	free(out);
	nng_close(s);
	nkp_hostd_close(h);
}

/* ---- generations: (epoch, counter) pairs and digests ---- */

Test(hostd_service, an_ack_names_the_pair_and_the_digest_and_both_survive_reopen)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	uint8_t digest[32];
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 5, NULL, &p, 1);
	assert_ack(r, 5);
	cr_assert_eq(r->push_ack->applied_epoch, tu_epoch);
	cr_assert_eq(r->push_ack->applied_digest.len, 32);
	memcpy(digest, r->push_ack->applied_digest.data, sizeof(digest));
	tu_msg_free(r);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	r = tu_hello(&svc, h);
	cr_assert_eq(r->status->applied_epoch, tu_epoch);
	cr_assert_eq(r->status->applied_generation, 5);
	cr_assert_eq(r->status->applied_digest.len, 32);
	cr_assert_arr_eq(r->status->applied_digest.data, digest, sizeof(digest));
	tu_msg_free(r);
	/* The same push again: refused, naming the digest it holds (the
	 * service sees its ack was lost). */
	r = tu_push(&svc, h, 5, NULL, &p, 1);
	assert_refused(r, NKP_ERR_REPLAY, 5);
	cr_assert_arr_eq(r->refusal->applied_digest.data, digest, sizeof(digest));
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_service, a_push_of_another_epoch_is_refused_unless_it_carries_resync)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint64_t mine = tu_epoch;
	tu_provider p;
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 5, NULL, &p, 1);
	assert_ack(r, 5);
	tu_msg_free(r);
	tu_epoch = mine ^ 0xffu;
	r = tu_push(&svc, h, 6, NULL, NULL, 0);
	assert_refused(r, NKP_ERR_STATE, 5);
	cr_assert_eq(r->refusal->applied_epoch, mine);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, NULL), 5);
	tu_resync = true;
	r = tu_push(&svc, h, 1, NULL, NULL, 0);
	tu_resync = false;
	assert_ack(r, 1);
	cr_assert_eq(r->push_ack->applied_epoch, mine ^ 0xffu);
	tu_msg_free(r);
	tu_epoch = mine;
	nkp_hostd_close(h);
}

Test(hostd_service, counters_at_the_limit_and_epoch_zero_are_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint64_t mine = tu_epoch;
	Nkp__Wire__Message *r;

	r = tu_push(&svc, h, UINT64_C(1) << 62, NULL, NULL, 0);
	assert_refused(r, NKP_ERR_PARSE, 0);
	tu_msg_free(r);
	r = tu_push(&svc, h, UINT64_MAX, NULL, NULL, 0);
	assert_refused(r, NKP_ERR_PARSE, 0);
	tu_msg_free(r);
	tu_resync = true;
	r = tu_push(&svc, h, UINT64_MAX - 1, NULL, NULL, 0);
	assert_refused(r, NKP_ERR_PARSE, 0);
	tu_msg_free(r);
	tu_resync = false;
	tu_epoch = 0;
	r = tu_push(&svc, h, 3, NULL, NULL, 0);
	assert_refused(r, NKP_ERR_PARSE, 0);
	tu_msg_free(r);
	tu_epoch = mine;
	r = tu_push(&svc, h, (UINT64_C(1) << 62) - 1, NULL, NULL, 0);
	assert_ack(r, (UINT64_C(1) << 62) - 1);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_service, re_pinning_the_service_key_clears_the_pair)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint64_t mine = tu_epoch;
	tu_provider p;
	Nkp__Wire__Message *r;

	tu_provider_init(&p, "gold", true, true);
	r = tu_push(&svc, h, 9, NULL, &p, 1);
	assert_ack(r, 9);
	tu_msg_free(r);
	nkp_hostd_close(h);
	/* `nkp-hostd init --service-key` again (the same key: a rebuilt
	 * service that kept its identity). */
	h = tu_host(dir, &svc);
	r = tu_hello(&svc, h);
	cr_assert_eq(r->status->applied_epoch, 0);
	cr_assert_eq(r->status->applied_digest.len, 0);
	tu_msg_free(r);
	cr_assert_eq(held_generation(h, NULL), 0);
	tu_epoch = mine + 1;
	r = tu_push(&svc, h, 2, NULL, &p, 1);
	assert_ack(r, 2);
	tu_msg_free(r);
	tu_epoch = mine;
	nkp_hostd_close(h);
}
