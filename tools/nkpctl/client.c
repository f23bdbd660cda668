/* The admin client: one request and one reply over ipc://SOCKET, through
 * the in-tree rpc client (nkp/private/rpc.h). The serialized request may
 * carry a backup password: it is packed into sodium_malloc memory, wiped
 * when freed (nng's copy is wiped if it cannot be sent). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"
#include "rpc.h"

#define ADMIN_API_VERSION 1u
/* Every admin request is answered in well under a second, backups
 * (Argon2id, about 1 s) and host removal (up to 5 s) included; a service
 * silent for a minute is reported, not waited for. */
static const nkpi_rpc_call_opts call_opts = {
	.send_timeout_ms = 10000,
	.recv_timeout_ms = 60000,
	.max_reply = 16u << 20,
};

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

static int call_failed(const ctl *c, const char *what, nkpi_rpc_step step, int rv)
{
	switch (step) {
	case NKPI_RPC_OPEN:
		return ctl_fail(what, "cannot open a socket: %s", nng_strerror(rv));
	case NKPI_RPC_DIAL:
		return ctl_fail(what, "cannot reach nkpd at %s: %s (is it running? see --socket)",
				c->socket, nng_strerror(rv));
	case NKPI_RPC_SEND:
		return ctl_fail(what, "cannot send to nkpd: %s", nng_strerror(rv));
	default:
		return ctl_fail(what, "no reply from nkpd: %s", nng_strerror(rv));
	}
}

/* A read-only request whose connection is reset before the reply (nkpd
 * replaced a wedged admin listener under it, nanomsg/nng#1518) is sent
 * again; see nkpi_rpc_call. */
int ctl_call_raw(const ctl *c, Nkp__Admin__Request *q, const char *what, ctl_resp **out)
{
	nkpi_rpc_call_opts o = call_opts;
	nkpi_rpc_step step;
	char url[4200];
	nng_msg *msg = NULL;
	uint8_t *buf;
	size_t len;
	ctl_resp *r;
	int rv;

	if ((size_t)snprintf(url, sizeof(url), "ipc://%s", c->socket) >= sizeof(url)) {
		return ctl_fail(what, "socket path too long");
	}
	q->api_version = ADMIN_API_VERSION;
	len = nkp__admin__request__get_packed_size(q);
	buf = sodium_malloc(len + 1);
	if (buf == NULL) {
		return ctl_fail(what, "out of memory");
	}
	nkp__admin__request__pack(q, buf);
	o.read_only = read_only(q);
	rv = nkpi_rpc_call(url, buf, len, &o, &msg, &step);
	sodium_free(buf);
	if (rv != 0) {
		return call_failed(c, what, step, rv);
	}
	r = nkp__admin__response__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	nkpi_rpc_msg_free(msg, false);
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
