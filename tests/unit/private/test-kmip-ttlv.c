/* The KMIP TTLV codec: the known answers of tests/vectors/kmip-ttlv-v1.txt
 * (KMIP 1.4 spec examples and test-case messages) written by the encoder
 * and walked by the decoder, every check of the decoder, the limits. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "ttlv.h"

#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "ttlv-vectors.h" /* and vectors.h */

#define MAX NKPI_TTLV_MAX_MESSAGE

static void setup(void)
{
	cr_assert_eq(sodium_init() < 0, 0);
	vec_load("kmip-ttlv-v1.txt");
}

TestSuite(kmip_ttlv, .init = setup);

Test(kmip_ttlv, encoder_writes_the_spec_examples)
{
	static const uint8_t big[] = {0x00, 0x00, 0x00, 0x00, 0x03, 0xfd, 0x35, 0xeb,
				      0x6b, 0xc2, 0xdf, 0x46, 0x18, 0x08, 0x00, 0x00};
	static const uint8_t bytes[] = {0x01, 0x02, 0x03};
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_integer(&e, 0x420020, 8);
	expect_vector(&e, "spec_integer");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_long(&e, 0x420020, 123456789000000000);
	expect_vector(&e, "spec_long_integer");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_big(&e, 0x420020, big, sizeof(big));
	expect_vector(&e, "spec_big_integer");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_enum(&e, 0x420020, 255);
	expect_vector(&e, "spec_enumeration");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_bool(&e, 0x420020, true);
	expect_vector(&e, "spec_boolean");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_text(&e, 0x420020, "Hello World", 11);
	expect_vector(&e, "spec_text_string");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_bytes(&e, 0x420020, bytes, sizeof(bytes));
	expect_vector(&e, "spec_byte_string");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_datetime(&e, 0x420020, 1205495800); /* 2008-03-14 11:56:40 UTC */
	expect_vector(&e, "spec_date_time");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_interval(&e, 0x420020, 10u * 24 * 3600);
	expect_vector(&e, "spec_interval");
	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_begin(&e, 0x420020);
	nkpi_ttlv_enum(&e, 0x420004, 254);
	nkpi_ttlv_integer(&e, 0x420005, 255);
	nkpi_ttlv_end(&e);
	expect_vector(&e, "spec_structure");
}

/* Protocol Version 1.`minor`. */
static void version(nkpi_ttlv_enc *e, int32_t minor)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_PROTOCOL_VERSION);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR, minor);
	nkpi_ttlv_end(e);
}

static void request_header(nkpi_ttlv_enc *e, int32_t minor)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_HEADER);
	version(e, minor);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_end(e);
}

static void response_header(nkpi_ttlv_enc *e, int32_t minor, int64_t now)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_RESPONSE_HEADER);
	version(e, minor);
	nkpi_ttlv_datetime(e, NKPI_KMIP_TAG_TIME_STAMP, now);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_end(e);
}

static void text(nkpi_ttlv_enc *e, uint32_t tag, const char *s)
{
	nkpi_ttlv_text(e, tag, s, strlen(s));
}

/* A Create of an AES key of `bits` under protocol 1.`minor`, usage
 * Encrypt|Decrypt, and a Name if `name` is not NULL. */
static void create_request(nkpi_ttlv_enc *e, int32_t minor, int32_t bits, const char *name)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	request_header(e, minor);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_CREATE);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_PAYLOAD);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_TEMPLATE_ATTRIBUTE);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Algorithm");
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE, NKPI_KMIP_ALG_AES);
	nkpi_ttlv_end(e);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Length");
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE, bits);
	nkpi_ttlv_end(e);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, "Cryptographic Usage Mask");
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE,
			  NKPI_KMIP_USAGE_ENCRYPT | NKPI_KMIP_USAGE_DECRYPT);
	nkpi_ttlv_end(e);
	if (name != NULL) {
		nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE);
		text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, "Name");
		nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE);
		text(e, NKPI_KMIP_TAG_NAME_VALUE, name);
		nkpi_ttlv_enum(e, NKPI_KMIP_TAG_NAME_TYPE, NKPI_KMIP_NAME_UNINTERPRETED_TEXT);
		nkpi_ttlv_end(e);
		nkpi_ttlv_end(e); /* Attribute */
	}
	nkpi_ttlv_end(e); /* Template-Attribute */
	nkpi_ttlv_end(e); /* Request Payload */
	nkpi_ttlv_end(e); /* Batch Item */
	nkpi_ttlv_end(e); /* Request Message */
}

