/* nkpctl provider backup | restore. The password is read from a file,
 * kept in sodium_malloc memory, sent over the 0600 admin socket and
 * wiped; the backup file is written 0600.
 *
 * A backup is two requests: nkpd makes the file image and hands it out
 * without counting it; nkpctl writes it (fsync, rename), reads it back,
 * checks that it is the same bytes and that it opens with the password
 * into the provider nkpd named, and only then confirms it (the provider id
 * and the BLAKE2b-256 of the image). nkpd marks the provider backed up on
 * that confirmation alone, so a file that never reached the disk intact
 * never counts. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl.h"

static const char backup_usage[] =
	"usage: nkpctl [--socket PATH] [--json] provider backup NAME --out FILE "
	"--password-file FILE\n"
	"       nkpctl [--socket PATH] [--json] provider restore FILE --password-file FILE "
	"[--allow-weak]\n"
	"\n"
	"  backup   export the provider (id, name, every version) to FILE (mode 0600),\n"
	"           encrypted under the password in the password file (Argon2id ->\n"
	"           XChaCha20-Poly1305); the file is read back and opened before the\n"
	"           provider counts as backed up; a provider is usable for new VM keys\n"
	"           once backed up\n"
	"  restore  import a backup: same id and versions, into this service; merged\n"
	"           into the provider if it exists. A backup whose password hash is\n"
	"           below libsodium's interactive cost is refused unless --allow-weak\n"
	"The password file holds the password; one trailing newline is ignored.\n";

static int parse(ctl *c, int argc, char **argv, const char *cmd, const char **out,
		 const char **pwfile, bool *allow_weak)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"out", required_argument, NULL, 'o'},
		{"password-file", required_argument, NULL, 'p'},
		{"allow-weak", no_argument, NULL, 'w'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(backup_usage, stdout);
			return 0;
		} else if (opt == 'o' && out != NULL) {
			*out = optarg;
		} else if (opt == 'p') {
			*pwfile = optarg;
		} else if (opt == 'w' && allow_weak != NULL) {
			*allow_weak = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage(cmd, "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage(cmd, out != NULL ? "one provider NAME is required"
						  : "one backup FILE is required");
	}
	if ((out != NULL && *out == NULL) || *pwfile == NULL) {
		return ctl_usage(cmd, out != NULL
					      ? "--out FILE and --password-file FILE are required"
					      : "--password-file FILE is required");
	}
	return -1;
}

/* The file as written, read back: the same bytes, and it opens with the
 * password into the provider and versions nkpd said it holds. */
static int check_written(const char *path, const Nkp__Admin__BackupResult *b, const char *pw,
			 size_t pwlen)
{
	nkp_provider_backup *p = NULL;
	uint8_t *back = NULL;
	size_t len = 0;
	uint32_t maxv = 0;
	nkp_err err = nkp_file_read(path, NKP_BACKUP_MAX_FILE, &back, &len);
	int rc = 1;

	if (err != NKP_OK) {
		return ctl_fail("provider backup", "cannot read back %s: %s", path,
				nkp_strerror(err));
	}
	if (len != b->file.len || memcmp(back, b->file.data, len) != 0) {
		ctl_fail("provider backup", "%s does not hold what was written", path);
		goto free_back;
	}
	err = nkp_backup_import(back, len, pw, pwlen, &p);
	if (err != NKP_OK) {
		ctl_fail("provider backup", "%s does not open with the password: %s", path,
			 nkp_strerror(err));
		goto free_back;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		maxv = p->versions[i].version > maxv ? p->versions[i].version : maxv;
	}
	if (memcmp(p->id, b->provider_id.data, NKP_ID_BYTES) != 0 || maxv != b->max_version) {
		ctl_fail("provider backup",
			 "%s holds another provider or other versions than "
			 "nkpd announced",
			 path);
		goto free_p;
	}
	rc = 0;
free_p:
	nkp_provider_backup_free(p);
free_back:
	free(back);
	return rc;
}

