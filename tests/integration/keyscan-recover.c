/* keyscan-recover BACKUP PASSWORD_FILE [KEYSAFE...]: prints, one per line
 * in lowercase hex, the primary key of every version a provider backup
 * holds, then the KEK of every KEYSAFE sealed under one of them (opened as
 * nkp/lib/keysafe.c seals it: nkp_wrap_open under nkp_primary_kek_key() with
 * "nkp-keysafe" || u32le(format_version) || body as associated data); a
 * keysafe of another provider is skipped. For the key-scan integration
 * test only, which keeps the output in memory (a shell variable) and looks
 * for those bytes in every file the daemons wrote. The password file is
 * read as nkpctl reads it (one trailing newline dropped). Exit 0 on
 * success, 1 with one line on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "keysafe.pb-c.h"

#define KEK_AD_LABEL "nkp-keysafe"

static void print_hex(const uint8_t *raw)
{
	char hex[NKP_KEY_BYTES * 2 + 1];

	sodium_bin2hex(hex, sizeof(hex), raw, NKP_KEY_BYTES);
	printf("%s\n", hex);
	sodium_memzero(hex, sizeof(hex));
}

/* Prints the KEK of the keysafe at `path` if `b` holds its primary.
 * Returns 0 (printed or another provider's), 1 on error. */
static int print_kek(const nkp_provider_backup *b, const char *path)
{
	uint8_t *file = NULL, *ad = NULL, *kek = NULL;
	size_t flen = 0, adlen, label = sizeof(KEK_AD_LABEL) - 1;
	Nkp__Keysafe__KeysafeFile *f = NULL;
	Nkp__Keysafe__KeysafeBody *body = NULL;
	nkp_primary *p = NULL;
	nkp_err err;
	int rc = 1;

	if ((err = nkp_file_read(path, NKP_KEYSAFE_MAX_FILE, &file, &flen)) != NKP_OK) {
		fprintf(stderr, "keyscan-recover: cannot read %s: %s\n", path, nkp_strerror(err));
		return 1;
	}
	f = nkp__keysafe__keysafe_file__unpack(NULL, flen, file);
	if (f == NULL || f->kek_nonce.len != NKP_NONCE_BYTES ||
	    f->wrapped_kek.len != NKP_KEY_BYTES + NKP_TAG_BYTES ||
	    (body = nkp__keysafe__keysafe_body__unpack(NULL, f->body.len, f->body.data)) == NULL ||
	    body->provider_id.len != NKP_ID_BYTES) {
		fprintf(stderr, "keyscan-recover: %s is not a keysafe\n", path);
		goto out;
	}
	if (memcmp(body->provider_id.data, b->id, NKP_ID_BYTES) != 0) {
		rc = 0;
		goto out;
	}
	for (size_t i = 0; i < b->n_versions && p == NULL; i++) {
		if (b->versions[i].version == body->primary_version &&
		    nkp_primary_new(b->id, body->primary_version, b->versions[i].key, &p) !=
			    NKP_OK) {
			fprintf(stderr, "keyscan-recover: cannot make a primary\n");
			goto out;
		}
	}
	if (p == NULL) {
		fprintf(stderr, "keyscan-recover: %s: version %u is not in the backup\n", path,
			(unsigned)body->primary_version);
		goto out;
	}
	adlen = label + 4 + f->body.len;
	ad = malloc(adlen);
	kek = sodium_malloc(NKP_KEY_BYTES);
	if (ad == NULL || kek == NULL) {
		fprintf(stderr, "keyscan-recover: out of memory\n");
		goto out;
	}
	memcpy(ad, KEK_AD_LABEL, label);
	for (int i = 0; i < 4; i++) {
		ad[label + (size_t)i] = (uint8_t)(f->format_version >> (8 * i));
	}
	memcpy(ad + label + 4, f->body.data, f->body.len);
	err = nkp_wrap_open(nkp_primary_kek_key(p), ad, adlen, f->kek_nonce.data,
			    f->wrapped_kek.data, f->wrapped_kek.len, kek);
	if (err != NKP_OK) {
		fprintf(stderr, "keyscan-recover: the KEK of %s does not open: %s\n", path,
			nkp_strerror(err));
		goto out;
	}
	print_hex(kek);
	rc = 0;
out:
	if (kek != NULL) {
		sodium_free(kek);
	}
	free(ad);
	nkp_primary_free(p);
	if (body != NULL) {
		nkp__keysafe__keysafe_body__free_unpacked(body, NULL);
	}
	if (f != NULL) {
		nkp__keysafe__keysafe_file__free_unpacked(f, NULL);
	}
	free(file);
	return rc;
}

static int print_keys(const nkp_provider_backup *b)
{
	uint8_t *raw = sodium_malloc(NKP_KEY_BYTES);
	char *hex = sodium_malloc(NKP_KEY_BYTES * 2 + 1);
	int rc = 1;

	if (raw == NULL || hex == NULL) {
		fprintf(stderr, "keyscan-recover: out of memory\n");
		goto out_free;
	}
	for (size_t i = 0; i < b->n_versions; i++) {
		nkp_key_export(b->versions[i].key, raw);
		sodium_bin2hex(hex, NKP_KEY_BYTES * 2 + 1, raw, NKP_KEY_BYTES);
		printf("%s\n", hex);
	}
	rc = fflush(stdout) == 0 ? 0 : 1;
out_free:
	sodium_free(hex);
	sodium_free(raw);
	return rc;
}

int main(int argc, char **argv)
{
	uint8_t *file = NULL, *pw = NULL;
	size_t flen = 0, pwlen = 0;
	nkp_provider_backup *b = NULL;
	nkp_err err;
	int rc = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: keyscan-recover BACKUP PASSWORD_FILE [KEYSAFE...]\n");
		return 2;
	}
	if (nkp_init() != NKP_OK) {
		fprintf(stderr, "keyscan-recover: cannot initialise libsodium\n");
		return 1;
	}
	if ((err = nkp_file_read(argv[1], NKP_BACKUP_MAX_FILE, &file, &flen)) != NKP_OK ||
	    (err = nkp_file_read(argv[2], 4096, &pw, &pwlen)) != NKP_OK) {
		fprintf(stderr, "keyscan-recover: cannot read its input: %s\n", nkp_strerror(err));
		goto out_free;
	}
	if (pwlen > 0 && pw[pwlen - 1] == '\n') {
		pwlen--;
	}
	err = nkp_backup_import(file, flen, (const char *)pw, pwlen, &b);
	if (err != NKP_OK) {
		fprintf(stderr, "keyscan-recover: cannot open %s: %s\n", argv[1],
			nkp_strerror(err));
		goto out_free;
	}
	rc = print_keys(b);
	for (int i = 3; i < argc && rc == 0; i++) {
		rc = print_kek(b, argv[i]);
	}
	rc = rc == 0 && fflush(stdout) == 0 ? 0 : 1;
	nkp_provider_backup_free(b);
out_free:
	if (pw != NULL) {
		sodium_memzero(pw, pwlen);
	}
	free(pw);
	free(file);
	return rc;
}
