/* Sealing a state directory's key to a TPM 2.0 (nkp/private/tpm.h). */
#include <stdbool.h>
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
#include "policy.h"
#include "tpm-internal.h"
#include "tpm.h"

#define SEALED_FORMAT_PLAIN 1u
#define SEALED_FORMAT_BOUND 2u /* bound to a seal policy */
#define PARENT_SRK_ECC_P256 1u
#define PARENT_SRK_NV_UNIQUE 2u /* the same template, its unique from an NV index */

/* The NV indices the TCG's Registry of Reserved TPM 2.0 Handles and
 * Localities leaves to the owner. */
#define NV_OWNER_FIRST 0x01800000u
#define NV_OWNER_LAST 0x01bfffffu
#define NV_UNIQUE_BYTES 32u
/* An ordinary index the owner writes and undefines, read with its empty
 * authValue or by the owner; never subject to dictionary-attack lockout. */
#define NV_ATTRS (TPMA_NV_OWNERWRITE | TPMA_NV_AUTHREAD | TPMA_NV_OWNERREAD | TPMA_NV_NO_DA)
#define NV_DEFINE_TRIES 16

/* A TPM response code without its handle/parameter/session number. */
TSS2_RC nkpi_tpm_rc_base(TSS2_RC rc)
{
	if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) {
		return rc;
	}
	return (rc & TPM2_RC_FMT1) != 0 ? (rc & (TPM2_RC_FMT1 | 0x3Fu)) : rc;
}

nkp_err nkpi_tpm_fail(const char *what, TSS2_RC rc)
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
		rc = nkpi_tpm_rc_base(rc) == TPM2_RC_INITIALIZE ? TSS2_RC_SUCCESS : rc;
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
nkp_err nkpi_tpm_create_primary(nkpi_tpm *t, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
				const char *what, ESYS_TR *out, TPM2B_PUBLIC **pub)
{
	const TPM2B_SENSITIVE_CREATE sens = {0};
	const TPM2B_DATA outside = {0};
	const TPML_PCR_SELECTION pcrs = {0};
	TSS2_RC rc =
		Esys_CreatePrimary(t->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
				   &sens, tmpl, &outside, &pcrs, out, pub, NULL, NULL, NULL);

	return rc == TSS2_RC_SUCCESS ? NKP_OK : nkpi_tpm_fail(what, rc);
}

/* The storage primary key: TpmSealed.parent 1 (unique NULL: empty), or
 * 2 (unique.ecc.x the NV index's NV_UNIQUE_BYTES). */
