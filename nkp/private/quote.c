/* Checking a TPM 2.0 quote (nkp/private/quote.h). */
#include <stdlib.h>
#include <string.h>

#include <mbedtls/aes.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>
#include <sodium.h>
#include <tss2/tss2_mu.h>

#include "ecdsa.h"
#include "quote.h"

#define COORD 32u

/* The pinned AK: ECC P-256, restricted signing key, ECDSA with SHA-256,
 * made inside the TPM (tpm.c's template); *name is its qualified name. */
static nkp_err ak_parse(const uint8_t *buf, size_t len, TPM2B_PUBLIC *pub, TPM2B_NAME *name)
{
	/* Exactly tpm.c's template: no adminWithPolicy, no policy that could
	 * let the key be used without its (empty) password. */
	const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				 TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
				 TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED |
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
	    a->objectAttributes != need || a->authPolicy.size != 0 ||
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

nkp_err nkpi_ecdsa_p256_verify(const TPMS_ECC_POINT *q, const TPMS_SIGNATURE_ECDSA *sig,
			       const uint8_t hash[32])
{
	mbedtls_ecp_group grp;
	mbedtls_ecp_point pt;
	mbedtls_mpi r, s;
	uint8_t enc[1 + 2 * COORD];
	nkp_err err = NKP_ERR_AUTH;

	if (sig->signatureR.size == 0 || sig->signatureR.size > COORD ||
	    sig->signatureS.size == 0 || sig->signatureS.size > COORD || q->x.size > COORD ||
	    q->y.size > COORD) {
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
	    nkpi_ecdsa_p256_verify(&ak.publicArea.unique.ecc, &s.signature.ecdsa, hash) != NKP_OK) {
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

/* ---- credential activation ---- */

#define EK_KEY_BITS 2048u
#define EK_MOD_BYTES (EK_KEY_BITS / 8u)
#define SEED_BYTES crypto_hash_sha256_BYTES

/* The EK: TCG's default template L-1 as far as MakeCredential depends on
 * it (RSA 2048, SHA-256 names, AES-128-CFB inner wrapping, a restricted
 * decryption key made in the TPM). */
static nkp_err ek_parse(const uint8_t *buf, size_t len, TPM2B_PUBLIC *pub)
{
	const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				 TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_RESTRICTED |
				 TPMA_OBJECT_DECRYPT;
	const TPMT_PUBLIC *a = &pub->publicArea;
	size_t off = 0;

	memset(pub, 0, sizeof(*pub));
	if (buf == NULL || len < 2 || (((size_t)buf[0] << 8) | buf[1]) != len - 2 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, pub) != TSS2_RC_SUCCESS || off != len) {
		return NKP_ERR_INVALID;
	}
	if (a->type != TPM2_ALG_RSA || a->nameAlg != TPM2_ALG_SHA256 ||
	    (a->objectAttributes & need) != need ||
	    (a->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) != 0 ||
	    a->parameters.rsaDetail.keyBits != EK_KEY_BITS ||
	    (a->parameters.rsaDetail.exponent != 0 && a->parameters.rsaDetail.exponent != 65537u) ||
	    a->parameters.rsaDetail.symmetric.algorithm != TPM2_ALG_AES ||
	    a->parameters.rsaDetail.symmetric.keyBits.aes != 128 ||
	    a->parameters.rsaDetail.symmetric.mode.aes != TPM2_ALG_CFB ||
	    a->unique.rsa.size != EK_MOD_BYTES) {
		return NKP_ERR_INVALID;
	}
	return NKP_OK;
}

/* The AK's name: nameAlg (big-endian) || SHA-256(TPMT_PUBLIC). */
static nkp_err ak_name(const uint8_t *ak, size_t ak_len, uint8_t name[2 + 32])
{
	TPM2B_PUBLIC pub;
	TPM2B_NAME qn;
	uint8_t area[sizeof(TPMT_PUBLIC)];
	size_t area_len = 0;
	nkp_err err = ak_parse(ak, ak_len, &pub, &qn);

	if (err != NKP_OK || Tss2_MU_TPMT_PUBLIC_Marshal(&pub.publicArea, area, sizeof(area),
							 &area_len) != TSS2_RC_SUCCESS) {
		return NKP_ERR_INVALID;
	}
	name[0] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
	name[1] = (uint8_t)TPM2_ALG_SHA256;
	crypto_hash_sha256(name + 2, area, area_len);
	return NKP_OK;
}

/* KDFa (TPM 2.0 Part 1, 11.4.10.2) with HMAC-SHA-256: `bits` of
 * HMAC(key, [i]be32 || label || 0 || u || [bits]be32), i = 1, 2, ...
 * (contextV is always empty here). */
static void kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *u,
		 size_t u_len, uint32_t bits, uint8_t *out)
{
	size_t want = bits / 8u;
	uint8_t block[crypto_auth_hmacsha256_BYTES];

	for (uint32_t i = 1; want > 0; i++) {
		crypto_auth_hmacsha256_state st;
		const uint8_t ctr[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
					(uint8_t)i};
		const uint8_t len[4] = {(uint8_t)(bits >> 24), (uint8_t)(bits >> 16),
					(uint8_t)(bits >> 8), (uint8_t)bits};
		size_t n = want < sizeof(block) ? want : sizeof(block);

		crypto_auth_hmacsha256_init(&st, key, key_len);
		crypto_auth_hmacsha256_update(&st, ctr, sizeof(ctr));
		crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label) + 1);
		crypto_auth_hmacsha256_update(&st, u, u_len);
		crypto_auth_hmacsha256_update(&st, len, sizeof(len));
		crypto_auth_hmacsha256_final(&st, block);
		memcpy(out, block, n);
		out += n;
		want -= n;
	}
	sodium_memzero(block, sizeof(block));
}

