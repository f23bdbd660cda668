/* nkpd's seal policy key (nkp/private/policy.c): the known-answer vector
 * (tests/vectors/policy-v1.txt), every approval or key altered, malformed
 * or off the template refused; and, against swtpm, the digests are those
 * tpm2-tools computes and the TPM accepts an approval. */
#include <stdarg.h>

#include <criterion/criterion.h>
#include <sodium.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "policy.h"
#include "swtpm.h"
/* The deterministic RNG and binary vectors of the helpers are not used. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "vectors.h"
#pragma GCC diagnostic pop

typedef struct vec {
	uint8_t secret[NKPI_POLICY_SECRET_BYTES], ref[NKPI_POLICY_REF_BYTES];
	uint32_t mask, mask_b;
	uint8_t digest[32], digest_b[32];
} vec;

static void load(vec *v)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_load("policy-v1.txt");
	vec_hex("secret", v->secret, sizeof(v->secret));
	vec_hex("ref", v->ref, sizeof(v->ref));
	vec_hex("pcr_digest", v->digest, sizeof(v->digest));
	vec_hex("pcr_digest_b", v->digest_b, sizeof(v->digest_b));
	v->mask = (uint32_t)vec_u64("pcr_mask");
	v->mask_b = (uint32_t)vec_u64("pcr_mask_b");
}

/* Prints `got` for tests/vectors/regen, then compares it with the
 * vector's `key`. */
static void expect_vec(const char *key, const uint8_t *got, size_t len)
{
	uint8_t want[256];
	char hex[2 * sizeof(want) + 1];
	size_t want_len = 0;

	if (regen_vectors()) {
		print_hex(key, got, len);
	}
	vec_str(key, hex, sizeof(hex));
	cr_assert_eq(sodium_hex2bin(want, sizeof(want), hex, strlen(hex), NULL, &want_len, NULL),
		     0);
	cr_assert_eq(want_len, len, "%s: length differs", key);
	cr_assert_arr_eq(want, got, len, "%s differs from the vector", key);
}

typedef struct key {
	uint8_t pub[NKPI_POLICY_PUBLIC_MAX];
	size_t len;
} key;

static void public_of(const uint8_t secret[32], key *k)
{
	cr_assert_eq(nkpi_policy_key_public(secret, k->pub, &k->len), NKP_OK);
	cr_assert_eq(k->len, 90);
}

Test(policy, the_vector_key_has_the_recorded_public_area_and_name)
{
	vec v;
	key k;
	uint8_t name[NKPI_POLICY_NAME_BYTES];

	load(&v);
	public_of(v.secret, &k);
	expect_vec("public", k.pub, k.len);
	cr_assert_eq(nkpi_policy_key_check(k.pub, k.len), NKP_OK);
	cr_assert_eq(nkpi_policy_key_name(k.pub, k.len, name), NKP_OK);
	expect_vec("name", name, sizeof(name));
	/* The Name is nameAlg || SHA-256 of the TPMT_PUBLIC. */
	cr_assert_eq(name[0], 0x00);
	cr_assert_eq(name[1], 0x0b);
}

Test(policy, the_vector_digests_are_the_recorded_ones)
{
	vec v;
	key k;
	uint8_t d[32], a[32], auth[32];

	load(&v);
	public_of(v.secret, &k);
	cr_assert_eq(nkpi_policy_pcr_digest(v.mask, v.digest, d), NKP_OK);
	expect_vec("pcr_policy", d, sizeof(d));
	cr_assert_eq(nkpi_policy_approval_digest(v.mask, v.digest, v.ref, sizeof(v.ref), a),
		     NKP_OK);
	expect_vec("approval_digest", a, sizeof(a));
	cr_assert_eq(nkpi_policy_pcr_digest(v.mask_b, v.digest_b, d), NKP_OK);
	expect_vec("pcr_policy_b", d, sizeof(d));
	cr_assert_eq(nkpi_policy_authorize_digest(k.pub, k.len, v.ref, sizeof(v.ref), auth),
		     NKP_OK);
	expect_vec("authorize_policy", auth, sizeof(auth));
}

