/* Atomic whole-file writes and bounded whole-file reads.
 *
 * nkp_file_write_atomic(path):
 *   1. refuse an existing `path` that is not a regular file (a directory, a
 *      symlink, a device): replacing it would silently change the layout an
 *      operator set up; with keep_prev and an existing `path`, refuse a
 *      "<path>.prev" that exists and is not a regular file, for the same
 *      reason (a symlink there would otherwise be replaced, a directory
 *      would fail the write half-way);
 *   2. create "<path>.tmp.<16 hex>" with O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC
 *      and `mode` (the process umask applies, as with open(2)). The hex is
 *      SipHash of a process-wide counter under a key drawn once per
 *      process: names are unique within a process and unpredictable across
 *      processes without a getrandom per write. O_EXCL still guards: on
 *      EEXIST (e.g. a forked child repeating its parent's sequence) the
 *      next counter value is tried, a bounded number of times;
 *   3. write every byte (EINTR and short writes retried), fsync unless
 *      `fsync_data` is false, close (its error counts). An injected failure
 *      (nkpi_file_fail_next_writes) happens here, after the data is written;
 *   4. put the temp file in place:
 *      - no `path` yet, or no keep_prev: rename(temp, path);
 *      - keep_prev: renameat2(temp, path, RENAME_EXCHANGE), which makes the
 *        new contents `path` in one step and leaves the old ones under the
 *        temp name, then rename(temp, "<path>.prev"). If that second rename
 *        fails, a second exchange puts the old contents back at `path` and
 *        the temp file (now the new contents) is unlinked: a failed write
 *        changes nothing, which is what the callers rely on (nkpd refuses
 *        the change and keeps its model, a host refuses the push and keeps
 *        its keys; neither may find on disk a state it reported unsaved).
 *        Only if that undo fails too (the directory broke between two
 *        renames in it) does the error come with `path` already new;
 *      - a filesystem or kernel without RENAME_EXCHANGE (EINVAL, ENOSYS,
 *        EOPNOTSUPP): hard-link `path` to "<path>.prev.tmp.<hex>", rename
 *        that over "<path>.prev", then rename(temp, path). There a failure
 *        of the last rename leaves "<path>.prev" already equal to `path`;
 *   5. fsync the directory unless `fsync_data` is false (bulk mode: no fsync
 *      at all; the caller syncs once at the end with nkp_file_sync_dir()).
 * Any failure before step 4 unlinks the temp file and leaves `path` and
 * "<path>.prev" as they were. A failure of the directory fsync is reported
 * (NKP_ERR_IO) although the new contents are then already in place.
 * A crash (power loss or kill) at any point leaves `path` whole, old or new:
 *   - before the exchange or rename: `path` and "<path>.prev" untouched, a
 *     "<path>.tmp.<hex>" with new (maybe partial) contents;
 *   - between the exchange and the rename to "<path>.prev": `path` new,
 *     "<path>.prev" one copy older than promised (but whole), the old
 *     contents under "<path>.tmp.<hex>";
 *   - in the fallback, between its two renames: "<path>.prev" a second
 *     name of `path` (the next write handles that), or a leftover
 *     "<path>.prev.tmp.<hex>".
 * nkp_file_remove_stale_temps() removes every such temp file.
 * Names are built on the stack: a path that leaves no room for the longest
 * derived name within PATH_MAX is refused (NKP_ERR_INVALID). With
 * fsync_data the directory is opened first, as its fsync needs it anyway,
 * and every step works relative to it (fstatat, openat, renameat2,
 * renameat): a keep_prev write over an existing file costs 11 system calls
 * (open dir, 2 fstatat, openat, write, fsync, close, renameat2, renameat,
 * fsync dir, close dir), a first write 9.
 *
 * nkp_file_write_new(path): steps 2, 3 and 5 as above; step 4 is
 * renameat2(RENAME_NOREPLACE), or link(2) and an unlink of the temp name
 * where the filesystem lacks it. Neither replaces anything: of several
 * creators of one path exactly one wins, the others get NKP_ERR_EXISTS and
 * lose only their temp file. A check that the path is free followed by a
 * write would let two of them both "create" it.
 *
 * nkpi_file_append(path): for append-only logs, whose good length the
 * caller keeps. open(O_APPEND|O_CREAT|O_NOFOLLOW), a check that the file
 * still holds its good bytes, a cut of what a torn earlier append left
 * past them, write, fdatasync, and an fsync of the directory after the
 * append that created the file. A failed append is cut off again, so the
 * file keeps its good length; if even that cut fails, the caller is told
 * to cut before its next append. An injected failure
 * (nkpi_file_fail_next_writes) writes half the bytes first.
 *
 * Lock files: flock(2), not fcntl(2) record locks. A record lock belongs
 * to the process and goes when the process closes *any* descriptor of the
 * file, which a library cannot rule out for its caller; a flock belongs to
 * the open file, so it also keeps two opens in one process apart (as two
 * handles on one state directory must be). Waiting is LOCK_NB tries with
 * pauses, so a wait can be given up on time. The holder writes its pid
 * into the file for other processes' messages, and clears it before
 * letting go. */
