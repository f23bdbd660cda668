/* KMIP 1.4 TTLV (nkp/private/ttlv.h).
 *
 * The decoder checks a whole message before anyone reads it, so that a
 * client never acts on the first half of a message whose second half is
 * malformed, and the cursor afterwards needs no error path. The check
 * recurses once per Structure, bounded by NKPI_TTLV_MAX_DEPTH, and reads
 * every byte once per level that contains it: O(n), bounded stack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ttlv.h"

_Noreturn static void misuse(const char *what)
{
	fprintf(stderr, "nkp: TTLV codec misuse: %s\n", what);
	abort();
}

static bool tag_ok(uint32_t tag)
{
	return (tag >> 16 == 0x42 && tag != 0x420000) || tag >> 16 == 0x54;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint64_t padded(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

/* Strict UTF-8 (RFC 3629): shortest forms, no surrogates, at most
 * U+10FFFF; and no NUL, which C strings and logs would cut at. */
static bool utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t b = s[i];
		uint32_t cp, min;
		size_t more;

		if (b == 0) {
			return false;
		}
		if (b < 0x80) {
			i++;
			continue;
		}
		if ((b & 0xe0) == 0xc0) {
			cp = b & 0x1fu;
			more = 1;
			min = 0x80;
		} else if ((b & 0xf0) == 0xe0) {
			cp = b & 0x0fu;
			more = 2;
			min = 0x800;
		} else if ((b & 0xf8) == 0xf0) {
			cp = b & 0x07u;
			more = 3;
			min = 0x10000;
		} else {
			return false;
		}
		if (more > n - i - 1) {
			return false;
		}
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80) {
				return false;
			}
			cp = cp << 6 | (s[i + k] & 0x3fu);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
			return false;
		}
		i += more + 1;
	}
	return true;
}

/* ---- encoding ---- */

void nkpi_ttlv_enc_init(nkpi_ttlv_enc *e, size_t max)
{
	memset(e, 0, sizeof(*e));
	e->max = max < UINT32_MAX ? max : UINT32_MAX;
}

void nkpi_ttlv_enc_fini(nkpi_ttlv_enc *e)
{
	if (e == NULL) {
		return;
	}
	if (e->buf != NULL) {
		sodium_memzero(e->buf, e->cap);
		free(e->buf);
	}
	memset(e, 0, sizeof(*e));
}

static void fail(nkpi_ttlv_enc *e, nkp_err err)
{
	if (e->err == NKP_OK) {
		e->err = err;
	}
}

/* Room for `n` more bytes, zeroed; NULL (and the error set) if not. A
 * message may carry key material, so the old buffer is wiped when it
 * moves. */
static uint8_t *grow(nkpi_ttlv_enc *e, uint64_t n)
{
	uint8_t *p;
	size_t cap;

	if (e->err != NKP_OK) {
		return NULL;
	}
	if (n > e->max - e->len) {
		fail(e, NKP_ERR_TOO_LARGE);
		return NULL;
	}
	if (e->len + n > e->cap) {
		cap = e->cap != 0 ? e->cap : 256;
		while (cap < e->len + n) {
			cap *= 2;
		}
		p = malloc(cap);
		if (p == NULL) {
			fail(e, NKP_ERR_NOMEM);
			return NULL;
		}
		if (e->buf != NULL) {
			memcpy(p, e->buf, e->len);
			sodium_memzero(e->buf, e->cap);
			free(e->buf);
		}
		e->buf = p;
		e->cap = cap;
	}
	p = e->buf + e->len;
	memset(p, 0, (size_t)n);
	e->len += (size_t)n;
	return p;
}

/* Writes a header and room for `n` value bytes plus padding; returns
 * where the value goes. */
static uint8_t *item(nkpi_ttlv_enc *e, uint32_t tag, uint8_t type, size_t n)
{
	uint8_t *p;

	if (e->err != NKP_OK) {
		return NULL;
	}
	if (!tag_ok(tag)) {
		fail(e, NKP_ERR_INVALID);
		return NULL;
	}
	if ((uint64_t)n > UINT32_MAX) {
		fail(e, NKP_ERR_TOO_LARGE);
		return NULL;
	}
	p = grow(e, NKPI_TTLV_HEADER + padded(n));
	if (p == NULL) {
		return NULL;
	}
	p[0] = (uint8_t)(tag >> 16);
	p[1] = (uint8_t)(tag >> 8);
	p[2] = (uint8_t)tag;
	p[3] = type;
	put32(p + 4, (uint32_t)n);
	return p + NKPI_TTLV_HEADER;
}

