#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "noise.h"

#define HS_OVER NKPI_NOISE_HS_OVERHEAD
#define MSG_CAP 1024u

/* --- a JSON reader for the vector files' fixed shape ----------------------
 * {"vectors": [{"key": "hex" | [] | [{"key": "hex", ...}, ...], ...}, ...]}:
 * objects, arrays and escape-free strings; nothing else is accepted. */

#define MAX_FIELDS 24
#define MAX_MSGS 16

typedef struct {
	char name[32];
	char *value; /* NULL for arrays */
} field;

typedef struct {
	char *payload, *ciphertext;
} vmsg;

typedef struct {
	field f[MAX_FIELDS];
	size_t nf;
	vmsg m[MAX_MSGS];
	size_t nm;
} ventry;

typedef struct {
	const char *p, *end;
} reader;

static void ws(reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
		r->p++;
	}
}

static void expect(reader *r, char c)
{
	ws(r);
	cr_assert(r->p < r->end && *r->p == c, "vector file: expected '%c' at offset %td", c,
		  r->end - r->p);
	r->p++;
}

static bool peek(reader *r, char c)
{
	ws(r);
	return r->p < r->end && *r->p == c;
}

static char *string(reader *r)
{
	const char *s;
	char *out;

	expect(r, '"');
	s = r->p;
	while (r->p < r->end && *r->p != '"') {
		cr_assert_neq(*r->p, '\\', "vector file: escapes are not expected");
		r->p++;
	}
	cr_assert(r->p < r->end, "vector file: unterminated string");
	out = strndup(s, (size_t)(r->p - s));
	cr_assert_not_null(out);
	r->p++;
	return out;
}

static void message(reader *r, vmsg *m)
{
	memset(m, 0, sizeof(*m));
	expect(r, '{');
	do {
		char *k = string(r);

		expect(r, ':');
		if (strcmp(k, "payload") == 0) {
			m->payload = string(r);
		} else if (strcmp(k, "ciphertext") == 0) {
			m->ciphertext = string(r);
		} else {
			cr_assert_fail("vector file: unexpected message field %s", k);
		}
		free(k);
	} while (peek(r, ',') && (r->p++, true));
	expect(r, '}');
	cr_assert(m->payload && m->ciphertext);
}

static void entry(reader *r, ventry *e)
{
	memset(e, 0, sizeof(*e));
	expect(r, '{');
	do {
		char *k = string(r);

		expect(r, ':');
		if (strcmp(k, "messages") == 0) {
			expect(r, '[');
			while (!peek(r, ']')) {
				cr_assert_lt(e->nm, MAX_MSGS);
				message(r, &e->m[e->nm++]);
				if (peek(r, ',')) {
					r->p++;
				}
			}
			expect(r, ']');
		} else {
			field *f;

			cr_assert_lt(e->nf, MAX_FIELDS);
			cr_assert_lt(strlen(k), sizeof(f->name));
			f = &e->f[e->nf++];
			strcpy(f->name, k);
			if (peek(r, '[')) {
				/* init_psks / resp_psks: empty in every KK entry */
				r->p++;
				expect(r, ']');
				f->value = NULL;
			} else {
				f->value = string(r);
			}
		}
		free(k);
	} while (peek(r, ',') && (r->p++, true));
	expect(r, '}');
}

static size_t load_vectors(const char *file, ventry *out, size_t max)
{
	char path[512];
	FILE *fp;
	char *buf;
	long size;
	reader r;
	size_t n = 0;
	char *k;

	snprintf(path, sizeof(path), "%s/%s", NKP_VECTORS_DIR, file);
	fp = fopen(path, "rb");
	cr_assert_not_null(fp, "cannot open %s", path);
	cr_assert_eq(fseek(fp, 0, SEEK_END), 0);
	size = ftell(fp);
	cr_assert_gt(size, 0);
	rewind(fp);
	buf = malloc((size_t)size);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)size, fp), (size_t)size);
	fclose(fp);

	r.p = buf;
	r.end = buf + size;
	expect(&r, '{');
	k = string(&r);
	cr_assert_str_eq(k, "vectors");
	free(k);
	expect(&r, ':');
	expect(&r, '[');
	while (!peek(&r, ']')) {
		cr_assert_lt(n, max);
		entry(&r, &out[n++]);
		if (peek(&r, ',')) {
			r.p++;
		}
	}
	expect(&r, ']');
	expect(&r, '}');
	ws(&r);
	cr_assert_eq(r.p, r.end, "vector file: trailing bytes in %s", path);
	free(buf);
	return n;
}

static void free_entry(ventry *e)
{
	for (size_t i = 0; i < e->nf; i++) {
		free(e->f[i].value);
	}
	for (size_t i = 0; i < e->nm; i++) {
		free(e->m[i].payload);
		free(e->m[i].ciphertext);
	}
}

