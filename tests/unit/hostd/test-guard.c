/* What a stranger costs a host: dropped frames counted with one summary
 * event, connections capped per listener and per address, silent ones
 * closed, the service's connection kept. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <nkp/nkp.h>

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

TestSuite(guard, .init = setup, .fini = teardown);

typedef struct counts {
	uint64_t dropped, refused, closed;
} counts;

static counts now(nkp_hostd *h)
{
	nkp_hostd_status *st = NULL;
	counts c;

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	c = (counts){st->dropped_frames, st->refused_connections, st->closed_connections};
	nkp_hostd_status_free(st);
	return c;
}

/* Waits up to 10 s (scaled) polling until `cond` holds. */
#define WAIT_FOR(cond)                                                                             \
	do {                                                                                       \
		for (unsigned i_ = 0; i_ < 1000u * tu_wait_scale() && !(cond); i_++) {             \
			nng_msleep(10);                                                            \
		}                                                                                  \
		cr_assert(cond, "timed out waiting for " #cond);                                   \
	} while (0)

static size_t summaries(void)
{
	char path[4096], line[4096];
	size_t n = 0;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	fp = fopen(path, "r");
	cr_assert_not_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		n += strstr(line, "unauthenticated frames dropped") != NULL;
	}
	fclose(fp);
	return n;
}

Test(guard, garbage_is_counted_not_answered_with_one_summary_event)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t garbage[64], *reply = NULL;
	size_t replylen = 0;

	for (int i = 0; i < 1000; i++) {
		randombytes_buf(garbage, sizeof(garbage));
		cr_assert_neq(
			nkp_hostd_handle_frame(h, garbage, sizeof(garbage), &reply, &replylen),
			NKP_OK);
		cr_assert_null(reply);
	}
	cr_assert_eq(now(h).dropped, 1000);
	cr_assert_eq(summaries(), 1, "one summary event for a burst, not one per frame");
	nkp_hostd_close(h);
	/* The rest is reported when the handle closes. */
	cr_assert_eq(summaries(), 2);
}

Test(guard, unknown_fields_are_refused_before_they_are_parsed)
{
	nkp_hostd *h = tu_host(dir, &svc);
	size_t len = 1u << 20;
	uint8_t *bomb = malloc(len), *reply = NULL;
	size_t replylen = 0;

	for (size_t i = 0; i < len; i += 2) {
		bomb[i] = 0x78; /* field 15, varint */
		bomb[i + 1] = 0x01;
	}
	cr_assert_eq(nkp_hostd_handle_frame(h, bomb, len, &reply, &replylen), NKP_ERR_PARSE);
	cr_assert_null(reply);
	free(bomb);
	nkp_hostd_close(h);
}

static nng_socket dial(const char *url)
{
	nng_socket s;

	cr_assert_eq(nng_req0_open(&s), 0);
	cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000 * (int)tu_wait_scale()), 0);
	cr_assert_eq(nng_dial(s, url, NULL, 0), 0);
	return s;
}

Test(guard, connections_over_the_per_address_cap_are_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nng_socket s[3];

	cr_assert_eq(nkp_hostd_set_listen_limits(h, 8, 2, 60000), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	cr_assert_eq(nkp_hostd_set_listen_limits(h, 8, 2, 60000), NKP_ERR_STATE);
	for (size_t i = 0; i < 3; i++) {
		s[i] = dial(nkp_hostd_listen_url(h));
	}
	WAIT_FOR(now(h).refused >= 1);
	for (size_t i = 0; i < 3; i++) {
		nng_close(s[i]);
	}
	nkp_hostd_close(h);
}

/* A Hello in a Transport of svc's session with h (handshaking in process
 * first if needed): a fresh counter each call. */
static uint8_t *hello_frame(nkp_hostd *h, size_t *flen)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	uint8_t ch[16] = {5}, *body, *frame = NULL;
	size_t blen;

	hello.challenge.data = ch;
	hello.challenge.len = sizeof(ch);
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = &hello;
	blen = nkp__wire__message__get_packed_size(&m);
	body = malloc(blen);
	nkp__wire__message__pack(&m, body);
	frame = tu_seal(&svc, h, body, blen, flen);
	free(body);
	return frame;
}

