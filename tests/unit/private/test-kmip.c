/* KMIP 1.4 messages of the standard provider: its requests byte for byte
 * against PyKMIP's codec and the KMIP 1.4 test case SKLC-M-1-14
 * (tests/vectors/kmip-v1.txt, kmip-ttlv-v1.txt), its readers on PyKMIP's
 * answers, and every way an answer is refused. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "kmip-client.h"
#include "kmip.h"

#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "ttlv-vectors.h" /* and vectors.h */

#define MAX NKPI_TTLV_MAX_MESSAGE

static void setup(void)
{
	cr_assert_eq(sodium_init() < 0, 0);
	vec_load("kmip-v1.txt");
}

TestSuite(kmip, .init = setup);

Test(kmip, requests_are_those_pykmip_writes)
{
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_discover(&e);
	expect_vector(&e, "pykmip_discover_request");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_get(&e, "1");
	expect_vector(&e, "pykmip_get_request");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_get_state(&e, "1");
	expect_vector(&e, "pykmip_get_state_request");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_locate(&e, "nkp-test", 64);
	expect_vector(&e, "pykmip_locate_request");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_revoke(&e, "1", NKPI_KMIP_REVOKE_CESSATION_OF_OPERATION);
	expect_vector(&e, "pykmip_revoke_request");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_id(&e, NKPI_KMIP_OP_ACTIVATE, "1");
	expect_vector(&e, "pykmip_activate_request");
}

Test(kmip, create_and_destroy_are_the_sklc_m_1_14_test_case)
{
	nkpi_ttlv_enc e;
	const uint8_t *out;
	size_t len, wlen, diff = 0, at = 0;
	uint8_t *want;

	vec_load("kmip-ttlv-v1.txt");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_id(&e, NKPI_KMIP_OP_DESTROY, "1");
	expect_vector(&e, "sklc_m_1_14_destroy_request");

	/* Create: the test case's message but for one byte, the usage mask
	 * (Wrap Key | Unwrap Key for Encrypt | Decrypt). */
	want = vec_bytes("sklc_m_1_14_create_request", &wlen);
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_create(&e, "SKLC-M-1-14");
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_OK);
	cr_assert_eq(len, wlen);
	for (size_t i = 0; i < len; i++) {
		if (out[i] != want[i]) {
			diff++;
			at = i;
		}
	}
	cr_assert_eq(diff, 1, "%zu bytes differ", diff);
	cr_assert_eq(want[at], 0x0c);
	cr_assert_eq(out[at], 0x30);
	/* ... and that byte is the usage mask's value. */
	cr_assert_eq(memcmp(out + at - 11, "\x42\x00\x0b\x02\x00\x00\x00\x04", 8), 0);
	free(want);
	nkpi_ttlv_enc_fini(&e);
}

Test(kmip, add_attribute_is_one_text_attribute)
{
	static const uint8_t payload[] = {
		/* Request Payload, 0x38 bytes */
		0x42,
		0x00,
		0x79,
		0x01,
		0x00,
		0x00,
		0x00,
		0x38,
		/* Unique Identifier "7" */
		0x42,
		0x00,
		0x94,
		0x07,
		0x00,
		0x00,
		0x00,
		0x01,
		'7',
		0,
		0,
		0,
		0,
		0,
		0,
		0,
		/* Attribute, 0x20 bytes */
		0x42,
		0x00,
		0x08,
		0x01,
		0x00,
		0x00,
		0x00,
		0x20,
		/* Attribute Name "x-Vendor" */
		0x42,
		0x00,
		0x0a,
		0x07,
		0x00,
		0x00,
		0x00,
		0x08,
		'x',
		'-',
		'V',
		'e',
		'n',
		'd',
		'o',
		'r',
		/* Attribute Value "nkp" */
		0x42,
		0x00,
		0x0b,
		0x07,
		0x00,
		0x00,
		0x00,
		0x03,
		'n',
		'k',
		'p',
		0,
		0,
		0,
		0,
		0,
	};
	const nkpi_kmip_attr a = {"x-Vendor", "nkp"};
	nkpi_ttlv_enc e;
	const uint8_t *out;
	size_t len;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_add_attribute(&e, "7", &a);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_OK);
	cr_assert_eq(len, 0x60 + sizeof(payload)); /* message, header, item, operation */
	cr_assert_arr_eq(out + len - sizeof(payload), payload, sizeof(payload));
	cr_assert_eq(out[len - sizeof(payload) - 5], NKPI_KMIP_OP_ADD_ATTRIBUTE);
	nkpi_ttlv_enc_fini(&e);
}

