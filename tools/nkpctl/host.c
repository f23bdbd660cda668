/* nkpctl host add | remove | list | wait | resync | seal-policy. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nkp/file.h>

#include "ctl.h"
#include "internal.h"
#include "token.h"

#define WAIT_POLL_MS 200
#define WAIT_DEFAULT_S 60

static const char host_usage[] =
	"usage: nkpctl [--socket PATH] [--json] host add NAME --address URL --public-key TOKEN "
	"[--cluster NAME] [--ek-ca FILE]\n"
	"       nkpctl [--socket PATH] host remove NAME [--force]\n"
	"       nkpctl [--socket PATH] [--json] host list\n"
	"       nkpctl [--socket PATH] host wait --in-sync [--timeout SECONDS]\n"
	"       nkpctl [--socket PATH] [--json] host resync NAME\n"
	"       nkpctl [--socket PATH] [--json] host seal-policy NAME on|off\n"
	"\n"
	"  add     enrol a host: its nkp-hostd listen address (tcp://HOST:PORT or\n"
	"          ipc://PATH) and the token `nkp-hostd init` printed: its public key\n"
	"          (base64), and for a host made with --tpm its TPM's attestation key,\n"
	"          which is pinned (trusted providers then reach it once attested);\n"
	"          --ek-ca FILE: PEM certificates its TPM's EK certificate must verify\n"
	"          under (the TPM vendor's CA); without it the EK is the host's word\n"
	"  remove  make the host wipe its keys, then stop managing it; --force forgets\n"
	"          a host that does not confirm its wipe (it then keeps what it holds)\n"
	"  list    hosts with state (in-sync, pending, unreachable, refused, conflict),\n"
	"          applied generation, attestation (trusted, untrusted, none) and last\n"
	"          error\n"
	"  wait    wait until every host has applied the current generation\n"
	"          (default timeout 60 s; exit 1 naming the hosts that are not)\n"
	"  resync  resolve a host's conflict (it holds a generation this service did\n"
	"          not give it: after a disaster recovery, a restored service state, or a\n"
	"          host that lies): the next push replaces whatever it holds\n"
	"  seal-policy  on: bind a TPM host's sealing key at rest to this service's\n"
	"          PCR policy, so that its state directory opens only while its PCRs\n"
	"          match an approved baseline (approve the next one before a planned\n"
	"          upgrade); off: sealed to its TPM alone again. `host list` shows\n"
	"          where it stands (off, pending, bound, unbinding)\n";

static int help(void)
{
	fputs(host_usage, stdout);
	return 0;
}

static bool address_ok(const char *a)
{
	return (strncmp(a, "tcp://", 6) == 0 || strncmp(a, "ipc://", 6) == 0) && strlen(a) > 6 &&
	       strlen(a) <= 255 && strpbrk(a, " \t\r\n") == NULL;
}

static int host_add(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"address", required_argument, NULL, 'a'},
		{"public-key", required_argument, NULL, 'k'},
		{"cluster", required_argument, NULL, 'c'},
		{"ek-ca", required_argument, NULL, 'e'},
		{NULL, 0, NULL, 0},
	};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostAddRequest hr = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	const char *ek_ca = NULL;
	uint8_t *ca = NULL;
	size_t ca_len = 0;
	int rc;
	uint8_t pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	size_t ak_len = 0;
	const char *addr = NULL, *key = NULL, *cluster = "";
	ctl_resp *r = NULL;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt == 'a') {
			addr = optarg;
		} else if (opt == 'k') {
			key = optarg;
		} else if (opt == 'c') {
			cluster = optarg;
		} else if (opt == 'e') {
			ek_ca = optarg;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("host add", "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("host add", "one host NAME is required");
	}
	if (addr == NULL || key == NULL) {
		return ctl_usage("host add", "--address URL and --public-key KEY are required");
	}
	if (!address_ok(addr)) {
		return ctl_usage("host add", "--address must be tcp://HOST:PORT or ipc://PATH");
	}
	if (nkpi_token_parse(key, pub, ak, &ak_len) != NKP_OK) {
		return ctl_usage("host add", "--public-key must be the token nkp-hostd init "
					     "printed (its last line)");
	}
	hr.name = argv[optind];
	hr.address = (char *)addr;
	hr.cluster = (char *)cluster;
	hr.public_key.data = pub;
	hr.public_key.len = sizeof(pub);
	hr.ak_public.data = ak;
	hr.ak_public.len = ak_len;
	if (ek_ca != NULL && ak_len == 0) {
		return ctl_usage("host add", "--ek-ca needs a token with an attestation key "
					     "(nkp-hostd init --tpm)");
	}
	if (ek_ca != NULL && nkp_file_read(ek_ca, 64u << 10, &ca, &ca_len) != NKP_OK) {
		return ctl_fail("host add", "cannot read --ek-ca %s", ek_ca);
	}
	hr.ek_ca.data = ca;
	hr.ek_ca.len = ca_len;
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_ADD;
	q.host_add = &hr;
	rc = ctl_call(c, &q, "host add", &r);
	free(ca);
	if (rc != 0) {
		return 1;
	}
	if (c->json) {
		printf("{\"name\":");
		ctl_json_str(stdout, hr.name);
		printf(",\"enrolled\":true}\n");
	} else {
		printf("%s\n", r->message);
	}
	ctl_resp_free(r);
	return 0;
}

static int host_remove(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS, {"force", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostRemoveRequest hr = NKP__ADMIN__HOST_REMOVE_REQUEST__INIT;
	ctl_resp *r = NULL;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt == 'f') {
			hr.force = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("host remove", "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("host remove", "one host NAME is required");
	}
	hr.name = argv[optind];
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_REMOVE;
	q.host_remove = &hr;
	if (ctl_call(c, &q, "host remove", &r) != 0) {
		return 1;
	}
	ctl_print_done(c, hr.name, "removed", r);
	return 0;
}

static int host_resync(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostResyncRequest hr = NKP__ADMIN__HOST_RESYNC_REQUEST__INIT;
	ctl_resp *r = NULL;
	int rc;

	rc = ctl_parse_plain(c, argc, argv, "host resync", help, "one host NAME is required",
			     &hr.name);
	if (rc >= 0) {
		return rc;
	}
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_RESYNC;
	q.host_resync = &hr;
	if (ctl_call(c, &q, "host resync", &r) != 0) {
		return 1;
	}
	ctl_print_done(c, hr.name, "resync", r);
	return 0;
}

static int host_seal_policy(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostSealPolicyRequest hs = NKP__ADMIN__HOST_SEAL_POLICY_REQUEST__INIT;
	static const char required[] = "a host NAME and on or off are required";
	char *ops[2];
	ctl_resp *r = NULL;
	int rc;

	rc = ctl_parse_operands(c, argc, argv, "host seal-policy", help, required, 2, ops);
	if (rc >= 0) {
		return rc;
	}
	if (strcmp(ops[1], "on") != 0 && strcmp(ops[1], "off") != 0) {
		return ctl_usage("host seal-policy", "%s", required);
	}
	hs.name = ops[0];
	hs.on = strcmp(ops[1], "on") == 0;
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_SEAL_POLICY;
	q.host_seal_policy = &hs;
	if (ctl_call(c, &q, "host seal-policy", &r) != 0) {
		return 1;
	}
	ctl_print_done(c, hs.name, hs.on ? "seal_policy_on" : "seal_policy_off", r);
	return 0;
}

static int fetch_hosts(const ctl *c, const char *what, ctl_resp **out)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostListRequest hr = NKP__ADMIN__HOST_LIST_REQUEST__INIT;

	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_LIST;
	q.host_list = &hr;
	if (ctl_call(c, &q, what, out) != 0) {
		return 1;
	}
	if ((*out)->result_case != NKP__ADMIN__RESPONSE__RESULT_HOSTS) {
		ctl_resp_free(*out);
		return ctl_fail(what, "unexpected reply from nkpd");
	}
	return 0;
}

static void print_host_json(const Nkp__Admin__HostInfo *h)
{
	char key[45] = "", t[32];

	if (h->public_key.len == NKP_PUBKEY_BYTES) {
		nkp_pubkey_to_base64(h->public_key.data, key);
	}
	printf("{\"name\":");
	ctl_json_str(stdout, h->name);
	printf(",\"address\":");
	ctl_json_str(stdout, h->address);
	printf(",\"cluster\":");
	ctl_json_str(stdout, h->cluster);
	printf(",\"state\":\"%s\",\"applied_generation\":%llu,\"last_error\":", h->state,
	       (unsigned long long)h->applied_generation);
	ctl_json_str(stdout, h->last_error);
	/* "tpm" is what the host claims; "attestation" what its quotes showed. */
	printf(",\"public_key\":\"%s\",\"tpm\":%s,\"last_contact\":\"%s\",\"host_name\":", key,
	       h->tpm ? "true" : "false", ctl_time(h->last_contact_unix, t, sizeof(t)));
	ctl_json_str(stdout, h->host_name);
	printf(",\"attestation\":");
	ctl_json_str(stdout, h->attestation);
	printf(",\"attestation_reason\":");
	ctl_json_str(stdout, h->attestation_reason);
	printf(",\"baseline\":");
	ctl_json_str(stdout, h->baseline);
	printf(",\"attested\":\"%s\",\"seal_policy\":", ctl_time(h->attested_unix, t, sizeof(t)));
	ctl_json_str(stdout, h->seal_policy);
	printf(",\"seal_policy_error\":");
	ctl_json_str(stdout, h->seal_policy_error);
	printf("}");
}

