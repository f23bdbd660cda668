/* Provider backup files.
 *
 * Besides the API round trips, these tests rebuild the format from its
 * description in nkp/lib/backup.c with libsodium and protobuf-c directly: to
 * forge files that are well formed under the right password but carry bad
 * contents, and to decode the known-answer vector independently. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "backup.pb-c.h"
#include "internal.h"

#include "vectors.h"

#define PW "correct horse battery staple"
#define PWLEN (sizeof(PW) - 1)

static const char backup_ctx[8] = {'n', 'k', 'p', 'b', 'k', 'u', 'p', '1'};

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
}

TestSuite(backup, .init = setup);

/* ---- helpers ---- */

static nkp_provider_backup *make_provider(size_t n)
{
	nkp_provider_backup *p = NULL;
	uint8_t b[NKP_KEY_BYTES];

	cr_assert_eq(nkp_provider_backup_new(n, &p), NKP_OK);
	for (size_t i = 0; i < NKP_ID_BYTES; i++) {
		p->id[i] = (uint8_t)(0xa0 + i);
	}
	strcpy(p->name, "cluster-kp");
	p->tpm_only = true;
	for (size_t v = 0; v < n; v++) {
		for (size_t i = 0; i < sizeof(b); i++) {
			b[i] = (uint8_t)(v * 32 + i);
		}
		p->versions[v].version = (uint32_t)(v + 1);
		p->versions[v].state = v + 1 == n ? NKP_VERSION_ACTIVE : NKP_VERSION_DECRYPT_ONLY;
		p->versions[v].created_unix = 1700000000u + v;
		cr_assert_eq(nkp_key_from_bytes(b, &p->versions[v].key), NKP_OK);
	}
	return p;
}

static void export_min(const nkp_provider_backup *p, uint8_t **out, size_t *outlen)
{
	nkp_backup_params prm = nkp_backup_params_min();

	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, out, outlen), NKP_OK);
}

static void test_checksum(const uint8_t *body, size_t len, uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)"nkp-backup-checksum", 19);
	crypto_generichash_update(&st, body, len);
	crypto_generichash_final(&st, out, 32);
}

/* A backup file taken apart, to be changed and put back together. */
typedef struct dis {
	Nkp__Backup__BackupFile *file;
	Nkp__Backup__BackupBody *body;
	Nkp__Backup__BackupHeader *hdr;
} dis;

static void dissect(const uint8_t *buf, size_t len, dis *d)
{
	d->file = nkp__backup__backup_file__unpack(NULL, len, buf);
	cr_assert_not_null(d->file);
	d->body = nkp__backup__backup_body__unpack(NULL, d->file->body.len, d->file->body.data);
	cr_assert_not_null(d->body);
	d->hdr =
		nkp__backup__backup_header__unpack(NULL, d->body->header.len, d->body->header.data);
	cr_assert_not_null(d->hdr);
}

static void dis_free(dis *d)
{
	nkp__backup__backup_header__free_unpacked(d->hdr, NULL);
	nkp__backup__backup_body__free_unpacked(d->body, NULL);
	nkp__backup__backup_file__free_unpacked(d->file, NULL);
}

static void set_bytes(ProtobufCBinaryData *f, uint8_t *data, size_t len)
{
	free(f->data);
	f->data = data;
	f->len = len;
}

/* Repacks header into body into file, with a freshly computed checksum.
 * *out has 16 spare bytes for appending. */
static void reassemble(dis *d, uint8_t **out, size_t *outlen)
{
	size_t n = nkp__backup__backup_header__get_packed_size(d->hdr);
	uint8_t *b = malloc(n);

	nkp__backup__backup_header__pack(d->hdr, b);
	set_bytes(&d->body->header, b, n);
	n = nkp__backup__backup_body__get_packed_size(d->body);
	b = malloc(n);
	nkp__backup__backup_body__pack(d->body, b);
	set_bytes(&d->file->body, b, n);
	b = malloc(32);
	test_checksum(d->file->body.data, d->file->body.len, b);
	set_bytes(&d->file->checksum, b, 32);
	*outlen = nkp__backup__backup_file__get_packed_size(d->file);
	*out = malloc(*outlen + 16);
	nkp__backup__backup_file__pack(d->file, *out);
}

/* Encrypts a serialized payload the way the format says, under PW and the
 * minimum Argon2id cost, with a header naming `id` and `name`. */
