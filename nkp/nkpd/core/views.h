/* nkpd's reports: what the service says about itself, its hosts and its
 * providers, as plain C views for any front end to translate.
 *
 * A view is built under nkpd_svc.lock (so it is one consistent picture), owned
 * by the caller afterwards and freed with its _free(), which accepts NULL.
 * Views hold no secret: identifiers, names, counts and public keys only.
 * Building one aborts on exhaustion of memory (a reply's allocations are
 * small; threading failure through every builder buys nothing).
 *
 * The nkpd_report_*() functions take nkpd_svc.lock themselves; the _locked
 * builders are for operations that return a view under their own lock
 * hold. */
#ifndef NKPD_VIEWS_H
#define NKPD_VIEWS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/nkp.h>

#define NKPD_NAME_MAX 64u
#define NKPD_ADDRESS_MAX 255u

struct nkpd_svc;
struct nkpd_provider;

typedef char nkpd_name[NKPD_NAME_MAX + 1];

/* Provider kinds: keys made by nkpd, or from an external KMS over KMIP. */
typedef enum nkpd_kind {
	NKPD_KIND_NATIVE = 0,
	NKPD_KIND_STANDARD,
} nkpd_kind;

/* A standard provider's KMS servers. */
#define NKPD_KMS_SERVERS_MAX 8u
#define NKPD_KMS_URL_MAX 96u
#define NKPD_KMS_ERROR_MAX 200u
#define NKPD_KMS_SPARE_POOL_DEFAULT 8u
#define NKPD_KMS_SPARE_POOL_MAX 256u

#define NKPD_KMS_LIST_MAX 256u /* keys a provider view lists */
#define NKPD_KMS_ID_MAX 128u   /* a KMS's Unique Identifier, with its NUL */
#define NKPD_KMS_VM_NAME_MAX 128u

typedef enum nkpd_kms_key_state {
	NKPD_KMS_KEY_SPARE = 1, /* kept for one host, for its next new VM */
	NKPD_KMS_KEY_IN_USE,	/* a VM's key */
} nkpd_kms_key_state;

typedef enum nkpd_kms_reach {
	NKPD_KMS_UNKNOWN = 0, /* not asked yet */
	NKPD_KMS_REACHABLE,
	NKPD_KMS_UNREACHABLE,
} nkpd_kms_reach;

typedef struct nkpd_status_view {
	uint8_t public_key[NKP_PUBKEY_BYTES];
	uint64_t generation;
	uint32_t hosts_total, hosts_in_sync, hosts_unreachable;
	uint32_t providers, providers_not_backed_up;
	nkpd_name default_provider; /* "" if none */
	const char *version;	    /* static */
	const char *keys_at_rest;   /* static: nkpi_atrest_name() */
	uint64_t started_unix;
	char state_dir[PATH_MAX];
} nkpd_status_view;

typedef struct nkpd_host_view {
	nkpd_name name;
	char address[NKPD_ADDRESS_MAX + 1];
	nkpd_name cluster;
	const char *state; /* static: "in-sync", "pending", ... */
	uint64_t applied_generation;
	char last_error[256];
	uint8_t public_key[NKP_PUBKEY_BYTES];
	bool tpm;
	uint64_t last_contact_unix;
	nkpd_name host_name;	 /* as the host calls itself, sanitised */
	const char *attestation; /* static: "trusted", "untrusted", "none" */
	char attestation_reason[160];
	nkpd_name baseline;
	const char *seal_policy; /* static: "off", "bound", "pending", "unbinding" */
	char seal_policy_error[160];
	uint64_t attested_unix;
} nkpd_host_view;

typedef struct nkpd_host_list {
	size_t n_hosts;
	nkpd_host_view *hosts;
} nkpd_host_list;

typedef struct nkpd_rotation_view {
	const char *state; /* static: "none", "waiting", "promoted", "failed" */
	uint32_t version;
	uint64_t deadline_unix;
	char message[512];
	uint32_t acked, total;
	size_t n_missing; /* hosts in scope that have not acknowledged */
	nkpd_name *missing;
} nkpd_rotation_view;

typedef struct nkpd_version_view {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	uint32_t hosts_holding;
	uint64_t keysafes, created, rewrapped, unwrapped, last_used_unix;
} nkpd_version_view;

typedef struct nkpd_kms_server_view {
	char url[NKPD_KMS_URL_MAX];
	nkpd_kms_reach reach;
	char error[NKPD_KMS_ERROR_MAX];
	uint64_t checked_unix;
} nkpd_kms_server_view;

typedef struct nkpd_provider_view {
	nkpd_name name;
	uint8_t id[NKP_ID_BYTES];
	bool is_default, backed_up, backup_stale, tpm_only;
	uint64_t created_unix, backed_up_unix;
	uint32_t active_version; /* 0 if none */
	size_t n_versions;
	nkpd_version_view *versions;
	uint32_t hosts_total, hosts_in_sync;
	const char *scope_note; /* static; "" if none */
	nkpd_rotation_view rotation;
	nkpd_kind kind;
	size_t n_kms;
	nkpd_kms_server_view kms[NKPD_KMS_SERVERS_MAX];
	uint32_t keys_in_use, spare_pool, spares;
	size_t n_kms_keys; /* the first NKPD_KMS_LIST_MAX of them */
	struct nkpd_kms_key *kms_keys;
} nkpd_provider_view;

typedef struct nkpd_provider_list {
	size_t n_providers;
	nkpd_provider_view *providers;
} nkpd_provider_list;

typedef struct nkpd_host_usage {
	nkpd_name host;
	uint32_t version;
	uint64_t keysafes;
} nkpd_host_usage;

/* Why a retire or delete was refused: who reports keysafes under what,
 * and who the last usage round did not hear from. */
typedef struct nkpd_usage_refusal {
	uint64_t keysafes;
	size_t n_hosts;
	nkpd_host_usage *hosts;
	size_t n_not_answered;
	nkpd_name *not_answered;
} nkpd_usage_refusal;

/** Each takes nkpd_svc.lock and returns a new view in *out (never fails). */
void nkpd_report_status(struct nkpd_svc *s, nkpd_status_view **out);
void nkpd_report_hosts(struct nkpd_svc *s, nkpd_host_list **out);
void nkpd_report_providers(struct nkpd_svc *s, nkpd_provider_list **out);
/** NKP_ERR_NOT_FOUND (and *out untouched) if there is no such provider. */
nkp_err nkpd_report_provider(struct nkpd_svc *s, const char *name, nkpd_provider_view **out);
nkp_err nkpd_report_rotation(struct nkpd_svc *s, const char *name, nkpd_rotation_view **out);

/** Lock held. */
nkpd_provider_view *nkpd_report_provider_locked(struct nkpd_svc *s, const struct nkpd_provider *p);
nkpd_rotation_view *nkpd_report_rotation_locked(struct nkpd_svc *s, const struct nkpd_provider *p);
/** Lock held. The hosts reporting keysafes under `p` (version 0: any
 * version), and those the last usage round did not hear from. */
nkpd_usage_refusal *nkpd_report_usage_refusal_locked(struct nkpd_svc *s,
						     const struct nkpd_provider *p,
						     uint32_t version);

void nkpd_status_view_free(nkpd_status_view *v);
void nkpd_host_list_free(nkpd_host_list *l);
void nkpd_provider_view_free(nkpd_provider_view *v);
void nkpd_provider_list_free(nkpd_provider_list *l);
void nkpd_rotation_view_free(nkpd_rotation_view *v);
void nkpd_usage_refusal_free(nkpd_usage_refusal *u);

#endif
