#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "frames.h"
#include "internal.h"
#include "vecout.h"
#include "wire.pb-c.h"

/* A (e.g. the service) and B (a host) with pinned channels both ways. */
static nkp_identity *a_id, *b_id;
static nkp_channel *ab, *ba;

static nkp_identity *identity_filled(uint8_t first)
{
	uint8_t bytes[NKP_KEY_BYTES];
	nkp_key *k;
	nkp_identity *id;

	for (size_t i = 0; i < sizeof(bytes); i++) {
		bytes[i] = (uint8_t)(first + i);
	}
	cr_assert_eq(nkp_key_from_bytes(bytes, &k), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(k, &id), NKP_OK);
	nkp_key_free(k);
	return id;
}

static void pair_setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&a_id), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&b_id), NKP_OK);
	cr_assert_eq(nkp_channel_new(a_id, nkp_identity_public(b_id), &ab), NKP_OK);
	cr_assert_eq(nkp_channel_new(b_id, nkp_identity_public(a_id), &ba), NKP_OK);
}

static void pair_teardown(void)
{
	nkp_channel_free(ab);
	nkp_channel_free(ba);
	nkp_identity_free(a_id);
	nkp_identity_free(b_id);
}

static nkp_err open_frame(const nkp_channel *ch, const uint8_t *frame, size_t len)
{
	uint8_t *msg = NULL;
	size_t msglen = 0;
	nkp_err err = nkp_channel_open(ch, frame, len, &msg, &msglen, NULL, NULL, 0);

	if (err == NKP_OK) {
		nkp_secure_free(msg);
	} else {
		cr_assert_null(msg, "output written on failure");
	}
	return err;
}

static void seal_str(const nkp_channel *ch, const char *s, uint8_t **frame, size_t *len)
{
	cr_assert_eq(nkp_channel_seal(ch, (const uint8_t *)s, strlen(s), frame, len), NKP_OK);
}

static void assert_round_trip(const nkp_channel *from, const nkp_channel *to, const uint8_t *m,
			      size_t mlen)
{
	uint8_t *frame, *out = NULL;
	size_t flen, outlen = 0;

	cr_assert_eq(nkp_channel_seal(from, m, mlen, &frame, &flen), NKP_OK);
	cr_assert_eq(nkp_channel_open(to, frame, flen, &out, &outlen, NULL, NULL, 0), NKP_OK);
	cr_assert_eq(outlen, mlen);
	cr_assert(mlen == 0 || memcmp(out, m, mlen) == 0);
	nkp_secure_free(out);
	free(frame);
}

Test(channel, round_trip_works_in_both_directions, .init = pair_setup, .fini = pair_teardown)
{
	static const char push[] = "desired state: provider p1 v1";
	static const char ack[] = "applied generation 7";
	uint8_t big[70000];

	randombytes_buf(big, sizeof(big));
	assert_round_trip(ab, ba, (const uint8_t *)push, sizeof(push));
	assert_round_trip(ba, ab, (const uint8_t *)ack, sizeof(ack));
	assert_round_trip(ab, ba, NULL, 0);
	assert_round_trip(ba, ab, big, sizeof(big));
	cr_assert_eq(memcmp(nkp_channel_peer(ab), nkp_identity_public(b_id), NKP_PUBKEY_BYTES), 0);
}

static void *seal_and_open_many(void *arg)
{
	(void)arg;
	for (int i = 0; i < 50; i++) {
		uint8_t m[64];

		randombytes_buf(m, sizeof(m));
		assert_round_trip(ab, ba, m, sizeof(m));
		assert_round_trip(ba, ab, m, sizeof(m));
	}
	return NULL;
}

Test(channel, one_channel_serves_many_threads, .init = pair_setup, .fini = pair_teardown)
{
	pthread_t th[4];

	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_create(&th[i], NULL, seal_and_open_many, NULL), 0);
	}
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	}
}

Test(channel, sender_cannot_open_its_own_frame, .init = pair_setup, .fini = pair_teardown)
{
	uint8_t *frame;
	size_t len;

	seal_str(ab, "to B only", &frame, &len);
	/* ab's peer is B, and the frame's sender is A: not from the peer. */
	cr_assert_eq(open_frame(ab, frame, len), NKP_ERR_UNTRUSTED_PEER);
	free(frame);
}

