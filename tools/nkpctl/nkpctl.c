/* nkpctl: administers the nkp management service.
 *
 *   nkpctl [--socket PATH] [--json] COMMAND ...
 *
 * The socket defaults to $NKP_SOCKET, else /var/lib/nkp/nkpd/admin.sock. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include "ctl.h"

static const char usage_text[] =
	"usage: nkpctl [--socket PATH] [--json] COMMAND [ARGS]\n"
	"\n"
	"  status                                   the service: key, generation, hosts, "
	"providers\n"
	"  host add NAME --address URL --public-key TOKEN [--cluster NAME]\n"
	"  host remove NAME | host list\n"
	"  host wait --in-sync [--timeout SECONDS]  until every host applied the current state\n"
	"  host resync NAME                         resolve a host's generation conflict\n"
	"  provider create NAME [--default] [--trusted] | list | show NAME | set-default NAME\n"
	"  provider create NAME --kind standard --kms kmip://HOST:PORT --kms-ca F --kms-cert F\n"
	"                  --kms-key F [--spare-pool N]\n"
	"  provider backup NAME --out FILE --password-file FILE\n"
	"  provider restore FILE --password-file FILE\n"
	"  provider rotate NAME [--timeout SECONDS] [--force]\n"
	"  provider retire NAME --version N [--force]\n"
	"  provider delete NAME [--force]\n"
	"  baseline add NAME --from-host HOST | list | remove NAME\n"
	"                                           approved TPM states of trusted hosts\n"
	"  events [--follow]\n"
	"\n"
	"  --socket PATH   nkpd's admin socket (default $NKP_SOCKET, else\n"
	"                  " CTL_DEFAULT_SOCKET ")\n"
	"  --json          machine-readable output\n"
	"Every command takes --help. Exit status: 0 success, 1 failure, 2 usage error.\n";

static const struct {
	const char *name;
	int (*fn)(ctl *c, int argc, char **argv);
} commands[] = {
	{"status", status_main},     {"host", host_main},     {"provider", provider_main},
	{"baseline", baseline_main}, {"events", events_main},
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {CTL_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	ctl c = {.socket = getenv("NKP_SOCKET"), .json = false};
	int opt;

	if (c.socket == NULL || c.socket[0] == '\0') {
		c.socket = CTL_DEFAULT_SOCKET;
	}
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(usage_text, stdout);
			return 0;
		}
		if (!ctl_common_opt(&c, opt, optarg)) {
			fprintf(stderr,
				"nkpctl: unknown option or missing argument: %s\n"
				"Try 'nkpctl --help'.\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "nkpctl: a command is required\nTry 'nkpctl --help'.\n");
		return 2;
	}
	if (nkp_init() != NKP_OK) {
		fprintf(stderr, "nkpctl: cannot initialise libsodium\n");
		return 1;
	}
	nkp_log_set_sink(NULL, NULL);
#ifdef __SANITIZE_ADDRESS__
	/* nng frees a closed socket's connections on a thread of its own;
	 * under LeakSanitizer that is drained at exit, or what it had not
	 * freed yet is reported as leaked. */
	atexit(nng_fini);
#endif
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			return commands[i].fn(&c, argc - optind, argv + optind);
		}
	}
	fprintf(stderr, "nkpctl: unknown command %s\nTry 'nkpctl --help'.\n", argv[optind]);
	return 2;
}
