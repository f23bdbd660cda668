/* keys.nkp: the applied providers, generation and usage, sealed under the
 * host sealing key. Serialised key bytes only ever sit in sodium_malloc
 * memory (the per-thread scratch buffer for the packed message) and are
 * wiped after use.
 *
 * A save appends one record to keys.nkp.log (open, write, fdatasync,
 * close) instead of rewriting keys.nkp (a temp file, two fsyncs, two
 * renames): record = u32le(len) || sealed HostKeys, label
 * "nkp-host-keys-log/<epoch hex>/<index>", so a record opens only at its
 * own place after the snapshot that carries that epoch. A save compacts
 * (new epoch, keys.nkp written atomically with .prev, log unlinked) when
 * there is no snapshot yet, the log is full, or the new state drops a
 * version: a removed key must not stay in more sealed copies than the
 * snapshot and its .prev. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>

#include "hostd-internal.h"
#include "sealed.pb-c.h"

#define KEYS_LABEL "nkp-host-keys"
#define KEYS_FORMAT_VERSION 1u
#define LOG_LABEL_PREFIX "nkp-host-keys-log/"
#define LOG_LABEL_MAX 96u
#define LOG_REC_HEADER 4u
/* Room for a record's sealing around its plaintext (nonce, tag, label,
 * protobuf framing), to keep the log under NKP_SEALED_MAX_FILE. */
#define LOG_REC_SLACK 256u

/* Trusted providers (`tpm_only`) are never written: their keys reach a
 * host only while nkpd finds it attested, and a restart (into software
 * no baseline approves, perhaps) must find none on disk. */
static bool holds_trusted(const hostd_state *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i].tpm_only) {
			return true;
		}
	}
	return false;
}

/* The held providers but the trusted ones through the keyset encoder. The
 * keys are the held primaries' own locked key bytes (packing only reads
 * them): no copy. */
static nkp_err keys_encode(const hostd_state *s, nkpi_keyset_enc *e)
{
	size_t n_versions = 0;
	nkp_err err;

	for (size_t i = 0; i < s->n; i++) {
		n_versions += s->p[i].n_versions;
	}
	err = nkpi_keyset_enc_init(e, s->n, n_versions);
	for (size_t i = 0; i < s->n && err == NKP_OK; i++) {
		const hostd_provider *p = &s->p[i];
		if (p->tpm_only) {
			continue;
		}
		nkpi_keyset_provider vp = {
			.id = p->id,
			.name = p->name,
			.is_default = p->is_default,
			.backed_up = p->backed_up,
			.tpm_only = p->tpm_only,
		};

		nkpi_keyset_enc_provider(e, &vp);
		for (size_t j = 0; j < p->n_versions; j++) {
			const hostd_version *v = &p->versions[j];
			nkpi_keyset_version vv = {
				.version = v->version,
				.state = v->state,
				.created_unix = v->created_unix,
				.key = nkpi_key_bytes(nkp_primary_key(v->primary)),
			};

			nkpi_keyset_enc_version(e, &vv);
		}
	}
	return err;
}

static void log_label(char out[static LOG_LABEL_MAX],
		      const uint8_t epoch[static HOSTD_LOG_EPOCH_BYTES], uint32_t index)
{
	char hex[HOSTD_LOG_EPOCH_BYTES * 2 + 1];

	sodium_bin2hex(hex, sizeof(hex), epoch, HOSTD_LOG_EPOCH_BYTES);
	snprintf(out, LOG_LABEL_MAX, LOG_LABEL_PREFIX "%s/%" PRIu32, hex, index);
}

/* True if `s` holds every version `old` holds, with the same key. */
static bool keeps_every_version(const hostd_state *old, const hostd_state *s)
{
	for (size_t i = 0; i < old->n; i++) {
		const hostd_provider *op = &old->p[i];
		const hostd_provider *np = hostd_state_find_id(s, op->id);

		if (np == NULL) {
			return false;
		}
		for (size_t j = 0; j < op->n_versions; j++) {
			const hostd_version *ov = &op->versions[j];
			const hostd_version *nv = hostd_provider_version(np, ov->version);

			if (nv == NULL ||
			    (nv->primary != ov->primary &&
			     sodium_memcmp(nkpi_key_bytes(nkp_primary_key(nv->primary)),
					   nkpi_key_bytes(nkp_primary_key(ov->primary)),
					   NKP_KEY_BYTES) != 0)) {
				return false;
			}
		}
	}
	return true;
}

