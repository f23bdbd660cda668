/* nkpd's core: the model, its transactions and the ports it is wired to.
 * Private to nkp/nkpd; no nng and no protobuf here.
 *
 * One `nkpd_svc` holds the whole service: the persisted model (providers
 * with their primary key versions, enrolled hosts, the generation), what
 * the sync engine learned of every host, and the ports: the store
 * (store/store.h), the key source (keysource/keysource.h), the commit
 * subscribers and the sync interface (nkpd_sync). One mutex
 * (nkpd_svc.lock) guards all of it; nothing slow (Argon2id, channel
 * crypto, disk beyond the state file) runs while it is held, except the
 * state write itself, which must happen before any push. Operations and
 * reports for front ends are in core/ops.h and core/views.h. */
#ifndef NKPD_CORE_H
#define NKPD_CORE_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include <nkp/nkp.h>

#include "atrest.h"
#include "core/ops.h"
#include "core/views.h"
#include "keysource/keysource.h"
#include "store/store.h"

/* The digest of a desired state (NKPI_DIGEST_BYTES). */
#define NKPD_DIGEST_BYTES 32u
#define NKPD_STATE_LABEL "nkpd-state"
#define NKPD_STATE_FORMAT 1u
#define NKPD_MAX_HOSTS 10000u
#define NKPD_MAX_PROVIDERS 1024u
#define NKPD_ADMIN_MAX (4u << 20)
#define NKPD_DEFAULT_ROTATE_TIMEOUT 30u
/* Each usage count a host reports is capped here (sums saturate). */
#define NKPD_USAGE_CAP (UINT64_C(1) << 32)
/* How long retire and delete wait for hosts to report their usage. */
#define NKPD_USAGE_ROUND_MS 3000u
/* Attestation: the largest attestation key taken, the most baselines, and
 * the defaults of --attest-interval and --attest-pcrs (PCRs 0-7). */
#define NKPD_AK_MAX 256u
#define NKPD_EK_CA_MAX (64u << 10)
#define NKPD_MAX_BASELINES 64u
#define NKPD_ATTEST_INTERVAL_MS 600000u
#define NKPD_ATTEST_PCRS 0xffu
#define NKPD_POLICY_PUB_MAX 128u

typedef struct nkpd_version {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	nkp_key *key;
} nkpd_version;

typedef enum nkpd_rot_state {
	ROT_NONE = 0,
	ROT_WAITING,
	ROT_PROMOTED,
	ROT_FAILED,
} nkpd_rot_state;

/* A rotation in progress or just finished; memory only (a staged version
 * survives a restart in the state; running `rotate` again resumes it). */
typedef struct nkpd_rotation {
	nkpd_rot_state state;
	uint32_t version;
	uint64_t stage_generation;
	uint64_t deadline_ms; /* monotonic */
	uint64_t deadline_unix;
	bool force;
	char message[512];
} nkpd_rotation;

/* A backup file nkpd made and handed out, waiting for nkpctl to confirm it
 * wrote and checked it (memory only). */
#define NKPD_BACKUPS_PENDING 4u
typedef struct nkpd_backup_pending {
	uint8_t digest[32];   /* BLAKE2b-256 of the file image; all zero: free */
	uint32_t max_version; /* the highest version the file holds */
} nkpd_backup_pending;

/* A standard provider's KMS settings (proto/svcstate.proto KmsSettings):
 * immutable once made, shared by the model's copies (reference-counted).
 * The client key is a secret, in locked memory. */
typedef struct nkpd_kms {
	atomic_uint refs;
	size_t n_servers;
	char servers[NKPD_KMS_SERVERS_MAX][NKPD_KMS_URL_MAX];
	uint8_t *ca_pem, *cert_pem;
	size_t ca_len, cert_len;
	uint8_t *key_pem; /* sodium_malloc */
	size_t key_len;
	uint32_t spare_pool;
} nkpd_kms;

