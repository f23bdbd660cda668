/* Atomic files, sealed files and key files. */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "sealed.pb-c.h"

#include "vectors.h"

static char dir[64];

static void dir_setup(void)
{
	const char *t = getenv("TMPDIR");

	cr_assert_eq(nkp_init(), NKP_OK);
	snprintf(dir, sizeof(dir), "%s/nkp-file-XXXXXX", t != NULL && strlen(t) < 32 ? t : "/tmp");
	cr_assert_not_null(mkdtemp(dir));
}

static void dir_teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

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

TestSuite(file, .init = dir_setup, .fini = dir_teardown);
TestSuite(sealfile, .init = dir_setup, .fini = dir_teardown);
TestSuite(keyfile, .init = dir_setup, .fini = dir_teardown);

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

static void assert_contents(const char *path, const char *want)
{
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_file_read(path, 1 << 20, &buf, &len), NKP_OK, "read %s", path);
	cr_assert_eq(len, strlen(want));
	cr_assert_arr_eq(buf, want, len);
	free(buf);
}

static nkp_err write_str(const char *path, const char *s, bool keep_prev)
{
	return nkp_file_write_atomic(path, (const uint8_t *)s, strlen(s), 0600, keep_prev, true);
}

static void fixed_key(uint8_t first, nkp_key **out)
{
	uint8_t b[NKP_KEY_BYTES];

	for (size_t i = 0; i < sizeof(b); i++) {
		b[i] = (uint8_t)(first + i);
	}
	cr_assert_eq(nkp_key_from_bytes(b, out), NKP_OK);
}

/* ---- atomic files ---- */

Test(file, write_then_read_returns_the_same_bytes)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "hello", false), NKP_OK);
	assert_contents(p, "hello");
	cr_assert_eq(dir_entries(), 1);
}

Test(file, stale_temps_of_an_interrupted_write_are_removed_and_nothing_else)
{
	static const char *const names[] = {
		"state.tmp.0123456789abcdef", "state.prev.tmp.fedcba9876543210", /* removed */
		"state.tmp.xyz", "other.tmp.0123456789abcdef",			 /* kept */
	};
	char p[512];

	cr_assert_eq(write_str(in_dir("state"), "kept", false), NKP_OK);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		cr_assert_eq(write_str(p, "x", false), NKP_OK);
	}
	nkp_file_remove_stale_temps(in_dir("state"));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		cr_assert_eq(access(p, F_OK) == 0, i >= 2, "%s", names[i]);
	}
	assert_contents(in_dir("state"), "kept");
	cr_assert_eq(dir_entries(), 3);
}

Test(file, bulk_writes_without_fsync_are_atomic_and_synced_once_at_the_end)
{
	const char *p = in_dir("bulk");

	cr_assert_eq(nkp_file_write_atomic(p, (const uint8_t *)"one", 3, 0600, false, false),
		     NKP_OK);
	cr_assert_eq(nkp_file_write_atomic(p, (const uint8_t *)"two", 3, 0600, false, false),
		     NKP_OK);
	assert_contents(p, "two");
	cr_assert_eq(dir_entries(), 1, "no temp file left behind");
	cr_assert_eq(nkp_file_sync_dir(dir), NKP_OK);
}

Test(file, sync_dir_refuses_what_is_not_a_directory)
{
	cr_assert_eq(nkp_file_sync_dir(NULL), NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_sync_dir(""), NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_sync_dir(in_dir("missing")), NKP_ERR_NOT_FOUND);
	cr_assert_eq(write_str(in_dir("plain"), "x", false), NKP_OK);
	cr_assert_eq(nkp_file_sync_dir(in_dir("plain")), NKP_ERR_INVALID);
}

Test(file, overwrite_replaces_the_contents)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "first version", false), NKP_OK);
	cr_assert_eq(write_str(p, "second", false), NKP_OK);
	assert_contents(p, "second");
	cr_assert_eq(dir_entries(), 1);
}

Test(file, keep_prev_keeps_the_previous_copy)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	cr_assert_eq(access(in_dir("state.prev"), F_OK), -1, "no .prev before a second write");
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_eq(write_str(p, "three", true), NKP_OK);
	assert_contents(p, "three");
	assert_contents(in_dir("state.prev"), "two");
	cr_assert_eq(dir_entries(), 2);
}

Test(file, new_file_gets_the_requested_mode)
{
	const char *p = in_dir("state");
	struct stat st;

	cr_assert_eq(write_str(p, "x", false), NKP_OK);
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
}

Test(file, failed_write_leaves_old_file_intact_and_no_temp_file)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "old contents", true), NKP_OK);
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(write_str(p, "new contents", true), NKP_ERR_NOSPC);
	assert_contents(p, "old contents");
	cr_assert_eq(dir_entries(), 1, "temp file left behind");
	cr_assert_eq(write_str(p, "new contents", true), NKP_OK, "only one write fails");
	assert_contents(p, "new contents");
	assert_contents(in_dir("state.prev"), "old contents");
}

