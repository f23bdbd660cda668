/* The service model, its transactions and its persistence through the
 * store port (see store/store.h); subscribers hear of every committed
 * change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "nkpd.h"
#include "session.h"

svc_provider *svc_provider_find(const svc *s, const char *name)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (strcmp(s->providers[i]->name, name) == 0) {
			return s->providers[i];
		}
	}
	return NULL;
}

svc_provider *svc_provider_find_id(const svc *s, const uint8_t id[static NKP_ID_BYTES])
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (memcmp(s->providers[i]->id, id, NKP_ID_BYTES) == 0) {
			return s->providers[i];
		}
	}
	return NULL;
}

svc_provider *svc_provider_default(const svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		if (s->providers[i]->is_default) {
			return s->providers[i];
		}
	}
	return NULL;
}

svc_host *svc_host_find(const svc *s, const char *name)
{
	for (size_t i = 0; i < s->n_hosts; i++) {
		if (strcmp(s->hosts[i]->conf.name, name) == 0) {
			return s->hosts[i];
		}
	}
	return NULL;
}

svc_version *svc_version_find(const svc_provider *p, uint32_t version)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version == version) {
			return &p->versions[i];
		}
	}
	return NULL;
}

static svc_version *version_in_state(const svc_provider *p, nkp_version_state st)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].state == st) {
			return &p->versions[i];
		}
	}
	return NULL;
}

svc_version *svc_version_active(const svc_provider *p)
{
	return version_in_state(p, NKP_VERSION_ACTIVE);
}

svc_version *svc_version_staged(const svc_provider *p)
{
	return version_in_state(p, NKP_VERSION_STAGED);
}

uint32_t svc_version_max(const svc_provider *p)
{
	uint32_t max = 0;

	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version > max) {
			max = p->versions[i].version;
		}
	}
	return max;
}

void svc_provider_free(svc_provider *p)
{
	if (p == NULL) {
		return;
	}
	for (size_t i = 0; i < p->n_versions; i++) {
		nkp_key_free(p->versions[i].key);
	}
	free(p->versions);
	sodium_memzero(p, sizeof(*p));
	free(p);
}

/* Takes ownership of `key` on success only. Versions stay sorted. */
nkp_err svc_provider_add_version(svc_provider *p, uint32_t version, nkp_version_state st,
				 uint64_t created, nkp_key *key)
{
	svc_version *v;
	size_t at = p->n_versions;

	if (version == 0 || svc_version_find(p, version) != NULL ||
	    p->n_versions >= NKP_BACKUP_MAX_VERSIONS) {
		return NKP_ERR_INVALID;
	}
	v = realloc(p->versions, (p->n_versions + 1) * sizeof(*v));
	if (v == NULL) {
		return NKP_ERR_NOMEM;
	}
	p->versions = v;
	while (at > 0 && v[at - 1].version > version) {
		v[at] = v[at - 1];
		at--;
	}
	v[at] = (svc_version){.version = version, .state = st, .created_unix = created, .key = key};
	p->n_versions++;
	return NKP_OK;
}

void svc_provider_remove_version(svc_provider *p, uint32_t version)
{
	for (size_t i = 0; i < p->n_versions; i++) {
		if (p->versions[i].version == version) {
			nkp_key_free(p->versions[i].key);
			memmove(&p->versions[i], &p->versions[i + 1],
				(p->n_versions - i - 1) * sizeof(p->versions[0]));
			p->n_versions--;
			return;
		}
	}
}

nkp_err svc_provider_dup(const svc_provider *p, svc_provider **out)
{
	svc_provider *c = calloc(1, sizeof(*c));
	nkp_err err = NKP_OK;

	if (c == NULL) {
		return NKP_ERR_NOMEM;
	}
	*c = *p;
	c->versions = NULL;
	c->n_versions = 0;
	for (size_t i = 0; i < p->n_versions && err == NKP_OK; i++) {
		nkp_key *k = NULL;
		const svc_version *v = &p->versions[i];

		err = nkp_key_dup(v->key, &k);
		if (err == NKP_OK) {
			err = svc_provider_add_version(c, v->version, v->state, v->created_unix, k);
			if (err != NKP_OK) {
				nkp_key_free(k);
			}
		}
	}
	if (err != NKP_OK) {
		svc_provider_free(c);
		return err;
	}
	*out = c;
	return NKP_OK;
}

void svc_host_free(svc_host *h)
{
	if (h == NULL) {
		return;
	}
	/* The sync engine freed h->link when it stopped. */
	desired_release(h->wipe_snap);
	free(h->st.usage);
	free(h);
}

void svc_free_model(svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		svc_provider_free(s->providers[i]);
	}
	free(s->providers);
	s->providers = NULL;
	s->n_providers = 0;
	for (size_t i = 0; i < s->n_hosts; i++) {
		svc_host_free(s->hosts[i]);
	}
	free(s->hosts);
	s->hosts = NULL;
	s->n_hosts = 0;
}

/* ---- persistence ---- */

nkp_err svc_state_save(svc *s)
{
	uint64_t rev = 0;
	nkp_err err = s->store.commit(s->store.ctx, s, s->revision, &rev);

	if (err == NKP_OK) {
		s->revision = rev;
	}
	return err;
}

static void forget_model(svc *s)
{
	svc_free_model(s);
	s->generation = 0;
	s->epoch = 0;
	s->stamp_floor_ns = 0;
}