#define _GNU_SOURCE /* syncfs, renameat2 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>

#include "internal.h"

/* The longest suffix a write derives from `path`: ".prev.tmp.<16 hex>". */
#define TEMP_HEX 16
#define LONGEST_SUFFIX (sizeof(".prev.tmp.") - 1 + TEMP_HEX)
/* Tries at a fresh temp name before giving up on EEXIST. */
#define NAME_TRIES 8

/* Test hook state: the next `fail_count` writes fail with `fail_err`. */
static _Atomic unsigned fail_count;
static _Atomic int fail_err;
/* nkpi_file_set_hook()'s mode; set once the kernel lacks renameat2. */
static _Atomic int hook;
static _Atomic bool exchange_missing;

/* Temp names: SipHash-2-4 of a counter under a per-process key. */
static pthread_once_t name_once = PTHREAD_ONCE_INIT;
static uint8_t name_key[crypto_shorthash_KEYBYTES];
static _Atomic uint64_t name_counter;

void nkpi_file_fail_next_writes(unsigned n, nkp_err err)
{
	/* An injected failure must fail: NKP_OK would skip fsync yet succeed. */
	atomic_store(&fail_err, (int)(err == NKP_OK ? NKP_ERR_IO : err));
	atomic_store(&fail_count, n);
}

void nkpi_file_set_hook(nkpi_file_hook h)
{
	atomic_store(&hook, (int)h);
}

/* Consumes one injected failure, if any is pending. */
static bool injected_failure(nkp_err *err)
{
	unsigned n = atomic_load(&fail_count);

	while (n > 0) {
		if (atomic_compare_exchange_weak(&fail_count, &n, n - 1)) {
			*err = (nkp_err)atomic_load(&fail_err);
			return true;
		}
	}
	return false;
}

static bool hooked(nkpi_file_hook h)
{
	return atomic_load_explicit(&hook, memory_order_relaxed) == (int)h;
}

static nkp_err errno_err(void)
{
	nkp_err err = nkp_err_from_errno(errno);

	return err == NKP_OK ? NKP_ERR_IO : err;
}

static void name_key_init(void)
{
	randombytes_buf(name_key, sizeof(name_key));
}

/* Writes "<path><suffix><16 hex>" into `buf` (PATH_MAX bytes; the caller
 * checked that plen + LONGEST_SUFFIX fits). */
static void temp_name(char *buf, const char *path, size_t plen, const char *suffix)
{
	uint8_t in[8], out[crypto_shorthash_BYTES];
	uint64_t n = atomic_fetch_add_explicit(&name_counter, 1, memory_order_relaxed);
	size_t slen = strlen(suffix);

	(void)pthread_once(&name_once, name_key_init);
	for (size_t i = 0; i < sizeof(in); i++) {
		in[i] = (uint8_t)(n >> (8 * i));
	}
	crypto_shorthash(out, in, sizeof(in), name_key);
	memcpy(buf, path, plen);
	memcpy(buf + plen, suffix, slen);
	sodium_bin2hex(buf + plen + slen, TEMP_HEX + 1, out, sizeof(out));
}

static nkp_err write_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			return errno_err();
		}
		if (n == 0) {
			return NKP_ERR_IO;
		}
		data += n;
		len -= (size_t)n;
	}
	return NKP_OK;
}

/* What one write works on: its names and what `path` was before. With
 * fsync_data the directory is opened first (its fd is needed for the
 * fsync anyway) and every name is looked up relative to it: one path
 * component per lookup instead of the whole path. In bulk mode dfd is
 * AT_FDCWD and the names are used whole. */
