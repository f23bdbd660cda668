/* The keyset codec: what is encoded comes back unchanged, the bytes are
 * those the formats fix (the host-keys known-answer vector, the
 * DesiredState as built field by field), and every keyset a host must
 * refuse is refused. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "hoststate.pb-c.h"
#include "internal.h"
#include "keyset.h"
#include "vectors.h"
#include "wire.pb-c.h"

/* A fixed keyset: provider i has id 0x10*(i+1).., name "p<i>", versions
 * 1..n with keys (i << 4 | j) repeated, all staged but the first
 * (active); provider 0 is the default. */
#define MAXP 4
#define MAXV 4

typedef struct fixture {
	size_t np;
	size_t nv[MAXP];
	uint8_t id[MAXP][NKP_ID_BYTES];
	char name[MAXP][8];
	uint8_t *keys; /* sodium_malloc, MAXP * MAXV keys */
} fixture;

static void fixture_init(fixture *f, size_t np, size_t nv)
{
	memset(f, 0, sizeof(*f));
	cr_assert_eq(nkp_init(), NKP_OK);
	f->keys = sodium_malloc(MAXP * MAXV * NKP_KEY_BYTES);
	cr_assert_not_null(f->keys);
	f->np = np;
	for (size_t i = 0; i < np; i++) {
		f->nv[i] = nv;
		memset(f->id[i], (int)(0x10 * (i + 1)), NKP_ID_BYTES);
		snprintf(f->name[i], sizeof(f->name[i]), "p%zu", i);
		for (size_t j = 0; j < MAXV; j++) {
			memset(f->keys + (i * MAXV + j) * NKP_KEY_BYTES, (int)(i << 4 | j),
			       NKP_KEY_BYTES);
		}
	}
}

static void fixture_fini(fixture *f)
{
	sodium_free(f->keys);
}

static nkpi_keyset_version fixture_version(const fixture *f, size_t i, size_t j)
{
	nkpi_keyset_version v = {
		.version = (uint32_t)j + 1,
		.state = j == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_STAGED,
		.created_unix = 1767225600u + i * 10 + j,
		.key = f->keys + (i * MAXV + j) * NKP_KEY_BYTES,
	};

	return v;
}

static void encode(const fixture *f, nkpi_keyset_enc *e)
{
	cr_assert_eq(nkpi_keyset_enc_init(e, f->np, f->np * MAXV), NKP_OK);
	for (size_t i = 0; i < f->np; i++) {
		nkpi_keyset_provider p = {
			.id = f->id[i],
			.name = f->name[i],
			.is_default = i == 0,
			.backed_up = true,
			.tpm_only = i == 2,
		};

		nkpi_keyset_enc_provider(e, &p);
		for (size_t j = 0; j < f->nv[i]; j++) {
			nkpi_keyset_version v = fixture_version(f, i, j);

			nkpi_keyset_enc_version(e, &v);
		}
	}
}

static uint8_t *pack_desired(Nkp__Wire__ProviderKeys **pp, size_t n, size_t *len)
{
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	uint8_t *buf;

	ds.epoch = 0x0123456789abcdefu;
	ds.counter = 42;
	ds.providers = pp;
	ds.n_providers = n;
	*len = nkp__wire__desired_state__get_packed_size(&ds);
	buf = malloc(*len + 1);
	cr_assert_eq(nkp__wire__desired_state__pack(&ds, buf), *len);
	return buf;
}