/* The response to a Create that made key `id`. */
static void create_response(nkpi_ttlv_enc *e, int32_t minor, int64_t now, const char *id)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_RESPONSE_MESSAGE);
	response_header(e, minor, now);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_CREATE);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_RESULT_STATUS, NKPI_KMIP_STATUS_SUCCESS);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_RESPONSE_PAYLOAD);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	nkpi_ttlv_end(e);
	nkpi_ttlv_end(e);
	nkpi_ttlv_end(e);
}

Test(kmip_ttlv, encoder_writes_the_create_request_of_sklc_m_1_14)
{
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	create_request(&e, 4, 256, "SKLC-M-1-14");
	expect_vector(&e, "sklc_m_1_14_create_request");
}

Test(kmip_ttlv, encoder_writes_the_create_response_of_sklc_m_1_14)
{
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	create_response(&e, 4, 0x47da67f8, "1");
	expect_vector(&e, "sklc_m_1_14_create_response");
}

Test(kmip_ttlv, encoder_writes_the_create_and_get_of_the_v1_1_test_cases)
{
	static const uint8_t key[24] = {0x73, 0x67, 0x57, 0x80, 0x51, 0x01, 0x2a, 0x6d,
					0x13, 0x4a, 0x85, 0x5e, 0x25, 0xc8, 0xcd, 0x5e,
					0x4c, 0xa1, 0x31, 0x45, 0x57, 0x29, 0xd3, 0xc8};
	static const char id[] = "49a1ca88-6bea-4fb2-b450-7e58802c3038";
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	create_request(&e, 1, 128, NULL);
	expect_vector(&e, "v11_3_1_1_create_request");
	nkpi_ttlv_enc_init(&e, MAX);
	create_response(&e, 1, 0x4f9a54e5, "fb4b5b9c-6188-4c63-8142-fe9c328129fc");
	expect_vector(&e, "v11_3_1_1_create_response");

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	request_header(&e, 1);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_GET);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_PAYLOAD);
	text(&e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	expect_vector(&e, "v11_3_1_3_get_request");

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_RESPONSE_MESSAGE);
	response_header(&e, 1, 0x4f9a54e7);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_GET);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_RESULT_STATUS, NKPI_KMIP_STATUS_SUCCESS);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_RESPONSE_PAYLOAD);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	text(&e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_SYMMETRIC_KEY);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_KEY_BLOCK);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_KEY_FORMAT_TYPE, NKPI_KMIP_KEY_FORMAT_RAW);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_KEY_VALUE);
	nkpi_ttlv_bytes(&e, NKPI_KMIP_TAG_KEY_MATERIAL, key, sizeof(key));
	nkpi_ttlv_end(&e);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, 0x02); /* 3DES */
	nkpi_ttlv_integer(&e, NKPI_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, 168);
	nkpi_ttlv_end(&e); /* Key Block */
	nkpi_ttlv_end(&e); /* Symmetric Key */
	nkpi_ttlv_end(&e); /* Response Payload */
	nkpi_ttlv_end(&e); /* Batch Item */
	nkpi_ttlv_end(&e); /* Response Message */
	expect_vector(&e, "v11_3_1_3_get_response");
}

