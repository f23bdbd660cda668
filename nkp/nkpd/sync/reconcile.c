/* The host sync engine (docs/PROTOCOL.md "Reconciler").
 *
 * One nng REQ socket per enrolled host, dialled without blocking; one
 * nng_aio per host drives its exchanges as a small state machine
 * (IDLE -> PREPARING -> SENDING -> RECEIVING -> IDLE) from nng's callback
 * threads. Picking a host only reserves it (under nkpd_svc.lock); its wake aio
 * then fires at once on an nng callback thread, which seals and sends, so
 * the sealing of a round is spread over every core. Hosts are picked by a
 * timer every TICK_MS (heartbeats, retries), at once by a kick when the
 * desired state changes, and by the exchange that frees a slot while due
 * hosts wait for one; the timer skips its scan until the earliest due
 * time. Send and receive deadlines are kept here and enforced by the tick
 * (nng_aio_cancel), not with nng aio timeouts: nng 1.5 rescans every
 * pending aio with a timeout whenever one is added, which at thousands of
 * hosts cost more than all our bookkeeping. Rotations are checked on each
 * tick, and at once when the last host catches up with the current
 * generation. Sealing and opening frames happen outside nkpd_svc.lock, in a
 * per-thread locked buffer (no sodium_malloc per message); only the
 * bookkeeping takes the lock. No thread per host. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "session.h"
#include "sync/engine.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

static nkp_err sync_host_added(void *ctx, nkpd_host *h);
static void rec_bury(struct reconciler *rec, nkpd_host *h);
void nkpd_sync_host_resume(nkpd_svc *s, nkpd_host *h, uint64_t in_ms)
{
	uint64_t at = nkpi_mono_ms() + in_ms;

	if (h->link != NULL && h->link->next_due_ms > at) {
		nkpd_sync_set_due(s, h, at);
	}
}

static void sync_host_release(void *ctx, nkpd_host *h);
static bool needs_push(const nkpd_svc *s, const nkpd_host *h);
static nkp_err sync_host_wipe(void *ctx, nkpd_host *h, bool on);
static bool sync_host_wiped(void *ctx, const nkpd_host *h);
static void sync_host_resync(void *ctx, nkpd_host *h);
static void prepare(nkpd_svc *s, nkpd_host *h);
static size_t pick_due(nkpd_svc *s, nkpd_host **list, size_t max);
static void dispatch_now(nng_aio *aio);
static void start_list(nkpd_host **list, size_t n);
static size_t pick_all(nkpd_svc *s, nkpd_host **list);
static void kick_cb(void *arg);
static size_t find_overdue(nkpd_svc *s);
static void tick_cb(void *arg);
static nkp_err on_commit(nkpd_svc *s, void *arg);

void nkpd_sync_set_due(nkpd_svc *s, nkpd_host *h, uint64_t due_ms)
{
	h->link->next_due_ms = due_ms;
	if (s->rec != NULL && due_ms < s->rec->next_wake_ms) {
		s->rec->next_wake_ms = due_ms;
	}
}

static nkp_err sync_host_added(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;
	nkp_err err;

	nkpd_sync_link_attach(s, h);
	err = nkpd_sync_host_open(s, h);
	if (err == NKP_OK && s->rec != NULL) {
		s->rec->behind += !nkpd_host_current(s, h);
		nkpd_sync_set_due(s, h, 0);
		nkpd_sync_kick(s);
	}
	return err;
}

static void rec_bury(struct reconciler *rec, nkpd_host *h)
{
	nkpd_host **d = realloc(rec->dead, (rec->n_dead + 1) * sizeof(*d));

	if (d != NULL) {
		rec->dead = d;
		rec->dead[rec->n_dead++] = h;
	}
	/* Out of memory: leak the host rather than free it under a callback. */
}

/* nng 1.5.2 wedges for good when a connection is closed on our side just
 * as a reply header arrives on it (docs/PROTOCOL.md, "nng's reaper
 * wedge"): after that no nng_close() in the process returns. A socket is
 * therefore closed once no request is in flight on it, waiting at most
 * QUIET_WAIT_MS (an exchange's whole deadline) with the lock released.
 * Lock held; `h` NULL: every host. */
