/* nkp-bench: benchmarks of nkp against the floor they stand on (raw
 * libsodium, bare nng), measured in the same run. See docs/BENCHMARKS.md. */
#include <stdio.h>
#include <string.h>

#include <nkp/nkp.h>

#include "bench.h"

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} subcommands[] = {
	{"wrap", bench_wrap_main, "keysafe create and DEK unwrap vs raw XChaCha20-Poly1305"},
	{"fanout", bench_fanout_main, "nkpd and N hosts: enrol, sync, rotate, delete vs bare nng"},
	{"local", bench_local_main, "DEK unwraps per second through nkp-hostd's socket"},
	{"rewrap", bench_rewrap_main, "rewrap N keysafe files after a rotation (fsync or not)"},
	{"quote", bench_quote_main, "check TPM quotes (attestation) against bare ECDSA"},
	{"kmip", bench_kmip_main, "KMS operations per second: nkp's KMIP client vs another"},
};

static void usage(FILE *f)
{
	fputs("Usage: nkp-bench <subcommand> [--json] [options]\n\nSubcommands:\n", f);
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
		fprintf(f, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
	}
	fputs("\n'nkp-bench <subcommand> --help' tells more. With --json the last line of\n"
	      "output is one JSON object.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (nkp_init() != NKP_OK) {
		fprintf(stderr, "nkp-bench: cannot initialise libsodium\n");
		return 1;
	}
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
		if (strcmp(argv[1], subcommands[i].name) == 0) {
			return subcommands[i].main(argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "nkp-bench: unknown subcommand '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
