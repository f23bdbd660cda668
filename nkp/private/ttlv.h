/* KMIP 1.4 TTLV (OASIS KMIP Specification v1.4, section 9.1): the codec
 * of the standard provider's KMIP client. Every item is a 3-byte tag, a
 * 1-byte type, a 4-byte big-endian length and a value padded with zero
 * bytes to a multiple of 8; a Structure's value is its items.
 *
 * The encoder writes into a growable buffer of its own; the decoder checks
 * a whole message once, then hands out items that point into the caller's
 * buffer (nothing is copied). Part of the in-tree tier; needs nothing but
 * libsodium (to wipe). No function here locks: a codec object belongs to
 * one thread at a time. */
#ifndef NKP_TTLV_H
#define NKP_TTLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/common.h>
#include <nkp/err.h>

/* Structures inside structures, the message itself counting as one. KMIP
 * 1.4 messages nest at most eight deep (a Get response's key material). */
#define NKPI_TTLV_MAX_DEPTH 16u
/* Bytes of a header: tag, type, length. */
#define NKPI_TTLV_HEADER 8u
/* A default limit for a whole message, both ways; callers may pass less. */
#define NKPI_TTLV_MAX_MESSAGE (1u << 20)

/* Item types (section 9.1.1.2). */
typedef enum nkpi_ttlv_type {
	NKPI_TTLV_STRUCTURE = 0x01,
	NKPI_TTLV_INTEGER = 0x02,
	NKPI_TTLV_LONG = 0x03,
	NKPI_TTLV_BIG = 0x04,
	NKPI_TTLV_ENUM = 0x05,
	NKPI_TTLV_BOOL = 0x06,
	NKPI_TTLV_TEXT = 0x07,
	NKPI_TTLV_BYTES = 0x08,
	NKPI_TTLV_DATETIME = 0x09,
	NKPI_TTLV_INTERVAL = 0x0a,
} nkpi_ttlv_type;

/* Tags (section 9.1.3.1): those the client needs. Tags 0x540000-0x54ffff
 * are extensions; every other tag outside 0x420001-0x42ffff is refused. */
enum {
	NKPI_KMIP_TAG_ATTRIBUTE = 0x420008,
	NKPI_KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
	NKPI_KMIP_TAG_ATTRIBUTE_NAME = 0x42000a,
	NKPI_KMIP_TAG_ATTRIBUTE_VALUE = 0x42000b,
	NKPI_KMIP_TAG_BATCH_COUNT = 0x42000d,
	NKPI_KMIP_TAG_BATCH_ITEM = 0x42000f,
	NKPI_KMIP_TAG_COMPROMISE_OCCURRENCE_DATE = 0x420021,
	NKPI_KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
	NKPI_KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002a,
	NKPI_KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK = 0x42002c,
	NKPI_KMIP_TAG_KEY_BLOCK = 0x420040,
	NKPI_KMIP_TAG_KEY_FORMAT_TYPE = 0x420042,
	NKPI_KMIP_TAG_KEY_MATERIAL = 0x420043,
	NKPI_KMIP_TAG_KEY_VALUE = 0x420045,
	NKPI_KMIP_TAG_MAXIMUM_ITEMS = 0x42004f,
	NKPI_KMIP_TAG_MAXIMUM_RESPONSE_SIZE = 0x420050,
	NKPI_KMIP_TAG_NAME = 0x420053,
	NKPI_KMIP_TAG_NAME_TYPE = 0x420054,
	NKPI_KMIP_TAG_NAME_VALUE = 0x420055,
	NKPI_KMIP_TAG_OBJECT_TYPE = 0x420057,
	NKPI_KMIP_TAG_OPERATION = 0x42005c,
	NKPI_KMIP_TAG_PROTOCOL_VERSION = 0x420069,
	NKPI_KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006a,
	NKPI_KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006b,
	NKPI_KMIP_TAG_QUERY_FUNCTION = 0x420074,
	NKPI_KMIP_TAG_REQUEST_HEADER = 0x420077,
	NKPI_KMIP_TAG_REQUEST_MESSAGE = 0x420078,
	NKPI_KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
	NKPI_KMIP_TAG_RESPONSE_HEADER = 0x42007a,
	NKPI_KMIP_TAG_RESPONSE_MESSAGE = 0x42007b,
	NKPI_KMIP_TAG_RESPONSE_PAYLOAD = 0x42007c,
	NKPI_KMIP_TAG_RESULT_MESSAGE = 0x42007d,
	NKPI_KMIP_TAG_RESULT_REASON = 0x42007e,
	NKPI_KMIP_TAG_RESULT_STATUS = 0x42007f,
	NKPI_KMIP_TAG_REVOCATION_MESSAGE = 0x420080,
	NKPI_KMIP_TAG_REVOCATION_REASON = 0x420081,
	NKPI_KMIP_TAG_REVOCATION_REASON_CODE = 0x420082,
	NKPI_KMIP_TAG_STATE = 0x42008d,
	NKPI_KMIP_TAG_SYMMETRIC_KEY = 0x42008f,
	NKPI_KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
	NKPI_KMIP_TAG_TIME_STAMP = 0x420092,
	NKPI_KMIP_TAG_UNIQUE_BATCH_ITEM_ID = 0x420093,
	NKPI_KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
};

