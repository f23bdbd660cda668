/* nkp-bench quote: the cost of checking a host's TPM quote on nkpd (the
 * trusted provider's attestation), against the one ECDSA P-256
 * verification it cannot do without, and what that makes per attestation
 * interval at a given number of hosts.
 *
 * nkp:  nkpi_quote_verify() of the recorded quote (tests/vectors/quote-v1.txt):
 *       unmarshalling, the qualified name, SHA-256, ECDSA, the checks.
 * raw:  mbedtls_ecdsa_verify() of the same signature over the same hash
 *       with the point already loaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ecdsa.h>
#include <sodium.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "quote.h"

static const char usage[] =
	"Usage: nkp-bench quote [--json] [--rounds N] [--iters N] [--hosts N]\n"
	"                       [--interval SECONDS]\n"
	"\n"
	"Measures ns per TPM quote check (nkpd's, on the recorded quote of\n"
	"tests/vectors/quote-v1.txt) beside a bare ECDSA P-256 verification, and\n"
	"prints medians over N rounds (default 21 rounds of 200 iterations), then\n"
	"the CPU nkpd spends per attestation interval (default 600 s) at --hosts\n"
	"(default 2500).\n";

typedef struct qctx {
	uint8_t ak[256], attest[1024], sig[128], nonce[32];
	size_t ak_len, attest_len, sig_len;
	int failures;
	/* raw */
	mbedtls_ecp_group grp;
	mbedtls_ecp_point q;
	mbedtls_mpi r, s;
	uint8_t hash[32];
} qctx;

static int field(const char *txt, const char *key, uint8_t *out, size_t max, size_t *len)
{
	char pat[64];
	const char *at;

	snprintf(pat, sizeof(pat), "\n%s: ", key);
	at = strstr(txt, pat);
	if (at == NULL) {
		return -1;
	}
	at += strlen(pat);
	return sodium_hex2bin(out, max, at, strcspn(at, "\n"), NULL, len, NULL);
}

static int load(qctx *c)
{
	uint8_t *buf = NULL;
	size_t len = 0, n = 0;
	char *txt;
	int rc;

	if (nkp_file_read(NKP_VECTORS_DIR "/quote-v1.txt", 1 << 16, &buf, &len) != NKP_OK) {
		return -1;
	}
	txt = realloc(buf, len + 1);
	txt[len] = '\0';
	rc = field(txt, "ak_public", c->ak, sizeof(c->ak), &c->ak_len) |
	     field(txt, "attest", c->attest, sizeof(c->attest), &c->attest_len) |
	     field(txt, "sig", c->sig, sizeof(c->sig), &c->sig_len) |
	     field(txt, "nonce", c->nonce, sizeof(c->nonce), &n);
	free(txt);
	return rc == 0 && n == sizeof(c->nonce) ? 0 : -1;
}

static void nkp_check(void *arg)
{
	qctx *c = arg;
	const nkpi_quote_expect e = {c->ak, c->ak_len, c->nonce, sizeof(c->nonce), 1u << 16};
	nkpi_quote_result r;

	if (nkpi_quote_verify(&e, c->attest, c->attest_len, c->sig, c->sig_len, &r) != NKP_OK) {
		c->failures++;
	}
}

static void raw_check(void *arg)
{
	qctx *c = arg;

	if (mbedtls_ecdsa_verify(&c->grp, c->hash, sizeof(c->hash), &c->q, &c->r, &c->s) != 0) {
		c->failures++;
	}
}

/* The raw side's inputs, from the same structures (offsets of a
 * TPM2B_PUBLIC of an ECC key with nkp's template and of a TPMT_SIGNATURE
 * of ECDSA: x and y are the last two 32-byte TPM2Bs, r and s likewise). */
