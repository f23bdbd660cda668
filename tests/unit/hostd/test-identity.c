/* Known-answer vector of nkp-hostd's identity.nkp
 * (tests/vectors/identity-v1.{bin,txt}): nkp_hostd_init, under a
 * deterministic RNG and a fixed clock, writes exactly the checked-in bytes,
 * and the real loader (nkp_hostd_open) opens the checked-in file to the
 * recorded host and service keys. Regenerate with tests/vectors/regen. */
#include <criterion/criterion.h>

#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "hostd-internal.h"
#include "test-util.h"
#include "vectors.h"

static void put(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(chmod(path, 0600), 0);
}

static uint8_t *get(const char *dir, const char *name, size_t *len)
{
	char path[4096];
	uint8_t *buf = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	cr_assert_eq(nkp_file_read(path, 1 << 20, &buf, len), NKP_OK, "%s", path);
	return buf;
}

TestSuite(identity_vector);

Test(identity_vector, identity_v1_matches_the_checked_in_vector)
{
	nkp_hostd_config cfg = {0};
	uint8_t svc_pub[NKP_PUBKEY_BYTES], host_pub[NKP_PUBKEY_BYTES], want[NKP_PUBKEY_BYTES];
	uint8_t *bin, *seal;
	size_t len = 0, slen = 0;
	char *dir;

	vec_load("identity-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	cr_assert_eq(randombytes_set_implementation(&det_rng), 0);
	nkp_log_set_sink(NULL, NULL);
	cr_assert_eq(nkp_init(), NKP_OK);
	nkpi_set_clock(vec_u64("clock"));
	vec_hex("service_key", svc_pub, sizeof(svc_pub));
	dir = tu_tmpdir();
	cfg.state_dir = dir;
	rng_calls = 0;
	cr_assert_eq(nkp_hostd_init(&cfg, svc_pub, host_pub), NKP_OK);
	bin = get(dir, "identity.nkp", &len);
	seal = get(dir, "seal.key", &slen);
	cr_assert_eq(slen, NKP_KEY_BYTES);
	if (regen_vectors()) {
		print_hex("seal_key", seal, slen);
		print_hex("host_key", host_pub, sizeof(host_pub));
	}
	vec_check_bin("identity-v1.bin", bin, len);
	vec_hex("seal_key", want, sizeof(want));
	cr_assert_arr_eq(seal, want, NKP_KEY_BYTES, "seal.key differs from the vector");
	vec_hex("host_key", want, sizeof(want));
	cr_assert_arr_eq(host_pub, want, sizeof(want), "host key differs from the vector");
	sodium_memzero(seal, slen);
	free(seal);
	free(bin);
	tu_rmdir(dir);
	free(dir);
}

Test(identity_vector, the_loader_opens_identity_v1_to_the_recorded_keys)
{
	nkp_hostd_config cfg = {0};
	nkp_hostd *h = NULL;
	uint8_t seal[NKP_KEY_BYTES], want[NKP_PUBKEY_BYTES], *bin = NULL;
	size_t len = 0;
	char *dir;

	nkp_log_set_sink(NULL, NULL);
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_load("identity-v1.txt");
	dir = tu_tmpdir();
	cr_assert_eq(chmod(dir, 0700), 0);
	vec_hex("seal_key", seal, sizeof(seal));
	put(dir, "seal.key", seal, sizeof(seal));
	sodium_memzero(seal, sizeof(seal));
	cr_assert_eq(nkp_file_read(vec_path("identity-v1.bin"), 1 << 20, &bin, &len), NKP_OK);
	put(dir, "identity.nkp", bin, len);
	free(bin);
	cfg.state_dir = dir;
	cfg.host_name = "vector";
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	vec_hex("host_key", want, sizeof(want));
	cr_assert_arr_eq(nkp_hostd_public_key(h), want, sizeof(want));
	vec_hex("service_key", want, sizeof(want));
	cr_assert_arr_eq(nkp_hostd_service_key(h), want, sizeof(want));
	nkp_hostd_close(h);
	tu_rmdir(dir);
	free(dir);
}
