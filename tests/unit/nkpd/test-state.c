/* nkpd's sealed state file: what is saved comes back, a damaged or
 * tampered file is refused and never replaced, a change that cannot be
 * persisted is rolled back. */
#include <fcntl.h>

#include <sys/stat.h>

#include "internal.h"
#include "session.h"
#include "svcstate.pb-c.h"
#include "test-util.h"
#include "vectors.h"

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

TestSuite(nkpd_state, .init = setup, .fini = teardown);

static void reopen(nkpd_svc *t)
{
	cr_assert_eq(nkpd_svc_open(t, dir, false), NKP_OK);
}

Test(nkpd_state, saved_providers_hosts_and_generation_load_back)
{
	nkpd_svc t;
	nkpd_provider *p, *q;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert_eq(tu_create(&s, "other", false), 0);
	p = nkpd_model_provider_find(&s, "prod");
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.generation, s.generation);
	cr_assert_eq(t.n_providers, 2);
	q = nkpd_model_provider_find(&t, "prod");
	cr_assert_not_null(q);
	cr_assert_arr_eq(q->id, p->id, NKP_ID_BYTES);
	cr_assert(q->is_default);
	cr_assert_not(q->backed_up);
	cr_assert_eq(q->n_versions, 1);
	cr_assert_eq(q->versions[0].state, NKP_VERSION_ACTIVE);
	cr_assert(nkp_key_equal(q->versions[0].key, p->versions[0].key));
	cr_assert_not(nkpd_model_provider_find(&t, "other")->is_default);
	nkpd_svc_close(&t);
}

Test(nkpd_state, each_change_bumps_the_generation)
{
	uint64_t g = s.generation;

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(s.generation, g + 1);
	cr_assert_eq(tu_create(&s, "prod", false), NKP_ERR_EXISTS);
	cr_assert_eq(s.generation, g + 1);
}

static void flip_byte(const char *path, long off)
{
	FILE *f = fopen(path, "r+b");
	int c;

	cr_assert_not_null(f);
	fseek(f, off, off < 0 ? SEEK_END : SEEK_SET);
	c = fgetc(f);
	fseek(f, -1, SEEK_CUR);
	fputc(c ^ 0x01, f);
	fclose(f);
}

Test(nkpd_state, a_tampered_state_file_is_refused_and_kept)
{
	nkpd_svc t;
	uint8_t *before = NULL, *after = NULL;
	size_t blen = 0, alen = 0;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	flip_byte(s.state_path, -5);
	cr_assert_eq(nkp_file_read(s.state_path, 1 << 20, &before, &blen), NKP_OK);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_ERR_AUTH);
	cr_assert_eq(t.n_providers, 0);
	nkpd_svc_close(&t);
	cr_assert_eq(nkp_file_read(s.state_path, 1 << 20, &after, &alen), NKP_OK);
	cr_assert_eq(alen, blen);
	cr_assert_arr_eq(after, before, blen);
	free(before);
	free(after);
}

Test(nkpd_state, the_previous_copy_still_loads_after_tampering)
{
	nkpd_svc t;
	char prev[PATH_MAX + 8];

	cr_assert_eq(tu_create(&s, "first", false), 0);
	cr_assert_eq(tu_create(&s, "second", false), 0);
	flip_byte(s.state_path, 10);
	snprintf(prev, sizeof(prev), "%s.prev", s.state_path);
	cr_assert_eq(rename(prev, s.state_path), 0);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_not_null(nkpd_model_provider_find(&t, "first"));
	cr_assert_null(nkpd_model_provider_find(&t, "second"));
	nkpd_svc_close(&t);
}

Test(nkpd_state, another_sealing_key_cannot_open_the_state)
{
	nkpd_svc t;
	char key[PATH_MAX + 16];

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	snprintf(key, sizeof(key), "%s/seal.key", dir);
	cr_assert_eq(unlink(key), 0);
	/* The identity is sealed under it too: the open stops there. */
	cr_assert_eq(nkpd_svc_open(&t, dir, true), NKP_ERR_AUTH);
	cr_assert_null(t.identity);
	cr_assert_eq(nkpd_state_load(&t), NKP_ERR_AUTH);
	nkpd_svc_close(&t);
}

