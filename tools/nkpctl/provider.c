/* nkpctl provider create | list | show | set-default | retire | delete, and
 * the dispatch of backup, restore (backup.c) and rotate (rotate.c). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl.h"

static const char provider_usage[] =
	"usage: nkpctl [--socket PATH] [--json] provider COMMAND ...\n"
	"  create NAME [--default] [--trusted]    a new provider (version 1 active, not\n"
	"                                         backed up: hosts make no VM keys under it\n"
	"                                         until it is backed up); the first provider\n"
	"                                         made or restored becomes the default\n"
	"  create NAME --kind standard --kms kmip://HOST[:PORT] [--kms ...]\n"
	"         --kms-ca FILE --kms-cert FILE --kms-key FILE [--spare-pool N]\n"
	"                                         keys from a KMS cluster over KMIP with\n"
	"                                         mutual TLS (servers tried in order); at\n"
	"                                         least one must answer now\n"
	"  list                                   every provider\n"
	"  show NAME                              versions, their use on hosts, hosts in sync\n"
	"  set-default NAME                       the provider VMs get when none is named\n"
	"  backup NAME --out FILE --password-file FILE\n"
	"  restore FILE --password-file FILE      same id and versions, into this service\n"
	"  rotate NAME [--timeout SECONDS] [--force]\n"
	"                                         stage a new version on every host, promote\n"
	"                                         it when all have it (default timeout 30 s)\n"
	"  retire NAME --version N [--force]      destroy a decrypt-only version everywhere\n"
	"                                         (refused while hosts report use of it)\n"
	"  delete NAME [--force]                  remove it from every host (refused for the\n"
	"                                         default, or while hosts report use of it)\n";

static int help(void)
{
	fputs(provider_usage, stdout);
	return 0;
}

/* ---- printing ---- */

static void print_version_json(FILE *f, const Nkp__Admin__VersionInfo *v)
{
	char t1[32], t2[32];

	fprintf(f,
		"{\"version\":%u,\"state\":\"%s\",\"created\":\"%s\",\"usage\":{\"keysafes\":%llu,"
		"\"created\":%llu,\"rewrapped\":%llu,\"unwrapped\":%llu,\"last_used\":\"%s\"},"
		"\"hosts_holding\":%u}",
		v->version, ctl_state_name(v->state), ctl_time(v->created_unix, t1, sizeof(t1)),
		(unsigned long long)v->keysafes, (unsigned long long)v->created,
		(unsigned long long)v->rewrapped, (unsigned long long)v->unwrapped,
		ctl_time(v->last_used_unix, t2, sizeof(t2)), v->hosts_holding);
}

static void print_rotation_json(FILE *f, const Nkp__Admin__RotationInfo *r)
{
	fprintf(f,
		"{\"state\":\"%s\",\"version\":%u,\"acknowledged\":%u,\"total\":%u,\"missing\":[",
		r->state, r->version, r->acked, r->total);
	for (size_t i = 0; i < r->n_missing; i++) {
		fprintf(f, i ? "," : "");
		ctl_json_str(f, r->missing[i]);
	}
	fprintf(f, "],\"message\":");
	ctl_json_str(f, r->message);
	fprintf(f, "}");
}