/* Append unless there is no snapshot yet, the log is full, `s` drops a
 * version, or keys.nkp.prev still holds a version dropped at the last
 * compaction (it goes from there at the next push, as it would without
 * the log). */
static bool can_append(const nkp_hostd *h, size_t len, bool drops)
{
	return h->have_snapshot && !drops && !h->prev_holds_dropped &&
	       h->log_records < HOSTD_LOG_MAX_RECORDS &&
	       h->log_len + LOG_REC_HEADER + len + LOG_REC_SLACK <= NKP_SEALED_MAX_FILE;
}

/* Appends a record of `buf` durably, or leaves the log at its good
 * length. *gone: the log is shorter than the records written to it
 * (removed or cut by hand while the host ran): nothing is written, the
 * caller compacts. */
static nkp_err log_append(nkp_hostd *h, const uint8_t *buf, size_t len, bool *gone)
{
	char label[LOG_LABEL_MAX];
	uint8_t *sealed = NULL, *rec;
	size_t n = 0;
	nkp_err err;

	log_label(label, h->log_epoch, h->log_records);
	err = nkp_seal_bytes(h->seal_key, label, buf, len, &sealed, &n);
	if (err != NKP_OK) {
		return err;
	}
	rec = malloc(LOG_REC_HEADER + n);
	if (rec == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_sealed;
	}
	nkpi_store32_le(rec, (uint32_t)n);
	memcpy(rec + LOG_REC_HEADER, sealed, n);
	/* The first record after a snapshot creates the file: its directory
	 * entry is made durable too. */
	err = nkpi_file_append(h->log_path, h->log_len, &h->log_trim, rec, LOG_REC_HEADER + n,
			       h->log_records == 0, gone);
	if (err == NKP_OK) {
		h->log_records++;
		h->log_len += LOG_REC_HEADER + n;
	}
	free(rec);
out_sealed:
	free(sealed);
	return err;
}

/* A new snapshot; the log it replaces goes. A crash before the unlink
 * leaves a log of the old epoch, which the next load finds stale. */
static nkp_err compact(nkp_hostd *h, const uint8_t epoch[static HOSTD_LOG_EPOCH_BYTES],
		       const uint8_t *buf, size_t len, bool drops)
{
	nkp_err err = nkp_sealfile_write(h->keys_path, h->seal_key, KEYS_LABEL, buf, len);

	if (err != NKP_OK) {
		return err;
	}
	memcpy(h->log_epoch, epoch, HOSTD_LOG_EPOCH_BYTES);
	h->prev_holds_dropped = drops && h->have_snapshot;
	h->have_snapshot = true;
	h->log_records = 0;
	h->log_len = 0;
	/* If it stays, the next append cuts it to nothing first. */
	h->log_trim = unlink(h->log_path) != 0 && errno != ENOENT;
	return NKP_OK;
}

