/* A TPM's attestation key and quotes, its endorsement key and credential
 * activation (nkp/private/tpm.h, "Attestation"). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include <nkp/log.h>

#include "internal.h"
#include "tpm-internal.h"
#include "tpm.h"

/* ---- attestation ---------------------------------------------------- */

#define AK_UNIQUE "nkp-attestation-key"

static nkp_err ak_create(nkpi_tpm *t, ESYS_TR *out, TPM2B_PUBLIC **pub)
{
	TPM2B_PUBLIC tmpl = {
		.publicArea =
			{
				.type = TPM2_ALG_ECC,
				.nameAlg = TPM2_ALG_SHA256,
				.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						    TPMA_OBJECT_SENSITIVEDATAORIGIN |
						    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
						    TPMA_OBJECT_RESTRICTED |
						    TPMA_OBJECT_SIGN_ENCRYPT,
				.parameters.eccDetail =
					{
						.symmetric = {.algorithm = TPM2_ALG_NULL},
						.scheme = {.scheme = TPM2_ALG_ECDSA,
							   .details.ecdsa.hashAlg =
								   TPM2_ALG_SHA256},
						.curveID = TPM2_ECC_NIST_P256,
						.kdf = {.scheme = TPM2_ALG_NULL},
					},
			},
	};

	tmpl.publicArea.unique.ecc.x.size = sizeof(AK_UNIQUE) - 1;
	memcpy(tmpl.publicArea.unique.ecc.x.buffer, AK_UNIQUE, sizeof(AK_UNIQUE) - 1);
	return nkpi_tpm_create_primary(t, ESYS_TR_RH_ENDORSEMENT, &tmpl,
				       "creating the attestation key", out, pub);
}

static nkp_err marshal_public(const TPM2B_PUBLIC *pub, uint8_t *out, size_t *out_len)
{
	*out_len = 0;
	return Tss2_MU_TPM2B_PUBLIC_Marshal(pub, out, NKPI_TPM_PUBLIC_MAX, out_len) ==
			       TSS2_RC_SUCCESS
		       ? NKP_OK
		       : NKP_ERR_TPM;
}

nkp_err nkpi_tpm_ak_public(nkpi_tpm *t, uint8_t *out, size_t *out_len)
{
	ESYS_TR ak = ESYS_TR_NONE;
	TPM2B_PUBLIC *pub = NULL;
	nkp_err err = ak_create(t, &ak, &pub);

	if (err == NKP_OK) {
		err = marshal_public(pub, out, out_len);
	}
	nkpi_tpm_flush(t, &ak);
	Esys_Free(pub);
	return err;
}

nkp_err nkpi_tpm_quote(nkpi_tpm *t, const uint8_t *nonce, size_t nonce_len, uint32_t pcr_mask,
		       nkpi_tpm_quote_out *out)
{
	const TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA,
					.details.ecdsa.hashAlg = TPM2_ALG_SHA256};
	TPML_PCR_SELECTION sel;
	TPM2B_DATA qualifying = {0};
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_ATTEST *attest = NULL;
	TPMT_SIGNATURE *sig = NULL;
	ESYS_TR ak = ESYS_TR_NONE;
	nkp_err err;
	TSS2_RC rc;

	if (nonce == NULL || nonce_len == 0 || nonce_len > NKPI_TPM_NONCE_MAX ||
	    (pcr_mask & 0xff000000u) != 0 || pcr_mask == 0 || out == NULL) {
		return NKP_ERR_INVALID;
	}
	memset(out, 0, sizeof(*out));
	nkpi_tpm_pcr_selection(pcr_mask, &sel);
	qualifying.size = (UINT16)nonce_len;
	memcpy(qualifying.buffer, nonce, nonce_len);
	err = ak_create(t, &ak, &pub);
	if (err == NKP_OK) {
		rc = Esys_Quote(t->esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				&qualifying, &scheme, &sel, &attest, &sig);
		err = rc == TSS2_RC_SUCCESS ? NKP_OK : nkpi_tpm_fail("quoting the PCRs", rc);
	}
	if (err == NKP_OK) {
		err = marshal_public(pub, out->ak_public, &out->ak_public_len);
	}
	if (err == NKP_OK && (Tss2_MU_TPM2B_ATTEST_Marshal(attest, out->attest, sizeof(out->attest),
							   &out->attest_len) != TSS2_RC_SUCCESS ||
			      Tss2_MU_TPMT_SIGNATURE_Marshal(sig, out->sig, sizeof(out->sig),
							     &out->sig_len) != TSS2_RC_SUCCESS)) {
		err = NKP_ERR_TPM;
	}
	nkpi_tpm_flush(t, &ak);
	Esys_Free(pub);
	Esys_Free(attest);
	Esys_Free(sig);
	return err;
}

