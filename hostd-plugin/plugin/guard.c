/* Unauthenticated input costs a counter, not an event or a reply: anyone
 * who reaches the port could otherwise fill the disk with events and the
 * network with answers. One summary event at most per
 * HOSTD_GUARD_SUMMARY_MS (a token bucket holding one token) says how many
 * frames were dropped and why; `nkp-hostctl status` shows the totals. */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "guard.h"
#include "hostd-internal.h"

/* Never 0: 0 means "not yet" below. */
static uint64_t now_ms(void)
{
	return nkpi_mono_ms() + 1u;
}

static enum hguard_reason reason(nkp_err why)
{
	switch (why) {
	case NKP_ERR_PARSE:
	case NKP_ERR_FORMAT_VERSION:
	case NKP_ERR_TOO_LARGE:
	case NKP_ERR_REFUSED:
		return HGUARD_UNREADABLE;
	case NKP_ERR_UNTRUSTED_PEER:
		return HGUARD_OTHER_SENDER;
	case NKP_ERR_AUTH:
	case NKP_ERR_CRYPTO:
		return HGUARD_FAILED_AUTH;
	case NKP_ERR_REPLAY:
		return HGUARD_REPLAYED;
	default:
		return HGUARD_OTHER;
	}
}

/* Emits the summary of what is pending; the caller won the token. */
static void summary(nkp_hostd *h, uint64_t now)
{
	hostd_guard *g = &h->guard;
	uint64_t n[HGUARD__COUNT], total = 0;
	uint64_t first = atomic_exchange(&g->first_ms, 0);

	for (size_t i = 0; i < HGUARD__COUNT; i++) {
		n[i] = atomic_exchange(&g->pending[i], 0);
		total += n[i];
	}
	if (total == 0) {
		return;
	}
	nkp_event(h->events, NKP_EV_BAD_INPUT, NULL, h->host_name,
		  "%" PRIu64 " unauthenticated frames dropped without a reply in the last %" PRIu64
		  " s (%" PRIu64 " unreadable, %" PRIu64 " from another sender, %" PRIu64
		  " failing authentication, %" PRIu64 " replayed, %" PRIu64
		  " other); at most one such summary a minute",
		  total, first == 0 || now < first ? 0 : (now - first) / 1000u + 1u,
		  n[HGUARD_UNREADABLE], n[HGUARD_OTHER_SENDER], n[HGUARD_FAILED_AUTH],
		  n[HGUARD_REPLAYED], n[HGUARD_OTHER]);
}

/* Takes the token if one has been earned since the last summary. */
static bool take_token(hostd_guard *g, uint64_t now)
{
	uint64_t since = atomic_load(&g->since_ms);

	if (since != 0 && now - since < HOSTD_GUARD_SUMMARY_MS) {
		return false;
	}
	return atomic_compare_exchange_strong(&g->since_ms, &since, now);
}

void hostd_guard_dropped(nkp_hostd *h, nkp_err why)
{
	hostd_guard *g = &h->guard;
	uint64_t now = now_ms(), zero = 0;

	atomic_fetch_add(&g->dropped, 1);
	atomic_fetch_add(&g->pending[reason(why)], 1);
	atomic_compare_exchange_strong(&g->first_ms, &zero, now);
	if (take_token(g, now)) {
		summary(h, now);
	}
}

void hostd_guard_flush(nkp_hostd *h)
{
	uint64_t now = now_ms();

	if (atomic_load(&h->guard.first_ms) != 0 && take_token(&h->guard, now)) {
		summary(h, now);
	}
}

void hostd_guard_final(nkp_hostd *h)
{
	summary(h, now_ms());
}

void hostd_guard_conn_refused(nkp_hostd *h)
{
	atomic_fetch_add(&h->guard.refused_conns, 1);
}

void hostd_guard_conn_closed(nkp_hostd *h)
{
	atomic_fetch_add(&h->guard.closed_conns, 1);
}