Test(nkpd_state, a_change_that_cannot_be_persisted_is_rolled_back)
{
	nkpd_svc t;
	uint64_t g;

	cr_assert_eq(tu_create(&s, "prod", false), 0);
	g = s.generation;
	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	cr_assert_eq(tu_create(&s, "more", false), NKP_ERR_NOSPC);
	nkpi_file_fail_next_writes(0, NKP_OK);
	cr_assert_eq(s.generation, g);
	cr_assert_null(nkpd_model_provider_find(&s, "more"));
	cr_assert_not_null(nkpd_model_provider_find(&s, "prod"));
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.generation, g);
	cr_assert_null(nkpd_model_provider_find(&t, "more"));
	nkpd_svc_close(&t);
}

Test(nkpd_state, a_missing_state_file_is_not_found)
{
	nkpd_svc t;

	cr_assert_eq(unlink(s.state_path), 0);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_ERR_NOT_FOUND);
	nkpd_svc_close(&t);
}

Test(nkpd_state, a_second_lock_of_the_state_directory_is_refused_naming_the_holder)
{
	nkp_file_lock *a = NULL, *b = NULL;
	char errpath[PATH_MAX + 16], want[64], text[4097];
	uint8_t *said = NULL;
	size_t len = 0;
	int saved = dup(2), fd;

	snprintf(errpath, sizeof(errpath), "%s/stderr.txt", dir);
	fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(nkpd_svc_lock_dir(dir, &a), NKP_OK);
	fflush(stderr);
	dup2(fd, 2);
	cr_assert_eq(nkpd_svc_lock_dir(dir, &b), NKP_ERR_STATE);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	cr_assert_null(b);
	cr_assert_eq(nkp_file_read(errpath, sizeof(text) - 1, &said, &len), NKP_OK);
	memcpy(text, said, len);
	text[len] = '\0';
	free(said);
	snprintf(want, sizeof(want), "pid %ld ", (long)getpid());
	cr_assert_not_null(strstr(text, want), "the holder is not named: %s", text);
	nkp_file_unlock(a);
	cr_assert_eq(nkpd_svc_lock_dir(dir, &b), NKP_OK);
	nkp_file_unlock(b);
}

Test(nkpd_state, the_epoch_is_saved_and_a_state_without_one_gets_one_once)
{
	nkpd_svc t, u;
	uint64_t e;

	cr_assert_neq(s.epoch, 0);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.epoch, s.epoch);
	/* A state written before epochs. */
	t.epoch = 0;
	cr_assert_eq(nkpd_state_save(&t), NKP_OK);
	nkpd_svc_close(&t);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	e = t.epoch;
	cr_assert_neq(e, 0);
	nkpd_svc_close(&t);
	reopen(&u);
	cr_assert_eq(nkpd_state_load(&u), NKP_OK);
	cr_assert_eq(u.epoch, e, "the epoch given at load was written at once");
	nkpd_svc_close(&u);
}

Test(nkpd_state, no_change_is_committed_past_the_generation_limit)
{
	s.generation = (UINT64_C(1) << 62) - 2;
	cr_assert_eq(tu_create(&s, "prod", false), 0);
	cr_assert_eq(s.generation, (UINT64_C(1) << 62) - 1);
	cr_assert_eq(tu_create(&s, "other", false), NKP_ERR_STATE);
	cr_assert_eq(s.generation, (UINT64_C(1) << 62) - 1);
	cr_assert_null(nkpd_model_provider_find(&s, "other"));
}

static void sanitized(const char *in, const char *want, size_t size)
{
	char out[64];

	cr_assert_leq(size, sizeof(out));
	nkpd_util_sanitize(out, size, in);
	cr_assert_str_eq(out, want, "%s", want);
}

Test(nkpd_state, strings_from_hosts_lose_controls_escapes_and_bad_utf8)
{
	sanitized("plain host-1", "plain host-1", 64);
	sanitized("a\x1b[31mred\x1b[0m", "ared", 64);
	sanitized("t\x1b]0;title\x07x", "tx", 64);
	sanitized("t\x1b]0;title\x1b\\x", "tx", 64);
	sanitized("c1\xc2\x9b"
		  "2Jx",
		  "c12Jx", 64); /* U+009B, a CSI */
	sanitized("raw\x9b"
		  "2J",
		  "raw?2J", 64); /* not UTF-8 */
	sanitized("nl\r\n\ttab\x7f", "nltab", 64);
	sanitized("\xc0\xaf\xed\xa0\x80", "?????", 64); /* overlong, surrogate */
	sanitized("caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93", 64);
	sanitized("abc\xc3\xa9", "abc", 5); /* never cut a character */
	sanitized("\x1b", "", 64);
	sanitized("\x1b[", "", 64);
}