typedef struct target {
	const char *path;
	size_t plen;
	int dfd;
	size_t off;	/* where the last component starts, when dfd is open */
	bool exists;	/* `path` exists (a regular file) */
	bool prev_same; /* "<path>.prev" is `path` itself (a second name) */
	char tmp[PATH_MAX];
	char prev[PATH_MAX];
} target;

/* A name of `t` as given to the *at() calls. */
#define AT(t, name) ((name) + (t)->off)

/* Opens the directory holding `path` (shorter than PATH_MAX); *off: where
 * its last component starts. -1 and errno on failure. */
static int parent_open(const char *path, size_t *off)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (slash == NULL) {
		memcpy(dir, ".", 2);
	} else if (slash == path) {
		memcpy(dir, "/", 2);
	} else {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	}
	*off = slash == NULL ? 0 : (size_t)(slash - path) + 1;
	return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Opens the directory holding `path` (fsync_data only). */
static nkp_err dir_open(target *t)
{
	size_t off = 0;

	/* `path` fits: the caller checked it with room for its temp names. */
	t->dfd = parent_open(t->path, &off);
	if (t->dfd < 0) {
		t->dfd = AT_FDCWD;
		return errno_err();
	}
	t->off = off;
	return NKP_OK;
}

/* Step 1: names, and the refusal of what must not be replaced. */
static nkp_err target_check(target *t, bool keep_prev)
{
	struct stat st, pst;

	if (fstatat(t->dfd, AT(t, t->path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
		return errno == ENOENT ? NKP_OK : errno_err();
	}
	if (!S_ISREG(st.st_mode)) {
		return NKP_ERR_INVALID;
	}
	t->exists = true;
	if (!keep_prev) {
		return NKP_OK;
	}
	memcpy(t->prev, t->path, t->plen);
	memcpy(t->prev + t->plen, ".prev", sizeof(".prev"));
	if (fstatat(t->dfd, AT(t, t->prev), &pst, AT_SYMLINK_NOFOLLOW) != 0) {
		return errno == ENOENT ? NKP_OK : errno_err();
	}
	if (!S_ISREG(pst.st_mode)) {
		return NKP_ERR_INVALID;
	}
	t->prev_same = pst.st_ino == st.st_ino && pst.st_dev == st.st_dev;
	return NKP_OK;
}

/* Steps 2-3: writes `data` to a new temp file t->tmp; unlinks it again on
 * failure. */
static nkp_err write_temp(target *t, const uint8_t *data, size_t len, unsigned mode,
			  bool fsync_data)
{
	nkp_err err;
	int fd = -1;

	for (int i = 0; i < NAME_TRIES && fd < 0; i++) {
		temp_name(t->tmp, t->path, t->plen, ".tmp.");
		fd = openat(t->dfd, AT(t, t->tmp),
			    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
		if (fd < 0 && errno != EEXIST) {
			break;
		}
	}
	if (fd < 0) {
		return errno_err();
	}
	err = write_all(fd, data, len);
	if (err == NKP_OK && injected_failure(&err)) {
		goto close_fd;
	}
	if (err == NKP_OK && fsync_data && fsync(fd) != 0) {
		err = errno_err();
	}
close_fd:
	if (close(fd) != 0 && err == NKP_OK) {
		err = errno_err();
	}
	if (err != NKP_OK) {
		unlinkat(t->dfd, AT(t, t->tmp), 0);
	}
	return err;
}

/* rename() of two names of `t`: -1 and errno on failure. */
static int rename_in(const target *t, const char *from, const char *to)
{
	return renameat(t->dfd, AT(t, from), t->dfd, AT(t, to));
}

/* Fallback of step 4 without RENAME_EXCHANGE: "<path>.prev" becomes a hard
 * link to the current `path` (replaced, never missing), then the temp
 * file is renamed over `path`. */
static nkp_err link_prev_then_rename(const target *t)
{
	char prev_tmp[PATH_MAX];
	nkp_err err = NKP_OK;
	int rc = -1;

	for (int i = 0; i < NAME_TRIES && rc != 0; i++) {
		temp_name(prev_tmp, t->path, t->plen, ".prev.tmp.");
		rc = linkat(t->dfd, AT(t, t->path), t->dfd, AT(t, prev_tmp), 0);
		if (rc != 0 && errno != EEXIST) {
			break;
		}
	}
	if (rc != 0 && errno != ENOENT) {
		return errno_err();
	}
	if (rc == 0 && rename_in(t, prev_tmp, t->prev) != 0) {
		err = errno_err();
		unlinkat(t->dfd, AT(t, prev_tmp), 0);
		return err;
	}
	/* A rename between two names of one file does nothing. */
	if (rc == 0 && t->prev_same) {
		unlinkat(t->dfd, AT(t, prev_tmp), 0);
	}
	return rename_in(t, t->tmp, t->path) != 0 ? errno_err() : NKP_OK;
}

/* renameat2(RENAME_EXCHANGE) of the temp file and `path`: -1 and errno on
 * failure. */
static int exchange(const target *t)
{
	return renameat2(t->dfd, AT(t, t->tmp), t->dfd, AT(t, t->path), RENAME_EXCHANGE);
}

/* The exchange failed with `e`: the fallback where the filesystem or the
 * kernel lacks it, a plain rename where `path` went away since step 1. */
static nkp_err after_failed_exchange(const target *t, int e)
{
	if (e == ENOSYS) {
		atomic_store(&exchange_missing, true);
	}
	if (e == ENOSYS || e == EINVAL || e == EOPNOTSUPP) {
		return link_prev_then_rename(t);
	}
	if (e == ENOENT) {
		return rename_in(t, t->tmp, t->path) != 0 ? errno_err() : NKP_OK;
	}
	errno = e;
	return errno_err();
}

/* Moves the old contents, under the temp name since the exchange, to
 * "<path>.prev". */
static int rename_old_to_prev(const target *t)
{
	if (hooked(NKPI_FILE_FAIL_PREV_RENAME)) {
		errno = EIO;
		return -1;
	}
	return rename_in(t, t->tmp, t->prev);
}

/* Step 4 with keep_prev and an existing `path`. On failure the temp file
 * is gone and `path` holds the old contents (see the top of this file). */
static nkp_err exchange_keeping_prev(const target *t)
{
	nkp_err err = NKP_OK;

	if (hooked(NKPI_FILE_NO_EXCHANGE) || atomic_load(&exchange_missing)) {
		err = link_prev_then_rename(t);
	} else if (exchange(t) != 0) {
		err = after_failed_exchange(t, errno);
	} else if (hooked(NKPI_FILE_STOP_AFTER_EXCHANGE)) {
		/* As if the process died here: nothing more is touched. */
		err = NKP_ERR_IO;
		goto out;
	} else if (rename_old_to_prev(t) != 0) {
		err = errno_err();
		/* Undo: the old contents back at `path`, the new ones under
		 * the temp name, unlinked below. */
		(void)exchange(t);
	} else if (t->prev_same) {
		/* A rename between two names of one file does nothing. */
		unlinkat(t->dfd, AT(t, t->tmp), 0);
	}
	if (err != NKP_OK) {
		unlinkat(t->dfd, AT(t, t->tmp), 0);
	}
out:
	return err;
}

/* Steps 2-5 once the target is checked. */
static nkp_err replace(target *t, const uint8_t *data, size_t len, unsigned mode, bool keep_prev,
		       bool fsync_data)
{
	nkp_err err = write_temp(t, data, len, mode, fsync_data);

	if (err != NKP_OK) {
		return err;
	}
	if (keep_prev && t->exists) {
		err = exchange_keeping_prev(t);
	} else if (rename_in(t, t->tmp, t->path) != 0) {
		err = errno_err();
		unlinkat(t->dfd, AT(t, t->tmp), 0);
	}
	if (err == NKP_OK && fsync_data && fsync(t->dfd) != 0 && errno != EINVAL) {
		err = errno_err();
	}
	return err;
}

nkp_err nkp_file_write_atomic(const char *path, const uint8_t *data, size_t len, unsigned mode,
			      bool keep_prev, bool fsync_data)
{
	target t; /* not zeroed: its name buffers are written before use */
	nkp_err err;

	if (path == NULL || path[0] == '\0' || (data == NULL && len > 0) || (mode & ~07777u) != 0) {
		return NKP_ERR_INVALID;
	}
	t.path = path;
	t.plen = strlen(path);
	t.dfd = AT_FDCWD;
	t.off = 0;
	t.exists = false;
	t.prev_same = false;
	if (t.plen + LONGEST_SUFFIX >= PATH_MAX || path[t.plen - 1] == '/') {
		return NKP_ERR_INVALID;
	}
	if (fsync_data) {
		err = dir_open(&t);
		if (err != NKP_OK) {
			return err;
		}
	}
	err = target_check(&t, keep_prev);
	if (err == NKP_OK) {
		err = replace(&t, data, len, mode, keep_prev, fsync_data);
	}
	if (t.dfd != AT_FDCWD) {
		close(t.dfd);
	}
	return err;
}

/* Puts the temp file at `path` unless something is there: -1 and errno
 * (EEXIST if it was) on failure. link(2) where renameat2 lacks
 * RENAME_NOREPLACE: it never replaces either. */
static int place_new(const target *t)
{
	if (!hooked(NKPI_FILE_NO_EXCHANGE) && !atomic_load(&exchange_missing)) {
		if (renameat2(t->dfd, AT(t, t->tmp), t->dfd, AT(t, t->path), RENAME_NOREPLACE) ==
		    0) {
			return 0;
		}
		if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
			return -1;
		}
	}
	if (linkat(t->dfd, AT(t, t->tmp), t->dfd, AT(t, t->path), 0) != 0) {
		return -1;
	}
	unlinkat(t->dfd, AT(t, t->tmp), 0);
	return 0;
}

nkp_err nkp_file_write_new(const char *path, const uint8_t *data, size_t len, unsigned mode)
{
	target t; /* not zeroed: its name buffers are written before use */
	nkp_err err;

	if (path == NULL || path[0] == '\0' || (data == NULL && len > 0) || (mode & ~07777u) != 0) {
		return NKP_ERR_INVALID;
	}
	t.path = path;
	t.plen = strlen(path);
	t.dfd = AT_FDCWD;
	t.off = 0;
	if (t.plen + LONGEST_SUFFIX >= PATH_MAX || path[t.plen - 1] == '/') {
		return NKP_ERR_INVALID;
	}
	err = dir_open(&t);
	if (err != NKP_OK) {
		return err;
	}
	err = write_temp(&t, data, len, mode, true);
	if (err != NKP_OK) {
		goto close_dir;
	}
	if (place_new(&t) != 0) {
		err = errno_err();
		unlinkat(t.dfd, AT(&t, t.tmp), 0);
		goto close_dir;
	}
	if (fsync(t.dfd) != 0 && errno != EINVAL) {
		err = errno_err();
	}
close_dir:
	close(t.dfd);
	return err;
}

/* ---- append-only files ---------------------------------------------- */

/* The directory holding `path`, fsynced: a new file's entry made durable. */
static nkp_err sync_parent(const char *path)
{
	size_t off = 0;
	nkp_err err = NKP_OK;
	int fd = parent_open(path, &off);

	if (fd < 0) {
		return errno_err();
	}
	if (fsync(fd) != 0 && errno != EINVAL) {
		err = errno_err();
	}
	close(fd);
	return err;
}

/* Writes `data` at the end of `fd` and makes it durable. An injected
 * failure writes half of it first, as a full disk cuts a write short. */
static nkp_err append_data(int fd, const uint8_t *data, size_t len)
{
	nkp_err err;

	if (injected_failure(&err)) {
		(void)write_all(fd, data, len / 2);
		return err;
	}
	err = write_all(fd, data, len);
	if (err == NKP_OK && fdatasync(fd) != 0) {
		err = errno_err();
	}
	return err;
}

nkp_err nkpi_file_append(const char *path, uint64_t at, bool *cut, const uint8_t *data, size_t len,
			 bool new_entry, bool *shorter)
{
	int fd;
	struct stat st;
	nkp_err err = NKP_OK;

	if (path == NULL || strlen(path) >= PATH_MAX || cut == NULL || shorter == NULL ||
	    (data == NULL && len > 0) || at > INT64_MAX) {
		return NKP_ERR_INVALID;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		return errno_err();
	}
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < at) {
		*shorter = true;
		err = NKP_ERR_IO;
		goto close_fd;
	}
	if (*cut) {
		if (ftruncate(fd, (off_t)at) != 0) {
			err = errno_err();
			goto close_fd;
		}
		*cut = false;
	}
	err = append_data(fd, data, len);
	if (err == NKP_OK && new_entry) {
		err = sync_parent(path);
	}
	if (err != NKP_OK && ftruncate(fd, (off_t)at) != 0) {
		*cut = true;
	}
close_fd:
	close(fd);
	return err;
}

/* ---- lock files ----------------------------------------------------- */

struct nkp_file_lock {
	int fd;
};

/* Pauses between tries at a held lock: from 1 ms, doubling up to 50 ms,
 * with jitter so that waiters do not retry in step. */
#define LOCK_PAUSE_MIN_US 1000u
#define LOCK_PAUSE_MAX_US 50000u

/* Opens `path` as a lock file: O_NOFOLLOW refuses a symlink, O_NONBLOCK
 * keeps a planted FIFO from hanging the open; what is not a regular file
 * of ours with one link (a hard link to another file would have its
 * contents replaced by a pid) is refused. */
static nkp_err lock_open(const char *path, int *out)
{
	struct stat st;
	nkp_err err = NKP_OK;
	int fd =
		open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);

	if (fd < 0) {
		return errno == ELOOP ? NKP_ERR_PERM : errno_err();
	}
	if (fstat(fd, &st) != 0) {
		err = errno_err();
	} else if (!S_ISREG(st.st_mode)) {
		err = NKP_ERR_INVALID;
	} else if (st.st_uid != geteuid() || st.st_nlink != 1) {
		err = NKP_ERR_PERM;
	} else if ((st.st_mode & 07177) != 0 && fchmod(fd, 0600) != 0) {
		err = errno_err();
	}
	if (err != NKP_OK) {
		close(fd);
		return err;
	}
	*out = fd;
	return NKP_OK;
}

