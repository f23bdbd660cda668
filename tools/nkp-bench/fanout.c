/* nkp-bench fanout: a real nkpd and N simulated hosts (real plugin
 * instances, many per process) on 127.0.0.1, measured beside a bare nng
 * fan-out of messages of the same sizes to N listeners in the same
 * processes (docs/BENCHMARKS.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nkp/hostd.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "cluster.h"
#include "fanout.h"

#define CMD "fanout"
#define MAX_HOSTS 10000u
#define MAX_PROCS 16u
#define BACKUP_PASSWORD "nkp-bench fanout throwaway password"

static const char usage[] =
	"Usage: nkp-bench fanout --hosts N [--json] [options]\n"
	"\n"
	"Starts a real nkpd and N simulated hosts (real host plugin instances with\n"
	"their own identities and nng listeners on 127.0.0.1, many per process),\n"
	"enrols them and measures: enrol_s, first_sync_ms (create + backup until\n"
	"every host is in sync), rotate_ms (rotate until promoted and every host\n"
	"applied it), delete_ms, heartbeat_cpu_pct and service_rss_mib (nkpd in\n"
	"steady state), and floor_ms: a bare nng fan-out (no crypto, no protobuf)\n"
	"of the rotation's two rounds of messages of the same sizes to N echo\n"
	"listeners in the same host processes. ratio = rotate_ms / floor_ms\n"
	"(medians). Progress goes to stderr; with --json the last line of stdout\n"
	"is one JSON object.\n"
	"\n"
	"  --hosts N            simulated hosts (1-10000; required)\n"
	"  --rounds N           rotations, each beside a floor run (default 3)\n"
	"  --steady-seconds S   steady state measured for S seconds (default 20)\n"
	"  --heartbeat S        nkpd --heartbeat (default 5, nkpd's default)\n"
	"  --host-procs P       processes holding the hosts (default 2)\n"
	"  --down-seconds S     then stop every host and report down_cpu_pct: nkpd CPU\n"
	"                       over S seconds, 60 s after (redial backoff settled;\n"
	"                       default 0: not measured)\n"
	"  --nkpd PATH          the nkpd binary (default: found beside nkp-bench)\n"
	"  --keep               keep the temporary directories (for a post-mortem)\n"
	"  --json               one JSON object as the last line\n";

typedef struct fopts {
	bool json;
	bool keep;
	unsigned hosts;
	unsigned rounds;
	unsigned steady_s;
	unsigned heartbeat_s;
	unsigned procs;
	unsigned down_s;
	const char *nkpd;
} fopts;

typedef struct host_rec {
	char name[16];
	char url[64];
	char floor_url[64];
	uint8_t pub[32];
} host_rec;

typedef struct run {
	fopts o;
	char nkpd[PATH_MAX];
	char base[PATH_MAX]; /* $TMPDIR/nkp-bench-*: nkpd state, logs */
	char svc_dir[PATH_MAX + 8];
	char host_dir[PATH_MAX]; /* host state: /dev/shm when there */
	char log[PATH_MAX + 16];
	uint8_t service_key[32];
	pid_t nkpd_pid;
	pid_t workers[MAX_PROCS];
	int ctl_fds[MAX_PROCS];
	unsigned n_workers;
	host_rec *hosts;
	bench_admin *admin;
	fanout_floor *floor;
	/* results */
	double setup_s, enrol_s, first_sync_ms, delete_ms, cpu_pct, rss_mib, hwm_mib;
	double hosts_rss_mib, hosts_cpu_pct, down_cpu_pct;
	unsigned svc_threads, svc_fds, hosts_fds;
	double rotate_ms[64], stage_ms[64], floor_ms[64], floor1_ms[64], rot_cpu[64], rot_hcpu[64];
	double floor_cpu[64], floor_hcpu[64];
	size_t push_bytes, ack_bytes;
} run;