void ctl_print_provider_json(FILE *f, const Nkp__Admin__ProviderInfo *p)
{
	char id[33] = "", t1[32], t2[32];

	if (p->id.len == NKP_ID_BYTES) {
		nkp_id_to_hex(p->id.data, id);
	}
	fprintf(f, "{\"name\":");
	ctl_json_str(f, p->name);
	fprintf(f,
		",\"id\":\"%s\",\"default\":%s,\"backed_up\":%s,\"backup_stale\":%s,"
		"\"trusted\":%s,\"active_version\":%u,\"versions\":[",
		id, p->is_default ? "true" : "false", p->backed_up ? "true" : "false",
		p->backup_stale ? "true" : "false", p->tpm_only ? "true" : "false",
		p->active_version);
	for (size_t i = 0; i < p->n_versions; i++) {
		fprintf(f, i ? "," : "");
		print_version_json(f, p->versions[i]);
	}
	fprintf(f, "],\"hosts\":{\"in_sync\":%u,\"total\":%u},\"scope_note\":", p->hosts_in_sync,
		p->hosts_total);
	ctl_json_str(f, p->scope_note);
	fprintf(f, ",\"created\":\"%s\",\"backed_up_at\":\"%s\"",
		ctl_time(p->created_unix, t1, sizeof(t1)),
		ctl_time(p->backed_up_unix, t2, sizeof(t2)));
	if (p->rotation != NULL) {
		fprintf(f, ",\"rotation\":");
		print_rotation_json(f, p->rotation);
	}
	fprintf(f, ",\"kind\":");
	ctl_json_str(f, p->kind);
	if (strcmp(p->kind, "standard") == 0) {
		fprintf(f, ",\"keys_in_use\":%u,\"spares\":%u,\"spare_pool\":%u,\"kms\":[",
			p->keys_in_use, p->spares, p->spare_pool);
		for (size_t i = 0; i < p->n_kms; i++) {
			fprintf(f, "%s{\"url\":", i ? "," : "");
			ctl_json_str(f, p->kms[i]->url);
			fprintf(f, ",\"state\":");
			ctl_json_str(f, p->kms[i]->state);
			fprintf(f, ",\"error\":");
			ctl_json_str(f, p->kms[i]->error);
			fprintf(f, ",\"checked\":\"%s\"}",
				ctl_time(p->kms[i]->checked_unix, t1, sizeof(t1)));
		}
		fprintf(f, "],\"kms_keys\":[");
		for (size_t i = 0; i < p->n_kms_keys; i++) {
			const Nkp__Admin__KmsKeyInfo *k = p->kms_keys[i];

			fprintf(f, "%s{\"id\":", i ? "," : "");
			ctl_json_str(f, k->id);
			fprintf(f, ",\"state\":");
			ctl_json_str(f, k->state);
			fprintf(f, ",\"host\":");
			ctl_json_str(f, k->host);
			fprintf(f, ",\"vm_uuid\":");
			ctl_json_str(f, k->vm_uuid);
			fprintf(f, ",\"vm_name\":");
			ctl_json_str(f, k->vm_name);
			fprintf(f, ",\"attributes_set\":%s}", k->attributes_set ? "true" : "false");
		}
		fprintf(f, "]");
	}
	fprintf(f, "}");
}

static void print_backup_line(const Nkp__Admin__ProviderInfo *p)
{
	if (!p->backed_up) {
		printf("  backed up:      no (hosts make no VM keys under it until it is backed "
		       "up)\n");
	} else if (p->backup_stale) {
		printf("  backed up:      yes, but the backup is stale: it lacks the newest "
		       "version; "
		       "back it up again\n");
	} else {
		printf("  backed up:      yes\n");
	}
}

static void print_versions(const Nkp__Admin__ProviderInfo *p)
{
	char t[32];

	printf("  versions:\n    %-8s %-13s %-9s %-8s %-10s %-10s %s\n", "VERSION", "STATE",
	       "KEYSAFES", "CREATED", "REWRAPPED", "UNWRAPPED", "LAST USE");
	for (size_t i = 0; i < p->n_versions; i++) {
		const Nkp__Admin__VersionInfo *v = p->versions[i];

		printf("    %-8u %-13s %-9llu %-8llu %-10llu %-10llu %s\n", v->version,
		       ctl_state_name(v->state), (unsigned long long)v->keysafes,
		       (unsigned long long)v->created, (unsigned long long)v->rewrapped,
		       (unsigned long long)v->unwrapped, ctl_time(v->last_used_unix, t, sizeof(t)));
	}
}

static void print_kms(const Nkp__Admin__ProviderInfo *p)
{
	char t[32];

	printf("  kind:           standard (keys from a KMS over KMIP)\n");
	printf("  keys in use:    %u\n  spare keys:     %u (%u kept per host)\n", p->keys_in_use,
	       p->spares, p->spare_pool);
	printf("  KMS servers:\n    %-40s %-12s %-20s %s\n", "URL", "STATE", "CHECKED", "ERROR");
	for (size_t i = 0; i < p->n_kms; i++) {
		const Nkp__Admin__KmsServerInfo *k = p->kms[i];

		printf("    %-40s %-12s %-20s %s\n", k->url, k->state,
		       ctl_time(k->checked_unix, t, sizeof(t)), k->error);
	}
}

