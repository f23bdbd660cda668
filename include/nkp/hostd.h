/* libnkp-hostd: the host plugin's stable C ABI.
 *
 * A hypervisor's host daemon loads this library to hold its cluster's
 * provider keys and to make, unwrap and maintain per-VM keys (design §5).
 * nkp-hostd is a thin daemon built on this API. Build against it with
 * `pkg-config --cflags --libs nkp-hostd`.
 *
 * The library carries its own copy of libnkp and exports only nkp_hostd_*
 * (symbol version NKP_HOSTD_<NKP_HOSTD_ABI_VERSION>). The other <nkp/...>
 * headers included here lend it plain types and sizes (nkp_err,
 * nkp_vm_identity, nkp_version_state), never an object: no libnkp object
 * crosses this ABI, since a caller's libnkp, if it links one, is another
 * copy. So the event log is named by a path (nkp_hostd_config.events_path)
 * and the plugin's log lines are routed with nkp_hostd_set_log_sink().
 *
 * State directory (created 0700 by nkp_hostd_init):
 *   seal.key      host sealing key: 32 raw bytes, root-only (mode 0600)
 *   identity.nkp  sealed: host X25519 identity and the pinned service key
 *   keys.nkp      sealed: applied provider keys, generation, usage counters
 *                 (keys.nkp.prev: the previous copy)
 *   keys.nkp.log  sealed records: the states saved since keys.nkp
 *   events.jsonl  the event log, unless the caller names another file
 *   hostd.lock    flock(2)ed by the one handle (nkp_hostd_open) or
 *                 enrolment (nkp_hostd_init) using the directory; holds the
 *                 holder's pid while held, nothing else
 *
 * Keysafes are passed as file bytes: the caller reads and writes the files
 * (atomically, mode 0600), the plugin never touches VM directories. A
 * caller that changes a keysafe file FILE (reads it, asks for a change,
 * writes the result back) holds an exclusive flock(2) on "FILE.lock" from
 * before the read until the new FILE is in place, as nkp-hostctl does
 * (nkp_file_lock_take() of libnkp, <nkp/file.h>, does it; any flock will
 * do): two changes made at once would otherwise both start from the same
 * bytes and the second write would drop the first change, a disk key with
 * it. A new keysafe is created exclusively (as nkp_file_write_new() does:
 * a temp file, then renameat2(RENAME_NOREPLACE) or link(2)). Every
 * keysafe this API returns is a malloc'd buffer holding no clear key: free it
 * with nkp_hostd_buf_free(). DEKs are written only to the caller's buffer,
 * which the caller must wipe.
 *
 * Every function is thread-safe on one handle, except nkp_hostd_close().
 * Functions return NKP_OK or an nkp_err (see <nkp/err.h>); out-parameters
 * are written only on success. Only nkp_hostd_* symbols are exported. */
#ifndef NKP_HOSTD_H
#define NKP_HOSTD_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/keysafe.h>
#include <nkp/log.h>
#include <nkp/provider.h>

/** Incremented on incompatible changes of this header; the symbols of
 * libnkp-hostd.so carry it as their version (NKP_HOSTD_<n>). 2: no
 * nkp_hostd_eventlog(), nkp_hostd_config.events_path for .events. */
#define NKP_HOSTD_ABI_VERSION 2u
#define NKP_HOSTD_PUBKEY_BYTES 32u
#define NKP_HOSTD_MAX_NAME 64u
#define NKP_HOSTD_BOOT_NONCE_BYTES 16u
/** The lock file in the state directory (see above). */
#define NKP_HOSTD_LOCK_FILE "hostd.lock"

typedef struct nkp_hostd nkp_hostd;

