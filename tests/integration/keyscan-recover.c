/* keyscan-recover BACKUP PASSWORD_FILE: prints, one per line in lowercase
 * hex, the primary key of every version a provider backup holds. For the
 * key-scan integration test only, which keeps the output in memory (a
 * shell variable) and looks for those bytes in every file the daemons
 * wrote. The password file is read as nkpctl reads it (one trailing
 * newline dropped). Exit 0 on success, 1 with one line on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/nkp.h>

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

	if (argc != 3) {
		fprintf(stderr, "usage: keyscan-recover BACKUP PASSWORD_FILE\n");
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
		fprintf(stderr, "keyscan-recover: cannot open %s: %s\n", argv[1], nkp_strerror(err));
		goto out_free;
	}
	rc = print_keys(b);
	nkp_provider_backup_free(b);
out_free:
	if (pw != NULL) {
		sodium_memzero(pw, pwlen);
	}
	free(pw);
	free(file);
	return rc;
}
