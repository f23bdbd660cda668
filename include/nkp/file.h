/* Files: atomic writes, lock files, and sealed files for state
 * (proto/sealed.proto).
 *
 * Atomic write: a temp file in the same directory, write, fsync, rename over
 * the target, fsync of the directory; the previous copy is kept as
 * "<path>.prev" if asked. A failed write leaves the old file intact. */
#ifndef NKP_FILE_H
#define NKP_FILE_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/key.h>

#define NKP_SEALED_FORMAT_VERSION 1u
#define NKP_SEALED_MAX_FILE (64u << 20)

/** Writes `len` bytes atomically to `path` with `mode` (through a temp
 * file "<path>.tmp.<hex>"). With keep_prev, the contents `path` held
 * become "<path>.prev" (an existing "<path>.prev" must be a regular file).
 * `path`, if it exists, must be a regular file: a symlink, a directory or
 * a device is refused. A failed write leaves `path` and "<path>.prev" as
 * they were and no temp file; `path` is never missing or torn, even after
 * a crash (which may leave temp files: see nkp_file_remove_stale_temps()).
 * `fsync_data` false is the bulk mode: neither the file nor its directory
 * is fsynced (the write is still atomic: the old or the new contents,
 * never a mix, as far as the filesystem orders rename after the data);
 * the caller makes a batch durable with one nkp_file_sync_dir() at the end.
 * Errors: NKP_ERR_IO, NKP_ERR_NOSPC, NKP_ERR_PERM, NKP_ERR_NOT_FOUND (no
 * such directory), NKP_ERR_INVALID (bad arguments, a non-regular target or
 * .prev, a path too long for its temp names). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_file_write_atomic(const char *path, const uint8_t *data,
						       size_t len, unsigned mode, bool keep_prev,
						       bool fsync_data);

/** Writes `len` bytes to a new file `path` with `mode`, atomically and
 * only if `path` does not exist: the file appears whole or not at all,
 * and of several callers creating one path at once exactly one succeeds.
 * Through a temp file "<path>.tmp.<hex>" (write, fsync), put in place with
 * renameat2(RENAME_NOREPLACE) (or link(2) where the filesystem lacks it),
 * then an fsync of the directory. Errors: NKP_ERR_EXISTS (`path` exists,
 * whatever it is, a dangling symlink included), NKP_ERR_IO, NKP_ERR_NOSPC,
 * NKP_ERR_PERM, NKP_ERR_NOT_FOUND (no such directory), NKP_ERR_INVALID. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_file_write_new(const char *path, const uint8_t *data,
						    size_t len, unsigned mode);

/** An exclusive advisory lock (flock(2)) held on a lock file. Lock files
 * hold no secret: only the decimal pid of their holder, and nothing while
 * free. They are never removed (a waiter could otherwise lock a file that
 * is already gone). */
typedef struct nkp_file_lock nkp_file_lock;

/** Takes the exclusive lock on `lock_path`, creating the file (mode 0600)
 * if it does not exist, waiting up to `wait_ms` milliseconds while another
 * holds it (0: one try), then records the caller's pid in it. A lock
 * belongs to the open file: a second nkp_file_lock() of the same file is
 * refused in the same process too; it is released by nkp_file_unlock() or
 * when the process ends, however it ends. An existing lock file must be a
 * regular file with one link, owned by the effective user (it is made
 * 0600 if looser); a symlink is refused. Errors: NKP_ERR_STATE (held by
 * another after `wait_ms`: nkp_file_lock_holder() says by whom),
 * NKP_ERR_PERM (unsafe lock file, or no permission), NKP_ERR_INVALID (not
 * a regular file, bad arguments), NKP_ERR_NOT_FOUND (no such directory),
 * NKP_ERR_IO, NKP_ERR_NOSPC, NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_file_lock_take(const char *lock_path, unsigned wait_ms,
						    nkp_file_lock **out);

/** Clears the recorded pid and releases the lock. Accepts NULL. */
NKP_EXPORT void nkp_file_unlock(nkp_file_lock *lock);

