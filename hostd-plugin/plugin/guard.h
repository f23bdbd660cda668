/* What strangers cost: unauthenticated frames are dropped without a
 * reply, counted, and summed up in at most one event a minute; connections
 * refused over the caps or closed (silent, or to make room) are counted
 * too. */
#ifndef NKP_HOSTD_GUARD_H
#define NKP_HOSTD_GUARD_H

#include <stdatomic.h>
#include <stdint.h>

#include <nkp/err.h>
#include <nkp/hostd.h>

/* At most one summary event per this many milliseconds (a token bucket of
 * one token). */
#define HOSTD_GUARD_SUMMARY_MS 60000u

enum hguard_reason {
	HGUARD_UNREADABLE,   /* not a frame, or not one this host can read */
	HGUARD_OTHER_SENDER, /* sealed by a key other than the pinned service */
	HGUARD_FAILED_AUTH,  /* from the service's key, but fails to open */
	HGUARD_REPLAYED,     /* a replayed or reordered frame */
	HGUARD_OTHER,
	HGUARD__COUNT
};

/* Zero is the initial state (the handle is calloc'd). */
typedef struct hostd_guard {
	_Atomic uint64_t dropped;		 /* frames, since the start */
	_Atomic uint64_t refused_conns;		 /* connections over a cap */
	_Atomic uint64_t closed_conns;		 /* closed: silent, or to make room */
	_Atomic uint64_t pending[HGUARD__COUNT]; /* frames since the last summary */
	_Atomic uint64_t since_ms;		 /* the last summary (0: none yet) */
	_Atomic uint64_t first_ms;		 /* first drop since the last summary */
} hostd_guard;

/* Counts one dropped frame and, if a summary is due, records it. */
void hostd_guard_dropped(nkp_hostd *h, nkp_err why);
/* Records the pending summary if one is due (called from a timer, so a
 * flood that stops is still reported). */
void hostd_guard_flush(nkp_hostd *h);
/* Records whatever is pending, due or not (at close). */
void hostd_guard_final(nkp_hostd *h);
void hostd_guard_conn_refused(nkp_hostd *h);
void hostd_guard_conn_closed(nkp_hostd *h);

#endif