static int parse_num(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v < lo || v > hi) {
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int usage_error(const char *msg)
{
	fprintf(stderr, "nkp-bench fanout: %s\nTry 'nkp-bench fanout --help'.\n", msg);
	return 2;
}

static int parse_opts(int argc, char **argv, fopts *o)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"keep", no_argument, NULL, 'k'},
		{"hosts", required_argument, NULL, 'n'},
		{"rounds", required_argument, NULL, 'r'},
		{"steady-seconds", required_argument, NULL, 's'},
		{"heartbeat", required_argument, NULL, 'b'},
		{"host-procs", required_argument, NULL, 'p'},
		{"nkpd", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{"down-seconds", required_argument, NULL, 'D'},
		{NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		unsigned *dst = c == 'n'   ? &o->hosts
				: c == 'r' ? &o->rounds
				: c == 's' ? &o->steady_s
				: c == 'b' ? &o->heartbeat_s
					   : &o->procs;
		unsigned hi = c == 'n'	 ? MAX_HOSTS
			      : c == 'r' ? 50
			      : c == 's' ? 3600
			      : c == 'b' ? 3600
					 : MAX_PROCS;

		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'k':
			o->keep = true;
			break;
		case 'd':
			o->nkpd = optarg;
			break;
		case 'D':
			if (parse_num(optarg, 0, 3600, &o->down_s) != 0) {
				fprintf(stderr, "nkp-bench fanout: --down-seconds wants a number "
						"up to 3600\n");
				return 2;
			}
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		case 'n':
		case 'r':
		case 's':
		case 'b':
		case 'p':
			if (parse_num(optarg, c == 's' ? 0 : 1, hi, dst) != 0) {
				fprintf(stderr, "nkp-bench fanout: --%s wants a number up to %u\n",
					longopts[c == 'n'   ? 2
						 : c == 'r' ? 3
						 : c == 's' ? 4
						 : c == 'b' ? 5
							    : 6]
						.name,
					hi);
				return 2;
			}
			break;
		default:
			return usage_error("unknown option");
		}
	}
	if (optind != argc) {
		return usage_error("unexpected argument");
	}
	if (o->hosts == 0) {
		return usage_error("--hosts N is required");
	}
	if (o->procs > o->hosts) {
		o->procs = o->hosts;
	}
	return 0;
}

/* ---- processes ---- */

static int nkpd_init(run *r)
{
	char out[4096];
	char *argv[] = {r->nkpd, "init", "--state-dir", r->svc_dir, NULL};
	char *last, *nl;
	int st;

	st = bench_run(argv, r->log, out, sizeof(out));
	while ((nl = strrchr(out, '\n')) != NULL && nl[1] == '\0') {
		*nl = '\0';
	}
	last = strrchr(out, '\n');
	last = last != NULL ? last + 1 : out;
	if (st != 0 || nkp_pubkey_from_base64(last, r->service_key) != NKP_OK) {
		fprintf(stderr, "nkp-bench fanout: nkpd init failed (exit %d; see %s)\n", st,
			r->log);
		return -1;
	}
	return 0;
}

static int nkpd_start(run *r)
{
	char hb[16], sock[PATH_MAX + 32];
	char *argv[] = {r->nkpd, "run", "--state-dir", r->svc_dir, "--heartbeat", hb, NULL, NULL};

	/* Cheap backups only where nkpd has them (a test-hooks build). */
	if (bench_nkpd_fast_backup(r->nkpd)) {
		argv[6] = (char *)"--insecure-fast-backup";
	}

	snprintf(hb, sizeof(hb), "%u", r->o.heartbeat_s);
	r->nkpd_pid = bench_spawn(argv, r->log);
	if (r->nkpd_pid < 0) {
		return -1;
	}
	bench_progress(CMD, "nkpd running, pid %d", (int)r->nkpd_pid);
	snprintf(sock, sizeof(sock), "%s/admin.sock", r->svc_dir);
	for (int i = 0; i < 500 && access(sock, F_OK) != 0; i++) {
		bench_sleep_ms(10);
	}
	return bench_admin_open(sock, 5000, &r->admin);
}

