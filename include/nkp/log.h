/* Logging with stable message ids, to a settable sink.
 *
 * Every message carries an id such as "NKP-KEYSAFE-TAMPERED" that operators
 * can grep and alert on. Messages never contain key bytes. */
#ifndef NKP_LOG_H
#define NKP_LOG_H

#include <nkp/common.h>

/* Same numbers as syslog(3) priorities. */
typedef enum nkp_log_level {
	NKP_LOG_ERR = 3,
	NKP_LOG_WARN = 4,
	NKP_LOG_NOTICE = 5,
	NKP_LOG_INFO = 6,
	NKP_LOG_DEBUG = 7,
} nkp_log_level;

typedef void (*nkp_log_sink)(nkp_log_level level, const char *msgid, const char *msg, void *arg);

/** Sets where log lines go; NULL silences logging. The default is stderr. */
NKP_EXPORT void nkp_log_set_sink(nkp_log_sink sink, void *arg);
/** Drops messages less severe than `level` (default NKP_LOG_INFO). */
NKP_EXPORT void nkp_log_set_level(nkp_log_level level);
/** Logs one line. Thread-safe; `msgid` is a stable identifier. */
NKP_EXPORT void nkp_log(nkp_log_level level, const char *msgid, const char *fmt, ...)
	NKP_PRINTF(3, 4);

/** Ready sinks: "<time> <level> <msgid>: <msg>" on stderr, or syslog(3). */
NKP_EXPORT void nkp_log_sink_stderr(nkp_log_level level, const char *msgid, const char *msg,
				    void *arg);
NKP_EXPORT void nkp_log_sink_syslog(nkp_log_level level, const char *msgid, const char *msg,
				    void *arg);
/** Name of a level: "error", "warning", "notice", "info", "debug". */
NKP_EXPORT const char *nkp_log_level_name(nkp_log_level level);

#endif
