/* nkpd's seal policy key and its approvals (nkp/private/policy.h). */
#include <stdbool.h>
#include <string.h>

#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <sodium.h>
#include <tss2/tss2_mu.h>

#include "ecdsa.h"
#include "policy.h"

#define COORD 32u
#define PCR_MASK_ALL 0x00ffffffu

/* The policy key's public area, every field but the point fixed
 * (policy.h). */
static void key_template(const uint8_t x[COORD], const uint8_t y[COORD], TPM2B_PUBLIC *pub)
{
	memset(pub, 0, sizeof(*pub));
	pub->publicArea.type = TPM2_ALG_ECC;
	pub->publicArea.nameAlg = TPM2_ALG_SHA256;
	pub->publicArea.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH;
	pub->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	pub->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
	pub->publicArea.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	pub->publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	pub->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	pub->publicArea.unique.ecc.x.size = COORD;
	memcpy(pub->publicArea.unique.ecc.x.buffer, x, COORD);
	pub->publicArea.unique.ecc.y.size = COORD;
	memcpy(pub->publicArea.unique.ecc.y.buffer, y, COORD);
}

static bool point_valid(const uint8_t x[COORD], const uint8_t y[COORD])
{
	mbedtls_ecp_group grp;
	mbedtls_ecp_point pt;
	uint8_t enc[1 + 2 * COORD];
	bool ok;

	enc[0] = 0x04;
	memcpy(enc + 1, x, COORD);
	memcpy(enc + 1 + COORD, y, COORD);
	mbedtls_ecp_group_init(&grp);
	mbedtls_ecp_point_init(&pt);
	ok = mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
	     mbedtls_ecp_point_read_binary(&grp, &pt, enc, sizeof(enc)) == 0 &&
	     mbedtls_ecp_check_pubkey(&grp, &pt) == 0;
	mbedtls_ecp_point_free(&pt);
	mbedtls_ecp_group_free(&grp);
	return ok;
}

/* A key of the template: unmarshalled, rebuilt from its point alone and
 * marshalled again, it must give back exactly the bytes it came as. So no
 * other attribute, scheme, padding or size passes, nor bytes after it. */
static nkp_err key_parse(const uint8_t *buf, size_t len, TPM2B_PUBLIC *pub)
{
	TPM2B_PUBLIC in;
	uint8_t again[NKPI_POLICY_PUBLIC_MAX];
	size_t off = 0, again_len = 0;

	memset(&in, 0, sizeof(in));
	if (buf == NULL || len < 2 || len > sizeof(again) ||
	    (((size_t)buf[0] << 8) | buf[1]) != len - 2 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, &in) != TSS2_RC_SUCCESS || off != len ||
	    in.publicArea.type != TPM2_ALG_ECC || in.publicArea.unique.ecc.x.size != COORD ||
	    in.publicArea.unique.ecc.y.size != COORD) {
		return NKP_ERR_INVALID;
	}
	key_template(in.publicArea.unique.ecc.x.buffer, in.publicArea.unique.ecc.y.buffer, pub);
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, again, sizeof(again), &again_len) !=
		    TSS2_RC_SUCCESS ||
	    again_len != len || memcmp(again, buf, len) != 0 ||
	    !point_valid(pub->publicArea.unique.ecc.x.buffer,
			 pub->publicArea.unique.ecc.y.buffer)) {
		return NKP_ERR_INVALID;
	}
	return NKP_OK;
}

nkp_err nkpi_policy_key_check(const uint8_t *pub, size_t pub_len)
{
	TPM2B_PUBLIC p;

	return key_parse(pub, pub_len, &p);
}

nkp_err nkpi_policy_key_name(const uint8_t *pub, size_t pub_len,
			     uint8_t name[static NKPI_POLICY_NAME_BYTES])
{
	TPM2B_PUBLIC p;
	nkp_err err = key_parse(pub, pub_len, &p);

	if (err != NKP_OK) {
		return err;
	}
	/* key_parse made sure the TPM2B's contents are exactly TPMT_PUBLIC. */
	name[0] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
	name[1] = (uint8_t)TPM2_ALG_SHA256;
	crypto_hash_sha256(name + 2, pub + 2, pub_len - 2);
	return NKP_OK;
}