Test(kmip, text_that_is_not_utf8_is_refused)
{
	nkpi_ttlv_enc e;
	const uint8_t *out;
	size_t len;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_kmip_req_create(&e, "bad\xff");
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID);
	nkpi_ttlv_enc_fini(&e);
}

/* Parses vector `key` as the answer to `op`. */
static uint8_t *parse(const char *key, uint32_t op, nkpi_kmip_result *r)
{
	size_t len;
	uint8_t *b = vec_bytes(key, &len);

	cr_assert_eq(nkpi_kmip_parse_response(b, len, MAX, op, r), NKP_OK, "%s", key);
	return b;
}

Test(kmip, pykmip_answers_are_read)
{
	nkpi_kmip_result r;
	uint8_t key[NKPI_KMIP_KEY_BYTES], want[NKPI_KMIP_KEY_BYTES];
	char id[NKPI_KMIP_ID_MAX], ids[4][NKPI_KMIP_ID_MAX];
	nkpi_kmip_version v[4];
	uint32_t state;
	size_t n;
	uint8_t *b;

	b = parse("pykmip_get_response", NKPI_KMIP_OP_GET, &r);
	cr_assert_eq(nkpi_kmip_result_err(&r), NKP_OK);
	cr_assert_eq(nkpi_kmip_parse_key(&r, "1", key), NKP_OK);
	for (unsigned i = 0; i < sizeof(want); i++) {
		want[i] = (uint8_t)i;
	}
	cr_assert_arr_eq(key, want, sizeof(key));
	cr_assert_eq(nkpi_kmip_parse_key(&r, "2", key), NKP_ERR_PARSE, "another object's key");
	free(b);

	b = parse("pykmip_get_state_response", NKPI_KMIP_OP_GET_ATTRIBUTES, &r);
	cr_assert_eq(nkpi_kmip_parse_state(&r, "1", &state), NKP_OK);
	cr_assert_eq(state, NKPI_KMIP_STATE_DEACTIVATED);
	free(b);

	b = parse("pykmip_locate_response", NKPI_KMIP_OP_LOCATE, &r);
	cr_assert_eq(nkpi_kmip_parse_locate(&r, ids, 4, &n), NKP_OK);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(ids[0], "1");
	cr_assert_str_eq(ids[1], "2");
	cr_assert_eq(nkpi_kmip_parse_locate(&r, ids, 1, &n), NKP_ERR_TOO_LARGE);
	free(b);

	b = parse("pykmip_discover_response", NKPI_KMIP_OP_DISCOVER_VERSIONS, &r);
	cr_assert_eq(nkpi_kmip_parse_versions(&r, v, 4, &n), NKP_OK);
	cr_assert_eq(n, 2);
	cr_assert(v[0].major == 1 && v[0].minor == 4 && v[1].major == 1 && v[1].minor == 2);
	free(b);

	b = parse("pykmip_activate_response", NKPI_KMIP_OP_ACTIVATE, &r);
	cr_assert_eq(nkpi_kmip_parse_id(&r, id), NKP_OK);
	cr_assert_str_eq(id, "1");
	free(b);

	b = parse("pykmip_not_found_response", NKPI_KMIP_OP_GET, &r);
	cr_assert_eq(r.status, NKPI_KMIP_STATUS_OPERATION_FAILED);
	cr_assert_eq(nkpi_kmip_result_err(&r), NKP_ERR_NOT_FOUND);
	cr_assert_str_eq(r.message, "Could not locate object: 9");
	cr_assert_eq(nkpi_kmip_parse_key(&r, "9", key), NKP_ERR_PARSE, "a failure has no key");
	free(b);
}

