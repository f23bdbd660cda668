/* fuzz-identity: nkp-hostd's identity file, identity.nkp
 * (proto/hoststate.proto HostIdentity inside a sealed file), through the
 * real loader, nkp_hostd_open(). The input is the plaintext: the harness
 * seals it under the host's fixed seal key with the identity label, so
 * every input gets past authentication and reaches the inner parsing.
 * Seeds are a genuine identity (gen-corpus.c). */
#include "fuzz-util.h"

#include <sys/stat.h>

#include <nkp/hostd.h>

#define IDENTITY_LABEL "nkp-host-identity" /* hostd-plugin/plugin/hostd.c */

static char *dir;
static char id_path[4096];
static nkp_key *seal;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");

	if (fp == NULL || (len > 0 && fwrite(buf, 1, len, fp) != len) || fclose(fp) != 0) {
		perror(path);
		abort();
	}
}

static void cleanup(void)
{
	nkp_key_free(seal);
	if (dir != NULL) {
		fz_rmrf(dir);
		free(dir);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_hostd_config cfg = {0};
	nkp_identity *svc;
	uint8_t key[NKP_KEY_BYTES], host_pub[NKP_PUBKEY_BYTES];
	char path[4096];

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	snprintf(path, sizeof(path), "%s/seal.key", dir);
	memset(key, FZ_SEAL_BYTE, sizeof(key));
	put_file(path, key, sizeof(key));
	if (chmod(path, 0600) != 0) {
		abort();
	}
	seal = fz_key(FZ_SEAL_BYTE);
	svc = fz_identity(FZ_SERVICE_SECRET);
	cfg.state_dir = dir;
	fz_check(nkp_hostd_init(&cfg, nkp_identity_public(svc), host_pub), "host init");
	nkp_identity_free(svc);
	snprintf(id_path, sizeof(id_path), "%s/identity.nkp", dir);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "fuzz"};
	nkp_hostd *h = NULL;
	uint8_t *sealed = NULL;
	size_t len = 0;

	fz_check(nkp_seal_bytes(seal, IDENTITY_LABEL, data, size, &sealed, &len), "seal");
	put_file(id_path, sealed, len);
	free(sealed);
	if (nkp_hostd_open(&cfg, &h) == NKP_OK) {
		nkp_hostd_close(h);
	}
	return 0;
}
