/* Providers (design §3): create, set-default, retire, delete, and what
 * the other parts of the lifecycle share. Every change of desired state
 * goes through a transaction: generation++, persist, then notify; a change
 * that cannot be persisted is rolled back and reported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/kms.h"
#include "core/lifecycle.h"
#include "internal.h"

static void id_hex(const nkpd_provider *p, char out[static 33])
{
	nkp_id_to_hex(p->id, out);
}

/* A service with no default provider makes the first one it gains (made
 * or restored) the default, so VM keys work without naming a provider. */
nkp_err nkpd_lifecycle_append_provider(nkpd_svc *s, nkpd_provider *p)
{
	nkpd_provider **np = realloc(s->providers, (s->n_providers + 1) * sizeof(*np));
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

static void clear_default(nkpd_svc *s)
{
	for (size_t i = 0; i < s->n_providers; i++) {
		s->providers[i]->is_default = false;
	}
}

/* A version the key source keeps a durable copy of needs no backup: the
 * provider counts as backed up to it. */
void nkpd_lifecycle_note_source_backup(const nkpd_svc *s, nkpd_provider *p, uint32_t version)
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

/* Lock held. A standard provider: no version (its keys are in its KMS,
 * one per VM), nothing to back up (the KMS keeps them). */
static nkp_err new_standard(nkpd_svc *s, nkpd_provider *p, const nkpd_provider_create_args *r)
{
	nkp_err err;

	p->kind = NKPD_KIND_STANDARD;
	p->kms = nkpd_kms_ref((nkpd_kms *)r->kms);
	p->backed_up = true;
	p->backed_up_unix = p->created_unix;
	for (size_t i = 0; r->kms_state != NULL && i < p->kms->n_servers; i++) {
		p->kms_state[i] = r->kms_state[i];
	}
	err = nkpd_lifecycle_append_provider(s, p);
	if (err != NKP_OK) {
		nkpd_model_provider_free(p);
	}
	return err;
}

/* Lock held. A fresh provider with version 1 active, appended to the model
 * (the caller's transaction owns it from there). */
static nkp_err new_provider(nkpd_svc *s, const nkpd_provider_create_args *r)
{
	nkpd_provider *p = calloc(1, sizeof(*p));
	nkp_key *k = NULL;
	nkp_err err;

	if (p == NULL) {
		return NKP_ERR_NOMEM;
	}
	do {
		randombytes_buf(p->id, sizeof(p->id));
	} while (nkpd_model_provider_find_id(s, p->id) != NULL);
	nkpd_util_copy_str(p->name, sizeof(p->name), r->name);
	p->tpm_only = r->tpm_only;
	p->created_unix = nkpi_now();
	if (r->kind == NKPD_KIND_STANDARD) {
		return new_standard(s, p, r);
	}
	err = s->keys.create_version(s->keys.ctx, p->id, 1, &k);
	if (err == NKP_OK) {
		err = nkpd_model_add_version(p, 1, NKP_VERSION_ACTIVE, p->created_unix, k);
		if (err != NKP_OK) {
			nkp_key_free(k);
		}
	}
	if (err == NKP_OK) {
		nkpd_lifecycle_note_source_backup(s, p, 1);
	}
	if (err == NKP_OK && r->make_default) {
		clear_default(s);
		p->is_default = true;
	}
	if (err == NKP_OK) {
		err = nkpd_lifecycle_append_provider(s, p);
	}
	if (err != NKP_OK) {
		nkpd_model_provider_free(p);
	}
	return err;
}

void nkpd_lifecycle_commit_failed(nkpd_result *res, const char *what, nkp_err err)
{
	nkpd_result_fail(res, err, "%s: cannot persist the service state: %s", what,
			 nkp_strerror(err));
}

/* Lock held: the answer is the provider as it is now. */
void nkpd_lifecycle_answer_provider(nkpd_svc *s, const char *name, nkpd_result *res)
{
	const nkpd_provider *p = nkpd_model_provider_find(s, name);

	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", name);
		return;
	}
	res->payload = NKPD_PAYLOAD_PROVIDER;
	res->u.provider = nkpd_report_provider_locked(s, p);
}

static void answer_usage_refusal(nkpd_svc *s, const nkpd_provider *p, uint32_t version,
				 nkpd_result *res)
{
	res->payload = NKPD_PAYLOAD_USAGE_REFUSAL;
	res->u.usage_refusal = nkpd_report_usage_refusal_locked(s, p, version);
}