#define QUIET_WAIT_MS (SEND_TIMEOUT_MS + RECV_TIMEOUT_MS)

static bool busy(const nkpd_svc *s, const nkpd_host *h)
{
	if (h != NULL) {
		return h->link != NULL && h->link->io != IO_IDLE;
	}
	return s->rec != NULL && s->rec->inflight > 0;
}

static void wait_quiet(nkpd_svc *s, const nkpd_host *h)
{
	for (unsigned waited = 0; busy(s, h) && waited < QUIET_WAIT_MS; waited += 10) {
		pthread_mutex_unlock(&s->lock);
		nng_msleep(10);
		pthread_mutex_lock(&s->lock);
	}
}

bool nkpd_sync_host_quiet(nkpd_svc *s, nkpd_host *h, uint64_t hold_ms)
{
	(void)s;
	if (busy(s, h)) {
		return false;
	}
	/* Held back, never brought forward. */
	if (h->link != NULL && h->link->next_due_ms < nkpi_mono_ms() + hold_ms) {
		h->link->next_due_ms = nkpi_mono_ms() + hold_ms;
	}
	return true;
}

static void sync_host_release(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;

	pthread_mutex_lock(&s->lock);
	h->link->removed = true;
	h->link->next_due_ms = UINT64_MAX;
	wait_quiet(s, h);
	if (s->rec != NULL) {
		if (!nkpd_host_current(s, h) && s->rec->behind > 0) {
			s->rec->behind--;
		}
		rec_bury(s->rec, h);
	}
	pthread_mutex_unlock(&s->lock);
	if (h->link->sock_open) {
		nng_close(h->link->sock);
	}
}

/* ---- scheduling ---- */

void nkpd_sync_set_pushed(nkpd_host *h, nkpd_desired *d)
{
	if (h->link->pushed_snap != d) {
		atomic_fetch_add(&d->refs, 1);
		nkpd_desired_release(h->link->pushed_snap);
		h->link->pushed_snap = d;
	}
}

/* A push carries resync while the operator asked for it, to a host
 * being removed (whose pair does not matter any more), and to one whose
 * trust changed (the same pair, other contents). */
bool nkpd_sync_wants_resync(const nkpd_host *h)
{
	return h->st.resync || h->wipe_snap != NULL || h->att.scope_resync;
}

/* A host in conflict is pushed nothing until the operator resolves it:
 * pushing would only be refused, and nothing it reports is adopted. */
static bool needs_push(const nkpd_svc *s, const nkpd_host *h)
{
	const nkpd_desired *d = nkpd_host_snap(s, h);

	return h->st.have_nonce && d != NULL && !nkpd_host_has(h, d) &&
	       (!h->st.conflict || nkpd_sync_wants_resync(h));
}

static nkp_err sync_host_wipe(void *ctx, nkpd_host *h, bool on)
{
	nkpd_svc *s = ctx;
	nkpd_desired *d = NULL;
	nkp_err err;

	if (on) {
		d = calloc(1, sizeof(*d));
		if (d == NULL) {
			return NKP_ERR_NOMEM;
		}
		atomic_init(&d->refs, 1);
		/* Our own pair: the push carries resync, so the host takes it
		 * whatever it holds. */
		d->epoch = s->epoch;
		d->generation = s->generation;
		err = nkpd_sync_desired_pack(d);
		if (err != NKP_OK) {
			nkpd_desired_release(d);
			return err;
		}
		nkpd_sync_set_due(s, h, 0);
	} else {
		/* It may hold the empty state under our current pair: only a
		 * resync brings it back. */
		h->st.resync = true;
	}
	nkpd_desired_release(h->wipe_snap);
	h->wipe_snap = d;
	if (on) {
		nkpd_sync_kick(s);
	}
	return NKP_OK;
}

static bool sync_host_wiped(void *ctx, const nkpd_host *h)
{
	(void)ctx;
	return h->wipe_snap != NULL && h->st.health == HEALTH_OK && nkpd_host_has(h, h->wipe_snap);
}