typedef struct nkp_hostd_config {
	/** Required: the state directory. */
	const char *state_dir;
	/** Host sealing key file (a systemd credential, say); NULL means the
	 * state directory's own: STATE_DIR/seal.tpm (sealed to the TPM) or
	 * STATE_DIR/seal.key (a plain file: not protected). Must exist (also
	 * at init: a credential is made by its owner) and be a regular file of
	 * mode 0600 or stricter. Excludes `tpm` at init, and is refused for a
	 * directory sealed to a TPM or with a plain STATE_DIR/seal.key. */
	const char *seal_key_path;
	/** Name reported to the service; NULL means gethostname(). */
	const char *host_name;
	/** The event log: a file of JSON lines (mode 0600) the handle opens
	 * and appends to; NULL means STATE_DIR/events.jsonl, "" none (events
	 * then reach only the log sink, see nkp_hostd_set_log_sink()). A
	 * relative path is taken from the working directory at
	 * nkp_hostd_open(); give an absolute one. One
	 * file per handle: two handles on one file would number their events
	 * alike. nkp_hostd_init() records no event. */
	const char *events_path;
	/** The TPM, as a tpm2-tss TCTI string ("device:/dev/tpmrm0",
	 * "swtpm:host=127.0.0.1,port=2321"). At nkp_hostd_init() on a new
	 * directory: seal the sealing key to this TPM (STATE_DIR/seal.tpm; the
	 * clear key never touches disk). At open: the TPM to unseal with
	 * (NULL: the one recorded at init). NULL at init: no TPM. */
	const char *tpm;
} nkp_hostd_config;

/** Enrols a host: creates the state directory (0700) and the sealing key
 * if missing, makes the host identity if there is none, and pins
 * `service_key`. On an existing directory the identity is kept and the new
 * service key re-pinned; the held keys stay (their generation restarts from
 * 0 for the new service). Writes the host public key to `host_public`.
 * Refused (NKP_ERR_STATE, nothing changed) while a handle holds the
 * directory, as nkp_hostd_open() is. Errors: NKP_ERR_STATE,
 * NKP_ERR_INVALID, NKP_ERR_PERM (unsafe key file), NKP_ERR_IO, NKP_ERR_NOSPC,
 * NKP_ERR_AUTH (identity.nkp damaged or another sealing key), NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_init(
	const nkp_hostd_config *cfg, const uint8_t service_key[static NKP_HOSTD_PUBKEY_BYTES],
	uint8_t host_public[static NKP_HOSTD_PUBKEY_BYTES]);

/** Opens an enrolled state directory: takes its lock (STATE_DIR/hostd.lock,
 * held until nkp_hostd_close()), loads the sealing key, identity and the
 * persisted keys (absent keys.nkp: none yet), opens the event log (creating
 * it), and draws a fresh random boot nonce. A damaged or tampered state file fails the open; it is
 * never replaced. While another handle (in this process or another) or an nkp_hostd_init() holds
 * the directory, the open fails at once with NKP_ERR_STATE and touches nothing there; a log message
 * (NKP-HOSTD-LOCKED) names the holder's pid. Errors: NKP_ERR_STATE, NKP_ERR_NOT_FOUND (not
 * initialised, or no directory for events_path), NKP_ERR_PERM (also an
 * event log that is not a regular file), NKP_ERR_AUTH, NKP_ERR_PARSE,
 * NKP_ERR_FORMAT_VERSION, NKP_ERR_IO, NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_open(const nkp_hostd_config *cfg, nkp_hostd **out);

/** Stops any listener, saves usage counters (best effort), wipes every key
 * and frees. Accepts NULL. No other call may be running on `h`. */
NKP_EXPORT void nkp_hostd_close(nkp_hostd *h);

/** Frees a buffer returned by this API (wiping it first). Accepts NULL. */
NKP_EXPORT void nkp_hostd_buf_free(uint8_t *buf, size_t len);

/** A short static description of an error. Never NULL. */
NKP_EXPORT const char *nkp_hostd_strerror(nkp_err err);

/** Sets where this library's log lines go, for every handle of the
 * process: messages with stable ids (e.g. NKP-HOSTD-LOCKED) and each
 * event, with its kind as the id (e.g. "vm.locked"); see <nkp/log.h> for
 * the sink's type. NULL silences logging; the default is stderr. Lines
 * less severe than NKP_LOG_INFO are dropped, and none holds key bytes.
 * The plugin carries its own copy of libnkp: nkp_log_set_sink() of a
 * libnkp the caller links does not reach it, this does. The sink is
 * called one line at a time, from whichever thread logs (nng's among
 * them), with the library's log lock held: it must return promptly and
 * must not call this library. `arg` is passed to every call. Takes effect
 * for the next line; may be called at any time. */
