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
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "session.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

#define TICK_MS 50
#define SEND_TIMEOUT_MS 2000
#define RECV_TIMEOUT_MS 3000
#define BACKOFF_MIN_MS 500u
#define BACKOFF_MAX_MS 30000u
#define MAX_CHAINED 3u
#define MAX_USAGE 4096u
#define DEFAULT_INFLIGHT 1024u

typedef enum host_io {
	IO_IDLE = 0,
	IO_PREPARING, /* picked; its wake aio fires on an nng thread to seal and send */
	IO_SENDING,
	IO_RECEIVING,
} host_io;

typedef enum host_req {
	REQ_HELLO = 0,
	REQ_PUSH,
} host_req;

/* The live side of a host: its socket, its exchange in flight, its Noise
 * session. Made when the host is first set up here and freed at stop
 * (a removed host's at stop too: a callback may still hold it). */
struct nkpd_link {
	nkpd_svc *svc;
	struct nkpi_session *sess; /* Noise session (initiator): one exchange at a time */
	bool handshaking;	   /* the frame in flight is a HandshakeInit */
	bool rekey_failed;	   /* this request goes under the current session */
	bool pipe_new;		   /* a reconnected pipe: handshake before the next request */
	bool had_pipe;		   /* a pipe was up before */
	bool repipe;		   /* the request in flight was cancelled for a new pipe */
	nng_socket sock;
	bool sock_open;
	nng_aio *aio;
	nng_aio *wake; /* dispatched at once: seals and sends on an nng thread */
	host_io io;
	host_req req;	      /* the request in flight: set before io leaves IDLE */
	uint64_t deadline_ms; /* the request in flight fails after this */
	bool timed_out;	      /* its aio was cancelled for the deadline */
	uint8_t challenge[16];
	uint8_t push_nonce[16];
	uint64_t push_generation;
	struct nkpd_desired *push_snap;
	/* The last desired state sent to (or found held by) this host: its
	 * usage reports count only for the versions in it. */
	struct nkpd_desired *pushed_snap;
	unsigned chained; /* immediate re-pushes in a row (restart races) */
	bool removed;
	bool push_resync; /* the push in flight carries resync */
	uint64_t next_due_ms;
};

struct reconciler {
	nng_aio *timer;
	nng_aio *kick; /* picks due hosts at once after a change */
	bool kick_pending;
	bool stopping;
	unsigned inflight;
	unsigned max_inflight;
	size_t cursor;
	bool starved;		  /* due hosts may be waiting for a free slot */
	uint64_t next_wake_ms;	  /* no idle host is due before this */
	size_t behind;		  /* hosts below the current generation (a hint) */
	uint64_t min_deadline_ms; /* no request in flight is overdue before this */
	nkpd_host **list;	  /* max_inflight entries, for the tick */
	nkpd_host **overdue;	  /* max_inflight entries, for the tick */
	size_t n_dead;
	nkpd_host **dead; /* removed hosts, freed at stop */
	nkpd_sync sync;	  /* what the core calls, as nkpd_svc.sync */
};

static void host_cb(void *arg);
static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg);
static void wake_cb(void *arg);
static void start_request(nkpd_host *h);
static nkp_err desired_pack(nkpd_desired *d);
static nkp_err sync_host_added(void *ctx, nkpd_host *h);
static void sync_host_release(void *ctx, nkpd_host *h);
static nkp_err sync_host_wipe(void *ctx, nkpd_host *h, bool on);
static bool sync_host_wiped(void *ctx, const nkpd_host *h);
static void sync_host_resync(void *ctx, nkpd_host *h);
static size_t sync_usage_round(void *ctx, uint64_t timeout_ms);

/* ---- desired snapshots ---- */

static nkp_err desired_fill(const nkpd_svc *s, nkpd_desired *d)
{
	size_t ki = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		const nkpd_provider *p = s->providers[i];
		nkpd_desired_provider *dp = &d->providers[i];

		memcpy(dp->id, p->id, NKP_ID_BYTES);
		memcpy(dp->name, p->name, sizeof(dp->name));
		dp->is_default = p->is_default;
		dp->backed_up = p->backed_up;
		dp->tpm_only = p->tpm_only;
		dp->key_index = ki;
		dp->n_versions = p->n_versions;
		dp->versions = calloc(p->n_versions + 1, sizeof(*dp->versions));
		if (dp->versions == NULL) {
			return NKP_ERR_NOMEM;
		}
		for (size_t j = 0; j < p->n_versions; j++, ki++) {
			dp->versions[j].version = p->versions[j].version;
			dp->versions[j].state = (uint32_t)p->versions[j].state;
			dp->versions[j].created_unix = p->versions[j].created_unix;
			nkp_key_export(p->versions[j].key, d->keys + ki * NKP_KEY_BYTES);
		}
	}
	return NKP_OK;
}

static nkp_err desired_build(const nkpd_svc *s, nkpd_desired **out)
{
	nkpd_desired *d = calloc(1, sizeof(*d));
	size_t nk = 0;
	nkp_err err = NKP_ERR_NOMEM;

	if (d == NULL) {
		return NKP_ERR_NOMEM;
	}
	atomic_init(&d->refs, 1);
	for (size_t i = 0; i < s->n_providers; i++) {
		nk += s->providers[i]->n_versions;
	}
	d->epoch = s->epoch;
	d->generation = s->generation;
	d->n_providers = s->n_providers;
	d->n_keys = nk;
	d->providers = calloc(s->n_providers + 1, sizeof(*d->providers));
	d->keys = sodium_malloc((nk + 1) * NKP_KEY_BYTES);
	if (d->providers != NULL && d->keys != NULL) {
		err = desired_fill(s, d);
	}
	if (err == NKP_OK) {
		err = desired_pack(d);
	}
	if (err != NKP_OK) {
		nkpd_desired_release(d);
		return err;
	}
	*out = d;
	return NKP_OK;
}

