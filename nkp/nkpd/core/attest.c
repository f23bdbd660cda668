/* Trusted hosts (docs/PROTOCOL.md "Attestation"): what a host's quotes
 * make of it, the approved baselines, and which desired state it gets.
 *
 * A host whose attestation key (AK) was pinned at enrolment is asked for
 * a quote of the configured PCRs over a fresh nonce every attest interval
 * (sync/link.c sends it in a Hello, sync/reply.c checks it with
 * nkpi_quote_verify). Before any quote counts, the AK is proven to sit
 * beside the host's EK (credential activation: the EK and its
 * certificate asked for, checked under the CA pinned at enrolment if one
 * was, a credential made to it for the AK, recovered by the host's
 * TPM). It is trusted while its latest quote passed, is not
 * older than the interval allows, and its PCR digest equals an approved
 * baseline's; trusted providers reach only trusted hosts, and a host that
 * stops being trusted is pushed the state without them (a wipe). Memory
 * only: every start of nkpd begins untrusted. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "quote.h"

/* Does `h`'s latest verified quote still speak for it? Not older than
 * the interval and two heartbeats for an answer; a trusted host past that
 * is no longer trusted. */
static bool quote_fresh(const nkpd_svc *s, const nkpd_host *h)
{
	return h->att.have_quote && nkpi_mono_ms() - h->att.ok_ms <=
					    s->attest_interval_ms + 2u * (uint64_t)s->heartbeat_ms;
}

static const nkpd_baseline *baseline_match(const nkpd_svc *s, uint32_t mask,
					   const uint8_t digest[static 32])
{
	for (size_t i = 0; i < s->n_baselines; i++) {
		const nkpd_baseline *b = &s->baselines[i];

		if (b->pcr_mask == mask && sodium_memcmp(b->pcr_digest, digest, 32) == 0) {
			return b;
		}
	}
	return NULL;
}

/* Lock held. Moves `h` to `state` for `reason`: an event when trust is
 * gained or lost (or the reason of distrust changes), and, when trusted
 * providers exist, a push of the other desired state with resync (same
 * pair, other contents). */
static void attest_set(nkpd_svc *s, nkpd_host *h, nkpd_attest state, const char *baseline,
		       const char *reason)
{
	bool was = h->att.state == ATTEST_TRUSTED, now = state == ATTEST_TRUSTED;
	bool news = was != now || (!now && strcmp(h->att.reason, reason) != 0) ||
		    (now && strcmp(h->att.baseline, baseline) != 0);

	h->att.state = state;
	nkpd_util_copy_str(h->att.reason, sizeof(h->att.reason), reason);
	nkpd_util_copy_str(h->att.baseline, sizeof(h->att.baseline), now ? baseline : "");
	if (!news) {
		return;
	}
	if (now) {
		nkp_event(s->events, NKP_EV_HOST_ATTESTED, NULL, h->conf.name,
			  "host %s attested: its PCRs match baseline %s", h->conf.name, baseline);
	} else {
		nkp_event(s->events, NKP_EV_HOST_ATTESTATION_FAILED, NULL, h->conf.name,
			  "host %s is not trusted: %s%s", h->conf.name, reason,
			  was && nkpd_model_has_trusted(s) ? "; trusted providers are wiped from it"
							   : "");
	}
	if (was != now && nkpd_model_has_trusted(s)) {
		h->att.scope_resync = true;
		if (s->sync != NULL && s->sync->host_scope_changed != NULL) {
			s->sync->host_scope_changed(s->sync->ctx, h);
		}
	}
}

void nkpd_attest_quote_ok(nkpd_svc *s, nkpd_host *h, uint32_t mask, const uint8_t digest[32])
{
	const nkpd_baseline *b = baseline_match(s, mask, digest);

	h->att.fails = 0;
	h->att.have_quote = true;
	h->att.quote_mask = mask;
	memcpy(h->att.quote_digest, digest, sizeof(h->att.quote_digest));
	h->att.attested_unix = nkpi_now();
	h->att.ok_ms = nkpi_mono_ms();
	h->att.due_ms = h->att.ok_ms + s->attest_interval_ms;
	if (b != NULL) {
		attest_set(s, h, ATTEST_TRUSTED, b->name, "");
	} else {
		attest_set(s, h, ATTEST_UNTRUSTED, "",
			   s->n_baselines == 0 ? "its PCRs match no baseline (none is approved)"
					       : "its PCRs match no approved baseline");
	}
}