static nkp_err save_locked(nkp_hostd *h, const hostd_state *s, const hostd_pair *applied)
{
	Nkp__Hoststate__HostKeys msg = NKP__HOSTSTATE__HOST_KEYS__INIT;
	Nkp__Wire__VersionUsage **usage = NULL;
	uint8_t epoch[HOSTD_LOG_EPOCH_BYTES];
	size_t n_usage = 0, len;
	bool append, drops, gone = false;
	nkpi_keyset_enc w;
	uint8_t *buf;
	bool trusted = holds_trusted(s);
	nkp_err err = keys_encode(s, &w);

	if (err != NKP_OK) {
		return err;
	}
	err = hostd_state_usage(s, &usage, &n_usage);
	if (err != NKP_OK) {
		goto out_wire;
	}
	msg.format_version = KEYS_FORMAT_VERSION;
	msg.service_key.data = h->service_key;
	msg.service_key.len = NKP_PUBKEY_BYTES;
	/* Without its trusted providers the file is not the state applied:
	 * it names no pair, so after a restart the next push is taken. */
	msg.applied_generation = trusted ? 0 : applied->counter;
	msg.applied_epoch = trusted ? 0 : applied->epoch;
	if (applied->have_digest && !trusted) {
		msg.applied_digest.data = (uint8_t *)applied->digest;
		msg.applied_digest.len = NKPI_DIGEST_BYTES;
	}
	msg.pin_id.data = h->pin_id;
	msg.pin_id.len = HOSTD_PIN_ID_BYTES;
	msg.n_providers = w.n_providers;
	msg.providers = w.providers;
	msg.n_usage = n_usage;
	msg.usage = usage;
	msg.saved_unix = nkpi_now();
	msg.log_epoch.data = epoch;
	msg.log_epoch.len = sizeof(epoch);
	len = nkp__hoststate__host_keys__get_packed_size(&msg);
	drops = !keeps_every_version(&h->state, s);
	append = can_append(h, len, drops);
	if (append) {
		memcpy(epoch, h->log_epoch, sizeof(epoch));
	} else {
		randombytes_buf(epoch, sizeof(epoch));
	}
	/* Packed into this thread's locked scratch buffer (no sodium_malloc
	 * per save); wiped as soon as it is sealed. */
	buf = nkpi_scratch(len + 1);
	if (buf == NULL) {
		err = NKP_ERR_NOMEM;
		goto out_usage;
	}
	nkp__hoststate__host_keys__pack(&msg, buf);
	err = append ? log_append(h, buf, len, &gone) : compact(h, epoch, buf, len, drops);
	if (gone) {
		/* Records this host wrote are missing: the state goes into a new
		 * snapshot (a new epoch) rather than onto what is left. */
		nkp_log(NKP_LOG_WARN, "NKP-HOSTD-LOG-GONE",
			"%s was removed or cut while nkp-hostd ran; a new snapshot is written",
			h->log_path);
		randombytes_buf(epoch, sizeof(epoch));
		nkp__hoststate__host_keys__pack(&msg, buf);
		err = compact(h, epoch, buf, len, drops);
	}
	sodium_memzero(buf, len);
	if (err == NKP_OK) {
		atomic_store(&h->usage_dirty, false);
		atomic_store(&h->last_flush, nkpi_now());
	}
out_usage:
	hostd_state_usage_free(usage, n_usage);
out_wire:
	nkpi_keyset_enc_fini(&w);
	return err;
}

nkp_err hostd_save(nkp_hostd *h, const hostd_state *s, const hostd_pair *applied)
{
	nkp_err err;

	pthread_mutex_lock(&h->save_lock);
	err = save_locked(h, s, applied);
	pthread_mutex_unlock(&h->save_lock);
	return err;
}