static uint64_t backoff_ms(unsigned failures)
{
	uint64_t d = BACKOFF_MIN_MS;
	uint32_t span;

	for (unsigned i = 1; i < failures && d < BACKOFF_MAX_MS; i++) {
		d *= 2;
	}
	if (d > BACKOFF_MAX_MS) {
		d = BACKOFF_MAX_MS;
	}
	/* +-25 % jitter so hosts that failed together do not retry together. */
	span = (uint32_t)(d / 2);
	return d - d / 4 + randombytes_uniform(span + 1);
}

/* ---- per-host sockets ---- */

static nkp_err host_open(nkpd_svc *s, nkpd_host *h)
{
	nkp_err err;

	err = nkpi_session_new(s->identity, h->conf.pub, false, &h->link->sess);
	if (err != NKP_OK) {
		return err;
	}
	/* Two aios: `wake` only hands the sealing to an nng thread
	 * (dispatch_now); `aio` runs the exchange itself. */
	if (nng_aio_alloc(&h->link->aio, host_cb, h) != 0 ||
	    nng_aio_alloc(&h->link->wake, wake_cb, h) != 0) {
		return NKP_ERR_NOMEM;
	}
	if (nng_req0_open(&h->link->sock) != 0) {
		return NKP_ERR_NET;
	}
	h->link->sock_open = true;
	nng_socket_set_size(h->link->sock, NNG_OPT_RECVMAXSZ, NKP_FRAME_MAX);
	nng_socket_set_ms(h->link->sock, NNG_OPT_RECONNMINT, 100);
	/* Redial backoff up to the reconciler's own retry cap. Every pending
	 * redial is a timer on nng 1.5's single expire thread, which rescans
	 * them all at each expiry: with 2,500 hosts down and a 2 s cap it used
	 * 160 % of the cores; with 30 s, 25 %. */
	nng_socket_set_ms(h->link->sock, NNG_OPT_RECONNMAXT, (int)BACKOFF_MAX_MS);
	nng_socket_set_ms(h->link->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_pipe_notify(h->link->sock, NNG_PIPE_EV_ADD_POST, pipe_added, h);
	/* Non-blocking: an absent host must not hold anything up; nng keeps
	 * redialling in the background. */
	if (nng_dial(h->link->sock, h->conf.address, NULL, NNG_FLAG_NONBLOCK) != 0) {
		return NKP_ERR_INVALID;
	}
	h->link->next_due_ms = 0;
	return NKP_OK;
}

static void set_due(nkpd_svc *s, nkpd_host *h, uint64_t due_ms)
{
	h->link->next_due_ms = due_ms;
	if (s->rec != NULL && due_ms < s->rec->next_wake_ms) {
		s->rec->next_wake_ms = due_ms;
	}
}

static void kick(nkpd_svc *s);

/* nng: a connection to the host is up (again). A host that was
 * unreachable is contacted at once rather than at the end of its backoff,
 * so a host back from an outage waits only for nng's redial. The host may
 * have restarted and forgotten our session: the next request starts with
 * a handshake, and one in flight (which nng re-sends on the new pipe, where
 * the host would drop it unanswered) starts again that way at once. */
static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	nkpd_host *h = arg;
	nkpd_svc *s = h->link->svc;
	bool cancel = false;

	(void)p;
	(void)ev;
	pthread_mutex_lock(&s->lock);
	if (h->link->had_pipe) {
		h->link->pipe_new = true;
		cancel = h->link->io == IO_SENDING || h->link->io == IO_RECEIVING;
		h->link->repipe = cancel;
	}
	h->link->had_pipe = true;
	if (s->rec != NULL && !s->rec->stopping && !h->link->removed && h->link->io == IO_IDLE &&
	    h->st.health != HEALTH_OK) {
		set_due(s, h, 0);
		kick(s);
	}
	pthread_mutex_unlock(&s->lock);
	if (cancel) {
		nng_aio_cancel(h->link->aio);
	}
}

/* Every host gets its link before anything here touches it; a link is
 * small, and its allocation aborts on exhaustion like a reply's. */
static void link_attach(nkpd_svc *s, nkpd_host *h)
{
	if (h->link == NULL) {
		h->link = nkpd_util_xcalloc(1, sizeof(*h->link));
		h->link->svc = s;
	}
}

static void link_free(nkpd_host *h)
{
	if (h->link != NULL) {
		nkpi_session_free(h->link->sess);
		nkpd_desired_release(h->link->pushed_snap);
		free(h->link);
		h->link = NULL;
	}
}

