/* libnkp-hostd: keys.nkp as a snapshot followed by the append-only
 * keys.nkp.log; what survives a reopen, compaction, torn and tampered
 * logs, and failed appends. */
#include <criterion/criterion.h>

#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "hostd-internal.h"
#include "test-util.h"
#include "vectors.h"

static char *dir;
static char keys[600], logpath[600];
static tu_service svc;

static void setup(void)
{
	nkp_log_set_sink(NULL, NULL);
	dir = tu_tmpdir();
	snprintf(keys, sizeof(keys), "%s/keys.nkp", dir);
	snprintf(logpath, sizeof(logpath), "%s/keys.nkp.log", dir);
	tu_service_new(&svc);
}

static void teardown(void)
{
	nkpi_file_fail_next_writes(0, NKP_OK);
	tu_service_free(&svc);
	tu_rmdir(dir);
	free(dir);
}

TestSuite(keylog, .init = setup, .fini = teardown);

static void push_ok(nkp_hostd *h, uint64_t g, const tu_provider *p, size_t n)
{
	Nkp__Wire__Message *r = tu_push(&svc, h, g, NULL, p, n);

	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK, "push %llu refused: %s",
		     (unsigned long long)g,
		     r->body_case == NKP__WIRE__MESSAGE__BODY_REFUSAL ? r->refusal->message : "");
	tu_msg_free(r);
}

static void push_refused(nkp_hostd *h, uint64_t g, const tu_provider *p, size_t n)
{
	Nkp__Wire__Message *r = tu_push(&svc, h, g, NULL, p, n);

	cr_assert_neq(r->body_case, NKP__WIRE__MESSAGE__BODY_PUSH_ACK, "push %llu acked",
		      (unsigned long long)g);
	tu_msg_free(r);
}

static uint64_t generation(nkp_hostd *h, size_t *n_providers)
{
	nkp_hostd_status *st = NULL;
	uint64_t g;

	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	g = st->generation;
	if (n_providers != NULL) {
		*n_providers = st->n_providers;
	}
	nkp_hostd_status_free(st);
	return g;
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void spill(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static bool same_file(const char *path, const uint8_t *buf, size_t len)
{
	size_t n;
	uint8_t *now = slurp(path, &n);
	bool same = n == len && memcmp(now, buf, n) == 0;

	free(now);
	return same;
}

/* The offset of record `i` (0-based) in a log image. */
static size_t record_off(const uint8_t *buf, size_t len, unsigned i)
{
	size_t off = 0;

	while (i-- > 0) {
		cr_assert_leq(off + 4, len);
		off += 4 + ((size_t)buf[off] | (size_t)buf[off + 1] << 8 |
			    (size_t)buf[off + 2] << 16 | (size_t)buf[off + 3] << 24);
	}
	return off;
}

/* The log is exactly `n` whole records: nothing torn left in it. */
static void whole_records(unsigned n)
{
	size_t len;
	uint8_t *buf = slurp(logpath, &len);

	cr_assert_eq(record_off(buf, len, n), len, "the log is %u whole records", n);
	free(buf);
}

/* A host with `p` applied at generation 1 (the snapshot) and then at
 * generations 2..last (records 0..last-2). */
static nkp_hostd *host_with_records(tu_provider *p, uint64_t last)
{
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(p, "gold", true, true);
	for (uint64_t g = 1; g <= last; g++) {
		push_ok(h, g, p, 1);
	}
	return h;
}

static void open_refused(nkp_err want)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "h1"};
	nkp_hostd *h = NULL;

	cr_assert_eq(nkp_hostd_open(&cfg, &h), want);
	cr_assert_null(h);
}

Test(keylog, saves_append_to_the_log_and_a_reopen_holds_the_last_one)
{
	tu_provider p[2];
	size_t snap_len, n = 0;
	uint8_t *snap;
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(&p[0], "gold", true, true);
	tu_provider_init(&p[1], "silver", false, true);
	push_ok(h, 1, p, 1);
	cr_assert_eq(file_size(logpath), -1, "the first save writes the snapshot");
	snap = slurp(keys, &snap_len);
	for (uint64_t g = 2; g <= 20; g++) {
		push_ok(h, g, p, g < 10 ? 1 : 2);
	}
	cr_assert(same_file(keys, snap, snap_len), "appends leave keys.nkp alone");
	cr_assert_gt(file_size(logpath), 0);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, &n), 20);
	cr_assert_eq(n, 2);
	push_ok(h, 21, p, 2);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 21);
	nkp_hostd_close(h);
	free(snap);
}

