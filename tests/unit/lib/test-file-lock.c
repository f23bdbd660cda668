/* Lock files and exclusive creation (nkp/lib/file.c): what keeps two writers
 * of one keysafe, or two daemons on one state directory, apart. */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <nkp/nkp.h>

#include "internal.h"

static char dir[64];

static void dir_setup(void)
{
	const char *t = getenv("TMPDIR");

	cr_assert_eq(nkp_init(), NKP_OK);
	snprintf(dir, sizeof(dir), "%s/nkp-lock-XXXXXX", t != NULL && strlen(t) < 32 ? t : "/tmp");
	cr_assert_not_null(mkdtemp(dir));
}

static void dir_teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	nkpi_file_set_hook(NKPI_FILE_NORMAL);
	if (d == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			if (unlink(p) != 0) {
				rmdir(p);
			}
		}
	}
	closedir(d);
	rmdir(dir);
}

TestSuite(file_lock, .init = dir_setup, .fini = dir_teardown);
TestSuite(file_new, .init = dir_setup, .fini = dir_teardown);

static const char *in_dir(const char *name)
{
	static char p[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static size_t dir_entries(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL) {
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	}
	closedir(d);
	return n;
}

/* The whole contents of a small file as a string ("" if empty). */
static const char *contents(const char *path)
{
	static char buf[256];
	uint8_t *b = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_file_read(path, sizeof(buf) - 1, &b, &len), NKP_OK, "read %s", path);
	memcpy(buf, b, len);
	buf[len] = '\0';
	free(b);
	return buf;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- lock files ---- */

Test(file_lock, a_second_take_is_refused_until_the_first_lets_go)
{
	const char *path = in_dir("k.lock");
	nkp_file_lock *a = NULL, *b = NULL;

	cr_assert_eq(nkp_file_lock_take(path, 0, &a), NKP_OK);
	/* Another open of the same file, in the same process: refused. */
	cr_assert_eq(nkp_file_lock_take(path, 0, &b), NKP_ERR_STATE);
	cr_assert_null(b);
	cr_assert_eq(nkp_file_lock_take(path, 50, &b), NKP_ERR_STATE);
	nkp_file_unlock(a);
	cr_assert_eq(nkp_file_lock_take(path, 0, &b), NKP_OK);
	nkp_file_unlock(b);
	nkp_file_unlock(NULL);
}

Test(file_lock, the_holder_pid_is_recorded_while_held_and_cleared_after)
{
	const char *path = in_dir("k.lock");
	char want[32];
	struct stat st;
	nkp_file_lock *l = NULL;

	cr_assert_eq(nkp_file_lock_holder(path), 0, "no file, no holder");
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_OK);
	snprintf(want, sizeof(want), "%ld\n", (long)getpid());
	cr_assert_str_eq(contents(path), want, "a lock file holds its holder's pid, nothing else");
	cr_assert_eq(nkp_file_lock_holder(path), (long)getpid());
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	nkp_file_unlock(l);
	cr_assert_str_eq(contents(path), "");
	cr_assert_eq(nkp_file_lock_holder(path), 0);
	/* The file stays: a waiter may hold it open. */
	cr_assert_eq(stat(path, &st), 0);
}

/* A child that takes the lock, says so on `ready`, and lets go when it
 * reads a byte from `go` (or dies with `die_holding`). */
static pid_t holder_child(const char *path, int ready[2], int go[2], bool die_holding)
{
	char c = 'r';
	pid_t pid;

	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		nkp_file_lock *l = NULL;

		if (nkp_file_lock_take(path, 0, &l) != NKP_OK || write(ready[1], &c, 1) != 1) {
			_exit(1);
		}
		if (read(go[0], &c, 1) != 1) {
			_exit(1);
		}
		if (die_holding) {
			_exit(0); /* no unlock: the kernel lets go */
		}
		nkp_file_unlock(l);
		_exit(0);
	}
	close(ready[1]);
	close(go[0]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the child could not take the lock");
	return pid;
}

