/* Usage rounds: before a retire or delete, every reachable host is asked
 * for its usage at once and the caller waits (the lock released) for the
 * answers. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "session.h"
#include "sync/engine.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

/* ---- completing requests ---- */

/* The host was asked in the current usage round and has neither answered
 * nor failed since. */
bool nkpd_sync_round_pending(const nkpd_svc *s, const nkpd_host *h)
{
	return s->usage_round != 0 && h->st.asked_round == s->usage_round &&
	       h->st.answered_round != s->usage_round && h->st.failed_round != s->usage_round;
}

size_t nkpd_sync_usage_round(void *ctx, uint64_t timeout_ms)
{
	nkpd_svc *s = ctx;
	struct timespec until;
	uint64_t round, pending = 0, missing = 0;

	if (s->rec == NULL || s->rec->stopping) {
		return 0;
	}
	round = ++s->usage_round;
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_host *h = s->hosts[i];

		if (h->link->removed || h->st.health != HEALTH_OK || !h->link->sock_open) {
			continue;
		}
		h->st.asked_round = round;
		if (h->link->io == IO_IDLE) {
			nkpd_sync_set_due(s, h, 0);
		}
	}
	nkpd_sync_kick(s);
	until = nkpi_mono_timespec(nkpi_mono_ms() + timeout_ms);
	do {
		pending = 0;
		for (size_t i = 0; i < s->n_hosts; i++) {
			pending += nkpd_sync_round_pending(s, s->hosts[i]);
		}
	} while (pending > 0 && s->usage_round == round &&
		 pthread_cond_timedwait(&s->round_cond, &s->lock, &until) == 0);
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		missing += h->st.asked_round == round && h->st.answered_round != round;
	}
	return missing;
}
