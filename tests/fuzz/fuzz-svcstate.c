/* fuzz-svcstate: nkpd's state file, state.nkp (proto/svcstate.proto inside
 * a sealed file), through the real loader, nkpd_state_load(). The input is
 * the plaintext: the harness seals it under the state directory's seal key
 * with nkpd's label, so every input gets past authentication and reaches
 * the inner parsing (the sealed-file container itself is fuzz-sealed's).
 * Seeds are a genuine state (gen-corpus.c) and the empty one. */
#include "fuzz-util.h"

#include "core/core.h"

static char *dir;
static char state_path[4096];
static nkp_key *seal;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
	nkpd_svc s;

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	memset(&s, 0, sizeof(s));
	fz_check(nkpd_svc_open(&s, dir, true), "nkpd_svc_open");
	nkpd_svc_close(&s);
	snprintf(state_path, sizeof(state_path), "%s/seal.key", dir);
	fz_check(nkp_keyfile_load(state_path, false, &seal), "seal key");
	snprintf(state_path, sizeof(state_path), "%s/state.nkp", dir);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *sealed = NULL;
	size_t len = 0;
	FILE *fp;
	nkpd_svc t;

	fz_check(nkp_seal_bytes(seal, NKPD_STATE_LABEL, data, size, &sealed, &len), "seal");
	fp = fopen(state_path, "wb");
	if (fp == NULL || fwrite(sealed, 1, len, fp) != len || fclose(fp) != 0) {
		perror(state_path);
		abort();
	}
	free(sealed);
	memset(&t, 0, sizeof(t));
	fz_check(nkpd_svc_open(&t, dir, false), "nkpd_svc_open");
	(void)nkpd_state_load(&t);
	nkpd_svc_close(&t);
	return 0;
}
