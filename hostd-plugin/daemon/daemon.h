/* nkp-hostd: a thin daemon around libnkp-hostd. */
#ifndef NKP_HOSTD_DAEMON_H
#define NKP_HOSTD_DAEMON_H

#include <nng/nng.h>

#include <nkp/hostd.h>

#include "hostd-intree.h"

#define PROG "nkp-hostd"

int init_main(int argc, char **argv);
int run_main(int argc, char **argv);

/* Usage error: one line and a hint on stderr; returns 2. */
int usage_error(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/* The state directory is held by another process (NKP_ERR_STATE from
 * nkp_hostd_open/init): one line on stderr naming its pid; returns 1. */
int state_dir_busy(const char *cmd, const char *dir);

typedef struct localapi localapi;

/* peer.c: the other end of a local API connection. */
typedef struct local_peer {
	bool known;		/* false: in-process (localapi_handle) */
	uint64_t pid, uid, gid; /* UINT64_MAX when the kernel did not say */
} local_peer;
/* The peer of the connection `msg` arrived on. */
void local_peer_get(nng_msg *msg, local_peer *out);
/* Root, our own uid, or (when `group` >= 0) a member of that group, by the
 * connection's gid or the process's supplementary groups. */
bool local_peer_allowed(const local_peer *p, int64_t group);
/* Gives *group (>= 0) access to DIR/host.sock: the socket in the group,
 * 0660; DIR in the group, 0710 (members reach the socket by name and list
 * nothing; every other file in DIR stays 0600). With no group, or when
 * that cannot be done (no CAP_CHOWN: a NKP-LOCAL-GROUP warning, *group set
 * to -1), the socket is 0600 and DIR 0700. */
nkp_err local_access_set(const char *state_dir, int64_t *group);
/* The gid of the local group: `name` when given (NKP_ERR_NOT_FOUND if it
 * does not exist), else "nkp" if it exists, else -1. */
nkp_err local_group_resolve(const char *name, int64_t *gid);
/* Records a data key release (key.released): the peer's pid, uid, gid,
 * executable and cgroup, the VM's uuid and the component. No key. */
void local_peer_released(nkp_hostd *h, const local_peer *p, const char *vm_uuid,
			 const char *component);

/* Serves the local API for `h` on ipc://DIR/host.sock (mode 0600, peer
 * uid checked), with several nng contexts so many clients are served at
 * once. With `group` >= 0 the socket is 0660 in that group, DIR 0710 in it,
 * and its members are admitted too. Errors: NKP_ERR_NET, NKP_ERR_NOMEM,
 * NKP_ERR_PERM (cannot give the group access). */
nkp_err localapi_start(nkp_hostd *h, const char *state_dir, int64_t group, localapi **out);
void localapi_stop(localapi *api);
/* Handles one serialized Request as if from an allowed peer and returns
 * the serialized Reply in *out (sodium_malloc'd: it may carry a DEK; free
 * with nkp_secure_free()). The socket server does the same per message;
 * exposed for the fuzz target. Errors: NKP_ERR_NOMEM (no reply). */
nkp_err localapi_handle(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **out,
			size_t *outlen);
/* One status round trip over the socket, as a client would: NKP_OK if it
 * answered within `timeout_ms`. */
nkp_err localapi_probe(const char *state_dir, int timeout_ms);
#ifdef NKP_TEST_HOOKS
/* Test builds only: told each watchdog probe's outcome; with
 * NKP_TEST_WEDGE_LOCALAPI=1 it wedges `api` once (see localapi.c). */
void localapi_test_probed(localapi *api, bool answered);
#else
static inline void localapi_test_probed(localapi *api, bool answered)
{
	(void)api;
	(void)answered;
}
#endif

#endif