static void sync_host_resync(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;

	h->st.resync = true;
	nkp_event(s->events, NKP_EV_HOST_CONFLICT, NULL, h->conf.name,
		  "host %s: resync requested by the operator; the next push replaces whatever "
		  "generation it holds",
		  h->conf.name);
	nkpd_sync_set_due(s, h, 0);
	nkpd_sync_kick(s);
}

static void sync_host_scope_changed(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;

	nkpd_sync_set_due(s, h, 0);
	nkpd_sync_kick(s);
}

/* Lock held, preparing a Hello to `h`: the policy when the host asked for
 * it (the operator's `host seal-policy on`) and reports another binding;
 * resent only with a quote request (each attest-interval, and after a
 * restart) once this very policy was sent, since a host that could not
 * bind it says why in its Status. An unbind while it reports a binding and
 * the operator turned the policy off. */
static void seal_prepare(nkpd_svc *s, nkpd_host *h)
{
	const nkpd_sealpol *p = s->sealpol;
	bool current;

	nkpd_sealpol_release(h->link->hello_pol);
	h->link->hello_pol = NULL;
	h->link->hello_unbind = false;
	if (h->conf.ak_len == 0) {
		return;
	}
	if (!h->conf.seal_policy) {
		h->link->hello_unbind = h->st.seal_bound;
		return;
	}
	current = p != NULL && h->st.seal_bound &&
		  sodium_memcmp(h->st.seal_digest, p->digest, sizeof(p->digest)) == 0;
	if (p == NULL || current) {
		return;
	}
	if (h->st.seal_sent && memcmp(h->st.seal_sent_digest, p->digest, sizeof(p->digest)) == 0 &&
	    !h->link->attest_asked) {
		return;
	}
	h->link->hello_pol = s->sealpol;
	atomic_fetch_add(&s->sealpol->refs, 1);
	memcpy(h->st.seal_sent_digest, p->digest, sizeof(p->digest));
	h->st.seal_sent = true;
}

/* Lock held. Chooses the request and reserves the host's slot: a quote
 * when one is due comes first (a host back from an outage is attested
 * again before it is pushed a state without its trusted providers). */
static void prepare(nkpd_svc *s, nkpd_host *h)
{
	randombytes_buf(h->link->challenge, sizeof(h->link->challenge));
	nkpd_desired_release(h->link->push_snap);
	h->link->push_snap = NULL;
	h->link->attest_asked = false;
	h->link->ek_asked = false;
	h->link->activating = false;
	nkpd_attest_check_age(s, h);
	/* A wipe of trusted providers waits for nothing, a quote least. */
	if (h->link->chained == 0 && nkpd_attest_due(s, h) &&
	    !(h->att.scope_resync && needs_push(s, h))) {
		h->link->req = REQ_HELLO;
		h->link->attest_asked = true;
		h->link->ek_asked = h->att.proof == AK_NEED_EK;
		h->link->activating = h->att.proof == AK_NEED_ACTIVATION;
		h->link->attest_pcrs = s->attest_pcrs;
		randombytes_buf(h->link->attest_nonce, sizeof(h->link->attest_nonce));
		/* Not asked again before the answer (or its failure) says when. */
		h->att.due_ms = nkpi_mono_ms() + s->attest_interval_ms;
	} else if (needs_push(s, h)) {
		h->link->req = REQ_PUSH;
		h->link->push_snap = nkpd_host_snap(s, h);
		atomic_fetch_add(&h->link->push_snap->refs, 1);
		h->link->push_generation = h->link->push_snap->generation;
		h->link->push_resync = nkpd_sync_wants_resync(h);
		nkpd_sync_set_pushed(h, h->link->push_snap);
		memcpy(h->link->push_nonce, h->st.boot_nonce, sizeof(h->link->push_nonce));
	} else {
		h->link->req = REQ_HELLO;
	}
	if (h->link->req == REQ_HELLO) {
		seal_prepare(s, h);
	} else {
		nkpd_sealpol_release(h->link->hello_pol);
		h->link->hello_pol = NULL;
		h->link->hello_unbind = false;
	}
	h->st.prepared_round = s->usage_round;
	h->link->rekey_failed = false; /* a new request: its own rekey attempt */
	h->link->io = IO_PREPARING;
}

/* Lock held. Picks up to `max` due hosts, round robin from the cursor,
 * and notes whether any may still wait (starved) and when the next idle
 * host falls due. */
