/* The seal policy on a host (docs/PROTOCOL.md "Seal policy"): a Hello
 * asks for DIR/seal.tpm to be bound to nkpd's policy, or unbound; the work
 * (sealing anew on the TPM, proving it opens, replacing the file, revoking
 * what it replaced) runs on a thread of its own, so a Hello is answered at
 * once and never waits for a TPM. Every Status says where the binding
 * stands. All state under h->seal_lock, never held across a TPM command;
 * the TPM itself one user at a time (h->tpm_lock). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/log.h>

#include "hostd-internal.h"

/* Under seal_lock: is `p` (NULL: an unbind), of digest `d`, work to do? A
 * policy refused for what it is stays refused until another comes. */
static bool wanted(const nkp_hostd *h, const Nkp__Atrest__SealPolicy *p, const uint8_t *d)
{
	const size_t n = NKPI_SEAL_POLICY_DIGEST_BYTES;

	if (p == NULL) {
		return h->seal_bound;
	}
	return !(h->seal_bound && sodium_memcmp(d, h->seal_digest, n) == 0) &&
	       !(h->seal_failed && sodium_memcmp(d, h->seal_failed_digest, n) == 0);
}

/* Under seal_lock: the outcome of one bind or unbind. */
static void settle(nkp_hostd *h, const Nkp__Atrest__SealPolicy *p, const uint8_t *d, nkp_err err,
		   const char *not_revoked)
{
	const bool want = p != NULL;

	if (err == NKP_OK) {
		h->seal_bound = want;
		memcpy(h->seal_digest, d, NKPI_SEAL_POLICY_DIGEST_BYTES);
		h->seal_error[0] = '\0';
		/* Bound, but a copy of the object it replaced still opens:
		 * the operator hears of it (nkpi_atrest_bind logged why). */
		if (not_revoked != NULL) {
			snprintf(h->seal_error, sizeof(h->seal_error),
				 "bound; the pre-binding object was not revoked: %s", not_revoked);
		}
		h->seal_failed = false;
		if (want) {
			nkp_log(NKP_LOG_NOTICE, "NKP-HOSTD-SEAL-POLICY",
				"the sealing key at rest is now bound to the service's PCR "
				"policy (%zu approved states)",
				p->n_approvals);
		} else {
			nkp_log(NKP_LOG_NOTICE, "NKP-HOSTD-SEAL-POLICY",
				"the sealing key at rest is sealed to the TPM alone again");
		}
		return;
	}
	snprintf(h->seal_error, sizeof(h->seal_error), "%s",
		 err == NKP_ERR_STATE	  ? "the sealing key is not sealed to a TPM on this host"
		 : err == NKP_ERR_REFUSED ? "this TPM's PCRs match none of the approved states"
					  : nkp_strerror(err));
	/* The TPM, the disk or memory failing: tried again at the next Hello
	 * that carries it. */
	if (want && err != NKP_ERR_TPM && err != NKP_ERR_IO && err != NKP_ERR_NOSPC &&
	    err != NKP_ERR_NOMEM) {
		h->seal_failed = true;
		memcpy(h->seal_failed_digest, d, NKPI_SEAL_POLICY_DIGEST_BYTES);
	}
	nkp_log(NKP_LOG_WARN, "NKP-HOSTD-SEAL-POLICY",
		"cannot %s the sealing key at rest: %s; it stays as it was",
		want ? "bind" : "unbind", h->seal_error);
}