Test(policy, approvals_are_deterministic_and_recorded)
{
	vec v;
	key k;
	uint8_t sig[NKPI_POLICY_SIG_MAX], again[NKPI_POLICY_SIG_MAX];
	size_t len = 0, again_len = 0;

	load(&v);
	public_of(v.secret, &k);
	cr_assert_eq(
		nkpi_policy_approve(v.secret, v.mask, v.digest, v.ref, sizeof(v.ref), sig, &len),
		NKP_OK);
	cr_assert_eq(len, 72);
	expect_vec("signature", sig, len);
	cr_assert_eq(nkpi_policy_approve(v.secret, v.mask, v.digest, v.ref, sizeof(v.ref), again,
					 &again_len),
		     NKP_OK);
	cr_assert_eq(again_len, len);
	cr_assert_arr_eq(again, sig, len, "RFC 6979: the same inputs, the same signature");
	cr_assert_eq(nkpi_policy_sig_check(sig, len), NKP_OK);
	cr_assert_eq(
		nkpi_policy_verify(k.pub, k.len, v.mask, v.digest, v.ref, sizeof(v.ref), sig, len),
		NKP_OK);
	cr_assert_eq(nkpi_policy_approve(v.secret, v.mask_b, v.digest_b, v.ref, sizeof(v.ref), sig,
					 &len),
		     NKP_OK);
	expect_vec("signature_b", sig, len);
	cr_assert_eq(nkpi_policy_verify(k.pub, k.len, v.mask_b, v.digest_b, v.ref, sizeof(v.ref),
					sig, len),
		     NKP_OK);
}

Test(policy, a_new_key_is_fresh_and_approves)
{
	uint8_t s1[32], s2[32], d[32], ref[8] = {0, 0, 0, 0, 0, 0, 0, 7};
	uint8_t sig[NKPI_POLICY_SIG_MAX];
	size_t len = 0;
	key k;

	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkpi_policy_key_new(s1), NKP_OK);
	cr_assert_eq(nkpi_policy_key_new(s2), NKP_OK);
	cr_assert_neq(memcmp(s1, s2, sizeof(s1)), 0);
	public_of(s1, &k);
	randombytes_buf(d, sizeof(d));
	cr_assert_eq(nkpi_policy_approve(s1, 1u << 7, d, ref, sizeof(ref), sig, &len), NKP_OK);
	cr_assert_eq(nkpi_policy_verify(k.pub, k.len, 1u << 7, d, ref, sizeof(ref), sig, len),
		     NKP_OK);
	sodium_memzero(s1, sizeof(s1));
	sodium_memzero(s2, sizeof(s2));
}

typedef struct approval {
	vec v;
	key k;
	uint8_t sig[NKPI_POLICY_SIG_MAX + 1];
	size_t sig_len;
} approval;

static void approval_of_vector(approval *a)
{
	load(&a->v);
	public_of(a->v.secret, &a->k);
	cr_assert_eq(nkpi_policy_approve(a->v.secret, a->v.mask, a->v.digest, a->v.ref,
					 sizeof(a->v.ref), a->sig, &a->sig_len),
		     NKP_OK);
}

static nkp_err verify(const approval *a)
{
	return nkpi_policy_verify(a->k.pub, a->k.len, a->v.mask, a->v.digest, a->v.ref,
				  sizeof(a->v.ref), a->sig, a->sig_len);
}

Test(policy, every_bit_of_the_approval_matters)
{
	approval a;

	approval_of_vector(&a);
	for (size_t i = 0; i < a.sig_len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			nkp_err err;

			a.sig[i] ^= (uint8_t)(1u << bit);
			err = verify(&a);
			a.sig[i] ^= (uint8_t)(1u << bit);
			/* The header and sizes are the form (PARSE); r and s
			 * the signature (AUTH). */
			cr_assert_eq(
				err, i < 6 || i == 38 || i == 39 ? NKP_ERR_PARSE : NKP_ERR_AUTH,
				"signature byte %zu bit %d flipped: %s", i, bit, nkp_strerror(err));
		}
	}
	for (size_t i = 0; i < 32; i++) {
		a.v.digest[i] ^= 0x01;
		cr_assert_eq(verify(&a), NKP_ERR_AUTH, "pcr digest byte %zu", i);
		a.v.digest[i] ^= 0x01;
	}
	for (size_t i = 0; i < sizeof(a.v.ref); i++) {
		a.v.ref[i] ^= 0x80;
		cr_assert_eq(verify(&a), NKP_ERR_AUTH, "ref byte %zu (another set of approvals)",
			     i);
		a.v.ref[i] ^= 0x80;
	}
	for (int bit = 0; bit < 24; bit++) {
		a.v.mask ^= 1u << bit;
		cr_assert_eq(verify(&a), a.v.mask == 0 ? NKP_ERR_INVALID : NKP_ERR_AUTH,
			     "PCR %d added or removed", bit);
		a.v.mask ^= 1u << bit;
	}
	cr_assert_eq(verify(&a), NKP_OK);
}