Test(keyset, what_is_encoded_decodes_to_the_same_keyset)
{
	fixture f;
	nkpi_keyset_enc e;
	nkpi_keyset ks;
	Nkp__Wire__DesiredState *ds;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(nkp_init(), NKP_OK);
	fixture_init(&f, 3, 3);
	f.nv[1] = 1;
	encode(&f, &e);
	cr_assert_eq(e.n_providers, 3);
	buf = pack_desired(e.providers, e.n_providers, &len);
	nkpi_keyset_enc_fini(&e);
	ds = nkpi_keyset_desired_unpack(buf, len, &nkpi_wiping_allocator);
	cr_assert_not_null(ds);
	cr_assert_eq(ds->epoch, 0x0123456789abcdefu);
	cr_assert_eq(ds->counter, 42);
	cr_assert_eq(nkpi_keyset_check(ds->n_providers, ds->providers, &ks), NKP_OK);
	cr_assert_eq(ks.n_providers, 3);
	for (size_t i = 0; i < 3; i++) {
		nkpi_keyset_provider p;

		nkpi_keyset_provider_at(&ks, i, &p);
		cr_assert_arr_eq(p.id, f.id[i], NKP_ID_BYTES);
		cr_assert_str_eq(p.name, f.name[i]);
		cr_assert_eq(p.is_default, i == 0);
		cr_assert(p.backed_up);
		cr_assert_eq(p.tpm_only, i == 2);
		cr_assert_eq(p.n_versions, f.nv[i]);
		for (size_t j = 0; j < p.n_versions; j++) {
			nkpi_keyset_version v, want = fixture_version(&f, i, j);

			nkpi_keyset_version_at(&ks, i, j, &v);
			cr_assert_eq(v.version, want.version);
			cr_assert_eq(v.state, want.state);
			cr_assert_eq(v.created_unix, want.created_unix);
			cr_assert_eq(sodium_memcmp(v.key, want.key, NKP_KEY_BYTES), 0);
		}
	}
	nkp__wire__desired_state__free_unpacked(ds, &nkpi_wiping_allocator);
	free(buf);
	fixture_fini(&f);
}

Test(keyset, the_encoder_references_the_callers_keys_and_copies_none)
{
	fixture f;
	nkpi_keyset_enc e;

	fixture_init(&f, 2, 2);
	encode(&f, &e);
	for (size_t i = 0; i < 2; i++) {
		for (size_t j = 0; j < 2; j++) {
			const Nkp__Wire__VersionKey *v = e.providers[i]->versions[j];

			cr_assert_eq(v->key.data, f.keys + (i * MAXV + j) * NKP_KEY_BYTES);
			cr_assert_eq(v->key.len, NKP_KEY_BYTES);
		}
		cr_assert_eq(e.providers[i]->id.data, f.id[i]);
	}
	nkpi_keyset_enc_fini(&e);
	cr_assert_null(e.block);
	nkpi_keyset_enc_fini(&e);
	fixture_fini(&f);
}

Test(keyset, an_empty_keyset_encodes_and_decodes)
{
	nkpi_keyset_enc e;
	nkpi_keyset ks;
	Nkp__Wire__DesiredState *ds;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(nkpi_keyset_enc_init(&e, 0, 0), NKP_OK);
	buf = pack_desired(e.providers, e.n_providers, &len);
	nkpi_keyset_enc_fini(&e);
	ds = nkpi_keyset_desired_unpack(buf, len, NULL);
	cr_assert_not_null(ds);
	cr_assert_eq(nkpi_keyset_check(ds->n_providers, ds->providers, &ks), NKP_OK);
	cr_assert_eq(ks.n_providers, 0);
	nkp__wire__desired_state__free_unpacked(ds, NULL);
	free(buf);
}

/* The DesiredState as nkpd built it before the codec, field by field. */
Test(keyset, desired_state_bytes_are_those_of_the_format)
{
	Nkp__Wire__ProviderKeys pk[2], *pkp[2];
	Nkp__Wire__VersionKey vk[4], *vkp[4];
	uint8_t *want, *got;
	size_t wlen, glen, vi = 0;
	nkpi_keyset_enc e;
	fixture f;

	fixture_init(&f, 2, 2);
	for (size_t i = 0; i < 2; i++) {
		nkp__wire__provider_keys__init(&pk[i]);
		pk[i].id.data = f.id[i];
		pk[i].id.len = NKP_ID_BYTES;
		pk[i].name = f.name[i];
		pk[i].is_default = i == 0;
		pk[i].backed_up = true;
		pk[i].versions = &vkp[vi];
		pk[i].n_versions = 2;
		for (size_t j = 0; j < 2; j++, vi++) {
			nkpi_keyset_version v = fixture_version(&f, i, j);

			nkp__wire__version_key__init(&vk[vi]);
			vk[vi].version = v.version;
			vk[vi].state = v.state;
			vk[vi].created_unix = v.created_unix;
			vk[vi].key.data = (uint8_t *)v.key;
			vk[vi].key.len = NKP_KEY_BYTES;
			vkp[vi] = &vk[vi];
		}
		pkp[i] = &pk[i];
	}
	want = pack_desired(pkp, 2, &wlen);
	encode(&f, &e);
	got = pack_desired(e.providers, e.n_providers, &glen);
	nkpi_keyset_enc_fini(&e);
	cr_assert_eq(glen, wlen);
	cr_assert_arr_eq(got, want, wlen);
	free(got);
	free(want);
	fixture_fini(&f);
}