/* A state file of a newer format (here with a field this version does not
 * know) is refused as a format version, with both versions named, not as
 * damage or tampering. */
Test(nkpd_state, a_newer_format_is_reported_as_a_format_version)
{
	Nkp__Svcstate__ServiceState st = NKP__SVCSTATE__SERVICE_STATE__INIT;
	uint8_t buf[64];
	char why[256];
	size_t len;
	nkpd_svc t;

	cr_assert_eq(tu_create(&s, "prod", true), 0);
	st.format_version = NKPD_STATE_FORMAT + 1;
	st.generation = 7;
	len = nkp__svcstate__service_state__get_packed_size(&st);
	cr_assert_leq(len + 3, sizeof(buf));
	nkp__svcstate__service_state__pack(&st, buf);
	memcpy(buf + len, "\x98\x06\x01", 3); /* field 99, varint 1 */
	len += 3;
	cr_assert_eq(nkp_sealfile_write(s.state_path, s.seal_key, NKPD_STATE_LABEL, buf, len),
		     NKP_OK);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_ERR_FORMAT_VERSION);
	nkpd_state_format_message(&t, why, sizeof(why));
	cr_assert_not_null(strstr(why, "state format version 2, newer than version 1"), "%s", why);
	cr_assert_null(strstr(why, "tamper"));
	nkpd_svc_close(&t);
}

/* ---- known-answer vector: tests/vectors/state-v1.{bin,txt} ----
 * nkpd's real writer, under a deterministic RNG and a fixed clock, makes
 * the state file of a service with two providers (one rotated) and one
 * host; the bytes must be the checked-in ones, and the real loader must
 * open the checked-in file to the recorded keys. Regenerate with
 * tests/vectors/regen. */

static void vec_host_add(nkpd_svc *t, const char *name, const char *address, uint8_t key_byte)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostAddRequest a = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	Nkp__Admin__Response *r;
	uint8_t pub[NKP_PUBKEY_BYTES];

	memset(pub, key_byte, sizeof(pub));
	a.name = (char *)name;
	a.address = (char *)address;
	a.public_key = (ProtobufCBinaryData){sizeof(pub), pub};
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_ADD;
	q.host_add = &a;
	r = tu_call(t, &q);
	cr_assert_eq(r->code, 0, "host add: %s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
}

static void vec_write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(chmod(path, 0600), 0);
}

TestSuite(nkpd_state_vector);

