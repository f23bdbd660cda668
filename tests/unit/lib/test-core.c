/* Key core: errors, keys, wrapping, primaries, ids, logging. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include <nkp/nkp.h>

#include "internal.h"

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
}

TestSuite(core, .init = setup);

static void fill(uint8_t *p, size_t n, uint8_t start)
{
	for (size_t i = 0; i < n; i++) {
		p[i] = (uint8_t)(start + i * 7);
	}
}

/* ---- errors ------------------------------------------------------------ */

Test(core, every_error_code_has_a_distinct_message)
{
	for (int i = 0; i < NKP_ERR__COUNT; i++) {
		const char *a = nkp_strerror((nkp_err)i);

		cr_assert_not_null(a);
		cr_assert_gt(strlen(a), 0, "code %d has an empty message", i);
		cr_assert_str_neq(a, "unknown error", "code %d has no message", i);
		for (int j = 0; j < i; j++) {
			cr_assert_str_neq(a, nkp_strerror((nkp_err)j),
					  "codes %d and %d share a message", i, j);
		}
	}
}

Test(core, unknown_error_codes_get_a_generic_message)
{
	cr_assert_str_eq(nkp_strerror(NKP_ERR__COUNT), "unknown error");
	cr_assert_str_eq(nkp_strerror((nkp_err)-1), "unknown error");
	cr_assert_str_eq(nkp_strerror((nkp_err)100000), "unknown error");
}

Test(core, errno_values_map_to_nkp_errors)
{
	cr_assert_eq(nkp_err_from_errno(0), NKP_OK);
	cr_assert_eq(nkp_err_from_errno(ENOSPC), NKP_ERR_NOSPC);
	cr_assert_eq(nkp_err_from_errno(EDQUOT), NKP_ERR_NOSPC);
	cr_assert_eq(nkp_err_from_errno(EACCES), NKP_ERR_PERM);
	cr_assert_eq(nkp_err_from_errno(EPERM), NKP_ERR_PERM);
	cr_assert_eq(nkp_err_from_errno(ENOENT), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_err_from_errno(EEXIST), NKP_ERR_EXISTS);
	cr_assert_eq(nkp_err_from_errno(ENOMEM), NKP_ERR_NOMEM);
	cr_assert_eq(nkp_err_from_errno(EIO), NKP_ERR_IO);
}

/* ---- keys -------------------------------------------------------------- */

Test(core, generated_keys_differ)
{
	nkp_key *a = NULL;
	nkp_key *b = NULL;

	cr_assert_eq(nkp_key_generate(&a), NKP_OK);
	cr_assert_eq(nkp_key_generate(&b), NKP_OK);
	cr_assert_not(nkp_key_equal(a, b));
	cr_assert(nkp_key_equal(a, a));
	nkp_key_free(a);
	nkp_key_free(b);
}

Test(core, key_from_bytes_holds_a_copy_of_the_bytes)
{
	uint8_t bytes[NKP_KEY_BYTES];
	uint8_t out[NKP_KEY_BYTES];
	nkp_key *k = NULL;

	fill(bytes, sizeof(bytes), 1);
	cr_assert_eq(nkp_key_from_bytes(bytes, &k), NKP_OK);
	bytes[0] ^= 0xff; /* the key must not alias the caller's buffer */
	nkp_key_export(k, out);
	bytes[0] ^= 0xff;
	cr_assert_arr_eq(out, bytes, sizeof(out));
	nkp_key_free(k);
}

Test(core, key_dup_is_equal_and_independent)
{
	nkp_key *a = NULL;
	nkp_key *b = NULL;
	nkp_key *c = NULL;
	uint8_t before[NKP_KEY_BYTES];
	uint8_t after[NKP_KEY_BYTES];

	cr_assert_eq(nkp_key_generate(&a), NKP_OK);
	nkp_key_export(a, before);
	cr_assert_eq(nkp_key_dup(a, &b), NKP_OK);
	cr_assert(nkp_key_equal(a, b));
	nkp_key_free(a);
	nkp_key_export(b, after);
	cr_assert_arr_eq(before, after, sizeof(before));
	cr_assert_eq(nkp_key_generate(&c), NKP_OK);
	cr_assert_not(nkp_key_equal(b, c));
	nkp_key_free(b);
	nkp_key_free(c);
	nkp_wipe(before, sizeof(before));
	nkp_wipe(after, sizeof(after));
}

