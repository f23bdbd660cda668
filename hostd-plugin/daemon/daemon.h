/* nkp-hostd: a thin daemon around libnkp-hostd. */
#ifndef NKP_HOSTD_DAEMON_H
#define NKP_HOSTD_DAEMON_H

#include <nkp/hostd.h>

#define PROG "nkp-hostd"

int init_main(int argc, char **argv);
int run_main(int argc, char **argv);

/* Usage error: one line and a hint on stderr; returns 2. */
int usage_error(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/* The state directory is held by another process (NKP_ERR_STATE from
 * nkp_hostd_open/init): one line on stderr naming its pid; returns 1. */
int state_dir_busy(const char *cmd, const char *dir);

typedef struct localapi localapi;

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
