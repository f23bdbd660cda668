/* The admin API server: nng REP on ipc://DIR/admin.sock, served by the
 * in-tree rpc server (nkp/private/rpc.h), mode 0600, every request's peer
 * uid checked against ours (or root). One context on a thread of its own
 * serves requests one at a time; requests are small and quick except backup
 * and restore, whose Argon2id runs outside nkpd_svc.lock so the reconciler
 * keeps going. Garbage or truncated requests get an error reply, oversized
 * ones are dropped with their connection, and the server keeps serving.
 * Request bytes (which may hold a backup password) are wiped as soon as they
 * are parsed.
 *
 * nng 1.5.2's ipc listener can stop accepting for good after a peer that
 * hangs up during the SP handshake (nanomsg/nng#1518, fixed in 1.6): the
 * server's watchdog probes the socket with a request of API version 0
 * every 3 s and replaces the listener after two failures in a row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "api/admin.h"
#include "api/translate.h"
#include "core/kms.h"
#include "internal.h"
#include "keysource/kmip.h"
#include "rpc.h"

#define ADMIN_API_VERSION 1u
#define DEFAULT_EVENTS_MAX 1000u

struct nkpd_admin {
	nkpd_svc *svc;
	nkpi_rpc_server *srv;
	char path[PATH_MAX];
};

/* The watchdog's probe, Request{api_version: 0}: answered with an error
 * without touching the service. */
static const uint8_t admin_probe[] = {0x08, 0x00};

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

static void baseline_list(nkpd_svc *s, admin_resp *resp)
{
	size_t n = 0;
	nkpd_baseline *b = nkpd_baseline_list(s, &n);

	nkpd_api_baselines(resp, b, n);
	free(b);
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
		.ak_public = q->ak_public.data,
		.ak_public_len = q->ak_public.len,
		.ek_ca = q->ek_ca.data,
		.ek_ca_len = q->ek_ca.len,
	};

	nkpd_host_add(s, &a, r);
}

static void host_remove(nkpd_svc *s, const Nkp__Admin__HostRemoveRequest *q, nkpd_result *r)
{
	nkpd_host_remove_args a = {.name = q->name, .force = q->force};

	nkpd_host_remove(s, &a, r);
}

/* A standard provider's KMS settings, checked before the core sees them:
 * they parse, and at least one server answers (asked here, without the
 * lock: up to NKPD_KMS_CHECK_TIMEOUT_MS a server). */
static nkp_err standard_settings(const Nkp__Admin__ProviderCreateRequest *q, nkpd_kms **kms,
				 nkpd_kms_server_state st[NKPD_KMS_SERVERS_MAX], nkpd_result *r)
{
	nkpd_kms_args ka = {
		.servers = (const char *const *)q->kms,
		.n_servers = q->n_kms,
		.ca_pem = q->kms_ca.data,
		.ca_len = q->kms_ca.len,
		.cert_pem = q->kms_cert.data,
		.cert_len = q->kms_cert.len,
		.key_pem = q->kms_key.data,
		.key_len = q->kms_key.len,
		.spare_pool = q->spare_pool,
	};
	char why[512];
	nkp_err err;

	if (q->n_kms == 0 || q->n_kms > NKPD_KMS_SERVERS_MAX) {
		nkpd_result_fail(r, NKP_ERR_INVALID,
				 "a standard provider needs 1 to %u KMS servers",
				 NKPD_KMS_SERVERS_MAX);
		return NKP_ERR_INVALID;
	}
	if (q->kms_ca.len == 0 || q->kms_cert.len == 0 || q->kms_key.len == 0) {
		nkpd_result_fail(r, NKP_ERR_INVALID,
				 "a standard provider needs the KMS CA, a client certificate and "
				 "its key");
		return NKP_ERR_INVALID;
	}
	err = nkpd_kms_new(&ka, kms);
	if (err != NKP_OK) {
		nkpd_result_fail(r, err, "invalid KMS settings: %s",
				 q->spare_pool > NKPD_KMS_SPARE_POOL_MAX
					 ? "the spare pool is over its limit (256)"
					 : nkp_strerror(err));
		return err;
	}
	err = nkpd_kmip_check(*kms, NKPD_KMS_CHECK_TIMEOUT_MS, st, why, sizeof(why));
	if (err == NKP_ERR_NET) {
		nkpd_result_fail(r, err, "no KMS server answered: %s", why);
	} else if (err != NKP_OK) {
		nkpd_result_fail(r, err, "invalid KMS settings: %s", why);
	}
	if (err != NKP_OK) {
		nkpd_kms_unref(*kms);
		*kms = NULL;
	}
	return err;
}

