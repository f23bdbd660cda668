/* The seal policy (docs/PROTOCOL.md "Seal policy"): a host sealed to a TPM
 * can have its sealing key bound to nkpd's PCR policy, so that its state
 * directory opens only while its TPM's PCRs are in a state nkpd approved
 * (a baseline). nkpd's policy key, an ECDSA P-256 key derived from its own
 * sealing key, signs one approval per baseline; the set of baselines names
 * the policy (its ref), so a removed baseline's approval opens nothing
 * bound after the removal. The approvals are public: a Hello carries them
 * to a host that asked for the policy while the host reports another
 * binding. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "atrest.h"
#include "core/core.h"
#include "internal.h"
#include "policy.h"

#define REF_LABEL "nkp-seal-policy-ref-v1"

/* The policy key: the first of the sealing key's derived keys (context
 * "sealpol1") that is a P-256 private key; the chance that one is not is
 * about 2^-32 each. Made with the first policy: a service without
 * baselines never derives it. */
static nkp_err policy_key_open(nkpd_svc *s)
{
	uint8_t secret[NKPI_POLICY_SECRET_BYTES];
	nkp_err err = NKP_ERR_CRYPTO;

	for (uint64_t id = 0; id < 16 && err != NKP_OK; id++) {
		nkp_key *k = NULL;

		err = nkp_key_derive(s->seal_key, id, "sealpol1", &k);
		if (err != NKP_OK) {
			return err;
		}
		nkp_key_export(k, secret);
		s->policy_pub_len = sizeof(s->policy_pub);
		err = nkpi_policy_key_public(secret, s->policy_pub, &s->policy_pub_len);
		sodium_memzero(secret, sizeof(secret));
		if (err == NKP_OK) {
			s->policy_key = k;
		} else {
			nkp_key_free(k);
		}
	}
	return err;
}

void nkpd_sealpol_release(nkpd_sealpol *p)
{
	if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1) {
		return;
	}
	nkp__atrest__seal_policy__free_unpacked(p->msg, NULL);
	free(p);
}

static int entry_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 4 + 32);
}

/* The ref: the first 8 bytes of a keyed BLAKE2b-256 of every baseline's
 * mask (big-endian) and PCR digest, sorted, so the same set gives the same
 * ref whatever the order and names. */
static void policy_ref(const nkpd_svc *s, uint8_t ref[NKPI_POLICY_REF_BYTES])
{
	uint8_t entries[NKPD_MAX_BASELINES][4 + 32], out[32];
	crypto_generichash_state st;

	for (size_t i = 0; i < s->n_baselines; i++) {
		const nkpd_baseline *b = &s->baselines[i];

		entries[i][0] = (uint8_t)(b->pcr_mask >> 24);
		entries[i][1] = (uint8_t)(b->pcr_mask >> 16);
		entries[i][2] = (uint8_t)(b->pcr_mask >> 8);
		entries[i][3] = (uint8_t)b->pcr_mask;
		memcpy(entries[i] + 4, b->pcr_digest, 32);
	}
	qsort(entries, s->n_baselines, sizeof(entries[0]), entry_cmp);
	crypto_generichash_init(&st, (const uint8_t *)REF_LABEL, sizeof(REF_LABEL) - 1,
				sizeof(out));
	crypto_generichash_update(&st, (const uint8_t *)entries,
				  s->n_baselines * sizeof(entries[0]));
	crypto_generichash_final(&st, out, sizeof(out));
	memcpy(ref, out, NKPI_POLICY_REF_BYTES);
}

/* Lock held (or before the engine starts). s->sealpol anew from the
 * baselines: NULL while there is none. Hosts see the change at their next
 * Hello. */