static const char *get(const ventry *e, const char *name)
{
	for (size_t i = 0; i < e->nf; i++) {
		if (strcmp(e->f[i].name, name) == 0) {
			return e->f[i].value;
		}
	}
	return NULL;
}

/* Hex to a malloc'd buffer (never NULL, even for ""). */
static uint8_t *unhex(const char *hex, size_t *len)
{
	size_t n = strlen(hex);
	uint8_t *b = malloc(n / 2 + 1);
	size_t got = 0;

	cr_assert_not_null(b);
	cr_assert_eq(n % 2, 0);
	cr_assert_eq(sodium_hex2bin(b, n / 2 + 1, hex, n, NULL, &got, NULL), 0);
	cr_assert_eq(got, n / 2);
	*len = got;
	return b;
}

static void unhex_fixed(const ventry *e, const char *name, uint8_t *out, size_t len)
{
	const char *hex = get(e, name);
	size_t n;
	uint8_t *b;

	cr_assert_not_null(hex, "vector without %s", name);
	b = unhex(hex, &n);
	cr_assert_eq(n, len, "%s: %zu bytes", name, n);
	memcpy(out, b, len);
	free(b);
}

/* --- the vectors ---------------------------------------------------------- */

static void run_entry(const ventry *e)
{
	uint8_t is[32], ie[32], irs[32], rsk[32], re[32], rrs[32], pub[32];
	uint8_t *ipro, *rpro;
	size_t ipro_len, rpro_len;
	nkpi_noise_hs *ini, *rsp;
	nkpi_noise_cipher isend, irecv, rsend, rrecv;
	uint8_t ih[64], rh[64];
	uint64_t n_i2r = 0, n_r2i = 0;

	cr_assert_str_eq(get(e, "protocol_name"), NKPI_NOISE_PROTOCOL_NAME);
	unhex_fixed(e, "init_static", is, 32);
	unhex_fixed(e, "init_ephemeral", ie, 32);
	unhex_fixed(e, "init_remote_static", irs, 32);
	unhex_fixed(e, "resp_static", rsk, 32);
	unhex_fixed(e, "resp_ephemeral", re, 32);
	unhex_fixed(e, "resp_remote_static", rrs, 32);
	ipro = unhex(get(e, "init_prologue"), &ipro_len);
	rpro = unhex(get(e, "resp_prologue"), &rpro_len);
	/* The pinned keys are the peers' public keys. */
	cr_assert_eq(crypto_scalarmult_base(pub, rsk), 0);
	cr_assert_arr_eq(pub, irs, 32);
	cr_assert_eq(crypto_scalarmult_base(pub, is), 0);
	cr_assert_arr_eq(pub, rrs, 32);
	cr_assert_geq(e->nm, 2);

	cr_assert_eq(nkpi_noise_hs_new(true, is, irs, ipro, ipro_len, &ini), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_new(false, rsk, rrs, rpro, rpro_len, &rsp), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(ini, ie), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(rsp, re), NKP_OK);

	for (size_t i = 0; i < e->nm; i++) {
		size_t plen, clen, outlen = 0, backlen = 0;
		uint8_t *pt = unhex(e->m[i].payload, &plen);
		uint8_t *ct = unhex(e->m[i].ciphertext, &clen);
		uint8_t out[MSG_CAP], back[MSG_CAP];
		bool from_ini = i % 2 == 0;

		cr_assert_lt(clen, MSG_CAP);
		if (i < 2) {
			nkpi_noise_hs *w = from_ini ? ini : rsp, *r = from_ini ? rsp : ini;

			cr_assert_eq(nkpi_noise_hs_write(w, pt, plen, out, sizeof(out), &outlen),
				     NKP_OK);
			cr_assert_eq(nkpi_noise_hs_read(r, ct, clen, back, sizeof(back), &backlen),
				     NKP_OK, "handshake message %zu", i);
		} else {
			if (i == 2) {
				cr_assert(nkpi_noise_hs_done(ini) && nkpi_noise_hs_done(rsp));
				cr_assert_eq(nkpi_noise_hs_split(ini, &isend, &irecv, ih), NKP_OK);
				cr_assert_eq(nkpi_noise_hs_split(rsp, &rsend, &rrecv, rh), NKP_OK);
				cr_assert_arr_eq(ih, rh, 64);
			}
			uint64_t *n = from_ini ? &n_i2r : &n_r2i;

			cr_assert_eq(nkpi_noise_encrypt(from_ini ? &isend : &rsend, *n, NULL, 0, pt,
							plen, out),
				     NKP_OK);
			outlen = plen + NKPI_NOISE_TAGLEN;
			cr_assert_eq(nkpi_noise_decrypt(from_ini ? &rrecv : &irecv, *n, NULL, 0, ct,
							clen, back),
				     NKP_OK, "transport message %zu", i);
			backlen = clen - NKPI_NOISE_TAGLEN;
			(*n)++;
		}
		cr_assert_eq(outlen, clen, "message %zu: length", i);
		cr_assert_arr_eq(out, ct, clen, "message %zu: bytes differ", i);
		cr_assert_eq(backlen, plen);
		cr_assert_arr_eq(back, pt, plen, "message %zu: payload differs", i);
		free(pt);
		free(ct);
	}
	if (e->nm == 2) {
		cr_assert_eq(nkpi_noise_hs_split(ini, &isend, &irecv, ih), NKP_OK);
		cr_assert_eq(nkpi_noise_hs_split(rsp, &rsend, &rrecv, rh), NKP_OK);
	}
	if (get(e, "handshake_hash") != NULL) {
		uint8_t want[64];

		unhex_fixed(e, "handshake_hash", want, 64);
		cr_assert_arr_eq(ih, want, 64, "handshake hash");
	}
	cr_assert_arr_eq(isend.k, rrecv.k, 32);
	cr_assert_arr_eq(irecv.k, rsend.k, 32);
	nkpi_noise_hs_free(ini);
	nkpi_noise_hs_free(rsp);
	free(ipro);
	free(rpro);
}

