/* Attestation on the host: a Hello with a nonce is answered by the TPM's
 * quote by the attestation key (AK), or by why there is none; malformed
 * requests are refused. The quote is checked as nkpd checks it
 * (nkpi_quote_verify), against swtpm (skipped without it). A Hello asking
 * for the endorsement key (EK) gets it, with its certificate when the TPM
 * has one; one carrying a credential made by tpm2-tools gets it back
 * activated. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/log.h>
#include <nkp/nkp.h>

#include "atrest.h"
#include "hostd-internal.h"
#include "internal.h"
#include "policy.h"
#include "quote.h"
#include "swtpm.h"
#include "test-util.h"
#include "tpm.h"

#define PCRS (1u << 0 | 1u << 7 | 1u << 16)

static char *dir;
static tu_service svc;

/* What the log sink saw of NKP-HOSTD-QUOTE. */
static int quote_logs;

static void count_quote_logs(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	(void)level;
	(void)msg;
	(void)arg;
	if (strcmp(msgid, "NKP-HOSTD-QUOTE") == 0) {
		quote_logs++;
	}
}

static void setup(void)
{
	quote_logs = 0;
	nkp_log_set_sink(count_quote_logs, NULL);
	dir = tu_tmpdir();
	tu_service_new(&svc);
}

static void teardown(void)
{
	tu_service_free(&svc);
	tu_rmdir(dir);
	free(dir);
}

/* `hello` with a fresh challenge; the reply, a Status or a Refusal,
 * echoing the challenge. */
static Nkp__Wire__Message *hello_send(nkp_hostd *h, Nkp__Wire__Hello *hello)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	const ProtobufCBinaryData *echo;
	uint8_t challenge[16];
	Nkp__Wire__Message *r;

	randombytes_buf(challenge, sizeof(challenge));
	hello->challenge.data = challenge;
	hello->challenge.len = sizeof(challenge);
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = hello;
	r = tu_send(&svc, h, &m, NULL);
	cr_assert(r->body_case == NKP__WIRE__MESSAGE__BODY_STATUS ||
		  r->body_case == NKP__WIRE__MESSAGE__BODY_REFUSAL);
	echo = r->body_case == NKP__WIRE__MESSAGE__BODY_STATUS ? &r->status->challenge
							       : &r->refusal->challenge;
	cr_assert_eq(echo->len, 16);
	cr_assert_eq(memcmp(echo->data, challenge, 16), 0);
	return r;
}

/* A Hello asking for a quote of `pcrs` over nonce[len]. */
static Nkp__Wire__Message *hello_attest(nkp_hostd *h, const uint8_t *nonce, size_t len,
					uint32_t pcrs)
{
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;

	hello.attest_nonce.data = (uint8_t *)nonce;
	hello.attest_nonce.len = len;
	hello.attest_pcrs = pcrs;
	return hello_send(h, &hello);
}

/* A Hello asking for the EK (want_ek) and carrying a credential to
 * activate (blob and secret, each possibly empty). */
static Nkp__Wire__Message *hello_ek(nkp_hostd *h, bool want_ek, const uint8_t *blob,
				    size_t blob_len, const uint8_t *secret, size_t secret_len)
{
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;

	hello.want_ek = want_ek;
	hello.activate_blob.data = (uint8_t *)blob;
	hello.activate_blob.len = blob_len;
	hello.activate_secret.data = (uint8_t *)secret;
	hello.activate_secret.len = secret_len;
	return hello_send(h, &hello);
}

static void assert_nothing_of_the_ek(const Nkp__Wire__Message *r)
{
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_eq(r->status->ek_public.len, 0);
	cr_assert_eq(r->status->ek_cert.len, 0);
	cr_assert_eq(r->status->activated.len, 0);
}

static void assert_no_quote(const Nkp__Wire__Message *r)
{
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_eq(r->status->quote_attest.len, 0, "no quote without a TPM's");
	cr_assert_eq(r->status->quote_signature.len, 0, "no signature without a TPM's");
}

static void assert_refused(nkp_hostd *h, const uint8_t *nonce, size_t len, uint32_t pcrs)
{
	Nkp__Wire__Message *r = hello_attest(h, nonce, len, pcrs);

	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_REFUSAL,
		     "nonce of %zu bytes, PCRs 0x%x: not refused", len, pcrs);
	cr_assert_eq(r->refusal->code, (uint32_t)NKP_ERR_PARSE, "code %u: %s", r->refusal->code,
		     r->refusal->message);
	cr_assert_eq(r->refusal->boot_nonce.len, 16);
	tu_msg_free(r);
}