/* What nkpd last found of one KMS server (memory only). */
typedef struct nkpd_kms_server_state {
	nkpd_kms_reach reach;
	char error[NKPD_KMS_ERROR_MAX];
	uint64_t checked_unix;
	bool attrs_refused; /* it refused the x- attributes (event raised) */
} nkpd_kms_server_state;

/* A key a standard provider's KMS made for nkp (proto/svcstate.proto
 * KmsKey): its id, never its bytes. */
typedef struct nkpd_kms_key {
	char id[NKPD_KMS_ID_MAX];
	nkpd_kms_key_state state;
	char host[NKPD_NAME_MAX + 1]; /* spare: the host it is kept for */
	char vm_uuid[40];
	char vm_name[NKPD_KMS_VM_NAME_MAX];
	uint64_t created_unix;
	bool attributes_set;
} nkpd_kms_key;

typedef struct nkpd_provider {
	uint8_t id[NKP_ID_BYTES];
	char name[NKPD_NAME_MAX + 1];
	bool is_default;
	bool backed_up;
	bool tpm_only;
	uint32_t backup_max_version;
	uint64_t created_unix;
	uint64_t backed_up_unix;
	size_t n_versions;
	nkpd_version *versions;
	nkpd_rotation rot;
	nkpd_backup_pending pending[NKPD_BACKUPS_PENDING]; /* newest first */
	nkpd_kind kind;
	nkpd_kms *kms; /* standard: its KMS (shared); NULL otherwise */
	nkpd_kms_server_state kms_state[NKPD_KMS_SERVERS_MAX];
	size_t n_kms_keys;
	nkpd_kms_key *kms_keys; /* standard: spares and keys in use */
} nkpd_provider;

typedef struct nkpd_usage {
	uint8_t provider_id[NKP_ID_BYTES];
	uint32_t version;
	uint64_t keysafes, created, rewrapped, unwrapped, last_used_unix;
} nkpd_usage;

typedef enum nkpd_host_health {
	HEALTH_NEW = 0, /* not answered yet */
	HEALTH_OK,
	HEALTH_UNREACHABLE,
	HEALTH_REFUSED, /* answers, but refuses or cannot be authenticated */
} nkpd_host_health;

struct nkpd_svc;
struct nkpd_desired;
struct nkpd_link;

/* What the store keeps of a host: written at enrolment, never changed. */
typedef struct nkpd_host_conf {
	char name[NKPD_NAME_MAX + 1];
	char address[NKPD_ADDRESS_MAX + 1];
	uint8_t pub[NKP_PUBKEY_BYTES];
	char cluster[NKPD_NAME_MAX + 1];
	uint64_t enrolled_unix;
	/* Its attestation key (TPM2B_PUBLIC), pinned at enrolment; 0: none. */
	size_t ak_len;
	uint8_t ak[NKPD_AK_MAX];
	/* PEM certificates its EK certificate must verify under (malloc'd;
	 * NULL: no certificate checked, the EK is the host's word). */
	uint8_t *ek_ca;
	size_t ek_ca_len;
	/* Its sealing key at rest bound to nkpd's PCR policy (persisted). */
	bool seal_policy;
} nkpd_host_conf;

/* What nkpd knows of a host's attestation (docs/PROTOCOL.md
 * "Attestation"): memory only; every start begins untrusted. */
typedef enum nkpd_attest {
	ATTEST_NONE = 0,  /* no attestation key pinned */
	ATTEST_UNTRUSTED, /* none of its quotes passed yet, or the last failed */
	ATTEST_TRUSTED,	  /* its latest quote passed, within the interval */
} nkpd_attest;

/* Credential activation, before any quote counts: the EK asked for,
 * then a credential made to it for the AK, then proven (memory only: done
 * again after a restart of either side). */
typedef enum nkpd_ak_proof {
	AK_NEED_EK = 0,
	AK_NEED_ACTIVATION,
	AK_PROVEN,
} nkpd_ak_proof;

