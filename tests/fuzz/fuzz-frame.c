/* fuzz-frame: the wire envelope (proto/wire.proto Frame) as a host reads
 * it from the service: nkp_frame_sender() on any bytes, then
 * nkp_channel_open() on a channel with fixed identities, so the seeds
 * (real sealed frames of every Message type, see gen-corpus.c) open and
 * mutations reach every check past the AEAD. */
#include "fuzz-util.h"

static nkp_channel *ch;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_identity *service, *host;

	(void)argc;
	(void)argv;
	fz_init();
	service = fz_identity(FZ_SERVICE_SECRET);
	host = fz_identity(FZ_HOST_SECRET);
	/* The host's end: `host` must outlive the channel (process life). */
	fz_check(nkp_channel_new(host, nkp_identity_public(service), &ch), "channel");
	nkp_identity_free(service);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sender[NKP_PUBKEY_BYTES];
	uint8_t *msg = NULL;
	size_t msglen = 0;
	nkp_err code = NKP_OK;
	char text[128];

	(void)nkp_frame_sender(data, size, sender);
	if (nkp_channel_open(ch, data, size, &msg, &msglen, &code, text, sizeof(text)) == NKP_OK) {
		nkp_secure_free(msg);
	}
	/* And without the optional out-parameters. */
	msg = NULL;
	if (nkp_channel_open(ch, data, size, &msg, &msglen, NULL, NULL, 0) == NKP_OK) {
		nkp_secure_free(msg);
	}
	return 0;
}
