/* A host's enrolment token, the last line `nkp-hostd init` prints and
 * `nkpctl host add --public-key` takes: the host's X25519 public key in
 * base64 (44 characters), and for a host initialised with a TPM a '.'
 * and its attestation key's public area (TPM2B_PUBLIC, marshalled) in
 * base64, which nkpd pins (docs/PROTOCOL.md "Attestation"). */
#ifndef NKP_PRIVATE_TOKEN_H
#define NKP_PRIVATE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <nkp/channel.h>
#include <nkp/err.h>

#define NKPI_TOKEN_AK_MAX 256u /* as NKPI_TPM_PUBLIC_MAX */
#define NKPI_TOKEN_MAX (45u + 4u * ((NKPI_TOKEN_AK_MAX + 2u) / 3u) + 1u)

/* Writes the token into out[NKPI_TOKEN_MAX]; `ak` may be NULL (ak_len 0).
 * Errors: NKP_ERR_INVALID (ak_len over NKPI_TOKEN_AK_MAX). */
NKP_NODISCARD nkp_err nkpi_token_format(const uint8_t pub[static NKP_PUBKEY_BYTES],
					const uint8_t *ak, size_t ak_len, char *out);
/* Parses a token: *ak_len 0 when it carries no attestation key. One
 * spelling per token (padded standard base64, nothing ignored).
 * Errors: NKP_ERR_PARSE. */
NKP_NODISCARD nkp_err nkpi_token_parse(const char *token, uint8_t pub[static NKP_PUBKEY_BYTES],
				       uint8_t ak[static NKPI_TOKEN_AK_MAX], size_t *ak_len);

#endif
