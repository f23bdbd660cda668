#include <sys/stat.h>

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <nkp/nkp.h>

#include "internal.h"

static char dir[64];
static char path[128];

static void setup(void)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	nkp_log_set_sink(NULL, NULL);
	strcpy(dir, "/tmp/nkp-event-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/events.jsonl", dir);
}

static void teardown(void)
{
	char other[160];

	unlink(path);
	snprintf(other, sizeof(other), "%s/other", dir);
	unlink(other);
	rmdir(dir);
	nkpi_set_clock(0);
}

static void append_raw(const char *text)
{
	FILE *fp = fopen(path, "a");

	cr_assert_not_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static char *read_all(void)
{
	FILE *fp = fopen(path, "r");
	char *buf = calloc(1, 1 << 20);
	size_t n;

	cr_assert_not_null(fp);
	n = fread(buf, 1, (1 << 20) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* Collects what nkp_eventlog_read hands out. */
typedef struct {
	uint64_t seqs[4096];
	size_t n;
	char last[8192];
} collected;

static void collect(uint64_t seq, const char *json, void *arg)
{
	collected *c = arg;

	cr_assert_lt(c->n, 4096);
	c->seqs[c->n++] = seq;
	snprintf(c->last, sizeof(c->last), "%s", json);
}

Test(event, kind_names_are_stable_and_distinct)
{
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_PROVIDER_CREATED), "provider.created");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_HOST_IN_SYNC), "host.in_sync");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_PUSH_FAILED), "push.failed");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_KEY_UNKNOWN), "key.unknown");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_VM_LOCKED), "vm.locked");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_TAMPERING), "tampering");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_BAD_INPUT), "input.bad");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_STATE_WRITE_FAILED), "state.write_failed");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_SERVICE_STARTED), "service.started");
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV_KEYS_APPLIED), "keys.applied");
	for (int i = 0; i < NKP_EV__COUNT; i++) {
		const char *name = nkp_event_kind_name((nkp_event_kind)i);

		cr_assert_not_null(name);
		cr_assert_str_neq(name, "unknown", "kind %d has no name", i);
		for (const char *c = name; *c != '\0'; c++) {
			cr_assert(islower((unsigned char)*c) || *c == '.' || *c == '_', "%s", name);
		}
		for (int j = 0; j < i; j++) {
			cr_assert_str_neq(name, nkp_event_kind_name((nkp_event_kind)j));
		}
	}
	cr_assert_str_eq(nkp_event_kind_name(NKP_EV__COUNT), "unknown");
}

Test(event, severities_match_what_operators_alert_on)
{
	cr_assert_eq(nkp_event_kind_level(NKP_EV_TAMPERING), NKP_LOG_ERR);
	cr_assert_eq(nkp_event_kind_level(NKP_EV_STATE_WRITE_FAILED), NKP_LOG_ERR);
	cr_assert_eq(nkp_event_kind_level(NKP_EV_HOST_UNREACHABLE), NKP_LOG_WARN);
	cr_assert_eq(nkp_event_kind_level(NKP_EV_PROVIDER_NOT_BACKED_UP), NKP_LOG_WARN);
	cr_assert_eq(nkp_event_kind_level(NKP_EV_PROVIDER_CREATED), NKP_LOG_NOTICE);
	cr_assert_eq(nkp_event_kind_level(NKP_EV_HOST_IN_SYNC), NKP_LOG_DEBUG);
}

Test(event, line_has_every_field, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	char *text;

	nkpi_set_clock(1700000000);
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_PROVIDER_CREATED, "prod", NULL, "version %d", 1), 1);
	cr_assert_eq(nkp_event(log, NKP_EV_HOST_IN_SYNC, NULL, "hv-01", "generation 9"), 2);
	nkp_eventlog_close(log);
	text = read_all();
	cr_assert_str_eq(text,
			 "{\"seq\":1,\"time\":\"2023-11-14T22:13:20Z\",\"severity\":\"notice\","
			 "\"kind\":\"provider.created\",\"provider\":\"prod\",\"host\":null,"
			 "\"message\":\"version 1\"}\n"
			 "{\"seq\":2,\"time\":\"2023-11-14T22:13:20Z\",\"severity\":\"debug\","
			 "\"kind\":\"host.in_sync\",\"provider\":null,\"host\":\"hv-01\","
			 "\"message\":\"generation 9\"}\n");
	free(text);
}