/* Operation (9.1.3.2.27). */
enum {
	NKPI_KMIP_OP_CREATE = 0x01,
	NKPI_KMIP_OP_LOCATE = 0x08,
	NKPI_KMIP_OP_GET = 0x0a,
	NKPI_KMIP_OP_GET_ATTRIBUTES = 0x0b,
	NKPI_KMIP_OP_ADD_ATTRIBUTE = 0x0d,
	NKPI_KMIP_OP_ACTIVATE = 0x12,
	NKPI_KMIP_OP_REVOKE = 0x13,
	NKPI_KMIP_OP_DESTROY = 0x14,
	NKPI_KMIP_OP_QUERY = 0x18,
	NKPI_KMIP_OP_DISCOVER_VERSIONS = 0x1e,
};

/* Object Type, Cryptographic Algorithm, Key Format Type, Name Type,
 * State, Result Status, Result Reason, Revocation Reason Code, Query
 * Function, and the Cryptographic Usage Mask bits (9.1.3.2, 9.1.3.3). */
enum {
	NKPI_KMIP_OBJECT_SYMMETRIC_KEY = 0x02,
	NKPI_KMIP_ALG_AES = 0x03,
	NKPI_KMIP_KEY_FORMAT_RAW = 0x01,
	NKPI_KMIP_KEY_FORMAT_TRANSPARENT_SYMMETRIC = 0x07,
	NKPI_KMIP_NAME_UNINTERPRETED_TEXT = 0x01,
	NKPI_KMIP_NAME_URI = 0x02,
	NKPI_KMIP_STATE_PRE_ACTIVE = 0x01,
	NKPI_KMIP_STATE_ACTIVE = 0x02,
	NKPI_KMIP_STATE_DEACTIVATED = 0x03,
	NKPI_KMIP_STATE_COMPROMISED = 0x04,
	NKPI_KMIP_STATE_DESTROYED = 0x05,
	NKPI_KMIP_STATE_DESTROYED_COMPROMISED = 0x06,
	NKPI_KMIP_STATUS_SUCCESS = 0x00,
	NKPI_KMIP_STATUS_OPERATION_FAILED = 0x01,
	NKPI_KMIP_STATUS_OPERATION_PENDING = 0x02,
	NKPI_KMIP_STATUS_OPERATION_UNDONE = 0x03,
	NKPI_KMIP_REASON_ITEM_NOT_FOUND = 0x01,
	NKPI_KMIP_REASON_RESPONSE_TOO_LARGE = 0x02,
	NKPI_KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
	NKPI_KMIP_REASON_INVALID_MESSAGE = 0x04,
	NKPI_KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
	NKPI_KMIP_REASON_MISSING_DATA = 0x06,
	NKPI_KMIP_REASON_INVALID_FIELD = 0x07,
	NKPI_KMIP_REASON_FEATURE_NOT_SUPPORTED = 0x08,
	NKPI_KMIP_REASON_PERMISSION_DENIED = 0x0c,
	NKPI_KMIP_REASON_GENERAL_FAILURE = 0x100,
	NKPI_KMIP_REVOKE_UNSPECIFIED = 0x01,
	NKPI_KMIP_REVOKE_KEY_COMPROMISE = 0x02,
	NKPI_KMIP_REVOKE_CESSATION_OF_OPERATION = 0x06,
	NKPI_KMIP_QUERY_OPERATIONS = 0x01,
	NKPI_KMIP_QUERY_OBJECTS = 0x02,
	NKPI_KMIP_QUERY_SERVER_INFORMATION = 0x03,
	NKPI_KMIP_USAGE_ENCRYPT = 0x04,
	NKPI_KMIP_USAGE_DECRYPT = 0x08,
	NKPI_KMIP_USAGE_WRAP_KEY = 0x10,
	NKPI_KMIP_USAGE_UNWRAP_KEY = 0x20,
};

