/* Trusted hosts in nkpd's core (nkp/nkpd/core/attest.c): an attestation
 * key pinned at enrolment (and refused when it is not one nkp makes),
 * baselines taken only from a fresh verified quote, trust that follows
 * the baselines and the quote's age, trusted providers in the trusted
 * hosts' snapshot only, and what survives a restart (the key and the
 * baselines, never the trust). The AK and PCR digest come from the
 * recorded quote of tests/vectors/quote-v1.txt. The seal policy
 * (core/sealpol.c): one approval per baseline, signed by the key derived
 * from the sealing key, verifiable and naming the set of baselines; the
 * per-host switch and what hosts report of their binding. */
#include <sodium.h>

#include "internal.h"
#include "policy.h"
#include "test-util.h"
/* vectors.h: only its readers are used here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "vectors.h"

static char dir[PATH_MAX];
static nkpd_svc s;
static uint8_t ak[256], digest[32];
static size_t ak_len;
static uint32_t mask;

static void setup(void)
{
	char hex[600];

	tu_mkdtemp(dir, sizeof(dir));
	tu_svc_new(&s, dir);
	vec_load("quote-v1.txt");
	vec_str("ak_public", hex, sizeof(hex));
	ak_len = strlen(hex) / 2;
	cr_assert(ak_len > 0 && ak_len <= sizeof(ak));
	vec_hex("ak_public", ak, ak_len);
	vec_hex("pcr_digest", digest, sizeof(digest));
	mask = (uint32_t)vec_u64("pcr_mask");
}

static void teardown(void)
{
	tu_svc_free(&s);
	tu_rmrf(dir);
}

TestSuite(nkpd_attest, .init = setup, .fini = teardown);

static nkp_err add_host(const char *name, uint8_t key_byte, const uint8_t *k, size_t k_len)
{
	uint8_t pub[NKP_PUBKEY_BYTES];
	nkpd_result r;
	nkpd_host_add_args a = {
		.name = name,
		.address = "tcp://127.0.0.1:9",
		.cluster = "",
		.public_key = pub,
		.public_key_len = sizeof(pub),
		.ak_public = k,
		.ak_public_len = k_len,
	};
	nkp_err err;

	memset(pub, key_byte, sizeof(pub));
	nkpd_result_init(&r);
	nkpd_host_add(&s, &a, &r);
	err = r.code;
	nkpd_result_fini(&r);
	return err;
}

static nkp_err baseline_add(const char *name, const char *host)
{
	nkpd_result r;
	nkp_err err;

	nkpd_result_init(&r);
	nkpd_baseline_add(&s, name, host, &r);
	err = r.code;
	nkpd_result_fini(&r);
	return err;
}

static nkp_err baseline_remove(const char *name)
{
	nkpd_result r;
	nkp_err err;

	nkpd_result_init(&r);
	nkpd_baseline_remove(&s, name, &r);
	err = r.code;
	nkpd_result_fini(&r);
	return err;
}

static nkpd_host *host(const char *name)
{
	nkpd_host *h = nkpd_model_host_find(&s, name);

	cr_assert_not_null(h, "host %s", name);
	return h;
}

static void quote_ok(const char *name)
{
	pthread_mutex_lock(&s.lock);
	nkpd_attest_quote_ok(&s, host(name), mask, digest);
	pthread_mutex_unlock(&s.lock);
}

typedef struct kind_count {
	char needle[80];
	size_t n;
} kind_count;

static void count_kind(uint64_t seq, const char *json, void *arg)
{
	kind_count *k = arg;

	(void)seq;
	k->n += strstr(json, k->needle) != NULL;
}

/* How many events of `kind` the log holds. */
static size_t events_of(const char *kind)
{
	kind_count k = {.n = 0};

	snprintf(k.needle, sizeof(k.needle), "\"kind\":\"%s\"", kind);
	(void)nkp_eventlog_read(s.events_path, 0, count_kind, &k);
	return k.n;
}

Test(nkpd_attest, an_attestation_key_is_pinned_at_enrolment_and_a_foreign_one_refused)
{
	uint8_t bad[256];

	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	cr_assert_eq(host("tpm")->conf.ak_len, ak_len);
	cr_assert_str_eq(host("tpm")->att.reason, "no quote yet");
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert_eq(add_host("plain", 0x62, NULL, 0), NKP_OK);
	cr_assert_eq(host("plain")->att.state, ATTEST_NONE);
	/* The AK's attributes without "restricted" (byte 10 of the public
	 * area holds objectAttributes' second byte): not an AK of nkp's. */
	memcpy(bad, ak, ak_len);
	bad[10] ^= 0x01;
	cr_assert_eq(add_host("bad1", 0x63, bad, ak_len), NKP_ERR_INVALID);
	cr_assert_eq(add_host("bad2", 0x64, ak, ak_len - 1), NKP_ERR_INVALID);
	cr_assert_eq(add_host("bad3", 0x65, (const uint8_t[]){0, 0}, 2), NKP_ERR_INVALID);
	cr_assert_null(nkpd_model_host_find(&s, "bad1"));
}