void nkpi_ttlv_begin(nkpi_ttlv_enc *e, uint32_t tag)
{
	if (e->err != NKP_OK) {
		return;
	}
	if (e->depth == NKPI_TTLV_MAX_DEPTH) {
		fail(e, NKP_ERR_TOO_LARGE);
		return;
	}
	if (item(e, tag, NKPI_TTLV_STRUCTURE, 0) != NULL) {
		e->open[e->depth++] = e->len - NKPI_TTLV_HEADER;
	}
}

void nkpi_ttlv_end(nkpi_ttlv_enc *e)
{
	size_t at;

	if (e->err != NKP_OK) {
		return;
	}
	if (e->depth == 0) {
		misuse("end of a structure that was not begun");
	}
	at = e->open[--e->depth];
	/* e->len <= max <= UINT32_MAX: the length fits. */
	put32(e->buf + at + 4, (uint32_t)(e->len - at - NKPI_TTLV_HEADER));
}

void nkpi_ttlv_integer(nkpi_ttlv_enc *e, uint32_t tag, int32_t v)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_INTEGER, 4);

	if (p != NULL) {
		put32(p, (uint32_t)v);
	}
}

void nkpi_ttlv_long(nkpi_ttlv_enc *e, uint32_t tag, int64_t v)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_LONG, 8);

	if (p != NULL) {
		put64(p, (uint64_t)v);
	}
}

void nkpi_ttlv_big(nkpi_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t n)
{
	uint8_t *p;

	if (n == 0 || n % 8 != 0 || v == NULL) {
		fail(e, NKP_ERR_INVALID);
		return;
	}
	p = item(e, tag, NKPI_TTLV_BIG, n);
	if (p != NULL) {
		memcpy(p, v, n);
	}
}

void nkpi_ttlv_enum(nkpi_ttlv_enc *e, uint32_t tag, uint32_t v)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_ENUM, 4);

	if (p != NULL) {
		put32(p, v);
	}
}

void nkpi_ttlv_bool(nkpi_ttlv_enc *e, uint32_t tag, bool v)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_BOOL, 8);

	if (p != NULL) {
		p[7] = v ? 1 : 0;
	}
}

void nkpi_ttlv_text(nkpi_ttlv_enc *e, uint32_t tag, const char *s, size_t n)
{
	uint8_t *p;

	if ((s == NULL && n != 0) || (n != 0 && !utf8_ok((const uint8_t *)s, n))) {
		fail(e, NKP_ERR_INVALID);
		return;
	}
	p = item(e, tag, NKPI_TTLV_TEXT, n);
	if (p != NULL && n != 0) {
		memcpy(p, s, n);
	}
}

void nkpi_ttlv_bytes(nkpi_ttlv_enc *e, uint32_t tag, const uint8_t *v, size_t n)
{
	uint8_t *p;

	if (v == NULL && n != 0) {
		fail(e, NKP_ERR_INVALID);
		return;
	}
	p = item(e, tag, NKPI_TTLV_BYTES, n);
	if (p != NULL && n != 0) {
		memcpy(p, v, n);
	}
}

void nkpi_ttlv_datetime(nkpi_ttlv_enc *e, uint32_t tag, int64_t t)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_DATETIME, 8);

	if (p != NULL) {
		put64(p, (uint64_t)t);
	}
}

void nkpi_ttlv_interval(nkpi_ttlv_enc *e, uint32_t tag, uint32_t secs)
{
	uint8_t *p = item(e, tag, NKPI_TTLV_INTERVAL, 4);

	if (p != NULL) {
		put32(p, secs);
	}
}

nkp_err nkpi_ttlv_enc_finish(const nkpi_ttlv_enc *e, const uint8_t **out, size_t *len)
{
	if (e->err != NKP_OK) {
		return e->err;
	}
	if (e->len == 0 || e->depth != 0) {
		return NKP_ERR_INVALID;
	}
	*out = e->buf;
	*len = e->len;
	return NKP_OK;
}

/* ---- decoding ---- */

/* Reads the header at c->p and checks the item's value against its type;
 * advances past the item (padding included). Structures are checked by
 * the caller. */
