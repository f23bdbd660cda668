/* Small helpers shared by nkpd's modules. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/core.h"

/* Names of providers and hosts end up in file names, JSON and log lines:
 * keep them to a safe alphabet. */
bool nkpd_util_name_valid(const char *name)
{
	size_t n;

	if (name == NULL) {
		return false;
	}
	n = strlen(name);
	if (n == 0 || n > NKPD_NAME_MAX || name[0] == '-' || name[0] == '.') {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
		if (!ok) {
			return false;
		}
	}
	return true;
}

void nkpd_util_copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src == NULL ? 0 : strlen(src);

	if (n >= size) {
		n = size - 1;
	}
	if (n > 0) {
		memcpy(dst, src, n);
	}
	dst[n] = '\0';
}

uint64_t nkpd_util_new_epoch(void)
{
	uint64_t e = 0;

	while (e == 0) {
		randombytes_buf(&e, sizeof(e));
	}
	return e;
}

/* The length of the UTF-8 sequence at `p` (at most `left` bytes), or 0 if
 * it is not a valid, shortest-form, non-surrogate code point; *cp gets it. */
static size_t utf8_seq(const unsigned char *p, size_t left, uint32_t *cp)
{
	size_t n;
	uint32_t c, min;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	} else if ((p[0] & 0xe0) == 0xc0) {
		n = 2, c = p[0] & 0x1fu, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3, c = p[0] & 0x0fu, min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		n = 4, c = p[0] & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	if (n > left) {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) {
			return 0;
		}
		c = c << 6 | (p[i] & 0x3fu);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
		return 0;
	}
	*cp = c;
	return n;
}

/* Bytes of the escape sequence starting at p[0] == ESC (CSI, OSC, DCS and
 * the like up to their terminator; two bytes for the rest). */
static size_t escape_len(const unsigned char *p, size_t left)
{
	size_t i = 1;

	if (left < 2) {
		return left;
	}
	if (p[1] == '[') {
		/* CSI: parameters and intermediates up to a final byte. */
		for (i = 2; i < left && !(p[i] >= 0x40 && p[i] <= 0x7e); i++) {
		}
		return i < left ? i + 1 : left;
	}
	if (p[1] == ']' || p[1] == 'P' || p[1] == '_' || p[1] == '^' || p[1] == 'X') {
		/* String sequences: up to BEL or ESC \ . */
		for (i = 2; i < left; i++) {
			if (p[i] == 0x07) {
				return i + 1;
			}
			if (p[i] == 0x1b && i + 1 < left && p[i + 1] == '\\') {
				return i + 2;
			}
		}
		return left;
	}
	return 2;
}

void nkpd_util_sanitize(char *dst, size_t size, const char *src)
{
	const unsigned char *p = (const unsigned char *)(src != NULL ? src : "");
	size_t left = strlen((const char *)p), o = 0;

	if (size == 0) {
		return;
	}
	while (left > 0) {
		uint32_t cp = 0;
		size_t n;

		if (p[0] == 0x1b) {
			n = escape_len(p, left);
			p += n;
			left -= n;
			continue;
		}
		n = utf8_seq(p, left, &cp);
		if (n == 0) {
			/* Not UTF-8: one '?' for the byte. */
			cp = '?';
			n = 1;
			if (o + 1 >= size) {
				break;
			}
			dst[o++] = '?';
		} else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
			/* C0, DEL, C1 (0x9b is a one-byte CSI on some terminals). */
		} else {
			if (o + n >= size) {
				break;
			}
			memcpy(dst + o, p, n);
			o += n;
		}
		p += n;
		left -= n;
	}
	dst[o] = '\0';
}

void *nkpd_util_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n == 0 ? 1 : n, size);

	if (p == NULL) {
		nkp_log(NKP_LOG_ERR, "NKPD-NOMEM", "out of memory building a reply");
		abort();
	}
	return p;
}
