/* nkp-hostctl vm unwrap --keysafe FILE --component NAME --out PIPE|-
 * [--format raw|hex|base64] [--force-file], and vm exec (the DEK on an
 * inherited pipe for a command it runs). The DEK stays in locked memory and
 * is wiped after it is written.
 *
 * A raw DEK must not rest on disk: --out takes a FIFO (or a character
 * device), and '-' takes stdout when it is a pipe, FIFO, socket or
 * terminal. A regular file, or stdout redirected to one, is refused before
 * the DEK is even asked for, unless --force-file. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <sodium.h>

#include "vm.h"

#define TEXT_MAX 128

/* Formats the DEK into `out` (locked memory). Returns the length. */
static size_t format_dek(const char *format, const uint8_t *dek, char *out)
{
	if (strcmp(format, "hex") == 0) {
		sodium_bin2hex(out, TEXT_MAX, dek, NKP_KEY_BYTES);
		strcat(out, "\n");
		return strlen(out);
	}
	if (strcmp(format, "base64") == 0) {
		sodium_bin2base64(out, TEXT_MAX, dek, NKP_KEY_BYTES,
				  sodium_base64_VARIANT_ORIGINAL);
		strcat(out, "\n");
		return strlen(out);
	}
	memcpy(out, dek, NKP_KEY_BYTES);
	return NKP_KEY_BYTES;
}

/* Where a key may go without --force-file: nothing that keeps it. */
static bool transient(mode_t m, bool is_stdout)
{
	return S_ISFIFO(m) || S_ISCHR(m) || (is_stdout && S_ISSOCK(m));
}

static int refuse_file(const vm_args *a, const char *what)
{
	return fail(a->cmd,
		    "refusing to write a raw data key to %s: it would rest on disk in "
		    "clear; use a FIFO or a pipe (`--out -` into a pipe, or `vm exec`), or "
		    "--force-file if a file is really wanted",
		    what);
}

/* Before the DEK is asked for: refuses a destination that would keep it,
 * unless --force-file. */
static int check_out(const vm_args *a)
{
	struct stat st;

	if (a->force_file) {
		return 0;
	}
	if (strcmp(a->out, "-") == 0) {
		if (fstat(STDOUT_FILENO, &st) != 0) {
			return fail(a->cmd, "stdout: %s", strerror(errno));
		}
		return transient(st.st_mode, true) ? 0 : refuse_file(a, "stdout (not a pipe)");
	}
	if (lstat(a->out, &st) != 0) {
		return errno == ENOENT ? refuse_file(a, "a new regular file")
				       : fail(a->cmd, "%s: %s", a->out, strerror(errno));
	}
	return transient(st.st_mode, false) ? 0 : refuse_file(a, "a regular file");
}

/* Opens FILE for the key: created 0600 (--force-file only), never through
 * a symlink; an existing regular file is truncated and made 0600; a FIFO
 * is fine. Without --force-file, whatever was opened must still be a FIFO
 * or a character device (the path may have changed since check_out). */
