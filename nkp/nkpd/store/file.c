/* The sealed-file store: the model in one file, DIR/state.nkp
 * (proto/svcstate.proto inside proto/sealed.proto), written atomically
 * with its previous copy kept as state.nkp.prev. Keys are exported only
 * into sodium_malloc memory that is wiped before it is freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/kms.h"
#include "internal.h"
#include "store/store.h"
#include "svcstate.pb-c.h"

typedef struct file_store {
	char path[PATH_MAX];
	const nkp_key *seal_key;
	uint64_t revision; /* loads and writes so far */
} file_store;

/* ---- writing ---- */

typedef struct pack_ctx {
	Nkp__Svcstate__ServiceState st;
	Nkp__Svcstate__Provider *provs;
	Nkp__Svcstate__Provider **provp;
	Nkp__Svcstate__Version *vers;
	Nkp__Svcstate__Version **verp;
	Nkp__Svcstate__Host *hosts;
	Nkp__Svcstate__Host **hostp;
	Nkp__Svcstate__Baseline *bases;
	Nkp__Svcstate__Baseline **basep;
	Nkp__Svcstate__KmsSettings *kms; /* one per provider, used by standard ones */
	char **servers;			 /* NKPD_KMS_SERVERS_MAX per provider */
	Nkp__Svcstate__KmsKey *kkeys;	 /* every standard provider's keys */
	Nkp__Svcstate__KmsKey **kkeyp;
	size_t ki;
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
	free(c->bases);
	free(c->basep);
	free(c->kms);
	free(c->servers);
	free(c->kkeys);
	free(c->kkeyp);
	sodium_free(c->keys);
}

static size_t count_versions(const nkpd_svc *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		n += s->providers[i]->n_versions;
	}
	return n;
}

static void fill_provider(pack_ctx *c, const nkpd_provider *p, size_t pi, size_t *vi)
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
	if (p->kind == NKPD_KIND_STANDARD) {
		Nkp__Svcstate__KmsSettings *k = &c->kms[pi];
		char **urls = &c->servers[pi * NKPD_KMS_SERVERS_MAX];

		nkp__svcstate__kms_settings__init(k);
		for (size_t i = 0; i < p->kms->n_servers; i++) {
			urls[i] = (char *)p->kms->servers[i];
		}
		k->n_servers = p->kms->n_servers;
		k->servers = urls;
		k->ca_pem = (ProtobufCBinaryData){p->kms->ca_len, p->kms->ca_pem};
		k->cert_pem = (ProtobufCBinaryData){p->kms->cert_len, p->kms->cert_pem};
		k->key_pem = (ProtobufCBinaryData){p->kms->key_len, p->kms->key_pem};
		k->spare_pool = p->kms->spare_pool;
		m->kind = "standard";
		m->kms = k;
		m->n_kms_keys = p->n_kms_keys;
		m->kms_keys = &c->kkeyp[c->ki];
		for (size_t i = 0; i < p->n_kms_keys; i++, c->ki++) {
			Nkp__Svcstate__KmsKey *kk = &c->kkeys[c->ki];
			const nkpd_kms_key *src = &p->kms_keys[i];

			nkp__svcstate__kms_key__init(kk);
			kk->id = (char *)src->id;
			kk->state = (uint32_t)src->state;
			kk->host = (char *)src->host;
			kk->vm_uuid = (char *)src->vm_uuid;
			kk->vm_name = (char *)src->vm_name;
			kk->created_unix = src->created_unix;
			kk->attributes_set = src->attributes_set;
			c->kkeyp[c->ki] = kk;
		}
	}
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