static void reap(pid_t pid)
{
	int st = 0;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

Test(file_lock, another_process_holding_it_is_named_and_a_waiter_gets_it_after)
{
	const char *path = in_dir("k.lock");
	int ready[2], go[2];
	nkp_file_lock *l = NULL;
	pid_t pid = holder_child(path, ready, go, false);

	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_ERR_STATE);
	cr_assert_eq(nkp_file_lock_holder(path), (long)pid);
	/* Let it go, then wait for it: the wait ends when the child does. */
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(nkp_file_lock_take(path, 30000, &l), NKP_OK);
	cr_assert_eq(nkp_file_lock_holder(path), (long)getpid());
	nkp_file_unlock(l);
	reap(pid);
}

Test(file_lock, a_wait_gives_up_after_its_bound)
{
	const char *path = in_dir("k.lock");
	int ready[2], go[2];
	nkp_file_lock *l = NULL;
	pid_t pid = holder_child(path, ready, go, false);
	uint64_t t0 = now_ms(), spent;

	cr_assert_eq(nkp_file_lock_take(path, 300, &l), NKP_ERR_STATE);
	spent = now_ms() - t0;
	cr_assert_geq(spent, 300, "gave up after %llu ms", (unsigned long long)spent);
	/* Generous: a loaded machine may run the waiter late. */
	cr_assert_lt(spent, 10000, "gave up only after %llu ms", (unsigned long long)spent);
	cr_assert_eq(write(go[1], "g", 1), 1);
	reap(pid);
}

Test(file_lock, a_holder_that_dies_leaves_the_lock_free)
{
	const char *path = in_dir("k.lock");
	int ready[2], go[2];
	nkp_file_lock *l = NULL;
	pid_t pid = holder_child(path, ready, go, true);

	cr_assert_eq(write(go[1], "g", 1), 1);
	reap(pid);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_OK);
	nkp_file_unlock(l);
}

Test(file_lock, a_symlink_lock_file_is_refused_and_its_target_untouched)
{
	const char *target = in_dir("precious");
	const char *path = in_dir("k.lock");
	nkp_file_lock *l = NULL;

	cr_assert_eq(nkp_file_write_atomic(target, (const uint8_t *)"data", 4, 0600, false, true),
		     NKP_OK);
	cr_assert_eq(symlink(target, path), 0);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_ERR_PERM);
	cr_assert_str_eq(contents(target), "data");
	/* Dangling: nothing is created through it either. */
	cr_assert_eq(unlink(target), 0);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_ERR_PERM);
	cr_assert_eq(access(target, F_OK), -1);
}

Test(file_lock, a_hard_linked_lock_file_is_refused_and_its_other_name_untouched)
{
	const char *other = in_dir("precious");
	const char *path = in_dir("k.lock");
	nkp_file_lock *l = NULL;

	cr_assert_eq(nkp_file_write_atomic(other, (const uint8_t *)"data", 4, 0600, false, true),
		     NKP_OK);
	cr_assert_eq(link(other, path), 0);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_ERR_PERM);
	cr_assert_str_eq(contents(other), "data");
}

Test(file_lock, a_fifo_or_a_directory_is_refused_at_once)
{
	const char *path = in_dir("k.lock");
	nkp_file_lock *l = NULL;

	cr_assert_eq(mkfifo(path, 0600), 0);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_ERR_INVALID);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_assert_neq(nkp_file_lock_take(path, 0, &l), NKP_OK);
	cr_assert_null(l);
}

Test(file_lock, a_loose_lock_file_is_made_0600_and_bad_arguments_refused)
{
	const char *path = in_dir("k.lock");
	nkp_file_lock *l = NULL;
	struct stat st;
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);

	cr_assert_geq(fd, 0);
	cr_assert_eq(fchmod(fd, 0666), 0);
	close(fd);
	cr_assert_eq(nkp_file_lock_take(path, 0, &l), NKP_OK);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	nkp_file_unlock(l);
	cr_assert_eq(nkp_file_lock_take(in_dir("nodir/k.lock"), 0, &l), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_file_lock_take(NULL, 0, &l), NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_lock_take("", 0, &l), NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_lock_take(path, 0, NULL), NKP_ERR_INVALID);
}