static int open_out(const vm_args *a)
{
	struct stat st;
	int fd = open(a->out, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | (a->force_file ? O_CREAT : 0),
		      0600);

	if (fd < 0) {
		return -1;
	}
	if (fstat(fd, &st) != 0 || (!a->force_file && !transient(st.st_mode, false)) ||
	    (S_ISREG(st.st_mode) && (fchmod(fd, 0600) != 0 || ftruncate(fd, 0) != 0))) {
		int e = errno;

		close(fd);
		errno = e != 0 ? e : EINVAL;
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int emit(const vm_args *a, const uint8_t *dek)
{
	char *text = sodium_malloc(TEXT_MAX);
	bool to_stdout = strcmp(a->out, "-") == 0;
	size_t len;
	int fd, rc = 0;

	if (text == NULL) {
		return fail(a->cmd, "out of locked memory");
	}
	len = format_dek(a->format, dek, text);
	errno = 0;
	fd = to_stdout ? STDOUT_FILENO : open_out(a);
	if (fd < 0) {
		rc = fail(a->cmd, "%s: %s%s", a->out, strerror(errno),
			  errno == ELOOP ? " (refusing to write a key through a symlink)" : "");
	} else if (write_all(fd, text, len) != 0 ||
		   (!to_stdout && fsync(fd) != 0 && errno != EINVAL)) {
		rc = fail(a->cmd, "%s: write failed: %s", a->out, strerror(errno));
	}
	if (fd >= 0 && !to_stdout && close(fd) != 0 && rc == 0) {
		rc = fail(a->cmd, "%s: close failed: %s", a->out, strerror(errno));
	}
	sodium_free(text);
	return rc;
}

static bool format_valid(const char *format)
{
	return strcmp(format, "raw") == 0 || strcmp(format, "hex") == 0 ||
	       strcmp(format, "base64") == 0;
}

/* Asks nkp-hostd for a component's DEK. On success (0) *out holds a reply
 * with a 32-byte dek; free it with hostctl_reply_free(), which wipes it. */
static int fetch_dek(hostctl *ctl, const vm_args *a, Nkp__Hostapi__Reply **out)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__ComponentRequest cr = NKP__HOSTAPI__COMPONENT_REQUEST__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	uint8_t *ks = NULL;
	size_t kslen = 0;
	int rc = vm_read(a, &ks, &kslen);

	if (rc != 0) {
		return rc;
	}
	cr.keysafe.data = ks;
	cr.keysafe.len = kslen;
	cr.component = (char *)a->component;
	req.op_case = NKP__HOSTAPI__REQUEST__OP_UNWRAP;
	req.unwrap = &cr;
	rc = vm_call(ctl, a, ks, kslen, &req, &r);
	if (rc == 0 && r->dek.len != NKP_KEY_BYTES) {
		rc = fail(a->cmd, "malformed reply from nkp-hostd");
		hostctl_reply_free(r);
	}
	if (rc == 0) {
		*out = r;
	}
	free(ks);
	return rc;
}

int vm_unwrap(hostctl *ctl, vm_args *a)
{
	Nkp__Hostapi__Reply *r = NULL;
	int rc;

	if (a->format == NULL) {
		a->format = "raw";
	}
	if (!format_valid(a->format)) {
		return usage_error(a->cmd, "--format must be raw, hex or base64");
	}
	rc = check_out(a);
	if (rc == 0) {
		rc = fetch_dek(ctl, a, &r);
	}
	if (rc != 0) {
		return rc;
	}
	rc = emit(a, r->dek.data);
	/* The wiping allocator wipes the DEK with the reply. */
	hostctl_reply_free(r);
	return rc;
}

static int parse_fd(const vm_args *a, int *out)
{
	char *end = NULL;
	long v;

	if (a->fd == NULL) {
		*out = 3;
		return 0;
	}
	errno = 0;
	v = strtol(a->fd, &end, 10);
	if (errno != 0 || end == a->fd || *end != '\0' || (v != 0 && (v < 3 || v > 1023))) {
		return usage_error(a->cmd, "--fd must be 0 or 3-1023 (1 and 2 are stdout/stderr)");
	}
	*out = (int)v;
	return 0;
}

/* Puts the DEK, formatted, into a new pipe and leaves only its read end
 * open, on `fd` and inheritable. The text is in locked memory and wiped;
 * afterwards the key exists only in the pipe's kernel buffer (and it is
 * far below PIPE_BUF, so the write cannot block). */
static int pipe_dek(const vm_args *a, const uint8_t *dek, int fd)
{
	char *text = sodium_malloc(TEXT_MAX);
	int p[2] = {-1, -1}, rc = 0;
	size_t len;

	if (text == NULL) {
		return fail(a->cmd, "out of locked memory");
	}
	len = format_dek(a->format, dek, text);
	if (pipe(p) != 0) {
		rc = fail(a->cmd, "cannot make a pipe: %s", strerror(errno));
		goto free_text;
	}
	if (write_all(p[1], text, len) != 0) {
		rc = fail(a->cmd, "cannot write to the pipe: %s", strerror(errno));
	}
	/* The write end is closed before exec: the command reads the key and
	 * then end of file. */
	close(p[1]);
	if (rc == 0 && p[0] != fd) {
		rc = dup2(p[0], fd) == fd ? 0 : fail(a->cmd, "dup2: %s", strerror(errno));
	}
	if (p[0] != fd || rc != 0) {
		close(p[0]);
	}
free_text:
	sodium_free(text);
	return rc;
}

int vm_exec(hostctl *ctl, vm_args *a)
{
	Nkp__Hostapi__Reply *r = NULL;
	int rc, fd = -1;

	if (a->format == NULL) {
		a->format = "hex";
	}
	if (!format_valid(a->format)) {
		return usage_error(a->cmd, "--format must be hex, base64 or raw");
	}
	rc = parse_fd(a, &fd);
	if (rc != 0) {
		return rc;
	}
	rc = fetch_dek(ctl, a, &r);
	if (rc != 0) {
		return rc;
	}
	/* nng's poller holds low descriptors of its own (its epoll and event
	 * fds, often 3 and 4): dup2 onto one of them would close it under
	 * the poller's thread, and nng could then never be shut down (under
	 * the sanitizers exit runs nng_fini). nng is done by now: finish it
	 * before the key's descriptor is put in place. */
	nng_fini();
	rc = pipe_dek(a, r->dek.data, fd);
	hostctl_reply_free(r);
	if (rc != 0) {
		return rc;
	}
	fflush(NULL);
	execvp(a->cmd_argv[0], a->cmd_argv);
	return fail(a->cmd, "cannot run '%s': %s", a->cmd_argv[0], strerror(errno));
}