/* ---- tests/vectors/host-keys-log-v1: keys.nkp and keys.nkp.log, with
 * the HostKeys' providers made by the encoder (see the .txt). */

static size_t vec_host_keys(uint64_t g, const uint8_t svc_pub[32], uint8_t epoch[16],
			    uint64_t saved_unix, uint8_t **out)
{
	Nkp__Hoststate__HostKeys m = NKP__HOSTSTATE__HOST_KEYS__INIT;
	uint8_t id[NKP_ID_BYTES], *vkeys = sodium_malloc(2 * NKP_KEY_BYTES);
	nkpi_keyset_provider p = {.id = id, .name = "gold", .is_default = true, .backed_up = true};
	nkpi_keyset_enc e;
	size_t len;

	cr_assert_not_null(vkeys);
	for (size_t i = 0; i < sizeof(id); i++) {
		id[i] = (uint8_t)(0x10 + i);
	}
	for (size_t i = 0; i < NKP_KEY_BYTES; i++) {
		vkeys[i] = (uint8_t)(0x20 + i);
		vkeys[NKP_KEY_BYTES + i] = (uint8_t)(0x60 + i);
	}
	cr_assert_eq(nkpi_keyset_enc_init(&e, 1, 2), NKP_OK);
	nkpi_keyset_enc_provider(&e, &p);
	for (uint32_t j = 0; j < (g >= 3 ? 2u : 1u); j++) {
		nkpi_keyset_version v = {
			.version = j + 1,
			.state = j == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_STAGED,
			.created_unix = saved_unix - 100,
			.key = vkeys + j * NKP_KEY_BYTES,
		};

		nkpi_keyset_enc_version(&e, &v);
	}
	m.format_version = 1;
	m.service_key.data = (uint8_t *)svc_pub;
	m.service_key.len = 32;
	m.applied_generation = g;
	m.n_providers = e.n_providers;
	m.providers = e.providers;
	m.saved_unix = saved_unix + g;
	m.log_epoch.data = epoch;
	m.log_epoch.len = 16;
	len = nkp__hoststate__host_keys__get_packed_size(&m);
	*out = sodium_malloc(len + 1);
	cr_assert_not_null(*out);
	nkp__hoststate__host_keys__pack(&m, *out);
	nkpi_keyset_enc_fini(&e);
	sodium_free(vkeys);
	return len;
}

static uint8_t *sealed_host_keys(const nkp_key *seal, uint64_t g, const uint8_t svc_pub[32],
				 uint8_t epoch[16], uint64_t saved_unix, size_t *n)
{
	char label[128], hex[33];
	uint8_t *pt, *sealed = NULL;
	size_t len = vec_host_keys(g, svc_pub, epoch, saved_unix, &pt);

	sodium_bin2hex(hex, sizeof(hex), epoch, 16);
	if (g == 1) {
		snprintf(label, sizeof(label), "nkp-host-keys");
	} else {
		snprintf(label, sizeof(label), "nkp-host-keys-log/%s/%u", hex, (unsigned)(g - 2));
	}
	rng_calls = 0;
	cr_assert_eq(nkp_seal_bytes(seal, label, pt, len, &sealed, n), NKP_OK);
	sodium_memzero(pt, len);
	sodium_free(pt);
	return sealed;
}

