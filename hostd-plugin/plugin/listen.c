/* Serving the service protocol with nng aio callbacks: one REP socket and
 * a few contexts per handle, no thread of its own, so one process can hold
 * thousands of plugin instances.
 *
 * Strangers get little (docs/PROTOCOL.md, "Strangers and connection
 * limits"): connections are capped per listener and per peer address
 * (refused as nng adds them, before any message); every connection must
 * bring an authenticated frame within peer_timeout_ms of connecting and of
 * its previous one, or a timer closes it, which also ends a message that
 * is being sent too slowly; a message may be no bigger than the largest
 * push (NKPI_PUSH_MAX). The cap also leaves file descriptors for the local
 * API and the state files: never more connections than the descriptor
 * limit less HOSTD_RESERVED_FDS. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "hostd-internal.h"

/* The service sends one request per host at a time; two contexts let a
 * heartbeat through while a push is being written. */
#define LISTEN_CONTEXTS 2
#define LISTEN_URL_MAX 256

/* A connection and the time by which it must bring an authenticated
 * frame. */
typedef struct lpeer {
	uint32_t pipe;
	uint8_t addr[16]; /* see peer_addr() */
	uint64_t since_ms;
	uint64_t deadline_ms;
	bool heard; /* it brought an authenticated frame */
} lpeer;

/* nng 1.5.2 (Debian 12) wedges its reaper for good when a connection is
 * closed on our side just as a message header has arrived on it (the
 * ipc and tcp transports then never finish the read of the body, and the
 * pipe's teardown waits for it). No connection is freed after that, so
 * the caps would soon refuse every connection, nkpd's included; a
 * stranger who times a header with its connection's deadline could bring
 * it about. A connection this listener closed that nng has not reported
 * gone WEDGE_MS later means the wedge: the handle says so
 * (NKP-HOSTD-NNG-WEDGED, nkpi_hostd_nng_wedged()) and nkp-hostd exits to
 * be restarted. At most CLOSING_MAX closed connections are watched at a
 * time; more are closed unwatched (the entries held catch a wedge all
 * the same), and the descriptor budget leaves room for CLOSING_MAX. */
#define CLOSING_MAX 64
#define WEDGE_MS 30000u

typedef struct closing {
	uint32_t pipe;
	uint64_t at_ms; /* 0: a free entry */
} closing;

typedef struct lctx {
	nkp_hostd *h;
	hostd_listener *l;
	nng_ctx ctx;
	nng_aio *aio;
	bool sending;
} lctx;

struct hostd_listener {
	nng_socket sock;
	nng_listener listener;
	char url[LISTEN_URL_MAX];
	lctx ctxs[LISTEN_CONTEXTS];

	nkp_hostd *h;
	pthread_mutex_t lock; /* guards peers and n_peers */
	lpeer *peers;
	size_t n_peers;
	size_t max_peers;
	size_t max_per_address;
	uint64_t timeout_ms;
	hostd_listener *next_reaped; /* in reaper.head's list, under reaper.lock */
	bool lock_made;
	bool reaped;
	/* Connections this listener closed, until nng reports them gone
	 * (under lock): see check_wedged(). */
	closing closing[CLOSING_MAX];
	uint64_t wedge_ms;
	bool wedge_logged;
};

/* The peer's address, as 16 bytes: an IPv4 address (an IPv4-mapped IPv6
 * one counts as its IPv4 address) in the first 4 bytes and 1 in the
 * last, or an IPv6 address's /64 prefix in the first 8 (one machine
 * commonly holds a whole /64), the rest 0. False for other transports
 * (ipc: no cap by address, only the listener's). */
static bool peer_addr(nng_pipe p, uint8_t out[static 16])
{
	nng_sockaddr sa;

	memset(out, 0, 16);
	if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0) {
		return false;
	}
	if (sa.s_family == NNG_AF_INET) {
		memcpy(out, &sa.s_in.sa_addr, 4);
		out[15] = 1;
		return true;
	}
	if (sa.s_family == NNG_AF_INET6) {
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(sa.s_in6.sa_addr, mapped, 12) == 0) {
			memcpy(out, sa.s_in6.sa_addr + 12, 4);
			out[15] = 1;
		} else {
			memcpy(out, sa.s_in6.sa_addr, 8);
		}
		return true;
	}
	return false;
}

/* Lock held, in the same hold that found `pipe` among the peers (so nng
 * has not yet reported it gone, and will clear the entry when it does).
 * Remembers that we are closing it; false when CLOSING_MAX connections we
 * closed are not yet gone: an entry is never overwritten, or a stranger
 * closing connections fast enough would hide the oldest, and with it a
 * wedge. */
