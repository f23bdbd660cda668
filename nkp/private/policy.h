/* nkpd's seal policy key (proto/atrest.proto SealPolicy): an ECC NIST P-256
 * key whose signatures approve PCR states for TPM2_PolicyAuthorize. A
 * sealing key bound to it (nkp/private/tpm.h) opens only in a policy
 * session that satisfied TPM2_PolicyPCR for a state the key approved, so
 * nkpd approves the PCRs of a planned upgrade before it happens, and the
 * host's key is not stranded by it.
 *
 * Only arithmetic and encodings, no TPM: SHA-256 from libsodium; ECDSA
 * P-256 from mbedTLS's libmbedcrypto (as quote.c). Every policy digest here
 * is the TPM's own construction (TPM 2.0 Part 3, PolicyPCR and
 * PolicyAuthorize) with SHA-256 sessions:
 *
 *   approvedPolicy = SHA-256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION
 *                            || pcr_digest)
 *   aHash          = SHA-256(approvedPolicy || ref)        (what is signed)
 *   authPolicy     = SHA-256(SHA-256(0^32 || TPM_CC_PolicyAuthorize ||
 *                            keyName) || ref)              (the object's)
 *
 * The secret is the 32-byte private scalar, big-endian; the caller holds
 * it (nkpd, in its sealed state) and nothing here logs or keeps it. */
#ifndef NKP_PRIVATE_POLICY_H
#define NKP_PRIVATE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <nkp/err.h>

#define NKPI_POLICY_SECRET_BYTES 32u
#define NKPI_POLICY_REF_BYTES 8u     /* policyRef: names the approved set */
#define NKPI_POLICY_DIGEST_BYTES 32u /* policy digests, PCR digests, aHash */
#define NKPI_POLICY_NAME_BYTES 34u   /* 0x000b || SHA-256(TPMT_PUBLIC) */
#define NKPI_POLICY_PUBLIC_MAX 128u  /* a key of the template is 90 bytes */
#define NKPI_POLICY_SIG_MAX 80u	     /* an approval's signature is 72 bytes */
#define NKPI_POLICY_APPROVALS_MAX 64u

/* A fresh policy key: a P-256 scalar in [1, n-1] from libsodium's RNG
 * (rejection sampling), into secret[32], which the caller wipes. Errors:
 * NKP_ERR_CRYPTO (the RNG gave no valid scalar in 64 tries). */
NKP_NODISCARD nkp_err nkpi_policy_key_new(uint8_t secret[static NKPI_POLICY_SECRET_BYTES]);

/* The public key of `secret` as a TPM2B_PUBLIC, marshalled, into
 * pub[NKPI_POLICY_PUBLIC_MAX] (*pub_len bytes, always 90): type ECC,
 * nameAlg SHA-256, objectAttributes sign | userWithAuth, empty
 * authPolicy, symmetric NULL, scheme ECDSA SHA-256, curve NIST P-256, kdf
 * NULL, unique x and y of 32 bytes each (left-padded), so that one key has
 * one encoding and one TPM Name.
 *
 * TPM2_LoadExternal of a public area alone (no sensitive part, owner
 * hierarchy so that TPM2_VerifySignature's ticket is a real one) checks
 * that the scheme fits the attributes (sign set, decrypt and restricted
 * clear: symmetric NULL and a signing scheme) and that the point is on the
 * curve; an outside key claims none of fixedTPM, fixedParent,
 * sensitiveDataOrigin. userWithAuth is not needed (TPM2_VerifySignature
 * takes no authorisation): it is in the template only so that the Name is
 * fixed.
 * Errors: NKP_ERR_INVALID (secret not in [1, n-1]), NKP_ERR_CRYPTO. */
NKP_NODISCARD nkp_err nkpi_policy_key_public(const uint8_t secret[static NKPI_POLICY_SECRET_BYTES],
					     uint8_t *pub, size_t *pub_len);