Test(core, keys_differing_in_one_byte_are_not_equal)
{
	uint8_t bytes[NKP_KEY_BYTES];
	nkp_key *a = NULL;
	nkp_key *b = NULL;

	fill(bytes, sizeof(bytes), 9);
	cr_assert_eq(nkp_key_from_bytes(bytes, &a), NKP_OK);
	bytes[NKP_KEY_BYTES - 1] ^= 1;
	cr_assert_eq(nkp_key_from_bytes(bytes, &b), NKP_OK);
	cr_assert_not(nkp_key_equal(a, b));
	nkp_key_free(a);
	nkp_key_free(b);
}

Test(core, derive_is_deterministic_and_separates_contexts_and_ids)
{
	nkp_key *parent = NULL;
	nkp_key *k1 = NULL;
	nkp_key *k1again = NULL;
	nkp_key *k2 = NULL;
	nkp_key *kid = NULL;

	cr_assert_eq(nkp_key_generate(&parent), NKP_OK);
	cr_assert_eq(nkp_key_derive(parent, 1, "ctxaaaaa", &k1), NKP_OK);
	cr_assert_eq(nkp_key_derive(parent, 1, "ctxaaaaa", &k1again), NKP_OK);
	cr_assert_eq(nkp_key_derive(parent, 1, "ctxbbbbb", &k2), NKP_OK);
	cr_assert_eq(nkp_key_derive(parent, 2, "ctxaaaaa", &kid), NKP_OK);
	cr_assert(nkp_key_equal(k1, k1again));
	cr_assert_not(nkp_key_equal(k1, k2));
	cr_assert_not(nkp_key_equal(k1, kid));
	cr_assert_not(nkp_key_equal(k1, parent));
	cr_assert_not(nkp_key_equal(k2, parent));
	nkp_key_free(parent);
	nkp_key_free(k1);
	nkp_key_free(k1again);
	nkp_key_free(k2);
	nkp_key_free(kid);
}

Test(core, free_and_wipe_accept_null)
{
	uint8_t buf[8];

	nkp_key_free(NULL);
	nkp_primary_free(NULL);
	nkp_wipe(NULL, 10);
	memset(buf, 0xaa, sizeof(buf));
	nkp_wipe(buf, sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++) {
		cr_assert_eq(buf[i], 0);
	}
}

/* ---- wrapping ---------------------------------------------------------- */

#define PT_LEN 32u
static const uint8_t ad[] = "associated data";

static void seal_sample(nkp_key **key, uint8_t nonce[NKP_NONCE_BYTES],
			uint8_t ct[PT_LEN + NKP_TAG_BYTES], uint8_t pt[PT_LEN])
{
	fill(pt, PT_LEN, 3);
	cr_assert_eq(nkp_key_generate(key), NKP_OK);
	cr_assert_eq(nkp_wrap_seal(*key, ad, sizeof(ad), pt, PT_LEN, nonce, ct), NKP_OK);
}

Test(core, wrap_round_trips)
{
	uint8_t pt[PT_LEN], out[PT_LEN], nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;

	seal_sample(&key, nonce, ct, pt);
	cr_assert(memcmp(ct, pt, PT_LEN) != 0);
	cr_assert_eq(nkp_wrap_open(key, ad, sizeof(ad), nonce, ct, sizeof(ct), out), NKP_OK);
	cr_assert_arr_eq(out, pt, PT_LEN);
	nkp_key_free(key);
}