Test(channel, each_message_has_a_fresh_ephemeral_key_and_ciphertext, .init = pair_setup,
     .fini = pair_teardown)
{
	uint8_t *f1, *f2;
	size_t l1, l2;
	Nkp__Wire__Frame *p1, *p2;

	seal_str(ab, "same message", &f1, &l1);
	seal_str(ab, "same message", &f2, &l2);
	p1 = nkp__wire__frame__unpack(NULL, l1, f1);
	p2 = nkp__wire__frame__unpack(NULL, l2, f2);
	cr_assert_not_null(p1);
	cr_assert_not_null(p2);
	cr_assert_neq(memcmp(p1->sealed->ephemeral.data, p2->sealed->ephemeral.data, 32), 0);
	cr_assert_neq(memcmp(p1->sealed->nonce.data, p2->sealed->nonce.data, 24), 0);
	cr_assert_eq(p1->sealed->ciphertext.len, p2->sealed->ciphertext.len);
	cr_assert_neq(memcmp(p1->sealed->ciphertext.data, p2->sealed->ciphertext.data,
			     p1->sealed->ciphertext.len),
		      0);
	nkp__wire__frame__free_unpacked(p1, NULL);
	nkp__wire__frame__free_unpacked(p2, NULL);
	free(f1);
	free(f2);
}

Test(channel, any_flipped_bit_is_refused, .init = pair_setup, .fini = pair_teardown)
{
	uint8_t *frame, sender[NKP_PUBKEY_BYTES];
	size_t len;

	seal_str(ba, "status: boot nonce, generation 3, usage", &frame, &len);
	for (size_t i = 0; i < len; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			frame[i] ^= (uint8_t)(1u << bit);
			cr_assert_neq(open_frame(ab, frame, len), NKP_OK, "byte %zu bit %u", i, bit);
			cr_assert_lt(nkp_frame_sender(frame, len, sender), NKP_ERR__COUNT);
			frame[i] ^= (uint8_t)(1u << bit);
		}
	}
	cr_assert_eq(open_frame(ab, frame, len), NKP_OK);
	free(frame);
}

Test(channel, every_truncation_is_refused, .init = pair_setup, .fini = pair_teardown)
{
	uint8_t *frame, *copy;
	size_t len;

	seal_str(ab, "push: providers...", &frame, &len);
	for (size_t n = 0; n < len; n++) {
		/* An exact-size copy, so ASan sees any read past the end. */
		copy = malloc(n > 0 ? n : 1);
		memcpy(copy, frame, n);
		cr_assert_neq(open_frame(ba, copy, n), NKP_OK, "length %zu", n);
		free(copy);
	}
	free(frame);
}

Test(channel, frame_for_another_recipient_is_untrusted, .init = pair_setup, .fini = pair_teardown)
{
	nkp_identity *c_id;
	nkp_channel *ac;
	uint8_t *frame;
	size_t len;

	cr_assert_eq(nkp_identity_generate(&c_id), NKP_OK);
	cr_assert_eq(nkp_channel_new(a_id, nkp_identity_public(c_id), &ac), NKP_OK);
	seal_str(ac, "meant for C", &frame, &len);
	cr_assert_eq(open_frame(ba, frame, len), NKP_ERR_UNTRUSTED_PEER);
	free(frame);
	nkp_channel_free(ac);
	nkp_identity_free(c_id);
}

Test(channel, third_party_frame_is_untrusted, .init = pair_setup, .fini = pair_teardown)
{
	nkp_identity *c_id;
	nkp_channel *cb;
	uint8_t *frame, sender[NKP_PUBKEY_BYTES];
	size_t len;

	cr_assert_eq(nkp_identity_generate(&c_id), NKP_OK);
	cr_assert_eq(nkp_channel_new(c_id, nkp_identity_public(b_id), &cb), NKP_OK);
	seal_str(cb, "I am not enrolled", &frame, &len);
	cr_assert_eq(open_frame(ba, frame, len), NKP_ERR_UNTRUSTED_PEER);
	/* The receiver can still tell who it was. */
	cr_assert_eq(nkp_frame_sender(frame, len, sender), NKP_OK);
	cr_assert_eq(memcmp(sender, nkp_identity_public(c_id), NKP_PUBKEY_BYTES), 0);
	free(frame);
	nkp_channel_free(cb);
	nkp_identity_free(c_id);
}

