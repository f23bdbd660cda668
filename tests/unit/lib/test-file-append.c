/* Appends to append-only files (nkpi_file_append, nkp/lib/file.c): what a
 * host's keys.nkp.log relies on when the disk fills, a write is torn, or
 * the file is cut behind its writer's back. */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <nkp/nkp.h>

#include "internal.h"

static char dir[64], path[128];

static void setup(void)
{
	const char *t = getenv("TMPDIR");

	cr_assert_eq(nkp_init(), NKP_OK);
	snprintf(dir, sizeof(dir), "%s/nkp-append-XXXXXX",
		 t != NULL && strlen(t) < 32 ? t : "/tmp");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/log", dir);
}

static void teardown(void)
{
	char link[160];

	nkpi_file_fail_next_writes(0, NKP_OK);
	snprintf(link, sizeof(link), "%s/link", dir);
	unlink(link);
	unlink(path);
	rmdir(dir);
}

TestSuite(file_append, .init = setup, .fini = teardown);

static nkp_err append(uint64_t at, bool *cut, const char *s, bool *shorter)
{
	return nkpi_file_append(path, at, cut, (const uint8_t *)s, strlen(s), at == 0, shorter);
}

static void assert_contents(const char *want)
{
	char buf[64] = {0};
	FILE *f = fopen(path, "rb");
	size_t n;

	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	cr_assert_eq(n, strlen(want), "%zu bytes, not %zu", n, strlen(want));
	cr_assert_str_eq(buf, want);
}

Test(file_append, appends_create_the_file_private_and_add_at_its_end)
{
	bool cut = false, shorter = false;
	struct stat st;

	cr_assert_eq(append(0, &cut, "one,", &shorter), NKP_OK);
	cr_assert_eq(append(4, &cut, "two", &shorter), NKP_OK);
	assert_contents("one,two");
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_not(cut);
	cr_assert_not(shorter);
}

Test(file_append, a_failed_append_is_cut_back_to_the_good_length)
{
	bool cut = false, shorter = false;

	cr_assert_eq(append(0, &cut, "one,", &shorter), NKP_OK);
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(append(4, &cut, "a long record", &shorter), NKP_ERR_NOSPC);
	assert_contents("one,");
	cr_assert_not(cut, "cut back at once");
	cr_assert_not(shorter);
	cr_assert_eq(append(4, &cut, "two", &shorter), NKP_OK, "only one append fails");
	assert_contents("one,two");
}

Test(file_append, bytes_past_the_good_length_are_cut_first_when_asked)
{
	bool cut = false, shorter = false;
	FILE *f;

	cr_assert_eq(append(0, &cut, "one,", &shorter), NKP_OK);
	f = fopen(path, "ab");
	cr_assert_not_null(f);
	fputs("torn", f);
	fclose(f);
	cut = true;
	cr_assert_eq(append(4, &cut, "two", &shorter), NKP_OK);
	cr_assert_not(cut);
	assert_contents("one,two");
}

Test(file_append, a_file_shorter_than_its_good_length_gets_nothing)
{
	bool cut = false, shorter = false;

	cr_assert_eq(append(0, &cut, "one,two", &shorter), NKP_OK);
	cr_assert_eq(truncate(path, 3), 0);
	cr_assert_eq(append(7, &cut, "three", &shorter), NKP_ERR_IO);
	cr_assert(shorter);
	assert_contents("one");
}

Test(file_append, a_symlink_is_never_followed)
{
	char link[160];
	bool cut = false, shorter = false;

	snprintf(link, sizeof(link), "%s/link", dir);
	cr_assert_eq(symlink(path, link), 0);
	cr_assert_neq(nkpi_file_append(link, 0, &cut, (const uint8_t *)"x", 1, true, &shorter),
		      NKP_OK);
	cr_assert_eq(access(path, F_OK), -1, "nothing written through it");
}
