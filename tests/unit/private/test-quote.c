/* The quote verifier (nkp/private/quote.c): a recorded quote
 * (tests/vectors/quote-v1.txt) checks out, and every byte of it, the
 * nonce, the PCRs asked for and the pinned key, altered, are refused; a
 * live quote from swtpm checks out and follows its PCR 16. The EK
 * certificate check and MakeCredential on a recorded EK (ek-v1.txt). */
#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "quote.h"
#include "swtpm.h"
#include "tpm.h"
/* Only the reading half of the vector helpers is used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "vectors.h"
#pragma GCC diagnostic pop

typedef struct vec {
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], attest[NKPI_TPM_ATTEST_MAX], sig[NKPI_TPM_SIG_MAX];
	size_t ak_len, attest_len, sig_len;
	uint8_t nonce[32], digest[NKPI_QUOTE_DIGEST_BYTES];
	uint32_t mask;
} vec;

static void vec_var(const char *key, uint8_t *out, size_t max, size_t *len)
{
	char hex[2 * 1024 + 1];

	vec_str(key, hex, sizeof(hex));
	cr_assert_eq(sodium_hex2bin(out, max, hex, strlen(hex), NULL, len, NULL), 0, "%s", key);
}

static void load(vec *v)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_load("quote-v1.txt");
	vec_var("ak_public", v->ak, sizeof(v->ak), &v->ak_len);
	vec_var("attest", v->attest, sizeof(v->attest), &v->attest_len);
	vec_var("sig", v->sig, sizeof(v->sig), &v->sig_len);
	vec_hex("nonce", v->nonce, sizeof(v->nonce));
	vec_hex("pcr_digest", v->digest, sizeof(v->digest));
	v->mask = (uint32_t)vec_u64("pcr_mask");
}

static nkp_err check(const vec *v, nkpi_quote_result *r)
{
	const nkpi_quote_expect e = {v->ak, v->ak_len, v->nonce, sizeof(v->nonce), v->mask};

	return nkpi_quote_verify(&e, v->attest, v->attest_len, v->sig, v->sig_len, r);
}

Test(quote, the_recorded_quote_checks_out)
{
	vec v;
	nkpi_quote_result r;
	uint8_t ext[32], pcr[64], want[32];

	load(&v);
	cr_assert_eq(check(&v, &r), NKP_OK);
	cr_assert_arr_eq(r.pcr_digest, v.digest, sizeof(v.digest));
	cr_assert_eq(r.reset_count, vec_u64("reset_count"));
	cr_assert_eq(r.restart_count, vec_u64("restart_count"));
	/* What the digest is: SHA-256 over the PCR values asked for, the
	 * PCR being SHA-256(old value || extended data). */
	vec_hex("pcr16_extend", ext, sizeof(ext));
	memset(pcr, 0, 32);
	memcpy(pcr + 32, ext, 32);
	crypto_hash_sha256(pcr, pcr, 64);
	crypto_hash_sha256(want, pcr, 32);
	cr_assert_arr_eq(want, r.pcr_digest, 32);
}

Test(quote, another_nonce_other_pcrs_or_bad_arguments_are_refused)
{
	vec v;
	nkpi_quote_result r;
	nkpi_quote_expect e;

	load(&v);
	v.nonce[31] ^= 1;
	cr_expect_eq(check(&v, &r), NKP_ERR_REPLAY, "another nonce (a replayed quote)");
	v.nonce[31] ^= 1;
	v.mask = (1u << 16) | (1u << 7);
	cr_expect_eq(check(&v, &r), NKP_ERR_REFUSED, "more PCRs asked for than quoted");
	v.mask = 1u << 17;
	cr_expect_eq(check(&v, &r), NKP_ERR_REFUSED, "other PCRs asked for");
	v.mask = 1u << 16;
	e = (nkpi_quote_expect){v.ak, v.ak_len, NULL, 0, v.mask};
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, v.sig, v.sig_len, &r),
		     NKP_ERR_INVALID);
	e = (nkpi_quote_expect){v.ak, v.ak_len, v.nonce, NKPI_QUOTE_NONCE_MIN - 1, v.mask};
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, v.sig, v.sig_len, &r),
		     NKP_ERR_INVALID, "a nonce too short to be a challenge");
	e = (nkpi_quote_expect){v.ak, v.ak_len, v.nonce, 32, 0};
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, v.sig, v.sig_len, &r),
		     NKP_ERR_INVALID, "no PCR asked for");
	e = (nkpi_quote_expect){v.ak, v.ak_len, v.nonce, 32, v.mask | (1u << 24)};
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, v.sig, v.sig_len, &r),
		     NKP_ERR_INVALID, "a PCR past 23");
	e = (nkpi_quote_expect){NULL, 0, v.nonce, 32, v.mask};
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, v.sig, v.sig_len, &r),
		     NKP_ERR_INVALID, "no pinned key");
	e = (nkpi_quote_expect){v.ak, v.ak_len, v.nonce, 32, v.mask};
	cr_expect_eq(nkpi_quote_verify(&e, NULL, 0, v.sig, v.sig_len, &r), NKP_ERR_PARSE);
	cr_expect_eq(nkpi_quote_verify(&e, v.attest, v.attest_len, NULL, 0, &r), NKP_ERR_PARSE);
}

