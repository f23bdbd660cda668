/* The live side of each host: its nng REQ socket and aios, its Noise
 * session, and one exchange at a time driven from nng's callback threads
 * (IDLE -> PREPARING -> SENDING -> RECEIVING -> IDLE). Requests are built
 * and sealed outside nkpd_svc.lock. */
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

static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg);
static nkp_err pack_sealed(const nkpd_host *h, const Nkp__Wire__Message *m, uint8_t **frame,
			   size_t *framelen);
static nkp_err build_hello(const nkpd_host *h, uint8_t **frame, size_t *framelen);
static nkp_err build_push(const nkpd_host *h, uint8_t **frame, size_t *framelen);
static void wake_cb(void *arg);
static void host_cb(void *arg);

uint64_t nkpd_sync_backoff_ms(unsigned failures)
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

nkp_err nkpd_sync_host_open(nkpd_svc *s, nkpd_host *h)
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
		nkpd_sync_set_due(s, h, 0);
		nkpd_sync_kick(s);
	}
	pthread_mutex_unlock(&s->lock);
	if (cancel) {
		nng_aio_cancel(h->link->aio);
	}
}

/* Every host gets its link before anything here touches it; a link is
 * small, and its allocation aborts on exhaustion like a reply's. */
void nkpd_sync_link_attach(nkpd_svc *s, nkpd_host *h)
{
	if (h->link == NULL) {
		h->link = nkpd_util_xcalloc(1, sizeof(*h->link));
		h->link->svc = s;
	}
}

void nkpd_sync_link_free(nkpd_host *h)
{
	if (h->link != NULL) {
		nkpi_session_free(h->link->sess);
		nkpd_desired_release(h->link->pushed_snap);
		free(h->link);
		h->link = NULL;
	}
}

void nkpd_sync_host_shutdown(nkpd_host *h)
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
	nkpd_sealpol_release(h->link->hello_pol);
	h->link->hello_pol = NULL;
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
	if (h->link->attest_asked) {
		hello.attest_nonce.data = (uint8_t *)h->link->attest_nonce;
		hello.attest_nonce.len = sizeof(h->link->attest_nonce);
		hello.attest_pcrs = h->link->attest_pcrs;
	}
	hello.want_ek = h->link->ek_asked;
	if (h->link->activating) {
		hello.activate_blob.data = (uint8_t *)h->att.blob;
		hello.activate_blob.len = h->att.blob_len;
		hello.activate_secret.data = (uint8_t *)h->att.secret;
		hello.activate_secret.len = h->att.secret_len;
	}
	if (h->link->hello_pol != NULL) {
		hello.seal_policy = h->link->hello_pol->msg;
	}
	hello.seal_unbind = h->link->hello_unbind;
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = &hello;
	return pack_sealed(h, &m, frame, framelen);
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

/* Lock held. A push of the trusted snapshot to a host that is no longer
 * trusted becomes a push of the snapshot it now gets (true). */
static bool trust_lost(nkpd_host *h)
{
	nkpd_svc *s = h->link->svc;
	nkpd_desired *d = nkpd_host_snap(s, h);

	if (h->link->req != REQ_PUSH || h->link->push_snap == NULL ||
	    !h->link->push_snap->trusted || d == h->link->push_snap) {
		return false;
	}
	nkpd_desired_release(h->link->push_snap);
	atomic_fetch_add(&d->refs, 1);
	h->link->push_snap = d;
	h->link->push_generation = d->generation;
	h->link->push_resync = nkpd_sync_wants_resync(h);
	nkpd_sync_set_pushed(h, d);
	return true;
}

/* Sends the request, or first the handshake it needs: with no usable
 * session, past the rekey budget, or after a (re)connected pipe. A request
 * never rides in a handshake. */