static void run_file(const char *file, bool want_hash)
{
	ventry v[4];
	size_t n = load_vectors(file, v, 4);

	cr_assert_geq(n, 1, "%s: no vectors", file);
	for (size_t i = 0; i < n; i++) {
		cr_assert_geq(v[i].nm, 4, "%s: the vector has transport messages", file);
		if (want_hash) {
			cr_assert_not_null(get(&v[i], "handshake_hash"));
		}
		run_entry(&v[i]);
		free_entry(&v[i]);
	}
}

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
}

Test(noise, matches_the_cacophony_vectors, .init = setup)
{
	run_file("noise-kk-cacophony.json", true);
}

Test(noise, matches_the_snow_vectors, .init = setup)
{
	run_file("noise-kk-snow.json", false);
}

/* --- a handshake between fresh keys --------------------------------------- */

typedef struct {
	uint8_t is[32], ipub[32], rsk[32], rpub[32];
	nkpi_noise_hs *ini, *rsp;
	uint8_t m1[MSG_CAP], m2[MSG_CAP];
	size_t m1len, m2len;
} kk;

static const uint8_t prologue[] = "nkp test prologue";
static const uint8_t pay1[] = "first payload";
static const uint8_t pay2[] = "second payload, a little longer";

static void kk_keys(kk *t)
{
	memset(t, 0, sizeof(*t));
	crypto_box_keypair(t->ipub, t->is);
	crypto_box_keypair(t->rpub, t->rsk);
}

static void kk_start(kk *t)
{
	nkpi_noise_hs_free(t->ini);
	nkpi_noise_hs_free(t->rsp);
	cr_assert_eq(nkpi_noise_hs_new(true, t->is, t->rpub, prologue, sizeof(prologue), &t->ini),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_new(false, t->rsk, t->ipub, prologue, sizeof(prologue), &t->rsp),
		     NKP_OK);
}

static void kk_msg1(kk *t)
{
	cr_assert_eq(
		nkpi_noise_hs_write(t->ini, pay1, sizeof(pay1), t->m1, sizeof(t->m1), &t->m1len),
		NKP_OK);
	cr_assert_eq(t->m1len, sizeof(pay1) + HS_OVER);
}

static void kk_msg2(kk *t)
{
	cr_assert_eq(
		nkpi_noise_hs_write(t->rsp, pay2, sizeof(pay2), t->m2, sizeof(t->m2), &t->m2len),
		NKP_OK);
	cr_assert_eq(t->m2len, sizeof(pay2) + HS_OVER);
}

static void read_ok(nkpi_noise_hs *hs, const uint8_t *msg, size_t len, const uint8_t *want,
		    size_t wantlen)
{
	uint8_t buf[MSG_CAP];
	size_t n = 0;

	cr_assert_eq(nkpi_noise_hs_read(hs, msg, len, buf, sizeof(buf), &n), NKP_OK);
	cr_assert_eq(n, wantlen);
	cr_assert_arr_eq(buf, want, wantlen);
}

/* Reads `msg` expecting `want`, and checks nothing was written. */
static void read_fails(nkpi_noise_hs *hs, const uint8_t *msg, size_t len, nkp_err want)
{
	uint8_t buf[MSG_CAP], canary[MSG_CAP];
	size_t n = 12345;

	memset(buf, 0xa5, sizeof(buf));
	memset(canary, 0xa5, sizeof(canary));
	cr_assert_eq(nkpi_noise_hs_read(hs, msg, len, buf, sizeof(buf), &n), want);
	cr_assert_arr_eq(buf, canary, sizeof(buf), "payload buffer written on failure");
	cr_assert_eq(n, 12345);
}

