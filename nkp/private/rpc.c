/* Local request/reply over nng (nkp/private/rpc.h): peers and their
 * check, the REP server with its contexts and listener watchdog, and the
 * one-request client. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include <nkp/log.h>

#include "internal.h"
#include "rpc.h"

#define DEFAULT_WATCH_MS 3000u
#define DEFAULT_PROBE_TIMEOUT_MS 3000u
#define PROBE_MAX_WAIT_MS 120000
#define PROBE_POLL_MS 100u
#define PROBE_FAILURES 2
#define RELISTEN_WAIT_MS 10000u
#define RELISTEN_POLL_MS 10u

/* ---- peers ---- */

void nkpi_rpc_peer_get(nng_msg *msg, nkpi_rpc_peer *out)
{
	nng_pipe p = nng_msg_get_pipe(msg);
	uint64_t v;

	memset(out, 0, sizeof(*out));
	out->uid = out->gid = out->pid = UINT64_MAX;
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &v) == 0) {
		out->uid = v;
	}
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &v) == 0) {
		out->gid = v;
	}
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &v) == 0) {
		out->pid = v;
	}
	out->known = out->uid != UINT64_MAX;
}

/* True if the "Groups:" line of /proc/PID/status lists `gid`. */
static bool proc_groups_have(uint64_t pid, uint64_t gid)
{
	char path[64], line[4096];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%llu/status", (unsigned long long)pid);
	f = fopen(path, "re");
	if (f == NULL) {
		return false;
	}
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *s, *end;

		if (strncmp(line, "Groups:", 7) != 0) {
			continue;
		}
		for (s = line + 7;; s = end) {
			unsigned long long g;

			errno = 0;
			g = strtoull(s, &end, 10);
			if (end == s || errno != 0) {
				break;
			}
			found = found || g == gid;
		}
		break;
	}
	fclose(f);
	return found;
}

bool nkpi_rpc_peer_allowed(const nkpi_rpc_peer *p, int64_t group)
{
	if (!p->known) {
		return false;
	}
	if (p->uid == 0 || p->uid == (uint64_t)geteuid()) {
		return true;
	}
	if (group < 0) {
		return false;
	}
	/* The group the connection was made with, or a supplementary one
	 * of the process (read while it waits for our reply). */
	return p->gid == (uint64_t)group ||
	       (p->pid != UINT64_MAX && p->pid != 0 && proc_groups_have(p->pid, (uint64_t)group));
}

/* ---- server ---- */

typedef struct rctx {
	nkpi_rpc_server *s;
	nng_ctx ctx;
	nng_aio *aio;
	pthread_t thread;
	bool thread_started;
	bool sending; /* callback mode: the aio carries our reply */
} rctx;

struct nkpi_rpc_server {
	nkpi_rpc_server_config cfg;
	char url[PATH_MAX + 8];
	nng_socket sock;
	bool sock_open;
	rctx *ctxs;
	/* Guards the listener: the watchdog and the test hook replace or
	 * close it. */
	pthread_mutex_t listen_lock;
	nng_listener listener;
	/* Requests in flight (handler started, reply not yet handed to nng)
	 * and served: a probe that fails while one is in flight, or while
	 * others were served, says nothing about the listener; a new listener
	 * waits for none to be in flight. */
	atomic_uint busy;
	atomic_uint_fast64_t served;
	/* The watchdog. */
	pthread_t watch;
	bool watch_started;
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	bool watch_exited; /* under watch_lock */
	atomic_bool stopping;
	bool wedged; /* the test hook closed the listener once */
};

void nkpi_rpc_msg_free(nng_msg *m, bool wipe)
{
	if (m == NULL) {
		return;
	}
	if (wipe) {
		sodium_memzero(nng_msg_body(m), nng_msg_len(m));
	}
	nng_msg_free(m);
}

static void reply_free(const nkpi_rpc_server *s, uint8_t *reply, size_t len)
{
	if (s->cfg.reply_free != NULL) {
		s->cfg.reply_free(reply, len);
		return;
	}
	if (s->cfg.wipe_replies) {
		sodium_memzero(reply, len);
	}
	free(reply);
}

/* A request is in flight from the handler's start until its reply is
 * handed to nng (or dropped). */
static void request_done(nkpi_rpc_server *s)
{
	atomic_fetch_add(&s->served, 1);
	atomic_fetch_sub(&s->busy, 1);
}

