/* The admin API server: nng REP on ipc://DIR/admin.sock, mode 0600, every
 * request's peer uid checked against ours (or root). One thread serves
 * requests one at a time; requests are small and quick except backup and
 * restore, whose Argon2id runs outside svc.lock so the reconciler keeps
 * going. Garbage, truncated or oversized requests get an error reply and
 * the server keeps serving. Request bytes (which may hold a backup
 * password) are wiped as soon as they are parsed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "internal.h"
#include "nkpd.h"

#define ADMIN_API_VERSION 1u
#define DEFAULT_EVENTS_MAX 1000u
#define WIPE_WAIT_MS 5000u /* host remove: how long a host has to confirm its wipe */
#define WIPE_POLL_MS 50u

struct admin_server {
	svc *svc;
	nng_socket sock;
	nng_listener listener;
	char url[PATH_MAX + 16];
	pthread_t thread;
	bool thread_started;
	/* The listener watchdog (see watch_thread). */
	pthread_t watch;
	bool watch_started;
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_cond;
	bool stopping;
	/* Set by the admin thread: a probe that fails while a request is
	 * being served (a backup, a host removal waiting for its wipe) or
	 * while others were served says nothing about the listener. */
	atomic_bool busy;
	atomic_uint_fast64_t served;
};

/* ---- hosts ---- */

