/* The local API of nkp-hostd (proto/hostapi.proto) on ipc://DIR/host.sock,
 * served by the in-tree rpc server (nkp/private/rpc.h): mode 0600, the
 * peer's uid checked against ours (or root) on every request; with a local
 * group (default "nkp", when it exists) the socket is 0660 in that group,
 * DIR 0710, and the group's members are admitted too (peer.c); several
 * nng contexts served from aio callbacks. Replies that carry a DEK are
 * packed in locked memory and wiped; each one is recorded as a
 * key.released event naming the peer (peer.c).
 *
 * nng 1.5.2's ipc listener can stop accepting for good after a peer that
 * hangs up during the SP handshake (nanomsg/nng#1518, fixed in 1.6): the
 * server's watchdog probes the socket with a status request every 3 s and
 * replaces the listener after two failures in a row. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "daemon.h"
#include "hostapi.pb-c.h"
#include "internal.h"
#include "rpc.h"

#define LOCAL_CONTEXTS 32
#define LOCAL_MAX_REQUEST (256u << 10)
#define LOCAL_API_VERSION 1u

struct localapi {
	nkp_hostd *h;
	int64_t group; /* admitted besides root and us; -1: none */
	nkpi_rpc_server *srv;
	char path[4096];
	uint8_t probe[16]; /* a status request, the watchdog's */
	size_t probe_len;
};

/* A reply being built; arrays it points to are freed by reply_fini. */
typedef struct lreply {
	Nkp__Hostapi__Reply r;
	Nkp__Hostapi__StatusReply status;
	Nkp__Hostapi__CheckReply check;
	nkp_hostd_status *st;
	Nkp__Hostapi__ProviderInfo *pi;
	Nkp__Hostapi__ProviderInfo **pp;
	Nkp__Hostapi__VersionInfo **vp;
	size_t n_vp;
	uint8_t *keysafe;
	size_t keysafe_len;
	uint8_t dek[NKP_KEY_BYTES]; /* wiped by reply_fini */
	uint8_t missing_id[NKP_ID_BYTES];
	char name[NKP_HOSTD_MAX_NAME + 1];
	char text[200];
	const nkpi_rpc_peer *peer; /* NULL: in-process */
} lreply;

static void reply_fini(lreply *lr)
{
	for (size_t i = 0; i < lr->n_vp; i++) {
		free(lr->vp[i]);
	}
	free(lr->vp);
	free(lr->pp);
	free(lr->pi);
	nkp_hostd_status_free(lr->st);
	nkp_hostd_buf_free(lr->keysafe, lr->keysafe_len);
	sodium_memzero(lr->dek, sizeof(lr->dek));
}

static Nkp__Hostapi__VersionInfo *version_info(const nkp_hostd_version_info *v)
{
	Nkp__Hostapi__VersionInfo *o = malloc(sizeof(*o));

	if (o != NULL) {
		nkp__hostapi__version_info__init(o);
		o->version = v->version;
		o->state = v->state;
		o->created_unix = v->created_unix;
		o->keysafes = v->keysafes;
		o->created = v->created;
		o->rewrapped = v->rewrapped;
		o->unwrapped = v->unwrapped;
		o->last_used_unix = v->last_used_unix;
	}
	return o;
}