static void forge(const uint8_t *pl, size_t pllen, const uint8_t id[16], const char *name,
		  uint8_t **out, size_t *outlen)
{
	Nkp__Backup__BackupHeader h = NKP__BACKUP__BACKUP_HEADER__INIT;
	Nkp__Backup__BackupBody b = NKP__BACKUP__BACKUP_BODY__INIT;
	Nkp__Backup__BackupFile f = NKP__BACKUP__BACKUP_FILE__INIT;
	uint8_t salt[16] = {1, 2, 3}, nonce[24] = {4, 5, 6};
	uint8_t master[32], enc[32], check[32], ver[32], sum[32];
	uint8_t *hdr, *ct = malloc(pllen + 16), *body;
	size_t hdrlen, bodylen;

	h.kdf_alg = crypto_pwhash_ALG_ARGON2ID13;
	h.opslimit = nkp_backup_params_min().opslimit;
	h.memlimit = nkp_backup_params_min().memlimit;
	h.salt = (ProtobufCBinaryData){16, salt};
	h.provider_id = (ProtobufCBinaryData){16, (uint8_t *)id};
	h.provider_name = (char *)name;
	hdrlen = nkp__backup__backup_header__get_packed_size(&h);
	hdr = malloc(hdrlen);
	nkp__backup__backup_header__pack(&h, hdr);
	cr_assert_eq(crypto_pwhash(master, 32, PW, PWLEN, salt, h.opslimit, h.memlimit,
				   crypto_pwhash_ALG_ARGON2ID13),
		     0);
	crypto_kdf_derive_from_key(enc, 32, 1, backup_ctx, master);
	crypto_kdf_derive_from_key(check, 32, 2, backup_ctx, master);
	crypto_generichash(ver, 32, hdr, hdrlen, check, 32);
	crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, pl, pllen, hdr, hdrlen, NULL, nonce,
						   enc);
	b.header = (ProtobufCBinaryData){hdrlen, hdr};
	b.verifier = (ProtobufCBinaryData){32, ver};
	b.nonce = (ProtobufCBinaryData){24, nonce};
	b.ciphertext = (ProtobufCBinaryData){pllen + 16, ct};
	bodylen = nkp__backup__backup_body__get_packed_size(&b);
	body = malloc(bodylen);
	nkp__backup__backup_body__pack(&b, body);
	test_checksum(body, bodylen, sum);
	f.format_version = 1;
	f.body = (ProtobufCBinaryData){bodylen, body};
	f.checksum = (ProtobufCBinaryData){32, sum};
	*outlen = nkp__backup__backup_file__get_packed_size(&f);
	*out = malloc(*outlen);
	nkp__backup__backup_file__pack(&f, *out);
	free(body);
	free(hdr);
	free(ct);
}

/* A payload of n versions, each (i+1, state, key byte i), for forging. */
typedef struct fake_payload {
	Nkp__Backup__BackupPayload msg;
	Nkp__Backup__BackupVersion *vs;
	Nkp__Backup__BackupVersion **vps;
	uint8_t key[32];
	uint8_t id[16];
} fake_payload;

static void fake_init(fake_payload *fp, size_t n)
{
	Nkp__Backup__BackupPayload init = NKP__BACKUP__BACKUP_PAYLOAD__INIT;

	fp->msg = init;
	memset(fp->key, 0x5a, sizeof(fp->key));
	memset(fp->id, 0x11, sizeof(fp->id));
	fp->vs = calloc(n, sizeof(*fp->vs));
	fp->vps = calloc(n, sizeof(*fp->vps));
	for (size_t i = 0; i < n; i++) {
		Nkp__Backup__BackupVersion v = NKP__BACKUP__BACKUP_VERSION__INIT;

		v.version = (uint32_t)(i + 1);
		v.state = i == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_DECRYPT_ONLY;
		v.key = (ProtobufCBinaryData){32, fp->key};
		fp->vs[i] = v;
		fp->vps[i] = &fp->vs[i];
	}
	fp->msg.provider_id = (ProtobufCBinaryData){16, fp->id};
	fp->msg.name = (char *)"forged";
	fp->msg.n_versions = n;
	fp->msg.versions = fp->vps;
}

static const uint8_t hdr_id[16] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
				   0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11};

