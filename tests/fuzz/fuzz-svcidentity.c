/* fuzz-svcidentity: nkpd's identity file, identity.nkp
 * (proto/svcstate.proto ServiceIdentity inside a sealed file), through the
 * real loader, nkpd_identity_load(). The input is the plaintext: the
 * harness seals it under a fixed seal key with the identity label, so
 * every input gets past authentication and reaches the inner parsing.
 * Seeds are a genuine identity and a newer format (gen-corpus.c). */
#include "fuzz-util.h"

#include "core/core.h"
#include "store/store.h"

#define IDENTITY_LABEL "nkpd-identity" /* nkp/nkpd/store/identity.c */

static char *dir;
static char id_path[4096];
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
	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	seal = fz_key(FZ_SEAL_BYTE);
	snprintf(id_path, sizeof(id_path), "%s/identity.nkp", dir);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkp_identity *id = NULL;
	uint8_t *sealed = NULL;
	size_t len = 0;

	fz_check(nkp_seal_bytes(seal, IDENTITY_LABEL, data, size, &sealed, &len), "seal");
	fz_check(nkp_file_write_atomic(id_path, sealed, len, 0600, false, false), "write");
	free(sealed);
	if (nkpd_identity_load(dir, seal, false, false, &id) == NKP_OK) {
		nkp_identity_free(id);
	}
	return 0;
}