static nkp_err sync_host_added(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;
	nkp_err err;

	link_attach(s, h);
	err = host_open(s, h);
	if (err == NKP_OK && s->rec != NULL) {
		s->rec->behind += !nkpd_host_current(s, h);
		set_due(s, h, 0);
		kick(s);
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

static void sync_host_release(void *ctx, nkpd_host *h)
{
	nkpd_svc *s = ctx;

	pthread_mutex_lock(&s->lock);
	h->link->removed = true;
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

static void set_pushed(nkpd_host *h, nkpd_desired *d)
{
	if (h->link->pushed_snap != d) {
		atomic_fetch_add(&d->refs, 1);
		nkpd_desired_release(h->link->pushed_snap);
		h->link->pushed_snap = d;
	}
}

/* A push carries resync while the operator asked for it, and to a host
 * being removed (whose pair does not matter any more). */
static bool wants_resync(const nkpd_host *h)
{
	return h->st.resync || h->wipe_snap != NULL;
}

/* A host in conflict is pushed nothing until the operator resolves it:
 * pushing would only be refused, and nothing it reports is adopted. */
static bool needs_push(const nkpd_svc *s, const nkpd_host *h)
{
	const nkpd_desired *d = nkpd_host_snap(s, h);

	return h->st.have_nonce && d != NULL && !nkpd_host_has(h, d) &&
	       (!h->st.conflict || wants_resync(h));
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
		err = desired_pack(d);
		if (err != NKP_OK) {
			nkpd_desired_release(d);
			return err;
		}
		set_due(s, h, 0);
	} else {
		/* It may hold the empty state under our current pair: only a
		 * resync brings it back. */
		h->st.resync = true;
	}
	nkpd_desired_release(h->wipe_snap);
	h->wipe_snap = d;
	if (on) {
		kick(s);
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
	set_due(s, h, 0);
	kick(s);
}

/* Lock held. Chooses the request and reserves the host's slot. */
static void prepare(nkpd_svc *s, nkpd_host *h)
{
	randombytes_buf(h->link->challenge, sizeof(h->link->challenge));
	nkpd_desired_release(h->link->push_snap);
	h->link->push_snap = NULL;
	if (needs_push(s, h)) {
		h->link->req = REQ_PUSH;
		h->link->push_snap = nkpd_host_snap(s, h);
		atomic_fetch_add(&h->link->push_snap->refs, 1);
		h->link->push_generation = h->link->push_snap->generation;
		h->link->push_resync = wants_resync(h);
		set_pushed(h, h->link->push_snap);
		memcpy(h->link->push_nonce, h->st.boot_nonce, sizeof(h->link->push_nonce));
	} else {
		h->link->req = REQ_HELLO;
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
static void refill(nkpd_svc *s)
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
static void kick(nkpd_svc *s)
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

static void set_deadline(nkpd_svc *s, nkpd_host *h, uint64_t ms)
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
	nkpd_desired *d = NULL;
	nkp_err err = desired_build(s, &d);

	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKPD-SNAPSHOT", "cannot build the desired state: %s",
			nkp_strerror(err));
		return err;
	}
	nkpd_desired_release(s->snap);
	s->snap = d;
	if (s->rec != NULL) {
		s->rec->behind = 0;
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		s->hosts[i]->link->next_due_ms = 0;
		s->hosts[i]->link->chained = 0;
		if (s->rec != NULL) {
			s->rec->behind += !nkpd_host_current(s, s->hosts[i]);
		}
	}
	kick(s);
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
		.usage_round = sync_usage_round,
	};
	pthread_mutex_lock(&s->lock);
	s->rec = rec;
	s->sync = &rec->sync;
	err = nkpd_sync_follow(s);
	for (size_t i = 0; i < s->n_hosts; i++) {
		link_attach(s, s->hosts[i]);
	}
	for (size_t i = 0; i < s->n_hosts && err == NKP_OK; i++) {
		err = host_open(s, s->hosts[i]);
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

static void host_shutdown(nkpd_host *h)
{
	if (h->link->sock_open) {
		nng_close(h->link->sock);
	}
	if (h->link->wake != NULL) {
		nng_aio_stop(h->link->wake);
		nng_aio_free(h->link->wake);
		h->link->wake = NULL;
	}
	if (h->link->aio != NULL) {
		nng_aio_stop(h->link->aio);
		nng_aio_free(h->link->aio);
		h->link->aio = NULL;
	}
	nkpd_desired_release(h->link->push_snap);
	h->link->push_snap = NULL;
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
	pthread_mutex_unlock(&s->lock);
	nng_aio_stop(rec->timer);
	nng_aio_free(rec->timer);
	nng_aio_stop(rec->kick);
	nng_aio_free(rec->kick);
	for (size_t i = 0; i < s->n_hosts; i++) {
		host_shutdown(s->hosts[i]);
		link_free(s->hosts[i]);
	}
	for (size_t i = 0; i < rec->n_dead; i++) {
		host_shutdown(rec->dead[i]);
		link_free(rec->dead[i]);
		nkpd_model_host_free(rec->dead[i]);
	}
	free(rec->dead);
	free(rec->list);
	free(rec->overdue);
	nkpd_desired_release(s->snap);
	s->snap = NULL;
	s->rec = NULL;
	free(rec);
}

/* ---- building requests (outside the lock) ---- */

static nkp_err pack_sealed(const nkpd_host *h, const Nkp__Wire__Message *m, uint8_t **frame,
			   size_t *framelen)
{
	size_t len = nkp__wire__message__get_packed_size(m);
	uint8_t *buf = nkpi_scratch(len + 1);
	nkp_err err;

	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__wire__message__pack(m, buf);
	err = nkpi_session_seal_request(h->link->sess, buf, len, frame, framelen);
	sodium_memzero(buf, len);
	return err;
}

static nkp_err build_hello(const nkpd_host *h, uint8_t **frame, size_t *framelen)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;

	hello.challenge.data = (uint8_t *)h->link->challenge;
	hello.challenge.len = sizeof(h->link->challenge);
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = &hello;
	return pack_sealed(h, &m, frame, framelen);
}

/* The wire form of a push points into the snapshot's arrays. Up to a few
 * providers and versions (the common case) it lives on the stack: no
 * allocation per host and push. */
#define PUSH_STACK_PROVIDERS 8u
#define PUSH_STACK_KEYS 64u

typedef struct push_arrays {
	Nkp__Wire__ProviderKeys *pk;
	Nkp__Wire__ProviderKeys **pkp;
	Nkp__Wire__VersionKey *vk;
	Nkp__Wire__VersionKey **vkp;
	bool heap;
	Nkp__Wire__ProviderKeys pk_s[PUSH_STACK_PROVIDERS];
	Nkp__Wire__ProviderKeys *pkp_s[PUSH_STACK_PROVIDERS];
	Nkp__Wire__VersionKey vk_s[PUSH_STACK_KEYS];
	Nkp__Wire__VersionKey *vkp_s[PUSH_STACK_KEYS];
} push_arrays;

static bool push_arrays_init(push_arrays *a, const nkpd_desired *d)
{
	a->heap = d->n_providers > PUSH_STACK_PROVIDERS || d->n_keys > PUSH_STACK_KEYS;
	if (!a->heap) {
		a->pk = a->pk_s;
		a->pkp = a->pkp_s;
		a->vk = a->vk_s;
		a->vkp = a->vkp_s;
		return true;
	}
	a->pk = calloc(d->n_providers + 1, sizeof(*a->pk));
	a->pkp = calloc(d->n_providers + 1, sizeof(*a->pkp));
	a->vk = calloc(d->n_keys + 1, sizeof(*a->vk));
	a->vkp = calloc(d->n_keys + 1, sizeof(*a->vkp));
	return a->pk != NULL && a->pkp != NULL && a->vk != NULL && a->vkp != NULL;
}

static void push_arrays_fini(push_arrays *a)
{
	if (a->heap) {
		free(a->pk);
		free(a->pkp);
		free(a->vk);
		free(a->vkp);
	}
}

/* tpm-only providers are left out: no host is attested yet. */
static void fill_desired(const nkpd_desired *d, push_arrays *a, Nkp__Wire__DesiredState *ds)
{
	size_t np = 0, vi = 0;

	for (size_t i = 0; i < d->n_providers; i++) {
		const nkpd_desired_provider *dp = &d->providers[i];
		Nkp__Wire__ProviderKeys *pk = &a->pk[np];

		if (dp->tpm_only) {
			continue;
		}
		nkp__wire__provider_keys__init(pk);
		pk->id.data = (uint8_t *)dp->id;
		pk->id.len = NKP_ID_BYTES;
		pk->name = (char *)dp->name;
		pk->is_default = dp->is_default;
		pk->backed_up = dp->backed_up;
		pk->tpm_only = dp->tpm_only;
		pk->versions = &a->vkp[vi];
		pk->n_versions = dp->n_versions;
		for (size_t j = 0; j < dp->n_versions; j++, vi++) {
			Nkp__Wire__VersionKey *vk = &a->vk[vi];

			nkp__wire__version_key__init(vk);
			vk->version = dp->versions[j].version;
			vk->state = dp->versions[j].state;
			vk->created_unix = dp->versions[j].created_unix;
			vk->key.data = d->keys + (dp->key_index + j) * NKP_KEY_BYTES;
			vk->key.len = NKP_KEY_BYTES;
			a->vkp[vi] = vk;
		}
		a->pkp[np++] = pk;
	}
	ds->epoch = d->epoch;
	ds->counter = d->generation;
	ds->providers = a->pkp;
	ds->n_providers = np;
}

/* Serializes `d` once (at each committed change, not per host and push)
 * into locked memory, and digests exactly those bytes. */
static nkp_err desired_pack(nkpd_desired *d)
{
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	push_arrays a;
	nkp_err err = NKP_ERR_NOMEM;

	if (push_arrays_init(&a, d)) {
		fill_desired(d, &a, &ds);
		d->packed_len = nkp__wire__desired_state__get_packed_size(&ds);
		d->packed = sodium_malloc(d->packed_len + 1);
		if (d->packed != NULL) {
			nkp__wire__desired_state__pack(&ds, d->packed);
			nkpi_desired_digest(d->packed, d->packed_len, d->digest);
			err = NKP_OK;
		}
	}
	push_arrays_fini(&a);
	return err;
}

static nkp_err build_push(const nkpd_host *h, uint8_t **frame, size_t *framelen)
{
	const nkpd_desired *d = h->link->push_snap;
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;

	push.challenge.data = (uint8_t *)h->link->challenge;
	push.challenge.len = sizeof(h->link->challenge);
	push.boot_nonce.data = (uint8_t *)h->link->push_nonce;
	push.boot_nonce.len = sizeof(h->link->push_nonce);
	push.desired.data = d->packed;
	push.desired.len = d->packed_len;
	push.resync = h->link->push_resync;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m.push = &push;
	return pack_sealed(h, &m, frame, framelen);
}

static void finish_failure(nkpd_host *h, nkp_err err, nkpd_host_health health, const char *what);
static void handle_reply(nkpd_host *h, const uint8_t *frame, size_t len);

/* Sends the request, or first the handshake it needs: with no usable
 * session, past the rekey budget, or after a (re)connected pipe. A request
 * never rides in a handshake. */
static void start_request(nkpd_host *h)
{
	uint8_t *frame = NULL;
	size_t framelen = 0;
	nng_msg *msg = NULL;
	bool hs;
	nkp_err err;

	pthread_mutex_lock(&h->link->svc->lock);
	if (h->link->pipe_new) {
		h->link->pipe_new = false;
		nkpi_session_reset(h->link->sess);
	}
	hs = nkpi_session_needs_handshake(h->link->sess) &&
	     !(h->link->rekey_failed && nkpi_session_usable(h->link->sess));
	h->link->handshaking = hs;
	pthread_mutex_unlock(&h->link->svc->lock);
	if (hs) {
		err = nkpi_session_handshake_init(h->link->sess, &frame, &framelen);
	} else {
		err = h->link->req == REQ_PUSH ? build_push(h, &frame, &framelen)
					       : build_hello(h, &frame, &framelen);
	}
	if (err != NKP_OK) {
		finish_failure(h, err, HEALTH_UNREACHABLE, "cannot build the request");
		return;
	}
	if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, frame, framelen) != 0) {
		nng_msg_free(msg);
		free(frame);
		finish_failure(h, NKP_ERR_NOMEM, HEALTH_UNREACHABLE, "cannot build the request");
		return;
	}
	free(frame);
	pthread_mutex_lock(&h->link->svc->lock);
	if (h->link->pipe_new) {
		/* A new pipe came up while this was sealed: seal it again. */
		pthread_mutex_unlock(&h->link->svc->lock);
		nng_msg_free(msg);
		start_request(h);
		return;
	}
	h->link->io = IO_SENDING;
	h->link->timed_out = false;
	set_deadline(h->link->svc, h, SEND_TIMEOUT_MS);
	pthread_mutex_unlock(&h->link->svc->lock);
	nng_aio_set_msg(h->link->aio, msg);
	nng_aio_set_timeout(h->link->aio, NNG_DURATION_INFINITE);
	nng_send_aio(h->link->sock, h->link->aio);
}

