/* nkpd's key source port: where the key of a new provider version comes
 * from, and how a version's key is fetched again.
 *
 * The core asks its key source for every new version (a provider's first,
 * each rotation's staged one) and never makes key material itself. The
 * key a source returns is held in the model (sodium_malloc memory, as every
 * nkp_key) for the pushes; a source that keeps its keys elsewhere (a KMIP
 * server) returns the material it fetched, identified by the provider id
 * and version, which are its reference.
 *
 * A source that keeps its own durable copy of every key says so with
 * needs_backup() false: its providers count as backed up from the start,
 * and no "not backed up" event is raised for them.
 *
 * Calls are made with nkpd_svc.lock held: a source must answer quickly (a
 * remote source caches, or fails with NKP_ERR_TIMEOUT). */
#ifndef NKPD_KEYSOURCE_H
#define NKPD_KEYSOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <nkp/nkp.h>

typedef struct nkpd_keysource {
	void *ctx;
	/** The key of version `version` of provider `id`, new. On success
	 * `*out` is the caller's (nkp_key_free). Errors: NKP_ERR_NOMEM,
	 * NKP_ERR_CRYPTO, or the source's own (NKP_ERR_NET, NKP_ERR_TIMEOUT). */
	nkp_err (*create_version)(void *ctx, const uint8_t id[static NKP_ID_BYTES],
				  uint32_t version, nkp_key **out);
	/** The key of an existing version, as create_version gave it.
	 * NKP_ERR_KEY_MISSING if the source holds no such version. */
	nkp_err (*fetch)(void *ctx, const uint8_t id[static NKP_ID_BYTES], uint32_t version,
			 nkp_key **out);
	/** True if the only durable copy of a key is nkpd's own state, so the
	 * operator must back providers up. */
	bool (*needs_backup)(void *ctx);
} nkpd_keysource;

/** The native source: keys made here with libsodium's CSPRNG, kept only in
 * the service state (fetch answers NKP_ERR_KEY_MISSING: the model holds
 * them); needs_backup is true. No context, nothing to free. */
nkpd_keysource nkpd_keysource_native(void);

#endif
