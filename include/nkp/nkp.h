/* nkp: native key provider for hypervisor clusters.
 * Umbrella header and library set-up. */
#ifndef NKP_NKP_H
#define NKP_NKP_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/log.h>
#include <nkp/key.h>
#include <nkp/wrap.h>
#include <nkp/provider.h>
#include <nkp/keysafe.h>
#include <nkp/backup.h>
#include <nkp/file.h>
#include <nkp/channel.h>
#include <nkp/event.h>

/** Initialises libsodium. Call once before anything else; safe to call
 * again. Returns NKP_ERR_CRYPTO if libsodium cannot start. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_init(void);

/** For processes that hold keys: disables core dumps (RLIMIT_CORE = 0 and
 * PR_SET_DUMPABLE = 0). Returns NKP_ERR_PERM if either call fails. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_harden_process(void);

/** Library version string, e.g. "0.1.0". */
NKP_EXPORT const char *nkp_version(void);

#endif