Test(keyset, host_keys_bytes_match_the_known_answer_vector)
{
	uint8_t seal_b[32], svc_pub[32], epoch[16], log[8192], *snap, *want;
	char hex[4096];
	size_t n, snap_len, wlen = 0, log_len = 0;
	uint64_t saved_unix;
	nkp_key *seal = NULL;

	vec_load("host-keys-log-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	vec_hex("seal_key", seal_b, sizeof(seal_b));
	vec_hex("service_key", svc_pub, sizeof(svc_pub));
	vec_hex("log_epoch", epoch, sizeof(epoch));
	saved_unix = vec_u64("saved_unix");
	randombytes_set_implementation(&det_rng);
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_key_from_bytes(seal_b, &seal), NKP_OK);

	snap = sealed_host_keys(seal, 1, svc_pub, epoch, saved_unix, &snap_len);
	if (regen_vectors()) {
		print_hex("keys_nkp", snap, snap_len);
	}
	vec_str("keys_nkp", hex, sizeof(hex));
	want = malloc(strlen(hex) / 2);
	cr_assert_eq(sodium_hex2bin(want, strlen(hex) / 2, hex, strlen(hex), NULL, &wlen, NULL), 0);
	cr_assert_eq(snap_len, wlen);
	cr_assert_arr_eq(snap, want, wlen, "keys.nkp differs from the vector");
	for (uint64_t g = 2; g <= 3; g++) {
		uint8_t *rec = sealed_host_keys(seal, g, svc_pub, epoch, saved_unix, &n);

		cr_assert_leq(log_len + 4 + n, sizeof(log));
		nkpi_store32_le(log + log_len, (uint32_t)n);
		memcpy(log + log_len + 4, rec, n);
		log_len += 4 + n;
		free(rec);
	}
	vec_check_bin("host-keys-log-v1.bin", log, log_len);
	free(want);
	free(snap);
	nkp_key_free(seal);
}

/* ---- the checker's refusals ---- */

/* A valid keyset of `np` providers of `nv` versions, in protobuf-c form,
 * to be broken one field at a time. */
typedef struct raw {
	Nkp__Wire__ProviderKeys pk[MAXP], *pkp[MAXP];
	Nkp__Wire__VersionKey vk[MAXP][MAXV], *vkp[MAXP][MAXV];
	uint8_t id[MAXP][NKP_ID_BYTES];
	char name[MAXP][8];
	uint8_t key[NKP_KEY_BYTES];
} raw;

static void raw_init(raw *r, size_t np, size_t nv)
{
	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < np; i++) {
		nkp__wire__provider_keys__init(&r->pk[i]);
		memset(r->id[i], (int)i + 1, NKP_ID_BYTES);
		snprintf(r->name[i], sizeof(r->name[i]), "p%zu", i);
		r->pk[i].id.data = r->id[i];
		r->pk[i].id.len = NKP_ID_BYTES;
		r->pk[i].name = r->name[i];
		r->pk[i].is_default = i == 0;
		r->pk[i].n_versions = nv;
		r->pk[i].versions = r->vkp[i];
		for (size_t j = 0; j < nv; j++) {
			nkp__wire__version_key__init(&r->vk[i][j]);
			r->vk[i][j].version = (uint32_t)j + 1;
			r->vk[i][j].state = j == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_DECRYPT_ONLY;
			r->vk[i][j].key.data = r->key;
			r->vk[i][j].key.len = NKP_KEY_BYTES;
			r->vkp[i][j] = &r->vk[i][j];
		}
		r->pkp[i] = &r->pk[i];
	}
}

static nkp_err check(raw *r, size_t np)
{
	nkpi_keyset ks = {0};

	return nkpi_keyset_check(np, r->pkp, &ks);
}

