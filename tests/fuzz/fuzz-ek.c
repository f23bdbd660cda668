/* fuzz-ek: what a host sends nkpd to prove its attestation key (its EK's
 * public area and certificate, outside bytes) through
 * nkpi_quote_ek_cert_check() (nkp/private/quote.c: the TPM2B_PUBLIC
 * parser, mbedTLS's X.509 parser and chain check) and, for an EK that
 * parses, nkpi_quote_make_credential(). Input: u16le length of the EK,
 * the EK, the rest the certificate (DER). The CA is the recorded one
 * (tests/vectors/ek-ca-v1.pem), so a genuine seed gets through every
 * check. Seeds: the recorded EK and certificate (gen-corpus.c). */
#include "fuzz-util.h"

#include "quote.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *ca;
static size_t ca_len;

/* nkp's AK template: quote-v1.txt's recorded AK. */
static uint8_t ak[256];
static size_t ak_len;

static void load_ak(void)
{
	uint8_t *txt = NULL;
	size_t len = 0;
	const char *at;

	fz_check(nkp_file_read(NKP_VECTORS_DIR "/quote-v1.txt", 1u << 16, &txt, &len),
		 "quote-v1.txt");
	txt = realloc(txt, len + 1);
	if (txt == NULL) {
		abort();
	}
	txt[len] = 0;
	at = strstr((char *)txt, "\nak_public: ");
	if (at == NULL) {
		abort();
	}
	at += strlen("\nak_public: ");
	if (sodium_hex2bin(ak, sizeof(ak), at, strcspn(at, "\n"), NULL, &ak_len, NULL) != 0) {
		abort();
	}
	free(txt);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	fz_check(nkp_file_read(NKP_VECTORS_DIR "/ek-ca-v1.pem", 1u << 16, &ca, &ca_len),
		 "ek-ca-v1.pem");
	load_ak();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t cred[32] = {0}, blob[NKPI_QUOTE_BLOB_MAX], secret[NKPI_QUOTE_SECRET_MAX];
	size_t n, blob_len = 0, secret_len = 0;

	if (size < 2) {
		return 0;
	}
	n = (size_t)data[0] | ((size_t)data[1] << 8);
	if (n > size - 2) {
		return 0;
	}
	(void)nkpi_quote_ek_cert_check(data + 2, n, data + 2 + n, size - 2 - n, ca, ca_len);
	(void)nkpi_quote_make_credential(data + 2, n, ak, ak_len, cred, sizeof(cred), blob,
					 &blob_len, secret, &secret_len);
	return 0;
}
