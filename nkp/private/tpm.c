/* Sealing a state directory's key to a TPM 2.0 (nkp/private/tpm.h). */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <nkp/log.h>

#include "atrest.pb-c.h"
#include "internal.h"
#include "tpm.h"

#define SEALED_FORMAT_VERSION 1u
#define PARENT_SRK_ECC_P256 1u

struct nkpi_tpm {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
};

/* A TPM response code without its handle/parameter/session number. */
static TSS2_RC rc_base(TSS2_RC rc)
{
	if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) {
		return rc;
	}
	return (rc & TPM2_RC_FMT1) != 0 ? (rc & (TPM2_RC_FMT1 | 0x3Fu)) : rc;
}

static nkp_err tpm_fail(const char *what, TSS2_RC rc)
{
	nkp_log(NKP_LOG_ERR, "NKP-TPM-FAILED", "TPM: %s failed: %s", what, Tss2_RC_Decode(rc));
	return NKP_ERR_TPM;
}

void nkpi_tpm_quiet_logs(void)
{
	(void)setenv("TSS2_LOG", "all+NONE", 0);
}

nkp_err nkpi_tpm_open(const char *tcti, nkpi_tpm **out)
{
	nkpi_tpm *t;
	TSS2_RC rc;

	*out = NULL;
	if (tcti == NULL || tcti[0] == '\0') {
		return NKP_ERR_INVALID;
	}
	nkpi_tpm_quiet_logs();
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		return NKP_ERR_NOMEM;
	}
	rc = Tss2_TctiLdr_Initialize(tcti, &t->tcti);
	if (rc != TSS2_RC_SUCCESS) {
		free(t);
		nkp_log(NKP_LOG_ERR, "NKP-TPM-FAILED", "TPM: cannot open TCTI '%s': %s", tcti,
			Tss2_RC_Decode(rc));
		return NKP_ERR_TPM;
	}
	rc = Esys_Initialize(&t->esys, t->tcti, NULL);
	if (rc == TSS2_RC_SUCCESS) {
		/* Firmware (or swtpm's startup-clear) has normally done it. */
		rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
		rc = rc_base(rc) == TPM2_RC_INITIALIZE ? TSS2_RC_SUCCESS : rc;
	}
	if (rc != TSS2_RC_SUCCESS) {
		nkpi_tpm_close(t);
		nkp_log(NKP_LOG_ERR, "NKP-TPM-FAILED", "TPM: no answer on '%s': %s", tcti,
			Tss2_RC_Decode(rc));
		return NKP_ERR_TPM;
	}
	*out = t;
	return NKP_OK;
}

void nkpi_tpm_close(nkpi_tpm *t)
{
	if (t == NULL) {
		return;
	}
	if (t->esys != NULL) {
		Esys_Finalize(&t->esys);
	}
	Tss2_TctiLdr_Finalize(&t->tcti);
	free(t);
}

/* A primary key of `hierarchy` from `tmpl`, with empty auth: the same
 * template on the same TPM always yields the same key. `pub` may be NULL. */
static nkp_err create_primary(nkpi_tpm *t, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
			      const char *what, ESYS_TR *out, TPM2B_PUBLIC **pub)
{
	const TPM2B_SENSITIVE_CREATE sens = {0};
	const TPM2B_DATA outside = {0};
	const TPML_PCR_SELECTION pcrs = {0};
	TSS2_RC rc =
		Esys_CreatePrimary(t->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				   &sens, tmpl, &outside, &pcrs, out, pub, NULL, NULL, NULL);

	return rc == TSS2_RC_SUCCESS ? NKP_OK : tpm_fail(what, rc);
}

/* The storage primary key (TpmSealed.parent = 1). */
static nkp_err primary_create(nkpi_tpm *t, ESYS_TR *out)
{
	const TPM2B_PUBLIC tmpl = {
		.publicArea =
			{
				.type = TPM2_ALG_ECC,
				.nameAlg = TPM2_ALG_SHA256,
				.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						    TPMA_OBJECT_SENSITIVEDATAORIGIN |
						    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
						    TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
				.parameters.eccDetail =
					{
						.symmetric = {.algorithm = TPM2_ALG_AES,
							      .keyBits.aes = 128,
							      .mode.aes = TPM2_ALG_CFB},
						.scheme = {.scheme = TPM2_ALG_NULL},
						.curveID = TPM2_ECC_NIST_P256,
						.kdf = {.scheme = TPM2_ALG_NULL},
					},
			},
	};

	return create_primary(t, ESYS_TR_RH_OWNER, &tmpl, "creating the storage primary key", out,
			      NULL);
}