Test(kmip_ttlv, encoder_writes_the_destroy_and_query_requests)
{
	static const uint8_t batch_id = 0x01;
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	request_header(&e, 4);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_DESTROY);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_PAYLOAD);
	text(&e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, "1");
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	expect_vector(&e, "sklc_m_1_14_destroy_request");

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	request_header(&e, 4);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_OPERATION, NKPI_KMIP_OP_QUERY);
	nkpi_ttlv_bytes(&e, NKPI_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, &batch_id, 1);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_PAYLOAD);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_QUERY_FUNCTION, NKPI_KMIP_QUERY_OPERATIONS);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_QUERY_FUNCTION, NKPI_KMIP_QUERY_OBJECTS);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_QUERY_FUNCTION, NKPI_KMIP_QUERY_SERVER_INFORMATION);
	nkpi_ttlv_enum(&e, NKPI_KMIP_TAG_QUERY_FUNCTION, 4); /* application namespaces */
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	nkpi_ttlv_end(&e);
	expect_vector(&e, "tl_m_1_14_query_request");
}

static const char *const all_vectors[] = {
	"spec_integer",
	"spec_long_integer",
	"spec_big_integer",
	"spec_enumeration",
	"spec_boolean",
	"spec_text_string",
	"spec_byte_string",
	"spec_date_time",
	"spec_interval",
	"spec_structure",
	"sklc_m_1_14_create_request",
	"sklc_m_1_14_create_response",
	"sklc_m_1_14_destroy_request",
	"tl_m_1_14_query_request",
	"v11_3_1_1_create_request",
	"v11_3_1_1_create_response",
	"v11_3_1_3_get_request",
	"v11_3_1_3_get_response",
};

/* Items in all, at every depth. */
static size_t count_items(const nkpi_ttlv_item *it)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item in;
	size_t n = 1;

	if (it->type != NKPI_TTLV_STRUCTURE) {
		return n;
	}
	nkpi_ttlv_enter(it, &c);
	while (nkpi_ttlv_next(&c, &in)) {
		cr_assert_eq(in.depth, it->depth + 1);
		n += count_items(&in);
	}
	return n;
}

Test(kmip_ttlv, decoder_walks_every_vector_and_writes_it_again)
{
	for (size_t i = 0; i < sizeof(all_vectors) / sizeof(all_vectors[0]); i++) {
		size_t len, olen;
		uint8_t *b = vec_bytes(all_vectors[i], &len);
		const uint8_t *out;
		nkpi_ttlv_item top;
		nkpi_ttlv_enc e;

		cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &top), NKP_OK, "%s", all_vectors[i]);
		cr_assert_eq(top.depth, 1);
		cr_assert_gt(count_items(&top), 0);
		nkpi_ttlv_enc_init(&e, MAX);
		nkpi_ttlv_enc_item(&e, &top);
		cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &olen), NKP_OK);
		cr_assert_eq(olen, len, "%s", all_vectors[i]);
		cr_assert_arr_eq(out, b, len, "%s", all_vectors[i]);
		nkpi_ttlv_enc_fini(&e);
		free(b);
	}
}

