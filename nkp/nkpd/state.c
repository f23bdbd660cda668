/* The service model and its one sealed file, DIR/state.nkp
 * (proto/svcstate.proto inside proto/sealed.proto). Keys are exported only
 * into sodium_malloc memory that is wiped before it is freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"
#include "nkpd.h"
#include "session.h"
#include "svcstate.pb-c.h"

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
		if (strcmp(s->hosts[i]->name, name) == 0) {
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
	nkpi_session_free(h->sess);
	desired_release(h->wipe_snap);
	desired_release(h->pushed_snap);
	free(h->usage);
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

/* ---- serialization ---- */

typedef struct pack_ctx {
	Nkp__Svcstate__ServiceState st;
	Nkp__Svcstate__Provider *provs;
	Nkp__Svcstate__Provider **provp;
	Nkp__Svcstate__Version *vers;
	Nkp__Svcstate__Version **verp;
	Nkp__Svcstate__Host *hosts;
	Nkp__Svcstate__Host **hostp;
	uint8_t *keys; /* sodium_malloc */
	size_t n_keys;
} pack_ctx;

static void pack_ctx_fini(pack_ctx *c)
{
	free(c->provs);
	free(c->provp);
	free(c->vers);
	free(c->verp);
	free(c->hosts);
	free(c->hostp);
	sodium_free(c->keys);
}

static size_t count_versions(const svc *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		n += s->providers[i]->n_versions;
	}
	return n;
}

static void fill_provider(pack_ctx *c, const svc_provider *p, size_t pi, size_t *vi)
{
	Nkp__Svcstate__Provider *m = &c->provs[pi];

	nkp__svcstate__provider__init(m);
	m->id.data = (uint8_t *)p->id;
	m->id.len = NKP_ID_BYTES;
	m->name = (char *)p->name;
	m->is_default = p->is_default;
	m->backed_up = p->backed_up;
	m->tpm_only = p->tpm_only;
	m->backup_max_version = p->backup_max_version;
	m->created_unix = p->created_unix;
	m->backed_up_unix = p->backed_up_unix;
	m->n_versions = p->n_versions;
	m->versions = &c->verp[*vi];
	for (size_t j = 0; j < p->n_versions; j++, (*vi)++) {
		Nkp__Svcstate__Version *v = &c->vers[*vi];
		uint8_t *k = c->keys + *vi * NKP_KEY_BYTES;

		nkp__svcstate__version__init(v);
		v->version = p->versions[j].version;
		v->state = (uint32_t)p->versions[j].state;
		v->created_unix = p->versions[j].created_unix;
		nkp_key_export(p->versions[j].key, k);
		v->key.data = k;
		v->key.len = NKP_KEY_BYTES;
		c->verp[*vi] = v;
	}
	c->provp[pi] = m;
}

static void fill_host(pack_ctx *c, const svc_host *h, size_t i)
{
	Nkp__Svcstate__Host *m = &c->hosts[i];

	nkp__svcstate__host__init(m);
	m->name = (char *)h->name;
	m->address = (char *)h->address;
	m->public_key.data = (uint8_t *)h->pub;
	m->public_key.len = NKP_PUBKEY_BYTES;
	m->cluster = (char *)h->cluster;
	m->enrolled_unix = h->enrolled_unix;
	c->hostp[i] = m;
}

static nkp_err pack_ctx_build(const svc *s, pack_ctx *c)
{
	size_t nv = count_versions(s), vi = 0;

	memset(c, 0, sizeof(*c));
	c->n_keys = nv;
	c->provs = calloc(s->n_providers + 1, sizeof(*c->provs));
	c->provp = calloc(s->n_providers + 1, sizeof(*c->provp));
	c->vers = calloc(nv + 1, sizeof(*c->vers));
	c->verp = calloc(nv + 1, sizeof(*c->verp));
	c->hosts = calloc(s->n_hosts + 1, sizeof(*c->hosts));
	c->hostp = calloc(s->n_hosts + 1, sizeof(*c->hostp));
	c->keys = sodium_malloc((nv + 1) * NKP_KEY_BYTES);
	if (!c->provs || !c->provp || !c->vers || !c->verp || !c->hosts || !c->hostp || !c->keys) {
		pack_ctx_fini(c);
		return NKP_ERR_NOMEM;
	}
	nkp__svcstate__service_state__init(&c->st);
	c->st.format_version = SVC_STATE_FORMAT;
	c->st.generation = s->generation;
	c->st.epoch = s->epoch;
	c->st.stamp_floor_ns = s->stamp_floor_ns;
	for (size_t i = 0; i < s->n_providers; i++) {
		fill_provider(c, s->providers[i], i, &vi);
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		fill_host(c, s->hosts[i], i);
	}
	c->st.n_providers = s->n_providers;
	c->st.providers = c->provp;
	c->st.n_hosts = s->n_hosts;
	c->st.hosts = c->hostp;
	return NKP_OK;
}

