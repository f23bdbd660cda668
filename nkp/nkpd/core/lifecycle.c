/* Provider lifecycle (design §3, docs/PROTOCOL.md "Two-phase rotation"):
 * create, set-default, backup, restore, rotate, retire, delete. Every
 * change of desired state goes through a transaction: generation++,
 * persist, then push; a change that cannot be persisted is rolled back and
 * reported. Argon2id (backup, restore) runs outside svc.lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "nkpd.h"

#define MAX_ROTATE_TIMEOUT 86400u

static void id_hex(const svc_provider *p, char out[static 33])
{
	nkp_id_to_hex(p->id, out);
}

/* A service with no default provider makes the first one it gains (made
 * or restored) the default, so VM keys work without naming a provider. */
static nkp_err append_provider(svc *s, svc_provider *p)
{
	svc_provider **np = realloc(s->providers, (s->n_providers + 1) * sizeof(*np));
	bool have_default = false;

	if (np == NULL) {
		return NKP_ERR_NOMEM;
	}
	for (size_t i = 0; i < s->n_providers; i++) {
		have_default = have_default || np[i]->is_default;
	}
	p->is_default = p->is_default || !have_default;
	s->providers = np;
	s->providers[s->n_providers++] = p;
	return NKP_OK;
}

static void clear_default(svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		s->providers[i]->is_default = false;
	}
}

/* A version the key source keeps a durable copy of needs no backup: the
 * provider counts as backed up to it. */
static void note_source_backup(const svc *s, svc_provider *p, uint32_t version)
{
	if (s->keys.needs_backup(s->keys.ctx)) {
		return;
	}
	if (!p->backed_up) {
		p->backed_up = true;
		p->backed_up_unix = nkpi_now();
	}
	if (version > p->backup_max_version) {
		p->backup_max_version = version;
	}
}

/* Lock held. A fresh provider with version 1 active, appended to the model
 * (the caller's transaction owns it from there). */
static nkp_err new_provider(svc *s, const nkpd_provider_create_args *r)
{
	svc_provider *p = calloc(1, sizeof(*p));
	nkp_key *k = NULL;
	nkp_err err;

	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	do {
		randombytes_buf(p->id, sizeof(p->id));
	} while (svc_provider_find_id(s, p->id) != NULL);
	svc_copy_str(p->name, sizeof(p->name), r->name);
	p->tpm_only = r->tpm_only;
	p->created_unix = nkpi_now();
	err = s->keys.create_version(s->keys.ctx, p->id, 1, &k);
	if (err == NKP_OK) {
		err = svc_provider_add_version(p, 1, NKP_VERSION_ACTIVE, p->created_unix, k);
		if (err != NKP_OK) {
			nkp_key_free(k);
		}
	}
	if (err == NKP_OK) {
		note_source_backup(s, p, 1);
	}
	if (err == NKP_OK && r->make_default) {
		clear_default(s);
		p->is_default = true;
	}
	if (err == NKP_OK) {
		err = append_provider(s, p);
	}
	if (err != NKP_OK) {
		svc_provider_free(p);
	}
	return err;
}

static void commit_failed(nkpd_result *res, const char *what, nkp_err err)
{
	nkpd_result_fail(res, err, "%s: cannot persist the service state: %s", what,
			 nkp_strerror(err));
}

/* Lock held: the answer is the provider as it is now. */
static void answer_provider(svc *s, const char *name, nkpd_result *res)
{
	const svc_provider *p = svc_provider_find(s, name);

	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", name);
		return;
	}
	res->payload = NKPD_PAYLOAD_PROVIDER;
	res->u.provider = nkpd_report_provider_locked(s, p);
}

static void answer_rotation(svc *s, const svc_provider *p, nkpd_result *res)
{
	res->payload = NKPD_PAYLOAD_ROTATION;
	res->u.rotation = nkpd_report_rotation_locked(s, p);
}

static void answer_usage_refusal(svc *s, const svc_provider *p, uint32_t version, nkpd_result *res)
{
	res->payload = NKPD_PAYLOAD_USAGE_REFUSAL;
	res->u.usage_refusal = nkpd_report_usage_refusal_locked(s, p, version);
}

/* Versions of every provider: a push holds them all, and a host refuses
 * one with more than NKPI_PUSH_MAX_VERSIONS (its receive limit is sized
 * from that). */
static size_t versions_total(const svc *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		n += s->providers[i]->n_versions;
	}
	return n;
}