/* Runs the handler on `msg` and turns `msg` into its reply. False when
 * there is none: `msg` is then freed and the request no longer in flight
 * (see request_done()). */
static bool serve(nkpi_rpc_server *s, nng_msg *msg)
{
	nkpi_rpc_peer peer;
	uint8_t *out = NULL;
	size_t outlen = 0;
	nkp_err err;

	nkpi_rpc_peer_get(msg, &peer);
	atomic_fetch_add(&s->busy, 1);
	err = s->cfg.handle(s->cfg.arg, &peer, nng_msg_body(msg), nng_msg_len(msg), &out, &outlen);
	sodium_memzero(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_clear(msg);
	if (err == NKP_OK && nng_msg_append(msg, out, outlen) != 0) {
		err = NKP_ERR_NOMEM;
	}
	if (out != NULL) {
		reply_free(s, out, outlen);
	}
	if (err != NKP_OK) {
		nkpi_rpc_msg_free(msg, s->cfg.wipe_replies);
		request_done(s);
		return false;
	}
	return true;
}

/* Callback mode: one context's receive, handle, send loop. */
static void on_io(void *arg)
{
	rctx *c = arg;
	int rv = nng_aio_result(c->aio);

	if (c->sending) {
		c->sending = false;
		if (rv != 0) {
			nkpi_rpc_msg_free(nng_aio_get_msg(c->aio), c->s->cfg.wipe_replies);
		}
	} else if (rv == 0) {
		nng_msg *msg = nng_aio_get_msg(c->aio);

		if (serve(c->s, msg)) {
			c->sending = true;
			nng_aio_set_msg(c->aio, msg);
			nng_ctx_send(c->ctx, c->aio);
			request_done(c->s);
			return;
		}
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		return;
	}
	nng_ctx_recv(c->ctx, c->aio);
}

/* Threaded mode: the same loop on a thread of its own, until the socket
 * closes. */
static void *ctx_thread(void *arg)
{
	rctx *c = arg;

	for (;;) {
		nng_msg *msg;
		int rv;

		nng_ctx_recv(c->ctx, c->aio);
		nng_aio_wait(c->aio);
		rv = nng_aio_result(c->aio);
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
			break;
		}
		if (rv != 0) {
			continue;
		}
		msg = nng_aio_get_msg(c->aio);
		if (!serve(c->s, msg)) {
			continue;
		}
		nng_aio_set_msg(c->aio, msg);
		nng_ctx_send(c->ctx, c->aio);
		nng_aio_wait(c->aio);
		if (nng_aio_result(c->aio) != 0) {
			nkpi_rpc_msg_free(msg, c->s->cfg.wipe_replies);
		}
		request_done(c->s);
	}
	return NULL;
}

/* listen_lock held. */
static nkp_err listener_start(nkpi_rpc_server *s)
{
	if (nng_listener_create(&s->listener, s->sock, s->url) != 0) {
		return NKP_ERR_NET;
	}
	if (nng_listener_set_int(s->listener, NNG_OPT_IPC_PERMISSIONS, s->cfg.mode) != 0 ||
	    nng_listener_start(s->listener, 0) != 0) {
		nng_listener_close(s->listener);
		return NKP_ERR_NET;
	}
	if (s->cfg.group >= 0 && chown(s->cfg.path, (uid_t)-1, (gid_t)s->cfg.group) != 0) {
		int e = errno;

		nng_listener_close(s->listener);
		errno = e;
		return NKP_ERR_PERM;
	}
	return NKP_OK;
}

nkp_err nkpi_rpc_server_relisten(nkpi_rpc_server *s)
{
	nkp_err err;

	pthread_mutex_lock(&s->listen_lock);
	/* nng 1.5.2 can crash, or lose a context, when a reply goes to a
	 * pipe that a listener being closed is tearing down: let the
	 * requests in flight be answered first (bounded: a handler stuck for
	 * that long would keep the listener wedged). */
	for (unsigned waited = 0; atomic_load(&s->busy) != 0 && waited < RELISTEN_WAIT_MS;
	     waited += RELISTEN_POLL_MS) {
		nng_msleep(RELISTEN_POLL_MS);
	}
	nng_listener_close(s->listener);
	err = listener_start(s);
	pthread_mutex_unlock(&s->listen_lock);
	return err;
}

void nkpi_rpc_server_test_wedge(nkpi_rpc_server *s)
{
	pthread_mutex_lock(&s->listen_lock);
	nng_listener_close(s->listener);
	pthread_mutex_unlock(&s->listen_lock);
}

