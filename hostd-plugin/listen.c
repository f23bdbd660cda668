/* Serving the service protocol with nng aio callbacks: one REP socket and
 * a few contexts per handle, no thread of its own, so one process can hold
 * thousands of plugin instances. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "hostd-internal.h"

/* The service sends one request per host at a time; two contexts let a
 * heartbeat through while a push is being written. */
#define LISTEN_CONTEXTS 2
#define LISTEN_URL_MAX 256

typedef struct lctx {
	nkp_hostd *h;
	nng_ctx ctx;
	nng_aio *aio;
	bool sending;
} lctx;

struct hlistener {
	nng_socket sock;
	nng_listener listener;
	char url[LISTEN_URL_MAX];
	lctx ctxs[LISTEN_CONTEXTS];
};

static void answer(lctx *c, nng_msg *msg)
{
	uint8_t *out = NULL;
	size_t outlen = 0;
	nkp_err err = nkp_hostd_handle_frame(c->h, nng_msg_body(msg), nng_msg_len(msg), &out,
					     &outlen);

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

static nkp_err resolve_url(hlistener *l, const char *url)
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

static nkp_err listener_start(hlistener *l, nkp_hostd *h, const char *url)
{
	if (nng_rep0_open(&l->sock) != 0) {
		return NKP_ERR_NOMEM;
	}
	if (nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, NKP_FRAME_MAX) != 0 ||
	    nng_listener_create(&l->listener, l->sock, url) != 0 ||
	    nng_listener_start(l->listener, 0) != 0) {
		return NKP_ERR_NET;
	}
	for (size_t i = 0; i < LISTEN_CONTEXTS; i++) {
		lctx *c = &l->ctxs[i];

		c->h = h;
		if (nng_aio_alloc(&c->aio, on_io, c) != 0 || nng_ctx_open(&c->ctx, l->sock) != 0) {
			return NKP_ERR_NOMEM;
		}
	}
	for (size_t i = 0; i < LISTEN_CONTEXTS; i++) {
		nng_ctx_recv(l->ctxs[i].ctx, l->ctxs[i].aio);
	}
	return resolve_url(l, url);
}

nkp_err nkp_hostd_listen(nkp_hostd *h, const char *url)
{
	hlistener *l;
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
		hlistener_stop(l);
		return err;
	}
	h->listener = l;
	return NKP_OK;
}

const char *nkp_hostd_listen_url(const nkp_hostd *h)
{
	return h == NULL || h->listener == NULL ? NULL : h->listener->url;
}

void hlistener_stop(hlistener *l)
{
	if (l == NULL) {
		return;
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
	free(l);
}
