/* Checking a TPM 2.0 quote (nkp/private/quote.h). */
#include <string.h>

#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <sodium.h>
#include <tss2/tss2_mu.h>

#include "quote.h"

#define COORD 32u

/* The pinned AK: ECC P-256, restricted signing key, ECDSA with SHA-256,
 * made inside the TPM (tpm.c's template); *name is its qualified name. */
static nkp_err ak_parse(const uint8_t *buf, size_t len, TPM2B_PUBLIC *pub, TPM2B_NAME *name)
{
	const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				 TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_RESTRICTED |
				 TPMA_OBJECT_SIGN_ENCRYPT;
	uint8_t area[sizeof(TPMT_PUBLIC)];
	size_t off = 0, area_len = 0;
	const TPMT_PUBLIC *a = &pub->publicArea;

	memset(pub, 0, sizeof(*pub));
	/* tpm2-tss unmarshals the inner area whatever the TPM2B's size says:
	 * the size must cover exactly the rest. */
	if (buf == NULL || len < 2 || (((size_t)buf[0] << 8) | buf[1]) != len - 2 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, pub) != TSS2_RC_SUCCESS || off != len) {
		return NKP_ERR_INVALID;
	}
	if (a->type != TPM2_ALG_ECC || a->nameAlg != TPM2_ALG_SHA256 ||
	    (a->objectAttributes & need) != need ||
	    (a->objectAttributes & TPMA_OBJECT_DECRYPT) != 0 ||
	    a->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
	    a->parameters.eccDetail.scheme.scheme != TPM2_ALG_ECDSA ||
	    a->parameters.eccDetail.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
	    a->unique.ecc.x.size == 0 || a->unique.ecc.x.size > COORD ||
	    a->unique.ecc.y.size == 0 || a->unique.ecc.y.size > COORD ||
	    Tss2_MU_TPMT_PUBLIC_Marshal(a, area, sizeof(area), &area_len) != TSS2_RC_SUCCESS) {
		return NKP_ERR_INVALID;
	}
	/* A quote names its signer by qualified name. For a primary key of
	 * the endorsement hierarchy (tpm.c's AK):
	 *   Name = nameAlg (big-endian) || H(TPMT_PUBLIC)
	 *   QN   = nameAlg || H(TPM_RH_ENDORSEMENT (big-endian) || Name)
	 * so a key of another hierarchy, or a child key, does not match. */
	{
		uint8_t qn_in[4 + 2 + crypto_hash_sha256_BYTES];

		qn_in[0] = (uint8_t)(TPM2_RH_ENDORSEMENT >> 24);
		qn_in[1] = (uint8_t)(TPM2_RH_ENDORSEMENT >> 16);
		qn_in[2] = (uint8_t)(TPM2_RH_ENDORSEMENT >> 8);
		qn_in[3] = (uint8_t)TPM2_RH_ENDORSEMENT;
		qn_in[4] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
		qn_in[5] = (uint8_t)TPM2_ALG_SHA256;
		crypto_hash_sha256(qn_in + 6, area, area_len);
		name->size = 2 + crypto_hash_sha256_BYTES;
		name->name[0] = qn_in[4];
		name->name[1] = qn_in[5];
		crypto_hash_sha256(name->name + 2, qn_in, sizeof(qn_in));
	}
	return NKP_OK;
}

static nkp_err attest_parse(const uint8_t *buf, size_t len, TPM2B_ATTEST *outer, TPMS_ATTEST *in)
{
	size_t off = 0, inner = 0;

	memset(outer, 0, sizeof(*outer));
	memset(in, 0, sizeof(*in));
	if (buf == NULL ||
	    Tss2_MU_TPM2B_ATTEST_Unmarshal(buf, len, &off, outer) != TSS2_RC_SUCCESS ||
	    off != len ||
	    Tss2_MU_TPMS_ATTEST_Unmarshal(outer->attestationData, outer->size, &inner, in) !=
		    TSS2_RC_SUCCESS ||
	    inner != outer->size) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

static bool selection_is(const TPML_PCR_SELECTION *sel, uint32_t mask)
{
	const TPMS_PCR_SELECTION *s = &sel->pcrSelections[0];
	uint32_t got = 0;

	if (sel->count != 1 || s->hash != TPM2_ALG_SHA256 || s->sizeofSelect != 3) {
		return false;
	}
	for (int i = 0; i < 3; i++) {
		got |= (uint32_t)s->pcrSelect[i] << (8 * i);
	}
	return got == mask;
}

/* A coordinate or scalar of at most 32 bytes, left-padded. */
static void pad32(const uint8_t *in, size_t n, uint8_t out[COORD])
{
	memset(out, 0, COORD);
	memcpy(out + COORD - n, in, n);
}

static nkp_err ecdsa_check(const TPMS_ECC_POINT *q, const TPMS_SIGNATURE_ECDSA *sig,
			   const uint8_t hash[crypto_hash_sha256_BYTES])
{
	mbedtls_ecp_group grp;
	mbedtls_ecp_point pt;
	mbedtls_mpi r, s;
	uint8_t enc[1 + 2 * COORD];
	nkp_err err = NKP_ERR_AUTH;

	if (sig->signatureR.size == 0 || sig->signatureR.size > COORD ||
	    sig->signatureS.size == 0 || sig->signatureS.size > COORD) {
		return NKP_ERR_AUTH;
	}
	enc[0] = 0x04;
	pad32(q->x.buffer, q->x.size, enc + 1);
	pad32(q->y.buffer, q->y.size, enc + 1 + COORD);
	mbedtls_ecp_group_init(&grp);
	mbedtls_ecp_point_init(&pt);
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
	    mbedtls_ecp_point_read_binary(&grp, &pt, enc, sizeof(enc)) == 0 &&
	    mbedtls_ecp_check_pubkey(&grp, &pt) == 0 &&
	    mbedtls_mpi_read_binary(&r, sig->signatureR.buffer, sig->signatureR.size) == 0 &&
	    mbedtls_mpi_read_binary(&s, sig->signatureS.buffer, sig->signatureS.size) == 0 &&
	    mbedtls_ecdsa_verify(&grp, hash, crypto_hash_sha256_BYTES, &pt, &r, &s) == 0) {
		err = NKP_OK;
	}
	mbedtls_mpi_free(&s);
	mbedtls_mpi_free(&r);
	mbedtls_ecp_point_free(&pt);
	mbedtls_ecp_group_free(&grp);
	return err;
}