static void kk_free(kk *t)
{
	nkpi_noise_hs_free(t->ini);
	nkpi_noise_hs_free(t->rsp);
	t->ini = t->rsp = NULL;
}

Test(noise, a_handshake_between_fresh_keys_agrees, .init = setup)
{
	kk t;
	nkpi_noise_cipher is, ir, rs, rr;
	uint8_t ih[64], rh[64];

	kk_keys(&t);
	kk_start(&t);
	cr_assert_not(nkpi_noise_hs_done(t.ini));
	kk_msg1(&t);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	kk_msg2(&t);
	cr_assert(nkpi_noise_hs_done(t.rsp));
	cr_assert_not(nkpi_noise_hs_done(t.ini));
	read_ok(t.ini, t.m2, t.m2len, pay2, sizeof(pay2));
	cr_assert(nkpi_noise_hs_done(t.ini));
	cr_assert_eq(nkpi_noise_hs_split(t.ini, &is, &ir, ih), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_split(t.rsp, &rs, &rr, rh), NKP_OK);
	cr_assert_arr_eq(ih, rh, 64);
	cr_assert_arr_eq(is.k, rr.k, 32);
	cr_assert_arr_eq(ir.k, rs.k, 32);
	cr_assert_arr_neq(is.k, ir.k, 32);
	/* A second Split has nothing left to split. */
	cr_assert_eq(nkpi_noise_hs_split(t.ini, &is, &ir, NULL), NKP_ERR_STATE);
	kk_free(&t);
}

Test(noise, an_empty_payload_and_no_prologue_work, .init = setup)
{
	kk t;
	size_t n;
	uint8_t buf[64];

	kk_keys(&t);
	cr_assert_eq(nkpi_noise_hs_new(true, t.is, t.rpub, NULL, 0, &t.ini), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_new(false, t.rsk, t.ipub, NULL, 0, &t.rsp), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_write(t.ini, NULL, 0, t.m1, HS_OVER, &t.m1len), NKP_OK);
	cr_assert_eq(t.m1len, HS_OVER);
	cr_assert_eq(nkpi_noise_hs_read(t.rsp, t.m1, t.m1len, NULL, 0, &n), NKP_OK);
	cr_assert_eq(n, 0);
	cr_assert_eq(nkpi_noise_hs_write(t.rsp, NULL, 0, t.m2, HS_OVER, &t.m2len), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_read(t.ini, t.m2, t.m2len, buf, sizeof(buf), &n), NKP_OK);
	cr_assert_eq(n, 0);
	kk_free(&t);
}

Test(noise, a_different_prologue_does_not_authenticate, .init = setup)
{
	kk t;
	static const uint8_t other[] = "nkp test prologuf";

	kk_keys(&t);
	kk_start(&t);
	nkpi_noise_hs_free(t.rsp);
	cr_assert_eq(nkpi_noise_hs_new(false, t.rsk, t.ipub, other, sizeof(other), &t.rsp), NKP_OK);
	kk_msg1(&t);
	read_fails(t.rsp, t.m1, t.m1len, NKP_ERR_AUTH);
	kk_free(&t);
}

/* --- failures ------------------------------------------------------------- */

/* The bit to flip in round i of `len` + 1 rounds: one in every byte (bit
 * i % 8), then the top bit of the ephemeral key, which X25519 ignores but
 * the transcript hash does not. */
static size_t flip_bit(size_t i, size_t len)
{
	return i < len ? i * 8 + i % 8 : 31 * 8 + 7;
}

Test(noise, a_flipped_bit_in_the_first_message_is_refused, .init = setup)
{
	kk t;
	uint8_t bad[MSG_CAP];

	kk_keys(&t);
	kk_start(&t);
	kk_msg1(&t);
	for (size_t i = 0; i <= t.m1len; i++) {
		size_t bit = flip_bit(i, t.m1len);

		nkpi_noise_hs_free(t.rsp);
		cr_assert_eq(
			nkpi_noise_hs_new(false, t.rsk, t.ipub, prologue, sizeof(prologue), &t.rsp),
			NKP_OK);
		memcpy(bad, t.m1, t.m1len);
		bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		read_fails(t.rsp, bad, t.m1len, NKP_ERR_AUTH);
		/* Dead after the failure, even for the genuine message. */
		read_fails(t.rsp, t.m1, t.m1len, NKP_ERR_STATE);
	}
	kk_free(&t);
}