static nkp_err do_status(localapi *api, lreply *lr)
{
	size_t total = 0, k = 0;
	nkp_err err = nkp_hostd_status_get(api->h, &lr->st);

	if (err != NKP_OK) {
		return err;
	}
	for (size_t i = 0; i < lr->st->n_providers; i++) {
		total += lr->st->providers[i].n_versions;
	}
	lr->pi = calloc(lr->st->n_providers + 1, sizeof(*lr->pi));
	lr->pp = calloc(lr->st->n_providers + 1, sizeof(*lr->pp));
	lr->vp = calloc(total + 1, sizeof(*lr->vp));
	if (lr->pi == NULL || lr->pp == NULL || lr->vp == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (size_t i = 0; i < lr->st->n_providers; i++) {
		nkp_hostd_provider_info *p = &lr->st->providers[i];
		Nkp__Hostapi__ProviderInfo *o = &lr->pi[i];

		nkp__hostapi__provider_info__init(o);
		o->id.data = p->id;
		o->id.len = NKP_ID_BYTES;
		o->name = p->name;
		o->is_default = p->is_default;
		o->backed_up = p->backed_up;
		o->tpm_only = p->tpm_only;
		o->versions = &lr->vp[k];
		o->n_versions = p->n_versions;
		for (size_t j = 0; j < p->n_versions; j++) {
			lr->vp[k] = version_info(&p->versions[j]);
			if (lr->vp[k] == NULL) {
				return NKP_ERR_NOMEM;
			}
			lr->n_vp = ++k;
		}
		lr->pp[i] = o;
	}
	lr->status.generation = lr->st->generation;
	lr->status.mlock_failed = !nkp_memory_lock_check();
	lr->status.tpm = lr->st->tpm;
	lr->status.keys_at_rest = (char *)lr->st->keys_at_rest;
	lr->status.seal_policy_bound = lr->st->seal_policy_bound;
	lr->status.seal_policy_error = lr->st->seal_policy_error;
	lr->status.host_key.data = (uint8_t *)nkp_hostd_public_key(api->h);
	lr->status.host_key.len = NKP_PUBKEY_BYTES;
	lr->status.service_key.data = (uint8_t *)nkp_hostd_service_key(api->h);
	lr->status.service_key.len = NKP_PUBKEY_BYTES;
	lr->status.host_name = lr->st->host_name;
	lr->status.dropped_frames = lr->st->dropped_frames;
	lr->status.refused_connections = lr->st->refused_connections;
	lr->status.closed_connections = lr->st->closed_connections;
	lr->status.listen_url =
		(char *)(nkp_hostd_listen_url(api->h) != NULL ? nkp_hostd_listen_url(api->h) : "");
	lr->status.providers = lr->pp;
	lr->status.n_providers = lr->st->n_providers;
	lr->r.status = &lr->status;
	return NKP_OK;
}

static nkp_err do_create(localapi *api, const Nkp__Hostapi__CreateRequest *c, lreply *lr)
{
	nkp_vm_identity id = {0};

	if (c->vm == NULL) {
		return NKP_ERR_INVALID;
	}
	id.vm_uuid = c->vm->vm_uuid;
	id.vm_name = c->vm->vm_name;
	return nkp_hostd_vm_create(api->h, c->provider, &id, &lr->keysafe, &lr->keysafe_len);
}

/* Every data key handed out is an event naming who got it. */
static void released(localapi *api, const nkpi_rpc_peer *peer, const ProtobufCBinaryData *ks,
		     const char *component)
{
	nkp_keysafe *k = NULL;

	if (nkp_keysafe_parse(ks->data, ks->len, &k) != NKP_OK) {
		k = NULL; /* it just unwrapped: cannot happen */
	}
	local_peer_released(api->h, peer, k != NULL ? nkp_keysafe_vm_uuid(k) : NULL, component);
	nkp_keysafe_free(k);
}

static nkp_err do_unwrap(localapi *api, const Nkp__Hostapi__ComponentRequest *c, lreply *lr)
{
	nkp_err err =
		nkp_hostd_vm_unwrap(api->h, c->keysafe.data, c->keysafe.len, c->component, lr->dek);
	if (err == NKP_OK) {
		lr->r.dek.data = lr->dek;
		lr->r.dek.len = NKP_KEY_BYTES;
		released(api, lr->peer, &c->keysafe, c->component);
	}
	return err;
}

static nkp_err do_check(localapi *api, const Nkp__Hostapi__KeysafeRequest *c, lreply *lr)
{
	nkp_hostd_vm_check chk;
	nkp_err err = nkp_hostd_vm_check_keysafe(api->h, c->keysafe.data, c->keysafe.len, &chk);

	if (err != NKP_OK) {
		return err;
	}
	lr->check.locked = chk.locked;
	lr->check.provider_known = chk.provider_known;
	memcpy(lr->name, chk.provider_name, sizeof(lr->name));
	lr->check.provider_name = lr->name;
	if (chk.locked) {
		memcpy(lr->missing_id, chk.provider_id, NKP_ID_BYTES);
		lr->check.missing_provider_id.data = lr->missing_id;
		lr->check.missing_provider_id.len = NKP_ID_BYTES;
		lr->check.missing_version = chk.version;
	}
	lr->r.check = &lr->check;
	return NKP_OK;
}

/* Runs one request. Every keysafe-returning operation puts it in lr. */
static nkp_err dispatch(localapi *api, const Nkp__Hostapi__Request *q, lreply *lr)
{
	nkp_hostd *h = api->h;

	switch (q->op_case) {
	case NKP__HOSTAPI__REQUEST__OP_STATUS:
		return do_status(api, lr);
	case NKP__HOSTAPI__REQUEST__OP_CREATE:
		return do_create(api, q->create, lr);
	case NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT:
		return nkp_hostd_vm_add_component(
			h, q->add_component->keysafe.data, q->add_component->keysafe.len,
			q->add_component->component, &lr->keysafe, &lr->keysafe_len);
	case NKP__HOSTAPI__REQUEST__OP_UNWRAP:
		return do_unwrap(api, q->unwrap, lr);
	case NKP__HOSTAPI__REQUEST__OP_REWRAP:
		return nkp_hostd_vm_rewrap(h, q->rewrap->keysafe.data, q->rewrap->keysafe.len,
					   &lr->keysafe, &lr->keysafe_len);
	case NKP__HOSTAPI__REQUEST__OP_REKEY:
		return nkp_hostd_vm_rekey(h, q->rekey->keysafe.data, q->rekey->keysafe.len,
					  q->rekey->deep, &lr->keysafe, &lr->keysafe_len);
	case NKP__HOSTAPI__REQUEST__OP_REMOVE_COMPONENT:
		return nkp_hostd_vm_remove_component(
			h, q->remove_component->keysafe.data, q->remove_component->keysafe.len,
			q->remove_component->component, &lr->keysafe, &lr->keysafe_len);
	case NKP__HOSTAPI__REQUEST__OP_CHECK:
		return do_check(api, q->check, lr);
	default:
		return NKP_ERR_PARSE;
	}
}

/* One serialized request from an allowed peer -> reply code; lr filled
 * on success. */
static nkp_err handle_bytes(localapi *api, const uint8_t *buf, size_t len, lreply *lr)
{
	Nkp__Hostapi__Request *q;
	nkp_err err;

	/* Unknown fields are refused before anything is allocated. */
	q = nkpi_pb_strict(&nkp__hostapi__request__descriptor, buf, len) != NKP_OK
		    ? NULL
		    : nkp__hostapi__request__unpack(&nkpi_wiping_allocator, len, buf);
	if (q == NULL || nkpi_has_unknown(&q->base) || q->api_version != LOCAL_API_VERSION) {
		err = q == NULL || nkpi_has_unknown(&q->base) ? NKP_ERR_PARSE
							      : NKP_ERR_FORMAT_VERSION;
		nkp_event(nkpi_hostd_eventlog(api->h), NKP_EV_BAD_INPUT, NULL, NULL,
			  "local request refused: %s", nkp_strerror(err));
	} else {
		err = dispatch(api, q, lr);
	}
	if (q != NULL) {
		nkp__hostapi__request__free_unpacked(q, &nkpi_wiping_allocator);
	}
	return err;
}

/* A request from `peer` (NULL: in-process, allowed) -> reply code; lr
 * filled on success. */
static nkp_err handle(localapi *api, const nkpi_rpc_peer *peer, const uint8_t *req, size_t len,
		      lreply *lr)
{
	nkp_err err;

	if (peer != NULL && !nkpi_rpc_peer_allowed(peer, api->group)) {
		nkp_event(nkpi_hostd_eventlog(api->h), NKP_EV_BAD_INPUT, NULL, NULL,
			  "local request refused: peer uid %lld gid %lld is not root, our user or "
			  "in the local group",
			  peer->uid == UINT64_MAX ? -1LL : (long long)peer->uid,
			  peer->gid == UINT64_MAX ? -1LL : (long long)peer->gid);
		return NKP_ERR_PERM;
	}
	lr->peer = peer;
	err = handle_bytes(api, req, len, lr);
	lr->peer = NULL;
	return err;
}

/* Sets the reply's code, message and payload for `err`. */
static void reply_finish(lreply *lr, nkp_err err)
{
	lr->r.code = err;
	if (err != NKP_OK) {
		snprintf(lr->text, sizeof(lr->text), "%s", nkp_strerror(err));
		lr->r.message = lr->text;
		lr->r.status = NULL;
		lr->r.check = NULL;
		lr->r.dek.len = 0;
	} else {
		lr->r.keysafe.data = lr->keysafe;
		lr->r.keysafe.len = lr->keysafe_len;
	}
}

static void reply_start(lreply *lr)
{
	memset(lr, 0, sizeof(*lr));
	nkp__hostapi__reply__init(&lr->r);
	nkp__hostapi__status_reply__init(&lr->status);
	nkp__hostapi__check_reply__init(&lr->check);
}

/* One request -> the packed reply in locked memory from `locked` (it may
 * carry a DEK). Errors: NKP_ERR_NOMEM (no reply). */
static nkp_err respond(localapi *api, const nkpi_rpc_peer *peer, const uint8_t *req, size_t len,
		       uint8_t *(*locked)(size_t), uint8_t **out, size_t *outlen)
{
	lreply lr;
	uint8_t *buf;
	size_t n;
	nkp_err err = NKP_ERR_NOMEM;

	reply_start(&lr);
	reply_finish(&lr, handle(api, peer, req, len, &lr));
	n = nkp__hostapi__reply__get_packed_size(&lr.r);
	buf = locked(n > 0 ? n : 1);
	if (buf != NULL) {
		nkp__hostapi__reply__pack(&lr.r, buf);
		*out = buf;
		*outlen = n;
		err = NKP_OK;
	}
	reply_fini(&lr);
	return err;
}

static uint8_t *secure_alloc(size_t len)
{
	return sodium_malloc(len);
}

nkp_err localapi_handle(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **out, size_t *outlen)
{
	localapi api = {.h = h, .group = -1};

	return respond(&api, NULL, req, len, secure_alloc, out, outlen);
}

/* The server's handler. The reply is packed into this thread's locked
 * scratch buffer, wiped once the server copied it into nng's message. nng
 * frees that one after sending, unwiped: the socket is 0600 (or 0660 in
 * the local group) and peer-checked, and the process cannot dump core. */
static nkp_err on_request(void *arg, const nkpi_rpc_peer *peer, uint8_t *req, size_t len,
			  uint8_t **out, size_t *outlen)
{
	return respond(arg, peer, req, len, nkpi_scratch, out, outlen);
}

static void scratch_wipe(uint8_t *reply, size_t len)
{
	sodium_memzero(reply, len);
}

static void on_relisten(void *arg, nkp_err err)
{
	localapi *api = arg;

	if (err == NKP_OK) {
		nkp_event(nkpi_hostd_eventlog(api->h), NKP_EV_BAD_INPUT, NULL, NULL,
			  "local socket stopped answering; restarted it");
	} else {
		nkp_event(nkpi_hostd_eventlog(api->h), NKP_EV_BAD_INPUT, NULL, NULL,
			  "local socket stopped answering; restarting it failed: %s",
			  nkp_strerror(err));
	}
}

/* The watchdog's probe: a status request, as nkp-hostctl status sends. */
static void probe_pack(localapi *api)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__StatusRequest sr = NKP__HOSTAPI__STATUS_REQUEST__INIT;

	req.api_version = LOCAL_API_VERSION;
	req.op_case = NKP__HOSTAPI__REQUEST__OP_STATUS;
	req.status = &sr;
	api->probe_len = nkp__hostapi__request__pack(&req, api->probe);
}

