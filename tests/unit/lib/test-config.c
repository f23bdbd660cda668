/* Configuration files: the strict `key = value` parser. */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <nkp/config.h>

static const char *const keys[] = {"state-dir", "heartbeat", "syslog", "listen", NULL};

static nkp_config *parse_ok(const char *text)
{
	nkp_config *c = NULL;
	char err[NKP_CONFIG_ERR_MAX] = "";

	cr_assert_eq(nkp_config_parse(text, strlen(text), "t.conf", keys, &c, err, sizeof(err)),
		     NKP_OK, "%s", err);
	cr_assert_not_null(c);
	return c;
}

/* Parses `text` expecting `want`; the message must be `msg` exactly. */
static void parse_bad(const char *text, size_t len, nkp_err want, const char *msg)
{
	nkp_config *c = (nkp_config *)0x1;
	char err[NKP_CONFIG_ERR_MAX] = "";

	cr_assert_eq(nkp_config_parse(text, len, "t.conf", keys, &c, err, sizeof(err)), want, "%s",
		     err);
	cr_assert_eq(c, (nkp_config *)0x1, "out-parameter written on failure");
	cr_assert_str_eq(err, msg);
}

Test(config, reads_keys_and_values_trimmed_with_comments_and_blank_lines)
{
	nkp_config *c = parse_ok("# nkpd\n\n  state-dir =  /var/lib/nkp/nkpd  \n"
				 "\t# indented comment\nheartbeat=7\r\nlisten = tcp://a:1#x = y\n");

	cr_assert_str_eq(nkp_config_get(c, "state-dir"), "/var/lib/nkp/nkpd");
	cr_assert_str_eq(nkp_config_get(c, "heartbeat"), "7");
	cr_assert_str_eq(nkp_config_get(c, "listen"), "tcp://a:1#x = y", "values are verbatim");
	cr_assert_null(nkp_config_get(c, "syslog"), "an unset key is NULL");
	nkp_config_free(c);
}

Test(config, an_empty_file_sets_nothing)
{
	nkp_config *c = parse_ok("");

	cr_assert_null(nkp_config_get(c, "state-dir"));
	nkp_config_free(c);
	c = parse_ok("# only comments\n\n");
	cr_assert_null(nkp_config_get(c, "heartbeat"));
	nkp_config_free(c);
}

Test(config, refuses_unknown_keys_naming_file_and_line)
{
	parse_bad("state-dir = /x\n\nstate_dir = /y\n", 31, NKP_ERR_PARSE,
		  "t.conf:3: bad key (lower-case letters, digits and '-')");
	parse_bad("heartbeat = 1\nport = 7\n", 23, NKP_ERR_PARSE, "t.conf:2: unknown key 'port'");
	parse_bad("State-Dir = /x\n", 15, NKP_ERR_PARSE,
		  "t.conf:1: bad key (lower-case letters, digits and '-')");
}

Test(config, refuses_malformed_lines)
{
	parse_bad("state-dir /x\n", 13, NKP_ERR_PARSE, "t.conf:1: expected 'key = value'");
	parse_bad("# c\nheartbeat =\n", 16, NKP_ERR_PARSE, "t.conf:2: 'heartbeat' has no value");
	parse_bad("= 5\n", 4, NKP_ERR_PARSE,
		  "t.conf:1: bad key (lower-case letters, digits and '-')");
	parse_bad("listen = a\033[2Jb\n", 16, NKP_ERR_PARSE, "t.conf:1: control character in line");
}

Test(config, refuses_a_key_set_twice)
{
	parse_bad("heartbeat = 1\nsyslog = true\nheartbeat = 2\n", 42, NKP_ERR_PARSE,
		  "t.conf:3: 'heartbeat' is already set on line 1");
}

Test(config, bounds_file_line_and_entry_count)
{
	size_t big = NKP_CONFIG_MAX_FILE + 1;
	char *text = malloc(big + NKP_CONFIG_MAX_LINE + 64);
	char msg[128];

	cr_assert_not_null(text);
	memset(text, '\n', big);
	parse_bad(text, big, NKP_ERR_TOO_LARGE, "t.conf: larger than 65536 bytes");

	strcpy(text, "listen = ");
	memset(text + 9, 'a', NKP_CONFIG_MAX_LINE);
	strcpy(text + 9 + NKP_CONFIG_MAX_LINE, "\n");
	snprintf(msg, sizeof(msg), "t.conf:1: line longer than %u characters", NKP_CONFIG_MAX_LINE);
	parse_bad(text, strlen(text), NKP_ERR_TOO_LARGE, msg);

	parse_bad("listen = a\0b\n", 13, NKP_ERR_PARSE,
		  "t.conf: contains a NUL byte; not a text file");
	free(text);
}