static nkp_err fake_import(fake_payload *fp, const uint8_t *extra, size_t extralen)
{
	size_t n = nkp__backup__backup_payload__get_packed_size(&fp->msg);
	uint8_t *pl = malloc(n + extralen), *file;
	nkp_provider_backup *out = NULL;
	size_t flen;
	nkp_err err;

	nkp__backup__backup_payload__pack(&fp->msg, pl);
	if (extralen > 0) {
		memcpy(pl + n, extra, extralen);
	}
	forge(pl, n + extralen, hdr_id, "forged", &file, &flen);
	err = nkp_backup_import(file, flen, PW, PWLEN, &out);
	cr_assert_eq(out == NULL, err != NKP_OK);
	nkp_provider_backup_free(out);
	free(file);
	free(pl);
	free(fp->vps);
	free(fp->vs);
	return err;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- round trips ---- */

Test(backup, export_then_import_restores_every_field_and_key)
{
	nkp_provider_backup *p = make_provider(3), *q = NULL;
	uint8_t *buf;
	size_t len;

	nkpi_set_clock(1712345678);
	export_min(p, &buf, &len);
	cr_assert_eq(nkp_backup_import(buf, len, PW, PWLEN, &q), NKP_OK);
	cr_assert_arr_eq(q->id, p->id, NKP_ID_BYTES);
	cr_assert_str_eq(q->name, p->name);
	cr_assert_eq(q->tpm_only, true);
	cr_assert_eq(q->exported_unix, 1712345678);
	cr_assert_eq(q->n_versions, 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(q->versions[i].version, p->versions[i].version);
		cr_assert_eq(q->versions[i].state, p->versions[i].state);
		cr_assert_eq(q->versions[i].created_unix, p->versions[i].created_unix);
		cr_assert(nkp_key_equal(q->versions[i].key, p->versions[i].key));
	}
	nkp_provider_backup_free(q);
	nkp_provider_backup_free(p);
	nkp_provider_backup_free(NULL);
	free(buf);
}

Test(backup, moderate_params_are_the_default_and_round_trip)
{
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	nkp_backup_params m = nkp_backup_params_moderate();
	uint8_t *buf;
	size_t len;
	dis d;

	cr_assert_eq(m.opslimit, crypto_pwhash_argon2id_OPSLIMIT_MODERATE);
	cr_assert_eq(m.memlimit, crypto_pwhash_argon2id_MEMLIMIT_MODERATE);
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, NULL, &buf, &len), NKP_OK);
	dissect(buf, len, &d);
	cr_assert_eq(d.hdr->opslimit, m.opslimit);
	cr_assert_eq(d.hdr->memlimit, m.memlimit);
	dis_free(&d);
	cr_assert_eq(nkp_backup_import(buf, len, PW, PWLEN, &q), NKP_OK);
	nkp_provider_backup_free(q);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, header_names_the_provider_in_clear)
{
	nkp_provider_backup *p = make_provider(2);
	uint8_t *buf;
	size_t len;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	cr_assert_eq(d.file->format_version, NKP_BACKUP_FORMAT_VERSION);
	cr_assert_eq(d.hdr->kdf_alg, crypto_pwhash_ALG_ARGON2ID13);
	cr_assert_eq(d.hdr->provider_id.len, NKP_ID_BYTES);
	cr_assert_arr_eq(d.hdr->provider_id.data, p->id, NKP_ID_BYTES);
	cr_assert_str_eq(d.hdr->provider_name, "cluster-kp");
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, file_never_holds_a_clear_key)
{
	nkp_provider_backup *p = make_provider(4);
	uint8_t clear[NKP_KEY_BYTES];
	uint8_t *buf;
	size_t len;

	export_min(p, &buf, &len);
	for (size_t v = 0; v < p->n_versions; v++) {
		nkp_key_export(p->versions[v].key, clear);
		for (size_t i = 0; i + 8 <= len; i++) {
			for (size_t j = 0; j + 8 <= sizeof(clear); j++) {
				cr_assert(memcmp(buf + i, clear + j, 8) != 0,
					  "key bytes of version %zu in the file", v);
			}
		}
	}
	sodium_memzero(clear, sizeof(clear));
	nkp_provider_backup_free(p);
	free(buf);
}

/* ---- damage, tampering, passwords ---- */

Test(backup, wrong_password_is_wrong_password)
{
	nkp_provider_backup *p = make_provider(2), *q = NULL;
	uint8_t *buf;
	size_t len;

	export_min(p, &buf, &len);
	cr_assert_eq(nkp_backup_import(buf, len, "Correct horse battery staple", PWLEN, &q),
		     NKP_ERR_WRONG_PASSWORD);
	cr_assert_eq(nkp_backup_import(buf, len, PW, PWLEN - 1, &q), NKP_ERR_WRONG_PASSWORD);
	cr_assert_eq(nkp_backup_import(buf, len, "", 0, &q), NKP_ERR_WRONG_PASSWORD);
	cr_assert_null(q);
	nkp_provider_backup_free(p);
	free(buf);
}