/* ---- a host without a TPM ---- */

TestSuite(hostd_attest, .init = setup, .fini = teardown);

Test(hostd_attest, a_host_without_a_tpm_says_so_and_gives_no_quote)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t nonce[32];
	Nkp__Wire__Message *r;

	randombytes_buf(nonce, sizeof(nonce));
	r = hello_attest(h, nonce, sizeof(nonce), PCRS);
	assert_no_quote(r);
	cr_assert_not(r->status->tpm);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	cr_assert_eq(r->status->boot_nonce.len, 16, "the rest of the Status as ever");
	cr_assert_str_eq(r->status->host_name, "h1");
	tu_msg_free(r);
	cr_assert_eq(quote_logs, 0, "no TPM is no failure: nothing logged");
	nkp_hostd_close(h);
}

Test(hostd_attest, a_hello_without_a_nonce_asks_for_nothing)
{
	nkp_hostd *h = tu_host(dir, &svc);
	Nkp__Wire__Message *r = hello_attest(h, NULL, 0, 0);

	assert_no_quote(r);
	cr_assert_str_eq(r->status->quote_error, "", "no request, no answer");
	tu_msg_free(r);
	/* A selection alone asks for nothing either. */
	r = hello_attest(h, NULL, 0, PCRS);
	assert_no_quote(r);
	cr_assert_str_eq(r->status->quote_error, "");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_attest, a_nonce_of_another_length_is_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t nonce[64];

	randombytes_buf(nonce, sizeof(nonce));
	assert_refused(h, nonce, 31, PCRS);
	assert_refused(h, nonce, 33, PCRS);
	assert_refused(h, nonce, 16, PCRS);
	assert_refused(h, nonce, 1, PCRS);
	assert_refused(h, nonce, 64, PCRS);
	/* The session goes on. */
	tu_msg_free(tu_hello(&svc, h));
	nkp_hostd_close(h);
}

Test(hostd_attest, an_empty_or_too_wide_pcr_selection_is_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t nonce[32];
	Nkp__Wire__Message *r;

	randombytes_buf(nonce, sizeof(nonce));
	assert_refused(h, nonce, sizeof(nonce), 0);
	assert_refused(h, nonce, sizeof(nonce), 1u << 24);
	assert_refused(h, nonce, sizeof(nonce), 1u << 24 | PCRS);
	assert_refused(h, nonce, sizeof(nonce), UINT32_MAX);
	/* PCR 0 alone and all 24 are requests (answered: no TPM here). */
	r = hello_attest(h, nonce, sizeof(nonce), 1u);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	r = hello_attest(h, nonce, sizeof(nonce), (1u << 24) - 1);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_attest, a_host_without_a_tpm_gives_no_ek_and_activates_nothing)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t blob[100], secret[258];
	Nkp__Wire__Message *r;

	randombytes_buf(blob, sizeof(blob));
	randombytes_buf(secret, sizeof(secret));
	r = hello_ek(h, true, NULL, 0, NULL, 0);
	assert_nothing_of_the_ek(r);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	r = hello_ek(h, false, blob, sizeof(blob), secret, sizeof(secret));
	assert_nothing_of_the_ek(r);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	/* Everything at once: said once. */
	r = hello_ek(h, true, blob, sizeof(blob), secret, sizeof(secret));
	assert_nothing_of_the_ek(r);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	cr_assert_eq(quote_logs, 0);
	nkp_hostd_close(h);
}

static void assert_ek_refused(nkp_hostd *h, const uint8_t *blob, size_t blob_len,
			      const uint8_t *secret, size_t secret_len)
{
	Nkp__Wire__Message *r = hello_ek(h, true, blob, blob_len, secret, secret_len);

	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_REFUSAL,
		     "blob of %zu bytes, secret of %zu: not refused", blob_len, secret_len);
	cr_assert_eq(r->refusal->code, (uint32_t)NKP_ERR_PARSE, "code %u: %s", r->refusal->code,
		     r->refusal->message);
	tu_msg_free(r);
}