nkp_err nkpi_quote_verify(const nkpi_quote_expect *e, const uint8_t *attest, size_t attest_len,
			  const uint8_t *sig, size_t sig_len, nkpi_quote_result *out)
{
	TPM2B_PUBLIC ak;
	TPM2B_NAME name;
	TPM2B_ATTEST outer;
	TPMS_ATTEST in;
	TPMT_SIGNATURE s;
	uint8_t hash[crypto_hash_sha256_BYTES];
	size_t off = 0;
	nkp_err err;

	if (e == NULL || out == NULL || e->nonce == NULL || e->nonce_len < NKPI_QUOTE_NONCE_MIN ||
	    e->nonce_len > sizeof(in.extraData.buffer) || e->pcr_mask == 0 ||
	    (e->pcr_mask & 0xff000000u) != 0) {
		return NKP_ERR_INVALID;
	}
	err = ak_parse(e->ak_public, e->ak_public_len, &ak, &name);
	if (err == NKP_OK) {
		err = attest_parse(attest, attest_len, &outer, &in);
	}
	memset(&s, 0, sizeof(s));
	if (err == NKP_OK &&
	    (sig == NULL ||
	     Tss2_MU_TPMT_SIGNATURE_Unmarshal(sig, sig_len, &off, &s) != TSS2_RC_SUCCESS ||
	     off != sig_len)) {
		err = NKP_ERR_PARSE;
	}
	if (err != NKP_OK) {
		return err;
	}
	/* The signature first: nothing in an unsigned structure counts. */
	crypto_hash_sha256(hash, outer.attestationData, outer.size);
	if (s.sigAlg != TPM2_ALG_ECDSA || s.signature.ecdsa.hash != TPM2_ALG_SHA256 ||
	    ecdsa_check(&ak.publicArea.unique.ecc, &s.signature.ecdsa, hash) != NKP_OK) {
		return NKP_ERR_AUTH;
	}
	/* Signed by the AK, but is it a quote the TPM made (not data the AK
	 * was asked to sign: a restricted key signs only TPM-made digests
	 * that start with TPM_GENERATED_VALUE), and by this AK? */
	if (in.magic != TPM2_GENERATED_VALUE || in.type != TPM2_ST_ATTEST_QUOTE ||
	    in.qualifiedSigner.size != name.size ||
	    memcmp(in.qualifiedSigner.name, name.name, name.size) != 0) {
		return NKP_ERR_AUTH;
	}
	if (in.extraData.size != e->nonce_len ||
	    sodium_memcmp(in.extraData.buffer, e->nonce, e->nonce_len) != 0) {
		return NKP_ERR_REPLAY;
	}
	if (!selection_is(&in.attested.quote.pcrSelect, e->pcr_mask) ||
	    in.attested.quote.pcrDigest.size != NKPI_QUOTE_DIGEST_BYTES) {
		return NKP_ERR_REFUSED;
	}
	memcpy(out->pcr_digest, in.attested.quote.pcrDigest.buffer, NKPI_QUOTE_DIGEST_BYTES);
	out->reset_count = in.clockInfo.resetCount;
	out->restart_count = in.clockInfo.restartCount;
	out->clock = in.clockInfo.clock;
	return NKP_OK;
}

nkp_err nkpi_quote_ak_check(const uint8_t *ak, size_t ak_len)
{
	TPM2B_PUBLIC pub;
	TPM2B_NAME name;

	return ak_parse(ak, ak_len, &pub, &name);
}
