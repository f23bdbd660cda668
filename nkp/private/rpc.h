/* Local request/reply over nng, written once: the servers behind nkpd's
 * admin.sock and nkp-hostd's host.sock, their clients (nkpctl,
 * nkp-hostctl), the peer check they share, and one watchdog for a
 * listener that stops serving.
 *
 * A server is one nng REP socket listening on ipc://PATH (0600, or 0660
 * in a group), with N contexts each looping receive, handle, send. The
 * handler is the caller's: it gets the request bytes and the peer the
 * kernel reports for the connection, and returns the reply bytes.
 *
 * nng 1.5.2 (Debian 12) has a bug, nanomsg/nng#1518 (fixed in 1.6): a
 * peer that disconnects during the SP handshake can leave a listener that
 * takes connections it never serves. The server's watchdog probes the
 * socket like a client would and, after two probes in a row failed while
 * the server sat idle, replaces the listener; the socket, its contexts
 * and the requests they hold stay.
 *
 * The client side sends one request on a fresh REQ socket and waits for
 * one reply. nng's own resending is off: a connection reset under a
 * request (a watchdog replaced the listener) reaches the caller, or, for a
 * request the caller says is read-only, sends it again a few times.
 *
 * In-tree only (nkp/private/), never installed; built as its own archive
 * (nkp-rpc) so that libnkp does not depend on nng. */
#ifndef NKP_RPC_H
#define NKP_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include <nkp/common.h>
#include <nkp/err.h>

/* ---- peers ---- */

/** The process on the other end of a local connection, as the kernel
 * reports it (SO_PEERCRED, through nng's NNG_OPT_IPC_PEER_* options). */
typedef struct nkpi_rpc_peer {
	bool known;		/* false: the kernel did not say (or in-process) */
	uint64_t pid, uid, gid; /* UINT64_MAX when the kernel did not say */
} nkpi_rpc_peer;

/** The peer of the connection `msg` arrived on. Never fails: what nng
 * cannot tell is UINT64_MAX, and `known` false without a uid. */
void nkpi_rpc_peer_get(nng_msg *msg, nkpi_rpc_peer *out);

/** True if `p` may use a local socket: root or our effective uid; and,
 * when `group` >= 0, a member of that group, by the connection's gid or
 * the supplementary groups of the process (/proc/PID/status, read while
 * it waits for its reply). A peer that is not `known` is refused. */
bool nkpi_rpc_peer_allowed(const nkpi_rpc_peer *p, int64_t group);

/* ---- server ---- */

typedef struct nkpi_rpc_server nkpi_rpc_server;

/** Serves one request. `req` (`len` bytes) belongs to the server, which
 * wipes it when the handler returns; the handler may read and change it.
 * `peer` is valid during the call. On NKP_OK, *reply holds `*reply_len`
 * bytes that the server sends and then gives to the configured
 * reply_free. Any other result sends no reply: the client waits for its
 * receive timeout (use it only when no reply can be made at all). Runs
 * on nng's callback threads, or on a thread of the server's own when the
 * config says `threaded`; up to `contexts` calls at once. */
typedef nkp_err (*nkpi_rpc_handler)(void *arg, const nkpi_rpc_peer *peer, uint8_t *req, size_t len,
				    uint8_t **reply, size_t *reply_len);

typedef struct nkpi_rpc_server_config {
	const char *path;   /* the socket file; the server listens on ipc://PATH */
	int mode;	    /* its permissions: 0600, or 0660 with `group` */
	int64_t group;	    /* the socket file's group (chown), or -1 to leave it */
	size_t max_request; /* bigger requests are dropped by nng (NNG_OPT_RECVMAXSZ) */
	unsigned contexts;  /* requests served at once, at least 1 */
	/* Each context is served by a thread of its own, so a handler may
	 * block (nkpd's admin requests wait on hosts); otherwise from nng's
	 * callback threads, where a handler must be quick. */
	bool threaded;
	nkpi_rpc_handler handle;
	void *arg; /* the handler's and the callbacks' first argument */
	/* Frees a reply after it was copied into nng's message; NULL: free(). */
	void (*reply_free)(uint8_t *reply, size_t len);
	/* Replies carry secrets: a reply that could not be sent is wiped
	 * before it is freed. (One that was sent is freed by nng, unwiped:
	 * the socket is local and its peers are checked.) */
	bool wipe_replies;

	/* The watchdog, when `probe` is not NULL: every watch_ms (default
	 * 3000), on the monotonic clock, `probe` (probe_len bytes, a request
	 * the handler answers cheaply and without side effects) is sent as a
	 * client would. It fails when no reply came and no request was
	 * served or being served for probe_timeout_ms (default 3000); while
	 * the server is busy it waits its turn, up to 120 s. After two
	 * failures in a row the listener is replaced and on_relisten (may be
	 * NULL) is told the outcome: NKP_OK, or why the new listener could
	 * not start (the next two failed probes try again). */
	const uint8_t *probe;
	size_t probe_len;
	unsigned watch_ms;
	unsigned probe_timeout_ms;
	void (*on_relisten)(void *arg, nkp_err err);
	/* Test builds (NKP_TEST_HOOKS) only: with the environment variable
	 * `test_wedge_env` (NULL: none) set, every probe's outcome is logged
	 * under `test_log_id` as "NAME probe answered|failed"; set to 1, the
	 * listener is also closed, once, right after the first probe it
	 * answered (the probes fail as under nng#1518 until the watchdog
	 * replaces it). `name` ("admin socket") names the socket. */
	const char *name;
	const char *test_wedge_env;
	const char *test_log_id;
} nkpi_rpc_server_config;

