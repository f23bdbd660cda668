/* fuzz-keylog: a host's keys.nkp.log (hostd-plugin/plugin/persist.c) through the
 * real loader, nkp_hostd_open(), after a fixed snapshot keys.nkp. The
 * first input byte selects how the rest becomes the log file:
 *   even: the rest is the whole log file, as is (framing, torn and
 *         unauthentic records);
 *   odd:  the rest is a list of records, each u8 SLOT, u16le LEN, LEN
 *         bytes of HostKeys plaintext (the last one takes what is left);
 *         the harness seals each under the fixed seal key with the label
 *         of log record SLOT & 0x7f of the snapshot's epoch (of another
 *         epoch when SLOT & 0x80) and frames it as persist.c does, so
 *         records get past authentication and reach the inner parsing
 *         and the log walk's ordering checks.
 * Seeds are logs of genuine records, torn, reordered and stale ones, in
 * both forms (gen-corpus.c). */
#include "fuzz-keylog.h"

#include <sys/stat.h>

#include <nkp/hostd.h>

static char *dir;
static char keys_path[4096], log_path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");

	if (fp == NULL || (len > 0 && fwrite(buf, 1, len, fp) != len) || fclose(fp) != 0) {
		perror(path);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_hostd_config cfg = {0};
	nkp_identity *svc;
	uint8_t seal[NKP_KEY_BYTES], host_pub[NKP_PUBKEY_BYTES], *snap = NULL;
	char path[4096];
	size_t len = 0;

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	snprintf(path, sizeof(path), "%s/seal.key", dir);
	memset(seal, FZ_SEAL_BYTE, sizeof(seal));
	put_file(path, seal, sizeof(seal));
	if (chmod(path, 0600) != 0) {
		abort();
	}
	svc = fz_identity(FZ_SERVICE_SECRET);
	cfg.state_dir = dir;
	fz_check(nkp_hostd_init(&cfg, nkp_identity_public(svc), host_pub), "host init");
	nkp_identity_free(svc);
	snprintf(keys_path, sizeof(keys_path), "%s/keys.nkp", dir);
	snprintf(log_path, sizeof(log_path), "%s/keys.nkp.log", dir);
	fz_host_keys("nkp-host-keys", 1, 1, &snap, &len);
	put_file(keys_path, snap, len);
	free(snap);
	return 0;
}

/* The odd form: seals the records of `data` into a log file in *out. */
static size_t seal_records(const uint8_t *data, size_t size, uint8_t **out)
{
	nkp_key *seal = fz_key(FZ_SEAL_BYTE);
	uint8_t *log = NULL, *rec;
	size_t len = 0, rlen, n;
	char label[128];

	while (size >= 3) {
		uint8_t slot = data[0];

		n = (size_t)data[1] | (size_t)data[2] << 8;
		data += 3;
		size -= 3;
		n = n < size ? n : size;
		if (slot & 0x80u) {
			snprintf(label, sizeof(label),
				 "nkp-host-keys-log/00000000000000000000000000000000/%u",
				 (unsigned)(slot & 0x7fu));
		} else {
			fz_log_label(label, sizeof(label), slot);
		}
		fz_check(nkp_seal_bytes(seal, label, data, n, &rec, &rlen), "seal record");
		log = realloc(log, len + 4 + rlen);
		if (log == NULL) {
			abort();
		}
		for (int i = 0; i < 4; i++) {
			log[len + (size_t)i] = (uint8_t)(rlen >> (8 * i));
		}
		memcpy(log + len + 4, rec, rlen);
		len += 4 + rlen;
		free(rec);
		data += n;
		size -= n;
	}
	nkp_key_free(seal);
	*out = log;
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "fuzz"};
	nkp_hostd *h = NULL;
	uint8_t *log = NULL;
	size_t len;

	if (size == 0) {
		return 0;
	}
	if (data[0] & 1u) {
		len = seal_records(data + 1, size - 1, &log);
		put_file(log_path, log, len);
		free(log);
	} else {
		put_file(log_path, data + 1, size - 1);
	}
	if (nkp_hostd_open(&cfg, &h) == NKP_OK) {
		nkp_hostd_close(h);
	}
	return 0;
}
