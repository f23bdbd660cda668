/* libnkp-hostd: enrolment, open/close, status. */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>
#include <nkp/log.h>
#include <nkp/nkp.h>

#include "hostd-internal.h"

#define IDENTITY_LABEL "nkp-host-identity"
#define IDENTITY_FORMAT_VERSION 1u

static char *path_join(const char *dir, const char *name)
{
	size_t len = strlen(dir) + strlen(name) + 2;
	char *p = malloc(len);

	if (p != NULL) {
		snprintf(p, len, "%s/%s", dir, name);
	}
	return p;
}

static nkp_err seal_key_load(const nkp_hostd_config *cfg, bool create, nkp_key **out,
			     nkpi_atrest_kind *kind)
{
	const nkpi_atrest_opts o = {
		.dir = cfg->state_dir, .seal_key_path = cfg->seal_key_path, .tpm = cfg->tpm};
	nkpi_atrest_kind k = NKPI_ATREST_FILE;
	nkp_err err = create ? nkpi_atrest_init(&o, out, &k) : nkpi_atrest_open(&o, out, &k);

	if (kind != NULL) {
		*kind = k;
	}
	return err;
}

/* Reads identity.nkp: the host identity and the pinned service key. */
static nkp_err identity_read(const char *path, const nkp_key *seal, nkp_identity **id,
			     uint8_t service_key[static NKP_PUBKEY_BYTES], uint64_t *created,
			     uint8_t pin_id[static HOSTD_PIN_ID_BYTES])
{
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Hoststate__HostIdentity *m;
	nkp_key *secret = NULL;
	nkp_err err = nkp_sealfile_read(path, seal, IDENTITY_LABEL, &buf, &len);

	if (err != NKP_OK) {
		return err;
	}
	m = nkp__hoststate__host_identity__unpack(&nkpi_wiping_allocator, len, buf);
	if (m == NULL || nkpi_has_unknown(&m->base) || m->host_secret.len != NKP_KEY_BYTES ||
	    m->service_key.len != NKP_PUBKEY_BYTES ||
	    (m->pin_id.len != 0 && m->pin_id.len != HOSTD_PIN_ID_BYTES)) {
		err = NKP_ERR_PARSE;
		goto out_msg;
	}
	if (m->format_version != IDENTITY_FORMAT_VERSION) {
		err = NKP_ERR_FORMAT_VERSION;
		goto out_msg;
	}
	err = nkp_key_from_bytes(m->host_secret.data, &secret);
	if (err == NKP_OK) {
		err = nkp_identity_from_key(secret, id);
		nkp_key_free(secret);
	}
	if (err == NKP_OK) {
		memcpy(service_key, m->service_key.data, NKP_PUBKEY_BYTES);
		*created = m->created_unix;
		memset(pin_id, 0, HOSTD_PIN_ID_BYTES);
		if (m->pin_id.len == HOSTD_PIN_ID_BYTES) {
			memcpy(pin_id, m->pin_id.data, HOSTD_PIN_ID_BYTES);
		}
	}
out_msg:
	if (m != NULL) {
		nkp__hoststate__host_identity__free_unpacked(m, &nkpi_wiping_allocator);
	}
	nkp_secure_free(buf);
	return err;
}

