/* Standard providers' KMS servers over KMIP (keysource/kmip.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/kms.h"
#include "internal.h"
#include "keysource/kmip.h"
#include "kmip-client.h"

/* A KMIP client of settings `k`. */
static nkp_err client_new(const nkpd_kms *k, unsigned timeout_ms, nkpi_kmip **c, char *why,
			  size_t why_len)
{
	const char *urls[NKPD_KMS_SERVERS_MAX];
	nkpi_kmip_config cfg = {
		.servers = urls,
		.n_servers = k->n_servers,
		.ca_pem = k->ca_pem,
		.ca_len = k->ca_len,
		.cert_pem = k->cert_pem,
		.cert_len = k->cert_len,
		.key_pem = k->key_pem,
		.key_len = k->key_len,
		.timeout_ms = timeout_ms,
	};

	for (size_t i = 0; i < k->n_servers; i++) {
		urls[i] = k->servers[i];
	}
	return nkpi_kmip_new(&cfg, c, why, why_len);
}

/* Asks each server of `k` through client `c` whether it answers; out[i]
 * says what it did. NKP_OK if one answered, else NKP_ERR_NET with the
 * reasons in `why`. */
static nkp_err probe_all(nkpi_kmip *c, const nkpd_kms *k,
			 nkpd_kms_server_state out[NKPD_KMS_SERVERS_MAX], char *why, size_t why_len)
{
	size_t answered = 0, used = 0;

	for (size_t i = 0; i < k->n_servers; i++) {
		nkpi_kmip_server_status st;

		/* A server that answers at all is reachable, even one that
		 * refuses Discover Versions (KMIP 1.0 has none). */
		if (nkpi_kmip_probe(c, i) != NKP_OK) {
			/* the status says why */
		}
		nkpi_kmip_server_get(c, i, &st);
		out[i] = (nkpd_kms_server_state){
			.reach = st.reachable ? NKPD_KMS_REACHABLE : NKPD_KMS_UNREACHABLE,
			.checked_unix = nkpi_now(),
		};
		snprintf(out[i].error, sizeof(out[i].error), "%s", st.reachable ? "" : st.error);
		answered += st.reachable;
		if (!st.reachable && why != NULL && used < why_len) {
			int n = snprintf(why + used, why_len - used, "%s%s: %s",
					 used != 0 ? "; " : "", k->servers[i], st.error);

			used += n > 0 ? (size_t)n : 0;
		}
	}
	return answered > 0 ? NKP_OK : NKP_ERR_NET;
}

nkp_err nkpd_kmip_check(const nkpd_kms *k, unsigned timeout_ms,
			nkpd_kms_server_state out[NKPD_KMS_SERVERS_MAX], char *why, size_t why_len)
{
	nkpi_kmip *c = NULL;
	nkp_err err;

	if (why != NULL && why_len > 0) {
		why[0] = '\0';
	}
	err = client_new(k, timeout_ms, &c, why, why_len);
	if (err != NKP_OK) {
		return err;
	}
#ifdef NKP_FUZZING
	/* Fuzzed admin requests reach here with any URL: the settings are
	 * parsed (above), no server is dialled. */
	for (size_t i = 0; i < k->n_servers; i++) {
		out[i] = (nkpd_kms_server_state){.reach = NKPD_KMS_UNKNOWN};
	}
	nkpi_kmip_free(c);
	return NKP_OK;
#endif
	err = probe_all(c, k, out, why, why_len);
	nkpi_kmip_free(c);
	return err;
}

/* ---- spare keys ---- */

/* One standard provider to check: its id, name and settings as they were. */
typedef struct todo {
	uint8_t id[NKP_ID_BYTES];
	char name[NKPD_NAME_MAX + 1];
	nkpd_kms *kms;
} todo;

/* At most this many keys are made for one provider in one round, so that a
 * stop or a change is seen between rounds. */
#define FILL_MAX 32u

typedef struct want {
	char host[NKPD_NAME_MAX + 1];
	size_t n;
} want;

/* Lock held: which hosts lack spares of provider `id` (settings `kms`),
 * FILL_MAX in all at most. */
