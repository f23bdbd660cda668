/* nkpctl status: the service's key, generation, hosts and providers. */
#include <getopt.h>

#include "atrest.h"
#include "ctl.h"

static const char status_usage[] =
	"usage: nkpctl [--socket PATH] [--json] status\n"
	"Shows the service public key, its generation, how many hosts are in sync\n"
	"and how many providers it holds.\n";

static void print_status(const ctl *c, const Nkp__Admin__ServiceStatus *st)
{
	char key[45] = "";
	char t[32];

	if (st->public_key.len == NKP_PUBKEY_BYTES) {
		nkp_pubkey_to_base64(st->public_key.data, key);
	}
	if (c->json) {
		printf("{\"public_key\":\"%s\",\"generation\":%llu,\"hosts\":{\"total\":%u,"
		       "\"in_sync\":%u,\"unreachable\":%u},\"providers\":%u,\"default_provider\":",
		       key, (unsigned long long)st->generation, st->hosts_total, st->hosts_in_sync,
		       st->hosts_unreachable, st->providers);
		ctl_json_str(stdout, st->default_provider);
		printf(",\"providers_not_backed_up\":%u,\"version\":", st->providers_not_backed_up);
		ctl_json_str(stdout, st->version);
		printf(",\"state_dir\":");
		ctl_json_str(stdout, st->state_dir);
		printf(",\"memory_locked\":%s,\"keys_at_rest\":",
		       st->mlock_failed ? "false" : "true");
		ctl_json_str(stdout, st->keys_at_rest);
		printf(",\"started\":\"%s\"}\n", ctl_time(st->started_unix, t, sizeof(t)));
		return;
	}
	printf("nkpd %s, state in %s, running since %s\n", st->version, st->state_dir,
	       ctl_time(st->started_unix, t, sizeof(t)));
	printf("service key: %s\n", key);
	printf("generation:  %llu\n", (unsigned long long)st->generation);
	printf("hosts:       %u (%u in sync, %u unreachable)\n", st->hosts_total, st->hosts_in_sync,
	       st->hosts_unreachable);
	printf("providers:   %u (default: %s; %u not backed up)\n", st->providers,
	       st->default_provider[0] ? st->default_provider : "none",
	       st->providers_not_backed_up);
	printf("keys at rest: %s\n", nkpi_atrest_text(st->keys_at_rest));
	if (st->mlock_failed) {
		printf("WARNING: key memory cannot be locked (RLIMIT_MEMLOCK): keys may be "
		       "written to swap\n");
	}
}

int status_main(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {CTL_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__StatusRequest sr = NKP__ADMIN__STATUS_REQUEST__INIT;
	ctl_resp *r = NULL;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(status_usage, stdout);
			return 0;
		}
		if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("status", "unknown option or missing argument");
		}
	}
	if (optind != argc) {
		return ctl_usage("status", "unexpected argument %s", argv[optind]);
	}
	q.op_case = NKP__ADMIN__REQUEST__OP_STATUS;
	q.status = &sr;
	if (ctl_call(c, &q, "status", &r) != 0) {
		return 1;
	}
	if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_STATUS) {
		ctl_resp_free(r);
		return ctl_fail("status", "unexpected reply from nkpd");
	}
	print_status(c, r->status);
	ctl_resp_free(r);
	return 0;
}