Test(keyset, a_valid_keyset_is_accepted_with_its_limits)
{
	raw r;
	char longest[NKPI_KEYSET_MAX_NAME + 1];
	nkpi_keyset ks = {0};

	raw_init(&r, 3, 3);
	cr_assert_eq(nkpi_keyset_check(3, r.pkp, &ks), NKP_OK);
	cr_assert_eq(ks.n_providers, 3);
	cr_assert_eq(ks.providers, r.pkp);
	memset(longest, 'x', NKPI_KEYSET_MAX_NAME);
	longest[NKPI_KEYSET_MAX_NAME] = '\0';
	r.pk[1].name = longest;
	r.pk[0].is_default = false;
	r.vk[2][0].state = NKP_VERSION_STAGED;
	cr_assert_eq(check(&r, 3), NKP_OK, "a name of the longest length, no default, no active");
	cr_assert_eq(check(&r, 0), NKP_OK, "no provider at all");
}

Test(keyset, a_refused_keyset_leaves_the_view_unset)
{
	raw r;
	nkpi_keyset ks = {.n_providers = 99};

	raw_init(&r, 1, 1);
	r.vk[0][0].version = 0;
	cr_assert_eq(nkpi_keyset_check(1, r.pkp, &ks), NKP_ERR_PARSE);
	cr_assert_eq(ks.n_providers, 99);
}

Test(keyset, too_many_providers_or_versions_are_too_large)
{
	size_t np = NKPI_PUSH_MAX_PROVIDERS + 1;
	Nkp__Wire__ProviderKeys **pp = calloc(np, sizeof(*pp));
	nkpi_keyset ks;
	raw r;

	/* Refused on the count alone, before any provider is looked at. */
	cr_assert_eq(nkpi_keyset_check(np, pp, &ks), NKP_ERR_TOO_LARGE);
	free(pp);

	/* NKPI_PUSH_MAX_VERSIONS in all: providers of the per-provider
	 * maximum, the same one again and again (the count comes first). */
	raw_init(&r, 1, 1);
	{
		size_t per = NKPI_KEYSET_MAX_VERSIONS;
		size_t n = NKPI_PUSH_MAX_VERSIONS / per + 1;
		Nkp__Wire__VersionKey **vp = calloc(per, sizeof(*vp));
		Nkp__Wire__VersionKey *vk = calloc(per, sizeof(*vk));
		Nkp__Wire__ProviderKeys *pk = calloc(n, sizeof(*pk));
		char(*names)[16] = calloc(n, sizeof(*names));
		uint8_t(*ids)[NKP_ID_BYTES] = calloc(n, sizeof(*ids));

		pp = calloc(n, sizeof(*pp));
		for (size_t j = 0; j < per; j++) {
			nkp__wire__version_key__init(&vk[j]);
			vk[j].version = (uint32_t)j + 1;
			vk[j].state = NKP_VERSION_DECRYPT_ONLY;
			vk[j].key.data = r.key;
			vk[j].key.len = NKP_KEY_BYTES;
			vp[j] = &vk[j];
		}
		for (size_t i = 0; i < n; i++) {
			nkp__wire__provider_keys__init(&pk[i]);
			snprintf(names[i], sizeof(names[i]), "p%zu", i);
			memcpy(ids[i], &i, sizeof(i));
			pk[i].id.data = ids[i];
			pk[i].id.len = NKP_ID_BYTES;
			pk[i].name = names[i];
			pk[i].versions = vp;
			pk[i].n_versions = per;
			pp[i] = &pk[i];
		}
		cr_assert_eq(nkpi_keyset_check(n - 1, pp, &ks), NKP_OK, "exactly the maximum");
		cr_assert_eq(nkpi_keyset_check(n, pp, &ks), NKP_ERR_TOO_LARGE);
		free(pp);
		free(ids);
		free(names);
		free(pk);
		free(vk);
		free(vp);
	}
}