/* Every bit of every byte of `buf` flipped in turn: never accepted. */
static void flip_each(vec *v, uint8_t *buf, size_t len, const char *what)
{
	nkpi_quote_result r;

	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			nkp_err err;

			buf[i] ^= (uint8_t)(1u << bit);
			err = check(v, &r);
			buf[i] ^= (uint8_t)(1u << bit);
			cr_assert_neq(err, NKP_OK, "%s: byte %zu bit %d flipped, still accepted",
				      what, i, bit);
		}
	}
	cr_assert_eq(check(v, &r), NKP_OK);
}

Test(quote, every_bit_of_the_quote_signature_and_key_matters)
{
	vec v;

	load(&v);
	flip_each(&v, v.attest, v.attest_len, "attest");
	flip_each(&v, v.sig, v.sig_len, "signature");
	flip_each(&v, v.ak, v.ak_len, "pinned key");
}

Test(quote, cut_or_padded_structures_are_refused)
{
	vec v;
	nkpi_quote_result r;

	load(&v);
	v.attest_len--;
	cr_expect_eq(check(&v, &r), NKP_ERR_PARSE, "attest cut short");
	v.attest[v.attest_len + 1] = 0;
	v.attest_len += 2;
	cr_expect_eq(check(&v, &r), NKP_ERR_PARSE, "a byte after attest");
	v.attest_len--;
	v.sig[v.sig_len] = 0;
	v.sig_len++;
	cr_expect_eq(check(&v, &r), NKP_ERR_PARSE, "a byte after the signature");
	v.sig_len--;
	v.ak[v.ak_len] = 0;
	v.ak_len++;
	cr_expect_eq(check(&v, &r), NKP_ERR_INVALID, "a byte after the pinned key");
	v.ak_len--;
	cr_expect_eq(check(&v, &r), NKP_OK);
}

/* ---- live, against swtpm ---- */

static char tmp[] = "/tmp/nkp-test-quote.XXXXXX";
static test_swtpm tpm;

static void live_setup(void)
{
	char d[200];

	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm)");
	}
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(d, sizeof(d), "%s/tpm", tmp);
	cr_assert_eq(test_swtpm_start(&tpm, d), 0, "swtpm did not start");
}