Test(channel, frame_sender_reads_the_sender_key, .init = pair_setup, .fini = pair_teardown)
{
	static const uint8_t garbage[] = "definitely not a frame";
	uint8_t *frame, sender[NKP_PUBKEY_BYTES], untouched[NKP_PUBKEY_BYTES];
	size_t len;

	seal_str(ab, "hello", &frame, &len);
	cr_assert_eq(nkp_frame_sender(frame, len, sender), NKP_OK);
	cr_assert_eq(memcmp(sender, nkp_identity_public(a_id), NKP_PUBKEY_BYTES), 0);
	free(frame);

	memset(sender, 0x5a, sizeof(sender));
	memcpy(untouched, sender, sizeof(sender));
	cr_assert_eq(nkp_frame_sender(garbage, sizeof(garbage), sender), NKP_ERR_PARSE);
	cr_assert_eq(nkp_frame_sender(NULL, 0, sender), NKP_ERR_PARSE);
	cr_assert_eq(memcmp(sender, untouched, sizeof(sender)), 0);
	cr_assert_eq(nkp_frame_plain_error(NKP_ERR_UNTRUSTED_PEER, "who?", &frame, &len), NKP_OK);
	cr_assert_eq(nkp_frame_sender(frame, len, sender), NKP_ERR_REFUSED);
	free(frame);
}

Test(channel, open_into_a_buffer_matches_open_and_refuses_what_open_refuses,
     .init = pair_setup, .fini = pair_teardown)
{
	uint8_t *frame, *scratch, buf[64], small[4];
	size_t len, outlen = 99;
	nkp_err peer = NKP_OK;
	char text[32] = "";

	seal_str(ab, "hello, host", &frame, &len);
	cr_assert_eq(nkpi_channel_open_into(ba, frame, len, buf, sizeof(buf), &outlen, NULL, NULL,
					    0), NKP_OK);
	cr_assert_eq(outlen, strlen("hello, host"));
	cr_assert_eq(memcmp(buf, "hello, host", outlen), 0);

	outlen = 99;
	cr_assert_eq(nkpi_channel_open_into(ba, frame, len, small, sizeof(small), &outlen, NULL,
					    NULL, 0), NKP_ERR_TOO_LARGE);
	cr_assert_eq(outlen, 99, "output written on failure");
	cr_assert_eq(nkpi_channel_open_into(ab, frame, len, buf, sizeof(buf), &outlen, NULL, NULL,
					    0), NKP_ERR_UNTRUSTED_PEER);
	frame[len - 1] ^= 1;
	cr_assert_eq(nkpi_channel_open_into(ba, frame, len, buf, sizeof(buf), &outlen, NULL, NULL,
					    0), NKP_ERR_AUTH);
	cr_assert_eq(outlen, 99);
	cr_assert_eq(nkpi_channel_open_into(ba, frame, len, NULL, 0, &outlen, NULL, NULL, 0),
		     NKP_ERR_INVALID);
	free(frame);

	cr_assert_eq(nkp_frame_plain_error(NKP_ERR_PERM, "go away", &frame, &len), NKP_OK);
	cr_assert_eq(nkpi_channel_open_into(ba, frame, len, buf, sizeof(buf), &outlen, &peer, text,
					    sizeof(text)), NKP_ERR_REFUSED);
	cr_assert_eq(peer, NKP_ERR_PERM);
	cr_assert_str_eq(text, "go away");
	free(frame);

	scratch = nkpi_scratch(100000);
	cr_assert_not_null(scratch, "the per-thread buffer grows on demand");
	memset(scratch, 0xa5, 100000);
	sodium_memzero(scratch, 100000);
	scratch = nkpi_scratch(1000);
	cr_assert_not_null(scratch, "a large buffer is given back at the next small request");
	cr_assert_eq(nkpi_scratch(10), scratch, "a smaller request reuses the same buffer");
}

/* Unpacks a sealed frame, lets `edit` change the envelope in place, packs
 * it again with `extra` raw bytes appended inside the envelope. */
static void reframe(const uint8_t *frame, size_t len, void (*edit)(Nkp__Wire__Envelope *),
		    const uint8_t *extra, size_t extralen, uint8_t **out, size_t *outlen)
{
	Nkp__Wire__Frame *f = nkp__wire__frame__unpack(NULL, len, frame);

	cr_assert_not_null(f);
	cr_assert_eq(f->kind_case, NKP__WIRE__FRAME__KIND_SEALED);
	if (edit != NULL) {
		edit(f->sealed);
	}
	/* 0x0a: field 1 (sealed), length-delimited */
	frame_pack_envelope(0x0a, &f->sealed->base, extra, extralen, out, outlen);
	nkp__wire__frame__free_unpacked(f, NULL);
}

