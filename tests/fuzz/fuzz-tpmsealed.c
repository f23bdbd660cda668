/* fuzz-tpmsealed: DIR/seal.tpm (proto/atrest.proto TpmSealed, holding the
 * TPM's own TPM2B_PUBLIC and TPM2B_PRIVATE encodings, and for format 2 the
 * seal policy: nkpd's key, its ref and signed approvals) through
 * nkpi_tpm_sealed_check() and nkpi_tpm_sealed_inspect(), every check
 * nkpi_tpm_unseal() makes before it sends anything to a TPM; and a bound
 * object's approvals checked in software (nkpi_policy_verify). Seeds: seal.tpm files made
 * by swtpm (tests/vectors/tpm-sealed-v1.bin, tpm-sealed-v2.bin) and
 * variants (gen-corpus.c). */
#include "fuzz-util.h"

#include "atrest.pb-c.h"
#include "policy.h"
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
	nkpi_tpm_sealed_info info;
	Nkp__Atrest__TpmSealed *m;

	if (nkpi_tpm_sealed_check(data, size, &tcti) != NKP_OK) {
		return 0;
	}
	free(tcti);
	if (nkpi_tpm_sealed_inspect(data, size, &info) != NKP_OK || !info.bound) {
		return 0;
	}
	m = nkp__atrest__tpm_sealed__unpack(NULL, size, data);
	for (size_t i = 0; m != NULL && m->policy != NULL && i < m->policy->n_approvals; i++) {
		const Nkp__Atrest__SealPolicy *p = m->policy;
		const Nkp__Atrest__Approval *a = p->approvals[i];

		(void)nkpi_policy_verify(p->key.data, p->key.len, a->pcr_mask, a->pcr_digest.data,
					 p->ref.data, p->ref.len, a->signature.data,
					 a->signature.len);
	}
	if (m != NULL) {
		nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	}
	return 0;
}
