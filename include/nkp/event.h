/* Structured events (design §7): time, severity, kind, provider, host,
 * message. Appended one JSON object a line to an event log, and also
 * logged through nkp_log with the kind as message id. Never carry key
 * bytes. */
#ifndef NKP_EVENT_H
#define NKP_EVENT_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/log.h>

/** Event kinds; nkp_event_kind_name() gives their stable names, e.g.
 * "provider.created", which are also their log message ids. */
typedef enum nkp_event_kind {
	NKP_EV_PROVIDER_CREATED,
	NKP_EV_PROVIDER_BACKED_UP,
	NKP_EV_PROVIDER_NOT_BACKED_UP, /* new or stale backup */
	NKP_EV_PROVIDER_STAGED,
	NKP_EV_PROVIDER_PROMOTED,
	NKP_EV_PROVIDER_ROTATION_FAILED,
	NKP_EV_PROVIDER_RETIRED,
	NKP_EV_PROVIDER_DELETED,
	NKP_EV_PROVIDER_RESTORED,
	NKP_EV_PROVIDER_DEFAULT,
	NKP_EV_HOST_ENROLLED,
	NKP_EV_HOST_REMOVED,
	NKP_EV_HOST_IN_SYNC,
	NKP_EV_HOST_UNREACHABLE,
	NKP_EV_PUSH_FAILED,
	NKP_EV_KEY_UNKNOWN, /* a host asked for a key the service lacks */
	NKP_EV_VM_LOCKED,
	NKP_EV_TAMPERING,
	NKP_EV_BAD_INPUT, /* malformed or unauthenticated input refused */
	NKP_EV_STATE_WRITE_FAILED,
	NKP_EV_SERVICE_STARTED,
	NKP_EV_SERVICE_STOPPED,
	NKP_EV_KEY_CREATED,		   /* host: a VM key made */
	NKP_EV_KEYS_APPLIED,		   /* host: a push applied */
	NKP_EV_KEY_RELEASED,		   /* host: a data key handed to a local peer */
	NKP_EV_HOST_CONFLICT,		   /* a host holds a generation we did not give it */
	NKP_EV_HOST_ATTESTED,		   /* a host's quote passed: trusted providers reach it */
	NKP_EV_HOST_ATTESTATION_FAILED,	   /* ... failed: they are wiped from it */
	NKP_EV_KMS_UNREACHABLE,		   /* a standard provider's KMS server stopped answering */
	NKP_EV_KMS_REACHABLE,		   /* ... answers again */
	NKP_EV_KMS_ATTRIBUTES_UNSUPPORTED, /* a KMS server refused nkp's x- attributes */
	NKP_EV__COUNT
} nkp_event_kind;

NKP_EXPORT const char *nkp_event_kind_name(nkp_event_kind kind);
/** Default severity of a kind. */
NKP_EXPORT nkp_log_level nkp_event_kind_level(nkp_event_kind kind);

typedef struct nkp_eventlog nkp_eventlog;

/** Opens (creating, mode 0600) an append-only event log at `path`; NULL
 * path means log-only. Errors: NKP_ERR_IO, NKP_ERR_PERM. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_eventlog_open(const char *path, nkp_eventlog **out);
NKP_EXPORT void nkp_eventlog_close(nkp_eventlog *log);

/** Records an event: one JSON line {"seq","time","severity","kind",
 * "provider","host","message"} appended and flushed, and one log line.
 * `provider` and `host` may be NULL. Thread-safe. Returns the sequence
 * number (1-based, increasing across restarts) or 0 if the append failed
 * (the log line is still written). */
NKP_EXPORT uint64_t nkp_event(nkp_eventlog *log, nkp_event_kind kind, const char *provider,
			      const char *host, const char *fmt, ...) NKP_PRINTF(5, 6);

/** Calls `fn` for each recorded line with seq > `after` (raw JSON line,
 * without newline). Returns the last seq seen (or `after`). */
NKP_EXPORT uint64_t nkp_eventlog_read(const char *path, uint64_t after,
				      void (*fn)(uint64_t seq, const char *json, void *arg),
				      void *arg);

/** Escapes `s` as a JSON string body into `out` (always NUL-terminated;
 * truncates). Control characters become \uXXXX. */
NKP_EXPORT void nkp_json_escape(const char *s, char *out, size_t outsize);

#endif
