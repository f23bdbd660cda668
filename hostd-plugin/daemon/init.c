/* nkp-hostd init --state-dir DIR --service-key KEY */
#include <getopt.h>
#include <stdio.h>

#include <nkp/channel.h>
#include <nkp/nkp.h>

#include "daemon.h"
#include "token.h"
#include "tpm.h"

static void init_usage(void)
{
	printf("Usage: %s init --state-dir DIR --service-key KEY [--tpm TCTI | --seal-key FILE]\n\n"
	       "Makes the host identity in DIR (created 0700, with a sealing key)\n"
	       "and pins the management service's public key KEY (base64). On an existing\n"
	       "DIR the host identity is kept and KEY re-pinned. Prints the host's\n"
	       "enrolment token as the last line, for nkpctl host add --public-key: the\n"
	       "host public key, and with --tpm a '.' and the TPM's attestation key\n"
	       "(KEY.AK), which the service pins to check this host's quotes. Refused\n"
	       "(exit 1) while nkp-hostd runs on DIR.\n\n"
	       "  --tpm TCTI        seal the sealing key to this TPM (DIR/seal.tpm; the\n"
	       "                    clear key never touches disk), e.g. device:/dev/tpmrm0;\n"
	       "                    its attestation key goes in the token\n"
	       "  --seal-key FILE   the sealing key is FILE (a systemd credential, made\n"
	       "                    first: docs/INSTALL.md). Neither: DIR/seal.key, a plain file "
	       "that\n"
	       "                    protects nothing (status: keys at rest: not protected)\n",
	       PROG);
}

_Static_assert(NKPI_TPM_PUBLIC_MAX <= NKPI_TOKEN_AK_MAX, "every attestation key fits a token");

/* The attestation key of the TPM at `tcti` (a primary key: the same TPM
 * always gives the same one, nothing is stored). 0 on success; else says
 * why on stderr and returns 1. */
static int ak_public(const char *tcti, uint8_t ak[static NKPI_TPM_PUBLIC_MAX], size_t *ak_len)
{
	nkpi_tpm *t = NULL;
	nkp_err err = nkpi_tpm_open(tcti, &t);

	if (err == NKP_OK) {
		err = nkpi_tpm_ak_public(t, ak, ak_len);
	}
	nkpi_tpm_close(t);
	if (err != NKP_OK) {
		fprintf(stderr,
			"%s init: cannot read the attestation key of the TPM at '%s': %s; nothing "
			"was changed\n",
			PROG, tcti, nkp_strerror(err));
		return 1;
	}
	return 0;
}

int init_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state-dir", required_argument, NULL, 'd'},
		{"service-key", required_argument, NULL, 'k'},
		{"seal-key", required_argument, NULL, 's'},
		{"tpm", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	nkp_hostd_config cfg = {0};
	const char *key = NULL;
	uint8_t service[NKP_PUBKEY_BYTES], host[NKP_PUBKEY_BYTES];
	uint8_t ak[NKPI_TPM_PUBLIC_MAX];
	size_t ak_len = 0;
	char token[NKPI_TOKEN_MAX];
	nkp_err err;
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			cfg.state_dir = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 's':
			cfg.seal_key_path = optarg;
			break;
		case 't':
			cfg.tpm = optarg;
			break;
		case 'h':
			init_usage();
			return 0;
		default:
			return usage_error("init", "unknown or incomplete option '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind != argc) {
		return usage_error("init", "unexpected argument '%s'", argv[optind]);
	}
	if (cfg.state_dir == NULL || key == NULL) {
		return usage_error("init", "--state-dir and --service-key are required");
	}
	if (cfg.tpm != NULL && cfg.seal_key_path != NULL) {
		return usage_error("init", "--tpm and --seal-key exclude each other");
	}
	if (nkp_pubkey_from_base64(key, service) != NKP_OK) {
		return usage_error("init", "--service-key is not a base64 public key of 32 bytes");
	}
	if (nkp_init() != NKP_OK || nkp_harden_process() != NKP_OK) {
		fprintf(stderr, "%s init: cannot initialise the crypto library\n", PROG);
		return 1;
	}
	/* Before DIR is touched: a TPM that cannot give its key changes
	 * nothing. */
	if (cfg.tpm != NULL && ak_public(cfg.tpm, ak, &ak_len) != 0) {
		return 1;
	}
	err = nkp_hostd_init(&cfg, service, host);
	if (err == NKP_ERR_STATE) {
		return state_dir_busy("init", cfg.state_dir);
	}
	if (err != NKP_OK) {
		fprintf(stderr, "%s init: %s: %s\n", PROG, cfg.state_dir, nkp_strerror(err));
		return 1;
	}
	if (nkpi_token_format(host, ak_len != 0 ? ak : NULL, ak_len, token) != NKP_OK) {
		fprintf(stderr, "%s init: the TPM's attestation key is over %u bytes\n", PROG,
			NKPI_TOKEN_AK_MAX);
		return 1;
	}
	printf("%s\n", token);
	return 0;
}