/* ---- encoding ---- */

/** An encoder: the bytes written so far and the structures still open.
 * Its fields are its own; read the result with nkpi_ttlv_enc_finish(). */
typedef struct nkpi_ttlv_enc {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t max;
	size_t open[NKPI_TTLV_MAX_DEPTH]; /* offsets of the open structures */
	unsigned depth;
	nkp_err err; /* the first error; every later write is ignored */
} nkpi_ttlv_enc;

/** Makes `e` an empty encoder of messages of at most `max` bytes (at most
 * UINT32_MAX). Allocates nothing until the first write. */
void nkpi_ttlv_enc_init(nkpi_ttlv_enc *e, size_t max);

/** Wipes and frees the bytes; leaves `e` zeroed. Accepts NULL and a
 * zeroed encoder. */
void nkpi_ttlv_enc_fini(nkpi_ttlv_enc *e);

/* The writers below never fail on their own: the first error sticks in
 * the encoder, later writes are ignored, and nkpi_ttlv_enc_finish()
 * returns it. NKP_ERR_TOO_LARGE: the message would be over `max` bytes,
 * or structures would nest deeper than NKPI_TTLV_MAX_DEPTH. NKP_ERR_INVALID:
 * a tag outside 0x420001-0x42ffff and 0x540000-0x54ffff, a Big Integer
 * whose length is not a positive multiple of 8, a Text String that is not
 * UTF-8 or holds a NUL. NKP_ERR_NOMEM. */

/** Opens a Structure; its length is filled in by nkpi_ttlv_end(). */
void nkpi_ttlv_begin(nkpi_ttlv_enc *e, uint32_t tag);
/** Closes the innermost open Structure; closing none is a misuse and
 * aborts. */
void nkpi_ttlv_end(nkpi_ttlv_enc *e);
void nkpi_ttlv_integer(nkpi_ttlv_enc *e, uint32_t tag, int32_t v);
void nkpi_ttlv_long(nkpi_ttlv_enc *e, uint32_t tag, int64_t v);
/** A Big Integer: `n` bytes of two's complement, big-endian, already
 * sign-extended to a multiple of 8 (as section 9.1.1.4 asks). */
void nkpi_ttlv_big(nkpi_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t n);
void nkpi_ttlv_enum(nkpi_ttlv_enc *e, uint32_t tag, uint32_t v);
void nkpi_ttlv_bool(nkpi_ttlv_enc *e, uint32_t tag, bool v);
/** A Text String of `n` bytes of UTF-8 (no terminator is written). */
void nkpi_ttlv_text(nkpi_ttlv_enc *e, uint32_t tag, const char *s, size_t n);
void nkpi_ttlv_bytes(nkpi_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t n);
/** A Date-Time: seconds since 1970-01-01 00:00:00 UTC. */
void nkpi_ttlv_datetime(nkpi_ttlv_enc *e, uint32_t tag, int64_t t);
/** An Interval: seconds. */
void nkpi_ttlv_interval(nkpi_ttlv_enc *e, uint32_t tag, uint32_t secs);

/** The message written: NKP_OK and *out / *len view the encoder's bytes
 * (valid until the next write or nkpi_ttlv_enc_fini()), or the sticky
 * error; NKP_ERR_INVALID if nothing was written or a Structure is still
 * open. */
NKP_NODISCARD nkp_err nkpi_ttlv_enc_finish(const nkpi_ttlv_enc *e, const uint8_t **out,
					   size_t *len);

/* ---- decoding ---- */

/** One item, viewed in the buffer it was decoded from. `value` points at
 * `length` bytes (the padding follows them). `depth` is 1 for the
 * message, 2 for its items, and so on. */