Test(hostd_attest, a_credential_missing_a_part_or_over_512_bytes_is_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	uint8_t buf[513];
	Nkp__Wire__Message *r;

	randombytes_buf(buf, sizeof(buf));
	assert_ek_refused(h, buf, 100, NULL, 0);
	assert_ek_refused(h, NULL, 0, buf, 258);
	assert_ek_refused(h, buf, 513, buf, 258);
	assert_ek_refused(h, buf, 100, buf, 513);
	assert_ek_refused(h, buf, 513, buf, 513);
	/* 512 bytes each is a request (answered: no TPM here). */
	r = hello_ek(h, false, buf, 512, buf, 512);
	assert_nothing_of_the_ek(r);
	cr_assert_str_eq(r->status->quote_error, "no TPM on this host");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

/* ---- the seal policy (a host without a TPM) ---- */

/* A Hello carrying a seal policy of n approvals (SIZE_MAX: none; made-up
 * bytes: only its shape matters before the TPM) and/or an unbind. */
static Nkp__Wire__Message *hello_seal(nkp_hostd *h, size_t n, bool unbind)
{
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	Nkp__Atrest__SealPolicy p = NKP__ATREST__SEAL_POLICY__INIT;
	Nkp__Atrest__Approval a[70], *ap[70];
	uint8_t key[90] = {0, 88}, ref[8] = {1}, digest[32] = {2}, sig[72] = {3};

	const bool with = n != SIZE_MAX; /* SIZE_MAX: no policy */

	n = with ? n : 0;
	cr_assert(n <= 70);
	for (size_t i = 0; i < n; i++) {
		nkp__atrest__approval__init(&a[i]);
		a[i].pcr_mask = 1u << 16;
		a[i].pcr_digest.data = digest;
		a[i].pcr_digest.len = sizeof(digest);
		a[i].signature.data = sig;
		a[i].signature.len = sizeof(sig);
		ap[i] = &a[i];
	}
	p.key.data = key;
	p.key.len = sizeof(key);
	p.ref.data = ref;
	p.ref.len = sizeof(ref);
	p.approvals = ap;
	p.n_approvals = n;
	hello.seal_policy = with ? &p : NULL;
	hello.seal_unbind = unbind;
	return hello_send(h, &hello);
}

Test(hostd_attest, a_seal_policy_malformed_or_beside_an_unbind_is_refused)
{
	nkp_hostd *h = tu_host(dir, &svc);
	Nkp__Wire__Message *r;
	const size_t bad[] = {0, 65};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = hello_seal(h, bad[i], false);
		cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_REFUSAL, "%zu approvals",
			     bad[i]);
		cr_assert_eq(r->refusal->code, (uint32_t)NKP_ERR_PARSE);
		tu_msg_free(r);
	}
	r = hello_seal(h, 1, true);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_REFUSAL, "policy and unbind at once");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_attest, a_host_without_a_tpm_binds_nothing_and_says_why)
{
	nkp_hostd *h = tu_host(dir, &svc);
	nkp_hostd_status *st = NULL;
	Nkp__Wire__Message *r;

	/* Answered at once; the binder finds no TPM to bind with. */
	r = hello_seal(h, 1, false);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_eq(r->status->seal_policy_digest.len, 0, "not bound");
	tu_msg_free(r);
	hostd_seal_idle(h);
	/* Said in every Status from then on, and in the host's status. */
	r = hello_seal(h, SIZE_MAX, false);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_not_null(strstr(r->status->seal_policy_error, "not sealed to a TPM"));
	tu_msg_free(r);
	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert(!st->seal_policy_bound);
	cr_assert_not_null(strstr(st->seal_policy_error, "not sealed to a TPM"));
	nkp_hostd_status_free(st);
	/* An unbind of nothing bound: nothing to do. */
	r = hello_seal(h, SIZE_MAX, true);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_eq(r->status->seal_policy_digest.len, 0);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

/* ---- a host sealed to swtpm ---- */

static test_swtpm tpm;
static char host_dir[200];

static void tpm_setup(void)
{
	char d[200];

	/* Before anything is made: .fini does not run after a skip. */
	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm): no host with a TPM to test");
	}
	setup();
	snprintf(d, sizeof(d), "%s/tpm", dir);
	snprintf(host_dir, sizeof(host_dir), "%s/host", dir);
	cr_assert_eq(test_swtpm_start(&tpm, d), 0, "swtpm did not start");
}

static void tpm_teardown(void)
{
	test_swtpm_stop(&tpm);
	teardown();
}

TestSuite(hostd_attest_tpm, .init = tpm_setup, .fini = tpm_teardown, .timeout = 120);