Test(file, fail_hook_fails_exactly_the_next_n_writes)
{
	const char *p = in_dir("state");

	nkpi_file_fail_next_writes(2, NKP_ERR_IO);
	cr_assert_eq(write_str(p, "a", false), NKP_ERR_IO);
	cr_assert_eq(write_str(p, "a", false), NKP_ERR_IO);
	cr_assert_eq(dir_entries(), 0);
	cr_assert_eq(write_str(p, "a", false), NKP_OK);
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	nkpi_file_fail_next_writes(0, NKP_ERR_NOSPC);
	cr_assert_eq(write_str(p, "b", false), NKP_OK, "0 disables the hook");
	nkpi_file_fail_next_writes(1, NKP_OK);
	cr_assert_eq(write_str(p, "c", false), NKP_ERR_IO, "an injected failure always fails");
	assert_contents(p, "b");
}

Test(file, write_into_missing_directory_is_not_found)
{
	cr_assert_eq(write_str(in_dir("nope/state"), "x", false), NKP_ERR_NOT_FOUND);
}

Test(file, write_into_read_only_directory_is_perm)
{
	const char *sub = in_dir("ro");

	if (geteuid() == 0) {
		cr_skip_test("root ignores directory permissions");
	}
	cr_assert_eq(mkdir(sub, 0500), 0);
	cr_assert_eq(write_str(in_dir("ro/state"), "x", false), NKP_ERR_PERM);
}

Test(file, write_refuses_to_replace_a_directory_or_symlink)
{
	cr_assert_eq(mkdir(in_dir("d"), 0700), 0);
	cr_assert_eq(write_str(in_dir("d"), "x", false), NKP_ERR_INVALID);
	cr_assert_eq(symlink("elsewhere", in_dir("l")), 0);
	cr_assert_eq(write_str(in_dir("l"), "x", true), NKP_ERR_INVALID);
	cr_assert_eq(dir_entries(), 2);
}

Test(file, write_refuses_bad_arguments)
{
	cr_assert_eq(nkp_file_write_atomic(NULL, (const uint8_t *)"x", 1, 0600, false, true),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_write_atomic("", (const uint8_t *)"x", 1, 0600, false, true),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkp_file_write_atomic(in_dir("s"), NULL, 1, 0600, false, true),
		     NKP_ERR_INVALID);
	cr_assert_eq(
		nkp_file_write_atomic(in_dir("s"), (const uint8_t *)"x", 1, 010600, false, true),
		NKP_ERR_INVALID);
	cr_assert_eq(dir_entries(), 0);
}

Test(file, empty_file_round_trips)
{
	const char *p = in_dir("empty");
	uint8_t *buf = NULL;
	size_t len = 99;

	cr_assert_eq(nkp_file_write_atomic(p, NULL, 0, 0600, false, false), NKP_OK);
	cr_assert_eq(nkp_file_read(p, 10, &buf, &len), NKP_OK);
	cr_assert_eq(len, 0);
	free(buf);
}

Test(file, read_of_missing_file_is_not_found)
{
	uint8_t *buf = (uint8_t *)"untouched";
	size_t len = 7;

	cr_assert_eq(nkp_file_read(in_dir("missing"), 10, &buf, &len), NKP_ERR_NOT_FOUND);
	cr_assert_str_eq((char *)buf, "untouched");
	cr_assert_eq(len, 7);
}

Test(file, read_over_the_limit_is_too_large)
{
	const char *p = in_dir("big");
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(write_str(p, "0123456789", false), NKP_OK);
	cr_assert_eq(nkp_file_read(p, 9, &buf, &len), NKP_ERR_TOO_LARGE);
	cr_assert_null(buf);
	cr_assert_eq(nkp_file_read(p, 10, &buf, &len), NKP_OK);
	cr_assert_eq(len, 10);
	free(buf);
}

Test(file, read_refuses_directories_and_fifos)
{
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_file_read(dir, 100, &buf, &len), NKP_ERR_INVALID);
	cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
	cr_assert_eq(nkp_file_read(in_dir("fifo"), 100, &buf, &len), NKP_ERR_INVALID);
	cr_assert_null(buf);
}

/* ---- keep_prev: the exchange, its fallback, failures and crashes ---- */

/* Each test runs in its own process; the hook is reset for the next. */
static void hook_teardown(void)
{
	nkpi_file_set_hook(NKPI_FILE_NORMAL);
	dir_teardown();
}

TestSuite(file_prev, .init = dir_setup, .fini = hook_teardown);

/* The name of the one entry of the test directory that is neither
 * "state" nor "state.prev", or "" if there is none. */