void nkpd_provider_create(svc *s, const nkpd_provider_create_args *r, nkpd_result *res)
{
	svc_txn t;
	nkp_err err;
	char hex[33];

	pthread_mutex_lock(&s->lock);
	if (!svc_name_valid(r->name)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "invalid provider name (1-64 of A-Z a-z 0-9 . _ -)");
	} else if (svc_provider_find(s, r->name) != NULL) {
		nkpd_result_fail(res, NKP_ERR_EXISTS, "a provider named %s already exists",
				 r->name);
	} else if (s->n_providers >= SVC_MAX_PROVIDERS) {
		nkpd_result_fail(res, NKP_ERR_TOO_LARGE, "too many providers");
	} else if (versions_total(s) >= NKPI_PUSH_MAX_VERSIONS) {
		nkpd_result_fail(
			res, NKP_ERR_TOO_LARGE,
			"too many key versions in all (%u): retire and delete old versions first",
			NKPI_PUSH_MAX_VERSIONS);
	} else if ((err = svc_txn_begin(s, &t)) != NKP_OK) {
		nkpd_result_fail(res, err, "cannot create provider: %s", nkp_strerror(err));
	} else if ((err = new_provider(s, r)) != NKP_OK) {
		svc_txn_rollback(s, &t);
		nkpd_result_fail(res, err, "cannot create provider: %s", nkp_strerror(err));
	} else if ((err = svc_txn_commit(s, &t)) != NKP_OK) {
		commit_failed(res, "provider create", err);
	} else {
		const svc_provider *p = svc_provider_find(s, r->name);

		id_hex(p, hex);
		nkp_event(s->events, NKP_EV_PROVIDER_CREATED, r->name, NULL,
			  "provider %s created (id %s, version 1%s%s)", r->name, hex,
			  p->is_default ? ", default" : "", p->tpm_only ? ", tpm-only" : "");
		if (!p->backed_up) {
			nkp_event(s->events, NKP_EV_PROVIDER_NOT_BACKED_UP, r->name, NULL,
				  "provider %s is not backed up: hosts make no VM keys under it "
				  "until `nkpctl provider backup %s` succeeds",
				  r->name, r->name);
		}
		answer_provider(s, r->name, res);
	}
	pthread_mutex_unlock(&s->lock);
}