static nkp_hostd *tpm_host(void)
{
	nkp_hostd_config cfg = {.state_dir = host_dir, .host_name = "h1", .tpm = tpm.tcti};

	return tu_host_cfg(&cfg, &svc);
}

/* The AK as `nkp-hostd init --tpm` puts it in the token. */
static size_t ak_public(uint8_t ak[static NKPI_TPM_PUBLIC_MAX])
{
	nkpi_tpm *t = NULL;
	size_t len = 0;

	cr_assert_eq(nkpi_tpm_open(tpm.tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_ak_public(t, ak, &len), NKP_OK);
	nkpi_tpm_close(t);
	return len;
}

static nkp_err verify(const Nkp__Wire__Status *st, const uint8_t *ak, size_t ak_len,
		      const uint8_t nonce[32], uint32_t pcrs)
{
	nkpi_quote_expect e = {ak, ak_len, nonce, 32, pcrs};
	nkpi_quote_result res;

	return nkpi_quote_verify(&e, st->quote_attest.data, st->quote_attest.len,
				 st->quote_signature.data, st->quote_signature.len, &res);
}

Test(hostd_attest_tpm, a_hello_with_a_nonce_gets_a_quote_by_the_ak_over_it)
{
	nkp_hostd *h = tpm_host();
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], nonce[32], other[32];
	size_t ak_len = ak_public(ak);
	Nkp__Wire__Message *r;

	randombytes_buf(nonce, sizeof(nonce));
	randombytes_buf(other, sizeof(other));
	r = hello_attest(h, nonce, sizeof(nonce), PCRS);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert(r->status->tpm);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_gt(r->status->quote_attest.len, 0);
	cr_assert_gt(r->status->quote_signature.len, 0);
	cr_assert_eq(verify(r->status, ak, ak_len, nonce, PCRS), NKP_OK);
	/* Bound to this nonce and these PCRs. */
	cr_assert_eq(verify(r->status, ak, ak_len, other, PCRS), NKP_ERR_REPLAY);
	cr_assert_eq(verify(r->status, ak, ak_len, nonce, PCRS | 1u << 1), NKP_ERR_REFUSED);
	tu_msg_free(r);

	/* Every PCR at once, and a fresh nonce: a new quote. */
	r = hello_attest(h, other, sizeof(other), (1u << 24) - 1);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(verify(r->status, ak, ak_len, other, (1u << 24) - 1), NKP_OK);
	tu_msg_free(r);
	cr_assert_eq(quote_logs, 0);

	/* Still refused with a TPM, and no TPM command for it. */
	assert_refused(h, nonce, 31, PCRS);
	assert_refused(h, nonce, sizeof(nonce), 0);
	nkp_hostd_close(h);
}

