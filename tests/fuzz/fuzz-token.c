/* fuzz-token: an enrolment token as an operator pastes it into `nkpctl
 * host add --public-key`, through nkpi_token_parse() (nkp/private/token.c).
 * Input: the token's bytes (a NUL ends it early, as on a command line).
 * A token that parses must be the one spelling of what it holds:
 * formatting the parsed key and attestation key again gives the same
 * bytes. Seeds: a token without and one with the recorded quote's
 * attestation key (gen-corpus.c). */
#include "fuzz-util.h"

#include "token.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char in[NKPI_TOKEN_MAX + 64], again[NKPI_TOKEN_MAX];
	uint8_t pub[NKP_PUBKEY_BYTES], ak[NKPI_TOKEN_AK_MAX];
	size_t n = size < sizeof(in) - 1 ? size : sizeof(in) - 1, ak_len = 0;

	memcpy(in, data, n);
	in[n] = '\0';
	if (nkpi_token_parse(in, pub, ak, &ak_len) != NKP_OK) {
		return 0;
	}
	if (ak_len > NKPI_TOKEN_AK_MAX || nkpi_token_format(pub, ak, ak_len, again) != NKP_OK ||
	    strcmp(again, in) != 0) {
		abort(); /* two spellings of one token */
	}
	return 0;
}
