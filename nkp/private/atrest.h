/* Where a state directory's sealing key comes from (proto/atrest.proto):
 * the TPM (DIR/seal.tpm), a credential file named by --seal-key (a systemd
 * encrypted credential), or a plain DIR/seal.key (development; reported as
 * not protected). One rule for nkpd and nkp-hostd. */
#ifndef NKP_PRIVATE_ATREST_H
#define NKP_PRIVATE_ATREST_H

#include <stdbool.h>
#include <string.h>

#include <nkp/err.h>
#include <nkp/key.h>

#include "atrest.pb-c.h"

typedef enum nkpi_atrest_kind {
	NKPI_ATREST_FILE = 0,	/* DIR/seal.key: not protected */
	NKPI_ATREST_CREDENTIAL, /* --seal-key FILE */
	NKPI_ATREST_TPM,	/* DIR/seal.tpm */
} nkpi_atrest_kind;

typedef struct nkpi_atrest_opts {
	const char *dir;	   /* the state directory */
	const char *seal_key_path; /* --seal-key FILE, or NULL */
	const char *tpm;	   /* --tpm TCTI, or NULL */
} nkpi_atrest_opts;

/* The TCTI used when --tpm (or the settings' tpm) names none. The one
 * recorded in DIR/seal.tpm is never used: the file is not authenticated
 * and a TCTI names a library to load. */
#define NKPI_ATREST_DEFAULT_TCTI "device:/dev/tpmrm0"

/* Opens the sealing key of an initialised directory. The directory decides
 * which source it uses; options that contradict it are refused
 * (NKP_ERR_INVALID), as is a plain seal.key left beside seal.tpm
 * (NKP_ERR_STATE). Each failure is logged once (NKP-SEAL-KEY), without a
 * key byte. Errors: those, NKP_ERR_NOT_FOUND (no sealing key at all),
 * NKP_ERR_OTHER_TPM, NKP_ERR_TPM, NKP_ERR_PERM, NKP_ERR_PARSE,
 * NKP_ERR_FORMAT_VERSION, NKP_ERR_IO, NKP_ERR_NOMEM. */
NKP_NODISCARD nkp_err nkpi_atrest_open(const nkpi_atrest_opts *o, nkp_key **key,
				       nkpi_atrest_kind *kind);

/* At init: opens the directory's sealing key as nkpi_atrest_open() does if
 * it has one; otherwise makes one where the options say (--tpm: sealed to
 * the TPM into DIR/seal.tpm, never written in clear; --seal-key FILE: that
 * file, which must exist (NKP_ERR_NOT_FOUND): a credential is made by its
 * owner, and a mistyped path must not leave a clear key; neither:
 * DIR/seal.key). --tpm on a directory that already has a plain key is
 * refused (NKP_ERR_STATE), as is a plain DIR/seal.key beside --seal-key. */
NKP_NODISCARD nkp_err nkpi_atrest_init(const nkpi_atrest_opts *o, nkp_key **key,
				       nkpi_atrest_kind *kind);

/* The seal policy's digest (wire.proto Status.seal_policy_digest): a
 * BLAKE2b-256, keyed "nkp-seal-policy-v1", of the packed SealPolicy.
 * protobuf-c packs a message's fields in order, so nkpd and a host that
 * unpacked and packs it again get the same bytes. */
#define NKPI_SEAL_POLICY_DIGEST_BYTES 32u
NKP_NODISCARD nkp_err nkpi_seal_policy_digest(const Nkp__Atrest__SealPolicy *p,
					      uint8_t out[NKPI_SEAL_POLICY_DIGEST_BYTES]);

/* Is DIR/seal.tpm bound to a seal policy, and to which (its digest)?
 * Errors: those of reading and parsing DIR/seal.tpm. */
NKP_NODISCARD nkp_err nkpi_atrest_binding(const nkpi_atrest_opts *o, bool *bound,
					  uint8_t digest[NKPI_SEAL_POLICY_DIGEST_BYTES]);

/* Seals `key` (DIR's sealing key, held by the running daemon) to the TPM
 * anew, bound to `p` (NULL: to the TPM alone, parent 2: a new NV index),
 * and replaces DIR/seal.tpm (atomically) only once the new object was
 * opened on this TPM as it is now. Once the new file is durable (never
 * before: a crash in between must leave an object that opens), the
 * object it replaced is revoked if it has parent 2 (its NV index
 * undefined): no copy of it opens again. When a binding leaves the
 * object it replaced openable without the policy (parent 1, which no
 * TPM forgets; the undefine failed; the old file unreadable), the bind
 * still succeeds, logs NKP-SEAL-POLICY, and *not_revoked (if not NULL)
 * is a malloc'd phrase saying why (the caller frees it); otherwise
 * *not_revoked is NULL. Errors: NKP_ERR_REFUSED (the TPM's PCRs match none of p's
 * approvals: nothing changed), NKP_ERR_INVALID or NKP_ERR_PARSE (`p`
 * malformed), NKP_ERR_AUTH (an approval's signature fails), NKP_ERR_TPM,
 * NKP_ERR_IO, NKP_ERR_NOSPC, NKP_ERR_NOMEM. */
NKP_NODISCARD nkp_err nkpi_atrest_bind(const nkpi_atrest_opts *o, const nkp_key *key,
				       const Nkp__Atrest__SealPolicy *p, char **not_revoked);

/* "tpm", "credential" or "not protected": what status reports. */
const char *nkpi_atrest_name(nkpi_atrest_kind kind);

/* What `status` (both CLIs) prints for a name nkpi_atrest_name() gave. */
static inline const char *nkpi_atrest_text(const char *name)
{
	if (strcmp(name, "tpm") == 0) {
		return "sealed to the TPM";
	}
	if (strcmp(name, "credential") == 0) {
		return "under a credential (--seal-key)";
	}
	return "not protected (a plain seal.key beside the keys: for development only)";
}

#endif