/* Is `pub` exactly a key of that template, its point on the curve, its
 * TPM2B size covering exactly the rest? Errors: NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_policy_key_check(const uint8_t *pub, size_t pub_len);

/* The TPM Name of `pub` (checked as nkpi_policy_key_check does):
 * 0x000b || SHA-256(TPMT_PUBLIC), into name[34]. Errors: NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_policy_key_name(const uint8_t *pub, size_t pub_len,
					   uint8_t name[static NKPI_POLICY_NAME_BYTES]);

/* approvedPolicy: the policy digest of TPM2_PolicyPCR, from all-zero, for
 * the SHA-256 PCRs in `pcr_mask` (bit i: PCR i, 0-23; one selection of 3
 * bytes, as tpm2-tools and nkpi_tpm_quote() select) whose values hash to
 * `pcr_digest` (SHA-256 of the values, in PCR order), into out[32].
 * Errors: NKP_ERR_INVALID (mask 0 or a bit above 23). */
NKP_NODISCARD nkp_err
nkpi_policy_pcr_digest(uint32_t pcr_mask, const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
		       uint8_t out[static NKPI_POLICY_DIGEST_BYTES]);

/* aHash, the digest an approval signs: SHA-256(approvedPolicy || ref),
 * into out[32] (what tpm.c hands TPM2_VerifySignature). `ref` is 8 bytes.
 * Errors: NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_policy_approval_digest(
	uint32_t pcr_mask, const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
	const uint8_t *ref, size_t ref_len, uint8_t out[static NKPI_POLICY_DIGEST_BYTES]);

/* The authPolicy of an object bound to the key `pub` and `ref` (8 bytes):
 * TPM2_PolicyAuthorize's update from all-zero, into out[32]. Errors:
 * NKP_ERR_INVALID (a key not of the template, ref not 8 bytes). */
NKP_NODISCARD nkp_err nkpi_policy_authorize_digest(const uint8_t *pub, size_t pub_len,
						   const uint8_t *ref, size_t ref_len,
						   uint8_t out[static NKPI_POLICY_DIGEST_BYTES]);

/* An approval: the key's ECDSA signature (RFC 6979, deterministic: the same
 * inputs give the same bytes) over aHash for this PCR state and `ref`, as
 * a marshalled TPMT_SIGNATURE (ECDSA, SHA-256, r and s of 32 bytes) into
 * sig[NKPI_POLICY_SIG_MAX], *sig_len bytes (72). Every copy of the secret
 * it makes is wiped. Errors: NKP_ERR_INVALID (secret not in [1, n-1], bad
 * mask or ref), NKP_ERR_CRYPTO. */
NKP_NODISCARD nkp_err nkpi_policy_approve(const uint8_t secret[static NKPI_POLICY_SECRET_BYTES],
					  uint32_t pcr_mask,
					  const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
					  const uint8_t *ref, size_t ref_len, uint8_t *sig,
					  size_t *sig_len);

/* Is `sig` well-formed as nkpi_policy_approve() writes it: a TPMT_SIGNATURE
 * (ECDSA, SHA-256, r and s of 32 bytes), nothing after it? Errors:
 * NKP_ERR_PARSE. */
NKP_NODISCARD nkp_err nkpi_policy_sig_check(const uint8_t *sig, size_t sig_len);

/* Does `sig` approve this PCR state under `ref` by the key `pub`? The
 * software check of what TPM2_VerifySignature checks. Errors:
 * NKP_ERR_INVALID (a key not of the template, bad mask or ref),
 * NKP_ERR_PARSE (sig malformed), NKP_ERR_AUTH (it does not verify). */
NKP_NODISCARD nkp_err nkpi_policy_verify(const uint8_t *pub, size_t pub_len, uint32_t pcr_mask,
					 const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
					 const uint8_t *ref, size_t ref_len, const uint8_t *sig,
					 size_t sig_len);

#endif
