/* Admin replies: status, hosts, providers, rotations. Replies hold no
 * secret. Everything in a Response is heap memory owned by it and freed by
 * report_free_response() (protobuf-c's free_unpacked with the default
 * allocator); small reply allocations abort on exhaustion rather than
 * thread failure paths through every builder. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nkpd.h"

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n == 0 ? 1 : n, size);

	if (p == NULL) {
		nkp_log(NKP_LOG_ERR, "NKPD-NOMEM", "out of memory building a reply");
		abort();
	}
	return p;
}

static char *xstrdup(const char *s)
{
	size_t n = s == NULL ? 0 : strlen(s);
	char *d = xcalloc(n + 1, 1);

	if (n > 0) {
		memcpy(d, s, n);
	}
	return d;
}

static ProtobufCBinaryData xbytes(const uint8_t *data, size_t len)
{
	ProtobufCBinaryData b = {.len = len, .data = xcalloc(len, 1)};

	memcpy(b.data, data, len);
	return b;
}

NKP_PRINTF(3, 0)
static void resp_vset(admin_resp *resp, nkp_err code, const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (resp->message != protobuf_c_empty_string) {
		free(resp->message);
	}
	resp->code = (uint32_t)code;
	resp->message = xstrdup(buf);
}

void resp_fail(admin_resp *resp, nkp_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	resp_vset(resp, code, fmt, ap);
	va_end(ap);
}

void resp_ok(admin_resp *resp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	resp_vset(resp, NKP_OK, fmt, ap);
	va_end(ap);
}

void report_free_response(admin_resp *resp)
{
	if (resp != NULL) {
		nkp__admin__response__free_unpacked(resp, NULL);
	}
}

void report_status(svc *s, admin_resp *resp)
{
	Nkp__Admin__ServiceStatus *st = xcalloc(1, sizeof(*st));
	const svc_provider *def = svc_provider_default(s);

	nkp__admin__service_status__init(st);
	st->public_key = xbytes(nkp_identity_public(s->identity), NKP_PUBKEY_BYTES);
	st->generation = s->generation;
	st->hosts_total = (uint32_t)s->n_hosts;
	for (size_t i = 0; i < s->n_hosts; i++) {
		st->hosts_in_sync += svc_host_in_sync(s, s->hosts[i]);
		st->hosts_unreachable += s->hosts[i]->health == HEALTH_UNREACHABLE;
	}
	st->providers = (uint32_t)s->n_providers;
	for (size_t i = 0; i < s->n_providers; i++) {
		st->providers_not_backed_up += !s->providers[i]->backed_up;
	}
	st->default_provider = xstrdup(def != NULL ? def->name : "");
	st->version = xstrdup(nkp_version());
	st->started_unix = s->started_unix;
	st->state_dir = xstrdup(s->dir);
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_STATUS;
	resp->status = st;
}

static Nkp__Admin__HostInfo *host_info(svc *s, const svc_host *h)
{
	Nkp__Admin__HostInfo *m = xcalloc(1, sizeof(*m));

	nkp__admin__host_info__init(m);
	m->name = xstrdup(h->name);
	m->address = xstrdup(h->address);
	m->cluster = xstrdup(h->cluster);
	m->state = xstrdup(svc_host_state_name(s, h));
	m->applied_generation = h->applied_generation;
	m->last_error = xstrdup(h->last_error);
	m->public_key = xbytes(h->pub, NKP_PUBKEY_BYTES);
	m->tpm = h->tpm;
	m->last_contact_unix = h->last_contact_unix;
	m->host_name = xstrdup(h->host_name);
	return m;
}

void report_hosts(svc *s, admin_resp *resp)
{
	Nkp__Admin__HostList *l = xcalloc(1, sizeof(*l));

	nkp__admin__host_list__init(l);
	l->n_hosts = s->n_hosts;
	l->hosts = xcalloc(s->n_hosts, sizeof(*l->hosts));
	for (size_t i = 0; i < s->n_hosts; i++) {
		l->hosts[i] = host_info(s, s->hosts[i]);
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_HOSTS;
	resp->hosts = l;
}

/* Missing hosts of a rotation, in scope and not yet at its generation. */
static size_t rotation_missing(svc *s, const svc_provider *p, char **names, size_t max,
			       uint32_t *acked, uint32_t *total)
{
	size_t n = 0;

	*acked = 0;
	*total = 0;
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		if (!svc_host_in_scope(h, p)) {
			continue;
		}
		(*total)++;
		if (h->acked_generation >= p->rot.stage_generation) {
			(*acked)++;
		} else if (names != NULL && n < max) {
			names[n++] = xstrdup(h->name);
		}
	}
	return n;
}

Nkp__Admin__RotationInfo *report_rotation_info(svc *s, const svc_provider *p)
{
	static const char *const names[] = {"none", "waiting", "promoted", "failed"};
	Nkp__Admin__RotationInfo *r = xcalloc(1, sizeof(*r));

	nkp__admin__rotation_info__init(r);
	r->state = xstrdup(names[p->rot.state]);
	r->version = p->rot.version;
	r->deadline_unix = p->rot.deadline_unix;
	r->message = xstrdup(p->rot.message);
	if (p->rot.state != ROT_NONE) {
		r->missing = xcalloc(s->n_hosts, sizeof(*r->missing));
		r->n_missing = rotation_missing(s, p, r->missing, s->n_hosts, &r->acked, &r->total);
	}
	return r;
}

void report_rotation(svc *s, const svc_provider *p, admin_resp *resp)
{
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_ROTATION;
	resp->rotation = report_rotation_info(s, p);
}

