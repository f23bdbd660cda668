/* Views and results of the core, encoded as proto/admin.proto messages.
 * Replies hold no secret but a backup file (sealed under the operator's
 * password). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/translate.h"
#include "core/kms.h"
#include "internal.h"

static char *xstrdup(const char *s)
{
	size_t n = s == NULL ? 0 : strlen(s);
	char *d = nkpd_util_xcalloc(n + 1, 1);

	if (n > 0) {
		memcpy(d, s, n);
	}
	return d;
}

static ProtobufCBinaryData xbytes(const uint8_t *data, size_t len)
{
	ProtobufCBinaryData b = {.len = len, .data = nkpd_util_xcalloc(len, 1)};

	memcpy(b.data, data, len);
	return b;
}

static void set_message(admin_resp *resp, nkp_err code, const char *msg)
{
	if (resp->message != protobuf_c_empty_string) {
		free(resp->message);
	}
	resp->code = (uint32_t)code;
	resp->message = xstrdup(msg);
}

void nkpd_api_fail(admin_resp *resp, nkp_err code, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	set_message(resp, code, buf);
}

void nkpd_api_free(admin_resp *resp)
{
	if (resp != NULL) {
		nkp__admin__response__free_unpacked(resp, NULL);
	}
}

void nkpd_api_status(admin_resp *resp, const nkpd_status_view *v)
{
	Nkp__Admin__ServiceStatus *st = nkpd_util_xcalloc(1, sizeof(*st));

	nkp__admin__service_status__init(st);
	st->public_key = xbytes(v->public_key, NKP_PUBKEY_BYTES);
	st->generation = v->generation;
	st->hosts_total = v->hosts_total;
	st->hosts_in_sync = v->hosts_in_sync;
	st->hosts_unreachable = v->hosts_unreachable;
	st->providers = v->providers;
	st->providers_not_backed_up = v->providers_not_backed_up;
	st->default_provider = xstrdup(v->default_provider);
	st->version = xstrdup(v->version);
	st->started_unix = v->started_unix;
	st->state_dir = xstrdup(v->state_dir);
	st->keys_at_rest = xstrdup(v->keys_at_rest);
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_STATUS;
	resp->status = st;
}

static Nkp__Admin__HostInfo *host_info(const nkpd_host_view *h)
{
	Nkp__Admin__HostInfo *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__host_info__init(m);
	m->name = xstrdup(h->name);
	m->address = xstrdup(h->address);
	m->cluster = xstrdup(h->cluster);
	m->state = xstrdup(h->state);
	m->applied_generation = h->applied_generation;
	m->last_error = xstrdup(h->last_error);
	m->public_key = xbytes(h->public_key, NKP_PUBKEY_BYTES);
	m->tpm = h->tpm;
	m->last_contact_unix = h->last_contact_unix;
	m->host_name = xstrdup(h->host_name);
	m->attestation = xstrdup(h->attestation);
	m->attestation_reason = xstrdup(h->attestation_reason);
	m->baseline = xstrdup(h->baseline);
	m->seal_policy = xstrdup(h->seal_policy);
	m->seal_policy_error = xstrdup(h->seal_policy_error);
	m->attested_unix = h->attested_unix;
	return m;
}

void nkpd_api_baselines(admin_resp *resp, const nkpd_baseline *b, size_t n)
{
	Nkp__Admin__BaselineList *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__baseline_list__init(m);
	m->n_baselines = n;
	m->baselines = nkpd_util_xcalloc(n + 1, sizeof(*m->baselines));
	for (size_t i = 0; i < n; i++) {
		Nkp__Admin__BaselineInfo *e = nkpd_util_xcalloc(1, sizeof(*e));

		nkp__admin__baseline_info__init(e);
		e->name = xstrdup(b[i].name);
		e->pcr_mask = b[i].pcr_mask;
		e->pcr_digest = xbytes(b[i].pcr_digest, sizeof(b[i].pcr_digest));
		e->from_host = xstrdup(b[i].from_host);
		e->created_unix = b[i].created_unix;
		m->baselines[i] = e;
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_BASELINES;
	resp->baselines = m;
}

void nkpd_api_hosts(admin_resp *resp, const nkpd_host_list *l)
{
	Nkp__Admin__HostList *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__host_list__init(m);
	m->n_hosts = l->n_hosts;
	m->hosts = nkpd_util_xcalloc(l->n_hosts, sizeof(*m->hosts));
	for (size_t i = 0; i < l->n_hosts; i++) {
		m->hosts[i] = host_info(&l->hosts[i]);
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_HOSTS;
	resp->hosts = m;
}

static Nkp__Admin__RotationInfo *rotation_info(const nkpd_rotation_view *v)
{
	Nkp__Admin__RotationInfo *r = nkpd_util_xcalloc(1, sizeof(*r));

	nkp__admin__rotation_info__init(r);
	r->state = xstrdup(v->state);
	r->version = v->version;
	r->deadline_unix = v->deadline_unix;
	r->message = xstrdup(v->message);
	r->acked = v->acked;
	r->total = v->total;
	if (v->missing != NULL) {
		r->missing = nkpd_util_xcalloc(v->n_missing, sizeof(*r->missing));
		for (size_t i = 0; i < v->n_missing; i++) {
			r->missing[i] = xstrdup(v->missing[i]);
		}
		r->n_missing = v->n_missing;
	}
	return r;
}

void nkpd_api_rotation(admin_resp *resp, const nkpd_rotation_view *v)
{
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_ROTATION;
	resp->rotation = rotation_info(v);
}

static Nkp__Admin__VersionInfo *version_info(const nkpd_version_view *v)
{
	Nkp__Admin__VersionInfo *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__version_info__init(m);
	m->version = v->version;
	m->state = (uint32_t)v->state;
	m->created_unix = v->created_unix;
	m->hosts_holding = v->hosts_holding;
	m->keysafes = v->keysafes;
	m->created = v->created;
	m->rewrapped = v->rewrapped;
	m->unwrapped = v->unwrapped;
	m->last_used_unix = v->last_used_unix;
	return m;
}

static Nkp__Admin__ProviderInfo *provider_info(const nkpd_provider_view *p)
{
	Nkp__Admin__ProviderInfo *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__provider_info__init(m);
	m->name = xstrdup(p->name);
	m->id = xbytes(p->id, NKP_ID_BYTES);
	m->is_default = p->is_default;
	m->backed_up = p->backed_up;
	m->backup_stale = p->backup_stale;
	m->tpm_only = p->tpm_only;
	m->created_unix = p->created_unix;
	m->backed_up_unix = p->backed_up_unix;
	m->active_version = p->active_version;
	m->n_versions = p->n_versions;
	m->versions = nkpd_util_xcalloc(p->n_versions, sizeof(*m->versions));
	for (size_t i = 0; i < p->n_versions; i++) {
		m->versions[i] = version_info(&p->versions[i]);
	}
	m->hosts_total = p->hosts_total;
	m->hosts_in_sync = p->hosts_in_sync;
	m->scope_note = xstrdup(p->scope_note);
	m->rotation = rotation_info(&p->rotation);
	m->kind = xstrdup(nkpd_kind_name(p->kind));
	m->n_kms = p->n_kms;
	m->kms = nkpd_util_xcalloc(p->n_kms + 1, sizeof(*m->kms));
	for (size_t i = 0; i < p->n_kms; i++) {
		Nkp__Admin__KmsServerInfo *k = nkpd_util_xcalloc(1, sizeof(*k));

		nkp__admin__kms_server_info__init(k);
		k->url = xstrdup(p->kms[i].url);
		k->state = xstrdup(nkpd_kms_reach_name(p->kms[i].reach));
		k->error = xstrdup(p->kms[i].error);
		k->checked_unix = p->kms[i].checked_unix;
		m->kms[i] = k;
	}
	m->keys_in_use = p->keys_in_use;
	m->spare_pool = p->spare_pool;
	m->spares = p->spares;
	m->n_kms_keys = p->n_kms_keys;
	m->kms_keys = nkpd_util_xcalloc(p->n_kms_keys + 1, sizeof(*m->kms_keys));
	for (size_t i = 0; i < p->n_kms_keys; i++) {
		const nkpd_kms_key *src = &p->kms_keys[i];
		Nkp__Admin__KmsKeyInfo *k = nkpd_util_xcalloc(1, sizeof(*k));

		nkp__admin__kms_key_info__init(k);
		k->id = xstrdup(src->id);
		k->state = xstrdup(src->state == NKPD_KMS_KEY_SPARE ? "spare" : "in-use");
		k->host = xstrdup(src->host);
		k->vm_uuid = xstrdup(src->vm_uuid);
		k->vm_name = xstrdup(src->vm_name);
		k->attributes_set = src->attributes_set;
		m->kms_keys[i] = k;
	}
	return m;
}

void nkpd_api_provider(admin_resp *resp, const nkpd_provider_view *v)
{
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_PROVIDER;
	resp->provider = provider_info(v);
}

void nkpd_api_providers(admin_resp *resp, const nkpd_provider_list *l)
{
	Nkp__Admin__ProviderList *m = nkpd_util_xcalloc(1, sizeof(*m));

	nkp__admin__provider_list__init(m);
	m->n_providers = l->n_providers;
	m->providers = nkpd_util_xcalloc(l->n_providers, sizeof(*m->providers));
	for (size_t i = 0; i < l->n_providers; i++) {
		m->providers[i] = provider_info(&l->providers[i]);
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_PROVIDERS;
	resp->providers = m;
}

static void usage_refusal(admin_resp *resp, const nkpd_usage_refusal *v)
{
	Nkp__Admin__UsageRefusal *u = nkpd_util_xcalloc(1, sizeof(*u));

	nkp__admin__usage_refusal__init(u);
	u->keysafes = v->keysafes;
	u->hosts = nkpd_util_xcalloc(v->n_hosts, sizeof(*u->hosts));
	for (size_t i = 0; i < v->n_hosts; i++) {
		Nkp__Admin__HostUsage *e = nkpd_util_xcalloc(1, sizeof(*e));

		nkp__admin__host_usage__init(e);
		e->host = xstrdup(v->hosts[i].host);
		e->version = v->hosts[i].version;
		e->keysafes = v->hosts[i].keysafes;
		u->hosts[u->n_hosts++] = e;
	}
	u->not_answered = nkpd_util_xcalloc(v->n_not_answered, sizeof(*u->not_answered));
	for (size_t i = 0; i < v->n_not_answered; i++) {
		u->not_answered[u->n_not_answered++] = xstrdup(v->not_answered[i]);
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_USAGE_REFUSAL;
	resp->usage_refusal = u;
}

/* The file moves into the reply: it is freed with it. */
static void backup_file(admin_resp *resp, nkpd_backup_file *f)
{
	Nkp__Admin__BackupResult *b = nkpd_util_xcalloc(1, sizeof(*b));

	nkp__admin__backup_result__init(b);
	b->provider_id = xbytes(f->provider_id, NKP_ID_BYTES);
	b->max_version = f->max_version;
	b->file.data = f->file;
	b->file.len = f->len;
	f->file = NULL;
	f->len = 0;
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_BACKUP;
	resp->backup = b;
}

void nkpd_api_result(admin_resp *resp, nkpd_result *r)
{
	if (r->code != NKP_OK || r->message[0] != '\0') {
		set_message(resp, r->code, r->message);
	}
	switch (r->payload) {
	case NKPD_PAYLOAD_PROVIDER:
		nkpd_api_provider(resp, r->u.provider);
		break;
	case NKPD_PAYLOAD_ROTATION:
		nkpd_api_rotation(resp, r->u.rotation);
		break;
	case NKPD_PAYLOAD_USAGE_REFUSAL:
		usage_refusal(resp, r->u.usage_refusal);
		break;
	case NKPD_PAYLOAD_BACKUP:
		backup_file(resp, &r->u.backup);
		break;
	default:
		break;
	}
}