/* ---- completing requests ---- */

/* The host was asked in the current usage round and has neither answered
 * nor failed since. */
static bool round_pending(const nkpd_svc *s, const nkpd_host *h)
{
	return s->usage_round != 0 && h->st.asked_round == s->usage_round &&
	       h->st.answered_round != s->usage_round && h->st.failed_round != s->usage_round;
}

static size_t sync_usage_round(void *ctx, uint64_t timeout_ms)
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
			set_due(s, h, 0);
		}
	}
	kick(s);
	until = nkpi_mono_timespec(nkpi_mono_ms() + timeout_ms);
	do {
		pending = 0;
		for (size_t i = 0; i < s->n_hosts; i++) {
			pending += round_pending(s, s->hosts[i]);
		}
	} while (pending > 0 && s->usage_round == round &&
		 pthread_cond_timedwait(&s->round_cond, &s->lock, &until) == 0);
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		missing += h->st.asked_round == round && h->st.answered_round != round;
	}
	return missing;
}

/* Lock held. Ends the exchange: either chains a push at once (returns
 * true: the caller starts it outside the lock) or frees the slot. */
static bool next_step(nkpd_svc *s, nkpd_host *h)
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
		set_due(s, h, round_pending(s, h) ? 0 : nkpi_mono_ms() + s->heartbeat_ms);
	} else {
		set_due(s, h, nkpi_mono_ms() + backoff_ms(h->st.failures));
	}
	return false;
}