Test(core, wrap_uses_a_fresh_nonce_each_time)
{
	uint8_t pt[PT_LEN], n1[NKP_NONCE_BYTES], n2[NKP_NONCE_BYTES];
	uint8_t c1[PT_LEN + NKP_TAG_BYTES], c2[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;

	seal_sample(&key, n1, c1, pt);
	cr_assert_eq(nkp_wrap_seal(key, ad, sizeof(ad), pt, PT_LEN, n2, c2), NKP_OK);
	cr_assert(memcmp(n1, n2, sizeof(n1)) != 0);
	cr_assert(memcmp(c1, c2, sizeof(c1)) != 0);
	nkp_key_free(key);
}

Test(core, wrap_open_fails_with_wrong_associated_data_and_wipes_output)
{
	uint8_t pt[PT_LEN], out[PT_LEN], nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	static const uint8_t other[] = "associated dat4";
	nkp_key *key = NULL;

	seal_sample(&key, nonce, ct, pt);
	memset(out, 0xaa, sizeof(out));
	cr_assert_eq(nkp_wrap_open(key, other, sizeof(other), nonce, ct, sizeof(ct), out),
		     NKP_ERR_AUTH);
	for (size_t i = 0; i < sizeof(out); i++) {
		cr_assert_eq(out[i], 0);
	}
	cr_assert_eq(nkp_wrap_open(key, NULL, 0, nonce, ct, sizeof(ct), out), NKP_ERR_AUTH);
	nkp_key_free(key);
}

Test(core, wrap_open_fails_with_the_wrong_key)
{
	uint8_t pt[PT_LEN], out[PT_LEN], nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;
	nkp_key *other = NULL;

	seal_sample(&key, nonce, ct, pt);
	cr_assert_eq(nkp_key_generate(&other), NKP_OK);
	cr_assert_eq(nkp_wrap_open(other, ad, sizeof(ad), nonce, ct, sizeof(ct), out),
		     NKP_ERR_AUTH);
	nkp_key_free(key);
	nkp_key_free(other);
}

Test(core, wrap_open_fails_on_every_flipped_byte)
{
	uint8_t pt[PT_LEN], out[PT_LEN], nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;

	seal_sample(&key, nonce, ct, pt);
	for (size_t i = 0; i < sizeof(ct); i++) {
		ct[i] ^= 0x01;
		cr_assert_eq(nkp_wrap_open(key, ad, sizeof(ad), nonce, ct, sizeof(ct), out),
			     NKP_ERR_AUTH, "ciphertext byte %zu", i);
		ct[i] ^= 0x01;
	}
	for (size_t i = 0; i < sizeof(nonce); i++) {
		nonce[i] ^= 0x80;
		cr_assert_eq(nkp_wrap_open(key, ad, sizeof(ad), nonce, ct, sizeof(ct), out),
			     NKP_ERR_AUTH, "nonce byte %zu", i);
		nonce[i] ^= 0x80;
	}
	nkp_key_free(key);
}

Test(core, wrap_open_fails_on_truncated_ciphertext)
{
	uint8_t pt[PT_LEN], out[PT_LEN], nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;

	seal_sample(&key, nonce, ct, pt);
	for (size_t len = NKP_TAG_BYTES; len < sizeof(ct); len++) {
		cr_assert_eq(nkp_wrap_open(key, ad, sizeof(ad), nonce, ct, len, out), NKP_ERR_AUTH,
			     "length %zu", len);
	}
	for (size_t len = 0; len < NKP_TAG_BYTES; len++) {
		cr_assert_eq(nkp_wrap_open(key, ad, sizeof(ad), nonce, ct, len, out),
			     NKP_ERR_INVALID, "length %zu", len);
	}
	nkp_key_free(key);
}

Test(core, wrap_refuses_missing_arguments)
{
	uint8_t pt[PT_LEN] = {0}, nonce[NKP_NONCE_BYTES], ct[PT_LEN + NKP_TAG_BYTES];
	nkp_key *key = NULL;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	cr_assert_eq(nkp_wrap_seal(NULL, ad, sizeof(ad), pt, PT_LEN, nonce, ct), NKP_ERR_INVALID);
	cr_assert_eq(nkp_wrap_seal(key, NULL, 4, pt, PT_LEN, nonce, ct), NKP_ERR_INVALID);
	cr_assert_eq(nkp_wrap_seal(key, ad, sizeof(ad), NULL, PT_LEN, nonce, ct), NKP_ERR_INVALID);
	cr_assert_eq(nkp_wrap_seal(key, ad, sizeof(ad), pt, PT_LEN, nonce, NULL), NKP_ERR_INVALID);
	cr_assert_eq(nkp_wrap_open(NULL, ad, sizeof(ad), nonce, ct, sizeof(ct), pt),
		     NKP_ERR_INVALID);
	nkp_key_free(key);
}

/* ---- providers and ids ------------------------------------------------- */

Test(core, version_state_names_round_trip)
{
	static const nkp_version_state all[] = {NKP_VERSION_STAGED, NKP_VERSION_ACTIVE,
						NKP_VERSION_DECRYPT_ONLY};
	nkp_version_state s = 0;

	cr_assert_str_eq(nkp_version_state_name(NKP_VERSION_STAGED), "staged");
	cr_assert_str_eq(nkp_version_state_name(NKP_VERSION_ACTIVE), "active");
	cr_assert_str_eq(nkp_version_state_name(NKP_VERSION_DECRYPT_ONLY), "decrypt-only");
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		cr_assert(nkp_version_state_parse(nkp_version_state_name(all[i]), &s));
		cr_assert_eq(s, all[i]);
	}
	cr_assert_str_eq(nkp_version_state_name((nkp_version_state)0), "unknown");
	cr_assert_str_eq(nkp_version_state_name((nkp_version_state)99), "unknown");
}