static size_t pick_due(nkpd_svc *s, nkpd_host **list, size_t max)
{
	struct reconciler *rec = s->rec;
	uint64_t now = nkpi_mono_ms();
	uint64_t wake = UINT64_MAX;
	size_t n = 0, k = 0;

	rec->starved = false;
	for (; k < s->n_hosts; k++) {
		nkpd_host *h = s->hosts[(rec->cursor + k) % s->n_hosts];

		if (h->link->io != IO_IDLE || !h->link->sock_open) {
			continue;
		}
		if (h->link->next_due_ms > now) {
			wake = h->link->next_due_ms < wake ? h->link->next_due_ms : wake;
			continue;
		}
		if (n == max || rec->inflight >= rec->max_inflight) {
			rec->starved = true;
			break;
		}
		prepare(s, h);
		rec->inflight++;
		list[n++] = h;
	}
	if (s->n_hosts > 0) {
		rec->cursor = (rec->cursor + k) % s->n_hosts;
	}
	/* A partial scan knows nothing of the hosts it did not reach. */
	rec->next_wake_ms = rec->starved ? 0 : wake;
	return n;
}

/* Runs `aio`'s callback at once on one of nng's task threads. Not
 * nng_sleep_aio(0): nng 1.5 routes sleeps through its single expire
 * thread, whose strict "expired before now" test makes it spin on the
 * clock until the next millisecond for a 0 ms sleep (44 % of nkpd's CPU
 * during rotations at 2,500 hosts). If the aio is being stopped nothing
 * runs, which only happens at shutdown. */
static void dispatch_now(nng_aio *aio)
{
	if (nng_aio_begin(aio)) {
		nng_aio_finish(aio, 0);
	}
}

/* Without the lock: each picked host's wake aio fires at once on an nng
 * callback thread, which seals and sends (wake_cb). */
static void start_list(nkpd_host **list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		dispatch_now(list[i]->link->wake);
	}
}

#define REFILL_MAX 4

/* Called without the lock when an exchange ended and freed its slot:
 * starts a few due hosts at once rather than at the next tick, so a round
 * over many hosts is not paced by the timer. Scans only while due hosts
 * wait for a slot. */
void nkpd_sync_refill(nkpd_svc *s)
{
	nkpd_host *list[REFILL_MAX];
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	if (s->rec != NULL && !s->rec->stopping && s->rec->starved) {
		n = pick_due(s, list, REFILL_MAX);
	}
	pthread_mutex_unlock(&s->lock);
	start_list(list, n);
}

/* Lock held: has the kick aio pick due hosts at once. */
void nkpd_sync_kick(nkpd_svc *s)
{
	struct reconciler *rec = s->rec;

	if (rec == NULL || rec->stopping || rec->kick_pending) {
		return;
	}
	rec->kick_pending = true;
	rec->next_wake_ms = 0;
	dispatch_now(rec->kick);
}

/* Lock held. Picks every due host into `list` (max_inflight entries),
 * unless none can be due yet. */
static size_t pick_all(nkpd_svc *s, nkpd_host **list)
{
	struct reconciler *rec = s->rec;

	if (nkpi_mono_ms() < rec->next_wake_ms) {
		return 0;
	}
	return pick_due(s, list, rec->max_inflight);
}

static void kick_cb(void *arg)
{
	nkpd_svc *s = arg;
	struct reconciler *rec = s->rec;
	nkpd_host **list = malloc((rec->max_inflight + 1) * sizeof(*list));
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	rec->kick_pending = false;
	if (!rec->stopping && nng_aio_result(rec->kick) == 0 && list != NULL) {
		n = pick_all(s, list);
	}
	pthread_mutex_unlock(&s->lock);
	start_list(list, n);
	free(list);
}

void nkpd_sync_set_deadline(nkpd_svc *s, nkpd_host *h, uint64_t ms)
{
	h->link->deadline_ms = nkpi_mono_ms() + ms;
	if (s->rec != NULL && h->link->deadline_ms < s->rec->min_deadline_ms) {
		s->rec->min_deadline_ms = h->link->deadline_ms;
	}
}

