/* nkpctl baseline add | list | remove: the approved TPM states of trusted
 * hosts (docs/OPERATIONS.md "Trusted hosts"). */
#include <getopt.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"

static const char baseline_usage[] =
	"usage: nkpctl [--socket PATH] [--json] baseline add NAME --from-host HOST\n"
	"       nkpctl [--socket PATH] [--json] baseline list\n"
	"       nkpctl [--socket PATH] [--json] baseline remove NAME\n"
	"\n"
	"  add     approve the PCR values the host's latest verified TPM quote showed:\n"
	"          hosts quoting the same values become trusted (trusted providers\n"
	"          reach them). Take it from a reference host in a known-good state;\n"
	"          before a planned upgrade, add the new state's baseline first\n"
	"  list    approved baselines, with the PCRs each covers and its digest\n"
	"  remove  withdraw one: hosts that matched only it lose their trusted\n"
	"          providers\n";

static int help(void)
{
	fputs(baseline_usage, stdout);
	return 0;
}

static int b_add(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"from-host", required_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__BaselineAddRequest br = NKP__ADMIN__BASELINE_ADD_REQUEST__INIT;
	ctl_resp *r = NULL;
	const char *from = NULL;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt == 'f') {
			from = optarg;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("baseline add", "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("baseline add", "one baseline NAME is required");
	}
	if (from == NULL) {
		return ctl_usage("baseline add", "--from-host HOST is required");
	}
	br.name = argv[optind];
	br.from_host = (char *)from;
	q.op_case = NKP__ADMIN__REQUEST__OP_BASELINE_ADD;
	q.baseline_add = &br;
	if (ctl_call(c, &q, "baseline add", &r) != 0) {
		return 1;
	}
	ctl_print_done(c, br.name, "added", r);
	return 0;
}

static int b_remove(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__BaselineRemoveRequest br = NKP__ADMIN__BASELINE_REMOVE_REQUEST__INIT;
	ctl_resp *r = NULL;
	int rc = ctl_parse_plain(c, argc, argv, "baseline remove", help,
				 "one baseline NAME is required", &br.name);

	if (rc >= 0) {
		return rc;
	}
	q.op_case = NKP__ADMIN__REQUEST__OP_BASELINE_REMOVE;
	q.baseline_remove = &br;
	if (ctl_call(c, &q, "baseline remove", &r) != 0) {
		return 1;
	}
	ctl_print_done(c, br.name, "removed", r);
	return 0;
}

/* "0,1,7" for bits 0, 1 and 7. */
static void pcr_list(uint32_t mask, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < 24; i++) {
		if ((mask & (1u << i)) != 0 && used + 4 < size) {
			used += (size_t)snprintf(buf + used, size - used, "%s%u", used ? "," : "",
						 i);
		}
	}
}

static int b_list(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__BaselineListRequest br = NKP__ADMIN__BASELINE_LIST_REQUEST__INIT;
	const Nkp__Admin__BaselineList *l;
	ctl_resp *r = NULL;
	char pcrs[96], hex[65], t[32];
	int rc = ctl_parse_plain(c, argc, argv, "baseline list", help, NULL, NULL);

	if (rc >= 0) {
		return rc;
	}
	q.op_case = NKP__ADMIN__REQUEST__OP_BASELINE_LIST;
	q.baseline_list = &br;
	if (ctl_call(c, &q, "baseline list", &r) != 0) {
		return 1;
	}
	if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_BASELINES) {
		ctl_resp_free(r);
		return ctl_fail("baseline list", "unexpected reply from nkpd");
	}
	l = r->baselines;
	if (!c->json) {
		printf("%-20s %-20s %-20s %-20s %s\n", "NAME", "PCRS", "FROM HOST", "CREATED",
		       "DIGEST (SHA-256)");
	} else {
		printf("[");
	}
	for (size_t i = 0; i < l->n_baselines; i++) {
		const Nkp__Admin__BaselineInfo *b = l->baselines[i];

		pcr_list(b->pcr_mask, pcrs, sizeof(pcrs));
		hex[0] = '\0';
		if (b->pcr_digest.len == 32) {
			sodium_bin2hex(hex, sizeof(hex), b->pcr_digest.data, 32);
		}
		ctl_time(b->created_unix, t, sizeof(t));
		if (!c->json) {
			printf("%-20s %-20s %-20s %-20s %s\n", b->name, pcrs, b->from_host, t, hex);
			continue;
		}
		printf("%s{\"name\":", i ? ",\n" : "\n");
		ctl_json_str(stdout, b->name);
		printf(",\"pcrs\":\"%s\",\"pcr_digest\":\"%s\",\"from_host\":", pcrs, hex);
		ctl_json_str(stdout, b->from_host);
		printf(",\"created\":\"%s\"}", t);
	}
	if (c->json) {
		printf("%s]\n", l->n_baselines ? "\n" : "");
	}
	ctl_resp_free(r);
	return 0;
}

int baseline_main(ctl *c, int argc, char **argv)
{
	static const ctl_sub subs[] = {
		{"add", b_add},
		{"list", b_list},
		{"remove", b_remove},
	};

	return ctl_dispatch(c, "baseline", subs, sizeof(subs) / sizeof(subs[0]), help,
			    "a subcommand is required (add, list, remove)", argc, argv);
}
