/* nkpd: the management service. Private to nkp/nkpd.
 *
 * One `svc` holds the whole service: the persisted model (providers with
 * their primary key versions, enrolled hosts, the generation), the live
 * view of every host kept by the reconciler, and the admin server. One
 * mutex (svc.lock) guards all of it; nothing slow (Argon2id, channel
 * crypto, disk beyond the state file) runs while it is held, except the
 * state write itself, which must happen before any push. */
#ifndef NKPD_H
#define NKPD_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include <nng/nng.h>

#include <nkp/nkp.h>

#include "core/ops.h"
#include "core/views.h"
#include "internal.h"
#include "keysource/keysource.h"
#include "store/store.h"
#include "wire.pb-c.h"

#define SVC_STATE_LABEL "nkpd-state"
#define SVC_STATE_FORMAT 1u
#define SVC_MAX_NAME NKPD_NAME_MAX
#define SVC_MAX_ADDRESS NKPD_ADDRESS_MAX
#define SVC_MAX_HOSTS 10000u
#define SVC_MAX_PROVIDERS 1024u
#define SVC_ADMIN_MAX (4u << 20)
#define SVC_DEFAULT_ROTATE_TIMEOUT 30u
/* Each usage count a host reports is capped here (sums saturate). */
#define SVC_USAGE_CAP (UINT64_C(1) << 32)
/* How long retire and delete wait for hosts to report their usage. */
#define SVC_USAGE_ROUND_MS 3000u

typedef struct svc_version {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	nkp_key *key;
} svc_version;

typedef enum rot_state {
	ROT_NONE = 0,
	ROT_WAITING,
	ROT_PROMOTED,
	ROT_FAILED,
} rot_state;

/* A rotation in progress or just finished; memory only (a staged version
 * survives a restart in the state; running `rotate` again resumes it). */
typedef struct svc_rotation {
	rot_state state;
	uint32_t version;
	uint64_t stage_generation;
	uint64_t deadline_ms; /* monotonic */
	uint64_t deadline_unix;
	bool force;
	char message[512];
} svc_rotation;

/* A backup file nkpd made and handed out, waiting for nkpctl to confirm it
 * wrote and checked it (memory only). */
#define SVC_BACKUPS_PENDING 4u
typedef struct svc_backup_pending {
	uint8_t digest[32];   /* BLAKE2b-256 of the file image; all zero: free */
	uint32_t max_version; /* the highest version the file holds */
} svc_backup_pending;

typedef struct svc_provider {
	uint8_t id[NKP_ID_BYTES];
	char name[SVC_MAX_NAME + 1];
	bool is_default;
	bool backed_up;
	bool tpm_only;
	uint32_t backup_max_version;
	uint64_t created_unix;
	uint64_t backed_up_unix;
	size_t n_versions;
	svc_version *versions;
	svc_rotation rot;
	svc_backup_pending pending[SVC_BACKUPS_PENDING]; /* newest first */
} svc_provider;

typedef struct svc_usage {
	uint8_t provider_id[NKP_ID_BYTES];
	uint32_t version;
	uint64_t keysafes, created, rewrapped, unwrapped, last_used_unix;
} svc_usage;

typedef enum host_health {
	HEALTH_NEW = 0, /* not answered yet */
	HEALTH_OK,
	HEALTH_UNREACHABLE,
	HEALTH_REFUSED, /* answers, but refuses or cannot be authenticated */
} host_health;

struct svc;
struct desired;
struct nkpd_link;

/* What the store keeps of a host: written at enrolment, never changed. */
typedef struct nkpd_host_conf {
	char name[SVC_MAX_NAME + 1];
	char address[SVC_MAX_ADDRESS + 1];
	uint8_t pub[NKP_PUBKEY_BYTES];
	char cluster[SVC_MAX_NAME + 1];
	uint64_t enrolled_unix;
} nkpd_host_conf;

/* What the sync engine learned of a host, for reports and the lifecycle
 * (memory only, guarded by svc.lock). */
typedef struct nkpd_host_status {
	host_health health;
	unsigned failures; /* failed exchanges in a row */
	bool have_nonce;
	uint8_t boot_nonce[16];
	/* What the host last said it applied: never adopted, only compared
	 * (docs/PROTOCOL.md "Generations"). */
	uint64_t applied_epoch;
	uint64_t applied_generation;
	bool have_digest;
	uint8_t applied_digest[NKPI_DIGEST_BYTES];
	uint64_t acked_generation; /* highest of our counters whose digest it acknowledged */
	bool conflict;		   /* ahead of us or of another epoch; event sent */
	bool resync;		   /* `nkpctl host resync`: push with resync until in sync */
	/* usage rounds: the round current when the request in flight was
	 * made; the last round this host was asked in, answered, failed. */
	uint64_t prepared_round, asked_round, answered_round, failed_round;
	bool tpm; /* the host's claim; ignored until attestation exists */
	char host_name[SVC_MAX_NAME + 1];
	uint64_t last_contact_unix;
	char last_error[256];
	uint64_t in_sync_generation; /* generation of the last host.in_sync event */
	size_t n_usage;
	svc_usage *usage;
} nkpd_host_status;

