/* nkp: native key provider for hypervisor clusters.
 * Umbrella header and library set-up. */
#ifndef NKP_NKP_H
#define NKP_NKP_H

#include <nkp/backup.h>
#include <nkp/channel.h>
#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/event.h>
#include <nkp/file.h>
#include <nkp/key.h>
#include <nkp/keysafe.h>
#include <nkp/log.h>
#include <nkp/provider.h>
#include <nkp/wrap.h>

/** Initialises libsodium. Call once before anything else; safe to call
 * again. Returns NKP_ERR_CRYPTO if libsodium cannot start. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_init(void);

/** For processes that hold keys: disables core dumps (RLIMIT_CORE = 0 and
 * PR_SET_DUMPABLE = 0). Returns NKP_ERR_PERM if either call fails. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_harden_process(void);

/** Whether this process can lock key memory out of swap. libsodium's
 * sodium_malloc(), which holds every key, locks its pages but ignores a
 * failure (RLIMIT_MEMLOCK too small without CAP_IPC_LOCK). The first call
 * locks and unlocks a probe of NKP_MLOCK_PROBE_BYTES (room for about 64
 * keys) and, if that fails, logs NKP-MLOCK-FAILED at warning level (once
 * per process); later calls return the first answer. Daemons call it at
 * start and show it in their status. */
#define NKP_MLOCK_PROBE_BYTES (256u << 10)
NKP_EXPORT bool nkp_memory_lock_check(void);

/** Library version string, e.g. "0.1.0". */
NKP_EXPORT const char *nkp_version(void);

#endif