static void fill_host(pack_ctx *c, const nkpd_host *h, size_t i)
{
	Nkp__Svcstate__Host *m = &c->hosts[i];

	nkp__svcstate__host__init(m);
	m->name = (char *)h->conf.name;
	m->address = (char *)h->conf.address;
	m->public_key.data = (uint8_t *)h->conf.pub;
	m->public_key.len = NKP_PUBKEY_BYTES;
	m->cluster = (char *)h->conf.cluster;
	m->enrolled_unix = h->conf.enrolled_unix;
	m->ak_public.data = (uint8_t *)h->conf.ak;
	m->ak_public.len = h->conf.ak_len;
	m->ek_ca.data = h->conf.ek_ca;
	m->ek_ca.len = h->conf.ek_ca_len;
	m->seal_policy = h->conf.seal_policy;
	c->hostp[i] = m;
}

static void fill_baseline(pack_ctx *c, const nkpd_baseline *b, size_t i)
{
	Nkp__Svcstate__Baseline *m = &c->bases[i];

	nkp__svcstate__baseline__init(m);
	m->name = (char *)b->name;
	m->pcr_mask = b->pcr_mask;
	m->pcr_digest.data = (uint8_t *)b->pcr_digest;
	m->pcr_digest.len = sizeof(b->pcr_digest);
	m->from_host = (char *)b->from_host;
	m->created_unix = b->created_unix;
	c->basep[i] = m;
}

static nkp_err pack_ctx_build(const nkpd_svc *s, pack_ctx *c)
{
	size_t nv = count_versions(s), vi = 0, nkk = 0;

	memset(c, 0, sizeof(*c));
	c->n_keys = nv;
	c->provs = calloc(s->n_providers + 1, sizeof(*c->provs));
	c->provp = calloc(s->n_providers + 1, sizeof(*c->provp));
	c->vers = calloc(nv + 1, sizeof(*c->vers));
	c->verp = calloc(nv + 1, sizeof(*c->verp));
	c->hosts = calloc(s->n_hosts + 1, sizeof(*c->hosts));
	c->hostp = calloc(s->n_hosts + 1, sizeof(*c->hostp));
	c->bases = calloc(s->n_baselines + 1, sizeof(*c->bases));
	c->basep = calloc(s->n_baselines + 1, sizeof(*c->basep));
	for (size_t i = 0; i < s->n_providers; i++) {
		nkk += s->providers[i]->n_kms_keys;
	}
	c->kkeys = calloc(nkk + 1, sizeof(*c->kkeys));
	c->kkeyp = calloc(nkk + 1, sizeof(*c->kkeyp));
	c->kms = calloc(s->n_providers + 1, sizeof(*c->kms));
	c->servers = calloc((s->n_providers + 1) * NKPD_KMS_SERVERS_MAX, sizeof(*c->servers));
	c->keys = sodium_malloc((nv + 1) * NKP_KEY_BYTES);
	if (!c->provs || !c->provp || !c->vers || !c->verp || !c->hosts || !c->hostp || !c->bases ||
	    !c->basep || !c->kms || !c->servers || !c->kkeys || !c->kkeyp || !c->keys) {
		pack_ctx_fini(c);
		return NKP_ERR_NOMEM;
	}
	nkp__svcstate__service_state__init(&c->st);
	c->st.format_version = NKPD_STATE_FORMAT;
	c->st.generation = s->generation;
	c->st.epoch = s->epoch;
	c->st.stamp_floor_ns = s->stamp_floor_ns;
	for (size_t i = 0; i < s->n_providers; i++) {
		fill_provider(c, s->providers[i], i, &vi);
	}
	for (size_t i = 0; i < s->n_hosts; i++) {
		fill_host(c, s->hosts[i], i);
	}
	for (size_t i = 0; i < s->n_baselines; i++) {
		fill_baseline(c, &s->baselines[i], i);
	}
	c->st.n_baselines = s->n_baselines;
	c->st.baselines = c->basep;
	c->st.n_providers = s->n_providers;
	c->st.providers = c->provp;
	c->st.n_hosts = s->n_hosts;
	c->st.hosts = c->hostp;
	return NKP_OK;
}

static nkp_err file_write(const file_store *f, const nkpd_svc *s)
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
	err = nkp_sealfile_write(f->path, f->seal_key, NKPD_STATE_LABEL, buf, len);
	sodium_free(buf);