static void set_version_2(Nkp__Wire__Envelope *env)
{
	env->protocol_version = 2;
}

static void set_version_0(Nkp__Wire__Envelope *env)
{
	env->protocol_version = 0;
}

Test(channel, other_protocol_versions_are_refused_as_such, .init = pair_setup,
     .fini = pair_teardown)
{
	static const uint8_t new_field[] = {0x78, 0x01}; /* field 15, varint 1 */
	uint8_t *frame, *v;
	size_t len, vlen;

	seal_str(ab, "hello", &frame, &len);
	reframe(frame, len, NULL, NULL, 0, &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_OK, "test helper reframes faithfully");
	free(v);
	reframe(frame, len, set_version_2, NULL, 0, &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_FORMAT_VERSION);
	free(v);
	/* A newer peer may add fields: still "unknown version", not "garbage". */
	reframe(frame, len, set_version_2, new_field, sizeof(new_field), &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_FORMAT_VERSION);
	{
		uint8_t sender[NKP_PUBKEY_BYTES];

		cr_assert_eq(nkp_frame_sender(v, vlen, sender), NKP_ERR_FORMAT_VERSION);
	}
	free(v);
	reframe(frame, len, set_version_0, NULL, 0, &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_FORMAT_VERSION);
	free(v);
	free(frame);
}

Test(channel, unknown_fields_are_refused, .init = pair_setup, .fini = pair_teardown)
{
	static const uint8_t new_field[] = {0x78, 0x01};
	uint8_t *frame, *v;
	size_t len, vlen;

	seal_str(ab, "hello", &frame, &len);
	reframe(frame, len, NULL, new_field, sizeof(new_field), &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_PARSE);
	free(v);
	/* The same at Frame level. */
	v = malloc(len + sizeof(new_field));
	memcpy(v, frame, len);
	memcpy(v + len, new_field, sizeof(new_field));
	cr_assert_eq(open_frame(ba, v, len + sizeof(new_field)), NKP_ERR_PARSE);
	free(v);
	free(frame);
}

static void short_sender(Nkp__Wire__Envelope *env)
{
	env->sender.len = 31;
}

static void short_recipient(Nkp__Wire__Envelope *env)
{
	env->recipient.len = 31;
}

static void short_ephemeral(Nkp__Wire__Envelope *env)
{
	env->ephemeral.len = 31;
}

static void short_nonce(Nkp__Wire__Envelope *env)
{
	env->nonce.len = 23;
}

static void short_ciphertext(Nkp__Wire__Envelope *env)
{
	env->ciphertext.len = NKP_TAG_BYTES - 1;
}

Test(channel, wrong_field_lengths_are_parse_errors, .init = pair_setup, .fini = pair_teardown)
{
	void (*edits[])(Nkp__Wire__Envelope *) = {short_sender, short_recipient, short_ephemeral,
						   short_nonce, short_ciphertext};
	uint8_t *frame, *v;
	size_t len, vlen;

	seal_str(ab, "hello", &frame, &len);
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		reframe(frame, len, edits[i], NULL, 0, &v, &vlen);
		cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_PARSE, "edit %zu", i);
		free(v);
	}
	free(frame);
}

static void zero_ephemeral(Nkp__Wire__Envelope *env)
{
	memset(env->ephemeral.data, 0, env->ephemeral.len);
}

static void flip_ephemeral_top_bit(Nkp__Wire__Envelope *env)
{
	/* X25519 ignores this bit: same point, different bytes. */
	env->ephemeral.data[31] ^= 0x80;
}

Test(channel, tampered_ephemeral_key_fails_authentication, .init = pair_setup,
     .fini = pair_teardown)
{
	uint8_t *frame, *v;
	size_t len, vlen;

	seal_str(ab, "hello", &frame, &len);
	reframe(frame, len, zero_ephemeral, NULL, 0, &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_AUTH);
	free(v);
	reframe(frame, len, flip_ephemeral_top_bit, NULL, 0, &v, &vlen);
	cr_assert_eq(open_frame(ba, v, vlen), NKP_ERR_AUTH);
	free(v);
	free(frame);
}

