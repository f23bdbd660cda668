/* fuzz-backup: provider backup files (proto/backup.proto) through
 * nkp_backup_import() with the generator's password.
 *
 * Each input is imported twice: as it is, and "repaired": its BackupFile,
 * BackupBody and BackupHeader parsed here, Argon2id parameters above the
 * harness cap lowered to libsodium's minimum, and the unkeyed checksum
 * recomputed. A fuzzer cannot invert BLAKE2b, so without the repair almost
 * every mutation would stop at the checksum; with it, mutations reach the
 * header and body checks. The cap keeps hostile parameters (the format
 * allows up to opslimit 8 and 1 GiB) from making runs slow: the raw import
 * only reaches Argon2id for an intact checksum, which only unmutated seeds
 * (made with nkp_backup_params_min()) have. */
#include "fuzz-util.h"

#include "backup.pb-c.h"

#define CHECKSUM_PREFIX "nkp-backup-checksum"
#define CAP_OPSLIMIT 1u
#define CAP_MEMLIMIT (64u << 10)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

static void import(const uint8_t *buf, size_t len)
{
	nkp_provider_backup *p = NULL;

	if (nkp_backup_import(buf, len, FZ_PASSWORD, strlen(FZ_PASSWORD), &p) == NKP_OK) {
		nkp_provider_backup_free(p);
	}
}

static uint8_t *pack_header(Nkp__Backup__BackupHeader *h, size_t *len)
{
	uint8_t *b;

	*len = nkp__backup__backup_header__get_packed_size(h);
	b = malloc(*len + 1);
	if (b != NULL) {
		nkp__backup__backup_header__pack(h, b);
	}
	return b;
}

/* Lowers costly parameters in the body's header; returns the new body
 * (malloc'd) or NULL to keep the body as it is. */
static uint8_t *cap_params(Nkp__Backup__BackupBody *b, size_t *len)
{
	Nkp__Backup__BackupHeader *h;
	uint8_t *hb = NULL, *out = NULL;
	size_t hlen;
	ProtobufCBinaryData old;

	h = nkp__backup__backup_header__unpack(NULL, b->header.len, b->header.data);
	if (h == NULL) {
		return NULL;
	}
	if (h->opslimit > CAP_OPSLIMIT || h->memlimit > CAP_MEMLIMIT) {
		h->opslimit = crypto_pwhash_argon2id_OPSLIMIT_MIN;
		h->memlimit = crypto_pwhash_argon2id_MEMLIMIT_MIN;
		hb = pack_header(h, &hlen);
	}
	nkp__backup__backup_header__free_unpacked(h, NULL);
	if (hb == NULL) {
		return NULL;
	}
	old = b->header;
	b->header.data = hb;
	b->header.len = hlen;
	*len = nkp__backup__backup_body__get_packed_size(b);
	out = malloc(*len + 1);
	if (out != NULL) {
		nkp__backup__backup_body__pack(b, out);
	}
	b->header = old;
	free(hb);
	return out;
}

static void repaired(const uint8_t *data, size_t size)
{
	Nkp__Backup__BackupFile *f = nkp__backup__backup_file__unpack(NULL, size, data);
	Nkp__Backup__BackupBody *b = NULL;
	uint8_t sum[32], *body = NULL, *out = NULL;
	ProtobufCBinaryData old_body, old_sum;
	size_t blen = 0, len;
	crypto_generichash_state st;

	if (f == NULL) {
		return;
	}
	b = nkp__backup__backup_body__unpack(NULL, f->body.len, f->body.data);
	if (b != NULL) {
		body = cap_params(b, &blen);
		nkp__backup__backup_body__free_unpacked(b, NULL);
	}
	old_body = f->body;
	old_sum = f->checksum;
	if (body != NULL) {
		f->body.data = body;
		f->body.len = blen;
	}
	crypto_generichash_init(&st, NULL, 0, sizeof(sum));
	crypto_generichash_update(&st, (const uint8_t *)CHECKSUM_PREFIX, strlen(CHECKSUM_PREFIX));
	crypto_generichash_update(&st, f->body.data, f->body.len);
	crypto_generichash_final(&st, sum, sizeof(sum));
	f->checksum.data = sum;
	f->checksum.len = sizeof(sum);
	len = nkp__backup__backup_file__get_packed_size(f);
	out = malloc(len + 1);
	if (out != NULL) {
		nkp__backup__backup_file__pack(f, out);
		import(out, len);
		free(out);
	}
	f->body = old_body;
	f->checksum = old_sum;
	free(body);
	nkp__backup__backup_file__free_unpacked(f, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > NKP_BACKUP_MAX_FILE + 1) {
		return 0;
	}
	import(data, size);
	repaired(data, size);
	return 0;
}
