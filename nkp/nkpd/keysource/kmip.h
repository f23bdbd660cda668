/* Standard providers' KMS servers, asked over KMIP (nkp/private/
 * kmip-client.h) outside nkpd_svc.lock: a check of every server of a
 * provider, and the monitor thread that runs one for every standard
 * provider each kms-check-interval and records what it found in the model
 * (core/kms.h). */
#ifndef NKPD_KEYSOURCE_KMIP_H
#define NKPD_KEYSOURCE_KMIP_H

#include <stdint.h>

#include "core/core.h"

/* How long one server may take to answer a check. */
#define NKPD_KMS_CHECK_TIMEOUT_MS 5000u
/* The default time between two checks of every server. */
#define NKPD_KMS_CHECK_INTERVAL_MS 60000u

/** Asks each server of `k` whether it answers (KMIP Discover Versions, at
 * most `timeout_ms` each); what each said goes to out[i]. NKP_OK if at
 * least one answered; NKP_ERR_NET if none did (`why` lists the reasons);
 * NKP_ERR_INVALID / NKP_ERR_PARSE if the settings are unusable (a URL, a
 * certificate or key that does not parse: `why` says which). Never holds
 * the lock; takes no lock. */
NKP_NODISCARD nkp_err nkpd_kmip_check(const nkpd_kms *k, unsigned timeout_ms,
				      nkpd_kms_server_state out[NKPD_KMS_SERVERS_MAX], char *why,
				      size_t why_len);

typedef struct nkpd_kmip_monitor nkpd_kmip_monitor;

/** Starts the monitor of `s`'s standard providers: every `interval_ms`
 * (0: the default) it checks each one's servers and records the result
 * (events on changes). */
NKP_NODISCARD nkp_err nkpd_kmip_monitor_start(nkpd_svc *s, uint64_t interval_ms,
					      nkpd_kmip_monitor **out);
/** Stops it (a check under way ends within its timeout). Accepts NULL. */
void nkpd_kmip_monitor_stop(nkpd_kmip_monitor *m);

#endif