Test(nkpd_state_vector, state_v1_matches_the_checked_in_vector)
{
	char vdir[PATH_MAX], path[PATH_MAX + 16];
	uint8_t *buf = NULL, *bin = NULL, seal[NKP_KEY_BYTES], wseal[NKP_KEY_BYTES];
	size_t len = 0, binlen = 0;
	nkpd_svc t;
	nkpd_provider *p;

	vec_load("state-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	cr_assert_eq(randombytes_set_implementation(&det_rng), 0);
	nkp_log_set_sink(NULL, NULL);
	cr_assert_eq(nkp_init(), NKP_OK);
	nkpi_set_clock(vec_u64("clock"));
	tu_mkdtemp(vdir, sizeof(vdir));
	rng_calls = 0;
	memset(&t, 0, sizeof(t));
	cr_assert_eq(nkpd_svc_open(&t, vdir, true), NKP_OK);
	t.backup_params = nkp_backup_params_min();
	t.generation = vec_u64("start_generation");
	cr_assert_eq(nkpd_sync_follow(&t), NKP_OK);
	cr_assert_eq(tu_create(&t, "prod", true), 0);
	cr_assert_eq(tu_create(&t, "other", false), 0);
	vec_host_add(&t, "alpha", "tcp://127.0.0.1:9", 0x61);
	snprintf(path, sizeof(path), "%s/state.nkp", vdir);
	cr_assert_eq(nkp_file_read(path, 1 << 20, &bin, &binlen), NKP_OK);
	snprintf(path, sizeof(path), "%s/seal.key", vdir);
	cr_assert_eq(nkp_file_read(path, 64, &buf, &len), NKP_OK);
	cr_assert_eq(len, NKP_KEY_BYTES);
	memcpy(seal, buf, sizeof(seal));
	sodium_memzero(buf, len);
	free(buf);
	p = nkpd_model_provider_find(&t, "prod");
	cr_assert_not_null(p);
	if (regen_vectors()) {
		uint8_t k[NKP_KEY_BYTES];

		print_hex("seal_key", seal, sizeof(seal));
		print_hex("prod_id", p->id, NKP_ID_BYTES);
		nkp_key_export(p->versions[0].key, k);
		print_hex("prod_key", k, sizeof(k));
		fprintf(stderr, "generation: %llu\n", (unsigned long long)t.generation);
	}
	vec_check_bin("state-v1.bin", bin, binlen);
	free(bin);
	/* The service identity, sealed under the same key (identity.nkp). */
	snprintf(path, sizeof(path), "%s/identity.nkp", vdir);
	cr_assert_eq(nkp_file_read(path, 1 << 20, &bin, &binlen), NKP_OK);
	if (regen_vectors()) {
		print_hex("service_key", nkp_identity_public(t.identity), NKP_PUBKEY_BYTES);
	}
	vec_check_bin("svc-identity-v1.bin", bin, binlen);
	free(bin);
	vec_hex("seal_key", wseal, sizeof(wseal));
	cr_assert_arr_eq(seal, wseal, sizeof(seal), "seal.key differs from the vector");
	cr_assert_eq(t.generation, vec_u64("generation"));
	tu_svc_free(&t);
	tu_rmrf(vdir);
}

Test(nkpd_state_vector, the_loader_opens_state_v1_to_the_recorded_keys)
{
	char vdir[PATH_MAX], path[PATH_MAX + 16];
	uint8_t *bin = NULL, seal[NKP_KEY_BYTES], id[NKP_ID_BYTES], key[NKP_KEY_BYTES];
	uint8_t pub[NKP_PUBKEY_BYTES];
	size_t len = 0;
	nkp_key *want = NULL;
	nkpd_svc t;
	nkpd_provider *p;

	nkp_log_set_sink(NULL, NULL);
	cr_assert_eq(nkp_init(), NKP_OK);
	vec_load("state-v1.txt");
	tu_mkdtemp(vdir, sizeof(vdir));
	vec_hex("seal_key", seal, sizeof(seal));
	snprintf(path, sizeof(path), "%s/seal.key", vdir);
	vec_write_file(path, seal, sizeof(seal));
	cr_assert_eq(nkp_file_read(vec_path("state-v1.bin"), 1 << 20, &bin, &len), NKP_OK);
	snprintf(path, sizeof(path), "%s/state.nkp", vdir);
	vec_write_file(path, bin, len);
	free(bin);
	cr_assert_eq(nkp_file_read(vec_path("svc-identity-v1.bin"), 1 << 20, &bin, &len), NKP_OK);
	snprintf(path, sizeof(path), "%s/identity.nkp", vdir);
	vec_write_file(path, bin, len);
	free(bin);
	memset(&t, 0, sizeof(t));
	cr_assert_eq(nkpd_svc_open(&t, vdir, false), NKP_OK);
	vec_hex("service_key", pub, sizeof(pub));
	cr_assert_arr_eq(nkp_identity_public(t.identity), pub, sizeof(pub),
			 "the service key differs from the vector");
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.generation, vec_u64("generation"));
	cr_assert_eq(t.n_providers, 2);
	cr_assert_eq(t.n_hosts, 1);
	p = nkpd_model_provider_find(&t, "prod");
	cr_assert_not_null(p);
	cr_assert(p->is_default);
	vec_hex("prod_id", id, sizeof(id));
	cr_assert_arr_eq(p->id, id, NKP_ID_BYTES);
	cr_assert_eq(p->n_versions, 1);
	vec_hex("prod_key", key, sizeof(key));
	cr_assert_eq(nkp_key_from_bytes(key, &want), NKP_OK);
	sodium_memzero(key, sizeof(key));
	cr_assert(nkp_key_equal(p->versions[0].key, want), "prod's key differs from the vector");
	nkp_key_free(want);
	cr_assert_not_null(nkpd_model_provider_find(&t, "other"));
	cr_assert_not_null(nkpd_model_host_find(&t, "alpha"));
	nkpd_svc_close(&t);
	tu_rmrf(vdir);
}

/* Handshake timestamps rise across restarts whatever the wall clock did:
 * the floor saved is above every timestamp made, and a later run, its
 * clock a day behind, starts above it. */
