/* fuzz-kmip: a key server's answer, as the standard provider's KMIP client
 * reads it (nkp/private/kmip.c). Input: one byte naming the operation the
 * answer is read for (Create, Get, Get Attributes, Locate, Discover
 * Versions, Activate), then the answer's bytes. What parses is read by the
 * reader of that operation; a key is only ever taken from a successful Get
 * of the object asked for, and a refusal always maps to an error.
 * Seeds: the *_response lines of tests/vectors/kmip-v1.txt and
 * kmip-ttlv-v1.txt (gen-corpus.c). */
#include "fuzz-util.h"

#include "kmip.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

static const uint32_t ops[] = {
	NKPI_KMIP_OP_CREATE,
	NKPI_KMIP_OP_GET,
	NKPI_KMIP_OP_GET_ATTRIBUTES,
	NKPI_KMIP_OP_LOCATE,
	NKPI_KMIP_OP_DISCOVER_VERSIONS,
	NKPI_KMIP_OP_ACTIVATE,
};

static void read_payload(uint32_t op, const nkpi_kmip_result *r)
{
	uint8_t key[NKPI_KMIP_KEY_BYTES];
	char id[NKPI_KMIP_ID_MAX], ids[8][NKPI_KMIP_ID_MAX];
	nkpi_kmip_version v[4];
	uint32_t state;
	size_t n;
	nkp_err err;

	switch (op) {
	case NKPI_KMIP_OP_GET:
		err = nkpi_kmip_parse_key(r, "1", key);
		if (err == NKP_OK && r->status != NKPI_KMIP_STATUS_SUCCESS) {
			abort(); /* a key out of a failure */
		}
		sodium_memzero(key, sizeof(key));
		break;
	case NKPI_KMIP_OP_GET_ATTRIBUTES:
		(void)nkpi_kmip_parse_state(r, "1", &state);
		break;
	case NKPI_KMIP_OP_LOCATE:
		if (nkpi_kmip_parse_locate(r, ids, 8, &n) == NKP_OK) {
			for (size_t i = 0; i < n; i++) {
				if (strlen(ids[i]) == 0 || strlen(ids[i]) >= NKPI_KMIP_ID_MAX) {
					abort();
				}
			}
		}
		break;
	case NKPI_KMIP_OP_DISCOVER_VERSIONS:
		(void)nkpi_kmip_parse_versions(r, v, 4, &n);
		break;
	default:
		if (nkpi_kmip_parse_id(r, id) == NKP_OK && strlen(id) == 0) {
			abort();
		}
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkpi_kmip_result r;
	uint32_t op;

	if (size < 1) {
		return 0;
	}
	op = ops[data[0] % (sizeof(ops) / sizeof(ops[0]))];
	if (nkpi_kmip_parse_response(data + 1, size - 1, NKPI_TTLV_MAX_MESSAGE, op, &r) != NKP_OK) {
		return 0;
	}
	if ((nkpi_kmip_result_err(&r) == NKP_OK) != (r.status == NKPI_KMIP_STATUS_SUCCESS)) {
		abort();
	}
	for (size_t i = 0; r.message[i] != '\0'; i++) {
		if ((unsigned char)r.message[i] < 0x20 || (unsigned char)r.message[i] >= 0x7f) {
			abort(); /* a server's control bytes reach a log */
		}
	}
	read_payload(op, &r);
	return 0;
}
