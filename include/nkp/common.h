/* Shared definitions for the nkp public API: export and attribute macros,
 * sizes. Included by every other <nkp/...> header. */
#ifndef NKP_COMMON_H
#define NKP_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(NKP_BUILDING) && defined(__GNUC__)
#define NKP_EXPORT __attribute__((visibility("default")))
#else
#define NKP_EXPORT
#endif

#if defined(__GNUC__)
#define NKP_NODISCARD __attribute__((warn_unused_result))
#define NKP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define NKP_NODISCARD
#define NKP_PRINTF(f, a)
#endif

/** Bytes of every symmetric key nkp handles: primary keys, KEKs, DEKs. */
#define NKP_KEY_BYTES 32u
/** Bytes of a provider id and of a keysafe key id. */
#define NKP_ID_BYTES 16u
/** XChaCha20-Poly1305-IETF nonce and tag sizes. */
#define NKP_NONCE_BYTES 24u
#define NKP_TAG_BYTES 16u

#endif