static nkp_err identity_write(const char *path, const nkp_key *seal, const nkp_identity *id,
			      const uint8_t service_key[static NKP_PUBKEY_BYTES], uint64_t created)
{
	Nkp__Hoststate__HostIdentity m = NKP__HOSTSTATE__HOST_IDENTITY__INIT;
	uint8_t *secret = sodium_malloc(NKP_KEY_BYTES);
	uint8_t *buf = NULL;
	uint8_t pin_id[HOSTD_PIN_ID_BYTES];
	size_t len;
	nkp_err err = NKP_ERR_NOMEM;

	if (secret == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp_key_export(nkp_identity_secret(id), secret);
	m.format_version = IDENTITY_FORMAT_VERSION;
	m.host_secret.data = secret;
	m.host_secret.len = NKP_KEY_BYTES;
	m.service_key.data = (uint8_t *)service_key;
	m.service_key.len = NKP_PUBKEY_BYTES;
	m.created_unix = created;
	m.pinned_unix = nkpi_now();
	/* A new pin: the generation pair the host holds, from whatever
	 * service, no longer counts (docs/PROTOCOL.md "Generations"). */
	randombytes_buf(pin_id, sizeof(pin_id));
	m.pin_id.data = pin_id;
	m.pin_id.len = sizeof(pin_id);
	len = nkp__hoststate__host_identity__get_packed_size(&m);
	buf = sodium_malloc(len);
	if (buf != NULL) {
		nkp__hoststate__host_identity__pack(&m, buf);
		err = nkp_sealfile_write(path, seal, IDENTITY_LABEL, buf, len);
		sodium_free(buf);
	}
	sodium_free(secret);
	return err;
}

/* Takes STATE_DIR/hostd.lock before anything in the directory is read or
 * changed: a second handle on it (another nkp-hostd, an `nkp-hostd init`,
 * a host daemon with the plugin loaded) would load the same state, tidy
 * away temp files and the key log the first one relies on, and save over
 * it. Refused at once, naming the holder, for its log sink. */
static nkp_err state_dir_lock(const char *dir, nkp_file_lock **out)
{
	char *path = path_join(dir, NKP_HOSTD_LOCK_FILE);
	nkp_err err;

	if (path == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = nkp_file_lock_take(path, 0, out);
	if (err == NKP_ERR_STATE) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-LOCKED",
			"state directory %s is in use by another process (pid %ld holds %s): one "
			"nkp-hostd per state directory; stop that one first",
			dir, nkp_file_lock_holder(path), path);
	} else if (err != NKP_OK && err != NKP_ERR_NOT_FOUND) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-LOCKED", "cannot take the lock %s: %s", path,
			nkp_strerror(err));
	}
	free(path);
	return err;
}

static nkp_err state_dir_make(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return nkp_err_from_errno(errno);
	}
	if (stat(dir, &st) != 0) {
		return nkp_err_from_errno(errno);
	}
	if (!S_ISDIR(st.st_mode)) {
		return NKP_ERR_INVALID;
	}
	/* Nobody else has any business in here. Group search (0710) is
	 * what nkp-hostd gives its local group to reach host.sock. */
	if ((st.st_mode & 067) != 0 && chmod(dir, 0700 | (st.st_mode & 010)) != 0) {
		return nkp_err_from_errno(errno);
	}
	return NKP_OK;
}