static const char *temp_entry(void)
{
	static char name[256];
	DIR *d = opendir(dir);
	struct dirent *e;

	cr_assert_not_null(d);
	name[0] = '\0';
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    strcmp(e->d_name, "state") != 0 && strcmp(e->d_name, "state.prev") != 0) {
			cr_assert_eq(name[0], '\0', "a second temp file %s", e->d_name);
			snprintf(name, sizeof(name), "%s", e->d_name);
		}
	}
	closedir(d);
	return name;
}

/* First, second and third write with keep_prev, in the current mode. */
static void check_prev_sequence(void)
{
	const char *p = in_dir("state");
	struct stat st;

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	assert_contents(p, "one");
	cr_assert_eq(access(in_dir("state.prev"), F_OK), -1, "a first write makes no .prev");
	cr_assert_eq(dir_entries(), 1);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	assert_contents(p, "two");
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_eq(write_str(p, "three", true), NKP_OK);
	assert_contents(p, "three");
	assert_contents(in_dir("state.prev"), "two");
	cr_assert_eq(dir_entries(), 2, "no temp file left behind");
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(st.st_nlink, 1, "path and .prev are distinct files");
}

Test(file_prev, each_write_moves_the_previous_contents_to_prev)
{
	check_prev_sequence();
}

Test(file_prev, each_write_moves_the_previous_contents_to_prev_without_exchange)
{
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	check_prev_sequence();
}

Test(file_prev, modes_can_alternate_on_the_same_files)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	nkpi_file_set_hook(NKPI_FILE_NORMAL);
	cr_assert_eq(write_str(p, "three", true), NKP_OK);
	assert_contents(p, "three");
	assert_contents(in_dir("state.prev"), "two");
	cr_assert_eq(dir_entries(), 2);
}

/* An injected failure (after the temp file is written) changes nothing. */
static void check_injected_failure(void)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(write_str(p, "three", true), NKP_ERR_NOSPC);
	assert_contents(p, "two");
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_str_eq(temp_entry(), "", "temp file left behind");
}

Test(file_prev, injected_failure_leaves_path_and_prev_unchanged)
{
	check_injected_failure();
}

Test(file_prev, injected_failure_leaves_path_and_prev_unchanged_without_exchange)
{
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	check_injected_failure();
}

Test(file_prev, failed_rename_to_prev_is_undone_and_reported)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	nkpi_file_set_hook(NKPI_FILE_FAIL_PREV_RENAME);
	cr_assert_eq(write_str(p, "three", true), NKP_ERR_IO);
	assert_contents(p, "two");
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_str_eq(temp_entry(), "", "temp file left behind");
	nkpi_file_set_hook(NKPI_FILE_NORMAL);
	cr_assert_eq(write_str(p, "three", true), NKP_OK);
	assert_contents(in_dir("state.prev"), "two");
}

Test(file_prev, crash_after_the_exchange_leaves_whole_files_and_a_removable_temp)
{
	const char *p = in_dir("state");
	const char *tmp;

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	nkpi_file_set_hook(NKPI_FILE_STOP_AFTER_EXCHANGE);
	cr_assert_eq(write_str(p, "three", true), NKP_ERR_IO);
	nkpi_file_set_hook(NKPI_FILE_NORMAL);
	assert_contents(p, "three");
	assert_contents(in_dir("state.prev"), "one");
	tmp = temp_entry();
	cr_assert_eq(strncmp(tmp, "state.tmp.", 10), 0, "the old contents under %s", tmp);
	assert_contents(in_dir(tmp), "two");
	nkp_file_remove_stale_temps(p);
	cr_assert_eq(dir_entries(), 2, "the stale temp file is removed");
	assert_contents(p, "three");
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_eq(write_str(p, "four", true), NKP_OK);
	assert_contents(in_dir("state.prev"), "three");
}

/* "state.prev" a second name of "state", as a crash between the
 * fallback's two renames leaves it. */
static void check_prev_as_second_name(void)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_OK);
	cr_assert_eq(link(p, in_dir("state.prev")), 0);
	cr_assert_eq(write_str(p, "two", true), NKP_OK);
	assert_contents(p, "two");
	assert_contents(in_dir("state.prev"), "one");
	cr_assert_eq(dir_entries(), 2, "no temp file left behind");
}

Test(file_prev, prev_as_a_second_name_of_path_is_handled)
{
	check_prev_as_second_name();
}

Test(file_prev, prev_as_a_second_name_of_path_is_handled_without_exchange)
{
	nkpi_file_set_hook(NKPI_FILE_NO_EXCHANGE);
	check_prev_as_second_name();
}

Test(file_prev, symlink_or_directory_target_is_refused_and_left_alone)
{
	char link_to[64] = {0};

	cr_assert_eq(symlink("elsewhere", in_dir("state")), 0);
	cr_assert_eq(write_str(in_dir("state"), "x", true), NKP_ERR_INVALID);
	cr_assert_eq(readlink(in_dir("state"), link_to, sizeof(link_to) - 1), 9);
	cr_assert_str_eq(link_to, "elsewhere");
	cr_assert_eq(dir_entries(), 1);
	cr_assert_eq(unlink(in_dir("state")), 0);
	cr_assert_eq(mkdir(in_dir("state"), 0700), 0);
	cr_assert_eq(write_str(in_dir("state"), "x", true), NKP_ERR_INVALID);
	cr_assert_eq(dir_entries(), 1);
	cr_assert_eq(rmdir(in_dir("state")), 0, "the directory is still empty");
}

