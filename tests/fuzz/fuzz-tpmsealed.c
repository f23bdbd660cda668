/* fuzz-tpmsealed: DIR/seal.tpm (proto/atrest.proto TpmSealed, holding the
 * TPM's own TPM2B_PUBLIC and TPM2B_PRIVATE encodings) through
 * nkpi_tpm_sealed_check(), every check nkpi_tpm_unseal() makes before it
 * sends anything to a TPM. Seeds: a seal.tpm made by swtpm
 * (tests/vectors/tpm-sealed-v1.bin) and variants (gen-corpus.c). */
#include "fuzz-util.h"

#include "tpm.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *tcti = NULL;

	if (nkpi_tpm_sealed_check(data, size, &tcti) == NKP_OK) {
		free(tcti);
	}
	return 0;
}