Test(event, seq_continues_across_reopen, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;

	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	for (uint64_t i = 1; i <= 3; i++) {
		cr_assert_eq(nkp_event(log, NKP_EV_SERVICE_STARTED, NULL, NULL, "start"), i);
	}
	nkp_eventlog_close(log);
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_SERVICE_STOPPED, NULL, NULL, "stop"), 4);
	nkp_eventlog_close(log);
	cr_assert_eq(nkp_eventlog_read(path, 0, NULL, NULL), 4);
}

Test(event, seq_is_found_past_a_long_history, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	char filler[1000];

	memset(filler, 'x', sizeof(filler) - 1);
	filler[sizeof(filler) - 1] = '\0';
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	for (int i = 0; i < 200; i++) {
		cr_assert_neq(nkp_event(log, NKP_EV_KEY_CREATED, "p", "h", "%s", filler), 0);
	}
	nkp_eventlog_close(log);
	/* More than a tail window of garbage after the last good line. */
	for (int i = 0; i < 120; i++) {
		append_raw("garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage "
			   "garbage garbage garbage garbage garbage garbage garbage garbage\n");
	}
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_KEY_CREATED, NULL, NULL, "after"), 201);
	nkp_eventlog_close(log);
}

Test(event, torn_last_line_is_tolerated, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	collected c = {0};

	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_SERVICE_STARTED, NULL, NULL, "one"), 1);
	cr_assert_eq(nkp_event(log, NKP_EV_SERVICE_STARTED, NULL, NULL, "two"), 2);
	nkp_eventlog_close(log);
	/* A crash mid-write. */
	append_raw("{\"seq\":3,\"time\":\"2026-");
	cr_assert_eq(nkp_eventlog_read(path, 0, NULL, NULL), 2, "a torn line is not read");
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_SERVICE_STARTED, NULL, NULL, "three"), 3);
	nkp_eventlog_close(log);
	/* The fragment stays on its own line; the new event is whole. */
	cr_assert_eq(nkp_eventlog_read(path, 0, collect, &c), 3);
	cr_assert_eq(c.n, 3);
	cr_assert_eq(c.seqs[2], 3);
	cr_assert(strstr(c.last, "\"message\":\"three\"}") != NULL, "%s", c.last);
}

Test(event, line_cut_before_its_newline_keeps_its_seq, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	collected c = {0};

	append_raw("{\"seq\":7,\"time\":\"x\",\"kind\":\"tampering\",\"message\":\"m\"}");
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_TAMPERING, NULL, NULL, "next"), 8);
	nkp_eventlog_close(log);
	cr_assert_eq(nkp_eventlog_read(path, 0, collect, &c), 8);
	cr_assert_eq(c.n, 2);
	cr_assert_eq(c.seqs[0], 7);
}

Test(event, read_streams_lines_after_a_seq, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	collected c = {0};

	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	for (int i = 1; i <= 5; i++) {
		cr_assert_eq(nkp_event(log, NKP_EV_HOST_IN_SYNC, NULL, "h", "n=%d", i),
			     (uint64_t)i);
	}
	nkp_eventlog_close(log);
	append_raw("not json at all\n{\"seq\":x}\n{\"seq\":01,\"a\":1}\n\n");
	cr_assert_eq(nkp_eventlog_read(path, 2, collect, &c), 5);
	cr_assert_eq(c.n, 3);
	cr_assert_eq(c.seqs[0], 3);
	cr_assert_eq(c.seqs[2], 5);
	cr_assert_eq(strchr(c.last, '\n'), NULL);
	cr_assert(strstr(c.last, "\"message\":\"n=5\"") != NULL);
	c.n = 0;
	cr_assert_eq(nkp_eventlog_read(path, 5, collect, &c), 5);
	cr_assert_eq(c.n, 0);
	cr_assert_eq(nkp_eventlog_read(path, 99, collect, &c), 99);
	cr_assert_eq(nkp_eventlog_read("/nonexistent/events", 4, collect, &c), 4);
	cr_assert_eq(c.n, 0);
}