Test(nkpd_state, handshake_timestamps_rise_across_a_restart_with_the_clock_behind)
{
	const uint64_t hour = 3600ull * 1000000000ull;
	uint64_t floor, wall = nkpi_wall_ns();
	nkpd_svc t;

	cr_assert_eq(nkpd_state_stamp_reserve(&s), NKP_OK);
	floor = s.stamp_floor_ns;
	cr_assert_geq(floor, wall + hour);
	cr_assert_eq(nkpd_state_stamp_reserve(&s), NKP_OK);
	cr_assert_eq(s.stamp_floor_ns, floor, "not written again while an hour is left");

	nkpi_session_reset_timestamps(); /* as a new process */
	nkpi_set_clock_skew(-86400);
	reopen(&t);
	cr_assert_eq(nkpd_state_load(&t), NKP_OK);
	cr_assert_eq(t.stamp_floor_ns, floor);
	cr_assert_eq(nkpd_state_stamp_reserve(&t), NKP_OK);
	cr_assert_geq(nkpi_session_last_timestamp(), floor);
	cr_assert_geq(t.stamp_floor_ns, floor + hour);
	nkpi_set_clock_skew(0);
	nkpd_svc_close(&t);
}

/* ---- the service identity at rest (store/identity.c) ---- */

TestSuite(nkpd_identity);

static void id_paths(const char *d, char *key, char *nkp)
{
	snprintf(key, PATH_MAX + 16, "%s/identity.key", d);
	snprintf(nkp, PATH_MAX + 16, "%s/identity.nkp", d);
}

Test(nkpd_identity, an_older_plain_identity_is_sealed_in_wiped_and_removed)
{
	char d[PATH_MAX], key[PATH_MAX + 16], nkp[PATH_MAX + 16];
	nkp_key *seal = NULL, *old = NULL;
	nkp_identity *id = NULL, *want = NULL;

	cr_assert_eq(nkp_init(), NKP_OK);
	tu_mkdtemp(d, sizeof(d));
	id_paths(d, key, nkp);
	cr_assert_eq(nkp_key_generate(&seal), NKP_OK);
	cr_assert_eq(nkp_keyfile_load(key, true, &old), NKP_OK);
	cr_assert_eq(nkp_identity_from_key(old, &want), NKP_OK);
	cr_assert_eq(nkpd_identity_load(d, seal, false, true, &id), NKP_OK);
	cr_assert_arr_eq(nkp_identity_public(id), nkp_identity_public(want), NKP_PUBKEY_BYTES);
	cr_assert_neq(access(key, F_OK), 0, "identity.key is removed");
	cr_assert_eq(access(nkp, F_OK), 0, "identity.nkp is written");
	nkp_identity_free(id);
	id = NULL;
	/* And it is the sealed file that opens from now on. */
	cr_assert_eq(nkpd_identity_load(d, seal, false, true, &id), NKP_OK);
	cr_assert_arr_eq(nkp_identity_public(id), nkp_identity_public(want), NKP_PUBKEY_BYTES);
	nkp_identity_free(id);
	nkp_identity_free(want);
	nkp_key_free(old);
	nkp_key_free(seal);
	tu_rmrf(d);
}

Test(nkpd_identity, a_plain_identity_beside_the_sealed_one_or_in_a_protected_dir_is_refused)
{
	char d[PATH_MAX], key[PATH_MAX + 16], nkp[PATH_MAX + 16];
	nkp_key *seal = NULL, *planted = NULL;
	nkp_identity *id = NULL;

	cr_assert_eq(nkp_init(), NKP_OK);
	tu_mkdtemp(d, sizeof(d));
	id_paths(d, key, nkp);
	cr_assert_eq(nkp_key_generate(&seal), NKP_OK);
	/* A directory whose keys are protected (import off): an attacker's
	 * identity.key in place of a deleted identity.nkp is not taken. */
	cr_assert_eq(nkp_keyfile_load(key, true, &planted), NKP_OK);
	cr_assert_eq(nkpd_identity_load(d, seal, true, false, &id), NKP_ERR_STATE);
	cr_assert_null(id);
	cr_assert_neq(access(nkp, F_OK), 0, "nothing is sealed from it");
	cr_assert_eq(unlink(key), 0);
	/* A clear copy left beside the sealed identity (a move cut short). */
	cr_assert_eq(nkpd_identity_load(d, seal, true, true, &id), NKP_OK);
	nkp_identity_free(id);
	id = NULL;
	nkp_key_free(planted);
	planted = NULL;
	cr_assert_eq(nkp_keyfile_load(key, true, &planted), NKP_OK);
	cr_assert_eq(nkpd_identity_load(d, seal, false, true, &id), NKP_ERR_STATE);
	cr_assert_null(id);
	nkp_key_free(planted);
	nkp_key_free(seal);
	tu_rmrf(d);
}
