/* nkp-bench fanout: the simulated hosts and the bare nng floor.
 *
 * A host worker is a forked process holding many real plugin instances
 * (nkp_hostd_open + nkp_hostd_listen on tcp://127.0.0.1:0), each with its
 * own identity and state directory, and beside each one a bare nng REP
 * echo socket for the floor: it answers every request with a reply of the
 * acknowledgement's size, no crypto, no protobuf. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include <nkp/hostd.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "fanout.h"
#include "session.h"
#include "wire.pb-c.h"

/* ---- message sizes ---- */

/* A rotation's messages travel in Transport frames of Noise sessions
 * (docs/PROTOCOL.md): the sizes are those of a request and its reply,
 * sealed by a real initiator and responder after a handshake. */
typedef struct sizer {
	nkpi_session *init;
	nkpi_session *resp;
	nkpi_session_reply rk;
	size_t request_len; /* the push, as sealed */
} sizer;

static uint8_t *pack(const Nkp__Wire__Message *m, size_t *len)
{
	uint8_t *buf;

	*len = nkp__wire__message__get_packed_size(m);
	buf = calloc(1, *len + 1);
	if (buf != NULL) {
		nkp__wire__message__pack(m, buf);
	}
	return buf;
}

/* One exchange: `req` (packed) as a request, `rep` as its reply. The
 * request's sealed length goes to *reqlen, the reply's is returned. */
static size_t exchange(sizer *z, const uint8_t *req, size_t reqlen, const uint8_t *rep,
		       size_t replen, size_t *sealed_req)
{
	uint8_t *frame = NULL, *back = NULL, *hs = NULL, *buf = calloc(1, reqlen + replen + 64);
	size_t flen = 0, blen = 0, mlen = 0, hslen = 0;
	nkp_err err;

	if (buf == NULL) {
		return 0;
	}
	err = nkpi_session_seal_request(z->init, req, reqlen, &frame, &flen);
	if (err == NKP_OK) {
		err = nkpi_session_open_request(z->resp, frame, flen, buf, reqlen + replen + 64,
						&mlen, &z->rk, &hs, &hslen);
		free(hs);
	}
	if (err == NKP_OK) {
		err = nkpi_session_seal_reply(z->resp, &z->rk, rep, replen, &back, &blen);
	}
	if (err == NKP_OK) {
		err = nkpi_session_open_reply(z->init, back, blen, buf, reqlen + replen + 64,
					      &mlen);
	}
	sodium_memzero(buf, reqlen + replen + 64);
	free(buf);
	free(frame);
	free(back);
	*sealed_req = err == NKP_OK ? flen : 0;
	return err == NKP_OK ? blen : 0;
}

static uint8_t *push_packed(unsigned nv, size_t *len)
{
	uint8_t zero[32] = {0};
	uint8_t key[32] = {1};
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	Nkp__Wire__ProviderKeys pk = NKP__WIRE__PROVIDER_KEYS__INIT;
	uint8_t *out, *desired;
	Nkp__Wire__ProviderKeys *pkp = &pk;
	Nkp__Wire__VersionKey vk[FANOUT_MAX_VERSIONS];
	Nkp__Wire__VersionKey *vkp[FANOUT_MAX_VERSIONS];

	for (unsigned i = 0; i < nv; i++) {
		nkp__wire__version_key__init(&vk[i]);
		vk[i].version = i + 1;
		vk[i].state = 2;
		vk[i].key.data = key;
		vk[i].key.len = 32;
		vk[i].created_unix = 1800000000u;
		vkp[i] = &vk[i];
	}
	pk.id.data = key;
	pk.id.len = NKP_ID_BYTES;
	pk.name = (char *)FANOUT_PROVIDER;
	pk.is_default = true;
	pk.backed_up = true;
	pk.n_versions = nv;
	pk.versions = vkp;
	push.challenge.data = key;
	push.challenge.len = 16;
	push.boot_nonce.data = zero;
	push.boot_nonce.len = 16;
	ds.epoch = 1;
	ds.counter = (uint64_t)1800000000u << 20;
	ds.n_providers = 1;
	ds.providers = &pkp;
	desired = malloc(nkp__wire__desired_state__get_packed_size(&ds) + 1);
	if (desired == NULL) {
		return NULL;
	}
	push.desired.len = nkp__wire__desired_state__pack(&ds, desired);
	push.desired.data = desired;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m.push = &push;
	out = pack(&m, len);
	free(desired);
	return out;
}

