/* Provider backup files (proto/backup.proto), format 1.
 *
 * Export:
 *   salt      = 16 random bytes
 *   header    = serialized BackupHeader (kdf_alg = crypto_pwhash_ALG_ARGON2ID13,
 *               opslimit, memlimit, salt, provider id and name in clear)
 *   master    = Argon2id(password, salt, opslimit, memlimit), 32 bytes
 *   enc key   = crypto_kdf_derive_from_key(master, id 1, ctx "nkpbkup1")
 *   check key = crypto_kdf_derive_from_key(master, id 2, ctx "nkpbkup1")
 *   verifier  = BLAKE2b-256 keyed with the check key, over header
 *   nonce     = 24 random bytes
 *   ciphertext = XChaCha20-Poly1305(enc key, nonce, AD = header,
 *                                   serialized BackupPayload)
 *   body      = serialized BackupBody {header, verifier, nonce, ciphertext}
 *   checksum  = BLAKE2b-256("nkp-backup-checksum" || body), unkeyed
 *   file      = serialized BackupFile {1, body, checksum}
 * Timestamps: each version's created_unix comes from the struct; the
 * payload's exported_unix is always nkpi_now() (the struct's field is
 * ignored on export: the export happens now).
 *
 * Import checks, in this order, so that a hostile file costs no Argon2id
 * work and no large allocation: file size (TOO_LARGE; empty: PARSE); BackupFile parse
 * (PARSE), format version (FORMAT_VERSION), unknown fields (PARSE);
 * checksum length and value (DAMAGED); body and header parse, unknown
 * fields and field sizes (PARSE); kdf_alg (FORMAT_VERSION); Argon2id cost
 * within [libsodium's minimum, opslimit 8 / memlimit 1 GiB] (PARSE);
 * provider name (TOO_LARGE if over NKP_PROVIDER_MAX_NAME, PARSE if empty or
 * holding control characters). Then Argon2id; verifier, compared with
 * sodium_memcmp (WRONG_PASSWORD); AEAD (AUTH); payload parse with the
 * wiping allocator, unknown fields, sizes, id and name equal to the
 * header's, 1..NKP_BACKUP_MAX_VERSIONS versions (TOO_LARGE above), each
 * with a non-zero unique number, a known state and a 32-byte key, at most
 * one version active (PARSE). Export refuses the same bad contents with
 * NKP_ERR_INVALID, and an empty password too.
 *
 * The header is covered by the verifier, so a header rewritten together
 * with a recomputed checksum reads as a wrong password: it changes the
 * Argon2id inputs or the verifier input, which no check can tell apart
 * from another password. Ciphertext forged under an intact checksum is
 * NKP_ERR_AUTH.
 *
 * Key bytes exist in clear only in sodium_malloc memory (the packed and
 * opened payload, the Argon2id output) and in blocks of the wiping
 * protobuf-c allocator; all are wiped on every path. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/backup.h>

#include "backup.pb-c.h"
#include "internal.h"

#define BACKUP_KDF_ALG crypto_pwhash_ALG_ARGON2ID13
#define BACKUP_MAX_OPSLIMIT 8u
#define BACKUP_MAX_MEMLIMIT ((uint64_t)1 << 30)
#define SALT_BYTES 16u
#define HASH_BYTES 32u
#define CHECKSUM_PREFIX "nkp-backup-checksum"

static const char backup_ctx[8] = {'n', 'k', 'p', 'b', 'k', 'u', 'p', '1'};
enum { SUBKEY_ENC = 1, SUBKEY_CHECK = 2 };

/* The two keys derived from the password. */
typedef struct pw_keys {
	nkp_key *enc;
	nkp_key *check;
} pw_keys;

nkp_backup_params nkp_backup_params_moderate(void)
{
	return (nkp_backup_params){crypto_pwhash_argon2id_OPSLIMIT_MODERATE,
				   crypto_pwhash_argon2id_MEMLIMIT_MODERATE};
}

nkp_backup_params nkp_backup_params_min(void)
{
	return (nkp_backup_params){crypto_pwhash_argon2id_OPSLIMIT_MIN,
				   crypto_pwhash_argon2id_MEMLIMIT_MIN};
}

bool nkp_backup_params_weak(const nkp_backup_params *p)
{
	return p->opslimit < crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE ||
	       p->memlimit < crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
}