static void provider_create(nkpd_svc *s, Nkp__Admin__ProviderCreateRequest *q, nkpd_result *r)
{
	nkpd_kms_server_state st[NKPD_KMS_SERVERS_MAX] = {0};
	nkpd_kms *kms = NULL;
	bool ok;
	nkpd_provider_create_args a = {
		.name = q->name,
		.make_default = q->make_default,
		.tpm_only = q->tpm_only,
		.kind = nkpd_kind_from_name(q->kind, &ok),
	};

	if (!ok) {
		nkpd_result_fail(r, NKP_ERR_INVALID,
				 "unknown provider kind (native and standard are known)");
	} else if (a.kind == NKPD_KIND_NATIVE && (q->n_kms != 0 || q->kms_key.len != 0)) {
		nkpd_result_fail(r, NKP_ERR_INVALID,
				 "KMS settings are for a standard provider (--kind standard)");
	} else if (a.kind == NKPD_KIND_NATIVE || standard_settings(q, &kms, st, r) == NKP_OK) {
		a.kms = kms;
		a.kms_state = st;
		nkpd_provider_create(s, &a, r);
	}
	nkpd_kms_unref(kms);
	sodium_memzero(q->kms_key.data, q->kms_key.len);
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
	case NKP__ADMIN__REQUEST__OP_HOST_SEAL_POLICY:
		nkpd_host_seal_policy(s, q->host_seal_policy->name, q->host_seal_policy->on, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_BASELINE_ADD:
		nkpd_baseline_add(s, q->baseline_add->name, q->baseline_add->from_host, &r);
		break;
	case NKP__ADMIN__REQUEST__OP_BASELINE_REMOVE:
		nkpd_baseline_remove(s, q->baseline_remove->name, &r);
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
	case NKP__ADMIN__REQUEST__OP_BASELINE_LIST:
		baseline_list(s, resp);
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

/* The rpc server's handler: the peer's uid is checked by
 * nkpd_admin_handle, which answers a refusal with an error reply. */
static nkp_err on_request(void *arg, const nkpi_rpc_peer *peer, uint8_t *req, size_t len,
			  uint8_t **out, size_t *outlen)
{
	nkpd_admin *a = arg;

	return nkpd_admin_handle(a->svc, req, len, peer->uid, out, outlen);
}

static void on_relisten(void *arg, nkp_err err)
{
	nkpd_admin *a = arg;

	if (err == NKP_OK) {
		nkp_event(a->svc->events, NKP_EV_BAD_INPUT, NULL, NULL,
			  "admin socket stopped accepting connections; listener restarted");
	} else {
		nkp_event(a->svc->events, NKP_EV_BAD_INPUT, NULL, NULL,
			  "admin socket stopped accepting connections; restarting its listener "
			  "failed: %s",
			  nkp_strerror(err));
	}
}

/* The server on a->path, with the watchdog. */
static nkp_err serve(nkpd_admin *a)
{
	nkpi_rpc_server_config cfg = {
		.path = a->path,
		.mode = 0600,
		.group = -1,
		.max_request = NKPD_ADMIN_MAX,
		.contexts = 1,
		/* Handlers block (a backup's Argon2id, a host removal waiting
		 * for its wipe); one at a time, as nkpctl expects. */
		.threaded = true,
		.handle = on_request,
		.arg = a,
		.probe = admin_probe,
		.probe_len = sizeof(admin_probe),
		.on_relisten = on_relisten,
		.name = "admin socket",
#ifdef NKP_TEST_HOOKS
		/* For tests/integration/watchdog.sh (see rpc.h). */
		.test_wedge_env = "NKP_TEST_WEDGE_ADMIN",
		.test_log_id = "NKPD-TEST-WATCHDOG",
#endif
	};

	return nkpi_rpc_server_start(&cfg, &a->srv);
}

nkp_err nkpd_admin_start(nkpd_svc *s, nkpd_admin **out)
{
	nkpd_admin *a = calloc(1, sizeof(*a));
	nkp_err err = NKP_ERR_INVALID;

	if (a == NULL) {
		return NKP_ERR_NOMEM;
	}
	a->svc = s;
	if ((size_t)snprintf(a->path, sizeof(a->path), "%s/admin.sock", s->dir) < sizeof(a->path)) {
		err = serve(a);
	}
	if (err != NKP_OK) {
		free(a);
		return err;
	}
	*out = a;
	return NKP_OK;
}

bool nkpd_admin_stop(nkpd_admin *a)
{
	if (a == NULL) {
		return true;
	}
	if (!nkpi_rpc_server_stop_within(a->srv, NKPD_ADMIN_STOP_LIMIT_MS)) {
		return false;
	}
	free(a);
	return true;
}