NKP_EXPORT void nkp_hostd_set_log_sink(nkp_log_sink sink, void *arg);

/** The host public key (32 bytes, owned by h) and the pinned service key. */
NKP_EXPORT const uint8_t *nkp_hostd_public_key(const nkp_hostd *h);
NKP_EXPORT const uint8_t *nkp_hostd_service_key(const nkp_hostd *h);

/* ---- status ---------------------------------------------------------- */

typedef struct nkp_hostd_version_info {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	uint64_t keysafes; /* known here: created + rewrapped to - from (approximate) */
	uint64_t created;
	uint64_t rewrapped; /* keysafes rewrapped to this version */
	uint64_t unwrapped;
	uint64_t last_used_unix; /* 0: never */
} nkp_hostd_version_info;

typedef struct nkp_hostd_provider_info {
	uint8_t id[NKP_ID_BYTES];
	char name[NKP_HOSTD_MAX_NAME + 1];
	bool is_default;
	bool backed_up;
	bool tpm_only;
	size_t n_versions;
	nkp_hostd_version_info *versions;
} nkp_hostd_provider_info;

typedef struct nkp_hostd_status {
	uint64_t generation; /* last applied push (0: none) */
	bool tpm;	     /* the sealing key is sealed to a TPM */
	uint8_t boot_nonce[NKP_HOSTD_BOOT_NONCE_BYTES];
	char host_name[NKP_HOSTD_MAX_NAME + 1];
	size_t n_providers;
	nkp_hostd_provider_info *providers;
	uint64_t dropped_frames;      /* unauthenticated frames dropped since the start */
	uint64_t refused_connections; /* over the listener's caps */
	uint64_t closed_connections;  /* closed for bringing no authenticated frame in time */
	/** How the sealing key is kept at rest: "tpm", "credential" (a
	 * --seal-key file) or "not protected" (STATE_DIR/seal.key). Static. */
	const char *keys_at_rest;
	/** "tpm" only: the sealing key is bound to the service's PCR policy
	 * (it opens only while the TPM's PCRs match a state the service
	 * approved); why the last policy the service sent could not be
	 * bound ("" if it was). */
	bool seal_policy_bound;
	char seal_policy_error[160];
} nkp_hostd_status;

/** A snapshot of the held providers (no key bytes). Free with
 * nkp_hostd_status_free(). Errors: NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_status_get(nkp_hostd *h, nkp_hostd_status **out);
NKP_EXPORT void nkp_hostd_status_free(nkp_hostd_status *st);

/* ---- VM key operations ---------------------------------------------- */

/** Makes a VM key (KEK + vm-home DEK) under `provider` (a name; NULL or ""
 * means the default provider), wrapped under its active version, and
 * returns the new keysafe file bytes. Errors: NKP_ERR_NOT_FOUND (no such
 * provider, or no default), NKP_ERR_NOT_BACKED_UP, NKP_ERR_KEY_MISSING (no
 * active version), NKP_ERR_INVALID (identity), NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_create(nkp_hostd *h, const char *provider,
						     const nkp_vm_identity *vm, uint8_t **out,
						     size_t *outlen);

/** Adds a component ("disk:<id>" or "vtpm") with a new DEK. Errors as
 * nkp_keysafe_add_component(), plus NKP_ERR_PARSE for bad keysafe bytes and
 * NKP_ERR_KEY_MISSING when this host lacks the keysafe's provider version
 * (the VM is locked here). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_add_component(nkp_hostd *h, const uint8_t *ks,
							    size_t kslen, const char *component,
							    uint8_t **out, size_t *outlen);

/** Unwraps one component's DEK into `dek` (the caller wipes it). Errors:
 * NKP_ERR_PARSE, NKP_ERR_KEY_MISSING (locked), NKP_ERR_NOT_FOUND (no such
 * component), NKP_ERR_AUTH (tampered). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_unwrap(nkp_hostd *h, const uint8_t *ks, size_t kslen,
						     const char *component,
						     uint8_t dek[static NKP_KEY_BYTES]);

/** Rewraps the KEK to the provider's active version; no KEK or DEK
 * changes. A keysafe already there is returned unchanged. Errors as
 * nkp_hostd_vm_unwrap. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_rewrap(nkp_hostd *h, const uint8_t *ks, size_t kslen,
						     uint8_t **out, size_t *outlen);

/** Rekeys. Shallow (`deep` false): a new KEK, the same DEKs, wrapped under
 * the active version: the result replaces the keysafe. Deep: a new keysafe
 * (new key id, KEK and DEKs for the same components) under the active
 * version; the caller re-encrypts the data and keeps the old keysafe until
 * it has. Errors as nkp_hostd_vm_unwrap. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_rekey(nkp_hostd *h, const uint8_t *ks, size_t kslen,
						    bool deep, uint8_t **out, size_t *outlen);

/** Removes a component's DEK (its data has been decrypted). vm-home goes
 * last: NKP_ERR_STATE while other components remain. Errors as
 * nkp_hostd_vm_unwrap. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_remove_component(nkp_hostd *h, const uint8_t *ks,
							       size_t kslen, const char *component,
							       uint8_t **out, size_t *outlen);

typedef struct nkp_hostd_vm_check {
	bool locked;	     /* this host lacks the key the keysafe needs */
	bool provider_known; /* the provider is held (maybe not the version) */
	char provider_name[NKP_HOSTD_MAX_NAME + 1]; /* "" if unknown */
	uint8_t provider_id[NKP_ID_BYTES];	    /* needed provider */
	uint32_t version;			    /* needed version */
} nkp_hostd_vm_check;