void nkpd_provider_set_default(svc *s, const char *name, nkpd_result *res)
{
	svc_txn t;
	nkp_err err;
	svc_provider *p;

	pthread_mutex_lock(&s->lock);
	p = svc_provider_find(s, name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", name);
	} else if (p->is_default) {
		answer_provider(s, name, res);
	} else if ((err = svc_txn_begin(s, &t)) != NKP_OK) {
		nkpd_result_fail(res, err, "cannot change the default: %s", nkp_strerror(err));
	} else {
		clear_default(s);
		svc_provider_find(s, name)->is_default = true;
		err = svc_txn_commit(s, &t);
		if (err != NKP_OK) {
			commit_failed(res, "provider set-default", err);
		} else {
			nkp_event(s->events, NKP_EV_PROVIDER_DEFAULT, name, NULL,
				  "provider %s is now the default", name);
			answer_provider(s, name, res);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- backup ---- */

/* Lock held. A copy of `p` as a backup holds it (keys duplicated). */
static nkp_err to_backup(const svc_provider *p, nkp_provider_backup **out)
{
	nkp_provider_backup *b = NULL;
	nkp_err err = nkp_provider_backup_new(p->n_versions, &b);

	if (err != NKP_OK) {
		return err;
	}
	memcpy(b->id, p->id, NKP_ID_BYTES);
	svc_copy_str(b->name, sizeof(b->name), p->name);
	b->tpm_only = p->tpm_only;
	b->exported_unix = nkpi_now();
	for (size_t i = 0; i < p->n_versions && err == NKP_OK; i++) {
		b->versions[i].version = p->versions[i].version;
		b->versions[i].state = p->versions[i].state;
		b->versions[i].created_unix = p->versions[i].created_unix;
		err = nkp_key_dup(p->versions[i].key, &b->versions[i].key);
	}
	if (err != NKP_OK) {
		nkp_provider_backup_free(b);
		return err;
	}
	*out = b;
	return NKP_OK;
}

/* Lock held. Marks the provider backed up to `max_version`. */
static nkp_err mark_backed_up(svc *s, const uint8_t id[static NKP_ID_BYTES], uint32_t max_version)
{
	svc_txn t;
	svc_provider *p;
	nkp_err err = svc_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = svc_provider_find_id(s, id);
	if (p == NULL) {
		svc_txn_rollback(s, &t);
		return NKP_ERR_NOT_FOUND;
	}
	p->backed_up = true;
	p->backed_up_unix = nkpi_now();
	if (max_version > p->backup_max_version) {
		p->backup_max_version = max_version;
	}
	return svc_txn_commit(s, &t);
}

static nkp_err export_unlocked(svc *s, const char *name, const nkp_provider_backup *b,
			       const uint8_t *pw, size_t pwlen, uint8_t **file, size_t *len)
{
	nkp_err err;

	pthread_mutex_unlock(&s->lock);
	err = nkp_backup_export(b, (const char *)pw, pwlen, &s->backup_params, file, len);
	pthread_mutex_lock(&s->lock);
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKPD-BACKUP", "backup of provider %s failed: %s", name,
			nkp_strerror(err));
	}
	return err;
}

/* Lock held. Remembers a file handed out for `id`, newest first, so that
 * its confirmation can be recognised; the oldest of the list is dropped. */
static nkp_err remember_pending(svc *s, const uint8_t id[static NKP_ID_BYTES], const uint8_t *file,
				size_t len, uint32_t max_version)
{
	svc_provider *p = svc_provider_find_id(s, id);

	if (p == NULL) {
		return NKP_ERR_NOT_FOUND; /* deleted while Argon2id ran */
	}
	memmove(&p->pending[1], &p->pending[0], (SVC_BACKUPS_PENDING - 1) * sizeof(p->pending[0]));
	crypto_generichash(p->pending[0].digest, sizeof(p->pending[0].digest), file, len, NULL, 0);
	p->pending[0].max_version = max_version;
	return NKP_OK;
}

static void backup_result(nkpd_result *res, const uint8_t id[static NKP_ID_BYTES],
			  uint32_t max_version, uint8_t **file, size_t len)
{
	res->payload = NKPD_PAYLOAD_BACKUP;
	memcpy(res->u.backup.provider_id, id, NKP_ID_BYTES);
	res->u.backup.max_version = max_version;
	res->u.backup.file = *file;
	res->u.backup.len = len;
	*file = NULL;
}

/* The first step of a backup: the file image, not yet counted. The
 * provider is marked backed up by nkpd_provider_backup_confirm(), once nkpctl
 * wrote the file and read it back. */
void nkpd_provider_backup(svc *s, const nkpd_provider_backup_args *r, nkpd_result *res)
{
	nkp_provider_backup *b = NULL;
	svc_provider *p;
	uint8_t id[NKP_ID_BYTES];
	uint32_t maxv = 0;
	uint8_t *file = NULL;
	size_t len = 0;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = svc_provider_find(s, r->name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
		goto out_unlock;
	}
	if (r->password_len == 0) {
		nkpd_result_fail(res, NKP_ERR_INVALID, "the backup password is empty");
		goto out_unlock;
	}
	memcpy(id, p->id, NKP_ID_BYTES);
	maxv = svc_version_max(p);
	err = to_backup(p, &b);
	if (err == NKP_OK) {
		err = export_unlocked(s, r->name, b, r->password, r->password_len, &file, &len);
	}
	if (err == NKP_OK) {
		err = remember_pending(s, id, file, len, maxv);
	}
	if (err == NKP_OK) {
		backup_result(res, id, maxv, &file, len);
	}
	if (err != NKP_OK) {
		nkpd_result_fail(res, err, "backup of provider %s failed: %s", r->name,
				 nkp_strerror(err));
		goto out_backup;
	}
	nkpd_result_ok(res, "backup of provider %s made; it counts once written and confirmed",
		       r->name);
out_backup:
	free(file);
	nkp_provider_backup_free(b);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* Lock held. The pending file whose digest is `digest`, or NULL. */
static svc_backup_pending *find_pending(svc_provider *p, const uint8_t *digest)
{
	static const uint8_t zero[32];

	for (size_t i = 0; i < SVC_BACKUPS_PENDING; i++) {
		if (sodium_memcmp(p->pending[i].digest, zero, sizeof(zero)) != 0 &&
		    sodium_memcmp(p->pending[i].digest, digest, sizeof(zero)) == 0) {
			return &p->pending[i];
		}
	}
	return NULL;
}

void nkpd_provider_backup_confirm(svc *s, const nkpd_provider_backup_confirm_args *r,
				  nkpd_result *res)
{
	svc_provider *p;
	svc_backup_pending *pend;
	uint32_t maxv;
	char name[SVC_MAX_NAME + 1];
	nkp_err err;

	if (r->provider_id_len != NKP_ID_BYTES || r->digest_len != 32) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "backup confirmation: a 16-byte provider id and a "
				 "32-byte digest are required");
		return;
	}
	pthread_mutex_lock(&s->lock);
	p = svc_provider_find_id(s, r->provider_id);
	pend = p != NULL ? find_pending(p, r->digest) : NULL;
	if (pend == NULL) {
		nkpd_result_fail(
			res, NKP_ERR_NOT_FOUND,
			"backup confirmation: nkpd handed out no such "
			"backup file for this provider (or no longer remembers it); back it up "
			"again");
		goto out_unlock;
	}
	maxv = pend->max_version;
	sodium_memzero(pend, sizeof(*pend));
	svc_copy_str(name, sizeof(name), p->name);
	err = mark_backed_up(s, r->provider_id, maxv);
	if (err != NKP_OK) {
		commit_failed(res, "provider backup", err);
		goto out_unlock;
	}
	nkp_event(s->events, NKP_EV_PROVIDER_BACKED_UP, name, NULL,
		  "provider %s backed up (versions up to %u)", name, maxv);
	answer_provider(s, name, res);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* ---- restore ---- */

static const char *import_error(nkp_err err)
{
	switch (err) {
	case NKP_ERR_WRONG_PASSWORD:
		return "wrong password for this backup";
	case NKP_ERR_DAMAGED:
		return "the backup file is damaged (checksum mismatch)";
	case NKP_ERR_AUTH:
		return "the backup file was tampered with";
	case NKP_ERR_PARSE:
	case NKP_ERR_TOO_LARGE:
		return "not an nkp backup file";
	case NKP_ERR_FORMAT_VERSION:
		return "backup format version not supported";
	default:
		return nkp_strerror(err);
	}
}

/* Adds the backup's versions that `p` lacks. A version the provider holds
 * with another key is a conflict (NKP_ERR_STATE). New versions never take
 * a state the provider already has in one version (active, staged). */
static nkp_err merge_versions(svc_provider *p, const nkp_provider_backup *b, unsigned *added)
{
	nkp_err err = NKP_OK;

	for (size_t i = 0; i < b->n_versions && err == NKP_OK; i++) {
		const nkp_backup_version *bv = &b->versions[i];
		const svc_version *v = svc_version_find(p, bv->version);
		nkp_version_state st = bv->state;
		nkp_key *k = NULL;

		if (v != NULL) {
			err = nkp_key_equal(v->key, bv->key) ? NKP_OK : NKP_ERR_STATE;
			continue;
		}
		if ((st == NKP_VERSION_ACTIVE && svc_version_active(p) != NULL) ||
		    (st == NKP_VERSION_STAGED && svc_version_staged(p) != NULL)) {
			st = NKP_VERSION_DECRYPT_ONLY;
		}
		err = nkp_key_dup(bv->key, &k);
		if (err == NKP_OK) {
			err = svc_provider_add_version(p, bv->version, st, bv->created_unix, k);
			if (err != NKP_OK) {
				nkp_key_free(k);
			}
		}
		*added += err == NKP_OK;
	}
	return err;
}

static uint32_t backup_max(const nkp_provider_backup *b)
{
	uint32_t m = 0;

	for (size_t i = 0; i < b->n_versions; i++) {
		if (b->versions[i].version > m) {
			m = b->versions[i].version;
		}
	}
	return m;
}

/* Lock held, inside a transaction. */
static nkp_err restore_into(svc *s, const nkp_provider_backup *b, unsigned *added, nkpd_result *res)
{
	svc_provider *p = svc_provider_find_id(s, b->id);
	nkp_err err;

	if (p == NULL) {
		if (!svc_name_valid(b->name) || svc_provider_find(s, b->name) != NULL) {
			nkpd_result_fail(
				res, NKP_ERR_EXISTS,
				"another provider is named %s; delete or keep it, the backup "
				"holds a different provider",
				b->name);
			return NKP_ERR_EXISTS;
		}
		p = calloc(1, sizeof(*p));
		if (p == NULL || append_provider(s, p) != NKP_OK) {
			free(p);
			return NKP_ERR_NOMEM;
		}
		memcpy(p->id, b->id, NKP_ID_BYTES);
		svc_copy_str(p->name, sizeof(p->name), b->name);
		p->tpm_only = b->tpm_only;
		p->created_unix = nkpi_now();
	}
	err = versions_total(s) + b->n_versions > NKPI_PUSH_MAX_VERSIONS
		      ? NKP_ERR_TOO_LARGE
		      : merge_versions(p, b, added);
	if (err == NKP_ERR_TOO_LARGE) {
		nkpd_result_fail(res, err,
				 "restoring %s would hold over %u key versions in all: retire "
				 "and delete old versions first",
				 p->name, NKPI_PUSH_MAX_VERSIONS);
	}
	if (err == NKP_ERR_STATE) {
		nkpd_result_fail(res, err,
				 "provider %s holds a version with another key than the "
				 "backup's: refusing to merge",
				 p->name);
	}
	p->backed_up = true;
	p->backed_up_unix = nkpi_now();
	if (backup_max(b) > p->backup_max_version) {
		p->backup_max_version = backup_max(b);
	}
	return err;
}

static void restore_locked(svc *s, const nkp_provider_backup *b, nkpd_result *res)
{
	svc_txn t;
	unsigned added = 0;
	char hex[33];
	nkp_err err = svc_txn_begin(s, &t);

	if (err == NKP_OK) {
		err = restore_into(s, b, &added, res);
		if (err != NKP_OK) {
			svc_txn_rollback(s, &t);
		} else if ((err = svc_txn_commit(s, &t)) != NKP_OK) {
			commit_failed(res, "provider restore", err);
			return;
		}
	}
	if (err != NKP_OK) {
		if (res->code == NKP_OK) {
			nkpd_result_fail(res, err, "restore failed: %s", nkp_strerror(err));
		}
		return;
	}
	nkp_id_to_hex(b->id, hex);
	nkp_event(s->events, NKP_EV_PROVIDER_RESTORED, b->name, NULL,
		  "provider %s (id %s) restored from a backup: %u version(s) added", b->name, hex,
		  added);
	answer_provider(s, svc_provider_find_id(s, b->id)->name, res);
}

/* A backup made with an Argon2id cost below libsodium's "interactive"
 * limits (a test build's cheap backups, or a hostile file meant to be kept)
 * is refused unless the operator allows it. 0: go on. */
static int weak_refused(const nkpd_provider_restore_args *r, nkpd_result *res)
{
	nkp_backup_params prm;
	nkp_err err = nkp_backup_peek(r->file, r->file_len, &prm);

	if (err != NKP_OK || !nkp_backup_params_weak(&prm)) {
		return 0; /* nkp_backup_import() reports a bad file */
	}
	if (!r->allow_weak) {
		nkp_log(NKP_LOG_WARN, "NKPD-WEAK-BACKUP",
			"a backup offered for restore uses a weak Argon2id cost (opslimit %llu, "
			"memlimit %zu KiB): refused",
			(unsigned long long)prm.opslimit, prm.memlimit / 1024u);
		nkpd_result_fail(
			res, NKP_ERR_INVALID,
			"the backup uses a weak password hash (Argon2id opslimit %llu, memlimit "
			"%zu KiB, below libsodium's interactive limits %llu and %zu KiB): its "
			"password is cheap to guess. Refused; restore it with --allow-weak only if "
			"you made it so on purpose, then back the provider up again",
			(unsigned long long)prm.opslimit, prm.memlimit / 1024u,
			(unsigned long long)crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
			(size_t)crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE / 1024u);
		return -1;
	}
	nkp_log(NKP_LOG_WARN, "NKPD-WEAK-BACKUP",
		"restoring a backup with a weak Argon2id cost (opslimit %llu, memlimit %zu KiB), "
		"as --allow-weak asks; back the provider up again",
		(unsigned long long)prm.opslimit, prm.memlimit / 1024u);
	return 0;
}

void nkpd_provider_restore(svc *s, const nkpd_provider_restore_args *r, nkpd_result *res)
{
	nkp_provider_backup *b = NULL;
	nkp_err err;

	if (r->password_len == 0) {
		nkpd_result_fail(res, NKP_ERR_INVALID, "the backup password is empty");
		return;
	}
	if (weak_refused(r, res) != 0) {
		return;
	}
	err = nkp_backup_import(r->file, r->file_len, (const char *)r->password, r->password_len,
				&b);
	if (err != NKP_OK) {
		if (err == NKP_ERR_AUTH || err == NKP_ERR_DAMAGED) {
			nkp_event(s->events, NKP_EV_TAMPERING, NULL, NULL,
				  "a backup offered for restore failed its checks: %s",
				  import_error(err));
		}
		nkpd_result_fail(res, err, "%s", import_error(err));
		return;
	}
	pthread_mutex_lock(&s->lock);
	restore_locked(s, b, res);
	pthread_mutex_unlock(&s->lock);
	nkp_provider_backup_free(b);
}

/* ---- rotate ---- */

static nkp_err stage_new_version(svc *s, const char *name, uint32_t *version)
{
	svc_txn t;
	nkp_key *k = NULL;
	svc_provider *p;
	uint32_t v;
	nkp_err err = svc_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = svc_provider_find(s, name);
	v = svc_version_max(p) + 1;
	err = versions_total(s) >= NKPI_PUSH_MAX_VERSIONS
		      ? NKP_ERR_TOO_LARGE
		      : s->keys.create_version(s->keys.ctx, p->id, v, &k);
	if (err == NKP_OK) {
		err = svc_provider_add_version(p, v, NKP_VERSION_STAGED, nkpi_now(), k);
		if (err != NKP_OK) {
			nkp_key_free(k);
		}
	}
	if (err == NKP_OK) {
		note_source_backup(s, p, v);
	}
	if (err != NKP_OK) {
		svc_txn_rollback(s, &t);
		return err;
	}
	err = svc_txn_commit(s, &t);
	if (err == NKP_OK) {
		*version = v;
	}
	return err;
}

static void start_rotation(svc *s, svc_provider *p, uint32_t version, bool resumed,
			   const nkpd_provider_rotate_args *r)
{
	uint32_t timeout =
		r->timeout_seconds == 0 ? SVC_DEFAULT_ROTATE_TIMEOUT : r->timeout_seconds;

	if (timeout > MAX_ROTATE_TIMEOUT) {
		timeout = MAX_ROTATE_TIMEOUT;
	}
	memset(&p->rot, 0, sizeof(p->rot));
	p->rot.state = ROT_WAITING;
	p->rot.version = version;
	p->rot.stage_generation = s->generation;
	p->rot.deadline_ms = nkpi_mono_ms() + (uint64_t)timeout * 1000u;
	p->rot.deadline_unix = nkpi_now() + timeout;
	p->rot.force = r->force;
	snprintf(p->rot.message, sizeof(p->rot.message), "version %u staged%s", version,
		 resumed ? " (resumed)" : "");
	nkp_event(s->events, NKP_EV_PROVIDER_STAGED, p->name, NULL,
		  "provider %s: version %u %s; promotion when every host in scope has it "
		  "(deadline %u s%s)",
		  p->name, version, resumed ? "staged earlier, resuming" : "staged", timeout,
		  r->force ? ", forced" : "");
	if (p->backed_up && !resumed && version > p->backup_max_version) {
		nkp_event(
			s->events, NKP_EV_PROVIDER_NOT_BACKED_UP, p->name, NULL,
			"the backup of provider %s is stale: it lacks version %u; back it up again",
			p->name, version);
	}
}

void nkpd_provider_rotate(svc *s, const nkpd_provider_rotate_args *r, nkpd_result *res)
{
	svc_provider *p;
	const svc_version *staged;
	uint32_t version = 0;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = svc_provider_find(s, r->name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
		goto out_unlock;
	}
	staged = svc_version_staged(p);
	if (staged != NULL) {
		start_rotation(s, p, staged->version, true, r);
	} else if ((err = stage_new_version(s, r->name, &version)) != NKP_OK) {
		nkpd_result_fail(res, err, "provider rotate: cannot stage a new version: %s",
				 nkp_strerror(err));
		goto out_unlock;
	} else {
		start_rotation(s, svc_provider_find(s, r->name), version, false, r);
	}
	nkpd_provider_rotation_tick(s);
	answer_rotation(s, svc_provider_find(s, r->name), res);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* Lock held. Staged -> active, active -> decrypt-only. */
static nkp_err promote(svc *s, size_t i)
{
	svc_txn t;
	svc_provider *p;
	svc_version *active, *staged;
	nkp_err err = svc_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = s->providers[i];
	active = svc_version_active(p);
	staged = svc_version_find(p, p->rot.version);
	if (active != NULL) {
		active->state = NKP_VERSION_DECRYPT_ONLY;
	}
	staged->state = NKP_VERSION_ACTIVE;
	p->rot.state = ROT_PROMOTED;
	return svc_txn_commit(s, &t);
}

static size_t missing_names(svc *s, const svc_provider *p, char *out, size_t size)
{
	size_t n = 0, used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		if (!svc_host_in_scope(h, p) || h->st.acked_generation >= p->rot.stage_generation) {
			continue;
		}
		if (used + strlen(h->conf.name) + 16 < size) {
			used += (size_t)snprintf(out + used, size - used, "%s%s", n ? ", " : "",
						 h->conf.name);
		} else if (used + 16 < size) {
			used += (size_t)snprintf(out + used, size - used, "%s...", n ? ", " : "");
			used = size;
		}
		n++;
	}
	return n;
}

static void finish_rotation(svc *s, size_t i, bool all_acked)
{
	char missing[400];
	svc_provider *p = s->providers[i];
	size_t nm = missing_names(s, p, missing, sizeof(missing));
	nkp_err err;

	if (!all_acked && !p->rot.force) {
		p->rot.state = ROT_FAILED;
		snprintf(p->rot.message, sizeof(p->rot.message),
			 "hosts not acknowledged before timeout: %s", missing);
		nkp_event(s->events, NKP_EV_PROVIDER_ROTATION_FAILED, p->name, NULL,
			  "provider %s: version %u stays staged; hosts not acknowledged before "
			  "timeout: %s",
			  p->name, p->rot.version, missing);
		return;
	}
	err = promote(s, i);
	p = s->providers[i];
	if (err != NKP_OK) {
		p->rot.state = ROT_FAILED;
		snprintf(p->rot.message, sizeof(p->rot.message), "cannot persist the promotion: %s",
			 nkp_strerror(err));
		return;
	}
	snprintf(p->rot.message, sizeof(p->rot.message), "version %u promoted%s%s", p->rot.version,
		 nm > 0 ? " (forced; missing: " : "", nm > 0 ? missing : "");
	if (nm > 0) {
		strncat(p->rot.message, ")", sizeof(p->rot.message) - strlen(p->rot.message) - 1);
	}
	nkp_event(s->events, NKP_EV_PROVIDER_PROMOTED, p->name, NULL, "provider %s: %s", p->name,
		  p->rot.message);
}

void nkpd_provider_rotation_tick(svc *s)
{
	uint64_t now = nkpi_mono_ms();

	for (size_t i = 0; i < s->n_providers; i++) {
		svc_provider *p = s->providers[i];
		const svc_version *v;
		size_t total = 0, acked = 0;

		if (p->rot.state != ROT_WAITING) {
			continue;
		}
		v = svc_version_find(p, p->rot.version);
		if (v == NULL || v->state != NKP_VERSION_STAGED) {
			p->rot.state = ROT_FAILED;
			snprintf(p->rot.message, sizeof(p->rot.message),
				 "version %u is no longer staged", p->rot.version);
			continue;
		}
		for (size_t j = 0; j < s->n_hosts; j++) {
			const svc_host *h = s->hosts[j];

			if (svc_host_in_scope(h, p)) {
				total++;
				acked += h->st.acked_generation >= p->rot.stage_generation;
			}
		}
		if (acked == total || now >= p->rot.deadline_ms) {
			finish_rotation(s, i, acked == total);
		}
	}
}

/* ---- retire, delete ---- */

static uint64_t keysafes_under(const svc *s, const svc_provider *p, uint32_t version, char *who,
			       size_t size)
{
	uint64_t total = 0;
	size_t used = 0;

	who[0] = '\0';
	for (size_t i = 0; i < s->n_hosts; i++) {
		const svc_host *h = s->hosts[i];

		for (size_t j = 0; j < h->st.n_usage; j++) {
			const svc_usage *u = &h->st.usage[j];

			if (u->version != version || memcmp(u->provider_id, p->id, NKP_ID_BYTES) ||
			    u->keysafes == 0) {
				continue;
			}
			total = nkpi_sat_add(total, u->keysafes);
			if (used + strlen(h->conf.name) + 24 < size) {
				used += (size_t)snprintf(who + used, size - used, "%s%s: %llu",
							 used ? ", " : "", h->conf.name,
							 (unsigned long long)u->keysafes);
			}
		}
	}
	return total;
}

/* Lock held (released while waiting). Asks every reachable host for its
 * usage now, so a rewrap just done counts; `note` says which hosts did
 * not answer (their last report counts), or is empty. */
static void usage_round(svc *s, char *note, size_t size)
{
	size_t missing =
		s->sync != NULL ? s->sync->usage_round(s->sync->ctx, SVC_USAGE_ROUND_MS) : 0;
	size_t used = 0;

	note[0] = '\0';
	if (missing == 0) {
		return;
	}
	used = (size_t)snprintf(note, size, "; no fresh report from");
	for (size_t i = 0; i < s->n_hosts && used < size; i++) {
		const svc_host *h = s->hosts[i];

		if (h->st.asked_round == s->usage_round && h->st.answered_round != s->usage_round) {
			used += (size_t)snprintf(note + used, size - used, " %s", h->conf.name);
		}
	}
	if (used < size) {
		snprintf(note + used, size - used, " (their last reports count)");
	}
}

static nkp_err remove_version_txn(svc *s, const char *name, uint32_t version)
{
	svc_txn t;
	nkp_err err = svc_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	svc_provider_remove_version(svc_provider_find(s, name), version);
	return svc_txn_commit(s, &t);
}

void nkpd_provider_retire(svc *s, const nkpd_provider_retire_args *r, nkpd_result *res)
{
	svc_provider *p;
	const svc_version *v;
	char who[300], note[200] = "";
	uint64_t used;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	if (!r->force) {
		usage_round(s, note, sizeof(note));
	}
	p = svc_provider_find(s, r->name);
	v = p != NULL ? svc_version_find(p, r->version) : NULL;
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
	} else if (v == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "provider %s has no version %u", r->name,
				 r->version);
	} else if (v->state != NKP_VERSION_DECRYPT_ONLY) {
		nkpd_result_fail(
			res, NKP_ERR_STATE,
			"version %u of provider %s is %s; only a decrypt-only version can be "
			"retired",
			r->version, r->name, nkp_version_state_name(v->state));
	} else if ((used = keysafes_under(s, p, r->version, who, sizeof(who))) > 0 && !r->force) {
		nkpd_result_fail(
			res, NKP_ERR_STATE,
			"hosts still report %llu keysafe(s) under version %u (%s)%s; rewrap them "
			"first or use --force",
			(unsigned long long)used, r->version, who, note);
		answer_usage_refusal(s, p, r->version, res);
	} else if ((err = remove_version_txn(s, r->name, r->version)) != NKP_OK) {
		commit_failed(res, "provider retire", err);
	} else {
		nkp_event(s->events, NKP_EV_PROVIDER_RETIRED, r->name, NULL,
			  "provider %s: version %u retired%s; hosts wipe it", r->name, r->version,
			  used > 0 ? " by force while hosts reported use" : "");
		answer_provider(s, r->name, res);
	}
	pthread_mutex_unlock(&s->lock);
}