static void note_in_sync(nkpd_svc *s, nkpd_host *h)
{
	if (h->wipe_snap == NULL && nkpd_host_in_sync(s, h) &&
	    h->st.in_sync_generation != s->generation) {
		h->st.in_sync_generation = s->generation;
		nkp_event(s->events, NKP_EV_HOST_IN_SYNC, NULL, h->conf.name,
			  "host %s applied generation %llu", h->conf.name,
			  (unsigned long long)h->st.applied_generation);
	}
}

/* Lock held. Records a failed exchange and its events. */
static void fail_locked(nkpd_svc *s, nkpd_host *h, nkp_err err, nkpd_host_health health,
			const char *what)
{
	char raw[sizeof(h->st.last_error)];

	/* A failed exchange leaves the session in doubt (the host may have
	 * moved its chain on): the next request makes a new one. */
	nkpi_session_reset(h->link->sess);
	if (h->st.asked_round == s->usage_round && h->st.failed_round != s->usage_round) {
		h->st.failed_round = s->usage_round;
		pthread_cond_broadcast(&s->round_cond);
	}
	h->st.failures++;
	/* `what` may quote a peer (an unauthenticated one, too): sanitised. */
	snprintf(raw, sizeof(raw), "%s: %s", what, nkp_strerror(err));
	nkpd_util_sanitize(h->st.last_error, sizeof(h->st.last_error), raw);
	if (health == HEALTH_UNREACHABLE && h->st.health != HEALTH_UNREACHABLE &&
	    !h->link->removed) {
		nkp_event(s->events, NKP_EV_HOST_UNREACHABLE, NULL, h->conf.name,
			  "host %s (%s): %s", h->conf.name, h->conf.address, h->st.last_error);
	}
	if (h->st.failures == 1 && !h->link->removed &&
	    (h->link->req == REQ_PUSH || health == HEALTH_REFUSED)) {
		nkp_event(s->events, NKP_EV_PUSH_FAILED, NULL, h->conf.name,
			  "host %s: generation %llu not delivered: %s", h->conf.name,
			  (unsigned long long)s->generation, h->st.last_error);
	}
	h->st.health = health;
}

