/* nkpi_pb_strict: protobuf bytes checked against a descriptor before
 * protobuf-c allocates for them. */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "internal.h"
#include "wire.pb-c.h"

static uint8_t *pack_push(size_t n_providers, size_t n_versions, size_t *len)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	uint8_t *dsbuf;
	Nkp__Wire__ProviderKeys *pk = calloc(n_providers, sizeof(*pk));
	Nkp__Wire__ProviderKeys **pp = calloc(n_providers, sizeof(*pp));
	Nkp__Wire__VersionKey *vk = calloc(n_versions, sizeof(*vk));
	Nkp__Wire__VersionKey **vp = calloc(n_versions, sizeof(*vp));
	uint8_t key[32] = {7}, id[16] = {1}, ch[16] = {2};
	uint8_t *buf;

	for (size_t j = 0; j < n_versions; j++) {
		nkp__wire__version_key__init(&vk[j]);
		vk[j].version = (uint32_t)j + 1;
		vk[j].state = 2;
		vk[j].key.data = key;
		vk[j].key.len = sizeof(key);
		vk[j].created_unix = UINT64_MAX;
		vp[j] = &vk[j];
	}
	for (size_t i = 0; i < n_providers; i++) {
		nkp__wire__provider_keys__init(&pk[i]);
		pk[i].id.data = id;
		pk[i].id.len = sizeof(id);
		pk[i].name = "gold";
		pk[i].is_default = true;
		pk[i].versions = vp;
		pk[i].n_versions = n_versions;
		pp[i] = &pk[i];
	}
	push.challenge.data = ch;
	push.challenge.len = sizeof(ch);
	ds.epoch = UINT64_MAX;
	ds.counter = 42;
	ds.providers = pp;
	ds.n_providers = n_providers;
	dsbuf = malloc(nkp__wire__desired_state__get_packed_size(&ds) + 1);
	push.desired.len = nkp__wire__desired_state__pack(&ds, dsbuf);
	push.desired.data = dsbuf;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m.push = &push;
	*len = nkp__wire__message__get_packed_size(&m);
	buf = malloc(*len + 64);
	nkp__wire__message__pack(&m, buf);
	free(dsbuf);
	free(vp);
	free(vk);
	free(pp);
	free(pk);
	return buf;
}

static nkp_err check(const uint8_t *b, size_t n)
{
	return nkpi_pb_strict(&nkp__wire__message__descriptor, b, n);
}

Test(pbstrict, well_formed_messages_pass)
{
	size_t len = 0;
	uint8_t *b = pack_push(3, 5, &len);

	cr_assert_eq(check(b, len), NKP_OK);
	cr_assert_eq(check(NULL, 0), NKP_OK);
	free(b);
}

Test(pbstrict, the_largest_push_fits_the_receive_limit)
{
	/* NKPI_PUSH_MAX bounds one push: its providers' versions at their
	 * largest encodings, with room for the framing. */
	size_t len = 0;
	uint8_t *b = pack_push(1, 1, &len);

	cr_assert_leq(len, NKPI_PUSH_PROVIDER_BYTES + NKPI_PUSH_VERSION_BYTES + 64);
	free(b);
	b = pack_push(16, NKPI_PUSH_MAX_VERSIONS / 16, &len);
	cr_assert_lt(len + NKPI_PUSH_FRAMING_BYTES / 2, NKPI_PUSH_MAX);
	cr_assert_eq(check(b, len), NKP_OK);
	free(b);
}

Test(pbstrict, unknown_fields_are_refused_at_any_depth)
{
	size_t len = 0;
	uint8_t *b = pack_push(1, 1, &len);
	uint8_t top[] = {0x78, 0x01}; /* field 15, varint 1 */

	memcpy(b + len, top, sizeof(top));
	cr_assert_eq(check(b, len + sizeof(top)), NKP_ERR_PARSE);
	/* A whole buffer of unknown fields. */
	{
		uint8_t bomb[4096];

		for (size_t i = 0; i < sizeof(bomb); i += 2) {
			bomb[i] = 0x78;
			bomb[i + 1] = 0x01;
		}
		cr_assert_eq(check(bomb, sizeof(bomb)), NKP_ERR_PARSE);
	}
	free(b);
	/* Nested: Message.push holding an unknown field 9. */
	{
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
			&nkp__wire__message__descriptor, "push");
		uint8_t nested[] = {(uint8_t)(f->id << 3 | 2), 2, 0x48, 0x01};

		nested[1] = 0;
		cr_assert_eq(check(nested, 2), NKP_OK); /* an empty push */
		nested[1] = 2;
		cr_assert_eq(check(nested, sizeof(nested)), NKP_ERR_PARSE);
	}
}