static int host_list(ctl *c, int argc, char **argv)
{
	const Nkp__Admin__HostList *l;
	ctl_resp *r = NULL;
	int rc;

	rc = ctl_parse_plain(c, argc, argv, "host list", help, NULL, NULL);
	if (rc >= 0) {
		return rc;
	}
	if (fetch_hosts(c, "host list", &r) != 0) {
		return 1;
	}
	l = r->hosts;
	if (c->json) {
		printf("[");
		for (size_t i = 0; i < l->n_hosts; i++) {
			printf(i ? ",\n" : "\n");
			print_host_json(l->hosts[i]);
		}
		printf("%s]\n", l->n_hosts ? "\n" : "");
	} else {
		printf("%-20s %-28s %-12s %-11s %-18s %-11s %s\n", "NAME", "ADDRESS", "CLUSTER",
		       "STATE", "GENERATION", "ATTESTATION", "LAST ERROR");
		for (size_t i = 0; i < l->n_hosts; i++) {
			const Nkp__Admin__HostInfo *h = l->hosts[i];

			printf("%-20s %-28s %-12s %-11s %-18llu %-11s %s\n", h->name, h->address,
			       h->cluster[0] ? h->cluster : "-", h->state,
			       (unsigned long long)h->applied_generation, h->attestation,
			       h->last_error[0] ? h->last_error : "-");
			if (strcmp(h->attestation, "untrusted") == 0) {
				printf("%-20s untrusted: %s\n", "", h->attestation_reason);
			}
			if (strcmp(h->seal_policy, "off") != 0) {
				printf("%-20s seal policy: %s%s%s\n", "", h->seal_policy,
				       h->seal_policy_error[0] ? ": " : "", h->seal_policy_error);
			}
		}
	}
	ctl_resp_free(r);
	return 0;
}

