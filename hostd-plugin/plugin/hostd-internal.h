/* Private to libnkp-hostd: the handle and its held state. */
#ifndef NKP_HOSTD_INTERNAL_H
#define NKP_HOSTD_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include <nng/nng.h>

#include <nkp/channel.h>
#include <nkp/file.h>
#include <nkp/hostd.h>

#include "atrest.h"
#include "guard.h"
#include "hostd-intree.h"
#include "hoststate.pb-c.h"
#include "internal.h"
#include "keyset.h"
#include "session.h"
#include "wire.pb-c.h"

/* A held provider's name is one a keyset may carry. */
_Static_assert(NKP_HOSTD_MAX_NAME == NKPI_KEYSET_MAX_NAME, "provider names of one length");
#define HOSTD_CHALLENGE_BYTES 16u
/* The listener's defaults (nkp_hostd_set_listen_limits): connections in
 * all and from one address; the time a connection has to bring an
 * authenticated frame, from its start and from its previous one (three
 * of nkpd's default 5 s heartbeats); descriptors never given to
 * connections (the local API, state files, events). */
#define HOSTD_MAX_PEERS 32u
#define HOSTD_MAX_PEERS_PER_ADDRESS 8u
#define HOSTD_PEER_TIMEOUT_MS 15000u
#define HOSTD_RESERVED_FDS 64u
/* Usage counters reach the disk at most this often on use alone. */
#define HOSTD_FLUSH_SECONDS 30u
/* keys.nkp.log: records after a snapshot before the next compaction. */
#define HOSTD_LOG_MAX_RECORDS 64u
#define HOSTD_LOG_EPOCH_BYTES 16u
#define HOSTD_PIN_ID_BYTES 16u

/* The generation this host applied: the service's (epoch, counter) pair
 * and the digest of the DesiredState bytes it came in. Epoch 0: none yet
 * (docs/PROTOCOL.md "Generations"). */
typedef struct hostd_pair {
	uint64_t epoch;
	uint64_t counter;
	bool have_digest;
	uint8_t digest[NKPI_DIGEST_BYTES];
} hostd_pair;

/* One held primary key version and its usage on this host. Counters are
 * atomic so unwraps can run in parallel under the read lock. */
typedef struct hostd_version {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	nkp_primary *primary;
	_Atomic int64_t keysafes;
	_Atomic uint64_t created;
	_Atomic uint64_t rewrapped;
	_Atomic uint64_t unwrapped;
	_Atomic uint64_t last_used;
} hostd_version;

typedef struct hostd_provider {
	uint8_t id[NKP_ID_BYTES];
	char name[NKP_HOSTD_MAX_NAME + 1];
	bool is_default;
	bool backed_up;
	bool tpm_only;
	size_t n_versions;
	hostd_version *versions;
} hostd_provider;

typedef struct hostd_state {
	size_t n;
	hostd_provider *p;
} hostd_state;

typedef struct hostd_listener hostd_listener;

struct nkp_hostd {
	char *state_dir;
	char *keys_path;
	nkp_key *seal_key;
	nkpi_atrest_kind atrest; /* where seal_key came from */
	/* The TCTI seal_key was unsealed with (NULL: no TPM), opened again for
	 * each quote. tpm_lock keeps quotes one at a time: a TPM without a
	 * resource manager (device:/dev/tpm0, swtpm) takes one client. */
	char *tpm_tcti;
	pthread_mutex_t tpm_lock;
	/* The seal policy DIR/seal.tpm is bound to (its digest), why the last
	 * one the service sent could not be bound, and that one's digest (not
	 * tried again): under seal_lock (never held across a TPM command). */
	pthread_mutex_t seal_lock;
	bool seal_bound;
	uint8_t seal_digest[NKPI_SEAL_POLICY_DIGEST_BYTES];
	char seal_error[160];
	bool seal_failed;
	uint8_t seal_failed_digest[NKPI_SEAL_POLICY_DIGEST_BYTES];
	/* sealbind.c's binder thread (started at the first request) and the
	 * latest request it has not taken yet (a packed SealPolicy, NULL for
	 * an unbind). */
	pthread_t seal_thread;
	pthread_cond_t seal_cond;
	bool seal_thread_up, seal_stop, seal_pending, seal_busy;
	uint8_t *seal_pending_policy;
	size_t seal_pending_len;
	uint8_t seal_pending_digest[NKPI_SEAL_POLICY_DIGEST_BYTES];
	nkp_identity *identity;
	uint8_t service_key[NKP_PUBKEY_BYTES];
	uint8_t pin_id[HOSTD_PIN_ID_BYTES]; /* identity.nkp's, all zero if it has none */
	nkpi_session *session;		    /* the service's Noise session (responder) */
	nkp_eventlog *events;
	char host_name[NKP_HOSTD_MAX_NAME + 1];
	uint8_t boot_nonce[NKP_HOSTD_BOOT_NONCE_BYTES];

