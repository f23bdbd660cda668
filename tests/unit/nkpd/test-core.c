/* nkpd's core without a front end: operations take C arguments and answer
 * an nkpd_result, reports answer C views, and nothing of the admin
 * protocol is needed to drive the service. */
#include <sodium.h>

#include "test-util.h"

static char dir[PATH_MAX];
static nkpd_svc s;

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

TestSuite(nkpd_core, .init = setup, .fini = teardown);

static void create(const char *name, bool def, nkpd_result *r)
{
	nkpd_provider_create_args a = {.name = name, .make_default = def};

	nkpd_result_init(r);
	nkpd_provider_create(&s, &a, r);
}

Test(nkpd_core, a_created_provider_is_answered_with_its_view)
{
	nkpd_result r;
	const nkpd_provider_view *v;

	create("prod", true, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	cr_assert_eq(r.payload, NKPD_PAYLOAD_PROVIDER);
	v = r.u.provider;
	cr_assert_str_eq(v->name, "prod");
	cr_assert(v->is_default);
	cr_assert_not(v->backed_up);
	cr_assert_eq(v->n_versions, 1);
	cr_assert_eq(v->active_version, 1);
	cr_assert_eq(v->versions[0].state, NKP_VERSION_ACTIVE);
	cr_assert_str_eq(v->rotation.state, "none");
	cr_assert_arr_eq(v->id, nkpd_model_provider_find(&s, "prod")->id, NKP_ID_BYTES);
	nkpd_result_fini(&r);
	cr_assert_eq(r.payload, NKPD_PAYLOAD_NONE);
}

Test(nkpd_core, a_refusal_says_why_and_carries_nothing)
{
	nkpd_result r;

	create("bad name", false, &r);
	cr_assert_eq(r.code, NKP_ERR_INVALID);
	cr_assert_eq(r.payload, NKPD_PAYLOAD_NONE);
	cr_assert_str_eq(r.message, "invalid provider name (1-64 of A-Z a-z 0-9 . _ -)");
	nkpd_result_fini(&r);
}

Test(nkpd_core, reports_are_views_owned_by_the_caller)
{
	nkpd_result r;
	nkpd_status_view *st = NULL;
	nkpd_provider_list *l = NULL;
	nkpd_provider_view *v = NULL;

	create("prod", true, &r);
	nkpd_result_fini(&r);
	create("other", false, &r);
	nkpd_result_fini(&r);
	nkpd_report_status(&s, &st);
	cr_assert_eq(st->providers, 2);
	cr_assert_eq(st->providers_not_backed_up, 2);
	cr_assert_str_eq(st->default_provider, "prod");
	cr_assert_eq(st->generation, s.generation);
	nkpd_status_view_free(st);
	nkpd_report_providers(&s, &l);
	cr_assert_eq(l->n_providers, 2);
	cr_assert_str_eq(l->providers[1].name, "other");
	nkpd_provider_list_free(l);
	cr_assert_eq(nkpd_report_provider(&s, "missing", &v), NKP_ERR_NOT_FOUND);
	cr_assert_null(v, "out-parameters are written only on success");
	nkpd_provider_view_free(NULL);
}

Test(nkpd_core, a_backup_is_answered_with_its_file_then_confirmed)
{
	static const uint8_t pw[] = "correct horse";
	nkpd_provider_backup_args a = {.name = "prod", .password = pw, .password_len = 13};
	nkpd_provider_backup_confirm_args c = {.provider_id_len = NKP_ID_BYTES, .digest_len = 32};
	uint8_t digest[32];
	nkpd_result r, k;

	create("prod", true, &r);
	nkpd_result_fini(&r);
	nkpd_result_init(&r);
	nkpd_provider_backup(&s, &a, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	cr_assert_eq(r.payload, NKPD_PAYLOAD_BACKUP);
	cr_assert_eq(r.u.backup.max_version, 1);
	cr_assert_gt(r.u.backup.len, 0);
	cr_assert_not(nkpd_model_provider_find(&s, "prod")->backed_up);
	crypto_generichash(digest, sizeof(digest), r.u.backup.file, r.u.backup.len, NULL, 0);
	c.provider_id = r.u.backup.provider_id;
	c.digest = digest;
	nkpd_result_init(&k);
	nkpd_provider_backup_confirm(&s, &c, &k);
	cr_assert_eq(k.code, NKP_OK, "%s", k.message);
	cr_assert_eq(k.payload, NKPD_PAYLOAD_PROVIDER);
	cr_assert(k.u.provider->backed_up);
	nkpd_result_fini(&k);
	nkpd_result_fini(&r);
}

static void enrol(const char *name)
{
	uint8_t pub[NKP_PUBKEY_BYTES];
	nkpd_host_add_args a = {
		.name = name,
		.address = "tcp://127.0.0.1:9",
		.cluster = "",
		.public_key = pub,
		.public_key_len = sizeof(pub),
	};
	nkpd_result r;
	nkp_identity *id = NULL;
	nkp_key *k = NULL;

	cr_assert_eq(nkp_key_generate(&k), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(k, &id), NKP_OK);
	memcpy(pub, nkp_identity_public(id), sizeof(pub));
	nkpd_result_init(&r);
	nkpd_host_add(&s, &a, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	nkpd_result_fini(&r);
	nkp_identity_free(id);
	nkp_key_free(k);
}

Test(nkpd_core, commits_with_hosts_enrolled_and_no_engine_running)
{
	nkpd_result r;
	nkpd_host_list *l = NULL;

	enrol("alpha");
	create("prod", true, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	nkpd_result_fini(&r);
	nkpd_report_hosts(&s, &l);
	cr_assert_eq(l->n_hosts, 1);
	cr_assert_str_eq(l->hosts[0].state, "pending");
	nkpd_host_list_free(l);
}

Test(nkpd_core, the_engine_starts_and_stops_over_enrolled_hosts)
{
	nkpd_result r;

	enrol("alpha");
	enrol("bravo");
	cr_assert_eq(nkpd_sync_start(&s), NKP_OK);
	create("prod", true, &r);
	cr_assert_eq(r.code, NKP_OK, "%s", r.message);
	nkpd_result_fini(&r);
	nkpd_sync_stop(&s);
	cr_assert_null(s.sync);
	cr_assert_null(s.hosts[0]->link);
}