/** Says whether a keysafe is usable here or locked, and which provider
 * version it needs. When not locked the keysafe's authenticity is checked
 * too. A locked keysafe is recorded as an event. Errors: NKP_ERR_PARSE,
 * NKP_ERR_FORMAT_VERSION, NKP_ERR_TOO_LARGE, NKP_ERR_AUTH (tampered). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_vm_check_keysafe(nkp_hostd *h, const uint8_t *ks,
							    size_t kslen, nkp_hostd_vm_check *out);

/* ---- the service side (docs/PROTOCOL.md) ----------------------------- */

/** Handles one frame from the management service and produces the reply
 * frame (malloc'd; free with nkp_hostd_buf_free()). NKP_OK means a reply
 * is in *reply: a HandshakeResp, or in a Transport a Status, a PushAck or
 * a sealed Refusal (stale boot nonce or generation, invalid contents,
 * state that cannot be stored; the previous state stays; an event). Any
 * frame that does not authenticate (garbage, another sender, a replay, an
 * unknown session, over the handshake rate limit) gets an error and no
 * reply, and is only counted (status dropped_frames, and one summary
 * event a minute at most): send nothing back. Other errors (no reply):
 * NKP_ERR_NOMEM, NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_handle_frame(nkp_hostd *h, const uint8_t *req,
							size_t len, uint8_t **reply,
							size_t *replylen);

/** Serves the service protocol on `url` (nng REP, e.g. tcp://127.0.0.1:7411)
 * asynchronously with nng aio callbacks: no thread of its own. Call at most
 * once per handle; nkp_hostd_close() stops it. Errors: NKP_ERR_STATE
 * (already listening), NKP_ERR_NET (address in use, bad url), NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_listen(nkp_hostd *h, const char *url);

/** Limits of the listener, for a later nkp_hostd_listen(); 0 keeps a
 * default: connections in all (32; never more than the descriptor limit
 * less 64 kept for the local API and state files), from one peer address
 * (8), and the milliseconds a connection has to bring an authenticated
 * frame after it opens and after its previous one before it is closed
 * (15000: three of nkpd's default heartbeats). Errors: NKP_ERR_INVALID,
 * NKP_ERR_STATE (already listening). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_set_listen_limits(nkp_hostd *h, unsigned max_peers,
							     unsigned max_per_address,
							     unsigned peer_timeout_ms);

/** The URL being served after nkp_hostd_listen() (tcp port 0 resolved), or
 * NULL. Owned by h. */
NKP_EXPORT const char *nkp_hostd_listen_url(const nkp_hostd *h);

/** Writes usage counters to disk now if they changed (they are also
 * saved with every push, at close, and at most every 30 s on use).
 * Errors: NKP_ERR_IO, NKP_ERR_NOSPC. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_hostd_flush(nkp_hostd *h);

#endif
