/* Sessions between nkpd and a host (docs/PROTOCOL.md, "Transport").
 * Private to nkp's own daemons: nkpd is the initiator towards each host
 * (nng REQ), a host plugin the responder to its pinned service (nng REP).
 *
 * A session is made by a Noise_KK_25519_ChaChaPoly_BLAKE2b handshake
 * (nkp/private/noise.h) in two frames, as WireGuard does:
 *
 *   HandshakeInit {sender_index, noise = e ‖ ENC(timestamp), mac1}
 *   HandshakeResp {sender_index, receiver_index, noise = e ‖ ENC("")}
 *
 * and every request and reply travels afterwards in Transport frames
 * {receiver_index, counter, ciphertext}, never in a handshake payload.
 * The initiator's payload is a 12-byte TAI64N timestamp, strictly
 * increasing in this process; the responder refuses one not newer than
 * the last it accepted. mac1 = BLAKE2b-128 keyed with BLAKE2b-256("nkp-mac1"
 * ‖ responder's static public key) over u32le(sender_index) ‖ noise: the
 * responder checks it, then drops an init whose ephemeral it saw, then
 * applies its handshake rate limit (per peer address and host-wide),
 * all before any X25519.
 *
 * The responder keeps the current session and at most one pending one;
 * a pending session becomes current (and the old one is wiped) only when
 * the first Transport under it authenticates. Counters are explicit (the
 * Noise nonce) with a 64-entry replay window on both sides. The initiator
 * makes a new session after NKPI_SESSION_REKEY_AFTER_MS or
 * NKPI_SESSION_REKEY_AFTER_MSGS; the responder refuses a session past
 * NKPI_SESSION_REJECT_AFTER_MS or NKPI_SESSION_REJECT_AFTER_MSGS.
 *
 * Session keys live in a locked slab slot (nkp/private/slab.c) and are wiped on
 * reset, replacement and free. */
#ifndef NKP_SESSION_H
#define NKP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nkp/channel.h>

#define NKPI_SESSION_REKEY_AFTER_MS 120000u
#define NKPI_SESSION_REJECT_AFTER_MS 180000u
#define NKPI_SESSION_REKEY_AFTER_MSGS (UINT64_C(1) << 20)
#define NKPI_SESSION_REJECT_AFTER_MSGS (UINT64_C(1) << 21)
#define NKPI_SESSION_WINDOW 64u
#define NKPI_SESSION_TIMESTAMP_BYTES 12u
#define NKPI_SESSION_MAC_BYTES 16u
/* The responder's handshake budget, spent by a HandshakeInit that passes
 * mac1 and whose ephemeral is not among the last NKPI_SESSION_SEEN_E
 * seen: one token of its peer address's bucket (NKPI_SESSION_HS_PEERS
 * addresses kept, least recently used replaced) and one of the host-wide
 * backstop. */
#define NKPI_SESSION_HS_PEER_PER_S 5u
#define NKPI_SESSION_HS_PEER_BURST 10u
#define NKPI_SESSION_HS_PEERS 64u
#define NKPI_SESSION_HS_PER_S 100u
#define NKPI_SESSION_HS_BURST 200u
#define NKPI_SESSION_SEEN_E 64u
/* Transport plaintext is cut into Noise messages of at most this much. */
#define NKPI_SESSION_CHUNK (65535u - 16u)

typedef struct nkpi_session nkpi_session;

/** A session with the peer whose static public key is `peer`, as the
 * initiator (nkpd) or the responder (a host). `self` is borrowed and must
 * outlive the session. Errors: NKP_ERR_NOMEM, NKP_ERR_INVALID (a
 * low-order peer key). Thread-safe. */
NKP_NODISCARD nkp_err nkpi_session_new(const nkp_identity *self,
				       const uint8_t peer[static NKP_PUBKEY_BYTES], bool responder,
				       nkpi_session **out);
/** Wipes every key and frees. Accepts NULL. */
void nkpi_session_free(nkpi_session *s);
/** Wipes the current and pending sessions and any handshake in progress
 * (the replay timestamp and rate limit stay). Accepts NULL. */
void nkpi_session_reset(nkpi_session *s);
/** True while a current session exists (for tests and status). */
bool nkpi_session_established(nkpi_session *s);

/* --- initiator ---------------------------------------------------------- */

/** True when the next request must be preceded by a handshake: no current
 * session, or it is past its time or message budget. */
bool nkpi_session_needs_handshake(nkpi_session *s);
/** True while the current session may still carry a request (under the
 * responder's REJECT limits): what a failed rekey falls back to. */
bool nkpi_session_usable(nkpi_session *s);
/** A new HandshakeInit frame (malloc'd; free()). Replaces any handshake in
 * progress; the current session stays until the response is read. */
NKP_NODISCARD nkp_err nkpi_session_handshake_init(nkpi_session *s, uint8_t **frame,
						  size_t *framelen);
/** Reads the HandshakeResp to the handshake in progress: on success the
 * new session replaces the current one. On failure the handshake is
 * dropped and the current session stays as it was. Errors: NKP_ERR_PARSE,
 * NKP_ERR_STATE (no handshake in progress, or another index),
 * NKP_ERR_AUTH. */