Test(pbstrict, wrong_wire_types_lengths_varints_and_groups_are_refused)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(
		&nkp__wire__message__descriptor, "push");
	uint8_t tag = (uint8_t)(f->id << 3);
	uint8_t as_varint[] = {tag | 0, 1};
	uint8_t as_fixed32[] = {tag | 5, 0, 0, 0, 0};
	uint8_t long_len[] = {tag | 2, 5, 0};
	uint8_t group[] = {tag | 3, tag | 4};
	uint8_t bad_varint[] = {tag | 2, 0x80, 0x80, 0x80, 0x80, 0x80,
				0x80,	 0x80, 0x80, 0x80, 0x02};
	uint8_t field_zero[] = {0x00, 0x00};

	cr_assert_eq(check(as_varint, sizeof(as_varint)), NKP_ERR_PARSE);
	cr_assert_eq(check(as_fixed32, sizeof(as_fixed32)), NKP_ERR_PARSE);
	cr_assert_eq(check(long_len, sizeof(long_len)), NKP_ERR_PARSE);
	cr_assert_eq(check(group, sizeof(group)), NKP_ERR_PARSE);
	cr_assert_eq(check(bad_varint, sizeof(bad_varint)), NKP_ERR_PARSE);
	cr_assert_eq(check(field_zero, sizeof(field_zero)), NKP_ERR_PARSE);
	cr_assert_eq(check(long_len, 1), NKP_ERR_PARSE);
}

Test(pbstrict, nesting_is_bounded)
{
	/* Our schemas nest at most four deep (Message, Push, ProviderKeys,
	 * VersionKey): all accepted under the bound. */
	size_t len = 0;
	uint8_t *b = pack_push(2, 2, &len);

	cr_assert_eq(check(b, len), NKP_OK);
	cr_assert_geq(NKPI_PB_MAX_DEPTH, 4);
	free(b);
}

Test(pbstrict, misuse_is_invalid)
{
	uint8_t x = 0;

	cr_assert_eq(nkpi_pb_strict(NULL, &x, 1), NKP_ERR_INVALID);
	cr_assert_eq(nkpi_pb_strict(&nkp__wire__message__descriptor, NULL, 1), NKP_ERR_INVALID);
}

Test(pbstrict, a_field_once_and_one_oneof_member_only)
{
	/* Half a million empty Transport members of Frame's oneof: each is
	 * two bytes here and a merge in protobuf-c. */
	size_t len = NKPI_PUSH_MAX - 64, pos = 0;
	uint8_t *f = malloc(len);
	uint8_t two_members[] = {0x32, 0x00, 0x22, 0x00}; /* transport, then init */
	uint8_t one[] = {0x32, 0x00};
	uint8_t twice_scalar[] = {0x32, 0x0a, 0x0d, 1, 0, 0, 0, 0x0d, 2, 0, 0, 0};
	uint8_t nested_once[] = {0x32, 0x05, 0x0d, 1, 0, 0, 0};
	size_t blen = 0;
	uint8_t *b = pack_push(1, 1, &blen);

	cr_assert_not_null(f);
	while (pos + 2 <= len) {
		f[pos++] = 0x32;
		f[pos++] = 0x00;
	}
	cr_assert_eq(nkpi_pb_strict(&nkp__wire__frame__descriptor, f, pos), NKP_ERR_PARSE);
	cr_assert_eq(nkpi_pb_strict(&nkp__wire__frame__descriptor, f, 4), NKP_ERR_PARSE);
	cr_assert_eq(nkpi_pb_strict(&nkp__wire__frame__descriptor, one, sizeof(one)), NKP_OK);
	cr_assert_eq(
		nkpi_pb_strict(&nkp__wire__frame__descriptor, two_members, sizeof(two_members)),
		NKP_ERR_PARSE);
	/* A scalar twice inside a submessage, and once. */
	cr_assert_eq(
		nkpi_pb_strict(&nkp__wire__frame__descriptor, twice_scalar, sizeof(twice_scalar)),
		NKP_ERR_PARSE);
	cr_assert_eq(
		nkpi_pb_strict(&nkp__wire__frame__descriptor, nested_once, sizeof(nested_once)),
		NKP_OK);
	/* Message's oneof: a push, then the push again. */
	b = realloc(b, 2 * blen);
	cr_assert_not_null(b);
	memcpy(b + blen, b, blen);
	cr_assert_eq(check(b, blen), NKP_OK);
	cr_assert_eq(check(b, 2 * blen), NKP_ERR_PARSE);
	free(b);
	free(f);
}
