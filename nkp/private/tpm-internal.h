/* What tpm.c and tpm-attest.c share: the handle and the helpers every TPM
 * command of nkp's uses. Not for other callers (nkp/private/tpm.h). */
#ifndef NKP_PRIVATE_TPM_INTERNAL_H
#define NKP_PRIVATE_TPM_INTERNAL_H

#include <stdint.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include <nkp/err.h>

#include "tpm.h"

struct nkpi_tpm {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
};

/* A TPM response code without its handle/parameter/session number. */
TSS2_RC nkpi_tpm_rc_base(TSS2_RC rc);
/* Logs what failed (NKP-TPM-FAILED) and returns NKP_ERR_TPM. */
nkp_err nkpi_tpm_fail(const char *what, TSS2_RC rc);
/* A primary key of `hierarchy` from `tmpl`, with empty auth: the same
 * template on the same TPM always yields the same key. `pub` may be NULL. */
nkp_err nkpi_tpm_create_primary(nkpi_tpm *t, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
				const char *what, ESYS_TR *out, TPM2B_PUBLIC **pub);
/* A session salted by `primary`, encrypting responses (and commands, for
 * an HMAC session). */
nkp_err nkpi_tpm_session_start(nkpi_tpm *t, ESYS_TR primary, TPM2_SE type, ESYS_TR *out);
/* Flushes *h if it is a handle, and sets it to ESYS_TR_NONE. */
void nkpi_tpm_flush(nkpi_tpm *t, ESYS_TR *h);
/* The SHA-256 PCRs of `mask`, one selection of 3 bytes. */
void nkpi_tpm_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel);

#endif
