/* KMIP 1.4 messages (nkp/private/kmip.h).
 *
 * Readers look items up by tag in the Structure they belong to: a field
 * the reader needs must be there once, of its type; a field it does not
 * know is skipped (servers add optional ones: correlation values,
 * extensions), a known one twice is a malformed message. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "kmip.h"

#define KMIP_MAJOR 1
#define KMIP_MINOR 4
#define NKPI_KMIP_TAG_KEY_WRAPPING_DATA 0x420046u

/* ---- requests ---- */

static void text(nkpi_ttlv_enc *e, uint32_t tag, const char *s)
{
	nkpi_ttlv_text(e, tag, s, strlen(s));
}

static void begin_request(nkpi_ttlv_enc *e, uint32_t op)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_MESSAGE);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_HEADER);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_PROTOCOL_VERSION);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR, KMIP_MAJOR);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR, KMIP_MINOR);
	nkpi_ttlv_end(e);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_BATCH_COUNT, 1);
	nkpi_ttlv_end(e);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_BATCH_ITEM);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OPERATION, op);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REQUEST_PAYLOAD);
}

static void end_request(nkpi_ttlv_enc *e)
{
	nkpi_ttlv_end(e); /* payload */
	nkpi_ttlv_end(e); /* batch item */
	nkpi_ttlv_end(e); /* message */
}

/* An Attribute whose value the caller writes between the two. */
static void begin_attribute(nkpi_ttlv_enc *e, const char *name)
{
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, name);
}

static void name_attribute(nkpi_ttlv_enc *e, const char *name)
{
	begin_attribute(e, "Name");
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE);
	text(e, NKPI_KMIP_TAG_NAME_VALUE, name);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_NAME_TYPE, NKPI_KMIP_NAME_UNINTERPRETED_TEXT);
	nkpi_ttlv_end(e);
	nkpi_ttlv_end(e);
}

void nkpi_kmip_req_discover(nkpi_ttlv_enc *e)
{
	begin_request(e, NKPI_KMIP_OP_DISCOVER_VERSIONS);
	end_request(e);
}

void nkpi_kmip_req_create(nkpi_ttlv_enc *e, const char *name)
{
	begin_request(e, NKPI_KMIP_OP_CREATE);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_KMIP_OBJECT_SYMMETRIC_KEY);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_TEMPLATE_ATTRIBUTE);
	begin_attribute(e, "Cryptographic Algorithm");
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE, NKPI_KMIP_ALG_AES);
	nkpi_ttlv_end(e);
	begin_attribute(e, "Cryptographic Length");
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE, NKPI_KMIP_KEY_BYTES * 8);
	nkpi_ttlv_end(e);
	begin_attribute(e, "Cryptographic Usage Mask");
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE,
			  NKPI_KMIP_USAGE_WRAP_KEY | NKPI_KMIP_USAGE_UNWRAP_KEY);
	nkpi_ttlv_end(e);
	name_attribute(e, name);
	nkpi_ttlv_end(e);
	end_request(e);
}

void nkpi_kmip_req_add_attribute(nkpi_ttlv_enc *e, const char *id, const nkpi_kmip_attr *a)
{
	begin_request(e, NKPI_KMIP_OP_ADD_ATTRIBUTE);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	begin_attribute(e, a->name);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_VALUE, a->value);
	nkpi_ttlv_end(e);
	end_request(e);
}

void nkpi_kmip_req_get(nkpi_ttlv_enc *e, const char *id)
{
	begin_request(e, NKPI_KMIP_OP_GET);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_KEY_FORMAT_TYPE, NKPI_KMIP_KEY_FORMAT_RAW);
	end_request(e);
}

void nkpi_kmip_req_get_state(nkpi_ttlv_enc *e, const char *id)
{
	begin_request(e, NKPI_KMIP_OP_GET_ATTRIBUTES);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	text(e, NKPI_KMIP_TAG_ATTRIBUTE_NAME, "State");
	end_request(e);
}

