/* kmipc: nkp's KMIP client (nkp/private/kmip-client.h) from the command
 * line, for the KMIP integration tests and the benchmark against PyKMIP's
 * client. Never prints key bytes: `get` prints their SHA-256.
 *
 *   kmipc --kms kmip://HOST:PORT [--kms ...] --ca F --cert F --key F
 *         [--timeout-ms N] OP ARGS
 *   OP: discover | create NAME | add-attr ID NAME VALUE | activate ID |
 *       get ID | state ID | locate NAME | revoke ID | destroy ID | bench N |
 *       memscan [--stack] (copies of kmip-fake.py's fixed key in this
 *       process, off its stack unless --stack)
 *   Several OPs, separated by "+", run in turn on one client (and so on
 *   one connection, kept between them).
 *
 * Exit 0 ok, 1 failed (the reason on stderr), 2 usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "kmip-client.h"

#define LOCATE_MAX 64

static int usage(void)
{
	fprintf(stderr,
		"usage: kmipc --kms kmip://HOST:PORT [--kms ...] --ca FILE --cert FILE "
		"--key FILE [--timeout-ms N] OP ARGS\n"
		"  OP: discover | create NAME | add-attr ID NAME VALUE | activate ID |\n"
		"      get ID | state ID | locate NAME | revoke ID | destroy ID | bench N |\n"
		"      memscan [--stack]\n"
		"  several OPs: OP ARGS + OP ARGS ...\n");
	return 2;
}

static int failed(nkpi_kmip *k, const char *op, nkp_err err)
{
	fprintf(stderr, "kmipc: %s: %s (%s)\n", op, nkp_strerror(err), nkpi_kmip_last_error(k));
	return 1;
}

static void print_fingerprint(const uint8_t key[NKPI_KMIP_KEY_BYTES])
{
	uint8_t h[crypto_hash_sha256_BYTES];
	char hex[2 * sizeof(h) + 1];

	crypto_hash_sha256(h, key, NKPI_KMIP_KEY_BYTES);
	printf("%s\n", sodium_bin2hex(hex, sizeof(hex), h, sizeof(h)));
}

/* True at the fake's fixed key, the bytes 0, 1, ... 31 (compared, never
 * held, so that the search does not find itself). */
static bool fixed_key_at(const uint8_t *p)
{
	for (unsigned i = 0; i < NKPI_KMIP_KEY_BYTES; i++) {
		if (p[i] != i) {
			return false;
		}
	}
	return true;
}

/* How many copies of the fake's fixed key this process's writable memory
 * holds (the record buffers of a kept TLS connection, say), its main
 * stack too if `stack`. */
static unsigned long memscan(bool stack)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned long found = 0;

	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;
		char perms[5];

		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
		    perms[1] != 'w' || strstr(line, "[vvar") != NULL ||
		    (stack == 0 && strstr(line, "[stack") != NULL)) {
			continue;
		}
		for (const uint8_t *p = (const uint8_t *)lo;
		     p + NKPI_KMIP_KEY_BYTES <= (const uint8_t *)hi; p++) {
			found += *p == 0 && fixed_key_at(p);
		}
	}
	if (f != NULL) {
		fclose(f);
	}
	return found;
}

/* Built with AddressSanitizer (gcc and clang spell it differently). */
static bool sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#else
	return false;
#endif
#else
	return false;
#endif
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int bench(nkpi_kmip *k, long n)
{
	uint8_t *key = sodium_malloc(NKPI_KMIP_KEY_BYTES);
	double t0 = now_s();
	int rc = 0;

	for (long i = 0; i < n && rc == 0 && key != NULL; i++) {
		char id[NKPI_KMIP_ID_MAX];
		nkp_err err = nkpi_kmip_create(k, "nkp-bench", id);

		if (err == NKP_OK) {
			err = nkpi_kmip_get(k, id, key);
		}
		if (err != NKP_OK) {
			rc = failed(k, "bench", err);
		}
	}
	if (key == NULL) {
		fprintf(stderr, "kmipc: out of memory\n");
		return 1;
	}
	sodium_free(key);
	if (rc == 0) {
		printf("ops_per_s=%.1f\n", 2.0 * (double)n / (now_s() - t0));
	}
	return rc;
}