void nkpd_attest_quote_failed(nkpd_svc *s, nkpd_host *h, const char *reason)
{
	/* Asked again a heartbeat later, then twice that, ... up to the
	 * interval: a host that keeps failing (a wrong --ek-ca, a slow TPM)
	 * costs a certificate check or a TPM command that often, not every
	 * heartbeat. The quote before it no longer speaks for the host: no
	 * baseline change may trust it on that quote, nor take a baseline
	 * from it. */
	uint64_t wait = (uint64_t)s->heartbeat_ms << (h->att.fails < 10 ? h->att.fails : 10);

	h->att.fails++;
	h->att.due_ms =
		nkpi_mono_ms() + (wait < s->attest_interval_ms ? wait : s->attest_interval_ms);
	h->att.have_quote = false;
	attest_set(s, h, ATTEST_UNTRUSTED, "", reason);
}

/* ---- credential activation ---- */

void nkpd_attest_ek(nkpd_svc *s, nkpd_host *h, const uint8_t *ek, size_t ek_len,
		    const uint8_t *cert, size_t cert_len)
{
	char why[160];
	nkp_err err;

	if (h->conf.ek_ca != NULL) {
		err = cert_len == 0 ? NKP_ERR_NOT_FOUND
				    : nkpi_quote_ek_cert_check(ek, ek_len, cert, cert_len,
							       h->conf.ek_ca, h->conf.ek_ca_len);
		if (err != NKP_OK) {
			snprintf(why, sizeof(why), "%s",
				 err == NKP_ERR_NOT_FOUND ? "its TPM has no EK certificate"
				 : err == NKP_ERR_AUTH ? "its EK certificate does not verify under "
							 "the CA given at "
							 "enrolment"
				 : err == NKP_ERR_REFUSED
					 ? "its EK certificate is for another key"
					 : "its EK or EK certificate is malformed");
			nkpd_attest_quote_failed(s, h, why);
			return;
		}
	}
	randombytes_buf(h->att.credential, sizeof(h->att.credential));
	h->att.blob_len = sizeof(h->att.blob);
	h->att.secret_len = sizeof(h->att.secret);
	err = nkpi_quote_make_credential(ek, ek_len, h->conf.ak, h->conf.ak_len, h->att.credential,
					 sizeof(h->att.credential), h->att.blob, &h->att.blob_len,
					 h->att.secret, &h->att.secret_len);
	if (err != NKP_OK) {
		nkpd_attest_quote_failed(s, h,
					 "its EK is not of the TCG default template (RSA 2048)");
		return;
	}
	h->att.proof = AK_NEED_ACTIVATION;
	h->att.due_ms = 0; /* the activation goes next, at once */
}

void nkpd_attest_activated(nkpd_svc *s, nkpd_host *h, const uint8_t *got, size_t len)
{
	bool ok = len == sizeof(h->att.credential) &&
		  sodium_memcmp(got, h->att.credential, sizeof(h->att.credential)) == 0;

	sodium_memzero(h->att.credential, sizeof(h->att.credential));
	if (!ok) {
		h->att.proof = AK_NEED_EK;
		nkpd_attest_quote_failed(s, h,
					 "its attestation key is not proven to sit beside its EK "
					 "(credential activation failed)");
		return;
	}
	h->att.proof = AK_PROVEN;
}

void nkpd_attest_restarted(nkpd_svc *s, nkpd_host *h)
{
	if (h->conf.ak_len == 0) {
		return;
	}
	/* What it runs now is unknown until it quotes again (at once). */
	h->att.have_quote = false;
	h->att.due_ms = 0;
	h->att.proof = AK_NEED_EK;
	attest_set(s, h, ATTEST_UNTRUSTED, "", "it restarted: no quote since");
}

void nkpd_attest_check_age(nkpd_svc *s, nkpd_host *h)
{
	if (h->att.state == ATTEST_TRUSTED && !quote_fresh(s, h)) {
		attest_set(s, h, ATTEST_UNTRUSTED, "", "no quote within the attest interval");
	}
}

bool nkpd_attest_due(const nkpd_svc *s, const nkpd_host *h)
{
	(void)s;
	return h->conf.ak_len != 0 && nkpi_mono_ms() >= h->att.due_ms;
}

/* Lock held. After the baselines changed: every host's latest quote
 * compared again. */
static void attest_recheck(nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_host *h = s->hosts[i];

		if (h->att.state != ATTEST_NONE && quote_fresh(s, h)) {
			const nkpd_baseline *b =
				baseline_match(s, h->att.quote_mask, h->att.quote_digest);

			if (b != NULL) {
				attest_set(s, h, ATTEST_TRUSTED, b->name, "");
			} else if (h->att.state == ATTEST_TRUSTED) {
				attest_set(s, h, ATTEST_UNTRUSTED, "",
					   "its PCRs match no approved baseline");
			}
		}
	}
}

/* ---- scope ---- */

bool nkpd_host_in_scope(const nkpd_host *h, const nkpd_provider *p)
{
	return !p->tpm_only || h->att.state == ATTEST_TRUSTED;
}