static bool closing_add(hostd_listener *l, uint32_t pipe)
{
	for (size_t i = 0; i < CLOSING_MAX; i++) {
		if (l->closing[i].at_ms == 0) {
			l->closing[i] = (closing){.pipe = pipe, .at_ms = nkpi_mono_ms()};
			return true;
		}
	}
	return false;
}

/* Lock held. */
static void closing_forget(hostd_listener *l, uint32_t pipe)
{
	for (size_t i = 0; i < CLOSING_MAX; i++) {
		if (l->closing[i].at_ms != 0 && l->closing[i].pipe == pipe) {
			l->closing[i].at_ms = 0;
		}
	}
}

/* Closes a connection that closing_add() has recorded. */
static void close_pipe(hostd_listener *l, uint32_t id)
{
	nng_pipe p = NNG_PIPE_INITIALIZER;

	p.id = id;
	if (nng_pipe_close(p) == 0) {
		hostd_guard_conn_closed(l->h);
		return;
	}
	pthread_mutex_lock(&l->lock); /* gone already: nothing to wait for */
	closing_forget(l, id);
	pthread_mutex_unlock(&l->lock);
}

/* A new connection takes a free slot; at the cap it takes the slot of
 * the oldest connection that has not yet brought an authenticated frame,
 * which is closed, so strangers reconnecting as fast as they are reaped
 * cannot keep nkpd out. Refused only over the per-address cap, or when
 * every connection has authenticated. */
static void on_pipe_add(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	hostd_listener *l = arg;
	uint8_t addr[16];
	size_t same = 0, slot = SIZE_MAX;
	uint32_t evict = 0;
	uint64_t now = nkpi_mono_ms();
	bool refuse;

	(void)ev;
	bool by_addr = peer_addr(p, addr);

	pthread_mutex_lock(&l->lock);
	for (size_t i = 0; by_addr && i < l->n_peers; i++) {
		same += memcmp(l->peers[i].addr, addr, 16) == 0;
	}
	refuse = same >= l->max_per_address;
	if (!refuse && l->n_peers < l->max_peers) {
		slot = l->n_peers++;
	} else if (!refuse) {
		for (size_t i = 0; i < l->n_peers; i++) {
			/* UINT64_MAX: already being closed by the reaper. */
			if (!l->peers[i].heard && l->peers[i].deadline_ms != UINT64_MAX &&
			    (slot == SIZE_MAX || l->peers[i].since_ms < l->peers[slot].since_ms)) {
				slot = i;
			}
		}
		refuse = slot == SIZE_MAX;
		if (!refuse) {
			/* Watched if there is room; closed all the same if not
			 * (the entries held already catch a wedge), so a flood
			 * that keeps nng's reaper busy cannot keep nkpd out. */
			evict = l->peers[slot].pipe;
			(void)closing_add(l, evict);
		}
	}
	if (!refuse) {
		l->peers[slot] = (lpeer){.pipe = nng_pipe_id(p),
					 .since_ms = now,
					 .deadline_ms = now + l->timeout_ms};
		memcpy(l->peers[slot].addr, addr, 16);
	}
	pthread_mutex_unlock(&l->lock);
	if (refuse) {
		hostd_guard_conn_refused(l->h);
		nng_pipe_close(p);
	} else if (evict != 0) {
		close_pipe(l, evict);
	}
}

#ifdef NKP_TEST_HOOKS
/* Holds the calling thread for the milliseconds in the environment
 * variable `name`, if set (tests: widening a race). */
static void test_pause(const char *name)
{
	if (getenv(name) != NULL) {
		nng_msleep((nng_duration)strtoul(getenv(name), NULL, 10));
	}
}
#endif

static void on_pipe_rem(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	hostd_listener *l = arg;
	uint32_t id = nng_pipe_id(p);

	(void)ev;
#ifdef NKP_TEST_HOOKS
	if (getenv("NKP_TEST_NNG_WEDGE") != NULL) {
		return; /* as if nng's reaper were wedged: nothing is reported gone */
	}
#endif
	pthread_mutex_lock(&l->lock);
	for (size_t i = 0; i < l->n_peers; i++) {
		if (l->peers[i].pipe == id) {
			l->peers[i] = l->peers[--l->n_peers];
			break;
		}
	}
	closing_forget(l, id);
	pthread_mutex_unlock(&l->lock);
#ifdef NKP_TEST_HOOKS
	test_pause("NKP_TEST_PIPE_REM_SLOW_MS"); /* nng forgets the pipe after this */
#endif
}