/* Lock held. Marks the requests past their deadline (at most
 * max_inflight: only those in flight can be) into rec->overdue. */
static size_t find_overdue(nkpd_svc *s)
{
	struct reconciler *rec = s->rec;
	uint64_t now = nkpi_mono_ms();
	uint64_t next = UINT64_MAX;
	size_t n = 0;

	if (rec->inflight == 0 || now < rec->min_deadline_ms) {
		return 0;
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_host *h = s->hosts[i];

		if ((h->link->io != IO_SENDING && h->link->io != IO_RECEIVING) ||
		    h->link->timed_out) {
			continue;
		}
		if (h->link->deadline_ms <= now && n < rec->max_inflight) {
			h->link->timed_out = true;
			rec->overdue[n++] = h;
		} else if (h->link->deadline_ms < next) {
			next = h->link->deadline_ms;
		}
	}
	rec->min_deadline_ms = next;
	return n;
}

static void tick_cb(void *arg)
{
	nkpd_svc *s = arg;
	struct reconciler *rec = s->rec;
	size_t n = 0, n_overdue;

	pthread_mutex_lock(&s->lock);
	if (rec->stopping || nng_aio_result(rec->timer) == NNG_ECANCELED) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	nkpd_provider_rotation_tick(s);
	(void)nkpd_state_stamp_reserve(s); /* logged once; retried every tick */
	n_overdue = find_overdue(s);
	n = pick_all(s, rec->list);
	pthread_mutex_unlock(&s->lock);
	/* A request that ended between the unlock and here may see the next
	 * one cancelled: it counts as one failure and is retried. */
	for (size_t i = 0; i < n_overdue; i++) {
		nng_aio_cancel(rec->overdue[i]->link->aio);
	}
	start_list(rec->list, n);
	nng_sleep_aio(TICK_MS, rec->timer);
}

nkp_err nkpd_sync_changed(nkpd_svc *s)
{
	nkpd_desired *d = NULL, *dt = NULL;
	nkp_err err = nkpd_sync_desired_build(s, false, &d);

	/* Without trusted providers both scopes are the same snapshot. */
	if (err == NKP_OK && nkpd_model_has_trusted(s)) {
		err = nkpd_sync_desired_build(s, true, &dt);
	} else if (err == NKP_OK) {
		dt = d;
		atomic_fetch_add(&d->refs, 1);
	}
	if (err != NKP_OK) {
		nkpd_desired_release(d);
		nkp_log(NKP_LOG_ERR, "NKPD-SNAPSHOT", "cannot build the desired state: %s",
			nkp_strerror(err));
		return err;
	}
	nkpd_desired_release(s->snap);
	s->snap = d;
	nkpd_desired_release(s->snap_trusted);
	s->snap_trusted = dt;
	if (s->rec != NULL) {
		s->rec->behind = 0;
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		struct nkpd_link *l = s->hosts[i]->link;

		/* No link: no engine runs (unit tests following commits). */
		if (l != NULL) {
			l->next_due_ms = 0;
			l->chained = 0;
		}
		if (s->rec != NULL) {
			s->rec->behind += !nkpd_host_current(s, s->hosts[i]);
		}
	}
	nkpd_sync_kick(s);
	return NKP_OK;
}

static nkp_err on_commit(nkpd_svc *s, void *arg)
{
	(void)arg;
	return nkpd_sync_changed(s);
}

nkp_err nkpd_sync_follow(nkpd_svc *s)
{
	nkpd_state_unsubscribe(s, on_commit, NULL);
	nkpd_state_subscribe(s, on_commit, NULL);
	return nkpd_sync_changed(s);
}