Test(config, numbers_and_booleans_are_checked_with_their_line)
{
	nkp_config *c = parse_ok("heartbeat = 5\nsyslog = yes\nlisten = 99999999999999999999999\n"
				 "state-dir = -3\n");
	char err[NKP_CONFIG_ERR_MAX] = "";
	unsigned long v = 42;
	bool b = false;

	cr_assert_eq(nkp_config_get_uint(c, "heartbeat", 1, 3600, &v, err, sizeof(err)), NKP_OK);
	cr_assert_eq(v, 5);
	cr_assert_eq(nkp_config_get_uint(c, "heartbeat", 6, 3600, &v, err, sizeof(err)),
		     NKP_ERR_PARSE);
	cr_assert_str_eq(err, "t.conf:1: 'heartbeat' wants a whole number from 6 to 3600");
	cr_assert_eq(v, 5, "out-parameter written on failure");
	cr_assert_eq(nkp_config_get_uint(c, "listen", 0, ~0ul, &v, err, sizeof(err)), NKP_ERR_PARSE,
		     "overflow is refused");
	cr_assert_eq(nkp_config_get_uint(c, "state-dir", 0, ~0ul, &v, err, sizeof(err)),
		     NKP_ERR_PARSE, "a sign is refused");
	cr_assert_eq(nkp_config_get_bool(c, "syslog", &b, err, sizeof(err)), NKP_OK);
	cr_assert(b);
	cr_assert_eq(nkp_config_get_bool(c, "heartbeat", &b, err, sizeof(err)), NKP_ERR_PARSE);
	cr_assert_str_eq(err, "t.conf:1: 'heartbeat' wants true or false");
	cr_assert_eq(nkp_config_get_uint(c, "syslog", 0, 1, &v, NULL, 0), NKP_ERR_PARSE,
		     "no error buffer is fine");
	cr_assert_eq(nkp_config_get_uint(c, "nothing", 0, 1, &v, err, sizeof(err)),
		     NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_config_get_bool(c, "nothing", &b, err, sizeof(err)), NKP_ERR_NOT_FOUND);
	nkp_config_free(c);
}

static char dir[64];

static void dir_setup(void)
{
	strcpy(dir, "/tmp/nkp-config-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void dir_teardown(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/nkpd.conf", dir);
	unlink(p);
	rmdir(dir);
}

static void write_conf(const char *text, mode_t mode)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/nkpd.conf", dir);
	f = fopen(p, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	cr_assert_eq(chmod(p, mode), 0);
}

Test(config, loads_a_file_and_names_it_in_errors, .init = dir_setup, .fini = dir_teardown)
{
	char p[128], err[NKP_CONFIG_ERR_MAX] = "", want[256];
	nkp_config *c = NULL;

	snprintf(p, sizeof(p), "%s/nkpd.conf", dir);
	write_conf("heartbeat = 3\n", 0644);
	cr_assert_eq(nkp_config_load(p, keys, &c, err, sizeof(err)), NKP_OK, "%s", err);
	cr_assert_str_eq(nkp_config_get(c, "heartbeat"), "3");
	nkp_config_free(c);
	c = NULL;

	write_conf("heartbeat = 3\nbogus = 1\n", 0600);
	cr_assert_eq(nkp_config_load(p, keys, &c, err, sizeof(err)), NKP_ERR_PARSE);
	snprintf(want, sizeof(want), "%s:2: unknown key 'bogus'", p);
	cr_assert_str_eq(err, want);
	cr_assert_null(c);
}

Test(config, refuses_files_others_may_write_and_non_files, .init = dir_setup, .fini = dir_teardown)
{
	char p[128], err[NKP_CONFIG_ERR_MAX] = "";
	nkp_config *c = NULL;

	snprintf(p, sizeof(p), "%s/nkpd.conf", dir);
	write_conf("heartbeat = 3\n", 0666);
	cr_assert_eq(nkp_config_load(p, keys, &c, err, sizeof(err)), NKP_ERR_PERM);
	cr_assert(strstr(err, "writable by group or others") != NULL, "%s", err);
	write_conf("heartbeat = 3\n", 0620);
	cr_assert_eq(nkp_config_load(p, keys, &c, err, sizeof(err)), NKP_ERR_PERM);
	cr_assert_eq(nkp_config_load(dir, keys, &c, err, sizeof(err)), NKP_ERR_INVALID,
		     "a directory");
	unlink(p);
	cr_assert_eq(nkp_config_load(p, keys, &c, err, sizeof(err)), NKP_ERR_NOT_FOUND);
	cr_assert(strstr(err, "No such file") != NULL, "%s", err);
	cr_assert_null(c);
	cr_assert_eq(nkp_config_load(NULL, keys, &c, err, sizeof(err)), NKP_ERR_INVALID);
	nkp_config_free(NULL);
}
