/* libnkp-hostd: enrolment, open, status and VM key operations. */
#include <criterion/criterion.h>

#include <sys/stat.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "test-util.h"

static char *dir;
static tu_service svc;
static const nkp_vm_identity vm1 = {.vm_uuid = "4c4c4544-0042-3510-8052-b2c04f4e4b31",
				    .vm_name = "web01"};

static void setup(void)
{
	nkp_log_set_sink(NULL, NULL);
	dir = tu_tmpdir();
	tu_service_new(&svc);
}

static void teardown(void)
{
	tu_service_free(&svc);
	tu_rmdir(dir);
	free(dir);
}

TestSuite(hostd, .init = setup, .fini = teardown);

static void push_ok(nkp_hostd *h, uint64_t g, const tu_provider *p, size_t n)
{
	Nkp__Wire__Message *r = tu_push(&svc, h, g, NULL, p, n);

	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK, "push %llu refused: %s",
		     (unsigned long long)g,
		     r->body_case == NKP__WIRE__MESSAGE__BODY_REFUSAL ? r->refusal->message : "");
	tu_msg_free(r);
}

/* A host holding provider "gold" (default, backed up, version 1 active). */
static nkp_hostd *gold_host(tu_provider *p)
{
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(p, "gold", true, true);
	push_ok(h, 1, p, 1);
	return h;
}

static void make_vm(nkp_hostd *h, const char *provider, uint8_t **ks, size_t *len)
{
	cr_assert_eq(nkp_hostd_vm_create(h, provider, &vm1, ks, len), NKP_OK);
}

static void unwrap(nkp_hostd *h, const uint8_t *ks, size_t len, const char *c, uint8_t dek[32])
{
	nkp_err err = nkp_hostd_vm_unwrap(h, ks, len, c, dek);

	cr_assert_eq(err, NKP_OK, "unwrap %s: %s", c, nkp_strerror(err));
}

static const nkp_hostd_version_info *version_of(const nkp_hostd_status *st, uint32_t v)
{
	for (size_t j = 0; st->n_providers > 0 && j < st->providers[0].n_versions; j++) {
		if (st->providers[0].versions[j].version == v) {
			return &st->providers[0].versions[j];
		}
	}
	cr_assert_fail("version %u not held", v);
	return NULL;
}

Test(hostd, open_refuses_a_directory_that_was_never_initialised)
{
	nkp_hostd_config cfg = {.state_dir = dir};
	nkp_hostd *h = NULL;

	cr_assert_neq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert_null(h);
	cr_assert_eq(nkp_hostd_open(NULL, &h), NKP_ERR_INVALID);
}

/* ---- one handle per state directory ---- */

/* Every entry of `d` but ".." (name, type, size, mtime, inode, a hash of
 * the contents), sorted: what a refused open must leave exactly as it was.
 * ("." is in: its mtime moves when anything is created or removed in d;
 * ".." is out: other tests running meanwhile change their parent.) Free
 * the result. */
static int not_parent(const struct dirent *e)
{
	return strcmp(e->d_name, "..") != 0;
}

static char *dir_fingerprint(const char *d)
{
	struct dirent **names = NULL;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);
	int n = scandir(d, &names, not_parent, alphasort);

	cr_assert_not_null(f);
	cr_assert_geq(n, 0);
	for (int i = 0; i < n; i++) {
		char path[1024];
		uint8_t hash[32] = {0};
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", d, names[i]->d_name);
		cr_assert_eq(lstat(path, &st), 0);
		if (S_ISREG(st.st_mode)) {
			uint8_t *buf = NULL;
			size_t len = 0;

			cr_assert_eq(nkp_file_read(path, 1 << 24, &buf, &len), NKP_OK);
			crypto_generichash(hash, sizeof(hash), buf, len, NULL, 0);
			free(buf);
		}
		fprintf(f, "%s %o %lld %lld.%09ld %llu ", names[i]->d_name, (unsigned)st.st_mode,
			(long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
			(unsigned long long)st.st_ino);
		for (size_t j = 0; j < sizeof(hash); j++) {
			fprintf(f, "%02x", hash[j]);
		}
		fprintf(f, "\n");
		free(names[i]);
	}
	free(names);
	fclose(f);
	return out;
}

static char logged_id[64], logged_msg[1024];

static void capture_log(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	(void)level;
	(void)arg;
	snprintf(logged_id, sizeof(logged_id), "%s", msgid);
	snprintf(logged_msg, sizeof(logged_msg), "%s", msg);
}