Test(keylog, a_full_log_is_compacted_into_a_new_snapshot)
{
	tu_provider p;
	size_t snap_len;
	uint8_t *snap;
	nkp_hostd *h = host_with_records(&p, 1);

	snap = slurp(keys, &snap_len);
	for (uint64_t g = 2; g < 2 + HOSTD_LOG_MAX_RECORDS; g++) {
		push_ok(h, g, &p, 1);
	}
	cr_assert(same_file(keys, snap, snap_len));
	cr_assert_gt(file_size(logpath), 0);
	push_ok(h, 2 + HOSTD_LOG_MAX_RECORDS, &p, 1);
	cr_assert_eq(file_size(logpath), -1, "the log goes with the compaction");
	cr_assert_not(same_file(keys, snap, snap_len), "a new snapshot");
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 2 + HOSTD_LOG_MAX_RECORDS);
	push_ok(h, 3 + HOSTD_LOG_MAX_RECORDS, &p, 1);
	cr_assert_gt(file_size(logpath), 0, "appends start again after the snapshot");
	nkp_hostd_close(h);
	free(snap);
}

Test(keylog, a_push_that_removes_a_version_compacts_at_once)
{
	tu_provider p[2];
	size_t snap_len, n = 0;
	uint8_t *snap;
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(&p[0], "gold", true, true);
	tu_provider_init(&p[1], "silver", false, true);
	push_ok(h, 1, p, 2);
	push_ok(h, 2, p, 2);
	cr_assert_gt(file_size(logpath), 0);
	snap = slurp(keys, &snap_len);
	push_ok(h, 3, p, 1);
	cr_assert_eq(file_size(logpath), -1, "no record keeps silver's key");
	cr_assert_not(same_file(keys, snap, snap_len));
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, &n), 3);
	cr_assert_eq(n, 1);
	nkp_hostd_close(h);
	free(snap);
}

/* How many providers the sealed HostKeys in `path` holds. */
static size_t providers_in(const char *path)
{
	char kp[700];
	nkp_key *seal = NULL;
	uint8_t *buf = NULL;
	size_t len = 0, n;
	Nkp__Hoststate__HostKeys *m;

	snprintf(kp, sizeof(kp), "%s/seal.key", dir);
	cr_assert_eq(nkp_keyfile_load(kp, false, &seal), NKP_OK);
	cr_assert_eq(nkp_sealfile_read(path, seal, "nkp-host-keys", &buf, &len), NKP_OK, "%s",
		     path);
	m = nkp__hoststate__host_keys__unpack(NULL, len, buf);
	cr_assert_not_null(m);
	n = m->n_providers;
	nkp__hoststate__host_keys__free_unpacked(m, NULL);
	nkp_secure_free(buf);
	nkp_key_free(seal);
	return n;
}

/* A host that held gold and silver (generation 1) and then gold alone
 * (generation 2): keys.nkp.prev still holds silver, as without the log. */
static nkp_hostd *silver_dropped(tu_provider p[2], const char *prev)
{
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(&p[0], "gold", true, true);
	tu_provider_init(&p[1], "silver", false, true);
	push_ok(h, 1, p, 2);
	push_ok(h, 2, p, 1);
	cr_assert_eq(providers_in(prev), 2);
	cr_assert_eq(file_size(logpath), -1);
	return h;
}

Test(keylog, the_save_after_a_removal_takes_the_removed_key_out_of_prev)
{
	tu_provider p[2];
	char prev[700];
	nkp_hostd *h;

	snprintf(prev, sizeof(prev), "%s.prev", keys);
	h = silver_dropped(p, prev);
	push_ok(h, 3, p, 1);
	cr_assert_eq(providers_in(prev), 1, "the next save drops silver from .prev");
	cr_assert_eq(file_size(logpath), -1);
	push_ok(h, 4, p, 1);
	cr_assert_gt(file_size(logpath), 0, "then saves append again");
	nkp_hostd_close(h);
}

