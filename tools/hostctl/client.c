/* One request, one reply over nkp-hostd's local socket. */
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "hostctl.h"
#include "internal.h"

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

static nkp_err exchange(nng_socket s, const hostctl *ctl, Nkp__Hostapi__Request *req,
			Nkp__Hostapi__Reply **out)
{
	char url[4200];
	size_t len = nkp__hostapi__request__get_packed_size(req);
	nng_msg *msg = NULL;
	Nkp__Hostapi__Reply *r;
	int rv;

	snprintf(url, sizeof(url), "%s%s", strncmp(ctl->socket, "ipc://", 6) == 0 ? "" : "ipc://",
		 ctl->socket);
	rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CLIENT_TIMEOUT_MS);
	rv = rv != 0 ? rv : nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CLIENT_TIMEOUT_MS);
	rv = rv != 0 ? rv : nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, CLIENT_MAX_REPLY);
	rv = rv != 0 ? rv : nng_dial(s, url, NULL, 0);
	rv = rv != 0 ? rv : nng_msg_alloc(&msg, len);
	if (rv != 0) {
		return map_nng(rv);
	}
	nkp__hostapi__request__pack(req, nng_msg_body(msg));
	rv = nng_sendmsg(s, msg, 0);
	if (rv != 0) {
		nng_msg_free(msg);
		return map_nng(rv);
	}
	rv = nng_recvmsg(s, &msg, 0);
	if (rv != 0) {
		return map_nng(rv);
	}
	r = nkp__hostapi__reply__unpack(&nkpi_wiping_allocator, nng_msg_len(msg), nng_msg_body(msg));
	/* The reply may carry a DEK. */
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
	nkp_err err;

	req->api_version = 1;
	if (nng_req0_open(&s) != 0) {
		return NKP_ERR_NOMEM;
	}
	err = exchange(s, ctl, req, out);
	nng_close(s);
	return err;
}

void hostctl_reply_free(Nkp__Hostapi__Reply *r)
{
	if (r != NULL) {
		nkp__hostapi__reply__free_unpacked(r, &nkpi_wiping_allocator);
	}
}
