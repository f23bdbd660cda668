/* The digest a host acknowledges a desired state by (nkp/private/internal.h). */
#include <sodium.h>

#include "internal.h"

#define DESIRED_LABEL "nkp-desired-state-v1"

void nkpi_desired_digest(const uint8_t *bytes, size_t len, uint8_t out[static NKPI_DIGEST_BYTES])
{
	crypto_generichash_state st;

	/* The label and its terminating zero byte separate this digest from
	 * any other BLAKE2b use of the same bytes. */
	crypto_generichash_init(&st, NULL, 0, NKPI_DIGEST_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)DESIRED_LABEL, sizeof(DESIRED_LABEL));
	crypto_generichash_update(&st, bytes, len);
	crypto_generichash_final(&st, out, NKPI_DIGEST_BYTES);
	sodium_memzero(&st, sizeof(st));
}