Test(guard, silent_connections_are_closed_and_the_service_is_kept)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nng_socket quiet, service;
	nng_msg *msg = NULL;
	size_t flen = 0;
	uint8_t *frame;

	cr_assert_eq(nkp_hostd_set_listen_limits(h, 8, 8, 600), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	quiet = dial(nkp_hostd_listen_url(h));
	service = dial(nkp_hostd_listen_url(h));
	/* The service speaks every 200 ms, within the 600 ms deadline; the
	 * quiet one is closed meanwhile, the service never. */
	uint32_t pipe = 0;

	for (int i = 0; i < 8; i++) {
		frame = hello_frame(h, &flen);
		cr_assert_eq(nng_send(service, frame, flen, 0), 0);
		free(frame);
		cr_assert_eq(nng_recvmsg(service, &msg, 0), 0);
		if (i == 0) {
			pipe = nng_pipe_id(nng_msg_get_pipe(msg));
		}
		/* Every reply on the connection it started with. */
		cr_assert_eq(nng_pipe_id(nng_msg_get_pipe(msg)), pipe);
		nng_msg_free(msg);
		nng_msleep(200);
	}
	WAIT_FOR(now(h).closed >= 1);
	nng_close(quiet);
	nng_close(service);
	nkp_hostd_close(h);
}

/* One reaper serves every listener of a process: a listener's quiet
 * connection is closed whichever other listeners come and go, and one
 * opened after the last closed is reaped again. */
Test(guard, every_listener_in_a_process_is_reaped)
{
	char *dir2 = tu_tmpdir(), *dir3 = tu_tmpdir();
	nkp_hostd *slow = tu_host(dir, &svc), *fast = tu_host(dir2, &svc), *later;
	nng_socket quiet;

	cr_assert_eq(nkp_hostd_set_listen_limits(slow, 8, 8, 60000), NKP_OK);
	cr_assert_eq(nkp_hostd_set_listen_limits(fast, 8, 8, 600), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(slow, "tcp://127.0.0.1:0"), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(fast, "tcp://127.0.0.1:0"), NKP_OK);
	nkp_hostd_close(slow);
	quiet = dial(nkp_hostd_listen_url(fast));
	WAIT_FOR(now(fast).closed >= 1);
	nng_close(quiet);
	nkp_hostd_close(fast);

	later = tu_host(dir3, &svc);
	cr_assert_eq(nkp_hostd_set_listen_limits(later, 8, 8, 600), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(later, "tcp://127.0.0.1:0"), NKP_OK);
	quiet = dial(nkp_hostd_listen_url(later));
	WAIT_FOR(now(later).closed >= 1);
	nng_close(quiet);
	nkp_hostd_close(later);
	tu_rmdir(dir2);
	tu_rmdir(dir3);
	free(dir2);
	free(dir3);
}

/* A stranger's idle connection that does not redial when closed. */
static nng_socket dial_idle(const char *url)
{
	nng_socket s;

	cr_assert_eq(nng_req0_open(&s), 0);
	cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 600000), 0);
	cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 600000), 0);
	cr_assert_eq(nng_dial(s, url, NULL, 0), 0);
	return s;
}

/* Sends a Hello on `s` and waits for the reply. */
static void served(nkp_hostd *h, nng_socket s)
{
	nng_msg *msg = NULL;
	size_t flen = 0;
	uint8_t *frame = hello_frame(h, &flen);

	cr_assert_eq(nng_send(s, frame, flen, 0), 0);
	free(frame);
	cr_assert_eq(nng_recvmsg(s, &msg, 0), 0);
	nng_msg_free(msg);
}

Test(guard, a_full_listener_makes_room_for_the_service)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nng_socket quiet[4], service;

	cr_assert_eq(nkp_hostd_set_listen_limits(h, 4, 8, 60000), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	for (size_t i = 0; i < 4; i++) {
		quiet[i] = dial_idle(nkp_hostd_listen_url(h));
	}
	/* Every slot held by a stranger that never speaks: the oldest of
	 * them is closed for the service, which is then served. */
	service = dial(nkp_hostd_listen_url(h));
	served(h, service);
	WAIT_FOR(now(h).closed >= 1);
	cr_assert_eq(now(h).refused, 0);
	served(h, service);
	for (size_t i = 0; i < 4; i++) {
		nng_close(quiet[i]);
	}
	nng_close(service);
	nkp_hostd_close(h);
}

Test(guard, connections_over_the_listener_cap_are_refused_once_all_authenticated)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nng_socket s[2], extra;

	cr_assert_eq(nkp_hostd_set_listen_limits(h, 2, 8, 60000), NKP_OK);
	cr_assert_eq(nkp_hostd_listen(h, "tcp://127.0.0.1:0"), NKP_OK);
	for (size_t i = 0; i < 2; i++) {
		s[i] = dial(nkp_hostd_listen_url(h));
		served(h, s[i]);
	}
	extra = dial_idle(nkp_hostd_listen_url(h));
	WAIT_FOR(now(h).refused >= 1);
	cr_assert_eq(now(h).closed, 0);
	served(h, s[0]);
	served(h, s[1]);
	for (size_t i = 0; i < 2; i++) {
		nng_close(s[i]);
	}
	nng_close(extra);
	nkp_hostd_close(h);
}