static const uint8_t *find(const uint8_t *hay, size_t hlen, const uint8_t *needle, size_t nlen)
{
	for (size_t i = 0; nlen <= hlen && i <= hlen - nlen; i++) {
		if (memcmp(hay + i, needle, nlen) == 0) {
			return hay + i;
		}
	}
	return NULL;
}

static bool inside(size_t i, const uint8_t *base, const uint8_t *field, size_t flen)
{
	return field != NULL && i >= (size_t)(field - base) && i < (size_t)(field - base) + flen;
}

/* The checksum is checked before any password work, so every flip is
 * cheap to try: all of them are refused, and every flip in the body or the
 * checksum reads as a damaged file. */
Test(backup, every_single_byte_flip_is_refused_as_damage)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};
	nkp_provider_backup *p = make_provider(3), *q = NULL;
	const uint8_t *body, *sum;
	uint8_t *buf;
	size_t len;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	body = find(buf, len, d.file->body.data, d.file->body.len);
	sum = find(buf, len, d.file->checksum.data, 32);
	cr_assert(body != NULL && sum != NULL);
	for (size_t i = 0; i < len; i++) {
		bool payload = inside(i, buf, body, d.file->body.len) || inside(i, buf, sum, 32);

		for (size_t m = 0; m < sizeof(masks); m++) {
			nkp_err err;

			buf[i] ^= masks[m];
			err = nkp_backup_import(buf, len, PW, PWLEN, &q);
			buf[i] ^= masks[m];
			cr_assert_null(q);
			if (payload) {
				cr_assert_eq(err, NKP_ERR_DAMAGED, "flip 0x%02x at %zu gave %s",
					     masks[m], i, nkp_strerror(err));
			} else {
				cr_assert(err == NKP_ERR_DAMAGED || err == NKP_ERR_PARSE ||
						  err == NKP_ERR_FORMAT_VERSION,
					  "flip 0x%02x at %zu gave %s", masks[m], i,
					  nkp_strerror(err));
			}
		}
	}
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, every_truncation_is_refused)
{
	nkp_provider_backup *p = make_provider(2), *q = NULL;
	uint8_t *buf;
	size_t len;

	export_min(p, &buf, &len);
	for (size_t n = 0; n < len; n++) {
		nkp_err err = nkp_backup_import(buf, n, PW, PWLEN, &q);

		cr_assert(err == NKP_ERR_PARSE || err == NKP_ERR_DAMAGED,
			  "truncation to %zu gave %s", n, nkp_strerror(err));
	}
	cr_assert_null(q);
	nkp_provider_backup_free(p);
	free(buf);
}

/* Forged contents under a recomputed checksum: the checksum only catches
 * accidents; the AEAD catches forgery, and says so (not "wrong password"). */
