/* fuzz-sealed: the sealed state file format (proto/sealed.proto) through
 * nkp_unseal_bytes() with a fixed key and label; seeds are real sealed
 * images of several sizes (gen-corpus.c). */
#include "fuzz-util.h"

static nkp_key *seal;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	seal = fz_key(FZ_SEAL_BYTE);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *out = NULL;
	size_t outlen = 0;

	if (nkp_unseal_bytes(seal, FZ_SEAL_LABEL, data, size, &out, &outlen) == NKP_OK) {
		nkp_secure_free(out);
	}
	return 0;
}