Test(policy, another_key_does_not_verify)
{
	approval a;
	uint8_t other[32];

	approval_of_vector(&a);
	cr_assert_eq(nkpi_policy_key_new(other), NKP_OK);
	public_of(other, &a.k);
	cr_assert_eq(verify(&a), NKP_ERR_AUTH);
	/* Signed by the other key, checked against the vector's. */
	cr_assert_eq(nkpi_policy_approve(other, a.v.mask, a.v.digest, a.v.ref, sizeof(a.v.ref),
					 a.sig, &a.sig_len),
		     NKP_OK);
	public_of(a.v.secret, &a.k);
	cr_assert_eq(verify(&a), NKP_ERR_AUTH);
	sodium_memzero(other, sizeof(other));
}

/* The vector's key with its marshalled public area changed at `off`. */
static nkp_err key_with(const key *k, size_t off, uint8_t xor)
{
	key bad = *k;

	bad.pub[off] ^= xor;
	return nkpi_policy_key_check(bad.pub, bad.len);
}

Test(policy, a_key_off_the_template_is_refused_everywhere)
{
	static const struct {
		size_t off;
		uint8_t xor ;
		const char *what;
	} cases[] = {
		{3, 0x01, "type: not ECC"},
		{5, 0x01, "nameAlg: SHA-256 -> 0x000a"},
		{9, 0x02, "objectAttributes: + fixedTPM"},
		{9, 0x10, "objectAttributes: + fixedParent"},
		{9, 0x20, "objectAttributes: + sensitiveDataOrigin"},
		{9, 0x40, "objectAttributes: - userWithAuth"},
		{9, 0x80, "objectAttributes: + adminWithPolicy"},
		{8, 0x04, "objectAttributes: + noDA"},
		{7, 0x01, "objectAttributes: + restricted"},
		{7, 0x02, "objectAttributes: + decrypt"},
		{7, 0x04, "objectAttributes: - sign"},
		{13, 0x16, "symmetric: NULL -> AES"},
		{15, 0x01, "scheme: ECDSA -> ECDAA"},
		{17, 0x01, "scheme hash: SHA-256 -> 0x000a"},
		{19, 0x01, "curve: P-256 -> P-224"},
		{21, 0x01, "kdf: NULL -> 0x0011"},
		{89, 0x01, "y: off the curve"},
		{45, 0x01, "x: off the curve"},
	};
	vec v;
	key k, bad;
	uint8_t name[34], d[32];

	load(&v);
	public_of(v.secret, &k);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(key_with(&k, cases[i].off, cases[i].xor), NKP_ERR_INVALID, "%s",
			     cases[i].what);
	}
	/* A TPM2B size that does not cover exactly the rest; a byte more or
	 * less; an authPolicy; a coordinate of 31 bytes. */
	cr_expect_eq(key_with(&k, 1, 0x01), NKP_ERR_INVALID, "TPM2B size field");
	bad = k;
	bad.pub[bad.len++] = 0;
	cr_expect_eq(nkpi_policy_key_check(bad.pub, bad.len), NKP_ERR_INVALID, "a byte after it");
	bad.pub[1]++;
	cr_expect_eq(nkpi_policy_key_check(bad.pub, bad.len), NKP_ERR_INVALID,
		     "a byte more, in the size too");
	cr_expect_eq(nkpi_policy_key_check(k.pub, k.len - 1), NKP_ERR_INVALID, "cut short");
	cr_expect_eq(nkpi_policy_key_check(k.pub, 0), NKP_ERR_INVALID, "empty");
	cr_expect_eq(nkpi_policy_key_check(NULL, 0), NKP_ERR_INVALID, "NULL");
	{
		/* authPolicy of 2 bytes: its size at 10-11, then the rest. */
		memcpy(bad.pub, k.pub, 10);
		bad.pub[10] = 0;
		bad.pub[11] = 2;
		bad.pub[12] = 0xaa;
		bad.pub[13] = 0xbb;
		memcpy(bad.pub + 14, k.pub + 12, k.len - 12);
		bad.len = k.len + 2;
		bad.pub[1] = (uint8_t)(bad.len - 2);
		cr_expect_eq(nkpi_policy_key_check(bad.pub, bad.len), NKP_ERR_INVALID,
			     "an authPolicy");
	}
	{
		/* x of 31 bytes (its leading byte dropped). */
		memcpy(bad.pub, k.pub, 22);
		bad.pub[23] = 31;
		memcpy(bad.pub + 24, k.pub + 25, k.len - 25);
		bad.len = k.len - 1;
		bad.pub[1] = (uint8_t)(bad.len - 2);
		cr_expect_eq(nkpi_policy_key_check(bad.pub, bad.len), NKP_ERR_INVALID,
			     "x of 31 bytes");
	}
	/* Every function taking a key refuses it alike. */
	bad = k;
	bad.pub[9] ^= 0x80;
	cr_expect_eq(nkpi_policy_key_name(bad.pub, bad.len, name), NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_authorize_digest(bad.pub, bad.len, v.ref, 8, d), NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_verify(bad.pub, bad.len, v.mask, v.digest, v.ref, 8, d, 0),
		     NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_key_check(k.pub, k.len), NKP_OK);
}