out_ctx:
	pack_ctx_fini(&c);
	return err;
}

/* One writer: a conflict means the core lost track of its own writes. */
static nkp_err file_commit(void *ctx, const nkpd_svc *s, uint64_t expected, uint64_t *revision)
{
	file_store *f = ctx;
	nkp_err err;

	if (expected != f->revision) {
		return NKP_ERR_STATE;
	}
	err = file_write(f, s);
	if (err == NKP_OK) {
		*revision = ++f->revision;
	}
	return err;
}

/* ---- loading ---- */

/* Text that fits `n` bytes with its NUL and holds no control byte. */
static bool text_ok(const char *t, size_t n)
{
	size_t len = t != NULL ? strlen(t) : n;

	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) {
			return false;
		}
	}
	return len < n;
}

/* A standard provider's KMS keys: each id once, a spare kept for a named
 * host, a key in use for a VM. */
static nkp_err load_kms_keys(nkpd_provider *p, const Nkp__Svcstate__Provider *m)
{
	if (m->n_kms_keys == 0) {
		return NKP_OK;
	}
	p->kms_keys = calloc(m->n_kms_keys, sizeof(*p->kms_keys));
	if (p->kms_keys == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (size_t i = 0; i < m->n_kms_keys; i++) {
		const Nkp__Svcstate__KmsKey *k = m->kms_keys[i];
		nkpd_kms_key *d = &p->kms_keys[i];

		if (k->id[0] == '\0' || !text_ok(k->id, sizeof(d->id)) ||
		    !text_ok(k->vm_uuid, sizeof(d->vm_uuid)) ||
		    !text_ok(k->vm_name, sizeof(d->vm_name)) ||
		    (k->state == NKPD_KMS_KEY_SPARE && !nkpd_util_name_valid(k->host)) ||
		    (k->state == NKPD_KMS_KEY_IN_USE && k->vm_uuid[0] == '\0') ||
		    (k->state != NKPD_KMS_KEY_SPARE && k->state != NKPD_KMS_KEY_IN_USE) ||
		    !text_ok(k->host, sizeof(d->host))) {
			return NKP_ERR_PARSE;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(p->kms_keys[j].id, k->id) == 0) {
				return NKP_ERR_PARSE;
			}
		}
		snprintf(d->id, sizeof(d->id), "%s", k->id);
		d->state = (nkpd_kms_key_state)k->state;
		snprintf(d->host, sizeof(d->host), "%s", k->host);
		snprintf(d->vm_uuid, sizeof(d->vm_uuid), "%s", k->vm_uuid);
		snprintf(d->vm_name, sizeof(d->vm_name), "%s", k->vm_name);
		d->created_unix = k->created_unix;
		d->attributes_set = k->attributes_set;
		p->n_kms_keys = i + 1;
	}
	return NKP_OK;
}

/* A provider's kind: native with versions, or standard with its KMS
 * settings and none. */
static nkp_err load_kind(nkpd_provider *p, const Nkp__Svcstate__Provider *m)
{
	const Nkp__Svcstate__KmsSettings *k = m->kms;
	bool ok;
	nkpd_kms_args a;

	p->kind = nkpd_kind_from_name(m->kind, &ok);
	if (!ok) {
		return NKP_ERR_FORMAT_VERSION; /* a kind a newer nkpd made */
	}
	if (p->kind == NKPD_KIND_NATIVE) {
		return k == NULL && m->n_kms_keys == 0 ? NKP_OK : NKP_ERR_PARSE;
	}
	if (k == NULL || m->n_versions != 0 || m->tpm_only) {
		return NKP_ERR_PARSE;
	}
	a = (nkpd_kms_args){
		.servers = (const char *const *)k->servers,
		.n_servers = k->n_servers,
		.ca_pem = k->ca_pem.data,
		.ca_len = k->ca_pem.len,
		.cert_pem = k->cert_pem.data,
		.cert_len = k->cert_pem.len,
		.key_pem = k->key_pem.data,
		.key_len = k->key_pem.len,
		.spare_pool = k->spare_pool,
	};
	if (nkpd_kms_new(&a, &p->kms) != NKP_OK) {
		return NKP_ERR_PARSE;
	}
	return load_kms_keys(p, m);
}