/* ---- the listener watchdog ---- */

static void probe_done(void *arg)
{
	atomic_store((atomic_bool *)arg, true);
}

/* True unless the listener looks wedged: no reply while the server sat
 * idle for probe_timeout_ms. While it is busy the probe waits for its
 * turn, so its request is never left behind to be answered on a closed
 * pipe. */
static bool probe(nkpi_rpc_server *s)
{
	unsigned timeout_ms =
		s->cfg.probe_timeout_ms != 0 ? s->cfg.probe_timeout_ms : DEFAULT_PROBE_TIMEOUT_MS;
	atomic_bool done = false;
	nng_socket sock;
	nng_aio *aio = NULL;
	bool ok = false;
	unsigned idle_ms = 0;

	if (nng_req0_open(&sock) != 0) {
		return true; /* cannot tell: not the listener's fault */
	}
	if (nng_aio_alloc(&aio, probe_done, &done) != 0) {
		nng_close(sock);
		return true;
	}
	nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, (nng_duration)timeout_ms);
	nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if (nng_dial(sock, s->url, NULL, 0) != 0 ||
	    nng_send(sock, (void *)s->cfg.probe, s->cfg.probe_len, 0) != 0) {
		goto out;
	}
	nng_aio_set_timeout(aio, PROBE_MAX_WAIT_MS);
	nng_recv_aio(sock, aio);
	while (!atomic_load(&done) && idle_ms < timeout_ms && !atomic_load(&s->stopping)) {
		uint_fast64_t served = atomic_load(&s->served);

		nng_msleep(PROBE_POLL_MS);
		idle_ms = atomic_load(&s->busy) == 0 && atomic_load(&s->served) == served
				  ? idle_ms + PROBE_POLL_MS
				  : 0;
	}
	nng_aio_cancel(aio);
	nng_aio_wait(aio);
	if (nng_aio_result(aio) == 0) {
		ok = true;
		nng_msg_free(nng_aio_get_msg(aio));
	}
out:
	nng_aio_free(aio);
	nng_close(sock);
	return ok;
}

#ifdef NKP_TEST_HOOKS
/* See test_wedge_env in rpc.h. Right after a probe, so the socket is known
 * to have been serving; a client's request under way at that moment would
 * lose its pipe. */
static void test_probed(nkpi_rpc_server *s, bool answered)
{
	const char *env = s->cfg.test_wedge_env != NULL ? getenv(s->cfg.test_wedge_env) : NULL;

	if (env == NULL) {
		return;
	}
	nkp_log(NKP_LOG_INFO, s->cfg.test_log_id, "%s probe %s", s->cfg.name,
		answered ? "answered" : "failed");
	if (answered && !s->wedged && strcmp(env, "1") == 0) {
		s->wedged = true;
		nkpi_rpc_server_test_wedge(s);
		nkp_log(NKP_LOG_WARN, s->cfg.test_log_id, "%s: %s listener closed",
			s->cfg.test_wedge_env, s->cfg.name);
	}
}
#else
static inline void test_probed(nkpi_rpc_server *s, bool answered)
{
	(void)s;
	(void)answered;
}
#endif

/* watch_lock held. Waits watch_ms on the monotonic clock (a wall clock
 * stepped back must not stall the watchdog). False when told to stop. */
static bool watch_wait(nkpi_rpc_server *s)
{
	uint64_t due = nkpi_mono_ms() + (s->cfg.watch_ms != 0 ? s->cfg.watch_ms : DEFAULT_WATCH_MS);

	while (!atomic_load(&s->stopping) && nkpi_mono_ms() < due) {
		struct timespec until = nkpi_mono_timespec(due);

		pthread_cond_timedwait(&s->watch_cond, &s->watch_lock, &until);
	}
	return !atomic_load(&s->stopping);
}

static void *watch_thread(void *arg)
{
	nkpi_rpc_server *s = arg;
	int failures = 0;

	pthread_mutex_lock(&s->watch_lock);
	while (watch_wait(s)) {
		bool answered;

		pthread_mutex_unlock(&s->watch_lock);
		answered = probe(s);
		if (!atomic_load(&s->stopping)) {
			test_probed(s, answered);
			failures = answered ? 0 : failures + 1;
		}
		if (failures >= PROBE_FAILURES) {
			nkp_err err = nkpi_rpc_server_relisten(s);

			failures = 0;
			if (s->cfg.on_relisten != NULL) {
				s->cfg.on_relisten(s->cfg.arg, err);
			}
		}
		pthread_mutex_lock(&s->watch_lock);
	}
	s->watch_exited = true;
	pthread_cond_broadcast(&s->watch_cond);
	pthread_mutex_unlock(&s->watch_lock);
	return NULL;
}

