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

nkp_err nkpd_kmip_check(const nkpd_kms *k, unsigned timeout_ms,
			nkpd_kms_server_state out[NKPD_KMS_SERVERS_MAX], char *why, size_t why_len)
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
	nkpi_kmip *c = NULL;
	size_t answered = 0, used = 0;
	nkp_err err;

	for (size_t i = 0; i < k->n_servers; i++) {
		urls[i] = k->servers[i];
	}
	if (why != NULL && why_len > 0) {
		why[0] = '\0';
	}
	err = nkpi_kmip_new(&cfg, &c, why, why_len);
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
	nkpi_kmip_free(c);
	return answered > 0 ? NKP_OK : NKP_ERR_NET;
}

/* ---- the monitor ---- */

struct nkpd_kmip_monitor {
	nkpd_svc *s;
	uint64_t interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
};

/* One standard provider to check: its id and its settings as they were. */
typedef struct todo {
	uint8_t id[NKP_ID_BYTES];
	nkpd_kms *kms;
} todo;

/* Lock held: the standard providers now. */
static todo *collect(nkpd_svc *s, size_t *n)
{
	todo *t = calloc(s->n_providers + 1, sizeof(*t));

	*n = 0;
	for (size_t i = 0; t != NULL && i < s->n_providers; i++) {
		const nkpd_provider *p = s->providers[i];

		if (p->kind == NKPD_KIND_STANDARD) {
			memcpy(t[*n].id, p->id, NKP_ID_BYTES);
			t[(*n)++].kms = nkpd_kms_ref(p->kms);
		}
	}
	return t;
}

static void check_one(nkpd_svc *s, const todo *t)
{
	nkpd_kms_server_state st[NKPD_KMS_SERVERS_MAX];
	nkpd_provider *p;
	char why[NKPD_KMS_ERROR_MAX];
	nkp_err err = nkpd_kmip_check(t->kms, NKPD_KMS_CHECK_TIMEOUT_MS, st, why, sizeof(why));

	if (err != NKP_OK && err != NKP_ERR_NET) { /* no client: every server unusable */
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
}

/* m->lock held. False when told to stop. */
static bool wait_interval(nkpd_kmip_monitor *m)
{
	uint64_t due = nkpi_mono_ms() + m->interval_ms;

	while (!m->stopping && nkpi_mono_ms() < due) {
		struct timespec until = nkpi_mono_timespec(due);

		pthread_cond_timedwait(&m->cond, &m->lock, &until);
	}
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
				check_one(m->s, &t[i]);
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
	*out = m;
	return NKP_OK;
}

void nkpd_kmip_monitor_stop(nkpd_kmip_monitor *m)
{
	if (m == NULL) {
		return;
	}
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_signal(&m->cond);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
