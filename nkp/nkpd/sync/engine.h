/* The sync engine's own parts, shared by the files of nkp/nkpd/sync only:
 * the live link of a host, the reconciler's state, and what each part
 * offers the others. Everything here is called with nkpd_svc.lock held
 * unless its comment says otherwise (the link's callbacks run on nng
 * threads and take the lock themselves). */
#ifndef NKPD_SYNC_ENGINE_H
#define NKPD_SYNC_ENGINE_H

#include <nng/nng.h>

#include "core/core.h"

#define TICK_MS 50
#define SEND_TIMEOUT_MS 2000
#define RECV_TIMEOUT_MS 3000
#define BACKOFF_MIN_MS 500u
#define BACKOFF_MAX_MS 30000u
#define MAX_CHAINED 3u
#define MAX_USAGE 4096u
#define DEFAULT_INFLIGHT 1024u

typedef enum host_io {
	IO_IDLE = 0,
	IO_PREPARING, /* picked; its wake aio fires on an nng thread to seal and send */
	IO_SENDING,
	IO_RECEIVING,
} host_io;

typedef enum host_req {
	REQ_HELLO = 0,
	REQ_PUSH,
} host_req;

/* The live side of a host: its socket, its exchange in flight, its Noise
 * session. Made when the host is first set up here and freed at stop
 * (a removed host's at stop too: a callback may still hold it). */
struct nkpd_link {
	nkpd_svc *svc;
	struct nkpi_session *sess; /* Noise session (initiator): one exchange at a time */
	bool handshaking;	   /* the frame in flight is a HandshakeInit */
	bool rekey_failed;	   /* this request goes under the current session */
	bool pipe_new;		   /* a reconnected pipe: handshake before the next request */
	bool had_pipe;		   /* a pipe was up before */
	bool repipe;		   /* the request in flight was cancelled for a new pipe */
	nng_socket sock;
	bool sock_open;
	nng_aio *aio;
	nng_aio *wake; /* dispatched at once: seals and sends on an nng thread */
	host_io io;
	host_req req;	      /* the request in flight: set before io leaves IDLE */
	uint64_t deadline_ms; /* the request in flight fails after this */
	bool timed_out;	      /* its aio was cancelled for the deadline */
	uint8_t challenge[16];
	bool attest_asked; /* the Hello in flight asks for a quote over attest_nonce */
	bool ek_asked;	   /* ... for the EK and its certificate */
	bool activating;   /* ... carries the credential made to the EK */
	/* ... carries the seal policy, or an unbind (core/sealpol.c) */
	struct nkpd_sealpol *hello_pol;
	bool hello_unbind;
	uint8_t attest_nonce[32];
	uint32_t attest_pcrs;
	uint8_t push_nonce[16];
	uint64_t push_generation;
	struct nkpd_desired *push_snap;
	/* The last desired state sent to (or found held by) this host: its
	 * usage reports count only for the versions in it. */
	struct nkpd_desired *pushed_snap;
	unsigned chained; /* immediate re-pushes in a row (restart races) */
	bool removed;
	bool push_resync; /* the push in flight carries resync */
	uint64_t next_due_ms;
};

struct reconciler {
	nng_aio *timer;
	nng_aio *kick; /* picks due hosts at once after a change */
	bool kick_pending;
	bool stopping;
	unsigned inflight;
	unsigned max_inflight;
	size_t cursor;
	bool starved;		  /* due hosts may be waiting for a free slot */
	uint64_t next_wake_ms;	  /* no idle host is due before this */
	size_t behind;		  /* hosts below the current generation (a hint) */
	uint64_t min_deadline_ms; /* no request in flight is overdue before this */
	nkpd_host **list;	  /* max_inflight entries, for the tick */
	nkpd_host **overdue;	  /* max_inflight entries, for the tick */
	size_t n_dead;
	nkpd_host **dead; /* removed hosts, freed at stop */
	nkpd_sync sync;	  /* what the core calls, as nkpd_svc.sync */
};

/* desired.c: snapshots */
/* The desired state of untrusted hosts, or with `trusted` of trusted ones. */
nkp_err nkpd_sync_desired_build(const nkpd_svc *s, bool trusted, nkpd_desired **out);
nkp_err nkpd_sync_desired_pack(nkpd_desired *d);

/* link.c: sockets, requests, failures */
uint64_t nkpd_sync_backoff_ms(unsigned failures);
nkp_err nkpd_sync_host_open(nkpd_svc *s, nkpd_host *h);
void nkpd_sync_link_attach(nkpd_svc *s, nkpd_host *h);
void nkpd_sync_link_free(nkpd_host *h);
void nkpd_sync_host_shutdown(nkpd_host *h);
void nkpd_sync_start_request(nkpd_host *h);
void nkpd_sync_fail_locked(nkpd_svc *s, nkpd_host *h, nkp_err err, nkpd_host_health health,
			   const char *what);
void nkpd_sync_finish_failure(nkpd_host *h, nkp_err err, nkpd_host_health health, const char *what);

/* usage.c: usage rounds */
bool nkpd_sync_round_pending(const nkpd_svc *s, const nkpd_host *h);
size_t nkpd_sync_usage_round(void *ctx, uint64_t timeout_ms);

/* reply.c: replies */
void nkpd_sync_handle_reply(nkpd_host *h, const uint8_t *frame, size_t len);

/* reconcile.c: scheduling */
void nkpd_sync_set_due(nkpd_svc *s, nkpd_host *h, uint64_t due_ms);
void nkpd_sync_set_pushed(nkpd_host *h, nkpd_desired *d);
bool nkpd_sync_wants_resync(const nkpd_host *h);
void nkpd_sync_refill(nkpd_svc *s);
void nkpd_sync_kick(nkpd_svc *s);
void nkpd_sync_set_deadline(nkpd_svc *s, nkpd_host *h, uint64_t ms);
bool nkpd_sync_next_step(nkpd_svc *s, nkpd_host *h);

#endif
