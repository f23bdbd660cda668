/* fuzz-ttlv: a KMIP message as a key server sends it, through
 * nkpi_ttlv_decode() (nkp/private/ttlv.c). Input: the message's bytes.
 * Whatever decodes is walked whole (every item at every depth, every
 * value read with its getter) and must be the one spelling of what it
 * holds: written again by the encoder, the same bytes. A message of at
 * least a header must get the same size from nkpi_ttlv_message_size().
 * Seeds: tests/vectors/kmip-ttlv-v1.txt (gen-corpus.c). */
#include "fuzz-util.h"

#include "ttlv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

/* Reads every value under `it`; aborts if a getter refuses its own type. */
static void walk(const nkpi_ttlv_item *it)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item in;
	const uint8_t *v;
	const char *s;
	int64_t i64;
	int32_t i32;
	uint32_t u32;
	size_t n;
	bool b;
	nkp_err err;

	switch (it->type) {
	case NKPI_TTLV_STRUCTURE:
		nkpi_ttlv_enter(it, &c);
		while (nkpi_ttlv_next(&c, &in)) {
			if (in.depth != it->depth + 1 || in.depth > NKPI_TTLV_MAX_DEPTH + 1) {
				abort();
			}
			walk(&in);
		}
		return;
	case NKPI_TTLV_INTEGER:
		err = nkpi_ttlv_get_integer(it, &i32);
		break;
	case NKPI_TTLV_LONG:
		err = nkpi_ttlv_get_long(it, &i64);
		break;
	case NKPI_TTLV_BIG:
		err = nkpi_ttlv_get_big(it, &v, &n);
		break;
	case NKPI_TTLV_ENUM:
		err = nkpi_ttlv_get_enum(it, &u32);
		break;
	case NKPI_TTLV_BOOL:
		err = nkpi_ttlv_get_bool(it, &b);
		break;
	case NKPI_TTLV_TEXT:
		err = nkpi_ttlv_get_text(it, &s, &n);
		if (err == NKP_OK && memchr(s, 0, n) != NULL) {
			abort(); /* the decoder promised no NUL */
		}
		break;
	case NKPI_TTLV_BYTES:
		err = nkpi_ttlv_get_bytes(it, &v, &n);
		break;
	case NKPI_TTLV_DATETIME:
		err = nkpi_ttlv_get_datetime(it, &i64);
		break;
	case NKPI_TTLV_INTERVAL:
		err = nkpi_ttlv_get_interval(it, &u32);
		break;
	default:
		abort(); /* a type the decoder should have refused */
	}
	if (err != NKP_OK) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkpi_ttlv_item top;
	nkpi_ttlv_enc e;
	const uint8_t *out;
	size_t len, total;

	if (nkpi_ttlv_decode(data, size, NKPI_TTLV_MAX_MESSAGE, &top) != NKP_OK) {
		return 0;
	}
	walk(&top);
	if (top.type == NKPI_TTLV_STRUCTURE &&
	    (nkpi_ttlv_message_size(data, NKPI_TTLV_MAX_MESSAGE, &total) != NKP_OK ||
	     total != size)) {
		abort();
	}
	nkpi_ttlv_enc_init(&e, NKPI_TTLV_MAX_MESSAGE);
	nkpi_ttlv_enc_item(&e, &top);
	if (nkpi_ttlv_enc_finish(&e, &out, &len) != NKP_OK || len != size ||
	    memcmp(out, data, size) != 0) {
		abort(); /* two spellings of one message */
	}
	nkpi_ttlv_enc_fini(&e);
	return 0;
}
