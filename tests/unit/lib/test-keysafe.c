/* Keysafe format and operations. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "keysafe.pb-c.h"
#include "vecout.h"

#define VM_UUID "4c4c4544-0042-3510-8052-b4c04f4e4b32"
#define VM_NAME "db-01"
#define FIXED_CLOCK 1700000000u
#define KAT_BIN NKP_VECTORS_DIR "/keysafe-v1.bin"
#define KAT_TXT NKP_VECTORS_DIR "/keysafe-v1.txt"

/* ---- deterministic, recording RNG -------------------------------------- */

#define MAX_RECORDED 64
static uint8_t det_seed[randombytes_SEEDBYTES];
static uint64_t det_counter;
static uint8_t recorded[MAX_RECORDED][NKP_KEY_BYTES];
static size_t n_recorded;

static const char *det_name(void)
{
	return "nkp-test-deterministic";
}

/* Each call draws from its own seed (base seed xor a call counter), so the
 * stream depends only on the order of calls. 32-byte draws (keys) are
 * recorded so tests can look for them in files. */
static void det_buf(void *const buf, const size_t size)
{
	uint8_t seed[randombytes_SEEDBYTES];

	memcpy(seed, det_seed, sizeof(seed));
	for (size_t i = 0; i < 8; i++) {
		seed[i] ^= (uint8_t)(det_counter >> (8 * i));
	}
	det_counter++;
	randombytes_buf_deterministic(buf, size, seed);
	if (size == NKP_KEY_BYTES && n_recorded < MAX_RECORDED) {
		memcpy(recorded[n_recorded++], buf, NKP_KEY_BYTES);
	}
}

static uint32_t det_random(void)
{
	uint32_t r;

	det_buf(&r, sizeof(r));
	return r;
}

static struct randombytes_implementation det_impl = {
	.implementation_name = det_name,
	.random = det_random,
	.stir = NULL,
	.uniform = NULL,
	.buf = det_buf,
	.close = NULL,
};

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	nkp_log_set_sink(NULL, NULL);
}

/* The KAT needs the RNG in place before libsodium starts. */
static void setup_deterministic(void)
{
	for (size_t i = 0; i < sizeof(det_seed); i++) {
		det_seed[i] = (uint8_t)(0xa0 + i);
	}
	det_counter = 0;
	n_recorded = 0;
	cr_assert_eq(randombytes_set_implementation(&det_impl), 0);
	setup();
	nkpi_set_clock(FIXED_CLOCK);
}

/* ---- helpers ----------------------------------------------------------- */

static nkp_primary *primary_make(uint8_t provider, uint32_t version, uint8_t keyseed)
{
	uint8_t id[NKP_ID_BYTES];
	uint8_t bytes[NKP_KEY_BYTES];
	nkp_key *key = NULL;
	nkp_primary *p = NULL;

	for (size_t i = 0; i < sizeof(id); i++) {
		id[i] = (uint8_t)(provider + i);
	}
	for (size_t i = 0; i < sizeof(bytes); i++) {
		bytes[i] = (uint8_t)(keyseed * 31 + i * 7 + version);
	}
	cr_assert_eq(nkp_key_from_bytes(bytes, &key), NKP_OK);
	cr_assert_eq(nkp_primary_new(id, version, key, &p), NKP_OK);
	nkp_key_free(key);
	sodium_memzero(bytes, sizeof(bytes));
	return p;
}

static const nkp_vm_identity ident = {
	.vm_uuid = VM_UUID,
	.vm_name = VM_NAME,
	.vendor = "Example Vendor",
	.product = "Example Hypervisor",
	.product_version = "8.1",
};

/* A keysafe with vm-home, disk:0 and vtpm, and its three DEKs. */
static const char *const three[] = {NKP_COMPONENT_VM_HOME, "disk:0", NKP_COMPONENT_VTPM};

static nkp_keysafe *make_three(const nkp_primary *p, uint8_t deks[3][NKP_KEY_BYTES])
{
	nkp_keysafe *ks = NULL;

	cr_assert_eq(nkp_keysafe_create(p, &ident, &ks), NKP_OK);
	cr_assert_eq(nkp_keysafe_add_component(ks, p, "disk:0"), NKP_OK);
	cr_assert_eq(nkp_keysafe_add_component(ks, p, NKP_COMPONENT_VTPM), NKP_OK);
	for (size_t i = 0; deks != NULL && i < 3; i++) {
		cr_assert_eq(nkp_keysafe_unwrap(ks, p, three[i], deks[i]), NKP_OK);
	}
	return ks;
}

static uint8_t *ser(const nkp_keysafe *ks, size_t *len)
{
	uint8_t *buf = NULL;

	cr_assert_eq(nkp_keysafe_serialize(ks, &buf, len), NKP_OK);
	return buf;
}

static nkp_keysafe *reparse(const nkp_keysafe *ks)
{
	nkp_keysafe *out = NULL;
	size_t len = 0;
	uint8_t *buf = ser(ks, &len);

	cr_assert_eq(nkp_keysafe_parse(buf, len, &out), NKP_OK);
	free(buf);
	return out;
}

static void assert_deks(const nkp_keysafe *ks, const nkp_primary *p,
			const uint8_t deks[3][NKP_KEY_BYTES])
{
	uint8_t dek[NKP_KEY_BYTES];

	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(nkp_keysafe_unwrap(ks, p, three[i], dek), NKP_OK, "%s", three[i]);
		cr_assert_arr_eq(dek, deks[i], NKP_KEY_BYTES, "%s", three[i]);
	}
	sodium_memzero(dek, sizeof(dek));
}

static bool bytes_equal(const nkp_keysafe *a, const nkp_keysafe *b)
{
	size_t la = 0, lb = 0;
	uint8_t *ba = ser(a, &la);
	uint8_t *bb = ser(b, &lb);
	bool eq = la == lb && memcmp(ba, bb, la) == 0;

	free(ba);
	free(bb);
	return eq;
}

/* Rebuilds a serialized keysafe with its body edited and/or raw bytes
 * appended. Edits may only point top-level body fields at caller storage;
 * the original fields are restored before the unpacked body is freed. */
typedef struct craft_spec {
	void (*body)(Nkp__Keysafe__KeysafeBody *b);
	const uint8_t *body_tail;
	size_t body_tail_len;
	uint32_t format_version;
	const uint8_t *file_tail;
	size_t file_tail_len;
} craft_spec;