/* A session salted by the primary key, encrypting the first parameter of
 * commands and responses (AES-128-CFB): the key crosses the TCTI
 * encrypted. */
static nkp_err session_start(nkpi_tpm *t, ESYS_TR primary, ESYS_TR *out)
{
	const TPMT_SYM_DEF sym = {
		.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
	TSS2_RC rc =
		Esys_StartAuthSession(t->esys, primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				      ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, out);

	if (rc == TSS2_RC_SUCCESS) {
		rc = Esys_TRSess_SetAttributes(t->esys, *out,
					       TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT |
						       TPMA_SESSION_CONTINUESESSION,
					       0xff);
		if (rc != TSS2_RC_SUCCESS) {
			Esys_FlushContext(t->esys, *out);
		}
	}
	return rc == TSS2_RC_SUCCESS ? NKP_OK : tpm_fail("starting an encrypted session", rc);
}

static void flush(nkpi_tpm *t, ESYS_TR *h)
{
	if (*h != ESYS_TR_NONE) {
		(void)Esys_FlushContext(t->esys, *h);
		*h = ESYS_TR_NONE;
	}
}

static nkp_err pack_sealed(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv, const char *tcti,
			   uint8_t **out, size_t *out_len)
{
	Nkp__Atrest__TpmSealed m = NKP__ATREST__TPM_SEALED__INIT;
	uint8_t pub_buf[sizeof(*pub)], priv_buf[sizeof(*priv)];
	size_t pub_len = 0, priv_len = 0;

	if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, pub_buf, sizeof(pub_buf), &pub_len) !=
		    TSS2_RC_SUCCESS ||
	    Tss2_MU_TPM2B_PRIVATE_Marshal(priv, priv_buf, sizeof(priv_buf), &priv_len) !=
		    TSS2_RC_SUCCESS) {
		return NKP_ERR_TPM;
	}
	m.format_version = SEALED_FORMAT_VERSION;
	m.parent = PARENT_SRK_ECC_P256;
	m.public_.data = pub_buf;
	m.public_.len = pub_len;
	m.private_.data = priv_buf;
	m.private_.len = priv_len;
	m.tcti = (char *)(tcti != NULL ? tcti : "");
	*out_len = nkp__atrest__tpm_sealed__get_packed_size(&m);
	*out = malloc(*out_len);
	if (*out == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__atrest__tpm_sealed__pack(&m, *out);
	return NKP_OK;
}

