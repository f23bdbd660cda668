/* nkp-hostctl: host-local status and VM key operations, over nkp-hostd's
 * local socket (proto/hostapi.proto). */
#ifndef NKP_HOSTCTL_H
#define NKP_HOSTCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/nkp.h>

#include "hostapi.pb-c.h"

#define PROG "nkp-hostctl"
#define HOSTCTL_DEFAULT_SOCKET "/var/lib/nkp/hostd/host.sock"

typedef struct hostctl {
	const char *socket; /* a path, or an ipc:// URL */
	bool json;
} hostctl;

int status_main(hostctl *ctl, int argc, char **argv);
int vm_main(hostctl *ctl, int argc, char **argv);

/* Usage error: one line and a hint on stderr; returns 2. */
int usage_error(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/* Operation failure: one line on stderr; returns 1. */
int fail(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/* True if argv has --json (accepted after the command too); sets ctl->json. */
void scan_json(hostctl *ctl, int argc, char **argv);

/* Sends one request and waits for the reply. NKP_OK with *out set means
 * a reply arrived (check its code); free it with hostctl_reply_free(),
 * which wipes any DEK. A read-only request (status, check, unwrap) whose
 * connection is reset before the reply is sent again, up to 5 times 1 s
 * apart; any other request never is. Errors: NKP_ERR_NET (daemon not
 * running, socket missing or refused, connection reset), NKP_ERR_TIMEOUT,
 * NKP_ERR_PARSE, NKP_ERR_NOMEM. */
nkp_err hostctl_call(const hostctl *ctl, Nkp__Hostapi__Request *req, Nkp__Hostapi__Reply **out);
void hostctl_reply_free(Nkp__Hostapi__Reply *r);

/* Prints a JSON string literal (quoted, escaped). */
void json_str(const char *s);
/* Prints base64 of `len` bytes (no newline). */
void print_b64(const uint8_t *b, size_t len);

#endif
