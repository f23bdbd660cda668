/* nkpctl events [--follow]: the service's event log, read through the
 * admin API by sequence number. */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

#define FOLLOW_POLL_MS 500

static const char events_usage[] =
	"usage: nkpctl [--socket PATH] [--json] events [--follow]\n"
	"Prints the service's events (time, severity, kind, provider, host, message).\n"
	"  --follow   keep printing new events as they happen (until interrupted)\n"
	"With --json: a JSON array, or with --follow one JSON object a line.\n";

static volatile sig_atomic_t stop_following;

static void on_signal(int sig)
{
	(void)sig;
	stop_following = 1;
}

/* Copies the string value of "key" in a flat JSON object line into out
 * (unescaping the common escapes); "" if absent or null. */
static void json_field(const char *line, const char *key, char *out, size_t size)
{
	char pat[64];
	const char *p;
	size_t o = 0;

	out[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(line, pat);
	if (p == NULL) {
		return;
	}
	for (p += strlen(pat); *p != '\0' && *p != '"' && o + 1 < size; p++) {
		if (*p == '\\' && p[1] != '\0') {
			p++;
			if (*p == 'u') {
				out[o++] = '?';
				p += strlen(p) >= 5 ? 4 : strlen(p) - 1;
				continue;
			}
			out[o++] = *p == 'n' ? ' ' : *p == 't' ? ' ' : *p;
			continue;
		}
		out[o++] = *p;
	}
	out[o] = '\0';
}

static void print_human(const char *line)
{
	char t[40], sev[16], kind[48], prov[80], host[80], msg[2048];

	json_field(line, "time", t, sizeof(t));
	json_field(line, "severity", sev, sizeof(sev));
	json_field(line, "kind", kind, sizeof(kind));
	json_field(line, "provider", prov, sizeof(prov));
	json_field(line, "host", host, sizeof(host));
	json_field(line, "message", msg, sizeof(msg));
	printf("%s %-7s %-26s %s\n", t, sev, kind, msg);
}

static int fetch(const ctl *c, uint64_t *after, bool follow, bool *first)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__EventsRequest er = NKP__ADMIN__EVENTS_REQUEST__INIT;
	ctl_resp *r = NULL;

	er.after_seq = *after;
	q.op_case = NKP__ADMIN__REQUEST__OP_EVENTS;
	q.events = &er;
	if (ctl_call(c, &q, "events", &r) != 0) {
		return -1;
	}
	if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_EVENTS) {
		ctl_resp_free(r);
		ctl_fail("events", "unexpected reply from nkpd");
		return -1;
	}
	for (size_t i = 0; i < r->events->n_lines; i++) {
		if (c->json && !follow) {
			printf("%s%s", *first ? "[\n" : ",\n", r->events->lines[i]);
			*first = false;
		} else if (c->json) {
			printf("%s\n", r->events->lines[i]);
		} else {
			print_human(r->events->lines[i]);
		}
	}
	fflush(stdout);
	*after = r->events->last_seq;
	int n = (int)r->events->n_lines;
	ctl_resp_free(r);
	return n;
}

static int run_events(const ctl *c, bool follow)
{
	uint64_t after = 0;
	bool first = true;
	int n;

	/* Read everything there is (in batches), then follow if asked. */
	do {
		n = fetch(c, &after, follow, &first);
	} while (n > 0);
	if (n < 0) {
		return 1;
	}
	if (c->json && !follow) {
		printf(first ? "[]\n" : "\n]\n");
		return 0;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (follow && !stop_following) {
		struct timespec ts = {0, FOLLOW_POLL_MS * 1000000L};

		nanosleep(&ts, NULL);
		if (!stop_following && fetch(c, &after, follow, &first) < 0) {
			return 1;
		}
	}
	return 0;
}

int events_main(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS, {"follow", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
	bool follow = false;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "hf", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(events_usage, stdout);
			return 0;
		}
		if (opt == 'f') {
			follow = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("events", "unknown option or missing argument");
		}
	}
	if (optind != argc) {
		return ctl_usage("events", "unexpected argument %s", argv[optind]);
	}
	return run_events(c, follow);
}