static nkp_err read_item(nkpi_ttlv_cursor *c, nkpi_ttlv_item *it)
{
	uint64_t room = (uint64_t)(c->end - c->p), size;
	const uint8_t *p = c->p;
	uint32_t n;

	if (room < NKPI_TTLV_HEADER) {
		return NKP_ERR_PARSE;
	}
	it->tag = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
	it->type = p[3];
	it->length = n = get32(p + 4);
	it->value = p + NKPI_TTLV_HEADER;
	it->depth = c->depth;
	size = NKPI_TTLV_HEADER + padded(n);
	if (!tag_ok(it->tag) || size > room) {
		return NKP_ERR_PARSE;
	}
	for (uint64_t i = n; i < padded(n); i++) {
		if (it->value[i] != 0) {
			return NKP_ERR_PARSE;
		}
	}
	switch (it->type) {
	case NKPI_TTLV_STRUCTURE:
	case NKPI_TTLV_BYTES:
		break;
	case NKPI_TTLV_INTEGER:
	case NKPI_TTLV_ENUM:
	case NKPI_TTLV_INTERVAL:
		if (n != 4) {
			return NKP_ERR_PARSE;
		}
		break;
	case NKPI_TTLV_LONG:
	case NKPI_TTLV_DATETIME:
		if (n != 8) {
			return NKP_ERR_PARSE;
		}
		break;
	case NKPI_TTLV_BOOL:
		if (n != 8 || get64(it->value) > 1) {
			return NKP_ERR_PARSE;
		}
		break;
	case NKPI_TTLV_BIG:
		if (n == 0 || n % 8 != 0) {
			return NKP_ERR_PARSE;
		}
		break;
	case NKPI_TTLV_TEXT:
		if (!utf8_ok(it->value, n)) {
			return NKP_ERR_PARSE;
		}
		break;
	default:
		return NKP_ERR_PARSE;
	}
	c->p += size;
	return NKP_OK;
}

/* Checks the items of Structure `s`, recursively. */
static nkp_err check_structure(const nkpi_ttlv_item *s)
{
	nkpi_ttlv_cursor c = {s->value, s->value + s->length, s->depth + 1};
	nkpi_ttlv_item it;
	nkp_err err;

	if (s->depth > NKPI_TTLV_MAX_DEPTH) {
		return NKP_ERR_TOO_LARGE;
	}
	while (c.p < c.end) {
		err = read_item(&c, &it);
		if (err == NKP_OK && it.type == NKPI_TTLV_STRUCTURE) {
			err = check_structure(&it);
		}
		if (err != NKP_OK) {
			return err;
		}
	}
	return NKP_OK;
}

nkp_err nkpi_ttlv_message_size(const uint8_t hdr[static NKPI_TTLV_HEADER], size_t max,
			       size_t *total)
{
	uint32_t tag = (uint32_t)hdr[0] << 16 | (uint32_t)hdr[1] << 8 | hdr[2];
	uint64_t n = NKPI_TTLV_HEADER + padded(get32(hdr + 4));

	if (!tag_ok(tag) || hdr[3] != NKPI_TTLV_STRUCTURE) {
		return NKP_ERR_PARSE;
	}
	if (n > max) {
		return NKP_ERR_TOO_LARGE;
	}
	*total = (size_t)n;
	return NKP_OK;
}

nkp_err nkpi_ttlv_decode(const uint8_t *buf, size_t len, size_t max, nkpi_ttlv_item *top)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item it;
	nkp_err err;

	if (buf == NULL && len != 0) {
		return NKP_ERR_INVALID;
	}
	if (len > max) {
		return NKP_ERR_TOO_LARGE;
	}
	c.p = buf;
	c.end = buf + len;
	c.depth = 1;
	err = read_item(&c, &it);
	if (err == NKP_OK && it.type == NKPI_TTLV_STRUCTURE) {
		err = check_structure(&it);
	}
	if (err == NKP_OK && c.p != c.end) {
		err = NKP_ERR_PARSE; /* something after the message */
	}
	if (err == NKP_OK) {
		*top = it;
	}
	return err;
}

void nkpi_ttlv_enter(const nkpi_ttlv_item *s, nkpi_ttlv_cursor *c)
{
	if (s->type != NKPI_TTLV_STRUCTURE) {
		misuse("entering an item that is not a structure");
	}
	c->p = s->value;
	c->end = s->value + s->length;
	c->depth = s->depth + 1;
}

bool nkpi_ttlv_next(nkpi_ttlv_cursor *c, nkpi_ttlv_item *out)
{
	nkpi_ttlv_cursor at = *c;
	nkpi_ttlv_item it;

	if (c->p >= c->end) {
		return false;
	}
	/* Checked before: this only re-reads it. */
	if (read_item(&at, &it) != NKP_OK) {
		misuse("a cursor over bytes that were not decoded");
	}
	*c = at;
	*out = it;
	return true;
}