static nkp_err load_provider(nkpd_svc *s, const Nkp__Svcstate__Provider *m)
{
	nkpd_provider *p;
	nkp_err err = NKP_OK;

	if (m->id.len != NKP_ID_BYTES || !nkpd_util_name_valid(m->name) ||
	    nkpd_model_provider_find(s, m->name) != NULL ||
	    nkpd_model_provider_find_id(s, m->id.data) != NULL) {
		return NKP_ERR_PARSE;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(p->id, m->id.data, NKP_ID_BYTES);
	nkpd_util_copy_str(p->name, sizeof(p->name), m->name);
	p->is_default = m->is_default;
	p->backed_up = m->backed_up;
	p->tpm_only = m->tpm_only;
	p->backup_max_version = m->backup_max_version;
	p->created_unix = m->created_unix;
	p->backed_up_unix = m->backed_up_unix;
	err = load_kind(p, m);
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
			err = nkpd_model_add_version(p, v->version, (nkp_version_state)v->state,
						     v->created_unix, k);
			if (err != NKP_OK) {
				nkp_key_free(k);
				err = NKP_ERR_PARSE;
			}
		}
	}
	if (err == NKP_OK) {
		nkpd_provider **np = realloc(s->providers, (s->n_providers + 1) * sizeof(*np));
		err = np == NULL ? NKP_ERR_NOMEM : NKP_OK;
		if (np != NULL) {
			s->providers = np;
			s->providers[s->n_providers++] = p;
			return NKP_OK;
		}
	}
	nkpd_model_provider_free(p);
	return err;
}