Test(kmip, test_case_answers_are_read)
{
	nkpi_kmip_result r;
	char id[NKPI_KMIP_ID_MAX];
	uint8_t key[NKPI_KMIP_KEY_BYTES];
	uint8_t *b;

	vec_load("kmip-ttlv-v1.txt");
	b = parse("sklc_m_1_14_create_response", NKPI_KMIP_OP_CREATE, &r);
	cr_assert_eq(nkpi_kmip_parse_id(&r, id), NKP_OK);
	cr_assert_str_eq(id, "1");
	free(b);
	/* Protocol 1.1 is a 1.x answer too. */
	b = parse("v11_3_1_1_create_response", NKPI_KMIP_OP_CREATE, &r);
	cr_assert_eq(nkpi_kmip_parse_id(&r, id), NKP_OK);
	cr_assert_str_eq(id, "fb4b5b9c-6188-4c63-8142-fe9c328129fc");
	free(b);
	/* A 3DES key of 168 bits is not the AES-256 key asked for. */
	b = parse("v11_3_1_3_get_response", NKPI_KMIP_OP_GET, &r);
	cr_assert_eq(nkpi_kmip_parse_key(&r, "49a1ca88-6bea-4fb2-b450-7e58802c3038", key),
		     NKP_ERR_PARSE);
	free(b);
	/* The answer to another operation is refused. */
	size_t len;

	b = vec_bytes("sklc_m_1_14_create_response", &len);
	cr_assert_eq(nkpi_kmip_parse_response(b, len, MAX, NKPI_KMIP_OP_GET, &r), NKP_ERR_PARSE);
	free(b);
}

/* ---- answers written here, altered one way each ---- */

typedef struct shape {
	int32_t major;
	int32_t batch_count;
	bool operation; /* write the Operation */
	uint32_t op;
	uint32_t status;
	bool stamp;
	bool twice; /* the Result Status twice */
	int key_len;
	uint32_t alg;
	int32_t bits;
	uint32_t format;
	bool wrapped;
	const char *id;
	const char *message;
} shape;

static shape good(void)
{
	return (shape){.major = 1,
		       .batch_count = 1,
		       .operation = true,
		       .op = NKPI_KMIP_OP_GET,
		       .status = NKPI_KMIP_STATUS_SUCCESS,
		       .stamp = true,
		       .key_len = 32,
		       .alg = NKPI_KMIP_ALG_AES,
		       .bits = 256,
		       .format = NKPI_KMIP_KEY_FORMAT_RAW,
		       .id = "k1"};
}

/* Opens a Response Message: its header (protocol MAJOR.4, the spec's time
 * stamp if `stamp`, `count` batch items), then one Batch Item, left open. */
static void begin_response(nkpi_ttlv_enc *e, int32_t major, bool stamp, int32_t count)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_RESPONSE_MESSAGE);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_RESPONSE_HEADER);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_PROTOCOL_VERSION);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR, major);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
	nkpi_ttlv_end(e);
	if (stamp) {
		nkpi_ttlv_datetime(e, NKPI_KMIP_TAG_TIME_STAMP, 0x47DA67F8);
	}
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_BATCH_COUNT, count);
	nkpi_ttlv_end(e);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_BATCH_ITEM);
}

