/* Reports: status, hosts, providers, rotations, usage refusals, as C
 * views built under nkpd_svc.lock (see core/views.h). Views hold no secret;
 * small allocations abort on exhaustion rather than thread failure paths
 * through every builder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "internal.h"

static void status_fill(nkpd_svc *s, nkpd_status_view *st)
{
	const nkpd_provider *def = nkpd_model_provider_default(s);

	memcpy(st->public_key, nkp_identity_public(s->identity), NKP_PUBKEY_BYTES);
	st->generation = s->generation;
	st->hosts_total = (uint32_t)s->n_hosts;
	for (size_t i = 0; i < s->n_hosts; i++) {
		st->hosts_in_sync += nkpd_host_in_sync(s, s->hosts[i]);
		st->hosts_unreachable += s->hosts[i]->st.health == HEALTH_UNREACHABLE;
	}
	st->providers = (uint32_t)s->n_providers;
	for (size_t i = 0; i < s->n_providers; i++) {
		st->providers_not_backed_up += !s->providers[i]->backed_up;
	}
	nkpd_util_copy_str(st->default_provider, sizeof(st->default_provider),
			   def != NULL ? def->name : "");
	st->version = nkp_version();
	st->keys_at_rest = nkpi_atrest_name(s->at_rest);
	st->started_unix = s->started_unix;
	nkpd_util_copy_str(st->state_dir, sizeof(st->state_dir), s->dir);
}

void nkpd_report_status(nkpd_svc *s, nkpd_status_view **out)
{
	nkpd_status_view *st = nkpd_util_xcalloc(1, sizeof(*st));

	pthread_mutex_lock(&s->lock);
	status_fill(s, st);
	pthread_mutex_unlock(&s->lock);
	*out = st;
}

static void host_fill(nkpd_svc *s, const nkpd_host *h, nkpd_host_view *m)
{
	nkpd_util_copy_str(m->name, sizeof(m->name), h->conf.name);
	nkpd_util_copy_str(m->address, sizeof(m->address), h->conf.address);
	nkpd_util_copy_str(m->cluster, sizeof(m->cluster), h->conf.cluster);
	m->state = nkpd_host_state_name(s, h);
	m->applied_generation = h->st.applied_generation;
	nkpd_util_copy_str(m->last_error, sizeof(m->last_error), h->st.last_error);
	memcpy(m->public_key, h->conf.pub, NKP_PUBKEY_BYTES);
	m->tpm = h->st.tpm;
	m->last_contact_unix = h->st.last_contact_unix;
	nkpd_util_copy_str(m->host_name, sizeof(m->host_name), h->st.host_name);
	m->attestation = h->att.state == ATTEST_TRUSTED	    ? "trusted"
			 : h->att.state == ATTEST_UNTRUSTED ? "untrusted"
							    : "none";
	nkpd_util_copy_str(m->attestation_reason, sizeof(m->attestation_reason), h->att.reason);
	nkpd_util_copy_str(m->baseline, sizeof(m->baseline), h->att.baseline);
	m->attested_unix = h->att.attested_unix;
	m->seal_policy = nkpd_sealpol_state(s, h);
	nkpd_util_copy_str(m->seal_policy_error, sizeof(m->seal_policy_error), h->st.seal_error);
}

void nkpd_report_hosts(nkpd_svc *s, nkpd_host_list **out)
{
	nkpd_host_list *l = nkpd_util_xcalloc(1, sizeof(*l));

	pthread_mutex_lock(&s->lock);
	l->n_hosts = s->n_hosts;
	l->hosts = nkpd_util_xcalloc(s->n_hosts, sizeof(*l->hosts));
	for (size_t i = 0; i < s->n_hosts; i++) {
		host_fill(s, s->hosts[i], &l->hosts[i]);
	}
	pthread_mutex_unlock(&s->lock);
	*out = l;
}

/* Missing hosts of a rotation, in scope and not yet at its generation. */
static size_t rotation_missing(nkpd_svc *s, const nkpd_provider *p, nkpd_name *names, size_t max,
			       uint32_t *acked, uint32_t *total)
{
	size_t n = 0;

	*acked = 0;
	*total = 0;
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		if (!nkpd_host_in_scope(h, p)) {
			continue;
		}
		(*total)++;
		if (nkpd_host_acked(h, p) >= p->rot.stage_generation) {
			(*acked)++;
		} else if (names != NULL && n < max) {
			nkpd_util_copy_str(names[n++], sizeof(names[0]), h->conf.name);
		}
	}
	return n;
}