Test(hostd_attest_tpm, a_quote_after_reopen_is_by_the_same_ak)
{
	nkp_hostd *h = tpm_host();
	nkp_hostd_config cfg = {.state_dir = host_dir, .host_name = "h1", .tpm = tpm.tcti};
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], nonce[32];
	size_t ak_len = ak_public(ak);
	Nkp__Wire__Message *r;

	nkp_hostd_close(h);
	h = NULL;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	randombytes_buf(nonce, sizeof(nonce));
	r = hello_attest(h, nonce, sizeof(nonce), PCRS);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(verify(r->status, ak, ak_len, nonce, PCRS), NKP_OK);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_attest_tpm, a_tpm_that_stopped_answering_gives_quote_error_not_a_quote)
{
	nkp_hostd *h = tpm_host();
	uint8_t nonce[32];
	Nkp__Wire__Message *r;

	test_swtpm_stop(&tpm);
	randombytes_buf(nonce, sizeof(nonce));
	r = hello_attest(h, nonce, sizeof(nonce), PCRS);
	assert_no_quote(r);
	cr_assert(r->status->tpm, "the keys are still sealed to it");
	cr_assert_str_eq(r->status->quote_error,
			 "TPM failed: the TPM cannot be reached or refused the operation");
	cr_assert_eq(quote_logs, 1, "one NKP-HOSTD-QUOTE line per failed quote");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

static void ek_of(uint8_t ek[static NKPI_TPM_EK_PUBLIC_MAX], size_t *ek_len,
		  uint8_t cert[static NKPI_TPM_EK_CERT_MAX], size_t *cert_len)
{
	nkpi_tpm *t = NULL;

	cr_assert_eq(nkpi_tpm_open(tpm.tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_ek(t, ek, ek_len, cert, cert_len), NKP_OK);
	nkpi_tpm_close(t);
}

Test(hostd_attest_tpm, a_hello_with_want_ek_gets_the_ek_and_no_certificate_if_none)
{
	nkp_hostd *h = tpm_host();
	uint8_t ek[NKPI_TPM_EK_PUBLIC_MAX], cert[NKPI_TPM_EK_CERT_MAX];
	size_t ek_len = 0, cert_len = 0;
	Nkp__Wire__Message *r;

	ek_of(ek, &ek_len, cert, &cert_len);
	cr_assert_eq(cert_len, 0, "this swtpm was made without an EK certificate");
	r = hello_ek(h, true, NULL, 0, NULL, 0);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(r->status->ek_public.len, ek_len);
	cr_assert_eq(memcmp(r->status->ek_public.data, ek, ek_len), 0);
	cr_assert_eq(r->status->ek_cert.len, 0);
	cr_assert_eq(r->status->activated.len, 0, "nothing to activate, nothing activated");
	cr_assert_eq(r->status->quote_attest.len, 0, "no nonce, no quote");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

static void need_makecredential(void)
{
	if (!test_makecredential_available()) {
		cr_skip_test("tpm2_makecredential is not installed (Debian: tpm2-tools): no "
			     "credential made by another implementation to test with");
	}
}

/* A credential cred[32] made by tpm2_makecredential to this TPM's EK for
 * the key named name[34]. */
static void make_credential(const uint8_t name[34], uint8_t cred[32], uint8_t blob[512],
			    size_t *blob_len, uint8_t secret[512], size_t *secret_len)
{
	uint8_t ek[NKPI_TPM_EK_PUBLIC_MAX], cert[NKPI_TPM_EK_CERT_MAX];
	size_t ek_len = 0, cert_len = 0;

	ek_of(ek, &ek_len, cert, &cert_len);
	randombytes_buf(cred, 32);
	cr_assert_eq(test_makecredential(dir, ek, ek_len, name, cred, 32, blob, blob_len, secret,
					 secret_len),
		     0, "tpm2_makecredential failed: see %s/mc.log", dir);
}

Test(hostd_attest_tpm, a_hello_with_a_credential_gets_it_activated)
{
	nkp_hostd *h = tpm_host();
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34], cred[32], blob[512], secret[512];
	size_t ak_len = ak_public(ak), blob_len = 0, secret_len = 0;
	Nkp__Wire__Message *r;

	need_makecredential();
	test_tpm_name(ak, ak_len, name);
	make_credential(name, cred, blob, &blob_len, secret, &secret_len);
	r = hello_ek(h, false, blob, blob_len, secret, secret_len);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(r->status->activated.len, sizeof(cred));
	cr_assert_eq(memcmp(r->status->activated.data, cred, sizeof(cred)), 0);
	cr_assert_eq(r->status->ek_public.len, 0, "not asked for");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

Test(hostd_attest_tpm, a_hello_asking_everything_gets_everything)
{
	nkp_hostd *h = tpm_host();
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34], cred[32], blob[512], secret[512], nonce[32];
	size_t ak_len = ak_public(ak), blob_len = 0, secret_len = 0;
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	Nkp__Wire__Message *r;

	need_makecredential();
	test_tpm_name(ak, ak_len, name);
	make_credential(name, cred, blob, &blob_len, secret, &secret_len);
	randombytes_buf(nonce, sizeof(nonce));
	hello.attest_nonce.data = nonce;
	hello.attest_nonce.len = sizeof(nonce);
	hello.attest_pcrs = PCRS;
	hello.want_ek = true;
	hello.activate_blob.data = blob;
	hello.activate_blob.len = blob_len;
	hello.activate_secret.data = secret;
	hello.activate_secret.len = secret_len;
	r = hello_send(h, &hello);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(verify(r->status, ak, ak_len, nonce, PCRS), NKP_OK);
	cr_assert_gt(r->status->ek_public.len, 256);
	cr_assert_eq(r->status->activated.len, sizeof(cred));
	cr_assert_eq(memcmp(r->status->activated.data, cred, sizeof(cred)), 0);
	tu_msg_free(r);

	/* A credential for another key fails alone: the quote and the EK
	 * are still given. */
	name[2] ^= 0x01;
	make_credential(name, cred, blob, &blob_len, secret, &secret_len);
	hello.activate_blob.len = blob_len;
	hello.activate_secret.len = secret_len;
	r = hello_send(h, &hello);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_str_eq(r->status->quote_error,
			 "activation failed: authentication failed (tampered data or wrong key)");
	cr_assert_eq(r->status->activated.len, 0);
	cr_assert_eq(verify(r->status, ak, ak_len, nonce, PCRS), NKP_OK);
	cr_assert_gt(r->status->ek_public.len, 256);
	tu_msg_free(r);
	cr_assert_eq(quote_logs, 0);
	nkp_hostd_close(h);
}

Test(hostd_attest_tpm, a_tpm_that_stopped_answering_gives_no_ek_and_activates_nothing)
{
	nkp_hostd *h = tpm_host();
	uint8_t blob[100], secret[258];
	Nkp__Wire__Message *r;

	randombytes_buf(blob, sizeof(blob));
	randombytes_buf(secret, sizeof(secret));
	test_swtpm_stop(&tpm);
	r = hello_ek(h, true, blob, sizeof(blob), secret, sizeof(secret));
	assert_nothing_of_the_ek(r);
	cr_assert_str_eq(r->status->quote_error,
			 "TPM failed: the TPM cannot be reached or refused the operation; "
			 "activation failed: the TPM cannot be reached or refused the operation");
	tu_msg_free(r);
	nkp_hostd_close(h);
}

/* ---- a host whose TPM has an EK certificate ---- */

static void ek_setup(void)
{
	char d[200];

	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm): no host with a TPM to test");
	}
	if (!test_swtpm_setup_available()) {
		cr_skip_test("swtpm_setup, swtpm_localca or certtool missing (Debian: swtpm-tools, "
			     "gnutls-bin): no TPM with an EK certificate to test");
	}
	setup();
	snprintf(d, sizeof(d), "%s/mfg", dir);
	cr_assert_eq(test_swtpm_manufacture(d), 0, "swtpm_setup failed: see %s/setup.log", d);
	snprintf(d, sizeof(d), "%s/mfg/state", dir);
	snprintf(host_dir, sizeof(host_dir), "%s/host", dir);
	cr_assert_eq(test_swtpm_start(&tpm, d), 0, "swtpm did not start");
}