Test(backup, forged_ciphertext_with_valid_checksum_is_auth)
{
	nkp_provider_backup *p = make_provider(2), *q = NULL;
	uint8_t *buf, *forged;
	size_t len, flen;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	for (size_t i = 0; i < d.body->ciphertext.len; i += 7) {
		d.body->ciphertext.data[i] ^= 0x01;
		reassemble(&d, &forged, &flen);
		cr_assert_eq(nkp_backup_import(forged, flen, PW, PWLEN, &q), NKP_ERR_AUTH,
			     "ciphertext byte %zu", i);
		d.body->ciphertext.data[i] ^= 0x01;
		free(forged);
	}
	d.body->nonce.data[3] ^= 0x10;
	reassemble(&d, &forged, &flen);
	cr_assert_eq(nkp_backup_import(forged, flen, PW, PWLEN, &q), NKP_ERR_AUTH);
	free(forged);
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

/* The header is bound by the verifier: a rewritten header is refused (it
 * reads as a wrong password, as a changed salt must). */
Test(backup, rewritten_header_with_valid_checksum_is_refused)
{
	nkp_provider_backup *p = make_provider(2), *q = NULL;
	uint8_t *buf, *forged;
	size_t len, flen;
	char *orig;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	orig = d.hdr->provider_name;
	d.hdr->provider_name = (char *)"other-kp";
	reassemble(&d, &forged, &flen);
	d.hdr->provider_name = orig;
	cr_assert_eq(nkp_backup_import(forged, flen, PW, PWLEN, &q), NKP_ERR_WRONG_PASSWORD);
	free(forged);
	d.hdr->salt.data[0] ^= 1;
	reassemble(&d, &forged, &flen);
	cr_assert_eq(nkp_backup_import(forged, flen, PW, PWLEN, &q), NKP_ERR_WRONG_PASSWORD);
	free(forged);
	d.body->verifier.data[31] ^= 1;
	reassemble(&d, &forged, &flen);
	cr_assert_eq(nkp_backup_import(forged, flen, PW, PWLEN, &q), NKP_ERR_WRONG_PASSWORD);
	free(forged);
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, unknown_format_version_or_kdf_is_refused)
{
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	uint8_t *buf, *x;
	size_t len, xlen;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	d.file->format_version = 2;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_FORMAT_VERSION);
	free(x);
	d.file->format_version = 1;
	d.hdr->kdf_alg = crypto_pwhash_ALG_ARGON2I13;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_FORMAT_VERSION);
	free(x);
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, unknown_fields_are_refused_at_every_layer)
{
	static const uint8_t unknown[] = {0x78, 0x01}; /* field 15, varint 1 */
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	uint8_t *buf, *x;
	size_t len, xlen;
	dis d;

	export_min(p, &buf, &len);
	buf = realloc(buf, len + 2);
	memcpy(buf + len, unknown, 2);
	cr_assert_eq(nkp_backup_import(buf, len + 2, PW, PWLEN, &q), NKP_ERR_PARSE);
	dissect(buf, len, &d);
	/* Unknown field in the body, with a checksum over it. */
	reassemble(&d, &x, &xlen);
	free(x);
	d.file->body.data = realloc(d.file->body.data, d.file->body.len + 2);
	memcpy(d.file->body.data + d.file->body.len, unknown, 2);
	d.file->body.len += 2;
	test_checksum(d.file->body.data, d.file->body.len, d.file->checksum.data);
	xlen = nkp__backup__backup_file__get_packed_size(d.file);
	x = malloc(xlen);
	nkp__backup__backup_file__pack(d.file, x);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	/* Unknown field in the header. */
	{
		size_t n = nkp__backup__backup_header__get_packed_size(d.hdr);
		uint8_t *h = malloc(n + 2);

		nkp__backup__backup_header__pack(d.hdr, h);
		memcpy(h + n, unknown, 2);
		set_bytes(&d.body->header, h, n + 2);
		n = nkp__backup__backup_body__get_packed_size(d.body);
		h = malloc(n);
		nkp__backup__backup_body__pack(d.body, h);
		set_bytes(&d.file->body, h, n);
		test_checksum(d.file->body.data, d.file->body.len, d.file->checksum.data);
	}
	xlen = nkp__backup__backup_file__get_packed_size(d.file);
	x = malloc(xlen);
	nkp__backup__backup_file__pack(d.file, x);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

/* A hostile file must cost neither memory nor time: absurd Argon2id costs
 * are refused before any hashing. */
Test(backup, hostile_argon2_params_are_refused_fast)
{
	static const struct {
		uint64_t ops, mem;
	} bad[] = {
		{1, (uint64_t)1 << 40},	   {1, (uint64_t)1 << 31}, {1, UINT64_MAX}, {1, 1024},
		{(uint64_t)1 << 32, 8192}, {UINT64_MAX, 8192},	   {1000, 8192},    {0, 8192},
	};
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	uint8_t *buf, *x;
	size_t len, xlen;
	double t0 = now_s();
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		d.hdr->opslimit = bad[i].ops;
		d.hdr->memlimit = bad[i].mem;
		reassemble(&d, &x, &xlen);
		cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE,
			     "ops %" PRIu64 " mem %" PRIu64, bad[i].ops, bad[i].mem);
		free(x);
	}
	cr_assert_lt(now_s() - t0, 2.0, "refusal must not run Argon2id");
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, bad_sizes_in_the_header_and_body_are_parse_errors)
{
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	uint8_t *buf, *x;
	size_t len, xlen;
	dis d;

	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	d.hdr->salt.len = 8;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.hdr->salt.len = 16;
	d.hdr->provider_id.len = 15;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.hdr->provider_id.len = 16;
	d.body->nonce.len = 12;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.body->nonce.len = 24;
	d.body->verifier.len = 16;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.body->verifier.len = 32;
	d.body->ciphertext.len = 15;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, bad_provider_names_in_the_header_are_refused)
{
	char longname[NKP_PROVIDER_MAX_NAME + 2];
	nkp_provider_backup *p = make_provider(1), *q = NULL;
	uint8_t *buf, *x;
	size_t len, xlen;
	char *orig;
	dis d;

	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	export_min(p, &buf, &len);
	dissect(buf, len, &d);
	orig = d.hdr->provider_name;
	d.hdr->provider_name = longname;
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_TOO_LARGE);
	free(x);
	d.hdr->provider_name = (char *)"";
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.hdr->provider_name = (char *)"evil\x1b[2J";
	reassemble(&d, &x, &xlen);
	cr_assert_eq(nkp_backup_import(x, xlen, PW, PWLEN, &q), NKP_ERR_PARSE);
	free(x);
	d.hdr->provider_name = orig;
	cr_assert_null(q);
	dis_free(&d);
	nkp_provider_backup_free(p);
	free(buf);
}