static void rotation_fill(nkpd_svc *s, const nkpd_provider *p, nkpd_rotation_view *r)
{
	static const char *const names[] = {"none", "waiting", "promoted", "failed"};

	r->state = names[p->rot.state];
	r->version = p->rot.version;
	r->deadline_unix = p->rot.deadline_unix;
	nkpd_util_copy_str(r->message, sizeof(r->message), p->rot.message);
	if (p->rot.state != ROT_NONE) {
		r->missing = nkpd_util_xcalloc(s->n_hosts, sizeof(*r->missing));
		r->n_missing = rotation_missing(s, p, r->missing, s->n_hosts, &r->acked, &r->total);
	}
}

nkpd_rotation_view *nkpd_report_rotation_locked(nkpd_svc *s, const nkpd_provider *p)
{
	nkpd_rotation_view *r = nkpd_util_xcalloc(1, sizeof(*r));

	rotation_fill(s, p, r);
	return r;
}

nkp_err nkpd_report_rotation(nkpd_svc *s, const char *name, nkpd_rotation_view **out)
{
	const nkpd_provider *p;
	nkp_err err = NKP_ERR_NOT_FOUND;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, name);
	if (p != NULL) {
		*out = nkpd_report_rotation_locked(s, p);
		err = NKP_OK;
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

static void version_usage(nkpd_svc *s, const nkpd_provider *p, nkpd_version_view *v)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		if (nkpd_host_in_scope(h, p) && nkpd_host_acked(h, p) > 0) {
			v->hosts_holding++;
		}
		for (size_t j = 0; j < h->st.n_usage; j++) {
			const nkpd_usage *u = &h->st.usage[j];

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

static void provider_versions(nkpd_svc *s, const nkpd_provider *p, nkpd_provider_view *m)
{
	m->n_versions = p->n_versions;
	m->versions = nkpd_util_xcalloc(p->n_versions, sizeof(*m->versions));
	for (size_t i = 0; i < p->n_versions; i++) {
		nkpd_version_view *v = &m->versions[i];

		v->version = p->versions[i].version;
		v->state = p->versions[i].state;
		v->created_unix = p->versions[i].created_unix;
		version_usage(s, p, v);
		if (p->versions[i].state == NKP_VERSION_ACTIVE) {
			m->active_version = v->version;
		}
	}
}

static void provider_fill(nkpd_svc *s, const nkpd_provider *p, nkpd_provider_view *m)
{
	nkpd_util_copy_str(m->name, sizeof(m->name), p->name);
	memcpy(m->id, p->id, NKP_ID_BYTES);
	m->is_default = p->is_default;
	m->backed_up = p->backed_up;
	m->backup_stale = p->backed_up && nkpd_model_version_max(p) > p->backup_max_version;
	m->tpm_only = p->tpm_only;
	m->created_unix = p->created_unix;
	m->backed_up_unix = p->backed_up_unix;
	provider_versions(s, p, m);
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (nkpd_host_in_scope(s->hosts[i], p)) {
			m->hosts_total++;
			m->hosts_in_sync += nkpd_host_in_sync(s, s->hosts[i]);
		}
	}
	m->scope_note = p->tpm_only && m->hosts_total == 0
				? "trusted: no host is attested with an approved baseline yet"
			: p->tpm_only ? "trusted: attested hosts only"
				      : "";
	rotation_fill(s, p, &m->rotation);
	m->kind = p->kind;
	if (p->kind == NKPD_KIND_STANDARD) {
		m->n_kms = p->kms->n_servers;
		m->spare_pool = p->kms->spare_pool;
		for (size_t i = 0; i < m->n_kms; i++) {
			nkpd_kms_server_view *v = &m->kms[i];

			snprintf(v->url, sizeof(v->url), "%s", p->kms->servers[i]);
			v->reach = p->kms_state[i].reach;
			snprintf(v->error, sizeof(v->error), "%s", p->kms_state[i].error);
			v->checked_unix = p->kms_state[i].checked_unix;
		}
		m->n_kms_keys =
			p->n_kms_keys < NKPD_KMS_LIST_MAX ? p->n_kms_keys : NKPD_KMS_LIST_MAX;
		m->kms_keys = nkpd_util_xcalloc(m->n_kms_keys + 1, sizeof(*m->kms_keys));
		if (m->n_kms_keys != 0) {
			memcpy(m->kms_keys, p->kms_keys, m->n_kms_keys * sizeof(*m->kms_keys));
		}
		for (size_t i = 0; i < p->n_kms_keys; i++) {
			m->spares += p->kms_keys[i].state == NKPD_KMS_KEY_SPARE;
			m->keys_in_use += p->kms_keys[i].state == NKPD_KMS_KEY_IN_USE;
		}
		m->scope_note = "standard: keys from its KMS; hosts make no VM keys under it yet";
	}
}

nkpd_provider_view *nkpd_report_provider_locked(nkpd_svc *s, const nkpd_provider *p)
{
	nkpd_provider_view *m = nkpd_util_xcalloc(1, sizeof(*m));

	provider_fill(s, p, m);
	return m;
}

nkp_err nkpd_report_provider(nkpd_svc *s, const char *name, nkpd_provider_view **out)
{
	const nkpd_provider *p;
	nkp_err err = NKP_ERR_NOT_FOUND;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, name);
	if (p != NULL) {
		*out = nkpd_report_provider_locked(s, p);
		err = NKP_OK;
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

void nkpd_report_providers(nkpd_svc *s, nkpd_provider_list **out)
{
	nkpd_provider_list *l = nkpd_util_xcalloc(1, sizeof(*l));

	pthread_mutex_lock(&s->lock);
	l->n_providers = s->n_providers;
	l->providers = nkpd_util_xcalloc(s->n_providers, sizeof(*l->providers));
	for (size_t i = 0; i < s->n_providers; i++) {
		provider_fill(s, s->providers[i], &l->providers[i]);
	}
	pthread_mutex_unlock(&s->lock);
	*out = l;
}

static bool usage_counts(const nkpd_usage *u, const nkpd_provider *p, uint32_t version)
{
	return u->keysafes > 0 && memcmp(u->provider_id, p->id, NKP_ID_BYTES) == 0 &&
	       (version == 0 || u->version == version);
}

static bool round_missed(const nkpd_svc *s, const nkpd_host *h)
{
	return h->st.asked_round == s->usage_round && s->usage_round != 0 &&
	       h->st.answered_round != s->usage_round;
}

nkpd_usage_refusal *nkpd_report_usage_refusal_locked(nkpd_svc *s, const nkpd_provider *p,
						     uint32_t version)
{
	nkpd_usage_refusal *u = nkpd_util_xcalloc(1, sizeof(*u));
	size_t n = 0, m = 0;

	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		for (size_t j = 0; j < h->st.n_usage; j++) {
			n += usage_counts(&h->st.usage[j], p, version);
		}
		m += round_missed(s, h);
	}
	u->hosts = nkpd_util_xcalloc(n, sizeof(*u->hosts));
	u->not_answered = nkpd_util_xcalloc(m, sizeof(*u->not_answered));
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		for (size_t j = 0; j < h->st.n_usage; j++) {
			nkpd_host_usage *e;

			if (!usage_counts(&h->st.usage[j], p, version)) {
				continue;
			}
			e = &u->hosts[u->n_hosts++];
			nkpd_util_copy_str(e->host, sizeof(e->host), h->conf.name);
			e->version = h->st.usage[j].version;
			e->keysafes = h->st.usage[j].keysafes;
			u->keysafes = nkpi_sat_add(u->keysafes, e->keysafes);
		}
		if (round_missed(s, h)) {
			nkpd_util_copy_str(u->not_answered[u->n_not_answered++], sizeof(nkpd_name),
					   h->conf.name);
		}
	}
	return u;
}