static void plant(const char *name)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	fputs("planted", f);
	fclose(f);
}

Test(hostd, a_second_handle_on_a_state_directory_is_refused_and_touches_nothing)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p), *h2 = NULL;
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "h2"};
	char *before, *after, pid[32], path[600];
	uint8_t pub[32];

	/* What a crash leaves beside keys.nkp, and a key log: a second open
	 * would load and tidy them away under the running handle. */
	plant("keys.nkp.tmp.0123456789abcdef");
	plant("keys.nkp.prev.tmp.0123456789abcdef");
	before = dir_fingerprint(dir);
	nkp_log_set_sink(capture_log, NULL);
	cr_assert_eq(nkp_hostd_open(&cfg, &h2), NKP_ERR_STATE);
	cr_assert_null(h2);
	cr_assert_str_eq(logged_id, "NKP-HOSTD-LOCKED");
	snprintf(pid, sizeof(pid), "pid %ld ", (long)getpid());
	cr_assert_not_null(strstr(logged_msg, pid), "the holder is not named: %s", logged_msg);
	logged_id[0] = '\0';
	cr_assert_eq(nkp_hostd_init(&cfg, nkp_identity_public(svc.id), pub), NKP_ERR_STATE);
	cr_assert_str_eq(logged_id, "NKP-HOSTD-LOCKED");
	nkp_log_set_sink(NULL, NULL);
	after = dir_fingerprint(dir);
	cr_assert_str_eq(after, before,
			 "the refused handle changed the directory:\nbefore:\n%s\nafter:\n%s",
			 before, after);
	/* The first handle still works, and once it is closed the directory
	 * opens again (and its stale temp files go then). */
	push_ok(h, 2, &p, 1);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	snprintf(path, sizeof(path), "%s/keys.nkp.tmp.0123456789abcdef", dir);
	cr_assert_eq(access(path, F_OK), -1);
	nkp_hostd_close(h);
	free(before);
	free(after);
}

Test(hostd, a_failed_open_and_an_enrolment_let_the_directory_go)
{
	nkp_hostd_config cfg = {.state_dir = dir};
	nkp_hostd *h = NULL;
	uint8_t pub[32];

	/* Not initialised: the open fails, and holds nothing after. */
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_hostd_init(&cfg, nkp_identity_public(svc.id), pub), NKP_OK);
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	nkp_hostd_close(h);
	h = NULL;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	nkp_hostd_close(h);
}

/* ---- the event log ---- */

/* Lines of `path` that hold `what`; -1 if there is no such file. */
static int lines_with(const char *path, const char *what)
{
	char line[2048];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		n += strstr(line, what) != NULL;
	}
	fclose(f);
	return n;
}

static int bad_input_logged;

static void count_bad_input(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	(void)level;
	(void)msg;
	(void)arg;
	bad_input_logged += strcmp(msgid, "input.bad") == 0;
}

/* Opens `cfg`, hands it one unauthenticated frame (one input.bad
 * summary event), closes. */
static void one_bad_frame(const nkp_hostd_config *cfg)
{
	uint8_t junk[64] = {0}, *reply = NULL;
	size_t replylen = 0;
	nkp_hostd *h = NULL;

	cr_assert_eq(nkp_hostd_open(cfg, &h), NKP_OK);
	cr_assert_neq(nkp_hostd_handle_frame(h, junk, sizeof(junk), &reply, &replylen), NKP_OK);
	cr_assert_null(reply);
	nkp_hostd_close(h);
}

