/* Atomic whole-file writes and bounded whole-file reads.
 *
 * nkp_file_write_atomic(path):
 *   1. refuse an existing `path` that is not a regular file (a directory, a
 *      symlink, a device): replacing it would silently change the layout an
 *      operator set up;
 *   2. create "<path>.tmp.<16 hex>" with O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC
 *      and `mode` (the process umask applies, as with open(2));
 *   3. write every byte (EINTR and short writes retried), fsync unless
 *      `fsync_data` is false, close (its error counts);
 *   4. with keep_prev and an existing `path`: hard-link it to
 *      "<path>.prev.tmp.<hex>" and rename that over "<path>.prev", so an old
 *      "<path>.prev" is only ever replaced, never missing;
 *   5. rename the temp file over `path`, then fsync the directory unless
 *      `fsync_data` is false (bulk mode: no fsync at all; the caller syncs
 *      once at the end with nkp_file_sync_dir()).
 * Any failure before step 5 unlinks the temp file and leaves `path` as it
 * was. A failure of the directory fsync is reported (NKP_ERR_IO) although
 * the new contents are then already in place. */
#define _GNU_SOURCE /* syncfs */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>

#include "internal.h"

/* Test hook state: the next `fail_count` writes fail with `fail_err`. */
static _Atomic unsigned fail_count;
static _Atomic int fail_err;

void nkp_file_fail_next_writes(unsigned n, nkp_err err)
{
	/* An injected failure must fail: NKP_OK would skip fsync yet succeed. */
	atomic_store(&fail_err, (int)(err == NKP_OK ? NKP_ERR_IO : err));
	atomic_store(&fail_count, n);
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

static nkp_err errno_err(void)
{
	nkp_err err = nkp_err_from_errno(errno);

	return err == NKP_OK ? NKP_ERR_IO : err;
}

/* malloc'd "<path><suffix>" plus, if `random`, ".<16 hex digits>". */
static char *path_with(const char *path, const char *suffix, bool random)
{
	size_t plen = strlen(path);
	size_t slen = strlen(suffix);
	size_t len = plen + slen + (random ? 17 : 0) + 1;
	char *s = malloc(len);
	uint8_t r[8];

	if (s == NULL) {
		return NULL;
	}
	memcpy(s, path, plen);
	memcpy(s + plen, suffix, slen);
	s[plen + slen] = '\0';
	if (random) {
		randombytes_buf(r, sizeof(r));
		s[plen + slen] = '.';
		sodium_bin2hex(s + plen + slen + 1, 17, r, sizeof(r));
	}
	return s;
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

/* fsync of the directory holding `path`, so a rename in it is durable. */
static nkp_err fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd;
	nkp_err err = NKP_OK;

	if (slash == NULL) {
		dir = strdup(".");
	} else if (slash == path) {
		dir = strdup("/");
	} else {
		dir = strndup(path, (size_t)(slash - path));
	}
	if (dir == NULL) {
		return NKP_ERR_NOMEM;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		err = errno_err();
		goto free_dir;
	}
	if (fsync(fd) != 0 && errno != EINVAL) {
		err = errno_err();
	}
	close(fd);
free_dir:
	free(dir);
	return err;
}

/* Writes `data` to the new file `tmp`; unlinks it again on failure. */
static nkp_err write_temp(const char *tmp, const uint8_t *data, size_t len, unsigned mode,
			  bool fsync_data)
{
	nkp_err err;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);

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
		unlink(tmp);
	}
	return err;
}

/* Makes "<path>.prev" a hard link to the current `path`, if there is one. */
static nkp_err keep_previous(const char *path)
{
	char *prev = path_with(path, ".prev", false);
	char *prev_tmp = path_with(path, ".prev.tmp", true);
	nkp_err err = NKP_OK;

	if (prev == NULL || prev_tmp == NULL) {
		err = NKP_ERR_NOMEM;
		goto free_names;
	}
	if (link(path, prev_tmp) != 0) {
		err = errno == ENOENT ? NKP_OK : errno_err();
		goto free_names;
	}
	if (rename(prev_tmp, prev) != 0) {
		err = errno_err();
	}
	/* Also covers a rename that did nothing because "<path>.prev" was
	 * already this very file (a crash between two earlier steps). */
	unlink(prev_tmp);
free_names:
	free(prev_tmp);
	free(prev);
	return err;
}

static nkp_err check_target(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		return errno == ENOENT ? NKP_OK : errno_err();
	}
	return S_ISREG(st.st_mode) ? NKP_OK : NKP_ERR_INVALID;
}

nkp_err nkp_file_write_atomic(const char *path, const uint8_t *data, size_t len, unsigned mode,
			      bool keep_prev, bool fsync_data)
{
	char *tmp;
	nkp_err err;

	if (path == NULL || path[0] == '\0' || (data == NULL && len > 0) || (mode & ~07777u) != 0) {
		return NKP_ERR_INVALID;
	}
	err = check_target(path);
	if (err != NKP_OK) {
		return err;
	}
	tmp = path_with(path, ".tmp", true);
	if (tmp == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = write_temp(tmp, data, len, mode, fsync_data);
	if (err != NKP_OK) {
		goto free_tmp;
	}
	if (keep_prev) {
		err = keep_previous(path);
		if (err != NKP_OK) {
			goto unlink_tmp;
		}
	}
	if (rename(tmp, path) != 0) {
		err = errno_err();
		goto unlink_tmp;
	}
	if (fsync_data) {
		err = fsync_parent(path);
	}
	goto free_tmp;
unlink_tmp:
	unlink(tmp);
free_tmp:
	free(tmp);
	return err;
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
		if (is_temp_of(e->d_name, base, ".tmp.") || is_temp_of(e->d_name, base, ".prev.tmp.")) {
			(void)unlinkat(dirfd(d), e->d_name, 0);
		}
	}
	closedir(d);
}
