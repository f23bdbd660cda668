/* Identities (include/nkp/channel.h): generation, persistence through
 * the secret key, base64, and the low-order check of peer keys. The
 * sessions between them are tested in test-session.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

static nkp_identity *a_id, *b_id;

static void pair_setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&a_id), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&b_id), NKP_OK);
}

static void pair_teardown(void)
{
	nkp_identity_free(a_id);
	nkp_identity_free(b_id);
}

Test(channel, low_order_peer_keys_are_refused, .init = pair_setup, .fini = pair_teardown)
{
	static const uint8_t zero[NKP_PUBKEY_BYTES] = {0};
	static const uint8_t one[NKP_PUBKEY_BYTES] = {1};
	/* A point of order 8 on Curve25519. */
	static const uint8_t order8[NKP_PUBKEY_BYTES] = {
		0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
		0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
		0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};

	cr_assert_eq(nkp_pubkey_check(a_id, zero), NKP_ERR_INVALID);
	cr_assert_eq(nkp_pubkey_check(a_id, one), NKP_ERR_INVALID);
	cr_assert_eq(nkp_pubkey_check(a_id, order8), NKP_ERR_INVALID);
	cr_assert_eq(nkp_pubkey_check(a_id, nkp_identity_public(b_id)), NKP_OK);
}

Test(channel, identity_from_key_is_the_same_identity)
{
	nkp_identity *a, *b;

	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&a), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(nkp_identity_secret(a), &b), NKP_OK);
	cr_assert_eq(memcmp(nkp_identity_public(a), nkp_identity_public(b), NKP_PUBKEY_BYTES), 0);
	cr_assert(nkp_key_equal(nkp_identity_secret(a), nkp_identity_secret(b)));
	nkp_identity_free(a);
	nkp_identity_free(b);
	nkp_identity_free(NULL);
}

Test(channel, public_keys_round_trip_through_base64)
{
	nkp_identity *id;
	char b64[45];
	uint8_t pub[NKP_PUBKEY_BYTES];

	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&id), NKP_OK);
	nkp_pubkey_to_base64(nkp_identity_public(id), b64);
	cr_assert_eq(strlen(b64), 44);
	cr_assert_eq(b64[43], '=');
	cr_assert_eq(nkp_pubkey_from_base64(b64, pub), NKP_OK);
	cr_assert_eq(memcmp(pub, nkp_identity_public(id), NKP_PUBKEY_BYTES), 0);
	nkp_identity_free(id);

	memset(pub, 0, sizeof(pub));
	nkp_pubkey_to_base64(pub, b64);
	cr_assert_str_eq(b64, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
}

Test(channel, bad_base64_is_refused)
{
	static const char *const bad[] = {
		"",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",	 /* no padding */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", /* too long */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",	 /* 31 bytes */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-=",	 /* URL-safe alphabet */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_=",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=", /* not base64 */
		"AAAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAA=", /* space */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", /* non-zero trailing bits */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	};
	uint8_t pub[NKP_PUBKEY_BYTES], before[NKP_PUBKEY_BYTES];

	cr_assert_eq(nkp_init(), NKP_OK);
	memset(pub, 0x33, sizeof(pub));
	memcpy(before, pub, sizeof(pub));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(nkp_pubkey_from_base64(bad[i], pub), NKP_ERR_PARSE, "case %zu", i);
	}
	cr_assert_eq(nkp_pubkey_from_base64(NULL, pub), NKP_ERR_PARSE);
	cr_assert_eq(memcmp(pub, before, sizeof(pub)), 0);
}