/* Versions of every provider: a push holds them all, and a host refuses
 * one with more than NKPI_PUSH_MAX_VERSIONS (its receive limit is sized
 * from that). */
size_t nkpd_lifecycle_versions_total(const nkpd_svc *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		n += s->providers[i]->n_versions;
	}
	return n;
}

void nkpd_provider_create(nkpd_svc *s, const nkpd_provider_create_args *r, nkpd_result *res)
{
	nkpd_txn t;
	nkp_err err;
	char hex[33];

	pthread_mutex_lock(&s->lock);
	if (!nkpd_util_name_valid(r->name)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 "invalid provider name (1-64 of A-Z a-z 0-9 . _ -)");
	} else if (nkpd_model_provider_find(s, r->name) != NULL) {
		nkpd_result_fail(res, NKP_ERR_EXISTS, "a provider named %s already exists",
				 r->name);
	} else if (r->kind == NKPD_KIND_STANDARD && (r->kms == NULL || r->tpm_only)) {
		nkpd_result_fail(res, NKP_ERR_INVALID,
				 r->kms == NULL ? "a standard provider needs its KMS servers"
						: "a standard provider cannot be tpm-only");
	} else if (r->kind == NKPD_KIND_STANDARD && r->make_default) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "a standard provider cannot be the default yet: hosts make VM "
				 "keys under native and trusted providers only in this version");
	} else if (s->n_providers >= NKPD_MAX_PROVIDERS) {
		nkpd_result_fail(res, NKP_ERR_TOO_LARGE, "too many providers");
	} else if (nkpd_lifecycle_versions_total(s) >= NKPI_PUSH_MAX_VERSIONS) {
		nkpd_result_fail(
			res, NKP_ERR_TOO_LARGE,
			"too many key versions in all (%u): retire and delete old versions first",
			NKPI_PUSH_MAX_VERSIONS);
	} else if ((err = nkpd_txn_begin(s, &t)) != NKP_OK) {
		nkpd_result_fail(res, err, "cannot create provider: %s", nkp_strerror(err));
	} else if ((err = new_provider(s, r)) != NKP_OK) {
		nkpd_txn_rollback(s, &t);
		nkpd_result_fail(res, err, "cannot create provider: %s", nkp_strerror(err));
	} else if ((err = nkpd_txn_commit(s, &t)) != NKP_OK) {
		nkpd_lifecycle_commit_failed(res, "provider create", err);
	} else {
		const nkpd_provider *p = nkpd_model_provider_find(s, r->name);

		id_hex(p, hex);
		if (p->kind == NKPD_KIND_STANDARD) {
			nkpd_kms_wake_locked(s);
			nkp_event(s->events, NKP_EV_PROVIDER_CREATED, r->name, NULL,
				  "provider %s created (id %s, standard: keys from %zu KMS "
				  "server(s), first %s)",
				  r->name, hex, p->kms->n_servers, p->kms->servers[0]);
		} else {
			nkp_event(s->events, NKP_EV_PROVIDER_CREATED, r->name, NULL,
				  "provider %s created (id %s, version 1%s%s)", r->name, hex,
				  p->is_default ? ", default" : "",
				  p->tpm_only ? ", tpm-only" : "");
		}
		if (!p->backed_up) {
			nkp_event(s->events, NKP_EV_PROVIDER_NOT_BACKED_UP, r->name, NULL,
				  "provider %s is not backed up: hosts make no VM keys under it "
				  "until `nkpctl provider backup %s` succeeds",
				  r->name, r->name);
		}
		nkpd_lifecycle_answer_provider(s, r->name, res);
	}
	pthread_mutex_unlock(&s->lock);
}