Test(kmip_ttlv, decoder_reads_the_values_of_the_spec_examples)
{
	nkpi_ttlv_item it, in;
	nkpi_ttlv_cursor c;
	size_t len, n;
	uint8_t *b;
	int32_t i32;
	int64_t i64;
	uint32_t u32;
	bool yes;
	const char *s;
	const uint8_t *v;

	b = vec_bytes("spec_integer", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(it.tag, 0x420020);
	cr_assert_eq(nkpi_ttlv_get_integer(&it, &i32), NKP_OK);
	cr_assert_eq(i32, 8);
	cr_assert_eq(nkpi_ttlv_get_enum(&it, &u32), NKP_ERR_PARSE);
	free(b);
	b = vec_bytes("spec_long_integer", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_long(&it, &i64), NKP_OK);
	cr_assert_eq(i64, 123456789000000000);
	free(b);
	b = vec_bytes("spec_big_integer", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_big(&it, &v, &n), NKP_OK);
	cr_assert_eq(n, 16);
	cr_assert_eq(v[4], 0x03);
	free(b);
	b = vec_bytes("spec_boolean", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_bool(&it, &yes), NKP_OK);
	cr_assert(yes);
	free(b);
	b = vec_bytes("spec_text_string", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_text(&it, &s, &n), NKP_OK);
	cr_assert_eq(n, 11);
	cr_assert_eq(memcmp(s, "Hello World", 11), 0);
	free(b);
	b = vec_bytes("spec_byte_string", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_bytes(&it, &v, &n), NKP_OK);
	cr_assert_eq(n, 3);
	cr_assert_eq(v[2], 0x03);
	free(b);
	b = vec_bytes("spec_date_time", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_datetime(&it, &i64), NKP_OK);
	cr_assert_eq(i64, 1205495800);
	free(b);
	b = vec_bytes("spec_interval", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_get_interval(&it, &u32), NKP_OK);
	cr_assert_eq(u32, 864000);
	free(b);
	b = vec_bytes("spec_structure", &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	nkpi_ttlv_enter(&it, &c);
	cr_assert(nkpi_ttlv_next(&c, &in));
	cr_assert_eq(in.tag, 0x420004);
	cr_assert_eq(nkpi_ttlv_get_enum(&in, &u32), NKP_OK);
	cr_assert_eq(u32, 254);
	cr_assert(nkpi_ttlv_next(&c, &in));
	cr_assert_eq(in.tag, 0x420005);
	cr_assert_eq(nkpi_ttlv_get_integer(&in, &i32), NKP_OK);
	cr_assert_eq(i32, 255);
	cr_assert_not(nkpi_ttlv_next(&c, &in));
	free(b);
}

/* The first item tagged `tag` among the items of `s`; fails the test if
 * there is none. */
static nkpi_ttlv_item child(const nkpi_ttlv_item *s, uint32_t tag)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it;

	nkpi_ttlv_enter(s, &c);
	while (nkpi_ttlv_next(&c, &it)) {
		if (it.tag == tag) {
			return it;
		}
	}
	cr_assert_fail("no item %06x under %06x", tag, s->tag);
	return it;
}

Test(kmip_ttlv, decoder_finds_the_key_material_of_a_get_response)
{
	nkpi_ttlv_item top, item, field;
	size_t len, n;
	uint8_t *b = vec_bytes("v11_3_1_3_get_response", &len);
	const uint8_t *key;
	const char *id;
	uint32_t status;
	int32_t bits;

	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &top), NKP_OK);
	cr_assert_eq(top.tag, NKPI_KMIP_TAG_RESPONSE_MESSAGE);
	item = child(&top, NKPI_KMIP_TAG_BATCH_ITEM);
	field = child(&item, NKPI_KMIP_TAG_RESULT_STATUS);
	cr_assert_eq(nkpi_ttlv_get_enum(&field, &status), NKP_OK);
	cr_assert_eq(status, NKPI_KMIP_STATUS_SUCCESS);
	item = child(&item, NKPI_KMIP_TAG_RESPONSE_PAYLOAD);
	field = child(&item, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER);
	cr_assert_eq(nkpi_ttlv_get_text(&field, &id, &n), NKP_OK);
	cr_assert_eq(n, 36);
	cr_assert_eq(memcmp(id, "49a1ca88-", 9), 0);
	item = child(&item, NKPI_KMIP_TAG_SYMMETRIC_KEY);
	item = child(&item, NKPI_KMIP_TAG_KEY_BLOCK);
	field = child(&item, NKPI_KMIP_TAG_CRYPTOGRAPHIC_LENGTH);
	cr_assert_eq(nkpi_ttlv_get_integer(&field, &bits), NKP_OK);
	cr_assert_eq(bits, 168);
	item = child(&item, NKPI_KMIP_TAG_KEY_VALUE);
	field = child(&item, NKPI_KMIP_TAG_KEY_MATERIAL);
	cr_assert_eq(field.depth, 7);
	cr_assert_eq(nkpi_ttlv_get_bytes(&field, &key, &n), NKP_OK);
	cr_assert_eq(n, 24);
	cr_assert(key > b && key + n <= b + len, "a view into the message, not a copy");
	cr_assert_eq(key[0], 0x73);
	cr_assert_eq(key[23], 0xc8);
	cr_assert_eq(nkpi_ttlv_get_text(&field, &id, &n), NKP_ERR_PARSE);
	free(b);
}