Test(policy, malformed_signatures_are_parse_errors)
{
	approval a;
	uint8_t good[NKPI_POLICY_SIG_MAX];
	size_t n;

	approval_of_vector(&a);
	memcpy(good, a.sig, a.sig_len);
	n = a.sig_len;
	a.sig_len = n - 1;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "cut short");
	a.sig[n] = 0;
	a.sig_len = n + 1;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "a byte after it");
	a.sig_len = 0;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "empty");
	cr_expect_eq(
		nkpi_policy_verify(a.k.pub, a.k.len, a.v.mask, a.v.digest, a.v.ref, 8, NULL, 0),
		NKP_ERR_PARSE, "NULL");
	cr_expect_eq(nkpi_policy_sig_check(NULL, 0), NKP_ERR_PARSE);
	/* r of 31 bytes: well-formed for a TPM, not as approvals are made. */
	memcpy(a.sig, good, 4);
	a.sig[4] = 0;
	a.sig[5] = 31;
	memcpy(a.sig + 6, good + 7, n - 7);
	a.sig_len = n - 1;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "r of 31 bytes");
	/* Another scheme (RSASSA: another layout altogether), SHA-1. */
	memcpy(a.sig, good, n);
	a.sig_len = n;
	a.sig[1] = 0x14;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "RSASSA");
	memcpy(a.sig, good, n);
	a.sig[3] = 0x04;
	cr_expect_eq(verify(&a), NKP_ERR_PARSE, "SHA-1");
	memcpy(a.sig, good, n);
	cr_expect_eq(verify(&a), NKP_OK);
}

Test(policy, pcr_masks_refs_and_secrets_out_of_range_are_refused)
{
	static const uint32_t masks[] = {0, 1u << 24, 0xffffffffu, 0x80000001u};
	static const uint8_t n[32] = {
		0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17,
		0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
	};
	approval a;
	uint8_t d[32], sig[NKPI_POLICY_SIG_MAX], s[32], pub[NKPI_POLICY_PUBLIC_MAX];
	size_t len = 0;

	approval_of_vector(&a);
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		cr_expect_eq(nkpi_policy_pcr_digest(masks[i], a.v.digest, d), NKP_ERR_INVALID,
			     "mask 0x%x", masks[i]);
		cr_expect_eq(nkpi_policy_approve(a.v.secret, masks[i], a.v.digest, a.v.ref, 8, sig,
						 &len),
			     NKP_ERR_INVALID, "mask 0x%x", masks[i]);
		cr_expect_eq(nkpi_policy_verify(a.k.pub, a.k.len, masks[i], a.v.digest, a.v.ref, 8,
						a.sig, a.sig_len),
			     NKP_ERR_INVALID, "mask 0x%x", masks[i]);
	}
	cr_expect_eq(nkpi_policy_pcr_digest(0x00ffffffu, a.v.digest, d), NKP_OK, "all 24 PCRs");
	/* The ref is 8 bytes. */
	cr_expect_eq(nkpi_policy_approve(a.v.secret, a.v.mask, a.v.digest, a.v.ref, 7, sig, &len),
		     NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_authorize_digest(a.k.pub, a.k.len, a.v.ref, 9, d),
		     NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_authorize_digest(a.k.pub, a.k.len, NULL, 8, d), NKP_ERR_INVALID);
	cr_expect_eq(nkpi_policy_verify(a.k.pub, a.k.len, a.v.mask, a.v.digest, a.v.ref, 0, a.sig,
					a.sig_len),
		     NKP_ERR_INVALID);
	/* Scalars 0, n and above are no keys; n-1 is. */
	memset(s, 0, sizeof(s));
	cr_expect_eq(nkpi_policy_key_public(s, pub, &len), NKP_ERR_INVALID, "0");
	cr_expect_eq(nkpi_policy_key_public(n, pub, &len), NKP_ERR_INVALID, "n");
	memset(s, 0xff, sizeof(s));
	cr_expect_eq(nkpi_policy_key_public(s, pub, &len), NKP_ERR_INVALID, "2^256 - 1");
	cr_expect_eq(nkpi_policy_approve(s, a.v.mask, a.v.digest, a.v.ref, 8, sig, &len),
		     NKP_ERR_INVALID);
	memcpy(s, n, sizeof(s));
	s[31]--;
	cr_expect_eq(nkpi_policy_key_public(s, pub, &len), NKP_OK, "n - 1");
}