/* A "state.prev" that is not a regular file refuses a keep_prev write. */
static void check_prev_refused(size_t entries)
{
	const char *p = in_dir("state");

	cr_assert_eq(write_str(p, "one", true), NKP_ERR_INVALID);
	assert_contents(p, "old");
	cr_assert_eq(dir_entries(), entries, "temp file left behind");
	cr_assert_eq(write_str(p, "one", false), NKP_OK, "without keep_prev .prev is not used");
	assert_contents(p, "one");
}

Test(file_prev, prev_that_is_a_symlink_is_refused_and_nothing_changes)
{
	char link_to[64] = {0};

	cr_assert_eq(write_str(in_dir("state"), "old", false), NKP_OK);
	cr_assert_eq(write_str(in_dir("target"), "elsewhere", false), NKP_OK);
	cr_assert_eq(symlink("target", in_dir("state.prev")), 0);
	check_prev_refused(3);
	cr_assert_eq(readlink(in_dir("state.prev"), link_to, sizeof(link_to) - 1), 6);
	cr_assert_str_eq(link_to, "target");
	assert_contents(in_dir("target"), "elsewhere");
}

Test(file_prev, prev_that_is_a_directory_is_refused_and_nothing_changes)
{
	cr_assert_eq(write_str(in_dir("state"), "old", false), NKP_OK);
	cr_assert_eq(mkdir(in_dir("state.prev"), 0700), 0);
	check_prev_refused(2);
	cr_assert_eq(rmdir(in_dir("state.prev")), 0, "the directory is still empty");
}

Test(file_prev, prev_is_not_looked_at_before_path_exists)
{
	cr_assert_eq(mkdir(in_dir("state.prev"), 0700), 0);
	cr_assert_eq(write_str(in_dir("state"), "one", true), NKP_OK);
	assert_contents(in_dir("state"), "one");
}

Test(file_prev, path_too_long_for_its_derived_names_is_invalid)
{
	char p[PATH_MAX + 16];
	size_t n = strlen(dir);

	memcpy(p, dir, n);
	p[n++] = '/';
	/* Short enough for PATH_MAX itself, too long with ".prev.tmp.<hex>". */
	memset(p + n, 'a', PATH_MAX - 10 - n);
	p[PATH_MAX - 10] = '\0';
	cr_assert_eq(write_str(p, "x", true), NKP_ERR_INVALID);
	cr_assert_eq(write_str(p, "x", false), NKP_ERR_INVALID);
	cr_assert_eq(dir_entries(), 0);
}

Test(file_prev, many_writes_leave_exactly_path_and_prev)
{
	const char *p = in_dir("state");
	char s[32];

	for (int i = 0; i < 200; i++) {
		snprintf(s, sizeof(s), "write %d", i);
		cr_assert_eq(write_str(p, s, true), NKP_OK);
	}
	assert_contents(p, "write 199");
	assert_contents(in_dir("state.prev"), "write 198");
	cr_assert_eq(dir_entries(), 2);
}

/* ---- sealed files ---- */

static const char payload[] = "service state: providers, hosts, generation 42";

static void seal(const nkp_key *k, const char *label, uint8_t **out, size_t *outlen)
{
	cr_assert_eq(
		nkp_seal_bytes(k, label, (const uint8_t *)payload, sizeof(payload), out, outlen),
		NKP_OK);
}

Test(sealfile, seal_then_unseal_returns_the_payload)
{
	nkp_key *k;
	uint8_t *buf, *pt = NULL;
	size_t len, ptlen = 0;

	fixed_key(1, &k);
	seal(k, "nkpd-state", &buf, &len);
	cr_assert_eq(nkp_unseal_bytes(k, "nkpd-state", buf, len, &pt, &ptlen), NKP_OK);
	cr_assert_eq(ptlen, sizeof(payload));
	cr_assert_arr_eq(pt, payload, ptlen);
	nkp_secure_free(pt);
	nkp_secure_free(NULL);
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, empty_payload_round_trips)
{
	nkp_key *k;
	uint8_t *buf, *pt = NULL;
	size_t len, ptlen = 1;

	fixed_key(1, &k);
	cr_assert_eq(nkp_seal_bytes(k, "x", NULL, 0, &buf, &len), NKP_OK);
	cr_assert_eq(nkp_unseal_bytes(k, "x", buf, len, &pt, &ptlen), NKP_OK);
	cr_assert_eq(ptlen, 0);
	nkp_secure_free(pt);
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, two_seals_of_the_same_payload_differ)
{
	nkp_key *k;
	uint8_t *a, *b;
	size_t alen, blen;

	fixed_key(1, &k);
	seal(k, "l", &a, &alen);
	seal(k, "l", &b, &blen);
	cr_assert_eq(alen, blen);
	cr_assert(memcmp(a, b, alen) != 0, "fresh nonce per seal");
	free(a);
	free(b);
	nkp_key_free(k);
}