Test(channel, oversized_frames_are_refused_before_parsing, .init = pair_setup,
     .fini = pair_teardown)
{
	uint8_t *big = calloc(1, NKP_FRAME_MAX + 1);
	uint8_t *frame = NULL;
	size_t len = 0;

	cr_assert_not_null(big);
	cr_assert_eq(open_frame(ba, big, NKP_FRAME_MAX + 1), NKP_ERR_TOO_LARGE);
	/* Seal refuses what the peer would refuse. */
	cr_assert_eq(nkp_channel_seal(ab, big, NKP_FRAME_MAX, &frame, &len), NKP_ERR_TOO_LARGE);
	cr_assert_eq(nkp_channel_seal(ab, big, NKP_FRAME_MAX + 1, &frame, &len),
		     NKP_ERR_TOO_LARGE);
	cr_assert_null(frame);
	free(big);
}

Test(channel, garbage_is_a_parse_error, .init = pair_setup, .fini = pair_teardown)
{
	static const uint8_t text[] = "GET / HTTP/1.1\r\n\r\n";
	static const uint8_t empty_frame[] = {0x0a, 0x00}; /* sealed = {} */
	static const uint8_t bad_varint[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	uint8_t rnd[512], ff[64];

	memset(ff, 0xff, sizeof(ff));
	cr_assert_eq(open_frame(ba, NULL, 0), NKP_ERR_PARSE);
	cr_assert_eq(open_frame(ba, ff, sizeof(ff)), NKP_ERR_PARSE);
	cr_assert_eq(open_frame(ba, text, sizeof(text) - 1), NKP_ERR_PARSE);
	cr_assert_eq(open_frame(ba, empty_frame, sizeof(empty_frame)), NKP_ERR_FORMAT_VERSION);
	cr_assert_eq(open_frame(ba, bad_varint, sizeof(bad_varint)), NKP_ERR_PARSE);
	for (int i = 0; i < 2000; i++) {
		size_t n = 1 + randombytes_uniform(sizeof(rnd));

		randombytes_buf(rnd, n);
		cr_assert_neq(open_frame(ba, rnd, n), NKP_OK);
	}
}

Test(channel, plain_error_round_trips, .init = pair_setup, .fini = pair_teardown)
{
	uint8_t *frame, *msg = NULL;
	size_t len, msglen = 0;
	nkp_err code = NKP_OK;
	char text[128];

	cr_assert_eq(nkp_frame_plain_error(NKP_ERR_UNTRUSTED_PEER, "service key not pinned here",
					   &frame, &len),
		     NKP_OK);
	cr_assert_eq(nkp_channel_open(ab, frame, len, &msg, &msglen, &code, text, sizeof(text)),
		     NKP_ERR_REFUSED);
	cr_assert_null(msg);
	cr_assert_eq(code, NKP_ERR_UNTRUSTED_PEER);
	cr_assert_str_eq(text, "service key not pinned here");
	/* Code and text are optional. */
	cr_assert_eq(nkp_channel_open(ab, frame, len, &msg, &msglen, NULL, NULL, 0),
		     NKP_ERR_REFUSED);
	free(frame);

	cr_assert_eq(nkp_frame_plain_error(NKP_OK, "x", &frame, &len), NKP_ERR_INVALID);
	cr_assert_eq(nkp_frame_plain_error(NKP_ERR__COUNT, "x", &frame, &len), NKP_ERR_INVALID);
	cr_assert_eq(nkp_frame_plain_error(NKP_ERR_PARSE, NULL, &frame, &len), NKP_OK);
	cr_assert_eq(nkp_channel_open(ab, frame, len, &msg, &msglen, &code, text, sizeof(text)),
		     NKP_ERR_REFUSED);
	cr_assert_eq(code, NKP_ERR_PARSE);
	cr_assert_str_eq(text, "");
	free(frame);
}

static void open_plain(uint32_t code_in, const char *text_in, nkp_err *code, char *text,
		       size_t size)
{
	Nkp__Wire__Frame f = NKP__WIRE__FRAME__INIT;
	Nkp__Wire__PlainError pe = NKP__WIRE__PLAIN_ERROR__INIT;
	uint8_t buf[2048], *msg = NULL;
	size_t len, msglen;

	pe.code = code_in;
	pe.message = (char *)text_in;
	f.kind_case = NKP__WIRE__FRAME__KIND_PLAIN_ERROR;
	f.plain_error = &pe;
	cr_assert_leq(protobuf_c_message_get_packed_size(&f.base), sizeof(buf));
	len = protobuf_c_message_pack(&f.base, buf);
	cr_assert_eq(nkp_channel_open(ba, buf, len, &msg, &msglen, code, text, size),
		     NKP_ERR_REFUSED);
}

Test(channel, plain_error_from_a_peer_is_sanitized, .init = pair_setup, .fini = pair_teardown)
{
	char text[300], tiny[6], long_in[1001];
	nkp_err code;

	open_plain(9999, "\x1b[31mred\nforged line\t\xc3\xa9", &code, text, sizeof(text));
	cr_assert_eq(code, NKP_ERR_REFUSED, "unknown codes become REFUSED");
	cr_assert_str_eq(text, "?[31mred?forged line???");
	open_plain(NKP_OK, "ok?", &code, text, sizeof(text));
	cr_assert_eq(code, NKP_ERR_REFUSED, "a PlainError never says success");
	open_plain(NKP_ERR_TIMEOUT, "truncated", &code, tiny, sizeof(tiny));
	cr_assert_eq(code, NKP_ERR_TIMEOUT);
	cr_assert_str_eq(tiny, "trunc");
	memset(long_in, 'x', sizeof(long_in) - 1);
	long_in[sizeof(long_in) - 1] = '\0';
	open_plain(NKP_ERR_IO, long_in, &code, text, sizeof(text));
	cr_assert_lt(strlen(text), 300);
	cr_assert_leq(strlen(text), 256);

	/* What we send is sanitized too. */
	{
		uint8_t *frame;
		size_t len;
		Nkp__Wire__Frame *f;

		cr_assert_eq(nkp_frame_plain_error(NKP_ERR_AUTH, "bad\r\nline", &frame, &len),
			     NKP_OK);
		f = nkp__wire__frame__unpack(NULL, len, frame);
		cr_assert_not_null(f);
		cr_assert_str_eq(f->plain_error->message, "bad??line");
		nkp__wire__frame__free_unpacked(f, NULL);
		free(frame);
	}
}

Test(channel, low_order_peer_keys_are_refused, .init = pair_setup, .fini = pair_teardown)
{
	static const uint8_t zero[NKP_PUBKEY_BYTES] = {0};
	static const uint8_t one[NKP_PUBKEY_BYTES] = {1};
	/* A point of order 8 on Curve25519. */
	static const uint8_t order8[NKP_PUBKEY_BYTES] = {
		0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
		0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
		0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
	nkp_channel *ch = (nkp_channel *)0x1;

	cr_assert_eq(nkp_channel_new(a_id, zero, &ch), NKP_ERR_INVALID);
	cr_assert_eq(nkp_channel_new(a_id, one, &ch), NKP_ERR_INVALID);
	cr_assert_eq(nkp_channel_new(a_id, order8, &ch), NKP_ERR_INVALID);
	cr_assert_eq(ch, (nkp_channel *)0x1, "out-parameter written on failure");
}

Test(channel, identity_from_key_is_the_same_identity)
{
	nkp_identity *a, *b;

	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&a), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(nkp_identity_secret(a), &b), NKP_OK);
	cr_assert_eq(memcmp(nkp_identity_public(a), nkp_identity_public(b), NKP_PUBKEY_BYTES), 0);
	cr_assert(nkp_key_equal(nkp_identity_secret(a), nkp_identity_secret(b)));
	nkp_identity_free(a);
	nkp_identity_free(b);
	nkp_identity_free(NULL);
	nkp_channel_free(NULL);
}