Test(nkpd_attest, a_baseline_comes_only_from_a_host_with_a_fresh_verified_quote)
{
	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	cr_assert_eq(add_host("plain", 0x62, NULL, 0), NKP_OK);
	cr_assert_eq(baseline_add("b1", "nosuch"), NKP_ERR_NOT_FOUND);
	cr_assert_eq(baseline_add("b1", "plain"), NKP_ERR_STATE, "a host without an AK");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_ERR_STATE, "no quote yet");
	quote_ok("tpm");
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert(strstr(host("tpm")->att.reason, "baseline") != NULL);
	cr_assert_eq(baseline_add("bad name!", "tpm"), NKP_ERR_INVALID);
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_ERR_EXISTS);
	cr_assert_eq(s.n_baselines, 1);
	cr_assert_eq(s.baselines[0].pcr_mask, mask);
	cr_assert_arr_eq(s.baselines[0].pcr_digest, digest, sizeof(digest));
	/* An old quote is not fresh. */
	host("tpm")->att.ok_ms -= s.attest_interval_ms + 3u * s.heartbeat_ms;
	cr_assert_eq(baseline_add("b2", "tpm"), NKP_ERR_STATE);
}

Test(nkpd_attest, trust_follows_the_baselines_and_the_age_of_the_latest_quote)
{
	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_eq(host("tpm")->att.state, ATTEST_TRUSTED, "a baseline added: trusted at once");
	cr_assert_str_eq(host("tpm")->att.baseline, "b1");
	cr_assert_eq(events_of("host.attested"), 1);
	/* Quotes of the same PCRs again: nothing new to say. */
	quote_ok("tpm");
	cr_assert_eq(events_of("host.attested"), 1);
	/* Another PCR digest: untrusted, said once. (The first quote,
	 * before any baseline, was one already.) */
	cr_assert_eq(events_of("host.attestation_failed"), 1);
	digest[0] ^= 1;
	quote_ok("tpm");
	quote_ok("tpm");
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert_eq(events_of("host.attestation_failed"), 2);
	digest[0] ^= 1;
	quote_ok("tpm");
	cr_assert_eq(host("tpm")->att.state, ATTEST_TRUSTED);
	/* No passing quote for longer than the interval and two heartbeats. */
	pthread_mutex_lock(&s.lock);
	host("tpm")->att.ok_ms -= s.attest_interval_ms + 2u * s.heartbeat_ms + 1;
	nkpd_attest_check_age(&s, host("tpm"));
	pthread_mutex_unlock(&s.lock);
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert_str_eq(host("tpm")->att.reason, "no quote within the attest interval");
	/* A failed quote: untrusted, asked again at the next heartbeat. */
	quote_ok("tpm");
	pthread_mutex_lock(&s.lock);
	nkpd_attest_quote_failed(&s, host("tpm"), "its quote was refused: test");
	pthread_mutex_unlock(&s.lock);
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert(host("tpm")->att.due_ms <= nkpi_mono_ms() + s.heartbeat_ms);
	/* The baseline removed: a passing quote no longer trusts. */
	quote_ok("tpm");
	cr_assert_eq(baseline_remove("b1"), NKP_OK);
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert_eq(baseline_remove("b1"), NKP_ERR_NOT_FOUND);
}

/* A quote that failed after a good one: the good one no longer speaks for
 * the host, so neither a new baseline nor one taken from it trusts it. */
Test(nkpd_attest, a_failed_quote_voids_the_one_before_it)
{
	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	quote_ok("tpm");
	pthread_mutex_lock(&s.lock);
	nkpd_attest_quote_failed(&s, host("tpm"), "no quote (the host says: no TPM)");
	pthread_mutex_unlock(&s.lock);
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_ERR_STATE);
	cr_assert_eq(s.n_baselines, 0);
	/* A baseline of those PCRs from another host does not trust it. */
	cr_assert_eq(add_host("ref", 0x62, ak, ak_len), NKP_OK);
	quote_ok("ref");
	cr_assert_eq(baseline_add("b1", "ref"), NKP_OK);
	cr_assert_eq(host("ref")->att.state, ATTEST_TRUSTED);
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
}

/* A host that restarted (a new boot nonce) is trusted again only by a
 * quote made since. */