static int read_worker(run *r, FILE *in, unsigned *next)
{
	char line[512], b64[64];
	host_rec *h;

	while (fgets(line, sizeof(line), in) != NULL) {
		if (strcmp(line, "ready\n") == 0) {
			return 0;
		}
		if (*next >= r->o.hosts) {
			return -1;
		}
		h = &r->hosts[*next];
		if (sscanf(line, "%15s %63s %63s %60s", h->name, h->url, h->floor_url, b64) != 4 ||
		    nkp_pubkey_from_base64(b64, h->pub) != NKP_OK) {
			return -1;
		}
		(*next)++;
	}
	return -1;
}

static pid_t fork_worker(run *r, fanout_worker *w, FILE **in)
{
	int out[2], ctl[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(ctl, O_CLOEXEC) != 0) {
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		close(out[0]);
		close(ctl[1]);
		for (unsigned i = 0; i < r->n_workers; i++) {
			close(r->ctl_fds[i]);
		}
		w->out_fd = out[1];
		w->ctl_fd = ctl[0];
		_exit(fanout_worker_main(w));
	}
	close(out[1]);
	close(ctl[0]);
	r->ctl_fds[r->n_workers] = ctl[1];
	*in = fdopen(out[0], "r");
	return pid;
}

/* Forks the host processes (before this process touches nng, so that no
 * nng thread is lost in a fork) and reads their hosts. */
static int start_hosts(run *r)
{
	unsigned per = (r->o.hosts + r->o.procs - 1) / r->o.procs, got = 0;
	FILE *in[MAX_PROCS] = {0};
	int rc = 0;

	for (unsigned p = 0; p < r->o.procs; p++) {
		fanout_worker w = {.dir = r->host_dir, .first = p * per, .ack_len = r->ack_bytes};

		w.count = w.first + per > r->o.hosts ? r->o.hosts - w.first : per;
		memcpy(w.service_key, r->service_key, 32);
		r->workers[p] = fork_worker(r, &w, &in[p]);
		if (r->workers[p] < 0 || in[p] == NULL) {
			return -1;
		}
		r->n_workers++;
	}
	for (unsigned p = 0; p < r->n_workers; p++) {
		if (rc == 0 && read_worker(r, in[p], &got) != 0) {
			fprintf(stderr, "nkp-bench fanout: host process %u failed (see %s)\n", p,
				r->log);
			rc = -1;
		}
		fclose(in[p]);
	}
	return rc == 0 && got == r->o.hosts ? 0 : -1;
}

static void stop_workers(run *r)
{
	int st;

	for (unsigned p = 0; p < r->n_workers; p++) {
		close(r->ctl_fds[p]);
	}
	for (unsigned p = 0; p < r->n_workers; p++) {
		/* Closing thousands of handles takes a moment: wait, then stop. */
		pid_t got = 0;

		for (int i = 0; i < 3000 && (got = waitpid(r->workers[p], &st, WNOHANG)) == 0;
		     i++) {
			bench_sleep_ms(10);
		}
		if (got == 0) {
			kill(r->workers[p], SIGKILL);
			waitpid(r->workers[p], &st, 0);
		}
	}
	r->n_workers = 0;
}

static void stop_all(run *r)
{
	int st;

	fanout_floor_close(r->floor);
	bench_admin_close(r->admin);
	if (r->nkpd_pid > 0 && (st = bench_stop(r->nkpd_pid, 10000)) != 0) {
		fprintf(stderr, "nkp-bench fanout: nkpd exited with %d\n", st);
	}
	stop_workers(r);
}

/* ---- measurements ---- */

#define POLL_MS 5
#define WAIT_MS 120000

static double ms_since(uint64_t t0)
{
	return (double)(bench_now_ns() - t0) / 1e6;
}

static int current_generation(run *r, uint64_t *gen)
{
	unsigned a, b;

	return bench_admin_status(r->admin, gen, &a, &b);
}

