/* Hosts: enrolment, removal (after the host wiped its keys), resync. The
 * host list is persisted through the store at once; the live side is the
 * sync engine's (nkpd_svc.sync), told after the model changed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/core.h"
#include "core/kms.h"
#include "internal.h"
#include "quote.h"

#define WIPE_WAIT_MS 5000u /* host remove: how long a host has to confirm its wipe */
#define WIPE_POLL_MS 50u

static bool address_valid(const char *a)
{
	size_t n = strlen(a);

	if (n > NKPD_ADDRESS_MAX || n < 7) {
		return false;
	}
	if (strncmp(a, "tcp://", 6) != 0 && strncmp(a, "ipc://", 6) != 0) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)a[i] <= ' ' || (unsigned char)a[i] >= 0x7f) {
			return false;
		}
	}
	return n > 6;
}

static nkp_err host_validate(nkpd_svc *s, const nkpd_host_add_args *r, nkpd_result *res)
{
	if (!nkpd_util_name_valid(r->name)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "invalid host name (1-64 of A-Z a-z 0-9 . _ -)");
	} else if (!address_valid(r->address)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "invalid address %.80s (tcp://HOST:PORT or ipc://PATH)",
				 r->address);
	} else if (r->public_key_len != NKP_PUBKEY_BYTES) {
		nkpd_result_fail(res, NKP_ERR_INVALID, "a host public key is 32 bytes");
	} else if (r->ak_public_len != 0 &&
		   (r->ak_public_len > NKPD_AK_MAX ||
		    nkpi_quote_ak_check(r->ak_public, r->ak_public_len) != NKP_OK)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "the token's attestation key is not one nkp-hostd init makes");
	} else if (r->ek_ca_len != 0 && (r->ak_public_len == 0 || r->ek_ca_len > NKPD_EK_CA_MAX ||
					 nkpi_quote_ca_check(r->ek_ca, r->ek_ca_len) != NKP_OK)) {
		nkpd_result_fail(
			res, NKP_ERR_INVALID,
			r->ak_public_len == 0
				? "--ek-ca needs a token with an attestation key (init --tpm)"
				: "--ek-ca must be PEM certificates");
	} else if (r->cluster[0] != '\0' && !nkpd_util_name_valid(r->cluster)) {
		nkpd_result_fail(res, NKP_ERR_INVALID, "invalid cluster name");
	} else if (nkpd_model_host_find(s, r->name) != NULL) {
		nkpd_result_fail(res, NKP_ERR_EXISTS, "a host named %s is already enrolled",
				 r->name);
	} else if (s->n_hosts >= NKPD_MAX_HOSTS) {
		nkpd_result_fail(res, NKP_ERR_TOO_LARGE, "too many hosts");
	} else {
		return NKP_OK;
	}
	return res->code;
}

static nkp_err host_append(nkpd_svc *s, nkpd_host *h)
{
	nkpd_host **nh = realloc(s->hosts, (s->n_hosts + 1) * sizeof(*nh));
	nkp_err err;

	if (nh == NULL) {
		return NKP_ERR_NOMEM;
	}
	s->hosts = nh;
	s->hosts[s->n_hosts++] = h;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		s->n_hosts--;
	}
	return err;
}

