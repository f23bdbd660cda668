/* What the parts of the provider lifecycle (core/providers.c, backup.c,
 * rotation.c) share. Private to nkp/nkpd/core. All with nkpd_svc.lock held. */
#ifndef NKPD_CORE_LIFECYCLE_H
#define NKPD_CORE_LIFECYCLE_H

#include "core/core.h"

/** Appends `p` to the model (the caller's transaction owns it from
 * there); a service with no default provider makes it the default.
 * NKP_ERR_NOMEM. */
nkp_err nkpd_lifecycle_append_provider(nkpd_svc *s, nkpd_provider *p);
/** A version the key source keeps a durable copy of needs no backup: the
 * provider counts as backed up to it. */
void nkpd_lifecycle_note_source_backup(const nkpd_svc *s, nkpd_provider *p, uint32_t version);
/** The result of a change that could not be persisted. */
void nkpd_lifecycle_commit_failed(nkpd_result *res, const char *what, nkp_err err);
/** The answer is the provider `name` as it is now (or NKP_ERR_NOT_FOUND). */
void nkpd_lifecycle_answer_provider(nkpd_svc *s, const char *name, nkpd_result *res);
/** Versions of every provider (a push holds them all). */
size_t nkpd_lifecycle_versions_total(const nkpd_svc *s);

#endif