static nkp_err primary_create(nkpi_tpm *t, const uint8_t *unique, ESYS_TR *out)
{
	TPM2B_PUBLIC tmpl = {
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
	nkp_err err;

	if (unique != NULL) {
		tmpl.publicArea.unique.ecc.x.size = NV_UNIQUE_BYTES;
		memcpy(tmpl.publicArea.unique.ecc.x.buffer, unique, NV_UNIQUE_BYTES);
	}
	err = nkpi_tpm_create_primary(t, ESYS_TR_RH_OWNER, &tmpl,
				      "creating the storage primary key", out, NULL);
	sodium_memzero(&tmpl.publicArea.unique, sizeof(tmpl.publicArea.unique));
	return err;
}

/* A session salted by the primary key, encrypting the first parameter of
 * responses (AES-128-CFB), and of commands too for an HMAC session: the
 * key crosses the TCTI encrypted. A policy session encrypts only
 * responses, for Unseal's: its commands carry nothing secret. */
nkp_err nkpi_tpm_session_start(nkpi_tpm *t, ESYS_TR primary, TPM2_SE type, ESYS_TR *out)
{
	const TPMT_SYM_DEF sym = {
		.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
	TPMA_SESSION attrs = TPMA_SESSION_ENCRYPT | TPMA_SESSION_CONTINUESESSION;
	TSS2_RC rc =
		Esys_StartAuthSession(t->esys, primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				      ESYS_TR_NONE, NULL, type, &sym, TPM2_ALG_SHA256, out);

	if (type == TPM2_SE_HMAC) {
		attrs |= TPMA_SESSION_DECRYPT;
	}
	if (rc == TSS2_RC_SUCCESS) {
		rc = Esys_TRSess_SetAttributes(t->esys, *out, attrs, 0xff);
		if (rc != TSS2_RC_SUCCESS) {
			Esys_FlushContext(t->esys, *out);
		}
	}
	return rc == TSS2_RC_SUCCESS ? NKP_OK : nkpi_tpm_fail("starting an encrypted session", rc);
}

void nkpi_tpm_flush(nkpi_tpm *t, ESYS_TR *h)
{
	if (*h != ESYS_TR_NONE) {
		(void)Esys_FlushContext(t->esys, *h);
		*h = ESYS_TR_NONE;
	}
}

/* ---- the parent's NV index (parent 2) ------------------------------- */

/* A format-1 object of parent 2 lives only as long as its index: the
 * parent's unique is NV_UNIQUE_BYTES random bytes kept nowhere else, so
 * once the index is undefined no one (the owner included) can make that
 * parent again, and the object, wherever its bytes were copied, never
 * loads. */

static bool nv_owner_range(uint32_t index)
{
	return index >= NV_OWNER_FIRST && index <= NV_OWNER_LAST;
}

/* `index` opened as *nv once its public area says it is one of ours:
 * NKP_ERR_NOT_FOUND (not defined), NKP_ERR_STATE (another's), NKP_ERR_TPM. */
static nkp_err nv_open(nkpi_tpm *t, uint32_t index, ESYS_TR *nv)
{
	TPM2B_NV_PUBLIC *pub = NULL;
	nkp_err err = NKP_OK;
	TSS2_RC rc =
		Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nv);

	if (rc != TSS2_RC_SUCCESS) {
		*nv = ESYS_TR_NONE;
		return nkpi_tpm_rc_base(rc) == TPM2_RC_HANDLE
			       ? NKP_ERR_NOT_FOUND
			       : nkpi_tpm_fail("looking up the sealed key's NV index", rc);
	}
	rc = Esys_NV_ReadPublic(t->esys, *nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
	if (rc != TSS2_RC_SUCCESS) {
		err = nkpi_tpm_fail("reading the sealed key's NV index", rc);
	} else if (pub->nvPublic.nvIndex != index || pub->nvPublic.nameAlg != TPM2_ALG_SHA256 ||
		   pub->nvPublic.attributes != (NV_ATTRS | TPMA_NV_WRITTEN) ||
		   pub->nvPublic.authPolicy.size != 0 ||
		   pub->nvPublic.dataSize != NV_UNIQUE_BYTES) {
		err = NKP_ERR_STATE;
	}
	Esys_Free(pub);
	if (err != NKP_OK) {
		(void)Esys_TR_Close(t->esys, nv);
		*nv = ESYS_TR_NONE;
	}
	return err;
}

/* Undefines the index opened as *nv (by the owner, empty auth). */
static nkp_err nv_undefine(nkpi_tpm *t, ESYS_TR *nv)
{
	TSS2_RC rc = Esys_NV_UndefineSpace(t->esys, ESYS_TR_RH_OWNER, *nv, ESYS_TR_PASSWORD,
					   ESYS_TR_NONE, ESYS_TR_NONE);

	if (rc != TSS2_RC_SUCCESS) {
		(void)Esys_TR_Close(t->esys, nv);
	}
	*nv = ESYS_TR_NONE;
	return rc == TSS2_RC_SUCCESS ? NKP_OK
				     : nkpi_tpm_fail("undefining the sealed key's NV index", rc);
}

/* A new index at a random handle of the owner range (another one tried
 * while the handle is taken) holding fresh random bytes: its handle in
 * *index, its bytes in u (the caller wipes them). */
static nkp_err nv_define(nkpi_tpm *t, uint32_t *index, uint8_t u[static NV_UNIQUE_BYTES])
{
	const TPM2B_AUTH auth = {0};
	TPM2B_NV_PUBLIC pub = {.nvPublic = {.nameAlg = TPM2_ALG_SHA256,
					    .attributes = NV_ATTRS,
					    .dataSize = NV_UNIQUE_BYTES}};
	TPM2B_MAX_NV_BUFFER *data = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	TSS2_RC rc = TPM2_RC_NV_DEFINED;
	nkp_err err;

	for (int i = 0; i < NV_DEFINE_TRIES && nkpi_tpm_rc_base(rc) == TPM2_RC_NV_DEFINED; i++) {
		pub.nvPublic.nvIndex =
			NV_OWNER_FIRST + randombytes_uniform(NV_OWNER_LAST - NV_OWNER_FIRST + 1);
		rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					 ESYS_TR_NONE, &auth, &pub, &nv);
	}
	if (rc != TSS2_RC_SUCCESS) {
		return nkpi_tpm_fail(
			"defining an NV index for the sealed key (owner hierarchy, empty "
			"owner password)",
			rc);
	}
	data = sodium_malloc(sizeof(*data));
	if (data == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_undefine;
	}
	data->size = NV_UNIQUE_BYTES;
	randombytes_buf(data->buffer, NV_UNIQUE_BYTES);
	rc = Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			   ESYS_TR_NONE, data, 0);
	err = rc == TSS2_RC_SUCCESS ? NKP_OK
				    : nkpi_tpm_fail("writing the sealed key's NV index", rc);
	if (err == NKP_OK) {
		memcpy(u, data->buffer, NV_UNIQUE_BYTES);
		*index = pub.nvPublic.nvIndex;
	}
	sodium_free(data);
out_undefine:
	if (err != NKP_OK) {
		(void)nv_undefine(t, &nv);
	} else {
		(void)Esys_TR_Close(t->esys, &nv);
	}
	return err;
}