Test(hostd, events_go_to_events_path_or_only_to_the_log_sink)
{
	char other[600], dflt[600];
	nkp_hostd_config cfg = {.state_dir = dir, .events_path = other};
	nkp_hostd *h = NULL;
	uint8_t pub[32];

	snprintf(other, sizeof(other), "%s/elsewhere.jsonl", dir);
	snprintf(dflt, sizeof(dflt), "%s/events.jsonl", dir);
	cr_assert_eq(nkp_hostd_init(&cfg, nkp_identity_public(svc.id), pub), NKP_OK);
	nkp_log_set_sink(count_bad_input, NULL);
	one_bad_frame(&cfg);
	cr_assert_eq(lines_with(other, "\"kind\":\"input.bad\""), 1);
	cr_assert_eq(lines_with(dflt, "input.bad"), -1, "events.jsonl written too");
	/* "": no file; the event still reaches the log sink. */
	cfg.events_path = "";
	one_bad_frame(&cfg);
	cr_assert_eq(lines_with(other, "input.bad"), 1);
	cr_assert_eq(lines_with(dflt, "input.bad"), -1);
	/* NULL: STATE_DIR/events.jsonl. */
	cfg.events_path = NULL;
	one_bad_frame(&cfg);
	cr_assert_eq(lines_with(dflt, "\"kind\":\"input.bad\""), 1);
	cr_assert_eq(bad_input_logged, 3);
	nkp_log_set_sink(NULL, NULL);
	/* A path that cannot be opened fails the open. */
	snprintf(other, sizeof(other), "%s/no/such/dir/events.jsonl", dir);
	cfg.events_path = other;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_ERR_NOT_FOUND);
	cr_assert_null(h);
}

Test(hostd, init_makes_a_private_directory_and_keeps_the_identity_on_repin)
{
	char sub[512], key[600];
	nkp_hostd_config cfg = {.state_dir = sub};
	uint8_t pub1[32], pub2[32];
	tu_service other;
	struct stat st;
	nkp_hostd *h = NULL;

	snprintf(sub, sizeof(sub), "%s/state", dir);
	cr_assert_eq(nkp_hostd_init(&cfg, nkp_identity_public(svc.id), pub1), NKP_OK);
	cr_assert_eq(stat(sub, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
	snprintf(key, sizeof(key), "%s/seal.key", sub);
	cr_assert_eq(stat(key, &st), 0);
	cr_assert_eq(st.st_mode & 077, 0);

	tu_service_new(&other);
	cr_assert_eq(nkp_hostd_init(&cfg, nkp_identity_public(other.id), pub2), NKP_OK);
	cr_assert_eq(memcmp(pub1, pub2, 32), 0);
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert_eq(memcmp(nkp_hostd_service_key(h), nkp_identity_public(other.id), 32), 0);
	nkp_hostd_close(h);
	tu_service_free(&other);
}

Test(hostd, open_refuses_a_world_readable_sealing_key)
{
	char key[600];
	nkp_hostd *h = tu_host(dir, &svc);
	nkp_hostd_config cfg = {.state_dir = dir};

	nkp_hostd_close(h);
	snprintf(key, sizeof(key), "%s/seal.key", dir);
	cr_assert_eq(chmod(key, 0644), 0);
	h = NULL;
	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_ERR_PERM);
	cr_assert_null(h);
}

Test(hostd, create_is_refused_until_the_provider_is_backed_up)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	uint8_t *ks = NULL;
	size_t len = 0;

	tu_provider_init(&p, "gold", true, false);
	push_ok(h, 1, &p, 1);
	cr_assert_eq(nkp_hostd_vm_create(h, NULL, &vm1, &ks, &len), NKP_ERR_NOT_BACKED_UP);
	cr_assert_eq(nkp_hostd_vm_create(h, "gold", &vm1, &ks, &len), NKP_ERR_NOT_BACKED_UP);
	cr_assert_null(ks);
	p.backed_up = true;
	push_ok(h, 2, &p, 1);
	make_vm(h, NULL, &ks, &len);
	cr_assert_gt(len, 0);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

Test(hostd, create_needs_a_known_provider_or_a_default)
{
	nkp_hostd *h = tu_host(dir, &svc);
	tu_provider p;
	uint8_t *ks = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_hostd_vm_create(h, NULL, &vm1, &ks, &len), NKP_ERR_NOT_FOUND);
	tu_provider_init(&p, "gold", false, true);
	push_ok(h, 1, &p, 1);
	cr_assert_eq(nkp_hostd_vm_create(h, NULL, &vm1, &ks, &len), NKP_ERR_NOT_FOUND);
	cr_assert_eq(nkp_hostd_vm_create(h, "silver", &vm1, &ks, &len), NKP_ERR_NOT_FOUND);
	make_vm(h, "gold", &ks, &len);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

Test(hostd, a_keysafe_made_on_one_host_unwraps_to_the_same_dek_on_another)
{
	tu_provider p;
	nkp_hostd *h1 = gold_host(&p), *h2;
	char dir2[600];
	tu_service svc2_view;
	uint8_t *ks = NULL, a[32], b[32];
	size_t len = 0;

	make_vm(h1, NULL, &ks, &len);
	unwrap(h1, ks, len, "vm-home", a);

	/* A second host, enrolled with the same service, given the same keys. */
	snprintf(dir2, sizeof(dir2), "%s/h2", dir);
	svc2_view = svc;
	svc2_view.sess = NULL;
	h2 = tu_host(dir2, &svc2_view);
	{
		Nkp__Wire__Message *r = tu_push(&svc2_view, h2, 1, NULL, &p, 1);

		cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK);
		tu_msg_free(r);
	}
	unwrap(h2, ks, len, "vm-home", b);
	cr_assert_eq(sodium_memcmp(a, b, 32), 0);
	nkpi_session_free(svc2_view.sess);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h2);
	nkp_hostd_close(h1);
}