Test(backup, oversized_or_empty_input_is_refused)
{
	nkp_provider_backup *q = NULL;
	uint8_t *big = calloc(1, NKP_BACKUP_MAX_FILE + 1);

	cr_assert_eq(nkp_backup_import(big, NKP_BACKUP_MAX_FILE + 1, PW, PWLEN, &q),
		     NKP_ERR_TOO_LARGE);
	cr_assert_neq(nkp_backup_import(big, 0, PW, PWLEN, &q), NKP_OK);
	cr_assert_eq(nkp_backup_import((const uint8_t *)"garbage!", 8, PW, PWLEN, &q),
		     NKP_ERR_PARSE);
	cr_assert_eq(nkp_backup_import(NULL, 5, PW, PWLEN, &q), NKP_ERR_INVALID);
	cr_assert_eq(nkp_backup_import(big, 5, NULL, 0, &q), NKP_ERR_INVALID);
	cr_assert_null(q);
	free(big);
}

/* ---- contents forged under the right password ---- */

Test(backup, forged_file_under_the_documented_construction_imports)
{
	fake_payload fp;

	fake_init(&fp, 2);
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_OK);
}

Test(backup, too_many_versions_are_refused)
{
	fake_payload fp;

	fake_init(&fp, NKP_BACKUP_MAX_VERSIONS + 1);
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_TOO_LARGE);
	fake_init(&fp, NKP_BACKUP_MAX_VERSIONS);
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_OK);
	fake_init(&fp, 0);
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE);
}

Test(backup, bad_versions_in_the_payload_are_refused)
{
	fake_payload fp;

	fake_init(&fp, 2);
	fp.vs[1].state = 0;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "state 0");
	fake_init(&fp, 2);
	fp.vs[1].state = 4;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "state 4");
	fake_init(&fp, 2);
	fp.vs[1].version = 1;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "duplicate version");
	fake_init(&fp, 2);
	fp.vs[1].version = 0;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "version 0");
	fake_init(&fp, 2);
	fp.vs[1].state = NKP_VERSION_ACTIVE;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "two active");
	fake_init(&fp, 2);
	fp.vs[1].key.len = 31;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "short key");
	fake_init(&fp, 2);
	fp.vs[1].key.len = 0;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE, "no key");
}

Test(backup, payload_that_disagrees_with_its_header_is_refused)
{
	static const uint8_t unknown[] = {0x78, 0x01};
	fake_payload fp;

	fake_init(&fp, 1);
	fp.msg.name = (char *)"renamed";
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE);
	fake_init(&fp, 1);
	fp.msg.provider_id.data[0] = 0x12;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE);
	fake_init(&fp, 1);
	fp.msg.provider_id.len = 8;
	cr_assert_eq(fake_import(&fp, NULL, 0), NKP_ERR_PARSE);
	fake_init(&fp, 1);
	cr_assert_eq(fake_import(&fp, unknown, sizeof(unknown)), NKP_ERR_PARSE);
	fake_init(&fp, 1);
	cr_assert_eq(fake_import(&fp, (const uint8_t *)"\x0a\xff", 2), NKP_ERR_PARSE,
		     "garbage payload");
}

/* ---- export arguments ---- */

Test(backup, export_refuses_bad_contents_and_arguments)
{
	nkp_backup_params prm = nkp_backup_params_min(), bad = prm;
	nkp_provider_backup *p = make_provider(2), *empty = NULL;
	nkp_key *held;
	uint8_t *buf = NULL;
	size_t len;

	cr_assert_eq(nkp_backup_export(p, PW, 0, &prm, &buf, &len), NKP_ERR_INVALID, "empty pw");
	cr_assert_eq(nkp_backup_export(p, NULL, 3, &prm, &buf, &len), NKP_ERR_INVALID);
	cr_assert_eq(nkp_backup_export(NULL, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	bad.memlimit = (size_t)1 << 31;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &bad, &buf, &len), NKP_ERR_INVALID);
	bad = prm;
	bad.opslimit = 0;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &bad, &buf, &len), NKP_ERR_INVALID);
	p->name[0] = '\0';
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	strcpy(p->name, "ok");
	p->versions[0].state = NKP_VERSION_ACTIVE;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	p->versions[0].state = (nkp_version_state)9;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	p->versions[0].state = NKP_VERSION_STAGED;
	p->versions[0].version = 2;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	p->versions[0].version = 1;
	held = p->versions[0].key;
	p->versions[0].key = NULL;
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	p->versions[0].key = held;
	cr_assert_eq(nkp_provider_backup_new(0, &empty), NKP_OK);
	strcpy(empty->name, "empty");
	cr_assert_eq(nkp_backup_export(empty, PW, PWLEN, &prm, &buf, &len), NKP_ERR_INVALID);
	cr_assert_null(buf);
	cr_assert_eq(nkp_backup_export(p, PW, PWLEN, &prm, &buf, &len), NKP_OK);
	free(buf);
	cr_assert_eq(nkp_provider_backup_new(NKP_BACKUP_MAX_VERSIONS + 1, &empty), NKP_ERR_INVALID);
	nkp_provider_backup_free(empty);
	nkp_provider_backup_free(p);
}

