/* The canonical session shared by fuzz-session, fuzz-frame and the corpus
 * generator, and a service end for the targets that feed a real host.
 *
 * Session keys come from the ephemeral keys of the handshake, so a
 * Transport frame made in one process opens in another only if both used
 * the same ephemerals. fz_session_handshake() fixes them (and the indexes,
 * the clocks and the timestamp) with the session test hooks, so every run
 * of it, in any process, ends in the same session with the same frames:
 * seeds made by gen-corpus open in the targets. (fz_rng_reseed() remains
 * for targets that need a deterministic randombytes.)
 *
 * Nothing here is for use outside fuzzing. */
#ifndef NKP_FUZZ_SESSION_H
#define NKP_FUZZ_SESSION_H

#include "fuzz-util.h"

#include <nkp/hostd.h>

#include "session.h"

#define FZ_RNG_SEED_BYTE 0x52u
#define FZ_SESSION_CLOCK_MS 1000000u
#define FZ_SESSION_REQUEST "fuzz session request"
#define FZ_SESSION_REPLY "fuzz session reply"

/* fuzz-session's selector byte (the first of each input; see there). */
#define SEL_SESSION_REPLY 0x01u
#define SEL_HANDSHAKE_REPLY 0x02u
#define SEL_SMALL_BUFFER 0x04u
#define SEL_NO_PEER_TEXT 0x08u

/* A malloc'd frame (free()). */
typedef struct fz_frame {
	uint8_t *b;
	size_t len;
} fz_frame;

typedef struct fz_rng_state {
	uint8_t seed[crypto_stream_chacha20_KEYBYTES];
	uint64_t counter;
} fz_rng_state;

static inline fz_rng_state *fz_rng(void)
{
	static fz_rng_state st;

	return &st;
}

static inline const char *fz_rng_name(void)
{
	return "nkp-fuzz-deterministic";
}

/* Each call takes the next block of the stream: nonce = call number. */
static inline void fz_rng_buf(void *const buf, const size_t size)
{
	uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
	fz_rng_state *st = fz_rng();

	_Static_assert(sizeof(nonce) == sizeof(st->counter), "nonce size");
	memcpy(nonce, &st->counter, sizeof(nonce));
	st->counter++;
	crypto_stream_chacha20(buf, size, nonce, st->seed);
}

static inline uint32_t fz_rng_random(void)
{
	uint32_t r;

	fz_rng_buf(&r, sizeof(r));
	return r;
}

/* Installs the deterministic generator (once) and restarts its stream. */
static inline void fz_rng_reseed(void)
{
	static randombytes_implementation impl = {
		.implementation_name = fz_rng_name,
		.random = fz_rng_random,
		.buf = fz_rng_buf,
	};
	fz_rng_state *st = fz_rng();

	memset(st->seed, FZ_RNG_SEED_BYTE, sizeof(st->seed));
	st->counter = 0;
	randombytes_set_implementation(&impl);
}

/* The canonical session's fixed inputs: every run of fz_session_handshake,
 * in any process, makes the same frames and keys. */
#define FZ_WALL_NS UINT64_C(1800000000000000000)
#define FZ_INI_INDEX UINT32_C(0x11223344)
#define FZ_RSP_INDEX UINT32_C(0x55667788)

static inline void fz_fix_ephemerals(nkpi_session *ini, nkpi_session *resp)
{
	uint8_t e[32];

	memset(e, 0x5a, sizeof(e));
	nkpi_session_fix_next(ini, e, FZ_INI_INDEX);
	memset(e, 0xa5, sizeof(e));
	nkpi_session_fix_next(resp, e, FZ_RSP_INDEX);
	nkpi_session_set_clock_ms(FZ_SESSION_CLOCK_MS);
	nkpi_session_reset_timestamps();
	nkpi_session_set_wall_ns(FZ_WALL_NS);
}

/* A handshake from `ini` answered by `resp`; any failure aborts. `init`
 * and `rsp` (may be NULL) receive its two frames. */