static uint8_t *craft(const uint8_t *in, size_t inlen, const craft_spec *s, size_t *outlen)
{
	Nkp__Keysafe__KeysafeFile *f = nkp__keysafe__keysafe_file__unpack(NULL, inlen, in);
	Nkp__Keysafe__KeysafeBody *b;
	Nkp__Keysafe__KeysafeBody saved;
	ProtobufCBinaryData saved_body;
	uint8_t *body, *out;
	size_t blen, flen;

	cr_assert_not_null(f);
	b = nkp__keysafe__keysafe_body__unpack(NULL, f->body.len, f->body.data);
	cr_assert_not_null(b);
	saved = *b;
	if (s->body != NULL) {
		s->body(b);
	}
	blen = nkp__keysafe__keysafe_body__get_packed_size(b);
	body = malloc(blen + s->body_tail_len + 1);
	nkp__keysafe__keysafe_body__pack(b, body);
	if (s->body_tail_len > 0) {
		memcpy(body + blen, s->body_tail, s->body_tail_len);
	}
	*b = saved;
	nkp__keysafe__keysafe_body__free_unpacked(b, NULL);

	saved_body = f->body;
	f->body = (ProtobufCBinaryData){blen + s->body_tail_len, body};
	if (s->format_version != 0) {
		f->format_version = s->format_version;
	}
	flen = nkp__keysafe__keysafe_file__get_packed_size(f);
	out = malloc(flen + s->file_tail_len + 1);
	nkp__keysafe__keysafe_file__pack(f, out);
	if (s->file_tail_len > 0) {
		memcpy(out + flen, s->file_tail, s->file_tail_len);
	}
	f->body = saved_body;
	nkp__keysafe__keysafe_file__free_unpacked(f, NULL);
	free(body);
	*outlen = flen + s->file_tail_len;
	return out;
}

/* Parses a crafted variant of a fresh keysafe; returns the parse result
 * and, if it parsed, the unwrap result of vm-home in *unwrap_err. */
static nkp_err parse_crafted(const craft_spec *s, nkp_err *unwrap_err)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_keysafe *ks = make_three(p, NULL);
	nkp_keysafe *back = NULL;
	uint8_t dek[NKP_KEY_BYTES];
	size_t len = 0, clen = 0;
	uint8_t *buf = ser(ks, &len);
	uint8_t *crafted = craft(buf, len, s, &clen);
	nkp_err err = nkp_keysafe_parse(crafted, clen, &back);

	if (err == NKP_OK && unwrap_err != NULL) {
		*unwrap_err = nkp_keysafe_unwrap(back, p, NKP_COMPONENT_VM_HOME, dek);
	}
	nkp_keysafe_free(back);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
	free(buf);
	free(crafted);
	return err;
}

/* ---- round trips ------------------------------------------------------- */