/* The parent's unique, from its index. None of ours there: the object's
 * parent is gone from this TPM, NKP_ERR_OTHER_TPM. */
static nkp_err nv_read_unique(nkpi_tpm *t, uint32_t index, uint8_t u[static NV_UNIQUE_BYTES])
{
	TPM2B_MAX_NV_BUFFER *data = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	nkp_err err = nv_open(t, index, &nv);
	TSS2_RC rc;

	if (err == NKP_ERR_NOT_FOUND || err == NKP_ERR_STATE) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"the sealed key's NV index 0x%08x is %s: this TPM no longer holds its "
			"parent (revoked by a binding), or it was made by another TPM",
			(unsigned)index, err == NKP_ERR_NOT_FOUND ? "not defined" : "not nkp's");
		return NKP_ERR_OTHER_TPM;
	}
	if (err != NKP_OK) {
		return err;
	}
	rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			  NV_UNIQUE_BYTES, 0, &data);
	if (rc != TSS2_RC_SUCCESS) {
		err = nkpi_tpm_fail("reading the sealed key's NV index", rc);
	} else if (data->size != NV_UNIQUE_BYTES) {
		err = NKP_ERR_TPM;
	} else {
		memcpy(u, data->buffer, NV_UNIQUE_BYTES);
	}
	if (data != NULL) {
		sodium_memzero(data, sizeof(*data));
	}
	Esys_Free(data);
	(void)Esys_TR_Close(t->esys, &nv);
	return err;
}

nkp_err nkpi_tpm_revoke(nkpi_tpm *t, uint32_t nv_index)
{
	ESYS_TR nv = ESYS_TR_NONE;
	nkp_err err;

	if (!nv_owner_range(nv_index)) {
		return NKP_ERR_INVALID;
	}
	err = nv_open(t, nv_index, &nv);
	if (err == NKP_ERR_NOT_FOUND) {
		return NKP_OK; /* already gone: nothing opens the object */
	}
	return err == NKP_OK ? nv_undefine(t, &nv) : err;
}

/* The parent of a sealed object: parent 1 (nv_index 0), or parent 2 made
 * from index nv_index's unique. */
static nkp_err parent_create(nkpi_tpm *t, uint32_t nv_index, ESYS_TR *out)
{
	uint8_t u[NV_UNIQUE_BYTES];
	nkp_err err;

	if (nv_index == 0) {
		return primary_create(t, NULL, out);
	}
	err = nv_read_unique(t, nv_index, u);
	if (err == NKP_OK) {
		err = primary_create(t, u, out);
	}
	sodium_memzero(u, sizeof(u));
	return err;
}

/* ---- the sealed object and its file -------------------------------- */

/* The sealed data object: a keyed-hash object of no scheme, empty auth.
 * Bound to a seal policy (auth_policy not NULL) only a policy session
 * opens it: userWithAuth clear, adminWithPolicy set. */
static void sealed_template(const uint8_t *auth_policy, TPM2B_PUBLIC *tmpl)
{
	memset(tmpl, 0, sizeof(*tmpl));
	tmpl->publicArea.type = TPM2_ALG_KEYEDHASH;
	tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
	tmpl->publicArea.objectAttributes =
		TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA;
	tmpl->publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
	if (auth_policy == NULL) {
		tmpl->publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
		return;
	}
	tmpl->publicArea.objectAttributes |= TPMA_OBJECT_ADMINWITHPOLICY;
	tmpl->publicArea.authPolicy.size = NKPI_POLICY_DIGEST_BYTES;
	memcpy(tmpl->publicArea.authPolicy.buffer, auth_policy, NKPI_POLICY_DIGEST_BYTES);
}