nkp_err nkpi_ttlv_get_integer(const nkpi_ttlv_item *it, int32_t *out)
{
	if (it->type != NKPI_TTLV_INTEGER) {
		return NKP_ERR_PARSE;
	}
	*out = (int32_t)get32(it->value);
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_long(const nkpi_ttlv_item *it, int64_t *out)
{
	if (it->type != NKPI_TTLV_LONG) {
		return NKP_ERR_PARSE;
	}
	*out = (int64_t)get64(it->value);
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_enum(const nkpi_ttlv_item *it, uint32_t *out)
{
	if (it->type != NKPI_TTLV_ENUM) {
		return NKP_ERR_PARSE;
	}
	*out = get32(it->value);
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_bool(const nkpi_ttlv_item *it, bool *out)
{
	if (it->type != NKPI_TTLV_BOOL) {
		return NKP_ERR_PARSE;
	}
	*out = it->value[7] != 0;
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_datetime(const nkpi_ttlv_item *it, int64_t *out)
{
	if (it->type != NKPI_TTLV_DATETIME) {
		return NKP_ERR_PARSE;
	}
	*out = (int64_t)get64(it->value);
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_interval(const nkpi_ttlv_item *it, uint32_t *out)
{
	if (it->type != NKPI_TTLV_INTERVAL) {
		return NKP_ERR_PARSE;
	}
	*out = get32(it->value);
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_text(const nkpi_ttlv_item *it, const char **s, size_t *n)
{
	if (it->type != NKPI_TTLV_TEXT) {
		return NKP_ERR_PARSE;
	}
	*s = (const char *)it->value;
	*n = it->length;
	return NKP_OK;
}

static nkp_err get_view(const nkpi_ttlv_item *it, uint8_t type, const uint8_t **v, size_t *n)
{
	if (it->type != type) {
		return NKP_ERR_PARSE;
	}
	*v = it->value;
	*n = it->length;
	return NKP_OK;
}

nkp_err nkpi_ttlv_get_bytes(const nkpi_ttlv_item *it, const uint8_t **v, size_t *n)
{
	return get_view(it, NKPI_TTLV_BYTES, v, n);
}

nkp_err nkpi_ttlv_get_big(const nkpi_ttlv_item *it, const uint8_t **v, size_t *n)
{
	return get_view(it, NKPI_TTLV_BIG, v, n);
}

void nkpi_ttlv_enc_item(nkpi_ttlv_enc *e, const nkpi_ttlv_item *it)
{
	nkpi_ttlv_cursor c;
	nkpi_ttlv_item in;

	switch (it->type) {
	case NKPI_TTLV_STRUCTURE:
		nkpi_ttlv_begin(e, it->tag);
		nkpi_ttlv_enter(it, &c);
		while (nkpi_ttlv_next(&c, &in)) {
			nkpi_ttlv_enc_item(e, &in);
		}
		if (e->err == NKP_OK) {
			nkpi_ttlv_end(e);
		}
		break;
	case NKPI_TTLV_INTEGER:
		nkpi_ttlv_integer(e, it->tag, (int32_t)get32(it->value));
		break;
	case NKPI_TTLV_LONG:
		nkpi_ttlv_long(e, it->tag, (int64_t)get64(it->value));
		break;
	case NKPI_TTLV_BIG:
		nkpi_ttlv_big(e, it->tag, it->value, it->length);
		break;
	case NKPI_TTLV_ENUM:
		nkpi_ttlv_enum(e, it->tag, get32(it->value));
		break;
	case NKPI_TTLV_BOOL:
		nkpi_ttlv_bool(e, it->tag, it->value[7] != 0);
		break;
	case NKPI_TTLV_TEXT:
		nkpi_ttlv_text(e, it->tag, (const char *)it->value, it->length);
		break;
	case NKPI_TTLV_BYTES:
		nkpi_ttlv_bytes(e, it->tag, it->value, it->length);
		break;
	case NKPI_TTLV_DATETIME:
		nkpi_ttlv_datetime(e, it->tag, (int64_t)get64(it->value));
		break;
	case NKPI_TTLV_INTERVAL:
		nkpi_ttlv_interval(e, it->tag, get32(it->value));
		break;
	default:
		misuse("writing an item that was not decoded");
	}
}