static int sodium_rng(void *ctx, unsigned char *out, size_t len)
{
	(void)ctx;
	randombytes_buf(out, len);
	return 0;
}

/* *d = the scalar `secret`, if in [1, n-1]. The caller frees *d (which
 * wipes it) and the group whatever this returns. */
static nkp_err scalar_load(const uint8_t secret[NKPI_POLICY_SECRET_BYTES], mbedtls_ecp_group *grp,
			   mbedtls_mpi *d)
{
	if (mbedtls_ecp_group_load(grp, MBEDTLS_ECP_DP_SECP256R1) != 0) {
		return NKP_ERR_CRYPTO;
	}
	if (mbedtls_mpi_read_binary(d, secret, NKPI_POLICY_SECRET_BYTES) != 0) {
		return NKP_ERR_NOMEM;
	}
	return mbedtls_ecp_check_privkey(grp, d) == 0 ? NKP_OK : NKP_ERR_INVALID;
}

nkp_err nkpi_policy_key_new(uint8_t secret[static NKPI_POLICY_SECRET_BYTES])
{
	uint8_t s[NKPI_POLICY_SECRET_BYTES];
	mbedtls_ecp_group grp;
	mbedtls_mpi d;
	nkp_err err = NKP_ERR_INVALID;

	/* A uniform scalar: draws outside [1, n-1] are thrown away (one in
	 * about 2^32 for P-256), never reduced, which would bias it. */
	for (int i = 0; i < 64 && err == NKP_ERR_INVALID; i++) {
		mbedtls_ecp_group_init(&grp);
		mbedtls_mpi_init(&d);
		randombytes_buf(s, sizeof(s));
		err = scalar_load(s, &grp, &d);
		mbedtls_mpi_free(&d);
		mbedtls_ecp_group_free(&grp);
	}
	err = err == NKP_ERR_INVALID ? NKP_ERR_CRYPTO : err;
	if (err == NKP_OK) {
		memcpy(secret, s, sizeof(s));
	}
	sodium_memzero(s, sizeof(s));
	return err;
}

nkp_err nkpi_policy_key_public(const uint8_t secret[static NKPI_POLICY_SECRET_BYTES], uint8_t *pub,
			       size_t *pub_len)
{
	mbedtls_ecp_group grp;
	mbedtls_ecp_point q;
	mbedtls_mpi d;
	TPM2B_PUBLIC p;
	uint8_t enc[1 + 2 * COORD], out[NKPI_POLICY_PUBLIC_MAX];
	size_t enc_len = 0, len = 0;
	nkp_err err;

	mbedtls_ecp_group_init(&grp);
	mbedtls_ecp_point_init(&q);
	mbedtls_mpi_init(&d);
	err = scalar_load(secret, &grp, &d);
	if (err == NKP_OK && (mbedtls_ecp_mul(&grp, &q, &d, &grp.G, sodium_rng, NULL) != 0 ||
			      mbedtls_ecp_point_write_binary(&grp, &q, MBEDTLS_ECP_PF_UNCOMPRESSED,
							     &enc_len, enc, sizeof(enc)) != 0 ||
			      enc_len != sizeof(enc))) {
		err = NKP_ERR_CRYPTO;
	}
	if (err == NKP_OK) {
		key_template(enc + 1, enc + 1 + COORD, &p);
		err = Tss2_MU_TPM2B_PUBLIC_Marshal(&p, out, sizeof(out), &len) == TSS2_RC_SUCCESS
			      ? NKP_OK
			      : NKP_ERR_CRYPTO;
	}
	if (err == NKP_OK) {
		memcpy(pub, out, len);
		*pub_len = len;
	}
	mbedtls_mpi_free(&d);
	mbedtls_ecp_point_free(&q);
	mbedtls_ecp_group_free(&grp);
	return err;
}

