/* The admin API as nkpctl uses it: validation of every request, refusals
 * with clear messages, and the provider lifecycle without hosts. */
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

TestSuite(nkpd_admin, .init = setup, .fini = teardown);

#define REQ(field, CASE, var)                                                                      \
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;                                         \
	q.op_case = NKP__ADMIN__REQUEST__OP_##CASE;                                                \
	q.field = &var

static uint32_t simple(Nkp__Admin__Request *q, char *msg, size_t size)
{
	Nkp__Admin__Response *r = tu_call(&s, q);
	uint32_t code = r->code;

	if (msg != NULL) {
		snprintf(msg, size, "%s", r->message);
	}
	nkp__admin__response__free_unpacked(r, NULL);
	return code;
}

static Nkp__Admin__ProviderInfo *show(const char *name, Nkp__Admin__Response **keep)
{
	Nkp__Admin__ProviderShowRequest sr = NKP__ADMIN__PROVIDER_SHOW_REQUEST__INIT;
	REQ(provider_show, PROVIDER_SHOW, sr);

	sr.name = (char *)name;
	*keep = tu_call(&s, &q);
	cr_assert_eq((*keep)->code, 0, "%s", (*keep)->message);
	cr_assert_eq((*keep)->result_case, NKP__ADMIN__RESPONSE__RESULT_PROVIDER);
	return (*keep)->provider;
}

static Nkp__Admin__Response *backup(const char *name, const char *pw)
{
	Nkp__Admin__ProviderBackupRequest br = NKP__ADMIN__PROVIDER_BACKUP_REQUEST__INIT;
	REQ(provider_backup, PROVIDER_BACKUP, br);

	br.name = (char *)name;
	br.password.data = (uint8_t *)pw;
	br.password.len = strlen(pw);
	return tu_call(&s, &q);
}

/* The second step of a backup: the digest of `file` for provider `id`. */
static uint32_t confirm(const ProtobufCBinaryData *id, const ProtobufCBinaryData *file, char *msg,
			size_t size)
{
	Nkp__Admin__ProviderBackupConfirmRequest cr =
		NKP__ADMIN__PROVIDER_BACKUP_CONFIRM_REQUEST__INIT;
	uint8_t digest[32];
	REQ(provider_backup_confirm, PROVIDER_BACKUP_CONFIRM, cr);

	crypto_generichash(digest, sizeof(digest), file->data, file->len, NULL, 0);
	cr.provider_id = *id;
	cr.digest.data = digest;
	cr.digest.len = sizeof(digest);
	return simple(&q, msg, size);
}

/* A backup as nkpctl makes it: made, then confirmed. */
static Nkp__Admin__Response *backup_confirmed(const char *name, const char *pw)
{
	Nkp__Admin__Response *b = backup(name, pw);

	if (b->code == 0) {
		cr_assert_eq(confirm(&b->backup->provider_id, &b->backup->file, NULL, 0), 0);
	}
	return b;
}

/* Restores `file`; the test services make cheap (weak) backups, so
 * `allow_weak` is what nkpctl's --allow-weak sends. */
static uint32_t restore_as(const ProtobufCBinaryData *file, const char *pw, bool allow_weak,
			   char *msg, size_t size)
{
	Nkp__Admin__ProviderRestoreRequest rr = NKP__ADMIN__PROVIDER_RESTORE_REQUEST__INIT;
	REQ(provider_restore, PROVIDER_RESTORE, rr);

	rr.allow_weak = allow_weak;
	rr.backup = *file;
	rr.password.data = (uint8_t *)pw;
	rr.password.len = strlen(pw);
	return simple(&q, msg, size);
}

static uint32_t restore(const ProtobufCBinaryData *file, const char *pw, char *msg, size_t size)
{
	return restore_as(file, pw, true, msg, size);
}

static uint32_t rotate(const char *name)
{
	Nkp__Admin__ProviderRotateRequest rr = NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT;
	REQ(provider_rotate, PROVIDER_ROTATE, rr);

	rr.name = (char *)name;
	rr.timeout_seconds = 5;
	return simple(&q, NULL, 0);
}

static uint32_t retire(const char *name, uint32_t version, bool force, char *msg, size_t size)
{
	Nkp__Admin__ProviderRetireRequest rr = NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT;
	REQ(provider_retire, PROVIDER_RETIRE, rr);

	rr.name = (char *)name;
	rr.version = version;
	rr.force = force;
	return simple(&q, msg, size);
}