typedef struct nkpd_host_attest {
	nkpd_attest state;
	nkpd_ak_proof proof;
	uint8_t credential[32]; /* AK_NEED_ACTIVATION: what it must give back */
	uint8_t blob[256], secret[512];
	size_t blob_len, secret_len;
	char reason[160];
	char baseline[NKPD_NAME_MAX + 1]; /* trusted: the one matched */
	/* The latest verified quote (whatever its PCRs): baselines are made
	 * from it. */
	bool have_quote;
	uint32_t quote_mask;
	uint8_t quote_digest[32];
	uint64_t attested_unix;
	uint64_t ok_ms;	 /* monotonic time of that quote */
	uint64_t due_ms; /* the next Hello asks for a quote from then on; 0: at once */
	unsigned fails;	 /* failed attempts in a row: the retry backs off */
	/* A change of scope not yet pushed: the next push carries resync. */
	bool scope_resync;
} nkpd_host_attest;

/* An approved state of a trusted host's PCRs (persisted). */
typedef struct nkpd_baseline {
	char name[NKPD_NAME_MAX + 1];
	uint32_t pcr_mask;
	uint8_t pcr_digest[32];
	char from_host[NKPD_NAME_MAX + 1];
	uint64_t created_unix;
} nkpd_baseline;

/* What the sync engine learned of a host, for reports and the lifecycle
 * (memory only, guarded by nkpd_svc.lock). */
typedef struct nkpd_host_status {
	nkpd_host_health health;
	unsigned failures; /* failed exchanges in a row */
	bool have_nonce;
	uint8_t boot_nonce[16];
	/* What the host last said it applied: never adopted, only compared
	 * (docs/PROTOCOL.md "Generations"). */
	uint64_t applied_epoch;
	uint64_t applied_generation;
	bool have_digest;
	uint8_t applied_digest[NKPD_DIGEST_BYTES];
	uint64_t acked_generation; /* highest of our counters whose digest it acknowledged */
	/* ... of those, the highest acknowledged with the trusted providers in
	 * it (what counts for them: see nkpd_host_acked) */
	uint64_t acked_trusted_generation;
	bool conflict; /* ahead of us or of another epoch; event sent */
	bool resync;   /* `nkpctl host resync`: push with resync until in sync */
	/* usage rounds: the round current when the request in flight was
	 * made; the last round this host was asked in, answered, failed. */
	uint64_t prepared_round, asked_round, answered_round, failed_round;
	bool tpm; /* the host's claim; ignored until attestation exists */
	char host_name[NKPD_NAME_MAX + 1];
	uint64_t last_contact_unix;
	char last_error[256];
	uint64_t in_sync_generation; /* generation of the last host.in_sync event */
	/* The seal policy its sealing key is bound to, as it reports it; why
	 * the last one sent was not bound; the last one sent. */
	bool seal_bound;
	uint8_t seal_digest[32];
	char seal_error[160];
	bool seal_sent;
	uint8_t seal_sent_digest[32];
	size_t n_usage;
	nkpd_usage *usage;
} nkpd_host_status;

/* An enrolled host: what is stored, what was learned, and the live
 * connection, which belongs to the sync engine (NULL when none runs). */
typedef struct nkpd_host {
	nkpd_host_conf conf;
	nkpd_host_status st;
	nkpd_host_attest att;
	/* Set while the host is being removed: the empty desired state it
	 * alone is pushed (see nkpd_sync.host_wipe). */
	struct nkpd_desired *wipe_snap;
	struct nkpd_link *link;
} nkpd_host;

/* The desired state as pushed: an immutable, reference-counted snapshot
 * taken after each committed change, so pushes are packed outside the
 * lock. Keys live in one sodium_malloc block. */
typedef struct nkpd_desired_version {
	uint32_t version;
	uint32_t state;
	uint64_t created_unix;
} nkpd_desired_version;

