/* nkp-hostd: enrol a host (init) and serve (run). */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <nkp/file.h>

#include "daemon.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} commands[] = {
	{"init", init_main, "make the host identity and pin the service key"},
	{"run", run_main, "serve the service protocol and the local API"},
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: %s <command> [options]\n\nCommands:\n", PROG);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].help);
	}
	fprintf(f, "\nRun '%s <command> --help' for a command's options.\n", PROG);
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

int state_dir_busy(const char *cmd, const char *dir)
{
	char lock[PATH_MAX];
	long pid = 0;

	if ((size_t)snprintf(lock, sizeof(lock), "%s/%s", dir, NKP_HOSTD_LOCK_FILE) <
	    sizeof(lock)) {
		pid = nkp_file_lock_holder(lock);
	}
	if (pid > 0) {
		fprintf(stderr,
			"%s %s: %s is in use by another process (pid %ld holds %s); one "
			"nkp-hostd per state directory: stop it first\n",
			PROG, cmd, dir, pid, lock);
	} else {
		fprintf(stderr,
			"%s %s: %s is in use by another process (it holds %s); one "
			"nkp-hostd per state directory: stop it first\n",
			PROG, cmd, dir, lock);
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		return usage_error(NULL, "missing command");
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) == 0) {
			return commands[i].fn(argc - 1, argv + 1);
		}
	}
	return usage_error(NULL, "unknown command '%s'", argv[1]);
}
