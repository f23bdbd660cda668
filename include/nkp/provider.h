/* Provider primary keys as the key core sees them.
 *
 * An nkp_primary is one version of a provider's primary key together with
 * the provider id and version number. The primary key never encrypts
 * directly: on creation the purpose subkeys (KEK wrapping, ...) are derived
 * with crypto_kdf and kept beside it in locked memory. */
#ifndef NKP_PROVIDER_H
#define NKP_PROVIDER_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

/** State of one primary key version. */
typedef enum nkp_version_state {
	NKP_VERSION_STAGED = 1,	      /* on hosts, not yet used for new wraps */
	NKP_VERSION_ACTIVE = 2,	      /* used for new wraps */
	NKP_VERSION_DECRYPT_ONLY = 3, /* old: unwraps only, awaiting retirement */
} nkp_version_state;

/** "staged", "active", "decrypt-only"; "unknown" for other values. */
NKP_EXPORT const char *nkp_version_state_name(nkp_version_state s);
/** Parses a state name; returns false if unknown. */
NKP_EXPORT NKP_NODISCARD bool nkp_version_state_parse(const char *name, nkp_version_state *out);

typedef struct nkp_primary nkp_primary;

/** Makes a primary from a copy of `key` (the caller keeps and frees its
 * own). Errors: NKP_ERR_INVALID (version 0), NKP_ERR_NOMEM, NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_primary_new(const uint8_t provider_id[static NKP_ID_BYTES],
						 uint32_t version, const nkp_key *key,
						 nkp_primary **out);
NKP_EXPORT const uint8_t *nkp_primary_provider_id(const nkp_primary *p);
NKP_EXPORT uint32_t nkp_primary_version(const nkp_primary *p);
/** The primary key itself (for backups and pushes). Owned by `p`. */
NKP_EXPORT const nkp_key *nkp_primary_key(const nkp_primary *p);
/** The subkey that wraps VM KEKs (crypto_kdf context "nkpkek01", id 1). */
NKP_EXPORT const nkp_key *nkp_primary_kek_key(const nkp_primary *p);
/** Wipes and frees. Accepts NULL. */
NKP_EXPORT void nkp_primary_free(nkp_primary *p);

/** Formats a 16-byte id as 32 lowercase hex characters plus NUL. */
NKP_EXPORT void nkp_id_to_hex(const uint8_t id[static NKP_ID_BYTES], char out[static 33]);
/** Parses 32 hex characters. Errors: NKP_ERR_PARSE. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_id_from_hex(const char *hex, uint8_t out[static NKP_ID_BYTES]);

#endif