/* Waits until every host applied the generation the last change made. */
static int wait_all(run *r)
{
	uint64_t gen;

	if (current_generation(r, &gen) != 0) {
		return -1;
	}
	return bench_admin_wait_sync(r->admin, r->o.hosts, gen - 1, WAIT_MS, POLL_MS);
}

static int enrol(run *r)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostAddRequest ha = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	uint64_t t0 = bench_now_ns();

	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_ADD;
	q.host_add = &ha;
	for (unsigned i = 0; i < r->o.hosts; i++) {
		ha.name = r->hosts[i].name;
		ha.address = r->hosts[i].url;
		ha.public_key.data = r->hosts[i].pub;
		ha.public_key.len = 32;
		if (bench_admin_simple(r->admin, &q, "host add") != 0) {
			return -1;
		}
	}
	if (bench_admin_wait_sync(r->admin, r->o.hosts, 0, WAIT_MS, POLL_MS) != 0) {
		return -1;
	}
	r->enrol_s = ms_since(t0) / 1000.0;
	return 0;
}

static int first_sync(run *r)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderCreateRequest pc = NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT;
	uint64_t t0 = bench_now_ns();

	pc.name = (char *)FANOUT_PROVIDER;
	pc.make_default = true;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE;
	q.provider_create = &pc;
	if (bench_admin_simple(r->admin, &q, "provider create") != 0) {
		return -1;
	}
	if (bench_admin_backup(r->admin, FANOUT_PROVIDER, BACKUP_PASSWORD) != 0 ||
	    wait_all(r) != 0) {
		return -1;
	}
	r->first_sync_ms = ms_since(t0);
	return 0;
}

static double workers_cpu(run *r, double *rss, unsigned *fds);

static int rotate(run *r, unsigned i)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRotateRequest pr = NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT;
	uint64_t t0 = bench_now_ns();
	bench_procstat a, b;
	double ha, hb, rss;
	unsigned fds;

	bench_procstat_get(r->nkpd_pid, &a);
	ha = workers_cpu(r, &rss, &fds);
	pr.name = (char *)FANOUT_PROVIDER;
	pr.timeout_seconds = 120;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE;
	q.provider_rotate = &pr;
	if (bench_admin_simple(r->admin, &q, "provider rotate") != 0 ||
	    bench_admin_wait_promoted(r->admin, FANOUT_PROVIDER, WAIT_MS, POLL_MS) != 0) {
		return -1;
	}
	r->stage_ms[i] = ms_since(t0);
	if (wait_all(r) != 0) {
		return -1;
	}
	r->rotate_ms[i] = ms_since(t0);
	bench_procstat_get(r->nkpd_pid, &b);
	hb = workers_cpu(r, &rss, &fds);
	r->rot_cpu[i] = (b.cpu_s - a.cpu_s) * 1000.0;
	r->rot_hcpu[i] = (hb - ha) * 1000.0;
	return 0;
}

/* The floor of rotation i: the same two rounds (stage, promote) of
 * messages of the same sizes (one provider with i + 2 versions), to N
 * listeners, with no crypto and no protobuf. */
static int floor_rotation(run *r, unsigned i)
{
	size_t push, ack;
	double a, b, ha, hb, rss;
	unsigned fds;
	bench_procstat sa, sb;

	if (fanout_sizes(i + 2 > FANOUT_MAX_VERSIONS ? FANOUT_MAX_VERSIONS : i + 2, &push, &ack) !=
	    0) {
		return -1;
	}
	r->push_bytes = push;
	bench_procstat_get(getpid(), &sa);
	ha = workers_cpu(r, &rss, &fds);
	a = fanout_floor_round(r->floor, push);
	b = fanout_floor_round(r->floor, push);
	if (a < 0 || b < 0) {
		fprintf(stderr, "nkp-bench fanout: the floor fan-out failed\n");
		return -1;
	}
	bench_procstat_get(getpid(), &sb);
	hb = workers_cpu(r, &rss, &fds);
	r->floor_cpu[i] = (sb.cpu_s - sa.cpu_s) * 1000.0;
	r->floor_hcpu[i] = (hb - ha) * 1000.0;
	r->floor1_ms[i] = a;
	r->floor_ms[i] = a + b;
	return 0;
}

