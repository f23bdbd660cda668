/* Enrolment tokens (token.h). */
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "token.h"

nkp_err nkpi_token_format(const uint8_t pub[static NKP_PUBKEY_BYTES], const uint8_t *ak,
			  size_t ak_len, char *out)
{
	if (ak_len > NKPI_TOKEN_AK_MAX || (ak == NULL && ak_len != 0)) {
		return NKP_ERR_INVALID;
	}
	nkp_pubkey_to_base64(pub, out);
	if (ak_len != 0) {
		out[44] = '.';
		sodium_bin2base64(out + 45, NKPI_TOKEN_MAX - 45, ak, ak_len,
				  sodium_base64_VARIANT_ORIGINAL);
	}
	return NKP_OK;
}

nkp_err nkpi_token_parse(const char *token, uint8_t pub[static NKP_PUBKEY_BYTES],
			 uint8_t ak[static NKPI_TOKEN_AK_MAX], size_t *ak_len)
{
	char key[45];
	const char *rest, *end = NULL;
	size_t len, n = 0;

	*ak_len = 0;
	if (token == NULL || strnlen(token, 45) < 44) {
		return NKP_ERR_PARSE;
	}
	memcpy(key, token, 44);
	key[44] = '\0';
	if (nkp_pubkey_from_base64(key, pub) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	if (token[44] == '\0') {
		return NKP_OK;
	}
	rest = token + 45;
	len = strnlen(rest, NKPI_TOKEN_MAX);
	/* Base64 of 1..NKPI_TOKEN_AK_MAX bytes; libsodium refuses non-zero
	 * trailing bits, so one spelling per key. */
	if (token[44] != '.' || len == 0 || len % 4 != 0 ||
	    len > 4 * ((NKPI_TOKEN_AK_MAX + 2) / 3) ||
	    strspn(rest, NKP_BASE64_ALPHABET "=") != len ||
	    sodium_base642bin(ak, NKPI_TOKEN_AK_MAX, rest, len, NULL, &n, &end,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != rest + len || n == 0) {
		sodium_memzero(pub, NKP_PUBKEY_BYTES);
		*ak_len = 0;
		return NKP_ERR_PARSE;
	}
	*ak_len = n;
	return NKP_OK;
}