/* A Get answer of shape `s`, parsed as the answer to a Get of "k1". */
static nkp_err get_answer(const shape *s, uint8_t key[NKPI_KMIP_KEY_BYTES], nkpi_kmip_result *r)
{
	static const uint8_t material[40] = {1, 2, 3};
	nkpi_ttlv_enc e;
	const uint8_t *out;
	size_t len;
	nkp_err err;

	nkpi_ttlv_enc_init(&e, MAX);
	begin_response(&e, s->major, s->stamp, s->batch_count);
	if (s->operation) {
		nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, s->op);
	}
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_RESULT_STATUS, s->status);
	if (s->twice) {
		nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_RESULT_STATUS, s->status);
	}
	if (s->message != NULL) {
		nkpi_ttlv_text(&e, NKPI_KMIP_TAG_RESULT_MESSAGE, s->message, strlen(s->message));
	}
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_RESPONSE_PAYLOAD);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	nkpi_ttlv_text(&e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, s->id, strlen(s->id));
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_SYMMETRIC_KEY);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_KEY_BLOCK);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_KEY_FORMAT_TYPE, s->format);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_KEY_VALUE);
	nkpi_ttlv_bytes(&e, NKPI_KMIP_TAG_KEY_MATERIAL, material, (size_t)s->key_len);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, s->alg);
	nkpi_ttlv_integer(&e, NKPI_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, s->bits);
	if (s->wrapped) {
		nkpi_ttlv_begin(&e, 0x420046); /* Key Wrapping Data */
		nkpi_ttlv_enum(&e, 0x42009e, 1);
		nkpi_ttlv_end(&e);
	}
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_OK);
	err = nkpi_kmip_parse_response(out, len, MAX, NKPI_KMIP_OP_GET, r);
	if (err == NKP_OK) {
		err = nkpi_kmip_result_err(r);
	}
	if (err == NKP_OK) {
		err = nkpi_kmip_parse_key(r, "k1", key);
	}
	nkpi_ttlv_enc_fini(&e);
	return err;
}

Test(kmip, every_altered_answer_is_refused)
{
	uint8_t key[NKPI_KMIP_KEY_BYTES];
	nkpi_kmip_result r;
	shape s = good();
	static const struct {
		const char *what;
		size_t off;
		int64_t value;
	} * c, cases[] = {
		       {"protocol 2.0", offsetof(shape, major), 2},
		       {"two batch items counted", offsetof(shape, batch_count), 2},
		       {"another operation", offsetof(shape, op), NKPI_KMIP_OP_CREATE},
		       {"no operation named", offsetof(shape, operation), 0},
		       {"no time stamp", offsetof(shape, stamp), 0},
		       {"the status twice", offsetof(shape, twice), 1},
		       {"operation pending", offsetof(shape, status),
			NKPI_KMIP_STATUS_OPERATION_PENDING},
		       {"operation undone", offsetof(shape, status),
			NKPI_KMIP_STATUS_OPERATION_UNDONE},
		       {"a 31-byte key", offsetof(shape, key_len), 31},
		       {"a 33-byte key", offsetof(shape, key_len), 33},
		       {"3DES", offsetof(shape, alg), 0x02},
		       {"128 bits", offsetof(shape, bits), 128},
		       {"transparent format", offsetof(shape, format), 0x07},
		       {"a wrapped key", offsetof(shape, wrapped), 1},
	       };

	cr_assert_eq(get_answer(&s, key, &r), NKP_OK, "the unaltered answer");
	cr_assert_eq(key[0], 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *f;

		c = &cases[i];
		s = good();
		f = (uint8_t *)&s + c->off;
		if (c->off == offsetof(shape, operation) || c->off == offsetof(shape, stamp) ||
		    c->off == offsetof(shape, twice) || c->off == offsetof(shape, wrapped)) {
			*(bool *)f = c->value != 0;
		} else if (c->off == offsetof(shape, op) || c->off == offsetof(shape, status) ||
			   c->off == offsetof(shape, alg) || c->off == offsetof(shape, format)) {
			*(uint32_t *)f = (uint32_t)c->value;
		} else if (c->off == offsetof(shape, key_len)) {
			*(int *)f = (int)c->value;
		} else {
			*(int32_t *)f = (int32_t)c->value;
		}
		memset(key, 0, sizeof(key));
		cr_expect_eq(get_answer(&s, key, &r), NKP_ERR_PARSE, "%s: accepted", c->what);
		cr_expect_eq(key[0], 0, "%s: key written", c->what);
	}
	s = good();
	s.id = "k2";
	cr_expect_eq(get_answer(&s, key, &r), NKP_ERR_PARSE, "another object's key");
}