Test(keysafe, create_add_unwrap_and_round_trip_through_bytes, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	nkp_keysafe *back = reparse(ks);
	nkp_keysafe *again = reparse(back);

	cr_assert(memcmp(deks[0], deks[1], NKP_KEY_BYTES) != 0);
	cr_assert(memcmp(deks[1], deks[2], NKP_KEY_BYTES) != 0);
	cr_assert(memcmp(deks[0], deks[2], NKP_KEY_BYTES) != 0);
	assert_deks(ks, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	assert_deks(back, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	cr_assert(bytes_equal(ks, back), "parse then serialize must give the same bytes");
	cr_assert(bytes_equal(back, again));
	nkp_keysafe_free(again);
	nkp_keysafe_free(back);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, unwrap_of_unknown_component_is_not_found_and_leaves_output, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_keysafe *ks = make_three(p, NULL);
	uint8_t dek[NKP_KEY_BYTES];

	memset(dek, 0xaa, sizeof(dek));
	cr_assert_eq(nkp_keysafe_unwrap(ks, p, "disk:1", dek), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_keysafe_unwrap(ks, p, "not a name", dek), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_keysafe_unwrap(ks, p, NULL, dek), NKP_ERR_INVALID);
	for (size_t i = 0; i < sizeof(dek); i++) {
		cr_assert_eq(dek[i], 0xaa);
	}
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, adding_an_existing_component_is_refused, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);

	cr_assert_eq(nkp_keysafe_add_component(ks, p, "disk:0"), NKP_ERR_EXISTS);
	cr_assert_eq(nkp_keysafe_add_component(ks, p, NKP_COMPONENT_VM_HOME), NKP_ERR_EXISTS);
	cr_assert_eq(nkp_keysafe_component_count(ks), 3);
	assert_deks(ks, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

/* ---- metadata ---------------------------------------------------------- */

Test(keysafe, metadata_is_readable_without_any_key, .init = setup)
{
	static const char *const names[] = {"x-Vendor",	   "x-Product", "x-Product_Version",
					    "x-Component", "x-Name",	"x-Identifier"};
	static const char *const values[] = {
		"Example Vendor", "Example Hypervisor", "8.1", "Virtual Machine", VM_NAME, VM_UUID};
	nkp_primary *p = primary_make(1, 3, 1);
	nkp_keysafe *ks = NULL;
	nkp_keysafe *back;
	uint8_t key_id[NKP_ID_BYTES];

	nkpi_set_clock(FIXED_CLOCK);
	ks = make_three(p, NULL);
	memcpy(key_id, nkp_keysafe_key_id(ks), sizeof(key_id));
	back = reparse(ks);
	nkp_keysafe_free(ks);
	nkp_primary_free(p); /* no key exists any more */

	cr_assert_arr_eq(nkp_keysafe_provider_id(back),
			 "\x01\x02\x03\x04\x05\x06\x07\x08"
			 "\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
			 NKP_ID_BYTES);
	cr_assert_eq(nkp_keysafe_primary_version(back), 3);
	cr_assert_arr_eq(nkp_keysafe_key_id(back), key_id, NKP_ID_BYTES);
	cr_assert_str_eq(nkp_keysafe_vm_uuid(back), VM_UUID);
	cr_assert_str_eq(nkp_keysafe_vm_name(back), VM_NAME);
	cr_assert_eq(nkp_keysafe_created(back), FIXED_CLOCK);
	cr_assert_eq(nkp_keysafe_component_count(back), 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_str_eq(nkp_keysafe_component(back, i), three[i]);
		cr_assert(nkp_keysafe_has_component(back, three[i]));
	}
	cr_assert_null(nkp_keysafe_component(back, 3));
	cr_assert_not(nkp_keysafe_has_component(back, "disk:1"));
	cr_assert_eq(nkp_keysafe_attribute_count(back), 6);
	for (size_t i = 0; i < 6; i++) {
		cr_assert_str_eq(nkp_keysafe_attribute_name(back, i), names[i]);
		cr_assert_str_eq(nkp_keysafe_attribute_value(back, i), values[i]);
	}
	cr_assert_null(nkp_keysafe_attribute_name(back, 6));
	cr_assert_null(nkp_keysafe_attribute_value(back, 6));
	nkp_keysafe_free(back);
	nkpi_set_clock(0);
}

Test(keysafe, vendor_product_and_version_default_to_nkp, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_vm_identity id = {.vm_uuid = VM_UUID, .vm_name = VM_NAME};
	nkp_keysafe *ks = NULL;

	cr_assert_eq(nkp_keysafe_create(p, &id, &ks), NKP_OK);
	cr_assert_str_eq(nkp_keysafe_attribute_value(ks, 0), "nkp");
	cr_assert_str_eq(nkp_keysafe_attribute_value(ks, 1), "nkp");
	cr_assert_str_eq(nkp_keysafe_attribute_value(ks, 2), nkp_version());
	cr_assert_eq(nkp_keysafe_component_count(ks), 1);
	cr_assert_str_eq(nkp_keysafe_component(ks, 0), NKP_COMPONENT_VM_HOME);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

/* ---- tampering --------------------------------------------------------- */

/* Parses a damaged copy; if it parses, no component may unwrap, and none
 * may ever give a DEK other than the original. */
static void assert_damaged_fails(const uint8_t *buf, size_t len, const nkp_primary *p,
				 const uint8_t deks[3][NKP_KEY_BYTES], const char *what, size_t at)
{
	nkp_keysafe *ks = NULL;
	uint8_t dek[NKP_KEY_BYTES];

	if (nkp_keysafe_parse(buf, len, &ks) != NKP_OK) {
		cr_assert_null(ks);
		return;
	}
	for (size_t i = 0; i < 3; i++) {
		nkp_err err = nkp_keysafe_unwrap(ks, p, three[i], dek);

		if (err == NKP_OK) {
			cr_assert_arr_eq(dek, deks[i], NKP_KEY_BYTES, "%s %zu gave another DEK",
					 what, at);
		}
		cr_assert_neq(err, NKP_OK, "%s %zu: %s still unwraps", what, at, three[i]);
	}
	nkp_keysafe_free(ks);
}

Test(keysafe, every_flipped_byte_makes_parse_or_unwrap_fail, .init = setup)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	size_t len = 0;
	uint8_t *buf = ser(ks, &len);

	for (size_t i = 0; i < len; i++) {
		for (size_t m = 0; m < sizeof(masks); m++) {
			buf[i] ^= masks[m];
			assert_damaged_fails(buf, len, p, (const uint8_t(*)[NKP_KEY_BYTES])deks,
					     "flipped byte", i);
			buf[i] ^= masks[m];
		}
	}
	free(buf);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, every_truncation_makes_parse_or_unwrap_fail, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	size_t len = 0;
	uint8_t *buf = ser(ks, &len);

	for (size_t n = 0; n < len; n++) {
		/* A fresh copy of exactly n bytes, so ASan sees any overread. */
		uint8_t *cut = malloc(n > 0 ? n : 1);

		memcpy(cut, buf, n);
		assert_damaged_fails(cut, n, p, (const uint8_t(*)[NKP_KEY_BYTES])deks, "length", n);
		free(cut);
	}
	free(buf);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

static void rename_vm(Nkp__Keysafe__KeysafeBody *b)
{
	b->vm_name = "db-02";
}

static void bump_created(Nkp__Keysafe__KeysafeBody *b)
{
	b->created_unix++;
}

static void drop_vtpm(Nkp__Keysafe__KeysafeBody *b)
{
	b->n_components = 2;
}

Test(keysafe, changed_clear_fields_parse_but_do_not_unwrap, .init = setup)
{
	void (*const edits[])(Nkp__Keysafe__KeysafeBody *) = {rename_vm, bump_created, drop_vtpm};

	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		craft_spec s = {.body = edits[i]};
		nkp_err unwrap_err = NKP_OK;

		cr_assert_eq(parse_crafted(&s, &unwrap_err), NKP_OK, "edit %zu", i);
		cr_assert_eq(unwrap_err, NKP_ERR_AUTH, "edit %zu", i);
	}
}

Test(keysafe, unknown_format_version_is_refused, .init = setup)
{
	craft_spec v2 = {.format_version = 2};
	craft_spec vmax = {.format_version = UINT32_MAX};

	cr_assert_eq(parse_crafted(&v2, NULL), NKP_ERR_FORMAT_VERSION);
	cr_assert_eq(parse_crafted(&vmax, NULL), NKP_ERR_FORMAT_VERSION);
}

Test(keysafe, unknown_fields_are_refused, .init = setup)
{
	static const uint8_t unknown[] = {0x78, 0x01}; /* field 15, varint 1 */
	craft_spec in_file = {.file_tail = unknown, .file_tail_len = sizeof(unknown)};
	craft_spec in_body = {.body_tail = unknown, .body_tail_len = sizeof(unknown)};
	craft_spec none = {0};

	cr_assert_eq(parse_crafted(&none, NULL), NKP_OK);
	cr_assert_eq(parse_crafted(&in_file, NULL), NKP_ERR_PARSE);
	cr_assert_eq(parse_crafted(&in_body, NULL), NKP_ERR_PARSE);
}

static Nkp__Keysafe__WrappedDek edited_dek;
static Nkp__Keysafe__WrappedDek *edited_list[3];
static ProtobufCMessageUnknownField unknown_field = {
	.tag = 15, .wire_type = PROTOBUF_C_WIRE_TYPE_VARINT, .len = 1, .data = (uint8_t *)"\x01"};

/* Replaces component 1 (disk:0) by an edited copy. */
static void edit_disk(Nkp__Keysafe__KeysafeBody *b, void (*edit)(Nkp__Keysafe__WrappedDek *w))
{
	edited_dek = *b->components[1];
	edit(&edited_dek);
	edited_list[0] = b->components[0];
	edited_list[1] = &edited_dek;
	edited_list[2] = b->components[2];
	b->components = edited_list;
}

static void dek_unknown(Nkp__Keysafe__WrappedDek *w)
{
	w->base.n_unknown_fields = 1;
	w->base.unknown_fields = &unknown_field;
}
static void dek_bad_name(Nkp__Keysafe__WrappedDek *w)
{
	w->component = "disk:a/b";
}
static void dek_long_name(Nkp__Keysafe__WrappedDek *w)
{
	w->component = "disk:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
}
static void dek_dup_name(Nkp__Keysafe__WrappedDek *w)
{
	w->component = NKP_COMPONENT_VTPM;
}
static void dek_short_nonce(Nkp__Keysafe__WrappedDek *w)
{
	w->nonce.len--;
}
static void dek_long_wrapped(Nkp__Keysafe__WrappedDek *w)
{
	static uint8_t big[NKP_KEY_BYTES + NKP_TAG_BYTES + 1];

	w->wrapped = (ProtobufCBinaryData){sizeof(big), big};
}

static void body_dek_unknown(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_unknown);
}
static void body_dek_bad_name(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_bad_name);
}
static void body_dek_long_name(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_long_name);
}
static void body_dek_dup_name(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_dup_name);
}
static void body_dek_short_nonce(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_short_nonce);
}
static void body_dek_long_wrapped(Nkp__Keysafe__KeysafeBody *b)
{
	edit_disk(b, dek_long_wrapped);
}
static void body_short_provider_id(Nkp__Keysafe__KeysafeBody *b)
{
	b->provider_id.len--;
}
static void body_no_key_id(Nkp__Keysafe__KeysafeBody *b)
{
	b->key_id.len = 0;
}
static void body_version_zero(Nkp__Keysafe__KeysafeBody *b)
{
	b->primary_version = 0;
}
static void body_no_uuid(Nkp__Keysafe__KeysafeBody *b)
{
	b->vm_uuid = "";
}
static void body_control_name(Nkp__Keysafe__KeysafeBody *b)
{
	b->vm_name = "db\n01";
}

