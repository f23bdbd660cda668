/* nkp-hostctl [--socket PATH] [--json] <command> ... */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include <sodium.h>

#include "hostctl.h"

static const struct {
	const char *name;
	int (*fn)(hostctl *ctl, int argc, char **argv);
	const char *help;
} commands[] = {
	{"status", status_main, "the keys this host holds and their use"},
	{"vm", vm_main, "VM key operations on keysafe files"},
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--socket PATH] [--json] <command> ...\n\n"
		"  --socket PATH   nkp-hostd local socket (default $NKP_HOST_SOCKET or %s)\n"
		"  --json          machine-readable output\n\nCommands:\n",
		PROG, HOSTCTL_DEFAULT_SOCKET);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].help);
	}
	fprintf(f, "\nRun '%s <command> --help' for more.\n", PROG);
}

int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s%s: ", PROG, cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s%s%s --help'.\n", PROG, cmd != NULL ? " " : "",
		cmd != NULL ? cmd : "");
	return 2;
}

int fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s%s: ", PROG, cmd != NULL ? " " : "", cmd != NULL ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

void scan_json(hostctl *ctl, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			break;
		}
		if (strcmp(argv[i], "--json") == 0) {
			ctl->json = true;
		}
	}
}

void json_str(const char *s)
{
	char buf[1024];

	nkp_json_escape(s != NULL ? s : "", buf, sizeof(buf));
	printf("\"%s\"", buf);
}

void print_b64(const uint8_t *b, size_t len)
{
	char out[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];

	if (len > 64) {
		len = 64;
	}
	sodium_bin2base64(out, sizeof(out), b, len, sodium_base64_VARIANT_ORIGINAL);
	fputs(out, stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	hostctl ctl = {.socket = getenv("NKP_HOST_SOCKET"), .json = false};
	int c;

	if (ctl.socket == NULL || ctl.socket[0] == '\0') {
		ctl.socket = HOSTCTL_DEFAULT_SOCKET;
	}
	opterr = 0;
	/* "+": stop at the command; its options are its own. */
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.socket = optarg;
			break;
		case 'j':
			ctl.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage_error(NULL, "unknown or incomplete option '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		return usage_error(NULL, "missing command");
	}
	/* Unwrapped keys pass through this process: no core dumps. */
	if (nkp_init() != NKP_OK || nkp_harden_process() != NKP_OK) {
		return fail(NULL, "cannot initialise the crypto library or disable core dumps");
	}
#ifdef __SANITIZE_ADDRESS__
	/* nng frees a closed socket's connections on a thread of its own;
	 * under LeakSanitizer that is drained at exit, or what it had not
	 * freed yet is reported as leaked. */
	atexit(nng_fini);
#endif
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			return commands[i].fn(&ctl, argc - optind, argv + optind);
		}
	}
	return usage_error(NULL, "unknown command '%s'", argv[optind]);
}