/* A connection we closed over `wedge_ms` ago that nng has not reported
 * gone, or CLOSING_MAX of them, the oldest over a third of that: its
 * reaper is wedged (see CLOSING_MAX). Said once. The second rule ends
 * sooner a wedge under a flood, whose every connection holds a
 * descriptor until the process exits. */
static void check_wedged(hostd_listener *l)
{
	uint64_t now = nkpi_mono_ms(), oldest = 0;
	size_t held = 0;
	bool wedged;

	pthread_mutex_lock(&l->lock);
	for (size_t i = 0; i < CLOSING_MAX; i++) {
		if (l->closing[i].at_ms != 0) {
			held++;
			oldest = now - l->closing[i].at_ms > oldest ? now - l->closing[i].at_ms
								    : oldest;
		}
	}
	wedged = oldest > l->wedge_ms || (held == CLOSING_MAX && oldest > l->wedge_ms / 3);
	wedged = wedged && !l->wedge_logged;
	l->wedge_logged = l->wedge_logged || wedged;
	pthread_mutex_unlock(&l->lock);
	if (wedged) {
		atomic_store(&l->h->nng_wedged, true);
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-NNG-WEDGED",
			"nng no longer frees closed connections (its reaper is wedged, a "
			"bug of nng 1.5): this process must be restarted before its "
			"connection caps refuse nkpd");
	}
}

/* The connection brought an authenticated frame: it may stay a while. */
static void peer_heard(hostd_listener *l, nng_pipe p)
{
	uint32_t id = nng_pipe_id(p);

	pthread_mutex_lock(&l->lock);
	for (size_t i = 0; i < l->n_peers; i++) {
		if (l->peers[i].pipe == id) {
			l->peers[i].deadline_ms = nkpi_mono_ms() + l->timeout_ms;
			l->peers[i].heard = true;
			break;
		}
	}
	pthread_mutex_unlock(&l->lock);
}

#define REAP_BATCH 64

/* How often the reaper looks at a listener: a quarter of its deadline (a
 * connection is closed at most 25 % late), between 100 ms and 5 s. */
static uint64_t reap_ms(const hostd_listener *l)
{
	uint64_t ms = l->timeout_ms / 4;

	return ms < 100 ? 100 : ms > 5000 ? 5000 : ms;
}

/* Closes one listener's connections past their deadline, a batch at a time
 * (closing runs the removal callback, which takes the lock). */
static void reap(hostd_listener *l)
{
	uint32_t late[REAP_BATCH];
	size_t n;

	do {
		uint64_t now = nkpi_mono_ms();

		n = 0;
		pthread_mutex_lock(&l->lock);
		for (size_t i = 0; i < l->n_peers && n < REAP_BATCH; i++) {
			/* Closed later when CLOSING_MAX are still going. */
			if (l->peers[i].deadline_ms <= now && closing_add(l, l->peers[i].pipe)) {
				late[n++] = l->peers[i].pipe;
				l->peers[i].deadline_ms = UINT64_MAX; /* closed once */
			}
		}
		pthread_mutex_unlock(&l->lock);
#ifdef NKP_TEST_HOOKS
		if (n > 0) {
			test_pause("NKP_TEST_REAP_PAUSE_MS");
		}
#endif
		for (size_t i = 0; i < n; i++) {
			close_pipe(l, late[i]);
		}
	} while (n == REAP_BATCH);
	check_wedged(l);
	hostd_guard_flush(l->h);
}

/* One reaper thread per process serves every listener in it. nng keeps
 * its timers in a list it scans whole at every expiry, so a timer per
 * listener would cost a process holding thousands of plugin instances
 * (nkp-bench) time quadratic in their number. The thread runs while at
 * least one listener exists; `epoch` tells a thread that was asked to stop
 * from its successor. */
static struct {
	pthread_once_t once;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	hostd_listener *head;
	pthread_t thread;
	uint64_t epoch;
	bool running;
} reaper = {.once = PTHREAD_ONCE_INIT};

static void reaper_sync_init(void)
{
	pthread_mutex_init(&reaper.lock, NULL);
	nkpi_mono_cond_init(&reaper.wake);
}

/* A forked child has none of its parent's threads, and its locks may have
 * been held by one of them. */
static void reaper_forked(void)
{
	reaper_sync_init();
	reaper.head = NULL;
	reaper.running = false;
}

static void reaper_init(void)
{
	reaper_sync_init();
	pthread_atfork(NULL, NULL, reaper_forked);
}