uint64_t nkpd_host_acked(const nkpd_host *h, const nkpd_provider *p)
{
	return p->tpm_only ? h->st.acked_trusted_generation : h->st.acked_generation;
}

/* The desired state for `h`: nothing at all while it is being removed;
 * trusted providers only while it is trusted. */
nkpd_desired *nkpd_host_snap(const nkpd_svc *s, const nkpd_host *h)
{
	if (h->wipe_snap != NULL) {
		return h->wipe_snap;
	}
	return h->att.state == ATTEST_TRUSTED && s->snap_trusted != NULL ? s->snap_trusted
									 : s->snap;
}

/* ---- baselines ---- */

/* After a change of baselines: the seal policy signed anew, and the hosts
 * bound to it told at once (the change is in memory and on disk already:
 * signing cannot fail but for memory, and then the old policy stays until
 * the next change or restart). */
static void sealpol_changed(nkpd_svc *s)
{
	if (nkpd_sealpol_refresh(s) != NKP_OK || s->sync == NULL) {
		return;
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (s->hosts[i]->conf.seal_policy) {
			s->sync->host_scope_changed(s->sync->ctx, s->hosts[i]);
		}
	}
}

static void baseline_save_failed(nkpd_svc *s, nkpd_result *res, nkp_err err)
{
	nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, NULL, "could not write %s: %s",
		  s->state_path, nkp_strerror(err));
	nkpd_result_fail(res, err, "cannot persist the service state: %s", nkp_strerror(err));
}

void nkpd_baseline_add(nkpd_svc *s, const char *name, const char *from_host, nkpd_result *res)
{
	nkpd_host *h;
	nkpd_baseline *b;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	h = nkpd_model_host_find(s, from_host);
	if (!nkpd_util_name_valid(name)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "invalid baseline name (1-64 of A-Z a-z 0-9 . _ -)");
	} else if (nkpd_model_baseline_find(s, name) != NULL) {
		nkpd_result_fail(res, NKP_ERR_EXISTS, "a baseline named %s exists", name);
	} else if (s->n_baselines >= NKPD_MAX_BASELINES) {
		nkpd_result_fail(res, NKP_ERR_TOO_LARGE, "too many baselines (%u)",
				 NKPD_MAX_BASELINES);
	} else if (h == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no host named %s", from_host);
	} else if (h->conf.ak_len == 0) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "host %s has no attestation key: it was not enrolled with a TPM",
				 from_host);
	} else if (!quote_fresh(s, h)) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "host %s has no recent verified quote (%s); try again once it "
				 "answered one",
				 from_host, h->att.reason);
	} else {
		b = &s->baselines[s->n_baselines++];
		memset(b, 0, sizeof(*b));
		nkpd_util_copy_str(b->name, sizeof(b->name), name);
		nkpd_util_copy_str(b->from_host, sizeof(b->from_host), from_host);
		b->pcr_mask = h->att.quote_mask;
		memcpy(b->pcr_digest, h->att.quote_digest, sizeof(b->pcr_digest));
		b->created_unix = nkpi_now();
		err = nkpd_state_save(s);
		if (err != NKP_OK) {
			s->n_baselines--;
			baseline_save_failed(s, res, err);
		} else {
			attest_recheck(s);
			sealpol_changed(s);
			nkpd_result_ok(res, "baseline %s approved: the PCRs of host %s", name,
				       from_host);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void nkpd_baseline_remove(nkpd_svc *s, const char *name, nkpd_result *res)
{
	nkpd_baseline *b, keep;
	size_t i;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	b = nkpd_model_baseline_find(s, name);
	if (b == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no baseline named %s", name);
		goto out;
	}
	i = (size_t)(b - s->baselines);
	keep = *b;
	memmove(&s->baselines[i], &s->baselines[i + 1],
		(s->n_baselines - i - 1) * sizeof(*s->baselines));
	s->n_baselines--;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		memmove(&s->baselines[i + 1], &s->baselines[i],
			(s->n_baselines - i) * sizeof(*s->baselines));
		s->baselines[i] = keep;
		s->n_baselines++;
		baseline_save_failed(s, res, err);
		goto out;
	}
	attest_recheck(s);
	sealpol_changed(s);
	nkpd_result_ok(res, "baseline %s removed", name);
out:
	pthread_mutex_unlock(&s->lock);
}

nkpd_baseline *nkpd_baseline_list(nkpd_svc *s, size_t *n)
{
	nkpd_baseline *out;

	pthread_mutex_lock(&s->lock);
	*n = s->n_baselines;
	out = nkpd_util_xcalloc(s->n_baselines + 1, sizeof(*out));
	memcpy(out, s->baselines, s->n_baselines * sizeof(*out));
	pthread_mutex_unlock(&s->lock);
	return out;
}
