/* nkp-bench wrap: the cost of VM key operations against the AEAD calls
 * they are made of.
 *
 * create: nkp_keysafe_create() + nkp_keysafe_add_component("disk:0"),
 *         against the floor any such operation needs: three random 32-byte
 *         keys (KEK, two DEKs), each sealed once with XChaCha20-Poly1305.
 * unwrap: nkp_keysafe_unwrap() of the disk DEK, against two raw opens of
 *         the same sizes: the KEK with the keysafe's real associated data
 *         length, then the DEK. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/keysafe.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "keysafe.pb-c.h"

static const char usage[] =
	"Usage: nkp-bench wrap [--json] [--rounds N] [--iters N]\n"
	"\n"
	"Measures ns per keysafe create (VM key + one disk) and per DEK unwrap,\n"
	"beside raw libsodium XChaCha20-Poly1305 on the same sizes, and prints\n"
	"medians over N rounds (default 21 rounds of 2000 iterations). nkp and\n"
	"raw rounds alternate; the ratio is the median of per-round ratios.\n";

#define KEK_AD_PREFIX (sizeof("nkp-keysafe") - 1 + 4)
#define DEK_AD_LEN 64 /* key id, component name and a label: generous */

typedef struct raw_ctx {
	uint8_t key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
	uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t create_nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t ad[NKP_KEYSAFE_MAX_FILE];
	size_t kek_adlen;
	uint8_t kek_ct[NKP_KEY_BYTES + NKP_TAG_BYTES];
	uint8_t dek_ct[NKP_KEY_BYTES + NKP_TAG_BYTES];
} raw_ctx;

typedef struct nkp_ctx {
	nkp_primary *primary;
	nkp_keysafe *ks;
	nkp_vm_identity id;
	int failures;
} nkp_ctx;

static void raw_create(void *arg)
{
	raw_ctx *c = arg;
	uint8_t k[3][NKP_KEY_BYTES];
	uint8_t ct[NKP_KEY_BYTES + NKP_TAG_BYTES];

	randombytes_buf(k, sizeof(k));
	for (int i = 0; i < 3; i++) {
		randombytes_buf(c->create_nonce, sizeof(c->create_nonce));
		crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, k[i], NKP_KEY_BYTES, c->ad,
							   i == 0 ? c->kek_adlen : DEK_AD_LEN, NULL,
							   c->create_nonce, c->key);
	}
	sodium_memzero(k, sizeof(k));
}

static void raw_unwrap(void *arg)
{
	raw_ctx *c = arg;
	uint8_t kek[NKP_KEY_BYTES];
	uint8_t dek[NKP_KEY_BYTES];

	if (crypto_aead_xchacha20poly1305_ietf_decrypt(kek, NULL, NULL, c->kek_ct,
						       sizeof(c->kek_ct), c->ad, c->kek_adlen,
						       c->nonce, c->key) != 0 ||
	    crypto_aead_xchacha20poly1305_ietf_decrypt(dek, NULL, NULL, c->dek_ct,
						       sizeof(c->dek_ct), c->ad, DEK_AD_LEN,
						       c->nonce, kek) != 0) {
		abort();
	}
	sodium_memzero(kek, sizeof(kek));
	sodium_memzero(dek, sizeof(dek));
}

static void nkp_create(void *arg)
{
	nkp_ctx *c = arg;
	nkp_keysafe *ks = NULL;

	if (nkp_keysafe_create(c->primary, &c->id, &ks) != NKP_OK ||
	    nkp_keysafe_add_component(ks, c->primary, "disk:0") != NKP_OK) {
		c->failures++;
	}
	nkp_keysafe_free(ks);
}

static void nkp_unwrap(void *arg)
{
	nkp_ctx *c = arg;
	uint8_t dek[NKP_KEY_BYTES];

	if (nkp_keysafe_unwrap(c->ks, c->primary, "disk:0", dek) != NKP_OK) {
		c->failures++;
	}
	sodium_memzero(dek, sizeof(dek));
}

/* The length of the associated data nkp binds to the KEK seal of `ks`. */
static nkp_err kek_ad_len(const nkp_keysafe *ks, size_t *out)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Keysafe__KeysafeFile *f;
	nkp_err err = nkp_keysafe_serialize(ks, &buf, &len);

	if (err != NKP_OK) {
		return err;
	}
	f = nkp__keysafe__keysafe_file__unpack(NULL, len, buf);
	if (f == NULL) {
		free(buf);
		return NKP_ERR_PARSE;
	}
	*out = KEK_AD_PREFIX + f->body.len;
	nkp__keysafe__keysafe_file__free_unpacked(f, NULL);
	free(buf);
	return NKP_OK;
}

