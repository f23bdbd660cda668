/* TTLV known answers for the KMIP tests (test-kmip-ttlv.c, test-kmip.c):
 * a vector's hex as bytes, and an encoder's output checked against one.
 * Includes vectors.h (vec_str, hex_exact); include it after ttlv.h. */
#ifndef NKP_TEST_TTLV_VECTORS_H
#define NKP_TEST_TTLV_VECTORS_H

#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "vectors.h"

/* The vector `key` as bytes (*len of them; the caller frees). */
static uint8_t *vec_bytes(const char *key, size_t *len)
{
	char hex[4096];
	uint8_t *b;

	vec_str(key, hex, sizeof(hex));
	*len = strlen(hex) / 2;
	b = malloc(*len + 1);
	cr_assert_not_null(b);
	hex_exact(hex, b, *len);
	return b;
}

/* What `e` wrote is vector `key`, byte for byte; `e` is finished. */
static void expect_vector(nkpi_ttlv_enc *e, const char *key)
{
	const uint8_t *out;
	size_t len, wlen;
	uint8_t *want = vec_bytes(key, &wlen);

	cr_assert_eq(nkpi_ttlv_enc_finish(e, &out, &len), NKP_OK, "%s", key);
	cr_assert_eq(len, wlen, "%s: %zu bytes, want %zu", key, len, wlen);
	cr_assert_arr_eq(out, want, len, "%s: bytes differ", key);
	free(want);
	nkpi_ttlv_enc_fini(e);
}

#endif
