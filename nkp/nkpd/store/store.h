/* nkpd's store port: where the persisted model (providers with their
 * versions and keys, enrolled hosts, epoch, generation, the handshake
 * timestamp floor) is kept.
 *
 * The core reads and writes the model only through an nkpd_store. Every
 * write carries the revision the core last loaded or wrote; a store whose
 * copy has moved on since (another writer) refuses it with NKP_ERR_STATE
 * and the core rolls its change back. With one writer, as with the sealed
 * file, that cannot happen, but the contract holds for every adapter.
 *
 * Room is left for replicated stores: a `watch` (the store calls back when
 * another writer committed, with the new revision; the core reloads) and a
 * leadership hook (only the leader commits) will join this struct; until
 * then a store has exactly one writer.
 *
 * Every function is called with nkpd_svc.lock held (or before any thread
 * starts); a store must not call back into the core. */
#ifndef NKPD_STORE_H
#define NKPD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <nkp/nkp.h>

struct nkpd_svc;

typedef struct nkpd_store {
	void *ctx;
	/** Fills the (empty) model of `s` from the store and sets `*revision`
	 * to the revision loaded. On error the model is left empty. Errors:
	 * NKP_ERR_NOT_FOUND (nothing stored yet), NKP_ERR_AUTH (damaged or
	 * tampered), NKP_ERR_PARSE, NKP_ERR_FORMAT_VERSION, the adapter's I/O
	 * errors. */
	nkp_err (*load)(void *ctx, struct nkpd_svc *s, uint64_t *revision);
	/** Writes the model of `s` if the store is still at revision
	 * `expected`; on success `*revision` is the new revision. Errors:
	 * NKP_ERR_STATE (the store moved on: a conflict), NKP_ERR_NOMEM, the
	 * adapter's I/O errors (NKP_ERR_IO, NKP_ERR_NOSPC, ...). */
	nkp_err (*commit)(void *ctx, const struct nkpd_svc *s, uint64_t expected,
			  uint64_t *revision);
	/** After load failed with NKP_ERR_FORMAT_VERSION: why, in one clause
	 * for people (the versions found and read), into buf. */
	void (*explain)(void *ctx, char *buf, size_t size);
	/** Frees the adapter; accepts a NULL ctx. */
	void (*close)(void *ctx);
} nkpd_store;

/** The sealed file: `path` (DIR/state.nkp, with its previous copy
 * `path`.prev) holds a proto/svcstate.proto ServiceState sealed with
 * `seal_key` (borrowed: it must outlive the store). The revision lives in
 * memory only: 0 before the first load or write. Errors: NKP_ERR_NOMEM,
 * NKP_ERR_INVALID (path too long). */
NKP_NODISCARD nkp_err nkpd_store_file_new(const char *path, const nkp_key *seal_key,
					  nkpd_store *out);

/* store/identity.c: the service identity, DIR/identity.nkp, sealed under
 * `seal` (made if `create`). With `import` (a directory whose sealing key
 * is a plain seal.key, as older ones were), an older plain identity.key is
 * sealed into it, wiped and removed. A plain identity.key is refused
 * (NKP_ERR_STATE) beside identity.nkp, or without `import`. Says why on
 * stderr when it fails. Errors: those, as nkp_sealfile_read(),
 * NKP_ERR_PARSE, NKP_ERR_FORMAT_VERSION. */
nkp_err nkpd_identity_load(const char *dir, const nkp_key *seal, bool create, bool import,
			   nkp_identity **out);

#endif