Test(keyset, every_malformed_provider_is_refused)
{
	char longer[NKPI_KEYSET_MAX_NAME + 2];
	const char *bad_names[] = {"", "a\nb", "a\x7f", "say \"hi\"", "back\\slash", longer, NULL};
	raw r;

	memset(longer, 'x', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	for (size_t k = 0; k < sizeof(bad_names) / sizeof(bad_names[0]); k++) {
		raw_init(&r, 2, 1);
		r.pk[1].name = (char *)bad_names[k];
		cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "name %zu accepted", k);
	}
	raw_init(&r, 2, 1);
	r.pkp[1] = NULL;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "no provider");
	raw_init(&r, 2, 1);
	r.pk[1].base.n_unknown_fields = 1;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "an unknown field");
	raw_init(&r, 2, 1);
	r.pk[1].id.len = NKP_ID_BYTES - 1;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "a short id");
	raw_init(&r, 2, 1);
	r.pk[1].n_versions = 0;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "no version");
	raw_init(&r, 2, 1);
	r.pk[1].n_versions = NKPI_KEYSET_MAX_VERSIONS + 1;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "too many versions in one provider");
	raw_init(&r, 2, 1);
	memcpy(r.id[1], r.id[0], NKP_ID_BYTES);
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "two providers of one id");
	raw_init(&r, 2, 1);
	r.pk[1].name = r.pk[0].name;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "two providers of one name");
	raw_init(&r, 2, 1);
	r.pk[1].is_default = true;
	cr_assert_eq(check(&r, 2), NKP_ERR_PARSE, "two defaults");
}

Test(keyset, every_malformed_version_is_refused)
{
	raw r;

	raw_init(&r, 1, 2);
	r.vkp[0][1] = NULL;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "no version");
	raw_init(&r, 1, 2);
	r.vk[0][1].base.n_unknown_fields = 1;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "an unknown field");
	raw_init(&r, 1, 2);
	r.vk[0][1].version = 0;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "version 0");
	raw_init(&r, 1, 2);
	r.vk[0][1].version = 1;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "one version twice");
	raw_init(&r, 1, 2);
	r.vk[0][1].state = 0;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "state 0");
	raw_init(&r, 1, 2);
	r.vk[0][1].state = NKP_VERSION_DECRYPT_ONLY + 1;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "an unknown state");
	raw_init(&r, 1, 2);
	r.vk[0][1].state = NKP_VERSION_ACTIVE;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "two active versions");
	raw_init(&r, 1, 2);
	r.vk[0][1].key.len = NKP_KEY_BYTES - 1;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "a short key");
	raw_init(&r, 1, 2);
	r.vk[0][1].key.len = NKP_KEY_BYTES + 1;
	cr_assert_eq(check(&r, 1), NKP_ERR_PARSE, "a long key");
}

Test(keyset, desired_state_bytes_of_unknown_or_bad_fields_are_not_unpacked)
{
	uint8_t good[] = {0x08, 0x01, 0x10, 0x02};
	uint8_t unknown[] = {0x08, 0x01, 0x10, 0x02, 0xf8, 0x01, 0x05}; /* field 31 */
	uint8_t cut[] = {0x1a, 0x05, 0x0a};				/* providers, short */
	Nkp__Wire__DesiredState *ds = nkpi_keyset_desired_unpack(good, sizeof(good), NULL);

	cr_assert_not_null(ds);
	cr_assert_eq(ds->epoch, 1);
	cr_assert_eq(ds->counter, 2);
	nkp__wire__desired_state__free_unpacked(ds, NULL);
	cr_assert_null(nkpi_keyset_desired_unpack(unknown, sizeof(unknown), NULL));
	cr_assert_null(nkpi_keyset_desired_unpack(cut, sizeof(cut), NULL));
}

Test(keyset, a_version_without_a_provider_aborts, .signal = SIGABRT)
{
	nkpi_keyset_enc e;
	uint8_t key[NKP_KEY_BYTES] = {0};
	nkpi_keyset_version v = {.version = 1, .state = NKP_VERSION_ACTIVE, .key = key};

	cr_assert_eq(nkpi_keyset_enc_init(&e, 1, 1), NKP_OK);
	nkpi_keyset_enc_version(&e, &v);
}

Test(keyset, more_providers_than_reserved_abort, .signal = SIGABRT)
{
	nkpi_keyset_enc e;
	nkpi_keyset_provider p = {.id = (const uint8_t *)"0123456789abcdef", .name = "p"};

	cr_assert_eq(nkpi_keyset_enc_init(&e, 1, 0), NKP_OK);
	nkpi_keyset_enc_provider(&e, &p);
	nkpi_keyset_enc_provider(&e, &p);
}
