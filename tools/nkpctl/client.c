/* The admin client: nng REQ to ipc://SOCKET, one request and one reply.
 * The serialized request may carry a backup password: it is packed into
 * sodium_malloc memory and wiped once handed to nng. */
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "ctl.h"

#define ADMIN_API_VERSION 1u
#define REPLY_MAX (16u << 20)
/* Every admin request is answered in well under a second, backups
 * (Argon2id, about 1 s) and host removal (up to 5 s) included; a service
 * silent for a minute is reported, not waited for. */
#define RECV_TIMEOUT_MS 60000

static int dial(const ctl *c, const char *what, nng_socket *out)
{
	char url[4200];
	nng_socket s;
	int rv;

	if ((size_t)snprintf(url, sizeof(url), "ipc://%s", c->socket) >= sizeof(url)) {
		return ctl_fail(what, "socket path too long");
	}
	if ((rv = nng_req0_open(&s)) != 0) {
		return ctl_fail(what, "cannot open a socket: %s", nng_strerror(rv));
	}
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, REPLY_MAX);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, RECV_TIMEOUT_MS);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 10000);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if ((rv = nng_dial(s, url, NULL, 0)) != 0) {
		nng_close(s);
		return ctl_fail(what, "cannot reach nkpd at %s: %s (is it running? see --socket)",
				c->socket, nng_strerror(rv));
	}
	*out = s;
	return 0;
}

static int send_request(nng_socket s, Nkp__Admin__Request *q, const char *what)
{
	size_t len = nkp__admin__request__get_packed_size(q);
	uint8_t *buf = sodium_malloc(len + 1);
	nng_msg *msg = NULL;
	int rv;

	if (buf == NULL) {
		return ctl_fail(what, "out of memory");
	}
	nkp__admin__request__pack(q, buf);
	rv = nng_msg_alloc(&msg, 0);
	if (rv == 0) {
		rv = nng_msg_append(msg, buf, len);
	}
	sodium_free(buf);
	if (rv == 0) {
		rv = nng_sendmsg(s, msg, 0);
	}
	if (rv != 0) {
		if (msg != NULL) {
			sodium_memzero(nng_msg_body(msg), nng_msg_len(msg));
			nng_msg_free(msg);
		}
		return ctl_fail(what, "cannot send to nkpd: %s", nng_strerror(rv));
	}
	return 0;
}

/* Requests that change nothing, so sending one again is harmless. */
static bool read_only(const Nkp__Admin__Request *q)
{
	switch (q->op_case) {
	case NKP__ADMIN__REQUEST__OP_STATUS:
	case NKP__ADMIN__REQUEST__OP_HOST_LIST:
	case NKP__ADMIN__REQUEST__OP_PROVIDER_LIST:
	case NKP__ADMIN__REQUEST__OP_PROVIDER_SHOW:
	case NKP__ADMIN__REQUEST__OP_ROTATION_STATUS:
	case NKP__ADMIN__REQUEST__OP_EVENTS:
		return true;
	default:
		return false;
	}
}

/* A connection reset before the reply: nkpd replaced a wedged admin
 * listener (nanomsg/nng#1518, see nkpd's admin.c) under this request. */
#define RESET_RETRIES 5
#define RESET_PAUSE_MS 1000

int ctl_call_raw(const ctl *c, Nkp__Admin__Request *q, const char *what, ctl_resp **out)
{
	nng_socket s;
	nng_msg *msg = NULL;
	ctl_resp *r;
	int rv;

	q->api_version = ADMIN_API_VERSION;
	for (int attempt = 0;; attempt++) {
		if (dial(c, what, &s) != 0) {
			return 1;
		}
		if (send_request(s, q, what) != 0) {
			nng_close(s);
			return 1;
		}
		rv = nng_recvmsg(s, &msg, 0);
		nng_close(s);
		if (rv != NNG_ECONNRESET || !read_only(q) || attempt == RESET_RETRIES) {
			break;
		}
		nng_msleep(RESET_PAUSE_MS);
	}
	if (rv != 0) {
		return ctl_fail(what, "no reply from nkpd: %s", nng_strerror(rv));
	}
	r = nkp__admin__response__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (r == NULL) {
		return ctl_fail(what, "malformed reply from nkpd");
	}
	*out = r;
	return 0;
}

int ctl_call(const ctl *c, Nkp__Admin__Request *q, const char *what, ctl_resp **out)
{
	ctl_resp *r = NULL;

	if (ctl_call_raw(c, q, what, &r) != 0) {
		return 1;
	}
	if (r->code != 0) {
		ctl_fail(what, "%s",
			 r->message[0] != '\0' ? r->message : nkp_strerror((nkp_err)r->code));
		ctl_resp_free(r);
		return 1;
	}
	*out = r;
	return 0;
}

void ctl_resp_free(ctl_resp *r)
{
	if (r != NULL) {
		nkp__admin__response__free_unpacked(r, NULL);
	}
}