static Nkp__Keysafe__Attribute dup_attr;
static Nkp__Keysafe__Attribute *attr_list[7];
static void body_dup_attribute(Nkp__Keysafe__KeysafeBody *b)
{
	memcpy(attr_list, b->attributes, 6 * sizeof(attr_list[0]));
	dup_attr = *b->attributes[4];
	dup_attr.value = "other";
	attr_list[6] = &dup_attr;
	b->attributes = attr_list;
	b->n_attributes = 7;
}

Test(keysafe, malformed_bodies_are_refused_as_parse_errors, .init = setup)
{
	void (*const edits[])(Nkp__Keysafe__KeysafeBody *) = {
		body_dek_unknown,     body_dek_bad_name,     body_dek_dup_name,
		body_dek_short_nonce, body_dek_long_wrapped, body_short_provider_id,
		body_no_key_id,	      body_version_zero,     body_no_uuid,
		body_control_name,    body_dup_attribute,
	};

	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		craft_spec s = {.body = edits[i]};

		cr_assert_eq(parse_crafted(&s, NULL), NKP_ERR_PARSE, "edit %zu", i);
	}
}

static char long_text[NKP_KEYSAFE_MAX_NAME + 2];
static void body_long_vm_name(Nkp__Keysafe__KeysafeBody *b)
{
	memset(long_text, 'n', NKP_KEYSAFE_MAX_NAME + 1);
	b->vm_name = long_text;
}
static void body_long_uuid(Nkp__Keysafe__KeysafeBody *b)
{
	memset(long_text, 'u', NKP_KEYSAFE_MAX_UUID + 1);
	b->vm_uuid = long_text;
}
static void body_long_attribute(Nkp__Keysafe__KeysafeBody *b)
{
	memset(long_text, 'v', NKP_KEYSAFE_MAX_NAME + 1);
	memcpy(attr_list, b->attributes, 6 * sizeof(attr_list[0]));
	dup_attr = *b->attributes[4];
	dup_attr.value = long_text;
	attr_list[4] = &dup_attr;
	b->attributes = attr_list;
}

static Nkp__Keysafe__WrappedDek many_deks[NKP_KEYSAFE_MAX_COMPONENTS + 1];
static Nkp__Keysafe__WrappedDek *many_dek_list[NKP_KEYSAFE_MAX_COMPONENTS + 1];
static char many_names[NKP_KEYSAFE_MAX_COMPONENTS + 1][16];
static void body_65_components(Nkp__Keysafe__KeysafeBody *b)
{
	for (size_t i = 0; i <= NKP_KEYSAFE_MAX_COMPONENTS; i++) {
		many_deks[i] = *b->components[0];
		snprintf(many_names[i], sizeof(many_names[i]), "disk:%zu", i);
		many_deks[i].component = many_names[i];
		many_dek_list[i] = &many_deks[i];
	}
	b->components = many_dek_list;
	b->n_components = NKP_KEYSAFE_MAX_COMPONENTS + 1;
}

static Nkp__Keysafe__Attribute many_attrs[NKP_KEYSAFE_MAX_ATTRIBUTES + 1];
static Nkp__Keysafe__Attribute *many_attr_list[NKP_KEYSAFE_MAX_ATTRIBUTES + 1];
static char many_attr_names[NKP_KEYSAFE_MAX_ATTRIBUTES + 1][16];
static void body_33_attributes(Nkp__Keysafe__KeysafeBody *b)
{
	for (size_t i = 0; i <= NKP_KEYSAFE_MAX_ATTRIBUTES; i++) {
		many_attrs[i] = *b->attributes[0];
		snprintf(many_attr_names[i], sizeof(many_attr_names[i]), "x-A%zu", i);
		many_attrs[i].name = many_attr_names[i];
		many_attr_list[i] = &many_attrs[i];
	}
	b->attributes = many_attr_list;
	b->n_attributes = NKP_KEYSAFE_MAX_ATTRIBUTES + 1;
}

Test(keysafe, oversized_fields_are_refused_as_too_large, .init = setup)
{
	void (*const edits[])(Nkp__Keysafe__KeysafeBody *) = {
		body_long_vm_name,  body_long_uuid,	body_long_attribute,
		body_65_components, body_33_attributes, body_dek_long_name,
	};

	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		craft_spec s = {.body = edits[i]};

		cr_assert_eq(parse_crafted(&s, NULL), NKP_ERR_TOO_LARGE, "edit %zu", i);
	}
}

Test(keysafe, oversized_files_and_garbage_are_refused, .init = setup)
{
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x0f};
	uint8_t *big = calloc(1, NKP_KEYSAFE_MAX_FILE + 1);
	nkp_keysafe *ks = (nkp_keysafe *)garbage; /* sentinel: must stay untouched */

	cr_assert_eq(nkp_keysafe_parse(big, NKP_KEYSAFE_MAX_FILE + 1, &ks), NKP_ERR_TOO_LARGE);
	cr_assert_eq(nkp_keysafe_parse(big, NKP_KEYSAFE_MAX_FILE, &ks), NKP_ERR_PARSE);
	cr_assert_eq(nkp_keysafe_parse(garbage, sizeof(garbage), &ks), NKP_ERR_PARSE);
	cr_assert_eq(nkp_keysafe_parse(NULL, 0, &ks), NKP_ERR_PARSE);
	cr_assert_eq(nkp_keysafe_parse(NULL, 4, &ks), NKP_ERR_INVALID);
	cr_assert_eq(ks, (nkp_keysafe *)garbage);
	cr_assert_eq(nkp_keysafe_parse(garbage, sizeof(garbage), NULL), NKP_ERR_INVALID);
	free(big);
}

/* ---- identities and names ---------------------------------------------- */

