/* nkpctl provider backup | restore. The password is read from a file,
 * kept in sodium_malloc memory, sent over the 0600 admin socket and
 * wiped; the backup file is written 0600. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const char backup_usage[] =
	"usage: nkpctl [--socket PATH] [--json] provider backup NAME --out FILE "
	"--password-file FILE\n"
	"       nkpctl [--socket PATH] [--json] provider restore FILE --password-file FILE\n"
	"\n"
	"  backup   export the provider (id, name, every version) to FILE (mode 0600),\n"
	"           encrypted under the password in the password file (Argon2id ->\n"
	"           XChaCha20-Poly1305); a provider is usable for new VM keys once backed up\n"
	"  restore  import a backup: same id and versions, into this service; merged\n"
	"           into the provider if it exists\n"
	"The password file holds the password; one trailing newline is ignored.\n";

static int parse(ctl *c, int argc, char **argv, const char *cmd, const char **out,
		 const char **pwfile)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"out", required_argument, NULL, 'o'},
		{"password-file", required_argument, NULL, 'p'},
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
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage(cmd, "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage(cmd, out != NULL ? "one provider NAME is required"
						  : "one backup FILE is required");
	}
	if ((out != NULL && *out == NULL) || *pwfile == NULL) {
		return ctl_usage(cmd, out != NULL ? "--out FILE and --password-file FILE are required"
						  : "--password-file FILE is required");
	}
	return -1;
}

static int write_backup(const ctl *c, const char *name, const char *path, const ctl_resp *r)
{
	nkp_err err;

	if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_BACKUP || r->backup->file.len == 0) {
		return ctl_fail("provider backup", "unexpected reply from nkpd");
	}
	err = nkp_file_write_atomic(path, r->backup->file.data, r->backup->file.len, 0600, false,
				    true);
	if (err != NKP_OK) {
		return ctl_fail("provider backup", "cannot write %s: %s (the provider is marked "
				"backed up; run backup again to a writable place)", path,
				nkp_strerror(err));
	}
	if (c->json) {
		printf("{\"name\":");
		ctl_json_str(stdout, name);
		printf(",\"file\":");
		ctl_json_str(stdout, path);
		printf(",\"bytes\":%zu}\n", r->backup->file.len);
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
	int rc = parse(c, argc, argv, "provider backup", &out, &pwfile);

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
	ctl_password_free(pw, pwlen);
	if (rc != 0) {
		return 1;
	}
	rc = write_backup(c, br.name, out, r);
	ctl_resp_free(r);
	return rc;
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
	int rc = parse(c, argc, argv, "provider restore", NULL, &pwfile);

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
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RESTORE;
	q.provider_restore = &rr;
	rc = ctl_provider_reply(c, &q, "provider restore");
	ctl_password_free(pw, pwlen);
	free(file);
	return rc;
}
