/* One request, one reply over nkp-hostd's local socket. A read-only
 * request whose connection is reset is sent again (see hostctl_call). */
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "hostctl.h"
#include "internal.h"

#define HOST_API_VERSION 1u
#define CLIENT_TIMEOUT_MS 30000
#define CLIENT_MAX_REPLY (1u << 20)

static nkp_err map_nng(int rv)
{
	switch (rv) {
	case 0:
		return NKP_OK;
	case NNG_ENOMEM:
		return NKP_ERR_NOMEM;
	case NNG_ETIMEDOUT:
		return NKP_ERR_TIMEOUT;
	case NNG_EPERM:
		return NKP_ERR_PERM;
	default:
		return NKP_ERR_NET;
	}
}

/* nng's REQ would otherwise send the request again by itself, to the new
 * listener, when the connection closes under it: changing requests
 * included. With resending off, a reset reaches us as NNG_ECONNRESET and
 * hostctl_call decides. */
static int dial(const hostctl *ctl, nng_socket *out)
{
	char url[4200];
	nng_socket s;
	int rv;

	snprintf(url, sizeof(url), "%s%s", strncmp(ctl->socket, "ipc://", 6) == 0 ? "" : "ipc://",
		 ctl->socket);
	if ((rv = nng_req0_open(&s)) != 0) {
		return rv;
	}
	rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CLIENT_TIMEOUT_MS);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CLIENT_TIMEOUT_MS);
	rv = rv != 0 ? rv : nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, CLIENT_MAX_REPLY);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	rv = rv != 0 ? rv : nng_dial(s, url, NULL, 0);
	if (rv != 0) {
		nng_close(s);
		return rv;
	}
	*out = s;
	return 0;
}

/* The request holds keysafe bytes at most, never a clear key. */
static int send_request(nng_socket s, const Nkp__Hostapi__Request *req)
{
	nng_msg *msg = NULL;
	int rv = nng_msg_alloc(&msg, nkp__hostapi__request__get_packed_size(req));

	if (rv != 0) {
		return rv;
	}
	nkp__hostapi__request__pack(req, nng_msg_body(msg));
	rv = nng_sendmsg(s, msg, 0);
	if (rv != 0) {
		nng_msg_free(msg);
	}
	return rv;
}

/* Requests that change nothing, so sending one again is harmless.
 * status and check (vm show) only read. unwrap (vm unwrap, vm exec)
 * changes no key and no keysafe: a second send returns the same DEK from
 * the same keysafe bytes; it only counts the version's `unwrapped` use
 * and `last_used` time again, statistics that a repeat can at worst
 * overstate. Nothing that guards a retire or a delete reads them (nkpd
 * counts `keysafes`), and a VM being started waits on exactly this call.
 * Every other operation makes new key material that exists only in its
 * reply, and create, rewrap, rekey and decrypt (remove_component) move
 * the per-version `keysafes` counts: a rewrap or decrypt sent twice would
 * take its keysafe off the old version twice, so nkpd could let that
 * version be retired while a VM still needs it. Those are never sent
 * again. */
static bool read_only(const Nkp__Hostapi__Request *req)
{
	switch (req->op_case) {
	case NKP__HOSTAPI__REQUEST__OP_STATUS:
	case NKP__HOSTAPI__REQUEST__OP_CHECK:
	case NKP__HOSTAPI__REQUEST__OP_UNWRAP:
		return true;
	default:
		return false;
	}
}

/* A connection reset before the reply: nkp-hostd replaced a wedged local
 * listener (nanomsg/nng#1518, see nkp-hostd's run.c) under this request. */
#define RESET_RETRIES 5
#define RESET_PAUSE_MS 1000

/* The reply may carry a DEK: it is unpacked with the wiping allocator and
 * the message wiped before it is freed. Consumes msg. */
static nkp_err unpack_reply(nng_msg *msg, Nkp__Hostapi__Reply **out)
{
	Nkp__Hostapi__Reply *r;

	r = nkp__hostapi__reply__unpack(&nkpi_wiping_allocator, nng_msg_len(msg),
					nng_msg_body(msg));
	sodium_memzero(nng_msg_body(msg), nng_msg_len(msg));
	nng_msg_free(msg);
	if (r == NULL) {
		return NKP_ERR_PARSE;
	}
	*out = r;
	return NKP_OK;
}

nkp_err hostctl_call(const hostctl *ctl, Nkp__Hostapi__Request *req, Nkp__Hostapi__Reply **out)
{
	nng_socket s;
	nng_msg *msg = NULL;
	int rv;

	req->api_version = HOST_API_VERSION;
	for (int attempt = 0;; attempt++) {
		if ((rv = dial(ctl, &s)) != 0) {
			break;
		}
		rv = send_request(s, req);
		if (rv == 0) {
			rv = nng_recvmsg(s, &msg, 0);
		}
		nng_close(s);
		if (rv != NNG_ECONNRESET || !read_only(req) || attempt == RESET_RETRIES) {
			break;
		}
		nng_msleep(RESET_PAUSE_MS);
	}
	if (rv != 0) {
		return map_nng(rv);
	}
	return unpack_reply(msg, out);
}

void hostctl_reply_free(Nkp__Hostapi__Reply *r)
{
	if (r != NULL) {
		nkp__hostapi__reply__free_unpacked(r, &nkpi_wiping_allocator);
	}
}