Test(noise, a_flipped_bit_in_the_second_message_is_refused, .init = setup)
{
	kk t;
	uint8_t e[32], bad[MSG_CAP];

	/* With a fixed initiator ephemeral, message 1 is the same each time,
	 * so one genuine message 2 answers every fresh initiator. */
	kk_keys(&t);
	randombytes_buf(e, sizeof(e));
	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.ini, e), NKP_OK);
	kk_msg1(&t);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	kk_msg2(&t);
	for (size_t i = 0; i <= t.m2len; i++) {
		size_t bit = flip_bit(i, t.m2len);

		kk_start(&t);
		cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.ini, e), NKP_OK);
		kk_msg1(&t);
		memcpy(bad, t.m2, t.m2len);
		bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		read_fails(t.ini, bad, t.m2len, NKP_ERR_AUTH);
		read_fails(t.ini, t.m2, t.m2len, NKP_ERR_STATE);
	}
	/* And the genuine one reads. */
	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.ini, e), NKP_OK);
	kk_msg1(&t);
	read_ok(t.ini, t.m2, t.m2len, pay2, sizeof(pay2));
	kk_free(&t);
}

Test(noise, a_wrong_pinned_key_does_not_authenticate, .init = setup)
{
	kk t, other;

	kk_keys(&t);
	kk_keys(&other);

	/* The responder pins someone else as initiator. */
	cr_assert_eq(nkpi_noise_hs_new(true, t.is, t.rpub, prologue, sizeof(prologue), &t.ini),
		     NKP_OK);
	cr_assert_eq(
		nkpi_noise_hs_new(false, t.rsk, other.ipub, prologue, sizeof(prologue), &t.rsp),
		NKP_OK);
	kk_msg1(&t);
	read_fails(t.rsp, t.m1, t.m1len, NKP_ERR_AUTH);
	kk_free(&t);

	/* The initiator pins someone else as responder. */
	cr_assert_eq(nkpi_noise_hs_new(true, t.is, other.rpub, prologue, sizeof(prologue), &t.ini),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_new(false, t.rsk, t.ipub, prologue, sizeof(prologue), &t.rsp),
		     NKP_OK);
	kk_msg1(&t);
	read_fails(t.rsp, t.m1, t.m1len, NKP_ERR_AUTH);
	kk_free(&t);

	/* A responder with another static key that pins the right initiator
	 * cannot read a first message meant for the pinned responder. */
	kk_start(&t);
	kk_msg1(&t);
	cr_assert_eq(
		nkpi_noise_hs_new(false, other.rsk, t.ipub, prologue, sizeof(prologue), &other.rsp),
		NKP_OK);
	read_fails(other.rsp, t.m1, t.m1len, NKP_ERR_AUTH);
	nkpi_noise_hs_free(other.rsp);
	kk_free(&t);
}

Test(noise, a_reply_from_an_unpinned_responder_is_refused, .init = setup)
{
	kk t, other;
	nkpi_noise_hs *ini2, *rsp2;
	uint8_t e[32], m1[MSG_CAP], m2[MSG_CAP];
	size_t m1len, m2len;

	/* Another responder completes a genuine handshake with an initiator
	 * that has our initiator's keys and ephemeral but pins it; our
	 * initiator, which pins the real responder, refuses its reply. */
	kk_keys(&t);
	kk_keys(&other);
	randombytes_buf(e, sizeof(e));
	cr_assert_eq(nkpi_noise_hs_new(true, t.is, other.rpub, prologue, sizeof(prologue), &ini2),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_new(false, other.rsk, t.ipub, prologue, sizeof(prologue), &rsp2),
		     NKP_OK);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(ini2, e), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_write(ini2, pay1, sizeof(pay1), m1, sizeof(m1), &m1len), NKP_OK);
	read_ok(rsp2, m1, m1len, pay1, sizeof(pay1));
	cr_assert_eq(nkpi_noise_hs_write(rsp2, pay2, sizeof(pay2), m2, sizeof(m2), &m2len), NKP_OK);
	read_ok(ini2, m2, m2len, pay2, sizeof(pay2));

	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.ini, e), NKP_OK);
	kk_msg1(&t);
	read_fails(t.ini, m2, m2len, NKP_ERR_AUTH);
	nkpi_noise_hs_free(ini2);
	nkpi_noise_hs_free(rsp2);
	kk_free(&t);
}

Test(noise, truncated_handshake_messages_are_parse_errors, .init = setup)
{
	kk t;

	kk_keys(&t);
	for (size_t len = 0; len < HS_OVER; len++) {
		kk_start(&t);
		kk_msg1(&t);
		read_fails(t.rsp, t.m1, len, NKP_ERR_PARSE);
	}
	/* Cut inside the payload: the tag no longer verifies. */
	kk_start(&t);
	kk_msg1(&t);
	read_fails(t.rsp, t.m1, t.m1len - 1, NKP_ERR_AUTH);
	/* The second message likewise. */
	kk_start(&t);
	kk_msg1(&t);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	kk_msg2(&t);
	read_fails(t.ini, t.m2, HS_OVER - 1, NKP_ERR_PARSE);
	kk_free(&t);
}