nkp_err svc_state_save(const svc *s)
{
	pack_ctx c;
	uint8_t *buf = NULL;
	size_t len;
	nkp_err err = pack_ctx_build(s, &c);

	if (err != NKP_OK) {
		return err;
	}
	len = nkp__svcstate__service_state__get_packed_size(&c.st);
	buf = sodium_malloc(len + 1);
	if (buf == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_ctx;
	}
	nkp__svcstate__service_state__pack(&c.st, buf);
	err = nkp_sealfile_write(s->state_path, s->seal_key, SVC_STATE_LABEL, buf, len);
	sodium_free(buf);
out_ctx:
	pack_ctx_fini(&c);
	return err;
}

/* ---- loading ---- */

static nkp_err load_provider(svc *s, const Nkp__Svcstate__Provider *m)
{
	svc_provider *p;
	nkp_err err = NKP_OK;

	if (m->id.len != NKP_ID_BYTES || !svc_name_valid(m->name) ||
	    svc_provider_find(s, m->name) != NULL || svc_provider_find_id(s, m->id.data) != NULL) {
		return NKP_ERR_PARSE;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(p->id, m->id.data, NKP_ID_BYTES);
	svc_copy_str(p->name, sizeof(p->name), m->name);
	p->is_default = m->is_default;
	p->backed_up = m->backed_up;
	p->tpm_only = m->tpm_only;
	p->backup_max_version = m->backup_max_version;
	p->created_unix = m->created_unix;
	p->backed_up_unix = m->backed_up_unix;
	for (size_t i = 0; i < m->n_versions && err == NKP_OK; i++) {
		const Nkp__Svcstate__Version *v = m->versions[i];
		nkp_key *k = NULL;

		if (v->key.len != NKP_KEY_BYTES || v->state < NKP_VERSION_STAGED ||
		    v->state > NKP_VERSION_DECRYPT_ONLY) {
			err = NKP_ERR_PARSE;
			break;
		}
		err = nkp_key_from_bytes(v->key.data, &k);
		if (err == NKP_OK) {
			err = svc_provider_add_version(p, v->version, (nkp_version_state)v->state,
						       v->created_unix, k);
			if (err != NKP_OK) {
				nkp_key_free(k);
				err = NKP_ERR_PARSE;
			}
		}
	}
	if (err == NKP_OK) {
		svc_provider **np = realloc(s->providers, (s->n_providers + 1) * sizeof(*np));
		err = np == NULL ? NKP_ERR_NOMEM : NKP_OK;
		if (np != NULL) {
			s->providers = np;
			s->providers[s->n_providers++] = p;
			return NKP_OK;
		}
	}
	svc_provider_free(p);
	return err;
}

static nkp_err load_host(svc *s, const Nkp__Svcstate__Host *m)
{
	svc_host *h;
	svc_host **nh;

	if (!svc_name_valid(m->name) || m->public_key.len != NKP_PUBKEY_BYTES ||
	    strlen(m->address) > SVC_MAX_ADDRESS || strlen(m->cluster) > SVC_MAX_NAME ||
	    svc_host_find(s, m->name) != NULL) {
		return NKP_ERR_PARSE;
	}
	h = calloc(1, sizeof(*h));
	nh = realloc(s->hosts, (s->n_hosts + 1) * sizeof(*nh));
	if (nh != NULL) {
		s->hosts = nh;
	}
	if (h == NULL || nh == NULL) {
		free(h);
		return NKP_ERR_NOMEM;
	}
	svc_copy_str(h->name, sizeof(h->name), m->name);
	svc_copy_str(h->address, sizeof(h->address), m->address);
	svc_copy_str(h->cluster, sizeof(h->cluster), m->cluster);
	memcpy(h->pub, m->public_key.data, NKP_PUBKEY_BYTES);
	h->enrolled_unix = m->enrolled_unix;
	h->svc = s;
	s->hosts[s->n_hosts++] = h;
	return NKP_OK;
}

static nkp_err load_model(svc *s, const Nkp__Svcstate__ServiceState *st)
{
	nkp_err err = NKP_OK;

	if (st->format_version != SVC_STATE_FORMAT) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&st->base) || st->n_providers > SVC_MAX_PROVIDERS ||
	    st->n_hosts > SVC_MAX_HOSTS) {
		return NKP_ERR_PARSE;
	}
	if (st->generation >= NKPI_GENERATION_MAX) {
		return NKP_ERR_PARSE;
	}
	s->generation = st->generation;
	s->epoch = st->epoch;
	s->stamp_floor_ns = st->stamp_floor_ns;
	for (size_t i = 0; i < st->n_providers && err == NKP_OK; i++) {
		err = load_provider(s, st->providers[i]);
	}
	for (size_t i = 0; i < st->n_hosts && err == NKP_OK; i++) {
		err = load_host(s, st->hosts[i]);
	}
	if (err != NKP_OK) {
		svc_free_model(s);
		s->generation = 0;
		s->epoch = 0;
		s->stamp_floor_ns = 0;
	}
	return err;
}