static int sodium_rng(void *ctx, unsigned char *out, size_t len)
{
	(void)ctx;
	randombytes_buf(out, len);
	return 0;
}

/* RSA-OAEP (SHA-256, label "IDENTITY\0") of the seed to the EK. */
static nkp_err seal_seed(const TPM2B_PUBLIC *ek, const uint8_t seed[SEED_BYTES],
			 uint8_t out[EK_MOD_BYTES])
{
	static const unsigned char label[] = "IDENTITY"; /* sizeof: with its 0 */
	static const unsigned char e[3] = {0x01, 0x00, 0x01};
	mbedtls_rsa_context rsa;
	int rc;

	mbedtls_rsa_init(&rsa, MBEDTLS_RSA_PKCS_V21, MBEDTLS_MD_SHA256);
	rc = mbedtls_rsa_import_raw(&rsa, ek->publicArea.unique.rsa.buffer, EK_MOD_BYTES, NULL, 0,
				    NULL, 0, NULL, 0, e, sizeof(e));
	if (rc == 0) {
		rc = mbedtls_rsa_complete(&rsa);
	}
	if (rc == 0) {
		rc = mbedtls_rsa_rsaes_oaep_encrypt(&rsa, sodium_rng, NULL, MBEDTLS_RSA_PUBLIC,
						    label, sizeof(label), SEED_BYTES, seed, out);
	}
	mbedtls_rsa_free(&rsa);
	return rc == 0 ? NKP_OK : NKP_ERR_CRYPTO;
}