/* flock(LOCK_EX) with a deadline: LOCK_NB tries with growing pauses (a
 * blocking flock could not be given up on time). */
static nkp_err lock_wait(int fd, unsigned wait_ms)
{
	uint64_t start = nkpi_mono_ms();
	uint32_t pause = LOCK_PAUSE_MIN_US;

	for (;;) {
		uint64_t spent;
		struct timespec ts;
		uint32_t us;

		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			return NKP_OK;
		}
		if (errno == EINTR) {
			continue;
		}
		if (errno != EWOULDBLOCK) {
			return errno_err();
		}
		spent = nkpi_mono_ms() - start;
		if (spent >= wait_ms) {
			return NKP_ERR_STATE;
		}
		us = pause / 2 + randombytes_uniform(pause / 2 + 1);
		if ((uint64_t)us > (wait_ms - spent) * 1000u) {
			us = (uint32_t)((wait_ms - spent) * 1000u);
		}
		ts.tv_sec = us / 1000000u;
		ts.tv_nsec = (long)(us % 1000000u) * 1000;
		nanosleep(&ts, NULL);
		pause = pause * 2 > LOCK_PAUSE_MAX_US ? LOCK_PAUSE_MAX_US : pause * 2;
	}
}

nkp_err nkp_file_lock_take(const char *lock_path, unsigned wait_ms, nkp_file_lock **out)
{
	char pid[24];
	nkp_file_lock *l;
	nkp_err err;
	ssize_t written;
	int fd = -1, n;

	if (lock_path == NULL || lock_path[0] == '\0' || out == NULL) {
		return NKP_ERR_INVALID;
	}
	l = malloc(sizeof(*l));
	if (l == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = lock_open(lock_path, &fd);
	if (err != NKP_OK) {
		goto free_lock;
	}
	err = lock_wait(fd, wait_ms);
	if (err != NKP_OK) {
		goto close_fd;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0) {
		err = errno_err();
		goto close_fd;
	}
	written = pwrite(fd, pid, (size_t)n, 0);
	if (written != n) {
		err = written < 0 ? errno_err() : NKP_ERR_IO;
		goto close_fd;
	}
	l->fd = fd;
	*out = l;
	return NKP_OK;
close_fd:
	close(fd);
free_lock:
	free(l);
	return err;
}

void nkp_file_unlock(nkp_file_lock *lock)
{
	if (lock == NULL) {
		return;
	}
	/* Still held here: nobody reads a pid of a process that let go. A
	 * failure leaves a stale pid, which only a message would show. */
	if (ftruncate(lock->fd, 0) != 0) {
		errno = 0;
	}
	close(lock->fd);
	free(lock);
}

long nkp_file_lock_holder(const char *lock_path)
{
	char buf[24];
	struct stat st;
	long pid = 0;
	ssize_t n;
	int fd;

	if (lock_path == NULL) {
		return 0;
	}
	fd = open(lock_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		return 0;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		goto close_fd;
	}
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0) {
		goto close_fd;
	}
	for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) {
		pid = pid * 10 + (buf[i] - '0');
		if (pid > 0x7fffffffL) {
			pid = 0;
			break;
		}
	}
