/* A standard provider's KMS settings and server states (core/kms.c). */
#ifndef NKPD_KMS_H
#define NKPD_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* The settings as given (borrowed; nkpd_kms_new copies them). */
typedef struct nkpd_kms_args {
	const char *const *servers;
	size_t n_servers;
	const uint8_t *ca_pem, *cert_pem, *key_pem;
	size_t ca_len, cert_len, key_len;
	uint32_t spare_pool; /* 0: the default */
} nkpd_kms_args;

/** New settings, one reference. NKP_ERR_INVALID (no or too many servers, a
 * URL too long, an empty PEM, a pool over NKPD_KMS_SPARE_POOL_MAX),
 * NKP_ERR_NOMEM. The URLs and PEMs are checked by whoever builds a KMIP
 * client from them (api/admin.c before a create). */
NKP_NODISCARD nkp_err nkpd_kms_new(const nkpd_kms_args *a, nkpd_kms **out);
nkpd_kms *nkpd_kms_ref(nkpd_kms *k);
/** Drops a reference; the last one wipes the client key. Accepts NULL. */
void nkpd_kms_unref(nkpd_kms *k);

/** "native" (also "") or "standard"; *ok false for anything else. */
nkpd_kind nkpd_kind_from_name(const char *name, bool *ok);
const char *nkpd_kind_name(nkpd_kind k);
const char *nkpd_kms_reach_name(nkpd_kms_reach r);

/** Lock held: server `i` of standard provider `p` was asked just now and
 * answered (or not, for `error`). Raises kms.unreachable when it stops
 * answering, kms.reachable when it answers again. */
void nkpd_kms_note_locked(nkpd_svc *s, nkpd_provider *p, size_t i, bool reachable,
			  const char *error);

/** Lock held: asks the KMS monitor for a round now, if one runs. */
void nkpd_kms_wake_locked(nkpd_svc *s);

/** Lock held: the spares of `p` kept for host `host`. */
size_t nkpd_kms_spares_locked(const nkpd_provider *p, const char *host);

/** Lock held: server `i` of `p` refused nkp's x- attributes (`why`): one
 * kms.attributes_unsupported event per server and nkpd run. */
void nkpd_kms_attrs_refused_locked(nkpd_svc *s, nkpd_provider *p, size_t i, const char *why);

/** Takes the lock: appends `n` keys the KMS just made to provider `id`, in
 * one transaction, if the provider still has settings `kms` (else
 * NKP_ERR_NOT_FOUND: the caller made them for a provider since deleted or
 * re-created). */
NKP_NODISCARD nkp_err nkpd_kms_add_keys(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES],
					const nkpd_kms *kms, const nkpd_kms_key *keys, size_t n);

/** Takes the lock: removes the keys named in `ids` from provider `id`'s
 * records, in one transaction, if it still has settings `kms`. */
NKP_NODISCARD nkp_err nkpd_kms_drop_keys(nkpd_svc *s, const uint8_t id[static NKP_ID_BYTES],
					 const nkpd_kms *kms, char (*ids)[NKPD_KMS_ID_MAX],
					 size_t n);

#endif