/* ---- exclusive creation ---- */

Test(file_new, creates_the_file_with_its_mode_and_no_temp_left)
{
	const char *path = in_dir("ks");
	struct stat st;

	cr_assert_eq(nkp_file_write_new(path, (const uint8_t *)"abc", 3, 0600), NKP_OK);
	cr_assert_str_eq(contents(path), "abc");
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(dir_entries(), 1);
}

static void refuses_what_exists(void)
{
	const char *path = in_dir("ks");
	const char *target = in_dir("elsewhere");
	char link_to[512];

	cr_assert_eq(nkp_file_write_new(path, (const uint8_t *)"first", 5, 0600), NKP_OK);
	cr_assert_eq(nkp_file_write_new(path, (const uint8_t *)"second", 6, 0600), NKP_ERR_EXISTS);
	cr_assert_str_eq(contents(path), "first");
	cr_assert_eq(dir_entries(), 1, "no temp file left");
	/* A dangling symlink exists too: nothing is made through it. */
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(symlink(target, path), 0);
	cr_assert_eq(nkp_file_write_new(path, (const uint8_t *)"second", 6, 0600), NKP_ERR_EXISTS);
	cr_assert_eq(access(target, F_OK), -1);
	cr_assert_gt(readlink(path, link_to, sizeof(link_to)), 0);
	cr_assert_eq(dir_entries(), 1);
}

Test(file_new, refuses_an_existing_file_or_symlink_and_leaves_it)
{
	refuses_what_exists();
}

Test(file_new, refuses_the_same_way_where_rename_noreplace_is_missing)
{
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	refuses_what_exists();
}

typedef struct creator {
	pthread_barrier_t *go;
	const char *path;
	char body[16];
	nkp_err err;
} creator;

static void *create_one(void *arg)
{
	creator *c = arg;

	pthread_barrier_wait(c->go);
	c->err = nkp_file_write_new(c->path, (const uint8_t *)c->body, strlen(c->body), 0600);
	return NULL;
}

static void one_of_many_creators_wins(void)
{
	enum { N = 8 };
	pthread_barrier_t go;
	pthread_t t[N];
	creator c[N];
	int wins = 0, winner = -1;
	const char *path = in_dir("ks");

	pthread_barrier_init(&go, NULL, N);
	for (int i = 0; i < N; i++) {
		c[i].go = &go;
		c[i].path = path;
		snprintf(c[i].body, sizeof(c[i].body), "creator %d", i);
		cr_assert_eq(pthread_create(&t[i], NULL, create_one, &c[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
	}
	for (int i = 0; i < N; i++) {
		cr_assert(c[i].err == NKP_OK || c[i].err == NKP_ERR_EXISTS, "creator %d: %s", i,
			  nkp_strerror(c[i].err));
		if (c[i].err == NKP_OK) {
			wins++;
			winner = i;
		}
	}
	cr_assert_eq(wins, 1, "%d creators were told they made the file", wins);
	cr_assert_str_eq(contents(path), c[winner].body);
	cr_assert_eq(dir_entries(), 1, "no temp file left");
	pthread_barrier_destroy(&go);
}

Test(file_new, of_many_creators_at_once_exactly_one_wins)
{
	one_of_many_creators_wins();
}

Test(file_new, of_many_creators_at_once_exactly_one_wins_without_rename_noreplace)
{
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	one_of_many_creators_wins();
}

Test(file_new, a_failed_write_leaves_nothing)
{
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(nkp_file_write_new(in_dir("ks"), (const uint8_t *)"abc", 3, 0600),
		     NKP_ERR_NOSPC);
	cr_assert_eq(dir_entries(), 0);
	cr_assert_eq(nkp_file_write_new(in_dir("nodir/ks"), (const uint8_t *)"abc", 3, 0600),
		     NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_file_write_new(NULL, (const uint8_t *)"abc", 3, 0600), NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_write_new(in_dir("ks/"), (const uint8_t *)"abc", 3, 0600),
		     NKP_ERR_INVALID);
}
