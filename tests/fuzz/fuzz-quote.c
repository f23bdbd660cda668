/* fuzz-quote: a TPM 2.0 quote as nkpd receives it from a host, through
 * nkpi_quote_verify() (nkp/private/quote.c): the pinned attestation key,
 * the TPM2B_ATTEST and the TPMT_SIGNATURE, each as outside bytes. Input:
 * u16le length of the key, the key, u16le length of the attestation, the
 * attestation, the rest the signature; the nonce and PCRs are the
 * recorded vector's (tests/vectors/quote-v1.txt), so a genuine seed gets
 * through every check. Seeds: that quote (gen-corpus.c). */
#include "fuzz-util.h"

#include "quote.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

static bool take(const uint8_t **p, size_t *left, const uint8_t **out, size_t *out_len)
{
	size_t n;

	if (*left < 2) {
		return false;
	}
	n = (size_t)(*p)[0] | ((size_t)(*p)[1] << 8);
	if (n > *left - 2) {
		return false;
	}
	*out = *p + 2;
	*out_len = n;
	*p += 2 + n;
	*left -= 2 + n;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t nonce[32] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
					  0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
					  0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
					  0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf};
	nkpi_quote_expect e = {.nonce = nonce, .nonce_len = sizeof(nonce), .pcr_mask = 1u << 16};
	nkpi_quote_result r;
	const uint8_t *attest = NULL;
	size_t attest_len = 0;

	if (!take(&data, &size, &e.ak_public, &e.ak_public_len) ||
	    !take(&data, &size, &attest, &attest_len)) {
		return 0;
	}
	(void)nkpi_quote_verify(&e, attest, attest_len, data, size, &r);
	return 0;
}