/* Decodes `hex` (a vector, altered by the caller) expecting `want`. */
static void refused(const uint8_t *b, size_t len, nkp_err want, const char *what)
{
	nkpi_ttlv_item it;

	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), want, "%s", what);
}

static void refused_hex(const char *hex, nkp_err want, const char *what)
{
	uint8_t b[256];
	size_t n = strlen(hex) / 2;

	cr_assert_lt(n, sizeof(b));
	hex_exact(hex, b, n);
	refused(b, n, want, what);
}

Test(kmip_ttlv, decoder_refuses_every_malformed_item)
{
	/* Headers and lengths. */
	refused_hex("", NKP_ERR_PARSE, "empty");
	refused_hex("42002002000000", NKP_ERR_PARSE, "short header");
	refused_hex("420020020000000400000008", NKP_ERR_PARSE, "padding missing");
	refused_hex("4200200200000004000000080000000000", NKP_ERR_PARSE, "a byte after");
	refused_hex("4200200700000010414243", NKP_ERR_PARSE, "length past the end");
	refused_hex("42002007ffffffff00000000", NKP_ERR_PARSE, "huge length");
	/* Tags. */
	refused_hex("43002002000000040000000800000000", NKP_ERR_PARSE, "tag 430020");
	refused_hex("00002002000000040000000800000000", NKP_ERR_PARSE, "tag 000020");
	refused_hex("42000002000000040000000800000000", NKP_ERR_PARSE, "tag 420000");
	refused_hex("ff002002000000040000000800000000", NKP_ERR_PARSE, "tag ff0020");
	/* Types. */
	refused_hex("42002000000000040000000800000000", NKP_ERR_PARSE, "type 00");
	refused_hex("4200200b000000040000000800000000", NKP_ERR_PARSE, "type 0b");
	refused_hex("42002002000000080000000800000000", NKP_ERR_PARSE, "integer of 8");
	refused_hex("42002005000000030000000800000000", NKP_ERR_PARSE, "enumeration of 3");
	refused_hex("4200200a000000080000000800000000", NKP_ERR_PARSE, "interval of 8");
	refused_hex("42002003000000040000000800000000", NKP_ERR_PARSE, "long of 4");
	refused_hex("42002009000000040000000800000000", NKP_ERR_PARSE, "date-time of 4");
	refused_hex("42002006000000040000000100000000", NKP_ERR_PARSE, "boolean of 4");
	refused_hex("42002006000000080000000000000002", NKP_ERR_PARSE, "boolean 2");
	refused_hex("42002006000000080100000000000001", NKP_ERR_PARSE, "boolean high bit");
	refused_hex("420020040000000c00000000000000010000000000000000", NKP_ERR_PARSE, "big of 12");
	refused_hex("4200200400000000", NKP_ERR_PARSE, "big of 0");
	/* Padding. */
	refused_hex("42002002000000040000000800000001", NKP_ERR_PARSE, "integer padding");
	refused_hex("42002008000000030102030000000100", NKP_ERR_PARSE, "bytes padding");
	refused_hex("420020070000000b48656c6c6f20576f726c640000000001", NKP_ERR_PARSE,
		    "text padding");
	/* Text: UTF-8 without NUL. */
	refused_hex("42002007000000024100000000000000", NKP_ERR_PARSE, "text with NUL");
	refused_hex("4200200700000001ff00000000000000", NKP_ERR_PARSE, "text 0xff");
	refused_hex("4200200700000002c0af000000000000", NKP_ERR_PARSE, "overlong '/'");
	refused_hex("4200200700000003eda0800000000000", NKP_ERR_PARSE, "surrogate");
	refused_hex("4200200700000004f490808000000000", NKP_ERR_PARSE, "above U+10FFFF");
	refused_hex("4200200700000002e282000000000000", NKP_ERR_PARSE, "cut sequence");
	refused_hex("4200200700000001c300000000000000", NKP_ERR_PARSE, "cut at the end");
	/* Structures: items that overrun, or do not fill, their structure. */
	refused_hex("42002001000000104200040700000010414243444546474800000000", NKP_ERR_PARSE,
		    "child past its structure");
	refused_hex("4200200100000018420004020000000400000008000000000000000000000000",
		    NKP_ERR_PARSE, "structure not filled");
	refused_hex("42002001000000104200040200000004000000080000000100000000", NKP_ERR_PARSE,
		    "bad child padding");
	refused_hex("42002001000000104300040200000004000000080000000000000000", NKP_ERR_PARSE,
		    "bad child tag");
	refused_hex("42002001000000044200040000000000", NKP_ERR_PARSE, "structure of 4");
}