/* DIR's access for api->group, then the server on DIR/host.sock. */
static nkp_err serve_in(localapi *api, const char *state_dir)
{
	nkpi_rpc_server_config cfg = {
		.path = api->path,
		.mode = api->group >= 0 ? 0660 : 0600,
		.group = api->group,
		.max_request = LOCAL_MAX_REQUEST,
		.contexts = LOCAL_CONTEXTS,
		.handle = on_request,
		.arg = api,
		.reply_free = scratch_wipe,
		.wipe_replies = true,
		.probe = api->probe,
		.probe_len = api->probe_len,
		.on_relisten = on_relisten,
		.name = "local socket",
#ifdef NKP_TEST_HOOKS
		/* For tests/integration/watchdog.sh (see rpc.h). */
		.test_wedge_env = "NKP_TEST_WEDGE_LOCALAPI",
		.test_log_id = "NKP-HOSTD-TEST-WATCHDOG",
#endif
	};
	nkp_err err = local_dir_access(state_dir, api->group);

	return err != NKP_OK ? err : nkpi_rpc_server_start(&cfg, &api->srv);
}

nkp_err localapi_start(nkp_hostd *h, const char *state_dir, int64_t group, localapi **out)
{
	localapi *api = calloc(1, sizeof(*api));
	nkp_err err;

	if (api == NULL) {
		return NKP_ERR_NOMEM;
	}
	api->h = h;
	api->group = group;
	probe_pack(api);
	if ((size_t)snprintf(api->path, sizeof(api->path), "%s/host.sock", state_dir) >=
	    sizeof(api->path)) {
		free(api);
		return NKP_ERR_INVALID;
	}
	err = serve_in(api, state_dir);
	if (err == NKP_ERR_PERM && api->group >= 0) {
		/* e.g. a unit without CAP_CHOWN: root only, as without a group */
		local_group_refused(api->path, api->group, errno);
		api->group = -1;
		err = serve_in(api, state_dir);
	}
	if (err != NKP_OK) {
		free(api);
		return err;
	}
	*out = api;
	return NKP_OK;
}

bool localapi_stop(localapi *api)
{
	if (api == NULL) {
		return true;
	}
	if (!nkpi_rpc_server_stop_within(api->srv, LOCALAPI_STOP_LIMIT_MS)) {
		return false;
	}
	free(api);
	return true;
}