static uint32_t delete_p(const char *name, bool force, char *msg, size_t size)
{
	Nkp__Admin__ProviderDeleteRequest dr = NKP__ADMIN__PROVIDER_DELETE_REQUEST__INIT;
	REQ(provider_delete, PROVIDER_DELETE, dr);

	dr.name = (char *)name;
	dr.force = force;
	return simple(&q, msg, size);
}

Test(nkpd_admin, garbage_gets_an_error_reply_and_changes_nothing)
{
	uint8_t junk[64];
	uint8_t *out = NULL;
	size_t outlen = 0;
	Nkp__Admin__Response *r;
	uint64_t g = s.generation;

	memset(junk, 0xff, sizeof(junk));
	cr_assert_eq(nkpd_admin_handle(&s, junk, sizeof(junk), geteuid(), &out, &outlen), NKP_OK);
	r = nkp__admin__response__unpack(NULL, outlen, out);
	cr_assert_not_null(r);
	cr_assert_eq(r->code, NKP_ERR_PARSE);
	cr_assert_str_eq(r->message, "malformed admin request");
	nkp__admin__response__free_unpacked(r, NULL);
	free(out);
	cr_assert_eq(nkpd_admin_handle(&s, junk, 0, geteuid(), &out, &outlen), NKP_OK);
	r = nkp__admin__response__unpack(NULL, outlen, out);
	cr_assert_neq(r->code, 0);
	nkp__admin__response__free_unpacked(r, NULL);
	free(out);
	cr_assert_eq(s.generation, g);
}

Test(nkpd_admin, another_uid_is_refused)
{
	Nkp__Admin__StatusRequest sr = NKP__ADMIN__STATUS_REQUEST__INIT;
	Nkp__Admin__Response *r;
	REQ(status, STATUS, sr);

	r = tu_call_as(&s, &q, (uint64_t)geteuid() + 4242u);
	cr_assert_eq(r->code, NKP_ERR_PERM);
	cr_assert_neq(r->result_case, NKP__ADMIN__RESPONSE__RESULT_STATUS);
	nkp__admin__response__free_unpacked(r, NULL);
}

Test(nkpd_admin, an_unknown_api_version_is_refused)
{
	Nkp__Admin__StatusRequest sr = NKP__ADMIN__STATUS_REQUEST__INIT;
	REQ(status, STATUS, sr);

	q.api_version = 7;
	cr_assert_eq(simple(&q, NULL, 0), NKP_ERR_FORMAT_VERSION);
}

Test(nkpd_admin, provider_names_are_validated_and_unique)
{
	cr_assert_eq(tu_create(&s, "", false), NKP_ERR_INVALID);
	cr_assert_eq(tu_create(&s, "a b", false), NKP_ERR_INVALID);
	cr_assert_eq(tu_create(&s, "-x", false), NKP_ERR_INVALID);
	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(tu_create(&s, "prod", false), NKP_ERR_EXISTS);
}

Test(nkpd_admin, a_new_provider_is_not_backed_up_until_a_backup)
{
	Nkp__Admin__Response *keep, *b;
	Nkp__Admin__ProviderInfo *p;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	p = show("prod", &keep);
	cr_assert_not(p->backed_up);
	cr_assert(p->is_default);
	cr_assert_eq(p->active_version, 1);
	nkp__admin__response__free_unpacked(keep, NULL);
	b = backup("prod", "");
	cr_assert_eq(b->code, NKP_ERR_INVALID);
	nkp__admin__response__free_unpacked(b, NULL);
	b = backup_confirmed("prod", "pw");
	cr_assert_eq(b->code, 0);
	cr_assert_eq(b->result_case, NKP__ADMIN__RESPONSE__RESULT_BACKUP);
	nkp__admin__response__free_unpacked(b, NULL);
	p = show("prod", &keep);
	cr_assert(p->backed_up);
	cr_assert_not(p->backup_stale);
	nkp__admin__response__free_unpacked(keep, NULL);
}

