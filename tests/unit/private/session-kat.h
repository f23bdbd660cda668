/* The session known-answer run (tests/vectors/session-v2.txt), shared by
 * test-session.c, which checks its bytes, and gen-session-v2.c, which
 * writes them. Fixed: the statics (by the caller), both ephemerals, both
 * indexes, the monotonic clock and the wall clock of the timestamp. */
#ifndef NKP_TEST_SESSION_KAT_H
#define NKP_TEST_SESSION_KAT_H

#include <stdlib.h>
#include <string.h>

#include "session.h"

#define KAT_WALL_NS UINT64_C(1800000000123456789)
#define KAT_INI_INDEX UINT32_C(0x01020304)
#define KAT_RSP_INDEX UINT32_C(0xa1b2c3d4)
#define KAT_REQUEST "nkp session-v2 known answer: push generation 42"
#define KAT_REPLY "applied generation 42"

static int kat_append(uint8_t **buf, size_t *len, uint8_t *f, size_t flen)
{
	uint8_t *n = realloc(*buf, *len + 4 + flen);

	if (n == NULL || f == NULL) {
		free(f);
		return -1;
	}
	n[*len] = (uint8_t)flen;
	n[*len + 1] = (uint8_t)(flen >> 8);
	n[*len + 2] = (uint8_t)(flen >> 16);
	n[*len + 3] = (uint8_t)(flen >> 24);
	memcpy(n + *len + 4, f, flen);
	*buf = n;
	*len += 4 + flen;
	free(f);
	return 0;
}

/* Runs init, resp, one request and its reply; returns the four frames
 * (malloc'd), NULL on any failure. */
static uint8_t *session_kat(nkpi_session **ini, nkpi_session **rsp, size_t *outlen)
{
	uint8_t e_i[32], e_r[32], buf[256];
	uint8_t *out = NULL, *f = NULL, *hs = NULL;
	size_t len = 0, flen = 0, hslen = 0, n = 0;
	nkpi_session_reply rk;
	int rc = 0;

	for (int i = 0; i < 32; i++) {
		e_i[i] = (uint8_t)(0x41 + i);
		e_r[i] = (uint8_t)(0xc1 + i);
	}
	nkpi_session_set_clock_ms(1000000u);
	nkpi_session_reset_timestamps();
	nkpi_session_set_wall_ns(KAT_WALL_NS);
	nkpi_session_fix_next(*ini, e_i, KAT_INI_INDEX);
	nkpi_session_fix_next(*rsp, e_r, KAT_RSP_INDEX);
	rc |= nkpi_session_handshake_init(*ini, &f, &flen) != NKP_OK;
	rc |= rc == 0 && nkpi_session_open_request(*rsp, f, flen, buf, sizeof(buf), &n, &rk, &hs,
						   &hslen) != NKP_OK;
	rc |= rc == 0 && nkpi_session_handshake_finish(*ini, hs, hslen) != NKP_OK;
	rc |= kat_append(&out, &len, f, flen);
	rc |= kat_append(&out, &len, hs, hslen);
	f = NULL;
	rc |= rc == 0 && nkpi_session_seal_request(*ini, (const uint8_t *)KAT_REQUEST,
						   strlen(KAT_REQUEST), &f, &flen) != NKP_OK;
	rc |= rc == 0 && nkpi_session_open_request(*rsp, f, flen, buf, sizeof(buf), &n, &rk, &hs,
						   &hslen) != NKP_OK;
	rc |= rc == 0 && (n != strlen(KAT_REQUEST) || memcmp(buf, KAT_REQUEST, n) != 0);
	rc |= kat_append(&out, &len, f, flen);
	f = NULL;
	rc |= rc == 0 && nkpi_session_seal_reply(*rsp, &rk, (const uint8_t *)KAT_REPLY,
						 strlen(KAT_REPLY), &f, &flen) != NKP_OK;
	rc |= rc == 0 && nkpi_session_open_reply(*ini, f, flen, buf, sizeof(buf), &n) != NKP_OK;
	rc |= rc == 0 && (n != strlen(KAT_REPLY) || memcmp(buf, KAT_REPLY, n) != 0);
	rc |= kat_append(&out, &len, f, flen);
	nkpi_session_set_wall_ns(0);
	if (rc != 0) {
		free(out);
		return NULL;
	}
	*outlen = len;
	return out;
}

#endif