nkp_err nkp_hostd_init(const nkp_hostd_config *cfg,
		       const uint8_t service_key[static NKP_HOSTD_PUBKEY_BYTES],
		       uint8_t host_public[static NKP_HOSTD_PUBKEY_BYTES])
{
	nkp_file_lock *dir_lock = NULL;
	nkp_key *seal = NULL;
	nkp_identity *id = NULL;
	uint8_t old_service[NKP_PUBKEY_BYTES];
	uint8_t old_pin[HOSTD_PIN_ID_BYTES];
	uint64_t created = 0;
	char *path = NULL;
	nkp_err err;

	if (cfg == NULL || cfg->state_dir == NULL || service_key == NULL || nkp_init() != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	err = state_dir_make(cfg->state_dir);
	if (err != NKP_OK) {
		return err;
	}
	err = state_dir_lock(cfg->state_dir, &dir_lock);
	if (err != NKP_OK) {
		return err;
	}
	err = seal_key_load(cfg, true, &seal, NULL);
	if (err != NKP_OK) {
		goto out_lock;
	}
	path = path_join(cfg->state_dir, "identity.nkp");
	if (path == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_seal;
	}
	err = identity_read(path, seal, &id, old_service, &created, old_pin);
	if (err == NKP_ERR_NOT_FOUND) {
		created = nkpi_now();
		err = nkp_identity_generate(&id);
	}
	if (err != NKP_OK) {
		goto out_path;
	}
	err = identity_write(path, seal, id, service_key, created);
	if (err == NKP_OK) {
		memcpy(host_public, nkp_identity_public(id), NKP_PUBKEY_BYTES);
	}
	nkp_identity_free(id);
out_path:
	free(path);
out_seal:
	nkp_key_free(seal);
out_lock:
	nkp_file_unlock(dir_lock);
	return err;
}

static nkp_err open_paths_and_keys(nkp_hostd *h, const nkp_hostd_config *cfg)
{
	char *idpath;
	uint64_t created = 0;
	nkp_err err;

	h->state_dir = strdup(cfg->state_dir);
	h->keys_path = path_join(cfg->state_dir, "keys.nkp");
	idpath = path_join(cfg->state_dir, "identity.nkp");
	if (h->state_dir == NULL || h->keys_path == NULL || idpath == NULL) {
		free(idpath);
		return NKP_ERR_NOMEM;
	}
	err = seal_key_load(cfg, false, &h->seal_key, &h->atrest);
	if (err == NKP_OK && h->atrest == NKPI_ATREST_TPM) {
		/* The TPM the key was unsealed with answers quotes too. */
		h->tpm_tcti = strdup(cfg->tpm != NULL ? cfg->tpm : NKPI_ATREST_DEFAULT_TCTI);
		err = h->tpm_tcti != NULL ? NKP_OK : NKP_ERR_NOMEM;
	}
	if (err == NKP_OK && h->atrest == NKPI_ATREST_TPM) {
		const nkpi_atrest_opts o = {.dir = cfg->state_dir, .tpm = h->tpm_tcti};

		err = nkpi_atrest_binding(&o, &h->seal_bound, h->seal_digest);
	}
	if (err == NKP_OK) {
		err = identity_read(idpath, h->seal_key, &h->identity, h->service_key, &created,
				    h->pin_id);
	}
	if (err == NKP_OK) {
		err = nkpi_session_new(h->identity, h->service_key, true, &h->session);
	}
	free(idpath);
	return err;
}

/* The handle always opens its own event log: an nkp_eventlog made by the
 * caller's libnkp would be another copy's object (include/nkp/hostd.h). */
static nkp_err open_events(nkp_hostd *h, const nkp_hostd_config *cfg)
{
	const char *name = cfg->events_path;
	char *path = NULL;
	nkp_err err;

	if (name == NULL) {
		path = path_join(cfg->state_dir, "events.jsonl");
		if (path == NULL) {
			return NKP_ERR_NOMEM;
		}
		name = path;
	} else if (name[0] == '\0') {
		name = NULL; /* events go to the log sink only */
	}
	err = nkp_eventlog_open(name, &h->events);
	free(path);
	return err;
}

static void set_host_name(nkp_hostd *h, const char *name)
{
	char buf[256] = "";

	if (name == NULL) {
		if (gethostname(buf, sizeof(buf) - 1) != 0) {
			snprintf(buf, sizeof(buf), "host");
		}
		name = buf;
	}
	snprintf(h->host_name, sizeof(h->host_name), "%s", name);
}

nkp_err nkp_hostd_open(const nkp_hostd_config *cfg, nkp_hostd **out)
{
	nkp_hostd *h;
	nkp_err err;

	if (cfg == NULL || cfg->state_dir == NULL || out == NULL || nkp_init() != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		return NKP_ERR_NOMEM;
	}
	pthread_rwlock_init(&h->lock, NULL);
	pthread_mutex_init(&h->save_lock, NULL);
	pthread_mutex_init(&h->tpm_lock, NULL);
	pthread_mutex_init(&h->seal_lock, NULL);
	nkpi_mono_cond_init(&h->seal_cond);
	set_host_name(h, cfg->host_name);
	randombytes_buf(h->boot_nonce, sizeof(h->boot_nonce));
	err = state_dir_lock(cfg->state_dir, &h->dir_lock);
	if (err == NKP_OK) {
		err = open_paths_and_keys(h, cfg);
	}
	if (err == NKP_OK) {
		err = hostd_load(h);
	}
	if (err == NKP_OK) {
		err = open_events(h, cfg);
	}
	if (err != NKP_OK) {
		nkp_hostd_close(h);
		return err;
	}
	atomic_store(&h->last_flush, nkpi_now());
	*out = h;
	return NKP_OK;
}

void nkp_hostd_close(nkp_hostd *h)
{
	if (h == NULL) {
		return;
	}
	hostd_listener_stop(h->listener);
	h->listener = NULL;
	hostd_seal_stop(h);
	hostd_guard_final(h);
	if (h->seal_key != NULL && atomic_load(&h->usage_dirty) &&
	    hostd_save(h, &h->state, &h->applied) != NKP_OK) {
		nkp_event(h->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->host_name,
			  "could not save usage counters to %s", h->keys_path);
	}
	hostd_state_fini(&h->state);
	nkpi_session_free(h->session);
	nkp_identity_free(h->identity);
	nkp_key_free(h->seal_key);
	nkp_eventlog_close(h->events);
	free(h->state_dir);
	free(h->keys_path);
	free(h->tpm_tcti);
	pthread_rwlock_destroy(&h->lock);
	pthread_mutex_destroy(&h->save_lock);
	pthread_mutex_destroy(&h->tpm_lock);
	pthread_mutex_destroy(&h->seal_lock);
	pthread_cond_destroy(&h->seal_cond);
	/* Last: nothing of this handle touches the directory any more. */
	nkp_file_unlock(h->dir_lock);
	sodium_memzero(h, sizeof(*h));
	free(h);
}

void nkp_hostd_buf_free(uint8_t *buf, size_t len)
{
	if (buf == NULL) {
		return;
	}
	sodium_memzero(buf, len);
	free(buf);
}

const char *nkp_hostd_strerror(nkp_err err)
{
	return nkp_strerror(err);
}

void nkp_hostd_set_log_sink(nkp_log_sink sink, void *arg)
{
	nkp_log_set_sink(sink, arg);
}

const uint8_t *nkp_hostd_public_key(const nkp_hostd *h)
{
	return nkp_identity_public(h->identity);
}

const uint8_t *nkp_hostd_service_key(const nkp_hostd *h)
{
	return h->service_key;
}

nkp_eventlog *nkpi_hostd_eventlog(nkp_hostd *h)
{
	return h->events;
}

bool nkpi_hostd_nng_wedged(nkp_hostd *h)
{
	return atomic_load(&h->nng_wedged);
}

static nkp_err provider_info(const hostd_provider *p, nkp_hostd_provider_info *out)
{
	memcpy(out->id, p->id, NKP_ID_BYTES);
	memcpy(out->name, p->name, sizeof(out->name));
	out->is_default = p->is_default;
	out->backed_up = p->backed_up;
	out->tpm_only = p->tpm_only;
	out->versions = calloc(p->n_versions + 1, sizeof(*out->versions));
	if (out->versions == NULL) {
		return NKP_ERR_NOMEM;
	}
	out->n_versions = p->n_versions;
	for (size_t j = 0; j < p->n_versions; j++) {
		const hostd_version *v = &p->versions[j];
		nkp_hostd_version_info *o = &out->versions[j];
		int64_t known = atomic_load(&v->keysafes);

		o->version = v->version;
		o->state = v->state;
		o->created_unix = v->created_unix;
		o->keysafes = known < 0 ? 0 : (uint64_t)known;
		o->created = atomic_load(&v->created);
		o->rewrapped = atomic_load(&v->rewrapped);
		o->unwrapped = atomic_load(&v->unwrapped);
		o->last_used_unix = atomic_load(&v->last_used);
	}
	return NKP_OK;
}

nkp_err nkp_hostd_status_get(nkp_hostd *h, nkp_hostd_status **out)
{
	nkp_hostd_status *st;
	nkp_err err = NKP_OK;

	if (h == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(st->boot_nonce, h->boot_nonce, sizeof(st->boot_nonce));
	memcpy(st->host_name, h->host_name, sizeof(st->host_name));
	st->dropped_frames = atomic_load(&h->guard.dropped);
	st->refused_connections = atomic_load(&h->guard.refused_conns);
	st->closed_connections = atomic_load(&h->guard.closed_conns);
	st->tpm = h->atrest == NKPI_ATREST_TPM;
	st->keys_at_rest = nkpi_atrest_name(h->atrest);
	pthread_mutex_lock(&h->seal_lock);
	st->seal_policy_bound = h->seal_bound;
	snprintf(st->seal_policy_error, sizeof(st->seal_policy_error), "%s", h->seal_error);
	pthread_mutex_unlock(&h->seal_lock);
	pthread_rwlock_rdlock(&h->lock);
	st->generation = h->applied.counter;
	st->providers = calloc(h->state.n + 1, sizeof(*st->providers));
	if (st->providers == NULL) {
		err = NKP_ERR_NOMEM;
	}
	for (size_t i = 0; err == NKP_OK && i < h->state.n; i++) {
		err = provider_info(&h->state.p[i], &st->providers[i]);
		st->n_providers = i + 1;
	}
	pthread_rwlock_unlock(&h->lock);
	if (err != NKP_OK) {
		nkp_hostd_status_free(st);
		return err;
	}
	*out = st;
	return NKP_OK;
}

void nkp_hostd_status_free(nkp_hostd_status *st)
{
	if (st == NULL) {
		return;
	}
	for (size_t i = 0; i < st->n_providers; i++) {
		free(st->providers[i].versions);
	}
	free(st->providers);
	free(st);
}