/* A seal policy as tpm.h describes it, checked in full before anything is
 * sealed to it, kept in a file or sent to a TPM. */
static bool policy_valid(const Nkp__Atrest__SealPolicy *p)
{
	if (p == NULL || nkpi_has_unknown(&p->base) ||
	    nkpi_policy_key_check(p->key.data, p->key.len) != NKP_OK ||
	    p->ref.len != NKPI_POLICY_REF_BYTES || p->n_approvals == 0 ||
	    p->n_approvals > NKPI_POLICY_APPROVALS_MAX) {
		return false;
	}
	for (size_t i = 0; i < p->n_approvals; i++) {
		const Nkp__Atrest__Approval *a = p->approvals[i];

		if (a == NULL || nkpi_has_unknown(&a->base) || a->pcr_mask == 0 ||
		    (a->pcr_mask & ~0x00ffffffu) != 0 ||
		    a->pcr_digest.len != NKPI_POLICY_DIGEST_BYTES ||
		    nkpi_policy_sig_check(a->signature.data, a->signature.len) != NKP_OK ||
		    a->name == NULL || strlen(a->name) > NKPI_TPM_APPROVAL_NAME_MAX) {
			return false;
		}
	}
	return true;
}

/* The object's policy is the one the file names: PolicyAuthorize by its
 * key and ref. A file whose policy block was replaced (another key, or
 * another ref) fails here, before the TPM is asked: NKP_ERR_AUTH. */
static nkp_err bound_check(const TPM2B_PUBLIC *pub, const Nkp__Atrest__SealPolicy *p)
{
	uint8_t want[NKPI_POLICY_DIGEST_BYTES];
	const TPMT_PUBLIC *a = &pub->publicArea;

	if ((a->objectAttributes & TPMA_OBJECT_USERWITHAUTH) != 0 ||
	    nkpi_policy_authorize_digest(p->key.data, p->key.len, p->ref.data, p->ref.len, want) !=
		    NKP_OK) {
		return NKP_ERR_PARSE;
	}
	if (a->authPolicy.size != sizeof(want) ||
	    memcmp(a->authPolicy.buffer, want, sizeof(want)) != 0) {
		return NKP_ERR_AUTH;
	}
	return NKP_OK;
}

static nkp_err pack_sealed(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv, const char *tcti,
			   const Nkp__Atrest__SealPolicy *p, uint32_t nv_index, uint8_t **out,
			   size_t *out_len)
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
	m.format_version = p != NULL ? SEALED_FORMAT_BOUND : SEALED_FORMAT_PLAIN;
	m.parent = nv_index != 0 ? PARENT_SRK_NV_UNIQUE : PARENT_SRK_ECC_P256;
	m.nv_index = nv_index;
	m.public_.data = pub_buf;
	m.public_.len = pub_len;
	m.private_.data = priv_buf;
	m.private_.len = priv_len;
	m.tcti = (char *)(tcti != NULL ? tcti : "");
	m.policy = (Nkp__Atrest__SealPolicy *)p;
	*out_len = nkp__atrest__tpm_sealed__get_packed_size(&m);
	if (*out_len > NKPI_TPM_SEALED_MAX) {
		return NKP_ERR_TOO_LARGE; /* never written: no reader would take it */
	}
	*out = malloc(*out_len);
	if (*out == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__atrest__tpm_sealed__pack(&m, *out);
	return NKP_OK;
}

/* A packed TpmSealed, parsed and checked: s->m (freed by sealed_fini)
 * holds its fields, s->pub and s->priv the TPM structures. */
typedef struct sealed {
	Nkp__Atrest__TpmSealed *m;
	TPM2B_PUBLIC pub;
	TPM2B_PRIVATE priv;
} sealed;

static void sealed_fini(sealed *s)
{
	if (s->m != NULL) {
		nkp__atrest__tpm_sealed__free_unpacked(s->m, NULL);
		s->m = NULL;
	}
}