void nkpd_host_add(nkpd_svc *s, const nkpd_host_add_args *r, nkpd_result *res)
{
	nkpd_host *h = NULL;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	if (host_validate(s, r, res) != NKP_OK) {
		goto out_unlock;
	}
	/* Low-order points are refused: a key no peer can hold. */
	err = nkp_pubkey_check(s->identity, r->public_key);
	if (err != NKP_OK) {
		nkpd_result_fail(res, err, "unusable host public key: %s", nkp_strerror(err));
		goto out_unlock;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOMEM, "out of memory");
		goto out_unlock;
	}
	nkpd_util_copy_str(h->conf.name, sizeof(h->conf.name), r->name);
	nkpd_util_copy_str(h->conf.address, sizeof(h->conf.address), r->address);
	nkpd_util_copy_str(h->conf.cluster, sizeof(h->conf.cluster), r->cluster);
	memcpy(h->conf.pub, r->public_key, NKP_PUBKEY_BYTES);
	h->conf.enrolled_unix = nkpi_now();
	h->conf.ak_len = r->ak_public_len;
	if (r->ak_public_len != 0) {
		memcpy(h->conf.ak, r->ak_public, r->ak_public_len);
	}
	if (r->ek_ca_len != 0) {
		h->conf.ek_ca = malloc(r->ek_ca_len);
		if (h->conf.ek_ca == NULL) {
			nkpd_result_fail(res, NKP_ERR_NOMEM, "out of memory");
			nkpd_model_host_free(h);
			goto out_unlock;
		}
		memcpy(h->conf.ek_ca, r->ek_ca, r->ek_ca_len);
		h->conf.ek_ca_len = r->ek_ca_len;
	}
	h->att.state = h->conf.ak_len != 0 ? ATTEST_UNTRUSTED : ATTEST_NONE;
	nkpd_util_copy_str(h->att.reason, sizeof(h->att.reason),
			   h->conf.ak_len != 0 ? "no quote yet" : "no attestation key pinned");
	err = host_append(s, h);
	if (err != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, r->name,
			  "could not write %s: %s; host %s was not enrolled", s->state_path,
			  nkp_strerror(err), r->name);
		nkpd_result_fail(res, err, "host add: cannot persist the service state: %s",
				 nkp_strerror(err));
		nkpd_model_host_free(h);
		goto out_unlock;
	}
	if (s->sync != NULL && (err = s->sync->host_added(s->sync->ctx, h)) != NKP_OK) {
		snprintf(h->st.last_error, sizeof(h->st.last_error), "cannot dial: %s",
			 nkp_strerror(err));
	}
	nkpd_kms_wake_locked(s); /* its spares of standard providers */
	nkp_event(s->events, NKP_EV_HOST_ENROLLED, NULL, r->name, "host %s enrolled at %s%s%s%s",
		  r->name, r->address, r->cluster[0] ? " in cluster " : "", r->cluster,
		  h->conf.ak_len != 0 ? ", its TPM's attestation key pinned" : "");
	nkpd_result_ok(res, "host %s enrolled", r->name);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* ---- views of a host ---- */

/* The host acknowledged exactly `d` (the digest covers epoch, counter
 * and every key). */
bool nkpd_host_has(const nkpd_host *h, const nkpd_desired *d)
{
	return d != NULL && h->st.have_digest &&
	       sodium_memcmp(h->st.applied_digest, d->digest, NKPI_DIGEST_BYTES) == 0;
}

bool nkpd_host_current(const nkpd_svc *s, const nkpd_host *h)
{
	return nkpd_host_has(h, nkpd_host_snap(s, h));
}

bool nkpd_host_in_sync(const nkpd_svc *s, const nkpd_host *h)
{
	return h->st.health == HEALTH_OK && h->st.have_nonce && nkpd_host_current(s, h);
}

const char *nkpd_host_state_name(const nkpd_svc *s, const nkpd_host *h)
{
	if (nkpd_host_in_sync(s, h)) {
		return "in-sync";
	}
	if (h->st.conflict && h->st.health == HEALTH_OK) {
		return h->st.resync ? "resync" : "conflict";
	}
	switch (h->st.health) {
	case HEALTH_UNREACHABLE:
		return "unreachable";
	case HEALTH_REFUSED:
		return "refused";
	default:
		return "pending";
	}
}

static void pause_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

	(void)nanosleep(&ts, NULL);
}

/* Lock held. Has `h` wipe its keys (an empty desired state pushed to it
 * alone), waiting up to WIPE_WAIT_MS for its ack with the lock released
 * (the admin thread is the only one that removes hosts, so `h` stays).
 * True when it confirmed; otherwise the last error is in h->st.last_error. */
static bool wipe_host(nkpd_svc *s, nkpd_host *h)
{
	bool wiped = false;

	if (s->sync->host_wipe(s->sync->ctx, h, true) != NKP_OK) {
		return false;
	}
	for (unsigned waited = 0; !wiped && waited < WIPE_WAIT_MS; waited += WIPE_POLL_MS) {
		pthread_mutex_unlock(&s->lock);
		pause_ms(WIPE_POLL_MS);
		pthread_mutex_lock(&s->lock);
		wiped = s->sync->host_wiped(s->sync->ctx, h);
	}
	return wiped;
}

/* Lock held. Takes `h` out of the model and persists; puts it back on error. */
static nkp_err forget_host(nkpd_svc *s, nkpd_host *h, nkpd_result *res)
{
	size_t i;
	nkp_err err;

	for (i = 0; i < s->n_hosts && s->hosts[i] != h; i++) {
	}
	memmove(&s->hosts[i], &s->hosts[i + 1], (s->n_hosts - i - 1) * sizeof(s->hosts[0]));
	s->n_hosts--;
	err = nkpd_state_save(s);
	if (err != NKP_OK) {
		memmove(&s->hosts[i + 1], &s->hosts[i], (s->n_hosts - i) * sizeof(s->hosts[0]));
		s->hosts[i] = h;
		s->n_hosts++;
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->conf.name,
			  "could not write %s: %s; host %s was not removed", s->state_path,
			  nkp_strerror(err), h->conf.name);
		nkpd_result_fail(res, err, "host remove: cannot persist the service state: %s",
				 nkp_strerror(err));
	}
	return err;
}

