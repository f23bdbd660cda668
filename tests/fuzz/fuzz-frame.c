/* fuzz-frame: the wire Frame (proto/wire.proto) as a host reads it from
 * anyone who can reach its port: nkpi_session_open_request on a fresh
 * responder with fixed identities that holds no session yet. Parsing,
 * mac1, the handshake rate limit and (for seeds with a genuine mac1, see
 * gen-corpus.c) Noise's first message and the timestamp check are
 * reached. Only a genuine HandshakeInit may be answered; the responder is
 * remade after one, so each input meets the same state. */
#include "fuzz-session.h"

static nkp_identity *service, *host;
static nkpi_session *resp;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fresh(void)
{
	nkpi_session_free(resp);
	resp = NULL;
	fz_check(nkpi_session_new(host, nkp_identity_public(service), true, &resp), "responder");
}

static void cleanup(void)
{
	nkpi_session_free(resp);
	nkp_identity_free(service);
	nkp_identity_free(host);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	service = fz_identity(FZ_SERVICE_SECRET);
	host = fz_identity(FZ_HOST_SECRET);
	nkpi_session_set_clock_ms(FZ_SESSION_CLOCK_MS);
	fresh();
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[256];
	uint8_t *hs = NULL;
	size_t msglen = 0, hslen = 0;
	nkpi_session_reply rk;
	nkp_err err;

	err = nkpi_session_open_request(resp, data, size, buf, sizeof(buf), &msglen, &rk, &hs,
					&hslen);
	if (err != NKP_OK && hs != NULL) {
		fprintf(stderr, "fuzz-frame: a refused frame was answered\n");
		abort();
	}
	if (err == NKP_OK) {
		if (hs == NULL) {
			fprintf(stderr, "fuzz-frame: a Transport opened without a session\n");
			abort();
		}
		free(hs);
		fresh();
	}
	return 0;
}