close_fd:
	close(fd);
	return pid;
}

nkp_err nkp_file_sync_dir(const char *dir)
{
	nkp_err err = NKP_OK;
	int fd;

	if (dir == NULL || dir[0] == '\0') {
		return NKP_ERR_INVALID;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		return errno == ENOTDIR ? NKP_ERR_INVALID : errno_err();
	}
	/* syncfs: every file's data and every directory entry on the
	 * filesystem; then the directory itself, for what syncfs cannot
	 * report. */
	if (syncfs(fd) != 0 || (fsync(fd) != 0 && errno != EINVAL)) {
		err = errno_err();
	}
	close(fd);
	return err;
}

/* Reads until EOF into a buffer that grows up to max + 1 bytes, so a file
 * that grows while it is read is still refused when over `max`. */
static nkp_err read_fd(int fd, size_t hint, size_t max, uint8_t **out, size_t *outlen)
{
	size_t cap = (hint < max ? hint : max) + 1;
	size_t used = 0;
	uint8_t *buf = malloc(cap);
	nkp_err err = NKP_OK;

	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (;;) {
		ssize_t n;

		if (used == cap) {
			size_t ncap = cap > max / 2 ? max + 1 : cap * 2;
			uint8_t *nbuf;

			if (used > max) {
				err = NKP_ERR_TOO_LARGE;
				goto free_buf;
			}
			nbuf = realloc(buf, ncap);
			if (nbuf == NULL) {
				err = NKP_ERR_NOMEM;
				goto free_buf;
			}
			buf = nbuf;
			cap = ncap;
		}
		n = read(fd, buf + used, cap - used);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			err = errno_err();
			goto free_buf;
		}
		if (n == 0) {
			break;
		}
		used += (size_t)n;
	}
	if (used > max) {
		err = NKP_ERR_TOO_LARGE;
		goto free_buf;
	}
	*out = buf;
	*outlen = used;
	return NKP_OK;
