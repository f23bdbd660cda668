/* nkpctl provider rotate: asks nkpd to stage a new version (or resume a
 * staged one), then polls until it is promoted or the rotation fails.
 * Progress: a live line on stderr when it is a terminal; otherwise plain
 * lines on stdout (stderr keeps its one line for a failure). */
#include <getopt.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "internal.h"

#define POLL_MS 200
/* nkpd owns the deadline; we give up only if it stops answering. */
#define GRACE_S 30

static const char rotate_usage[] =
	"usage: nkpctl [--socket PATH] [--json] provider rotate NAME [--timeout SECONDS] "
	"[--force]\n"
	"Stages a new primary key version on every host in scope and promotes it to\n"
	"active once every one has acknowledged it; the previous version becomes\n"
	"decrypt-only. Waits for the promotion, showing how many hosts acknowledged.\n"
	"  --timeout SECONDS  deadline for all acknowledgements (default 30); on timeout\n"
	"                     the rotation fails naming the hosts missing and the version\n"
	"                     stays staged (running rotate again resumes it)\n"
	"  --force            promote at the deadline whatever is missing\n";

typedef struct progress {
	bool tty;
	bool json;
	bool live; /* a live line is on stderr */
	uint32_t last_acked, last_total;
	bool shown;
} progress;

static void show_progress(progress *pg, const char *name, const Nkp__Admin__RotationInfo *r)
{
	if (pg->shown && r->acked == pg->last_acked && r->total == pg->last_total) {
		return;
	}
	pg->shown = true;
	pg->last_acked = r->acked;
	pg->last_total = r->total;
	if (pg->tty) {
		fprintf(stderr, "\r\033[Kprovider %s: version %u staged: acknowledged %u/%u hosts",
			name, r->version, r->acked, r->total);
		pg->live = true;
	} else if (!pg->json) {
		printf("provider %s: version %u staged: acknowledged %u/%u hosts\n", name,
		       r->version, r->acked, r->total);
		fflush(stdout);
	}
}

static void end_progress(progress *pg)
{
	if (pg->live) {
		fprintf(stderr, "\r\033[K");
		pg->live = false;
	}
}

static int poll_status(const ctl *c, const char *name, ctl_resp **out)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__RotationStatusRequest rs = NKP__ADMIN__ROTATION_STATUS_REQUEST__INIT;

	rs.name = (char *)name;
	q.op_case = NKP__ADMIN__REQUEST__OP_ROTATION_STATUS;
	q.rotation_status = &rs;
	return ctl_call(c, &q, "provider rotate", out);
}

static int finish(const ctl *c, progress *pg, const char *name, const Nkp__Admin__RotationInfo *r)
{
	end_progress(pg);
	if (strcmp(r->state, "promoted") != 0) {
		return ctl_fail("provider rotate", "%s", r->message);
	}
	if (c->json) {
		printf("{\"name\":");
		ctl_json_str(stdout, name);
		printf(",\"state\":\"promoted\",\"active_version\":%u,\"acknowledged\":%u,"
		       "\"total\":%u,\"message\":",
		       r->version, r->acked, r->total);
		ctl_json_str(stdout, r->message);
		printf("}\n");
	} else {
		printf("provider %s: %s; %u/%u hosts acknowledged\n", name, r->message, r->acked,
		       r->total);
	}
	return 0;
}

static int wait_promotion(const ctl *c, const char *name, ctl_resp *first, unsigned long timeout)
{
	progress pg = {.tty = isatty(STDERR_FILENO) == 1, .json = c->json};
	/* Monotonic: a wall clock step cannot cut the wait. */
	uint64_t give_up = nkpi_mono_ms() + ((uint64_t)timeout + GRACE_S) * 1000u;
	ctl_resp *r = first;
	int rc;

	for (;;) {
		if (r->result_case != NKP__ADMIN__RESPONSE__RESULT_ROTATION) {
			ctl_resp_free(r);
			end_progress(&pg);
			return ctl_fail("provider rotate", "unexpected reply from nkpd");
		}
		if (strcmp(r->rotation->state, "waiting") != 0) {
			rc = finish(c, &pg, name, r->rotation);
			ctl_resp_free(r);
			return rc;
		}
		show_progress(&pg, name, r->rotation);
		ctl_resp_free(r);
		r = NULL;
		if (nkpi_mono_ms() > give_up) {
			end_progress(&pg);
			return ctl_fail("provider rotate",
					"nkpd did not finish the rotation in time");
		}
		struct timespec ts = {0, POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
		if (poll_status(c, name, &r) != 0) {
			end_progress(&pg);
			return 1;
		}
	}
}

int rotate_main(ctl *c, int argc, char **argv)
{
	static const struct option lo[] = {
		CTL_COMMON_LONGOPTS,
		{"timeout", required_argument, NULL, 't'},
		{"force", no_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRotateRequest rr = NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT;
	unsigned long timeout = 30;
	ctl_resp *r = NULL;
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (opt == 'h') {
			fputs(rotate_usage, stdout);
			return 0;
		} else if (opt == 't') {
			if (!ctl_parse_uint(optarg, 1, 86400, &timeout)) {
				return ctl_usage("provider rotate",
						 "--timeout wants seconds (1-86400)");
			}
		} else if (opt == 'f') {
			rr.force = true;
		} else if (!ctl_common_opt(c, opt, optarg)) {
			return ctl_usage("provider rotate", "unknown option or missing argument");
		}
	}
	if (optind + 1 != argc) {
		return ctl_usage("provider rotate", "one provider NAME is required");
	}
	rr.name = argv[optind];
	rr.timeout_seconds = (uint32_t)timeout;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE;
	q.provider_rotate = &rr;
	if (ctl_call(c, &q, "provider rotate", &r) != 0) {
		return 1;
	}
	return wait_promotion(c, rr.name, r, timeout);
}
