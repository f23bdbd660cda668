/* nkp-hostctl status */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "atrest.h"
#include "hostctl.h"

static const char *state_name(uint32_t s)
{
	return nkp_version_state_name((nkp_version_state)s);
}

static void id_hex(const ProtobufCBinaryData *id, char out[static 33])
{
	if (id->len == NKP_ID_BYTES) {
		nkp_id_to_hex(id->data, out);
	} else {
		snprintf(out, 33, "?");
	}
}

static void print_json(const Nkp__Hostapi__StatusReply *s)
{
	char id[33];

	printf("{\"generation\":%llu,\"tpm\":%s,\"host_name\":", (unsigned long long)s->generation,
	       s->tpm ? "true" : "false");
	json_str(s->host_name);
	printf(",\"host_key\":\"");
	print_b64(s->host_key.data, s->host_key.len);
	printf("\",\"service_key\":\"");
	print_b64(s->service_key.data, s->service_key.len);
	printf("\",\"listen\":");
	json_str(s->listen_url);
	printf(",\"keys_at_rest\":");
	json_str(s->keys_at_rest);
	printf(",\"seal_policy\":\"%s\",\"seal_policy_error\":",
	       s->seal_policy_bound ? "bound" : "off");
	json_str(s->seal_policy_error);
	printf(",\"memory_locked\":%s", s->mlock_failed ? "false" : "true");
	printf(",\"dropped_frames\":%llu,\"refused_connections\":%llu,"
	       "\"closed_connections\":%llu",
	       (unsigned long long)s->dropped_frames, (unsigned long long)s->refused_connections,
	       (unsigned long long)s->closed_connections);
	printf(",\"providers\":[");
	for (size_t i = 0; i < s->n_providers; i++) {
		const Nkp__Hostapi__ProviderInfo *p = s->providers[i];

		id_hex(&p->id, id);
		printf("%s{\"id\":\"%s\",\"name\":", i ? "," : "", id);
		json_str(p->name);
		printf(",\"default\":%s,\"backed_up\":%s,\"tpm_only\":%s,\"versions\":[",
		       p->is_default ? "true" : "false", p->backed_up ? "true" : "false",
		       p->tpm_only ? "true" : "false");
		for (size_t j = 0; j < p->n_versions; j++) {
			const Nkp__Hostapi__VersionInfo *v = p->versions[j];

			printf("%s{\"version\":%u,\"state\":\"%s\",\"keysafes\":%llu,"
			       "\"created\":%llu,\"rewrapped\":%llu,\"unwrapped\":%llu,"
			       "\"last_used_unix\":%llu}",
			       j ? "," : "", v->version, state_name(v->state),
			       (unsigned long long)v->keysafes, (unsigned long long)v->created,
			       (unsigned long long)v->rewrapped, (unsigned long long)v->unwrapped,
			       (unsigned long long)v->last_used_unix);
		}
		printf("]}");
	}
	printf("]}\n");
}

static void print_text(const Nkp__Hostapi__StatusReply *s)
{
	char id[33];

	printf("host %s, generation %llu\n", s->host_name, (unsigned long long)s->generation);
	printf("keys at rest: %s%s\n", nkpi_atrest_text(s->keys_at_rest),
	       s->seal_policy_bound ? ", bound to the service's PCR policy" : "");
	if (s->seal_policy_error[0] != '\0') {
		printf("seal policy: not bound to the service's latest: %s\n",
		       s->seal_policy_error);
	}
	if (s->mlock_failed) {
		printf("WARNING: key memory cannot be locked (RLIMIT_MEMLOCK): keys may be "
		       "written to swap\n");
	}
	printf("host key: ");
	print_b64(s->host_key.data, s->host_key.len);
	printf("\nservice key: ");
	print_b64(s->service_key.data, s->service_key.len);
	printf("\nunauthenticated: %llu frames dropped, %llu connections refused over the caps, "
	       "%llu closed silent or to make room\n",
	       (unsigned long long)s->dropped_frames, (unsigned long long)s->refused_connections,
	       (unsigned long long)s->closed_connections);
	if (s->n_providers == 0) {
		printf("no providers\n");
	}
	for (size_t i = 0; i < s->n_providers; i++) {
		const Nkp__Hostapi__ProviderInfo *p = s->providers[i];

		id_hex(&p->id, id);
		printf("provider %s (%s)%s%s%s\n", p->name, id, p->is_default ? " default" : "",
		       p->backed_up ? "" : " not-backed-up", p->tpm_only ? " tpm-only" : "");
		for (size_t j = 0; j < p->n_versions; j++) {
			const Nkp__Hostapi__VersionInfo *v = p->versions[j];

			printf("  version %u %-12s keysafes %llu, created %llu, rewrapped %llu, "
			       "unwrapped %llu\n",
			       v->version, state_name(v->state), (unsigned long long)v->keysafes,
			       (unsigned long long)v->created, (unsigned long long)v->rewrapped,
			       (unsigned long long)v->unwrapped);
		}
	}
}

int status_main(hostctl *ctl, int argc, char **argv)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__StatusRequest sr = NKP__HOSTAPI__STATUS_REQUEST__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	nkp_err err;
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("Usage: %s [--socket PATH] [--json] status\n\n"
			       "Shows the generation, the providers and versions this host holds "
			       "and\n"
			       "their use.\n",
			       PROG);
			return 0;
		}
		if (strcmp(argv[i], "--json") != 0) {
			return usage_error("status", "unexpected argument '%s'", argv[i]);
		}
	}
	scan_json(ctl, argc, argv);
	req.op_case = NKP__HOSTAPI__REQUEST__OP_STATUS;
	req.status = &sr;
	err = hostctl_call(ctl, &req, &r);
	if (err != NKP_OK) {
		return fail("status", "%s: %s (is nkp-hostd running?)", ctl->socket,
			    nkp_strerror(err));
	}
	if (r->code != NKP_OK || r->status == NULL) {
		rc = fail("status", "%s",
			  r->code != NKP_OK ? nkp_strerror((nkp_err)r->code) : "malformed reply");
	} else if (ctl->json) {
		print_json(r->status);
	} else {
		print_text(r->status);
	}
	hostctl_reply_free(r);
	return rc;
}