typedef struct nkpd_desired_provider {
	uint8_t id[NKP_ID_BYTES];
	char name[NKPD_NAME_MAX + 1];
	bool is_default, backed_up, tpm_only;
	bool standard; /* not pushed as versions: its keys are the KMS's */
	size_t n_versions;
	nkpd_desired_version *versions;
	size_t key_index; /* first key of this provider in `keys` */
} nkpd_desired_provider;

typedef struct nkpd_desired {
	atomic_uint refs;
	uint64_t epoch;
	uint64_t generation;
	bool trusted; /* trusted providers included: for trusted hosts */
	/* The serialized nkp.wire.DesiredState (trusted providers left out
	 * unless `trusted`), sodium_malloc, and its digest. */
	uint8_t *packed;
	size_t packed_len;
	uint8_t digest[NKPD_DIGEST_BYTES];
	size_t n_providers;
	nkpd_desired_provider *providers;
	size_t n_keys;
	uint8_t *keys; /* sodium_malloc, n_keys * NKP_KEY_BYTES */
} nkpd_desired;

/* Called with nkpd_svc.lock held after a change of desired state was committed
 * (persisted, generation bumped). An error is the commit's result; the
 * change stays committed. */
typedef nkp_err (*nkpd_commit_fn)(struct nkpd_svc *s, void *arg);
typedef struct nkpd_subscriber {
	nkpd_commit_fn fn;
	void *arg;
} nkpd_subscriber;
#define NKPD_MAX_SUBSCRIBERS 4u

/* What the core asks of the host sync engine, registered by it while it
 * runs (nkpd_svc.sync is NULL otherwise, as in unit tests: host changes then
 * reach nobody). Each is called with nkpd_svc.lock held unless noted. */
typedef struct nkpd_sync {
	void *ctx;
	/** Sets up the live side of a new host (socket, dial). */
	nkp_err (*host_added)(void *ctx, struct nkpd_host *h);
	/** Starts (or, with `on` false, stops) pushing an empty desired
	 * state to `h` alone, so that it wipes its keys before it is removed. */
	nkp_err (*host_wipe)(void *ctx, struct nkpd_host *h, bool on);
	/** True once `h` acknowledged the wiping push. */
	bool (*host_wiped)(void *ctx, const struct nkpd_host *h);
	/** Takes a host already out of the model and frees it (now or at
	 * stop). Called WITHOUT the lock. */
	void (*host_release)(void *ctx, struct nkpd_host *h);
	/** `nkpctl host resync`: the next pushes to `h` carry resync. */
	void (*host_resync)(void *ctx, struct nkpd_host *h);
	/** `h`'s attestation changed what it should hold: push at once (with
	 * resync: the same pair, other contents). */
	void (*host_scope_changed)(void *ctx, struct nkpd_host *h);
	/** Asks every reachable host for its usage now and waits, releasing
	 * the lock, until each answered or `timeout_ms` passed. Returns the
	 * number of hosts that did not answer. */
	size_t (*usage_round)(void *ctx, uint64_t timeout_ms);
} nkpd_sync;

