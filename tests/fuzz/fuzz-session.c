/* fuzz-session: session frames (nkp/private/session.h) on both ends.
 *
 * Input: one selector byte, then a frame. The frame always goes to
 * nkpi_session_open_request on a host's responder that holds the live
 * canonical session of fuzz-session.h (so seeds made by gen-corpus open);
 * an opened request is answered with nkpi_session_seal_reply. Selector
 * bits also send it to the service's side:
 *
 *   0x01  nkpi_session_open_reply on an initiator in the canonical session
 *   0x02  nkpi_session_handshake_finish on an initiator waiting for the
 *         response to its (canonical) HandshakeInit (re-armed per input)
 *   0x04  plaintext buffers of a quarter of the frame (NKP_ERR_TOO_LARGE)
 *
 * Checks beyond "no crash, leak or hang": no refused frame is answered;
 * after every input the responder refused, the genuine initiator's next
 * request still opens (the refused input left the live session as it
 * was). After any input the responder took (a handshake it answered, a
 * request it opened), both sides return to the canonical session. An
 * initiator holds its session after open_reply whatever the input, and
 * after handshake_finish holds a new one only if it succeeded. A failed
 * check aborts: a finding, with the input that caused it. */
#include "fuzz-session.h"

static nkp_identity *service, *host;
static nkpi_session *resp;    /* the host's responder under test */
static nkpi_session *shadow;  /* its genuine peer */
static nkpi_session *ini;     /* selectors 0x01 and 0x02 */
static nkpi_session *ini_rsp; /* ini's own responder, to arm it */
static unsigned long checks;  /* genuine exchanges since the last handshake */

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
	nkpi_session_free(ini);
	nkpi_session_free(ini_rsp);
	nkp_identity_free(service);
	nkp_identity_free(host);
}

static void canonical(void)
{
	checks = 0;
	fz_session_handshake(service, host, &shadow, &resp, NULL, NULL, NULL, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	service = fz_identity(FZ_SERVICE_SECRET);
	host = fz_identity(FZ_HOST_SECRET);
	canonical();
	fz_session_handshake(service, host, &ini, &ini_rsp, NULL, NULL, NULL, NULL);
	atexit(cleanup);
	return 0;
}

static void to_responder(const uint8_t *frame, size_t len, size_t cap)
{
	uint8_t *buf = malloc(cap > 0 ? cap : 1);
	uint8_t *hs = NULL, *rep = NULL;
	size_t msglen = 0, hslen = 0, replen = 0;
	nkpi_session_reply rk;
	nkp_err err;

	if (buf == NULL) {
		abort();
	}
	err = nkpi_session_open_request(resp, frame, len, buf, cap, &msglen, &rk, &hs, &hslen);
	if (err != NKP_OK) {
		if (hs != NULL) {
			finding("a refused frame was answered", err);
		}
		free(buf);
		/* The live session is as it was: the genuine peer still talks.
		 * (A new one now and then, before its message budget.) */
		fz_session_exchange(shadow, resp, NULL, NULL);
		if (++checks == 100000u) {
			canonical();
		}
		return;
	}
	if (hs == NULL) {
		err = nkpi_session_seal_reply(resp, &rk, buf, msglen, &rep, &replen);
		if (err != NKP_OK && err != NKP_ERR_TOO_LARGE) {
			finding("an opened request could not be answered", err);
		}
		free(rep);
	}
	free(hs);
	free(buf);
	canonical();
}

static void to_initiator(uint8_t sel, const uint8_t *frame, size_t len, size_t cap)
{
	uint8_t *buf = malloc(cap > 0 ? cap : 1);
	size_t msglen = 0;
	nkp_err err;

	if (buf == NULL) {
		abort();
	}
	if (sel & 0x01) {
		err = nkpi_session_open_reply(ini, frame, len, buf, cap, &msglen);
		(void)err;
		if (!nkpi_session_established(ini)) {
			finding("a reply, taken or not, ended the initiator's session", err);
		}
	}
	if (sel & 0x02) {
		uint8_t *init = NULL;
		size_t ilen = 0;
		uint8_t e[32];

		memset(e, 0x3c, sizeof(e));
		nkpi_session_fix_next(ini, e, FZ_INI_INDEX);
		fz_check(nkpi_session_handshake_init(ini, &init, &ilen), "arm");
		free(init);
		err = nkpi_session_handshake_finish(ini, frame, len);
		if (err == NKP_OK) {
			/* A new session from fuzzed bytes: only from a real
			 * responder's answer. Back to a known one. */
			fz_session_handshake(service, host, &ini, &ini_rsp, NULL, NULL, NULL, NULL);
		} else if (!nkpi_session_established(ini)) {
			finding("a failed handshake ended the current session", err);
		}
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sel;
	size_t cap;

	if (size < 1) {
		return 0;
	}
	sel = data[0];
	data++;
	size--;
	cap = (sel & 0x04) ? size / 4 : size + 1;
	to_responder(data, size, cap);
	if (sel & 0x03) {
		to_initiator(sel, data, size, cap);
	}
	return 0;
}