NKP_NODISCARD nkp_err nkpi_session_handshake_finish(nkpi_session *s, const uint8_t *frame,
						    size_t len);
/** A Transport frame carrying `msg` under the current session (malloc'd).
 * NKP_ERR_SESSION if none is usable. */
NKP_NODISCARD nkp_err nkpi_session_seal_request(nkpi_session *s, const uint8_t *msg, size_t len,
						uint8_t **frame, size_t *framelen);
/** Opens a Transport reply under the current session into `buf` (cap
 * bytes). Errors: NKP_ERR_PARSE, NKP_ERR_TOO_LARGE, NKP_ERR_SESSION
 * (another index), NKP_ERR_REPLAY (a counter seen before or too old),
 * NKP_ERR_AUTH. Nothing changes on failure; the caller decides to reset. */
NKP_NODISCARD nkp_err nkpi_session_open_reply(nkpi_session *s, const uint8_t *frame, size_t len,
					      uint8_t *buf, size_t cap, size_t *msglen);

/* --- responder ---------------------------------------------------------- */

/** What a responder needs to seal the reply to one Transport request:
 * the session's index and a copy of its sending key (a borrowed locked
 * block). Lives on the caller's stack; pass it to nkpi_session_seal_reply
 * or wipe it with nkpi_session_reply_wipe. */
typedef struct nkpi_session_reply {
	uint32_t local;	 /* our index of the session the request came under */
	uint32_t remote; /* the initiator's index of it */
	nkp_key *k;	 /* its sending key; NULL: nothing to seal */
} nkpi_session_reply;

/** Handles one frame from the initiator. A HandshakeInit that passes
 * mac1, the rate limit, Noise and the timestamp makes the pending session
 * and returns NKP_OK with the HandshakeResp in *hs_reply (malloc'd) and
 * *msglen = 0. A Transport that authenticates is opened into `buf` (cap
 * bytes), *hs_reply = NULL, and `rk` is set to seal the reply. Anything
 * else returns an error and changes nothing: NKP_ERR_PARSE (not a frame,
 * a reply, wrong sizes), NKP_ERR_TOO_LARGE, NKP_ERR_AUTH (mac1 or Noise
 * or AEAD fails), NKP_ERR_REFUSED (handshake rate limit), NKP_ERR_REPLAY
 * (old timestamp, counter seen or too old), NKP_ERR_SESSION (unknown or
 * expired index). The caller answers none of those. Thread-safe. */
NKP_NODISCARD nkp_err nkpi_session_open_request(nkpi_session *s, const uint8_t *frame, size_t len,
						uint8_t *buf, size_t cap, size_t *msglen,
						nkpi_session_reply *rk, uint8_t **hs_reply,
						size_t *hs_replylen);
/** nkpi_session_open_request for a frame from the peer address `peer`
 * (an opaque key; 0: unknown): each address has its own HandshakeInit
 * budget, under the host-wide one. */
NKP_NODISCARD nkp_err nkpi_session_open_request_from(nkpi_session *s, uint64_t peer,
						     const uint8_t *frame, size_t len, uint8_t *buf,
						     size_t cap, size_t *msglen,
						     nkpi_session_reply *rk, uint8_t **hs_reply,
						     size_t *hs_replylen);
/** Seals the reply to the request `rk` came from, and wipes `rk`.
 * NKP_ERR_SESSION if that session was wiped since. */
NKP_NODISCARD nkp_err nkpi_session_seal_reply(nkpi_session *s, nkpi_session_reply *rk,
					      const uint8_t *msg, size_t len, uint8_t **frame,
					      size_t *framelen);
void nkpi_session_reply_wipe(nkpi_session_reply *rk);

/* --- test hooks ----------------------------------------------------------- */

/** The monotonic clock sessions age by, in ms (0 restores the real one). */
void nkpi_session_set_clock_ms(uint64_t now_ms);
/** The wall clock timestamps are made from, in ns since the epoch (0
 * restores the real one). The last timestamp made still bounds the next. */
void nkpi_session_set_wall_ns(uint64_t now_ns);
/** Known-answer tests: the next handshake uses this ephemeral secret and
 * this local index instead of random ones. */
void nkpi_session_fix_next(nkpi_session *s, const uint8_t e_secret[static 32], uint32_t index);
/** Moves the current session's sending counter to `n` (message budget
 * tests). */
void nkpi_session_skip_to(nkpi_session *s, uint64_t n);
/** Forgets the last timestamp this process made (known-answer tests). */
void nkpi_session_reset_timestamps(void);
/** Makes every later timestamp of this process newer than `floor_ns`
 * (a bound persisted by an earlier run: see svc_stamp_reserve). */
void nkpi_session_raise_timestamps(uint64_t floor_ns);
/** The last timestamp this process made, in ns since the epoch, or the
 * floor it was raised to; 0 if neither. */
uint64_t nkpi_session_last_timestamp(void);

#endif