static nkp_err sealed_parse(const uint8_t *buf, size_t len, sealed *s)
{
	Nkp__Atrest__TpmSealed *m = NULL;
	size_t off_pub = 0, off_priv = 0;
	nkp_err err = NKP_ERR_PARSE;

	memset(s, 0, sizeof(*s));
	if (len > NKPI_TPM_SEALED_MAX) {
		return NKP_ERR_TOO_LARGE;
	}
	m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	if (m == NULL || nkpi_has_unknown(&m->base)) {
		goto out;
	}
	if ((m->format_version != SEALED_FORMAT_PLAIN &&
	     m->format_version != SEALED_FORMAT_BOUND) ||
	    (m->parent != PARENT_SRK_ECC_P256 && m->parent != PARENT_SRK_NV_UNIQUE)) {
		err = NKP_ERR_FORMAT_VERSION;
		goto out;
	}
	/* Parent 2 names its index in the owner range, and only for an
	 * object sealed to the TPM alone; parent 1 names none. */
	if (m->parent == PARENT_SRK_NV_UNIQUE
		    ? m->format_version != SEALED_FORMAT_PLAIN || !nv_owner_range(m->nv_index)
		    : m->nv_index != 0) {
		goto out;
	}
	/* tpm2-tss unmarshals TPM2B_PUBLIC's inner area whatever its size
	 * field says: it must cover exactly the rest. */
	if (m->public_.len < 2 ||
	    (((size_t)m->public_.data[0] << 8) | m->public_.data[1]) != m->public_.len - 2 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(m->public_.data, m->public_.len, &off_pub, &s->pub) !=
		    TSS2_RC_SUCCESS ||
	    off_pub != m->public_.len ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(m->private_.data, m->private_.len, &off_priv,
					    &s->priv) != TSS2_RC_SUCCESS ||
	    off_priv != m->private_.len || s->pub.publicArea.type != TPM2_ALG_KEYEDHASH ||
	    (m->format_version == SEALED_FORMAT_BOUND) != (m->policy != NULL) ||
	    (m->policy != NULL && !policy_valid(m->policy))) {
		goto out;
	}
	err = m->policy != NULL ? bound_check(&s->pub, m->policy) : NKP_OK;
out:
	if (err == NKP_OK) {
		s->m = m;
	} else if (m != NULL) {
		nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	}
	return err;
}

nkp_err nkpi_tpm_sealed_check(const uint8_t *buf, size_t len, char **tcti)
{
	sealed s;
	nkp_err err = sealed_parse(buf, len, &s);

	if (tcti != NULL) {
		*tcti = NULL;
		if (err == NKP_OK) {
			*tcti = strdup(s.m->tcti);
			err = *tcti != NULL ? NKP_OK : NKP_ERR_NOMEM;
		}
	}
	sealed_fini(&s);
	return err;
}

nkp_err nkpi_tpm_sealed_inspect(const uint8_t *buf, size_t len, nkpi_tpm_sealed_info *out)
{
	sealed s;
	nkp_err err = sealed_parse(buf, len, &s);
	const Nkp__Atrest__SealPolicy *p;

	if (err != NKP_OK) {
		return err;
	}
	p = s.m->policy;
	memset(out, 0, sizeof(*out));
	out->bound = p != NULL;
	out->nv_index = s.m->nv_index;
	if (p != NULL) {
		err = nkpi_policy_key_name(p->key.data, p->key.len, out->key_name);
		memcpy(out->ref, p->ref.data, NKPI_POLICY_REF_BYTES);
		out->n_approvals = p->n_approvals;
	}
	sealed_fini(&s);
	return err;
}

/* ---- sealing and unsealing ------------------------------------------ */

static nkp_err load_sealed(nkpi_tpm *t, ESYS_TR primary, ESYS_TR session, const TPM2B_PUBLIC *pub,
			   const TPM2B_PRIVATE *priv, ESYS_TR *obj)
{
	TSS2_RC rc =
		Esys_Load(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, obj);

	/* Another storage seed (or an altered file): the private part's
	 * integrity value does not match. Anything else the TPM refuses is
	 * reported as such, not as another TPM. */
	if (rc != TSS2_RC_SUCCESS && nkpi_tpm_rc_base(rc) == TPM2_RC_INTEGRITY) {
		return NKP_ERR_OTHER_TPM;
	}
	return rc == TSS2_RC_SUCCESS ? NKP_OK : nkpi_tpm_fail("loading the sealed key", rc);
}

/* Unseal in `session`: an HMAC session, or a policy session that
 * satisfied the object's policy; both encrypt the response. */