static int rotations(run *r)
{
	char **urls = calloc(r->o.hosts + 1, sizeof(*urls));
	int rc = 0;

	for (unsigned i = 0; urls != NULL && i < r->o.hosts; i++) {
		urls[i] = r->hosts[i].floor_url;
	}
	if (urls == NULL || fanout_floor_open(&r->floor, urls, r->o.hosts) != 0 ||
	    fanout_floor_round(r->floor, 64) < 0) {
		free(urls);
		return -1;
	}
	free(urls);
	for (unsigned i = 0; i < r->o.rounds && rc == 0; i++) {
		/* Alternate the order so that drift falls on both alike. */
		if (i % 2 == 0) {
			rc = floor_rotation(r, i) != 0 || rotate(r, i) != 0 ? -1 : 0;
		} else {
			rc = rotate(r, i) != 0 || floor_rotation(r, i) != 0 ? -1 : 0;
		}
		if (rc == 0) {
			bench_progress(CMD,
				       "rotation %u: %.1f ms (promoted at %.1f ms), floor %.1f ms",
				       i + 1, r->rotate_ms[i], r->stage_ms[i], r->floor_ms[i]);
		}
	}
	return rc;
}

static double workers_cpu(run *r, double *rss, unsigned *fds)
{
	double cpu = 0;

	*rss = 0;
	*fds = 0;
	for (unsigned p = 0; p < r->n_workers; p++) {
		bench_procstat ps;

		if (bench_procstat_get(r->workers[p], &ps) == 0) {
			cpu += ps.cpu_s;
			*rss += ps.rss_mib;
			*fds += ps.fds;
		}
	}
	return cpu;
}

static int steady(run *r)
{
	bench_procstat a, b;
	double wa, wb;
	unsigned fds;

	/* Let the heartbeats that follow the last change spread out first. */
	bench_sleep_ms(r->o.steady_s > 0 ? r->o.heartbeat_s * 1000u : 0);
	if (bench_procstat_get(r->nkpd_pid, &a) != 0) {
		return -1;
	}
	wa = workers_cpu(r, &r->hosts_rss_mib, &fds);
	bench_sleep_ms(r->o.steady_s * 1000u);
	if (bench_procstat_get(r->nkpd_pid, &b) != 0) {
		return -1;
	}
	wb = workers_cpu(r, &r->hosts_rss_mib, &r->hosts_fds);
	r->cpu_pct = r->o.steady_s > 0 ? 100.0 * (b.cpu_s - a.cpu_s) / r->o.steady_s : 0;
	r->hosts_cpu_pct = r->o.steady_s > 0 ? 100.0 * (wb - wa) / r->o.steady_s : 0;
	r->rss_mib = b.rss_mib;
	r->hwm_mib = b.hwm_mib;
	r->svc_threads = b.threads;
	r->svc_fds = b.fds;
	return 0;
}

#define DOWN_SETTLE_S 60u

/* Every host goes away (connections refused from then on); nkpd keeps
 * retrying them with backoff. Measures its CPU once the backoff settled. */
static int hosts_down(run *r)
{
	bench_procstat a, b;

	fanout_floor_close(r->floor);
	r->floor = NULL;
	stop_workers(r);
	bench_sleep_ms(DOWN_SETTLE_S * 1000u);
	if (bench_procstat_get(r->nkpd_pid, &a) != 0) {
		return -1;
	}
	bench_sleep_ms(r->o.down_s * 1000u);
	if (bench_procstat_get(r->nkpd_pid, &b) != 0) {
		return -1;
	}
	r->down_cpu_pct = 100.0 * (b.cpu_s - a.cpu_s) / r->o.down_s;
	return 0;
}