/* ---- against tpm2-tools and swtpm ---- */

static char tmp[] = "/tmp/nkp-test-policy.XXXXXX";
static test_swtpm tpm;

static void tools_setup(void)
{
	char d[200];

	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm)");
	}
	if (system("command -v tpm2_policyauthorize >/dev/null 2>&1") != 0) {
		cr_skip_test("tpm2-tools is not installed (Debian: tpm2-tools): no other "
			     "implementation to compare the policy digests with");
	}
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(d, sizeof(d), "%s/tpm", tmp);
	cr_assert_eq(test_swtpm_start(&tpm, d), 0, "swtpm did not start");
}

static void tools_teardown(void)
{
	char cmd[400];

	test_swtpm_stop(&tpm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	(void)system(cmd);
}

TestSuite(policy_tools, .init = tools_setup, .fini = tools_teardown, .timeout = 240);

static void put(const char *name, const void *buf, size_t len)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	cr_assert_eq(test_swtpm_write(path, buf, len), 0, "%s", path);
}

static void get(const char *name, uint8_t *buf, size_t len)
{
	char path[300];
	uint8_t *got = NULL;
	size_t got_len = 0;

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	cr_assert_eq(nkp_file_read(path, 4096, &got, &got_len), NKP_OK, "%s", path);
	cr_assert_eq(got_len, len, "%s: %zu bytes", path, got_len);
	memcpy(buf, got, len);
	free(got);
}

/* Runs a tpm2-tools command line in the temporary directory, against
 * swtpm; its output goes to tools.log there. */
static void tools(const char *fmt, ...)
{
	char line[1024], cmd[1600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "cd '%s' && TPM2TOOLS_TCTI='%s' %s >>tools.log 2>&1", tmp,
		 tpm.tcti, line);
	cr_assert_eq(system(cmd), 0, "failed: %s (see %s/tools.log)", line, tmp);
}

/* "sha256:0,7,16" for tpm2-tools' PCR lists. */
static void pcr_list(uint32_t mask, char *out, size_t size)
{
	size_t n = (size_t)snprintf(out, size, "sha256:");

	for (int i = 0; i < 24; i++) {
		if ((mask & (1u << i)) != 0) {
			n += (size_t)snprintf(out + n, size - n, "%s%d",
					      out[n - 1] == ':' ? "" : ",", i);
		}
	}
}

/* Made-up values of the PCRs in `mask`, in order, into values[24 * 32]:
 * returns how many. */
static size_t pcr_values(uint32_t mask, uint8_t tag, uint8_t *values)
{
	size_t n = 0;

	for (int p = 0; p < 24; p++) {
		if ((mask & (1u << p)) != 0) {
			memset(values + 32 * n, 0x30 + p, 32);
			values[32 * n] = tag;
			n++;
		}
	}
	return n;
}