static nkp_err unseal_object(nkpi_tpm *t, ESYS_TR obj, ESYS_TR session, nkp_key **out)
{
	TPM2B_SENSITIVE_DATA *data = NULL;
	TSS2_RC rc = Esys_Unseal(t->esys, obj, session, ESYS_TR_NONE, ESYS_TR_NONE, &data);
	nkp_err err;

	if (rc != TSS2_RC_SUCCESS) {
		return nkpi_tpm_fail("unsealing the key", rc);
	}
	err = data->size == NKP_KEY_BYTES ? nkp_key_from_bytes(data->buffer, out) : NKP_ERR_PARSE;
	sodium_memzero(data, sizeof(*data));
	Esys_Free(data);
	return err;
}

/* The TPM refused a parameter of a command (a format-one response code
 * naming a parameter: PolicyPCR's digest, VerifySignature's signature),
 * rather than failing or refusing a handle or session. */
static bool tpm_refused(TSS2_RC rc)
{
	return (rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER && (rc & TPM2_RC_FMT1) != 0 &&
	       (rc & TPM2_RC_P) != 0;
}

/* The SHA-256 PCRs of `mask`, one selection of 3 bytes. */
void nkpi_tpm_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel)
{
	memset(sel, 0, sizeof(*sel));
	sel->count = 1;
	sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel->pcrSelections[0].sizeofSelect = 3;
	for (int i = 0; i < 3; i++) {
		sel->pcrSelections[0].pcrSelect[i] = (uint8_t)(mask >> (8 * i));
	}
}

/* One approval, in a fresh (or restarted) policy session: PolicyPCR (the
 * TPM refuses it unless its PCRs are in that state: NKP_ERR_REFUSED),
 * the approval's signature checked by the TPM into a ticket and
 * PolicyAuthorize with it (refused: NKP_ERR_AUTH), then Unseal. */
static nkp_err approval_try(nkpi_tpm *t, ESYS_TR session, ESYS_TR pkey, const TPM2B_NAME *name,
			    ESYS_TR obj, const Nkp__Atrest__SealPolicy *p,
			    const Nkp__Atrest__Approval *a, nkp_key **out)
{
	TPML_PCR_SELECTION sel;
	TPM2B_DIGEST pcrs = {.size = 32}, approved = {.size = 32}, ahash = {.size = 32};
	TPM2B_NONCE ref = {.size = NKPI_POLICY_REF_BYTES};
	TPMT_SIGNATURE sig;
	TPMT_TK_VERIFIED *ticket = NULL;
	size_t off = 0;
	TSS2_RC rc;

	/* policy_valid() checked all of it. */
	nkpi_tpm_pcr_selection(a->pcr_mask, &sel);
	memcpy(pcrs.buffer, a->pcr_digest.data, 32);
	memcpy(ref.buffer, p->ref.data, NKPI_POLICY_REF_BYTES);
	memset(&sig, 0, sizeof(sig));
	if (nkpi_policy_pcr_digest(a->pcr_mask, pcrs.buffer, approved.buffer) != NKP_OK ||
	    nkpi_policy_approval_digest(a->pcr_mask, pcrs.buffer, ref.buffer, ref.size,
					ahash.buffer) != NKP_OK ||
	    Tss2_MU_TPMT_SIGNATURE_Unmarshal(a->signature.data, a->signature.len, &off, &sig) !=
		    TSS2_RC_SUCCESS) {
		return NKP_ERR_PARSE;
	}
	rc = Esys_PolicyPCR(t->esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pcrs,
			    &sel);
	if (rc != TSS2_RC_SUCCESS) {
		return tpm_refused(rc) ? NKP_ERR_REFUSED : nkpi_tpm_fail("PolicyPCR", rc);
	}
	rc = Esys_VerifySignature(t->esys, pkey, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &ahash,
				  &sig, &ticket);
	if (rc == TSS2_RC_SUCCESS) {
		rc = Esys_PolicyAuthorize(t->esys, session, ESYS_TR_NONE, ESYS_TR_NONE,
					  ESYS_TR_NONE, &approved, &ref, name, ticket);
		Esys_Free(ticket);
	}
	if (rc != TSS2_RC_SUCCESS) {
		return tpm_refused(rc) ? NKP_ERR_AUTH : nkpi_tpm_fail("checking an approval", rc);
	}
	return unseal_object(t, obj, session, out);
}

/* The approvals in order, until one opens the object. None for the PCRs
 * as they are: NKP_ERR_REFUSED; one for them, but its signature refused
 * (and none other opens): NKP_ERR_AUTH. */