typedef struct nkpi_ttlv_item {
	uint32_t tag;
	uint8_t type; /* nkpi_ttlv_type */
	uint32_t length;
	const uint8_t *value;
	unsigned depth;
} nkpi_ttlv_item;

/** The items of a Structure, one after the other. */
typedef struct nkpi_ttlv_cursor {
	const uint8_t *p;
	const uint8_t *end;
	unsigned depth;
} nkpi_ttlv_cursor;

/** How many bytes the message whose first NKPI_TTLV_HEADER bytes are
 * `hdr` has in all, for a reader that takes the header first. NKP_OK and
 * *total, NKP_ERR_PARSE (a tag outside the ranges, or not a Structure),
 * NKP_ERR_TOO_LARGE (over `max`). */
NKP_NODISCARD nkp_err nkpi_ttlv_message_size(const uint8_t hdr[static NKPI_TTLV_HEADER], size_t max,
					     size_t *total);

/** Checks that `buf` is exactly one item (a message is a Structure; this
 * accepts any type) and everything in it well formed, then views it in
 * *top. Checks: tags in 0x420001-0x42ffff or 0x540000-0x54ffff; types
 * 0x01-0x0a; lengths that fit the buffer and exactly fill each enclosing
 * Structure; Integer, Enumeration and Interval of length 4, Long Integer
 * and Date-Time of 8, Boolean of 8 holding 0 or 1, Big Integer a positive
 * multiple of 8; padding bytes zero; Text Strings valid UTF-8 (shortest
 * forms, no surrogates, at most U+10FFFF) without NUL; nothing after the
 * item. Errors: NKP_ERR_TOO_LARGE (`len` over `max`, or Structures nested
 * deeper than NKPI_TTLV_MAX_DEPTH), NKP_ERR_PARSE (any other check),
 * NKP_ERR_INVALID (`buf` NULL with `len` non-zero). Reads each byte a
 * bounded number of times; no allocation. */
NKP_NODISCARD nkp_err nkpi_ttlv_decode(const uint8_t *buf, size_t len, size_t max,
				       nkpi_ttlv_item *top);

/** A cursor over the items of Structure `s` (from nkpi_ttlv_decode() or a
 * cursor); a `s` that is not a Structure is a misuse and aborts. */
void nkpi_ttlv_enter(const nkpi_ttlv_item *s, nkpi_ttlv_cursor *c);

/** The next item in *out; false when there is none. Never fails on a
 * decoded message: it was checked whole. */
NKP_NODISCARD bool nkpi_ttlv_next(nkpi_ttlv_cursor *c, nkpi_ttlv_item *out);

/* Values of decoded items: NKP_OK and *out, or NKP_ERR_PARSE if the item
 * is of another type. Text and byte strings and Big Integers are views. */
NKP_NODISCARD nkp_err nkpi_ttlv_get_integer(const nkpi_ttlv_item *it, int32_t *out);
NKP_NODISCARD nkp_err nkpi_ttlv_get_long(const nkpi_ttlv_item *it, int64_t *out);
NKP_NODISCARD nkp_err nkpi_ttlv_get_enum(const nkpi_ttlv_item *it, uint32_t *out);
NKP_NODISCARD nkp_err nkpi_ttlv_get_bool(const nkpi_ttlv_item *it, bool *out);
NKP_NODISCARD nkp_err nkpi_ttlv_get_datetime(const nkpi_ttlv_item *it, int64_t *out);
NKP_NODISCARD nkp_err nkpi_ttlv_get_interval(const nkpi_ttlv_item *it, uint32_t *out);
/** Text String: `*n` bytes of UTF-8 at *s, not NUL-terminated. */
NKP_NODISCARD nkp_err nkpi_ttlv_get_text(const nkpi_ttlv_item *it, const char **s, size_t *n);
NKP_NODISCARD nkp_err nkpi_ttlv_get_bytes(const nkpi_ttlv_item *it, const uint8_t **v, size_t *n);
NKP_NODISCARD nkp_err nkpi_ttlv_get_big(const nkpi_ttlv_item *it, const uint8_t **v, size_t *n);

/** Writes decoded item `it` (a whole Structure with its items) again
 * through the writers above, as it was. */
void nkpi_ttlv_enc_item(nkpi_ttlv_enc *e, const nkpi_ttlv_item *it);

#endif