/* tpm2_policypcr -f takes at most 8 PCRs. */
Test(policy_tools, policypcr_digests_are_those_of_tpm2_tools_trial_sessions)
{
	static const uint32_t masks[] = {1u << 16,
					 1u,
					 1u << 23,
					 (1u << 0) | (1u << 7) | (1u << 16),
					 0x000000ffu,
					 (1u << 1) | (1u << 4) | (1u << 9) | (1u << 14) |
						 (1u << 17) | (1u << 20) | (1u << 22) | (1u << 23)};

	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		uint8_t values[24 * 32], digest[32], ours[32], theirs[32];
		size_t n = pcr_values(masks[i], (uint8_t)i, values);
		char list[128];

		crypto_hash_sha256(digest, values, 32 * n);
		put("values.bin", values, 32 * n);
		pcr_list(masks[i], list, sizeof(list));
		tools("tpm2_startauthsession -S trial.ctx");
		tools("tpm2_policypcr -S trial.ctx -l %s -f values.bin -L pcr.policy", list);
		tools("tpm2_flushcontext trial.ctx");
		get("pcr.policy", theirs, sizeof(theirs));
		cr_assert_eq(nkpi_policy_pcr_digest(masks[i], digest, ours), NKP_OK);
		cr_assert_arr_eq(ours, theirs, 32, "PCRs %s: another PolicyPCR digest", list);
	}
}

/* The TPM's own trial session (ESAPI), for any number of PCRs. */
static void tpm_trial_pcr(ESYS_CONTEXT *esys, uint32_t mask, const uint8_t digest[32],
			  uint8_t out[32])
{
	const TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
	TPML_PCR_SELECTION sel = {.count = 1};
	TPM2B_DIGEST d = {.size = 32};
	TPM2B_DIGEST *got = NULL;
	ESYS_TR session = ESYS_TR_NONE;

	sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel.pcrSelections[0].sizeofSelect = 3;
	for (int i = 0; i < 3; i++) {
		sel.pcrSelections[0].pcrSelect[i] = (uint8_t)(mask >> (8 * i));
	}
	memcpy(d.buffer, digest, 32);
	cr_assert_eq(Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
					   ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_TRIAL, &sym,
					   TPM2_ALG_SHA256, &session),
		     TSS2_RC_SUCCESS);
	cr_assert_eq(
		Esys_PolicyPCR(esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &d, &sel),
		TSS2_RC_SUCCESS);
	cr_assert_eq(
		Esys_PolicyGetDigest(esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &got),
		TSS2_RC_SUCCESS);
	cr_assert_eq(got->size, 32);
	memcpy(out, got->buffer, 32);
	Esys_Free(got);
	cr_assert_eq(Esys_FlushContext(esys, session), TSS2_RC_SUCCESS);
}

Test(policy_tools, policypcr_digests_are_those_of_the_tpms_trial_sessions)
{
	static const uint32_t masks[] = {1u << 16,    1u,	   1u << 23,
					 0x00a5a5a5u, 0x00ffffffu, 0x00800001u};
	TSS2_TCTI_CONTEXT *tcti = NULL;
	ESYS_CONTEXT *esys = NULL;

	cr_assert_eq(Tss2_TctiLdr_Initialize(tpm.tcti, &tcti), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Initialize(&esys, tcti, NULL), TSS2_RC_SUCCESS);
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		uint8_t values[24 * 32], digest[32], ours[32], theirs[32];
		size_t n = pcr_values(masks[i], (uint8_t)i, values);

		crypto_hash_sha256(digest, values, 32 * n);
		tpm_trial_pcr(esys, masks[i], digest, theirs);
		cr_assert_eq(nkpi_policy_pcr_digest(masks[i], digest, ours), NKP_OK);
		cr_assert_arr_eq(ours, theirs, 32, "PCRs 0x%06x: another PolicyPCR digest",
				 masks[i]);
	}
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tcti);
}

