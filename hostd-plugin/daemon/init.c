/* nkp-hostd init --state-dir DIR --service-key KEY */
#include <getopt.h>
#include <stdio.h>

#include <nkp/channel.h>
#include <nkp/nkp.h>

#include "daemon.h"

static void init_usage(void)
{
	printf("Usage: %s init --state-dir DIR --service-key KEY [--tpm TCTI | --seal-key FILE]\n\n"
	       "Makes the host identity in DIR (created 0700, with a sealing key)\n"
	       "and pins the management service's public key KEY (base64). On an existing\n"
	       "DIR the host identity is kept and KEY re-pinned. Prints the host public key\n"
	       "as the last line. Refused (exit 1) while nkp-hostd runs on DIR.\n\n"
	       "  --tpm TCTI        seal the sealing key to this TPM (DIR/seal.tpm; the\n"
	       "                    clear key never touches disk), e.g. device:/dev/tpmrm0\n"
	       "  --seal-key FILE   the sealing key is FILE (a systemd credential, made\n"
	       "                    first: docs/INSTALL.md). Neither: DIR/seal.key, a plain file "
	       "that\n"
	       "                    protects nothing (status: keys at rest: not protected)\n",
	       PROG);
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
	char b64[45];
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
	err = nkp_hostd_init(&cfg, service, host);
	if (err == NKP_ERR_STATE) {
		return state_dir_busy("init", cfg.state_dir);
	}
	if (err != NKP_OK) {
		fprintf(stderr, "%s init: %s: %s\n", PROG, cfg.state_dir, nkp_strerror(err));
		return 1;
	}
	nkp_pubkey_to_base64(host, b64);
	printf("%s\n", b64);
	return 0;
}