free_buf:
	free(buf);
	return err;
}

nkp_err nkp_file_read(const char *path, size_t max, uint8_t **out, size_t *outlen)
{
	struct stat st;
	nkp_err err;
	int fd;

	if (path == NULL || out == NULL || outlen == NULL || max == SIZE_MAX) {
		return NKP_ERR_INVALID;
	}
	/* O_NONBLOCK: opening a FIFO must not hang; it is refused below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		return errno_err();
	}
	if (fstat(fd, &st) != 0) {
		err = errno_err();
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		err = NKP_ERR_INVALID;
		goto close_fd;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > max) {
		err = NKP_ERR_TOO_LARGE;
		goto close_fd;
	}
	err = read_fd(fd, (size_t)st.st_size, max, out, outlen);
close_fd:
	close(fd);
	return err;
}

/* True for "<base><mid><16 hex digits>": a temp file of this module. */
static bool is_temp_of(const char *name, const char *base, const char *mid)
{
	size_t bl = strlen(base), ml = strlen(mid);

	if (strncmp(name, base, bl) != 0 || strncmp(name + bl, mid, ml) != 0 ||
	    strlen(name + bl + ml) != 16) {
		return false;
	}
	for (const char *c = name + bl + ml; *c != '\0'; c++) {
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) {
			return false;
		}
	}
	return true;
}

void nkp_file_remove_stale_temps(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *base = slash != NULL ? slash + 1 : path;
	struct dirent *e;
	DIR *d;

	if (slash == NULL) {
		dir[0] = '.';
		dir[1] = '\0';
	} else if ((size_t)(slash - path) < sizeof(dir)) {
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
	} else {
		return;
	}
	d = opendir(dir[0] != '\0' ? dir : "/");
	if (d == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (is_temp_of(e->d_name, base, ".tmp.") ||
		    is_temp_of(e->d_name, base, ".prev.tmp.")) {
			(void)unlinkat(dirfd(d), e->d_name, 0);
		}
	}
	closedir(d);
}