/* An enrolled host: what is stored, what was learned, and the live
 * connection, which belongs to the sync engine (NULL when none runs). */
typedef struct svc_host {
	nkpd_host_conf conf;
	nkpd_host_status st;
	/* Set while the host is being removed: the empty desired state it
	 * alone is pushed (see svc_sync.host_wipe). */
	struct desired *wipe_snap;
	struct nkpd_link *link;
} svc_host;

/* The desired state as pushed: an immutable, reference-counted snapshot
 * taken after each committed change, so pushes are packed outside the
 * lock. Keys live in one sodium_malloc block. */
typedef struct desired_version {
	uint32_t version;
	uint32_t state;
	uint64_t created_unix;
} desired_version;

typedef struct desired_provider {
	uint8_t id[NKP_ID_BYTES];
	char name[SVC_MAX_NAME + 1];
	bool is_default, backed_up, tpm_only;
	size_t n_versions;
	desired_version *versions;
	size_t key_index; /* first key of this provider in `keys` */
} desired_provider;

typedef struct desired {
	atomic_uint refs;
	uint64_t epoch;
	uint64_t generation;
	/* The serialized nkp.wire.DesiredState every host gets (no host is
	 * attested, so there is one scope), sodium_malloc, and its digest. */
	uint8_t *packed;
	size_t packed_len;
	uint8_t digest[NKPI_DIGEST_BYTES];
	size_t n_providers;
	desired_provider *providers;
	size_t n_keys;
	uint8_t *keys; /* sodium_malloc, n_keys * NKP_KEY_BYTES */
} desired;

/* Called with svc.lock held after a change of desired state was committed
 * (persisted, generation bumped). An error is the commit's result; the
 * change stays committed. */
typedef nkp_err (*svc_commit_fn)(struct svc *s, void *arg);
typedef struct svc_subscriber {
	svc_commit_fn fn;
	void *arg;
} svc_subscriber;
#define SVC_MAX_SUBSCRIBERS 4u

/* What the core asks of the host sync engine, registered by it while it
 * runs (svc.sync is NULL otherwise, as in unit tests: host changes then
 * reach nobody). Each is called with svc.lock held unless noted. */
typedef struct svc_sync {
	void *ctx;
	/** Sets up the live side of a new host (socket, dial). */
	nkp_err (*host_added)(void *ctx, struct svc_host *h);
	/** Starts (or, with `on` false, stops) pushing an empty desired
	 * state to `h` alone, so that it wipes its keys before it is removed. */
	nkp_err (*host_wipe)(void *ctx, struct svc_host *h, bool on);
	/** True once `h` acknowledged the wiping push. */
	bool (*host_wiped)(void *ctx, const struct svc_host *h);
	/** Takes a host already out of the model and frees it (now or at
	 * stop). Called WITHOUT the lock. */
	void (*host_release)(void *ctx, struct svc_host *h);
	/** `nkpctl host resync`: the next pushes to `h` carry resync. */
	void (*host_resync)(void *ctx, struct svc_host *h);
	/** Asks every reachable host for its usage now and waits, releasing
	 * the lock, until each answered or `timeout_ms` passed. Returns the
	 * number of hosts that did not answer. */
	size_t (*usage_round)(void *ctx, uint64_t timeout_ms);
} svc_sync;

typedef struct svc {
	pthread_mutex_t lock;
	char dir[PATH_MAX];
	char state_path[PATH_MAX];
	char events_path[PATH_MAX];
	nkp_key *seal_key;
	nkp_identity *identity;
	nkp_eventlog *events;
	/* Where new version keys come from (native unless a test sets
	 * another before the first change). */
	nkpd_keysource keys;
	/* Where the model is persisted, and the revision last loaded or
	 * written there. */
	nkpd_store store;
	uint64_t revision;
	svc_subscriber subs[SVC_MAX_SUBSCRIBERS];
	const svc_sync *sync;
	uint64_t started_unix;
	nkp_backup_params backup_params;
	unsigned heartbeat_ms;

	uint64_t epoch;		 /* random per `nkpd init`, never 0 */
	uint64_t generation;	 /* the counter, below NKPI_GENERATION_MAX */
	uint64_t stamp_floor_ns; /* persisted: see svc_stamp_reserve */
	uint64_t stamp_retry_ms; /* the last save failed: not before then */
	size_t n_providers;
	svc_provider **providers;
	size_t n_hosts;
	svc_host **hosts;

	/* reconciler */
	desired *snap;
	struct reconciler *rec;
	/* usage rounds (svc_reconcile_usage_round) */
	pthread_cond_t round_cond;
	uint64_t usage_round;
} svc;

/* service.c: opens DIR's keys and event log (creating the keys if
 * `create`); svc_close frees everything, the model included. */
nkp_err svc_open(svc *s, const char *dir, bool create);
void svc_close(svc *s);
/* Takes DIR/nkpd.lock (one nkpd per state directory), before anything
 * else in DIR is read or changed; release it with nkp_file_unlock() after
 * svc_close. On failure says on stderr why, naming the holder's pid.
 * Errors: NKP_ERR_STATE (held), as nkp_file_lock_take(). */
