/* Enrolment tokens (nkp/private/token.h): KEY or KEY.AK, what `nkp-hostd
 * init` prints and nkpd pins. What is formatted parses back unchanged; each
 * token has one spelling and every other is refused. */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "token.h"

/* base64 of the bytes 0..31 */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static uint8_t key[NKP_PUBKEY_BYTES];

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	for (size_t i = 0; i < sizeof(key); i++) {
		key[i] = (uint8_t)i;
	}
}

TestSuite(token, .init = setup);

/* Parses `token` expecting a refusal, and no attestation key from it. */
static void refused(const char *token, const char *what)
{
	uint8_t pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	size_t ak_len = 99;

	cr_expect_eq(nkpi_token_parse(token, pub, ak, &ak_len), NKP_ERR_PARSE, "%s: accepted",
		     what);
	cr_expect_eq(ak_len, 0, "%s: an attestation key length from a refused token", what);
}

/* KEY_B64 "." and the base64 of ak[len] (up to 261 bytes). */
static void with_ak(char out[static NKPI_TOKEN_MAX + 8], const uint8_t *ak, size_t len)
{
	memcpy(out, KEY_B64 ".", 45);
	sodium_bin2base64(out + 45, NKPI_TOKEN_MAX + 8 - 45, ak, len,
			  sodium_base64_VARIANT_ORIGINAL);
}

Test(token, a_key_alone_is_the_key_in_base64_and_parses_back)
{
	char out[NKPI_TOKEN_MAX];
	uint8_t pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	size_t ak_len = 99;

	cr_assert_eq(nkpi_token_format(key, NULL, 0, out), NKP_OK);
	cr_assert_str_eq(out, KEY_B64, "as nkp-hostd init printed it before tokens had an AK");
	cr_assert_eq(nkpi_token_parse(out, pub, ak, &ak_len), NKP_OK);
	cr_assert_arr_eq(pub, key, sizeof(key));
	cr_assert_eq(ak_len, 0);
}

Test(token, a_key_and_ak_format_as_key_dot_ak_and_parse_back)
{
	const uint8_t three[3] = {0, 1, 2};
	uint8_t big[NKPI_TOKEN_AK_MAX], pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	char out[NKPI_TOKEN_MAX];
	size_t ak_len = 0;

	cr_assert_eq(nkpi_token_format(key, three, sizeof(three), out), NKP_OK);
	cr_assert_str_eq(out, KEY_B64 ".AAEC");
	cr_assert_eq(nkpi_token_parse(out, pub, ak, &ak_len), NKP_OK);
	cr_assert_arr_eq(pub, key, sizeof(key));
	cr_assert_eq(ak_len, 3);
	cr_assert_arr_eq(ak, three, 3);

	/* Every length from 1 to the largest, each with its padding. */
	randombytes_buf(big, sizeof(big));
	for (size_t len = 1; len <= NKPI_TOKEN_AK_MAX; len++) {
		memset(ak, 0, sizeof(ak));
		cr_assert_eq(nkpi_token_format(key, big, len, out), NKP_OK);
		cr_assert_lt(strlen(out), NKPI_TOKEN_MAX);
		cr_assert_eq(nkpi_token_parse(out, pub, ak, &ak_len), NKP_OK, "AK of %zu bytes",
			     len);
		cr_assert_eq(ak_len, len);
		cr_assert_arr_eq(ak, big, len);
		cr_assert_arr_eq(pub, key, sizeof(key));
	}
}

Test(token, an_ak_over_the_limit_is_not_formatted)
{
	uint8_t big[NKPI_TOKEN_AK_MAX + 1] = {0};
	char out[NKPI_TOKEN_MAX];

	cr_expect_eq(nkpi_token_format(key, big, sizeof(big), out), NKP_ERR_INVALID);
	cr_expect_eq(nkpi_token_format(key, NULL, 1, out), NKP_ERR_INVALID);
}

Test(token, a_key_of_the_wrong_length_is_refused)
{
	char t[64];

	refused(NULL, "NULL");
	refused("", "empty");
	snprintf(t, sizeof(t), "%.43s", KEY_B64);
	refused(t, "43 characters");
	snprintf(t, sizeof(t), "%.40s", KEY_B64);
	refused(t, "40 characters");
	/* 33 bytes: 44 characters, then more. */
	refused("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", "the base64 of 33 bytes");
	refused("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx0=", "the base64 of 29 bytes");
}

Test(token, a_key_with_a_bad_character_is_refused)
{
	char t[64];

	snprintf(t, sizeof(t), "%s", KEY_B64);
	t[5] = '*';
	refused(t, "'*'");
	t[5] = '-';
	refused(t, "'-' (URL-safe base64)");
	t[5] = '_';
	refused(t, "'_' (URL-safe base64)");
	t[5] = ' ';
	refused(t, "a space");
	t[5] = '=';
	refused(t, "padding inside");
	snprintf(t, sizeof(t), "%.43s.", KEY_B64);
	refused(t, "'.' in place of the padding");
	/* The same 32 bytes but two of the trailing bits set. */
	refused("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=", "non-canonical key");
}