static uint8_t *ack_packed(unsigned nv, size_t *len)
{
	uint8_t key[32] = {1};
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__PushAck ack = NKP__WIRE__PUSH_ACK__INIT;
	Nkp__Wire__VersionUsage u[FANOUT_MAX_VERSIONS];
	Nkp__Wire__VersionUsage *up[FANOUT_MAX_VERSIONS];

	for (unsigned i = 0; i < nv; i++) {
		nkp__wire__version_usage__init(&u[i]);
		u[i].provider_id.data = key;
		u[i].provider_id.len = NKP_ID_BYTES;
		u[i].version = i + 1;
		up[i] = &u[i];
	}
	ack.challenge.data = key;
	ack.challenge.len = 16;
	ack.boot_nonce.data = key;
	ack.boot_nonce.len = 16;
	ack.applied_generation = (uint64_t)1800000000u << 20;
	ack.n_usage = nv;
	ack.usage = up;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH_ACK;
	m.push_ack = &ack;
	return pack(&m, len);
}

int fanout_sizes(unsigned nv, size_t *push, size_t *ack)
{
	nkp_identity *a = NULL, *b = NULL;
	sizer z = {0};
	uint8_t *p = NULL, *k = NULL, *init = NULL, *resp = NULL;
	size_t plen = 0, klen = 0, ilen = 0, rlen = 0, mlen = 0;
	uint8_t scratch[8];
	int rc = -1;

	if (nv == 0 || nv > FANOUT_MAX_VERSIONS) {
		return -1;
	}
	p = push_packed(nv, &plen);
	k = ack_packed(nv, &klen);
	if (p != NULL && k != NULL && nkp_identity_generate(&a) == NKP_OK &&
	    nkp_identity_generate(&b) == NKP_OK &&
	    nkpi_session_new(a, nkp_identity_public(b), false, &z.init) == NKP_OK &&
	    nkpi_session_new(b, nkp_identity_public(a), true, &z.resp) == NKP_OK &&
	    nkpi_session_handshake_init(z.init, &init, &ilen) == NKP_OK &&
	    nkpi_session_open_request(z.resp, init, ilen, scratch, sizeof(scratch), &mlen, &z.rk,
				      &resp, &rlen) == NKP_OK &&
	    nkpi_session_handshake_finish(z.init, resp, rlen) == NKP_OK) {
		*ack = exchange(&z, p, plen, k, klen, push);
		rc = *push > 0 && *ack > 0 ? 0 : -1;
	}
	free(init);
	free(resp);
	nkpi_session_free(z.init);
	nkpi_session_free(z.resp);
	nkp_identity_free(a);
	nkp_identity_free(b);
	free(p);
	free(k);
	return rc;
}

/* ---- the echo listeners of the floor (in the worker) ---- */

typedef struct echo {
	nng_socket sock;
	nng_aio *aio;
	size_t reply_len;
	bool sending;
} echo;

static void echo_cb(void *arg)
{
	echo *e = arg;
	int rv = nng_aio_result(e->aio);
	nng_msg *msg;

	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
		return;
	}
	if (e->sending || rv != 0) {
		if (rv != 0 && e->sending) {
			nng_msg_free(nng_aio_get_msg(e->aio));
		}
		e->sending = false;
		nng_recv_aio(e->sock, e->aio);
		return;
	}
	msg = nng_aio_get_msg(e->aio);
	if (nng_msg_realloc(msg, e->reply_len) != 0) {
		nng_msg_free(msg);
		nng_recv_aio(e->sock, e->aio);
		return;
	}
	e->sending = true;
	nng_aio_set_msg(e->aio, msg);
	nng_send_aio(e->sock, e->aio);
}

