/* The fixed Noise_KK handshake shared by fuzz-noise and the corpus
 * generator: fixed static and ephemeral keys (test values, never used
 * outside fuzzing) and a prologue, so that the genuine first and second
 * messages come out the same in every process and the seeds of them are
 * accepted by the target. */
#ifndef NKP_FUZZ_NOISE_H
#define NKP_FUZZ_NOISE_H

#include "fuzz-util.h"

#include "noise.h"

#define FZN_INI_STATIC 0x49u
#define FZN_RSP_STATIC 0x52u
#define FZN_INI_EPHEMERAL 0x65u
#define FZN_RSP_EPHEMERAL 0x45u
#define FZN_PROLOGUE "nkp fuzz-noise prologue"
#define FZN_PAYLOAD1 "first handshake payload"
#define FZN_PAYLOAD2 "second handshake payload, a little longer"
#define FZN_MSG_CAP (NKPI_NOISE_MAX_MSG + 64u)

/* fuzz-noise's selector byte (the first of each input; see there). */
#define FZN_SEL_INITIATOR 0x01u /* the initiator reads message 2 (else the responder message 1) */
#define FZN_SEL_TRANSPORT 0x02u /* a transport message instead (nonce: the next 8 bytes) */
#define FZN_SEL_SMALL_BUFFER 0x04u /* a payload buffer of a quarter of the length */

/* A handshake with the fixed keys; its ephemeral is set too. */
static inline nkpi_noise_hs *fzn_hs(bool initiator)
{
	uint8_t s[NKPI_NOISE_DHLEN], peer[NKPI_NOISE_DHLEN], rs[NKPI_NOISE_DHLEN],
		e[NKPI_NOISE_DHLEN];
	nkpi_noise_hs *hs = NULL;

	memset(s, initiator ? FZN_INI_STATIC : FZN_RSP_STATIC, sizeof(s));
	memset(peer, initiator ? FZN_RSP_STATIC : FZN_INI_STATIC, sizeof(peer));
	memset(e, initiator ? FZN_INI_EPHEMERAL : FZN_RSP_EPHEMERAL, sizeof(e));
	if (crypto_scalarmult_base(rs, peer) != 0) {
		abort();
	}
	fz_check(nkpi_noise_hs_new(initiator, s, rs, (const uint8_t *)FZN_PROLOGUE,
				   sizeof(FZN_PROLOGUE) - 1, &hs),
		 "noise handshake");
	fz_check(nkpi_noise_hs_set_ephemeral(hs, e), "noise ephemeral");
	sodium_memzero(s, sizeof(s));
	sodium_memzero(peer, sizeof(peer));
	sodium_memzero(e, sizeof(e));
	return hs;
}

/* The genuine messages: m1 (initiator) and m2 (responder), each of
 * FZN_MSG_CAP bytes; and, when `send`/`recv` are not NULL, the
 * initiator's transport cipher states. */
static inline void fzn_messages(uint8_t *m1, size_t *m1len, uint8_t *m2, size_t *m2len,
				nkpi_noise_cipher *send, nkpi_noise_cipher *recv)
{
	nkpi_noise_hs *ini = fzn_hs(true), *rsp = fzn_hs(false);
	uint8_t buf[128];
	size_t n;
	nkpi_noise_cipher a, b;

	fz_check(nkpi_noise_hs_write(ini, (const uint8_t *)FZN_PAYLOAD1, sizeof(FZN_PAYLOAD1) - 1,
				     m1, FZN_MSG_CAP, m1len),
		 "noise message 1");
	fz_check(nkpi_noise_hs_read(rsp, m1, *m1len, buf, sizeof(buf), &n), "noise read 1");
	fz_check(nkpi_noise_hs_write(rsp, (const uint8_t *)FZN_PAYLOAD2, sizeof(FZN_PAYLOAD2) - 1,
				     m2, FZN_MSG_CAP, m2len),
		 "noise message 2");
	fz_check(nkpi_noise_hs_read(ini, m2, *m2len, buf, sizeof(buf), &n), "noise read 2");
	fz_check(nkpi_noise_hs_split(ini, send ? send : &a, recv ? recv : &b, NULL), "noise split");
	nkpi_noise_cipher_wipe(&a);
	nkpi_noise_cipher_wipe(&b);
	nkpi_noise_hs_free(ini);
	nkpi_noise_hs_free(rsp);
}

#endif