Test(kmip_ttlv, decoder_accepts_what_is_only_unusual)
{
	nkpi_ttlv_item it;
	uint8_t b[64];

	/* An extension tag, an empty structure, empty strings, UTF-8 of
	 * every length, a negative big integer. */
	hex_exact("54ffff02000000040000000800000000", b, 16);
	cr_assert_eq(nkpi_ttlv_decode(b, 16, MAX, &it), NKP_OK);
	cr_assert_eq(it.tag, 0x54ffff);
	hex_exact("4200200100000000", b, 8);
	cr_assert_eq(nkpi_ttlv_decode(b, 8, MAX, &it), NKP_OK);
	hex_exact("4200200700000000", b, 8);
	cr_assert_eq(nkpi_ttlv_decode(b, 8, MAX, &it), NKP_OK);
	hex_exact("420020070000000ac3a9e282acf09f998241000000000000", b, 24);
	cr_assert_eq(nkpi_ttlv_decode(b, 24, MAX, &it), NKP_OK);
	hex_exact("4200200400000008ffffffffffffff85", b, 16);
	cr_assert_eq(nkpi_ttlv_decode(b, 16, MAX, &it), NKP_OK);
}

/* `depth` structures, each the only item of the one around it. */
static uint8_t *nested(unsigned depth, size_t *len)
{
	uint8_t *b;

	*len = (size_t)depth * 8;
	b = calloc(1, *len);
	cr_assert_not_null(b);
	for (unsigned i = 0; i < depth; i++) {
		uint8_t *p = b + (size_t)i * 8;
		uint32_t n = (depth - i - 1) * 8;

		p[0] = 0x42;
		p[2] = 0x20;
		p[3] = NKPI_TTLV_STRUCTURE;
		p[4] = (uint8_t)(n >> 24);
		p[5] = (uint8_t)(n >> 16);
		p[6] = (uint8_t)(n >> 8);
		p[7] = (uint8_t)n;
	}
	return b;
}

Test(kmip_ttlv, decoder_refuses_deep_nesting)
{
	nkpi_ttlv_item it;
	size_t len;
	uint8_t *b = nested(NKPI_TTLV_MAX_DEPTH, &len);

	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_OK);
	free(b);
	b = nested(NKPI_TTLV_MAX_DEPTH + 1, &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, MAX, &it), NKP_ERR_TOO_LARGE);
	free(b);
	b = nested(100000, &len);
	cr_assert_eq(nkpi_ttlv_decode(b, len, len, &it), NKP_ERR_TOO_LARGE);
	free(b);
}