/* Errors: those of nkp_sealfile_read (NKP_ERR_NOT_FOUND, NKP_ERR_AUTH for a
 * damaged or tampered file, ...), NKP_ERR_PARSE or NKP_ERR_FORMAT_VERSION
 * for contents this version cannot take. The model is untouched on error.
 * On success, temp files of an interrupted write are removed (the caller
 * holds the state directory lock). */
nkp_err svc_state_load(svc *s)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Svcstate__ServiceState *st;
	nkp_err err;

	err = nkp_sealfile_read(s->state_path, s->seal_key, SVC_STATE_LABEL, &buf, &len);
	if (err != NKP_OK) {
		return err;
	}
	st = nkp__svcstate__service_state__unpack(&nkpi_wiping_allocator, len, buf);
	if (st == NULL) {
		err = NKP_ERR_PARSE;
		goto out_buf;
	}
	err = load_model(s, st);
	nkp__svcstate__service_state__free_unpacked(st, &nkpi_wiping_allocator);
	if (err == NKP_OK) {
		nkp_file_remove_stale_temps(s->state_path);
		/* Every timestamp an earlier run made is below its floor. */
		nkpi_session_raise_timestamps(s->stamp_floor_ns);
	}
	if (err == NKP_OK && s->epoch == 0) {
		/* A state written before epochs: it gets one now, written at
		 * once, so a restart cannot pick another (its hosts would all
		 * be in conflict). Hosts hold no pair from before either. */
		s->epoch = svc_new_epoch();
		err = svc_state_save(s);
		if (err == NKP_OK) {
			nkp_log(NKP_LOG_NOTICE, "NKPD-EPOCH", "state %s had no epoch: given one",
				s->state_path);
		} else {
			svc_free_model(s);
			s->generation = 0;
			s->epoch = 0;
		}
	}
out_buf:
	nkp_secure_free(buf);
	return err;
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

/* After svc_state_load gave NKP_ERR_FORMAT_VERSION: why, in one clause
 * naming the versions (the file's and the one this nkpd reads), into buf.
 * A format this nkpd does not read is not damage and is not reported as
 * such. */
void svc_state_format_message(const svc *s, char *buf, size_t size)
{
	uint8_t *data = NULL;
	size_t len = 0;
	Nkp__Svcstate__ServiceState *st;
	nkp_err err;

	err = nkp_sealfile_read(s->state_path, s->seal_key, SVC_STATE_LABEL, &data, &len);
	if (err == NKP_ERR_FORMAT_VERSION) {
		snprintf(buf, size,
			 "its sealed-file format version is not the one this nkpd reads (a newer "
			 "nkpd wrote it?)");
		return;
	}
	if (err != NKP_OK) {
		snprintf(buf, size, "it cannot be read: %s", nkp_strerror(err));
		return;
	}
	st = nkp__svcstate__service_state__unpack(&nkpi_wiping_allocator, len, data);
	if (st == NULL) {
		snprintf(buf, size, "it cannot be parsed");
	} else if (st->format_version > SVC_STATE_FORMAT) {
		snprintf(buf, size,
			 "it has state format version %u, newer than version %u, the one this nkpd "
			 "reads: a newer nkpd wrote it",
			 (unsigned)st->format_version, SVC_STATE_FORMAT);
	} else {
		snprintf(buf, size,
			 "it has state format version %u; this nkpd reads version %u only",
			 (unsigned)st->format_version, SVC_STATE_FORMAT);
	}
	if (st != NULL) {
		nkp__svcstate__service_state__free_unpacked(st, &nkpi_wiping_allocator);
	}
	nkp_secure_free(data);
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
	return svc_reconcile_changed(s);
}