Test(kmip, a_failure_is_mapped_and_its_message_kept_printable)
{
	uint8_t key[NKPI_KMIP_KEY_BYTES];
	nkpi_kmip_result r;
	shape s = good();
	char buf[32];

	s.status = NKPI_KMIP_STATUS_OPERATION_FAILED;
	s.message = "no\x1b[31m such\nkey";
	cr_assert_eq(get_answer(&s, key, &r), NKP_ERR_REFUSED);
	cr_assert_str_eq(r.message, "no?[31m such?key");
	/* A failure need not name its operation. */
	s.operation = false;
	cr_assert_eq(get_answer(&s, key, &r), NKP_ERR_REFUSED);
	r.reason = NKPI_KMIP_REASON_ITEM_NOT_FOUND;
	cr_assert_eq(nkpi_kmip_result_err(&r), NKP_ERR_NOT_FOUND);
	r.reason = NKPI_KMIP_REASON_PERMISSION_DENIED;
	cr_assert_eq(nkpi_kmip_result_err(&r), NKP_ERR_PERM);
	cr_assert_str_eq(nkpi_kmip_reason_name(NKPI_KMIP_REASON_INVALID_FIELD, buf, sizeof(buf)),
			 "Invalid Field");
	cr_assert_str_eq(nkpi_kmip_reason_name(0x77, buf, sizeof(buf)), "reason 0x77");
	cr_assert_str_eq(nkpi_kmip_state_name(NKPI_KMIP_STATE_ACTIVE, buf, sizeof(buf)), "active");
	cr_assert_str_eq(nkpi_kmip_state_name(9, buf, sizeof(buf)), "state 0x9");
}

Test(kmip, truncated_or_oversized_answers_are_refused)
{
	nkpi_kmip_result r;
	size_t len;
	uint8_t *b = vec_bytes("pykmip_get_response", &len);

	for (size_t cut = 0; cut < len; cut += 8) {
		cr_expect_eq(nkpi_kmip_parse_response(b, cut, MAX, NKPI_KMIP_OP_GET, &r),
			     NKP_ERR_PARSE, "cut at %zu", cut);
	}
	cr_assert_eq(nkpi_kmip_parse_response(b, len, len - 1, NKPI_KMIP_OP_GET, &r),
		     NKP_ERR_TOO_LARGE);
	b[len - 1] ^= 1; /* a padding byte */
	cr_assert_eq(nkpi_kmip_parse_response(b, len, MAX, NKPI_KMIP_OP_GET, &r), NKP_ERR_PARSE);
	free(b);
}

Test(kmip, urls)
{
	char host[64];
	uint16_t port;

	cr_assert_eq(nkpi_kmip_parse_url("kmip://kms.example.test", host, sizeof(host), &port),
		     NKP_OK);
	cr_assert_str_eq(host, "kms.example.test");
	cr_assert_eq(port, 5696);
	cr_assert_eq(nkpi_kmip_parse_url("kmip://127.0.0.1:15696", host, sizeof(host), &port),
		     NKP_OK);
	cr_assert_str_eq(host, "127.0.0.1");
	cr_assert_eq(port, 15696);
	cr_assert_eq(nkpi_kmip_parse_url("kmip://[::1]:7", host, sizeof(host), &port), NKP_OK);
	cr_assert_str_eq(host, "::1");
	cr_assert_eq(port, 7);
	static const char *const bad[] = {
		"https://kms:5696", "kmip://",		"kmip://:5696",	 "kmip://kms:",
		"kmip://kms:0",	    "kmip://kms:65536", "kmip://kms:5x", "kmip://kms/path",
		"kmip://u@kms",	    "kmip://[::1",	"kmip://[::1]x", "kmip://kms:-1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(nkpi_kmip_parse_url(bad[i], host, sizeof(host), &port),
			     NKP_ERR_INVALID, "%s accepted", bad[i]);
	}
	cr_assert_eq(nkpi_kmip_parse_url("kmip://a-very-long-host-name", host, 8, &port),
		     NKP_ERR_INVALID);
}