/* The checks of a HostKeys beyond its keyset (*ks on success). */
static nkp_err keys_check(const Nkp__Hoststate__HostKeys *m, nkpi_keyset *ks)
{
	if (nkpi_has_unknown(&m->base)) {
		return NKP_ERR_PARSE;
	}
	if (m->format_version != KEYS_FORMAT_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if ((m->service_key.len != 0 && m->service_key.len != NKP_PUBKEY_BYTES) ||
	    (m->log_epoch.len != 0 && m->log_epoch.len != HOSTD_LOG_EPOCH_BYTES) ||
	    (m->applied_digest.len != 0 && m->applied_digest.len != NKPI_DIGEST_BYTES) ||
	    (m->pin_id.len != 0 && m->pin_id.len != HOSTD_PIN_ID_BYTES)) {
		return NKP_ERR_PARSE;
	}
	return nkpi_keyset_check(m->n_providers, m->providers, ks);
}

/* The length of the record at `off`, if it lies whole in the file. */
static bool record_at(const uint8_t *file, size_t size, size_t off, size_t *len)
{
	uint32_t n;

	if (size - off < LOG_REC_HEADER) {
		return false;
	}
	n = (uint32_t)file[off] | (uint32_t)file[off + 1] << 8 | (uint32_t)file[off + 2] << 16 |
	    (uint32_t)file[off + 3] << 24;
	if (n > size - off - LOG_REC_HEADER) {
		return false;
	}
	*len = n;
	return true;
}

/* True if the sealed record claims a label of `epoch` and opens under it:
 * a genuine record out of its place. */
static bool opens_out_of_place(const nkp_hostd *h, const uint8_t *rec, size_t len)
{
	char prefix[LOG_LABEL_MAX], label[256];
	Nkp__Sealed__SealedFile *sf = nkp__sealed__sealed_file__unpack(NULL, len, rec);
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	bool ours;

	if (sf == NULL) {
		return false;
	}
	log_label(prefix, h->log_epoch, 0);
	prefix[strlen(prefix) - 1] = '\0';
	ours = sf->label != NULL && strncmp(sf->label, prefix, strlen(prefix)) == 0 &&
	       strlen(sf->label) < sizeof(label);
	if (ours) {
		snprintf(label, sizeof(label), "%s", sf->label);
	}
	nkp__sealed__sealed_file__free_unpacked(sf, NULL);
	if (!ours || nkp_unseal_bytes(h->seal_key, label, rec, len, &pt, &ptlen) != NKP_OK) {
		return false;
	}
	nkp_secure_free(pt);
	return true;
}

/* True if a genuine record of this epoch lies at or after `off`. */
static bool genuine_record_from(const nkp_hostd *h, const uint8_t *file, size_t size, size_t off)
{
	size_t n;

	while (record_at(file, size, off, &n)) {
		if (opens_out_of_place(h, file + off + LOG_REC_HEADER, n)) {
			return true;
		}
		off += LOG_REC_HEADER + n;
	}
	return false;
}

/* Opens the records in order; *last gets the plaintext of the last one
 * that opens (NULL if none). Returns where the good prefix ends. */
static size_t log_walk(nkp_hostd *h, const uint8_t *file, size_t size, uint8_t **last,
		       size_t *lastlen, uint32_t *count)
{
	char label[LOG_LABEL_MAX];
	size_t off = 0, n;
	uint32_t i = 0;

	while (record_at(file, size, off, &n)) {
		uint8_t *pt = NULL;
		size_t ptlen = 0;

		log_label(label, h->log_epoch, i);
		if (nkp_unseal_bytes(h->seal_key, label, file + off + LOG_REC_HEADER, n, &pt,
				     &ptlen) != NKP_OK) {
			break;
		}
		nkp_secure_free(*last);
		*last = pt;
		*lastlen = ptlen;
		off += LOG_REC_HEADER + n;
		i++;
	}
	*count = i;
	return off;
}

/* Reads keys.nkp.log after the snapshot. *out: the newest state it holds,
 * sodium_malloc'd (NULL: the snapshot is the newest). A torn last record
 * is dropped (cut before the next append); a log of another epoch is
 * stale and removed; a bad record before a genuine one is tampering:
 * NKP_ERR_AUTH. */
static nkp_err log_load(nkp_hostd *h, uint8_t **out, size_t *outlen)
{
	uint8_t *file = NULL, *last = NULL;
	size_t size = 0, lastlen = 0, good;
	uint32_t count = 0;
	nkp_err err = nkp_file_read(h->log_path, NKP_SEALED_MAX_FILE, &file, &size);

	if (err == NKP_ERR_NOT_FOUND) {
		return NKP_OK;
	}
	if (err != NKP_OK) {
		return err == NKP_ERR_TOO_LARGE ? NKP_ERR_AUTH : err;
	}
	good = log_walk(h, file, size, &last, &lastlen, &count);
	if (good < size && genuine_record_from(h, file, size, good)) {
		nkp_secure_free(last);
		err = NKP_ERR_AUTH;
		goto out_file;
	}
	if (good < size && count == 0) {
		nkp_log(NKP_LOG_NOTICE, "NKP-HOSTD-LOG-STALE",
			"%s does not follow %s (left by a crash during a snapshot or in its "
			"first save, or %s was restored): it is ignored and removed",
			h->log_path, h->keys_path, h->keys_path);
		h->log_trim = unlink(h->log_path) != 0;
		good = 0;
	} else if (good < size) {
		nkp_log(NKP_LOG_WARN, "NKP-HOSTD-LOG-TORN",
			"%s ends in %zu bytes of an unfinished write after record %" PRIu32
			" (a crash while saving): the state of that record is kept, the rest "
			"is cut off at the next save",
			h->log_path, size - good, count);
		h->log_trim = true;
	}
	h->log_records = count;
	h->log_len = good;
	*out = last;
	*outlen = lastlen;
out_file:
	free(file);
	return err;
}

/* A generation pair counts only for the service that pushed it, under the
 * pin it was pushed under: re-pinning (`nkp-hostd init`) clears it. A file
 * without an epoch (written before pairs) keeps its counter for people,
 * but epoch 0 means no pair: the next push is taken whatever its pair. */
static void keys_apply_pair(nkp_hostd *h, const Nkp__Hoststate__HostKeys *m)
{
	/* A file from before pins names none (and holds no epoch). */
	bool same_pin = m->pin_id.len == 0 ||
			sodium_memcmp(m->pin_id.data, h->pin_id, HOSTD_PIN_ID_BYTES) == 0;

	memset(&h->applied, 0, sizeof(h->applied));
	if (m->service_key.len != NKP_PUBKEY_BYTES ||
	    sodium_memcmp(m->service_key.data, h->service_key, NKP_PUBKEY_BYTES) != 0 ||
	    !same_pin || m->applied_generation >= NKPI_GENERATION_MAX) {
		return;
	}
	h->applied.epoch = m->applied_epoch;
	h->applied.counter = m->applied_generation;
	h->applied.have_digest = m->applied_digest.len == NKPI_DIGEST_BYTES;
	if (h->applied.have_digest) {
		memcpy(h->applied.digest, m->applied_digest.data, NKPI_DIGEST_BYTES);
	}
}

/* Builds h's state from a checked HostKeys. */
static nkp_err keys_apply(nkp_hostd *h, const uint8_t *buf, size_t len)
{
	Nkp__Hoststate__HostKeys *m =
		nkp__hoststate__host_keys__unpack(&nkpi_wiping_allocator, len, buf);
	nkpi_keyset ks = {0};
	nkp_err err;

	if (m == NULL) {
		return NKP_ERR_PARSE;
	}
	err = keys_check(m, &ks);
	if (err == NKP_OK) {
		err = hostd_state_build(&ks, NULL, &h->state);
	}
	if (err == NKP_OK) {
		hostd_state_load_usage(&h->state, m->n_usage, m->usage);
		keys_apply_pair(h, m);
	}
	nkp__hoststate__host_keys__free_unpacked(m, &nkpi_wiping_allocator);
	return err;
}

/* The snapshot's epoch, without building anything from it. */
static nkp_err snapshot_epoch(nkp_hostd *h, const uint8_t *buf, size_t len)
{
	Nkp__Hoststate__HostKeys *m =
		nkp__hoststate__host_keys__unpack(&nkpi_wiping_allocator, len, buf);
	nkpi_keyset ks;
	nkp_err err;

	if (m == NULL) {
		return NKP_ERR_PARSE;
	}
	err = keys_check(m, &ks);
	if (err == NKP_OK) {
		/* A snapshot from before the log has no epoch: all zero. */
		memset(h->log_epoch, 0, HOSTD_LOG_EPOCH_BYTES);
		if (m->log_epoch.len == HOSTD_LOG_EPOCH_BYTES) {
			memcpy(h->log_epoch, m->log_epoch.data, HOSTD_LOG_EPOCH_BYTES);
		}
		h->have_snapshot = true;
	}
	nkp__hoststate__host_keys__free_unpacked(m, &nkpi_wiping_allocator);
	return err;
}

/* True if any version of `ks` is one h no longer holds. */
static bool drops_from(const nkp_hostd *h, const nkpi_keyset *ks)
{
	for (size_t i = 0; i < ks->n_providers; i++) {
		nkpi_keyset_provider p;
		const hostd_provider *hp;

		nkpi_keyset_provider_at(ks, i, &p);
		hp = hostd_state_find_id(&h->state, p.id);
		for (size_t j = 0; j < p.n_versions; j++) {
			nkpi_keyset_version v;

			nkpi_keyset_version_at(ks, i, j, &v);
			if (hp == NULL || hostd_provider_version(hp, v.version) == NULL) {
				return true;
			}
		}
	}
	return false;
}

/* True if keys.nkp.prev holds a version h no longer holds (a restart
 * right after a retire or delete): the next save then writes a snapshot,
 * which takes it out of .prev. Unreadable, invalid or absent: false. */
static bool prev_holds_dropped(const nkp_hostd *h)
{
	char path[PATH_MAX];
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Hoststate__HostKeys *m;
	nkpi_keyset ks;
	bool dropped = false;

	if ((size_t)snprintf(path, sizeof(path), "%s.prev", h->keys_path) >= sizeof(path) ||
	    nkp_sealfile_read(path, h->seal_key, KEYS_LABEL, &buf, &len) != NKP_OK) {
		return false;
	}
	m = nkp__hoststate__host_keys__unpack(&nkpi_wiping_allocator, len, buf);
	if (m != NULL && nkpi_keyset_check(m->n_providers, m->providers, &ks) == NKP_OK) {
		dropped = drops_from(h, &ks);
	}
	if (m != NULL) {
		nkp__hoststate__host_keys__free_unpacked(m, &nkpi_wiping_allocator);
	}
	nkp_secure_free(buf);
	return dropped;
}

static void log_damaged(const char *path, const nkp_hostd *h, nkp_err err)
{
	if (err == NKP_ERR_NOMEM || err == NKP_ERR_IO || err == NKP_ERR_PERM) {
		return;
	}
	if (path == h->log_path) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-KEYS",
			"%s is damaged or was tampered with (%s); it is left as it is and nothing "
			"starts on it. Move it aside and start again: the host then holds the "
			"keys of %s until the service pushes the newest ones",
			path, nkp_strerror(err), h->keys_path);
		return;
	}
	nkp_log(NKP_LOG_ERR, "NKP-HOSTD-KEYS",
		"%s is damaged or was tampered with (%s); it is left as it is and nothing "
		"starts on it. Move it aside and start again: the host then holds no key "
		"until the service pushes them back",
		path, nkp_strerror(err));
}