static bool params_ok(uint64_t opslimit, uint64_t memlimit)
{
	return opslimit >= crypto_pwhash_argon2id_OPSLIMIT_MIN && opslimit <= BACKUP_MAX_OPSLIMIT &&
	       memlimit >= crypto_pwhash_argon2id_MEMLIMIT_MIN && memlimit <= BACKUP_MAX_MEMLIMIT &&
	       memlimit <= SIZE_MAX;
}

/* 0: fine; NKP_ERR_TOO_LARGE: too long; NKP_ERR_PARSE: empty or control
 * characters (the name is shown to operators). */
static nkp_err name_check(const char *name)
{
	size_t len = name == NULL ? 0 : strnlen(name, NKP_PROVIDER_MAX_NAME + 1);

	if (len == 0) {
		return NKP_ERR_PARSE;
	}
	if (len > NKP_PROVIDER_MAX_NAME) {
		return NKP_ERR_TOO_LARGE;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f) {
			return NKP_ERR_PARSE;
		}
	}
	return NKP_OK;
}

static bool state_ok(uint32_t s)
{
	return s == NKP_VERSION_STAGED || s == NKP_VERSION_ACTIVE || s == NKP_VERSION_DECRYPT_ONLY;
}

/* Version numbers non-zero and unique, states known, keys present, at
 * most one version active. */
static bool versions_ok(const nkp_provider_backup *p)
{
	size_t active = 0;

	if (p->n_versions == 0 || p->n_versions > NKP_BACKUP_MAX_VERSIONS) {
		return false;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		const nkp_backup_version *v = &p->versions[i];

		if (v->version == 0 || !state_ok((uint32_t)v->state) || v->key == NULL) {
			return false;
		}
		active += v->state == NKP_VERSION_ACTIVE;
		for (size_t j = 0; j < i; j++) {
			if (p->versions[j].version == v->version) {
				return false;
			}
		}
	}
	return active <= 1;
}

nkp_err nkp_provider_backup_new(size_t n_versions, nkp_provider_backup **out)
{
	nkp_provider_backup *p;

	if (out == NULL || n_versions > NKP_BACKUP_MAX_VERSIONS) {
		return NKP_ERR_INVALID;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	if (n_versions > 0) {
		p->versions = calloc(n_versions, sizeof(*p->versions));
		if (p->versions == NULL) {
			free(p);
			return NKP_ERR_NOMEM;
		}
	}
	p->n_versions = n_versions;
	*out = p;
	return NKP_OK;
}

void nkp_provider_backup_free(nkp_provider_backup *p)
{
	if (p == NULL) {
		return;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		nkp_key_free(p->versions[i].key);
	}
	if (p->versions != NULL) {
		sodium_memzero(p->versions, p->n_versions * sizeof(*p->versions));
		free(p->versions);
	}
	sodium_memzero(p, sizeof(*p));
	free(p);
}

static void checksum(const uint8_t *body, size_t len, uint8_t out[static HASH_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, HASH_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)CHECKSUM_PREFIX,
				  sizeof(CHECKSUM_PREFIX) - 1);
	crypto_generichash_update(&st, body, len);
	crypto_generichash_final(&st, out, HASH_BYTES);
}

static void pw_keys_fini(pw_keys *k)
{
	nkp_key_free(k->enc);
	nkp_key_free(k->check);
	k->enc = NULL;
	k->check = NULL;
}

/* Argon2id, then the two subkeys. NKP_ERR_NOMEM if Argon2id fails (it only
 * fails for want of memory once its parameters are checked). */
static nkp_err pw_keys_derive(const char *pw, size_t pwlen, const uint8_t salt[static SALT_BYTES],
			      uint64_t opslimit, size_t memlimit, pw_keys *k)
{
	uint8_t *bytes = sodium_malloc(NKP_KEY_BYTES);
	nkp_key *master = NULL;
	nkp_err err;

	if (bytes == NULL) {
		return NKP_ERR_NOMEM;
	}
	if (crypto_pwhash(bytes, NKP_KEY_BYTES, pw, pwlen, salt, opslimit, memlimit,
			  BACKUP_KDF_ALG) != 0) {
		err = NKP_ERR_NOMEM;
		goto free_bytes;
	}
	err = nkp_key_from_bytes(bytes, &master);
	if (err != NKP_OK) {
		goto free_bytes;
	}
	err = nkp_key_derive(master, SUBKEY_ENC, backup_ctx, &k->enc);
	if (err == NKP_OK) {
		err = nkp_key_derive(master, SUBKEY_CHECK, backup_ctx, &k->check);
	}
	if (err != NKP_OK) {
		pw_keys_fini(k);
	}
	nkp_key_free(master);
free_bytes:
	sodium_free(bytes);
	return err;
}