nkp_err svc_state_load(svc *s)
{
	uint64_t rev = 0;
	nkp_err err = s->store.load(s->store.ctx, s, &rev);

	if (err != NKP_OK) {
		return err;
	}
	s->revision = rev;
	/* Every timestamp an earlier run made is below its floor. */
	nkpi_session_raise_timestamps(s->stamp_floor_ns);
	if (s->epoch == 0) {
		/* A state written before epochs: it gets one now, written at
		 * once, so a restart cannot pick another (its hosts would all
		 * be in conflict). Hosts hold no pair from before either. */
		s->epoch = svc_new_epoch();
		err = svc_state_save(s);
		if (err == NKP_OK) {
			nkp_log(NKP_LOG_NOTICE, "NKPD-EPOCH", "state %s had no epoch: given one",
				s->state_path);
		} else {
			forget_model(s);
		}
	}
	return err;
}

void svc_state_format_message(const svc *s, char *buf, size_t size)
{
	s->store.explain(s->store.ctx, buf, size);
}

/* An hour of timestamps: the state is written about every half hour. */
#define STAMP_RESERVE_NS (3600ull * 1000000000ull)
/* After a failed write of the floor, the next try. */
#define STAMP_RETRY_MS 5000u

/* Hosts take a handshake only with a timestamp newer than the last they
 * took (docs/PROTOCOL.md). Timestamps rise within a process whatever the
 * wall clock does; across restarts they rise because every one is below
 * the floor in the state, which the next run starts above. */
nkp_err svc_stamp_reserve(svc *s)
{
	uint64_t high, wall = nkpi_wall_ns();
	nkp_err err;

	high = nkpi_session_last_timestamp();
	high = high > wall ? high : wall;
	if (s->stamp_floor_ns > high && s->stamp_floor_ns - high >= STAMP_RESERVE_NS / 2) {
		return NKP_OK;
	}
	if (s->stamp_retry_ms != 0 && nkpi_mono_ms() < s->stamp_retry_ms) {
		return NKP_ERR_IO; /* a failing disk is not written 20 times a second */
	}
	uint64_t before = s->stamp_floor_ns;

	s->stamp_floor_ns = high + STAMP_RESERVE_NS;
	err = svc_state_save(s);
	if (err != NKP_OK) {
		s->stamp_floor_ns = before;
		if (s->stamp_retry_ms == 0) {
			nkp_log(NKP_LOG_ERR, "NKPD-STAMP-FLOOR",
				"cannot write %s to keep handshake timestamps rising across "
				"restarts: %s; retrying every %u s",
				s->state_path, nkp_strerror(err), STAMP_RETRY_MS / 1000u);
		}
	}
	s->stamp_retry_ms = err != NKP_OK ? nkpi_mono_ms() + STAMP_RETRY_MS : 0;
	return err;
}

/* ---- transactions ---- */

static void free_provider_array(svc_provider **a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		svc_provider_free(a[i]);
	}
	free(a);
}

nkp_err svc_txn_begin(svc *s, svc_txn *t)
{
	svc_provider **copy = calloc(s->n_providers + 1, sizeof(*copy));
	nkp_err err = NKP_OK;
	size_t i;

	if (copy == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (i = 0; i < s->n_providers && err == NKP_OK; i++) {
		err = svc_provider_dup(s->providers[i], &copy[i]);
	}
	if (err != NKP_OK) {
		free_provider_array(copy, i);
		return err;
	}
	t->generation = s->generation;
	t->n_providers = s->n_providers;
	t->providers = copy;
	return NKP_OK;
}

void svc_txn_rollback(svc *s, svc_txn *t)
{
	free_provider_array(s->providers, s->n_providers);
	s->providers = t->providers;
	s->n_providers = t->n_providers;
	s->generation = t->generation;
	t->providers = NULL;
	t->n_providers = 0;
}

/* ---- subscribers ---- */

void svc_subscribe(svc *s, svc_commit_fn fn, void *arg)
{
	for (size_t i = 0; i < SVC_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn == NULL) {
			s->subs[i] = (svc_subscriber){.fn = fn, .arg = arg};
			return;
		}
	}
	nkp_log(NKP_LOG_ERR, "NKPD-BUG", "too many commit subscribers");
	abort();
}

void svc_unsubscribe(svc *s, svc_commit_fn fn, void *arg)
{
	for (size_t i = 0; i < SVC_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn == fn && s->subs[i].arg == arg) {
			s->subs[i] = (svc_subscriber){0};
		}
	}
}

/* Every subscriber hears of the change; the first error is returned. */
static nkp_err notify(svc *s)
{
	nkp_err first = NKP_OK;

	for (size_t i = 0; i < SVC_MAX_SUBSCRIBERS; i++) {
		if (s->subs[i].fn != NULL) {
			nkp_err err = s->subs[i].fn(s, s->subs[i].arg);

			first = first == NKP_OK ? err : first;
		}
	}
	return first;
}

nkp_err svc_txn_commit(svc *s, svc_txn *t)
{
	nkp_err err;

	if (s->generation + 1 >= NKPI_GENERATION_MAX) {
		nkp_log(NKP_LOG_ERR, "NKPD-GENERATION-EXHAUSTED",
			"generation %llu is at the limit (2^62): no change can be committed; "
			"initialise a new service and re-pin its hosts (docs/OPERATIONS.md)",
			(unsigned long long)s->generation);
		svc_txn_rollback(s, t);
		return NKP_ERR_STATE;
	}
	s->generation++;
	err = svc_state_save(s);
	if (err != NKP_OK) {
		nkp_event(s->events, NKP_EV_STATE_WRITE_FAILED, NULL, NULL,
			  "could not write %s: %s; the change was not made", s->state_path,
			  nkp_strerror(err));
		svc_txn_rollback(s, t);
		return err;
	}
	free_provider_array(t->providers, t->n_providers);
	t->providers = NULL;
	t->n_providers = 0;
	return notify(s);
}