Test(hostd, components_round_trip_and_vm_home_is_removed_last)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *ks = NULL, *ks2 = NULL, *ks3 = NULL, *ks4 = NULL, d1[32], d2[32];
	size_t len = 0, len2 = 0, len3 = 0, len4 = 0;

	make_vm(h, NULL, &ks, &len);
	cr_assert_eq(nkp_hostd_vm_add_component(h, ks, len, "disk:scsi0", &ks2, &len2), NKP_OK);
	cr_assert_eq(nkp_hostd_vm_add_component(h, ks2, len2, "disk:scsi0", &ks3, &len3),
		     NKP_ERR_EXISTS);
	cr_assert_eq(nkp_hostd_vm_add_component(h, ks2, len2, "bogus", &ks3, &len3),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkp_hostd_vm_add_component(h, ks2, len2, "vtpm", &ks3, &len3), NKP_OK);
	unwrap(h, ks3, len3, "disk:scsi0", d1);
	unwrap(h, ks3, len3, "vtpm", d2);
	cr_assert_neq(sodium_memcmp(d1, d2, 32), 0);
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks3, len3, "disk:nope", d1), NKP_ERR_NOT_FOUND);

	cr_assert_eq(nkp_hostd_vm_remove_component(h, ks3, len3, "vm-home", &ks4, &len4),
		     NKP_ERR_STATE);
	cr_assert_eq(nkp_hostd_vm_remove_component(h, ks3, len3, "disk:scsi0", &ks4, &len4),
		     NKP_OK);
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks4, len4, "disk:scsi0", d1), NKP_ERR_NOT_FOUND);
	unwrap(h, ks4, len4, "vtpm", d1);
	cr_assert_eq(sodium_memcmp(d1, d2, 32), 0);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_buf_free(ks2, len2);
	nkp_hostd_buf_free(ks3, len3);
	nkp_hostd_buf_free(ks4, len4);
	nkp_hostd_close(h);
}

Test(hostd, rotation_new_keysafes_use_the_new_version_and_rewrap_keeps_deks)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *old = NULL, *moved = NULL, *fresh = NULL, a[32], b[32];
	size_t olen = 0, mlen = 0, flen = 0;
	nkp_keysafe *k = NULL;
	nkp_hostd_status *st = NULL;

	make_vm(h, NULL, &old, &olen);
	unwrap(h, old, olen, "vm-home", a);
	/* Staged, then promoted. */
	p.n_versions = 2;
	p.versions[1].version = 2;
	p.versions[1].state = NKP_VERSION_STAGED;
	randombytes_buf(p.versions[1].key, 32);
	push_ok(h, 2, &p, 1);
	p.versions[0].state = NKP_VERSION_DECRYPT_ONLY;
	p.versions[1].state = NKP_VERSION_ACTIVE;
	push_ok(h, 3, &p, 1);

	make_vm(h, NULL, &fresh, &flen);
	cr_assert_eq(nkp_keysafe_parse(fresh, flen, &k), NKP_OK);
	cr_assert_eq(nkp_keysafe_primary_version(k), 2);
	nkp_keysafe_free(k);
	unwrap(h, old, olen, "vm-home", b);
	cr_assert_eq(sodium_memcmp(a, b, 32), 0);

	cr_assert_eq(nkp_hostd_vm_rewrap(h, old, olen, &moved, &mlen), NKP_OK);
	cr_assert_eq(nkp_keysafe_parse(moved, mlen, &k), NKP_OK);
	cr_assert_eq(nkp_keysafe_primary_version(k), 2);
	nkp_keysafe_free(k);
	unwrap(h, moved, mlen, "vm-home", b);
	cr_assert_eq(sodium_memcmp(a, b, 32), 0);

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(version_of(st, 1)->created, 1);
	cr_assert_eq(version_of(st, 1)->keysafes, 0);
	cr_assert_eq(version_of(st, 2)->created, 1);
	cr_assert_eq(version_of(st, 2)->rewrapped, 1);
	cr_assert_eq(version_of(st, 2)->keysafes, 2);
	cr_assert_geq(version_of(st, 2)->unwrapped, 1);
	cr_assert_gt(version_of(st, 2)->last_used_unix, 0);
	nkp_hostd_status_free(st);
	nkp_hostd_buf_free(old, olen);
	nkp_hostd_buf_free(moved, mlen);
	nkp_hostd_buf_free(fresh, flen);
	nkp_hostd_close(h);
}