/* A host name reaches logs, events and `provider show`: no control bytes,
 * no blanks, nothing beyond ASCII. */
Test(kmip, url_host_printable)
{
	static const char *const bad[] = {
		"kmip://kms\x1b[2J:5696", "kmip://kms\nforged event", "kmip://kms example",
		"kmip://kms\x7f",	  "kmip://k\xc2\x9bms",	      "kmip://[::1\x1b]:7",
		"kmip://kms\t",
	};
	char host[64];
	uint16_t port;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(nkpi_kmip_parse_url(bad[i], host, sizeof(host), &port),
			     NKP_ERR_INVALID, "bad URL %zu accepted", i);
	}
}

/* The refusal of such a URL quotes it: printable, as it goes to the
 * admin's terminal. */
Test(kmip, url_refusal_printable)
{
	const char *servers[] = {"kmip://kms\x1b]0;owned\x07\x1b[2J\n"};
	static const uint8_t pem[] = "x";
	nkpi_kmip_config cfg = {
		.servers = servers,
		.n_servers = 1,
		.ca_pem = pem,
		.ca_len = 1,
		.cert_pem = pem,
		.cert_len = 1,
		.key_pem = pem,
		.key_len = 1,
	};
	nkpi_kmip *k = NULL;
	char why[256] = "";

	cr_assert_eq(nkpi_kmip_new(&cfg, &k, why, sizeof(why)), NKP_ERR_INVALID);
	cr_assert_null(k);
	cr_assert_neq(why[0], '\0');
	for (const char *p = why; *p != '\0'; p++) {
		cr_expect((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f,
			  "byte 0x%02x in the refusal", (unsigned char)*p);
	}
}

/* A Create answer naming object `id`, read with nkpi_kmip_parse_id. */
static nkp_err create_answer_id(const char *id, char out[NKPI_KMIP_ID_MAX])
{
	nkpi_ttlv_enc e;
	nkpi_kmip_result r;
	const uint8_t *b;
	size_t len;
	nkp_err err;

	nkpi_ttlv_enc_init(&e, MAX);
	begin_response(&e, 1, true, 1);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_CREATE);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_RESULT_STATUS, NKPI_KMIP_STATUS_SUCCESS);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_RESPONSE_PAYLOAD);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	nkpi_ttlv_text(&e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id, strlen(id));
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &b, &len), NKP_OK);
	err = nkpi_kmip_parse_response(b, len, MAX, NKPI_KMIP_OP_CREATE, &r);
	if (err == NKP_OK) {
		err = nkpi_kmip_parse_id(&r, out);
	}
	nkpi_ttlv_enc_fini(&e);
	return err;
}

/* A server's object id reaches logs and terminals as the server's messages
 * do: C1 controls (U+0080 to U+009F, CSI among them) are refused like C0
 * ones; other UTF-8 still passes. */
Test(kmip, server_ids_without_controls)
{
	char id[NKPI_KMIP_ID_MAX];

	cr_assert_eq(create_answer_id("fb4b5b9c-6188", id), NKP_OK);
	cr_assert_str_eq(id, "fb4b5b9c-6188");
	cr_assert_eq(create_answer_id("cl\xc3\xa9", id), NKP_OK);
	cr_expect_eq(create_answer_id("\xc2\x9b"
				      "2J",
				      id),
		     NKP_ERR_PARSE, "CSI accepted");
	cr_expect_eq(create_answer_id("k\xc2\x85", id), NKP_ERR_PARSE, "NEL accepted");
	cr_expect_eq(create_answer_id("k\x1b[2J", id), NKP_ERR_PARSE, "ESC accepted");
}
