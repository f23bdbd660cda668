/* fuzz-noise: nkp's Noise_KK handshake (nkp/private/noise.c) reading outside
 * bytes, with the fixed keys of fuzz-noise.h. The first input byte selects
 * (FZN_SEL_*), the rest is the message:
 *
 *   - the responder reads it as the first handshake message (default);
 *   - the initiator, having written the genuine first message, reads it
 *     as the second (FZN_SEL_INITIATOR);
 *   - the initiator's receiving cipher state decrypts it as a transport
 *     message, its first 8 bytes a little-endian nonce (FZN_SEL_TRANSPORT).
 *
 * Checks beyond crashes, leaks and hangs (a failed one aborts with
 * "fuzz-noise: ..."): a refused message leaves the payload buffer as it
 * was; an accepted handshake message is byte for byte the genuine one (no
 * other can be made without the peer's static secret) with the genuine
 * payload, and the handshake then completes; an accepted transport message
 * is what encrypting its plaintext again under the same nonce gives. */
#include "fuzz-noise.h"

static uint8_t m1[FZN_MSG_CAP], m2[FZN_MSG_CAP];
static size_t m1len, m2len;
static nkpi_noise_cipher *ciphers; /* [0] send, [1] recv: locked memory */
static uint8_t *payload, *again;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-noise: %s\n", what);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	ciphers = sodium_malloc(2 * sizeof(*ciphers));
	payload = malloc(FZN_MSG_CAP);
	again = malloc(FZN_MSG_CAP);
	if (ciphers == NULL || payload == NULL || again == NULL) {
		fail("out of memory");
	}
	fzn_messages(m1, &m1len, m2, &m2len, &ciphers[0], &ciphers[1]);
	return 0;
}

static void untouched(size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (payload[i] != 0xa5u) {
			fail("a refused message wrote to the payload buffer");
		}
	}
}

static void genuine(const uint8_t *msg, size_t len, const uint8_t *want, size_t wantlen,
		    const char *pay, size_t paylen)
{
	if (len != wantlen || memcmp(msg, want, len) != 0) {
		fail("accepted a handshake message that is not the genuine one");
	}
	if (paylen != strlen(pay) || memcmp(payload, pay, paylen) != 0) {
		fail("the genuine message gave another payload");
	}
}

static void responder(const uint8_t *msg, size_t len, size_t cap)
{
	nkpi_noise_hs *hs = fzn_hs(false);
	nkpi_noise_cipher send, recv;
	uint8_t out[128];
	size_t n = 0;

	if (nkpi_noise_hs_read(hs, msg, len, payload, cap, &n) == NKP_OK) {
		genuine(msg, len, m1, m1len, FZN_PAYLOAD1, n);
		fz_check(nkpi_noise_hs_write(hs, NULL, 0, out, sizeof(out), &n), "noise reply");
		fz_check(nkpi_noise_hs_split(hs, &send, &recv, NULL), "noise split");
		nkpi_noise_cipher_wipe(&send);
		nkpi_noise_cipher_wipe(&recv);
	} else {
		untouched(len < cap ? len : cap);
	}
	nkpi_noise_hs_free(hs);
}

static void initiator(const uint8_t *msg, size_t len, size_t cap)
{
	nkpi_noise_hs *hs = fzn_hs(true);
	nkpi_noise_cipher send, recv;
	uint8_t out[128];
	size_t n = 0;

	fz_check(nkpi_noise_hs_write(hs, (const uint8_t *)FZN_PAYLOAD1, sizeof(FZN_PAYLOAD1) - 1,
				     out, sizeof(out), &n),
		 "noise message 1");
	if (n != m1len || memcmp(out, m1, n) != 0) {
		fail("the first message is not deterministic");
	}
	if (nkpi_noise_hs_read(hs, msg, len, payload, cap, &n) == NKP_OK) {
		genuine(msg, len, m2, m2len, FZN_PAYLOAD2, n);
		fz_check(nkpi_noise_hs_split(hs, &send, &recv, NULL), "noise split");
		if (sodium_memcmp(send.k, ciphers[0].k, NKPI_NOISE_KEYLEN) != 0 ||
		    sodium_memcmp(recv.k, ciphers[1].k, NKPI_NOISE_KEYLEN) != 0) {
			fail("the genuine handshake gave other keys");
		}
		nkpi_noise_cipher_wipe(&send);
		nkpi_noise_cipher_wipe(&recv);
	} else {
		untouched(len < cap ? len : cap);
	}
	nkpi_noise_hs_free(hs);
}

static void transport(const uint8_t *data, size_t size)
{
	uint64_t n = 0;
	const uint8_t *ct;
	size_t len;

	if (size < 8) {
		return;
	}
	for (unsigned i = 0; i < 8; i++) {
		n |= (uint64_t)data[i] << (8 * i);
	}
	ct = data + 8;
	len = size - 8;
	/* The output needs len - 16 bytes: the transport path always has
	 * room (a short buffer would be the caller's bug, not the input's). */
	if (nkpi_noise_decrypt(&ciphers[1], n, NULL, 0, ct, len, payload) == NKP_OK) {
		if (nkpi_noise_encrypt(&ciphers[1], n, NULL, 0, payload, len - NKPI_NOISE_TAGLEN,
				       again) != NKP_OK ||
		    memcmp(again, ct, len) != 0) {
			fail("an accepted transport message does not encrypt back to itself");
		}
	} else {
		untouched(len < FZN_MSG_CAP ? len : FZN_MSG_CAP);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sel;
	size_t len, cap;

	if (size == 0) {
		return 0;
	}
	sel = data[0];
	data++;
	len = size - 1;
	cap = (sel & FZN_SEL_SMALL_BUFFER) ? len / 4 : FZN_MSG_CAP;
	memset(payload, 0xa5, len < FZN_MSG_CAP ? len : FZN_MSG_CAP);
	if (sel & FZN_SEL_TRANSPORT) {
		transport(data, len);
	} else if (sel & FZN_SEL_INITIATOR) {
		initiator(data, len, cap);
	} else {
		responder(data, len, cap);
	}
	return 0;
}