Test(hostd, keysafe_is_locked_after_a_push_drops_its_version)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *ks = NULL, *out = NULL, dek[32];
	size_t len = 0, olen = 0;
	nkp_hostd_vm_check c;

	make_vm(h, NULL, &ks, &len);
	cr_assert_eq(nkp_hostd_vm_check_keysafe(h, ks, len, &c), NKP_OK);
	cr_assert_not(c.locked);
	cr_assert_str_eq(c.provider_name, "gold");

	/* Rotated and the old version retired. */
	p.versions[0].version = 2;
	randombytes_buf(p.versions[0].key, 32);
	push_ok(h, 2, &p, 1);
	cr_assert_eq(nkp_hostd_vm_check_keysafe(h, ks, len, &c), NKP_OK);
	cr_assert(c.locked);
	cr_assert(c.provider_known);
	cr_assert_eq(c.version, 1);
	cr_assert_eq(memcmp(c.provider_id, p.id, 16), 0);
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks, len, "vm-home", dek), NKP_ERR_KEY_MISSING);
	cr_assert_eq(nkp_hostd_vm_rewrap(h, ks, len, &out, &olen), NKP_ERR_KEY_MISSING);
	cr_assert_null(out);

	/* Deleted altogether. */
	push_ok(h, 3, NULL, 0);
	cr_assert_eq(nkp_hostd_vm_check_keysafe(h, ks, len, &c), NKP_OK);
	cr_assert(c.locked);
	cr_assert_not(c.provider_known);
	cr_assert_str_eq(c.provider_name, "");
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

Test(hostd, shallow_rekey_keeps_deks_and_deep_rekey_makes_new_ones)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *ks = NULL, *ks2 = NULL, *sh = NULL, *dp = NULL, a[32], b[32];
	size_t len = 0, len2 = 0, shlen = 0, dplen = 0;
	nkp_keysafe *k1 = NULL, *k2 = NULL;

	make_vm(h, NULL, &ks, &len);
	cr_assert_eq(nkp_hostd_vm_add_component(h, ks, len, "disk:0", &ks2, &len2), NKP_OK);
	unwrap(h, ks2, len2, "disk:0", a);
	cr_assert_eq(nkp_hostd_vm_rekey(h, ks2, len2, false, &sh, &shlen), NKP_OK);
	unwrap(h, sh, shlen, "disk:0", b);
	cr_assert_eq(sodium_memcmp(a, b, 32), 0);
	cr_assert(shlen != len2 || memcmp(sh, ks2, len2) != 0);

	cr_assert_eq(nkp_hostd_vm_rekey(h, ks2, len2, true, &dp, &dplen), NKP_OK);
	unwrap(h, dp, dplen, "disk:0", b);
	cr_assert_neq(sodium_memcmp(a, b, 32), 0);
	cr_assert_eq(nkp_keysafe_parse(ks2, len2, &k1), NKP_OK);
	cr_assert_eq(nkp_keysafe_parse(dp, dplen, &k2), NKP_OK);
	cr_assert_neq(memcmp(nkp_keysafe_key_id(k1), nkp_keysafe_key_id(k2), 16), 0);
	cr_assert(nkp_keysafe_has_component(k2, "disk:0"));
	nkp_keysafe_free(k1);
	nkp_keysafe_free(k2);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_buf_free(ks2, len2);
	nkp_hostd_buf_free(sh, shlen);
	nkp_hostd_buf_free(dp, dplen);
	nkp_hostd_close(h);
}

