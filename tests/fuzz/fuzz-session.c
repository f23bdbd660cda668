/* fuzz-session: channel session frames (nkp/session.h) on both ends.
 *
 * Input: one selector byte, then a frame. The frame always goes to
 * nkpi_session_open_request on a host's responder that holds a live
 * session (the canonical one of fuzz-session.h, so session seeds made by
 * gen-corpus open); an opened request is answered with
 * nkpi_session_seal_reply. Selector bits also send it to
 * nkpi_session_open_reply on a service's initiator:
 *
 *   0x01  an initiator in the canonical session waiting for the reply to
 *         its exchange 0 (re-armed per input: 4 X25519)
 *   0x02  an initiator waiting for the reply to a channel-sealed request
 *         (re-armed per input: 2 X25519)
 *   0x04  plaintext buffers of a quarter of the frame (NKP_ERR_TOO_LARGE)
 *   0x08  no peer code or text out-parameters
 *
 * Checks beyond "no crash, leak or hang": after every input the responder
 * refused, a forged request for its next exchange must fail with
 * NKP_ERR_AUTH, so the refused input left the same session live at the
 * same exchange (a changed or forgotten session gives NKP_ERR_SESSION, a
 * moved chain NKP_ERR_REPLAY). Every CHECK_EVERY inputs a shadow
 * initiator runs a genuine exchange with the responder, which also checks
 * the chain key; then both return to the canonical session by a fresh
 * handshake (8 X25519), as they do after any input the responder opened.
 * An initiator must hold a session exactly when open_reply succeeded, and
 * a peer's text must come back printable and terminated. A failed check
 * aborts: a finding, with the input that caused it. */
#include "fuzz-session.h"

#define CHECK_EVERY 1024u

static nkp_identity *service, *host;
static nkp_channel *ch_host, *ch_service;
static nkpi_session *resp;       /* the host's responder under test */
static nkpi_session *shadow;     /* its genuine peer */
static nkpi_session *ini_session; /* selector 0x01 */
static nkpi_session *ini_full;    /* selector 0x02 */
static fz_frame full_reply;      /* the canonical handshake's reply */
static fz_frame req0;            /* the shadow's request for exchange 0 */
static fz_frame probe;           /* req0 with its tag broken */
static unsigned long runs;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void finding(const char *what, nkp_err err)
{
	fprintf(stderr, "fuzz-session: %s (%s)\n", what, nkp_strerror(err));
	abort();
}

static void cleanup(void)
{
	nkpi_session_free(resp);
	nkpi_session_free(shadow);
	nkpi_session_free(ini_session);
	nkpi_session_free(ini_full);
	nkp_channel_free(ch_host);
	nkp_channel_free(ch_service);
	nkp_identity_free(service);
	nkp_identity_free(host);
	free(full_reply.b);
	free(req0.b);
	free(probe.b);
}

/* Responder and shadow back to the canonical session, the shadow having
 * sealed (not sent) req0. The frames come out the same every time. */
static void canon(void)
{
	fz_frame rep = {0}, q = {0};

	fz_session_handshake(shadow, resp, NULL, &rep);
	fz_check(nkpi_session_seal_request(shadow, (const uint8_t *)FZ_SESSION_REQUEST,
					   sizeof(FZ_SESSION_REQUEST) - 1, &q.b, &q.len),
		 "request 0");
	if (full_reply.b == NULL) {
		full_reply = rep;
		req0 = q;
		probe.b = malloc(q.len);
		if (probe.b == NULL) {
			abort();
		}
		probe.len = q.len;
		memcpy(probe.b, q.b, q.len);
		probe.b[probe.len - 1] ^= 0x01u; /* the last byte of the tag */
		return;
	}
	if (rep.len != full_reply.len || memcmp(rep.b, full_reply.b, rep.len) != 0 ||
	    q.len != req0.len || memcmp(q.b, req0.b, q.len) != 0) {
		fprintf(stderr, "fuzz harness: the handshake is not deterministic\n");
		abort();
	}
	free(rep.b);
	free(q.b);
}

/* The responder still holds the canonical session at exchange 0. */
static void probe_responder(void)
{
	uint8_t buf[256];
	size_t msglen = 0;
	nkpi_session_reply rk = {0};
	nkp_err err;

	err = nkpi_session_open_request(resp, probe.b, probe.len, buf, sizeof(buf), &msglen, &rk);
	nkpi_session_reply_wipe(&rk);
	if (err != NKP_ERR_AUTH) {
		finding("a refused input changed the responder's session", err);
	}
}

/* A genuine exchange 0 between the shadow and the responder. */
static void full_check(void)
{
	uint8_t buf[256];
	size_t msglen = 0;
	nkpi_session_reply rk = {0};
	fz_frame rep = {0};
	nkp_err err;

	err = nkpi_session_open_request(resp, req0.b, req0.len, buf, sizeof(buf), &msglen, &rk);
	if (err != NKP_OK) {
		finding("the responder's session no longer opens a genuine request", err);
	}
	fz_check(nkpi_session_seal_reply(resp, &rk, (const uint8_t *)FZ_SESSION_REPLY,
					 sizeof(FZ_SESSION_REPLY) - 1, &rep.b, &rep.len),
		 "reply to the shadow");
	err = nkpi_session_open_reply(shadow, rep.b, rep.len, buf, sizeof(buf), &msglen, NULL,
				      NULL, 0);
	free(rep.b);
	if (err != NKP_OK) {
		finding("the responder's reply to a genuine request does not open", err);
	}
	canon();
}

