/* Desired-state snapshots: what the core hands the sync engine after each
 * commit (see core/core.h, struct nkpd_desired). */
#include <stdlib.h>

#include <sodium.h>

#include "core/core.h"
#include "internal.h"

_Static_assert(NKPD_DIGEST_BYTES == NKPI_DIGEST_BYTES, "one digest size");

void nkpd_desired_release(nkpd_desired *d)
{
	if (d == NULL || atomic_fetch_sub(&d->refs, 1) != 1) {
		return;
	}
	for (size_t i = 0; i < d->n_providers; i++) {
		free(d->providers[i].versions);
	}
	free(d->providers);
	sodium_free(d->keys);
	if (d->packed != NULL) {
		sodium_memzero(d->packed, d->packed_len);
		sodium_free(d->packed);
	}
	free(d);
}