Test(nkpd_attest, a_restart_ends_trust_until_the_next_quote)
{
	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_eq(host("tpm")->att.state, ATTEST_TRUSTED);
	pthread_mutex_lock(&s.lock);
	nkpd_attest_restarted(&s, host("tpm"));
	pthread_mutex_unlock(&s.lock);
	cr_assert_eq(host("tpm")->att.state, ATTEST_UNTRUSTED);
	cr_assert_eq(host("tpm")->att.due_ms, 0, "asked for a quote at once");
	cr_assert_eq(baseline_add("b2", "tpm"), NKP_ERR_STATE, "no quote since the restart");
	quote_ok("tpm");
	cr_assert_eq(host("tpm")->att.state, ATTEST_TRUSTED);
}

Test(nkpd_attest, trusted_providers_are_in_the_trusted_hosts_snapshot_only)
{
	nkpd_provider_create_args a = {.name = "vault", .tpm_only = true};
	nkpd_result r;
	nkpd_provider *p;

	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	cr_assert_eq(tu_create(&s, "plain", true), 0);
	nkpd_result_init(&r);
	nkpd_provider_create(&s, &a, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	nkpd_result_fini(&r);
	p = nkpd_model_provider_find(&s, "vault");
	cr_assert_not_null(s.snap_trusted);
	cr_assert_neq(s.snap, s.snap_trusted);
	cr_assert(s.snap_trusted->trusted && !s.snap->trusted);
	cr_assert_eq(s.snap->generation, s.snap_trusted->generation, "one pair, two contents");
	cr_assert(memcmp(s.snap->digest, s.snap_trusted->digest, NKPD_DIGEST_BYTES) != 0);
	cr_assert(s.snap_trusted->packed_len > s.snap->packed_len);
	cr_assert_eq(nkpd_host_snap(&s, host("tpm")), s.snap, "untrusted: without vault");
	cr_assert_not(nkpd_host_in_scope(host("tpm"), p));
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_eq(nkpd_host_snap(&s, host("tpm")), s.snap_trusted);
	cr_assert(nkpd_host_in_scope(host("tpm"), p));
	cr_assert(host("tpm")->att.scope_resync, "a change of trust is pushed with resync");
}

Test(nkpd_attest, the_key_and_the_baselines_survive_a_restart_and_the_trust_does_not)
{
	nkpd_svc t;

	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	memset(&t, 0, sizeof(t));
	cr_assert_eq(nkpd_svc_open(&t, dir, false), NKP_OK);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.n_baselines, 1);
	cr_assert_str_eq(t.baselines[0].name, "b1");
	cr_assert_str_eq(t.baselines[0].from_host, "tpm");
	cr_assert_eq(t.baselines[0].pcr_mask, mask);
	cr_assert_arr_eq(t.baselines[0].pcr_digest, digest, sizeof(digest));
	cr_assert_eq(t.n_hosts, 1);
	cr_assert_eq(t.hosts[0]->conf.ak_len, ak_len);
	cr_assert_arr_eq(t.hosts[0]->conf.ak, ak, ak_len);
	cr_assert_eq(t.hosts[0]->att.state, ATTEST_UNTRUSTED, "trusted again only by a quote");
	nkpd_svc_close(&t);
}

static nkp_err seal_policy(const char *name, bool on)
{
	nkpd_result r;
	nkp_err err;

	nkpd_result_init(&r);
	nkpd_host_seal_policy(&s, name, on, &r);
	err = r.code;
	nkpd_result_fini(&r);
	return err;
}

/* Every approval of s.sealpol verifies under its key and ref. */
static void approvals_verify(size_t n)
{
	const Nkp__Atrest__SealPolicy *p;

	cr_assert_not_null(s.sealpol);
	p = s.sealpol->msg;
	cr_assert_eq(p->n_approvals, n);
	cr_assert_eq(p->ref.len, NKPI_POLICY_REF_BYTES);
	cr_assert_arr_eq(p->key.data, s.policy_pub, s.policy_pub_len);
	for (size_t i = 0; i < n; i++) {
		const Nkp__Atrest__Approval *a = p->approvals[i];

		cr_assert_str_eq(a->name, s.baselines[i].name);
		cr_assert_eq(a->pcr_mask, s.baselines[i].pcr_mask);
		cr_assert_eq(nkpi_policy_verify(p->key.data, p->key.len, a->pcr_mask,
						a->pcr_digest.data, p->ref.data, p->ref.len,
						a->signature.data, a->signature.len),
			     NKP_OK, "approval %zu", i);
	}
}

