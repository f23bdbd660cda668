/* Private helpers shared by libnkp's modules. Not installed; hidden. */
#ifndef NKP_INTERNAL_H
#define NKP_INTERNAL_H

#include <pthread.h>
#include <time.h>

#include <protobuf-c/protobuf-c.h>

#include <nkp/channel.h>
#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>
#include <nkp/provider.h>

#include "pbstrict.h"

/* What one push may hold, checked by both sides: nkpd never builds a
 * bigger one and a host refuses it. The host's receive limit is derived
 * from these. */
#define NKPI_PUSH_MAX_PROVIDERS 1024u
#define NKPI_PUSH_MAX_VERSIONS 16384u /* all providers together */
/* Encoded sizes, upper bounds: a VersionKey (version, state, 32-byte key,
 * created; tag and length prefix), a ProviderKeys without its versions
 * (16-byte id, a name of 64, three flags; tag and 3-byte length) and the
 * Push, Message, sealed Envelope or session, Frame and nng REQ framing
 * around them (challenge, boot nonce, generation, keys, nonce, MAC). */
#define NKPI_PUSH_VERSION_BYTES (2u + 6u + 2u + 34u + 11u)
#define NKPI_PUSH_PROVIDER_BYTES (4u + 18u + 66u + 6u)
#define NKPI_PUSH_FRAMING_BYTES 1024u
#define NKPI_PUSH_MAX                                                                              \
	(NKPI_PUSH_MAX_PROVIDERS * NKPI_PUSH_PROVIDER_BYTES +                                      \
	 NKPI_PUSH_MAX_VERSIONS * NKPI_PUSH_VERSION_BYTES + NKPI_PUSH_FRAMING_BYTES)

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
/** nkp_key_derive() into a borrowed block (give it back with
 * nkpi_key_release()). */
nkp_err nkpi_key_derive_borrowed(const nkp_key *parent, uint64_t id, const char ctx[static 8],
				 nkp_key **out);

/** A per-thread locked buffer (sodium_malloc memory) of at least `len`
 * bytes for one packed or opened message, so hot paths need no
 * sodium_malloc per message. Valid until the next call on this thread;
 * not reentrant. The caller wipes the bytes it used (sodium_memzero)
 * before it returns, on every path. NULL when out of memory. */
uint8_t *nkpi_scratch(size_t len);

/** A slab of fixed-size locked slots (nkp/private/slab.c): for secrets made and
 * dropped by the thousand, where a sodium_malloc block each would cost
 * nine system calls and three mappings. Slots share their chunk's guard
 * pages. Define one per slot size with NKPI_SLAB_INIT(bytes); bytes is a
 * multiple of 16 and at least a pointer. */
#define NKPI_SLAB_SLOTS 64u
typedef struct nkpi_slab {
	pthread_mutex_t lock;
	size_t slot_bytes;
	uint8_t *free_list;
} nkpi_slab;
#define NKPI_SLAB_INIT(bytes)                                                                      \
	{                                                                                          \
		PTHREAD_MUTEX_INITIALIZER, (bytes), NULL                                           \
	}

/** A zeroed slot, or NULL when out of memory. */
void *nkpi_slab_get(nkpi_slab *s);
/** Wipes `slot` and makes it free again. Accepts NULL. */
void nkpi_slab_put(nkpi_slab *s, void *slot);

/** Two keys in one locked slab slot: [0] a copy of `key`, [1] its
 * crypto_kdf subkey (id, ctx). Free it with nkpi_key_pair_free(pair),
 * never with nkp_key_free(); never free pair[1]. NULL when out of memory. */
nkp_key *nkpi_key_pair_new(const nkp_key *key, uint64_t id, const char ctx[static 8]);
nkp_key *nkpi_key_pair_second(nkp_key *pair);
void nkpi_key_pair_free(nkp_key *pair);

/** Another reference to `p`: nkp_primary_free() then frees it only when
 * the last reference goes. Lets a host share unchanged versions between
 * the key set it holds and the one a push replaces it with. */
nkp_primary *nkpi_primary_ref(nkp_primary *p);

/** A protobuf-c allocator that wipes every block on free: messages that
 * carry key bytes are unpacked with it, so no key stays behind in freed
 * heap memory. Its blocks are ordinary (swappable) heap: hot paths that
 * decode keys use nkpi_arena_allocator() instead. */
extern ProtobufCAllocator nkpi_wiping_allocator;

/** A protobuf-c allocator for this thread, backed by its arena of locked
 * memory (sodium_malloc): for unpacking messages that carry keys on hot
 * paths, with no malloc per field and no key byte in swappable memory.
 * Made on first use; wiped and freed when the thread exits. Every
 * allocation is wiped: all those in a block at once, when the block's last
 * one is freed. NULL when out of memory (NKP_ERR_NOMEM to the caller).
 *
 * Rules, checked at run time (a violation aborts; it never corrupts):
 * - unpack and free_unpacked run on the same thread, with the pointer this
 *   function returned on that thread (it is the same on every call);
 * - every message unpacked with it is freed before its thread exits.
 * Several messages may be alive at once. Under ASan, bytes not handed out
 * are poisoned, so a use after free is still reported. */
NKP_NODISCARD ProtobufCAllocator *nkpi_arena_allocator(void);

