/* Two-phase rotation (docs/PROTOCOL.md "Two-phase rotation"): a new
 * version is staged, pushed, and promoted once every host in scope
 * acknowledged it, or at the deadline if forced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/lifecycle.h"
#include "internal.h"

#define MAX_ROTATE_TIMEOUT 86400u

static void answer_rotation(nkpd_svc *s, const nkpd_provider *p, nkpd_result *res)
{
	res->payload = NKPD_PAYLOAD_ROTATION;
	res->u.rotation = nkpd_report_rotation_locked(s, p);
}

static nkp_err stage_new_version(nkpd_svc *s, const char *name, uint32_t *version)
{
	nkpd_txn t;
	nkp_key *k = NULL;
	nkpd_provider *p;
	uint32_t v;
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = nkpd_model_provider_find(s, name);
	v = nkpd_model_version_max(p) + 1;
	err = nkpd_lifecycle_versions_total(s) >= NKPI_PUSH_MAX_VERSIONS
		      ? NKP_ERR_TOO_LARGE
		      : s->keys.create_version(s->keys.ctx, p->id, v, &k);
	if (err == NKP_OK) {
		err = nkpd_model_add_version(p, v, NKP_VERSION_STAGED, nkpi_now(), k);
		if (err != NKP_OK) {
			nkp_key_free(k);
		}
	}
	if (err == NKP_OK) {
		nkpd_lifecycle_note_source_backup(s, p, v);
	}
	if (err != NKP_OK) {
		nkpd_txn_rollback(s, &t);
		return err;
	}
	err = nkpd_txn_commit(s, &t);
	if (err == NKP_OK) {
		*version = v;
	}
	return err;
}

static void start_rotation(nkpd_svc *s, nkpd_provider *p, uint32_t version, bool resumed,
			   const nkpd_provider_rotate_args *r)
{
	uint32_t timeout =
		r->timeout_seconds == 0 ? NKPD_DEFAULT_ROTATE_TIMEOUT : r->timeout_seconds;

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

void nkpd_provider_rotate(nkpd_svc *s, const nkpd_provider_rotate_args *r, nkpd_result *res)
{
	nkpd_provider *p;
	const nkpd_version *staged;
	uint32_t version = 0;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find(s, r->name);
	if (p == NULL) {
		nkpd_result_fail(res, NKP_ERR_NOT_FOUND, "no provider named %s", r->name);
		goto out_unlock;
	}
	if (p->kind == NKPD_KIND_STANDARD) {
		nkpd_result_fail(res, NKP_ERR_STATE,
				 "provider %s is a standard provider: its keys are in its KMS, one "
				 "per VM, and have no versions to rotate; give a VM a new key with "
				 "`nkp-hostctl vm rekey`",
				 r->name);
		goto out_unlock;
	}
	staged = nkpd_model_version_staged(p);
	if (staged != NULL) {
		start_rotation(s, p, staged->version, true, r);
	} else if ((err = stage_new_version(s, r->name, &version)) != NKP_OK) {
		nkpd_result_fail(res, err, "provider rotate: cannot stage a new version: %s",
				 nkp_strerror(err));
		goto out_unlock;
	} else {
		start_rotation(s, nkpd_model_provider_find(s, r->name), version, false, r);
	}
	nkpd_provider_rotation_tick(s);
	answer_rotation(s, nkpd_model_provider_find(s, r->name), res);
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* Lock held. Staged -> active, active -> decrypt-only. */
static nkp_err promote(nkpd_svc *s, size_t i)
{
	nkpd_txn t;
	nkpd_provider *p;
	nkpd_version *active, *staged;
	nkp_err err = nkpd_txn_begin(s, &t);

	if (err != NKP_OK) {
		return err;
	}
	p = s->providers[i];
	active = nkpd_model_version_active(p);
	staged = nkpd_model_version_find(p, p->rot.version);
	if (active != NULL) {
		active->state = NKP_VERSION_DECRYPT_ONLY;
	}
	staged->state = NKP_VERSION_ACTIVE;
	p->rot.state = ROT_PROMOTED;
	return nkpd_txn_commit(s, &t);
}

static size_t missing_names(nkpd_svc *s, const nkpd_provider *p, char *out, size_t size)
{
	size_t n = 0, used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < s->n_hosts; i++) {
		const nkpd_host *h = s->hosts[i];

		if (!nkpd_host_in_scope(h, p) || nkpd_host_acked(h, p) >= p->rot.stage_generation) {
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

static void finish_rotation(nkpd_svc *s, size_t i, bool all_acked)
{
	char missing[400];
	nkpd_provider *p = s->providers[i];
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

void nkpd_provider_rotation_tick(nkpd_svc *s)
{
	uint64_t now = nkpi_mono_ms();

	for (size_t i = 0; i < s->n_providers; i++) {
		nkpd_provider *p = s->providers[i];
		const nkpd_version *v;
		size_t total = 0, acked = 0;

		if (p->rot.state != ROT_WAITING) {
			continue;
		}
		v = nkpd_model_version_find(p, p->rot.version);
		if (v == NULL || v->state != NKP_VERSION_STAGED) {
			p->rot.state = ROT_FAILED;
			snprintf(p->rot.message, sizeof(p->rot.message),
				 "version %u is no longer staged", p->rot.version);
			continue;
		}
		for (size_t j = 0; j < s->n_hosts; j++) {
			const nkpd_host *h = s->hosts[j];

			if (nkpd_host_in_scope(h, p)) {
				total++;
				acked += nkpd_host_acked(h, p) >= p->rot.stage_generation;
			}
		}
		if (acked == total || now >= p->rot.deadline_ms) {
			finish_rotation(s, i, acked == total);
		}
	}
}
