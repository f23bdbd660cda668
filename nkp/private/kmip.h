/* KMIP 1.4 messages (OASIS KMIP Specification v1.4, sections 4, 6, 7):
 * the requests the standard provider sends and strict readers of the
 * responses, over the TTLV codec (ttlv.h). Pure: no I/O, no clock but the
 * caller's; the transport is kmip-client.h.
 *
 * Every request is one Request Message of protocol version 1.4 with one
 * Batch Item. A response is accepted only if it is one Response Message
 * with a 1.x Protocol Version, a Time Stamp, a Batch Count of 1 and one
 * Batch Item that names the operation asked for (a failed one may omit
 * it); anything else is NKP_ERR_PARSE. Part of the in-tree tier; needs
 * nothing but libsodium. No function here locks. */
#ifndef NKP_KMIP_H
#define NKP_KMIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/common.h>
#include <nkp/err.h>

#include "ttlv.h"

/* A Unique Identifier, as text, with its terminating NUL. KMIP sets no
 * limit; servers use short ones (PyKMIP: a decimal counter; others a UUID). */
#define NKPI_KMIP_ID_MAX 128u
/* The bytes of a key the standard provider uses: AES-256. */
#define NKPI_KMIP_KEY_BYTES 32u
/* A server's Result Message, as kept for an error text (shortened,
 * non-printable bytes replaced). */
#define NKPI_KMIP_RESULT_MESSAGE_MAX 160u
/* The protocol versions a Discover Versions answer may list. */
#define NKPI_KMIP_VERSIONS_MAX 16u

/** A custom attribute of Text String value ("x-Vendor" = "nkp"). Names
 * and values are UTF-8 without NUL. */
typedef struct nkpi_kmip_attr {
	const char *name;
	const char *value;
} nkpi_kmip_attr;

typedef struct nkpi_kmip_version {
	int32_t major;
	int32_t minor;
} nkpi_kmip_version;

/* ---- requests ----
 * Each writes one whole Request Message into `e` (fresh or reset); its
 * errors stick in the encoder (ttlv.h) and nkpi_ttlv_enc_finish() returns
 * them: NKP_ERR_INVALID for text that is not UTF-8, NKP_ERR_TOO_LARGE. */

/** Discover Versions, listing none (the server answers all it supports). */
void nkpi_kmip_req_discover(nkpi_ttlv_enc *e);
/** Create: a Symmetric Key, AES, 256 bits, usage Wrap Key | Unwrap Key,
 * named `name` (an Uninterpreted Text String Name). */
void nkpi_kmip_req_create(nkpi_ttlv_enc *e, const char *name);
/** Add Attribute: `a` (a Text String) to object `id`. */
void nkpi_kmip_req_add_attribute(nkpi_ttlv_enc *e, const char *id, const nkpi_kmip_attr *a);
/** Get of object `id`, its key in Raw format. */
void nkpi_kmip_req_get(nkpi_ttlv_enc *e, const char *id);
/** Get Attributes of object `id`: its State. */
void nkpi_kmip_req_get_state(nkpi_ttlv_enc *e, const char *id);
/** Locate: the objects named `name`, at most `max` of them. */
void nkpi_kmip_req_locate(nkpi_ttlv_enc *e, const char *name, uint32_t max);
/** Revoke object `id` for reason `code` (NKPI_KMIP_REVOKE_*). */
void nkpi_kmip_req_revoke(nkpi_ttlv_enc *e, const char *id, uint32_t code);
/** Activate or Destroy (`op`) object `id`: a payload of its identifier. */
void nkpi_kmip_req_id(nkpi_ttlv_enc *e, uint32_t op, const char *id);

/* ---- responses ---- */

/** What a response says about its one Batch Item. `payload` views the
 * buffer the response was read from (valid as long as it is). */
typedef struct nkpi_kmip_result {
	uint32_t status;			    /* NKPI_KMIP_STATUS_* */
	uint32_t reason;			    /* NKPI_KMIP_REASON_*, 0 if none was given */
	char message[NKPI_KMIP_RESULT_MESSAGE_MAX]; /* "" if none */
	bool has_payload;
	nkpi_ttlv_item payload;
} nkpi_kmip_result;

/** Reads response `buf` to a request of operation `op`. NKP_OK and *r
 * (whose status may still be a failure: see nkpi_kmip_result_err()), or
 * NKP_ERR_PARSE (malformed, another operation, not one batch item, a
 * version other than 1.x, an Operation Pending answer we never ask for),
 * NKP_ERR_TOO_LARGE (over `max`). */
NKP_NODISCARD nkp_err nkpi_kmip_parse_response(const uint8_t *buf, size_t len, size_t max,
					       uint32_t op, nkpi_kmip_result *r);

/** The error a result stands for: NKP_OK for Success; for a failure,
 * Item Not Found -> NKP_ERR_NOT_FOUND, Permission Denied and
 * Authentication Not Successful -> NKP_ERR_PERM, Operation / Feature Not
 * Supported and Invalid Field -> NKP_ERR_REFUSED, Response Too Large ->
 * NKP_ERR_TOO_LARGE, anything else NKP_ERR_REFUSED. */
NKP_NODISCARD nkp_err nkpi_kmip_result_err(const nkpi_kmip_result *r);

/** The name of a Result Reason ("Item Not Found"), or "reason 0x..." in
 * `buf` for one this client does not know. */
const char *nkpi_kmip_reason_name(uint32_t reason, char *buf, size_t n);

/** A successful answer's Unique Identifier (Create, Add Attribute,
 * Activate, Revoke, Destroy, Get Attributes), NUL-terminated in `id`.
 * NKP_ERR_PARSE if it is missing, empty or holds a control byte;
 * NKP_ERR_TOO_LARGE if it does not fit. */
NKP_NODISCARD nkp_err nkpi_kmip_parse_id(const nkpi_kmip_result *r, char id[NKPI_KMIP_ID_MAX]);

/** A Get answer: NKP_OK and the key in `key` if it is object `id`, a
 * Symmetric Key, AES, 256 bits, in Raw format (a Key Material of exactly
 * 32 bytes, not wrapped). NKP_ERR_PARSE otherwise (another object, type,
 * algorithm, length or format, or wrapped). `key` is written only on
 * success; the caller wipes the response buffer. */
NKP_NODISCARD nkp_err nkpi_kmip_parse_key(const nkpi_kmip_result *r, const char *id,
					  uint8_t key[static NKPI_KMIP_KEY_BYTES]);

/** A Get Attributes answer about object `id`: its State (NKPI_KMIP_STATE_*). */
NKP_NODISCARD nkp_err nkpi_kmip_parse_state(const nkpi_kmip_result *r, const char *id,
					    uint32_t *state);

/** A Locate answer: up to `max` identifiers into `ids`, their count in *n. */
NKP_NODISCARD nkp_err nkpi_kmip_parse_locate(const nkpi_kmip_result *r,
					     char (*ids)[NKPI_KMIP_ID_MAX], size_t max, size_t *n);

/** A Discover Versions answer: up to `max` versions, most preferred first. */
NKP_NODISCARD nkp_err nkpi_kmip_parse_versions(const nkpi_kmip_result *r, nkpi_kmip_version *v,
					       size_t max, size_t *n);

/** The name of a State ("active", "deactivated", ...; "state 0x..." in
 * `buf` for one this client does not know). */
const char *nkpi_kmip_state_name(uint32_t state, char *buf, size_t n);

#endif