typedef struct nkpd_svc {
	pthread_mutex_t lock;
	char dir[PATH_MAX];
	char state_path[PATH_MAX];
	char events_path[PATH_MAX];
	nkp_key *seal_key;
	nkpi_atrest_kind at_rest; /* where seal_key came from */
	nkp_identity *identity;
	nkp_eventlog *events;
	/* Where new version keys come from (native unless a test sets
	 * another before the first change). */
	nkpd_keysource keys;
	/* Where the model is persisted, and the revision last loaded or
	 * written there. */
	nkpd_store store;
	uint64_t revision;
	nkpd_subscriber subs[NKPD_MAX_SUBSCRIBERS];
	const nkpd_sync *sync;
	uint64_t started_unix;
	nkp_backup_params backup_params;
	unsigned heartbeat_ms;
	uint64_t attest_interval_ms; /* NKPD_ATTEST_INTERVAL_MS unless set */
	uint32_t attest_pcrs;	     /* NKPD_ATTEST_PCRS unless set */
	/* Asks the KMS monitor (keysource/kmip.c) for a round now: a standard
	 * provider or a host was added. NULL when none runs. Lock held. */
	void (*kms_wake)(void *arg);
	void *kms_wake_arg;

	uint64_t epoch;		 /* random per `nkpd init`, never 0 */
	uint64_t generation;	 /* the counter, below NKPI_GENERATION_MAX */
	uint64_t stamp_floor_ns; /* persisted: see nkpd_state_stamp_reserve */
	uint64_t stamp_retry_ms; /* the last save failed: not before then */
	size_t n_providers;
	nkpd_provider **providers;
	size_t n_hosts;
	nkpd_host **hosts;
	size_t n_baselines;
	nkpd_baseline baselines[NKPD_MAX_BASELINES];
	/* The seal policy (core/sealpol.c): the policy key (derived from
	 * seal_key with the first baseline), its public area, and the signed
	 * policy of the current baselines (NULL while there is none). */
	nkp_key *policy_key;
	uint8_t policy_pub[NKPD_POLICY_PUB_MAX];
	size_t policy_pub_len;
	struct nkpd_sealpol *sealpol;

	/* reconciler: the desired state of untrusted hosts, and of trusted
	 * ones (the same snapshot while no provider is trusted) */
	nkpd_desired *snap;
	nkpd_desired *snap_trusted;
	struct reconciler *rec;
	/* usage rounds (nkpd_sync.usage_round) */
	pthread_cond_t round_cond;
	uint64_t usage_round;
} nkpd_svc;

/* core/service.c: opens DIR's keys and event log (creating the keys if
 * `create`); nkpd_svc_close frees everything, the model included. */
nkp_err nkpd_svc_open(nkpd_svc *s, const char *dir, bool create);
/* Where the sealing key comes from (nkp/private/atrest.h): --tpm TCTI,
 * --seal-key FILE, or neither (the directory decides). */
typedef struct nkpd_keys_at_rest {
	const char *tpm;
	const char *seal_key_path;
} nkpd_keys_at_rest;
nkp_err nkpd_svc_open_at(nkpd_svc *s, const char *dir, const nkpd_keys_at_rest *at, bool create);
void nkpd_svc_close(nkpd_svc *s);
/* Takes DIR/nkpd.lock (one nkpd per state directory), before anything
 * else in DIR is read or changed; release it with nkp_file_unlock() after
 * nkpd_svc_close. On failure says on stderr why, naming the holder's pid.
 * Errors: NKP_ERR_STATE (held), as nkp_file_lock_take(). */
nkp_err nkpd_svc_lock_dir(const char *dir, nkp_file_lock **out);

/* core/state.c */
/** Lock held (or before the reconciler starts). Keeps the persisted
 * stamp floor an hour above every handshake timestamp this process made
 * or may make next, writing the state when less than half of that
 * remains. nkpd_state_load starts the process's timestamps above the
 * floor it finds. */
nkp_err nkpd_state_stamp_reserve(nkpd_svc *s);

/* core/util.c */
/** A random epoch, never 0. */
uint64_t nkpd_util_new_epoch(void);
/** Copies a string a host sent into `dst` for people and JSON: valid UTF-8
 * only (bad bytes become '?'), no C0, DEL or C1 control characters, no
 * escape sequences (ESC and what follows it as one sequence), at most
 * size - 1 bytes, never cutting a character. */
void nkpd_util_sanitize(char *dst, size_t size, const char *src);
bool nkpd_util_name_valid(const char *name);
void nkpd_util_copy_str(char *dst, size_t size, const char *src);
/** calloc for replies and views (at least one element): aborts on
 * exhaustion, as their allocations are small. */