static size_t wanted(nkpd_svc *s, const uint8_t *id, const nkpd_kms *kms, want *w, size_t max)
{
	const nkpd_provider *p = nkpd_model_provider_find_id(s, id);
	size_t n = 0, total = 0;

	for (size_t i = 0; p != NULL && p->kms == kms && i < s->n_hosts && n < max; i++) {
		size_t have = nkpd_kms_spares_locked(p, s->hosts[i]->conf.name);

		if (have < kms->spare_pool && total < FILL_MAX) {
			snprintf(w[n].host, sizeof(w[n].host), "%s", s->hosts[i]->conf.name);
			w[n].n = kms->spare_pool - have;
			if (total + w[n].n > FILL_MAX) {
				w[n].n = FILL_MAX - total;
			}
			total += w[n++].n;
		}
	}
	return n;
}

/* Sets the creation attributes on `kid`: true if the KMS took them; on a
 * refusal *refused_by is the server that refused (else SIZE_MAX). */
static bool creation_attributes(nkpi_kmip *c, const char *kid, size_t *refused_by, char *why,
				size_t why_len)
{
	const nkpi_kmip_attr attrs[] = {
		{"x-Vendor", "nkp"},
		{"x-Product", "nkp"},
		{"x-Product_Version", nkp_version()},
	};

	*refused_by = SIZE_MAX;
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		nkp_err err = nkpi_kmip_add_attribute(c, kid, &attrs[i]);

		if (err != NKP_OK) {
			if (err != NKP_ERR_NET && err != NKP_ERR_TIMEOUT) {
				*refused_by = nkpi_kmip_last_server(c);
			}
			snprintf(why, why_len, "%s", nkpi_kmip_last_error(c));
			return false;
		}
	}
	return true;
}

/* One new spare on the KMS for `host`: Create (named), Activate, the
 * creation attributes, and a Get that shows the key can be fetched (its
 * bytes wiped at once). A key that cannot be made whole is destroyed. */
static nkp_err make_spare(nkpi_kmip *c, const char *provider, const char *host, nkpd_kms_key *out,
			  size_t *refused_by, char *why, size_t why_len)
{
	uint8_t *key = sodium_malloc(NKPI_KMIP_KEY_BYTES);
	uint8_t tag[8];
	char name[NKPD_NAME_MAX + 40], hex[17];
	nkp_err err;

	if (key == NULL) {
		return NKP_ERR_NOMEM;
	}
	randombytes_buf(tag, sizeof(tag));
	snprintf(name, sizeof(name), "nkp-%s-%s", provider,
		 sodium_bin2hex(hex, sizeof(hex), tag, sizeof(tag)));
	*out = (nkpd_kms_key){.state = NKPD_KMS_KEY_SPARE, .created_unix = nkpi_now()};
	nkpd_util_copy_str(out->host, sizeof(out->host), host);
	err = nkpi_kmip_create(c, name, out->id);
	if (err == NKP_OK && (err = nkpi_kmip_activate(c, out->id)) == NKP_OK) {
		out->attributes_set = creation_attributes(c, out->id, refused_by, why, why_len);
		err = nkpi_kmip_get(c, out->id, key);
		if (err != NKP_OK && nkpi_kmip_destroy(c, out->id) != NKP_OK) {
			/* best effort: an unused key left on the KMS */
		}
	}
	if (err != NKP_OK) {
		snprintf(why, why_len, "%s", nkpi_kmip_last_error(c));
	}
	sodium_free(key);
	return err;
}

/* Lock held: the spares of provider `id` kept for hosts no longer
 * enrolled, FILL_MAX at most. */
static size_t orphans(nkpd_svc *s, const uint8_t *id, const nkpd_kms *kms,
		      char (*ids)[NKPD_KMS_ID_MAX])
{
	const nkpd_provider *p = nkpd_model_provider_find_id(s, id);
	size_t n = 0;

	for (size_t i = 0; p != NULL && p->kms == kms && i < p->n_kms_keys && n < FILL_MAX; i++) {
		const nkpd_kms_key *k = &p->kms_keys[i];

		if (k->state == NKPD_KMS_KEY_SPARE && nkpd_model_host_find(s, k->host) == NULL) {
			snprintf(ids[n++], NKPD_KMS_ID_MAX, "%s", k->id);
		}
	}
	return n;
}