static void verifier(const nkp_key *check, const uint8_t *hdr, size_t hdrlen,
		     uint8_t out[static HASH_BYTES])
{
	crypto_generichash(out, HASH_BYTES, hdr, hdrlen, nkpi_key_bytes(check), NKP_KEY_BYTES);
}

/* ---- export ---- */

static void pack_versions(const nkp_provider_backup *p, Nkp__Backup__BackupVersion *vs,
			  Nkp__Backup__BackupVersion **vps, uint8_t *keys)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		Nkp__Backup__BackupVersion init = NKP__BACKUP__BACKUP_VERSION__INIT;

		vs[i] = init;
		vs[i].version = p->versions[i].version;
		vs[i].state = (uint32_t)p->versions[i].state;
		vs[i].created_unix = p->versions[i].created_unix;
		nkp_key_export(p->versions[i].key, keys + i * NKP_KEY_BYTES);
		vs[i].key.data = keys + i * NKP_KEY_BYTES;
		vs[i].key.len = NKP_KEY_BYTES;
		vps[i] = &vs[i];
	}
}

/* Serialized BackupPayload in sodium_malloc memory (*out). */
static nkp_err pack_payload(const nkp_provider_backup *p, uint8_t **out, size_t *outlen)
{
	Nkp__Backup__BackupPayload msg = NKP__BACKUP__BACKUP_PAYLOAD__INIT;
	Nkp__Backup__BackupVersion *vs = calloc(p->n_versions, sizeof(*vs));
	Nkp__Backup__BackupVersion **vps = calloc(p->n_versions, sizeof(*vps));
	uint8_t *keys = sodium_malloc(p->n_versions * NKP_KEY_BYTES);
	uint8_t *buf;
	nkp_err err = NKP_ERR_NOMEM;

	if (vs == NULL || vps == NULL || keys == NULL) {
		goto free_arrays;
	}
	pack_versions(p, vs, vps, keys);
	msg.provider_id.data = (uint8_t *)p->id;
	msg.provider_id.len = NKP_ID_BYTES;
	msg.name = (char *)p->name;
	msg.n_versions = p->n_versions;
	msg.versions = vps;
	msg.tpm_only = p->tpm_only;
	msg.exported_unix = nkpi_now();
	*outlen = nkp__backup__backup_payload__get_packed_size(&msg);
	buf = sodium_malloc(*outlen);
	if (buf == NULL) {
		err = NKP_ERR_NOMEM;
		goto free_arrays;
	}
	nkp__backup__backup_payload__pack(&msg, buf);
	*out = buf;
	err = NKP_OK;
free_arrays:
	sodium_free(keys);
	free(vps);
	free(vs);
	return err;
}

