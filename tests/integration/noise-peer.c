/* noise-peer: nkp's Noise_KK (nkp/private/noise.c) driven line by line over
 * stdin/stdout, so that noise-interop.py can run it against another
 * implementation of the protocol. One command per line, one answer line
 * each; byte strings in lowercase hex, "-" for an empty one:
 *
 *   keygen                 -> ok PUB          new random static key pair
 *   hs ROLE RS PROLOGUE    -> ok              a new handshake (ROLE:
 *                                             initiator | responder), pinning RS
 *   write PAYLOAD          -> ok MESSAGE      our next handshake message
 *   read MESSAGE           -> ok PAYLOAD      the peer's next one
 *   split                  -> ok H            cipher states; the handshake hash
 *   enc N AD PLAINTEXT     -> ok CIPHERTEXT   sending cipher, explicit nonce N
 *   dec N AD CIPHERTEXT    -> ok PLAINTEXT    receiving cipher
 *   rekey send|recv        -> ok
 *   quit
 *
 * A failure answers "err NAME" (NAME: AUTH, PARSE, STATE, INVALID, ...);
 * a line that cannot be understood answers "err USAGE". The static secret
 * never leaves the process. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "noise.h"

#define LINE_MAX_BYTES (2u * NKPI_NOISE_MAX_MSG + 256u)

/* Everything secret, in one locked block. */
typedef struct {
	uint8_t s[NKPI_NOISE_DHLEN];
	nkpi_noise_cipher send, recv;
	uint8_t buf[NKPI_NOISE_MAX_MSG + 64];
} secrets;

static secrets *sec;
static uint8_t spub[NKPI_NOISE_DHLEN];
static bool have_key, have_split;
static nkpi_noise_hs *hs;
static uint8_t *in, *out;
static size_t inlen;

static const char *err_name(nkp_err e)
{
	switch (e) {
	case NKP_ERR_AUTH:
		return "AUTH";
	case NKP_ERR_PARSE:
		return "PARSE";
	case NKP_ERR_STATE:
		return "STATE";
	case NKP_ERR_INVALID:
		return "INVALID";
	case NKP_ERR_TOO_LARGE:
		return "TOO_LARGE";
	case NKP_ERR_CRYPTO:
		return "CRYPTO";
	case NKP_ERR_NOMEM:
		return "NOMEM";
	default:
		return "OTHER";
	}
}

static void put_hex(const uint8_t *b, size_t len)
{
	static const char digits[] = "0123456789abcdef";

	if (len == 0) {
		fputc('-', stdout);
	}
	for (size_t i = 0; i < len; i++) {
		fputc(digits[b[i] >> 4], stdout);
		fputc(digits[b[i] & 15], stdout);
	}
}

static void answer_ok(const uint8_t *b, size_t len, bool with_bytes)
{
	fputs("ok", stdout);
	if (with_bytes) {
		fputc(' ', stdout);
		put_hex(b, len);
	}
	fputc('\n', stdout);
}

static void answer_err(const char *name)
{
	printf("err %s\n", name);
}

/* Hex word (or "-") into `dst`; false if it is not hex or too long. */
static bool get_hex(const char *word, uint8_t *dst, size_t cap, size_t *len)
{
	size_t n;

	if (word == NULL) {
		return false;
	}
	if (strcmp(word, "-") == 0) {
		*len = 0;
		return true;
	}
	n = strlen(word);
	if (n % 2 != 0 || n / 2 > cap) {
		return false;
	}
	return sodium_hex2bin(dst, cap, word, n, NULL, len, NULL) == 0 && *len == n / 2;
}

static bool get_u64(const char *word, uint64_t *v)
{
	char *end;

	if (word == NULL || *word == '\0' || *word == '-') {
		return false;
	}
	errno = 0;
	*v = strtoull(word, &end, 10);
	return errno == 0 && *end == '\0';
}

static void cmd_hs(char *role, char *rs_hex, char *pro_hex)
{
	uint8_t rs[NKPI_NOISE_DHLEN];
	size_t rslen, prolen;
	nkp_err err;

	if (!have_key || role == NULL || (strcmp(role, "initiator") && strcmp(role, "responder")) ||
	    !get_hex(rs_hex, rs, sizeof(rs), &rslen) || rslen != sizeof(rs) ||
	    !get_hex(pro_hex, in, LINE_MAX_BYTES, &prolen)) {
		answer_err("USAGE");
		return;
	}
	nkpi_noise_hs_free(hs);
	hs = NULL;
	have_split = false;
	err = nkpi_noise_hs_new(strcmp(role, "initiator") == 0, sec->s, rs, in, prolen, &hs);
	if (err != NKP_OK) {
		answer_err(err_name(err));
		return;
	}
	answer_ok(NULL, 0, false);
}

static void cmd_write(char *pay_hex)
{
	size_t n;
	nkp_err err;

	if (hs == NULL || !get_hex(pay_hex, in, LINE_MAX_BYTES, &inlen)) {
		answer_err("USAGE");
		return;
	}
	err = nkpi_noise_hs_write(hs, in, inlen, out, LINE_MAX_BYTES, &n);
	if (err != NKP_OK) {
		answer_err(err_name(err));
		return;
	}
	answer_ok(out, n, true);
}

