/* Backup and restore of a provider (design §3): a backup counts once
 * nkpctl confirmed the file it wrote; a restore merges versions into the
 * provider or makes it. Argon2id runs outside nkpd_svc.lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/lifecycle.h"
#include "internal.h"

/* Lock held. A copy of `p` as a backup holds it (keys duplicated). */
static nkp_err to_backup(const nkpd_provider *p, nkp_provider_backup **out)
{
	nkp_provider_backup *b = NULL;
	nkp_err err = nkp_provider_backup_new(p->n_versions, &b);

	if (err != NKP_OK) {
		return err;
	}
	memcpy(b->id, p->id, NKP_ID_BYTES);
	nkpd_util_copy_str(b->name, sizeof(b->name), p->name);
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
static nkp_err mark_backed_up(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES],
			      uint32_t max_version)
{
	nkpd_txn t;
	nkpd_provider *p;
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = nkpd_model_provider_find_id(s, id);
	if (p == NULL) {
		nkpd_txn_rollback(s, &t);
		return NKP_ERR_NOT_FOUND;
	}
	p->backed_up = true;
	p->backed_up_unix = nkpi_now();
	if (max_version > p->backup_max_version) {
		p->backup_max_version = max_version;
	}
	return nkpd_txn_commit(s, &t);
}

static nkp_err export_unlocked(nkpd_svc *s, const char *name, const nkp_provider_backup *b,
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
static nkp_err remember_pending(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES],
				const uint8_t *file, size_t len, uint32_t max_version)
{
	nkpd_provider *p = nkpd_model_provider_find_id(s, id);

	if (p == NULL) {
		return NKP_ERR_NOT_FOUND; /* deleted while Argon2id ran */
	}
	memmove(&p->pending[1], &p->pending[0], (NKPD_BACKUPS_PENDING - 1) * sizeof(p->pending[0]));
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
void nkpd_provider_backup(nkpd_svc *s, const nkpd_provider_backup_args *r, nkpd_result *res)
{
	nkp_provider_backup *b = NULL;
	nkpd_provider *p;
	uint8_t id[NKP_ID_BYTES];
	uint32_t maxv = 0;
	uint8_t *file = NULL;
	size_t len = 0;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, r->name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
		goto out_unlock;
	}
	if (p->kind == NKPD_KIND_STANDARD) {
		nkpd_result_fail(
			res, NKP_ERR_STATE,
			"provider %s is a standard provider: its keys are kept by its KMS, "
			"not by nkpd; back the KMS up instead",
			r->name);
		goto out_unlock;
	}
	if (r->password_len == 0) {
		nkpd_result_fail(res, NKP_ERR_INVALID, "the backup password is empty");
		goto out_unlock;
	}
	memcpy(id, p->id, NKP_ID_BYTES);
	maxv = nkpd_model_version_max(p);
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
static nkpd_backup_pending *find_pending(nkpd_provider *p, const uint8_t *digest)
{
	static const uint8_t zero[32];

	for (size_t i = 0; i < NKPD_BACKUPS_PENDING; i++) {
		if (sodium_memcmp(p->pending[i].digest, zero, sizeof(zero)) != 0 &&
		    sodium_memcmp(p->pending[i].digest, digest, sizeof(zero)) == 0) {
			return &p->pending[i];
		}
	}
	return NULL;
}

void nkpd_provider_backup_confirm(nkpd_svc *s, const nkpd_provider_backup_confirm_args *r,
				  nkpd_result *res)
{
	nkpd_provider *p;
	nkpd_backup_pending *pend;
	uint32_t maxv;
	char name[NKPD_NAME_MAX + 1];
	nkp_err err;

	if (r->provider_id_len != NKP_ID_BYTES || r->digest_len != 32) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "backup confirmation: a 16-byte provider id and a "
				 "32-byte digest are required");
		return;
	}
	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find_id(s, r->provider_id);
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
	nkpd_util_copy_str(name, sizeof(name), p->name);
	err = mark_backed_up(s, r->provider_id, maxv);
	if (err != NKP_OK) {
		nkpd_lifecycle_commit_failed(res, "provider backup", err);
		goto out_unlock;
	}
	nkp_event(s->events, NKP_EV_PROVIDER_BACKED_UP, name, NULL,
		  "provider %s backed up (versions up to %u)", name, maxv);
	nkpd_lifecycle_answer_provider(s, name, res);
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
static nkp_err merge_versions(nkpd_provider *p, const nkp_provider_backup *b, unsigned *added)
{
	nkp_err err = NKP_OK;

	for (size_t i = 0; i < b->n_versions && err == NKP_OK; i++) {
		const nkp_backup_version *bv = &b->versions[i];
		const nkpd_version *v = nkpd_model_version_find(p, bv->version);
		nkp_version_state st = bv->state;
		nkp_key *k = NULL;

		if (v != NULL) {
			err = nkp_key_equal(v->key, bv->key) ? NKP_OK : NKP_ERR_STATE;
			continue;
		}
		if ((st == NKP_VERSION_ACTIVE && nkpd_model_version_active(p) != NULL) ||
		    (st == NKP_VERSION_STAGED && nkpd_model_version_staged(p) != NULL)) {
			st = NKP_VERSION_DECRYPT_ONLY;
		}
		err = nkp_key_dup(bv->key, &k);
		if (err == NKP_OK) {
			err = nkpd_model_add_version(p, bv->version, st, bv->created_unix, k);
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
static nkp_err restore_into(nkpd_svc *s, const nkp_provider_backup *b, unsigned *added,
			    nkpd_result *res)
{
	nkpd_provider *p = nkpd_model_provider_find_id(s, b->id);
	nkp_err err;

	if (p == NULL) {
		if (!nkpd_util_name_valid(b->name) ||
		    nkpd_model_provider_find(s, b->name) != NULL) {
			nkpd_result_fail(
				res, NKP_ERR_EXISTS,
				"another provider is named %s; delete or keep it, the backup "
				"holds a different provider",
				b->name);
			return NKP_ERR_EXISTS;
		}
		p = calloc(1, sizeof(*p));
		if (p == NULL || nkpd_lifecycle_append_provider(s, p) != NKP_OK) {
			free(p);
			return NKP_ERR_NOMEM;
		}
		memcpy(p->id, b->id, NKP_ID_BYTES);
		nkpd_util_copy_str(p->name, sizeof(p->name), b->name);
		p->tpm_only = b->tpm_only;
		p->created_unix = nkpi_now();
	}
	err = nkpd_lifecycle_versions_total(s) + b->n_versions > NKPI_PUSH_MAX_VERSIONS
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

static void restore_locked(nkpd_svc *s, const nkp_provider_backup *b, nkpd_result *res)
{
	nkpd_txn t;
	unsigned added = 0;
	char hex[33];
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err == NKP_OK) {
		err = restore_into(s, b, &added, res);
		if (err != NKP_OK) {
			nkpd_txn_rollback(s, &t);
		} else if ((err = nkpd_txn_commit(s, &t)) != NKP_OK) {
			nkpd_lifecycle_commit_failed(res, "provider restore", err);
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
	nkpd_lifecycle_answer_provider(s, nkpd_model_provider_find_id(s, b->id)->name, res);
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

void nkpd_provider_restore(nkpd_svc *s, const nkpd_provider_restore_args *r, nkpd_result *res)
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
