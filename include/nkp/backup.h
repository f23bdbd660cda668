/* Provider backup files (proto/backup.proto): a provider's id, name and
 * every primary key version with its state and creation time, encrypted
 * under a password with Argon2id -> XChaCha20-Poly1305.
 *
 * A damaged file (NKP_ERR_DAMAGED) and a wrong password
 * (NKP_ERR_WRONG_PASSWORD) are told apart by an unkeyed checksum over the
 * whole body and a password verifier derived beside the encryption key. */
#ifndef NKP_BACKUP_H
#define NKP_BACKUP_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>
#include <nkp/provider.h>

#define NKP_BACKUP_FORMAT_VERSION 1u
#define NKP_BACKUP_MAX_FILE (1u << 20)
#define NKP_BACKUP_MAX_VERSIONS 1024u
#define NKP_PROVIDER_MAX_NAME 64u

typedef struct nkp_backup_version {
	uint32_t version;
	nkp_version_state state;
	uint64_t created_unix;
	nkp_key *key;
} nkp_backup_version;

/** A provider as a backup holds it. Owns its keys. */
typedef struct nkp_provider_backup {
	uint8_t id[NKP_ID_BYTES];
	char name[NKP_PROVIDER_MAX_NAME + 1];
	bool tpm_only;
	uint64_t exported_unix;
	size_t n_versions;
	nkp_backup_version *versions;
} nkp_provider_backup;

/** Argon2id cost. nkp_backup_params_moderate() is the default. */
typedef struct nkp_backup_params {
	uint64_t opslimit;
	size_t memlimit;
} nkp_backup_params;
NKP_EXPORT nkp_backup_params nkp_backup_params_moderate(void);
/** Smallest libsodium allows: for tests only. */
NKP_EXPORT nkp_backup_params nkp_backup_params_min(void);
/** True when `p` is below libsodium's "interactive" Argon2id limits
 * (opslimit 2, memlimit 64 MiB): a weak password behind it is cheap to
 * guess. Restore refuses such a backup unless told otherwise. */
NKP_EXPORT bool nkp_backup_params_weak(const nkp_backup_params *p);

/** Encrypts `p` under `password` into a malloc'd file image (*out, free with
 * free(); it holds no clear key). `params` NULL means moderate. Errors:
 * NKP_ERR_INVALID, NKP_ERR_NOMEM (Argon2id memory), NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_backup_export(const nkp_provider_backup *p,
						   const char *password, size_t pwlen,
						   const nkp_backup_params *params, uint8_t **out,
						   size_t *outlen);

/** Decrypts a backup file image. *out is written only on success; free it
 * with nkp_provider_backup_free(). Errors: NKP_ERR_PARSE, NKP_ERR_TOO_LARGE,
 * NKP_ERR_FORMAT_VERSION, NKP_ERR_DAMAGED, NKP_ERR_WRONG_PASSWORD,
 * NKP_ERR_AUTH (checksum intact but contents forged), NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_backup_import(const uint8_t *buf, size_t len,
						   const char *password, size_t pwlen,
						   nkp_provider_backup **out);

/** The Argon2id cost a backup file image was made with, read without the
 * password after the checks that need none (the checksum, the header).
 * *out is written only on success. Errors as nkp_backup_import()'s that
 * come before Argon2id. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_backup_peek(const uint8_t *buf, size_t len,
						 nkp_backup_params *out);

/** Allocates an empty backup with room for n versions (keys NULL). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_provider_backup_new(size_t n_versions,
							 nkp_provider_backup **out);
/** Wipes and frees, keys included. Accepts NULL. */
NKP_EXPORT void nkp_provider_backup_free(nkp_provider_backup *p);

#endif