nkp_err nkpd_sealpol_refresh(nkpd_svc *s)
{
	Nkp__Atrest__SealPolicy m = NKP__ATREST__SEAL_POLICY__INIT;
	Nkp__Atrest__Approval app[NKPD_MAX_BASELINES], *appp[NKPD_MAX_BASELINES];
	uint8_t sig[NKPD_MAX_BASELINES][NKPI_POLICY_SIG_MAX];
	uint8_t ref[NKPI_POLICY_REF_BYTES], secret[NKPI_POLICY_SECRET_BYTES];
	uint8_t *packed = NULL;
	nkpd_sealpol *p = NULL;
	nkp_err err = NKP_OK;
	size_t len;

	if (s->n_baselines == 0) {
		nkpd_sealpol_release(s->sealpol);
		s->sealpol = NULL;
		return NKP_OK;
	}
	if (s->policy_key == NULL && (err = policy_key_open(s)) != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKPD-SEAL-POLICY", "cannot derive the seal policy key: %s",
			nkp_strerror(err));
		return err;
	}
	policy_ref(s, ref);
	nkp_key_export(s->policy_key, secret);
	for (size_t i = 0; i < s->n_baselines && err == NKP_OK; i++) {
		const nkpd_baseline *b = &s->baselines[i];
		size_t sig_len = sizeof(sig[i]);

		err = nkpi_policy_approve(secret, b->pcr_mask, b->pcr_digest, ref, sizeof(ref),
					  sig[i], &sig_len);
		nkp__atrest__approval__init(&app[i]);
		app[i].pcr_mask = b->pcr_mask;
		app[i].pcr_digest.data = (uint8_t *)b->pcr_digest;
		app[i].pcr_digest.len = sizeof(b->pcr_digest);
		app[i].signature.data = sig[i];
		app[i].signature.len = sig_len;
		app[i].name = (char *)b->name;
		appp[i] = &app[i];
	}
	sodium_memzero(secret, sizeof(secret));
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKPD-SEAL-POLICY", "cannot sign the seal policy: %s",
			nkp_strerror(err));
		return err;
	}
	m.key.data = s->policy_pub;
	m.key.len = s->policy_pub_len;
	m.ref.data = ref;
	m.ref.len = sizeof(ref);
	m.approvals = appp;
	m.n_approvals = s->n_baselines;
	len = nkp__atrest__seal_policy__get_packed_size(&m);
	packed = malloc(len + 1);
	p = calloc(1, sizeof(*p));
	if (packed == NULL || p == NULL) {
		err = NKP_ERR_NOMEM;
		goto out;
	}
	nkp__atrest__seal_policy__pack(&m, packed);
	/* An immutable copy of its own: Hellos are packed outside the lock. */
	p->msg = nkp__atrest__seal_policy__unpack(NULL, len, packed);
	if (p->msg == NULL) {
		err = NKP_ERR_NOMEM;
		goto out;
	}
	err = nkpi_seal_policy_digest(p->msg, p->digest);
	if (err != NKP_OK) {
		nkp__atrest__seal_policy__free_unpacked(p->msg, NULL);
		goto out;
	}
	atomic_init(&p->refs, 1);
	nkpd_sealpol_release(s->sealpol);
	s->sealpol = p;
	p = NULL;
out:
	free(p);
	free(packed);
	return err;
}

/* Lock held. What a Status says of the host's binding. */
void nkpd_sealpol_status(nkpd_svc *s, nkpd_host *h, const ProtobufCBinaryData *digest,
			 const char *error)
{
	(void)s;
	h->st.seal_bound = digest->len == sizeof(h->st.seal_digest);
	if (h->st.seal_bound) {
		memcpy(h->st.seal_digest, digest->data, sizeof(h->st.seal_digest));
	}
	nkpd_util_sanitize(h->st.seal_error, sizeof(h->st.seal_error), error);
}

/* Lock held. "off", "bound" (to the current policy), "pending" (asked,
 * not bound to it yet: see the host's error), "unbinding". */
const char *nkpd_sealpol_state(const nkpd_svc *s, const nkpd_host *h)
{
	if (!h->conf.seal_policy) {
		return h->st.seal_bound ? "unbinding" : "off";
	}
	if (s->sealpol != NULL && h->st.seal_bound &&
	    sodium_memcmp(h->st.seal_digest, s->sealpol->digest, sizeof(s->sealpol->digest)) == 0) {
		return "bound";
	}
	return "pending";
}

/* Does a baseline approve a state of PCRs software can set (none of
 * 0-7, the firmware's)? Such an approval opens a bound key on any machine
 * whose OS replays or resets those. */
static bool software_pcrs_only(const nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_baselines; i++) {
		if ((s->baselines[i].pcr_mask & 0xffu) == 0) {
			return true;
		}
	}
	return false;
}

void nkpd_host_seal_policy(nkpd_svc *s, const char *name, bool on, nkpd_result *res)
{
	nkpd_host *h;
	bool was;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	h = nkpd_model_host_find(s, name);
	if (h == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no host named %s", name);
		goto out;
	}
	if (on && h->conf.ak_len == 0) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "host %s has no attestation key: it was not enrolled with a TPM",
				 name);
		goto out;
	}
	was = h->conf.seal_policy;
	h->conf.seal_policy = on;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		h->conf.seal_policy = was;
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, NULL,
			  "could not write %s: %s", s->state_path, nkp_strerror(err));
		nkpd_result_fail(res, err, "cannot persist the service state: %s",
				 nkp_strerror(err));
		goto out;
	}
	h->st.seal_sent = false;
	if (s->sync != NULL) {
		s->sync->host_scope_changed(s->sync->ctx, h);
	}
	nkpd_result_ok(res, "host %s: seal policy %s%s%s", name, on ? "on" : "off",
		       on && s->sealpol == NULL ? " (it binds once a baseline is approved)" : "",
		       on && software_pcrs_only(s)
			       ? "; warning: a baseline quotes no firmware PCR (0-7), and software "
				 "on the host can reset or replay the others"
			       : "");
out:
	pthread_mutex_unlock(&s->lock);
}