static void be32(uint32_t v, uint8_t out[4])
{
	out[0] = (uint8_t)(v >> 24);
	out[1] = (uint8_t)(v >> 16);
	out[2] = (uint8_t)(v >> 8);
	out[3] = (uint8_t)v;
}

nkp_err nkpi_policy_pcr_digest(uint32_t pcr_mask,
			       const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
			       uint8_t out[static NKPI_POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[NKPI_POLICY_DIGEST_BYTES];
	/* TPML_PCR_SELECTION: count 1, then TPMS_PCR_SELECTION: hash SHA-256,
	 * sizeofSelect 3, pcrSelect (PCR 8i+j is bit j of byte i). */
	uint8_t sel[4 + 2 + 1 + 3] = {0, 0, 0, 1, 0, 0, 3};
	uint8_t cc[4];
	crypto_hash_sha256_state st;

	if (pcr_mask == 0 || (pcr_mask & ~PCR_MASK_ALL) != 0) {
		return NKP_ERR_INVALID;
	}
	sel[4] = (uint8_t)(TPM2_ALG_SHA256 >> 8);
	sel[5] = (uint8_t)TPM2_ALG_SHA256;
	for (int i = 0; i < 3; i++) {
		sel[7 + i] = (uint8_t)(pcr_mask >> (8 * i));
	}
	be32(TPM2_CC_PolicyPCR, cc);
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, zero, sizeof(zero));
	crypto_hash_sha256_update(&st, cc, sizeof(cc));
	crypto_hash_sha256_update(&st, sel, sizeof(sel));
	crypto_hash_sha256_update(&st, pcr_digest, NKPI_POLICY_DIGEST_BYTES);
	crypto_hash_sha256_final(&st, out);
	return NKP_OK;
}

static bool ref_valid(const uint8_t *ref, size_t ref_len)
{
	return ref != NULL && ref_len == NKPI_POLICY_REF_BYTES;
}

nkp_err nkpi_policy_approval_digest(uint32_t pcr_mask,
				    const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
				    const uint8_t *ref, size_t ref_len,
				    uint8_t out[static NKPI_POLICY_DIGEST_BYTES])
{
	uint8_t approved[NKPI_POLICY_DIGEST_BYTES];
	crypto_hash_sha256_state st;
	nkp_err err = ref_valid(ref, ref_len)
			      ? nkpi_policy_pcr_digest(pcr_mask, pcr_digest, approved)
			      : NKP_ERR_INVALID;

	if (err != NKP_OK) {
		return err;
	}
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, approved, sizeof(approved));
	crypto_hash_sha256_update(&st, ref, ref_len);
	crypto_hash_sha256_final(&st, out);
	return NKP_OK;
}

nkp_err nkpi_policy_authorize_digest(const uint8_t *pub, size_t pub_len, const uint8_t *ref,
				     size_t ref_len, uint8_t out[static NKPI_POLICY_DIGEST_BYTES])
{
	static const uint8_t zero[NKPI_POLICY_DIGEST_BYTES];
	uint8_t name[NKPI_POLICY_NAME_BYTES], cc[4], d1[NKPI_POLICY_DIGEST_BYTES];
	crypto_hash_sha256_state st;
	nkp_err err = ref_valid(ref, ref_len) ? nkpi_policy_key_name(pub, pub_len, name)
					      : NKP_ERR_INVALID;

	if (err != NKP_OK) {
		return err;
	}
	/* PolicyAuthorize resets the digest to zero, then PolicyUpdate: the
	 * command code and the key's Name, then, always, a second hash with
	 * policyRef. */
	be32(TPM2_CC_PolicyAuthorize, cc);
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, zero, sizeof(zero));
	crypto_hash_sha256_update(&st, cc, sizeof(cc));
	crypto_hash_sha256_update(&st, name, sizeof(name));
	crypto_hash_sha256_final(&st, d1);
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, d1, sizeof(d1));
	crypto_hash_sha256_update(&st, ref, ref_len);
	crypto_hash_sha256_final(&st, out);
	return NKP_OK;
}

