/* faultshim: an LD_PRELOAD library that makes chosen file operations fail
 * or stall, for the crash and fault integration tests.
 *
 *   LD_PRELOAD=faultshim.so FAULTSHIM_CTL=/path/to/ctl  program ...
 *
 * The control file holds at most one rule, re-read at every operation it
 * could apply to, so a test arms, changes and clears it while the program
 * runs (an absent or empty file: no rule):
 *
 *   OP ACTION SUBSTRING [SKIP]
 *
 *   OP        open    the creating open (O_CREAT) of a path containing SUBSTRING
 *             write   write()/pwrite() on a file so opened
 *             fsync   fsync()/fdatasync() on a file so opened
 *             rename  rename(), renameat() or renameat2() (the exchange
 *                     that puts a new file in place) whose target path ends
 *                     with SUBSTRING
 *   ACTION    enospc  the operation fails with ENOSPC (nothing done)
 *             stall   the operation waits, undone, until the control file
 *                     changes, then runs
 *             after   (rename only) the rename is done, then the caller
 *                     waits until the control file changes
 *   SKIP      how many matching files (open/write/fsync: counted at their
 *             creating open) or renames pass untouched first (default 0);
 *             the count restarts whenever the control file changes.
 *
 * Every time a rule fires, one line "PID OP ACTION PATH" is appended to
 * CTL.hit, so a test can wait until the program has reached that point.
 * Test-only code: never installed. */
/* open and open64 are both defined here: no 64-bit redirection. */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 4096
#define RULE_MAX 512

typedef struct rule {
	char op[16];
	char action[16];
	char needle[256];
	unsigned skip;
	char text[RULE_MAX]; /* the control file's contents (identity of the rule) */
} rule;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char last_text[RULE_MAX];
static unsigned seen;			    /* matching files/renames since last_text */
static _Atomic unsigned char armed[MAX_FD]; /* 1: the rule applies to this file */

/* Raw syscalls: the shim must never re-enter itself. */
static ssize_t raw_read_file(const char *path, char *buf, size_t size)
{
	int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	ssize_t n;

	if (fd < 0) {
		return -1;
	}
	n = syscall(SYS_read, fd, buf, size - 1);
	syscall(SYS_close, fd);
	if (n < 0) {
		return -1;
	}
	buf[n] = '\0';
	return n;
}

/* Reads the control file; false when there is no rule. */
static bool read_rule(rule *r)
{
	const char *ctl = getenv("FAULTSHIM_CTL");
	int n;

	memset(r, 0, sizeof(*r));
	if (ctl == NULL || raw_read_file(ctl, r->text, sizeof(r->text)) <= 0) {
		return false;
	}
	n = sscanf(r->text, "%15s %15s %255s %u", r->op, r->action, r->needle, &r->skip);
	return n >= 3;
}

static void note_hit(const char *op, const char *action, const char *path)
{
	const char *ctl = getenv("FAULTSHIM_CTL");
	char name[4096], line[4096 + 64];
	int fd, len;

	if (ctl == NULL || (size_t)snprintf(name, sizeof(name), "%s.hit", ctl) >= sizeof(name)) {
		return;
	}
	len = snprintf(line, sizeof(line), "%d %s %s %s\n", (int)getpid(), op, action,
		       path != NULL ? path : "-");
	fd = (int)syscall(SYS_openat, AT_FDCWD, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			  0600);
	if (fd >= 0) {
		if (len > 0 && (size_t)len < sizeof(line)) {
			(void)syscall(SYS_write, fd, line, (size_t)len);
		}
		syscall(SYS_close, fd);
	}
}

/* Waits while the control file still holds `text`. */
static void stall(const char *text)
{
	char now[RULE_MAX];
	const char *ctl = getenv("FAULTSHIM_CTL");
	struct timespec ts = {0, 50 * 1000 * 1000};

	for (;;) {
		ssize_t n = ctl != NULL ? raw_read_file(ctl, now, sizeof(now)) : -1;

		if (n <= 0 || strcmp(now, text) != 0) {
			return;
		}
		nanosleep(&ts, NULL);
	}
}

