/* ECDSA P-256 over a SHA-256 digest, on the TPM's own structures: a
 * quote's signature by the AK (quote.c) and an approval by nkpd's policy
 * key (policy.c). mbedTLS's libmbedcrypto, as libsodium has no NIST
 * curves. */
#ifndef NKP_PRIVATE_ECDSA_H
#define NKP_PRIVATE_ECDSA_H

#include <stdint.h>

#include <tss2/tss2_tpm2_types.h>

#include <nkp/err.h>

/* Does `sig` (r and s of 1-32 bytes) verify over `hash` under the point
 * `q` (coordinates of at most 32 bytes, a point of the curve)? NKP_OK, or
 * NKP_ERR_AUTH for anything else. */
NKP_NODISCARD nkp_err nkpi_ecdsa_p256_verify(const TPMS_ECC_POINT *q,
					     const TPMS_SIGNATURE_ECDSA *sig,
					     const uint8_t hash[32]);

#endif