static nkp_err delete_txn(svc *s, const char *name)
{
	svc_txn t;
	nkp_err err = svc_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	for (size_t i = 0; i < s->n_providers; i++) {
		if (strcmp(s->providers[i]->name, name) == 0) {
			svc_provider_free(s->providers[i]);
			memmove(&s->providers[i], &s->providers[i + 1],
				(s->n_providers - i - 1) * sizeof(s->providers[0]));
			s->n_providers--;
			break;
		}
	}
	return svc_txn_commit(s, &t);
}

/* Keysafes hosts report under any version of `p`. */
static uint64_t provider_keysafes(const svc *s, const svc_provider *p, char *who, size_t size)
{
	uint64_t total = 0;
	char part[300];

	who[0] = '\0';
	for (size_t i = 0; i < p->n_versions; i++) {
		uint64_t n = keysafes_under(s, p, p->versions[i].version, part, sizeof(part));

		if (n > 0 && strlen(who) + strlen(part) + 3 < size) {
			snprintf(who + strlen(who), size - strlen(who), "%s%s", who[0] ? "; " : "",
				 part);
		}
		total = nkpi_sat_add(total, n);
	}
	return total;
}

void nkpd_provider_delete(svc *s, const nkpd_provider_delete_args *r, nkpd_result *res)
{
	svc_provider *p;
	char hex[33], who[300], note[200] = "";
	uint64_t used;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = svc_provider_find(s, r->name);
	if (p != NULL && !r->force && !p->is_default) {
		usage_round(s, note, sizeof(note));
		p = svc_provider_find(s, r->name);
	}
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
	} else if (p->is_default && !r->force) {
		nkpd_result_fail(
			res, NKP_ERR_STATE,
			"provider %s is the default; set another default first or use --force",
			r->name);
	} else if ((used = provider_keysafes(s, p, who, sizeof(who))) > 0 && !r->force) {
		nkpd_result_fail(
			res, NKP_ERR_STATE,
			"hosts still report %llu keysafe(s) under provider %s (%s)%s; their VMs "
			"would be locked; use --force to delete anyway",
			(unsigned long long)used, r->name, who, note);
		answer_usage_refusal(s, p, 0, res);
	} else {
		id_hex(p, hex);
		err = delete_txn(s, r->name);
		if (err != NKP_OK) {
			commit_failed(res, "provider delete", err);
		} else {
			nkp_event(s->events, NKP_EV_PROVIDER_DELETED, r->name, NULL,
				  "provider %s (id %s) deleted; hosts wipe its keys", r->name, hex);
			nkpd_result_ok(res, "provider %s deleted", r->name);
		}
	}
	pthread_mutex_unlock(&s->lock);
}