Test(noise, out_of_turn_calls_are_state_errors, .init = setup)
{
	kk t;
	uint8_t buf[MSG_CAP], e[32] = {1};
	size_t n;
	nkpi_noise_cipher a, b;

	kk_keys(&t);

	/* The responder cannot speak first, the initiator cannot listen first. */
	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_write(t.rsp, pay1, sizeof(pay1), buf, sizeof(buf), &n),
		     NKP_ERR_STATE);
	read_fails(t.ini, t.m1, HS_OVER + 8, NKP_ERR_STATE);

	/* The initiator cannot write twice; the responder cannot read twice. */
	kk_start(&t);
	kk_msg1(&t);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.ini, e), NKP_ERR_STATE);
	cr_assert_eq(nkpi_noise_hs_split(t.ini, &a, &b, NULL), NKP_ERR_STATE);
	cr_assert_eq(nkpi_noise_hs_write(t.ini, pay1, sizeof(pay1), buf, sizeof(buf), &n),
		     NKP_ERR_STATE);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	read_fails(t.rsp, t.m1, t.m1len, NKP_ERR_STATE);

	/* After both messages: no more writing or reading, Split once. */
	kk_start(&t);
	kk_msg1(&t);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	kk_msg2(&t);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(t.rsp, e), NKP_ERR_STATE);
	cr_assert_eq(nkpi_noise_hs_write(t.rsp, pay2, sizeof(pay2), buf, sizeof(buf), &n),
		     NKP_ERR_STATE);
	read_ok(t.ini, t.m2, t.m2len, pay2, sizeof(pay2));
	cr_assert_eq(nkpi_noise_hs_write(t.ini, pay1, sizeof(pay1), buf, sizeof(buf), &n),
		     NKP_ERR_STATE);
	cr_assert_eq(nkpi_noise_hs_split(t.ini, &a, &b, NULL), NKP_ERR_STATE); /* dead now */
	kk_free(&t);
}

Test(noise, oversized_messages_and_short_buffers_are_refused, .init = setup)
{
	kk t;
	uint8_t *big = calloc(1, NKPI_NOISE_MAX_MSG + 64);
	uint8_t buf[MSG_CAP];
	size_t n = 7;

	cr_assert_not_null(big);
	kk_keys(&t);
	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_write(t.ini, big, NKPI_NOISE_MAX_MSG - HS_OVER + 1, big,
					 NKPI_NOISE_MAX_MSG + 64, &n),
		     NKP_ERR_TOO_LARGE);
	kk_start(&t);
	cr_assert_eq(
		nkpi_noise_hs_write(t.ini, pay1, sizeof(pay1), buf, sizeof(pay1) + HS_OVER - 1, &n),
		NKP_ERR_TOO_LARGE);
	cr_assert_eq(n, 7);
	kk_start(&t);
	kk_msg1(&t);
	cr_assert_eq(nkpi_noise_hs_read(t.rsp, t.m1, t.m1len, buf, sizeof(pay1) - 1, &n),
		     NKP_ERR_TOO_LARGE);
	kk_start(&t);
	cr_assert_eq(nkpi_noise_hs_read(t.rsp, big, NKPI_NOISE_MAX_MSG + 1, big,
					NKPI_NOISE_MAX_MSG + 64, &n),
		     NKP_ERR_TOO_LARGE);
	free(big);
	kk_free(&t);
}

Test(noise, a_low_order_ephemeral_is_refused, .init = setup)
{
	kk t;
	uint8_t bad[MSG_CAP];
	/* u = 0 and u = 1: X25519 with either gives all zeros. */
	static const uint8_t points[2][32] = {{0}, {1}};

	kk_keys(&t);
	for (size_t i = 0; i < 2; i++) {
		kk_start(&t);
		kk_msg1(&t);
		memcpy(bad, t.m1, t.m1len);
		memcpy(bad, points[i], 32);
		read_fails(t.rsp, bad, t.m1len, NKP_ERR_CRYPTO);

		kk_start(&t);
		kk_msg1(&t);
		read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
		kk_msg2(&t);
		memcpy(bad, t.m2, t.m2len);
		memcpy(bad, points[i], 32);
		read_fails(t.ini, bad, t.m2len, NKP_ERR_CRYPTO);
	}
	/* A low-order pinned key: the first DH with it is refused. */
	{
		nkpi_noise_hs *hs;
		size_t n;

		cr_assert_eq(nkpi_noise_hs_new(true, t.is, points[1], NULL, 0, &hs), NKP_OK);
		cr_assert_eq(nkpi_noise_hs_write(hs, NULL, 0, bad, sizeof(bad), &n),
			     NKP_ERR_CRYPTO);
		nkpi_noise_hs_free(hs);
	}
	kk_free(&t);
}