static nkp_err approvals_try(nkpi_tpm *t, ESYS_TR session, ESYS_TR pkey, const TPM2B_NAME *name,
			     ESYS_TR obj, const Nkp__Atrest__SealPolicy *p, nkp_key **out)
{
	nkp_err err = NKP_ERR_REFUSED;

	for (size_t i = 0; i < p->n_approvals; i++) {
		nkp_err e = approval_try(t, session, pkey, name, obj, p, p->approvals[i], out);
		TSS2_RC rc;

		if (e != NKP_ERR_REFUSED && e != NKP_ERR_AUTH) {
			return e;
		}
		err = e == NKP_ERR_AUTH ? e : err;
		rc = i + 1 < p->n_approvals ? Esys_PolicyRestart(t->esys, session, ESYS_TR_NONE,
								 ESYS_TR_NONE, ESYS_TR_NONE)
					    : TSS2_RC_SUCCESS;
		if (rc != TSS2_RC_SUCCESS) {
			return nkpi_tpm_fail("restarting the policy session", rc);
		}
	}
	return err;
}

/* Opens a bound object (loaded as `obj`): the policy key loaded from its
 * public area alone, in the owner hierarchy so that its tickets count, and
 * one policy session, salted by the primary key, restarted between
 * approvals. Both are flushed on every path. */
static nkp_err open_bound(nkpi_tpm *t, ESYS_TR primary, ESYS_TR obj,
			  const Nkp__Atrest__SealPolicy *p, nkp_key **out)
{
	TPM2B_PUBLIC kpub;
	TPM2B_NAME name = {.size = NKPI_POLICY_NAME_BYTES};
	ESYS_TR session = ESYS_TR_NONE, pkey = ESYS_TR_NONE;
	size_t off = 0;
	nkp_err err = NKP_OK;
	TSS2_RC rc;

	memset(&kpub, 0, sizeof(kpub));
	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(p->key.data, p->key.len, &off, &kpub) !=
		    TSS2_RC_SUCCESS ||
	    nkpi_policy_key_name(p->key.data, p->key.len, name.name) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	rc = Esys_LoadExternal(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, NULL, &kpub,
			       ESYS_TR_RH_OWNER, &pkey);
	if (rc != TSS2_RC_SUCCESS) {
		err = nkpi_tpm_fail("loading the seal policy key", rc);
	}
	if (err == NKP_OK) {
		err = nkpi_tpm_session_start(t, primary, TPM2_SE_POLICY, &session);
	}
	if (err == NKP_OK) {
		err = approvals_try(t, session, pkey, &name, obj, p, out);
	}
	nkpi_tpm_flush(t, &session);
	nkpi_tpm_flush(t, &pkey);
	return err;
}

/* Loads the sealed object and opens it: with `session` (HMAC), or under
 * its policy when `p` is not NULL. */
static nkp_err load_and_open(nkpi_tpm *t, ESYS_TR primary, ESYS_TR session, const TPM2B_PUBLIC *pub,
			     const TPM2B_PRIVATE *priv, const Nkp__Atrest__SealPolicy *p,
			     nkp_key **out)
{
	ESYS_TR obj = ESYS_TR_NONE;
	nkp_err err = load_sealed(t, primary, session, pub, priv, &obj);

	if (err == NKP_OK) {
		err = p != NULL ? open_bound(t, primary, obj, p, out)
				: unseal_object(t, obj, session, out);
	}
	nkpi_tpm_flush(t, &obj);
	return err;
}

/* A bound object is returned only once it opened on this TPM, as it is,
 * to the key sealed in it. */
static nkp_err prove_opens(nkpi_tpm *t, ESYS_TR primary, ESYS_TR session, const TPM2B_PUBLIC *pub,
			   const TPM2B_PRIVATE *priv, const Nkp__Atrest__SealPolicy *p,
			   const nkp_key *key)
{
	nkp_key *back = NULL;
	nkp_err err = load_and_open(t, primary, session, pub, priv, p, &back);

	if (err == NKP_OK && !nkp_key_equal(key, back)) {
		err = NKP_ERR_TPM;
	}
	nkp_key_free(back);
	if (err == NKP_ERR_REFUSED || err == NKP_ERR_AUTH) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-POLICY",
			"the sealing key was not bound to the seal policy: %s",
			err == NKP_ERR_REFUSED
				? "the TPM's PCRs match none of the approvals"
				: "the TPM refused the signature of the approval for its PCRs");
	}
	return err;
}