Test(sealfile, wrong_label_or_key_is_auth)
{
	nkp_key *k, *other;
	uint8_t *buf, *pt = (uint8_t *)"untouched";
	size_t len, ptlen = 5;

	fixed_key(1, &k);
	fixed_key(2, &other);
	seal(k, "nkpd-state", &buf, &len);
	cr_assert_eq(nkp_unseal_bytes(k, "host-state", buf, len, &pt, &ptlen), NKP_ERR_AUTH);
	cr_assert_eq(nkp_unseal_bytes(other, "nkpd-state", buf, len, &pt, &ptlen), NKP_ERR_AUTH);
	cr_assert_str_eq((char *)pt, "untouched");
	cr_assert_eq(ptlen, 5);
	free(buf);
	nkp_key_free(k);
	nkp_key_free(other);
}

/* A file whose label field is rewritten still opens only under the label
 * it was sealed with: the caller's label is the associated data. */
Test(sealfile, rewritten_label_field_is_auth)
{
	Nkp__Sealed__SealedFile *m;
	nkp_key *k;
	uint8_t *buf, *forged, *pt = NULL;
	size_t len, flen, ptlen;
	char *orig;

	fixed_key(1, &k);
	seal(k, "host-state", &buf, &len);
	m = nkp__sealed__sealed_file__unpack(NULL, len, buf);
	cr_assert_not_null(m);
	orig = m->label;
	m->label = (char *)"nkpd-state";
	flen = nkp__sealed__sealed_file__get_packed_size(m);
	forged = malloc(flen);
	nkp__sealed__sealed_file__pack(m, forged);
	m->label = orig;
	cr_assert_eq(nkp_unseal_bytes(k, "nkpd-state", forged, flen, &pt, &ptlen), NKP_ERR_AUTH);
	nkp__sealed__sealed_file__free_unpacked(m, NULL);
	free(forged);
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, every_single_byte_flip_is_refused)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};
	nkp_key *k;
	uint8_t *buf, *pt;
	size_t len, ptlen;

	fixed_key(1, &k);
	seal(k, "nkpd-state", &buf, &len);
	for (size_t i = 0; i < len; i++) {
		for (size_t m = 0; m < sizeof(masks); m++) {
			nkp_err err;

			buf[i] ^= masks[m];
			pt = NULL;
			err = nkp_unseal_bytes(k, "nkpd-state", buf, len, &pt, &ptlen);
			cr_assert(err == NKP_ERR_AUTH || err == NKP_ERR_PARSE ||
					  err == NKP_ERR_FORMAT_VERSION,
				  "flip 0x%02x at %zu gave %s", masks[m], i, nkp_strerror(err));
			cr_assert_null(pt);
			buf[i] ^= masks[m];
		}
	}
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, every_truncation_is_refused)
{
	nkp_key *k;
	uint8_t *buf, *pt = NULL;
	size_t len, ptlen;

	fixed_key(1, &k);
	seal(k, "nkpd-state", &buf, &len);
	for (size_t n = 0; n < len; n++) {
		nkp_err err = nkp_unseal_bytes(k, "nkpd-state", buf, n, &pt, &ptlen);

		cr_assert(err == NKP_ERR_AUTH || err == NKP_ERR_PARSE ||
				  err == NKP_ERR_FORMAT_VERSION,
			  "truncation to %zu gave %s", n, nkp_strerror(err));
	}
	cr_assert_null(pt);
	free(buf);
	nkp_key_free(k);
}

static void repack(Nkp__Sealed__SealedFile *m, uint8_t **out, size_t *outlen)
{
	*outlen = nkp__sealed__sealed_file__get_packed_size(m);
	*out = malloc(*outlen + 2);
	nkp__sealed__sealed_file__pack(m, *out);
}