static void assert_escape(const char *in, const char *want)
{
	char out[256];

	nkp_json_escape(in, out, sizeof(out));
	cr_assert_str_eq(out, want, "escaping %s", in);
}

Test(event, json_escaping)
{
	assert_escape("plain text", "plain text");
	assert_escape("say \"hi\"", "say \\\"hi\\\"");
	assert_escape("a\\b", "a\\\\b");
	assert_escape("line\nbreak\r", "line\\u000abreak\\u000d");
	assert_escape("\x01\x1b[0m\t\x7f", "\\u0001\\u001b[0m\\u0009\\u007f");
	assert_escape("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x94\x91",
		      "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x94\x91");
	/* Invalid UTF-8: lone continuation, overlong, surrogate, truncated. */
	assert_escape("\x80", "\\ufffd");
	assert_escape("\xc0\xaf", "\\ufffd\\ufffd");
	assert_escape("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd");
	assert_escape("\xe2\x82", "\\ufffd\\ufffd");
	assert_escape("", "");
	assert_escape(NULL, "");
}

Test(event, json_truncation_never_splits_an_escape)
{
	static const char in[] = "ab\"c\n\xc3\xa9\\d\x01";
	/* Where the units of the escaped form end: a b \" c \u000a é \\ d \u0001 */
	static const size_t bounds[] = {0, 1, 2, 4, 5, 11, 13, 15, 16, 22};
	char full[128], out[128];

	nkp_json_escape(in, full, sizeof(full));
	cr_assert_str_eq(full, "ab\\\"c\\u000a\xc3\xa9\\\\d\\u0001");
	out[0] = 'Z';
	nkp_json_escape(in, out, 0);
	cr_assert_eq(out[0], 'Z', "outsize 0 writes nothing");
	for (size_t size = 1; size <= strlen(full) + 1; size++) {
		size_t want = 0;

		for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
			if (bounds[i] < size) {
				want = bounds[i];
			}
		}
		memset(out, 'Z', sizeof(out));
		nkp_json_escape(in, out, size);
		cr_assert_eq(strlen(out), want, "size %zu gave %s", size, out);
		cr_assert_eq(strncmp(out, full, want), 0);
	}
}

Test(event, long_and_hostile_messages_stay_one_valid_line, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	char *quotes = malloc(20001), *text;
	size_t lines = 0;

	memset(quotes, '"', 20000);
	quotes[20000] = '\0';
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_BAD_INPUT, quotes, quotes, "%s", quotes), 1);
	cr_assert_eq(nkp_event(log, NKP_EV_BAD_INPUT, "p\n{\"seq\":99}", NULL, "x\n{\"seq\":99,"),
		     2);
	nkp_eventlog_close(log);
	text = read_all();
	for (char *p = text; *p != '\0'; p++) {
		lines += *p == '\n';
	}
	cr_assert_eq(lines, 2);
	cr_assert_eq(nkp_eventlog_read(path, 0, NULL, NULL), 2);
	cr_assert(strncmp(text, "{\"seq\":1,", 9) == 0);
	cr_assert_not_null(strstr(text, "\"provider\":\"\\\"\\\""));
	free(text);
	free(quotes);
}

typedef struct {
	nkp_eventlog *log;
	int id;
	uint64_t seqs[250];
} worker;

static void *work(void *arg)
{
	worker *w = arg;

	for (int i = 0; i < 250; i++) {
		w->seqs[i] = nkp_event(w->log, NKP_EV_HOST_IN_SYNC, "prov", "host",
				       "thread %d event %d", w->id, i);
	}
	return NULL;
}