static size_t cap_for(uint8_t sel, size_t len)
{
	return (sel & SEL_SMALL_BUFFER) ? len / 4 : len + 1;
}

static void to_responder(uint8_t sel, const uint8_t *frame, size_t len)
{
	size_t cap = cap_for(sel, len), msglen = 0, replylen = 0;
	uint8_t *buf = malloc(cap > 0 ? cap : 1), *reply = NULL;
	nkpi_session_reply rk = {0};
	nkp_err err;

	if (buf == NULL) {
		abort();
	}
	err = nkpi_session_open_request(resp, frame, len, buf, cap, &msglen, &rk);
	if (err == NKP_OK) {
		if (msglen > cap) {
			finding("open_request reported more than the buffer holds", err);
		}
		err = nkpi_session_seal_reply(resp, &rk, (const uint8_t *)FZ_SESSION_REPLY,
					      sizeof(FZ_SESSION_REPLY) - 1, &reply, &replylen);
		if (err != NKP_OK || reply == NULL || replylen == 0) {
			finding("no reply to an opened request", err);
		}
		free(reply);
	}
	nkpi_session_reply_wipe(&rk);
	free(buf);
	if (err == NKP_OK) {
		canon(); /* the input moved the session on, or made a new one */
	} else {
		probe_responder();
	}
}

/* The initiator with a reply pending for `sel`: exchange 0 of the
 * canonical session, or a fresh channel-sealed request. */
static void arm(nkpi_session *ini)
{
	fz_frame q = {0};
	uint8_t buf[256];
	size_t msglen = 0;

	nkpi_session_reset(ini);
	if (ini == ini_session) {
		fz_rng_reseed(); /* the canonical handshake's ephemeral key */
	}
	fz_check(nkpi_session_seal_request(ini, (const uint8_t *)FZ_SESSION_REQUEST,
					   sizeof(FZ_SESSION_REQUEST) - 1, &q.b, &q.len),
		 "channel request");
	free(q.b);
	if (ini == ini_full) {
		return;
	}
	fz_check(nkpi_session_open_reply(ini, full_reply.b, full_reply.len, buf, sizeof(buf),
					 &msglen, NULL, NULL, 0),
		 "canonical reply");
	fz_check(nkpi_session_seal_request(ini, (const uint8_t *)FZ_SESSION_REQUEST,
					   sizeof(FZ_SESSION_REQUEST) - 1, &q.b, &q.len),
		 "session request");
	if (q.len != req0.len || memcmp(q.b, req0.b, q.len) != 0) {
		fprintf(stderr, "fuzz harness: the initiator is not in the canonical session\n");
		abort();
	}
	free(q.b);
}

static void check_peer_text(const char *text, size_t size, nkp_err code)
{
	size_t n = strnlen(text, size);

	if (n == size || code <= NKP_OK || code >= NKP_ERR__COUNT) {
		finding("a PlainError came back unterminated or with a bad code", code);
	}
	for (size_t i = 0; i < n; i++) {
		if (text[i] < 0x20 || text[i] > 0x7e) {
			finding("a PlainError's text came back unprintable", code);
		}
	}
}

static void to_initiator(nkpi_session *ini, uint8_t sel, const uint8_t *frame, size_t len)
{
	size_t cap = cap_for(sel, len), msglen = 0;
	uint8_t *buf = malloc(cap > 0 ? cap : 1);
	nkp_err code = NKP_OK;
	char text[64];
	bool out_params = !(sel & SEL_NO_PEER_TEXT);
	nkp_err err;

	if (buf == NULL) {
		abort();
	}
	arm(ini);
	memset(text, 'x', sizeof(text));
	err = nkpi_session_open_reply(ini, frame, len, buf, cap, &msglen, out_params ? &code : NULL,
				      out_params ? text : NULL, out_params ? sizeof(text) : 0);
	free(buf);
	if (nkpi_session_established(ini) != (err == NKP_OK)) {
		finding("an initiator's session does not match open_reply's answer", err);
	}
	if (err == NKP_OK && msglen > cap) {
		finding("open_reply reported more than the buffer holds", err);
	}
	if (err == NKP_ERR_REFUSED && out_params) {
		check_peer_text(text, sizeof(text), code);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_rng_reseed(); /* before sodium_init, as libsodium asks */
	fz_init();
	service = fz_identity(FZ_SERVICE_SECRET);
	host = fz_identity(FZ_HOST_SECRET);
	fz_check(nkp_channel_new(host, nkp_identity_public(service), &ch_host), "host channel");
	fz_check(nkp_channel_new(service, nkp_identity_public(host), &ch_service),
		 "service channel");
	fz_check(nkpi_session_new(ch_host, true, &resp), "responder");
	fz_check(nkpi_session_new(ch_service, false, &shadow), "shadow");
	fz_check(nkpi_session_new(ch_service, false, &ini_session), "initiator");
	fz_check(nkpi_session_new(ch_service, false, &ini_full), "initiator");
	atexit(cleanup);
	canon();
	full_check(); /* the set-up itself */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sel = size > 0 ? data[0] : 0;
	const uint8_t *frame = size > 0 ? data + 1 : data;
	size_t len = size > 0 ? size - 1 : 0;

	to_responder(sel, frame, len);
	if (sel & SEL_SESSION_REPLY) {
		to_initiator(ini_session, sel, frame, len);
	}
	if (sel & SEL_HANDSHAKE_REPLY) {
		to_initiator(ini_full, sel, frame, len);
	}
	if (++runs % CHECK_EVERY == 0) {
		full_check();
	}
	return 0;
}