nkp_err nkpi_tpm_seal_bound(nkpi_tpm *t, const nkp_key *key, const char *tcti,
			    const Nkp__Atrest__SealPolicy *p, uint8_t **out, size_t *out_len)
{
	const TPM2B_DATA outside = {0};
	const TPML_PCR_SELECTION pcrs = {0};
	uint8_t auth[NKPI_POLICY_DIGEST_BYTES];
	TPM2B_PUBLIC tmpl;
	TPM2B_SENSITIVE_CREATE *sens;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_NONE;
	uint8_t u[NV_UNIQUE_BYTES];
	uint32_t nv_index = 0;
	nkp_err err;
	TSS2_RC rc;

	*out = NULL;
	if (p != NULL &&
	    (!policy_valid(p) || nkpi_policy_authorize_digest(p->key.data, p->key.len, p->ref.data,
							      p->ref.len, auth) != NKP_OK)) {
		return NKP_ERR_INVALID;
	}
	sealed_template(p != NULL ? auth : NULL, &tmpl);
	sens = sodium_malloc(sizeof(*sens));
	if (sens == NULL) {
		return NKP_ERR_NOMEM;
	}
	memset(sens, 0, sizeof(*sens));
	sens->sensitive.data.size = NKP_KEY_BYTES;
	nkp_key_export(key, sens->sensitive.data.buffer);
	/* Sealed to the TPM alone, the object's parent lives in an NV index
	 * that a binding undefines (nkpi_tpm_revoke): the object it replaced
	 * then never loads again. A bound object keeps parent 1: its policy
	 * guards it. */
	err = p == NULL ? nv_define(t, &nv_index, u) : NKP_OK;
	if (err == NKP_OK) {
		err = primary_create(t, p == NULL ? u : NULL, &primary);
	}
	sodium_memzero(u, sizeof(u));
	if (err == NKP_OK) {
		err = nkpi_tpm_session_start(t, primary, TPM2_SE_HMAC, &session);
	}
	if (err == NKP_OK) {
		rc = Esys_Create(t->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, sens, &tmpl,
				 &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
		err = rc == TSS2_RC_SUCCESS ? NKP_OK : nkpi_tpm_fail("sealing the key", rc);
	}
	if (err == NKP_OK && p != NULL) {
		err = prove_opens(t, primary, session, pub, priv, p, key);
	}
	if (err == NKP_OK) {
		err = pack_sealed(pub, priv, tcti, p, nv_index, out, out_len);
	}
	nkpi_tpm_flush(t, &session);
	nkpi_tpm_flush(t, &primary);
	if (err != NKP_OK && nv_index != 0 && nkpi_tpm_revoke(t, nv_index) != NKP_OK) {
		nkp_log(NKP_LOG_WARN, "NKP-TPM-FAILED",
			"TPM: NV index 0x%08x of a key never sealed is left behind: "
			"tpm2_nvundefine it",
			(unsigned)nv_index);
	}
	Esys_Free(pub);
	Esys_Free(priv);
	sodium_free(sens);
	return err;
}

nkp_err nkpi_tpm_seal(nkpi_tpm *t, const nkp_key *key, const char *tcti, uint8_t **out,
		      size_t *out_len)
{
	return nkpi_tpm_seal_bound(t, key, tcti, NULL, out, out_len);
}

nkp_err nkpi_tpm_unseal(nkpi_tpm *t, const uint8_t *buf, size_t len, nkp_key **out)
{
	ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_NONE;
	sealed s;
	nkp_err err = sealed_parse(buf, len, &s);

	*out = NULL;
	if (err != NKP_OK) {
		return err;
	}
	err = parent_create(t, s.m->nv_index, &primary);
	if (err == NKP_OK) {
		err = nkpi_tpm_session_start(t, primary, TPM2_SE_HMAC, &session);
	}
	if (err == NKP_OK) {
		err = load_and_open(t, primary, session, &s.pub, &s.priv, s.m->policy, out);
	}
	if (err == NKP_ERR_REFUSED || (err == NKP_ERR_AUTH && s.m->policy != NULL)) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-POLICY",
			"the sealing key is bound to nkpd's seal policy, and %s (approvals: %zu): "
			"boot an approved state, or have nkpd approve this one",
			err == NKP_ERR_REFUSED ? "the TPM's PCRs match none of its approvals"
					       : "the TPM refused the signature of the approvals "
						 "for its PCRs",
			s.m->policy->n_approvals);
	}
	nkpi_tpm_flush(t, &session);
	nkpi_tpm_flush(t, &primary);
	sealed_fini(&s);
	return err;
}