/* Serialized BackupHeader (no secret) in malloc memory. */
static nkp_err pack_header(const nkp_provider_backup *p, const nkp_backup_params *prm,
			   const uint8_t salt[static SALT_BYTES], uint8_t **out, size_t *outlen)
{
	Nkp__Backup__BackupHeader msg = NKP__BACKUP__BACKUP_HEADER__INIT;

	msg.kdf_alg = BACKUP_KDF_ALG;
	msg.opslimit = prm->opslimit;
	msg.memlimit = prm->memlimit;
	msg.salt.data = (uint8_t *)salt;
	msg.salt.len = SALT_BYTES;
	msg.provider_id.data = (uint8_t *)p->id;
	msg.provider_id.len = NKP_ID_BYTES;
	msg.provider_name = (char *)p->name;
	*outlen = nkp__backup__backup_header__get_packed_size(&msg);
	*out = malloc(*outlen);
	if (*out == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__backup__backup_header__pack(&msg, *out);
	return NKP_OK;
}

/* Serialized BackupBody in malloc memory. */
static nkp_err pack_body(const uint8_t *hdr, size_t hdrlen, const pw_keys *k, const uint8_t *pt,
			 size_t ptlen, uint8_t **out, size_t *outlen)
{
	Nkp__Backup__BackupBody msg = NKP__BACKUP__BACKUP_BODY__INIT;
	uint8_t ver[HASH_BYTES];
	uint8_t nonce[NKP_NONCE_BYTES];
	uint8_t *ct = malloc(ptlen + NKP_TAG_BYTES);
	nkp_err err = NKP_OK;

	if (ct == NULL) {
		return NKP_ERR_NOMEM;
	}
	verifier(k->check, hdr, hdrlen, ver);
	randombytes_buf(nonce, sizeof(nonce));
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, pt, ptlen, hdr, hdrlen, NULL,
						       nonce, nkpi_key_bytes(k->enc)) != 0) {
		err = NKP_ERR_CRYPTO;
		goto free_ct;
	}
	msg.header.data = (uint8_t *)hdr;
	msg.header.len = hdrlen;
	msg.verifier.data = ver;
	msg.verifier.len = HASH_BYTES;
	msg.nonce.data = nonce;
	msg.nonce.len = NKP_NONCE_BYTES;
	msg.ciphertext.data = ct;
	msg.ciphertext.len = ptlen + NKP_TAG_BYTES;
	*outlen = nkp__backup__backup_body__get_packed_size(&msg);
	*out = malloc(*outlen);
	if (*out == NULL) {
		err = NKP_ERR_NOMEM;
		goto free_ct;
	}
	nkp__backup__backup_body__pack(&msg, *out);
free_ct:
	free(ct);
	return err;
}