Test(hostd, tampered_or_garbage_keysafes_are_refused)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *ks = NULL, dek[32], garbage[64];
	size_t len = 0;
	nkp_hostd_vm_check c;
	nkp_keysafe *k = NULL;
	nkp_err err;

	make_vm(h, NULL, &ks, &len);
	randombytes_buf(garbage, sizeof(garbage));
	cr_assert_neq(nkp_hostd_vm_unwrap(h, garbage, sizeof(garbage), "vm-home", dek), NKP_OK);
	cr_assert_neq(nkp_hostd_vm_check_keysafe(h, garbage, sizeof(garbage), &c), NKP_OK);
	cr_assert_neq(nkp_hostd_vm_unwrap(h, ks, len / 2, "vm-home", dek), NKP_OK);
	/* Flip bytes through the file; whatever still parses must not open. */
	for (size_t i = 0; i < len; i += 7) {
		ks[i] ^= 0x01;
		if (nkp_keysafe_parse(ks, len, &k) == NKP_OK) {
			nkp_keysafe_free(k);
			err = nkp_hostd_vm_unwrap(h, ks, len, "vm-home", dek);
			cr_assert_neq(err, NKP_OK, "byte %zu flipped still unwraps", i);
		}
		ks[i] ^= 0x01;
	}
	unwrap(h, ks, len, "vm-home", dek);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

Test(hostd, usage_counters_persist_across_reopen)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	uint8_t *ks = NULL, dek[32];
	size_t len = 0;
	nkp_hostd_status *st = NULL;

	make_vm(h, NULL, &ks, &len);
	unwrap(h, ks, len, "vm-home", dek);
	unwrap(h, ks, len, "vm-home", dek);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(st->generation, 1);
	cr_assert_eq(version_of(st, 1)->created, 1);
	cr_assert_eq(version_of(st, 1)->keysafes, 1);
	cr_assert_eq(version_of(st, 1)->unwrapped, 2);
	nkp_hostd_status_free(st);
	/* Keys persisted: VMs start while the service is away. */
	unwrap(h, ks, len, "vm-home", dek);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

/* A trusted provider's keys reach a host only while nkpd finds it
 * attested: they are never written to its state directory, so a host that
 * restarts (perhaps into software no baseline approves) holds none until
 * nkpd has its quote and pushes them again. */
Test(hostd, trusted_providers_are_held_in_memory_only)
{
	tu_provider p[2];
	nkp_hostd *h = tu_host(dir, &svc);
	nkp_hostd_status *st = NULL;
	uint8_t *ks = NULL, dek[32];
	size_t len = 0;
	Nkp__Wire__Message *r;

	tu_provider_init(&p[0], "gold", true, true);
	tu_provider_init(&p[1], "vault", false, true);
	p[1].tpm_only = true;
	push_ok(h, 1, p, 2);
	make_vm(h, "vault", &ks, &len);
	unwrap(h, ks, len, "vm-home", dek);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(st->n_providers, 1, "only gold was written");
	cr_assert_str_eq(st->providers[0].name, "gold");
	cr_assert_eq(st->generation, 0, "no pair kept: the next push is taken");
	nkp_hostd_status_free(st);
	cr_assert_eq(nkp_hostd_vm_unwrap(h, ks, len, "vm-home", dek), NKP_ERR_KEY_MISSING);
	/* Attested again: the same push (a new boot) brings them back. */
	r = tu_push(&svc, h, 1, NULL, p, 2);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK);
	tu_msg_free(r);
	unwrap(h, ks, len, "vm-home", dek);
	nkp_hostd_buf_free(ks, len);
	nkp_hostd_close(h);
}

Test(hostd, a_tampered_state_file_fails_the_open)
{
	tu_provider p;
	nkp_hostd *h = gold_host(&p);
	char path[600];
	FILE *f;
	long size;
	int c;
	nkp_hostd_config cfg = {.state_dir = dir};

	nkp_hostd_close(h);
	snprintf(path, sizeof(path), "%s/keys.nkp", dir);
	f = fopen(path, "r+b");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	/* Flip the bits of one byte (writing a fixed value would leave the
	 * file unchanged when the byte already had it, 1 run in 256). */
	fseek(f, size - 5, SEEK_SET);
	c = fgetc(f);
	cr_assert_neq(c, EOF);
	fseek(f, size - 5, SEEK_SET);
	fputc(c ^ 0xff, f);
	cr_assert_eq(fclose(f), 0);
	h = NULL;
	cr_assert_neq(nkp_hostd_open(&cfg, &h), NKP_OK);
	cr_assert_null(h);
}
