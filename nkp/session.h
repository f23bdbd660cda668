/* Channel sessions (docs/PROTOCOL.md, "Sessions"). Private to nkp's own
 * daemons: nkpd is the initiator towards each host, a host plugin the
 * responder to its pinned service.
 *
 * An exchange with no session is sealed with a fresh ephemeral key per
 * message (nkp_channel_seal). That exchange also makes a session: both
 * sides derive a root key from DH(e_request, E_reply) and both message
 * keys, and later exchanges are sealed with symmetric keys only:
 *
 *   root  = BLAKE2b-256("nkp-session-v1" || DH(e, E_h) || k_req || k_rep || E || E_h)
 *   id    = BLAKE2b-128("nkp-session-id" || E || E_h)
 *   ck_0  = root
 *   exchange i: k_req_i = KDF(ck_i, 1), k_rep_i = KDF(ck_i, 2),
 *               ck_i+1  = KDF(ck_i, 3)        (crypto_kdf, context "nkpsess1")
 *
 * Each ck_i and message key is wiped once used, so a party compromised
 * later cannot open what it sent or received before (forward secrecy
 * both ways; the ephemeral-ephemeral DH also keeps sessions secret from
 * someone who later steals both static keys). The initiator starts a new
 * session every NKPI_SESSION_MAX_AGE_S seconds and after any failed
 * exchange; the responder forgets a session older than
 * NKPI_SESSION_RESPONDER_AGE_S and answers NKP_ERR_SESSION to frames of
 * sessions it does not hold. */
#ifndef NKP_SESSION_H
#define NKP_SESSION_H

#include <nkp/channel.h>

#include "internal.h"
#include "wire.pb-c.h"

#define NKPI_SESSION_ID_BYTES 16u
#define NKPI_SESSION_MAX_AGE_S 120u
#define NKPI_SESSION_RESPONDER_AGE_S 150u

typedef struct nkpi_session nkpi_session;

/** A session over `ch` (borrowed; must outlive it), on the initiating
 * (service) or the responding (host) side. */
nkp_err nkpi_session_new(const nkp_channel *ch, bool responder, nkpi_session **out);
void nkpi_session_free(nkpi_session *s);
/** Forgets the session: the next request is sealed with the channel. */
void nkpi_session_reset(nkpi_session *s);
/** True once an exchange established a session (for tests and status). */
bool nkpi_session_established(nkpi_session *s);

/* --- initiator: one exchange at a time (not thread-safe) --------------- */

/** Seals a request: under the session if there is a live one, else with
 * the channel (which makes a new session when the reply is opened). The
 * frame is malloc'd (free()). */
nkp_err nkpi_session_seal_request(nkpi_session *s, const uint8_t *msg, size_t len,
				  uint8_t **frame, size_t *framelen);
/** Opens the reply to the last request into `buf` (cap bytes; see
 * nkpi_channel_open_into). Any failure resets the session. A PlainError
 * gives NKP_ERR_REFUSED with the peer's code: NKP_ERR_SESSION means the
 * host holds no such session and a new request will make one. */
nkp_err nkpi_session_open_reply(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				size_t cap, size_t *msglen, nkp_err *peer_code, char *peer_text,
				size_t peer_text_size);

/* --- responder: thread-safe ------------------------------------------- */

/** What a responder needs to seal the reply to one request. Lives on the
 * caller's stack; its key is a borrowed locked block. Pass it to
 * nkpi_session_seal_reply, or wipe it with nkpi_session_reply_wipe. */
typedef struct nkpi_session_reply {
	enum { NKPI_REPLY_NONE, NKPI_REPLY_FULL, NKPI_REPLY_SESSION } mode;
	uint8_t id[NKPI_SESSION_ID_BYTES];
	uint64_t counter;
	uint8_t eph[NKP_PUBKEY_BYTES]; /* FULL: the request's ephemeral key */
	nkp_key *k;                    /* FULL: k_req; SESSION: k_rep_i */
} nkpi_session_reply;

/** Opens a request into `buf`. Errors as nkpi_channel_open_into, plus
 * NKP_ERR_SESSION (a session frame of a session this responder does not
 * hold: unknown or expired) and NKP_ERR_REPLAY (of the current session,
 * but not its next exchange); nothing changes. A frame that fails to
 * authenticate changes nothing either. On success `rk` is set. */
nkp_err nkpi_session_open_request(nkpi_session *s, const uint8_t *frame, size_t len, uint8_t *buf,
				  size_t cap, size_t *msglen, nkpi_session_reply *rk);
/** Seals the reply to the request `rk` came from, and wipes `rk`. After a
 * channel-sealed request this makes the new session. */
nkp_err nkpi_session_seal_reply(nkpi_session *s, nkpi_session_reply *rk, const uint8_t *msg,
				size_t len, uint8_t **frame, size_t *framelen);
void nkpi_session_reply_wipe(nkpi_session_reply *rk);

/** Test hook: the clock sessions age by, in ms (0 restores the real one). */
void nkpi_session_set_clock_ms(uint64_t now_ms);

/* --- channel pieces sessions are built from (channel.c) ---------------- */

/** nkp_channel_seal that also hands out the ephemeral secret (e_out,
 * locked, may be NULL), the ephemeral public key and the message key
 * (k_out, locked, may be NULL). */
nkp_err nkpi_channel_seal_keyed(const nkp_channel *ch, const uint8_t *msg, size_t len,
				uint8_t **frame, size_t *framelen, uint8_t *e_out,
				uint8_t eph_out[static NKP_PUBKEY_BYTES], uint8_t *k_out);
/** Checks that `env` is from the pinned peer to us and decrypts it into
 * `pt` (ciphertext length - tag bytes); k_out (may be NULL) receives the
 * message key. */
nkp_err nkpi_envelope_open(const nkp_channel *ch, const Nkp__Wire__Envelope *env, uint8_t *pt,
			   uint8_t *k_out);
/** Unpacks and checks a frame. NKP_OK: *out holds a well-formed version 1
 * Envelope or SessionEnvelope. NKP_ERR_REFUSED: *out holds a PlainError.
 * The caller frees *out in both cases; on other errors nothing is set. */
nkp_err nkpi_frame_parse(const uint8_t *frame, size_t len, Nkp__Wire__Frame **out);
nkp_err nkpi_plain_error_report(const Nkp__Wire__PlainError *pe, nkp_err *peer_code,
				char *peer_text, size_t peer_text_size);
/** Packs `f` into one malloc'd block, encrypting `msg` straight into the
 * place of `ct_field` (a bytes field of a message inside f). */
nkp_err nkpi_frame_seal(Nkp__Wire__Frame *f, ProtobufCBinaryData *ct_field, const uint8_t *k,
			const uint8_t *nonce, const uint8_t *ad, size_t adlen, const uint8_t *msg,
			size_t len, uint8_t **frame, size_t *framelen);

#endif