static bool address_valid(const char *a)
{
	size_t n = strlen(a);

	if (n > SVC_MAX_ADDRESS || n < 7) {
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

static nkp_err host_validate(svc *s, const Nkp__Admin__HostAddRequest *r, admin_resp *resp)
{
	if (!svc_name_valid(r->name)) {
		resp_fail(resp, NKP_ERR_INVALID, "invalid host name (1-64 of A-Z a-z 0-9 . _ -)");
	} else if (!address_valid(r->address)) {
		resp_fail(resp, NKP_ERR_INVALID,
			  "invalid address %.80s (tcp://HOST:PORT or ipc://PATH)", r->address);
	} else if (r->public_key.len != NKP_PUBKEY_BYTES) {
		resp_fail(resp, NKP_ERR_INVALID, "a host public key is 32 bytes");
	} else if (r->cluster[0] != '\0' && !svc_name_valid(r->cluster)) {
		resp_fail(resp, NKP_ERR_INVALID, "invalid cluster name");
	} else if (svc_host_find(s, r->name) != NULL) {
		resp_fail(resp, NKP_ERR_EXISTS, "a host named %s is already enrolled", r->name);
	} else if (s->n_hosts >= SVC_MAX_HOSTS) {
		resp_fail(resp, NKP_ERR_TOO_LARGE, "too many hosts");
	} else {
		return NKP_OK;
	}
	return (nkp_err)resp->code;
}

static nkp_err host_append(svc *s, svc_host *h)
{
	svc_host **nh = realloc(s->hosts, (s->n_hosts + 1) * sizeof(*nh));
	nkp_err err;

	if (nh == NULL) {
		return NKP_ERR_NOMEM;
	}
	s->hosts = nh;
	s->hosts[s->n_hosts++] = h;
	err = svc_state_save(s);
	if (err != NKP_OK) {
		s->n_hosts--;
	}
	return err;
}

static void host_add(svc *s, const Nkp__Admin__HostAddRequest *r, admin_resp *resp)
{
	svc_host *h = NULL;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	if (host_validate(s, r, resp) != NKP_OK) {
		goto out_unlock;
	}
	/* Low-order points are refused: a key no peer can hold. */
	err = nkp_pubkey_check(s->identity, r->public_key.data);
	if (err != NKP_OK) {
		resp_fail(resp, err, "unusable host public key: %s", nkp_strerror(err));
		goto out_unlock;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		resp_fail(resp, NKP_ERR_NOMEM, "out of memory");
		goto out_unlock;
	}
	svc_copy_str(h->name, sizeof(h->name), r->name);
	svc_copy_str(h->address, sizeof(h->address), r->address);
	svc_copy_str(h->cluster, sizeof(h->cluster), r->cluster);
	memcpy(h->pub, r->public_key.data, NKP_PUBKEY_BYTES);
	h->enrolled_unix = nkpi_now();
	h->svc = s;
	err = host_append(s, h);
	if (err != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, r->name,
			  "could not write %s: %s; host %s was not enrolled", s->state_path,
			  nkp_strerror(err), r->name);
		resp_fail(resp, err, "host add: cannot persist the service state: %s",
			  nkp_strerror(err));
		svc_host_free(h);
		goto out_unlock;
	}
	if (s->sync != NULL && (err = s->sync->host_added(s->sync->ctx, h)) != NKP_OK) {
		snprintf(h->last_error, sizeof(h->last_error), "cannot dial: %s",
			 nkp_strerror(err));
	}
	nkp_event(s->events, NKP_EV_HOST_ENROLLED, NULL, r->name, "host %s enrolled at %s%s%s",
		  r->name, r->address, r->cluster[0] ? " in cluster " : "", r->cluster);
	resp_ok(resp, "host %s enrolled", r->name);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* Lock held. Has `h` wipe its keys (an empty desired state pushed to it
 * alone), waiting up to WIPE_WAIT_MS for its ack with the lock released
 * (the admin thread is the only one that removes hosts, so `h` stays).
 * True when it confirmed; otherwise the last error is in h->last_error. */
static bool wipe_host(svc *s, svc_host *h)
{
	bool wiped = false;

	if (s->sync->host_wipe(s->sync->ctx, h, true) != NKP_OK) {
		return false;
	}
	for (unsigned waited = 0; !wiped && waited < WIPE_WAIT_MS; waited += WIPE_POLL_MS) {
		pthread_mutex_unlock(&s->lock);
		nng_msleep(WIPE_POLL_MS);
		pthread_mutex_lock(&s->lock);
		wiped = s->sync->host_wiped(s->sync->ctx, h);
	}
	return wiped;
}

/* Lock held. Takes `h` out of the model and persists; puts it back on error. */
static nkp_err forget_host(svc *s, svc_host *h, admin_resp *resp)
{
	size_t i;
	nkp_err err;

	for (i = 0; i < s->n_hosts && s->hosts[i] != h; i++) {
	}
	memmove(&s->hosts[i], &s->hosts[i + 1], (s->n_hosts - i - 1) * sizeof(s->hosts[0]));
	s->n_hosts--;
	err = svc_state_save(s);
	if (err != NKP_OK) {
		memmove(&s->hosts[i + 1], &s->hosts[i], (s->n_hosts - i) * sizeof(s->hosts[0]));
		s->hosts[i] = h;
		s->n_hosts++;
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->name,
			  "could not write %s: %s; host %s was not removed", s->state_path,
			  nkp_strerror(err), h->name);
		resp_fail(resp, err, "host remove: cannot persist the service state: %s",
			  nkp_strerror(err));
	}
	return err;
}

static void host_remove(svc *s, const Nkp__Admin__HostRemoveRequest *r, admin_resp *resp)
{
	svc_host *h;
	bool live = s->sync != NULL; /* no reconciler (tests): nobody to tell */
	bool wiped = false;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	h = svc_host_find(s, r->name);
	if (h == NULL) {
		resp_fail(resp, NKP_ERR_NOT_FOUND, "no host named %s", r->name);
		goto out_unlock;
	}
	/* A host must not be wiped and then kept for want of disk space: check
	 * first that the state can be written at all. */
	if (live && (err = svc_state_save(s)) != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->name,
			  "could not write %s: %s; host %s was not removed", s->state_path,
			  nkp_strerror(err), h->name);
		resp_fail(resp, err, "host remove: cannot persist the service state: %s",
			  nkp_strerror(err));
		goto out_unlock;
	}
	wiped = live && wipe_host(s, h);
	if (live && !wiped) {
		nkp_event(s->events, NKP_EV_PUSH_FAILED, NULL, h->name,
			  "host %s did not confirm that it wiped its keys (%s)%s", h->name,
			  h->last_error[0] ? h->last_error : "no answer",
			  r->force ? "; forgotten anyway (--force)" : "; it stays enrolled");
	}
	if (live && !wiped && !r->force) {
		resp_fail(resp, NKP_ERR_TIMEOUT,
			  "host remove: host %s did not confirm that it wiped "
			  "its keys within %u s (%s); it stays enrolled; --force forgets it anyway",
			  h->name, WIPE_WAIT_MS / 1000u,
			  h->last_error[0] ? h->last_error : "no answer");
		(void)s->sync->host_wipe(s->sync->ctx, h, false);
		goto out_unlock;
	}
	if (forget_host(s, h, resp) != NKP_OK) {
		if (live) {
			(void)s->sync->host_wipe(s->sync->ctx, h, false);
		}
		goto out_unlock;
	}
	nkp_event(s->events, NKP_EV_HOST_REMOVED, NULL, r->name, "host %s removed%s", r->name,
		  !live	  ? ""
		  : wiped ? " after wiping its keys"
			  : " without wiping its keys (it did not answer)");
	resp_ok(resp, "host %s removed%s", r->name,
		!live	? ""
		: wiped ? "; it wiped its keys"
			: "; WARNING: it did not confirm that it wiped its keys and may still hold "
			  "them");
	pthread_mutex_unlock(&s->lock);
	if (live) {
		s->sync->host_release(s->sync->ctx, h);
	} else {
		svc_host_free(h);
	}
	return;
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* The operator says this host's generation may be replaced: after a
 * conflict (a host ahead of this service, or of another epoch). */
static void host_resync(svc *s, const Nkp__Admin__HostResyncRequest *r, admin_resp *resp)
{
	svc_host *h;

	pthread_mutex_lock(&s->lock);
	h = svc_host_find(s, r->name);
	if (h == NULL) {
		resp_fail(resp, NKP_ERR_NOT_FOUND, "no host named %s", r->name);
	} else if (s->sync == NULL) {
		resp_fail(resp, NKP_ERR_STATE, "the reconciler is not running");
	} else {
		s->sync->host_resync(s->sync->ctx, h);
		resp_ok(resp,
			"host %s: the next push replaces whatever generation it holds; "
			"`nkpctl host wait` shows when it is in sync",
			r->name);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- events ---- */

typedef struct ev_collect {
	Nkp__Admin__EventBatch *b;
	size_t max;
} ev_collect;

static void collect_event(uint64_t seq, const char *json, void *arg)
{
	ev_collect *c = arg;
	char *line;

	if (c->b->n_lines >= c->max) {
		return;
	}
	line = strdup(json);
	if (line == NULL) {
		return;
	}
	c->b->lines[c->b->n_lines++] = line;
	c->b->last_seq = seq;
}

static void events_read(svc *s, const Nkp__Admin__EventsRequest *r, admin_resp *resp)
{
	ev_collect c = {.max = r->max == 0 || r->max > DEFAULT_EVENTS_MAX ? DEFAULT_EVENTS_MAX
									  : r->max};
	char **lines = calloc(c.max, sizeof(*lines));

	c.b = calloc(1, sizeof(*c.b));
	if (c.b == NULL || lines == NULL) {
		free(c.b);
		free(lines);
		resp_fail(resp, NKP_ERR_NOMEM, "out of memory");
		return;
	}
	nkp__admin__event_batch__init(c.b);
	c.b->lines = lines;
	c.b->last_seq = r->after_seq;
	(void)nkp_eventlog_read(s->events_path, r->after_seq, collect_event, &c);
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_EVENTS;
	resp->events = c.b;
}

/* ---- dispatch ---- */

static void rotation_status(svc *s, const Nkp__Admin__RotationStatusRequest *r, admin_resp *resp)
{
	const svc_provider *p;

	pthread_mutex_lock(&s->lock);
	p = svc_provider_find(s, r->name);
	if (p == NULL) {
		resp_fail(resp, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
	} else {
		report_rotation(s, p, resp);
	}
	pthread_mutex_unlock(&s->lock);
}

static void locked_report(svc *s, void (*fn)(svc *, admin_resp *), admin_resp *resp)
{
	pthread_mutex_lock(&s->lock);
	fn(s, resp);
	pthread_mutex_unlock(&s->lock);
}

static void provider_show(svc *s, const char *name, admin_resp *resp)
{
	pthread_mutex_lock(&s->lock);
	report_provider(s, name, resp);
	pthread_mutex_unlock(&s->lock);
}

static void dispatch(svc *s, const Nkp__Admin__Request *q, admin_resp *resp)
{
	switch (q->op_case) {
	case NKP__ADMIN__REQUEST__OP_STATUS:
		locked_report(s, report_status, resp);
		if (resp->result_case == NKP__ADMIN__RESPONSE__RESULT_STATUS) {
			resp->status->mlock_failed = !nkp_memory_lock_check();
		}
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_ADD:
		host_add(s, q->host_add, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_REMOVE:
		host_remove(s, q->host_remove, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_RESYNC:
		host_resync(s, q->host_resync, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_LIST:
		locked_report(s, report_hosts, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE:
		svc_lc_create(s, q->provider_create, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_LIST:
		locked_report(s, report_providers, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_SHOW:
		provider_show(s, q->provider_show->name, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_SET_DEFAULT:
		svc_lc_set_default(s, q->provider_set_default, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP:
		svc_lc_backup(s, q->provider_backup, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP_CONFIRM:
		svc_lc_backup_confirm(s, q->provider_backup_confirm, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_RESTORE:
		svc_lc_restore(s, q->provider_restore, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE:
		svc_lc_rotate(s, q->provider_rotate, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_ROTATION_STATUS:
		rotation_status(s, q->rotation_status, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE:
		svc_lc_retire(s, q->provider_retire, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_DELETE:
		svc_lc_delete(s, q->provider_delete, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_EVENTS:
		events_read(s, q->events, resp);
		break;
	default:
		resp_fail(resp, NKP_ERR_PARSE, "unknown admin request");
		break;
	}
}

static nkp_err pack_response(const admin_resp *resp, uint8_t **out, size_t *outlen)
{
	size_t len = nkp__admin__response__get_packed_size(resp);
	uint8_t *buf = malloc(len + 1);

	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__admin__response__pack(resp, buf);
	*out = buf;
	*outlen = len;
	return NKP_OK;
}

nkp_err svc_admin_handle(svc *s, uint8_t *req, size_t len, uint64_t peer_uid, uint8_t **out,
			 size_t *outlen)
{
	admin_resp *resp = calloc(1, sizeof(*resp));
	Nkp__Admin__Request *q = NULL;
	uid_t me = geteuid();
	nkp_err err;

	if (resp == NULL) {
		sodium_memzero(req, len);
		return NKP_ERR_NOMEM;
	}
	nkp__admin__response__init(resp);
	if (peer_uid != (uint64_t)me && peer_uid != 0) {
		nkp_event(s->events, NKP_EV_BAD_INPUT, NULL, NULL,
			  "admin request from uid %llu refused", (unsigned long long)peer_uid);
		resp_fail(resp, NKP_ERR_PERM,
			  "permission denied: only root or uid %u may administer nkpd",
			  (unsigned)me);
	} else if (len > SVC_ADMIN_MAX ||
		   nkpi_pb_strict(&nkp__admin__request__descriptor, req, len) != NKP_OK ||
		   (q = nkp__admin__request__unpack(&nkpi_wiping_allocator, len, req)) == NULL ||
		   nkpi_has_unknown(&q->base)) {
		nkp_event(s->events, NKP_EV_BAD_INPUT, NULL, NULL,
			  "malformed admin request refused");
		resp_fail(resp, NKP_ERR_PARSE, "malformed admin request");
	} else if (q->api_version != ADMIN_API_VERSION) {
		resp_fail(resp, NKP_ERR_FORMAT_VERSION,
			  "admin API version %u not supported (want %u)", q->api_version,
			  ADMIN_API_VERSION);
	}
	sodium_memzero(req, len);
	if (resp->code == 0) {
		dispatch(s, q, resp);
	}
	if (q != NULL) {
		nkp__admin__request__free_unpacked(q, &nkpi_wiping_allocator);
	}
	err = pack_response(resp, out, outlen);
	report_free_response(resp);
	return err;
}

/* ---- server ---- */

static void serve_one(admin_server *a, nng_msg *msg)
{
	uint64_t uid = UINT64_MAX;
	uint8_t *out = NULL;
	size_t outlen = 0;
	nng_msg *reply = NULL;

	if (nng_pipe_get_uint64(nng_msg_get_pipe(msg), NNG_OPT_IPC_PEER_UID, &uid) != 0) {
		uid = UINT64_MAX;
	}
	if (svc_admin_handle(a->svc, nng_msg_body(msg), nng_msg_len(msg), uid, &out, &outlen) !=
	    NKP_OK) {
		nng_msg_free(msg);
		return;
	}
	nng_msg_free(msg);
	if (nng_msg_alloc(&reply, 0) == 0 && nng_msg_append(reply, out, outlen) == 0) {
		if (nng_sendmsg(a->sock, reply, 0) != 0) {
			nng_msg_free(reply);
		}
	} else {
		nng_msg_free(reply);
	}
	free(out);
}

static void *admin_thread(void *arg)
{
	admin_server *a = arg;

	for (;;) {
		nng_msg *msg = NULL;
		int rv = nng_recvmsg(a->sock, &msg, 0);

		if (rv == NNG_ECLOSED) {
			break;
		}
		if (rv != 0) {
			continue;
		}
		atomic_store(&a->busy, true);
		serve_one(a, msg);
		atomic_fetch_add(&a->served, 1);
		atomic_store(&a->busy, false);
	}
	return NULL;
}

static nkp_err listener_start(admin_server *a)
{
	if (nng_listener_create(&a->listener, a->sock, a->url) != 0) {
		return NKP_ERR_NET;
	}
	if (nng_listener_set_int(a->listener, NNG_OPT_IPC_PERMISSIONS, 0600) != 0 ||
	    nng_listener_start(a->listener, 0) != 0) {
		nng_listener_close(a->listener);
		return NKP_ERR_NET;
	}
	return NKP_OK;
}

static nkp_err admin_listen(admin_server *a, const char *dir)
{
	if ((size_t)snprintf(a->url, sizeof(a->url), "ipc://%s/admin.sock", dir) >=
	    sizeof(a->url)) {
		return NKP_ERR_INVALID;
	}
	if (nng_rep0_open(&a->sock) != 0) {
		return NKP_ERR_NET;
	}
	nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, SVC_ADMIN_MAX);
	if (listener_start(a) != NKP_OK) {
		nng_close(a->sock);
		return NKP_ERR_NET;
	}
	return NKP_OK;
}

/* ---- listener watchdog ----
 *
 * nng 1.5.2 (Debian 12) has a bug (nanomsg/nng#1518, fixed in 1.6): a
 * peer that disconnects during the SP handshake can make a listener stop
 * accepting for good, so a burst of bad clients could silence the admin
 * socket. Every few seconds the socket is probed like a client would (a
 * request with API version 0, answered with an error without touching the
 * service); after two failed probes in a row (see probe()), the listener is
 * replaced.
 * The socket, and the requests it holds, stay. */
#define WATCH_SECONDS 3
#define PROBE_TIMEOUT_MS 3000
#define PROBE_MAX_WAIT_MS 120000

static void probe_done(void *arg)
{
	atomic_store((atomic_bool *)arg, true);
}

/* True unless the listener looks wedged: no reply within PROBE_TIMEOUT_MS
 * while the admin thread sat idle. While it is busy (a backup, a host
 * removal waiting for its wipe) the probe keeps waiting for its turn, so
 * its request is never left behind to be answered on a closed pipe. */
static bool probe(admin_server *a)
{
	static const uint8_t req[] = {0x08, 0x00}; /* Request{api_version: 0} */
	atomic_bool done = false;
	nng_socket s;
	nng_aio *aio = NULL;
	bool ok = false;
	int idle_ms = 0;

	if (nng_req0_open(&s) != 0 || nng_aio_alloc(&aio, probe_done, &done) != 0) {
		return true; /* cannot tell: not the listener's fault */
	}
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, PROBE_TIMEOUT_MS);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if (nng_dial(s, a->url, NULL, 0) != 0 || nng_send(s, (void *)req, sizeof(req), 0) != 0) {
		goto out;
	}
	nng_aio_set_timeout(aio, PROBE_MAX_WAIT_MS);
	nng_recv_aio(s, aio);
	while (!atomic_load(&done) && idle_ms < PROBE_TIMEOUT_MS) {
		uint_fast64_t served = atomic_load(&a->served);

		nng_msleep(100);
		idle_ms = !atomic_load(&a->busy) && atomic_load(&a->served) == served
				  ? idle_ms + 100
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
	nng_close(s);
	return ok;
}

#ifdef NKP_TEST_HOOKS
/* Test builds only (-Dtest-hooks=true), for tests/integration/watchdog.sh.
 * With NKP_TEST_WEDGE_ADMIN in the environment every probe's outcome is
 * logged; set to 1, the listener is also closed, once, right after the
 * first probe it answered: admin.sock then refuses every connection until
 * the watchdog replaces the listener (nng#1518 leaves a listener taking
 * connections it never serves; the probes fail either way). Right after a
 * probe, so the socket is known to have been serving; a client's request
 * under way at that moment would lose its pipe. */
static void test_probed(admin_server *a, bool answered)
{
	static bool wedged;
	const char *env = getenv("NKP_TEST_WEDGE_ADMIN");

	if (env == NULL) {
		return;
	}
	nkp_log(NKP_LOG_INFO, "NKPD-TEST-WATCHDOG", "admin socket probe %s",
		answered ? "answered" : "failed");
	if (answered && !wedged && strcmp(env, "1") == 0) {
		wedged = true;
		nng_listener_close(a->listener);
		nkp_log(NKP_LOG_WARN, "NKPD-TEST-WATCHDOG",
			"NKP_TEST_WEDGE_ADMIN: admin socket listener closed");
	}
}
#else
static inline void test_probed(admin_server *a, bool answered)
{
	(void)a;
	(void)answered;
}
#endif

static void *watch_thread(void *arg)
{
	admin_server *a = arg;
	int failures = 0;

	pthread_mutex_lock(&a->watch_lock);
	while (!a->stopping) {
		/* Monotonic, like the condition variable: a wall clock stepped
		 * back must not stall the watchdog. */
		struct timespec until = nkpi_mono_timespec(nkpi_mono_ms() + WATCH_SECONDS * 1000u);
		bool answered;

		pthread_cond_timedwait(&a->watch_cond, &a->watch_lock, &until);
		if (a->stopping) {
			break;
		}
		pthread_mutex_unlock(&a->watch_lock);
		answered = probe(a);
		test_probed(a, answered);
		failures = answered ? 0 : failures + 1;
		if (failures >= 2) {
			nkp_err err;

			failures = 0;
			nng_listener_close(a->listener);
			err = listener_start(a);
			if (err == NKP_OK) {
				nkp_event(a->svc->events, NKP_EV_BAD_INPUT, NULL, NULL,
					  "admin socket stopped accepting connections; listener "
					  "restarted");
			} else {
				nkp_event(a->svc->events, NKP_EV_BAD_INPUT, NULL, NULL,
					  "admin socket stopped accepting connections; "
					  "restarting its listener failed: %s",
					  nkp_strerror(err));
			}
		}
		pthread_mutex_lock(&a->watch_lock);
	}
	pthread_mutex_unlock(&a->watch_lock);
	return NULL;
}

nkp_err svc_admin_start(svc *s, admin_server **out)
{
	admin_server *a = calloc(1, sizeof(*a));
	nkp_err err;

	if (a == NULL) {
		return NKP_ERR_NOMEM;
	}
	a->svc = s;
	err = admin_listen(a, s->dir);
	if (err != NKP_OK) {
		free(a);
		return err;
	}
	if (pthread_create(&a->thread, NULL, admin_thread, a) != 0) {
		nng_close(a->sock);
		free(a);
		return NKP_ERR_NOMEM;
	}
	a->thread_started = true;
	pthread_mutex_init(&a->watch_lock, NULL);
	nkpi_mono_cond_init(&a->watch_cond);
	a->watch_started = pthread_create(&a->watch, NULL, watch_thread, a) == 0;
	*out = a;
	return NKP_OK;
}

void svc_admin_stop(admin_server *a)
{
	if (a == NULL) {
		return;
	}
	if (a->watch_started) {
		pthread_mutex_lock(&a->watch_lock);
		a->stopping = true;
		pthread_cond_signal(&a->watch_cond);
		pthread_mutex_unlock(&a->watch_lock);
		pthread_join(a->watch, NULL);
	}
	nng_close(a->sock);
	if (a->thread_started) {
		pthread_join(a->thread, NULL);
	}
	if (a->thread_started) {
		pthread_mutex_destroy(&a->watch_lock);
		pthread_cond_destroy(&a->watch_cond);
	}
	free(a);
}
