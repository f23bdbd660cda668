/* One request, one reply over nkp-hostd's local socket, through the
 * in-tree rpc client (nkp/private/rpc.h). A read-only request whose
 * connection is reset is sent again (see hostctl_call). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hostctl.h"
#include "internal.h"
#include "rpc.h"

#define HOST_API_VERSION 1u
static const nkpi_rpc_call_opts call_opts = {
	.send_timeout_ms = 30000,
	.recv_timeout_ms = 30000,
	.max_reply = 1u << 20,
};

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

/* The reply may carry a DEK: it is unpacked with the wiping allocator and
 * the message wiped before it is freed. Consumes msg. */
static nkp_err unpack_reply(nng_msg *msg, Nkp__Hostapi__Reply **out)
{
	Nkp__Hostapi__Reply *r;

	r = nkp__hostapi__reply__unpack(&nkpi_wiping_allocator, nng_msg_len(msg),
					nng_msg_body(msg));
	nkpi_rpc_msg_free(msg, true);
	if (r == NULL) {
		return NKP_ERR_PARSE;
	}
	*out = r;
	return NKP_OK;
}

/* A connection reset before the reply: nkp-hostd replaced a wedged local
 * listener (nanomsg/nng#1518) under this request. */
nkp_err hostctl_call(const hostctl *ctl, Nkp__Hostapi__Request *req, Nkp__Hostapi__Reply **out)
{
	nkpi_rpc_call_opts o = call_opts;
	nkpi_rpc_step step;
	char url[4200];
	nng_msg *msg = NULL;
	uint8_t *buf;
	size_t len;
	int rv;

	snprintf(url, sizeof(url), "%s%s", strncmp(ctl->socket, "ipc://", 6) == 0 ? "" : "ipc://",
		 ctl->socket);
	req->api_version = HOST_API_VERSION;
	/* The request holds keysafe bytes at most, never a clear key. */
	len = nkp__hostapi__request__get_packed_size(req);
	buf = malloc(len + 1);
	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__hostapi__request__pack(req, buf);
	o.read_only = read_only(req);
	rv = nkpi_rpc_call(url, buf, len, &o, &msg, &step);
	free(buf);
	if (rv != 0) {
		return nkpi_rpc_err(rv);
	}
	return unpack_reply(msg, out);
}

void hostctl_reply_free(Nkp__Hostapi__Reply *r)
{
	if (r != NULL) {
		nkp__hostapi__reply__free_unpacked(r, &nkpi_wiping_allocator);
	}
}