void nkpi_kmip_req_locate(nkpi_ttlv_enc *e, const char *name, uint32_t max)
{
	begin_request(e, NKPI_KMIP_OP_LOCATE);
	nkpi_ttlv_integer(e, NKPI_KMIP_TAG_MAXIMUM_ITEMS,
			  (int32_t)(max > INT32_MAX ? INT32_MAX : max));
	name_attribute(e, name);
	end_request(e);
}

void nkpi_kmip_req_revoke(nkpi_ttlv_enc *e, const char *id, uint32_t code)
{
	begin_request(e, NKPI_KMIP_OP_REVOKE);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	nkpi_ttlv_begin(e, NKPI_KMIP_TAG_REVOCATION_REASON);
	nkpi_ttlv_enum(e, NKPI_KMIP_TAG_REVOCATION_REASON_CODE, code);
	nkpi_ttlv_end(e);
	end_request(e);
}

void nkpi_kmip_req_id(nkpi_ttlv_enc *e, uint32_t op, const char *id)
{
	begin_request(e, op);
	text(e, NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, id);
	end_request(e);
}

/* ---- responses ---- */

/* The fields of one Structure a reader wants: tag, type, and where the
 * item goes; `seen` counts them. */
typedef struct field {
	uint32_t tag;
	uint8_t type;
	bool required;
	nkpi_ttlv_item *out;
	unsigned seen;
} field;

/* Finds each of `f` in Structure `s` once at most (a known tag of
 * another type, or twice, is malformed); every required one present.
 * Unknown tags are skipped. */
static nkp_err fields(const nkpi_ttlv_item *s, field *f, size_t n)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it;

	if (s->type != NKPI_TTLV_STRUCTURE) {
		return NKP_ERR_PARSE;
	}
	nkpi_ttlv_enter(s, &c);
	while (nkpi_ttlv_next(&c, &it)) {
		for (size_t i = 0; i < n; i++) {
			if (f[i].tag != it.tag) {
				continue;
			}
			if (f[i].type != it.type || f[i].seen++ != 0) {
				return NKP_ERR_PARSE;
			}
			*f[i].out = it;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (f[i].required && f[i].seen == 0) {
			return NKP_ERR_PARSE;
		}
	}
	return NKP_OK;
}

static nkp_err check_version(const nkpi_ttlv_item *v)
{
	nkpi_ttlv_item major, minor;
	field f[] = {
		{NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR, NKPI_TTLV_INTEGER, true, &major, 0},
		{NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR, NKPI_TTLV_INTEGER, true, &minor, 0},
	};
	int32_t m;
	nkp_err err = fields(v, f, 2);

	if (err == NKP_OK) {
		err = nkpi_ttlv_get_integer(&major, &m);
	}
	return err == NKP_OK && m == 1 ? NKP_OK : NKP_ERR_PARSE;
}

static nkp_err read_header(const nkpi_ttlv_item *h)
{
	nkpi_ttlv_item version, stamp, count;
	field f[] = {
		{NKPI_KMIP_TAG_PROTOCOL_VERSION, NKPI_TTLV_STRUCTURE, true, &version, 0},
		{NKPI_KMIP_TAG_TIME_STAMP, NKPI_TTLV_DATETIME, true, &stamp, 0},
		{NKPI_KMIP_TAG_BATCH_COUNT, NKPI_TTLV_INTEGER, true, &count, 0},
	};
	int32_t n;
	nkp_err err = fields(h, f, 3);

	if (err == NKP_OK) {
		err = check_version(&version);
	}
	if (err == NKP_OK) {
		err = nkpi_ttlv_get_integer(&count, &n);
	}
	return err == NKP_OK && n == 1 ? NKP_OK : NKP_ERR_PARSE;
}

/* A server's text, kept printable: a log or a terminal must not receive
 * its control bytes. */
