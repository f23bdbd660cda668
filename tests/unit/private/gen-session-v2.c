/* Writes tests/vectors/session-v2.bin (see session-v2.txt): run by hand
 * when the framing changes on purpose, then commit the file:
 *   build/tests/unit/private/gen-session-v2 tests/vectors/session-v2.bin */
#include <stdio.h>
#include <stdlib.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "session-kat.h"

static nkp_identity *identity(uint8_t first)
{
	uint8_t b[32];
	nkp_key *k = NULL;
	nkp_identity *id = NULL;

	for (int i = 0; i < 32; i++) {
		b[i] = (uint8_t)(first + i);
	}
	if (nkp_key_from_bytes(b, &k) != NKP_OK || nkp_identity_from_key(k, &id) != NKP_OK) {
		exit(1);
	}
	nkp_key_free(k);
	return id;
}

int main(int argc, char **argv)
{
	nkp_identity *svc, *host;
	nkpi_session *ini = NULL, *rsp = NULL;
	uint8_t *out;
	size_t len = 0;
	FILE *fp;

	if (argc != 2 || nkp_init() != NKP_OK) {
		fprintf(stderr, "usage: gen-session-v2 OUT\n");
		return 2;
	}
	svc = identity(0x01);
	host = identity(0x81);
	if (nkpi_session_new(svc, nkp_identity_public(host), false, &ini) != NKP_OK ||
	    nkpi_session_new(host, nkp_identity_public(svc), true, &rsp) != NKP_OK) {
		return 1;
	}
	out = session_kat(&ini, &rsp, &len);
	fp = fopen(argv[1], "wb");
	if (out == NULL || fp == NULL || fwrite(out, 1, len, fp) != len || fclose(fp) != 0) {
		return 1;
	}
	free(out);
	nkpi_session_free(ini);
	nkpi_session_free(rsp);
	nkp_identity_free(svc);
	nkp_identity_free(host);
	return 0;
}