Test(core, unknown_version_state_names_are_refused)
{
	nkp_version_state s = NKP_VERSION_ACTIVE;

	cr_assert_not(nkp_version_state_parse("unknown", &s));
	cr_assert_not(nkp_version_state_parse("", &s));
	cr_assert_not(nkp_version_state_parse("Active", &s));
	cr_assert_not(nkp_version_state_parse("active ", &s));
	cr_assert_eq(s, NKP_VERSION_ACTIVE);
}

Test(core, primary_keeps_id_version_and_derives_a_kek_subkey)
{
	uint8_t id[NKP_ID_BYTES];
	nkp_key *key = NULL;
	nkp_key *expect = NULL;
	nkp_primary *p = NULL;

	fill(id, sizeof(id), 5);
	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	cr_assert_eq(nkp_primary_new(id, 7, key, &p), NKP_OK);
	cr_assert_arr_eq(nkp_primary_provider_id(p), id, sizeof(id));
	cr_assert_eq(nkp_primary_version(p), 7);
	cr_assert(nkp_key_equal(nkp_primary_key(p), key));
	cr_assert_not(nkp_key_equal(nkp_primary_kek_key(p), key));
	cr_assert_eq(nkp_key_derive(key, 1, "nkpkek01", &expect), NKP_OK);
	cr_assert(nkp_key_equal(nkp_primary_kek_key(p), expect));
	nkp_key_free(key); /* the primary holds its own copy */
	cr_assert(nkp_key_equal(nkp_primary_kek_key(p), expect));
	nkp_key_free(expect);
	nkp_primary_free(p);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++) {
		acc |= p[i];
	}
	return acc == 0;
}

