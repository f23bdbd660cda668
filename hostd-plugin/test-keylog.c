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
	hostd_log_fail_next_appends(0);
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

	hostd_log_fail_next_appends(1);
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