static int raw_setup(qctx *c)
{
	uint8_t pt[65];

	pt[0] = 0x04;
	memcpy(pt + 1, c->ak + c->ak_len - 66, 32);
	memcpy(pt + 33, c->ak + c->ak_len - 32, 32);
	crypto_hash_sha256(c->hash, c->attest + 2, c->attest_len - 2);
	mbedtls_ecp_group_init(&c->grp);
	mbedtls_ecp_point_init(&c->q);
	mbedtls_mpi_init(&c->r);
	mbedtls_mpi_init(&c->s);
	return mbedtls_ecp_group_load(&c->grp, MBEDTLS_ECP_DP_SECP256R1) != 0 ||
			       mbedtls_ecp_point_read_binary(&c->grp, &c->q, pt, sizeof(pt)) != 0 ||
			       mbedtls_mpi_read_binary(&c->r, c->sig + 6, 32) != 0 ||
			       mbedtls_mpi_read_binary(&c->s, c->sig + 40, 32) != 0
		       ? -1
		       : 0;
}

static unsigned long opt_ul(int *argc, char **argv, const char *name, unsigned long def)
{
	for (int i = 1; i + 1 < *argc; i++) {
		if (strcmp(argv[i], name) == 0) {
			unsigned long v = strtoul(argv[i + 1], NULL, 10);

			memmove(argv + i, argv + i + 2, (size_t)(*argc - i - 1) * sizeof(*argv));
			*argc -= 2;
			return v;
		}
	}
	return def;
}

int bench_quote_main(int argc, char **argv)
{
	bench_opts o = {.rounds = 21, .iters = 200};
	unsigned long hosts = opt_ul(&argc, argv, "--hosts", 2500);
	unsigned long interval = opt_ul(&argc, argv, "--interval", 600);
	static qctx c;
	bench_pair p;
	double per_interval_ms, core_pct;
	int rc = bench_parse_common(argc, argv, &o, usage);

	if (rc != 0) {
		return rc == 1 ? 0 : rc;
	}
	if (hosts == 0 || interval == 0) {
		fprintf(stderr, "nkp-bench quote: --hosts and --interval must be positive\n");
		return 2;
	}
	if (nkp_init() != NKP_OK || load(&c) != 0 || raw_setup(&c) != 0) {
		fprintf(stderr, "nkp-bench quote: cannot load %s/quote-v1.txt\n", NKP_VECTORS_DIR);
		return 1;
	}
	raw_check(&c);
	nkp_check(&c);
	if (c.failures != 0 ||
	    bench_pair_median(nkp_check, &c, raw_check, &c, o.rounds, o.iters, &p) != 0) {
		fprintf(stderr, "nkp-bench quote: the recorded quote does not check out\n");
		return 1;
	}
	per_interval_ms = p.a_ns * (double)hosts / 1e6;
	core_pct = per_interval_ms / ((double)interval * 1000.0) * 100.0;
	if (o.json) {
		printf("{\"quote_check_ns\":%.0f,\"ecdsa_verify_ns\":%.0f,\"ratio\":%.3f,"
		       "\"hosts\":%lu,\"interval_s\":%lu,\"cpu_ms_per_interval\":%.1f,"
		       "\"core_percent\":%.4f}\n",
		       p.a_ns, p.b_ns, p.ratio, hosts, interval, per_interval_ms, core_pct);
	} else {
		printf("quote check:   %8.0f ns (median of %u rounds)\n", p.a_ns, o.rounds);
		printf("ECDSA verify:  %8.0f ns (the floor)\n", p.b_ns);
		printf("ratio:         %8.3f\n", p.ratio);
		printf("%lu hosts every %lu s: %.1f ms of one core per interval (%.4f %%)\n", hosts,
		       interval, per_interval_ms, core_pct);
	}
	mbedtls_mpi_free(&c.r);
	mbedtls_mpi_free(&c.s);
	mbedtls_ecp_point_free(&c.q);
	mbedtls_ecp_group_free(&c.grp);
	return 0;
}
