/* The local API of nkp-hostd (proto/hostapi.proto) on ipc://DIR/host.sock:
 * mode 0600, the peer's uid checked against ours (or root) on every
 * request; with a local group (default "nkp", when it exists) the socket
 * is 0660 in that group, DIR 0710, and the group's members are admitted
 * too (peer.c), several nng contexts served from aio callbacks. Replies that
 * carry a DEK are packed in locked memory and wiped; each one is recorded
 * as a key.released event naming the peer (peer.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "daemon.h"
#include "hostapi.pb-c.h"
#include "internal.h"

#define LOCAL_CONTEXTS 32
#define LOCAL_MAX_REQUEST (256u << 10)
#define LOCAL_API_VERSION 1u

typedef struct actx {
	localapi *api;
	nng_ctx ctx;
	nng_aio *aio;
	bool sending;
} actx;

struct localapi {
	nkp_hostd *h;
	int64_t group; /* admitted besides root and us; -1: none */
	nng_socket sock;
	nng_listener listener;
	actx ctxs[LOCAL_CONTEXTS];
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
	const local_peer *peer; /* NULL: in-process */
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
static void released(localapi *api, const local_peer *peer, const ProtobufCBinaryData *ks,
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

/* Request -> reply code; lr filled on success. */
static nkp_err handle(localapi *api, nng_msg *msg, lreply *lr)
{
	local_peer peer;
	nkp_err err;

	local_peer_get(msg, &peer);
	lr->peer = &peer;
	if (!local_peer_allowed(&peer, api->group)) {
		nkp_event(nkpi_hostd_eventlog(api->h), NKP_EV_BAD_INPUT, NULL, NULL,
			  "local request refused: peer uid %lld gid %lld is not root, our user or "
			  "in the local group",
			  peer.uid == UINT64_MAX ? -1LL : (long long)peer.uid,
			  peer.gid == UINT64_MAX ? -1LL : (long long)peer.gid);
		lr->peer = NULL;
		return NKP_ERR_PERM;
	}
	err = handle_bytes(api, nng_msg_body(msg), nng_msg_len(msg), lr);
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

nkp_err localapi_handle(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **out, size_t *outlen)
{
	localapi api = {.h = h, .group = -1};
	lreply lr;
	uint8_t *buf;
	size_t n;
	nkp_err err = NKP_ERR_NOMEM;

	reply_start(&lr);
	reply_finish(&lr, handle_bytes(&api, req, len, &lr));
	n = nkp__hostapi__reply__get_packed_size(&lr.r);
	buf = sodium_malloc(n > 0 ? n : 1);
	if (buf != NULL) {
		nkp__hostapi__reply__pack(&lr.r, buf);
		*out = buf;
		*outlen = n;
		err = NKP_OK;
	}
	reply_fini(&lr);
	return err;
}

/* Packs the reply straight into the request's message. A DEK in it is
 * then in nng's buffer, which nng frees after sending without wiping: the
 * socket is 0600 and peer-checked, and the process cannot dump core. */
static int pack_reply(nng_msg *msg, lreply *lr, nkp_err err)
{
	size_t len;
	int rv;

	reply_finish(lr, err);
	len = nkp__hostapi__reply__get_packed_size(&lr->r);
	/* Wipe the request (a keysafe, no secret) before reuse. */
	sodium_memzero(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_clear(msg);
	rv = nng_msg_realloc(msg, len);
	if (rv == 0) {
		nkp__hostapi__reply__pack(&lr->r, nng_msg_body(msg));
	}
	return rv;
}

static void serve(actx *c, nng_msg *msg)
{
	lreply lr;
	nkp_err err;
	int rv;

	reply_start(&lr);
	err = handle(c->api, msg, &lr);
	rv = pack_reply(msg, &lr, err);
	reply_fini(&lr);
	if (rv != 0) {
		nng_msg_free(msg);
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	c->sending = true;
	nng_aio_set_msg(c->aio, msg);
	nng_ctx_send(c->ctx, c->aio);
}

static void on_io(void *arg)
{
	actx *c = arg;
	int rv = nng_aio_result(c->aio);

	if (c->sending) {
		c->sending = false;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
		}
	} else if (rv == 0) {
		serve(c, nng_aio_get_msg(c->aio));
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		return;
	}
	nng_ctx_recv(c->ctx, c->aio);
}

static nkp_err listen_ipc(localapi *api, const char *state_dir)
{
	char url[4096];
	nkp_err err = NKP_ERR_NET;

	if ((size_t)snprintf(url, sizeof(url), "ipc://%s/host.sock", state_dir) >= sizeof(url)) {
		return NKP_ERR_INVALID;
	}
	if (nng_rep0_open(&api->sock) != 0) {
		return NKP_ERR_NOMEM;
	}
	if (nng_socket_set_size(api->sock, NNG_OPT_RECVMAXSZ, LOCAL_MAX_REQUEST) == 0 &&
	    nng_listener_create(&api->listener, api->sock, url) == 0 &&
	    nng_listener_set_int(api->listener, NNG_OPT_IPC_PERMISSIONS,
				 api->group >= 0 ? 0660 : 0600) == 0 &&
	    nng_listener_start(api->listener, 0) == 0) {
		err = local_access_set(state_dir, &api->group);
	}
	return err;
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
	err = listen_ipc(api, state_dir);
	for (size_t i = 0; err == NKP_OK && i < LOCAL_CONTEXTS; i++) {
		actx *c = &api->ctxs[i];

		c->api = api;
		if (nng_aio_alloc(&c->aio, on_io, c) != 0 ||
		    nng_ctx_open(&c->ctx, api->sock) != 0) {
			err = NKP_ERR_NOMEM;
		}
	}
	if (err != NKP_OK) {
		localapi_stop(api);
		return err;
	}
	for (size_t i = 0; i < LOCAL_CONTEXTS; i++) {
		nng_ctx_recv(api->ctxs[i].ctx, api->ctxs[i].aio);
	}
	*out = api;
	return NKP_OK;
}

void localapi_stop(localapi *api)
{
	if (api == NULL) {
		return;
	}
	if (nng_socket_id(api->sock) > 0) {
		nng_close(api->sock);
	}
	for (size_t i = 0; i < LOCAL_CONTEXTS; i++) {
		if (api->ctxs[i].aio != NULL) {
			nng_aio_stop(api->ctxs[i].aio);
			nng_aio_free(api->ctxs[i].aio);
		}
	}
	free(api);
}

static nkp_err probe_on(nng_socket s, const char *state_dir, int timeout_ms)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__StatusRequest sr = NKP__HOSTAPI__STATUS_REQUEST__INIT;
	uint8_t buf[16];
	char url[4096];
	nng_msg *msg = NULL;
	size_t len;

	req.api_version = LOCAL_API_VERSION;
	req.op_case = NKP__HOSTAPI__REQUEST__OP_STATUS;
	req.status = &sr;
	len = nkp__hostapi__request__pack(&req, buf);
	snprintf(url, sizeof(url), "ipc://%s/host.sock", state_dir);
	if (nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms) != 0 ||
	    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms) != 0 ||
	    nng_dial(s, url, NULL, 0) != 0 || nng_send(s, buf, len, 0) != 0 ||
	    nng_recvmsg(s, &msg, 0) != 0) {
		return NKP_ERR_NET;
	}
	nng_msg_free(msg);
	return NKP_OK;
}

