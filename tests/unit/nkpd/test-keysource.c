/* nkpd's key source port: every new version's key comes from the source
 * the service was given, and a source that keeps its own copy of its keys
 * leaves its providers counted as backed up. */
#include "test-util.h"

static char dir[PATH_MAX];
static nkpd_svc s;

/* A source that makes key i (counted from 1) of bytes all equal to i and
 * records what it was asked for. */
typedef struct fake_source {
	unsigned calls;
	uint8_t last_id[NKP_ID_BYTES];
	uint32_t last_version;
	bool needs_backup;
	nkp_err fail;
} fake_source;

static fake_source fake;

static nkp_err fake_create(void *ctx, const uint8_t id[static NKP_ID_BYTES], uint32_t version,
			   nkp_key **out)
{
	fake_source *f = ctx;
	uint8_t bytes[NKP_KEY_BYTES];

	if (f->fail != NKP_OK) {
		return f->fail;
	}
	f->calls++;
	memcpy(f->last_id, id, NKP_ID_BYTES);
	f->last_version = version;
	memset(bytes, (int)f->calls, sizeof(bytes));
	return nkp_key_from_bytes(bytes, out);
}

static nkp_err fake_fetch(void *ctx, const uint8_t id[static NKP_ID_BYTES], uint32_t version,
			  nkp_key **out)
{
	(void)ctx;
	(void)id;
	(void)version;
	(void)out;
	return NKP_ERR_KEY_MISSING;
}

static bool fake_needs_backup(void *ctx)
{
	return ((fake_source *)ctx)->needs_backup;
}

static void use_fake(bool needs_backup)
{
	memset(&fake, 0, sizeof(fake));
	fake.needs_backup = needs_backup;
	s.keys = (nkpd_keysource){
		.ctx = &fake,
		.create_version = fake_create,
		.fetch = fake_fetch,
		.needs_backup = fake_needs_backup,
	};
}

static void setup(void)
{
	tu_mkdtemp(dir, sizeof(dir));
	tu_svc_new(&s, dir);
}

static void teardown(void)
{
	tu_svc_free(&s);
	tu_rmrf(dir);
}

TestSuite(nkpd_keysource, .init = setup, .fini = teardown);

static uint32_t rotate(const char *name)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRotateRequest rr = NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT;
	Nkp__Admin__Response *r;
	uint32_t code;

	rr.name = (char *)name;
	rr.timeout_seconds = 5;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE;
	q.provider_rotate = &rr;
	r = tu_call(&s, &q);
	code = r->code;
	nkp__admin__response__free_unpacked(r, NULL);
	return code;
}

static bool key_is(const nkp_key *k, uint8_t byte)
{
	uint8_t want[NKP_KEY_BYTES];
	nkp_key *w = NULL;
	bool same;

	memset(want, byte, sizeof(want));
	cr_assert_eq(nkp_key_from_bytes(want, &w), NKP_OK);
	same = nkp_key_equal(k, w);
	nkp_key_free(w);
	return same;
}

Test(nkpd_keysource, the_native_source_needs_a_backup)
{
	cr_assert(s.keys.needs_backup(s.keys.ctx));
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_not(nkpd_model_provider_find(&s, "prod")->backed_up);
}

Test(nkpd_keysource, a_new_provider_and_a_rotation_take_their_keys_from_the_source)
{
	nkpd_provider *p;

	use_fake(true);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	p = nkpd_model_provider_find(&s, "prod");
	cr_assert_eq(fake.calls, 1);
	cr_assert_eq(fake.last_version, 1);
	cr_assert_arr_eq(fake.last_id, p->id, NKP_ID_BYTES);
	cr_assert(key_is(nkpd_model_version_find(p, 1)->key, 1));
	cr_assert_not(p->backed_up);

	cr_assert_eq(rotate("prod"), 0);
	p = nkpd_model_provider_find(&s, "prod");
	cr_assert_eq(fake.calls, 2);
	cr_assert_eq(fake.last_version, 2);
	cr_assert(key_is(nkpd_model_version_find(p, 2)->key, 2));
	cr_assert_not(p->backed_up);
}

Test(nkpd_keysource, a_source_that_keeps_its_keys_leaves_providers_backed_up)
{
	nkpd_provider *p;

	use_fake(false);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	p = nkpd_model_provider_find(&s, "prod");
	cr_assert(p->backed_up);
	cr_assert_eq(p->backup_max_version, 1);
	cr_assert_eq(rotate("prod"), 0);
	p = nkpd_model_provider_find(&s, "prod");
	cr_assert(p->backed_up);
	cr_assert_eq(p->backup_max_version, 2, "a rotation leaves no stale backup");
}

Test(nkpd_keysource, a_failing_source_changes_nothing)
{
	uint64_t g;

	use_fake(true);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	g = s.generation;
	fake.fail = NKP_ERR_TIMEOUT;
	cr_assert_eq(tu_create(&s, "other", false), NKP_ERR_TIMEOUT);
	cr_assert_null(nkpd_model_provider_find(&s, "other"));
	cr_assert_neq(rotate("prod"), 0);
	cr_assert_eq(nkpd_model_provider_find(&s, "prod")->n_versions, 1);
	cr_assert_eq(s.generation, g);
}