/* ---- start and stop ---- */

static nkp_err contexts_open(nkpi_rpc_server *s)
{
	s->ctxs = calloc(s->cfg.contexts, sizeof(*s->ctxs));
	if (s->ctxs == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (unsigned i = 0; i < s->cfg.contexts; i++) {
		rctx *c = &s->ctxs[i];

		c->s = s;
		if (nng_aio_alloc(&c->aio, s->cfg.threaded ? NULL : on_io, c) != 0 ||
		    nng_ctx_open(&c->ctx, s->sock) != 0) {
			return NKP_ERR_NOMEM;
		}
	}
	for (unsigned i = 0; i < s->cfg.contexts; i++) {
		rctx *c = &s->ctxs[i];

		if (!s->cfg.threaded) {
			nng_ctx_recv(c->ctx, c->aio);
		} else if (pthread_create(&c->thread, NULL, ctx_thread, c) != 0) {
			return NKP_ERR_NOMEM;
		} else {
			c->thread_started = true;
		}
	}
	return NKP_OK;
}

static nkp_err socket_open(nkpi_rpc_server *s)
{
	nkp_err err;

	if (nng_rep0_open(&s->sock) != 0) {
		return NKP_ERR_NOMEM;
	}
	s->sock_open = true;
	if (nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, s->cfg.max_request) != 0) {
		return NKP_ERR_NET;
	}
	pthread_mutex_lock(&s->listen_lock);
	err = listener_start(s);
	pthread_mutex_unlock(&s->listen_lock);
	return err;
}

static nkp_err watch_start(nkpi_rpc_server *s)
{
	if (s->cfg.probe == NULL) {
		return NKP_OK;
	}
	if (pthread_create(&s->watch, NULL, watch_thread, s) != 0) {
		return NKP_ERR_NOMEM;
	}
	s->watch_started = true;
	return NKP_OK;
}

nkp_err nkpi_rpc_server_start(const nkpi_rpc_server_config *cfg, nkpi_rpc_server **out)
{
	nkpi_rpc_server *s;
	nkp_err err;
	int e;

	if (cfg->path == NULL || cfg->handle == NULL || cfg->contexts == 0) {
		return NKP_ERR_INVALID;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return NKP_ERR_NOMEM;
	}
	s->cfg = *cfg;
	pthread_mutex_init(&s->listen_lock, NULL);
	pthread_mutex_init(&s->watch_lock, NULL);
	nkpi_mono_cond_init(&s->watch_cond);
	if ((size_t)snprintf(s->url, sizeof(s->url), "ipc://%s", cfg->path) >= sizeof(s->url)) {
		err = NKP_ERR_INVALID;
	} else if ((err = socket_open(s)) == NKP_OK && (err = contexts_open(s)) == NKP_OK) {
		err = watch_start(s);
	}
	if (err != NKP_OK) {
		e = errno;
		nkpi_rpc_server_stop(s);
		errno = e;
		return err;
	}
	*out = s;
	return NKP_OK;
}

/* Tells the watchdog to stop and waits for it, `limit_ms` at most (0:
 * no limit). False if it is still in a probe then: stuck in an nng call
 * that never returns (nng 1.5's reaper wedged). */
static bool watch_stop(nkpi_rpc_server *s, uint64_t limit_ms)
{
	uint64_t due = nkpi_mono_ms() + limit_ms;
	bool exited;

	pthread_mutex_lock(&s->watch_lock);
	atomic_store(&s->stopping, true);
	pthread_cond_broadcast(&s->watch_cond);
	while (!s->watch_exited && (limit_ms == 0 || nkpi_mono_ms() < due)) {
		if (limit_ms == 0) {
			pthread_cond_wait(&s->watch_cond, &s->watch_lock);
		} else {
			struct timespec until = nkpi_mono_timespec(due);

			pthread_cond_timedwait(&s->watch_cond, &s->watch_lock, &until);
		}
	}
	exited = s->watch_exited;
	pthread_mutex_unlock(&s->watch_lock);
	if (exited) {
		pthread_join(s->watch, NULL);
	}
	return exited;
}