/* Counts one match of rule `r`; true when it is past SKIP (the rule fires). */
static bool count_match(const rule *r)
{
	bool fire;

	pthread_mutex_lock(&mu);
	if (strcmp(last_text, r->text) != 0) {
		memcpy(last_text, r->text, sizeof(last_text));
		seen = 0;
	}
	seen++;
	fire = seen > r->skip;
	pthread_mutex_unlock(&mu);
	return fire;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Applies ACTION: 0 to go on, -1 with errno set to fail. */
static int act(const rule *r, const char *path)
{
	note_hit(r->op, r->action, path);
	if (strcmp(r->action, "enospc") == 0) {
		errno = ENOSPC;
		return -1;
	}
	if (strcmp(r->action, "stall") == 0) {
		stall(r->text);
	}
	return 0;
}

static void arm_fd(int fd, const char *path)
{
	rule r;

	if (fd < 0 || fd >= MAX_FD) {
		return;
	}
	atomic_store(&armed[fd], 0);
	if (!read_rule(&r) || strcmp(r.op, "rename") == 0 || strstr(path, r.needle) == NULL) {
		return;
	}
	if (strcmp(r.op, "open") != 0 && count_match(&r)) {
		atomic_store(&armed[fd], 1);
	}
}

/* The creating open itself: may fail or stall before the file exists. */
static int before_open(const char *path, int flags)
{
	rule r;

	if (path == NULL || (flags & O_CREAT) == 0 || !read_rule(&r) || strcmp(r.op, "open") != 0 ||
	    strstr(path, r.needle) == NULL || !count_match(&r)) {
		return 0;
	}
	return act(&r, path);
}

/* write/fsync on an armed fd. */
static int before_io(int fd, const char *op)
{
	rule r;

	if (fd < 0 || fd >= MAX_FD || atomic_load(&armed[fd]) == 0 || !read_rule(&r) ||
	    strcmp(r.op, op) != 0) {
		return 0;
	}
	return act(&r, NULL);
}

#define REAL(name, ret, ...)                                                                       \
	static ret (*real_##name)(__VA_ARGS__);                                                    \
	if (real_##name == NULL) {                                                                 \
		void *sym_ = dlsym(RTLD_NEXT, #name);                                              \
		memcpy(&real_##name, &sym_, sizeof(sym_));                                         \
	}

static mode_t open_mode(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) != 0 ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
	REAL(open, int, const char *, int, ...)
	va_list ap;
	mode_t mode;
	int fd;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (before_open(path, flags) != 0) {
		return -1;
	}
	fd = real_open(path, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) != 0) {
		arm_fd(fd, path);
	}
	return fd;
}

int open64(const char *path, int flags, ...)
{
	REAL(open64, int, const char *, int, ...)
	va_list ap;
	mode_t mode;
	int fd;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (before_open(path, flags) != 0) {
		return -1;
	}
	fd = real_open64(path, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) != 0) {
		arm_fd(fd, path);
	}
	return fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	REAL(openat, int, int, const char *, int, ...)
	va_list ap;
	mode_t mode;
	int fd;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (before_open(path, flags) != 0) {
		return -1;
	}
	fd = real_openat(dirfd, path, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) != 0) {
		arm_fd(fd, path);
	}
	return fd;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	REAL(openat64, int, int, const char *, int, ...)
	va_list ap;
	mode_t mode;
	int fd;

	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	if (before_open(path, flags) != 0) {
		return -1;
	}
	fd = real_openat64(dirfd, path, flags, mode);
	if (fd >= 0 && (flags & O_CREAT) != 0) {
		arm_fd(fd, path);
	}
	return fd;
}

int close(int fd)
{
	REAL(close, int, int)
	if (fd >= 0 && fd < MAX_FD) {
		atomic_store(&armed[fd], 0);
	}
	return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	REAL(write, ssize_t, int, const void *, size_t)
	if (before_io(fd, "write") != 0) {
		return -1;
	}
	return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, ssize_t, int, const void *, size_t, off_t)
	if (before_io(fd, "write") != 0) {
		return -1;
	}
	return real_pwrite(fd, buf, n, off);
}

int fsync(int fd)
{
	REAL(fsync, int, int)
	if (before_io(fd, "fsync") != 0) {
		return -1;
	}
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	REAL(fdatasync, int, int)
	if (before_io(fd, "fsync") != 0) {
		return -1;
	}
	return real_fdatasync(fd);
}

/* A rename whose target ends with the rule's SUBSTRING: `run` does it. */
static int rename_rule(const char *to, int (*run)(const void *), const void *arg)
{
	rule r;
	int rc;

	if (to == NULL || !read_rule(&r) || strcmp(r.op, "rename") != 0 ||
	    !ends_with(to, r.needle) || !count_match(&r)) {
		return run(arg);
	}
	if (strcmp(r.action, "after") != 0) {
		return act(&r, to) != 0 ? -1 : run(arg);
	}
	rc = run(arg);
	note_hit(r.op, r.action, to);
	stall(r.text);
	return rc;
}

typedef struct rename_args {
	int olddirfd, newdirfd;
	const char *from, *to;
	unsigned flags;
} rename_args;

static int run_rename(const void *arg)
{
	REAL(rename, int, const char *, const char *)
	const rename_args *a = arg;

	return real_rename(a->from, a->to);
}

static int run_renameat(const void *arg)
{
	REAL(renameat, int, int, const char *, int, const char *)
	const rename_args *a = arg;

	return real_renameat(a->olddirfd, a->from, a->newdirfd, a->to);
}

static int run_renameat2(const void *arg)
{
	REAL(renameat2, int, int, const char *, int, const char *, unsigned)
	const rename_args *a = arg;

	return real_renameat2(a->olddirfd, a->from, a->newdirfd, a->to, a->flags);
}

int rename(const char *from, const char *to)
{
	rename_args a = {.from = from, .to = to};

	return rename_rule(to, run_rename, &a);
}

int renameat(int olddirfd, const char *from, int newdirfd, const char *to)
{
	rename_args a = {.olddirfd = olddirfd, .from = from, .newdirfd = newdirfd, .to = to};

	return rename_rule(to, run_renameat, &a);
}

int renameat2(int olddirfd, const char *from, int newdirfd, const char *to, unsigned flags)
{
	rename_args a = {
		.olddirfd = olddirfd, .from = from, .newdirfd = newdirfd, .to = to, .flags = flags};

	return rename_rule(to, run_renameat2, &a);
}