Test(keylog, after_a_restart_the_first_save_takes_a_removed_key_out_of_prev)
{
	tu_provider p[2];
	char prev[700];
	nkp_hostd *h;

	snprintf(prev, sizeof(prev), "%s.prev", keys);
	h = silver_dropped(p, prev);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	push_ok(h, 3, p, 1);
	cr_assert_eq(providers_in(prev), 1);
	cr_assert_eq(file_size(logpath), -1);
	push_ok(h, 4, p, 1);
	cr_assert_gt(file_size(logpath), 0);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	push_ok(h, 5, p, 1);
	cr_assert_gt(file_size(logpath), 0, ".prev holds nothing dropped: appends go on");
	nkp_hostd_close(h);
}

Test(keylog, a_torn_last_record_is_dropped_and_the_next_save_works)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 3);
	long size;

	nkp_hostd_close(h);
	size = file_size(logpath);
	cr_assert_eq(truncate(logpath, size - 10), 0);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 2, "record 1 was torn: record 0 holds");
	push_ok(h, 3, &p, 1);
	push_ok(h, 4, &p, 1);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 4);
	nkp_hostd_close(h);
	whole_records(3);
}

Test(keylog, garbage_after_the_last_record_is_dropped)
{
	static const uint8_t junk[] = {0x07, 0x00, 0x00, 0x00, 'g', 'a', 'r', 'b', 'a', 'g', 'e'};
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 3);
	long size;
	FILE *f;

	nkp_hostd_close(h);
	size = file_size(logpath);
	f = fopen(logpath, "ab");
	cr_assert_not_null(f);
	fwrite(junk, 1, sizeof(junk), f);
	fclose(f);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 3);
	push_ok(h, 4, &p, 1);
	nkp_hostd_close(h);
	cr_assert_gt(file_size(logpath), size);
	whole_records(3);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 4);
	nkp_hostd_close(h);
}

Test(keylog, a_bad_record_before_a_good_one_refuses_the_open_and_changes_nothing)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 3);
	size_t len, snap_len, off;
	uint8_t *buf, *snap;

	nkp_hostd_close(h);
	buf = slurp(logpath, &len);
	snap = slurp(keys, &snap_len);
	off = record_off(buf, len, 1);
	buf[off - 5] ^= 0x01;
	spill(logpath, buf, len);
	open_refused(NKP_ERR_AUTH);
	cr_assert(same_file(logpath, buf, len));
	cr_assert(same_file(keys, snap, snap_len));
	free(buf);
	free(snap);
}

Test(keylog, records_in_another_order_refuse_the_open)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 3);
	size_t len, off;
	uint8_t *buf, *swapped;

	nkp_hostd_close(h);
	buf = slurp(logpath, &len);
	off = record_off(buf, len, 1);
	cr_assert_eq(record_off(buf, len, 2), len);
	swapped = malloc(len);
	memcpy(swapped, buf + off, len - off);
	memcpy(swapped + (len - off), buf, off);
	spill(logpath, swapped, len);
	open_refused(NKP_ERR_AUTH);
	/* One record moved alone to another place: refused too. */
	spill(logpath, buf + off, len - off);
	open_refused(NKP_ERR_AUTH);
	free(buf);
	free(swapped);
}

Test(keylog, a_log_of_another_snapshot_is_ignored_and_removed)
{
	tu_provider p[2];
	size_t len, n = 0;
	uint8_t *old;
	nkp_hostd *h = tu_host(dir, &svc);

	tu_provider_init(&p[0], "gold", true, true);
	tu_provider_init(&p[1], "silver", false, true);
	push_ok(h, 1, p, 2);
	push_ok(h, 2, p, 2);
	old = slurp(logpath, &len);
	push_ok(h, 3, p, 1);
	nkp_hostd_close(h);
	/* As a crash between the snapshot and the log's unlink leaves it. */
	spill(logpath, old, len);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, &n), 3);
	cr_assert_eq(n, 1);
	cr_assert_eq(file_size(logpath), -1);
	nkp_hostd_close(h);
	free(old);
}

Test(keylog, a_log_without_a_snapshot_is_removed)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 2);

	nkp_hostd_close(h);
	cr_assert_eq(unlink(keys), 0);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 0);
	cr_assert_eq(file_size(logpath), -1);
	nkp_hostd_close(h);
}