static int confirm(const ctl *c, const Nkp__Admin__BackupResult *b)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderBackupConfirmRequest cr =
		NKP__ADMIN__PROVIDER_BACKUP_CONFIRM_REQUEST__INIT;
	uint8_t digest[32];
	ctl_resp *r = NULL;

	crypto_generichash(digest, sizeof(digest), b->file.data, b->file.len, NULL, 0);
	cr.provider_id = b->provider_id;
	cr.digest.data = digest;
	cr.digest.len = sizeof(digest);
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP_CONFIRM;
	q.provider_backup_confirm = &cr;
	if (ctl_call(c, &q, "provider backup", &r) != 0) {
		return 1;
	}
	ctl_resp_free(r);
	return 0;
}

static int write_backup(const ctl *c, const char *name, const char *path, const ctl_resp *r,
			const char *pw, size_t pwlen)
{
	const Nkp__Admin__BackupResult *b = r->backup;
	nkp_err err;

	if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_BACKUP || b->file.len == 0 ||
	    b->provider_id.len != NKP_ID_BYTES) {
		return ctl_fail("provider backup", "unexpected reply from nkpd");
	}
	err = nkp_file_write_atomic(path, b->file.data, b->file.len, 0600, false, true);
	if (err != NKP_OK) {
		return ctl_fail("provider backup",
				"cannot write %s: %s; provider %s is not marked "
				"backed up: run the backup again to a writable place",
				path, nkp_strerror(err), name);
	}
	if (check_written(path, b, pw, pwlen) != 0) {
		(void)unlink(path);
		fprintf(stderr,
			"nkpctl: provider backup: %s removed; provider %s is not marked "
			"backed up: run the backup again\n",
			path, name);
		return 1;
	}
	if (confirm(c, b) != 0) {
		return 1;
	}
	if (c->json) {
		printf("{\"name\":");
		ctl_json_str(stdout, name);
		printf(",\"file\":");
		ctl_json_str(stdout, path);
		printf(",\"bytes\":%zu}\n", b->file.len);
	} else {
		printf("provider %s backed up to %s\n", name, path);
	}
	return 0;
}

int backup_main(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderBackupRequest br = NKP__ADMIN__PROVIDER_BACKUP_REQUEST__INIT;
	const char *out = NULL, *pwfile = NULL;
	char *pw = NULL;
	size_t pwlen = 0;
	ctl_resp *r = NULL;
	int rc = parse(c, argc, argv, "provider backup", &out, &pwfile, NULL);

	if (rc >= 0) {
		return rc;
	}
	if (ctl_read_password("provider backup", pwfile, &pw, &pwlen) != 0) {
		return 1;
	}
	br.name = argv[optind];
	br.password.data = (uint8_t *)pw;
	br.password.len = pwlen;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP;
	q.provider_backup = &br;
	rc = ctl_call(c, &q, "provider backup", &r);
	if (rc == 0) {
		rc = write_backup(c, br.name, out, r, pw, pwlen);
		ctl_resp_free(r);
	}
	ctl_password_free(pw, pwlen);
	return rc != 0 ? 1 : 0;
}

int restore_main(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRestoreRequest rr = NKP__ADMIN__PROVIDER_RESTORE_REQUEST__INIT;
	const char *pwfile = NULL;
	uint8_t *file = NULL;
	size_t len = 0;
	char *pw = NULL;
	size_t pwlen = 0;
	nkp_err err;
	bool allow_weak = false;
	int rc = parse(c, argc, argv, "provider restore", NULL, &pwfile, &allow_weak);

	if (rc >= 0) {
		return rc;
	}
	err = nkp_file_read(argv[optind], NKP_BACKUP_MAX_FILE, &file, &len);
	if (err != NKP_OK) {
		return ctl_fail("provider restore", "cannot read %s: %s", argv[optind],
				nkp_strerror(err));
	}
	if (ctl_read_password("provider restore", pwfile, &pw, &pwlen) != 0) {
		free(file);
		return 1;
	}
	rr.backup.data = file;
	rr.backup.len = len;
	rr.password.data = (uint8_t *)pw;
	rr.password.len = pwlen;
	rr.allow_weak = allow_weak;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RESTORE;
	q.provider_restore = &rr;
	rc = ctl_provider_reply(c, &q, "provider restore");
	ctl_password_free(pw, pwlen);
	free(file);
	return rc;
}