static int echo_start(echo *e, size_t reply_len, char *url, size_t size)
{
	nng_listener l;
	int port = 0;

	e->reply_len = reply_len;
	if (nng_rep0_open(&e->sock) != 0 || nng_aio_alloc(&e->aio, echo_cb, e) != 0 ||
	    nng_listener_create(&l, e->sock, "tcp://127.0.0.1:0") != 0 ||
	    nng_listener_start(l, 0) != 0 ||
	    nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) != 0) {
		return -1;
	}
	snprintf(url, size, "tcp://127.0.0.1:%d", port);
	nng_recv_aio(e->sock, e->aio);
	return 0;
}

static void echo_stop(echo *e)
{
	if (e->aio != NULL) {
		nng_close(e->sock);
		nng_aio_stop(e->aio);
		nng_aio_free(e->aio);
	}
}

/* ---- the worker process ---- */

/* Each host has its own event log, STATE_DIR/events.jsonl, as a real
 * host has: the plugin opens it from a path (one file per handle). */
static int host_start(const fanout_worker *w, unsigned i, nkp_hostd **out)
{
	char dir[512], name[32];
	uint8_t pub[NKP_HOSTD_PUBKEY_BYTES];
	nkp_hostd_config cfg = {0};
	nkp_err err;

	snprintf(name, sizeof(name), "h%05u", i);
	snprintf(dir, sizeof(dir), "%s/%s", w->dir, name);
	cfg.state_dir = dir;
	cfg.host_name = name;
	err = nkp_hostd_init(&cfg, w->service_key, pub);
	if (err == NKP_OK) {
		err = nkp_hostd_open(&cfg, out);
	}
	if (err == NKP_OK && (err = nkp_hostd_listen(*out, "tcp://127.0.0.1:0")) != NKP_OK) {
		nkp_hostd_close(*out);
	}
	if (err != NKP_OK) {
		fprintf(stderr, "nkp-bench fanout: host %s: %s\n", name, nkp_strerror(err));
		return -1;
	}
	return 0;
}

static int worker_hosts(const fanout_worker *w, nkp_hostd **hosts, echo *echoes, FILE *out)
{
	char floor_url[64], b64[45];

	for (unsigned k = 0; k < w->count; k++) {
		unsigned i = w->first + k;

		if (host_start(w, i, &hosts[k]) != 0 ||
		    echo_start(&echoes[k], w->ack_len, floor_url, sizeof(floor_url)) != 0) {
			return -1;
		}
		nkp_pubkey_to_base64(nkp_hostd_public_key(hosts[k]), b64);
		fprintf(out, "h%05u %s %s %s\n", i, nkp_hostd_listen_url(hosts[k]), floor_url, b64);
	}
	fprintf(out, "ready\n");
	return fflush(out) == 0 ? 0 : -1;
}

int fanout_worker_main(const fanout_worker *w)
{
	nkp_hostd **hosts = calloc(w->count + 1, sizeof(*hosts));
	echo *echoes = calloc(w->count + 1, sizeof(*echoes));
	FILE *out = fdopen(w->out_fd, "w");
	char c;
	int rc = 1;

	/* Thousands of hosts applying each push: keep only warnings. */
	nkp_log_set_level(NKP_LOG_WARN);

	if (hosts != NULL && echoes != NULL && out != NULL &&
	    worker_hosts(w, hosts, echoes, out) == 0) {
		rc = 0;
		/* Serve until the parent closes our control pipe. */
		while (read(w->ctl_fd, &c, 1) > 0) {
		}
	}
	if (out != NULL) {
		fclose(out);
	}
	for (unsigned k = 0; hosts != NULL && echoes != NULL && k < w->count; k++) {
		echo_stop(&echoes[k]);
		nkp_hostd_close(hosts[k]);
	}
	free(hosts);
	free(echoes);
	return rc;
}