static nkp_err setup(nkp_ctx *n, raw_ctx *r)
{
	uint8_t pid[NKP_ID_BYTES];
	nkp_key *key = NULL;
	uint8_t kek[NKP_KEY_BYTES], dek[NKP_KEY_BYTES];
	nkp_err err;

	randombytes_buf(pid, sizeof(pid));
	err = nkp_key_generate(&key);
	if (err == NKP_OK) {
		err = nkp_primary_new(pid, 1, key, &n->primary);
	}
	nkp_key_free(key);
	n->id = (nkp_vm_identity){.vm_uuid = "4c4c4544-0042-3510-8052-b4c04f4e4b32",
				  .vm_name = "bench-vm-01"};
	if (err == NKP_OK) {
		err = nkp_keysafe_create(n->primary, &n->id, &n->ks);
	}
	if (err == NKP_OK) {
		err = nkp_keysafe_add_component(n->ks, n->primary, "disk:0");
	}
	if (err == NKP_OK) {
		err = kek_ad_len(n->ks, &r->kek_adlen);
	}
	if (err != NKP_OK) {
		return err;
	}
	randombytes_buf(r->key, sizeof(r->key));
	randombytes_buf(r->nonce, sizeof(r->nonce));
	randombytes_buf(r->ad, sizeof(r->ad));
	randombytes_buf(kek, sizeof(kek));
	randombytes_buf(dek, sizeof(dek));
	crypto_aead_xchacha20poly1305_ietf_encrypt(r->kek_ct, NULL, kek, sizeof(kek), r->ad,
						   r->kek_adlen, NULL, r->nonce, r->key);
	crypto_aead_xchacha20poly1305_ietf_encrypt(r->dek_ct, NULL, dek, sizeof(dek), r->ad,
						   DEK_AD_LEN, NULL, r->nonce, kek);
	sodium_memzero(kek, sizeof(kek));
	sodium_memzero(dek, sizeof(dek));
	return NKP_OK;
}

int bench_wrap_main(int argc, char **argv)
{
	bench_opts o = {.rounds = 21, .iters = 2000};
	nkp_ctx n = {0};
	raw_ctx *r;
	bench_pair create, unwrap;
	nkp_err err;
	int rc = bench_parse_common(argc, argv, &o, usage);

	if (rc != 0) {
		return rc == 1 ? 0 : rc;
	}
	r = sodium_malloc(sizeof(*r));
	if (r == NULL) {
		fprintf(stderr, "nkp-bench wrap: out of memory\n");
		return 1;
	}
	err = setup(&n, r);
	if (err != NKP_OK) {
		fprintf(stderr, "nkp-bench wrap: setup failed: %s\n", nkp_strerror(err));
		rc = 1;
		goto out;
	}
	if (!o.json) {
		printf("wrap: %u rounds x %u iterations, medians\n", o.rounds, o.iters);
	}
	if (bench_pair_median(nkp_create, &n, raw_create, r, o.rounds, o.iters, &create) != 0 ||
	    bench_pair_median(nkp_unwrap, &n, raw_unwrap, r, o.rounds, o.iters, &unwrap) != 0) {
		fprintf(stderr, "nkp-bench wrap: out of memory\n");
		rc = 1;
		goto out;
	}
	if (n.failures != 0) {
		fprintf(stderr, "nkp-bench wrap: %d operations failed\n", n.failures);
		rc = 1;
		goto out;
	}
	if (o.json) {
		printf("{\"bench\":\"wrap\",\"rounds\":%u,\"iters\":%u,\"kek_ad_bytes\":%zu,"
		       "\"create_ns\":%.0f,\"raw_create_ns\":%.0f,\"create_ratio\":%.2f,"
		       "\"unwrap_ns\":%.0f,\"raw_unwrap_ns\":%.0f,\"unwrap_ratio\":%.2f}\n",
		       o.rounds, o.iters, r->kek_adlen, create.a_ns, create.b_ns, create.ratio,
		       unwrap.a_ns, unwrap.b_ns, unwrap.ratio);
	} else {
		printf("  %-28s %10.0f ns   raw AEAD %8.0f ns   ratio %.2f\n",
		       "create (VM key + 1 disk)", create.a_ns, create.b_ns, create.ratio);
		printf("  %-28s %10.0f ns   raw AEAD %8.0f ns   ratio %.2f\n", "unwrap (one DEK)",
		       unwrap.a_ns, unwrap.b_ns, unwrap.ratio);
	}
out:
	nkp_keysafe_free(n.ks);
	nkp_primary_free(n.primary);
	sodium_free(r);
	return rc;
}