static nkp_err load_host(nkpd_svc *s, const Nkp__Svcstate__Host *m)
{
	nkpd_host *h;
	nkpd_host **nh;

	if (!nkpd_util_name_valid(m->name) || m->public_key.len != NKP_PUBKEY_BYTES ||
	    strlen(m->address) > NKPD_ADDRESS_MAX || strlen(m->cluster) > NKPD_NAME_MAX ||
	    m->ak_public.len > NKPD_AK_MAX || m->ek_ca.len > NKPD_EK_CA_MAX ||
	    nkpd_model_host_find(s, m->name) != NULL) {
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
	nkpd_util_copy_str(h->conf.name, sizeof(h->conf.name), m->name);
	nkpd_util_copy_str(h->conf.address, sizeof(h->conf.address), m->address);
	nkpd_util_copy_str(h->conf.cluster, sizeof(h->conf.cluster), m->cluster);
	memcpy(h->conf.pub, m->public_key.data, NKP_PUBKEY_BYTES);
	h->conf.enrolled_unix = m->enrolled_unix;
	h->conf.ak_len = m->ak_public.len;
	h->conf.seal_policy = m->seal_policy && m->ak_public.len != 0;
	if (m->ak_public.len != 0) {
		memcpy(h->conf.ak, m->ak_public.data, m->ak_public.len);
	}
	if (m->ek_ca.len != 0) {
		h->conf.ek_ca = malloc(m->ek_ca.len);
		if (h->conf.ek_ca == NULL) {
			s->n_hosts++; /* freed with the model */
			s->hosts[s->n_hosts - 1] = h;
			return NKP_ERR_NOMEM;
		}
		memcpy(h->conf.ek_ca, m->ek_ca.data, m->ek_ca.len);
		h->conf.ek_ca_len = m->ek_ca.len;
	}
	h->att.state = h->conf.ak_len != 0 ? ATTEST_UNTRUSTED : ATTEST_NONE;
	snprintf(h->att.reason, sizeof(h->att.reason), "%s",
		 h->conf.ak_len != 0 ? "no quote yet" : "no attestation key pinned");
	s->hosts[s->n_hosts++] = h;
	return NKP_OK;
}

static nkp_err load_baseline(nkpd_svc *s, const Nkp__Svcstate__Baseline *m)
{
	nkpd_baseline *b = &s->baselines[s->n_baselines];

	if (!nkpd_util_name_valid(m->name) || m->pcr_digest.len != sizeof(b->pcr_digest) ||
	    m->pcr_mask == 0 || m->pcr_mask >= (1u << 24) || strlen(m->from_host) > NKPD_NAME_MAX ||
	    nkpd_model_baseline_find(s, m->name) != NULL) {
		return NKP_ERR_PARSE;
	}
	memset(b, 0, sizeof(*b));
	nkpd_util_copy_str(b->name, sizeof(b->name), m->name);
	nkpd_util_copy_str(b->from_host, sizeof(b->from_host), m->from_host);
	b->pcr_mask = m->pcr_mask;
	memcpy(b->pcr_digest, m->pcr_digest.data, sizeof(b->pcr_digest));
	b->created_unix = m->created_unix;
	s->n_baselines++;
	return NKP_OK;
}

static nkp_err load_model(nkpd_svc *s, const Nkp__Svcstate__ServiceState *st)
{
	nkp_err err = NKP_OK;

	if (st->format_version != NKPD_STATE_FORMAT) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&st->base) || st->n_providers > NKPD_MAX_PROVIDERS ||
	    st->n_hosts > NKPD_MAX_HOSTS || st->n_baselines > NKPD_MAX_BASELINES) {
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
	for (size_t i = 0; i < st->n_baselines && err == NKP_OK; i++) {
		err = load_baseline(s, st->baselines[i]);
	}
	if (err != NKP_OK) {
		nkpd_model_free(s);
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
static nkp_err file_load(void *ctx, nkpd_svc *s, uint64_t *revision)
{
	file_store *f = ctx;
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Svcstate__ServiceState *st;
	nkp_err err;

	err = nkp_sealfile_read(f->path, f->seal_key, NKPD_STATE_LABEL, &buf, &len);
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
		nkp_file_remove_stale_temps(f->path);
		*revision = ++f->revision;
	}
out_buf:
	nkp_secure_free(buf);
	return err;
}

/* A format this nkpd does not read is not damage and is not reported as
 * such. */
static void file_explain(void *ctx, char *buf, size_t size)
{
	const file_store *f = ctx;
	uint8_t *data = NULL;
	size_t len = 0;
	Nkp__Svcstate__ServiceState *st;
	nkp_err err;

	err = nkp_sealfile_read(f->path, f->seal_key, NKPD_STATE_LABEL, &data, &len);
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
	} else if (st->format_version > NKPD_STATE_FORMAT) {
		snprintf(buf, size,
			 "it has state format version %u, newer than version %u, the one this nkpd "
			 "reads: a newer nkpd wrote it",
			 (unsigned)st->format_version, NKPD_STATE_FORMAT);
	} else {
		snprintf(buf, size,
			 "it has state format version %u; this nkpd reads version %u only",
			 (unsigned)st->format_version, NKPD_STATE_FORMAT);
	}
	if (st != NULL) {
		nkp__svcstate__service_state__free_unpacked(st, &nkpi_wiping_allocator);
	}
	nkp_secure_free(data);
}

static void file_close(void *ctx)
{
	free(ctx);
}

nkp_err nkpd_store_file_new(const char *path, const nkp_key *seal_key, nkpd_store *out)
{
	file_store *f;

	if (strlen(path) >= sizeof(f->path)) {
		return NKP_ERR_INVALID;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkpd_util_copy_str(f->path, sizeof(f->path), path);
	f->seal_key = seal_key;
	*out = (nkpd_store){
		.ctx = f,
		.load = file_load,
		.commit = file_commit,
		.explain = file_explain,
		.close = file_close,
	};
	return NKP_OK;
}