void ctl_print_provider(const Nkp__Admin__ProviderInfo *p)
{
	char id[33] = "";
	const Nkp__Admin__RotationInfo *r = p->rotation;

	if (p->id.len == NKP_ID_BYTES) {
		nkp_id_to_hex(p->id.data, id);
	}
	printf("provider %s\n  id:             %s\n", p->name, id);
	printf("  default:        %s\n", p->is_default ? "yes" : "no");
	print_backup_line(p);
	printf("  trusted:        %s\n", p->tpm_only ? "yes: attested hosts only" : "no");
	if (p->scope_note[0] != '\0') {
		printf("  scope:          %s\n", p->scope_note);
	}
	if (strcmp(p->kind, "standard") == 0) {
		print_kms(p);
		return;
	}
	printf("  active version: %u\n", p->active_version);
	printf("  hosts:          %u of %u in sync\n", p->hosts_in_sync, p->hosts_total);
	if (r != NULL && strcmp(r->state, "none") != 0) {
		printf("  rotation:       %s, version %u, %u/%u hosts acknowledged%s%s\n", r->state,
		       r->version, r->acked, r->total, r->message[0] ? ": " : "", r->message);
	}
	print_versions(p);
}

/* Sends a request whose reply is a ProviderInfo and prints it. */
/* A retire or delete refused for use: with --json, what each host reports
 * on stdout (the one-line reason still goes to stderr). */
static void print_usage_refusal_json(const Nkp__Admin__UsageRefusal *u)
{
	printf("{\"refused\":true,\"keysafes\":%llu,\"hosts\":[", (unsigned long long)u->keysafes);
	for (size_t i = 0; i < u->n_hosts; i++) {
		printf("%s{\"host\":", i ? "," : "");
		ctl_json_str(stdout, u->hosts[i]->host);
		printf(",\"version\":%u,\"keysafes\":%llu}", u->hosts[i]->version,
		       (unsigned long long)u->hosts[i]->keysafes);
	}
	printf("],\"not_answered\":[");
	for (size_t i = 0; i < u->n_not_answered; i++) {
		printf("%s", i ? "," : "");
		ctl_json_str(stdout, u->not_answered[i]);
	}
	printf("]}\n");
}

int ctl_provider_reply(const ctl *c, Nkp__Admin__Request *q, const char *what)
{
	ctl_resp *r = NULL;

	if (ctl_call_raw(c, q, what, &r) != 0) {
		return 1;
	}
	if (r->code != 0) {
		if (c->json && r->result_case == NKP__ADMIN__RESPONSE__RESULT_USAGE_REFUSAL) {
			print_usage_refusal_json(r->usage_refusal);
		}
		ctl_fail(what, "%s",
			 r->message[0] != '\0' ? r->message : nkp_strerror((nkp_err)r->code));
		ctl_resp_free(r);
		return 1;
	}
	if (r->result_case == NKP__ADMIN__RESPONSE__RESULT_PROVIDER && c->json) {
		ctl_print_provider_json(stdout, r->provider);
		printf("\n");
	} else if (r->result_case == NKP__ADMIN__RESPONSE__RESULT_PROVIDER) {
		ctl_print_provider(r->provider);
	} else if (c->json) {
		printf("{\"ok\":true,\"message\":");
		ctl_json_str(stdout, r->message);
		printf("}\n");
	} else {
		printf("%s\n", r->message);
	}
	ctl_resp_free(r);
	return 0;
}

/* ---- subcommands ---- */

/* Parses NAME plus flags; `flags` maps long options to bools. */
typedef struct flag {
	const char *name;
	bool *value;
} flag;

static int parse_name_flags(ctl *c, int argc, char **argv, const char *cmd, flag *flags,
			    size_t n_flags, const char **name)
{
	struct option lo[8] = {CTL_COMMON_LONGOPTS};
	int opt;

	for (size_t i = 0; i < n_flags; i++) {
		lo[3 + i] = (struct option){flags[i].name, no_argument, NULL, 'a' + (int)i};
	}
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt >= 'a' && opt < 'a' + (int)n_flags) {
			*flags[opt - 'a'].value = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage(cmd, "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage(cmd, "one provider NAME is required");
	}
	*name = argv[optind];
	return -1;
}

/* The KMS files of a standard provider, read whole (the key wiped and
 * freed by the caller). */
typedef struct kms_files {
	const char *path[3]; /* --kms-ca, --kms-cert, --kms-key */
	uint8_t *data[3];
	size_t len[3];
} kms_files;