/* The spares of removed hosts never protected anything: each is revoked
 * and destroyed on the KMS (through `c`), then dropped from the records
 * (one commit). One the KMS no longer has is dropped too. */
static void prune_spares(nkpd_svc *s, const todo *t, nkpi_kmip *c)
{
	char ids[FILL_MAX][NKPD_KMS_ID_MAX], gone[FILL_MAX][NKPD_KMS_ID_MAX];
	size_t n, ng = 0;

	pthread_mutex_lock(&s->lock);
	n = orphans(s, t->id, t->kms, ids);
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		nkp_err err = nkpi_kmip_revoke(c, ids[i], NKPI_KMIP_REVOKE_CESSATION_OF_OPERATION);

		if (err == NKP_OK || err == NKP_ERR_NOT_FOUND) {
			err = nkpi_kmip_destroy(c, ids[i]);
		}
		if (err == NKP_OK || err == NKP_ERR_NOT_FOUND) {
			memcpy(gone[ng++], ids[i], NKPD_KMS_ID_MAX);
		}
	}
	if (ng != 0 && nkpd_kms_drop_keys(s, t->id, t->kms, gone, ng) == NKP_OK) {
		nkp_log(NKP_LOG_INFO, "NKPD-KMS-SPARES",
			"provider %s: %zu spare key(s) of removed hosts destroyed on its KMS",
			t->name, ng);
	}
}

/* Makes the spares provider t lacks (through `c`), then records them in
 * one commit. */
static void fill_pool(nkpd_svc *s, const todo *t, nkpi_kmip *c)
{
	const char *pname = t->name;
	want w[FILL_MAX];
	nkpd_kms_key made[FILL_MAX];
	size_t nw, n = 0, refused_by = SIZE_MAX;
	char why[NKPD_KMS_ERROR_MAX] = "";
	nkp_err err = NKP_OK;

	pthread_mutex_lock(&s->lock);
	nw = wanted(s, t->id, t->kms, w, FILL_MAX);
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < nw && err == NKP_OK; i++) {
		for (size_t j = 0; j < w[i].n && err == NKP_OK; j++) {
			err = make_spare(c, pname, w[i].host, &made[n], &refused_by, why,
					 sizeof(why));
			n += err == NKP_OK;
		}
	}
	if (n != 0 && nkpd_kms_add_keys(s, t->id, t->kms, made, n) != NKP_OK) {
		nkp_log(NKP_LOG_WARN, "NKPD-KMS-SPARES",
			"provider %s: %zu spare key(s) made on its KMS could not be recorded",
			pname, n);
	}
	if (refused_by != SIZE_MAX) {
		nkpd_provider *p;

		pthread_mutex_lock(&s->lock);
		p = nkpd_model_provider_find_id(s, t->id);
		if (p != NULL && p->kms == t->kms) {
			nkpd_kms_attrs_refused_locked(s, p, refused_by, why);
		}
		pthread_mutex_unlock(&s->lock);
	}
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_WARN, "NKPD-KMS-SPARES", "provider %s: cannot make spare keys: %s",
			pname, why);
	}
}

/* ---- the monitor ---- */

struct nkpd_kmip_monitor {
	nkpd_svc *s;
	uint64_t interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	bool woken; /* asked for a round now (a provider or host was added) */
};

/* Lock held: the standard providers now. */
static todo *collect(nkpd_svc *s, size_t *n)
{
	todo *t = calloc(s->n_providers + 1, sizeof(*t));

	*n = 0;
	for (size_t i = 0; t != NULL && i < s->n_providers; i++) {
		const nkpd_provider *p = s->providers[i];

		if (p->kind == NKPD_KIND_STANDARD) {
			memcpy(t[*n].id, p->id, NKP_ID_BYTES);
			snprintf(t[*n].name, sizeof(t[*n].name), "%s", p->name);
			t[(*n)++].kms = nkpd_kms_ref(p->kms);
		}
	}
	return t;
}

/* One provider's round, on one client (one TLS connection kept through
 * it): each server asked, what they said recorded; if one answered, the
 * spares of removed hosts destroyed and the pools refilled. */