void *nkpd_util_xcalloc(size_t n, size_t size);

/* core/state.c: the model's persistence. Callers hold nkpd_svc.lock. */
/** Loads the model from nkpd_svc.store (see nkpd_store.load for the errors);
 * gives a state without an epoch one, written at once. */
nkp_err nkpd_state_load(nkpd_svc *s);
/** After nkpd_state_load gave NKP_ERR_FORMAT_VERSION: why, for people. */
void nkpd_state_format_message(const nkpd_svc *s, char *buf, size_t size);
/** Writes the model to nkpd_svc.store at the revision last seen (NKP_ERR_STATE
 * if the store moved on). */
nkp_err nkpd_state_save(nkpd_svc *s);
/** Adds `fn` to the commit subscribers (at most NKPD_MAX_SUBSCRIBERS: one
 * more aborts); nkpd_state_unsubscribe removes it. */
void nkpd_state_subscribe(nkpd_svc *s, nkpd_commit_fn fn, void *arg);
void nkpd_state_unsubscribe(nkpd_svc *s, nkpd_commit_fn fn, void *arg);

/* core/model.c: lookups and changes of the model. Callers hold
 * nkpd_svc.lock. */
nkpd_provider *nkpd_model_provider_find(const nkpd_svc *s, const char *name);
nkpd_provider *nkpd_model_provider_find_id(const nkpd_svc *s,
					   const uint8_t id[static NKP_ID_BYTES]);
nkpd_provider *nkpd_model_provider_default(const nkpd_svc *s);
nkpd_host *nkpd_model_host_find(const nkpd_svc *s, const char *name);
nkpd_baseline *nkpd_model_baseline_find(nkpd_svc *s, const char *name);
/** Is any provider trusted (for attested hosts only)? */
bool nkpd_model_has_trusted(const nkpd_svc *s);
nkpd_version *nkpd_model_version_find(const nkpd_provider *p, uint32_t version);
nkpd_version *nkpd_model_version_active(const nkpd_provider *p);
nkpd_version *nkpd_model_version_staged(const nkpd_provider *p);
uint32_t nkpd_model_version_max(const nkpd_provider *p);
void nkpd_model_provider_free(nkpd_provider *p);
nkp_err nkpd_model_provider_dup(const nkpd_provider *p, nkpd_provider **out);
nkp_err nkpd_model_add_version(nkpd_provider *p, uint32_t version, nkp_version_state st,
			       uint64_t created, nkp_key *key);
void nkpd_model_remove_version(nkpd_provider *p, uint32_t version);
void nkpd_model_host_free(nkpd_host *h);
void nkpd_model_free(nkpd_svc *s);

/* core/state.c: transactions. */

/* A change of desired state: snapshot the providers first, then mutate,
 * then commit (generation++, persist, push) or roll back. */
typedef struct nkpd_txn {
	uint64_t generation;
	size_t n_providers;
	nkpd_provider **providers;
} nkpd_txn;
nkp_err nkpd_txn_begin(nkpd_svc *s, nkpd_txn *t);
/** Bumps the generation, persists and, on success, tells the commit
 * subscribers. On failure the model is rolled back. */
nkp_err nkpd_txn_commit(nkpd_svc *s, nkpd_txn *t);
void nkpd_txn_rollback(nkpd_svc *s, nkpd_txn *t);

/* core/attest.c: trusted hosts. Lock held. */
/** Trusted providers only for a trusted host. */
bool nkpd_host_in_scope(const nkpd_host *h, const nkpd_provider *p);
/** The desired state for `h`: nothing at all while it is being removed;
 * with trusted providers only while it is trusted. */
nkpd_desired *nkpd_host_snap(const nkpd_svc *s, const nkpd_host *h);
/** The highest generation `h` acknowledged holding `p` as it is: for a
 * trusted provider, only acknowledgements of the trusted snapshot count. */