/** Listens on ipc://cfg->path with cfg->mode (in cfg->group when >= 0),
 * opens cfg->contexts contexts, starts serving and, with a probe, the
 * watchdog. A stale socket file left by a dead process is replaced. The
 * config is copied; its strings and probe bytes must outlive the server.
 * Errors: NKP_ERR_INVALID (path too long, no contexts, no handler),
 * NKP_ERR_NET (cannot listen), NKP_ERR_PERM (cannot give the socket to
 * the group; errno says why), NKP_ERR_NOMEM. Nothing is left on error. */
NKP_NODISCARD nkp_err nkpi_rpc_server_start(const nkpi_rpc_server_config *cfg,
					    nkpi_rpc_server **out);

/** Stops the watchdog, closes the socket (requests in flight get no
 * reply), waits for handlers that are running, and frees `s`. No handler
 * or callback runs after it returns. Accepts NULL. Not from a handler. */
void nkpi_rpc_server_stop(nkpi_rpc_server *s);
/** As nkpi_rpc_server_stop(), unless the listener watchdog is still in a
 * probe `limit_ms` after being told to stop: an nng call that never
 * returns (nng 1.5's reaper wedged; closing would hang too). Then nothing
 * is freed and false is returned, for the caller to exit. */
NKP_NODISCARD bool nkpi_rpc_server_stop_within(nkpi_rpc_server *s, uint64_t limit_ms);

/** Closes the listener and starts a new one on the same socket, with the
 * same mode and group: what the watchdog does. It first waits (up to
 * 10 s) for the requests in flight to be answered: nng 1.5.2 can crash
 * when a reply goes to a connection the closing listener tears down.
 * Connections the old listener accepted are closed: a client waiting on
 * one sees NNG_ECONNRESET. Not from a handler. Errors: those of
 * nkpi_rpc_server_start's listener (the server then has none until the
 * next call succeeds). */
nkp_err nkpi_rpc_server_relisten(nkpi_rpc_server *s);

/** Test hook: closes the listener, as if nng#1518 had wedged it; only the
 * watchdog or nkpi_rpc_server_relisten brings one back. */
void nkpi_rpc_server_test_wedge(nkpi_rpc_server *s);

/* ---- client ---- */

/* A read-only request whose connection was reset is sent again up to
 * this many times, this far apart. */
#define NKPI_RPC_RESET_RETRIES 5
#define NKPI_RPC_RESET_PAUSE_MS 1000

typedef struct nkpi_rpc_call_opts {
	int send_timeout_ms; /* NNG_OPT_SENDTIMEO */
	int recv_timeout_ms; /* NNG_OPT_RECVTIMEO: how long to wait for the reply */
	size_t max_reply;    /* NNG_OPT_RECVMAXSZ */
	/* The request changes nothing, so sending it again is harmless: it
	 * is sent again after NNG_ECONNRESET (see above). */
	bool read_only;
} nkpi_rpc_call_opts;

/** Where a call failed, for the caller's message. */
typedef enum nkpi_rpc_step {
	NKPI_RPC_OPEN, /* opening or setting up the socket */
	NKPI_RPC_DIAL, /* connecting: nothing listens, or we may not */
	NKPI_RPC_SEND,
	NKPI_RPC_RECV, /* no reply: timed out, reset, closed */
} nkpi_rpc_step;

/** Sends `req` (`len` bytes, left to the caller: wipe it if it must be)
 * to `url` and waits for the reply. The request is copied into nng's
 * message, which is wiped if it cannot be sent (once sent, nng frees it).
 * Returns 0 with *reply set (the caller frees it, with
 * nkpi_rpc_msg_free), or the nng error of the last attempt with *step
 * saying where it failed. */
NKP_NODISCARD int nkpi_rpc_call(const char *url, const uint8_t *req, size_t len,
				const nkpi_rpc_call_opts *o, nng_msg **reply, nkpi_rpc_step *step);

/** An nng error as an nkp_err: NKP_ERR_NOMEM, NKP_ERR_TIMEOUT,
 * NKP_ERR_PERM, else NKP_ERR_NET (0 is NKP_OK). */
nkp_err nkpi_rpc_err(int rv);

/** Frees `m`, its body wiped first when `wipe`. Accepts NULL. */
void nkpi_rpc_msg_free(nng_msg *m, bool wipe);

#endif