nkp_err nkpi_policy_approve(const uint8_t secret[static NKPI_POLICY_SECRET_BYTES],
			    uint32_t pcr_mask,
			    const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
			    const uint8_t *ref, size_t ref_len, uint8_t *sig, size_t *sig_len)
{
	uint8_t ahash[NKPI_POLICY_DIGEST_BYTES], out[NKPI_POLICY_SIG_MAX];
	mbedtls_ecp_group grp;
	mbedtls_mpi d, r, s;
	TPMT_SIGNATURE t;
	size_t len = 0;
	nkp_err err = nkpi_policy_approval_digest(pcr_mask, pcr_digest, ref, ref_len, ahash);

	if (err != NKP_OK) {
		return err;
	}
	memset(&t, 0, sizeof(t));
	mbedtls_ecp_group_init(&grp);
	mbedtls_mpi_init(&d);
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	err = scalar_load(secret, &grp, &d);
	/* RFC 6979: k from the key and aHash, so no RNG can leak the key;
	 * the RNG given only blinds the arithmetic, not the result. */
	if (err == NKP_OK &&
	    (mbedtls_ecdsa_sign_det_ext(&grp, &r, &s, &d, ahash, sizeof(ahash), MBEDTLS_MD_SHA256,
					sodium_rng, NULL) != 0 ||
	     mbedtls_mpi_write_binary(&r, t.signature.ecdsa.signatureR.buffer, COORD) != 0 ||
	     mbedtls_mpi_write_binary(&s, t.signature.ecdsa.signatureS.buffer, COORD) != 0)) {
		err = NKP_ERR_CRYPTO;
	}
	if (err == NKP_OK) {
		t.sigAlg = TPM2_ALG_ECDSA;
		t.signature.ecdsa.hash = TPM2_ALG_SHA256;
		t.signature.ecdsa.signatureR.size = COORD;
		t.signature.ecdsa.signatureS.size = COORD;
		err = Tss2_MU_TPMT_SIGNATURE_Marshal(&t, out, sizeof(out), &len) == TSS2_RC_SUCCESS
			      ? NKP_OK
			      : NKP_ERR_CRYPTO;
	}
	if (err == NKP_OK) {
		memcpy(sig, out, len);
		*sig_len = len;
	}
	mbedtls_mpi_free(&s);
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&d);
	mbedtls_ecp_group_free(&grp);
	return err;
}

static nkp_err sig_parse(const uint8_t *buf, size_t len, TPMT_SIGNATURE *sig)
{
	size_t off = 0;

	memset(sig, 0, sizeof(*sig));
	if (buf == NULL ||
	    Tss2_MU_TPMT_SIGNATURE_Unmarshal(buf, len, &off, sig) != TSS2_RC_SUCCESS ||
	    off != len || sig->sigAlg != TPM2_ALG_ECDSA ||
	    sig->signature.ecdsa.hash != TPM2_ALG_SHA256 ||
	    sig->signature.ecdsa.signatureR.size != COORD ||
	    sig->signature.ecdsa.signatureS.size != COORD) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

nkp_err nkpi_policy_sig_check(const uint8_t *sig, size_t sig_len)
{
	TPMT_SIGNATURE s;

	return sig_parse(sig, sig_len, &s);
}

nkp_err nkpi_policy_verify(const uint8_t *pub, size_t pub_len, uint32_t pcr_mask,
			   const uint8_t pcr_digest[static NKPI_POLICY_DIGEST_BYTES],
			   const uint8_t *ref, size_t ref_len, const uint8_t *sig, size_t sig_len)
{
	TPM2B_PUBLIC key;
	TPMT_SIGNATURE s;
	uint8_t ahash[NKPI_POLICY_DIGEST_BYTES];
	nkp_err err = key_parse(pub, pub_len, &key);

	if (err == NKP_OK) {
		err = nkpi_policy_approval_digest(pcr_mask, pcr_digest, ref, ref_len, ahash);
	}
	if (err == NKP_OK) {
		err = sig_parse(sig, sig_len, &s);
	}
	if (err == NKP_OK) {
		err = nkpi_ecdsa_p256_verify(&key.publicArea.unique.ecc, &s.signature.ecdsa, ahash);
	}
	return err;
}
