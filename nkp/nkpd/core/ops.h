/* nkpd's operations: what an operator can ask of the service, with plain
 * C arguments and a plain C result, for any front end to call.
 *
 * Each operation takes nkpd_svc.lock itself (and releases it around slow work:
 * Argon2id, waiting for hosts) and fills an nkpd_result: a code, a message
 * for people, and, when the operation says what it did, a view taken under
 * the same lock hold as the change. Strings in arguments are NUL-terminated
 * and borrowed; byte arguments (passwords, files, keys) are borrowed and
 * never kept: the caller wipes its copies. Results hold no secret except a
 * backup file (sealed under the operator's password). */
#ifndef NKPD_OPS_H
#define NKPD_OPS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/nkp.h>

#include "core/views.h"

struct nkpd_svc;

typedef enum nkpd_payload {
	NKPD_PAYLOAD_NONE = 0,
	NKPD_PAYLOAD_PROVIDER,
	NKPD_PAYLOAD_ROTATION,
	NKPD_PAYLOAD_USAGE_REFUSAL,
	NKPD_PAYLOAD_BACKUP,
} nkpd_payload;

/* A backup file nkpd made: to be written, read back and confirmed. */
typedef struct nkpd_backup_file {
	uint8_t provider_id[NKP_ID_BYTES];
	uint32_t max_version; /* the highest version the file holds */
	uint8_t *file;	      /* malloc */
	size_t len;
} nkpd_backup_file;

typedef struct nkpd_result {
	nkp_err code;
	char message[1024]; /* for people; never secret; "" if none */
	nkpd_payload payload;
	union {
		nkpd_provider_view *provider;
		nkpd_rotation_view *rotation;
		nkpd_usage_refusal *usage_refusal;
		nkpd_backup_file backup;
	} u;
} nkpd_result;

/** An empty result (NKP_OK, no message, no payload). */
void nkpd_result_init(nkpd_result *r);
/** Frees the payload; accepts a result with none. */
void nkpd_result_fini(nkpd_result *r);
/** Sets the code and a formatted message (the payload is kept). */
void nkpd_result_fail(nkpd_result *r, nkp_err code, const char *fmt, ...) NKP_PRINTF(3, 4);
void nkpd_result_ok(nkpd_result *r, const char *fmt, ...) NKP_PRINTF(2, 3);

/* ---- providers ---- */

typedef struct nkpd_provider_create_args {
	const char *name;
	bool make_default;
	bool tpm_only;
	/* Standard: its KMS settings (the caller's; copied) and what the
	 * caller found when it asked each server just before. */
	nkpd_kind kind;
	const struct nkpd_kms *kms;
	const struct nkpd_kms_server_state *kms_state;
} nkpd_provider_create_args;

typedef struct nkpd_provider_backup_args {
	const char *name;
	const uint8_t *password;
	size_t password_len;
} nkpd_provider_backup_args;

typedef struct nkpd_provider_backup_confirm_args {
	const uint8_t *provider_id; /* NKP_ID_BYTES, checked */
	size_t provider_id_len;
	const uint8_t *digest; /* BLAKE2b-256 of the file, checked */
	size_t digest_len;
} nkpd_provider_backup_confirm_args;

typedef struct nkpd_provider_restore_args {
	const uint8_t *file;
	size_t file_len;
	const uint8_t *password;
	size_t password_len;
	bool allow_weak; /* take a backup with a weak Argon2id cost */
} nkpd_provider_restore_args;

typedef struct nkpd_provider_rotate_args {
	const char *name;
	uint32_t timeout_seconds; /* 0: the default */
	bool force;		  /* promote at the deadline whoever acknowledged */
} nkpd_provider_rotate_args;

typedef struct nkpd_provider_retire_args {
	const char *name;
	uint32_t version;
	bool force;
} nkpd_provider_retire_args;

typedef struct nkpd_provider_delete_args {
	const char *name;
	bool force;
} nkpd_provider_delete_args;

/* Each answers with the provider's view on success, except: backup (the
 * file), rotate (the rotation), delete (a message only); retire and delete
 * refused for usage carry the usage refusal. */
void nkpd_provider_create(struct nkpd_svc *s, const nkpd_provider_create_args *a, nkpd_result *r);
void nkpd_provider_set_default(struct nkpd_svc *s, const char *name, nkpd_result *r);
void nkpd_provider_backup(struct nkpd_svc *s, const nkpd_provider_backup_args *a, nkpd_result *r);
void nkpd_provider_backup_confirm(struct nkpd_svc *s, const nkpd_provider_backup_confirm_args *a,
				  nkpd_result *r);
void nkpd_provider_restore(struct nkpd_svc *s, const nkpd_provider_restore_args *a, nkpd_result *r);
void nkpd_provider_rotate(struct nkpd_svc *s, const nkpd_provider_rotate_args *a, nkpd_result *r);
void nkpd_provider_retire(struct nkpd_svc *s, const nkpd_provider_retire_args *a, nkpd_result *r);
void nkpd_provider_delete(struct nkpd_svc *s, const nkpd_provider_delete_args *a, nkpd_result *r);
/** Promotes or fails rotations whose hosts acked or whose deadline passed.
 * Lock held. */
void nkpd_provider_rotation_tick(struct nkpd_svc *s);

/* ---- hosts ---- */

typedef struct nkpd_host_add_args {
	const char *name;
	const char *address; /* tcp://HOST:PORT or ipc://PATH */
	const char *cluster; /* "" for none */
	const uint8_t *public_key;
	size_t public_key_len;
	const uint8_t *ak_public; /* its attestation key (TPM2B_PUBLIC), or NULL */
	size_t ak_public_len;
	const uint8_t *ek_ca; /* PEM its EK certificate must verify under, or NULL */
	size_t ek_ca_len;
} nkpd_host_add_args;

typedef struct nkpd_host_remove_args {
	const char *name;
	bool force; /* forget it even if it did not confirm its wipe */
} nkpd_host_remove_args;

/* Each answers with a message only. */
void nkpd_host_add(struct nkpd_svc *s, const nkpd_host_add_args *a, nkpd_result *r);
void nkpd_host_remove(struct nkpd_svc *s, const nkpd_host_remove_args *a, nkpd_result *r);
void nkpd_host_resync(struct nkpd_svc *s, const char *name, nkpd_result *r);

/* ---- events ---- */

/** Calls `fn` for each event after `after_seq`, oldest first, as one JSON
 * line (see nkp_eventlog_read); no lock taken. */
void nkpd_events_read(struct nkpd_svc *s, uint64_t after_seq,
		      void (*fn)(uint64_t seq, const char *json, void *arg), void *arg);

#endif