/** This thread's arena, for tests: all zero if it has none yet. */
typedef struct nkpi_arena_stats {
	size_t live;   /* allocations not yet freed, all blocks */
	size_t used;   /* bytes handed out of the main block, headers included */
	size_t cap;    /* the main block's size */
	size_t blocks; /* overflow and single-allocation blocks alive */
} nkpi_arena_stats;
void nkpi_arena_stats_get(nkpi_arena_stats *out);
/** Test hook: copies the first `len` bytes of this thread's main block,
 * freed or not, into `dst`. False if there is no arena or len > cap. */
NKP_NODISCARD bool nkpi_arena_peek(uint8_t *dst, size_t len);

/** Called by a daemon once it starts to stop (SIGTERM): if the process
 * is still running `seconds` later, logs `msgid` and exits with status 1.
 * nng 1.5.2 (Debian 12) can hang for good closing a listening socket that
 * a peer dials at that moment. Keys and generations are on disk at every
 * change, so a stop cut short loses at most the usage counts nkp-hostd
 * had not saved yet. Call it once per process. */
void nkpi_stop_limit(const char *msgid, const char *prog, unsigned seconds);

/** The monotonic clock in ms: every deadline, timeout and rate. */
uint64_t nkpi_mono_ms(void);
/** Initialises `c` to time its waits on the monotonic clock, so that a
 * wall clock step neither cuts nor stretches them. pthread_cond_init's
 * result. */
int nkpi_mono_cond_init(pthread_cond_t *c);
/** The monotonic instant `at_ms` (nkpi_mono_ms's scale) as the deadline
 * of a wait on a condition made by nkpi_mono_cond_init. */
struct timespec nkpi_mono_timespec(uint64_t at_ms);
/** Seconds since the epoch. Every timestamp libnkp writes into a format
 * comes from here, so known-answer tests can fix the clock. */
uint64_t nkpi_now(void);
/** Test hook: a fixed clock (0 restores the real one). */
void nkpi_set_clock(uint64_t fixed_unix);
/** Test hook: shifts the wall clock that nkpi_now() and nkpi_wall_ns()
 * read by `seconds` (a clock set wrong). */
void nkpi_set_clock_skew(int64_t seconds);
/** The wall clock in ns since the epoch, shifted as above. */
uint64_t nkpi_wall_ns(void);

/** Test hooks of nkp_file_write_atomic() with keep_prev (nkp/lib/file.c). */
typedef enum {
	NKPI_FILE_NORMAL = 0,
	/** As on a filesystem without RENAME_EXCHANGE: the link-based way. */
	NKPI_FILE_NO_EXCHANGE,
	/** Return NKP_ERR_IO right after the exchange, touching nothing
	 * more: the files as a crash there leaves them. */
	NKPI_FILE_STOP_AFTER_EXCHANGE,
	/** The rename of the old contents to "<path>.prev" fails (EIO). */
	NKPI_FILE_FAIL_PREV_RENAME,
} nkpi_file_hook;
void nkpi_file_set_hook(nkpi_file_hook h);
/** Test hook: the next `n` writes of nkp_file_write_atomic(),
 * nkp_file_write_new() and nkpi_file_append() fail with `err` as a full
 * disk would: whole-file writes after the temp file is written, appends
 * after half their bytes are written (and cut off again, as any failed
 * append is). NKP_OK counts as NKP_ERR_IO. 0 disables. */
void nkpi_file_fail_next_writes(unsigned n, nkp_err err);

/** Appends `len` bytes durably to the append-only file `path` (created
 * mode 0600 if absent; a symlink is refused), whose first `at` bytes are
 * its good contents: with *cut, bytes past `at` (an earlier torn append)
 * are cut off first and *cut is cleared; then write, fdatasync and, with
 * `new_entry` (the append that created the file), an fsync of its
 * directory. A failure leaves the file at `at` bytes, or sets *cut when
 * it could not be cut back. A file shorter than `at` (removed or cut by
 * someone else) sets *shorter and gets nothing: NKP_ERR_IO. No lock: one
 * writer per file, which the caller serialises. Errors: NKP_ERR_IO,
 * NKP_ERR_NOSPC, NKP_ERR_PERM, NKP_ERR_NOT_FOUND (no such directory),
 * NKP_ERR_INVALID. */
NKP_NODISCARD nkp_err nkpi_file_append(const char *path, uint64_t at, bool *cut,
				       const uint8_t *data, size_t len, bool new_entry,
				       bool *shorter);

/** Stores a u32 little-endian. */
static inline void nkpi_store32_le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Generations (docs/PROTOCOL.md "Generations"): (epoch, counter) pairs.
 * A counter at or above NKPI_GENERATION_MAX is refused on both sides, so
 * no arithmetic on one can come near wrapping. */
#define NKPI_GENERATION_MAX (UINT64_C(1) << 62)
#define NKPI_DIGEST_BYTES 32u
/** The digest of a host's desired state: BLAKE2b-256 over the label
 * "nkp-desired-state-v1", a zero byte and `len` bytes of a serialized
 * nkp.wire.DesiredState, exactly as pushed. */
void nkpi_desired_digest(const uint8_t *bytes, size_t len, uint8_t out[static NKPI_DIGEST_BYTES]);
/** a + b, or UINT64_MAX if that overflows. */
static inline uint64_t nkpi_sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/** True if a parsed message carries fields this version does not know.
 * Formats refuse them: an unknown field could hide a tampered one. */
static inline bool nkpi_has_unknown(const ProtobufCMessage *m)
{
	return m->n_unknown_fields != 0;
}

/* The standard base64 alphabet, without padding: libsodium 1.0.18's
 * decoder takes bytes 0x80-0xff as '/', so callers check the alphabet. */
#define NKP_BASE64_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

#endif
