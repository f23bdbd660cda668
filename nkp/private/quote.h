/* Checking a TPM 2.0 quote (the trusted provider's attestation): the
 * attestation key a host pinned at enrolment signed, over the nonce nkpd
 * sent, a digest of the PCRs nkpd asked for. Only parsing and arithmetic:
 * no TPM is needed to check one. SHA-256 from libsodium; ECDSA P-256 from
 * mbedTLS's libmbedcrypto (the one nng links), as libsodium has no NIST
 * curves. */
#ifndef NKP_PRIVATE_QUOTE_H
#define NKP_PRIVATE_QUOTE_H

#include <stddef.h>
#include <stdint.h>

#include <nkp/err.h>

#define NKPI_QUOTE_DIGEST_BYTES 32u
#define NKPI_QUOTE_NONCE_MIN 16u /* a fresh challenge: 16-32 random bytes */

typedef struct nkpi_quote_expect {
	const uint8_t *ak_public; /* the pinned AK: TPM2B_PUBLIC, marshalled */
	size_t ak_public_len;
	const uint8_t *nonce; /* what nkpd sent: 16-32 bytes, used once */
	size_t nonce_len;
	uint32_t pcr_mask; /* the SHA-256 PCRs asked for (bit i: PCR i, 0-23; not 0) */
} nkpi_quote_expect;

typedef struct nkpi_quote_result {
	uint8_t pcr_digest[NKPI_QUOTE_DIGEST_BYTES]; /* SHA-256 of the PCR values, in order */
	uint32_t reset_count, restart_count;	     /* the TPM's boot counters */
	uint64_t clock;				     /* ms the TPM has been powered */
} nkpi_quote_result;

/* Checks that `attest` (TPM2B_ATTEST) and `sig` (TPMT_SIGNATURE), both
 * marshalled as the TPM returned them, are a quote by the pinned AK over
 * the nonce, of exactly the PCRs asked for; fills *out only then.
 *
 * What it proves rests on the pin: the AK's attributes are the host's own
 * claim, so a quote means "made by a TPM" only for an AK proven to live
 * in one (its EK certificate and credential activation, at enrolment);
 * and the nonce must be fresh and bound to the session it was sent in.
 * Errors: NKP_ERR_INVALID (bad arguments, or the pinned AK is not an
 * attestation key of nkp's template), NKP_ERR_PARSE (malformed, or bytes
 * after a structure), NKP_ERR_AUTH (the signature fails, it is not marked
 * TPM-generated, or another signer), NKP_ERR_REPLAY (another nonce),
 * NKP_ERR_REFUSED (other PCRs). */
NKP_NODISCARD nkp_err nkpi_quote_verify(const nkpi_quote_expect *e, const uint8_t *attest,
					size_t attest_len, const uint8_t *sig, size_t sig_len,
					nkpi_quote_result *out);

/* Credential activation (TPM 2.0 Part 1, "Credential Protection"): proof
 * that the pinned AK sits in the same TPM as an endorsement key (EK).
 * nkpd does TPM2_MakeCredential in software: a random seed encrypted to
 * the EK with RSA-OAEP (SHA-256, label "IDENTITY"), the credential
 * encrypted under KDFa(seed, "STORAGE", AK name) with AES-128-CFB and
 * bound to the AK's name by an HMAC under KDFa(seed, "INTEGRITY"); only
 * that TPM's ActivateCredential, given that AK, recovers it.
 *
 * `ek` is the EK's TPM2B_PUBLIC (TCG default template L-1: RSA 2048,
 * SHA-256, AES-128-CFB, restricted decryption key); `cred` 1-64 bytes;
 * blob[NKPI_QUOTE_BLOB_MAX] gets the TPM2B_ID_OBJECT and
 * secret[NKPI_QUOTE_SECRET_MAX] the TPM2B_ENCRYPTED_SECRET, marshalled.
 * Errors: NKP_ERR_INVALID (an EK or AK not of those templates, bad
 * sizes), NKP_ERR_CRYPTO. */
#define NKPI_QUOTE_BLOB_MAX 256u
#define NKPI_QUOTE_SECRET_MAX 512u
NKP_NODISCARD nkp_err nkpi_quote_make_credential(const uint8_t *ek, size_t ek_len,
						 const uint8_t *ak_public, size_t ak_public_len,
						 const uint8_t *cred, size_t cred_len,
						 uint8_t *blob, size_t *blob_len, uint8_t *secret,
						 size_t *secret_len);
/* Is `cert` (DER) a certificate issued under `ca_pem` (PEM, one or more
 * certificates: each is a trust anchor) for exactly this EK (`ek`,
 * TPM2B_PUBLIC: the same RSA modulus and exponent)? Errors:
 * NKP_ERR_INVALID (unparsable EK, certificate or CA), NKP_ERR_AUTH (it
 * does not verify: another issuer, expired, altered), NKP_ERR_REFUSED
 * (verifies, but for another key, or is no EK certificate: a CA's, not
 * for key encipherment, or for purposes other than the TCG EK's). */
NKP_NODISCARD nkp_err nkpi_quote_ek_cert_check(const uint8_t *ek, size_t ek_len,
					       const uint8_t *cert, size_t cert_len,
					       const uint8_t *ca_pem, size_t ca_len);
/* Is `ca_pem` one or more PEM certificates? Errors: NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_quote_ca_check(const uint8_t *ca_pem, size_t ca_len);

/* Is `ak` (TPM2B_PUBLIC, marshalled) an attestation key of nkp's template,
 * fit to be pinned? Errors: NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_quote_ak_check(const uint8_t *ak, size_t ak_len);

#endif
