/* A TPM 2.0 through tpm2-tss ESAPI: seal and unseal a state directory's
 * sealing key (proto/atrest.proto, TpmSealed), optionally bound to nkpd's
 * seal policy (policy.h).
 *
 * Every command that carries the key (Create's sensitive data, Unseal's
 * result) runs in a session salted by the storage primary key with
 * parameter encryption (an HMAC session, or for a bound object the policy
 * session), so the key never crosses the TCTI (the bus, a socket to swtpm)
 * in clear. Objects and sessions are flushed after each call, on every
 * path: no resource manager is needed and none is left behind. */
#ifndef NKP_PRIVATE_TPM_H
#define NKP_PRIVATE_TPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/err.h>
#include <nkp/key.h>

#include "atrest.pb-c.h"
#include "policy.h"

typedef struct nkpi_tpm nkpi_tpm;

/* tpm2-tss writes its own diagnostics to stderr (its marshalling code
 * too, on bytes nkpd checks from hosts); ours (NKP-TPM-*, NKP-SEAL-KEY)
 * say what failed. Sets TSS2_LOG unless the user did: call it before
 * threads start (a daemon's start; nkpi_tpm_open() calls it too). */
void nkpi_tpm_quiet_logs(void);

/* The TPM a TCTI string names: "device:/dev/tpmrm0",
 * "swtpm:host=127.0.0.1,port=N", ... (tpm2-tss's TCTI loader syntax).
 * Errors: NKP_ERR_INVALID (NULL or empty), NKP_ERR_TPM (no such TCTI, or
 * the TPM does not answer), NKP_ERR_NOMEM. */
NKP_NODISCARD nkp_err nkpi_tpm_open(const char *tcti, nkpi_tpm **out);
void nkpi_tpm_close(nkpi_tpm *t);

/* Seals `key` to this TPM: *out (malloc'd, *out_len bytes) is a packed
 * TpmSealed, not secret, that only this TPM can open; it records `tcti`.
 * Its parent (parent 2) is made from 32 random bytes kept only in a new
 * NV index of the owner range (owner hierarchy, empty owner password),
 * recorded as nv_index: nkpi_tpm_revoke() of that index makes the object
 * unopenable for good, wherever its bytes were copied. The index is
 * undefined again if sealing fails. Errors: NKP_ERR_TPM, NKP_ERR_NOMEM. */
NKP_NODISCARD nkp_err nkpi_tpm_seal(nkpi_tpm *t, const nkp_key *key, const char *tcti,
				    uint8_t **out, size_t *out_len);

/* Opens a packed TpmSealed, format 1 or 2. An object of parent 2 needs
 * its NV index: one missing (revoked by a binding, or another TPM's
 * object), or not nkp's, is NKP_ERR_OTHER_TPM (logged as NKP-SEAL-KEY).
 * A bound object (format 2) is
 * opened by its approvals, tried in order, each in the policy session:
 * TPM2_PolicyPCR for its PCR state, TPM2_VerifySignature of its signature
 * by the policy key (loaded from its public area, owner hierarchy) into a
 * ticket, TPM2_PolicyAuthorize with it, then Unseal.
 * Errors: NKP_ERR_PARSE (not a TpmSealed, its TPM structures or seal
 * policy malformed), NKP_ERR_FORMAT_VERSION (a newer format or an unknown
 * parent template), NKP_ERR_OTHER_TPM (this TPM cannot load it: made by
 * another TPM, or altered), NKP_ERR_TPM, NKP_ERR_NOMEM; and for a bound
 * object NKP_ERR_AUTH (before any TPM command: the object's policy is not
 * PolicyAuthorize by the file's key and ref, the policy block replaced;
 * or the TPM refused the signature of every approval for its current
 * PCRs) and NKP_ERR_REFUSED (the TPM's PCRs match none of the approvals;
 * logged as NKP-SEAL-POLICY). */
NKP_NODISCARD nkp_err nkpi_tpm_unseal(nkpi_tpm *t, const uint8_t *buf, size_t len, nkp_key **out);

/* ---- the seal policy ----
 * A policy is the protobuf-c message it arrives in (wire.proto
 * Hello.seal_policy) and is kept in (TpmSealed.policy), so that what is
 * bound is byte for byte what nkpd sent, with one set of limits. A valid
 * policy has no unknown fields, `key` of policy.h's template, `ref` of 8
 * bytes, 1-64 approvals, each with a pcr_mask within PCRs 0-23 and not 0,
 * a pcr_digest of 32 bytes, a signature as nkpi_policy_approve() writes
 * it, and a name of at most 64 bytes. */
#define NKPI_TPM_APPROVAL_NAME_MAX 64u
/* The largest packed TpmSealed: the TPM's blobs and a policy of 64
 * approvals with the longest names take about 12 KiB. Nothing larger is
 * written, and readers take this much. */
#define NKPI_TPM_SEALED_MAX (32u << 10)

/* Seals `key` to this TPM as nkpi_tpm_seal() does. With a policy `p` (not
 * NULL) the object's authPolicy is PolicyAuthorize(p's key, p's ref),
 * userWithAuth clear, and *out is format 2 with `p` in it; it is returned
 * only once it opened on this TPM now, through one of p's approvals, to
 * `key`. Without one, *out is format 1. Errors: NKP_ERR_INVALID (p not a
 * valid policy), NKP_ERR_REFUSED (the TPM's PCRs match none of the
 * approvals), NKP_ERR_AUTH (the TPM refused the signature of the
 * approvals for its PCRs), NKP_ERR_TPM, NKP_ERR_NOMEM. */