/* libsodium 1.0.18 (Debian 12) decodes every byte 0x80-0xff as '/': a
 * second spelling of a key that token.c (and nkp_pubkey_from_base64)
 * refuse by checking the alphabet before decoding. */
Test(token, a_byte_outside_ascii_is_refused)
{
	char t[64];

	snprintf(t, sizeof(t), "/%s.AAEC", KEY_B64 + 1);
	t[0] = '\x80';
	refused(t, "a byte 0x80 for '/' in the key");
	snprintf(t, sizeof(t), "%s.AAE\xff", KEY_B64);
	refused(t, "a byte 0xff for '/' in the AK");
}

Test(token, a_dot_without_an_ak_is_refused)
{
	refused(KEY_B64 ".", "nothing after '.'");
	refused(KEY_B64 ".====", "padding alone");
	refused(KEY_B64 "..AAEC", "two dots");
}

Test(token, an_ak_not_a_multiple_of_4_characters_is_refused)
{
	refused(KEY_B64 ".A", "1 character");
	refused(KEY_B64 ".AA", "2 characters, unpadded");
	refused(KEY_B64 ".AAE", "3 characters, unpadded");
	refused(KEY_B64 ".AAECA", "5 characters");
	refused(KEY_B64 ".AAECAw=", "7 characters with padding");
	refused(KEY_B64 ".AAECAwQ==", "9 characters with padding");
}

Test(token, an_ak_with_non_canonical_trailing_bits_is_refused)
{
	/* Canonical: AA== (0x00), AAA= (0x00 0x00). */
	cr_assert_eq(nkpi_token_parse(KEY_B64 ".AA==", (uint8_t[NKP_PUBKEY_BYTES]){0},
				      (uint8_t[NKPI_TOKEN_AK_MAX]){0}, &(size_t){0}),
		     NKP_OK);
	cr_assert_eq(nkpi_token_parse(KEY_B64 ".AAA=", (uint8_t[NKP_PUBKEY_BYTES]){0},
				      (uint8_t[NKPI_TOKEN_AK_MAX]){0}, &(size_t){0}),
		     NKP_OK);
	refused(KEY_B64 ".AB==", "1 byte, a trailing bit set");
	refused(KEY_B64 ".AP==", "1 byte, all four trailing bits set");
	refused(KEY_B64 ".AAB=", "2 bytes, a trailing bit set");
	refused(KEY_B64 ".AAD=", "2 bytes, both trailing bits set");
	refused(KEY_B64 ".AAECAB==", "after a full group");
}

Test(token, an_ak_over_256_bytes_is_refused)
{
	uint8_t big[NKPI_TOKEN_AK_MAX + 3];
	char t[NKPI_TOKEN_MAX + 8];
	uint8_t pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	size_t ak_len = 0;

	randombytes_buf(big, sizeof(big));
	with_ak(t, big, NKPI_TOKEN_AK_MAX);
	cr_assert_eq(nkpi_token_parse(t, pub, ak, &ak_len), NKP_OK, "256 bytes: the limit");
	cr_assert_eq(ak_len, NKPI_TOKEN_AK_MAX);
	/* 257 and 258 bytes take as many characters as 256: refused by
	 * what they decode to, not by their length. */
	with_ak(t, big, NKPI_TOKEN_AK_MAX + 1);
	refused(t, "257 bytes");
	with_ak(t, big, NKPI_TOKEN_AK_MAX + 2);
	refused(t, "258 bytes");
	with_ak(t, big, NKPI_TOKEN_AK_MAX + 3);
	refused(t, "259 bytes");
}

Test(token, trailing_garbage_is_refused)
{
	char t[NKPI_TOKEN_MAX + 8];
	uint8_t big[NKPI_TOKEN_AK_MAX];

	refused(KEY_B64 "A", "a character after the key");
	refused(KEY_B64 " ", "a space after the key");
	refused(KEY_B64 "\n", "a newline after the key");
	refused(KEY_B64 ":AAEC", "another separator");
	refused(KEY_B64 ".AAEC\n", "a newline after the AK");
	refused(KEY_B64 ".AAEC ", "a space after the AK");
	refused(KEY_B64 ".AAEC.", "a dot after the AK");
	refused(KEY_B64 ".AAEC.AAEC", "a second AK");
	refused(KEY_B64 ".AA==AAEC", "characters after the padding");
	refused(KEY_B64 ".AA==AA==", "two padded groups");
	refused(KEY_B64 ".AAEC====", "padding after a full group");
	/* The longest AK, one character more. */
	randombytes_buf(big, sizeof(big));
	with_ak(t, big, NKPI_TOKEN_AK_MAX);
	strcat(t, "A");
	refused(t, "a character after the longest AK");
}