nkp_err localapi_probe(const char *state_dir, int timeout_ms)
{
	nng_socket s;
	nkp_err err;

	if (nng_req0_open(&s) != 0) {
		return NKP_ERR_NOMEM;
	}
	err = probe_on(s, state_dir, timeout_ms);
	nng_close(s);
	return err;
}

#ifdef NKP_TEST_HOOKS
/* Test builds only (-Dtest-hooks=true), for tests/integration/watchdog.sh.
 * With NKP_TEST_WEDGE_LOCALAPI in the environment every probe's outcome is
 * logged; set to 1, the listener is also closed, once, right after the
 * first probe it answered: host.sock then refuses every connection until
 * the watchdog restarts the local API (nng#1518 leaves a listener taking
 * connections it never serves; the probes fail either way). Right after a
 * probe, so the socket is known to have been serving; a client's request
 * under way at that moment would lose its pipe. */
void localapi_test_probed(localapi *api, bool answered)
{
	static bool wedged;
	const char *env = getenv("NKP_TEST_WEDGE_LOCALAPI");

	if (env == NULL) {
		return;
	}
	nkp_log(NKP_LOG_INFO, "NKP-HOSTD-TEST-WATCHDOG", "local socket probe %s",
		answered ? "answered" : "failed");
	if (api != NULL && answered && !wedged && strcmp(env, "1") == 0) {
		wedged = true;
		nng_listener_close(api->listener);
		nkp_log(NKP_LOG_WARN, "NKP-HOSTD-TEST-WATCHDOG",
			"NKP_TEST_WEDGE_LOCALAPI: local socket listener closed");
	}
}
#endif