/* ---- the endorsement key and credential activation ------------------ */

/* TCG EK Credential Profile, the default EK template "L-1". Its policy is
 * PolicySecret(TPM_RH_ENDORSEMENT): using the key takes the endorsement
 * hierarchy's authorisation (empty on a machine set up as ours are). */
static nkp_err ek_create(nkpi_tpm *t, ESYS_TR *out, TPM2B_PUBLIC **pub)
{
	static const uint8_t policy[32] = {
		0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
		0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
		0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
	};
	TPM2B_PUBLIC tmpl = {
		.publicArea =
			{
				.type = TPM2_ALG_RSA,
				.nameAlg = TPM2_ALG_SHA256,
				.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						    TPMA_OBJECT_SENSITIVEDATAORIGIN |
						    TPMA_OBJECT_ADMINWITHPOLICY |
						    TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
				.parameters.rsaDetail =
					{
						.symmetric = {.algorithm = TPM2_ALG_AES,
							      .keyBits.aes = 128,
							      .mode.aes = TPM2_ALG_CFB},
						.scheme = {.scheme = TPM2_ALG_NULL},
						.keyBits = 2048,
						.exponent = 0,
					},
				.unique.rsa.size = 256,
			},
	};

	tmpl.publicArea.authPolicy.size = sizeof(policy);
	memcpy(tmpl.publicArea.authPolicy.buffer, policy, sizeof(policy));
	return nkpi_tpm_create_primary(t, ESYS_TR_RH_ENDORSEMENT, &tmpl,
				       "creating the endorsement key", out, pub);
}

/* The most one NV_Read returns: the TPM's TPM2_PT_NV_BUFFER_MAX, within
 * what TPM2B_MAX_NV_BUFFER holds. */
static nkp_err nv_chunk_max(nkpi_tpm *t, uint16_t *out)
{
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more = TPM2_NO;
	TSS2_RC rc =
		Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				   TPM2_CAP_TPM_PROPERTIES, TPM2_PT_NV_BUFFER_MAX, 1, &more, &cap);

	if (rc != TSS2_RC_SUCCESS) {
		return nkpi_tpm_fail("reading the NV buffer size", rc);
	}
	*out = TPM2_MAX_NV_BUFFER_SIZE;
	if (cap->data.tpmProperties.count == 1 &&
	    cap->data.tpmProperties.tpmProperty[0].property == TPM2_PT_NV_BUFFER_MAX &&
	    cap->data.tpmProperties.tpmProperty[0].value != 0 &&
	    cap->data.tpmProperties.tpmProperty[0].value < TPM2_MAX_NV_BUFFER_SIZE) {
		*out = (uint16_t)cap->data.tpmProperties.tpmProperty[0].value;
	}
	Esys_Free(cap);
	return NKP_OK;
}

/* Reads all of NV index `nv` (size `size`) as tpm2_nvread does by
 * default: authorised by the index itself, with its empty password. The
 * certificate is public: no encrypted session. */
static nkp_err nv_read_all(nkpi_tpm *t, ESYS_TR nv, uint16_t size, uint8_t *out)
{
	uint16_t chunk = 0;
	nkp_err err = nv_chunk_max(t, &chunk);

	for (uint16_t off = 0; err == NKP_OK && off < size;) {
		uint16_t n = (uint16_t)(size - off) < chunk ? (uint16_t)(size - off) : chunk;
		TPM2B_MAX_NV_BUFFER *data = NULL;
		TSS2_RC rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					  ESYS_TR_NONE, n, off, &data);

		if (rc != TSS2_RC_SUCCESS) {
			err = nkpi_tpm_fail("reading the EK certificate", rc);
		} else if (data->size != n) {
			nkp_log(NKP_LOG_ERR, "NKP-TPM-FAILED",
				"TPM: reading the EK certificate: %u bytes at %u, not %u",
				(unsigned)data->size, (unsigned)off, (unsigned)n);
			err = NKP_ERR_TPM;
		} else {
			memcpy(out + off, data->buffer, n);
			off = (uint16_t)(off + n);
		}
		Esys_Free(data);
	}
	return err;
}