NKP_NODISCARD nkp_err nkpi_tpm_seal_bound(nkpi_tpm *t, const nkp_key *key, const char *tcti,
					  const Nkp__Atrest__SealPolicy *p, uint8_t **out,
					  size_t *out_len);

/* Undefines NV index `nv_index` (a TpmSealed's, nkpi_tpm_sealed_inspect())
 * once its public area shows it is one nkpi_tpm_seal() defined: every
 * object of that parent is revoked. An index already gone is NKP_OK.
 * Errors: NKP_ERR_INVALID (not in the owner range), NKP_ERR_STATE (the
 * index there is not nkp's: left alone), NKP_ERR_TPM. */
NKP_NODISCARD nkp_err nkpi_tpm_revoke(nkpi_tpm *t, uint32_t nv_index);

typedef struct nkpi_tpm_sealed_info {
	uint32_t nv_index; /* parent 2: its NV index (revocable); 0: parent 1 */
	bool bound;	   /* format 2: opens only under the seal policy below */
	uint8_t key_name[NKPI_POLICY_NAME_BYTES]; /* bound: the policy key's TPM Name */
	uint8_t ref[NKPI_POLICY_REF_BYTES];	  /* bound: the policy's ref */
	size_t n_approvals;			  /* bound: 1-64 */
} nkpi_tpm_sealed_info;

/* Attestation. The attestation key (AK) is a primary key of the
 * endorsement hierarchy made from a fixed template (ECC NIST P-256,
 * restricted, signing with ECDSA SHA-256, unique "nkp-attestation-key"):
 * the same TPM always makes the same AK, so nothing is stored, and a TPM
 * clear of the owner hierarchy leaves it. */
#define NKPI_TPM_PUBLIC_MAX 256u
#define NKPI_TPM_ATTEST_MAX 1024u
#define NKPI_TPM_SIG_MAX 128u
#define NKPI_TPM_NONCE_MAX 32u

typedef struct nkpi_tpm_quote_out {
	uint8_t ak_public[NKPI_TPM_PUBLIC_MAX]; /* TPM2B_PUBLIC, marshalled */
	size_t ak_public_len;
	uint8_t attest[NKPI_TPM_ATTEST_MAX]; /* TPM2B_ATTEST, marshalled */
	size_t attest_len;
	uint8_t sig[NKPI_TPM_SIG_MAX]; /* TPMT_SIGNATURE, marshalled */
	size_t sig_len;
} nkpi_tpm_quote_out;

/* The AK's public area (TPM2B_PUBLIC, marshalled) into out[NKPI_TPM_PUBLIC_MAX].
 * Errors: NKP_ERR_TPM. */
NKP_NODISCARD nkp_err nkpi_tpm_ak_public(nkpi_tpm *t, uint8_t *out, size_t *out_len);

/* A quote by the AK of the SHA-256 PCRs in `pcr_mask` (bit i: PCR i,
 * 0-23) over `nonce` (1-32 bytes). Errors: NKP_ERR_INVALID, NKP_ERR_TPM. */
NKP_NODISCARD nkp_err nkpi_tpm_quote(nkpi_tpm *t, const uint8_t *nonce, size_t nonce_len,
				     uint32_t pcr_mask, nkpi_tpm_quote_out *out);

/* The endorsement key (EK), TCG's default template "L-1" (RSA 2048,
 * AES-128-CFB, policy PolicySecret(TPM_RH_ENDORSEMENT)), a primary key of
 * the endorsement hierarchy: its public area (TPM2B_PUBLIC, marshalled)
 * into ek[NKPI_TPM_EK_PUBLIC_MAX], and its certificate (DER) from NV index
 * 0x01c00002 into cert[NKPI_TPM_EK_CERT_MAX] (*cert_len 0 when the TPM has
 * none). Errors: NKP_ERR_TPM, NKP_ERR_TOO_LARGE (a longer certificate). */
#define NKPI_TPM_EK_PUBLIC_MAX 512u
#define NKPI_TPM_EK_CERT_MAX 2048u
#define NKPI_TPM_EK_CERT_NV 0x01c00002u
NKP_NODISCARD nkp_err nkpi_tpm_ek(nkpi_tpm *t, uint8_t *ek, size_t *ek_len, uint8_t *cert,
				  size_t *cert_len);
/* TPM2_ActivateCredential with the AK and the EK: the credential (1-64
 * bytes) that a MakeCredential to this EK for this AK's name protected
 * (blob: TPM2B_ID_OBJECT, secret: TPM2B_ENCRYPTED_SECRET, both
 * marshalled), into out[64]. Errors: NKP_ERR_INVALID (malformed),
 * NKP_ERR_AUTH (made for another EK or AK, or altered), NKP_ERR_TPM. */
#define NKPI_TPM_CREDENTIAL_MAX 64u
NKP_NODISCARD nkp_err nkpi_tpm_activate(nkpi_tpm *t, const uint8_t *blob, size_t blob_len,
					const uint8_t *secret, size_t secret_len, uint8_t *out,
					size_t *out_len);

/* Parses a packed TpmSealed without a TPM (the checks nkpi_tpm_unseal()
 * makes before it talks to one, NKP_ERR_AUTH for a bound object's policy
 * among them). On success *tcti is the recorded TCTI (malloc'd, possibly
 * ""; NULL if not wanted). Same parse errors. */
NKP_NODISCARD nkp_err nkpi_tpm_sealed_check(const uint8_t *buf, size_t len, char **tcti);
/* The same checks; on success *out says what the object is bound to. */
NKP_NODISCARD nkp_err nkpi_tpm_sealed_inspect(const uint8_t *buf, size_t len,
					      nkpi_tpm_sealed_info *out);

#endif
