/* nkpd's admin front end: nng REP on ipc://DIR/admin.sock speaking
 * proto/admin.proto. It decodes a Request, calls the core (core/ops.h,
 * core/views.h) and encodes what the core returns into a Response. */
#ifndef NKPD_API_H
#define NKPD_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/nkp.h>

struct nkpd_svc;

typedef struct nkpd_admin nkpd_admin;

/** Listens on DIR/admin.sock (mode 0600) and serves requests on a thread
 * of its own, with a watchdog that replaces a listener that stopped
 * accepting (nkp/private/rpc.h). Errors: NKP_ERR_INVALID (DIR too long),
 * NKP_ERR_NOMEM, NKP_ERR_NET. */
nkp_err nkpd_admin_start(struct nkpd_svc *s, nkpd_admin **out);
/* How long a stop waits for the socket's watchdog (a probe takes a few
 * seconds at most). */
#define NKPD_ADMIN_STOP_LIMIT_MS 15000u
/** Stops serving and frees `a`; accepts NULL. False, with nothing freed,
 * if the socket's watchdog is stuck in nng (its reaper wedged: nothing
 * can be closed any more); the caller exits. */
NKP_NODISCARD bool nkpd_admin_stop(nkpd_admin *a);
/** Validates and executes one serialized request (wiping `req` once
 * parsed: it may hold a backup password) from a peer of uid `peer_uid`;
 * returns a malloc'd serialized Response in *out (never NULL unless out
 * of memory: NKP_ERR_NOMEM). Exposed for tests and the fuzz target. */
nkp_err nkpd_admin_handle(struct nkpd_svc *s, uint8_t *req, size_t len, uint64_t peer_uid,
			  uint8_t **out, size_t *outlen);

#endif