Test(nkpd_admin, a_backup_counts_only_once_its_file_is_confirmed)
{
	Nkp__Admin__Response *keep, *b, *other;
	ProtobufCBinaryData forged;
	uint64_t g;
	char msg[512];

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(tu_create(&s, "spare", false), 0);
	b = backup("prod", "pw");
	cr_assert_eq(b->code, 0, "%s", b->message);
	cr_assert_eq(b->backup->provider_id.len, NKP_ID_BYTES);
	cr_assert_arr_eq(b->backup->provider_id.data, nkpd_model_provider_find(&s, "prod")->id,
			 NKP_ID_BYTES);
	cr_assert_eq(b->backup->max_version, 1);
	cr_assert_not(show("prod", &keep)->backed_up, "marked before the file was confirmed");
	nkp__admin__response__free_unpacked(keep, NULL);

	/* Another file, another provider's id, a malformed request: refused. */
	g = s.generation;
	forged.len = b->backup->file.len;
	forged.data = malloc(forged.len);
	memcpy(forged.data, b->backup->file.data, forged.len);
	forged.data[0] ^= 1;
	cr_assert_eq(confirm(&b->backup->provider_id, &forged, msg, sizeof(msg)),
		     NKP_ERR_NOT_FOUND);
	cr_assert(strstr(msg, "back it up again") != NULL, "%s", msg);
	other = backup("spare", "pw");
	cr_assert_eq(confirm(&b->backup->provider_id, &other->backup->file, NULL, 0),
		     NKP_ERR_NOT_FOUND);
	cr_assert_eq(confirm(&other->backup->provider_id, &b->backup->file, NULL, 0),
		     NKP_ERR_NOT_FOUND);
	forged.len = 3;
	cr_assert_eq(confirm(&forged, &b->backup->file, NULL, 0), NKP_ERR_INVALID);
	cr_assert_eq(s.generation, g);
	cr_assert_not(show("prod", &keep)->backed_up);
	nkp__admin__response__free_unpacked(keep, NULL);

	/* The file handed out: counted, once. */
	cr_assert_eq(confirm(&b->backup->provider_id, &b->backup->file, msg, sizeof(msg)), 0, "%s",
		     msg);
	cr_assert(show("prod", &keep)->backed_up);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert_not(show("spare", &keep)->backed_up);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert_eq(confirm(&b->backup->provider_id, &b->backup->file, NULL, 0),
		     NKP_ERR_NOT_FOUND);
	free(forged.data);
	nkp__admin__response__free_unpacked(other, NULL);
	nkp__admin__response__free_unpacked(b, NULL);
}

Test(nkpd_admin, rotation_without_hosts_promotes_and_makes_the_backup_stale)
{
	Nkp__Admin__Response *keep, *b;
	Nkp__Admin__ProviderInfo *p;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	b = backup_confirmed("prod", "pw");
	nkp__admin__response__free_unpacked(b, NULL);
	cr_assert_eq(rotate("prod"), 0);
	p = show("prod", &keep);
	cr_assert_eq(p->active_version, 2);
	cr_assert_eq(p->n_versions, 2);
	cr_assert_eq(p->versions[0]->state, NKP_VERSION_DECRYPT_ONLY);
	cr_assert(p->backed_up);
	cr_assert(p->backup_stale);
	cr_assert_str_eq(p->rotation->state, "promoted");
	nkp__admin__response__free_unpacked(keep, NULL);
}

Test(nkpd_admin, retire_takes_only_a_decrypt_only_version)
{
	char msg[512];
	Nkp__Admin__Response *keep;

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(retire("prod", 1, false, msg, sizeof(msg)), NKP_ERR_STATE);
	cr_assert(strstr(msg, "decrypt-only") != NULL, "%s", msg);
	cr_assert_eq(retire("prod", 9, false, NULL, 0), NKP_ERR_NOT_FOUND);
	cr_assert_eq(retire("nosuch", 1, false, NULL, 0), NKP_ERR_NOT_FOUND);
	cr_assert_eq(rotate("prod"), 0);
	cr_assert_eq(retire("prod", 2, true, NULL, 0), NKP_ERR_STATE);
	cr_assert_eq(retire("prod", 1, false, NULL, 0), 0);
	cr_assert_eq(show("prod", &keep)->n_versions, 1);
	nkp__admin__response__free_unpacked(keep, NULL);
}

Test(nkpd_admin, the_default_provider_is_deleted_only_with_force)
{
	char msg[512];

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(tu_create(&s, "spare", false), 0);
	cr_assert_eq(delete_p("prod", false, msg, sizeof(msg)), NKP_ERR_STATE);
	cr_assert(strstr(msg, "default") != NULL, "%s", msg);
	cr_assert_eq(delete_p("spare", false, NULL, 0), 0);
	cr_assert_null(nkpd_model_provider_find(&s, "spare"));
	cr_assert_eq(delete_p("nosuch", false, NULL, 0), NKP_ERR_NOT_FOUND);
	cr_assert_eq(delete_p("prod", true, NULL, 0), 0);
	cr_assert_eq(s.n_providers, 0);
}