uint64_t nkpd_host_acked(const nkpd_host *h, const nkpd_provider *p);
/** Should the next Hello to `h` ask for a quote? */
bool nkpd_attest_due(const nkpd_svc *s, const nkpd_host *h);
/** A quote by `h`'s AK over the nonce sent, of the PCRs `mask`, whose
 * digest is `digest`, passed the checks: trusted if an approved baseline
 * has that digest. */
void nkpd_attest_quote_ok(nkpd_svc *s, nkpd_host *h, uint32_t mask, const uint8_t digest[32]);
/** A quote asked for did not come or did not pass: untrusted. */
void nkpd_attest_quote_failed(nkpd_svc *s, nkpd_host *h, const char *reason);
/** The EK (and its certificate) `h` sent: checked under its CA, a
 * credential made to it for its AK, sent next. */
void nkpd_attest_ek(nkpd_svc *s, nkpd_host *h, const uint8_t *ek, size_t ek_len,
		    const uint8_t *cert, size_t cert_len);
/** What `h`'s TPM recovered of that credential: the AK proven, or not. */
void nkpd_attest_activated(nkpd_svc *s, nkpd_host *h, const uint8_t *got, size_t len);
/** `h` restarted (a new boot nonce): untrusted, asked for a quote at once. */
void nkpd_attest_restarted(nkpd_svc *s, nkpd_host *h);
/** A trusted host whose latest passing quote is too old: untrusted. */
void nkpd_attest_check_age(nkpd_svc *s, nkpd_host *h);
/* core/sealpol.c: the seal policy (docs/PROTOCOL.md "Seal policy"). */
/* The signed policy of a set of baselines: immutable, shared by the
 * Hellos that carry it (reference-counted). */
typedef struct nkpd_sealpol {
	atomic_uint refs;
	Nkp__Atrest__SealPolicy *msg;
	uint8_t digest[32]; /* nkpi_seal_policy_digest */
} nkpd_sealpol;
void nkpd_sealpol_release(nkpd_sealpol *p);
/** Lock held: the signed policy of the current baselines, anew. */
nkp_err nkpd_sealpol_refresh(nkpd_svc *s);
/** Lock held: the binding a Status reports. */
void nkpd_sealpol_status(nkpd_svc *s, nkpd_host *h, const ProtobufCBinaryData *digest,
			 const char *error);
/** "off", "bound", "pending" or "unbinding". */
const char *nkpd_sealpol_state(const nkpd_svc *s, const nkpd_host *h);
/** `nkpctl host seal-policy NAME on|off`. Takes the lock. */
void nkpd_host_seal_policy(nkpd_svc *s, const char *name, bool on, nkpd_result *res);

/** `nkpctl baseline add|remove`. Take the lock. */
void nkpd_baseline_add(nkpd_svc *s, const char *name, const char *from_host, nkpd_result *r);
void nkpd_baseline_remove(nkpd_svc *s, const char *name, nkpd_result *r);
/** A copy of the baselines (malloc'd, *n entries; NULL when none). Takes
 * the lock. */
nkpd_baseline *nkpd_baseline_list(nkpd_svc *s, size_t *n);

/* core/hosts.c: views of a host. Lock held. */
/** The host acknowledged exactly `d` (the digest covers epoch, counter
 * and every key). */
bool nkpd_host_has(const nkpd_host *h, const nkpd_desired *d);
/** True if the host's last acknowledged digest is that of the desired
 * state it would be sent now. */
bool nkpd_host_current(const nkpd_svc *s, const nkpd_host *h);
bool nkpd_host_in_sync(const nkpd_svc *s, const nkpd_host *h);
const char *nkpd_host_state_name(const nkpd_svc *s, const nkpd_host *h);

/* core/desired.c */
/** Drops a reference to `d`, freeing (and wiping) it with the last one;
 * accepts NULL. Thread-safe. */
void nkpd_desired_release(nkpd_desired *d);

#endif