static void finish_failure(nkpd_host *h, nkp_err err, nkpd_host_health health, const char *what)
{
	nkpd_svc *s = h->link->svc;
	bool chain;

	pthread_mutex_lock(&s->lock);
	fail_locked(s, h, err, health, what);
	chain = next_step(s, h);
	pthread_mutex_unlock(&s->lock);
	if (chain) {
		start_request(h);
	} else {
		refill(s);
	}
}

static void wake_cb(void *arg)
{
	nkpd_host *h = arg;
	int rv = nng_aio_result(h->link->wake);

	if (rv != 0) {
		finish_failure(h, NKP_ERR_NET, HEALTH_UNREACHABLE, nng_strerror(rv));
		return;
	}
	start_request(h);
}

static void host_cb(void *arg)
{
	nkpd_host *h = arg;
	int rv = nng_aio_result(h->link->aio);
	nng_msg *msg;
	bool repipe;

	pthread_mutex_lock(&h->link->svc->lock);
	repipe = rv == NNG_ECANCELED && h->link->repipe && !h->link->timed_out;
	h->link->repipe = false;
	pthread_mutex_unlock(&h->link->svc->lock);
	if (repipe) {
		/* A new pipe: the same request again, after a handshake. */
		if (h->link->io == IO_SENDING) {
			nng_msg_free(nng_aio_get_msg(h->link->aio));
			nng_aio_set_msg(h->link->aio, NULL);
		}
		start_request(h);
		return;
	}
	if (rv == NNG_ECANCELED && h->link->timed_out) {
		rv = NNG_ETIMEDOUT; /* cancelled by the tick for its deadline */
	}
	if (h->link->io == IO_SENDING) {
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(h->link->aio));
			nng_aio_set_msg(h->link->aio, NULL);
			finish_failure(h, rv == NNG_ETIMEDOUT ? NKP_ERR_TIMEOUT : NKP_ERR_NET,
				       HEALTH_UNREACHABLE, nng_strerror(rv));
			return;
		}
		pthread_mutex_lock(&h->link->svc->lock);
		h->link->io = IO_RECEIVING;
		set_deadline(h->link->svc, h, RECV_TIMEOUT_MS);
		if (h->link->timed_out) {
			rv = NNG_ECANCELED; /* cancelled as the send completed */
		}
		repipe = h->link->repipe; /* a new pipe came up as the send completed */
		h->link->repipe = false;
		pthread_mutex_unlock(&h->link->svc->lock);
		if (repipe && rv == 0) {
			start_request(h);
			return;
		}
		if (rv != 0) {
			finish_failure(h, NKP_ERR_TIMEOUT, HEALTH_UNREACHABLE, "not sent in time");
			return;
		}
		nng_recv_aio(h->link->sock, h->link->aio);
		return;
	}
	if (rv != 0) {
		finish_failure(h, rv == NNG_ETIMEDOUT ? NKP_ERR_TIMEOUT : NKP_ERR_NET,
			       HEALTH_UNREACHABLE,
			       rv == NNG_ETIMEDOUT ? "no answer" : nng_strerror(rv));
		return;
	}
	msg = nng_aio_get_msg(h->link->aio);
	nng_aio_set_msg(h->link->aio, NULL);
	handle_reply(h, nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
}

/* ---- replies ---- */

static bool challenge_ok(const nkpd_host *h, ProtobufCBinaryData c)
{
	return c.len == sizeof(h->link->challenge) &&
	       sodium_memcmp(c.data, h->link->challenge, sizeof(h->link->challenge)) == 0;
}

/* Was (provider, version) pushed to this host, i.e. is it in the desired
 * state it is sent? Only those are counted. */
static bool pushed_to(const nkpd_desired *d, const uint8_t *id, uint32_t version)
{
	for (size_t i = 0; d != NULL && i < d->n_providers; i++) {
		const nkpd_desired_provider *dp = &d->providers[i];

		if (dp->tpm_only || memcmp(dp->id, id, NKP_ID_BYTES) != 0) {
			continue;
		}
		for (size_t j = 0; j < dp->n_versions; j++) {
			if (dp->versions[j].version == version) {
				return true;
			}
		}
	}
	return false;
}

static uint64_t cap(uint64_t v)
{
	return v > NKPD_USAGE_CAP ? NKPD_USAGE_CAP : v;
}

/* A host's report is kept bounded: versions never pushed to it are
 * dropped, a version reported twice counts once (the first), every count
 * is capped. What one host says cannot hide what another reports. */
static void store_usage(nkpd_svc *s, nkpd_host *h, size_t n, Nkp__Wire__VersionUsage *const *u)
{
	const nkpd_desired *d = h->link->pushed_snap;
	nkpd_usage *nu;
	size_t k = 0;

	if (n > MAX_USAGE) {
		n = MAX_USAGE;
	}
	nu = calloc(n + 1, sizeof(*nu));
	if (nu == NULL) {
		return;
	}
	for (size_t i = 0; i < n; i++) {
		bool dup = false;

		if (u[i]->provider_id.len != NKP_ID_BYTES || u[i]->version == 0 ||
		    !pushed_to(d, u[i]->provider_id.data, u[i]->version)) {
			continue;
		}
		for (size_t j = 0; j < k && !dup; j++) {
			dup = nu[j].version == u[i]->version &&
			      memcmp(nu[j].provider_id, u[i]->provider_id.data, NKP_ID_BYTES) == 0;
		}
		if (dup) {
			continue;
		}
		memcpy(nu[k].provider_id, u[i]->provider_id.data, NKP_ID_BYTES);
		nu[k].version = u[i]->version;
		nu[k].keysafes = cap(u[i]->keysafes);
		nu[k].created = cap(u[i]->created);
		nu[k].rewrapped = cap(u[i]->rewrapped);
		nu[k].unwrapped = cap(u[i]->unwrapped);
		nu[k].last_used_unix = u[i]->last_used_unix;
		k++;
	}
	free(h->st.usage);
	h->st.usage = nu;
	h->st.n_usage = k;
}