TestSuite(hostd_attest_ek, .init = ek_setup, .fini = tpm_teardown, .timeout = 120);

Test(hostd_attest_ek, a_hello_with_want_ek_gets_the_ek_and_its_certificate)
{
	nkp_hostd *h = tpm_host();
	uint8_t ek[NKPI_TPM_EK_PUBLIC_MAX], cert[NKPI_TPM_EK_CERT_MAX];
	size_t ek_len = 0, cert_len = 0;
	Nkp__Wire__Message *r;

	ek_of(ek, &ek_len, cert, &cert_len);
	cr_assert_gt(cert_len, 300);
	r = hello_ek(h, true, NULL, 0, NULL, 0);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_str_eq(r->status->quote_error, "");
	cr_assert_eq(r->status->ek_public.len, ek_len);
	cr_assert_eq(memcmp(r->status->ek_public.data, ek, ek_len), 0);
	cr_assert_eq(r->status->ek_cert.len, cert_len);
	cr_assert_eq(memcmp(r->status->ek_cert.data, cert, cert_len), 0);
	tu_msg_free(r);
	nkp_hostd_close(h);
}

/* ---- the seal policy, with a TPM ---- */

/* nkpd's policy of one approval: PCR 16 in `state` (a fresh TPM: all
 * zero), signed by a fresh policy key; kept in *k. */
typedef struct seal_fx {
	uint8_t secret[NKPI_POLICY_SECRET_BYTES], pub[NKPI_POLICY_PUBLIC_MAX];
	uint8_t ref[NKPI_POLICY_REF_BYTES], digest[32], sig[NKPI_POLICY_SIG_MAX];
	Nkp__Atrest__SealPolicy p;
	Nkp__Atrest__Approval a, *ap[1];
} seal_fx;

