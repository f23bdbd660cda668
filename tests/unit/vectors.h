/* Known-answer vector helpers shared by the unit tests of the file formats
 * (test-file.c: sealed files, test-backup.c: backup files). Included once
 * per test executable. */
#ifndef NKP_TEST_VECTORS_H
#define NKP_TEST_VECTORS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include "vecout.h"

/* ---- known-answer vector helpers ----
 * A deterministic libsodium RNG: call n returns
 * randombytes_buf_deterministic(size, seed with its first 8 bytes XORed
 * with n as u64 LE). Tests reset n to 0 right before the operation, so the
 * vector does not depend on how much randomness initialisation used. */

static uint8_t rng_seed[randombytes_SEEDBYTES];
static uint64_t rng_calls;

static void det_buf(void *buf, size_t size)
{
	uint8_t seed[randombytes_SEEDBYTES];

	memcpy(seed, rng_seed, sizeof(seed));
	for (int i = 0; i < 8; i++) {
		seed[i] ^= (uint8_t)(rng_calls >> (8 * i));
	}
	rng_calls++;
	randombytes_buf_deterministic(buf, size, seed);
}

static uint32_t det_random(void)
{
	uint32_t r;

	det_buf(&r, sizeof(r));
	return r;
}

static const char *det_name(void)
{
	return "nkp-test-deterministic";
}

static struct randombytes_implementation det_rng = {
	.implementation_name = det_name,
	.random = det_random,
	.buf = det_buf,
};

/* See vecout.h. */
static bool regen_vectors(void)
{
	return vec_out_dir() != NULL;
}

static const char *vec_path(const char *name)
{
	static char p[2][1024];
	static int i;

	i ^= 1;
	snprintf(p[i], sizeof(p[i]), "%s/%s", NKP_VECTORS_DIR, name);
	return p[i];
}

/* The expectations file: "name: value" lines, '#' comments. */
static char *vec_text;

static void vec_load(const char *name)
{
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_file_read(vec_path(name), 1 << 16, &buf, &len), NKP_OK, "%s", name);
	free(vec_text); /* the one loaded before, if any */
	vec_text = realloc(buf, len + 1);
	vec_text[len] = '\0';
}

/* Value of the nth line named `key` (0-based); false if there is none. */
static bool vec_nth(const char *key, int nth, char *out, size_t outsz)
{
	size_t klen = strlen(key);

	for (const char *l = vec_text; l != NULL && *l != '\0';) {
		const char *end = strchr(l, '\n');
		size_t llen = end != NULL ? (size_t)(end - l) : strlen(l);

		if (llen > klen + 1 && strncmp(l, key, klen) == 0 && l[klen] == ':' &&
		    l[klen + 1] == ' ' && nth-- == 0) {
			cr_assert_lt(llen - klen - 2, outsz);
			memcpy(out, l + klen + 2, llen - klen - 2);
			out[llen - klen - 2] = '\0';
			return true;
		}
		l = end != NULL ? end + 1 : NULL;
	}
	return false;
}

static void vec_str(const char *key, char *out, size_t outsz)
{
	cr_assert(vec_nth(key, 0, out, outsz), "no '%s' in the vector file", key);
}

static uint64_t vec_u64(const char *key)
{
	char s[32];

	vec_str(key, s, sizeof(s));
	return strtoull(s, NULL, 10);
}

static void hex_exact(const char *hex, uint8_t *out, size_t len)
{
	size_t got = 0;

	cr_assert_eq(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &got, NULL), 0, "%s", hex);
	cr_assert_eq(got, len, "%s", hex);
}

static void vec_hex(const char *key, uint8_t *out, size_t len)
{
	char s[4096];

	vec_str(key, s, sizeof(s));
	hex_exact(s, out, len);
}

static void print_hex(const char *key, const uint8_t *b, size_t len)
{
	char s[4096];

	sodium_bin2hex(s, sizeof(s), b, len);
	fprintf(stderr, "%s: %s\n", key, s);
}

/* Compares against the checked-in vector (and emits the computed bytes
 * for the regeneration tool). */
static void vec_check_bin(const char *name, const uint8_t *buf, size_t len)
{
	uint8_t *want = NULL;
	size_t wlen = 0;

	vec_emit(name, buf, len);
	cr_assert_eq(nkp_file_read(vec_path(name), 1 << 20, &want, &wlen), NKP_OK, "%s", name);
	cr_assert_eq(wlen, len, "%s: length differs", name);
	cr_assert_arr_eq(want, buf, len, "%s: bytes differ", name);
	free(want);
}

#endif