Test(channel, public_keys_round_trip_through_base64)
{
	nkp_identity *id;
	char b64[45];
	uint8_t pub[NKP_PUBKEY_BYTES];

	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_identity_generate(&id), NKP_OK);
	nkp_pubkey_to_base64(nkp_identity_public(id), b64);
	cr_assert_eq(strlen(b64), 44);
	cr_assert_eq(b64[43], '=');
	cr_assert_eq(nkp_pubkey_from_base64(b64, pub), NKP_OK);
	cr_assert_eq(memcmp(pub, nkp_identity_public(id), NKP_PUBKEY_BYTES), 0);
	nkp_identity_free(id);

	memset(pub, 0, sizeof(pub));
	nkp_pubkey_to_base64(pub, b64);
	cr_assert_str_eq(b64, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
}

Test(channel, bad_base64_is_refused)
{
	static const char *const bad[] = {
		"",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   /* no padding */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", /* too long */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  /* 31 bytes */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-=",  /* URL-safe alphabet */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_=",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=",  /* not base64 */
		"AAAAAAAAAAAAAAAAAAAAAA AAAAAAAAAAAAAAAAAAAA=",  /* space */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",  /* non-zero trailing bits */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	};
	uint8_t pub[NKP_PUBKEY_BYTES], before[NKP_PUBKEY_BYTES];

	cr_assert_eq(nkp_init(), NKP_OK);
	memset(pub, 0x33, sizeof(pub));
	memcpy(before, pub, sizeof(pub));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(nkp_pubkey_from_base64(bad[i], pub), NKP_ERR_PARSE, "case %zu", i);
	}
	cr_assert_eq(nkp_pubkey_from_base64(NULL, pub), NKP_ERR_PARSE);
	cr_assert_eq(memcmp(pub, before, sizeof(pub)), 0);
}