/* The binder: takes the latest request, does it, and waits for the next. */
static void *binder(void *arg)
{
	nkp_hostd *h = arg;
	const nkpi_atrest_opts o = {.dir = h->state_dir, .tpm = h->tpm_tcti};

	pthread_mutex_lock(&h->seal_lock);
	for (;;) {
		Nkp__Atrest__SealPolicy *p = NULL;
		uint8_t d[NKPI_SEAL_POLICY_DIGEST_BYTES];
		char *not_revoked = NULL;
		nkp_err err;

		while (!h->seal_stop && !h->seal_pending) {
			pthread_cond_wait(&h->seal_cond, &h->seal_lock);
		}
		if (h->seal_stop) {
			break;
		}
		h->seal_pending = false;
		memcpy(d, h->seal_pending_digest, sizeof(d));
		if (h->seal_pending_policy != NULL) {
			p = nkp__atrest__seal_policy__unpack(NULL, h->seal_pending_len,
							     h->seal_pending_policy);
		}
		if (h->seal_pending_policy != NULL && p == NULL) {
			snprintf(h->seal_error, sizeof(h->seal_error), "%s",
				 nkp_strerror(NKP_ERR_NOMEM));
			continue;
		}
		if (!wanted(h, p, d)) {
			nkp__atrest__seal_policy__free_unpacked(p, NULL);
			continue;
		}
		h->seal_busy = true;
		pthread_mutex_unlock(&h->seal_lock);
		pthread_mutex_lock(&h->tpm_lock);
		err = h->atrest != NKPI_ATREST_TPM
			      ? NKP_ERR_STATE
			      : nkpi_atrest_bind(&o, h->seal_key, p, &not_revoked);
		pthread_mutex_unlock(&h->tpm_lock);
		pthread_mutex_lock(&h->seal_lock);
		h->seal_busy = false;
		settle(h, p, d, err, not_revoked);
		free(not_revoked);
		nkp__atrest__seal_policy__free_unpacked(p, NULL);
		pthread_cond_broadcast(&h->seal_cond);
	}
	pthread_mutex_unlock(&h->seal_lock);
	return NULL;
}

void hostd_seal_request(nkp_hostd *h, const Nkp__Atrest__SealPolicy *p, bool unbind)
{
	uint8_t d[NKPI_SEAL_POLICY_DIGEST_BYTES] = {0};
	uint8_t *packed = NULL;
	size_t len = 0;

	if (p == NULL && !unbind) {
		return;
	}
	if (p != NULL) {
		len = nkp__atrest__seal_policy__get_packed_size(p);
		packed = malloc(len + 1);
		if (packed == NULL || nkpi_seal_policy_digest(p, d) != NKP_OK) {
			free(packed);
			return; /* asked again at a later Hello */
		}
		nkp__atrest__seal_policy__pack(p, packed);
	}
	pthread_mutex_lock(&h->seal_lock);
	if (!wanted(h, p, d) || h->seal_stop) {
		pthread_mutex_unlock(&h->seal_lock);
		free(packed);
		return;
	}
	free(h->seal_pending_policy);
	h->seal_pending_policy = packed;
	h->seal_pending_len = len;
	memcpy(h->seal_pending_digest, d, sizeof(d));
	h->seal_pending = true;
	if (!h->seal_thread_up) {
		h->seal_thread_up = pthread_create(&h->seal_thread, NULL, binder, h) == 0;
		if (!h->seal_thread_up) {
			h->seal_pending = false;
			snprintf(h->seal_error, sizeof(h->seal_error), "%s",
				 nkp_strerror(NKP_ERR_NOMEM));
		}
	}
	pthread_cond_broadcast(&h->seal_cond);
	pthread_mutex_unlock(&h->seal_lock);
}

void hostd_seal_state(nkp_hostd *h, bool *bound, uint8_t digest[NKPI_SEAL_POLICY_DIGEST_BYTES],
		      char *error, size_t error_size)
{
	pthread_mutex_lock(&h->seal_lock);
	*bound = h->seal_bound;
	memcpy(digest, h->seal_digest, NKPI_SEAL_POLICY_DIGEST_BYTES);
	snprintf(error, error_size, "%s", h->seal_error);
	pthread_mutex_unlock(&h->seal_lock);
}

void hostd_seal_idle(nkp_hostd *h)
{
	pthread_mutex_lock(&h->seal_lock);
	while (h->seal_thread_up && (h->seal_pending || h->seal_busy)) {
		pthread_cond_wait(&h->seal_cond, &h->seal_lock);
	}
	pthread_mutex_unlock(&h->seal_lock);
}

void hostd_seal_stop(nkp_hostd *h)
{
	bool up;

	pthread_mutex_lock(&h->seal_lock);
	h->seal_stop = true;
	up = h->seal_thread_up;
	pthread_cond_broadcast(&h->seal_cond);
	pthread_mutex_unlock(&h->seal_lock);
	if (up) {
		pthread_join(h->seal_thread, NULL);
	}
	free(h->seal_pending_policy);
	h->seal_pending_policy = NULL;
}