static void *reaper_main(void *arg)
{
	uint64_t mine = (uint64_t)(uintptr_t)arg;
	uint64_t last = nkpi_mono_ms();

	pthread_mutex_lock(&reaper.lock);
	while (reaper.epoch == mine) {
		uint64_t period = 5000, due, now = nkpi_mono_ms();

		for (hostd_listener *l = reaper.head; l != NULL; l = l->next_reaped) {
			period = reap_ms(l) < period ? reap_ms(l) : period;
		}
		due = last + period;
		if (now < due) {
			/* Woken early when a listener comes or goes: the
			 * period is then computed again. */
			struct timespec until = nkpi_mono_timespec(due);

			pthread_cond_timedwait(&reaper.wake, &reaper.lock, &until);
			continue;
		}
		last = now;
		/* Listeners leave only under the lock: none is freed while
		 * this walk holds it. */
		for (hostd_listener *l = reaper.head; l != NULL; l = l->next_reaped) {
			reap(l);
		}
	}
	pthread_mutex_unlock(&reaper.lock);
	return NULL;
}

static bool reaper_add(hostd_listener *l)
{
	bool ok = true;

	pthread_once(&reaper.once, reaper_init);
	pthread_mutex_lock(&reaper.lock);
	if (!reaper.running) {
		ok = pthread_create(&reaper.thread, NULL, reaper_main,
				    (void *)(uintptr_t)reaper.epoch) == 0;
		reaper.running = ok;
	}
	if (ok) {
		l->next_reaped = reaper.head;
		reaper.head = l;
		l->reaped = true;
		pthread_cond_signal(&reaper.wake);
	}
	pthread_mutex_unlock(&reaper.lock);
	return ok;
}

/* Waits for a walk in progress; the last listener out stops the thread. */
static void reaper_remove(hostd_listener *l)
{
	pthread_t done;
	bool join = false;

	pthread_mutex_lock(&reaper.lock);
	for (hostd_listener **p = &reaper.head; *p != NULL; p = &(*p)->next_reaped) {
		if (*p == l) {
			*p = l->next_reaped;
			break;
		}
	}
	l->reaped = false;
	if (reaper.head == NULL && reaper.running) {
		reaper.epoch++;
		reaper.running = false;
		done = reaper.thread;
		join = true;
	}
	pthread_cond_signal(&reaper.wake);
	pthread_mutex_unlock(&reaper.lock);
	if (join) {
		pthread_join(done, NULL);
	}
}

/* Connections this process can afford: the configured cap, but never
 * more than the descriptor limit less what the local API, the state
 * files and the event log need. */
static size_t affordable(size_t wanted)
{
	struct rlimit rl;
	rlim_t room;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
		return wanted;
	}
	/* Connections being closed hold descriptors too (CLOSING_MAX). */
	room = rl.rlim_cur > 2u * (HOSTD_RESERVED_FDS + CLOSING_MAX)
		       ? rl.rlim_cur - HOSTD_RESERVED_FDS - CLOSING_MAX
		       : rl.rlim_cur / 2u;
	return room < wanted ? (size_t)room : wanted;
}

static void answer(lctx *c, nng_msg *msg)
{
	uint8_t *out = NULL;
	size_t outlen = 0;
	bool authentic = false;
	nkp_err err =
		hostd_handle_frame(c->h, hostd_pipe_peer(nng_msg_get_pipe(msg)), nng_msg_body(msg),
				   nng_msg_len(msg), &out, &outlen, &authentic);

	if (authentic) {
		peer_heard(c->l, nng_msg_get_pipe(msg));
	}
	nng_msg_clear(msg);
	if (err != NKP_OK || nng_msg_append(msg, out, outlen) != 0) {
		/* No reply possible: drop the request, the service retries. */
		nkp_hostd_buf_free(out, outlen);
		nng_msg_free(msg);
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	nkp_hostd_buf_free(out, outlen);
	c->sending = true;
	nng_aio_set_msg(c->aio, msg);
	nng_ctx_send(c->ctx, c->aio);
}

static void on_io(void *arg)
{
	lctx *c = arg;
	int rv = nng_aio_result(c->aio);

	if (c->sending) {
		c->sending = false;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
		}
	} else if (rv == 0) {
		answer(c, nng_aio_get_msg(c->aio));
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		return;
	}
	nng_ctx_recv(c->ctx, c->aio);
}