/** The pid recorded in `lock_path` by the process holding it, or 0 when
 * none is recorded (free, being taken or released, unreadable): for
 * messages after NKP_ERR_STATE. */
NKP_EXPORT long nkp_file_lock_holder(const char *lock_path);

/** Makes every write so far on the filesystem holding the directory `dir`
 * durable (syncfs, then fsync of `dir`): the one sync after a batch of
 * nkp_file_write_atomic(..., fsync_data = false). Errors: NKP_ERR_NOT_FOUND,
 * NKP_ERR_INVALID (not a directory), NKP_ERR_PERM, NKP_ERR_IO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_file_sync_dir(const char *dir);

/** Removes the temp files a crash left beside `path` in the middle of
 * nkp_file_write_atomic() ("<path>.tmp.<hex>", "<path>.prev.tmp.<hex>";
 * one may hold the contents `path` had before, when the crash came after
 * the new contents were in place but before the old became "<path>.prev").
 * Call it only while no write to `path` can be under way (e.g. after
 * loading `path` at start-up). Best effort: a failure leaves them. */
NKP_EXPORT void nkp_file_remove_stale_temps(const char *path);

/** Reads a whole file of at most `max` bytes into a malloc'd buffer.
 * Errors: NKP_ERR_NOT_FOUND, NKP_ERR_TOO_LARGE, NKP_ERR_IO, NKP_ERR_PERM,
 * NKP_ERR_INVALID (not a regular file). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_file_read(const char *path, size_t max, uint8_t **out,
					       size_t *outlen);

/** Seals `len` bytes under a subkey of `seal_key` with `label` bound as
 * associated data, and writes them atomically (mode 0600, previous copy
 * kept as "<path>.prev"). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_sealfile_write(const char *path, const nkp_key *seal_key,
						    const char *label, const uint8_t *data,
						    size_t len);

/** Reads and opens a sealed file. *out is sodium_malloc'd (locked, guarded;
 * the caller frees it with nkp_secure_free()). Errors: NKP_ERR_NOT_FOUND,
 * NKP_ERR_PARSE, NKP_ERR_FORMAT_VERSION, NKP_ERR_TOO_LARGE, NKP_ERR_AUTH
 * (damaged, tampered, another label, or the wrong key), NKP_ERR_IO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_sealfile_read(const char *path, const nkp_key *seal_key,
						   const char *label, uint8_t **out,
						   size_t *outlen);

/** Seals/opens in memory (the same format, no file). nkp_seal_bytes()'s
 * *out holds no secret and is malloc'd (free with free());
 * nkp_unseal_bytes()'s is sodium_malloc'd (free with nkp_secure_free()). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_seal_bytes(const nkp_key *seal_key, const char *label,
						const uint8_t *data, size_t len, uint8_t **out,
						size_t *outlen);
NKP_EXPORT NKP_NODISCARD nkp_err nkp_unseal_bytes(const nkp_key *seal_key, const char *label,
						  const uint8_t *buf, size_t len, uint8_t **out,
						  size_t *outlen);

/** Frees memory from nkp_sealfile_read()/nkp_unseal_bytes(). Accepts NULL. */
NKP_EXPORT void nkp_secure_free(void *p);

/** Loads a 32-byte key file (e.g. a host sealing key), refusing one that is
 * not a regular file of mode 0600 or stricter owned by the effective user.
 * Creates it with fresh random bytes if `create` and it does not exist.
 * Errors: NKP_ERR_NOT_FOUND, NKP_ERR_PERM (unsafe file), NKP_ERR_PARSE (not
 * 32 bytes), NKP_ERR_IO, NKP_ERR_NOSPC, NKP_ERR_NOMEM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keyfile_load(const char *path, bool create, nkp_key **out);

#endif