/* --- transport ------------------------------------------------------------ */

static void transport_pair(nkpi_noise_cipher *is, nkpi_noise_cipher *ir, nkpi_noise_cipher *rs,
			   nkpi_noise_cipher *rr)
{
	kk t;

	kk_keys(&t);
	kk_start(&t);
	kk_msg1(&t);
	read_ok(t.rsp, t.m1, t.m1len, pay1, sizeof(pay1));
	kk_msg2(&t);
	read_ok(t.ini, t.m2, t.m2len, pay2, sizeof(pay2));
	cr_assert_eq(nkpi_noise_hs_split(t.ini, is, ir, NULL), NKP_OK);
	cr_assert_eq(nkpi_noise_hs_split(t.rsp, rs, rr, NULL), NKP_OK);
	kk_free(&t);
}

Test(noise, the_nonce_is_32_zero_bits_then_the_counter_little_endian, .init = setup)
{
	nkpi_noise_cipher c;
	uint8_t out[64], want[64];
	uint8_t nonce[12] = {0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
	static const uint8_t msg[] = "nonce layout";
	static const uint8_t ad[] = "ad";

	randombytes_buf(c.k, sizeof(c.k));
	cr_assert_eq(
		nkpi_noise_encrypt(&c, 0x0102030405060708u, ad, sizeof(ad), msg, sizeof(msg), out),
		NKP_OK);
	crypto_aead_chacha20poly1305_ietf_encrypt(want, NULL, msg, sizeof(msg), ad, sizeof(ad),
						  NULL, nonce, c.k);
	cr_assert_arr_eq(out, want, sizeof(msg) + NKPI_NOISE_TAGLEN);
}

Test(noise, transport_messages_go_both_ways_with_explicit_nonces, .init = setup)
{
	nkpi_noise_cipher is, ir, rs, rr;
	uint8_t ct[128], pt[128];
	static const uint8_t msg[100] = "transport";
	static const uint64_t nonces[] = {0, 1, 7, 3, 1000000, UINT64_MAX - 1};

	transport_pair(&is, &ir, &rs, &rr);
	for (size_t i = 0; i < sizeof(nonces) / sizeof(nonces[0]); i++) {
		cr_assert_eq(nkpi_noise_encrypt(&is, nonces[i], NULL, 0, msg, sizeof(msg), ct),
			     NKP_OK);
		cr_assert_eq(nkpi_noise_decrypt(&rr, nonces[i], NULL, 0, ct, sizeof(msg) + 16, pt),
			     NKP_OK);
		cr_assert_arr_eq(pt, msg, sizeof(msg));
		cr_assert_eq(nkpi_noise_encrypt(&rs, nonces[i], NULL, 0, msg, sizeof(msg), ct),
			     NKP_OK);
		cr_assert_eq(nkpi_noise_decrypt(&ir, nonces[i], NULL, 0, ct, sizeof(msg) + 16, pt),
			     NKP_OK);
		cr_assert_arr_eq(pt, msg, sizeof(msg));
	}
	/* In place. */
	memcpy(pt, msg, sizeof(msg));
	cr_assert_eq(nkpi_noise_encrypt(&is, 5, NULL, 0, pt, sizeof(msg), pt), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 5, NULL, 0, pt, sizeof(msg) + 16, pt), NKP_OK);
	cr_assert_arr_eq(pt, msg, sizeof(msg));
	/* Empty. */
	cr_assert_eq(nkpi_noise_encrypt(&is, 9, NULL, 0, NULL, 0, ct), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 9, NULL, 0, ct, 16, NULL), NKP_OK);
}