nkp_err nkpd_sync_start(nkpd_svc *s)
{
	struct reconciler *rec = calloc(1, sizeof(*rec));
	nkp_err err = NKP_OK;

	if (rec == NULL) {
		return NKP_ERR_NOMEM;
	}
	rec->max_inflight = DEFAULT_INFLIGHT;
	rec->list = calloc(rec->max_inflight + 1, sizeof(*rec->list));
	rec->overdue = calloc(rec->max_inflight + 1, sizeof(*rec->overdue));
	if (rec->list == NULL || rec->overdue == NULL ||
	    nng_aio_alloc(&rec->timer, tick_cb, s) != 0) {
		free(rec->overdue);
		free(rec->list);
		free(rec);
		return NKP_ERR_NOMEM;
	}
	if (nng_aio_alloc(&rec->kick, kick_cb, s) != 0) {
		nng_aio_free(rec->timer);
		free(rec->overdue);
		free(rec->list);
		free(rec);
		return NKP_ERR_NOMEM;
	}
	rec->sync = (nkpd_sync){
		.ctx = s,
		.host_added = sync_host_added,
		.host_wipe = sync_host_wipe,
		.host_wiped = sync_host_wiped,
		.host_release = sync_host_release,
		.host_resync = sync_host_resync,
		.host_scope_changed = sync_host_scope_changed,
		.usage_round = nkpd_sync_usage_round,
	};
	pthread_mutex_lock(&s->lock);
	s->rec = rec;
	s->sync = &rec->sync;
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_sync_link_attach(s, s->hosts[i]);
	}
	err = nkpd_sync_follow(s);
	for (size_t i = 0; i < s->n_hosts && err == NKP_OK; i++) {
		err = nkpd_sync_host_open(s, s->hosts[i]);
		if (err != NKP_OK) {
			nkp_log(NKP_LOG_ERR, "NKPD-HOST-OPEN", "host %s (%s): cannot set up: %s",
				s->hosts[i]->conf.name, s->hosts[i]->conf.address,
				nkp_strerror(err));
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (err == NKP_OK) {
		dispatch_now(rec->timer);
	}
	return err;
}

void nkpd_sync_stop(nkpd_svc *s)
{
	struct reconciler *rec = s->rec;

	if (rec == NULL) {
		return;
	}
	pthread_mutex_lock(&s->lock);
	rec->stopping = true;
	s->sync = NULL;
	nkpd_state_unsubscribe(s, on_commit, NULL);
	wait_quiet(s, NULL); /* the timer still enforces the deadlines */
	pthread_mutex_unlock(&s->lock);
	nng_aio_stop(rec->timer);
	nng_aio_free(rec->timer);
	nng_aio_stop(rec->kick);
	nng_aio_free(rec->kick);
	for (size_t i = 0; i < s->n_hosts; i++) {
		nkpd_sync_host_shutdown(s->hosts[i]);
		nkpd_sync_link_free(s->hosts[i]);
	}
	for (size_t i = 0; i < rec->n_dead; i++) {
		nkpd_sync_host_shutdown(rec->dead[i]);
		nkpd_sync_link_free(rec->dead[i]);
		nkpd_model_host_free(rec->dead[i]);
	}
	free(rec->dead);
	free(rec->list);
	free(rec->overdue);
	nkpd_desired_release(s->snap);
	s->snap = NULL;
	nkpd_desired_release(s->snap_trusted);
	s->snap_trusted = NULL;
	s->rec = NULL;
	free(rec);
}

/* Lock held. Ends the exchange: either chains a push at once (returns
 * true: the caller starts it outside the lock) or frees the slot. */
bool nkpd_sync_next_step(nkpd_svc *s, nkpd_host *h)
{
	struct reconciler *rec = s->rec;

	if (!rec->stopping && !h->link->removed && h->st.health == HEALTH_OK && needs_push(s, h) &&
	    h->link->chained < MAX_CHAINED) {
		h->link->chained++;
		prepare(s, h);
		return true;
	}
	h->link->io = IO_IDLE;
	rec->inflight--;
	nkpd_desired_release(h->link->push_snap);
	h->link->push_snap = NULL;
	if (h->st.health == HEALTH_OK) {
		h->link->chained = 0;
		/* Asked in a usage round by a request made before it: again now. */
		uint64_t due = nkpi_mono_ms() + s->heartbeat_ms;

		/* A quote due before the next heartbeat is asked for then. */
		if (h->conf.ak_len != 0 && h->att.due_ms < due) {
			due = h->att.due_ms;
		}
		nkpd_sync_set_due(s, h, nkpd_sync_round_pending(s, h) ? 0 : due);
	} else {
		nkpd_sync_set_due(s, h, nkpi_mono_ms() + nkpd_sync_backoff_ms(h->st.failures));
	}
	return false;
}
