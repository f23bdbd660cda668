/* fuzz-config: the daemons' configuration files (nkp/lib/config.c) through
 * nkp_config_parse() with the union of nkpd's and nkp-hostd's keys, then
 * every typed getter on every key; seeds are the shipped defaults and a
 * few refused files (gen-corpus.c). */
#include "fuzz-util.h"

#include <nkp/config.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {"state-dir", "heartbeat", "syslog", "listen",
				   "seal-key",	"host-name", NULL};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[NKP_CONFIG_ERR_MAX];
	nkp_config *c = NULL;
	unsigned long u;
	bool b;

	if (nkp_config_parse((const char *)data, size, "fuzz.conf", keys, &c, err, sizeof(err)) !=
	    NKP_OK) {
		return 0;
	}
	for (size_t i = 0; keys[i] != NULL; i++) {
		(void)nkp_config_get(c, keys[i]);
		(void)nkp_config_get_uint(c, keys[i], 1, 3600, &u, err, sizeof(err));
		(void)nkp_config_get_bool(c, keys[i], &b, err, sizeof(err));
	}
	nkp_config_free(c);
	return 0;
}