Test(sealfile, unknown_format_version_is_refused)
{
	Nkp__Sealed__SealedFile *m;
	nkp_key *k;
	uint8_t *buf, *v2, *pt = NULL;
	size_t len, v2len, ptlen;

	fixed_key(1, &k);
	seal(k, "l", &buf, &len);
	m = nkp__sealed__sealed_file__unpack(NULL, len, buf);
	m->format_version = 2;
	repack(m, &v2, &v2len);
	cr_assert_eq(nkp_unseal_bytes(k, "l", v2, v2len, &pt, &ptlen), NKP_ERR_FORMAT_VERSION);
	m->format_version = 0;
	free(v2);
	repack(m, &v2, &v2len);
	cr_assert_eq(nkp_unseal_bytes(k, "l", v2, v2len, &pt, &ptlen), NKP_ERR_FORMAT_VERSION);
	nkp__sealed__sealed_file__free_unpacked(m, NULL);
	free(v2);
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, unknown_field_and_bad_nonce_are_parse_errors)
{
	Nkp__Sealed__SealedFile *m;
	nkp_key *k;
	uint8_t *buf, *x, *pt = NULL;
	size_t len, xlen, ptlen;

	fixed_key(1, &k);
	seal(k, "l", &buf, &len);
	m = nkp__sealed__sealed_file__unpack(NULL, len, buf);
	repack(m, &x, &xlen);
	x[xlen] = 0x48; /* field 9, varint */
	x[xlen + 1] = 0x01;
	cr_assert_eq(nkp_unseal_bytes(k, "l", x, xlen + 2, &pt, &ptlen), NKP_ERR_PARSE);
	free(x);
	m->nonce.len = 12;
	repack(m, &x, &xlen);
	cr_assert_eq(nkp_unseal_bytes(k, "l", x, xlen, &pt, &ptlen), NKP_ERR_PARSE);
	m->nonce.len = NKP_NONCE_BYTES;
	free(x);
	m->ciphertext.len = NKP_TAG_BYTES - 1;
	repack(m, &x, &xlen);
	cr_assert_eq(nkp_unseal_bytes(k, "l", x, xlen, &pt, &ptlen), NKP_ERR_PARSE);
	m->ciphertext.len = 0;
	free(x);
	nkp__sealed__sealed_file__free_unpacked(m, NULL);
	free(buf);
	nkp_key_free(k);
}

Test(sealfile, bad_labels_and_arguments_are_invalid)
{
	char long_label[300];
	nkp_key *k;
	uint8_t *buf = NULL;
	size_t len;

	memset(long_label, 'a', sizeof(long_label) - 1);
	long_label[sizeof(long_label) - 1] = '\0';
	fixed_key(1, &k);
	cr_assert_eq(nkp_seal_bytes(k, "", (const uint8_t *)"x", 1, &buf, &len), NKP_ERR_INVALID);
	cr_assert_eq(nkp_seal_bytes(k, NULL, (const uint8_t *)"x", 1, &buf, &len), NKP_ERR_INVALID);
	cr_assert_eq(nkp_seal_bytes(k, long_label, (const uint8_t *)"x", 1, &buf, &len),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkp_seal_bytes(NULL, "l", (const uint8_t *)"x", 1, &buf, &len),
		     NKP_ERR_INVALID);
	cr_assert_null(buf);
	nkp_key_free(k);
}

Test(sealfile, sealed_output_never_holds_the_clear_bytes)
{
	nkp_key *k, *secret;
	uint8_t clear[NKP_KEY_BYTES];
	uint8_t *buf;
	size_t len;

	fixed_key(1, &k);
	cr_assert_eq(nkp_key_generate(&secret), NKP_OK);
	nkp_key_export(secret, clear);
	cr_assert_eq(nkp_seal_bytes(k, "keys", clear, sizeof(clear), &buf, &len), NKP_OK);
	for (size_t i = 0; i + 8 <= len; i++) {
		for (size_t j = 0; j + 8 <= sizeof(clear); j++) {
			cr_assert(memcmp(buf + i, clear + j, 8) != 0, "clear key bytes in output");
		}
	}
	sodium_memzero(clear, sizeof(clear));
	free(buf);
	nkp_key_free(secret);
	nkp_key_free(k);
}

Test(sealfile, file_round_trip_with_mode_0600_and_prev_copy)
{
	const char *p = in_dir("state.sealed");
	nkp_key *k;
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	struct stat st;

	fixed_key(1, &k);
	cr_assert_eq(nkp_sealfile_write(p, k, "nkpd-state", (const uint8_t *)"gen 1", 5), NKP_OK);
	cr_assert_eq(nkp_sealfile_write(p, k, "nkpd-state", (const uint8_t *)"gen 2", 5), NKP_OK);
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(nkp_sealfile_read(p, k, "nkpd-state", &pt, &ptlen), NKP_OK);
	cr_assert_eq(ptlen, 5);
	cr_assert_arr_eq(pt, "gen 2", 5);
	nkp_secure_free(pt);
	cr_assert_eq(nkp_sealfile_read(in_dir("state.sealed.prev"), k, "nkpd-state", &pt, &ptlen),
		     NKP_OK);
	cr_assert_arr_eq(pt, "gen 1", 5);
	nkp_secure_free(pt);
	nkp_key_free(k);
}

