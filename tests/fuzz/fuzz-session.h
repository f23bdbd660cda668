/* The canonical session shared by fuzz-session and the corpus generator.
 *
 * Session keys come from the ephemeral keys of the handshake, so a session
 * frame made in one process opens in another only if both drew the same
 * "random" bytes. fz_rng_reseed() installs a deterministic randombytes
 * implementation (ChaCha20 under a fixed test seed, test values only) and
 * restarts its stream; fz_session_handshake() reseeds and runs the
 * handshake, so every run of it, in any process, ends in the same
 * session: same id, same chain key, exchange 0 next. Seeds of session
 * frames made by gen-corpus therefore open in the target.
 *
 * Nothing here is for use outside fuzzing. */
#ifndef NKP_FUZZ_SESSION_H
#define NKP_FUZZ_SESSION_H

#include "fuzz-util.h"

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

/* One exchange of `msg` from `ini` to `resp` and back; any failure aborts
 * (a broken harness, or in the target a finding). `req`/`rep` (may be
 * NULL) receive the two frames. */
static inline void fz_session_exchange(nkpi_session *ini, nkpi_session *resp, fz_frame *req,
				       fz_frame *rep)
{
	uint8_t buf[256];
	size_t msglen = 0;
	fz_frame q = {0}, r = {0};
	nkpi_session_reply rk;

	fz_check(nkpi_session_seal_request(ini, (const uint8_t *)FZ_SESSION_REQUEST,
					   sizeof(FZ_SESSION_REQUEST) - 1, &q.b, &q.len),
		 "session request");
	fz_check(nkpi_session_open_request(resp, q.b, q.len, buf, sizeof(buf), &msglen, &rk),
		 "open session request");
	fz_check(nkpi_session_seal_reply(resp, &rk, (const uint8_t *)FZ_SESSION_REPLY,
					 sizeof(FZ_SESSION_REPLY) - 1, &r.b, &r.len),
		 "session reply");
	fz_check(nkpi_session_open_reply(ini, r.b, r.len, buf, sizeof(buf), &msglen, NULL, NULL, 0),
		 "open session reply");
	if (msglen != sizeof(FZ_SESSION_REPLY) - 1 ||
	    memcmp(buf, FZ_SESSION_REPLY, msglen) != 0 || !nkpi_session_established(ini)) {
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

/* Forgets both sides' sessions, reseeds and runs the channel-sealed
 * handshake: both end in the canonical session. */
static inline void fz_session_handshake(nkpi_session *ini, nkpi_session *resp, fz_frame *req,
					fz_frame *rep)
{
	nkpi_session_set_clock_ms(FZ_SESSION_CLOCK_MS);
	nkpi_session_reset(ini);
	nkpi_session_reset(resp);
	fz_rng_reseed();
	fz_session_exchange(ini, resp, req, rep);
	if (!nkpi_session_established(resp)) {
		fprintf(stderr, "fuzz harness: the handshake made no session\n");
		abort();
	}
}

#endif