/* Lists the hosts not in sync into buf; returns how many. */
static size_t not_in_sync(const Nkp__Admin__HostList *l, char *buf, size_t size)
{
	size_t n = 0, used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < l->n_hosts; i++) {
		const Nkp__Admin__HostInfo *h = l->hosts[i];

		if (strcmp(h->state, "in-sync") == 0) {
			continue;
		}
		if (used + strlen(h->name) + strlen(h->state) + 8 < size) {
			used += (size_t)snprintf(buf + used, size - used, "%s%s (%s)",
						 n ? ", " : "", h->name, h->state);
		}
		n++;
	}
	return n;
}

static int wait_loop(const ctl *c, unsigned long timeout_s)
{
	uint64_t deadline = nkpi_mono_ms() + timeout_s * 1000u;
	char missing[1024];
	size_t total;

	for (;;) {
		ctl_resp *r = NULL;
		size_t n;

		if (fetch_hosts(c, "host wait", &r) != 0) {
			return 1;
		}
		n = not_in_sync(r->hosts, missing, sizeof(missing));
		total = r->hosts->n_hosts;
		ctl_resp_free(r);
		if (n == 0) {
			break;
		}
		if (nkpi_mono_ms() >= deadline) {
			return ctl_fail("host wait",
					"%zu of %zu host(s) not in sync after %lu s: %s", n, total,
					timeout_s, missing);
		}
		struct timespec ts = {0, WAIT_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (c->json) {
		printf("{\"in_sync\":%zu,\"total\":%zu}\n", total, total);
	} else {
		printf("all %zu host(s) in sync\n", total);
	}
	return 0;
}

static int host_wait(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"in-sync", no_argument, NULL, 'i'},
		{"timeout", required_argument, NULL, 't'},
		{NULL, 0, NULL, 0},
	};
	unsigned long timeout = WAIT_DEFAULT_S;
	bool in_sync = false;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt == 'i') {
			in_sync = true;
		} else if (opt == 't') {
			if (!ctl_parse_uint(optarg, 0, 86400, &timeout)) {
				return ctl_usage("host wait", "--timeout wants seconds (0-86400)");
			}
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("host wait", "unknown option or missing argument");
		}
	}
	if (optind != argc) {
		return ctl_usage("host wait", "unexpected argument %s", argv[optind]);
	}
	if (!in_sync) {
		return ctl_usage("host wait", "say what to wait for: --in-sync");
	}
	return wait_loop(c, timeout);
}

int host_main(ctl *c, int argc, char **argv)
{
	static const ctl_sub subs[] = {
		{"add", host_add},   {"remove", host_remove}, {"list", host_list},
		{"wait", host_wait}, {"resync", host_resync}, {"seal-policy", host_seal_policy},
	};

	return ctl_dispatch(
		c, "host", subs, sizeof(subs) / sizeof(subs[0]), help,
		"a subcommand is required (add, remove, list, wait, resync, seal-policy)", argc,
		argv);
}