Test(sealfile, failed_write_keeps_the_old_sealed_file_readable)
{
	const char *p = in_dir("state.sealed");
	nkp_key *k;
	uint8_t *pt = NULL;
	size_t ptlen = 0;

	fixed_key(1, &k);
	cr_assert_eq(nkp_sealfile_write(p, k, "s", (const uint8_t *)"old", 3), NKP_OK);
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(nkp_sealfile_write(p, k, "s", (const uint8_t *)"new", 3), NKP_ERR_NOSPC);
	cr_assert_eq(dir_entries(), 1);
	cr_assert_eq(nkp_sealfile_read(p, k, "s", &pt, &ptlen), NKP_OK);
	cr_assert_arr_eq(pt, "old", 3);
	nkp_secure_free(pt);
	nkp_key_free(k);
}

Test(sealfile, missing_and_oversized_files_are_refused)
{
	const char *p = in_dir("huge");
	nkp_key *k;
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	int fd;

	fixed_key(1, &k);
	cr_assert_eq(nkp_sealfile_read(in_dir("missing"), k, "s", &pt, &ptlen), NKP_ERR_NOT_FOUND);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)NKP_SEALED_MAX_FILE + 1), 0);
	close(fd);
	cr_assert_eq(nkp_sealfile_read(p, k, "s", &pt, &ptlen), NKP_ERR_TOO_LARGE);
	cr_assert_eq(
		nkp_unseal_bytes(k, "s", (const uint8_t *)"", NKP_SEALED_MAX_FILE + 1, &pt, &ptlen),
		NKP_ERR_TOO_LARGE);
	cr_assert_null(pt);
	nkp_key_free(k);
}

/* ---- key files ---- */

Test(keyfile, create_makes_a_0600_key_that_loads_again)
{
	const char *p = in_dir("host.key");
	nkp_key *a = NULL, *b = NULL;
	uint8_t clear[NKP_KEY_BYTES];
	uint8_t *buf = NULL;
	size_t len = 0;
	struct stat st;

	cr_assert_eq(nkp_keyfile_load(p, true, &a), NKP_OK);
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(st.st_size, NKP_KEY_BYTES);
	cr_assert_eq(dir_entries(), 1, "no temp file left behind");
	cr_assert_eq(nkp_keyfile_load(p, false, &b), NKP_OK);
	cr_assert(nkp_key_equal(a, b));
	cr_assert_eq(nkp_file_read(p, 64, &buf, &len), NKP_OK);
	nkp_key_export(a, clear);
	cr_assert_arr_eq(buf, clear, NKP_KEY_BYTES);
	sodium_memzero(clear, sizeof(clear));
	sodium_memzero(buf, len);
	free(buf);
	nkp_key_free(a);
	nkp_key_free(b);
}

Test(keyfile, create_on_an_existing_file_loads_it)
{
	const char *p = in_dir("host.key");
	nkp_key *a = NULL, *b = NULL;

	cr_assert_eq(nkp_keyfile_load(p, true, &a), NKP_OK);
	cr_assert_eq(nkp_keyfile_load(p, true, &b), NKP_OK);
	cr_assert(nkp_key_equal(a, b));
	nkp_key_free(a);
	nkp_key_free(b);
}

Test(keyfile, missing_file_without_create_is_not_found)
{
	nkp_key *k = NULL;

	cr_assert_eq(nkp_keyfile_load(in_dir("none"), false, &k), NKP_ERR_NOT_FOUND);
	cr_assert_null(k);
	cr_assert_eq(dir_entries(), 0);
}

Test(keyfile, group_or_other_permission_bits_are_refused)
{
	static const mode_t modes[] = {0644, 0640, 0604, 0601, 0610};
	const char *p = in_dir("host.key");
	nkp_key *k = NULL;

	cr_assert_eq(nkp_keyfile_load(p, true, &k), NKP_OK);
	nkp_key_free(k);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		k = NULL;
		cr_assert_eq(chmod(p, modes[i]), 0);
		cr_assert_eq(nkp_keyfile_load(p, false, &k), NKP_ERR_PERM, "mode %o", modes[i]);
		cr_assert_eq(nkp_keyfile_load(p, true, &k), NKP_ERR_PERM, "mode %o", modes[i]);
		cr_assert_null(k);
	}
	cr_assert_eq(chmod(p, 0400), 0);
	cr_assert_eq(nkp_keyfile_load(p, false, &k), NKP_OK, "stricter than 0600 is fine");
	nkp_key_free(k);
}

Test(keyfile, symlinks_and_directories_are_refused)
{
	nkp_key *k = NULL;

	cr_assert_eq(nkp_keyfile_load(in_dir("real.key"), true, &k), NKP_OK);
	nkp_key_free(k);
	k = NULL;
	cr_assert_eq(symlink("real.key", in_dir("link.key")), 0);
	cr_assert_eq(nkp_keyfile_load(in_dir("link.key"), false, &k), NKP_ERR_PERM);
	cr_assert_eq(mkdir(in_dir("dir.key"), 0700), 0);
	cr_assert_eq(nkp_keyfile_load(in_dir("dir.key"), true, &k), NKP_ERR_PERM);
	cr_assert_null(k);
}