/* --- known-answer vector ------------------------------------------------ */

/* A deterministic libsodium RNG: call n returns the ChaCha20 stream of a
 * seed holding n, so each draw is fixed and distinct. */
static uint64_t kat_draws;

static const char *kat_name(void)
{
	return "nkp-test-deterministic";
}

static void kat_buf(void *const buf, const size_t size)
{
	uint8_t seed[randombytes_SEEDBYTES] = "nkp channel-v1 vector seed";

	for (int i = 0; i < 8; i++) {
		seed[24 + i] = (uint8_t)(kat_draws >> (8 * i));
	}
	kat_draws++;
	randombytes_buf_deterministic(buf, size, seed);
}

static uint32_t kat_random(void)
{
	uint32_t v;

	kat_buf(&v, sizeof(v));
	return v;
}

static randombytes_implementation kat_rng = {
	.implementation_name = kat_name,
	.random = kat_random,
	.buf = kat_buf,
};

static const char kat_message[] = "nkp channel-v1 known answer: push generation 42";

static uint8_t *read_vector(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = malloc(NKP_FRAME_MAX);

	cr_assert_not_null(fp, "missing %s (regenerate with tests/vectors/regen)", path);
	*len = fread(buf, 1, NKP_FRAME_MAX, fp);
	fclose(fp);
	return buf;
}

Test(channel, known_answer_vector)
{
	const char *path = NKP_VECTORS_DIR "/channel-v1.bin";
	nkp_identity *svc, *host;
	nkp_channel *to_host, *from_svc;
	uint8_t *frame, *vec, *msg;
	size_t len, veclen, msglen;

	/* Before nkp_init: libsodium takes its RNG once, at start-up. */
	cr_assert_eq(randombytes_set_implementation(&kat_rng), 0);
	cr_assert_eq(nkp_init(), NKP_OK);
	svc = identity_filled(0x01);
	host = identity_filled(0x81);
	cr_assert_eq(nkp_channel_new(svc, nkp_identity_public(host), &to_host), NKP_OK);
	cr_assert_eq(nkp_channel_new(host, nkp_identity_public(svc), &from_svc), NKP_OK);
	kat_draws = 0; /* e is draw 0, the nonce draw 1 */
	cr_assert_eq(nkp_channel_seal(to_host, (const uint8_t *)kat_message, sizeof(kat_message) - 1,
				      &frame, &len),
		     NKP_OK);
	vec_emit("channel-v1.bin", frame, len);
	vec = read_vector(path, &veclen);
	cr_assert_eq(veclen, len, "frame size changed");
	cr_assert_eq(memcmp(vec, frame, len), 0, "frame bytes changed");
	cr_assert_eq(nkp_channel_open(from_svc, vec, veclen, &msg, &msglen, NULL, NULL, 0), NKP_OK);
	cr_assert_eq(msglen, sizeof(kat_message) - 1);
	cr_assert_eq(memcmp(msg, kat_message, msglen), 0);
	nkp_secure_free(msg);
	free(vec);
	free(frame);
	nkp_channel_free(to_host);
	nkp_channel_free(from_svc);
	nkp_identity_free(svc);
	nkp_identity_free(host);
}