/* The EK certificate from its NV index, *len 0 when the index is not
 * defined. Some TPMs pad the index after the certificate: a DER SEQUENCE
 * with a two-byte length is cut to that length. */
static nkp_err ek_cert_read(nkpi_tpm *t, uint8_t *out, size_t *len)
{
	ESYS_TR nv = ESYS_TR_NONE;
	TPM2B_NV_PUBLIC *pub = NULL;
	uint16_t size;
	nkp_err err;
	TSS2_RC rc = Esys_TR_FromTPMPublic(t->esys, NKPI_TPM_EK_CERT_NV, ESYS_TR_NONE, ESYS_TR_NONE,
					   ESYS_TR_NONE, &nv);

	if (nkpi_tpm_rc_base(rc) == TPM2_RC_HANDLE) {
		*len = 0;
		return NKP_OK;
	}
	if (rc != TSS2_RC_SUCCESS) {
		return nkpi_tpm_fail("looking up the EK certificate's NV index", rc);
	}
	rc = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		err = nkpi_tpm_fail("reading the EK certificate's NV index", rc);
		goto out_close;
	}
	size = pub->nvPublic.dataSize;
	if (size > NKPI_TPM_EK_CERT_MAX) {
		nkp_log(NKP_LOG_ERR, "NKP-TPM-FAILED",
			"TPM: the EK certificate (%u bytes) is over the %u bytes nkp reads",
			(unsigned)size, NKPI_TPM_EK_CERT_MAX);
		err = NKP_ERR_TOO_LARGE;
		goto out_free;
	}
	err = nv_read_all(t, nv, size, out);
	if (err == NKP_OK) {
		*len = size;
		if (size >= 4 && out[0] == 0x30 && out[1] == 0x82 &&
		    4u + (((size_t)out[2] << 8) | out[3]) <= size) {
			*len = 4u + (((size_t)out[2] << 8) | out[3]);
		}
	}
out_free:
	Esys_Free(pub);
out_close:
	(void)Esys_TR_Close(t->esys, &nv);
	return err;
}

nkp_err nkpi_tpm_ek(nkpi_tpm *t, uint8_t *ek, size_t *ek_len, uint8_t *cert, size_t *cert_len)
{
	ESYS_TR handle = ESYS_TR_NONE;
	TPM2B_PUBLIC *pub = NULL;
	size_t pub_len = 0, c_len = 0;
	nkp_err err = ek_create(t, &handle, &pub);

	if (err == NKP_OK && Tss2_MU_TPM2B_PUBLIC_Marshal(pub, ek, NKPI_TPM_EK_PUBLIC_MAX,
							  &pub_len) != TSS2_RC_SUCCESS) {
		err = NKP_ERR_TPM;
	}
	nkpi_tpm_flush(t, &handle);
	Esys_Free(pub);
	if (err == NKP_OK) {
		err = ek_cert_read(t, cert, &c_len);
	}
	if (err == NKP_OK) {
		*ek_len = pub_len;
		*cert_len = c_len;
	}
	return err;
}

/* A TPM2B of outside bytes: its size field covers exactly the rest, and
 * it is not empty. */
static bool tpm2b_exact(const uint8_t *buf, size_t len)
{
	return buf != NULL && len > 2 && (((size_t)buf[0] << 8) | buf[1]) == len - 2;
}

/* A policy session satisfying the EK's policy, PolicySecret(TPM_RH_ENDORSEMENT). */
static nkp_err ek_policy_start(nkpi_tpm *t, ESYS_TR *out)
{
	const TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
	const TPM2B_NONCE nonce = {0};
	const TPM2B_DIGEST cp_hash = {0};
	const TPM2B_NONCE ref = {0};
	TSS2_RC rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
					   ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &sym,
					   TPM2_ALG_SHA256, out);

	if (rc != TSS2_RC_SUCCESS) {
		return nkpi_tpm_fail("starting the EK's policy session", rc);
	}
	rc = Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, *out, ESYS_TR_PASSWORD,
			       ESYS_TR_NONE, ESYS_TR_NONE, &nonce, &cp_hash, &ref, 0, NULL, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		nkpi_tpm_flush(t, out);
		return nkpi_tpm_fail("satisfying the EK's policy (PolicySecret, endorsement)", rc);
	}
	return NKP_OK;
}