/* ---- the floor's sender (in the parent) ---- */

typedef struct floor_peer {
	struct fanout_floor *f;
	nng_socket sock;
	nng_aio *aio;
	bool receiving;
} floor_peer;

struct fanout_floor {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool sync_init;
	unsigned n;
	unsigned done;
	unsigned failed;
	size_t req_len;
	floor_peer *peers;
};

static void floor_done(floor_peer *p, bool ok)
{
	pthread_mutex_lock(&p->f->mtx);
	p->f->done++;
	p->f->failed += !ok;
	if (p->f->done == p->f->n) {
		pthread_cond_signal(&p->f->cv);
	}
	pthread_mutex_unlock(&p->f->mtx);
}

static void floor_cb(void *arg)
{
	floor_peer *p = arg;
	int rv = nng_aio_result(p->aio);

	if (!p->receiving) {
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(p->aio));
			floor_done(p, false);
			return;
		}
		p->receiving = true;
		nng_recv_aio(p->sock, p->aio);
		return;
	}
	if (rv == 0) {
		nng_msg_free(nng_aio_get_msg(p->aio));
	}
	floor_done(p, rv == 0);
}

int fanout_floor_open(fanout_floor **out, char **urls, unsigned n)
{
	fanout_floor *f = calloc(1, sizeof(*f));

	if (f == NULL || (f->peers = calloc(n + 1, sizeof(*f->peers))) == NULL) {
		fanout_floor_close(f);
		return -1;
	}
	pthread_mutex_init(&f->mtx, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->sync_init = true;
	for (unsigned i = 0; i < n; i++) {
		floor_peer *p = &f->peers[i];

		p->f = f;
		if (nng_req0_open(&p->sock) != 0 || nng_aio_alloc(&p->aio, floor_cb, p) != 0) {
			fanout_floor_close(f);
			return -1;
		}
		f->n = i + 1;
		nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
		if (nng_dial(p->sock, urls[i], NULL, 0) != 0) {
			fprintf(stderr, "nkp-bench fanout: cannot dial floor listener %s\n",
				urls[i]);
			fanout_floor_close(f);
			return -1;
		}
	}
	*out = f;
	return 0;
}

void fanout_floor_close(fanout_floor *f)
{
	if (f == NULL) {
		return;
	}
	for (unsigned i = 0; i < f->n; i++) {
		nng_close(f->peers[i].sock);
		if (f->peers[i].aio != NULL) {
			nng_aio_stop(f->peers[i].aio);
			nng_aio_free(f->peers[i].aio);
		}
	}
	if (f->sync_init) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mtx);
	}
	free(f->peers);
	free(f);
}

/* One round: a request of `req_len` bytes to every listener at once, each
 * answered with the acknowledgement's size. Returns ms, or -1. */
double fanout_floor_round(fanout_floor *f, size_t req_len)
{
	uint64_t t0 = bench_now_ns();
	unsigned n = f->n;

	pthread_mutex_lock(&f->mtx);
	f->done = 0;
	f->failed = 0;
	f->n = 0; /* not complete until every send was started */
	pthread_mutex_unlock(&f->mtx);
	for (unsigned i = 0; i < n; i++) {
		floor_peer *p = &f->peers[i];
		nng_msg *msg = NULL;

		if (nng_msg_alloc(&msg, req_len) != 0) {
			return -1;
		}
		memset(nng_msg_body(msg), 0xa5, req_len);
		p->receiving = false;
		nng_aio_set_timeout(p->aio, 10000);
		nng_aio_set_msg(p->aio, msg);
		nng_send_aio(p->sock, p->aio);
	}
	pthread_mutex_lock(&f->mtx);
	f->n = n;
	while (f->done < n) {
		pthread_cond_wait(&f->cv, &f->mtx);
	}
	pthread_mutex_unlock(&f->mtx);
	return f->failed > 0 ? -1 : (double)(bench_now_ns() - t0) / 1e6;
}