static nkp_err resolve_url(hostd_listener *l, const char *url)
{
	int port = 0;

	snprintf(l->url, sizeof(l->url), "%s", url);
	if (strncmp(url, "tcp", 3) == 0 &&
	    nng_listener_get_int(l->listener, NNG_OPT_TCP_BOUND_PORT, &port) == 0) {
		const char *colon = strrchr(url, ':');

		if (colon != NULL) {
			snprintf(l->url, sizeof(l->url), "%.*s:%d", (int)(colon - url), url, port);
		}
	}
	return NKP_OK;
}

static nkp_err listener_start(hostd_listener *l, nkp_hostd *h, const char *url)
{
	l->h = h;
	l->max_peers = affordable(h->max_peers != 0 ? h->max_peers : HOSTD_MAX_PEERS);
	l->max_per_address = h->max_peers_per_address != 0 ? h->max_peers_per_address
							   : HOSTD_MAX_PEERS_PER_ADDRESS;
	l->timeout_ms = h->peer_timeout_ms != 0 ? h->peer_timeout_ms : HOSTD_PEER_TIMEOUT_MS;
	l->wedge_ms = WEDGE_MS;
#ifdef NKP_TEST_HOOKS
	if (getenv("NKP_TEST_NNG_WEDGE_MS") != NULL) {
		l->wedge_ms = strtoull(getenv("NKP_TEST_NNG_WEDGE_MS"), NULL, 10);
	}
#endif
	l->peers = calloc(l->max_peers + 1, sizeof(*l->peers));
	if (l->peers == NULL || pthread_mutex_init(&l->lock, NULL) != 0) {
		return NKP_ERR_NOMEM;
	}
	l->lock_made = true;
	if (nng_rep0_open(&l->sock) != 0) {
		return NKP_ERR_NOMEM;
	}
	if (nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_PRE, on_pipe_add, l) != 0 ||
	    nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, on_pipe_rem, l) != 0 ||
	    nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, NKPI_PUSH_MAX) != 0 ||
	    nng_listener_create(&l->listener, l->sock, url) != 0 ||
	    nng_listener_start(l->listener, 0) != 0) {
		return NKP_ERR_NET;
	}
	for (size_t i = 0; i < LISTEN_CONTEXTS; i++) {
		lctx *c = &l->ctxs[i];

		c->h = h;
		c->l = l;
		if (nng_aio_alloc(&c->aio, on_io, c) != 0 || nng_ctx_open(&c->ctx, l->sock) != 0) {
			return NKP_ERR_NOMEM;
		}
	}
	for (size_t i = 0; i < LISTEN_CONTEXTS; i++) {
		nng_ctx_recv(l->ctxs[i].ctx, l->ctxs[i].aio);
	}
	if (!reaper_add(l)) {
		return NKP_ERR_NOMEM;
	}
	return resolve_url(l, url);
}

nkp_err nkp_hostd_listen(nkp_hostd *h, const char *url)
{
	hostd_listener *l;
	nkp_err err;

	if (h == NULL || url == NULL || strlen(url) >= LISTEN_URL_MAX) {
		return NKP_ERR_INVALID;
	}
	if (h->listener != NULL) {
		return NKP_ERR_STATE;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = listener_start(l, h, url);
	if (err != NKP_OK) {
		hostd_listener_stop(l);
		return err;
	}
	h->listener = l;
	return NKP_OK;
}

nkp_err nkp_hostd_set_listen_limits(nkp_hostd *h, unsigned max_peers, unsigned max_per_address,
				    unsigned peer_timeout_ms)
{
	if (h == NULL) {
		return NKP_ERR_INVALID;
	}
	if (h->listener != NULL) {
		return NKP_ERR_STATE;
	}
	h->max_peers = max_peers;
	h->max_peers_per_address = max_per_address;
	h->peer_timeout_ms = peer_timeout_ms;
	return NKP_OK;
}

const char *nkp_hostd_listen_url(const nkp_hostd *h)
{
	return h == NULL || h->listener == NULL ? NULL : h->listener->url;
}

void hostd_listener_stop(hostd_listener *l)
{
	if (l == NULL) {
		return;
	}
	if (l->reaped) {
		reaper_remove(l);
	}
	/* Closing the socket fails pending operations with NNG_ECLOSED; the
	 * callbacks then stop re-arming. nng_aio_stop waits for them. */
	if (nng_socket_id(l->sock) > 0) {
		nng_close(l->sock);
	}
	for (size_t i = 0; i < LISTEN_CONTEXTS; i++) {
		if (l->ctxs[i].aio != NULL) {
			nng_aio_stop(l->ctxs[i].aio);
			nng_aio_free(l->ctxs[i].aio);
		}
	}
	if (l->lock_made) {
		pthread_mutex_destroy(&l->lock);
	}
	free(l->peers);
	free(l);
}