void nkpd_events_read(nkpd_svc *s, uint64_t after_seq,
		      void (*fn)(uint64_t seq, const char *json, void *arg), void *arg)
{
	(void)nkp_eventlog_read(s->events_path, after_seq, fn, arg);
}

/* ---- freeing ---- */

void nkpd_status_view_free(nkpd_status_view *v)
{
	free(v);
}

void nkpd_host_list_free(nkpd_host_list *l)
{
	if (l != NULL) {
		free(l->hosts);
		free(l);
	}
}

static void provider_fini(nkpd_provider_view *v)
{
	free(v->versions);
	free(v->rotation.missing);
	free(v->kms_keys);
}

void nkpd_provider_view_free(nkpd_provider_view *v)
{
	if (v != NULL) {
		provider_fini(v);
		free(v);
	}
}

void nkpd_provider_list_free(nkpd_provider_list *l)
{
	if (l == NULL) {
		return;
	}
	for (size_t i = 0; i < l->n_providers; i++) {
		provider_fini(&l->providers[i]);
	}
	free(l->providers);
	free(l);
}

void nkpd_rotation_view_free(nkpd_rotation_view *v)
{
	if (v != NULL) {
		free(v->missing);
		free(v);
	}
}

void nkpd_usage_refusal_free(nkpd_usage_refusal *u)
{
	if (u != NULL) {
		free(u->hosts);
		free(u->not_answered);
		free(u);
	}
}