/* Lock held. Records the pair and digest a host reports. Nothing is ever
 * adopted from it: a host that holds a pair we did not give it (ahead of
 * us, of another epoch, or our pair with other contents) is in conflict
 * until the operator resyncs it (docs/PROTOCOL.md "Generations"). */
static void note_applied(nkpd_svc *s, nkpd_host *h, uint64_t epoch, uint64_t counter,
			 ProtobufCBinaryData digest)
{
	struct reconciler *rec = s->rec;
	nkpd_desired *d = nkpd_host_snap(s, h);
	bool was_behind = !nkpd_host_current(s, h);
	bool conflict;

	h->st.applied_epoch = epoch;
	h->st.applied_generation = counter;
	h->st.have_digest = digest.len == NKPI_DIGEST_BYTES;
	if (h->st.have_digest) {
		memcpy(h->st.applied_digest, digest.data, NKPI_DIGEST_BYTES);
	}
	if (d == NULL) {
		return;
	}
	if (nkpd_host_has(h, d)) {
		conflict = false;
		set_pushed(h, d);
		if (h->wipe_snap == NULL) {
			h->st.resync = false;
			if (d->generation > h->st.acked_generation) {
				h->st.acked_generation = d->generation;
			}
		}
	} else {
		/* Fresh (no pair), or behind us in our epoch: push. */
		conflict = epoch != 0 && (epoch != d->epoch || counter >= d->generation);
	}
	if (conflict && !h->st.conflict && !wants_resync(h)) {
		nkp_event(s->events, NKP_EV_HOST_CONFLICT, NULL, h->conf.name,
			  "host %s holds generation %016llx:%llu, which this service did not give "
			  "it (ours: %016llx:%llu); nothing is pushed to it until `nkpctl host "
			  "resync %s`",
			  h->conf.name, (unsigned long long)epoch, (unsigned long long)counter,
			  (unsigned long long)d->epoch, (unsigned long long)d->generation,
			  h->conf.name);
	}
	h->st.conflict = conflict;
	if (rec == NULL || h->link->removed || !was_behind || !nkpd_host_current(s, h)) {
		return;
	}
	if (rec->behind > 0) {
		rec->behind--;
	}
	if (rec->behind == 0) {
		nkpd_provider_rotation_tick(s);
	}
}

static void contact_ok(nkpd_svc *s, nkpd_host *h, const ProtobufCBinaryData *nonce, uint64_t epoch,
		       uint64_t counter, ProtobufCBinaryData digest)
{
	if (nonce->len == sizeof(h->st.boot_nonce)) {
		memcpy(h->st.boot_nonce, nonce->data, sizeof(h->st.boot_nonce));
		h->st.have_nonce = true;
	}
	note_applied(s, h, epoch, counter, digest);
	h->st.last_contact_unix = nkpi_now();
	h->st.failures = 0;
	h->st.health = HEALTH_OK;
	h->st.last_error[0] = '\0';
	if (h->st.asked_round == s->usage_round && h->st.prepared_round == s->usage_round) {
		h->st.answered_round = s->usage_round;
		pthread_cond_broadcast(&s->round_cond);
	}
}

static void apply_status(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Status *st)
{
	if (!challenge_ok(h, st->challenge) || st->boot_nonce.len != sizeof(h->st.boot_nonce)) {
		fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED, "status with a wrong challenge");
		return;
	}
	contact_ok(s, h, &st->boot_nonce, st->applied_epoch, st->applied_generation,
		   st->applied_digest);
	h->st.tpm = st->tpm;
	nkpd_util_sanitize(h->st.host_name, sizeof(h->st.host_name), st->host_name);
	store_usage(s, h, st->n_usage, st->usage);
}

static void apply_ack(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__PushAck *ack)
{
	if (!challenge_ok(h, ack->challenge)) {
		fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED,
			    "push ack with a wrong challenge");
		return;
	}
	if (h->link->push_resync && h->wipe_snap == NULL) {
		/* The resync was delivered: one push, not one per heartbeat. If
		 * the host still names a pair we did not give it, that is a new
		 * conflict. */
		h->st.resync = false;
		h->st.conflict = false;
	}
	contact_ok(s, h, &ack->boot_nonce, ack->applied_epoch, ack->applied_generation,
		   ack->applied_digest);
	store_usage(s, h, ack->n_usage, ack->usage);
}