static void vec_version(int nth, uint32_t *ver, nkp_version_state *state, uint64_t *created,
			uint8_t key[32])
{
	char line[256], sname[32], khex[80];
	unsigned long long c;
	unsigned v;

	cr_assert(vec_nth("version", nth, line, sizeof(line)));
	cr_assert_eq(sscanf(line, "%u %31s %llu %79s", &v, sname, &c, khex), 4, "%s", line);
	cr_assert(nkp_version_state_parse(sname, state), "%s", sname);
	*ver = v;
	*created = c;
	hex_exact(khex, key, 32);
}

static nkp_provider_backup *vec_provider(void)
{
	nkp_provider_backup *p = NULL;
	uint8_t key[32];
	size_t n = 0;
	char line[256];

	while (vec_nth("version", (int)n, line, sizeof(line))) {
		n++;
	}
	cr_assert_eq(nkp_provider_backup_new(n, &p), NKP_OK);
	vec_hex("provider_id", p->id, NKP_ID_BYTES);
	vec_str("provider_name", p->name, sizeof(p->name));
	p->tpm_only = vec_u64("tpm_only") != 0;
	for (size_t i = 0; i < n; i++) {
		vec_version((int)i, &p->versions[i].version, &p->versions[i].state,
			    &p->versions[i].created_unix, key);
		cr_assert_eq(nkp_key_from_bytes(key, &p->versions[i].key), NKP_OK);
	}
	sodium_memzero(key, sizeof(key));
	return p;
}

static void check_vec_payload(const Nkp__Backup__BackupPayload *pl, const nkp_provider_backup *p)
{
	uint8_t key[32];

	cr_assert_eq(pl->base.n_unknown_fields, 0);
	cr_assert_arr_eq(pl->provider_id.data, p->id, NKP_ID_BYTES);
	cr_assert_str_eq(pl->name, p->name);
	cr_assert_eq(pl->tpm_only, p->tpm_only);
	cr_assert_eq(pl->exported_unix, vec_u64("clock"));
	cr_assert_eq(pl->n_versions, p->n_versions);
	for (size_t i = 0; i < pl->n_versions; i++) {
		cr_assert_eq(pl->versions[i]->version, p->versions[i].version);
		cr_assert_eq(pl->versions[i]->state, (uint32_t)p->versions[i].state);
		cr_assert_eq(pl->versions[i]->created_unix, p->versions[i].created_unix);
		nkp_key_export(p->versions[i].key, key);
		cr_assert_eq(pl->versions[i]->key.len, 32);
		cr_assert_arr_eq(pl->versions[i]->key.data, key, 32);
	}
	sodium_memzero(key, sizeof(key));
}

/* Derives the password keys as the format says; checks them against the
 * recorded ones. */
static void vec_keys(const Nkp__Backup__BackupHeader *h, uint8_t enc[32], uint8_t check[32])
{
	uint8_t master[32], want[32];
	char pw[128];

	vec_str("password", pw, sizeof(pw));
	cr_assert_eq(crypto_pwhash(master, 32, pw, strlen(pw), h->salt.data, h->opslimit,
				   (size_t)h->memlimit, crypto_pwhash_ALG_ARGON2ID13),
		     0);
	crypto_kdf_derive_from_key(enc, 32, 1, backup_ctx, master);
	crypto_kdf_derive_from_key(check, 32, 2, backup_ctx, master);
	if (regen_vectors()) {
		print_hex("enc_key", enc, 32);
		print_hex("check_key", check, 32);
	}
	vec_hex("enc_key", want, 32);
	cr_assert_arr_eq(enc, want, 32);
	vec_hex("check_key", want, 32);
	cr_assert_arr_eq(check, want, 32);
}

