/* A standard provider's KMS: its settings (shared, immutable) and what
 * nkpd last found of each server. The servers are asked by
 * keysource/kmip.c, outside nkpd_svc.lock; what it finds is recorded
 * here under the lock, with an event when a server's reachability
 * changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"
#include "core/kms.h"
#include "internal.h"

static uint8_t *copy_bytes(const uint8_t *b, size_t n)
{
	uint8_t *c = malloc(n + 1);

	if (c != NULL) {
		memcpy(c, b, n);
		c[n] = 0;
	}
	return c;
}

nkp_err nkpd_kms_new(const nkpd_kms_args *a, nkpd_kms **out)
{
	nkpd_kms *k;

	if (a->n_servers == 0 || a->n_servers > NKPD_KMS_SERVERS_MAX || a->ca_len == 0 ||
	    a->cert_len == 0 || a->key_len == 0 || a->spare_pool > NKPD_KMS_SPARE_POOL_MAX) {
		return NKP_ERR_INVALID;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		return NKP_ERR_NOMEM;
	}
	atomic_init(&k->refs, 1);
	for (size_t i = 0; i < a->n_servers; i++) {
		if (a->servers[i] == NULL || strlen(a->servers[i]) >= NKPD_KMS_URL_MAX) {
			nkpd_kms_unref(k);
			return NKP_ERR_INVALID;
		}
		snprintf(k->servers[i], sizeof(k->servers[i]), "%s", a->servers[i]);
	}
	k->n_servers = a->n_servers;
	k->spare_pool = a->spare_pool != 0 ? a->spare_pool : NKPD_KMS_SPARE_POOL_DEFAULT;
	k->ca_pem = copy_bytes(a->ca_pem, a->ca_len);
	k->cert_pem = copy_bytes(a->cert_pem, a->cert_len);
	k->key_pem = sodium_malloc(a->key_len + 1);
	if (k->ca_pem == NULL || k->cert_pem == NULL || k->key_pem == NULL) {
		nkpd_kms_unref(k);
		return NKP_ERR_NOMEM;
	}
	k->ca_len = a->ca_len;
	k->cert_len = a->cert_len;
	memcpy(k->key_pem, a->key_pem, a->key_len);
	k->key_pem[a->key_len] = 0;
	k->key_len = a->key_len;
	*out = k;
	return NKP_OK;
}

nkpd_kms *nkpd_kms_ref(nkpd_kms *k)
{
	if (k != NULL) {
		atomic_fetch_add(&k->refs, 1);
	}
	return k;
}

void nkpd_kms_unref(nkpd_kms *k)
{
	if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1) {
		return;
	}
	free(k->ca_pem);
	free(k->cert_pem);
	sodium_free(k->key_pem); /* wiped */
	sodium_memzero(k, sizeof(*k));
	free(k);
}

nkpd_kind nkpd_kind_from_name(const char *name, bool *ok)
{
	*ok = true;
	if (name == NULL || name[0] == '\0' || strcmp(name, "native") == 0) {
		return NKPD_KIND_NATIVE;
	}
	if (strcmp(name, "standard") == 0) {
		return NKPD_KIND_STANDARD;
	}
	*ok = false;
	return NKPD_KIND_NATIVE;
}

const char *nkpd_kind_name(nkpd_kind k)
{
	return k == NKPD_KIND_STANDARD ? "standard" : "native";
}

const char *nkpd_kms_reach_name(nkpd_kms_reach r)
{
	switch (r) {
	case NKPD_KMS_REACHABLE:
		return "reachable";
	case NKPD_KMS_UNREACHABLE:
		return "unreachable";
	default:
		return "unknown";
	}
}

void nkpd_kms_wake_locked(nkpd_svc *s)
{
	if (s->kms_wake != NULL) {
		s->kms_wake(s->kms_wake_arg);
	}
}

size_t nkpd_kms_spares_locked(const nkpd_provider *p, const char *host)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n_kms_keys; i++) {
		n += p->kms_keys[i].state == NKPD_KMS_KEY_SPARE &&
		     strcmp(p->kms_keys[i].host, host) == 0;
	}
	return n;
}

