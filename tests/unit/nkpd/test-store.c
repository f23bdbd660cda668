/* nkpd's store port: the model is loaded and written only through the
 * store the service was given, every write names the revision it follows,
 * a write that conflicts with another writer's is rolled back, and only
 * committed changes reach the commit subscribers. */
#include "test-util.h"

static char dir[PATH_MAX];
static nkpd_svc s;

/* A store in memory that another writer may move on. */
typedef struct fake_store {
	uint64_t revision;
	unsigned loads, commits;
	uint64_t expected[8];
	uint64_t generation_written;
} fake_store;

static fake_store fake;

static nkp_err fake_load(void *ctx, nkpd_svc *t, uint64_t *revision)
{
	fake_store *f = ctx;

	f->loads++;
	t->generation = 7;
	t->epoch = 42;
	*revision = f->revision;
	return NKP_OK;
}

static nkp_err fake_commit(void *ctx, const nkpd_svc *t, uint64_t expected, uint64_t *revision)
{
	fake_store *f = ctx;

	if (f->commits < 8) {
		f->expected[f->commits] = expected;
	}
	f->commits++;
	if (expected != f->revision) {
		return NKP_ERR_STATE;
	}
	f->generation_written = t->generation;
	*revision = ++f->revision;
	return NKP_OK;
}

static void fake_explain(void *ctx, char *buf, size_t size)
{
	(void)ctx;
	snprintf(buf, size, "fake");
}

static void fake_close(void *ctx)
{
	(void)ctx;
}

static void setup(void)
{
	tu_mkdtemp(dir, sizeof(dir));
	tu_svc_new(&s, dir);
	s.store.close(s.store.ctx);
	memset(&fake, 0, sizeof(fake));
	fake.revision = 5;
	s.store = (nkpd_store){
		.ctx = &fake,
		.load = fake_load,
		.commit = fake_commit,
		.explain = fake_explain,
		.close = fake_close,
	};
	nkpd_model_free(&s);
	s.generation = 0;
	s.epoch = 0;
	cr_assert_eq(nkpd_state_load(&s), NKP_OK);
}

static void teardown(void)
{
	tu_svc_free(&s);
	tu_rmrf(dir);
}

TestSuite(nkpd_store, .init = setup, .fini = teardown);

static nkp_err count_commit(nkpd_svc *t, void *arg)
{
	(void)t;
	(*(unsigned *)arg)++;
	return NKP_OK;
}

Test(nkpd_store, the_model_is_loaded_through_the_store_at_its_revision)
{
	cr_assert_eq(fake.loads, 1);
	cr_assert_eq(s.generation, 7);
	cr_assert_eq(s.epoch, 42);
	cr_assert_eq(s.revision, 5);
	cr_assert_eq(fake.commits, 0, "a loaded state with an epoch is not written back");
}

Test(nkpd_store, each_write_follows_the_revision_of_the_last)
{
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(tu_create(&s, "other", false), 0);
	cr_assert_eq(fake.commits, 2);
	cr_assert_eq(fake.expected[0], 5);
	cr_assert_eq(fake.expected[1], 6);
	cr_assert_eq(s.revision, 7);
	cr_assert_eq(fake.generation_written, s.generation);
	cr_assert_eq(s.generation, 9);
}

Test(nkpd_store, a_conflicting_write_is_rolled_back_and_not_announced)
{
	unsigned heard = 0;

	nkpd_state_subscribe(&s, count_commit, &heard);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(heard, 1);
	fake.revision++; /* another writer */
	cr_assert_eq(tu_create(&s, "other", false), NKP_ERR_STATE);
	cr_assert_null(nkpd_model_provider_find(&s, "other"));
	cr_assert_not_null(nkpd_model_provider_find(&s, "prod"));
	cr_assert_eq(s.generation, 8);
	cr_assert_eq(s.revision, 6);
	cr_assert_eq(heard, 1);
	nkpd_state_unsubscribe(&s, count_commit, &heard);
}

Test(nkpd_store, subscribers_hear_every_committed_change_until_they_leave)
{
	unsigned heard = 0;

	nkpd_state_subscribe(&s, count_commit, &heard);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(tu_create(&s, "prod", true), NKP_ERR_EXISTS);
	cr_assert_eq(tu_create(&s, "other", false), 0);
	cr_assert_eq(heard, 2);
	nkpd_state_unsubscribe(&s, count_commit, &heard);
	cr_assert_eq(tu_create(&s, "third", false), 0);
	cr_assert_eq(heard, 2);
}
