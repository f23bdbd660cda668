/* libnkp-hostd's in-tree API: what nkp-hostd (hostd-plugin/daemon/),
 * nkp-bench and the tests use beyond <nkp/hostd.h>. They link the
 * plugin's static archive and so share its copy of libnkp; a program that
 * loads libnkp-hostd.so has a copy of its own, if any, and could not use
 * an nkp_* object the plugin hands out. Never installed; nkpi_* is hidden
 * and outside libnkp-hostd.map, so libnkp-hostd.so does not export it. */
#ifndef NKP_HOSTD_INTREE_H
#define NKP_HOSTD_INTREE_H

#include <stdbool.h>

#include <nkp/event.h>
#include <nkp/hostd.h>

/** The event log the handle records into (owned by h, valid until
 * nkp_hostd_close()): for the daemon's own events (local requests
 * refused, data keys released, start and stop), which so land in the same
 * file, in the same sequence, as the plugin's. */
nkp_eventlog *nkpi_hostd_eventlog(nkp_hostd *h);

/** True once nng stopped freeing the connections the handle's listener
 * closes (a wedge of nng 1.5's reaper; logged as NKP-HOSTD-NNG-WEDGED):
 * the process must be restarted. nkp-hostd checks it every few seconds
 * and exits 1, for its service manager to restart it. */
bool nkpi_hostd_nng_wedged(nkp_hostd *h);

#endif