Test(nkpd_attest, the_seal_policy_signs_every_baseline_and_names_the_set)
{
	uint8_t ref1[NKPI_POLICY_REF_BYTES], sig1[NKPI_POLICY_SIG_MAX], d1[32], other[32];
	const Nkp__Atrest__SealPolicy *p;
	size_t sig1_len;
	nkpd_svc t;

	cr_assert_null(s.sealpol, "no policy without a baseline");
	cr_assert_null(s.policy_key, "no policy key before it is needed");
	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_eq(nkpi_policy_key_check(s.policy_pub, s.policy_pub_len), NKP_OK);
	approvals_verify(1);
	p = s.sealpol->msg;
	memcpy(ref1, p->ref.data, sizeof(ref1));
	sig1_len = p->approvals[0]->signature.len;
	memcpy(sig1, p->approvals[0]->signature.data, sig1_len);
	memcpy(d1, s.sealpol->digest, sizeof(d1));

	/* Another state approved: a new ref, both signed under it, and the
	 * first approval as signed before no longer verifies. */
	memcpy(other, digest, sizeof(other));
	other[0] ^= 1;
	pthread_mutex_lock(&s.lock);
	nkpd_attest_quote_ok(&s, host("tpm"), mask, other);
	pthread_mutex_unlock(&s.lock);
	cr_assert_eq(baseline_add("b2", "tpm"), NKP_OK);
	approvals_verify(2);
	p = s.sealpol->msg;
	cr_assert(memcmp(p->ref.data, ref1, sizeof(ref1)) != 0, "the set changed: another ref");
	cr_assert_eq(nkpi_policy_verify(p->key.data, p->key.len, mask, digest, p->ref.data,
					p->ref.len, sig1, sig1_len),
		     NKP_ERR_AUTH, "an approval of the old set does not serve the new one");

	/* The same set again: the same ref, the same policy. */
	cr_assert_eq(baseline_remove("b2"), NKP_OK);
	approvals_verify(1);
	cr_assert_arr_eq(s.sealpol->msg->ref.data, ref1, sizeof(ref1));
	cr_assert_arr_eq(s.sealpol->digest, d1, sizeof(d1));

	/* The key is the sealing key's: the same after a restart. */
	memset(&t, 0, sizeof(t));
	cr_assert_eq(nkpd_svc_open(&t, dir, false), NKP_OK);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.policy_pub_len, s.policy_pub_len);
	cr_assert_arr_eq(t.policy_pub, s.policy_pub, s.policy_pub_len);
	cr_assert_not_null(t.sealpol);
	cr_assert_arr_eq(t.sealpol->digest, d1, sizeof(d1));
	nkpd_svc_close(&t);

	cr_assert_eq(baseline_remove("b1"), NKP_OK);
	cr_assert_null(s.sealpol, "no baseline, no policy");
}

Test(nkpd_attest, the_seal_policy_is_per_host_and_follows_what_the_host_reports)
{
	ProtobufCBinaryData none = {0}, bound;
	nkpd_svc t;
	nkpd_host *h;

	cr_assert_eq(add_host("tpm", 0x61, ak, ak_len), NKP_OK);
	cr_assert_eq(add_host("plain", 0x62, NULL, 0), NKP_OK);
	cr_assert_eq(seal_policy("plain", true), NKP_ERR_STATE, "no TPM, no seal policy");
	cr_assert_eq(seal_policy("nosuch", true), NKP_ERR_NOT_FOUND);
	h = host("tpm");
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "off");
	cr_assert_eq(seal_policy("tpm", true), NKP_OK);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "pending", "on, nothing approved yet");
	quote_ok("tpm");
	cr_assert_eq(baseline_add("b1", "tpm"), NKP_OK);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "pending");

	pthread_mutex_lock(&s.lock);
	nkpd_sealpol_status(&s, h, &none, "this TPM's PCRs match none\x1b[2J");
	pthread_mutex_unlock(&s.lock);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "pending");
	cr_assert_null(strchr(h->st.seal_error, 0x1b), "a host's words are sanitized");

	bound.data = s.sealpol->digest;
	bound.len = sizeof(s.sealpol->digest);
	pthread_mutex_lock(&s.lock);
	nkpd_sealpol_status(&s, h, &bound, "");
	pthread_mutex_unlock(&s.lock);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "bound");
	cr_assert_str_eq(h->st.seal_error, "");

	/* The switch is kept across a restart; the binding is the host's word. */
	memset(&t, 0, sizeof(t));
	cr_assert_eq(nkpd_svc_open(&t, dir, false), NKP_OK);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert(nkpd_model_host_find(&t, "tpm")->conf.seal_policy);
	cr_assert(!nkpd_model_host_find(&t, "plain")->conf.seal_policy);
	nkpd_svc_close(&t);

	cr_assert_eq(seal_policy("tpm", false), NKP_OK);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "unbinding", "off, still bound");
	pthread_mutex_lock(&s.lock);
	nkpd_sealpol_status(&s, h, &none, "");
	pthread_mutex_unlock(&s.lock);
	cr_assert_str_eq(nkpd_sealpol_state(&s, h), "off");
}
