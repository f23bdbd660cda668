/* The keyset codec: the providers, versions and keys a host holds, in the
 * one protobuf shape they travel in everywhere (proto/wire.proto
 * ProviderKeys): nkpd's push (DesiredState.providers), and a host's
 * keys.nkp snapshot and keys.nkp.log records (proto/hoststate.proto
 * HostKeys.providers). Part of the in-tree tier.
 *
 * Both directions speak in the same neutral views (nkpi_keyset_provider,
 * nkpi_keyset_version), which point at the holder's own memory: encoding
 * references the caller's key bytes (sodium_malloc'd), decoding hands out
 * pointers into the unpacked message. No key byte is copied by this
 * module. No function here locks anything: a codec object belongs to one
 * thread at a time. */
#ifndef NKP_KEYSET_H
#define NKP_KEYSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include <nkp/common.h>
#include <nkp/err.h>

#include "wire.pb-c.h"

/* What a keyset may hold, checked by nkpi_keyset_check(), besides
 * NKPI_PUSH_MAX_PROVIDERS and NKPI_PUSH_MAX_VERSIONS (all providers
 * together; nkp/private/internal.h). */
#define NKPI_KEYSET_MAX_VERSIONS 1024u /* per provider */
#define NKPI_KEYSET_MAX_NAME 64u       /* bytes of a provider name */

/** One version of a provider's primary key. `key` points at
 * NKP_KEY_BYTES bytes owned by whoever made the view: the caller's locked
 * memory when encoding, the unpacked message when decoding. */
typedef struct nkpi_keyset_version {
	uint32_t version;
	uint32_t state; /* nkp_version_state */
	uint64_t created_unix;
	const uint8_t *key;
} nkpi_keyset_version;

/** One provider. `id` (NKP_ID_BYTES) and `name` (NUL-terminated) belong
 * to whoever made the view. `n_versions` is set by the decoder; the
 * encoder ignores it and counts the versions it is given. */
typedef struct nkpi_keyset_provider {
	const uint8_t *id;
	const char *name;
	bool is_default;
	bool backed_up;
	bool tpm_only;
	size_t n_versions;
} nkpi_keyset_provider;

/* ---- encoding ---- */

/** The protobuf-c form of a keyset being built. After the providers and
 * their versions are added, `providers` and `n_providers` go into a
 * DesiredState or a HostKeys as they are, to be packed while the encoder
 * and every memory its views pointed at are alive. The other fields are
 * the encoder's own. */
typedef struct nkpi_keyset_enc {
	Nkp__Wire__ProviderKeys **providers;
	size_t n_providers;

	void *block; /* the one allocation holding every array below */
	Nkp__Wire__ProviderKeys *pk;
	Nkp__Wire__VersionKey *vk;
	Nkp__Wire__VersionKey **vkp;
	size_t max_providers;
	size_t max_versions;
	size_t n_versions;
} nkpi_keyset_enc;

/** Makes `e` ready for at most `max_providers` providers and
 * `max_versions` versions in all, with one allocation (ordinary heap: it
 * holds pointers, never key bytes). Free it with nkpi_keyset_enc_fini().
 * Errors: NKP_ERR_NOMEM (then `e` needs no fini, though fini is harmless). */
NKP_NODISCARD nkp_err nkpi_keyset_enc_init(nkpi_keyset_enc *e, size_t max_providers,
					   size_t max_versions);

/** Adds a provider; the versions added next are its versions. `p`'s id
 * and name are referenced, not copied. Adding more providers than
 * reserved is a misuse and aborts. */
void nkpi_keyset_enc_provider(nkpi_keyset_enc *e, const nkpi_keyset_provider *p);

/** Adds a version to the last provider added. `v->key` is referenced, not
 * copied: it must stay valid until the message is packed. A version
 * without a provider, or more than reserved, is a misuse and aborts. */
void nkpi_keyset_enc_version(nkpi_keyset_enc *e, const nkpi_keyset_version *v);

/** Frees the encoder's arrays (no key byte lives there). Accepts a
 * zeroed or failed-init `e`; leaves it zeroed. */
void nkpi_keyset_enc_fini(nkpi_keyset_enc *e);

/* ---- decoding ---- */

/** A checked keyset: read-only, borrowed from the unpacked message it was
 * checked in (valid until that message is freed). */
typedef struct nkpi_keyset {
	size_t n_providers;
	Nkp__Wire__ProviderKeys *const *providers;
} nkpi_keyset;

/** Checks the `n` providers `p` of a push or of a host's key file: at
 * most NKPI_PUSH_MAX_PROVIDERS providers and NKPI_PUSH_MAX_VERSIONS
 * versions in all; each provider with no unknown field, a 16-byte id
 * unique in the set, a name of 1 to NKPI_KEYSET_MAX_NAME bytes without
 * control characters, '"' or '\\' and unique in the set, 1 to
 * NKPI_KEYSET_MAX_VERSIONS versions; each version with no unknown field,
 * a non-zero number unique in its provider, a state that is staged,
 * active or decrypt-only, a 32-byte key; at most one active version per
 * provider and one default provider. On success *out views `p`.
 * Errors: NKP_ERR_TOO_LARGE (too many providers or versions in all),
 * NKP_ERR_PARSE (anything else). Never logs: the caller says what was
 * refused, and no key byte reaches a message. */
NKP_NODISCARD nkp_err nkpi_keyset_check(size_t n, Nkp__Wire__ProviderKeys *const *p,
					nkpi_keyset *out);

/** Provider `i` (< ks->n_providers) of a checked keyset. */
void nkpi_keyset_provider_at(const nkpi_keyset *ks, size_t i, nkpi_keyset_provider *out);

/** Version `j` of provider `i` of a checked keyset. */
void nkpi_keyset_version_at(const nkpi_keyset *ks, size_t i, size_t j, nkpi_keyset_version *out);

/** Unpacks a pushed DesiredState (`len` bytes, exactly as received) with
 * `alloc` (for keys: nkpi_arena_allocator() or nkpi_wiping_allocator),
 * after a strict look at the bytes (nkpi_pb_strict) so that no unknown or
 * malformed field makes protobuf-c allocate. Its providers are not
 * checked yet: nkpi_keyset_check() does that. NULL if the bytes are not a
 * DesiredState of known fields (or on lack of memory); otherwise free it
 * with nkp__wire__desired_state__free_unpacked(ds, alloc). */
NKP_NODISCARD Nkp__Wire__DesiredState *nkpi_keyset_desired_unpack(const uint8_t *bytes, size_t len,
								  ProtobufCAllocator *alloc);

#endif