	/* Guards applied and state. VM operations take it shared; pushes
	 * exclusively. save_lock (taken inside) serialises writes of keys.nkp. */
	pthread_rwlock_t lock;
	pthread_mutex_t save_lock;
	hostd_pair applied;
	hostd_state state;
	atomic_bool usage_dirty;
	atomic_bool nng_wedged; /* listen.c: see nkpi_hostd_nng_wedged() */
	_Atomic uint64_t last_flush;

	/* keys.nkp.log (persist.c; under save_lock): the records appended
	 * since the snapshot keys.nkp whose epoch is log_epoch. log_len is
	 * the length of the good prefix; log_trim says bytes past it (a torn
	 * append) must be cut before the next append. prev_holds_dropped:
	 * keys.nkp.prev still holds a version the last snapshot dropped, so
	 * the next save writes a snapshot again. */
	char log_path[PATH_MAX];
	bool have_snapshot;
	bool prev_holds_dropped;
	uint8_t log_epoch[HOSTD_LOG_EPOCH_BYTES];
	uint32_t log_records;
	uint64_t log_len;
	bool log_trim;

	hostd_listener *listener;

	/* STATE_DIR/hostd.lock, held from first thing in open until the
	 * last thing in close: one handle per state directory. */
	nkp_file_lock *dir_lock;
	/* Listener limits (nkp_hostd_set_listen_limits), read at listen. */
	unsigned max_peers;
	unsigned max_peers_per_address;
	unsigned peer_timeout_ms;
	hostd_guard guard;
};

/* state.c */
void hostd_state_fini(hostd_state *s);
/* Builds held state from a keyset nkpi_keyset_check() accepted (a push
 * or keys.nkp); copies key bytes into nkp_primary objects. `held` (may be
 * NULL; the caller keeps it stable) is the state held now: versions it
 * holds with the same key are shared, not copied. */
nkp_err hostd_state_build(const nkpi_keyset *ks, const hostd_state *held, hostd_state *out);
/* Carries usage counters over from `old` to versions still held in `s`. */
void hostd_state_carry_usage(hostd_state *s, const hostd_state *old);
/* Applies persisted counters to matching versions. */
void hostd_state_load_usage(hostd_state *s, size_t n, Nkp__Wire__VersionUsage *const *u);
hostd_provider *hostd_state_find_id(const hostd_state *s, const uint8_t id[static NKP_ID_BYTES]);
hostd_provider *hostd_state_find_name(const hostd_state *s, const char *name);
hostd_provider *hostd_state_find_default(const hostd_state *s);
hostd_version *hostd_provider_version(const hostd_provider *p, uint32_t version);
hostd_version *hostd_provider_active(const hostd_provider *p);
/* Usage of every held version as wire messages; free with usage_free. */
nkp_err hostd_state_usage(const hostd_state *s, Nkp__Wire__VersionUsage ***out, size_t *n);
void hostd_state_usage_free(Nkp__Wire__VersionUsage **u, size_t n);

/* persist.c: make `s` durable (caller holds the lock, shared or
 * exclusive; h->state is the state last saved): one record appended to
 * keys.nkp.log, or a new snapshot keys.nkp when the log is full or `s`
 * drops a version h->state holds. On failure nothing on disk changed.
 * hostd_load reads keys.nkp and then the log's records. */
nkp_err hostd_save(nkp_hostd *h, const hostd_state *s, const hostd_pair *applied);
nkp_err hostd_load(nkp_hostd *h);
/* Saves if counters changed and the last save is older than `min_age`. */
void hostd_maybe_flush(nkp_hostd *h, uint64_t min_age);

/* listen.c */
void hostd_listener_stop(hostd_listener *l);

/* sealbind.c: the seal policy. A Hello's policy (or unbind, p NULL) for
 * the binder, answered at once; where the binding stands, for a Status;
 * waiting until the binder has nothing left (tests); its end (close). */
void hostd_seal_request(nkp_hostd *h, const Nkp__Atrest__SealPolicy *p, bool unbind);
void hostd_seal_state(nkp_hostd *h, bool *bound, uint8_t digest[NKPI_SEAL_POLICY_DIGEST_BYTES],
		      char *error, size_t error_size);
void hostd_seal_idle(nkp_hostd *h);
void hostd_seal_stop(nkp_hostd *h);

/* service.c: nkp_hostd_handle_frame for a frame from the peer address
 * `peer` (hostd_pipe_peer; 0: unknown), saying whether it came from the
 * pinned service (the listener keeps only such connections). */
nkp_err hostd_handle_frame(nkp_hostd *h, uint64_t peer, const uint8_t *req, size_t len,
			   uint8_t **reply_out, size_t *replylen, bool *authentic);
/* The key of a pipe's remote address for the handshake budget: a keyed
 * hash of an IPv4 address or an IPv6 /64; 0 for any other transport. */
uint64_t hostd_pipe_peer(nng_pipe p);

#endif