static nkp_err pack_file(uint8_t *body, size_t bodylen, uint8_t **out, size_t *outlen)
{
	Nkp__Backup__BackupFile msg = NKP__BACKUP__BACKUP_FILE__INIT;
	uint8_t sum[HASH_BYTES];
	size_t n;

	checksum(body, bodylen, sum);
	msg.format_version = NKP_BACKUP_FORMAT_VERSION;
	msg.body.data = body;
	msg.body.len = bodylen;
	msg.checksum.data = sum;
	msg.checksum.len = HASH_BYTES;
	n = nkp__backup__backup_file__get_packed_size(&msg);
	if (n > NKP_BACKUP_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	*out = malloc(n);
	if (*out == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__backup__backup_file__pack(&msg, *out);
	*outlen = n;
	return NKP_OK;
}

static bool export_args_ok(const nkp_provider_backup *p, const char *pw, size_t pwlen,
			   const nkp_backup_params *prm, uint8_t **out, size_t *outlen)
{
	return p != NULL && pw != NULL && pwlen > 0 && pwlen <= crypto_pwhash_PASSWD_MAX &&
	       out != NULL && outlen != NULL && name_check(p->name) == NKP_OK && versions_ok(p) &&
	       params_ok(prm->opslimit, prm->memlimit);
}

nkp_err nkp_backup_export(const nkp_provider_backup *p, const char *password, size_t pwlen,
			  const nkp_backup_params *params, uint8_t **out, size_t *outlen)
{
	nkp_backup_params prm = params != NULL ? *params : nkp_backup_params_moderate();
	uint8_t salt[SALT_BYTES];
	uint8_t *pt = NULL, *hdr = NULL, *body = NULL;
	size_t ptlen = 0, hdrlen = 0, bodylen = 0;
	pw_keys k = {NULL, NULL};
	nkp_err err;

	if (!export_args_ok(p, password, pwlen, &prm, out, outlen)) {
		return NKP_ERR_INVALID;
	}
	err = pack_payload(p, &pt, &ptlen);
	if (err != NKP_OK) {
		return err;
	}
	randombytes_buf(salt, sizeof(salt));
	err = pack_header(p, &prm, salt, &hdr, &hdrlen);
	if (err != NKP_OK) {
		goto free_pt;
	}
	err = pw_keys_derive(password, pwlen, salt, prm.opslimit, prm.memlimit, &k);
	if (err != NKP_OK) {
		goto free_hdr;
	}
	err = pack_body(hdr, hdrlen, &k, pt, ptlen, &body, &bodylen);
	if (err != NKP_OK) {
		goto fini_keys;
	}
	err = pack_file(body, bodylen, out, outlen);
	free(body);
fini_keys:
	pw_keys_fini(&k);
free_hdr:
	free(hdr);
free_pt:
	sodium_free(pt);
	return err;
}

/* ---- import ---- */

/* Parsed outer layers; the body and header are not secret. */
typedef struct parsed {
	Nkp__Backup__BackupFile *file;
	Nkp__Backup__BackupBody *body;
	Nkp__Backup__BackupHeader *hdr;
} parsed;

static void parsed_fini(parsed *ps)
{
	if (ps->hdr != NULL) {
		nkp__backup__backup_header__free_unpacked(ps->hdr, NULL);
	}
	if (ps->body != NULL) {
		nkp__backup__backup_body__free_unpacked(ps->body, NULL);
	}
	if (ps->file != NULL) {
		nkp__backup__backup_file__free_unpacked(ps->file, NULL);
	}
}

/* File layer: version, then the checksum, before anything else. */
static nkp_err parse_file(const uint8_t *buf, size_t len, parsed *ps)
{
	uint8_t sum[HASH_BYTES];
	Nkp__Backup__BackupFile *f;

	f = nkp__backup__backup_file__unpack(NULL, len, buf);
	if (f == NULL) {
		return NKP_ERR_PARSE;
	}
	ps->file = f;
	if (f->format_version != NKP_BACKUP_FORMAT_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&f->base)) {
		return NKP_ERR_PARSE;
	}
	if (f->checksum.len != HASH_BYTES) {
		return NKP_ERR_DAMAGED;
	}
	checksum(f->body.data, f->body.len, sum);
	if (sodium_memcmp(sum, f->checksum.data, HASH_BYTES) != 0) {
		return NKP_ERR_DAMAGED;
	}
	return NKP_OK;
}

static nkp_err check_header(const Nkp__Backup__BackupHeader *h)
{
	if (nkpi_has_unknown(&h->base)) {
		return NKP_ERR_PARSE;
	}
	if (h->kdf_alg != BACKUP_KDF_ALG) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (!params_ok(h->opslimit, h->memlimit) || h->salt.len != SALT_BYTES ||
	    h->provider_id.len != NKP_ID_BYTES) {
		return NKP_ERR_PARSE;
	}
	return name_check(h->provider_name);
}

/* Body and header layers: everything that can be checked without the
 * password, so a hostile file costs no Argon2id work. */
static nkp_err parse_body(parsed *ps)
{
	Nkp__Backup__BackupBody *b;

	b = nkp__backup__backup_body__unpack(NULL, ps->file->body.len, ps->file->body.data);
	if (b == NULL) {
		return NKP_ERR_PARSE;
	}
	ps->body = b;
	if (nkpi_has_unknown(&b->base) || b->verifier.len != HASH_BYTES ||
	    b->nonce.len != NKP_NONCE_BYTES || b->ciphertext.len < NKP_TAG_BYTES) {
		return NKP_ERR_PARSE;
	}
	ps->hdr = nkp__backup__backup_header__unpack(NULL, b->header.len, b->header.data);
	if (ps->hdr == NULL) {
		return NKP_ERR_PARSE;
	}
	return check_header(ps->hdr);
}

/* Verifier, then AEAD. *out: the serialized payload, sodium_malloc'd. */
static nkp_err open_body(const parsed *ps, const char *pw, size_t pwlen, uint8_t **out,
			 size_t *outlen)
{
	const Nkp__Backup__BackupBody *b = ps->body;
	size_t ptlen = b->ciphertext.len - NKP_TAG_BYTES;
	uint8_t ver[HASH_BYTES];
	pw_keys k = {NULL, NULL};
	uint8_t *pt;
	nkp_err err;

	err = pw_keys_derive(pw, pwlen, ps->hdr->salt.data, ps->hdr->opslimit,
			     (size_t)ps->hdr->memlimit, &k);
	if (err != NKP_OK) {
		return err;
	}
	verifier(k.check, b->header.data, b->header.len, ver);
	if (sodium_memcmp(ver, b->verifier.data, HASH_BYTES) != 0) {
		err = NKP_ERR_WRONG_PASSWORD;
		goto fini_keys;
	}
	pt = sodium_malloc(ptlen > 0 ? ptlen : 1);
	if (pt == NULL) {
		err = NKP_ERR_NOMEM;
		goto fini_keys;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    pt, NULL, NULL, b->ciphertext.data, b->ciphertext.len, b->header.data,
		    b->header.len, b->nonce.data, nkpi_key_bytes(k.enc)) != 0) {
		sodium_free(pt);
		err = NKP_ERR_AUTH;
		goto fini_keys;
	}
	*out = pt;
	*outlen = ptlen;
fini_keys:
	pw_keys_fini(&k);
	return err;
}