static void keep_message(const nkpi_ttlv_item *m, char out[NKPI_KMIP_RESULT_MESSAGE_MAX])
{
	const char *s;
	size_t n, j = 0;

	out[0] = '\0';
	if (nkpi_ttlv_get_text(m, &s, &n) != NKP_OK) {
		return;
	}
	for (size_t i = 0; i < n && j + 1 < NKPI_KMIP_RESULT_MESSAGE_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];

		out[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	out[j] = '\0';
}

static nkp_err read_batch_item(const nkpi_ttlv_item *b, uint32_t op, nkpi_kmip_result *r)
{
	nkpi_ttlv_item oper, status, reason, message, payload;
	field f[] = {
		{NKPI_KMIP_TAG_OPERATION, NKPI_TTLV_ENUM, false, &oper, 0},
		{NKPI_KMIP_TAG_RESULT_STATUS, NKPI_TTLV_ENUM, true, &status, 0},
		{NKPI_KMIP_TAG_RESULT_REASON, NKPI_TTLV_ENUM, false, &reason, 0},
		{NKPI_KMIP_TAG_RESULT_MESSAGE, NKPI_TTLV_TEXT, false, &message, 0},
		{NKPI_KMIP_TAG_RESPONSE_PAYLOAD, NKPI_TTLV_STRUCTURE, false, &payload, 0},
	};
	uint32_t v;
	nkp_err err = fields(b, f, 5);

	if (err != NKP_OK || nkpi_ttlv_get_enum(&status, &r->status) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	/* Pending (asynchronous) is never asked for; Undone needs a batch. */
	if (r->status != NKPI_KMIP_STATUS_SUCCESS &&
	    r->status != NKPI_KMIP_STATUS_OPERATION_FAILED) {
		return NKP_ERR_PARSE;
	}
	if (f[0].seen != 0) {
		if (nkpi_ttlv_get_enum(&oper, &v) != NKP_OK || v != op) {
			return NKP_ERR_PARSE;
		}
	} else if (r->status == NKPI_KMIP_STATUS_SUCCESS) {
		return NKP_ERR_PARSE; /* a success must say what succeeded */
	}
	if (f[2].seen != 0 && nkpi_ttlv_get_enum(&reason, &r->reason) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	if (f[3].seen != 0) {
		keep_message(&message, r->message);
	}
	r->has_payload = f[4].seen != 0;
	if (r->has_payload) {
		r->payload = payload;
	}
	return NKP_OK;
}

nkp_err nkpi_kmip_parse_response(const uint8_t *buf, size_t len, size_t max, uint32_t op,
				 nkpi_kmip_result *r)
{
	nkpi_ttlv_item top, header, item;
	field f[] = {
		{NKPI_KMIP_TAG_RESPONSE_HEADER, NKPI_TTLV_STRUCTURE, true, &header, 0},
		{NKPI_KMIP_TAG_BATCH_ITEM, NKPI_TTLV_STRUCTURE, true, &item, 0},
	};
	nkpi_kmip_result res = {0};
	nkp_err err = nkpi_ttlv_decode(buf, len, max, &top);

	if (err != NKP_OK) {
		return err == NKP_ERR_TOO_LARGE ? err : NKP_ERR_PARSE;
	}
	if (top.tag != NKPI_KMIP_TAG_RESPONSE_MESSAGE || fields(&top, f, 2) != NKP_OK ||
	    read_header(&header) != NKP_OK || read_batch_item(&item, op, &res) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	*r = res;
	return NKP_OK;
}

nkp_err nkpi_kmip_result_err(const nkpi_kmip_result *r)
{
	if (r->status == NKPI_KMIP_STATUS_SUCCESS) {
		return NKP_OK;
	}
	switch (r->reason) {
	case NKPI_KMIP_REASON_ITEM_NOT_FOUND:
		return NKP_ERR_NOT_FOUND;
	case NKPI_KMIP_REASON_PERMISSION_DENIED:
	case NKPI_KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL:
		return NKP_ERR_PERM;
	case NKPI_KMIP_REASON_RESPONSE_TOO_LARGE:
		return NKP_ERR_TOO_LARGE;
	default:
		return NKP_ERR_REFUSED;
	}
}

const char *nkpi_kmip_reason_name(uint32_t reason, char *buf, size_t n)
{
	static const struct {
		uint32_t v;
		const char *name;
	} names[] = {
		{NKPI_KMIP_REASON_ITEM_NOT_FOUND, "Item Not Found"},
		{NKPI_KMIP_REASON_RESPONSE_TOO_LARGE, "Response Too Large"},
		{NKPI_KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL, "Authentication Not Successful"},
		{NKPI_KMIP_REASON_INVALID_MESSAGE, "Invalid Message"},
		{NKPI_KMIP_REASON_OPERATION_NOT_SUPPORTED, "Operation Not Supported"},
		{NKPI_KMIP_REASON_MISSING_DATA, "Missing Data"},
		{NKPI_KMIP_REASON_INVALID_FIELD, "Invalid Field"},
		{NKPI_KMIP_REASON_FEATURE_NOT_SUPPORTED, "Feature Not Supported"},
		{NKPI_KMIP_REASON_PERMISSION_DENIED, "Permission Denied"},
		{NKPI_KMIP_REASON_GENERAL_FAILURE, "General Failure"},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (names[i].v == reason) {
			return names[i].name;
		}
	}
	snprintf(buf, n, "reason 0x%x", reason);
	return buf;
}

const char *nkpi_kmip_state_name(uint32_t state, char *buf, size_t n)
{
	static const char *const names[] = {
		[NKPI_KMIP_STATE_PRE_ACTIVE] = "pre-active",
		[NKPI_KMIP_STATE_ACTIVE] = "active",
		[NKPI_KMIP_STATE_DEACTIVATED] = "deactivated",
		[NKPI_KMIP_STATE_COMPROMISED] = "compromised",
		[NKPI_KMIP_STATE_DESTROYED] = "destroyed",
		[NKPI_KMIP_STATE_DESTROYED_COMPROMISED] = "destroyed-compromised",
	};

	if (state < sizeof(names) / sizeof(names[0]) && names[state] != NULL) {
		return names[state];
	}
	snprintf(buf, n, "state 0x%x", state);
	return buf;
}

/* A C0 or C1 control (DEL too) at `s` (valid UTF-8: U+0080 to U+009F are
 * 0xC2 0x80 to 0xC2 0x9F). */
static bool is_control(const char *s, size_t left)
{
	unsigned char c = (unsigned char)s[0];

	return c < 0x20 || c == 0x7f ||
	       (c == 0xc2 && left > 1 && (unsigned char)s[1] >= 0x80 &&
		(unsigned char)s[1] <= 0x9f);
}

/* A Unique Identifier item into `id`: printable, non-empty, fits. */
static nkp_err copy_id(const nkpi_ttlv_item *it, char id[NKPI_KMIP_ID_MAX])
{
	const char *s;
	size_t n;

	if (nkpi_ttlv_get_text(it, &s, &n) != NKP_OK || n == 0) {
		return NKP_ERR_PARSE;
	}
	if (n >= NKPI_KMIP_ID_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	for (size_t i = 0; i < n; i++) {
		if (is_control(s + i, n - i)) {
			return NKP_ERR_PARSE;
		}
	}
	memcpy(id, s, n);
	id[n] = '\0';
	return NKP_OK;
}

static nkp_err success_payload(const nkpi_kmip_result *r)
{
	return r->status == NKPI_KMIP_STATUS_SUCCESS && r->has_payload ? NKP_OK : NKP_ERR_PARSE;
}

/* The payload's identifier is object `id`. */
static nkp_err same_id(const nkpi_ttlv_item *it, const char *id)
{
	const char *s;
	size_t n;

	if (nkpi_ttlv_get_text(it, &s, &n) != NKP_OK || n != strlen(id) || memcmp(s, id, n) != 0) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

nkp_err nkpi_kmip_parse_id(const nkpi_kmip_result *r, char id[NKPI_KMIP_ID_MAX])
{
	nkpi_ttlv_item uid;
	field f[] = {{NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, NKPI_TTLV_TEXT, true, &uid, 0}};
	char tmp[NKPI_KMIP_ID_MAX];
	nkp_err err = success_payload(r);

	if (err == NKP_OK) {
		err = fields(&r->payload, f, 1);
	}
	if (err == NKP_OK) {
		err = copy_id(&uid, tmp);
	}
	if (err == NKP_OK) {
		memcpy(id, tmp, sizeof(tmp));
	}
	return err;
}

static nkp_err check_enum(const nkpi_ttlv_item *it, uint32_t want)
{
	uint32_t v;

	return nkpi_ttlv_get_enum(it, &v) == NKP_OK && v == want ? NKP_OK : NKP_ERR_PARSE;
}

/* Key Block: Raw, AES, 256, not wrapped; its Key Material in *material. */
static nkp_err read_key_block(const nkpi_ttlv_item *blk, nkpi_ttlv_item *material)
{
	nkpi_ttlv_item format, value, alg, length, wrapping;
	field f[] = {
		{NKPI_KMIP_TAG_KEY_FORMAT_TYPE, NKPI_TTLV_ENUM, true, &format, 0},
		{NKPI_KMIP_TAG_KEY_VALUE, NKPI_TTLV_STRUCTURE, true, &value, 0},
		{NKPI_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, NKPI_TTLV_ENUM, true, &alg, 0},
		{NKPI_KMIP_TAG_CRYPTOGRAPHIC_LENGTH, NKPI_TTLV_INTEGER, true, &length, 0},
		{NKPI_KMIP_TAG_KEY_WRAPPING_DATA, NKPI_TTLV_STRUCTURE, false, &wrapping, 0},
	};
	field m[] = {{NKPI_KMIP_TAG_KEY_MATERIAL, NKPI_TTLV_BYTES, true, material, 0}};
	int32_t bits;

	if (fields(blk, f, 5) != NKP_OK || f[4].seen != 0 ||
	    check_enum(&format, NKPI_KMIP_KEY_FORMAT_RAW) != NKP_OK ||
	    check_enum(&alg, NKPI_KMIP_ALG_AES) != NKP_OK ||
	    nkpi_ttlv_get_integer(&length, &bits) != NKP_OK || bits != NKPI_KMIP_KEY_BYTES * 8) {
		return NKP_ERR_PARSE;
	}
	return fields(&value, m, 1);
}

nkp_err nkpi_kmip_parse_key(const nkpi_kmip_result *r, const char *id,
			    uint8_t key[static NKPI_KMIP_KEY_BYTES])
{
	nkpi_ttlv_item uid, type, sym, blk, material;
	field f[] = {
		{NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, NKPI_TTLV_TEXT, true, &uid, 0},
		{NKPI_KMIP_TAG_OBJECT_TYPE, NKPI_TTLV_ENUM, true, &type, 0},
		{NKPI_KMIP_TAG_SYMMETRIC_KEY, NKPI_TTLV_STRUCTURE, true, &sym, 0},
	};
	field k[] = {{NKPI_KMIP_TAG_KEY_BLOCK, NKPI_TTLV_STRUCTURE, true, &blk, 0}};
	const uint8_t *v;
	size_t n;

	if (success_payload(r) != NKP_OK || fields(&r->payload, f, 3) != NKP_OK ||
	    same_id(&uid, id) != NKP_OK ||
	    check_enum(&type, NKPI_KMIP_OBJECT_SYMMETRIC_KEY) != NKP_OK ||
	    fields(&sym, k, 1) != NKP_OK || read_key_block(&blk, &material) != NKP_OK ||
	    nkpi_ttlv_get_bytes(&material, &v, &n) != NKP_OK || n != NKPI_KMIP_KEY_BYTES) {
		return NKP_ERR_PARSE;
	}
	memcpy(key, v, NKPI_KMIP_KEY_BYTES);
	return NKP_OK;
}

nkp_err nkpi_kmip_parse_state(const nkpi_kmip_result *r, const char *id, uint32_t *state)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it, uid;
	field f[] = {{NKPI_KMIP_TAG_UNIQUE_IDENTIFIER, NKPI_TTLV_TEXT, true, &uid, 0}};
	bool found = false;
	uint32_t v = 0;

	if (success_payload(r) != NKP_OK || fields(&r->payload, f, 1) != NKP_OK ||
	    same_id(&uid, id) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	nkpi_ttlv_enter(&r->payload, &c);
	while (nkpi_ttlv_next(&c, &it)) {
		nkpi_ttlv_item name, value;
		field a[] = {
			{NKPI_KMIP_TAG_ATTRIBUTE_NAME, NKPI_TTLV_TEXT, true, &name, 0},
			{NKPI_KMIP_TAG_ATTRIBUTE_VALUE, NKPI_TTLV_ENUM, true, &value, 0},
		};
		const char *s;
		size_t n;

		if (it.tag != NKPI_KMIP_TAG_ATTRIBUTE) {
			continue;
		}
		if (fields(&it, a, 2) != NKP_OK || nkpi_ttlv_get_text(&name, &s, &n) != NKP_OK ||
		    n != 5 || memcmp(s, "State", 5) != 0 || found ||
		    nkpi_ttlv_get_enum(&value, &v) != NKP_OK) {
			return NKP_ERR_PARSE;
		}
		found = true;
	}
	if (!found) {
		return NKP_ERR_PARSE;
	}
	*state = v;
	return NKP_OK;
}

nkp_err nkpi_kmip_parse_locate(const nkpi_kmip_result *r, char (*ids)[NKPI_KMIP_ID_MAX], size_t max,
			       size_t *n)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it;
	size_t count = 0;

	if (r->status != NKPI_KMIP_STATUS_SUCCESS) {
		return NKP_ERR_PARSE;
	}
	if (!r->has_payload) { /* nothing located: an empty payload may be left out */
		*n = 0;
		return NKP_OK;
	}
	nkpi_ttlv_enter(&r->payload, &c);
	while (nkpi_ttlv_next(&c, &it)) {
		if (it.tag != NKPI_KMIP_TAG_UNIQUE_IDENTIFIER) {
			continue;
		}
		if (count == max) {
			return NKP_ERR_TOO_LARGE;
		}
		nkp_err err = copy_id(&it, ids[count]);

		if (err != NKP_OK) {
			return err;
		}
		count++;
	}
	*n = count;
	return NKP_OK;
}

nkp_err nkpi_kmip_parse_versions(const nkpi_kmip_result *r, nkpi_kmip_version *v, size_t max,
				 size_t *n)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it;
	size_t count = 0;

	if (r->status != NKPI_KMIP_STATUS_SUCCESS) {
		return NKP_ERR_PARSE;
	}
	if (r->has_payload) {
		nkpi_ttlv_enter(&r->payload, &c);
		while (nkpi_ttlv_next(&c, &it)) {
			nkpi_ttlv_item major, minor;
			field f[] = {
				{NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR, NKPI_TTLV_INTEGER, true,
				 &major, 0},
				{NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR, NKPI_TTLV_INTEGER, true,
				 &minor, 0},
			};

			if (it.tag != NKPI_KMIP_TAG_PROTOCOL_VERSION) {
				continue;
			}
			if (count == max) {
				return NKP_ERR_TOO_LARGE;
			}
			if (fields(&it, f, 2) != NKP_OK ||
			    nkpi_ttlv_get_integer(&major, &v[count].major) != NKP_OK ||
			    nkpi_ttlv_get_integer(&minor, &v[count].minor) != NKP_OK) {
				return NKP_ERR_PARSE;
			}
			count++;
		}
	}
	*n = count;
	return NKP_OK;
}
