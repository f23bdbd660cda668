/* nkp-bench kmip: KMS operations per second of nkp's KMIP client (the
 * standard provider's) against another client on the same server, in the
 * same minutes: rounds alternate between the two, and the medians and the
 * median of the per-round ratios are printed.
 *
 * nkp:      N Create (AES-256) + Get pairs on one kept TLS connection
 *           (nkpi_kmip_create, nkpi_kmip_get).
 * baseline: a command that does the same and prints `ops_per_s=X` (PyKMIP's
 *           own client: tests/integration/kmip-pyclient.py ... bench N). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "kmip-client.h"

static const char usage[] =
	"Usage: nkp-bench kmip --kms kmip://HOST:PORT --ca FILE --cert FILE --key FILE\n"
	"                      [--pairs N] [--rounds N] [--baseline COMMAND] [--json]\n"
	"\n"
	"Runs N Create+Get pairs (default 40) with nkp's KMIP client, and COMMAND\n"
	"(a shell command printing ops_per_s=X for the same work, e.g. PyKMIP's\n"
	"client) in alternating rounds (default 5); prints the median operations\n"
	"per second of each and the median ratio nkp/baseline.\n";

typedef struct kopts {
	const char *kms, *ca, *cert, *key, *baseline;
	unsigned long pairs, rounds;
	bool json;
} kopts;

static int parse(int argc, char **argv, kopts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (strcmp(a, "--help") == 0) {
			fputs(usage, stdout);
			return 1;
		}
		if (v == NULL) {
			break;
		}
		i++;
		if (strcmp(a, "--kms") == 0) {
			o->kms = v;
		} else if (strcmp(a, "--ca") == 0) {
			o->ca = v;
		} else if (strcmp(a, "--cert") == 0) {
			o->cert = v;
		} else if (strcmp(a, "--key") == 0) {
			o->key = v;
		} else if (strcmp(a, "--baseline") == 0) {
			o->baseline = v;
		} else if (strcmp(a, "--pairs") == 0) {
			o->pairs = strtoul(v, NULL, 10);
		} else if (strcmp(a, "--rounds") == 0) {
			o->rounds = strtoul(v, NULL, 10);
		} else {
			i = argc + 1;
		}
	}
	if (o->kms == NULL || o->ca == NULL || o->cert == NULL || o->key == NULL || o->pairs == 0 ||
	    o->rounds == 0) {
		fputs(usage, stderr);
		return 2;
	}
	return 0;
}

/* A client of the files in `o` (the key file wiped after use). */
static nkpi_kmip *client(const kopts *o)
{
	const char *files[3] = {o->ca, o->cert, o->key};
	uint8_t *pem[3] = {NULL, NULL, NULL};
	size_t len[3] = {0, 0, 0};
	nkpi_kmip *k = NULL;
	char why[256] = "";
	int ok = 1;

	for (int i = 0; i < 3 && ok; i++) {
		ok = nkp_file_read(files[i], 1u << 20, &pem[i], &len[i]) == NKP_OK;
	}
	if (ok) {
		const char *servers[1] = {o->kms};
		nkpi_kmip_config cfg = {servers, 1,	 pem[0], pem[1], pem[2],
					len[0],	 len[1], len[2], 0};

		if (nkpi_kmip_new(&cfg, &k, why, sizeof(why)) != NKP_OK) {
			fprintf(stderr, "nkp-bench kmip: %s\n", why);
		}
	}
	for (int i = 0; i < 3; i++) {
		if (pem[i] != NULL) {
			sodium_memzero(pem[i], len[i]);
			free(pem[i]);
		}
	}
	return k;
}

/* Operations per second of `pairs` Create+Get pairs; < 0 on a failure. */
static double nkp_round(nkpi_kmip *k, unsigned long pairs, uint8_t *key)
{
	uint64_t t0 = bench_now_ns();

	for (unsigned long i = 0; i < pairs; i++) {
		char id[NKPI_KMIP_ID_MAX];

		if (nkpi_kmip_create(k, "nkp-bench", id) != NKP_OK ||
		    nkpi_kmip_get(k, id, key) != NKP_OK) {
			fprintf(stderr, "nkp-bench kmip: %s\n", nkpi_kmip_last_error(k));
			return -1;
		}
	}
	return 2.0 * (double)pairs * 1e9 / (double)(bench_now_ns() - t0);
}

/* The baseline command's ops_per_s; < 0 if it failed or printed none. */
static double baseline_round(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char line[256];
	double v = -1;

	while (p != NULL && fgets(line, sizeof(line), p) != NULL) {
		if (strncmp(line, "ops_per_s=", 10) == 0) {
			v = strtod(line + 10, NULL);
		}
	}
	if (p == NULL || pclose(p) != 0) {
		return -1;
	}
	return v;
}

int bench_kmip_main(int argc, char **argv)
{
	kopts o = {.pairs = 40, .rounds = 5};
	double *a, *b, *r;
	uint8_t *key;
	nkpi_kmip *k;
	int rc = parse(argc, argv, &o);

	if (rc != 0) {
		return rc == 1 ? 0 : rc;
	}
	if (nkp_init() != NKP_OK || (k = client(&o)) == NULL) {
		return 1;
	}
	a = calloc(o.rounds, sizeof(*a));
	b = calloc(o.rounds, sizeof(*b));
	r = calloc(o.rounds, sizeof(*r));
	key = sodium_malloc(NKPI_KMIP_KEY_BYTES);
	for (unsigned long i = 0; rc == 0 && a && b && r && key && i < o.rounds; i++) {
		a[i] = nkp_round(k, o.pairs, key);
		b[i] = o.baseline != NULL ? baseline_round(o.baseline) : 0;
		if (a[i] < 0 || b[i] < 0) {
			fprintf(stderr, "nkp-bench kmip: round %lu failed\n", i + 1);
			rc = 1;
		}
		r[i] = b[i] > 0 ? a[i] / b[i] : 0;
	}
	if (rc == 0 && a && b && r && key) {
		double ma = bench_median(a, o.rounds), mb = bench_median(b, o.rounds),
		       mr = bench_median(r, o.rounds);

		if (o.json) {
			printf("{\"nkp_ops_per_s\":%.1f,\"baseline_ops_per_s\":%.1f,\"ratio\":%.3f,"
			       "\"pairs\":%lu,\"rounds\":%lu}\n",
			       ma, mb, mr, o.pairs, o.rounds);
		} else {
			printf("nkp's client:  %8.1f ops/s (median of %lu rounds of %lu "
			       "Create+Get)\n",
			       ma, o.rounds, o.pairs);
			if (o.baseline != NULL) {
				printf("baseline:      %8.1f ops/s\nratio:         %8.3f\n", mb,
				       mr);
			}
		}
	}
	sodium_free(key);
	free(a);
	free(b);
	free(r);
	nkpi_kmip_free(k);
	return rc;
}
