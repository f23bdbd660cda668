/* The admin API server: nng REP on ipc://DIR/admin.sock, mode 0600, every
 * request's peer uid checked against ours (or root). One thread serves
 * requests one at a time; requests are small and quick except backup and
 * restore, whose Argon2id runs outside nkpd_svc.lock so the reconciler keeps
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

#include "api/admin.h"
#include "api/translate.h"
#include "internal.h"

#define ADMIN_API_VERSION 1u
#define DEFAULT_EVENTS_MAX 1000u

struct nkpd_admin {
	nkpd_svc *svc;
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

static void events_read(nkpd_svc *s, const Nkp__Admin__EventsRequest *r, admin_resp *resp)
{
	ev_collect c = {.max = r->max == 0 || r->max > DEFAULT_EVENTS_MAX ? DEFAULT_EVENTS_MAX
									  : r->max};
	char **lines = calloc(c.max, sizeof(*lines));

	c.b = calloc(1, sizeof(*c.b));
	if (c.b == NULL || lines == NULL) {
		free(c.b);
		free(lines);
		nkpd_api_fail(resp, NKP_ERR_NOMEM, "out of memory");
		return;
	}
	nkp__admin__event_batch__init(c.b);
	c.b->lines = lines;
	c.b->last_seq = r->after_seq;
	nkpd_events_read(s, r->after_seq, collect_event, &c);
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_EVENTS;
	resp->events = c.b;
}

/* ---- reports ---- */

static void status(nkpd_svc *s, admin_resp *resp)
{
	nkpd_status_view *v = NULL;

	nkpd_report_status(s, &v);
	nkpd_api_status(resp, v);
	nkpd_status_view_free(v);
	resp->status->mlock_failed = !nkp_memory_lock_check();
}

static void host_list(nkpd_svc *s, admin_resp *resp)
{
	nkpd_host_list *l = NULL;

	nkpd_report_hosts(s, &l);
	nkpd_api_hosts(resp, l);
	nkpd_host_list_free(l);
}

static void provider_list(nkpd_svc *s, admin_resp *resp)
{
	nkpd_provider_list *l = NULL;

	nkpd_report_providers(s, &l);
	nkpd_api_providers(resp, l);
	nkpd_provider_list_free(l);
}

static void provider_show(nkpd_svc *s, const char *name, admin_resp *resp)
{
	nkpd_provider_view *v = NULL;

	if (nkpd_report_provider(s, name, &v) != NKP_OK) {
		nkpd_api_fail(resp, NKP_ERR_NOT_FOUND, "no provider named %s", name);
		return;
	}
	nkpd_api_provider(resp, v);
	nkpd_provider_view_free(v);
}

static void rotation_status(nkpd_svc *s, const char *name, admin_resp *resp)
{
	nkpd_rotation_view *v = NULL;

	if (nkpd_report_rotation(s, name, &v) != NKP_OK) {
		nkpd_api_fail(resp, NKP_ERR_NOT_FOUND, "no provider named %s", name);
		return;
	}
	nkpd_api_rotation(resp, v);
	nkpd_rotation_view_free(v);
}

/* ---- operations: requests decoded into the core's arguments ---- */

static void host_add(nkpd_svc *s, const Nkp__Admin__HostAddRequest *q, nkpd_result *r)
{
	nkpd_host_add_args a = {
		.name = q->name,
		.address = q->address,
		.cluster = q->cluster,
		.public_key = q->public_key.data,
		.public_key_len = q->public_key.len,
	};

	nkpd_host_add(s, &a, r);
}

static void host_remove(nkpd_svc *s, const Nkp__Admin__HostRemoveRequest *q, nkpd_result *r)
{
	nkpd_host_remove_args a = {.name = q->name, .force = q->force};

	nkpd_host_remove(s, &a, r);
}

static void provider_create(nkpd_svc *s, const Nkp__Admin__ProviderCreateRequest *q, nkpd_result *r)
{
	nkpd_provider_create_args a = {
		.name = q->name,
		.make_default = q->make_default,
		.tpm_only = q->tpm_only,
	};

	nkpd_provider_create(s, &a, r);
}

static void provider_backup(nkpd_svc *s, const Nkp__Admin__ProviderBackupRequest *q, nkpd_result *r)
{
	nkpd_provider_backup_args a = {
		.name = q->name,
		.password = q->password.data,
		.password_len = q->password.len,
	};

	nkpd_provider_backup(s, &a, r);
}

static void backup_confirm(nkpd_svc *s, const Nkp__Admin__ProviderBackupConfirmRequest *q,
			   nkpd_result *r)
{
	nkpd_provider_backup_confirm_args a = {
		.provider_id = q->provider_id.data,
		.provider_id_len = q->provider_id.len,
		.digest = q->digest.data,
		.digest_len = q->digest.len,
	};

	nkpd_provider_backup_confirm(s, &a, r);
}

static void provider_restore(nkpd_svc *s, const Nkp__Admin__ProviderRestoreRequest *q,
			     nkpd_result *r)
{
	nkpd_provider_restore_args a = {
		.file = q->backup.data,
		.file_len = q->backup.len,
		.password = q->password.data,
		.password_len = q->password.len,
		.allow_weak = q->allow_weak,
	};

	nkpd_provider_restore(s, &a, r);
}

