/* nkpd's sync engine: keeps every enrolled host at the desired state
 * (docs/PROTOCOL.md "Reconciler"). It follows the core's commits (a
 * commit subscriber), reads the model and the hosts' status under
 * nkpd_svc.lock, and registers nkpd_svc.sync for what the core asks of it. */
#ifndef NKPD_SYNC_H
#define NKPD_SYNC_H

#include "core/core.h"

/** Starts the sync engine: follows commits (nkpd_sync_follow),
 * registers nkpd_svc.sync, dials every host. */
nkp_err nkpd_sync_start(nkpd_svc *s);
void nkpd_sync_stop(nkpd_svc *s);
/** Builds the desired snapshot now and again after every commit, without
 * starting anything else (what unit tests without hosts need). Lock held
 * or no thread started. */
nkp_err nkpd_sync_follow(nkpd_svc *s);
/** Rebuilds the desired snapshot and pushes it to every host. Lock held. */
nkp_err nkpd_sync_changed(nkpd_svc *s);
/** Lock held. True if no request is in flight to `h`; its next one is
 * then held back to at least `hold_ms` from now (never brought forward), so that a connection
 * closed meanwhile (a host stopping) is closed with nothing arriving on it (see sync/reconcile.c,
 * QUIET_WAIT_MS). False, and nothing changed, while one is. */
bool nkpd_sync_host_quiet(nkpd_svc *s, nkpd_host *h, uint64_t hold_ms);
/** Lock held. Ends a hold of nkpd_sync_host_quiet(): `h`'s next request
 * goes at most `in_ms` from now (a commit meanwhile may send it sooner). */
void nkpd_sync_host_resume(nkpd_svc *s, nkpd_host *h, uint64_t in_ms);
#endif