/* Why ActivateCredential failed. The TPM names the blob or the secret
 * (made for another EK or AK name, or altered): NKP_ERR_AUTH. libtpms
 * (swtpm) answers a secret its EK cannot decrypt with TPM_RC_FAILURE, not
 * TPM_RC_VALUE: that too, unless the TPM says it is in failure mode. */
static nkp_err activate_error(nkpi_tpm *t, TSS2_RC rc)
{
	TPM2B_MAX_BUFFER *data = NULL;
	TPM2_RC result = TPM2_RC_FAILURE;

	if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1) != 0 &&
	    (rc & TPM2_RC_P) != 0) {
		return NKP_ERR_AUTH;
	}
	if (rc == TPM2_RC_FAILURE &&
	    Esys_GetTestResult(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &data, &result) ==
		    TSS2_RC_SUCCESS &&
	    result == TPM2_RC_SUCCESS) {
		Esys_Free(data);
		return NKP_ERR_AUTH;
	}
	Esys_Free(data);
	return nkpi_tpm_fail("activating the credential", rc);
}

/* TPM2_ActivateCredential. The credential is the service's challenge,
 * not a key of ours, but it proves this TPM holds the EK: it comes back
 * as the unsealed key does, in a session salted by the EK that encrypts
 * the response's first parameter (certInfo), so that what crosses the
 * TCTI cannot be replayed by anything that only watches it. */
static nkp_err activate(nkpi_tpm *t, ESYS_TR ak, ESYS_TR ek, const TPM2B_ID_OBJECT *blob,
			const TPM2B_ENCRYPTED_SECRET *secret, uint8_t *out, size_t *out_len)
{
	ESYS_TR policy = ESYS_TR_NONE, enc = ESYS_TR_NONE;
	TPM2B_DIGEST *cred = NULL;
	nkp_err err = nkpi_tpm_session_start(t, ek, TPM2_SE_HMAC, &enc);
	TSS2_RC rc;

	if (err == NKP_OK) {
		err = ek_policy_start(t, &policy);
	}
	if (err == NKP_OK) {
		rc = Esys_ActivateCredential(t->esys, ak, ek, ESYS_TR_PASSWORD, policy, enc, blob,
					     secret, &cred);
		err = rc == TSS2_RC_SUCCESS ? NKP_OK : activate_error(t, rc);
	}
	if (err == NKP_OK) {
		if (cred->size == 0 || cred->size > NKPI_TPM_CREDENTIAL_MAX) {
			err = NKP_ERR_TPM;
		} else {
			memcpy(out, cred->buffer, cred->size);
			*out_len = cred->size;
		}
	}
	if (cred != NULL) {
		sodium_memzero(cred, sizeof(*cred));
	}
	Esys_Free(cred);
	nkpi_tpm_flush(t, &policy);
	nkpi_tpm_flush(t, &enc);
	return err;
}

nkp_err nkpi_tpm_activate(nkpi_tpm *t, const uint8_t *blob, size_t blob_len, const uint8_t *secret,
			  size_t secret_len, uint8_t *out, size_t *out_len)
{
	TPM2B_ID_OBJECT id = {0};
	TPM2B_ENCRYPTED_SECRET enc = {0};
	ESYS_TR ak = ESYS_TR_NONE, ek = ESYS_TR_NONE;
	size_t off_id = 0, off_enc = 0;
	nkp_err err;

	if (!tpm2b_exact(blob, blob_len) || !tpm2b_exact(secret, secret_len) ||
	    Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(blob, blob_len, &off_id, &id) != TSS2_RC_SUCCESS ||
	    off_id != blob_len ||
	    Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(secret, secret_len, &off_enc, &enc) !=
		    TSS2_RC_SUCCESS ||
	    off_enc != secret_len || out == NULL || out_len == NULL) {
		return NKP_ERR_INVALID;
	}
	err = ak_create(t, &ak, NULL);
	if (err == NKP_OK) {
		err = ek_create(t, &ek, NULL);
	}
	if (err == NKP_OK) {
		err = activate(t, ak, ek, &id, &enc, out, out_len);
	}
	nkpi_tpm_flush(t, &ek);
	nkpi_tpm_flush(t, &ak);
	return err;
}