Test(nkpd_admin, set_default_moves_the_default)
{
	Nkp__Admin__ProviderSetDefaultRequest dr = NKP__ADMIN__PROVIDER_SET_DEFAULT_REQUEST__INIT;
	REQ(provider_set_default, PROVIDER_SET_DEFAULT, dr);

	cr_assert_eq(tu_create(&s, "a", true), 0);
	cr_assert_eq(tu_create(&s, "b", false), 0);
	dr.name = "b";
	cr_assert_eq(simple(&q, NULL, 0), 0);
	cr_assert_not(nkpd_model_provider_find(&s, "a")->is_default);
	cr_assert(nkpd_model_provider_find(&s, "b")->is_default);
	dr.name = "nosuch";
	cr_assert_eq(simple(&q, NULL, 0), NKP_ERR_NOT_FOUND);
}

static ProtobufCBinaryData take_backup(const char *name, const char *pw)
{
	Nkp__Admin__Response *b = backup_confirmed(name, pw);
	ProtobufCBinaryData f;

	cr_assert_eq(b->code, 0, "%s", b->message);
	f.len = b->backup->file.len;
	f.data = malloc(f.len);
	memcpy(f.data, b->backup->file.data, f.len);
	nkp__admin__response__free_unpacked(b, NULL);
	return f;
}

Test(nkpd_admin, restore_into_a_fresh_service_keeps_id_and_versions)
{
	char dir2[PATH_MAX], msg[512];
	nkpd_svc t;
	ProtobufCBinaryData f;
	nkpd_provider *p, *r;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(rotate("prod"), 0);
	f = take_backup("prod", "secret");
	p = nkpd_model_provider_find(&s, "prod");
	tu_mkdtemp(dir2, sizeof(dir2));
	tu_svc_new(&t, dir2);
	{
		nkpd_svc saved = s;

		s = t;
		cr_assert_eq(restore(&f, "wrong", msg, sizeof(msg)), NKP_ERR_WRONG_PASSWORD);
		cr_assert(strstr(msg, "wrong password") != NULL, "%s", msg);
		cr_assert_eq(s.n_providers, 0);
		f.data[f.len / 2] ^= 1;
		cr_assert_neq(restore(&f, "secret", NULL, 0), 0);
		f.data[f.len / 2] ^= 1;
		cr_assert_eq(restore(&f, "secret", msg, sizeof(msg)), 0, "%s", msg);
		t = s;
		s = saved;
	}
	r = nkpd_model_provider_find(&t, "prod");
	cr_assert_not_null(r);
	cr_assert_arr_eq(r->id, p->id, NKP_ID_BYTES);
	cr_assert_eq(r->n_versions, 2);
	cr_assert(r->backed_up);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(r->versions[i].version, p->versions[i].version);
		cr_assert_eq(r->versions[i].state, p->versions[i].state);
		cr_assert(nkp_key_equal(r->versions[i].key, p->versions[i].key));
	}
	tu_svc_free(&t);
	tu_rmrf(dir2);
	free(f.data);
}

Test(nkpd_admin, restore_merges_missing_versions_into_an_existing_provider)
{
	ProtobufCBinaryData f;

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(rotate("prod"), 0);
	f = take_backup("prod", "pw");
	cr_assert_eq(retire("prod", 1, false, NULL, 0), 0);
	cr_assert_eq(nkpd_model_provider_find(&s, "prod")->n_versions, 1);
	cr_assert_eq(restore(&f, "pw", NULL, 0), 0);
	cr_assert_eq(nkpd_model_provider_find(&s, "prod")->n_versions, 2);
	cr_assert_eq(nkpd_model_version_find(nkpd_model_provider_find(&s, "prod"), 1)->state,
		     NKP_VERSION_DECRYPT_ONLY);
	free(f.data);
}

Test(nkpd_admin, restore_refuses_another_provider_with_the_same_name)
{
	ProtobufCBinaryData f;

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	f = take_backup("prod", "pw");
	cr_assert_eq(delete_p("prod", true, NULL, 0), 0);
	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(restore(&f, "pw", NULL, 0), NKP_ERR_EXISTS);
	free(f.data);
}

/* Restores `f` into a fresh service; returns the code and the message. */
static uint32_t restore_fresh(const ProtobufCBinaryData *f, bool allow_weak, char *msg, size_t size,
			      size_t *n_providers)
{
	char dir2[PATH_MAX];
	nkpd_svc t, saved = s;
	uint32_t code;

	tu_mkdtemp(dir2, sizeof(dir2));
	tu_svc_new(&t, dir2);
	s = t;
	code = restore_as(f, "pw", allow_weak, msg, size);
	*n_providers = s.n_providers;
	t = s;
	s = saved;
	tu_svc_free(&t);
	tu_rmrf(dir2);
	return code;
}