static int delete_provider(run *r)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderDeleteRequest pd = NKP__ADMIN__PROVIDER_DELETE_REQUEST__INIT;
	uint64_t t0 = bench_now_ns();

	pd.name = (char *)FANOUT_PROVIDER;
	pd.force = true; /* it is the default */
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_DELETE;
	q.provider_delete = &pd;
	if (bench_admin_simple(r->admin, &q, "provider delete") != 0 || wait_all(r) != 0) {
		return -1;
	}
	r->delete_ms = ms_since(t0);
	return 0;
}

static void print_list(const char *name, const double *v, unsigned n)
{
	printf("\"%s\":[", name);
	for (unsigned i = 0; i < n; i++) {
		printf("%s%.1f", i ? "," : "", v[i]);
	}
	printf("],");
}

static void report(run *r)
{
	double rot[64], flo[64], stg[64], f1[64];
	unsigned n = r->o.rounds;
	double rm, fm;

	memcpy(rot, r->rotate_ms, sizeof(rot));
	memcpy(flo, r->floor_ms, sizeof(flo));
	memcpy(stg, r->stage_ms, sizeof(stg));
	memcpy(f1, r->floor1_ms, sizeof(f1));
	rm = bench_median(rot, n);
	fm = bench_median(flo, n);
	if (!r->o.json) {
		printf("hosts %u: enrol %.2f s, first sync %.1f ms, rotate %.1f ms (floor %.1f ms, "
		       "ratio %.2f), delete %.1f ms\nsteady state: nkpd %.2f %% CPU, %.1f MiB RSS "
		       "(peak %.1f MiB), %u threads, %u fds\n",
		       r->o.hosts, r->enrol_s, r->first_sync_ms, rm, fm, rm / fm, r->delete_ms,
		       r->cpu_pct, r->rss_mib, r->hwm_mib, r->svc_threads, r->svc_fds);
		if (r->o.down_s > 0) {
			printf("every host down: nkpd %.2f %% CPU\n", r->down_cpu_pct);
		}
		return;
	}
	printf("{\"bench\":\"fanout\",\"hosts\":%u,\"host_procs\":%u,\"heartbeat_s\":%u,"
	       "\"steady_seconds\":%u,\"rounds\":%u,",
	       r->o.hosts, r->o.procs, r->o.heartbeat_s, r->o.steady_s, n);
	printf("\"hosts_setup_s\":%.2f,\"enrol_s\":%.2f,\"first_sync_ms\":%.1f,"
	       "\"rotate_ms\":%.1f,\"promoted_ms\":%.1f,\"floor_ms\":%.1f,\"floor_round_ms\":%.1f,"
	       "\"ratio\":%.2f,\"delete_ms\":%.1f,",
	       r->setup_s, r->enrol_s, r->first_sync_ms, rm, bench_median(stg, n), fm,
	       bench_median(f1, n), rm / fm, r->delete_ms);
	print_list("rotate_ms_all", r->rotate_ms, n);
	print_list("floor_ms_all", r->floor_ms, n);
	memcpy(rot, r->rot_cpu, sizeof(rot));
	memcpy(flo, r->rot_hcpu, sizeof(flo));
	printf("\"rotate_service_cpu_ms\":%.0f,\"rotate_hosts_cpu_ms\":%.0f,", bench_median(rot, n),
	       bench_median(flo, n));
	memcpy(rot, r->floor_cpu, sizeof(rot));
	memcpy(flo, r->floor_hcpu, sizeof(flo));
	printf("\"floor_service_cpu_ms\":%.0f,\"floor_hosts_cpu_ms\":%.0f,", bench_median(rot, n),
	       bench_median(flo, n));
	printf("\"heartbeat_cpu_pct\":%.2f,\"service_rss_mib\":%.1f,\"service_peak_rss_mib\":%.1f,"
	       "\"service_threads\":%u,\"service_fds\":%u,\"hosts_cpu_pct\":%.2f,"
	       "\"hosts_rss_mib\":%.1f,\"hosts_fds\":%u,\"push_bytes\":%zu,\"ack_bytes\":%zu,",
	       r->cpu_pct, r->rss_mib, r->hwm_mib, r->svc_threads, r->svc_fds, r->hosts_cpu_pct,
	       r->hosts_rss_mib, r->hosts_fds, r->push_bytes, r->ack_bytes);
	if (r->o.down_s > 0) {
		printf("\"down_cpu_pct\":%.2f}\n", r->down_cpu_pct);
	} else {
		printf("\"down_cpu_pct\":null}\n");
	}
}

