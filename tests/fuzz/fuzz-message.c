/* fuzz-message: the inner wire Message (proto/wire.proto) as a host
 * handles it: each input is sealed by the fixed service identity to a host
 * opened on a scratch state directory and handed to
 * nkp_hostd_handle_frame(), so mutations reach the Hello and Push handling
 * and the Push validator behind the AEAD.
 *
 * A Push the harness can parse has its boot nonce set to the host's
 * current one and, when its generation is not 0, its generation moved just
 * past the host's applied one: the fuzzer cannot know either, and without
 * this every Push would stop at the replay checks. Inputs that do not
 * parse are sealed as they are. */
#include "fuzz-util.h"

#include <nkp/hostd.h>

#include "fuzz-session.h"
#include "wire.pb-c.h"

static char *dir;
static nkp_identity *service;
static nkpi_session *ini; /* the service end, made on first use */
static nkp_hostd *host;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
	nkp_hostd_close(host);
	nkpi_session_free(ini);
	nkp_identity_free(service);
	fz_rmrf(dir);
	free(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_hostd_config cfg = {.host_name = "fuzz-host"};
	uint8_t pub[NKP_PUBKEY_BYTES];

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	service = fz_identity(FZ_SERVICE_SECRET);
	cfg.state_dir = dir;
	cfg.events_path = ""; /* events to the (silenced) log only */
	fz_check(nkp_hostd_init(&cfg, nkp_identity_public(service), pub), "hostd init");
	fz_check(nkp_hostd_open(&cfg, &host), "hostd open");
	atexit(cleanup);
	return 0;
}

/* The fixed-up message (malloc'd) or NULL if `data` is not a Push. */
static uint8_t *fix_push(const uint8_t *data, size_t size, size_t *len)
{
	Nkp__Wire__Message *m = nkp__wire__message__unpack(NULL, size, data);
	nkp_hostd_status *st = NULL;
	uint8_t *out = NULL;
	ProtobufCBinaryData old;

	if (m == NULL) {
		return NULL;
	}
	if (m->body_case != NKP__WIRE__MESSAGE__BODY_PUSH || m->push == NULL ||
	    nkp_hostd_status_get(host, &st) != NKP_OK) {
		goto free_msg;
	}
	old = m->push->boot_nonce;
	m->push->boot_nonce.data = st->boot_nonce;
	m->push->boot_nonce.len = sizeof(st->boot_nonce);
	/* Half the inputs get past the generation check whatever they carry. */
	m->push->resync = m->push->resync || (size & 1u) != 0;
	*len = nkp__wire__message__get_packed_size(m);
	out = malloc(*len + 1);
	if (out != NULL) {
		nkp__wire__message__pack(m, out);
	}
	m->push->boot_nonce = old;
	nkp_hostd_status_free(st);
free_msg:
	nkp__wire__message__free_unpacked(m, NULL);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed, *frame = NULL, *reply = NULL;
	size_t fixedlen = 0, framelen = 0, replylen = 0;

	fixed = fix_push(data, size, &fixedlen);
	if (fz_host_seal(host, service, &ini, fixed != NULL ? fixed : data,
			 fixed != NULL ? fixedlen : size, &frame, &framelen) == NKP_OK) {
		if (nkp_hostd_handle_frame(host, frame, framelen, &reply, &replylen) == NKP_OK) {
			nkp_hostd_buf_free(reply, replylen);
		}
		free(frame);
	}
	if (fixed != NULL) {
		sodium_memzero(fixed, fixedlen);
		free(fixed);
	}
	return 0;
}