static void version_usage(svc *s, const svc_provider *p, Nkp__Admin__VersionInfo *v)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		if (svc_host_in_scope(h, p) && h->acked_generation > 0) {
			v->hosts_holding++;
		}
		for (size_t j = 0; j < h->n_usage; j++) {
			const svc_usage *u = &h->usage[j];

			if (u->version != v->version ||
			    memcmp(u->provider_id, p->id, NKP_ID_BYTES)) {
				continue;
			}
			v->keysafes = nkpi_sat_add(v->keysafes, u->keysafes);
			v->created = nkpi_sat_add(v->created, u->created);
			v->rewrapped = nkpi_sat_add(v->rewrapped, u->rewrapped);
			v->unwrapped = nkpi_sat_add(v->unwrapped, u->unwrapped);
			if (u->last_used_unix > v->last_used_unix) {
				v->last_used_unix = u->last_used_unix;
			}
		}
	}
}

static void provider_versions(svc *s, const svc_provider *p, Nkp__Admin__ProviderInfo *m)
{
	m->n_versions = p->n_versions;
	m->versions = xcalloc(p->n_versions, sizeof(*m->versions));
	for (size_t i = 0; i < p->n_versions; i++) {
		Nkp__Admin__VersionInfo *v = xcalloc(1, sizeof(*v));

		nkp__admin__version_info__init(v);
		v->version = p->versions[i].version;
		v->state = (uint32_t)p->versions[i].state;
		v->created_unix = p->versions[i].created_unix;
		version_usage(s, p, v);
		m->versions[i] = v;
		if (p->versions[i].state == NKP_VERSION_ACTIVE) {
			m->active_version = v->version;
		}
	}
}

static Nkp__Admin__ProviderInfo *provider_info(svc *s, const svc_provider *p)
{
	Nkp__Admin__ProviderInfo *m = xcalloc(1, sizeof(*m));

	nkp__admin__provider_info__init(m);
	m->name = xstrdup(p->name);
	m->id = xbytes(p->id, NKP_ID_BYTES);
	m->is_default = p->is_default;
	m->backed_up = p->backed_up;
	m->backup_stale = p->backed_up && svc_version_max(p) > p->backup_max_version;
	m->tpm_only = p->tpm_only;
	m->created_unix = p->created_unix;
	m->backed_up_unix = p->backed_up_unix;
	provider_versions(s, p, m);
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (svc_host_in_scope(s->hosts[i], p)) {
			m->hosts_total++;
			m->hosts_in_sync += svc_host_in_sync(s, s->hosts[i]);
		}
	}
	if (p->tpm_only) {
		m->scope_note = xstrdup("no host is attested: tpm-only providers are pushed to "
					"attested hosts only; attestation is not available yet");
	} else {
		m->scope_note = xstrdup("");
	}
	m->rotation = report_rotation_info(s, p);
	return m;
}

void report_providers(svc *s, admin_resp *resp)
{
	Nkp__Admin__ProviderList *l = xcalloc(1, sizeof(*l));

	nkp__admin__provider_list__init(l);
	l->n_providers = s->n_providers;
	l->providers = xcalloc(s->n_providers, sizeof(*l->providers));
	for (size_t i = 0; i < s->n_providers; i++) {
		l->providers[i] = provider_info(s, s->providers[i]);
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_PROVIDERS;
	resp->providers = l;
}

void report_provider(svc *s, const char *name, admin_resp *resp)
{
	const svc_provider *p = svc_provider_find(s, name);

	if (p == NULL) {
		resp_fail(resp, NKP_ERR_NOT_FOUND, "no provider named %s", name);
		return;
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_PROVIDER;
	resp->provider = provider_info(s, p);
}

static bool usage_counts(const svc_usage *u, const svc_provider *p, uint32_t version)
{
	return u->keysafes > 0 && memcmp(u->provider_id, p->id, NKP_ID_BYTES) == 0 &&
	       (version == 0 || u->version == version);
}

void report_usage_refusal(svc *s, const svc_provider *p, uint32_t version, admin_resp *resp)
{
	Nkp__Admin__UsageRefusal *u = xcalloc(1, sizeof(*u));
	size_t n = 0, m = 0;

	nkp__admin__usage_refusal__init(u);
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		for (size_t j = 0; j < h->n_usage; j++) {
			n += usage_counts(&h->usage[j], p, version);
		}
		m += h->asked_round == s->usage_round && s->usage_round != 0 &&
		     h->answered_round != s->usage_round;
	}
	u->hosts = xcalloc(n, sizeof(*u->hosts));
	u->not_answered = xcalloc(m, sizeof(*u->not_answered));
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		for (size_t j = 0; j < h->n_usage; j++) {
			Nkp__Admin__HostUsage *e;

			if (!usage_counts(&h->usage[j], p, version)) {
				continue;
			}
			e = xcalloc(1, sizeof(*e));
			nkp__admin__host_usage__init(e);
			e->host = xstrdup(h->name);
			e->version = h->usage[j].version;
			e->keysafes = h->usage[j].keysafes;
			u->keysafes = nkpi_sat_add(u->keysafes, e->keysafes);
			u->hosts[u->n_hosts++] = e;
		}
		if (h->asked_round == s->usage_round && s->usage_round != 0 &&
		    h->answered_round != s->usage_round) {
			u->not_answered[u->n_not_answered++] = xstrdup(h->name);
		}
	}
	resp->result_case = NKP__ADMIN__RESPONSE__RESULT_USAGE_REFUSAL;
	resp->usage_refusal = u;
}