static void live_teardown(void)
{
	char cmd[400];

	test_swtpm_stop(&tpm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	(void)system(cmd);
}

TestSuite(quote_live, .init = live_setup, .fini = live_teardown, .timeout = 120);

static nkp_err live_quote(nkpi_tpm *t, const uint8_t nonce[32], nkpi_quote_result *r)
{
	nkpi_tpm_quote_out q;
	nkpi_quote_expect e = {NULL, 0, nonce, 32, 1u << 16};
	uint8_t ak[NKPI_TPM_PUBLIC_MAX];
	size_t ak_len = 0;

	cr_assert_eq(nkpi_tpm_ak_public(t, ak, &ak_len), NKP_OK);
	cr_assert_eq(nkpi_tpm_quote(t, nonce, 32, 1u << 16, &q), NKP_OK);
	cr_assert_eq(q.ak_public_len, ak_len);
	cr_assert_arr_eq(q.ak_public, ak, ak_len, "the same AK every time");
	e.ak_public = ak;
	e.ak_public_len = ak_len;
	return nkpi_quote_verify(&e, q.attest, q.attest_len, q.sig, q.sig_len, r);
}

Test(quote_live, a_fresh_quote_checks_out_and_follows_pcr16)
{
	nkpi_tpm *t = NULL;
	nkpi_quote_result a, b;
	uint8_t nonce[32];
	char cmd[512];

	randombytes_buf(nonce, sizeof(nonce));
	cr_assert_eq(nkpi_tpm_open(tpm.tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_quote(t, nonce, 0, 1u << 16, &(nkpi_tpm_quote_out){0}),
		     NKP_ERR_INVALID);
	cr_assert_eq(live_quote(t, nonce, &a), NKP_OK);
	nkpi_tpm_close(t);
	if (system("command -v tpm2_pcrextend >/dev/null 2>&1") != 0) {
		cr_skip_test("tpm2_pcrextend is not installed (Debian: tpm2-tools)");
	}
	snprintf(cmd, sizeof(cmd), "tpm2_pcrextend -T '%s' 16:sha256=%064d >/dev/null 2>&1",
		 tpm.tcti, 7);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	cr_assert_eq(nkpi_tpm_open(tpm.tcti, &t), NKP_OK);
	cr_assert_eq(live_quote(t, nonce, &b), NKP_OK);
	cr_assert(memcmp(a.pcr_digest, b.pcr_digest, sizeof(a.pcr_digest)) != 0,
		  "PCR 16 extended: the digest must change");
	nkpi_tpm_close(t);
}

/* ---- the EK certificate check and MakeCredential on a recorded EK
 * (tests/vectors/ek-v1.txt, ek-ca-v1.pem): no TPM needed ---- */

typedef struct ekvec {
	uint8_t ek[512], cert[2048];
	size_t ek_len, cert_len;
	uint8_t *ca;
	size_t ca_len;
} ekvec;

static void ek_load(ekvec *e)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_load("ek-v1.txt");
	vec_var("ek_public", e->ek, sizeof(e->ek), &e->ek_len);
	vec_var("ek_cert", e->cert, sizeof(e->cert), &e->cert_len);
	cr_assert_eq(nkp_file_read(vec_path("ek-ca-v1.pem"), 1u << 16, &e->ca, &e->ca_len), NKP_OK);
}

static nkp_err ek_check(const ekvec *e)
{
	return nkpi_quote_ek_cert_check(e->ek, e->ek_len, e->cert, e->cert_len, e->ca, e->ca_len);
}

Test(ek_vector, the_recorded_ek_certificate_checks_out_and_every_byte_matters)
{
	ekvec e;
	size_t refused = 0;

	ek_load(&e);
	cr_assert_eq(ek_check(&e), NKP_OK);
	/* Every byte of the certificate: nothing altered is accepted. */
	for (size_t i = 0; i < e.cert_len; i++) {
		e.cert[i] ^= 0x01;
		refused += ek_check(&e) != NKP_OK;
		e.cert[i] ^= 0x01;
	}
	cr_assert_eq(refused, e.cert_len, "%zu of %zu altered certificates refused", refused,
		     e.cert_len);
	/* The EK's modulus altered: the certificate is for another key. */
	e.ek[e.ek_len - 1] ^= 0x01;
	cr_assert_eq(ek_check(&e), NKP_ERR_REFUSED);
	e.ek[e.ek_len - 1] ^= 0x01;
	/* Another CA (the issuer's certificate removed: only the root). */
	{
		const char *second = strstr((const char *)e.ca + 1, "-----BEGIN CERTIFICATE-----");

		cr_assert_not_null(second);
		cr_assert_eq(nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len, e.ca,
						      (size_t)(second - (const char *)e.ca)),
			     NKP_ERR_AUTH);
	}
	free(e.ca);
}

Test(ek_vector, a_credential_to_the_recorded_ek_has_the_tpm_shapes)
{
	ekvec e;
	vec v;
	uint8_t cred[32] = {1}, blob[NKPI_QUOTE_BLOB_MAX], secret[NKPI_QUOTE_SECRET_MAX];
	uint8_t blob2[NKPI_QUOTE_BLOB_MAX], secret2[NKPI_QUOTE_SECRET_MAX];
	size_t blob_len = 0, secret_len = 0, blob2_len = 0, secret2_len = 0;

	ek_load(&e);
	load(&v);
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, v.ak, v.ak_len, cred, sizeof(cred),
						blob, &blob_len, secret, &secret_len),
		     NKP_OK);
	/* TPM2B_ID_OBJECT: size, TPM2B_DIGEST(HMAC-SHA-256), encIdentity of
	 * TPM2B_DIGEST(cred); TPM2B_ENCRYPTED_SECRET: RSA 2048. */
	cr_assert_eq(blob_len, 2 + 2 + 32 + 2 + sizeof(cred));
	cr_assert_eq((blob[0] << 8) | blob[1], blob_len - 2);
	cr_assert_eq((blob[2] << 8) | blob[3], 32);
	cr_assert_eq(secret_len, 2 + 256);
	cr_assert_eq((secret[0] << 8) | secret[1], 256);
	/* A fresh seed every time. */
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, v.ak, v.ak_len, cred, sizeof(cred),
						blob2, &blob2_len, secret2, &secret2_len),
		     NKP_OK);
	cr_assert_neq(memcmp(secret, secret2, secret_len), 0);
	cr_assert_neq(memcmp(blob, blob2, blob_len), 0);
	free(e.ca);
}

/* An AK must be exactly nkp's template: a policy or adminWithPolicy could
 * let a key be used other than by its holder. */
Test(quote, an_attestation_key_off_the_template_is_not_pinned)
{
	vec v;

	load(&v);
	cr_assert_eq(nkpi_quote_ak_check(v.ak, v.ak_len), NKP_OK);
	v.ak[9] |= 0x80; /* objectAttributes: adminWithPolicy */
	cr_assert_eq(nkpi_quote_ak_check(v.ak, v.ak_len), NKP_ERR_INVALID);
	v.ak[9] &= (uint8_t)~0x80u;
	v.ak[9] &= (uint8_t)~0x40u; /* userWithAuth cleared */
	cr_assert_eq(nkpi_quote_ak_check(v.ak, v.ak_len), NKP_ERR_INVALID);
}