Test(keylog, a_failed_append_refuses_the_push_and_leaves_the_log_as_it_was)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 2);
	size_t len;
	uint8_t *before = slurp(logpath, &len);

	nkpi_file_fail_next_writes(1, NKP_ERR_NOSPC);
	push_refused(h, 3, &p, 1);
	cr_assert(same_file(logpath, before, len));
	cr_assert_eq(generation(h, NULL), 2);
	push_ok(h, 3, &p, 1);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_eq(generation(h, NULL), 3);
	nkp_hostd_close(h);
	free(before);
}

Test(keylog, a_log_removed_while_the_host_runs_is_replaced_by_a_new_snapshot)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 4);
	size_t snap_len;
	uint8_t *snap = slurp(keys, &snap_len);

	cr_assert_gt(file_size(logpath), 0);
	cr_assert_eq(unlink(logpath), 0);
	push_ok(h, 5, &p, 1);
	cr_assert_not(same_file(keys, snap, snap_len), "the save wrote a new snapshot");
	cr_assert_eq(file_size(logpath), -1, "and left no log behind");
	push_ok(h, 6, &p, 1);
	cr_assert_gt(file_size(logpath), 0, "later saves append again");
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_not_null(h, "the next start opens the state");
	cr_assert_eq(generation(h, NULL), 6);
	nkp_hostd_close(h);
	free(snap);
}

Test(keylog, a_log_cut_while_the_host_runs_is_replaced_by_a_new_snapshot)
{
	tu_provider p;
	nkp_hostd *h = host_with_records(&p, 4);

	cr_assert_eq(truncate(logpath, file_size(logpath) / 2), 0);
	push_ok(h, 5, &p, 1);
	cr_assert_eq(file_size(logpath), -1);
	nkp_hostd_close(h);
	h = tu_reopen(dir);
	cr_assert_not_null(h);
	cr_assert_eq(generation(h, NULL), 5);
	nkp_hostd_close(h);
}

/* ---- known-answer vector: tests/vectors/host-keys-log-v1.{bin,txt} ----
 * keys.nkp = nkp_seal_bytes(seal_key, "nkp-host-keys", HostKeys gen 1);
 * keys.nkp.log (the .bin) = for i in 0, 1: u32le(len) || nkp_seal_bytes(
 * seal_key, "nkp-host-keys-log/<epoch hex>/<i>", HostKeys gen i + 2),
 * with the deterministic RNG reset before each seal and a fixed clock
 * (saved_unix) in the messages. Then the real loader opens them. */

static uint64_t vec_saved_unix;

/* HostKeys for generation `g`: provider "gold" (fixed id), version 1
 * active; from generation 3 also version 2 staged. Packed into *out. */
static size_t vec_keys(uint64_t g, const uint8_t svc_pub[32], const uint8_t epoch[16],
		       uint8_t **out)
{
	Nkp__Hoststate__HostKeys m = NKP__HOSTSTATE__HOST_KEYS__INIT;
	Nkp__Wire__ProviderKeys p = NKP__WIRE__PROVIDER_KEYS__INIT, *pp = &p;
	Nkp__Wire__VersionKey v[2], *vp[2] = {&v[0], &v[1]};
	uint8_t id[NKP_ID_BYTES], vkeys[2][NKP_KEY_BYTES];
	size_t len;

	for (size_t i = 0; i < sizeof(id); i++) {
		id[i] = (uint8_t)(0x10 + i);
	}
	for (size_t i = 0; i < NKP_KEY_BYTES; i++) {
		vkeys[0][i] = (uint8_t)(0x20 + i);
		vkeys[1][i] = (uint8_t)(0x60 + i);
	}
	for (int j = 0; j < 2; j++) {
		nkp__wire__version_key__init(&v[j]);
		v[j].version = (uint32_t)j + 1;
		v[j].state = j == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_STAGED;
		v[j].created_unix = vec_saved_unix - 100;
		v[j].key.data = vkeys[j];
		v[j].key.len = NKP_KEY_BYTES;
	}
	p.id.data = id;
	p.id.len = sizeof(id);
	p.name = "gold";
	p.is_default = true;
	p.backed_up = true;
	p.n_versions = g >= 3 ? 2 : 1;
	p.versions = vp;
	m.format_version = 1;
	m.service_key.data = (uint8_t *)svc_pub;
	m.service_key.len = 32;
	m.applied_generation = g;
	m.n_providers = 1;
	m.providers = &pp;
	m.saved_unix = vec_saved_unix + g;
	m.log_epoch.data = (uint8_t *)epoch;
	m.log_epoch.len = 16;
	len = nkp__hoststate__host_keys__get_packed_size(&m);
	*out = malloc(len);
	nkp__hoststate__host_keys__pack(&m, *out);
	sodium_memzero(vkeys, sizeof(vkeys));
	return len;
}