static int run(nkpi_kmip *k, int argc, char **argv)
{
	const char *op = argv[0];
	char id[NKPI_KMIP_ID_MAX], buf[32];
	nkp_err err;

	if (strcmp(op, "discover") == 0 && argc == 1) {
		nkpi_kmip_version v[NKPI_KMIP_VERSIONS_MAX];
		size_t n;

		if ((err = nkpi_kmip_discover(k, v, NKPI_KMIP_VERSIONS_MAX, &n)) != NKP_OK) {
			return failed(k, op, err);
		}
		for (size_t i = 0; i < n; i++) {
			printf("%s%d.%d", i != 0 ? " " : "", v[i].major, v[i].minor);
		}
		printf("\n");
	} else if (strcmp(op, "create") == 0 && argc == 2) {
		if ((err = nkpi_kmip_create(k, argv[1], id)) != NKP_OK) {
			return failed(k, op, err);
		}
		printf("%s\n", id);
	} else if (strcmp(op, "add-attr") == 0 && argc == 4) {
		const nkpi_kmip_attr a = {argv[2], argv[3]};

		if ((err = nkpi_kmip_add_attribute(k, argv[1], &a)) != NKP_OK) {
			return failed(k, op, err);
		}
	} else if (strcmp(op, "activate") == 0 && argc == 2) {
		if ((err = nkpi_kmip_activate(k, argv[1])) != NKP_OK) {
			return failed(k, op, err);
		}
	} else if (strcmp(op, "get") == 0 && argc == 2) {
		uint8_t *key = sodium_malloc(NKPI_KMIP_KEY_BYTES);

		if (key == NULL) {
			return failed(k, op, NKP_ERR_NOMEM);
		}
		err = nkpi_kmip_get(k, argv[1], key);
		if (err == NKP_OK) {
			print_fingerprint(key);
		}
		sodium_free(key);
		if (err != NKP_OK) {
			return failed(k, op, err);
		}
	} else if (strcmp(op, "state") == 0 && argc == 2) {
		uint32_t st;

		if ((err = nkpi_kmip_get_state(k, argv[1], &st)) != NKP_OK) {
			return failed(k, op, err);
		}
		printf("%s\n", nkpi_kmip_state_name(st, buf, sizeof(buf)));
	} else if (strcmp(op, "locate") == 0 && argc == 2) {
		static char ids[LOCATE_MAX][NKPI_KMIP_ID_MAX];
		size_t n;

		if ((err = nkpi_kmip_locate(k, argv[1], ids, LOCATE_MAX, &n)) != NKP_OK) {
			return failed(k, op, err);
		}
		for (size_t i = 0; i < n; i++) {
			printf("%s\n", ids[i]);
		}
	} else if (strcmp(op, "revoke") == 0 && argc == 2) {
		if ((err = nkpi_kmip_revoke(k, argv[1], NKPI_KMIP_REVOKE_CESSATION_OF_OPERATION)) !=
		    NKP_OK) {
			return failed(k, op, err);
		}
	} else if (strcmp(op, "destroy") == 0 && argc == 2) {
		if ((err = nkpi_kmip_destroy(k, argv[1])) != NKP_OK) {
			return failed(k, op, err);
		}
	} else if (strcmp(op, "memscan") == 0 && argc <= 2) {
		if (sanitized()) {
			printf("-\n"); /* ASan's shadow maps cannot be walked */
		} else {
			printf("%lu\n", memscan(argc == 2 && strcmp(argv[1], "--stack") == 0));
		}
	} else if (strcmp(op, "bench") == 0 && argc == 2 && atol(argv[1]) > 0) {
		return bench(k, atol(argv[1]));
	} else {
		return usage();
	}
	return 0;
}

/* The OPs of argv, separated by "+", until one fails. */
static int run_all(nkpi_kmip *k, int argc, char **argv)
{
	int rc = 0;

	for (int i = 0, j; rc == 0 && i < argc; i = j + 1) {
		for (j = i; j < argc && strcmp(argv[j], "+") != 0; j++) {
		}
		rc = j > i ? run(k, j - i, argv + i) : usage();
	}
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kms", required_argument, NULL, 'k'},
		{"ca", required_argument, NULL, 'a'},
		{"cert", required_argument, NULL, 'c'},
		{"key", required_argument, NULL, 'y'},
		{"timeout-ms", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *servers[NKPI_KMIP_SERVERS_MAX];
	nkpi_kmip_config cfg = {.servers = servers};
	const char *ca = NULL, *cert = NULL, *key = NULL;
	uint8_t *pem[3] = {NULL, NULL, NULL};
	size_t len[3] = {0, 0, 0};
	nkpi_kmip *k = NULL;
	char why[256] = "";
	nkp_err err;
	int c, rc;

	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			if (cfg.n_servers == NKPI_KMIP_SERVERS_MAX) {
				return usage();
			}
			servers[cfg.n_servers++] = optarg;
			break;
		case 'a':
			ca = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'y':
			key = optarg;
			break;
		case 't':
			cfg.timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'h':
			usage();
			return 0;
		default:
			return usage();
		}
	}
	if (optind >= argc || cfg.n_servers == 0 || ca == NULL || cert == NULL || key == NULL ||
	    nkp_init() != NKP_OK) {
		return usage();
	}
	const char *files[3] = {ca, cert, key};
	rc = 1;
	for (int i = 0; i < 3; i++) {
		err = nkp_file_read(files[i], 1u << 20, &pem[i], &len[i]);
		if (err != NKP_OK) {
			fprintf(stderr, "kmipc: %s: %s\n", files[i], nkp_strerror(err));
			goto out;
		}
	}
	cfg.ca_pem = pem[0];
	cfg.ca_len = len[0];
	cfg.cert_pem = pem[1];
	cfg.cert_len = len[1];
	cfg.key_pem = pem[2];
	cfg.key_len = len[2];
	err = nkpi_kmip_new(&cfg, &k, why, sizeof(why));
	if (err != NKP_OK) {
		fprintf(stderr, "kmipc: %s: %s\n", nkp_strerror(err), why);
		rc = err == NKP_ERR_INVALID ? 2 : 1;
		goto out;
	}
	rc = run_all(k, argc - optind, argv + optind);
	nkpi_kmip_free(k);
out:
	for (int i = 0; i < 3; i++) {
		if (pem[i] != NULL) {
			sodium_memzero(pem[i], len[i]);
			free(pem[i]);
		}
	}
	return rc;
}