Test(keyfile, wrong_size_is_a_parse_error)
{
	const char *p = in_dir("short.key");
	uint8_t bytes[NKP_KEY_BYTES + 1] = {0};
	nkp_key *k = NULL;

	cr_assert_eq(nkp_file_write_atomic(p, bytes, NKP_KEY_BYTES - 1, 0600, false, true), NKP_OK);
	cr_assert_eq(nkp_keyfile_load(p, true, &k), NKP_ERR_PARSE);
	cr_assert_eq(nkp_file_write_atomic(p, bytes, NKP_KEY_BYTES + 1, 0600, false, true), NKP_OK);
	cr_assert_eq(nkp_keyfile_load(p, false, &k), NKP_ERR_PARSE);
	cr_assert_eq(nkp_file_write_atomic(p, bytes, 0, 0600, false, true), NKP_OK);
	cr_assert_eq(nkp_keyfile_load(p, false, &k), NKP_ERR_PARSE);
	cr_assert_null(k);
}

Test(keyfile, failed_create_leaves_nothing_behind)
{
	nkp_key *k = NULL;

	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(nkp_keyfile_load(in_dir("host.key"), true, &k), NKP_ERR_NOSPC);
	cr_assert_null(k);
	cr_assert_eq(dir_entries(), 0);
}

/* Opens sealed-v1.bin with libsodium alone, following proto/sealed.proto. */
static void decode_sealed_vector(const uint8_t *seal_key, const char *label,
				 const uint8_t *plaintext, size_t ptlen)
{
	static const char ctx[8] = {'n', 'k', 'p', 's', 'e', 'a', 'l', '1'};
	uint8_t sub[32], want_sub[32], nonce[24], ad[128], pt[256];
	Nkp__Sealed__SealedFile *m;
	uint8_t *bin = NULL;
	size_t binlen = 0, adlen;

	cr_assert_eq(nkp_file_read(vec_path("sealed-v1.bin"), 1 << 20, &bin, &binlen), NKP_OK);
	m = nkp__sealed__sealed_file__unpack(NULL, binlen, bin);
	cr_assert_not_null(m);
	cr_assert_eq(m->format_version, vec_u64("format_version"));
	cr_assert_str_eq(m->label, label);
	vec_hex("nonce", nonce, sizeof(nonce));
	cr_assert_eq(m->nonce.len, sizeof(nonce));
	cr_assert_arr_eq(m->nonce.data, nonce, sizeof(nonce));
	cr_assert_eq(m->ciphertext.len, ptlen + 16);
	crypto_kdf_derive_from_key(sub, sizeof(sub), 1, ctx, seal_key);
	vec_hex("subkey", want_sub, sizeof(want_sub));
	cr_assert_arr_eq(sub, want_sub, sizeof(sub));
	memcpy(ad, "nkp-sealed\x01\x00\x00\x00", 14);
	memcpy(ad + 14, label, strlen(label));
	adlen = 14 + strlen(label);
	cr_assert_eq(crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, m->ciphertext.data,
								m->ciphertext.len, ad, adlen,
								m->nonce.data, sub),
		     0);
	cr_assert_arr_eq(pt, plaintext, ptlen);
	nkp__sealed__sealed_file__free_unpacked(m, NULL);
	free(bin);
}

TestSuite(sealfile_vector);

Test(sealfile_vector, sealed_v1_matches_the_checked_in_vector)
{
	uint8_t keyb[32], pt[128], *buf = NULL, *opened = NULL;
	char label[64], hex[512];
	size_t ptlen, len, olen = 0;
	nkp_key *k;

	vec_load("sealed-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	randombytes_set_implementation(&det_rng);
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_hex("seal_key", keyb, sizeof(keyb));
	vec_str("label", label, sizeof(label));
	vec_str("plaintext", hex, sizeof(hex));
	ptlen = strlen(hex) / 2;
	hex_exact(hex, pt, ptlen);
	cr_assert_eq(nkp_key_from_bytes(keyb, &k), NKP_OK);
	rng_calls = 0;
	cr_assert_eq(nkp_seal_bytes(k, label, pt, ptlen, &buf, &len), NKP_OK);
	vec_check_bin("sealed-v1.bin", buf, len);
	if (regen_vectors()) {
		uint8_t sub[32];

		crypto_kdf_derive_from_key(sub, 32, 1, "nkpseal1", keyb);
		print_hex("subkey", sub, 32);
		rng_calls = 0;
		det_buf(sub, 24);
		print_hex("nonce", sub, 24);
	}
	decode_sealed_vector(keyb, label, pt, ptlen);
	cr_assert_eq(nkp_unseal_bytes(k, label, buf, len, &opened, &olen), NKP_OK);
	cr_assert_eq(olen, ptlen);
	cr_assert_arr_eq(opened, pt, ptlen);
	nkp_secure_free(opened);
	nkp_key_free(k);
	free(buf);
	free(vec_text);
}