void nkpd_kms_attrs_refused_locked(nkpd_svc *s, nkpd_provider *p, size_t i, const char *why)
{
	if (p->kms_state[i].attrs_refused) {
		return;
	}
	p->kms_state[i].attrs_refused = true;
	nkp_event(s->events, NKP_EV_KMS_ATTRIBUTES_UNSUPPORTED, p->name, NULL,
		  "provider %s: KMS server %s refuses the attributes x-Vendor, x-Product, "
		  "x-Product_Version (%s); nkp keeps them in its own records",
		  p->name, p->kms->servers[i], why);
}

/* Lock held, in a transaction: a change of provider p's keys. */
typedef nkp_err (*keys_change)(nkpd_provider *p, const void *arg);

/* Takes the lock: `change` applied to provider `id` in one transaction, if
 * the provider still has settings `kms`. */
static nkp_err change_keys(nkpd_svc *s, const uint8_t *id, const nkpd_kms *kms, keys_change change,
			   const void *arg)
{
	nkpd_provider *p;
	nkpd_txn t;
	nkp_err err;

	pthread_mutex_lock(&s->lock);
	p = nkpd_model_provider_find_id(s, id);
	if (p == NULL || p->kms != kms) {
		err = NKP_ERR_NOT_FOUND;
	} else if ((err = nkpd_txn_begin(s, &t)) == NKP_OK) {
		err = change(nkpd_model_provider_find_id(s, id), arg);
		if (err != NKP_OK) {
			nkpd_txn_rollback(s, &t);
		} else {
			err = nkpd_txn_commit(s, &t);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

typedef struct key_list {
	const nkpd_kms_key *keys;
	char (*ids)[NKPD_KMS_ID_MAX];
	size_t n;
} key_list;

static nkp_err append_keys(nkpd_provider *p, const void *arg)
{
	const key_list *l = arg;
	nkpd_kms_key *grown = realloc(p->kms_keys, (p->n_kms_keys + l->n) * sizeof(*grown));

	if (grown == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(grown + p->n_kms_keys, l->keys, l->n * sizeof(*l->keys));
	p->kms_keys = grown;
	p->n_kms_keys += l->n;
	return NKP_OK;
}

nkp_err nkpd_kms_add_keys(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES], const nkpd_kms *kms,
			  const nkpd_kms_key *keys, size_t n)
{
	const key_list l = {.keys = keys, .n = n};

	return change_keys(s, id, kms, append_keys, &l);
}

static bool named(char (*ids)[NKPD_KMS_ID_MAX], size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(ids[i], id) == 0) {
			return true;
		}
	}
	return false;
}

static nkp_err remove_keys(nkpd_provider *p, const void *arg)
{
	const key_list *l = arg;
	size_t kept = 0;

	for (size_t i = 0; i < p->n_kms_keys; i++) {
		if (!named(l->ids, l->n, p->kms_keys[i].id)) {
			p->kms_keys[kept++] = p->kms_keys[i];
		}
	}
	p->n_kms_keys = kept;
	return NKP_OK;
}

nkp_err nkpd_kms_drop_keys(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES], const nkpd_kms *kms,
			   char (*ids)[NKPD_KMS_ID_MAX], size_t n)
{
	const key_list l = {.ids = ids, .n = n};

	return change_keys(s, id, kms, remove_keys, &l);
}

void nkpd_kms_note_locked(nkpd_svc *s, nkpd_provider *p, size_t i, bool reachable,
			  const char *error)
{
	nkpd_kms_server_state *st = &p->kms_state[i];
	nkpd_kms_reach was = st->reach;

	st->checked_unix = nkpi_now();
	st->reach = reachable ? NKPD_KMS_REACHABLE : NKPD_KMS_UNREACHABLE;
	snprintf(st->error, sizeof(st->error), "%s", reachable || error == NULL ? "" : error);
	if (!reachable && was != NKPD_KMS_UNREACHABLE) {
		nkp_event(s->events, NKP_EV_KMS_UNREACHABLE, p->name, NULL,
			  "provider %s: KMS server %s unreachable: %s", p->name, p->kms->servers[i],
			  st->error);
	} else if (reachable && was == NKPD_KMS_UNREACHABLE) {
		nkp_event(s->events, NKP_EV_KMS_REACHABLE, p->name, NULL,
			  "provider %s: KMS server %s answers again", p->name, p->kms->servers[i]);
	}
}