void nkpd_sync_start_request(nkpd_host *h)
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
		nkpd_sync_finish_failure(h, err, HEALTH_UNREACHABLE, "cannot build the request");
		return;
	}
	if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, frame, framelen) != 0) {
		nng_msg_free(msg);
		free(frame);
		nkpd_sync_finish_failure(h, NKP_ERR_NOMEM, HEALTH_UNREACHABLE,
					 "cannot build the request");
		return;
	}
	free(frame);
	pthread_mutex_lock(&h->link->svc->lock);
	if (h->link->pipe_new) {
		/* A new pipe came up while this was sealed: seal it again. */
		pthread_mutex_unlock(&h->link->svc->lock);
		nng_msg_free(msg);
		nkpd_sync_start_request(h);
		return;
	}
	if (!hs && trust_lost(h)) {
		/* The host stopped being trusted while its push was sealed:
		 * the trusted keys stay here; what it may hold goes instead. */
		pthread_mutex_unlock(&h->link->svc->lock);
		nng_msg_free(msg);
		nkpd_sync_start_request(h);
		return;
	}
	h->link->io = IO_SENDING;
	h->link->timed_out = false;
	nkpd_sync_set_deadline(h->link->svc, h, SEND_TIMEOUT_MS);
	pthread_mutex_unlock(&h->link->svc->lock);
	nng_aio_set_msg(h->link->aio, msg);
	nng_aio_set_timeout(h->link->aio, NNG_DURATION_INFINITE);
	nng_send_aio(h->link->sock, h->link->aio);
}

/* Lock held. Records a failed exchange and its events. */
void nkpd_sync_fail_locked(nkpd_svc *s, nkpd_host *h, nkp_err err, nkpd_host_health health,
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
	if (h->link->attest_asked) {
		h->link->attest_asked = false;
		h->link->ek_asked = false;
		h->link->activating = false;
		/* Asked again a heartbeat later (a push, a wipe among them, may
		 * go first). */
		h->att.due_ms = nkpi_mono_ms() + s->heartbeat_ms;
	}
	nkpd_attest_check_age(s, h);
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

void nkpd_sync_finish_failure(nkpd_host *h, nkp_err err, nkpd_host_health health, const char *what)
{
	nkpd_svc *s = h->link->svc;
	bool chain;

	pthread_mutex_lock(&s->lock);
	nkpd_sync_fail_locked(s, h, err, health, what);
	chain = nkpd_sync_next_step(s, h);
	pthread_mutex_unlock(&s->lock);
	if (chain) {
		nkpd_sync_start_request(h);
	} else {
		nkpd_sync_refill(s);
	}
}

static void wake_cb(void *arg)
{
	nkpd_host *h = arg;
	int rv = nng_aio_result(h->link->wake);

	if (rv != 0) {
		nkpd_sync_finish_failure(h, NKP_ERR_NET, HEALTH_UNREACHABLE, nng_strerror(rv));
		return;
	}
	nkpd_sync_start_request(h);
}

/* The request's send ended with `rv`: wait for the reply, or fail. */
static void sent(nkpd_host *h, int rv)
{
	bool repipe;

	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(h->link->aio));
		nng_aio_set_msg(h->link->aio, NULL);
		nkpd_sync_finish_failure(h, rv == NNG_ETIMEDOUT ? NKP_ERR_TIMEOUT : NKP_ERR_NET,
					 HEALTH_UNREACHABLE, nng_strerror(rv));
		return;
	}
	pthread_mutex_lock(&h->link->svc->lock);
	h->link->io = IO_RECEIVING;
	nkpd_sync_set_deadline(h->link->svc, h, RECV_TIMEOUT_MS);
	if (h->link->timed_out) {
		rv = NNG_ECANCELED; /* cancelled as the send completed */
	}
	repipe = h->link->repipe; /* a new pipe came up as the send completed */
	h->link->repipe = false;
	pthread_mutex_unlock(&h->link->svc->lock);
	if (repipe && rv == 0) {
		nkpd_sync_start_request(h);
		return;
	}
	if (rv != 0) {
		nkpd_sync_finish_failure(h, NKP_ERR_TIMEOUT, HEALTH_UNREACHABLE,
					 "not sent in time");
		return;
	}
	nng_recv_aio(h->link->sock, h->link->aio);
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
		nkpd_sync_start_request(h);
		return;
	}
	if (rv == NNG_ECANCELED && h->link->timed_out) {
		rv = NNG_ETIMEDOUT; /* cancelled by the tick for its deadline */
	}
	if (h->link->io == IO_SENDING) {
		sent(h, rv);
		return;
	}
	if (rv != 0) {
		nkpd_sync_finish_failure(h, rv == NNG_ETIMEDOUT ? NKP_ERR_TIMEOUT : NKP_ERR_NET,
					 HEALTH_UNREACHABLE,
					 rv == NNG_ETIMEDOUT ? "no answer" : nng_strerror(rv));
		return;
	}
	msg = nng_aio_get_msg(h->link->aio);
	nng_aio_set_msg(h->link->aio, NULL);
	nkpd_sync_handle_reply(h, nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
}