bool nkpi_rpc_server_stop_within(nkpi_rpc_server *s, uint64_t limit_ms)
{
	if (s == NULL) {
		return true;
	}
	if (s->watch_started && !watch_stop(s, limit_ms)) {
		return false; /* nothing freed: the process is to exit */
	}
	s->watch_started = false;
	nkpi_rpc_server_stop(s);
	return true;
}

void nkpi_rpc_server_stop(nkpi_rpc_server *s)
{
	if (s == NULL) {
		return;
	}
	if (s->watch_started) {
		(void)watch_stop(s, 0);
	}
	/* Closing the socket fails pending operations with NNG_ECLOSED:
	 * threads leave their loops, callbacks stop re-arming. nng_aio_stop
	 * waits for a callback that is running; a reply it then tried to
	 * send is still on the aio. */
	if (s->sock_open) {
		nng_close(s->sock);
	}
	for (unsigned i = 0; s->ctxs != NULL && i < s->cfg.contexts; i++) {
		rctx *c = &s->ctxs[i];

		if (c->thread_started) {
			pthread_join(c->thread, NULL);
		}
		if (c->aio != NULL) {
			nng_aio_stop(c->aio);
			if (c->sending) {
				nkpi_rpc_msg_free(nng_aio_get_msg(c->aio), s->cfg.wipe_replies);
			}
			nng_aio_free(c->aio);
		}
	}
	free(s->ctxs);
	pthread_cond_destroy(&s->watch_cond);
	pthread_mutex_destroy(&s->watch_lock);
	pthread_mutex_destroy(&s->listen_lock);
	free(s);
}

/* ---- client ---- */

nkp_err nkpi_rpc_err(int rv)
{
	switch (rv) {
	case 0:
		return NKP_OK;
	case NNG_ENOMEM:
		return NKP_ERR_NOMEM;
	case NNG_ETIMEDOUT:
		return NKP_ERR_TIMEOUT;
	case NNG_EPERM:
		return NKP_ERR_PERM;
	default:
		return NKP_ERR_NET;
	}
}

/* nng's REQ would otherwise send the request again by itself, to the new
 * listener, when the connection closes under it: changing requests
 * included. With resending off, a reset reaches nkpi_rpc_call. */
static int dial(const char *url, const nkpi_rpc_call_opts *o, nng_socket *out, nkpi_rpc_step *step)
{
	nng_socket s;
	int rv;

	*step = NKPI_RPC_OPEN;
	if ((rv = nng_req0_open(&s)) != 0) {
		return rv;
	}
	rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, o->max_reply);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, o->recv_timeout_ms);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, o->send_timeout_ms);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if (rv == 0) {
		*step = NKPI_RPC_DIAL;
		rv = nng_dial(s, url, NULL, 0);
	}
	if (rv != 0) {
		nng_close(s);
		return rv;
	}
	*out = s;
	return 0;
}

static int call_once(const char *url, const uint8_t *req, size_t len, const nkpi_rpc_call_opts *o,
		     nng_msg **reply, nkpi_rpc_step *step)
{
	nng_socket s;
	nng_msg *msg = NULL;
	int rv = dial(url, o, &s, step);

	if (rv != 0) {
		return rv;
	}
	*step = NKPI_RPC_SEND;
	rv = nng_msg_alloc(&msg, 0);
	rv = rv != 0 ? rv : nng_msg_append(msg, req, len);
	rv = rv != 0 ? rv : nng_sendmsg(s, msg, 0);
	if (rv != 0) {
		nkpi_rpc_msg_free(msg, true);
	} else {
		*step = NKPI_RPC_RECV;
		rv = nng_recvmsg(s, reply, 0);
	}
	nng_close(s);
	return rv;
}

int nkpi_rpc_call(const char *url, const uint8_t *req, size_t len, const nkpi_rpc_call_opts *o,
		  nng_msg **reply, nkpi_rpc_step *step)
{
	nng_msg *msg = NULL;
	int rv;

	for (int attempt = 0;; attempt++) {
		rv = call_once(url, req, len, o, &msg, step);
		if (rv != NNG_ECONNRESET || !o->read_only || attempt == NKPI_RPC_RESET_RETRIES) {
			break;
		}
		nng_msleep(NKPI_RPC_RESET_PAUSE_MS);
	}
	if (rv == 0) {
		*reply = msg;
	}
	return rv;
}