Test(kmip_ttlv, decoder_refuses_a_message_over_its_limit)
{
	nkpi_ttlv_item it;
	size_t len, total = 0;
	uint8_t *b = vec_bytes("sklc_m_1_14_create_request", &len);

	cr_assert_eq(nkpi_ttlv_decode(b, len, len, &it), NKP_OK);
	cr_assert_eq(nkpi_ttlv_decode(b, len, len - 1, &it), NKP_ERR_TOO_LARGE);
	cr_assert_eq(nkpi_ttlv_message_size(b, len, &total), NKP_OK);
	cr_assert_eq(total, len);
	cr_assert_eq(nkpi_ttlv_message_size(b, len - 8, &total), NKP_ERR_TOO_LARGE);
	b[3] = NKPI_TTLV_INTEGER;
	cr_assert_eq(nkpi_ttlv_message_size(b, len, &total), NKP_ERR_PARSE);
	b[3] = NKPI_TTLV_STRUCTURE;
	b[0] = 0x41;
	cr_assert_eq(nkpi_ttlv_message_size(b, len, &total), NKP_ERR_PARSE);
	free(b);
	cr_assert_eq(nkpi_ttlv_decode(NULL, 8, MAX, &it), NKP_ERR_INVALID);
}

Test(kmip_ttlv, encoder_stops_at_its_size_cap)
{
	static const uint8_t zeros[64];
	const uint8_t *out;
	nkpi_ttlv_enc e;
	size_t len;

	/* 8 + 16 + 8 + 48 = 80 bytes fit in 80, not in 79. */
	nkpi_ttlv_enc_init(&e, 80);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	nkpi_ttlv_integer(&e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_bytes(&e, NKPI_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, zeros, sizeof(zeros) - 16);
	nkpi_ttlv_end(&e);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_OK);
	cr_assert_eq(len, 80);
	nkpi_ttlv_enc_fini(&e);

	nkpi_ttlv_enc_init(&e, 79);
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	nkpi_ttlv_integer(&e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_bytes(&e, NKPI_KMIP_TAG_UNIQUE_BATCH_ITEM_ID, zeros, sizeof(zeros) - 16);
	/* Sticky: what follows is ignored, small as it is. */
	nkpi_ttlv_integer(&e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_end(&e);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_TOO_LARGE);
	nkpi_ttlv_enc_fini(&e);
	nkpi_ttlv_enc_fini(NULL);
}

Test(kmip_ttlv, encoder_refuses_bad_arguments)
{
	static const uint8_t seven[7];
	const uint8_t *out;
	nkpi_ttlv_enc e;
	size_t len;

	nkpi_ttlv_enc_init(&e, MAX);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID); /* nothing */
	nkpi_ttlv_begin(&e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID); /* still open */
	nkpi_ttlv_integer(&e, 0x430001, 1);
	nkpi_ttlv_end(&e);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID);
	nkpi_ttlv_enc_fini(&e);

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_big(&e, 0x420020, seven, sizeof(seven));
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID);
	nkpi_ttlv_enc_fini(&e);

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_text(&e, 0x420020, "a\0b", 3);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID);
	nkpi_ttlv_enc_fini(&e);

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_text(&e, 0x420020, "\xc0\xaf", 2);
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_INVALID);
	nkpi_ttlv_enc_fini(&e);

	/* Nesting deeper than the decoder takes. */
	nkpi_ttlv_enc_init(&e, MAX);
	for (unsigned i = 0; i <= NKPI_TTLV_MAX_DEPTH; i++) {
		nkpi_ttlv_begin(&e, 0x420020);
	}
	cr_assert_eq(nkpi_ttlv_enc_finish(&e, &out, &len), NKP_ERR_TOO_LARGE);
	nkpi_ttlv_enc_fini(&e);
}

Test(kmip_ttlv, end_without_begin_aborts, .signal = SIGABRT)
{
	nkpi_ttlv_enc e;

	nkpi_ttlv_enc_init(&e, MAX);
	nkpi_ttlv_end(&e);
}