nkp_err nkpi_tpm_seal(nkpi_tpm *t, const nkp_key *key, const char *tcti, uint8_t **out,
		      size_t *out_len)
{
	const TPM2B_DATA outside = {0};
	const TPML_PCR_SELECTION pcrs = {0};
	TPM2B_PUBLIC tmpl = {
		.publicArea =
			{
				.type = TPM2_ALG_KEYEDHASH,
				.nameAlg = TPM2_ALG_SHA256,
				.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						    TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA,
				.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL,
			},
	};
	TPM2B_SENSITIVE_CREATE *sens = sodium_malloc(sizeof(*sens));
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_NONE;
	nkp_err err;
	TSS2_RC rc;

	*out = NULL;
	if (sens == NULL) {
		return NKP_ERR_NOMEM;
	}
	memset(sens, 0, sizeof(*sens));
	sens->sensitive.data.size = NKP_KEY_BYTES;
	nkp_key_export(key, sens->sensitive.data.buffer);
	err = primary_create(t, &primary);
	if (err == NKP_OK) {
		err = session_start(t, primary, &session);
	}
	if (err == NKP_OK) {
		rc = Esys_Create(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, sens, &tmpl,
				 &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
		err = rc == TSS2_RC_SUCCESS ? NKP_OK : tpm_fail("sealing the key", rc);
	}
	if (err == NKP_OK) {
		err = pack_sealed(pub, priv, tcti, out, out_len);
	}
	flush(t, &session);
	flush(t, &primary);
	Esys_Free(pub);
	Esys_Free(priv);
	sodium_free(sens);
	return err;
}

static nkp_err sealed_parse(const uint8_t *buf, size_t len, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv,
			    char **tcti)
{
	Nkp__Atrest__TpmSealed *m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	size_t off_pub = 0, off_priv = 0;
	nkp_err err = NKP_ERR_PARSE;

	if (m == NULL || nkpi_has_unknown(&m->base)) {
		goto out;
	}
	if (m->format_version != SEALED_FORMAT_VERSION || m->parent != PARENT_SRK_ECC_P256) {
		err = NKP_ERR_FORMAT_VERSION;
		goto out;
	}
	memset(pub, 0, sizeof(*pub));
	memset(priv, 0, sizeof(*priv));
	/* tpm2-tss unmarshals TPM2B_PUBLIC's inner area whatever its size
	 * field says: it must cover exactly the rest. */
	if (m->public_.len < 2 ||
	    (((size_t)m->public_.data[0] << 8) | m->public_.data[1]) != m->public_.len - 2 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(m->public_.data, m->public_.len, &off_pub, pub) !=
		    TSS2_RC_SUCCESS ||
	    off_pub != m->public_.len ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(m->private_.data, m->private_.len, &off_priv, priv) !=
		    TSS2_RC_SUCCESS ||
	    off_priv != m->private_.len || pub->publicArea.type != TPM2_ALG_KEYEDHASH) {
		goto out;
	}
	err = NKP_OK;
	if (tcti != NULL) {
		*tcti = strdup(m->tcti);
		err = *tcti != NULL ? NKP_OK : NKP_ERR_NOMEM;
	}
out:
	if (m != NULL) {
		nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	}
	return err;
}

nkp_err nkpi_tpm_sealed_check(const uint8_t *buf, size_t len, char **tcti)
{
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;

	if (tcti != NULL) {
		*tcti = NULL;
	}
	return sealed_parse(buf, len, &pub, &priv, tcti);
}

static nkp_err load_and_unseal(nkpi_tpm *t, ESYS_TR primary, ESYS_TR session,
			       const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv, nkp_key **out)
{
	ESYS_TR obj = ESYS_TR_NONE;
	TPM2B_SENSITIVE_DATA *data = NULL;
	TSS2_RC rc =
		Esys_Load(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &obj);
	nkp_err err;

	if (rc != TSS2_RC_SUCCESS) {
		TSS2_RC b = rc_base(rc);

		/* Another storage seed (or an altered file): the private
		 * part's integrity value does not match. Anything else the
		 * TPM refuses is reported as such, not as another TPM. */
		if (b == TPM2_RC_INTEGRITY) {
			return NKP_ERR_OTHER_TPM;
		}
		return tpm_fail("loading the sealed key", rc);
	}
	rc = Esys_Unseal(t->esys, obj, session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
	flush(t, &obj);
	if (rc != TSS2_RC_SUCCESS) {
		return tpm_fail("unsealing the key", rc);
	}
	err = data->size == NKP_KEY_BYTES ? nkp_key_from_bytes(data->buffer, out) : NKP_ERR_PARSE;
	sodium_memzero(data, sizeof(*data));
	Esys_Free(data);
	return err;
}

nkp_err nkpi_tpm_unseal(nkpi_tpm *t, const uint8_t *buf, size_t len, nkp_key **out)
{
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
	ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_NONE;
	nkp_err err = sealed_parse(buf, len, &pub, &priv, NULL);

	*out = NULL;
	if (err == NKP_OK) {
		err = primary_create(t, &primary);
	}
	if (err == NKP_OK) {
		err = session_start(t, primary, &session);
	}
	if (err == NKP_OK) {
		err = load_and_unseal(t, primary, session, &pub, &priv, out);
	}
	flush(t, &session);
	flush(t, &primary);
	return err;
}

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
	return create_primary(t, ESYS_TR_RH_ENDORSEMENT, &tmpl, "creating the attestation key", out,
			      pub);
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
	flush(t, &ak);
	Esys_Free(pub);
	return err;
}

nkp_err nkpi_tpm_quote(nkpi_tpm *t, const uint8_t *nonce, size_t nonce_len, uint32_t pcr_mask,
		       nkpi_tpm_quote_out *out)
{
	const TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA,
					.details.ecdsa.hashAlg = TPM2_ALG_SHA256};
	TPML_PCR_SELECTION sel = {.count = 1};
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
	sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel.pcrSelections[0].sizeofSelect = 3;
	for (int i = 0; i < 3; i++) {
		sel.pcrSelections[0].pcrSelect[i] = (uint8_t)(pcr_mask >> (8 * i));
	}
	qualifying.size = (UINT16)nonce_len;
	memcpy(qualifying.buffer, nonce, nonce_len);
	err = ak_create(t, &ak, &pub);
	if (err == NKP_OK) {
		rc = Esys_Quote(t->esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				&qualifying, &scheme, &sel, &attest, &sig);
		err = rc == TSS2_RC_SUCCESS ? NKP_OK : tpm_fail("quoting the PCRs", rc);
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
	flush(t, &ak);
	Esys_Free(pub);
	Esys_Free(attest);
	Esys_Free(sig);
	return err;
}