nkp_err nkpi_quote_make_credential(const uint8_t *ek, size_t ek_len, const uint8_t *ak_public,
				   size_t ak_public_len, const uint8_t *cred, size_t cred_len,
				   uint8_t *blob, size_t *blob_len, uint8_t *secret,
				   size_t *secret_len)
{
	TPM2B_PUBLIC ekp;
	uint8_t name[2 + 32], seed[SEED_BYTES], sym[16], hkey[32], iv[16] = {0};
	uint8_t plain[2 + 64];
	size_t iv_off = 0, enc_len = 2 + cred_len, n;
	mbedtls_aes_context aes;
	crypto_auth_hmacsha256_state st;
	nkp_err err;

	if (cred == NULL || cred_len == 0 || cred_len > 64 ||
	    ek_parse(ek, ek_len, &ekp) != NKP_OK ||
	    ak_name(ak_public, ak_public_len, name) != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	randombytes_buf(seed, sizeof(seed));
	err = seal_seed(&ekp, seed, secret + 2);
	if (err != NKP_OK) {
		sodium_memzero(seed, sizeof(seed));
		return err;
	}
	secret[0] = (uint8_t)(EK_MOD_BYTES >> 8);
	secret[1] = (uint8_t)EK_MOD_BYTES;
	*secret_len = 2 + EK_MOD_BYTES;
	kdfa(seed, sizeof(seed), "STORAGE", name, sizeof(name), 128, sym);
	kdfa(seed, sizeof(seed), "INTEGRITY", NULL, 0, 256, hkey);
	sodium_memzero(seed, sizeof(seed));
	/* TPM2B_ID_OBJECT: size || TPM2B_DIGEST(outer HMAC) || encIdentity,
	 * encIdentity = AES-128-CFB(sym, IV 0, TPM2B_DIGEST(cred)). */
	plain[0] = (uint8_t)(cred_len >> 8);
	plain[1] = (uint8_t)cred_len;
	memcpy(plain + 2, cred, cred_len);
	n = 2 + (2 + 32) + enc_len;
	mbedtls_aes_init(&aes);
	if (mbedtls_aes_setkey_enc(&aes, sym, 128) != 0 ||
	    mbedtls_aes_crypt_cfb128(&aes, MBEDTLS_AES_ENCRYPT, enc_len, &iv_off, iv, plain,
				     blob + 2 + 2 + 32) != 0) {
		err = NKP_ERR_CRYPTO;
	}
	mbedtls_aes_free(&aes);
	crypto_auth_hmacsha256_init(&st, hkey, sizeof(hkey));
	crypto_auth_hmacsha256_update(&st, blob + 2 + 2 + 32, enc_len);
	crypto_auth_hmacsha256_update(&st, name, sizeof(name));
	crypto_auth_hmacsha256_final(&st, blob + 2 + 2);
	blob[0] = (uint8_t)((n - 2) >> 8);
	blob[1] = (uint8_t)(n - 2);
	blob[2] = 0;
	blob[3] = 32;
	*blob_len = n;
	sodium_memzero(sym, sizeof(sym));
	sodium_memzero(hkey, sizeof(hkey));
	sodium_memzero(plain, sizeof(plain));
	return err;
}

/* PEM certificates into *chain: mbedTLS wants PEM text with its 0. */
static nkp_err ca_parse(const uint8_t *ca_pem, size_t ca_len, mbedtls_x509_crt *chain)
{
	char *text;
	int rc;

	if (ca_pem == NULL || ca_len == 0 || ca_len > (1u << 20) ||
	    memchr(ca_pem, '\0', ca_len) != NULL) {
		return NKP_ERR_INVALID;
	}
	text = malloc(ca_len + 1);
	if (text == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(text, ca_pem, ca_len);
	text[ca_len] = '\0';
	rc = mbedtls_x509_crt_parse(chain, (const unsigned char *)text, ca_len + 1);
	free(text);
	/* > 0: some certificates could not be read; all must be. */
	return rc == 0 && chain->version != 0 ? NKP_OK : NKP_ERR_INVALID;
}

nkp_err nkpi_quote_ca_check(const uint8_t *ca_pem, size_t ca_len)
{
	mbedtls_x509_crt chain;
	nkp_err err;

	mbedtls_x509_crt_init(&chain);
	err = ca_parse(ca_pem, ca_len, &chain);
	mbedtls_x509_crt_free(&chain);
	return err;
}

/* An EK certificate, not any certificate the CA issued: not a CA's, for
 * key encipherment, and for the TCG EK purpose (2.23.133.8.1) when it
 * names purposes at all. Without this, the holder of any RSA 2048 key the
 * CA certified could play a TPM in software. */
static bool is_ek_cert(const mbedtls_x509_crt *crt)
{
	static const unsigned char ek_oid[] = {0x67, 0x81, 0x05, 0x08, 0x01}; /* 2.23.133.8.1 */

	return !crt->ca_istrue &&
	       mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_KEY_ENCIPHERMENT) == 0 &&
	       mbedtls_x509_crt_check_extended_key_usage(crt, (const char *)ek_oid,
							 sizeof(ek_oid)) == 0;
}

nkp_err nkpi_quote_ek_cert_check(const uint8_t *ek, size_t ek_len, const uint8_t *cert,
				 size_t cert_len, const uint8_t *ca_pem, size_t ca_len)
{
	TPM2B_PUBLIC ekp;
	mbedtls_x509_crt crt, chain;
	uint8_t n[EK_MOD_BYTES], e[4];
	uint32_t flags = 0;
	nkp_err err = NKP_OK;

	if (ek_parse(ek, ek_len, &ekp) != NKP_OK || cert == NULL || cert_len == 0) {
		return NKP_ERR_INVALID;
	}
	mbedtls_x509_crt_init(&crt);
	mbedtls_x509_crt_init(&chain);
	if (ca_parse(ca_pem, ca_len, &chain) != NKP_OK ||
	    mbedtls_x509_crt_parse_der(&crt, cert, cert_len) != 0) {
		err = NKP_ERR_INVALID;
	} else if (mbedtls_x509_crt_verify(&crt, &chain, NULL, NULL, &flags, NULL, NULL) != 0 ||
		   flags != 0) {
		err = NKP_ERR_AUTH;
	} else if (!is_ek_cert(&crt)) {
		err = NKP_ERR_REFUSED;
	} else if (mbedtls_pk_get_type(&crt.pk) != MBEDTLS_PK_RSA ||
		   mbedtls_rsa_get_len(mbedtls_pk_rsa(crt.pk)) != EK_MOD_BYTES ||
		   mbedtls_rsa_export_raw(mbedtls_pk_rsa(crt.pk), n, sizeof(n), NULL, 0, NULL, 0,
					  NULL, 0, e, sizeof(e)) != 0 ||
		   memcmp(n, ekp.publicArea.unique.rsa.buffer, EK_MOD_BYTES) != 0 ||
		   memcmp(e, (const uint8_t[]){0, 1, 0, 1}, 4) != 0) {
		err = NKP_ERR_REFUSED;
	}
	mbedtls_x509_crt_free(&crt);
	mbedtls_x509_crt_free(&chain);
	return err;
}