static void round_one(nkpd_svc *s, const todo *t)
{
	nkpd_kms_server_state st[NKPD_KMS_SERVERS_MAX];
	nkpd_provider *p;
	char why[NKPD_KMS_ERROR_MAX] = "";
	nkpi_kmip *c = NULL;
	nkp_err err = client_new(t->kms, NKPD_KMS_CHECK_TIMEOUT_MS, &c, why, sizeof(why));

	if (err == NKP_OK) {
		err = probe_all(c, t->kms, st, why, sizeof(why));
	} else { /* no client: every server unusable */
		if (why[0] == '\0') {
			snprintf(why, sizeof(why), "%s", nkp_strerror(err));
		}
		for (size_t i = 0; i < t->kms->n_servers; i++) {
			st[i] = (nkpd_kms_server_state){.reach = NKPD_KMS_UNREACHABLE};
			snprintf(st[i].error, sizeof(st[i].error), "%s", why);
		}
	}
	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find_id(s, t->id);
	/* Recorded only if the provider still has the settings checked. */
	for (size_t i = 0; p != NULL && p->kms == t->kms && i < t->kms->n_servers; i++) {
		nkpd_kms_note_locked(s, p, i, st[i].reach == NKPD_KMS_REACHABLE, st[i].error);
	}
	pthread_mutex_unlock(&s->lock);
	if (err == NKP_OK) {
		prune_spares(s, t, c);
		fill_pool(s, t, c);
	}
	nkpi_kmip_free(c);
}

/* m->lock held. False when told to stop. */
static bool wait_interval(nkpd_kmip_monitor *m)
{
	uint64_t due = nkpi_mono_ms() + m->interval_ms;

	while (!m->stopping && !m->woken && nkpi_mono_ms() < due) {
		struct timespec until = nkpi_mono_timespec(due);

		pthread_cond_timedwait(&m->cond, &m->lock, &until);
	}
	m->woken = false;
	return !m->stopping;
}

static bool stopping(nkpd_kmip_monitor *m)
{
	bool v;

	pthread_mutex_lock(&m->lock);
	v = m->stopping;
	pthread_mutex_unlock(&m->lock);
	return v;
}

static void *monitor_thread(void *arg)
{
	nkpd_kmip_monitor *m = arg;

	bool go = true;

	/* A check at once (after a restart nothing is known), then one per
	 * interval; a stop is seen between two providers. */
	while (go) {
		size_t n;
		todo *t;

		pthread_mutex_lock(&m->s->lock);
		t = collect(m->s, &n);
		pthread_mutex_unlock(&m->s->lock);
		for (size_t i = 0; t != NULL && i < n; i++) {
			if (!stopping(m)) {
				round_one(m->s, &t[i]);
			}
			nkpd_kms_unref(t[i].kms);
		}
		free(t);
		pthread_mutex_lock(&m->lock);
		go = wait_interval(m);
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

/* nkpd_svc.kms_wake: a round now. Called with nkpd_svc.lock held (the
 * monitor never waits for its own lock while holding that one). */
static void wake(void *arg)
{
	nkpd_kmip_monitor *m = arg;

	pthread_mutex_lock(&m->lock);
	m->woken = true;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

nkp_err nkpd_kmip_monitor_start(nkpd_svc *s, uint64_t interval_ms, nkpd_kmip_monitor **out)
{
	nkpd_kmip_monitor *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		return NKP_ERR_NOMEM;
	}
	m->s = s;
	m->interval_ms = interval_ms != 0 ? interval_ms : NKPD_KMS_CHECK_INTERVAL_MS;
	pthread_mutex_init(&m->lock, NULL);
	nkpi_mono_cond_init(&m->cond);
	if (pthread_create(&m->thread, NULL, monitor_thread, m) != 0) {
		pthread_cond_destroy(&m->cond);
		pthread_mutex_destroy(&m->lock);
		free(m);
		return NKP_ERR_NOMEM;
	}
	pthread_mutex_lock(&s->lock);
	s->kms_wake = wake;
	s->kms_wake_arg = m;
	pthread_mutex_unlock(&s->lock);
	*out = m;
	return NKP_OK;
}

void nkpd_kmip_monitor_stop(nkpd_kmip_monitor *m)
{
	if (m == NULL) {
		return;
	}
	pthread_mutex_lock(&m->s->lock);
	m->s->kms_wake = NULL;
	pthread_mutex_unlock(&m->s->lock);
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