static void apply_refusal(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Refusal *r)
{
	bool restarted, applied;
	char what[200], text[128];

	if (!challenge_ok(h, r->challenge)) {
		fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED, "refusal with a wrong challenge");
		return;
	}
	restarted =
		r->boot_nonce.len == sizeof(h->st.boot_nonce) &&
		memcmp(r->boot_nonce.data, h->link->push_nonce, sizeof(h->link->push_nonce)) != 0;
	/* An earlier copy of this very push was applied and its ack lost:
	 * the host names the digest of what we sent. */
	applied = h->link->req == REQ_PUSH && h->link->push_snap != NULL &&
		  r->applied_digest.len == NKPI_DIGEST_BYTES &&
		  sodium_memcmp(r->applied_digest.data, h->link->push_snap->digest,
				NKPI_DIGEST_BYTES) == 0;
	if (h->link->req == REQ_PUSH &&
	    (restarted || applied || r->code == NKP_ERR_REPLAY || r->code == NKP_ERR_STATE)) {
		/* The host restarted (push again with its new nonce at once),
		 * has it already (in sync), or holds another pair: recorded,
		 * never adopted; a conflict stops the pushes. */
		contact_ok(s, h, &r->boot_nonce, r->applied_epoch, r->applied_generation,
			   r->applied_digest);
		if (restarted || applied || h->st.conflict) {
			return;
		}
	}
	nkpd_util_sanitize(text, sizeof(text), r->message);
	snprintf(what, sizeof(what), "host refused (%s)", text);
	fail_locked(s, h, r->code < NKP_ERR__COUNT ? (nkp_err)r->code : NKP_ERR_REFUSED,
		    HEALTH_REFUSED, what);
}

static void apply_message(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Message *m)
{
	switch (m->body_case) {
	case NKP__WIRE__MESSAGE__BODY_STATUS:
		if (h->link->req == REQ_HELLO) {
			apply_status(s, h, m->status);
			return;
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_PUSH_ACK:
		if (h->link->req == REQ_PUSH) {
			apply_ack(s, h, m->push_ack);
			return;
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_REFUSAL:
		apply_refusal(s, h, m->refusal);
		return;
	default:
		break;
	}
	fail_locked(s, h, NKP_ERR_PARSE, HEALTH_REFUSED, "unexpected reply");
}

static void apply_reply(nkpd_host *h, const Nkp__Wire__Message *m)
{
	nkpd_svc *s = h->link->svc;
	bool chain;

	pthread_mutex_lock(&s->lock);
	apply_message(s, h, m);
	note_in_sync(s, h);
	chain = next_step(s, h);
	pthread_mutex_unlock(&s->lock);
	if (chain) {
		start_request(h);
	} else {
		refill(s);
	}
}

/* Opens and unpacks a reply; the plaintext lives in this thread's locked
 * scratch buffer only until it is unpacked into this thread's arena
 * (`alloc`, NULL if it could not be made), where the caller frees it. */
static nkp_err open_reply(nkpd_host *h, ProtobufCAllocator *alloc, const uint8_t *frame, size_t len,
			  Nkp__Wire__Message **out, char *what, size_t what_size)
{
	uint8_t *buf = nkpi_scratch(len + 1);
	size_t blen = 0;
	nkp_err err;

	if (buf == NULL || alloc == NULL) {
		snprintf(what, what_size, "cannot open the reply");
		return NKP_ERR_NOMEM;
	}
	err = nkpi_session_open_reply(h->link->sess, frame, len, buf, len + 1, &blen);
	if (err != NKP_OK) {
		nkp_event(h->link->svc->events,
			  err == NKP_ERR_AUTH ? NKP_EV_TAMPERING : NKP_EV_BAD_INPUT, NULL,
			  h->conf.name, "reply from host %s refused: %s", h->conf.name,
			  nkp_strerror(err));
		snprintf(what, what_size, "reply not authenticated");
	} else {
		/* Even an enrolled host's reply is outside bytes: unknown
		 * fields and repeats are refused before protobuf-c allocates
		 * for them. */
		*out = nkpi_pb_strict(&nkp__wire__message__descriptor, buf, blen) == NKP_OK
			       ? nkp__wire__message__unpack(alloc, blen, buf)
			       : NULL;
		if (*out == NULL) {
			err = NKP_ERR_PARSE;
			snprintf(what, what_size, "malformed reply");
		}
		sodium_memzero(buf, blen);
	}
	return err;
}

/* The answer to our HandshakeInit. Authenticated: the request follows
 * under the new session. Not: a failed rekey falls back on the current
 * session while it is usable; otherwise the exchange failed (the next one
 * starts with a new handshake). A forged answer costs a retry, never a
 * request in anything but a Transport. */
static void handle_handshake(nkpd_host *h, const uint8_t *frame, size_t len)
{
	nkpd_svc *s = h->link->svc;
	nkp_err err = nkpi_session_handshake_finish(h->link->sess, frame, len);

	pthread_mutex_lock(&s->lock);
	h->link->handshaking = false;
	if (err != NKP_OK) {
		h->link->rekey_failed = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (err != NKP_OK && !nkpi_session_usable(h->link->sess)) {
		finish_failure(h, err, HEALTH_REFUSED, "handshake not authenticated");
		return;
	}
	start_request(h);
}

/* Unpacks and frees on this thread, as its arena requires. */
static void handle_reply(nkpd_host *h, const uint8_t *frame, size_t len)
{
	ProtobufCAllocator *alloc = nkpi_arena_allocator();
	Nkp__Wire__Message *m = NULL;
	char what[240];
	bool hs;
	nkp_err err;

	pthread_mutex_lock(&h->link->svc->lock);
	hs = h->link->handshaking;
	pthread_mutex_unlock(&h->link->svc->lock);
	if (hs) {
		handle_handshake(h, frame, len);
		return;
	}
	err = open_reply(h, alloc, frame, len, &m, what, sizeof(what));
	if (err != NKP_OK) {
		finish_failure(h, err, HEALTH_REFUSED, what);
		return;
	}
	apply_reply(h, m);
	nkp__wire__message__free_unpacked(m, alloc);
}