Test(core, slab_slots_are_zeroed_distinct_and_wiped_when_given_back)
{
	static nkpi_slab slab = NKPI_SLAB_INIT(64);
	enum { N = 3 * NKPI_SLAB_SLOTS + 5 }; /* several chunks */
	uint8_t *slot[N];

	for (size_t i = 0; i < N; i++) {
		slot[i] = nkpi_slab_get(&slab);
		cr_assert_not_null(slot[i]);
		cr_assert(all_zero(slot[i], 64), "slot %zu comes zeroed", i);
		memset(slot[i], (int)(i & 0xff) | 1, 64);
	}
	for (size_t i = 0; i < N; i++) {
		for (size_t j = 0; j < 64; j++) {
			cr_assert_eq(slot[i][j], (uint8_t)((i & 0xff) | 1),
				     "slot %zu overlaps another", i);
		}
	}
	for (size_t i = 0; i < N; i++) {
		nkpi_slab_put(&slab, slot[i]);
		/* Given back: wiped but for the free-list link in its first bytes. */
		cr_assert(all_zero(slot[i] + sizeof(void *), 64 - sizeof(void *)));
	}
	nkpi_slab_put(&slab, NULL);
	/* Slots are reused, and come zeroed again. */
	for (size_t i = 0; i < N; i++) {
		uint8_t *again = nkpi_slab_get(&slab);

		cr_assert_not_null(again);
		cr_assert(all_zero(again, 64));
		slot[i] = again;
	}
	for (size_t i = 0; i < N; i++) {
		nkpi_slab_put(&slab, slot[i]);
	}
}

Test(core, many_primaries_keep_their_own_keys_while_others_come_and_go)
{
	enum { N = 300 };
	uint8_t id[NKP_ID_BYTES] = {0};
	nkp_key *key[N];
	nkp_primary *p[N];

	for (size_t i = 0; i < N; i++) {
		cr_assert_eq(nkp_key_generate(&key[i]), NKP_OK);
		cr_assert_eq(nkp_primary_new(id, (uint32_t)i + 1, key[i], &p[i]), NKP_OK);
	}
	for (size_t i = 0; i < N; i += 2) { /* free every other one, then refill */
		nkp_primary_free(p[i]);
		cr_assert_eq(nkp_primary_new(id, (uint32_t)i + 1, key[i], &p[i]), NKP_OK);
	}
	for (size_t i = 0; i < N; i++) {
		nkp_key *kek = NULL;

		cr_assert(nkp_key_equal(nkp_primary_key(p[i]), key[i]));
		cr_assert_eq(nkp_key_derive(key[i], 1, "nkpkek01", &kek), NKP_OK);
		cr_assert(nkp_key_equal(nkp_primary_kek_key(p[i]), kek));
		nkp_key_free(kek);
		nkp_primary_free(p[i]);
		nkp_key_free(key[i]);
	}
}

Test(core, primary_refuses_version_zero_and_missing_key)
{
	uint8_t id[NKP_ID_BYTES] = {0};
	nkp_key *key = NULL;
	nkp_primary *p = (nkp_primary *)&id; /* sentinel: must stay untouched */

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	cr_assert_eq(nkp_primary_new(id, 0, key, &p), NKP_ERR_INVALID);
	cr_assert_eq(nkp_primary_new(id, 1, NULL, &p), NKP_ERR_INVALID);
	cr_assert_eq(p, (nkp_primary *)&id);
	nkp_key_free(key);
}

Test(core, id_hex_round_trips)
{
	uint8_t id[NKP_ID_BYTES];
	uint8_t back[NKP_ID_BYTES];
	char hex[33];

	fill(id, sizeof(id), 0xf0);
	nkp_id_to_hex(id, hex);
	cr_assert_eq(strlen(hex), 32);
	cr_assert_str_eq(hex, "f0f7fe050c131a21282f363d444b5259");
	cr_assert_eq(nkp_id_from_hex(hex, back), NKP_OK);
	cr_assert_arr_eq(back, id, sizeof(id));
	cr_assert_eq(nkp_id_from_hex("F0F7FE050C131A21282F363D444B5259", back), NKP_OK);
	cr_assert_arr_eq(back, id, sizeof(id));
}

