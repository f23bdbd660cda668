/* Helpers shared by nkpctl's subcommands: messages, numbers, passwords,
 * JSON strings, times. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "ctl.h"

int ctl_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nkpctl: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'nkpctl %s --help'.\n", cmd);
	return 2;
}

int ctl_fail(const char *what, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nkpctl: %s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

bool ctl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	unsigned long v;

	if (s == NULL || *s < '0' || *s > '9') {
		return false;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max) {
		return false;
	}
	*out = v;
	return true;
}

bool ctl_common_opt(ctl *c, int opt, const char *arg)
{
	if (opt == 'J') {
		c->json = true;
		return true;
	}
	if (opt == 'S') {
		c->socket = arg;
		return true;
	}
	return false;
}

int ctl_parse_operands(ctl *c, int argc, char **argv, const char *cmd, int (*help)(void),
		       const char *required, size_t n, char **operands)
{
	static const struct option lo[] = {CTL_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		}
		if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage(cmd, "unknown option or missing argument");
		}
	}
	if (n != 0 && (size_t)(argc - optind) != n) {
		return ctl_usage(cmd, "%s", required);
	}
	if (n == 0 && optind != argc) {
		return ctl_usage(cmd, "unexpected argument %s", argv[optind]);
	}
	for (size_t i = 0; i < n; i++) {
		operands[i] = argv[optind + (int)i];
	}
	return -1;
}

int ctl_parse_plain(ctl *c, int argc, char **argv, const char *cmd, int (*help)(void),
		    const char *required, char **operand)
{
	return ctl_parse_operands(c, argc, argv, cmd, help, required, required != NULL ? 1 : 0,
				  operand);
}

bool ctl_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			break;
		}
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			return true;
		}
	}
	return false;
}

int ctl_read_password(const char *what, const char *path, char **pw, size_t *len)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	char *copy;
	nkp_err err = nkp_file_read(path, 4096, &buf, &n);

	if (err != NKP_OK) {
		return ctl_fail(what, "cannot read the password file %s: %s", path,
				nkp_strerror(err));
	}
	if (n > 0 && buf[n - 1] == '\n') {
		n--;
	}
	if (n > 0 && buf[n - 1] == '\r') {
		n--;
	}
	copy = sodium_malloc(n + 1);
	if (copy != NULL) {
		memcpy(copy, buf, n);
		copy[n] = '\0';
	}
	sodium_memzero(buf, n);
	free(buf);
	if (copy == NULL) {
		return ctl_fail(what, "out of memory");
	}
	if (n == 0) {
		sodium_free(copy);
		return ctl_fail(what, "the password file %s is empty", path);
	}
	*pw = copy;
	*len = n;
	return 0;
}

void ctl_password_free(char *pw, size_t len)
{
	if (pw != NULL) {
		sodium_memzero(pw, len);
		sodium_free(pw);
	}
}

void ctl_json_str(FILE *f, const char *s)
{
	char buf[4096];

	nkp_json_escape(s != NULL ? s : "", buf, sizeof(buf));
	fprintf(f, "\"%s\"", buf);
}

const char *ctl_time(uint64_t unix_time, char *buf, size_t size)
{
	time_t t = (time_t)unix_time;
	struct tm tm;

	if (unix_time == 0 || gmtime_r(&t, &tm) == NULL) {
		snprintf(buf, size, "-");
	} else {
		strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	return buf;
}

const char *ctl_state_name(uint32_t state)
{
	return nkp_version_state_name((nkp_version_state)state);
}

int ctl_dispatch(ctl *c, const char *group, const ctl_sub *subs, size_t n, int (*help)(void),
		 const char *missing, int argc, char **argv)
{
	if (argc < 2) {
		return ctl_usage(group, "%s", missing);
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		return help();
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(argv[1], subs[i].name) == 0) {
			return subs[i].fn(c, argc - 1, argv + 1);
		}
	}
	return ctl_usage(group, "unknown subcommand %s", argv[1]);
}

void ctl_print_done(const ctl *c, const char *name, const char *done, ctl_resp *r)
{
	if (c->json) {
		printf("{\"name\":");
		ctl_json_str(stdout, name);
		printf(",\"%s\":true,\"message\":", done);
		ctl_json_str(stdout, r->message);
		printf("}\n");
	} else {
		printf("%s\n", r->message);
	}
	ctl_resp_free(r);
}