Test(nkpd_admin, restore_refuses_a_weak_backup_unless_allowed)
{
	ProtobufCBinaryData f;
	nkp_backup_params prm;
	char msg[1024];
	size_t n = 9;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	f = take_backup("prod", "pw"); /* the test service's cheapest cost */
	cr_assert_eq(nkp_backup_peek(f.data, f.len, &prm), NKP_OK);
	cr_assert(nkp_backup_params_weak(&prm));
	cr_assert_eq(restore_fresh(&f, false, msg, sizeof(msg), &n), NKP_ERR_INVALID);
	cr_assert(strstr(msg, "weak") != NULL && strstr(msg, "--allow-weak") != NULL, "%s", msg);
	cr_assert_eq(n, 0);
	cr_assert_eq(restore_fresh(&f, true, msg, sizeof(msg), &n), 0, "%s", msg);
	cr_assert_eq(n, 1);
	free(f.data);
}

Test(nkpd_admin, restore_takes_a_backup_at_the_interactive_cost_without_allow_weak)
{
	ProtobufCBinaryData f;
	char msg[1024];
	size_t n = 9;

	s.backup_params.opslimit = crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE;
	s.backup_params.memlimit = crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
	cr_assert_not(nkp_backup_params_weak(&s.backup_params));
	cr_assert(nkp_backup_params_weak(
		&(nkp_backup_params){crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE - 1,
				     crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE}));
	cr_assert(nkp_backup_params_weak(
		&(nkp_backup_params){crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
				     crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE - 1024}));
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	f = take_backup("prod", "pw");
	cr_assert_eq(restore_fresh(&f, false, msg, sizeof(msg), &n), 0, "%s", msg);
	cr_assert_eq(n, 1);
	free(f.data);
}

static uint32_t host_add(const char *name, const char *addr, const uint8_t *key, size_t keylen)
{
	Nkp__Admin__HostAddRequest hr = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	REQ(host_add, HOST_ADD, hr);

	hr.name = (char *)name;
	hr.address = (char *)addr;
	hr.public_key.data = (uint8_t *)key;
	hr.public_key.len = keylen;
	return simple(&q, NULL, 0);
}

Test(nkpd_admin, host_add_validates_name_address_and_key)
{
	nkp_identity *id = NULL;
	const uint8_t *pub;
	uint8_t zero[32] = {0};

	cr_assert_eq(nkp_identity_generate(&id), NKP_OK);
	pub = nkp_identity_public(id);
	cr_assert_eq(host_add("h1", "http://x", pub, 32), NKP_ERR_INVALID);
	cr_assert_eq(host_add("h1", "tcp://", pub, 32), NKP_ERR_INVALID);
	cr_assert_eq(host_add("h 1", "tcp://127.0.0.1:1", pub, 32), NKP_ERR_INVALID);
	cr_assert_eq(host_add("h1", "tcp://127.0.0.1:1", pub, 31), NKP_ERR_INVALID);
	cr_assert_eq(host_add("h1", "tcp://127.0.0.1:1", zero, 32), NKP_ERR_INVALID);
	cr_assert_eq(host_add("h1", "tcp://127.0.0.1:1", pub, 32), 0);
	cr_assert_eq(host_add("h1", "tcp://127.0.0.1:2", pub, 32), NKP_ERR_EXISTS);
	cr_assert_eq(s.n_hosts, 1);
	nkp_identity_free(id);
}

Test(nkpd_admin, events_are_read_by_sequence)
{
	Nkp__Admin__EventsRequest er = NKP__ADMIN__EVENTS_REQUEST__INIT;
	Nkp__Admin__Response *r;
	uint64_t last;
	REQ(events, EVENTS, er);

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	r = tu_call(&s, &q);
	cr_assert_eq(r->result_case, NKP__ADMIN__RESPONSE__RESULT_EVENTS);
	cr_assert_geq(r->events->n_lines, 2);
	cr_assert(strstr(r->events->lines[0], "provider.created") != NULL);
	last = r->events->last_seq;
	nkp__admin__response__free_unpacked(r, NULL);
	er.after_seq = last;
	r = tu_call(&s, &q);
	cr_assert_eq(r->events->n_lines, 0);
	cr_assert_eq(r->events->last_seq, last);
	nkp__admin__response__free_unpacked(r, NULL);
}

Test(nkpd_admin, the_first_provider_becomes_the_default)
{
	cr_assert_eq(tu_create(&s, "first", false), 0);
	cr_assert_eq(tu_create(&s, "second", false), 0);
	cr_assert(nkpd_model_provider_find(&s, "first")->is_default);
	cr_assert_not(nkpd_model_provider_find(&s, "second")->is_default);
	cr_assert_eq(delete_p("first", false, NULL, 0), NKP_ERR_STATE);
}