static void check_vec_header(const Nkp__Backup__BackupHeader *h, const nkp_provider_backup *p)
{
	uint8_t salt[16];

	cr_assert_eq(h->base.n_unknown_fields, 0);
	cr_assert_eq(h->kdf_alg, crypto_pwhash_ALG_ARGON2ID13);
	cr_assert_eq(h->opslimit, vec_u64("opslimit"));
	cr_assert_eq(h->memlimit, vec_u64("memlimit"));
	cr_assert_eq(h->salt.len, 16);
	if (regen_vectors()) {
		print_hex("salt", h->salt.data, 16);
	}
	vec_hex("salt", salt, 16);
	cr_assert_arr_eq(h->salt.data, salt, 16);
	cr_assert_arr_eq(h->provider_id.data, p->id, NKP_ID_BYTES);
	cr_assert_str_eq(h->provider_name, p->name);
}

/* Opens backup-v1.bin with libsodium alone, following proto/backup.proto
 * and the construction described in nkp/lib/backup.c. */
static void decode_backup_vector(const nkp_provider_backup *p)
{
	uint8_t *bin = NULL, sum[32], enc[32], check[32], ver[32], nonce[24], pt[4096];
	Nkp__Backup__BackupPayload *pl;
	size_t binlen = 0, ptlen;
	dis d;

	cr_assert_eq(nkp_file_read(vec_path("backup-v1.bin"), 1 << 20, &bin, &binlen), NKP_OK);
	dissect(bin, binlen, &d);
	cr_assert_eq(d.file->format_version, vec_u64("format_version"));
	test_checksum(d.file->body.data, d.file->body.len, sum);
	cr_assert_arr_eq(d.file->checksum.data, sum, 32);
	check_vec_header(d.hdr, p);
	vec_keys(d.hdr, enc, check);
	crypto_generichash(ver, 32, d.body->header.data, d.body->header.len, check, 32);
	cr_assert_arr_eq(d.body->verifier.data, ver, 32);
	if (regen_vectors()) {
		print_hex("nonce", d.body->nonce.data, 24);
		print_hex("verifier", ver, 32);
		print_hex("checksum", sum, 32);
	}
	vec_hex("nonce", nonce, 24);
	cr_assert_arr_eq(d.body->nonce.data, nonce, 24);
	vec_hex("verifier", ver, 32);
	cr_assert_arr_eq(d.body->verifier.data, ver, 32);
	vec_hex("checksum", sum, 32);
	cr_assert_arr_eq(d.file->checksum.data, sum, 32);
	ptlen = d.body->ciphertext.len - 16;
	cr_assert_lt(ptlen, sizeof(pt));
	cr_assert_eq(crypto_aead_xchacha20poly1305_ietf_decrypt(
			     pt, NULL, NULL, d.body->ciphertext.data, d.body->ciphertext.len,
			     d.body->header.data, d.body->header.len, d.body->nonce.data, enc),
		     0);
	pl = nkp__backup__backup_payload__unpack(NULL, ptlen, pt);
	cr_assert_not_null(pl);
	check_vec_payload(pl, p);
	nkp__backup__backup_payload__free_unpacked(pl, NULL);
	sodium_memzero(pt, sizeof(pt));
	dis_free(&d);
	free(bin);
}

TestSuite(backup_vector);

Test(backup_vector, backup_v1_matches_the_checked_in_vector)
{
	nkp_provider_backup *p, *q = NULL;
	nkp_backup_params prm;
	uint8_t *buf = NULL;
	size_t len = 0;
	char pw[128];

	vec_load("backup-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	randombytes_set_implementation(&det_rng);
	cr_assert_eq(nkp_init(), NKP_OK);
	nkpi_set_clock(vec_u64("clock"));
	vec_str("password", pw, sizeof(pw));
	prm.opslimit = vec_u64("opslimit");
	prm.memlimit = (size_t)vec_u64("memlimit");
	p = vec_provider();
	rng_calls = 0;
	cr_assert_eq(nkp_backup_export(p, pw, strlen(pw), &prm, &buf, &len), NKP_OK);
	vec_check_bin("backup-v1.bin", buf, len);
	decode_backup_vector(p);
	cr_assert_eq(nkp_backup_import(buf, len, pw, strlen(pw), &q), NKP_OK);
	cr_assert_eq(q->exported_unix, vec_u64("clock"));
	cr_assert_eq(q->n_versions, p->n_versions);
	for (size_t i = 0; i < p->n_versions; i++) {
		cr_assert(nkp_key_equal(q->versions[i].key, p->versions[i].key));
	}
	nkp_provider_backup_free(q);
	nkp_provider_backup_free(p);
	free(buf);
	free(vec_text);
}
