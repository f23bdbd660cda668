/* nkp-hostd: a thin daemon around libnkp-hostd. */
#ifndef NKP_HOSTD_DAEMON_H
#define NKP_HOSTD_DAEMON_H

#include <nng/nng.h>

#include <nkp/hostd.h>

#define PROG "nkp-hostd"

int init_main(int argc, char **argv);
int run_main(int argc, char **argv);

/* Usage error: one line and a hint on stderr; returns 2. */
int usage_error(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);

typedef struct localapi localapi;

/* peer.c: the other end of a local API connection. */
typedef struct local_peer {
	bool known;          /* false: in-process (localapi_handle) */
	uint64_t pid, uid, gid; /* UINT64_MAX when the kernel did not say */
} local_peer;
/* The peer of the connection `msg` arrived on. */
void local_peer_get(nng_msg *msg, local_peer *out);
/* Root, our own uid, or (when `group` >= 0) a member of that group, by the
 * connection's gid or the process's supplementary groups. */
bool local_peer_allowed(const local_peer *p, int64_t group);
/* Records a data key release (key.released): the peer's pid, uid, gid,
 * executable and cgroup, the VM's uuid and the component. No key. */
void local_peer_released(nkp_hostd *h, const local_peer *p, const char *vm_uuid,
			 const char *component);

/* Serves the local API for `h` on ipc://DIR/host.sock (mode 0600, peer
 * uid checked), with several nng contexts so many clients are served at
 * once. Errors: NKP_ERR_NET, NKP_ERR_NOMEM. */
nkp_err localapi_start(nkp_hostd *h, const char *state_dir, localapi **out);
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

#endif