nkp_err svc_lock_dir(const char *dir, nkp_file_lock **out);

/* util.c */
/** Lock held (or before the reconciler starts). Keeps the persisted
 * stamp floor an hour above every handshake timestamp this process made
 * or may make next, writing the state when less than half of that
 * remains. svc_state_load starts the process's timestamps above the
 * floor it finds. */
nkp_err svc_stamp_reserve(svc *s);
/** A random epoch, never 0. */
uint64_t svc_new_epoch(void);
/** Copies a string a host sent into `dst` for people and JSON: valid UTF-8
 * only (bad bytes become '?'), no C0, DEL or C1 control characters, no
 * escape sequences (ESC and what follows it as one sequence), at most
 * size - 1 bytes, never cutting a character. */
void svc_sanitize(char *dst, size_t size, const char *src);
bool svc_name_valid(const char *name);
void svc_copy_str(char *dst, size_t size, const char *src);
/** calloc for replies and views (at least one element): aborts on
 * exhaustion, as their allocations are small. */
void *svc_xcalloc(size_t n, size_t size);

/* state.c: the model and its persistence. Callers hold svc.lock. */
/** Loads the model from svc.store (see nkpd_store.load for the errors);
 * gives a state without an epoch one, written at once. */
nkp_err svc_state_load(svc *s);
/** After svc_state_load gave NKP_ERR_FORMAT_VERSION: why, for people. */
void svc_state_format_message(const svc *s, char *buf, size_t size);
/** Writes the model to svc.store at the revision last seen (NKP_ERR_STATE
 * if the store moved on). */
nkp_err svc_state_save(svc *s);
/** Adds `fn` to the commit subscribers (at most SVC_MAX_SUBSCRIBERS: one
 * more aborts); svc_unsubscribe removes it. */
void svc_subscribe(svc *s, svc_commit_fn fn, void *arg);
void svc_unsubscribe(svc *s, svc_commit_fn fn, void *arg);
svc_provider *svc_provider_find(const svc *s, const char *name);
svc_provider *svc_provider_find_id(const svc *s, const uint8_t id[static NKP_ID_BYTES]);
svc_provider *svc_provider_default(const svc *s);
svc_host *svc_host_find(const svc *s, const char *name);
svc_version *svc_version_find(const svc_provider *p, uint32_t version);
svc_version *svc_version_active(const svc_provider *p);
svc_version *svc_version_staged(const svc_provider *p);
uint32_t svc_version_max(const svc_provider *p);
void svc_provider_free(svc_provider *p);
nkp_err svc_provider_dup(const svc_provider *p, svc_provider **out);
nkp_err svc_provider_add_version(svc_provider *p, uint32_t version, nkp_version_state st,
				 uint64_t created, nkp_key *key);
void svc_provider_remove_version(svc_provider *p, uint32_t version);
void svc_host_free(svc_host *h);
void svc_free_model(svc *s);

/* A change of desired state: snapshot the providers first, then mutate,
 * then commit (generation++, persist, push) or roll back. */
typedef struct svc_txn {
	uint64_t generation;
	size_t n_providers;
	svc_provider **providers;
} svc_txn;
nkp_err svc_txn_begin(svc *s, svc_txn *t);
/** Bumps the generation, persists and, on success, tells the commit
 * subscribers. On failure the model is rolled back. */
nkp_err svc_txn_commit(svc *s, svc_txn *t);
void svc_txn_rollback(svc *s, svc_txn *t);

/* reconcile.c */
/** Starts the sync engine: follows commits (svc_reconcile_follow),
 * registers svc.sync, dials every host. */
nkp_err svc_reconcile_start(svc *s);
void svc_reconcile_stop(svc *s);
/** Builds the desired snapshot now and again after every commit, without
 * starting anything else (what unit tests without hosts need). Lock held
 * or no thread started. */
nkp_err svc_reconcile_follow(svc *s);
/** Rebuilds the desired snapshot and pushes it to every host. Lock held. */
nkp_err svc_reconcile_changed(svc *s);
/* core/hosts.c: views of a host. Lock held. */
bool svc_host_in_scope(const svc_host *h, const svc_provider *p);
/** The desired state for `h`: nothing at all while it is being removed. */
desired *svc_host_snap(const svc *s, const svc_host *h);
/** The host acknowledged exactly `d` (the digest covers epoch, counter
 * and every key). */
bool svc_host_has(const svc_host *h, const desired *d);
/** True if the host's last acknowledged digest is that of the desired
 * state it would be sent now. */
bool svc_host_current(const svc *s, const svc_host *h);
bool svc_host_in_sync(const svc *s, const svc_host *h);
const char *svc_host_state_name(const svc *s, const svc_host *h);
/* core/desired.c */
/** Drops a reference to `d`, freeing (and wiping) it with the last one;
 * accepts NULL. Thread-safe. */
void desired_release(desired *d);

#endif
