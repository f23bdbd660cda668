/* Private helpers shared by libnkp's modules. Not installed; hidden. */
#ifndef NKP_INTERNAL_H
#define NKP_INTERNAL_H

#include <protobuf-c/protobuf-c.h>

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

/** Direct read access to key bytes, for the AEAD and KDF calls only. */
const uint8_t *nkpi_key_bytes(const nkp_key *k);

/** Write access to key bytes, for keys being filled in place. */
uint8_t *nkpi_key_bytes_mut(nkp_key *k);

/** A locked, wiped key block for one call's temporaries, from a per-thread
 * cache (no sodium_malloc on hot paths). Its bytes are undefined until
 * written. Give it back with nkpi_key_release(), which wipes it; never
 * nkp_key_free() it. Errors: NKP_ERR_NOMEM. */
nkp_err nkpi_key_borrow(nkp_key **out);
void nkpi_key_release(nkp_key *k);

/** A protobuf-c allocator that wipes every block on free: messages that
 * carry key bytes are unpacked with it, so no key stays behind in freed
 * heap memory. */
extern ProtobufCAllocator nkpi_wiping_allocator;

/** Seconds since the epoch. Every timestamp libnkp writes into a format
 * comes from here, so known-answer tests can fix the clock. */
uint64_t nkpi_now(void);
/** Test hook: a fixed clock (0 restores the real one). */
void nkpi_set_clock(uint64_t fixed_unix);

/** Stores a u32 little-endian. */
static inline void nkpi_store32_le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/** True if a parsed message carries fields this version does not know.
 * Formats refuse them: an unknown field could hide a tampered one. */
static inline bool nkpi_has_unknown(const ProtobufCMessage *m)
{
	return m->n_unknown_fields != 0;
}

#endif