static void cmd_read(char *msg_hex)
{
	size_t n;
	nkp_err err;

	if (hs == NULL || !get_hex(msg_hex, in, LINE_MAX_BYTES, &inlen)) {
		answer_err("USAGE");
		return;
	}
	err = nkpi_noise_hs_read(hs, in, inlen, sec->buf, sizeof(sec->buf), &n);
	if (err != NKP_OK) {
		answer_err(err_name(err));
		return;
	}
	answer_ok(sec->buf, n, true);
	sodium_memzero(sec->buf, n);
}

static void cmd_split(void)
{
	uint8_t h[NKPI_NOISE_HASHLEN];
	nkp_err err;

	if (hs == NULL) {
		answer_err("USAGE");
		return;
	}
	err = nkpi_noise_hs_split(hs, &sec->send, &sec->recv, h);
	if (err != NKP_OK) {
		answer_err(err_name(err));
		return;
	}
	nkpi_noise_hs_free(hs);
	hs = NULL;
	have_split = true;
	answer_ok(h, sizeof(h), true);
}

static void cmd_crypt(bool enc, char *n_word, char *ad_hex, char *data_hex)
{
	uint64_t n;
	uint8_t ad[256];
	size_t adlen;
	nkp_err err;

	if (!have_split || !get_u64(n_word, &n) || !get_hex(ad_hex, ad, sizeof(ad), &adlen) ||
	    !get_hex(data_hex, in, NKPI_NOISE_MAX_MSG, &inlen)) {
		answer_err("USAGE");
		return;
	}
	if (enc) {
		err = nkpi_noise_encrypt(&sec->send, n, ad, adlen, in, inlen, out);
		if (err == NKP_OK) {
			answer_ok(out, inlen + NKPI_NOISE_TAGLEN, true);
		}
	} else {
		err = nkpi_noise_decrypt(&sec->recv, n, ad, adlen, in, inlen, sec->buf);
		if (err == NKP_OK) {
			answer_ok(sec->buf, inlen - NKPI_NOISE_TAGLEN, true);
			sodium_memzero(sec->buf, inlen);
		}
	}
	if (err != NKP_OK) {
		answer_err(err_name(err));
	}
}

static void cmd_rekey(char *which)
{
	if (!have_split || which == NULL || (strcmp(which, "send") && strcmp(which, "recv"))) {
		answer_err("USAGE");
		return;
	}
	nkpi_noise_rekey(strcmp(which, "send") == 0 ? &sec->send : &sec->recv);
	answer_ok(NULL, 0, false);
}

/* One command; false on quit. */
static bool dispatch(char *line)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \n", &save);
	char *a1 = strtok_r(NULL, " \n", &save);
	char *a2 = strtok_r(NULL, " \n", &save);
	char *a3 = strtok_r(NULL, " \n", &save);

	if (cmd == NULL) {
		answer_err("USAGE");
	} else if (strcmp(cmd, "quit") == 0) {
		return false;
	} else if (strcmp(cmd, "keygen") == 0) {
		crypto_box_keypair(spub, sec->s);
		have_key = true;
		answer_ok(spub, sizeof(spub), true);
	} else if (strcmp(cmd, "hs") == 0) {
		cmd_hs(a1, a2, a3);
	} else if (strcmp(cmd, "write") == 0) {
		cmd_write(a1);
	} else if (strcmp(cmd, "read") == 0) {
		cmd_read(a1);
	} else if (strcmp(cmd, "split") == 0) {
		cmd_split();
	} else if (strcmp(cmd, "enc") == 0 || strcmp(cmd, "dec") == 0) {
		cmd_crypt(cmd[0] == 'e', a1, a2, a3);
	} else if (strcmp(cmd, "rekey") == 0) {
		cmd_rekey(a1);
	} else {
		answer_err("USAGE");
	}
	fflush(stdout);
	return true;
}

int main(void)
{
	char *line;
	int rc = 1;

	if (nkp_init() != NKP_OK) {
		fprintf(stderr, "noise-peer: nkp_init failed\n");
		return 1;
	}
	sec = sodium_malloc(sizeof(*sec));
	line = malloc(LINE_MAX_BYTES + 2);
	in = malloc(LINE_MAX_BYTES);
	out = malloc(LINE_MAX_BYTES);
	if (sec == NULL || line == NULL || in == NULL || out == NULL) {
		fprintf(stderr, "noise-peer: out of memory\n");
		goto free_all;
	}
	memset(sec, 0, sizeof(*sec));
	while (fgets(line, (int)LINE_MAX_BYTES + 2, stdin) != NULL) {
		if (strchr(line, '\n') == NULL && !feof(stdin)) {
			fprintf(stderr, "noise-peer: line too long\n");
			goto free_all;
		}
		if (!dispatch(line)) {
			break;
		}
	}
	rc = 0;

free_all:
	nkpi_noise_hs_free(hs);
	if (sec != NULL) {
		sodium_memzero(sec, sizeof(*sec));
		sodium_free(sec);
	}
	free(out);
	free(in);
	free(line);
	return rc;
}