static nkp_err fill_versions(const Nkp__Backup__BackupPayload *pl, nkp_provider_backup *p)
{
	for (size_t i = 0; i < pl->n_versions; i++) {
		const Nkp__Backup__BackupVersion *v = pl->versions[i];
		nkp_err err;

		if (nkpi_has_unknown(&v->base) || v->key.len != NKP_KEY_BYTES ||
		    !state_ok(v->state)) {
			return NKP_ERR_PARSE;
		}
		p->versions[i].version = v->version;
		p->versions[i].state = (nkp_version_state)v->state;
		p->versions[i].created_unix = v->created_unix;
		err = nkp_key_from_bytes(v->key.data, &p->versions[i].key);
		if (err != NKP_OK) {
			return err;
		}
	}
	return versions_ok(p) ? NKP_OK : NKP_ERR_PARSE;
}

/* Builds the result from the payload, which must agree with the header. */
static nkp_err to_backup(const Nkp__Backup__BackupPayload *pl, const Nkp__Backup__BackupHeader *h,
			 nkp_provider_backup **out)
{
	nkp_provider_backup *p = NULL;
	nkp_err err;

	if (nkpi_has_unknown(&pl->base) || pl->provider_id.len != NKP_ID_BYTES ||
	    memcmp(pl->provider_id.data, h->provider_id.data, NKP_ID_BYTES) != 0 ||
	    pl->name == NULL || strcmp(pl->name, h->provider_name) != 0 || pl->n_versions == 0) {
		return NKP_ERR_PARSE;
	}
	if (pl->n_versions > NKP_BACKUP_MAX_VERSIONS) {
		return NKP_ERR_TOO_LARGE;
	}
	err = nkp_provider_backup_new(pl->n_versions, &p);
	if (err != NKP_OK) {
		return err;
	}
	memcpy(p->id, pl->provider_id.data, NKP_ID_BYTES);
	/* name_check() on the header bounded the length. */
	memcpy(p->name, pl->name, strlen(pl->name) + 1);
	p->tpm_only = pl->tpm_only;
	p->exported_unix = pl->exported_unix;
	err = fill_versions(pl, p);
	if (err != NKP_OK) {
		nkp_provider_backup_free(p);
		return err;
	}
	*out = p;
	return NKP_OK;
}

nkp_err nkp_backup_import(const uint8_t *buf, size_t len, const char *password, size_t pwlen,
			  nkp_provider_backup **out)
{
	parsed ps = {NULL, NULL, NULL};
	Nkp__Backup__BackupPayload *pl;
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	nkp_err err;

	if ((buf == NULL && len > 0) || password == NULL || pwlen > crypto_pwhash_PASSWD_MAX ||
	    out == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_BACKUP_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	if (len == 0) {
		return NKP_ERR_PARSE;
	}
	err = parse_file(buf, len, &ps);
	if (err == NKP_OK) {
		err = parse_body(&ps);
	}
	if (err == NKP_OK) {
		err = open_body(&ps, password, pwlen, &pt, &ptlen);
	}
	if (err != NKP_OK) {
		goto fini_parsed;
	}
	pl = nkp__backup__backup_payload__unpack(&nkpi_wiping_allocator, ptlen, pt);
	if (pl == NULL) {
		err = NKP_ERR_PARSE;
		goto free_pt;
	}
	err = to_backup(pl, ps.hdr, out);
	nkp__backup__backup_payload__free_unpacked(pl, &nkpi_wiping_allocator);
free_pt:
	sodium_free(pt);
fini_parsed:
	parsed_fini(&ps);
	return err;
}

nkp_err nkp_backup_peek(const uint8_t *buf, size_t len, nkp_backup_params *out)
{
	parsed ps = {NULL, NULL, NULL};
	nkp_err err;

	if ((buf == NULL && len > 0) || out == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_BACKUP_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	if (len == 0) {
		return NKP_ERR_PARSE;
	}
	err = parse_file(buf, len, &ps);
	if (err == NKP_OK) {
		err = parse_body(&ps);
	}
	if (err == NKP_OK) {
		out->opslimit = ps.hdr->opslimit;
		out->memlimit = (size_t)ps.hdr->memlimit;
	}
	parsed_fini(&ps);
	return err;
}