Test(keysafe, bad_identities_are_refused, .init = setup)
{
	char name255[NKP_KEYSAFE_MAX_NAME + 1];
	char name256[NKP_KEYSAFE_MAX_NAME + 2];
	char uuid65[NKP_KEYSAFE_MAX_UUID + 2];
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_keysafe *ks = NULL;
	const nkp_vm_identity bad[] = {
		{.vm_uuid = NULL, .vm_name = VM_NAME},
		{.vm_uuid = VM_UUID, .vm_name = NULL},
		{.vm_uuid = "", .vm_name = VM_NAME},
		{.vm_uuid = VM_UUID, .vm_name = ""},
		{.vm_uuid = uuid65, .vm_name = VM_NAME},
		{.vm_uuid = VM_UUID, .vm_name = name256},
		{.vm_uuid = VM_UUID, .vm_name = VM_NAME, .vendor = name256},
		{.vm_uuid = VM_UUID, .vm_name = VM_NAME, .product = ""},
		{.vm_uuid = VM_UUID, .vm_name = VM_NAME, .product_version = name256},
		{.vm_uuid = VM_UUID, .vm_name = "db\n01"},
		{.vm_uuid = VM_UUID "\x1b", .vm_name = VM_NAME},
	};
	nkp_vm_identity ok = {.vm_uuid = VM_UUID, .vm_name = name255, .vendor = name255};

	memset(name255, 'a', sizeof(name255) - 1);
	name255[sizeof(name255) - 1] = '\0';
	memset(name256, 'a', sizeof(name256) - 1);
	name256[sizeof(name256) - 1] = '\0';
	memset(uuid65, '1', sizeof(uuid65) - 1);
	uuid65[sizeof(uuid65) - 1] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(nkp_keysafe_create(p, &bad[i], &ks), NKP_ERR_INVALID, "identity %zu",
			     i);
		cr_assert_null(ks);
	}
	cr_assert_eq(nkp_keysafe_create(NULL, &ident, &ks), NKP_ERR_INVALID);
	cr_assert_eq(nkp_keysafe_create(p, NULL, &ks), NKP_ERR_INVALID);
	cr_assert_eq(nkp_keysafe_create(p, &ident, NULL), NKP_ERR_INVALID);
	cr_assert_null(ks);
	cr_assert_eq(nkp_keysafe_create(p, &ok, &ks), NKP_OK,
		     "255 bytes is the limit, not over it");
	nkp_keysafe_free(ks);
	ks = NULL;
	ok.vm_uuid = "é-ünïcode-名前";
	cr_assert_eq(nkp_keysafe_create(p, &ok, &ks), NKP_OK, "UTF-8 text is fine");
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, component_names_are_checked, .init = setup)
{
	static const char *const good[] = {
		"vm-home",
		"vtpm",
		"disk:0",
		"disk:scsi0-0.1_A",
		"disk:012345678901234567890123456789012345678901234567", /* 48 */
	};
	static const char *const bad[] = {
		"",
		"disk:",
		"disk",
		"disk:0123456789012345678901234567890123456789012345678", /* 49 */
		"disk:a/b",
		"disk:../x",
		"disk: 0",
		"disk:0\n",
		"disk:\xc3\xa9",
		"VM-HOME",
		"vm-home ",
		"vtpm0",
		"Disk:0",
		"nvram",
	};
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_keysafe *ks = NULL;

	cr_assert_not(nkp_component_valid(NULL));
	cr_assert_eq(nkp_keysafe_create(p, &ident, &ks), NKP_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_not(nkp_component_valid(bad[i]), "\"%s\"", bad[i]);
		cr_assert_eq(nkp_keysafe_add_component(ks, p, bad[i]), NKP_ERR_INVALID, "\"%s\"",
			     bad[i]);
		cr_assert_eq(nkp_keysafe_remove_component(ks, p, bad[i]), NKP_ERR_NOT_FOUND,
			     "\"%s\"", bad[i]);
	}
	cr_assert_eq(nkp_keysafe_add_component(ks, p, NULL), NKP_ERR_INVALID);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_assert(nkp_component_valid(good[i]), "\"%s\"", good[i]);
		if (i > 0) {
			cr_assert_eq(nkp_keysafe_add_component(ks, p, good[i]), NKP_OK, "\"%s\"",
				     good[i]);
		}
	}
	cr_assert_eq(nkp_keysafe_component_count(ks), sizeof(good) / sizeof(good[0]));
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, component_count_is_limited, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_keysafe *ks = NULL;
	nkp_keysafe *back;
	char name[16];

	cr_assert_eq(nkp_keysafe_create(p, &ident, &ks), NKP_OK);
	for (size_t i = 1; i < NKP_KEYSAFE_MAX_COMPONENTS; i++) {
		snprintf(name, sizeof(name), "disk:%zu", i);
		cr_assert_eq(nkp_keysafe_add_component(ks, p, name), NKP_OK, "%s", name);
	}
	cr_assert_eq(nkp_keysafe_component_count(ks), NKP_KEYSAFE_MAX_COMPONENTS);
	cr_assert_eq(nkp_keysafe_add_component(ks, p, "disk:extra"), NKP_ERR_TOO_LARGE);
	back = reparse(ks);
	cr_assert_eq(nkp_keysafe_component_count(back), NKP_KEYSAFE_MAX_COMPONENTS);
	nkp_keysafe_free(back);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

/* ---- wrong keys -------------------------------------------------------- */

Test(keysafe, another_provider_or_version_is_key_missing, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_primary *other_provider = primary_make(2, 1, 1);
	nkp_primary *other_version = primary_make(1, 2, 1);
	nkp_primary *const wrong[] = {other_provider, other_version};
	nkp_keysafe *ks = make_three(p, NULL);
	nkp_keysafe *before = reparse(ks);
	nkp_keysafe *deep = NULL;
	uint8_t dek[NKP_KEY_BYTES];

	for (size_t i = 0; i < 2; i++) {
		nkp_primary *w = wrong[i];

		cr_assert_eq(nkp_keysafe_unwrap(ks, w, "disk:0", dek), NKP_ERR_KEY_MISSING);
		cr_assert_eq(nkp_keysafe_add_component(ks, w, "disk:1"), NKP_ERR_KEY_MISSING);
		cr_assert_eq(nkp_keysafe_remove_component(ks, w, "disk:0"), NKP_ERR_KEY_MISSING);
		cr_assert_eq(nkp_keysafe_rekey_shallow(ks, w), NKP_ERR_KEY_MISSING);
		cr_assert_eq(nkp_keysafe_rekey_deep(ks, w, p, &deep), NKP_ERR_KEY_MISSING);
		cr_assert_eq(nkp_keysafe_rewrap(ks, w, p), NKP_ERR_KEY_MISSING);
	}
	cr_assert_null(deep);
	cr_assert(bytes_equal(ks, before), "failed operations must not change the keysafe");
	nkp_keysafe_free(before);
	nkp_keysafe_free(ks);
	nkp_primary_free(other_version);
	nkp_primary_free(other_provider);
	nkp_primary_free(p);
}

Test(keysafe, wrong_key_bytes_for_the_right_version_fail_authentication, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_primary *impostor = primary_make(1, 1, 2);
	nkp_keysafe *ks = make_three(p, NULL);
	nkp_keysafe *before = reparse(ks);
	nkp_keysafe *deep = NULL;
	uint8_t dek[NKP_KEY_BYTES];

	cr_assert_eq(nkp_keysafe_unwrap(ks, impostor, "disk:0", dek), NKP_ERR_AUTH);
	cr_assert_eq(nkp_keysafe_add_component(ks, impostor, "disk:1"), NKP_ERR_AUTH);
	cr_assert_eq(nkp_keysafe_remove_component(ks, impostor, "disk:0"), NKP_ERR_AUTH);
	cr_assert_eq(nkp_keysafe_rekey_shallow(ks, impostor), NKP_ERR_AUTH);
	cr_assert_eq(nkp_keysafe_rekey_deep(ks, impostor, p, &deep), NKP_ERR_AUTH);
	cr_assert_null(deep);
	cr_assert(bytes_equal(ks, before));
	nkp_keysafe_free(before);
	nkp_keysafe_free(ks);
	nkp_primary_free(impostor);
	nkp_primary_free(p);
}

/* ---- rewrap and rekey -------------------------------------------------- */