static int measure(run *r)
{
	bench_progress(CMD, "enrolling %u hosts", r->o.hosts);
	if (enrol(r) != 0) {
		return -1;
	}
	bench_progress(CMD, "enrolled in %.2f s; create + backup", r->enrol_s);
	if (first_sync(r) != 0) {
		return -1;
	}
	bench_progress(CMD, "first sync %.1f ms; %u rotations", r->first_sync_ms, r->o.rounds);
	if (rotations(r) != 0) {
		return -1;
	}
	bench_progress(CMD, "steady state for %u s (after %u s to settle)", r->o.steady_s,
		       r->o.steady_s > 0 ? r->o.heartbeat_s : 0);
	if (steady(r) != 0 || delete_provider(r) != 0) {
		return -1;
	}
	if (r->o.down_s > 0) {
		bench_progress(CMD, "every host stopped: nkpd CPU over %u s, after %u s",
			       r->o.down_s, DOWN_SETTLE_S);
		if (hosts_down(r) != 0) {
			return -1;
		}
	}
	return 0;
}

static int prepare(run *r)
{
	uint64_t t0 = bench_now_ns();
	size_t push;

	if (bench_find_prog(r->o.nkpd, NKP_BENCH_NKPD, "nkpd", r->nkpd, sizeof(r->nkpd)) != 0) {
		fprintf(stderr, "nkp-bench fanout: nkpd not found (use --nkpd PATH)\n");
		return -1;
	}
	if (bench_mkdtemp(NULL, r->base, sizeof(r->base)) != 0 ||
	    bench_mkdtemp(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL, r->host_dir,
			  sizeof(r->host_dir)) != 0) {
		fprintf(stderr, "nkp-bench fanout: cannot make a temporary directory\n");
		return -1;
	}
	snprintf(r->svc_dir, sizeof(r->svc_dir), "%s/svc", r->base);
	snprintf(r->log, sizeof(r->log), "%s/daemons.log", r->base);
	if (fanout_sizes(2, &push, &r->ack_bytes) != 0 || nkpd_init(r) != 0) {
		return -1;
	}
	bench_progress(CMD, "starting %u hosts in %u processes (fd limit %lu)", r->o.hosts,
		       r->o.procs, bench_raise_nofile());
	if (start_hosts(r) != 0) {
		return -1;
	}
	r->setup_s = ms_since(t0) / 1000.0;
	bench_progress(CMD, "hosts up in %.2f s; starting nkpd", r->setup_s);
	return nkpd_start(r);
}

int bench_fanout_main(int argc, char **argv)
{
	run *r = calloc(1, sizeof(*r));
	int rc;

	if (r == NULL) {
		return 1;
	}
	r->o = (fopts){.rounds = 3, .steady_s = 20, .heartbeat_s = 5, .procs = 2};
	rc = parse_opts(argc, argv, &r->o);
	if (rc != 0) {
		free(r);
		return rc == 1 ? 0 : rc;
	}
	r->hosts = calloc(r->o.hosts + 1, sizeof(*r->hosts));
	rc = r->hosts != NULL && prepare(r) == 0 && measure(r) == 0 ? 0 : 1;
	stop_all(r);
	if (rc == 0) {
		report(r);
	} else {
		fprintf(stderr, "nkp-bench fanout: failed; daemon logs in %s\n", r->log);
	}
	if (!r->o.keep && (rc == 0 || r->base[0] == '\0')) {
		bench_rmrf(r->base);
	}
	if (!r->o.keep) {
		bench_rmrf(r->host_dir);
	}
	free(r->hosts);
	free(r);
	return rc;
}