/* Lock held (released while waiting). Has a live host wipe its keys.
 * False, with `res` filled and the host kept, unless it confirmed or
 * --force says to forget it anyway. */
static bool wiped_or_forced(nkpd_svc *s, nkpd_host *h, const nkpd_host_remove_args *r,
			    nkpd_result *res, bool *wiped)
{
	*wiped = wipe_host(s, h);
	if (*wiped) {
		return true;
	}
	nkp_event(s->events, NKP_EV_PUSH_FAILED, NULL, h->conf.name,
		  "host %s did not confirm that it wiped its keys (%s)%s", h->conf.name,
		  h->st.last_error[0] ? h->st.last_error : "no answer",
		  r->force ? "; forgotten anyway (--force)" : "; it stays enrolled");
	if (r->force) {
		return true;
	}
	nkpd_result_fail(res, NKP_ERR_TIMEOUT,
			 "host remove: host %s did not confirm that it wiped "
			 "its keys within %u s (%s); it stays enrolled; --force forgets it anyway",
			 h->conf.name, WIPE_WAIT_MS / 1000u,
			 h->st.last_error[0] ? h->st.last_error : "no answer");
	(void)s->sync->host_wipe(s->sync->ctx, h, false);
	return false;
}

static void report_removed(nkpd_svc *s, const char *name, bool live, bool wiped, nkpd_result *res)
{
	nkpd_kms_wake_locked(s); /* its spares of standard providers go */
	nkp_event(s->events, NKP_EV_HOST_REMOVED, NULL, name, "host %s removed%s", name,
		  !live	  ? ""
		  : wiped ? " after wiping its keys"
			  : " without wiping its keys (it did not answer)");
	nkpd_result_ok(
		res, "host %s removed%s", name,
		!live	? ""
		: wiped ? "; it wiped its keys"
			: "; WARNING: it did not confirm that it wiped its keys and may still hold "
			  "them");
}

void nkpd_host_remove(nkpd_svc *s, const nkpd_host_remove_args *r, nkpd_result *res)
{
	nkpd_host *h;
	bool live = s->sync != NULL; /* no reconciler (tests): nobody to tell */
	bool wiped = false;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	h = nkpd_model_host_find(s, r->name);
	if (h == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no host named %s", r->name);
		goto out_unlock;
	}
	/* A host must not be wiped and then kept for want of disk space: check
	 * first that the state can be written at all. */
	if (live && (err = nkpd_state_save(s)) != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->conf.name,
			  "could not write %s: %s; host %s was not removed", s->state_path,
			  nkp_strerror(err), h->conf.name);
		nkpd_result_fail(res, err, "host remove: cannot persist the service state: %s",
				 nkp_strerror(err));
		goto out_unlock;
	}
	if (live && !wiped_or_forced(s, h, r, res, &wiped)) {
		goto out_unlock;
	}
	if (forget_host(s, h, res) != NKP_OK) {
		if (live) {
			(void)s->sync->host_wipe(s->sync->ctx, h, false);
		}
		goto out_unlock;
	}
	report_removed(s, r->name, live, wiped, res);
	pthread_mutex_unlock(&s->lock);
	if (live) {
		s->sync->host_release(s->sync->ctx, h);
	} else {
		nkpd_model_host_free(h);
	}
	return;
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* The operator says this host's generation may be replaced: after a
 * conflict (a host ahead of this service, or of another epoch). */
void nkpd_host_resync(nkpd_svc *s, const char *name, nkpd_result *res)
{
	nkpd_host *h;

	pthread_mutex_lock(&s->lock);
	h = nkpd_model_host_find(s, name);
	if (h == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no host named %s", name);
	} else if (s->sync == NULL) {
		nkpd_result_fail(res, NKP_ERR_STATE, "the reconciler is not running");
	} else {
		s->sync->host_resync(s->sync->ctx, h);
		nkpd_result_ok(res,
			       "host %s: the next push replaces whatever generation it holds; "
			       "`nkpctl host wait` shows when it is in sync",
			       name);
	}
	pthread_mutex_unlock(&s->lock);
}