/* Loads keys.nkp and keys.nkp.log into h (called from open, before anyone
 * else sees h). Absent: nothing held yet (a log without a snapshot is
 * removed). Temp files a crash left mid-write are removed. */
nkp_err hostd_load(nkp_hostd *h)
{
	uint8_t *buf = NULL, *rec = NULL;
	size_t len = 0, reclen = 0;
	const char *bad = h->keys_path;
	nkp_err err;

	if ((size_t)snprintf(h->log_path, sizeof(h->log_path), "%s.log", h->keys_path) >=
	    sizeof(h->log_path)) {
		return NKP_ERR_INVALID;
	}
	err = nkp_sealfile_read(h->keys_path, h->seal_key, KEYS_LABEL, &buf, &len);
	if (err == NKP_OK || err == NKP_ERR_NOT_FOUND) {
		nkp_file_remove_stale_temps(h->keys_path);
	}
	if (err == NKP_ERR_NOT_FOUND) {
		(void)unlink(h->log_path);
		return NKP_OK;
	}
	if (err == NKP_OK) {
		err = snapshot_epoch(h, buf, len);
	}
	if (err == NKP_OK) {
		bad = h->log_path;
		err = log_load(h, &rec, &reclen);
	}
	if (err == NKP_OK) {
		bad = rec != NULL ? h->log_path : h->keys_path;
		err = rec != NULL ? keys_apply(h, rec, reclen) : keys_apply(h, buf, len);
	}
	if (err == NKP_OK) {
		h->prev_holds_dropped = prev_holds_dropped(h);
	}
	nkp_secure_free(rec);
	nkp_secure_free(buf);
	if (err != NKP_OK) {
		log_damaged(bad, h, err);
	}
	return err;
}

void hostd_maybe_flush(nkp_hostd *h, uint64_t min_age)
{
	uint64_t now = nkpi_now();

	if (!atomic_load(&h->usage_dirty) || now < atomic_load(&h->last_flush) + min_age) {
		return;
	}
	pthread_rwlock_rdlock(&h->lock);
	if (hostd_save(h, &h->state, &h->applied) != NKP_OK) {
		nkp_event(h->events, NKP_EV_STATE_WRITE_FAILED, NULL, h->host_name,
			  "could not save usage counters to %s", h->keys_path);
		/* Try again later, not on every call. */
		atomic_store(&h->last_flush, now);
	}
	pthread_rwlock_unlock(&h->lock);
}

nkp_err nkp_hostd_flush(nkp_hostd *h)
{
	nkp_err err = NKP_OK;

	if (h == NULL) {
		return NKP_ERR_INVALID;
	}
	pthread_rwlock_rdlock(&h->lock);
	if (atomic_load(&h->usage_dirty)) {
		err = hostd_save(h, &h->state, &h->applied);
	}
	pthread_rwlock_unlock(&h->lock);
	return err;
}