static void vec_host_dir(const uint8_t seal[32], const uint8_t svc_pub[32], const uint8_t *snap,
			 size_t snap_len, const uint8_t *log, size_t log_len)
{
	char path[700];
	nkp_hostd_config cfg = {.state_dir = dir};
	uint8_t host_pub[32];

	snprintf(path, sizeof(path), "%s/seal.key", dir);
	spill(path, seal, 32);
	cr_assert_eq(chmod(path, 0600), 0);
	cr_assert_eq(nkp_hostd_init(&cfg, svc_pub, host_pub), NKP_OK);
	spill(keys, snap, snap_len);
	spill(logpath, log, log_len);
}

Test(keylog, host_keys_log_v1_matches_the_vector_and_the_loader_opens_it)
{
	uint8_t seal_b[32], svc_pub[32], epoch[16], *pt, *sealed, *snap = NULL;
	uint8_t log[8192];
	char label[128], hex[33];
	size_t pt_len, n, snap_len = 0, log_len = 0;
	nkp_key *seal = NULL;
	nkp_hostd *h;
	nkp_hostd_status *st = NULL;

	vec_load("host-keys-log-v1.txt");
	vec_hex("rng_seed", rng_seed, sizeof(rng_seed));
	vec_hex("seal_key", seal_b, sizeof(seal_b));
	vec_hex("service_key", svc_pub, sizeof(svc_pub));
	vec_hex("log_epoch", epoch, sizeof(epoch));
	vec_saved_unix = vec_u64("saved_unix");
	randombytes_set_implementation(&det_rng);
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkp_key_from_bytes(seal_b, &seal), NKP_OK);
	for (uint64_t g = 1; g <= 3; g++) {
		pt_len = vec_keys(g, svc_pub, epoch, &pt);
		sodium_bin2hex(hex, sizeof(hex), epoch, sizeof(epoch));
		if (g == 1) {
			snprintf(label, sizeof(label), "nkp-host-keys");
		} else {
			snprintf(label, sizeof(label), "nkp-host-keys-log/%s/%u", hex,
				 (unsigned)(g - 2));
		}
		rng_calls = 0;
		cr_assert_eq(nkp_seal_bytes(seal, label, pt, pt_len, &sealed, &n), NKP_OK);
		sodium_memzero(pt, pt_len);
		free(pt);
		if (g == 1) {
			snap = sealed;
			snap_len = n;
			continue;
		}
		cr_assert_leq(log_len + 4 + n, sizeof(log));
		log[log_len] = (uint8_t)n;
		log[log_len + 1] = (uint8_t)(n >> 8);
		log[log_len + 2] = (uint8_t)(n >> 16);
		log[log_len + 3] = (uint8_t)(n >> 24);
		memcpy(log + log_len + 4, sealed, n);
		log_len += 4 + n;
		free(sealed);
	}
	if (regen_vectors()) {
		print_hex("keys_nkp", snap, snap_len);
	}
	{
		uint8_t *want = malloc(snap_len);

		vec_hex("keys_nkp", want, snap_len);
		cr_assert_arr_eq(want, snap, snap_len, "keys.nkp differs from the vector");
		free(want);
	}
	vec_check_bin("host-keys-log-v1.bin", log, log_len);
	/* The real loader: state = the second record (generation 3). */
	vec_host_dir(seal_b, svc_pub, snap, snap_len, log, log_len);
	h = tu_reopen(dir);
	cr_assert_eq(nkp_hostd_status_get(h, &st), NKP_OK);
	cr_assert_eq(st->generation, 3);
	cr_assert_eq(st->n_providers, 1);
	cr_assert_str_eq(st->providers[0].name, "gold");
	cr_assert_eq(st->providers[0].n_versions, 2);
	nkp_hostd_status_free(st);
	nkp_hostd_close(h);
	nkp_key_free(seal);
	free(snap);
	free(vec_text);
}