Test(policy_tools, the_authorize_digest_and_key_name_are_those_of_tpm2_tools)
{
	vec v;
	key k;
	uint8_t name[34], their_name[34], ours[32], theirs[32], approved[32];

	load(&v);
	public_of(v.secret, &k);
	cr_assert_eq(nkpi_policy_key_name(k.pub, k.len, name), NKP_OK);
	cr_assert_eq(nkpi_policy_pcr_digest(v.mask, v.digest, approved), NKP_OK);
	put("key.pub", k.pub, k.len);
	put("ref.bin", v.ref, sizeof(v.ref));
	put("approved.policy", approved, sizeof(approved));
	/* The TPM loads the key as it is and names it as we do. */
	tools("tpm2_loadexternal -C o -u key.pub -c key.ctx -n key.name");
	tools("tpm2_flushcontext -t");
	get("key.name", their_name, sizeof(their_name));
	cr_assert_arr_eq(name, their_name, sizeof(name), "the TPM names the key otherwise");
	tools("tpm2_startauthsession -S trial.ctx");
	tools("tpm2_policyauthorize -S trial.ctx -i approved.policy -q ref.bin -n key.name "
	      "-L auth.policy");
	tools("tpm2_flushcontext trial.ctx");
	get("auth.policy", theirs, sizeof(theirs));
	cr_assert_eq(nkpi_policy_authorize_digest(k.pub, k.len, v.ref, sizeof(v.ref), ours),
		     NKP_OK);
	cr_assert_arr_eq(ours, theirs, 32, "another PolicyAuthorize digest");
}

/* A real policy session, all by tpm2-tools: PolicyPCR on the TPM's own PCR
 * 16 (all zero after a start), our approval verified by the TPM into a
 * ticket, PolicyAuthorize with it; the session's digest is then the
 * authPolicy we compute. */
Test(policy_tools, the_tpm_accepts_an_approval_in_a_real_policy_session)
{
	vec v;
	key k;
	uint8_t zero[32] = {0}, digest[32], ahash[32], sig[NKPI_POLICY_SIG_MAX], ours[32];
	uint8_t theirs[32], approved[32];
	size_t sig_len = 0;

	load(&v);
	public_of(v.secret, &k);
	crypto_hash_sha256(digest, zero, sizeof(zero));
	cr_assert_eq(nkpi_policy_pcr_digest(1u << 16, digest, approved), NKP_OK);
	cr_assert_eq(nkpi_policy_approval_digest(1u << 16, digest, v.ref, 8, ahash), NKP_OK);
	cr_assert_eq(nkpi_policy_approve(v.secret, 1u << 16, digest, v.ref, 8, sig, &sig_len),
		     NKP_OK);
	put("key.pub", k.pub, k.len);
	put("ref.bin", v.ref, sizeof(v.ref));
	put("ahash.bin", ahash, sizeof(ahash));
	put("approval.sig", sig, sig_len);
	put("approved.policy", approved, sizeof(approved));
	tools("tpm2_loadexternal -C o -u key.pub -c key.ctx -n key.name");
	tools("tpm2_verifysignature -c key.ctx -d ahash.bin -s approval.sig -t verified.tk");
	tools("tpm2_flushcontext -t");
	tools("tpm2_startauthsession --policy-session -S real.ctx");
	tools("tpm2_policypcr -S real.ctx -l sha256:16 -L pcr.policy");
	tools("tpm2_policyauthorize -S real.ctx -i approved.policy -q ref.bin -n key.name "
	      "-t verified.tk -L auth.policy");
	tools("tpm2_flushcontext real.ctx");
	get("pcr.policy", theirs, sizeof(theirs));
	cr_assert_arr_eq(approved, theirs, 32, "the TPM's PolicyPCR digest");
	get("auth.policy", theirs, sizeof(theirs));
	cr_assert_eq(nkpi_policy_authorize_digest(k.pub, k.len, v.ref, 8, ours), NKP_OK);
	cr_assert_arr_eq(ours, theirs, 32, "the TPM's PolicyAuthorize digest");
	/* The TPM refuses the approval over another ref. */
	v.ref[7] ^= 1;
	cr_assert_eq(nkpi_policy_approve(v.secret, 1u << 16, digest, v.ref, 8, sig, &sig_len),
		     NKP_OK);
	put("approval.sig", sig, sig_len);
	tools("tpm2_loadexternal -C o -u key.pub -c key.ctx");
	{
		char cmd[1200];

		snprintf(cmd, sizeof(cmd),
			 "cd '%s' && TPM2TOOLS_TCTI='%s' tpm2_verifysignature -c key.ctx -d "
			 "ahash.bin -s approval.sig -t other.tk >>tools.log 2>&1",
			 tmp, tpm.tcti);
		cr_assert_neq(system(cmd), 0, "the TPM verified a signature over another ref");
	}
	tools("tpm2_flushcontext -t");
}
