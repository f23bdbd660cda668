/* Desired-state snapshots (docs/PROTOCOL.md "Reconciler"): after each
 * commit the model is copied into an immutable, reference-counted
 * snapshot and packed once as the nkp.wire.DesiredState every host gets,
 * so pushes are sealed outside nkpd_svc.lock. Keys live in one
 * sodium_malloc block. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "keyset.h"
#include "session.h"
#include "sync/engine.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

static nkp_err desired_fill(const nkpd_svc *s, nkpd_desired *d);

static nkp_err desired_fill(const nkpd_svc *s, nkpd_desired *d)
{
	size_t ki = 0;

	for (size_t i = 0; i < s->n_providers; i++) {
		const nkpd_provider *p = s->providers[i];
		nkpd_desired_provider *dp = &d->providers[i];

		memcpy(dp->id, p->id, NKP_ID_BYTES);
		memcpy(dp->name, p->name, sizeof(dp->name));
		dp->is_default = p->is_default;
		dp->backed_up = p->backed_up;
		dp->tpm_only = p->tpm_only;
		dp->standard = p->kind == NKPD_KIND_STANDARD;
		dp->key_index = ki;
		dp->n_versions = p->n_versions;
		dp->versions = calloc(p->n_versions + 1, sizeof(*dp->versions));
		if (dp->versions == NULL) {
			return NKP_ERR_NOMEM;
		}
		for (size_t j = 0; j < p->n_versions; j++, ki++) {
			dp->versions[j].version = p->versions[j].version;
			dp->versions[j].state = (uint32_t)p->versions[j].state;
			dp->versions[j].created_unix = p->versions[j].created_unix;
			nkp_key_export(p->versions[j].key, d->keys + ki * NKP_KEY_BYTES);
		}
	}
	return NKP_OK;
}

nkp_err nkpd_sync_desired_build(const nkpd_svc *s, bool trusted, nkpd_desired **out)
{
	nkpd_desired *d = calloc(1, sizeof(*d));
	size_t nk = 0;
	nkp_err err = NKP_ERR_NOMEM;

	if (d == NULL) {
		return NKP_ERR_NOMEM;
	}
	atomic_init(&d->refs, 1);
	for (size_t i = 0; i < s->n_providers; i++) {
		nk += s->providers[i]->n_versions;
	}
	d->epoch = s->epoch;
	d->generation = s->generation;
	d->trusted = trusted;
	d->n_providers = s->n_providers;
	d->n_keys = nk;
	d->providers = calloc(s->n_providers + 1, sizeof(*d->providers));
	d->keys = sodium_malloc((nk + 1) * NKP_KEY_BYTES);
	if (d->providers != NULL && d->keys != NULL) {
		err = desired_fill(s, d);
	}
	if (err == NKP_OK) {
		err = nkpd_sync_desired_pack(d);
	}
	if (err != NKP_OK) {
		nkpd_desired_release(d);
		return err;
	}
	*out = d;
	return NKP_OK;
}

/* The wire form of a push references the snapshot's fields and keys:
 * the keyset encoder copies no key. Trusted providers are left out of
 * the snapshot for untrusted hosts. */
static nkp_err fill_desired(const nkpd_desired *d, nkpi_keyset_enc *e, Nkp__Wire__DesiredState *ds)
{
	nkp_err err = nkpi_keyset_enc_init(e, d->n_providers, d->n_keys);

	for (size_t i = 0; i < d->n_providers && err == NKP_OK; i++) {
		const nkpd_desired_provider *dp = &d->providers[i];
		nkpi_keyset_provider p = {
			.id = dp->id,
			.name = dp->name,
			.is_default = dp->is_default,
			.backed_up = dp->backed_up,
			.tpm_only = dp->tpm_only,
		};

		/* A standard provider has no version to push; hosts will get its
		 * KMS keys one by one, not through the keyset. */
		if ((dp->tpm_only && !d->trusted) || dp->standard) {
			continue;
		}
		nkpi_keyset_enc_provider(e, &p);
		for (size_t j = 0; j < dp->n_versions; j++) {
			nkpi_keyset_version v = {
				.version = dp->versions[j].version,
				.state = dp->versions[j].state,
				.created_unix = dp->versions[j].created_unix,
				.key = d->keys + (dp->key_index + j) * NKP_KEY_BYTES,
			};

			nkpi_keyset_enc_version(e, &v);
		}
	}
	ds->epoch = d->epoch;
	ds->counter = d->generation;
	ds->providers = e->providers;
	ds->n_providers = e->n_providers;
	return err;
}

/* Serializes `d` once (at each committed change, not per host and push)
 * into locked memory, and digests exactly those bytes. */
nkp_err nkpd_sync_desired_pack(nkpd_desired *d)
{
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	nkpi_keyset_enc e;
	nkp_err err = fill_desired(d, &e, &ds);

	if (err == NKP_OK) {
		d->packed_len = nkp__wire__desired_state__get_packed_size(&ds);
		d->packed = sodium_malloc(d->packed_len + 1);
		err = d->packed != NULL ? NKP_OK : NKP_ERR_NOMEM;
	}
	if (err == NKP_OK) {
		nkp__wire__desired_state__pack(&ds, d->packed);
		nkpi_desired_digest(d->packed, d->packed_len, d->digest);
	}
	nkpi_keyset_enc_fini(&e);
	return err;
}