static inline void fz_session_hs(nkpi_session *ini, nkpi_session *resp, fz_frame *init,
				 fz_frame *rsp)
{
	uint8_t buf[64];
	size_t msglen = 0;
	fz_frame i = {0}, r = {0};
	nkpi_session_reply rk;

	fz_check(nkpi_session_handshake_init(ini, &i.b, &i.len), "handshake init");
	fz_check(nkpi_session_open_request(resp, i.b, i.len, buf, sizeof(buf), &msglen, &rk, &r.b,
					   &r.len),
		 "open handshake init");
	fz_check(nkpi_session_handshake_finish(ini, r.b, r.len), "handshake response");
	if (init != NULL) {
		*init = i;
	} else {
		free(i.b);
	}
	if (rsp != NULL) {
		*rsp = r;
	} else {
		free(r.b);
	}
}

/* One exchange of FZ_SESSION_REQUEST from `ini` to `resp` and back under
 * their session; any failure aborts (a broken harness, or in the target a
 * finding). `req`/`rep` (may be NULL) receive the two frames. */
static inline void fz_session_exchange(nkpi_session *ini, nkpi_session *resp, fz_frame *req,
				       fz_frame *rep)
{
	uint8_t buf[256];
	size_t msglen = 0;
	fz_frame q = {0}, r = {0}, hs = {0};
	nkpi_session_reply rk;

	fz_check(nkpi_session_seal_request(ini, (const uint8_t *)FZ_SESSION_REQUEST,
					   sizeof(FZ_SESSION_REQUEST) - 1, &q.b, &q.len),
		 "session request");
	fz_check(nkpi_session_open_request(resp, q.b, q.len, buf, sizeof(buf), &msglen, &rk, &hs.b,
					   &hs.len),
		 "open session request");
	fz_check(nkpi_session_seal_reply(resp, &rk, (const uint8_t *)FZ_SESSION_REPLY,
					 sizeof(FZ_SESSION_REPLY) - 1, &r.b, &r.len),
		 "session reply");
	fz_check(nkpi_session_open_reply(ini, r.b, r.len, buf, sizeof(buf), &msglen),
		 "open session reply");
	if (msglen != sizeof(FZ_SESSION_REPLY) - 1 || memcmp(buf, FZ_SESSION_REPLY, msglen) != 0 ||
	    !nkpi_session_established(resp)) {
		fprintf(stderr, "fuzz harness: the session exchange went wrong\n");
		abort();
	}
	if (req != NULL) {
		*req = q;
	} else {
		free(q.b);
	}
	if (rep != NULL) {
		*rep = r;
	} else {
		free(r.b);
	}
}

/* Fresh sessions on both sides (`*resp` is remade: a responder keeps the
 * last timestamp it accepted), then the canonical handshake and its first
 * exchange (which confirms it). Any of the four frames may be NULL. */
static inline void fz_session_handshake(const nkp_identity *service, const nkp_identity *host,
					nkpi_session **ini, nkpi_session **resp, fz_frame *init,
					fz_frame *rsp, fz_frame *req, fz_frame *rep)
{
	nkpi_session_free(*ini);
	nkpi_session_free(*resp);
	*ini = NULL;
	*resp = NULL;
	fz_check(nkpi_session_new(service, nkp_identity_public(host), false, ini), "initiator");
	fz_check(nkpi_session_new(host, nkp_identity_public(service), true, resp), "responder");
	fz_fix_ephemerals(*ini, *resp);
	fz_session_hs(*ini, *resp, init, rsp);
	fz_session_exchange(*ini, *resp, req, rep);
}

/* A Transport frame of `msg` to a real host plugin under `*ini` (made on
 * first use), after a handshake the host answers when one is due. */
static inline nkp_err fz_host_seal(nkp_hostd *host, const nkp_identity *service, nkpi_session **ini,
				   const uint8_t *msg, size_t len, uint8_t **frame,
				   size_t *framelen)
{
	if (*ini == NULL) {
		fz_check(nkpi_session_new(service, nkp_hostd_public_key(host), false, ini),
			 "initiator");
	}
	if (nkpi_session_needs_handshake(*ini)) {
		uint8_t *init = NULL, *resp = NULL;
		size_t ilen = 0, rlen = 0;

		fz_check(nkpi_session_handshake_init(*ini, &init, &ilen), "handshake init");
		fz_check(nkp_hostd_handle_frame(host, init, ilen, &resp, &rlen), "handshake");
		fz_check(nkpi_session_handshake_finish(*ini, resp, rlen), "handshake response");
		free(init);
		nkp_hostd_buf_free(resp, rlen);
	}
	return nkpi_session_seal_request(*ini, msg, len, frame, framelen);
}

#endif
