/* Keys in locked memory.
 *
 * An nkp_key is 32 secret bytes in sodium_malloc memory (guard pages,
 * mlock'ed, wiped with sodium_memzero and unmapped on free). The type is
 * opaque so callers cannot copy key bytes by accident. */
#ifndef NKP_KEY_H
#define NKP_KEY_H

#include <nkp/common.h>
#include <nkp/err.h>

typedef struct nkp_key nkp_key;

/** Makes a new random key. *out is written only on success.
 * Errors: NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_key_generate(nkp_key **out);

/** Makes a key holding a copy of `bytes`. The caller still owns and must
 * wipe `bytes`. Errors: NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_key_from_bytes(const uint8_t bytes[static NKP_KEY_BYTES],
						    nkp_key **out);

/** Makes an independent copy of `key`. Errors: NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_key_dup(const nkp_key *key, nkp_key **out);

/** Derives subkey `id` of `parent` for the purpose named by the 8-character
 * context `ctx` (libsodium crypto_kdf, keyed BLAKE2b). Different contexts
 * give independent keys. Errors: NKP_ERR_NOMEM, NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_key_derive(const nkp_key *parent, uint64_t id,
						const char ctx[static 8], nkp_key **out);

/** Constant-time comparison. */
NKP_EXPORT NKP_NODISCARD bool nkp_key_equal(const nkp_key *a, const nkp_key *b);

/** Copies the key bytes into `out`, which the caller must wipe. This is the
 * one door through which key bytes leave an nkp_key: for the wire, for
 * sealed files and for the hypervisor. */
NKP_EXPORT void nkp_key_export(const nkp_key *key, uint8_t out[static NKP_KEY_BYTES]);

/** Wipes and frees `key`. Accepts NULL. */
NKP_EXPORT void nkp_key_free(nkp_key *key);

/** Wipes `len` bytes at `p` in a way the compiler cannot drop. */
NKP_EXPORT void nkp_wipe(void *p, size_t len);

#endif
