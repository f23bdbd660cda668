/* fuzz-keylog: a host's keys.nkp.log (hostd-plugin/persist.c) through the
 * real loader, nkp_hostd_open(), after a fixed snapshot keys.nkp. The
 * input is the whole log file; seeds are logs of genuine records, torn,
 * reordered and stale ones (gen-corpus.c). */
#include "fuzz-keylog.h"

#include <sys/stat.h>

#include <nkp/hostd.h>

static char *dir;
static char keys_path[4096], log_path[4096];

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

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_hostd_config cfg = {0};
	nkp_identity *svc;
	uint8_t seal[NKP_KEY_BYTES], host_pub[NKP_PUBKEY_BYTES], *snap = NULL;
	char path[4096];
	size_t len = 0;

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	snprintf(path, sizeof(path), "%s/seal.key", dir);
	memset(seal, FZ_SEAL_BYTE, sizeof(seal));
	put_file(path, seal, sizeof(seal));
	if (chmod(path, 0600) != 0) {
		abort();
	}
	svc = fz_identity(FZ_SERVICE_SECRET);
	cfg.state_dir = dir;
	fz_check(nkp_hostd_init(&cfg, nkp_identity_public(svc), host_pub), "host init");
	nkp_identity_free(svc);
	snprintf(keys_path, sizeof(keys_path), "%s/keys.nkp", dir);
	snprintf(log_path, sizeof(log_path), "%s/keys.nkp.log", dir);
	fz_host_keys("nkp-host-keys", 1, 1, &snap, &len);
	put_file(keys_path, snap, len);
	free(snap);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "fuzz"};
	nkp_hostd *h = NULL;

	put_file(log_path, data, size);
	if (nkp_hostd_open(&cfg, &h) == NKP_OK) {
		nkp_hostd_close(h);
	}
	return 0;
}