void nkpd_provider_set_default(nkpd_svc *s, const char *name, nkpd_result *res)
{
	nkpd_txn t;
	nkp_err err;
	nkpd_provider *p;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", name);
	} else if (p->kind == NKPD_KIND_STANDARD) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "a standard provider cannot be the default yet: hosts make VM "
				 "keys under native and trusted providers only in this version");
	} else if (p->is_default) {
		nkpd_lifecycle_answer_provider(s, name, res);
	} else if ((err = nkpd_txn_begin(s, &t)) != NKP_OK) {
		nkpd_result_fail(res, err, "cannot change the default: %s", nkp_strerror(err));
	} else {
		clear_default(s);
		nkpd_model_provider_find(s, name)->is_default = true;
		err = nkpd_txn_commit(s, &t);
		if (err != NKP_OK) {
			nkpd_lifecycle_commit_failed(res, "provider set-default", err);
		} else {
			nkp_event(s->events, NKP_EV_PROVIDER_DEFAULT, name, NULL,
				  "provider %s is now the default", name);
			nkpd_lifecycle_answer_provider(s, name, res);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- retire, delete ---- */

static uint64_t keysafes_under(const nkpd_svc *s, const nkpd_provider *p, uint32_t version,
			       char *who, size_t size)
{
	uint64_t total = 0;
	size_t used = 0;

	who[0] = '\0';
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		for (size_t j = 0; j < h->st.n_usage; j++) {
			const nkpd_usage *u = &h->st.usage[j];

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
static void usage_round(nkpd_svc *s, char *note, size_t size)
{
	size_t missing =
		s->sync != NULL ? s->sync->usage_round(s->sync->ctx, NKPD_USAGE_ROUND_MS) : 0;
	size_t used = 0;

	note[0] = '\0';
	if (missing == 0) {
		return;
	}
	used = (size_t)snprintf(note, size, "; no fresh report from");
	for (size_t i = 0; i < s->n_hosts && used < size; i++) {
		const nkpd_host *h = s->hosts[i];

		if (h->st.asked_round == s->usage_round && h->st.answered_round != s->usage_round) {
			used += (size_t)snprintf(note + used, size - used, " %s", h->conf.name);
		}
	}
	if (used < size) {
		snprintf(note + used, size - used, " (their last reports count)");
	}
}

static nkp_err remove_version_txn(nkpd_svc *s, const char *name, uint32_t version)
{
	nkpd_txn t;
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	nkpd_model_remove_version(nkpd_model_provider_find(s, name), version);
	return nkpd_txn_commit(s, &t);
}

void nkpd_provider_retire(nkpd_svc *s, const nkpd_provider_retire_args *r, nkpd_result *res)
{
	nkpd_provider *p;
	const nkpd_version *v;
	char who[300], note[200] = "";
	uint64_t used;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	if (!r->force) {
		usage_round(s, note, sizeof(note));
	}
	p = nkpd_model_provider_find(s, r->name);
	v = p != NULL ? nkpd_model_version_find(p, r->version) : NULL;
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
		nkpd_lifecycle_commit_failed(res, "provider retire", err);
	} else {
		nkp_event(s->events, NKP_EV_PROVIDER_RETIRED, r->name, NULL,
			  "provider %s: version %u retired%s; hosts wipe it", r->name, r->version,
			  used > 0 ? " by force while hosts reported use" : "");
		nkpd_lifecycle_answer_provider(s, r->name, res);
	}
	pthread_mutex_unlock(&s->lock);
}

static nkp_err delete_txn(nkpd_svc *s, const char *name)
{
	nkpd_txn t;
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	for (size_t i = 0; i < s->n_providers; i++) {
		if (strcmp(s->providers[i]->name, name) == 0) {
			nkpd_model_provider_free(s->providers[i]);
			memmove(&s->providers[i], &s->providers[i + 1],
				(s->n_providers - i - 1) * sizeof(s->providers[0]));
			s->n_providers--;
			break;
		}
	}
	return nkpd_txn_commit(s, &t);
}

/* Keysafes hosts report under any version of `p`. */
static uint64_t provider_keysafes(const nkpd_svc *s, const nkpd_provider *p, char *who, size_t size)
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

void nkpd_provider_delete(nkpd_svc *s, const nkpd_provider_delete_args *r, nkpd_result *res)
{
	nkpd_provider *p;
	char hex[33], who[300], note[200] = "";
	uint64_t used;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, r->name);
	if (p != NULL && !r->force && !p->is_default) {
		usage_round(s, note, sizeof(note));
		p = nkpd_model_provider_find(s, r->name);
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
			nkpd_lifecycle_commit_failed(res, "provider delete", err);
		} else {
			nkp_event(s->events, NKP_EV_PROVIDER_DELETED, r->name, NULL,
				  "provider %s (id %s) deleted; hosts wipe its keys", r->name, hex);
			nkpd_result_ok(res, "provider %s deleted", r->name);
		}
	}
	pthread_mutex_unlock(&s->lock);
}