Test(noise, a_tampered_transport_message_is_refused, .init = setup)
{
	nkpi_noise_cipher is, ir, rs, rr;
	uint8_t ct[128], bad[128], out[128], canary[128];
	static const uint8_t msg[100] = "tamper";
	static const uint8_t ad[] = "header";
	size_t clen = sizeof(msg) + 16;

	transport_pair(&is, &ir, &rs, &rr);
	memset(canary, 0x5a, sizeof(canary));
	cr_assert_eq(nkpi_noise_encrypt(&is, 42, ad, sizeof(ad), msg, sizeof(msg), ct), NKP_OK);
	for (size_t bit = 0; bit < clen * 8; bit++) {
		memcpy(bad, ct, clen);
		bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		memset(out, 0x5a, sizeof(out));
		cr_assert_eq(nkpi_noise_decrypt(&rr, 42, ad, sizeof(ad), bad, clen, out),
			     NKP_ERR_AUTH);
		cr_assert_arr_eq(out, canary, sizeof(out));
	}
	memset(out, 0x5a, sizeof(out));
	cr_assert_eq(nkpi_noise_decrypt(&rr, 43, ad, sizeof(ad), ct, clen, out), NKP_ERR_AUTH);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 42, ad, sizeof(ad) - 1, ct, clen, out), NKP_ERR_AUTH);
	cr_assert_eq(nkpi_noise_decrypt(&ir, 42, ad, sizeof(ad), ct, clen, out), NKP_ERR_AUTH);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 42, ad, sizeof(ad), ct, clen - 1, out), NKP_ERR_AUTH);
	cr_assert_arr_eq(out, canary, sizeof(out));
	cr_assert_eq(nkpi_noise_decrypt(&rr, 42, ad, sizeof(ad), ct, 15, out), NKP_ERR_PARSE);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 42, ad, sizeof(ad), ct, clen, out), NKP_OK);
	cr_assert_arr_eq(out, msg, sizeof(msg));
}

Test(noise, the_reserved_nonce_is_refused, .init = setup)
{
	nkpi_noise_cipher c;
	uint8_t ct[64], out[64];

	randombytes_buf(c.k, sizeof(c.k));
	cr_assert_eq(nkpi_noise_encrypt(&c, UINT64_MAX, NULL, 0, ct, 8, out), NKP_ERR_INVALID);
	cr_assert_eq(nkpi_noise_encrypt(&c, 0, NULL, 0, ct, 8, out), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&c, UINT64_MAX, NULL, 0, out, 24, ct), NKP_ERR_INVALID);
}

Test(noise, oversized_transport_messages_are_refused, .init = setup)
{
	nkpi_noise_cipher c;
	uint8_t *big = calloc(1, NKPI_NOISE_MAX_MSG + 16);

	cr_assert_not_null(big);
	randombytes_buf(c.k, sizeof(c.k));
	cr_assert_eq(nkpi_noise_encrypt(&c, 0, NULL, 0, big, NKPI_NOISE_MAX_MSG - 15, big),
		     NKP_ERR_TOO_LARGE);
	cr_assert_eq(nkpi_noise_encrypt(&c, 0, NULL, 0, big, NKPI_NOISE_MAX_MSG - 16, big), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&c, 0, NULL, 0, big, NKPI_NOISE_MAX_MSG, big), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&c, 0, NULL, 0, big, NKPI_NOISE_MAX_MSG + 1, big),
		     NKP_ERR_TOO_LARGE);
	free(big);
}

Test(noise, rekey_replaces_the_key_as_the_spec_says, .init = setup)
{
	nkpi_noise_cipher is, ir, rs, rr, old;
	uint8_t want[48], ct[64], pt[64];
	static const uint8_t zeros[32];
	static const uint8_t nonce[12] = {0,	0,    0,    0,	  0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t msg[] = "after rekey";

	transport_pair(&is, &ir, &rs, &rr);
	old = is;
	/* REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros). */
	crypto_aead_chacha20poly1305_ietf_encrypt(want, NULL, zeros, 32, NULL, 0, NULL, nonce,
						  is.k);
	nkpi_noise_rekey(&is);
	cr_assert_arr_eq(is.k, want, 32);
	cr_assert_arr_neq(is.k, old.k, 32);
	/* Only a peer that rekeyed too can read what follows. */
	cr_assert_eq(nkpi_noise_encrypt(&is, 3, NULL, 0, msg, sizeof(msg), ct), NKP_OK);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 3, NULL, 0, ct, sizeof(msg) + 16, pt), NKP_ERR_AUTH);
	nkpi_noise_rekey(&rr);
	cr_assert_eq(nkpi_noise_decrypt(&rr, 3, NULL, 0, ct, sizeof(msg) + 16, pt), NKP_OK);
	cr_assert_arr_eq(pt, msg, sizeof(msg));
	nkpi_noise_cipher_wipe(&is);
	cr_assert(sodium_is_zero(is.k, 32));
	nkpi_noise_cipher_wipe(NULL);
}

Test(noise, bad_arguments_are_refused_without_aborting, .init = setup)
{
	uint8_t k[32] = {9};
	nkpi_noise_hs *hs = (nkpi_noise_hs *)0x1;

	cr_assert_eq(nkpi_noise_hs_new(true, k, k, NULL, 3, &hs), NKP_ERR_INVALID);
	cr_assert_eq(hs, (nkpi_noise_hs *)0x1);
	cr_assert_eq(nkpi_noise_hs_set_ephemeral(NULL, k), NKP_ERR_INVALID);
	cr_assert_not(nkpi_noise_hs_done(NULL));
	nkpi_noise_hs_free(NULL);
	nkpi_noise_rekey(NULL);
}