static int read_kms_files(kms_files *f, Nkp__Admin__ProviderCreateRequest *r)
{
	static const char *const what[] = {"--kms-ca", "--kms-cert", "--kms-key"};

	for (int i = 0; i < 3; i++) {
		nkp_err err;

		if (f->path[i] == NULL) {
			return ctl_usage("provider create", "a standard provider needs %s FILE",
					 what[i]);
		}
		err = nkp_file_read(f->path[i], 1u << 20, &f->data[i], &f->len[i]);
		if (err != NKP_OK) {
			return ctl_fail("provider create", "cannot read %s: %s", f->path[i],
					nkp_strerror(err));
		}
	}
	r->kms_ca = (ProtobufCBinaryData){f->len[0], f->data[0]};
	r->kms_cert = (ProtobufCBinaryData){f->len[1], f->data[1]};
	r->kms_key = (ProtobufCBinaryData){f->len[2], f->data[2]};
	return -1;
}

static void free_kms_files(kms_files *f)
{
	for (int i = 0; i < 3; i++) {
		if (f->data[i] != NULL) {
			sodium_memzero(f->data[i], f->len[i]);
			free(f->data[i]);
		}
	}
}

static int p_create(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"default", no_argument, NULL, 'd'},
		{"trusted", no_argument, NULL, 't'},
		{"kind", required_argument, NULL, 'k'},
		{"kms", required_argument, NULL, 'm'},
		{"kms-ca", required_argument, NULL, 'a'},
		{"kms-cert", required_argument, NULL, 'c'},
		{"kms-key", required_argument, NULL, 'y'},
		{"spare-pool", required_argument, NULL, 'p'},
		{NULL, 0, NULL, 0},
	};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderCreateRequest r = NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT;
	char *kms[9];
	kms_files f = {{NULL, NULL, NULL}, {NULL, NULL, NULL}, {0, 0, 0}};
	const char *kind = "native";
	int opt, rc = -1;

	optind = 0;
	opterr = 0;
	while (rc < 0 && (opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		char *end = NULL;
		unsigned long v;

		switch (opt) {
		case 'h':
			return help();
		case 'd':
			r.make_default = true;
			break;
		case 't':
			r.tpm_only = true;
			break;
		case 'k':
			kind = optarg;
			break;
		case 'm':
			if (r.n_kms == 8) {
				return ctl_usage("provider create", "at most 8 --kms servers");
			}
			kms[r.n_kms++] = optarg;
			break;
		case 'a':
		case 'c':
		case 'y':
			f.path[opt == 'a' ? 0 : opt == 'c' ? 1 : 2] = optarg;
			break;
		case 'p':
			v = strtoul(optarg, &end, 10);
			if (*optarg < '1' || *optarg > '9' || *end != '\0' || v > 256) {
				return ctl_usage("provider create", "--spare-pool wants 1-256");
			}
			r.spare_pool = (uint32_t)v;
			break;
		default:
			if (!ctl_common_opt(c, opt, optarg)) {
				return ctl_usage("provider create",
						 "unknown option or missing argument");
			}
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("provider create", "one provider NAME is required");
	}
	if (strcmp(kind, "native") != 0 && strcmp(kind, "standard") != 0) {
		return ctl_usage("provider create", "--kind is native or standard");
	}
	if (strcmp(kind, "standard") == 0) {
		if (r.n_kms == 0) {
			return ctl_usage("provider create",
					 "a standard provider needs --kms kmip://HOST[:PORT]");
		}
		rc = read_kms_files(&f, &r);
	} else if (r.n_kms != 0 || f.path[0] != NULL || f.path[1] != NULL || f.path[2] != NULL ||
		   r.spare_pool != 0) {
		return ctl_usage("provider create",
				 "--kms, --kms-ca, --kms-cert, --kms-key and --spare-pool are for "
				 "--kind standard");
	}
	if (rc < 0) {
		r.name = argv[optind];
		r.kind = (char *)kind;
		r.kms = kms;
		q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE;
		q.provider_create = &r;
		rc = ctl_provider_reply(c, &q, "provider create");
	}
	free_kms_files(&f);
	return rc;
}

static int p_show(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderShowRequest r = NKP__ADMIN__PROVIDER_SHOW_REQUEST__INIT;
	const char *name = NULL;
	int rc = parse_name_flags(c, argc, argv, "provider show", NULL, 0, &name);

	if (rc >= 0) {
		return rc;
	}
	r.name = (char *)name;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_SHOW;
	q.provider_show = &r;
	return ctl_provider_reply(c, &q, "provider show");
}

static int p_set_default(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderSetDefaultRequest r = NKP__ADMIN__PROVIDER_SET_DEFAULT_REQUEST__INIT;
	const char *name = NULL;
	int rc = parse_name_flags(c, argc, argv, "provider set-default", NULL, 0, &name);

	if (rc >= 0) {
		return rc;
	}
	r.name = (char *)name;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_SET_DEFAULT;
	q.provider_set_default = &r;
	return ctl_provider_reply(c, &q, "provider set-default");
}

static int p_delete(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderDeleteRequest r = NKP__ADMIN__PROVIDER_DELETE_REQUEST__INIT;
	bool force = false;
	flag flags[] = {{"force", &force}};
	const char *name = NULL;
	int rc = parse_name_flags(c, argc, argv, "provider delete", flags, 1, &name);

	if (rc >= 0) {
		return rc;
	}
	r.name = (char *)name;
	r.force = force;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_DELETE;
	q.provider_delete = &r;
	return ctl_provider_reply(c, &q, "provider delete");
}

static int p_retire(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"version", required_argument, NULL, 'v'},
		{"force", no_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRetireRequest r = NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT;
	unsigned long version = 0;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			return help();
		} else if (opt == 'v') {
			if (!ctl_parse_uint(optarg, 1, UINT32_MAX, &version)) {
				return ctl_usage("provider retire",
						 "--version wants a version number");
			}
		} else if (opt == 'f') {
			r.force = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("provider retire", "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("provider retire", "one provider NAME is required");
	}
	if (version == 0) {
		return ctl_usage("provider retire", "--version N is required");
	}
	r.name = argv[optind];
	r.version = (uint32_t)version;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE;
	q.provider_retire = &r;
	return ctl_provider_reply(c, &q, "provider retire");
}

static int p_list(ctl *c, int argc, char **argv)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderListRequest r = NKP__ADMIN__PROVIDER_LIST_REQUEST__INIT;
	ctl_resp *resp = NULL;
	const Nkp__Admin__ProviderList *l;
	int rc;

	rc = ctl_parse_plain(c, argc, argv, "provider list", help, NULL, NULL);
	if (rc >= 0) {
		return rc;
	}
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_LIST;
	q.provider_list = &r;
	if (ctl_call(c, &q, "provider list", &resp) != 0) {
		return 1;
	}
	if (resp->result_case != NKP__ADMIN__RESPONSE__RESULT_PROVIDERS) {
		ctl_resp_free(resp);
		return ctl_fail("provider list", "unexpected reply from nkpd");
	}
	l = resp->providers;
	if (c->json) {
		printf("[");
		for (size_t i = 0; i < l->n_providers; i++) {
			printf(i ? ",\n" : "\n");
			ctl_print_provider_json(stdout, l->providers[i]);
		}
		printf("%s]\n", l->n_providers ? "\n" : "");
	} else {
		printf("%-24s %-8s %-10s %-7s %-9s %s\n", "NAME", "DEFAULT", "BACKED-UP", "ACTIVE",
		       "VERSIONS", "HOSTS IN SYNC");
		for (size_t i = 0; i < l->n_providers; i++) {
			const Nkp__Admin__ProviderInfo *p = l->providers[i];

			printf("%-24s %-8s %-10s %-7u %-9zu %u/%u%s%s\n", p->name,
			       p->is_default ? "yes" : "no",
			       !p->backed_up	 ? "no"
			       : p->backup_stale ? "stale"
						 : "yes",
			       p->active_version, p->n_versions, p->hosts_in_sync, p->hosts_total,
			       p->scope_note[0] ? "  " : "", p->scope_note);
		}
	}
	ctl_resp_free(resp);
	return 0;
}

int provider_main(ctl *c, int argc, char **argv)
{
	static const ctl_sub subs[] = {
		{"create", p_create},		{"list", p_list},	 {"show", p_show},
		{"set-default", p_set_default}, {"backup", backup_main}, {"restore", restore_main},
		{"rotate", rotate_main},	{"retire", p_retire},	 {"delete", p_delete},
	};

	return ctl_dispatch(c, "provider", subs, sizeof(subs) / sizeof(subs[0]), help,
			    "a subcommand is required (see --help)", argc, argv);
}