Test(keysafe, rewrap_moves_to_the_new_version_and_keeps_every_dek, .init = setup)
{
	nkp_primary *v1 = primary_make(1, 1, 1);
	nkp_primary *v2 = primary_make(1, 2, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	uint8_t dek[NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(v1, deks);
	uint8_t key_id[NKP_ID_BYTES];
	nkp_keysafe *back;

	memcpy(key_id, nkp_keysafe_key_id(ks), sizeof(key_id));
	cr_assert_eq(nkp_keysafe_rewrap(ks, v1, v2), NKP_OK);
	cr_assert_eq(nkp_keysafe_primary_version(ks), 2);
	cr_assert_arr_eq(nkp_keysafe_key_id(ks), key_id, sizeof(key_id));
	assert_deks(ks, v2, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	cr_assert_eq(nkp_keysafe_unwrap(ks, v1, "disk:0", dek), NKP_ERR_KEY_MISSING);
	back = reparse(ks);
	assert_deks(back, v2, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	/* and back again */
	cr_assert_eq(nkp_keysafe_rewrap(back, v2, v1), NKP_OK);
	assert_deks(back, v1, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	nkp_keysafe_free(back);
	nkp_keysafe_free(ks);
	nkp_primary_free(v2);
	nkp_primary_free(v1);
}

Test(keysafe, rewrap_refuses_wrong_from_and_another_provider, .init = setup)
{
	nkp_primary *v1 = primary_make(1, 1, 1);
	nkp_primary *v2 = primary_make(1, 2, 1);
	nkp_primary *other = primary_make(2, 1, 1);
	nkp_keysafe *ks = make_three(v1, NULL);
	nkp_keysafe *before = reparse(ks);

	cr_assert_eq(nkp_keysafe_rewrap(ks, v2, v1), NKP_ERR_KEY_MISSING);
	cr_assert_eq(nkp_keysafe_rewrap(ks, other, v2), NKP_ERR_KEY_MISSING);
	cr_assert_eq(nkp_keysafe_rewrap(ks, v1, other), NKP_ERR_INVALID);
	cr_assert_eq(nkp_keysafe_rewrap(ks, v1, NULL), NKP_ERR_INVALID);
	cr_assert_eq(nkp_keysafe_rewrap(NULL, v1, v2), NKP_ERR_INVALID);
	cr_assert(bytes_equal(ks, before));
	nkp_keysafe_free(before);
	nkp_keysafe_free(ks);
	nkp_primary_free(other);
	nkp_primary_free(v2);
	nkp_primary_free(v1);
}

/* The sealed KEK and the wrapped DEK of disk:0, as stored. */
static void stored_wraps(const nkp_keysafe *ks, uint8_t kek[NKP_KEY_BYTES + NKP_TAG_BYTES],
			 uint8_t disk[NKP_KEY_BYTES + NKP_TAG_BYTES])
{
	size_t len = 0;
	uint8_t *buf = ser(ks, &len);
	Nkp__Keysafe__KeysafeFile *f = nkp__keysafe__keysafe_file__unpack(NULL, len, buf);
	Nkp__Keysafe__KeysafeBody *b;

	cr_assert_not_null(f);
	b = nkp__keysafe__keysafe_body__unpack(NULL, f->body.len, f->body.data);
	cr_assert_not_null(b);
	memcpy(kek, f->wrapped_kek.data, NKP_KEY_BYTES + NKP_TAG_BYTES);
	memcpy(disk, b->components[1]->wrapped.data, NKP_KEY_BYTES + NKP_TAG_BYTES);
	nkp__keysafe__keysafe_body__free_unpacked(b, NULL);
	nkp__keysafe__keysafe_file__free_unpacked(f, NULL);
	free(buf);
}

Test(keysafe, shallow_rekey_keeps_deks_and_changes_the_wrapped_kek, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	uint8_t kek0[NKP_KEY_BYTES + NKP_TAG_BYTES], kek1[NKP_KEY_BYTES + NKP_TAG_BYTES];
	uint8_t disk0[NKP_KEY_BYTES + NKP_TAG_BYTES], disk1[NKP_KEY_BYTES + NKP_TAG_BYTES];
	uint8_t key_id[NKP_ID_BYTES];
	nkp_keysafe *back;

	memcpy(key_id, nkp_keysafe_key_id(ks), sizeof(key_id));
	stored_wraps(ks, kek0, disk0);
	cr_assert_eq(nkp_keysafe_rekey_shallow(ks, p), NKP_OK);
	stored_wraps(ks, kek1, disk1);
	cr_assert(memcmp(kek0, kek1, sizeof(kek0)) != 0);
	cr_assert(memcmp(disk0, disk1, sizeof(disk0)) != 0, "DEKs are resealed under the new KEK");
	cr_assert_arr_eq(nkp_keysafe_key_id(ks), key_id, sizeof(key_id));
	cr_assert_eq(nkp_keysafe_primary_version(ks), 1);
	assert_deks(ks, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	back = reparse(ks);
	assert_deks(back, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	nkp_keysafe_free(back);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, deep_rekey_makes_new_deks_and_leaves_the_original, .init = setup)
{
	nkp_primary *v1 = primary_make(1, 1, 1);
	nkp_primary *v2 = primary_make(1, 2, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	uint8_t dek[NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(v1, deks);
	nkp_keysafe *before = reparse(ks);
	nkp_keysafe *deep = NULL;
	nkp_keysafe *back;

	cr_assert_eq(nkp_keysafe_rekey_deep(ks, v1, v2, &deep), NKP_OK);
	cr_assert(bytes_equal(ks, before), "the original keysafe is untouched");
	assert_deks(ks, v1, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	cr_assert(memcmp(nkp_keysafe_key_id(deep), nkp_keysafe_key_id(ks), NKP_ID_BYTES) != 0);
	cr_assert_eq(nkp_keysafe_primary_version(deep), 2);
	cr_assert_str_eq(nkp_keysafe_vm_uuid(deep), VM_UUID);
	cr_assert_str_eq(nkp_keysafe_vm_name(deep), VM_NAME);
	cr_assert_eq(nkp_keysafe_attribute_count(deep), nkp_keysafe_attribute_count(ks));
	cr_assert_eq(nkp_keysafe_component_count(deep), 3);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_str_eq(nkp_keysafe_component(deep, i), three[i]);
		cr_assert_eq(nkp_keysafe_unwrap(deep, v2, three[i], dek), NKP_OK);
		for (size_t j = 0; j < 3; j++) {
			cr_assert(memcmp(dek, deks[j], NKP_KEY_BYTES) != 0, "%s reuses a DEK",
				  three[i]);
		}
	}
	cr_assert_eq(nkp_keysafe_unwrap(deep, v1, "disk:0", dek), NKP_ERR_KEY_MISSING);
	back = reparse(deep);
	cr_assert(bytes_equal(back, deep));
	nkp_keysafe_free(back);
	nkp_keysafe_free(deep);
	nkp_keysafe_free(before);
	nkp_keysafe_free(ks);
	nkp_primary_free(v2);
	nkp_primary_free(v1);
}

/* ---- remove ------------------------------------------------------------ */

Test(keysafe, remove_takes_disks_first_and_vm_home_last, .init = setup)
{
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	uint8_t dek[NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	nkp_keysafe *before = reparse(ks);
	nkp_keysafe *back;

	cr_assert_eq(nkp_keysafe_remove_component(ks, p, NKP_COMPONENT_VM_HOME), NKP_ERR_STATE);
	cr_assert(bytes_equal(ks, before));
	cr_assert_eq(nkp_keysafe_remove_component(ks, p, "disk:0"), NKP_OK);
	cr_assert_eq(nkp_keysafe_component_count(ks), 2);
	cr_assert_not(nkp_keysafe_has_component(ks, "disk:0"));
	cr_assert_eq(nkp_keysafe_unwrap(ks, p, "disk:0", dek), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_keysafe_remove_component(ks, p, "disk:0"), NKP_ERR_NOT_FOUND);
	back = reparse(ks);
	cr_assert_eq(nkp_keysafe_unwrap(back, p, NKP_COMPONENT_VTPM, dek), NKP_OK);
	cr_assert_arr_eq(dek, deks[2], NKP_KEY_BYTES);
	cr_assert_eq(nkp_keysafe_remove_component(back, p, NKP_COMPONENT_VM_HOME), NKP_ERR_STATE);
	cr_assert_eq(nkp_keysafe_remove_component(back, p, NKP_COMPONENT_VTPM), NKP_OK);
	cr_assert_eq(nkp_keysafe_unwrap(back, p, NKP_COMPONENT_VM_HOME, dek), NKP_OK);
	cr_assert_arr_eq(dek, deks[0], NKP_KEY_BYTES);
	cr_assert_eq(nkp_keysafe_remove_component(back, p, NKP_COMPONENT_VM_HOME), NKP_OK);
	cr_assert_eq(nkp_keysafe_component_count(back), 0);
	nkp_keysafe_free(ks);
	ks = reparse(back);
	cr_assert_eq(nkp_keysafe_component_count(ks), 0);
	cr_assert_eq(nkp_keysafe_unwrap(ks, p, NKP_COMPONENT_VM_HOME, dek), NKP_ERR_NOT_FOUND);
	nkp_keysafe_free(ks);
	nkp_keysafe_free(back);
	nkp_keysafe_free(before);
	nkp_primary_free(p);
}

/* ---- no secrets in the file -------------------------------------------- */

static void assert_absent(const uint8_t *buf, size_t len, const uint8_t key[NKP_KEY_BYTES],
			  const char *what)
{
	for (size_t off = 0; off + 16 <= NKP_KEY_BYTES; off += 8) {
		cr_assert_null(memmem(buf, len, key + off, 16), "%s bytes %zu.. are in the file",
			       what, off);
	}
}

Test(keysafe, serialized_bytes_never_contain_a_key, .init = setup_deterministic)
{
	nkp_primary *p = primary_make(1, 1, 1);
	nkp_primary *v2 = primary_make(1, 2, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	uint8_t key[NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	size_t len = 0;
	uint8_t *buf;

	cr_assert_eq(nkp_keysafe_rekey_shallow(ks, p), NKP_OK);
	cr_assert_eq(nkp_keysafe_rewrap(ks, p, v2), NKP_OK);
	buf = ser(ks, &len);
	/* Every 32-byte random draw is a KEK or a DEK: 2 KEKs, 3 DEKs. */
	cr_assert_geq(n_recorded, 5);
	for (size_t i = 0; i < n_recorded; i++) {
		assert_absent(buf, len, recorded[i], "random key");
	}
	for (size_t i = 0; i < 3; i++) {
		assert_absent(buf, len, deks[i], "DEK");
	}
	nkp_key_export(nkp_primary_key(p), key);
	assert_absent(buf, len, key, "primary key");
	nkp_key_export(nkp_primary_kek_key(p), key);
	assert_absent(buf, len, key, "primary KEK subkey");
	nkp_key_export(nkp_primary_key(v2), key);
	assert_absent(buf, len, key, "primary key v2");
	nkp_key_export(nkp_primary_kek_key(v2), key);
	assert_absent(buf, len, key, "primary KEK subkey v2");
	sodium_memzero(key, sizeof(key));
	free(buf);
	nkp_keysafe_free(ks);
	nkp_primary_free(v2);
	nkp_primary_free(p);
}

/* ---- files ------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = malloc(NKP_KEYSAFE_MAX_FILE + 1);
	size_t n;

	cr_assert_not_null(f, "cannot open %s", path);
	n = fread(buf, 1, NKP_KEYSAFE_MAX_FILE + 1, f);
	fclose(f);
	buf[n < NKP_KEYSAFE_MAX_FILE ? n : NKP_KEYSAFE_MAX_FILE] = '\0';
	*len = n;
	return buf;
}

static void spill(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "cannot write %s", path);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

Test(keysafe, save_and_load_round_trip_with_mode_0600, .init = setup)
{
	char dir[] = "/tmp/nkp-keysafe-XXXXXX";
	char path[64], prev[80];
	nkp_primary *p = primary_make(1, 1, 1);
	uint8_t deks[3][NKP_KEY_BYTES];
	nkp_keysafe *ks = make_three(p, deks);
	nkp_keysafe *loaded = NULL;
	struct stat st;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vm.keysafe", dir);
	snprintf(prev, sizeof(prev), "%s.prev", path);
	cr_assert_eq(nkp_keysafe_save(ks, path), NKP_OK);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_eq(nkp_keysafe_load(path, &loaded), NKP_OK);
	assert_deks(loaded, p, (const uint8_t(*)[NKP_KEY_BYTES])deks);
	cr_assert(bytes_equal(ks, loaded));
	nkp_keysafe_free(loaded);
	loaded = NULL;

	/* A rewrite keeps no copy of the old wrapped keys. */
	cr_assert_eq(nkp_keysafe_rekey_shallow(ks, p), NKP_OK);
	cr_assert_eq(nkp_keysafe_save(ks, path), NKP_OK);
	cr_assert_neq(stat(prev, &st), 0);
	cr_assert_eq(nkp_keysafe_load(path, &loaded), NKP_OK);
	cr_assert(bytes_equal(ks, loaded));
	nkp_keysafe_free(loaded);
	unlink(path);
	rmdir(dir);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

Test(keysafe, load_reports_missing_oversized_and_garbage_files, .init = setup)
{
	char dir[] = "/tmp/nkp-keysafe-XXXXXX";
	char path[64];
	uint8_t *big = calloc(1, NKP_KEYSAFE_MAX_FILE + 100);
	nkp_keysafe *ks = NULL;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vm.keysafe", dir);
	cr_assert_eq(nkp_keysafe_load(path, &ks), NKP_ERR_NOT_FOUND);
	spill(path, big, NKP_KEYSAFE_MAX_FILE + 100);
	cr_assert_eq(nkp_keysafe_load(path, &ks), NKP_ERR_TOO_LARGE);
	spill(path, "\xff\xff\xff", 3);
	cr_assert_eq(nkp_keysafe_load(path, &ks), NKP_ERR_PARSE);
	cr_assert_null(ks);
	cr_assert_eq(nkp_keysafe_load(NULL, &ks), NKP_ERR_INVALID);
	cr_assert_eq(nkp_keysafe_save(NULL, path), NKP_ERR_INVALID);
	unlink(path);
	rmdir(dir);
	free(big);
}

/* ---- known-answer vector ----------------------------------------------- */

static const nkp_vm_identity kat_ident = {
	.vm_uuid = "0b5e6f4a-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
	.vm_name = "kat-vm",
	.vendor = "nkp",
	.product = "nkp",
	.product_version = "0.1.0",
};
static const char *const kat_components[] = {NKP_COMPONENT_VM_HOME, "disk:0"};

static nkp_primary *kat_primary(const uint8_t id[NKP_ID_BYTES], uint32_t version,
				const uint8_t bytes[NKP_KEY_BYTES])
{
	nkp_key *key = NULL;
	nkp_primary *p = NULL;

	cr_assert_eq(nkp_key_from_bytes(bytes, &key), NKP_OK);
	cr_assert_eq(nkp_primary_new(id, version, key, &p), NKP_OK);
	nkp_key_free(key);
	return p;
}

static void kat_fixed(uint8_t id[NKP_ID_BYTES], uint8_t bytes[NKP_KEY_BYTES])
{
	for (size_t i = 0; i < NKP_ID_BYTES; i++) {
		id[i] = (uint8_t)i;
	}
	for (size_t i = 0; i < NKP_KEY_BYTES; i++) {
		bytes[i] = (uint8_t)(0x40 + i);
	}
}

static void hexline(FILE *f, const char *name, const uint8_t *b, size_t n)
{
	char hex[2 * NKP_KEYSAFE_MAX_FILE + 1];

	sodium_bin2hex(hex, sizeof(hex), b, n);
	fprintf(f, "%s = %s\n", name, hex);
}

static void kat_regenerate(const nkp_keysafe *ks, const nkp_primary *p, const uint8_t *buf,
			   size_t len)
{
	uint8_t id[NKP_ID_BYTES], bytes[NKP_KEY_BYTES], dek[NKP_KEY_BYTES];
	char name[32], path[1024];
	FILE *f;

	kat_fixed(id, bytes);
	vec_emit("keysafe-v1.bin", buf, len);
	snprintf(path, sizeof(path), "%s/keysafe-v1.txt", vec_out_dir());
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "# Keysafe format 1 known-answer vector: keysafe-v1.bin opens with the\n"
		   "# primary key below to the DEKs below. Test keys only.\n"
		   "# Regenerate: tests/vectors/regen (see tests/vectors/README.md)\n");
	hexline(f, "rng_seed", det_seed, sizeof(det_seed));
	fprintf(f, "clock_unix = %u\n", FIXED_CLOCK);
	hexline(f, "provider_id", id, sizeof(id));
	fprintf(f, "primary_version = 1\n");
	hexline(f, "primary_key", bytes, sizeof(bytes));
	fprintf(f, "vm_uuid = %s\nvm_name = %s\n", kat_ident.vm_uuid, kat_ident.vm_name);
	hexline(f, "key_id", nkp_keysafe_key_id(ks), NKP_ID_BYTES);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(nkp_keysafe_unwrap(ks, p, kat_components[i], dek), NKP_OK);
		snprintf(name, sizeof(name), "dek %s", kat_components[i]);
		hexline(f, name, dek, sizeof(dek));
	}
	hexline(f, "file", buf, len);
	cr_assert_eq(fclose(f), 0);
}

Test(keysafe, known_answer_vector_matches_checked_in_bytes, .init = setup_deterministic)
{
	uint8_t id[NKP_ID_BYTES], bytes[NKP_KEY_BYTES];
	nkp_primary *p;
	nkp_keysafe *ks = NULL;
	uint8_t *buf, *expect;
	size_t len = 0, elen = 0;

	kat_fixed(id, bytes);
	p = kat_primary(id, 1, bytes);
	cr_assert_eq(nkp_keysafe_create(p, &kat_ident, &ks), NKP_OK);
	cr_assert_eq(nkp_keysafe_add_component(ks, p, "disk:0"), NKP_OK);
	buf = ser(ks, &len);
	if (vec_out_dir() != NULL) {
		kat_regenerate(ks, p, buf, len);
	}
	expect = slurp(KAT_BIN, &elen);
	cr_assert_eq(len, elen, "serialized length %zu, vector %zu", len, elen);
	cr_assert_arr_eq(buf, expect, len, "serialized keysafe differs from " KAT_BIN);
	free(expect);
	free(buf);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}

/* Value of "name = value" in the vector description, or NULL. */
static const char *kat_value(char *txt, const char *name)
{
	size_t n = strlen(name);

	for (char *line = strtok(txt, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (strncmp(line, name, n) == 0 && strncmp(line + n, " = ", 3) == 0) {
			return line + n + 3;
		}
	}
	return NULL;
}

static void kat_hex(const char *path, const char *name, uint8_t *out, size_t n)
{
	size_t len = 0, got = 0;
	char *txt = (char *)slurp(path, &len);
	const char *hex = kat_value(txt, name);

	cr_assert_not_null(hex, "%s has no \"%s\"", path, name);
	cr_assert_eq(sodium_hex2bin(out, n, hex, strlen(hex), NULL, &got, NULL), 0);
	cr_assert_eq(got, n, "%s: \"%s\" has %zu bytes", path, name, got);
	free(txt);
}

Test(keysafe, known_answer_vector_opens_to_the_recorded_deks, .init = setup)
{
	uint8_t id[NKP_ID_BYTES], bytes[NKP_KEY_BYTES], key_id[NKP_ID_BYTES];
	uint8_t expect[NKP_KEY_BYTES], dek[NKP_KEY_BYTES];
	char name[32];
	nkp_primary *p;
	nkp_keysafe *ks = NULL;
	size_t len = 0;
	uint8_t *buf = slurp(KAT_BIN, &len);

	kat_hex(KAT_TXT, "provider_id", id, sizeof(id));
	kat_hex(KAT_TXT, "primary_key", bytes, sizeof(bytes));
	kat_hex(KAT_TXT, "key_id", key_id, sizeof(key_id));
	p = kat_primary(id, 1, bytes);
	cr_assert_eq(nkp_keysafe_parse(buf, len, &ks), NKP_OK);
	cr_assert_arr_eq(nkp_keysafe_provider_id(ks), id, sizeof(id));
	cr_assert_arr_eq(nkp_keysafe_key_id(ks), key_id, sizeof(key_id));
	cr_assert_eq(nkp_keysafe_primary_version(ks), 1);
	cr_assert_eq(nkp_keysafe_created(ks), FIXED_CLOCK);
	cr_assert_str_eq(nkp_keysafe_vm_uuid(ks), kat_ident.vm_uuid);
	cr_assert_str_eq(nkp_keysafe_vm_name(ks), kat_ident.vm_name);
	cr_assert_eq(nkp_keysafe_component_count(ks), 2);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_str_eq(nkp_keysafe_component(ks, i), kat_components[i]);
		snprintf(name, sizeof(name), "dek %s", kat_components[i]);
		kat_hex(KAT_TXT, name, expect, sizeof(expect));
		cr_assert_eq(nkp_keysafe_unwrap(ks, p, kat_components[i], dek), NKP_OK);
		cr_assert_arr_eq(dek, expect, sizeof(dek), "%s", kat_components[i]);
	}
	free(buf);
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
}