static void seal_fx_init(seal_fx *k)
{
	static const Nkp__Atrest__SealPolicy pinit = NKP__ATREST__SEAL_POLICY__INIT;
	static const Nkp__Atrest__Approval ainit = NKP__ATREST__APPROVAL__INIT;
	uint8_t pcr[32] = {0};
	size_t pub_len = 0, sig_len = 0;

	crypto_hash_sha256(k->digest, pcr, sizeof(pcr)); /* PCR 16 at its boot value */
	randombytes_buf(k->ref, sizeof(k->ref));
	cr_assert_eq(nkpi_policy_key_new(k->secret), NKP_OK);
	cr_assert_eq(nkpi_policy_key_public(k->secret, k->pub, &pub_len), NKP_OK);
	cr_assert_eq(nkpi_policy_approve(k->secret, 1u << 16, k->digest, k->ref, sizeof(k->ref),
					 k->sig, &sig_len),
		     NKP_OK);
	k->a = ainit;
	k->a.pcr_mask = 1u << 16;
	k->a.pcr_digest = (ProtobufCBinaryData){sizeof(k->digest), k->digest};
	k->a.signature = (ProtobufCBinaryData){sig_len, k->sig};
	k->a.name = (char *)"fresh";
	k->ap[0] = &k->a;
	k->p = pinit;
	k->p.key = (ProtobufCBinaryData){pub_len, k->pub};
	k->p.ref = (ProtobufCBinaryData){sizeof(k->ref), k->ref};
	k->p.approvals = k->ap;
	k->p.n_approvals = 1;
}

static Nkp__Wire__Message *hello_policy(nkp_hostd *h, const Nkp__Atrest__SealPolicy *p, bool unbind)
{
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;

	hello.seal_policy = (Nkp__Atrest__SealPolicy *)p;
	hello.seal_unbind = unbind;
	return hello_send(h, &hello);
}

static bool status_bound(nkp_hostd *h)
{
	nkp_hostd_status *st = NULL;
	bool bound;

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	bound = st->seal_policy_bound;
	nkp_hostd_status_free(st);
	return bound;
}

/* A Hello carrying `p` (or an unbind), then, once the binder is done,
 * the Status of a plain Hello. */
static Nkp__Wire__Message *seal_then_status(nkp_hostd *h, const Nkp__Atrest__SealPolicy *p,
					    bool unbind)
{
	Nkp__Wire__Message *r = hello_policy(h, p, unbind);

	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	tu_msg_free(r);
	hostd_seal_idle(h);
	r = hello_policy(h, NULL, false);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	return r;
}

Test(hostd_attest_tpm, a_seal_policy_binds_the_key_a_disk_failure_is_retried_and_unbind_undoes_it)
{
	nkp_hostd_config cfg = {.state_dir = host_dir, .host_name = "h1", .tpm = tpm.tcti};
	nkp_hostd *h = tpm_host();
	uint8_t want[NKPI_SEAL_POLICY_DIGEST_BYTES];
	Nkp__Wire__Message *r;
	seal_fx k;

	seal_fx_init(&k);
	cr_assert_eq(nkpi_seal_policy_digest(&k.p, want), NKP_OK);
	cr_assert(!status_bound(h));

	/* The disk fails while seal.tpm is replaced: not bound, said why,
	 * and tried again at the next Hello carrying it. */
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	r = seal_then_status(h, &k.p, false);
	cr_assert_eq(r->status->seal_policy_digest.len, 0);
	cr_assert_neq(r->status->seal_policy_error[0], '\0');
	tu_msg_free(r);
	nkpi_file_fail_next_writes(0, NKP_OK);
	r = seal_then_status(h, &k.p, false);
	cr_assert_eq(r->status->seal_policy_digest.len, sizeof(want), "retried: %s",
		     r->status->seal_policy_error);
	cr_assert_arr_eq(r->status->seal_policy_digest.data, want, sizeof(want));
	cr_assert_str_eq(r->status->seal_policy_error, "");
	tu_msg_free(r);
	cr_assert(status_bound(h));

	/* Reopened: the bound key opens (PCR 16 as approved) and says so. */
	nkp_hostd_close(h);
	h = NULL;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert(status_bound(h));
	r = hello_policy(h, NULL, false);
	cr_assert_arr_eq(r->status->seal_policy_digest.data, want, sizeof(want));
	tu_msg_free(r);

	/* Unbound: sealed to the TPM alone, and opens so. */
	r = seal_then_status(h, NULL, true);
	cr_assert_eq(r->status->seal_policy_digest.len, 0);
	tu_msg_free(r);
	nkp_hostd_close(h);
	h = NULL;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert(!status_bound(h));
	nkp_hostd_close(h);
}