Test(event, concurrent_events_get_unique_seqs_and_whole_lines, .init = setup, .fini = teardown)
{
	static collected c;
	static bool seen[1001];
	nkp_eventlog *log;
	pthread_t th[4];
	worker w[4];

	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	for (int i = 0; i < 4; i++) {
		w[i] = (worker){.log = log, .id = i};
		cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
	}
	nkp_eventlog_close(log);
	for (int i = 0; i < 4; i++) {
		for (int j = 0; j < 250; j++) {
			uint64_t s = w[i].seqs[j];

			cr_assert(s >= 1 && s <= 1000 && !seen[s], "seq %llu",
				  (unsigned long long)s);
			seen[s] = true;
		}
	}
	cr_assert_eq(nkp_eventlog_read(path, 0, collect, &c), 1000);
	cr_assert_eq(c.n, 1000, "every line whole and well-formed");
	for (size_t i = 0; i < c.n; i++) {
		cr_assert_eq(c.seqs[i], i + 1, "lines in seq order");
	}
}

Test(event, file_is_owner_only, .init = setup, .fini = teardown)
{
	nkp_eventlog *log;
	struct stat st;
	mode_t old = umask(0);
	char other[160];
	int fd;

	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	umask(old);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	nkp_eventlog_close(log);

	/* A log someone made world-readable is tightened on open. */
	snprintf(other, sizeof(other), "%s/other", dir);
	fd = open(other, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	fchmod(fd, 0644);
	close(fd);
	cr_assert_eq(nkp_eventlog_open(other, &log), NKP_OK);
	cr_assert_eq(stat(other, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	nkp_eventlog_close(log);
}

Test(event, unusable_paths_are_errors, .init = setup, .fini = teardown)
{
	nkp_eventlog *log = (nkp_eventlog *)0x1;
	char missing[160];

	snprintf(missing, sizeof(missing), "%s/no/such/dir", dir);
	cr_assert_neq(nkp_eventlog_open(dir, &log), NKP_OK, "a directory");
	cr_assert_neq(nkp_eventlog_open(missing, &log), NKP_OK);
	cr_assert_eq(log, (nkp_eventlog *)0x1, "out-parameter written on failure");
	nkp_eventlog_close(NULL);
}

typedef struct {
	int calls;
	nkp_log_level level;
	char msgid[64];
	char msg[1024];
} sink_seen;

static void sink(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	sink_seen *s = arg;

	s->calls++;
	s->level = level;
	snprintf(s->msgid, sizeof(s->msgid), "%s", msgid);
	snprintf(s->msg, sizeof(s->msg), "%s", msg);
}

Test(event, log_sink_gets_the_kind_as_message_id, .init = setup, .fini = teardown)
{
	sink_seen s = {0};
	nkp_eventlog *log;

	nkp_log_set_sink(sink, &s);
	nkp_log_set_level(NKP_LOG_DEBUG);
	cr_assert_eq(nkp_eventlog_open(path, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_VM_LOCKED, "prod", "hv-02", "vm %s needs v%d", "db1", 3),
		     1);
	cr_assert_eq(s.calls, 1);
	cr_assert_str_eq(s.msgid, "vm.locked");
	cr_assert_eq(s.level, NKP_LOG_WARN);
	cr_assert_str_eq(s.msg, "provider=prod host=hv-02 vm db1 needs v3");
	/* Control characters from peers are escaped in the log line too. */
	cr_assert_eq(nkp_event(log, NKP_EV_BAD_INPUT, NULL, "evil\x1b[2J", "bad"), 2);
	cr_assert_str_eq(s.msg, "host=evil\\u001b[2J bad");
	nkp_eventlog_close(log);
	nkp_log_set_sink(NULL, NULL);
}

Test(event, log_only_event_log_still_logs, .init = setup, .fini = teardown)
{
	sink_seen s = {0};
	nkp_eventlog *log;

	nkp_log_set_sink(sink, &s);
	cr_assert_eq(nkp_eventlog_open(NULL, &log), NKP_OK);
	cr_assert_eq(nkp_event(log, NKP_EV_KEY_CREATED, NULL, NULL, "k"), 1);
	cr_assert_eq(nkp_event(log, NKP_EV_KEY_CREATED, NULL, NULL, "k"), 2);
	nkp_eventlog_close(log);
	cr_assert_eq(nkp_event(NULL, NKP_EV_TAMPERING, NULL, NULL, "no log at all"), 0);
	cr_assert_eq(s.calls, 3);
	cr_assert_str_eq(s.msgid, "tampering");
	nkp_log_set_sink(NULL, NULL);
}