static void provider_rotate(nkpd_svc *s, const Nkp__Admin__ProviderRotateRequest *q, nkpd_result *r)
{
	nkpd_provider_rotate_args a = {
		.name = q->name,
		.timeout_seconds = q->timeout_seconds,
		.force = q->force,
	};

	nkpd_provider_rotate(s, &a, r);
}

static void provider_retire(nkpd_svc *s, const Nkp__Admin__ProviderRetireRequest *q, nkpd_result *r)
{
	nkpd_provider_retire_args a = {.name = q->name, .version = q->version, .force = q->force};

	nkpd_provider_retire(s, &a, r);
}

static void provider_delete(nkpd_svc *s, const Nkp__Admin__ProviderDeleteRequest *q, nkpd_result *r)
{
	nkpd_provider_delete_args a = {.name = q->name, .force = q->force};

	nkpd_provider_delete(s, &a, r);
}

/* ---- dispatch ---- */

/* The requests that change something: the core's result, translated. */
static bool operate(nkpd_svc *s, const Nkp__Admin__Request *q, admin_resp *resp)
{
	nkpd_result r;

	nkpd_result_init(&r);
	switch (q->op_case) {
	case NKP__ADMIN__REQUEST__OP_HOST_ADD:
		host_add(s, q->host_add, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_REMOVE:
		host_remove(s, q->host_remove, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_RESYNC:
		nkpd_host_resync(s, q->host_resync->name, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE:
		provider_create(s, q->provider_create, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_SET_DEFAULT:
		nkpd_provider_set_default(s, q->provider_set_default->name, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP:
		provider_backup(s, q->provider_backup, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP_CONFIRM:
		backup_confirm(s, q->provider_backup_confirm, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_RESTORE:
		provider_restore(s, q->provider_restore, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE:
		provider_rotate(s, q->provider_rotate, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE:
		provider_retire(s, q->provider_retire, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_DELETE:
		provider_delete(s, q->provider_delete, &r);
		break;
	default:
		return false;
	}
	nkpd_api_result(resp, &r);
	nkpd_result_fini(&r);
	return true;
}

static void dispatch(nkpd_svc *s, const Nkp__Admin__Request *q, admin_resp *resp)
{
	if (operate(s, q, resp)) {
		return;
	}
	switch (q->op_case) {
	case NKP__ADMIN__REQUEST__OP_STATUS:
		status(s, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_HOST_LIST:
		host_list(s, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_LIST:
		provider_list(s, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_PROVIDER_SHOW:
		provider_show(s, q->provider_show->name, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_ROTATION_STATUS:
		rotation_status(s, q->rotation_status->name, resp);
		break;
	case NKP__ADMIN__REQUEST__OP_EVENTS:
		events_read(s, q->events, resp);
		break;
	default:
		nkpd_api_fail(resp, NKP_ERR_PARSE, "unknown admin request");
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

nkp_err nkpd_admin_handle(nkpd_svc *s, uint8_t *req, size_t len, uint64_t peer_uid, uint8_t **out,
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
		nkpd_api_fail(resp, NKP_ERR_PERM,
			      "permission denied: only root or uid %u may administer nkpd",
			      (unsigned)me);
	} else if (len > NKPD_ADMIN_MAX ||
		   nkpi_pb_strict(&nkp__admin__request__descriptor, req, len) != NKP_OK ||
		   (q = nkp__admin__request__unpack(&nkpi_wiping_allocator, len, req)) == NULL ||
		   nkpi_has_unknown(&q->base)) {
		nkp_event(s->events, NKP_EV_BAD_INPUT, NULL, NULL,
			  "malformed admin request refused");
		nkpd_api_fail(resp, NKP_ERR_PARSE, "malformed admin request");
	} else if (q->api_version != ADMIN_API_VERSION) {
		nkpd_api_fail(resp, NKP_ERR_FORMAT_VERSION,
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
	nkpd_api_free(resp);
	return err;
}

/* ---- server ---- */

static void serve_one(nkpd_admin *a, nng_msg *msg)
{
	uint64_t uid = UINT64_MAX;
	uint8_t *out = NULL;
	size_t outlen = 0;
	nng_msg *reply = NULL;

	if (nng_pipe_get_uint64(nng_msg_get_pipe(msg), NNG_OPT_IPC_PEER_UID, &uid) != 0) {
		uid = UINT64_MAX;
	}
	if (nkpd_admin_handle(a->svc, nng_msg_body(msg), nng_msg_len(msg), uid, &out, &outlen) !=
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
	nkpd_admin *a = arg;

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

static nkp_err listener_start(nkpd_admin *a)
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

static nkp_err admin_listen(nkpd_admin *a, const char *dir)
{
	if ((size_t)snprintf(a->url, sizeof(a->url), "ipc://%s/admin.sock", dir) >=
	    sizeof(a->url)) {
		return NKP_ERR_INVALID;
	}
	if (nng_rep0_open(&a->sock) != 0) {
		return NKP_ERR_NET;
	}
	nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, NKPD_ADMIN_MAX);
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
static bool probe(nkpd_admin *a)
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
static void test_probed(nkpd_admin *a, bool answered)
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
static inline void test_probed(nkpd_admin *a, bool answered)
{
	(void)a;
	(void)answered;
}
#endif

static void *watch_thread(void *arg)
{
	nkpd_admin *a = arg;
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

nkp_err nkpd_admin_start(nkpd_svc *s, nkpd_admin **out)
{
	nkpd_admin *a = calloc(1, sizeof(*a));
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

void nkpd_admin_stop(nkpd_admin *a)
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
