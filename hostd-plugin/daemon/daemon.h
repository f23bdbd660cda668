/* nkp-hostd: a thin daemon around libnkp-hostd. */
#ifndef NKP_HOSTD_DAEMON_H
#define NKP_HOSTD_DAEMON_H

#include <nkp/hostd.h>

#include "hostd-intree.h"
#include "rpc.h"

#define PROG "nkp-hostd"

int init_main(int argc, char **argv);
int run_main(int argc, char **argv);

/* Usage error: one line and a hint on stderr; returns 2. */
int usage_error(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/* The state directory is held by another process (NKP_ERR_STATE from
 * nkp_hostd_open/init): one line on stderr naming its pid; returns 1. */
int state_dir_busy(const char *cmd, const char *dir);

typedef struct localapi localapi;

/* peer.c: who may reach the local API, and who got a key from it. */
/* The gid of the local group: `name` when given (NKP_ERR_NOT_FOUND if it
 * does not exist), else "nkp" if it exists, else -1. */
nkp_err local_group_resolve(const char *name, int64_t *gid);
/* DIR's access for the local socket in it: with `group` >= 0, DIR in that
 * group, 0710 (members reach the socket by name and list nothing; every
 * other file in DIR stays 0600), else 0700 (unless already stricter).
 * Errors: NKP_ERR_PERM (errno says why), NKP_ERR_INVALID (no DIR). */
nkp_err local_dir_access(const char *state_dir, int64_t group);
/* Logs the NKP-LOCAL-GROUP warning: `group` cannot have access to `sock`
 * (errno value `e`; e.g. no CAP_CHOWN), which only root may use. */
void local_group_refused(const char *sock, int64_t group, int e);
/* Records a data key release (key.released): the peer's pid, uid, gid,
 * executable and cgroup (NULL peer: an in-process caller), the VM's uuid
 * and the component. No key. */
void local_peer_released(nkp_hostd *h, const nkpi_rpc_peer *p, const char *vm_uuid,
			 const char *component);

/* Serves the local API for `h` on ipc://DIR/host.sock (mode 0600, peer
 * uid checked), with several nng contexts so many clients are served at
 * once, and a watchdog that replaces the socket's listener when it stops
 * answering (nkp/private/rpc.h). With `group` >= 0 the socket is 0660 in
 * that group, DIR 0710 in it, and its members are admitted too; when that
 * cannot be done (no CAP_CHOWN: a NKP-LOCAL-GROUP warning), root only, as
 * without a group. Errors: NKP_ERR_NET, NKP_ERR_NOMEM, NKP_ERR_INVALID,
 * NKP_ERR_PERM (cannot make DIR root-only). */
nkp_err localapi_start(nkp_hostd *h, const char *state_dir, int64_t group, localapi **out);
/* How long a stop waits for the socket's watchdog: a probe takes at most a
 * few seconds (its send and reply timeouts). */
#define LOCALAPI_STOP_LIMIT_MS 15000u
/* Stops serving (no request is handled once it returns) and frees `api`.
 * Accepts NULL. False, with nothing freed, if the socket's watchdog is
 * stuck in nng (its reaper wedged: nothing can be closed any more); the
 * caller exits. */
NKP_NODISCARD bool localapi_stop(localapi *api);
/* Handles one serialized Request as if from an allowed peer and returns
 * the serialized Reply in *out (sodium_malloc'd: it may carry a DEK; free
 * with nkp_secure_free()). The socket server does the same per message;
 * exposed for the fuzz target. Errors: NKP_ERR_NOMEM (no reply). */
nkp_err localapi_handle(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **out,
			size_t *outlen);

#endif