Test(core, bad_id_hex_is_refused_without_touching_output)
{
	static const char *const bad[] = {
		"",
		"f0f7fe050c131a21282f363d444b525",   /* 31 */
		"f0f7fe050c131a21282f363d444b52590", /* 33 */
		"f0f7fe050c131a21282f363d444b52zz",
		"f0f7fe050c131a21282f363d444b525 ",
		"0xf7fe050c131a21282f363d444b5259",
		"f0f7fe050c131a21-82f363d444b5259",
	};
	uint8_t out[NKP_ID_BYTES];

	memset(out, 0xaa, sizeof(out));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(nkp_id_from_hex(bad[i], out), NKP_ERR_PARSE, "\"%s\"", bad[i]);
	}
	cr_assert_eq(nkp_id_from_hex(NULL, out), NKP_ERR_PARSE);
	for (size_t i = 0; i < sizeof(out); i++) {
		cr_assert_eq(out[i], 0xaa);
	}
}

/* ---- logging ----------------------------------------------------------- */

typedef struct capture {
	int calls;
	nkp_log_level level;
	char msgid[64];
	char msg[1100];
} capture;

static void capture_sink(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	capture *c = arg;

	c->calls++;
	c->level = level;
	snprintf(c->msgid, sizeof(c->msgid), "%s", msgid);
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
}

Test(core, log_passes_message_id_and_formatted_text_to_the_sink)
{
	capture c = {0};

	nkp_log_set_sink(capture_sink, &c);
	nkp_log(NKP_LOG_WARN, "NKP-TEST-ONE", "host %s failed %d times", "h1", 3);
	cr_assert_eq(c.calls, 1);
	cr_assert_eq(c.level, NKP_LOG_WARN);
	cr_assert_str_eq(c.msgid, "NKP-TEST-ONE");
	cr_assert_str_eq(c.msg, "host h1 failed 3 times");
	nkp_log_set_sink(NULL, NULL);
}

Test(core, log_strips_newlines_so_one_message_is_one_line)
{
	capture c = {0};

	nkp_log_set_sink(capture_sink, &c);
	nkp_log(NKP_LOG_ERR, "NKP-TEST-NL", "name %s end", "evil\nNKP-FAKE: forged\r\n");
	cr_assert_eq(c.calls, 1);
	cr_assert_null(strchr(c.msg, '\n'));
	cr_assert_null(strchr(c.msg, '\r'));
	cr_assert_str_eq(c.msg, "name evil NKP-FAKE: forged   end");
	nkp_log_set_sink(NULL, NULL);
}

Test(core, log_drops_messages_below_the_level_and_with_no_sink)
{
	capture c = {0};

	nkp_log_set_sink(capture_sink, &c);
	nkp_log_set_level(NKP_LOG_WARN);
	nkp_log(NKP_LOG_INFO, "NKP-TEST-INFO", "dropped");
	nkp_log(NKP_LOG_DEBUG, "NKP-TEST-DEBUG", "dropped");
	cr_assert_eq(c.calls, 0);
	nkp_log(NKP_LOG_ERR, "NKP-TEST-ERR", "kept");
	cr_assert_eq(c.calls, 1);
	nkp_log_set_sink(NULL, NULL);
	nkp_log(NKP_LOG_ERR, "NKP-TEST-ERR", "silenced");
	cr_assert_eq(c.calls, 1);
	nkp_log_set_level(NKP_LOG_INFO);
}

Test(core, log_level_names)
{
	cr_assert_str_eq(nkp_log_level_name(NKP_LOG_ERR), "error");
	cr_assert_str_eq(nkp_log_level_name(NKP_LOG_WARN), "warning");
	cr_assert_str_eq(nkp_log_level_name(NKP_LOG_NOTICE), "notice");
	cr_assert_str_eq(nkp_log_level_name(NKP_LOG_INFO), "info");
	cr_assert_str_eq(nkp_log_level_name(NKP_LOG_DEBUG), "debug");
	cr_assert_str_eq(nkp_log_level_name((nkp_log_level)42), "unknown");
}

Test(core, init_is_idempotent_and_version_is_set)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_not_null(nkp_version());
	cr_assert_gt(strlen(nkp_version()), 0);
}
