/* nkp-bench local: DEK unwraps per second through nkp-hostd's local socket
 * with C concurrent clients (docs/BENCHMARKS.md).
 *
 * A real nkp-hostd (found beside nkp-bench) and a real nkpd that enrols it
 * and pushes it a backed-up default provider; one keysafe with one disk
 * component is made through the local API; then C threads, each with its
 * own nng REQ socket, send unwrap requests back to back for --seconds. */
#define _GNU_SOURCE
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "bench.h"
#include "cluster.h"
#include "hostapi.pb-c.h"

#define CMD "local"
#define MAX_CLIENTS 256u
#define BACKUP_PASSWORD "nkp-bench local throwaway password"
#define PROVIDER "bench-local"
#define COMPONENT "disk:0"

static const char usage[] =
	"Usage: nkp-bench local [--clients C] [--seconds S] [--json] [options]\n"
	"\n"
	"DEK unwraps per second through nkp-hostd's local socket (ipc://) with C\n"
	"concurrent clients, each with its own nng REQ socket. Starts a real\n"
	"nkp-hostd and a real nkpd that pushes it a backed-up provider, makes one\n"
	"keysafe with one component, then unwraps it back to back. Also reports\n"
	"the CPU nkp-hostd spent per unwrap. Progress goes to stderr; with --json\n"
	"the last line of stdout is one JSON object.\n"
	"\n"
	"  --clients C      concurrent clients (1-256; default 4)\n"
	"  --seconds S      measured for S seconds (default 5)\n"
	"  --nkpd PATH      the nkpd binary (default: found beside nkp-bench)\n"
	"  --hostd PATH     the nkp-hostd binary (default: found beside nkp-bench)\n"
	"  --keep           keep the temporary directory\n"
	"  --json           one JSON object as the last line\n";

typedef struct lopts {
	bool json;
	bool keep;
	unsigned clients;
	unsigned seconds;
	const char *nkpd;
	const char *hostd;
} lopts;

typedef struct lrun {
	lopts o;
	char nkpd[PATH_MAX];
	char hostd[PATH_MAX];
	char dir[PATH_MAX];
	char svc_dir[PATH_MAX + 8];
	char host_dir[PATH_MAX + 8];
	char log[PATH_MAX + 16];
	char url[PATH_MAX + 32];
	char listen_url[256];
	char service_b64[64];
	char host_b64[64];
	pid_t nkpd_pid;
	pid_t hostd_pid;
	bench_admin *admin;
	uint8_t *request; /* a packed unwrap request */
	size_t request_len;
	atomic_bool stop;
	atomic_ulong done;
	atomic_ulong failed;
} lrun;

static int parse_opts(int argc, char **argv, lopts *o)
{
	static const struct option opts[] = {
		{"clients", required_argument, NULL, 'c'},
		{"seconds", required_argument, NULL, 's'},
		{"nkpd", required_argument, NULL, 'n'},
		{"hostd", required_argument, NULL, 'H'},
		{"keep", no_argument, NULL, 'k'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	o->clients = 4;
	o->seconds = 5;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->clients = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			o->seconds = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'n':
			o->nkpd = optarg;
			break;
		case 'H':
			o->hostd = optarg;
			break;
		case 'k':
			o->keep = true;
			break;
		case 'j':
			o->json = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		default:
			fprintf(stderr, "nkp-bench local: unknown or incomplete option\n%s", usage);
			return 2;
		}
	}
	if (o->clients < 1 || o->clients > MAX_CLIENTS || o->seconds < 1 || o->seconds > 3600) {
		fprintf(stderr, "nkp-bench local: --clients 1-256, --seconds 1-3600\n");
		return 2;
	}
	return 0;
}

/* The last non-empty line of `out`, in place. */
static char *last_line(char *out)
{
	char *nl, *last;

	while ((nl = strrchr(out, '\n')) != NULL && nl[1] == '\0') {
		*nl = '\0';
	}
	last = strrchr(out, '\n');
	return last != NULL ? last + 1 : out;
}

static int init_both(lrun *r)
{
	char out[4096];
	char *svc_argv[] = {r->nkpd, "init", "--state-dir", r->svc_dir, NULL};
	char *host_argv[] = {r->hostd,	      "init",	      "--state-dir", r->host_dir,
			     "--service-key", r->service_b64, NULL};

	if (bench_run(svc_argv, r->log, out, sizeof(out)) != 0) {
		fprintf(stderr, "nkp-bench local: nkpd init failed (see %s)\n", r->log);
		return -1;
	}
	snprintf(r->service_b64, sizeof(r->service_b64), "%.60s", last_line(out));
	if (bench_run(host_argv, r->log, out, sizeof(out)) != 0) {
		fprintf(stderr, "nkp-bench local: nkp-hostd init failed (see %s)\n", r->log);
		return -1;
	}
	snprintf(r->host_b64, sizeof(r->host_b64), "%.60s", last_line(out));
	return 0;
}

/* One request/reply on a fresh REQ socket; the reply is unpacked. */
static int local_call(lrun *r, Nkp__Hostapi__Request *q, Nkp__Hostapi__Reply **out)
{
	nng_socket s;
	uint8_t *buf, *rep = NULL;
	size_t len, replen = 0;
	int rv = -1;

	q->api_version = 1;
	len = nkp__hostapi__request__get_packed_size(q);
	buf = malloc(len + 1);
	if (buf == NULL || nng_req0_open(&s) != 0) {
		free(buf);
		return -1;
	}
	nkp__hostapi__request__pack(q, buf);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
	if (nng_dial(s, r->url, NULL, 0) == 0 && nng_send(s, buf, len, 0) == 0 &&
	    nng_recv(s, &rep, &replen, NNG_FLAG_ALLOC) == 0) {
		*out = nkp__hostapi__reply__unpack(NULL, replen, rep);
		rv = *out != NULL ? 0 : -1;
		sodium_memzero(rep, replen);
		nng_free(rep, replen);
	}
	nng_close(s);
	free(buf);
	return rv;
}

static int start_hostd(lrun *r)
{
	char *argv[] = {r->hostd,      "run",	      "--state-dir",
			r->host_dir,   "--listen",    "tcp://127.0.0.1:0",
			"--host-name", "bench-local", NULL};
	Nkp__Hostapi__Request q = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__StatusRequest sr = NKP__HOSTAPI__STATUS_REQUEST__INIT;
	Nkp__Hostapi__Reply *rep = NULL;
	char sock[PATH_MAX + 32];

	r->hostd_pid = bench_spawn(argv, r->log);
	if (r->hostd_pid < 0) {
		return -1;
	}
	snprintf(sock, sizeof(sock), "%s/host.sock", r->host_dir);
	for (int i = 0; i < 500 && access(sock, F_OK) != 0; i++) {
		bench_sleep_ms(10);
	}
	q.op_case = NKP__HOSTAPI__REQUEST__OP_STATUS;
	q.status = &sr;
	if (local_call(r, &q, &rep) != 0 || rep->code != 0 || rep->status == NULL ||
	    rep->status->listen_url == NULL) {
		fprintf(stderr, "nkp-bench local: nkp-hostd does not answer (see %s)\n", r->log);
		if (rep != NULL) {
			nkp__hostapi__reply__free_unpacked(rep, NULL);
		}
		return -1;
	}
	snprintf(r->listen_url, sizeof(r->listen_url), "%s", rep->status->listen_url);
	nkp__hostapi__reply__free_unpacked(rep, NULL);
	bench_progress(CMD, "nkp-hostd running, pid %d, serving the service on %s",
		       (int)r->hostd_pid, r->listen_url);
	return 0;
}

static int start_nkpd(lrun *r)
{
	char sock[PATH_MAX + 32];
	char *argv[] = {r->nkpd, "run", "--state-dir", r->svc_dir, NULL, NULL};

	/* Cheap backups only where nkpd has them (a test-hooks build). */
	if (bench_nkpd_fast_backup(r->nkpd)) {
		argv[4] = (char *)"--insecure-fast-backup";
	}

	r->nkpd_pid = bench_spawn(argv, r->log);
	if (r->nkpd_pid < 0) {
		return -1;
	}
	snprintf(sock, sizeof(sock), "%s/admin.sock", r->svc_dir);
	for (int i = 0; i < 500 && access(sock, F_OK) != 0; i++) {
		bench_sleep_ms(10);
	}
	return bench_admin_open(sock, 5000, &r->admin);
}

/* Enrols the host, creates and backs up a default provider, waits until
 * the host applied it. */
static int push_provider(lrun *r)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostAddRequest ha = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	Nkp__Admin__ProviderCreateRequest pc = NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT;
	uint8_t pub[32];
	uint64_t gen = 0;
	unsigned in_sync = 0, total = 0;

	if (nkp_pubkey_from_base64(r->host_b64, pub) != NKP_OK) {
		fprintf(stderr, "nkp-bench local: nkp-hostd init printed no host key\n");
		return -1;
	}
	ha.name = (char *)"bench-local";
	ha.address = r->listen_url;
	ha.public_key.data = pub;
	ha.public_key.len = sizeof(pub);
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_ADD;
	q.host_add = &ha;
	if (bench_admin_simple(r->admin, &q, "host add") != 0) {
		return -1;
	}
	pc.name = (char *)PROVIDER;
	pc.make_default = true;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE;
	q.provider_create = &pc;
	if (bench_admin_simple(r->admin, &q, "provider create") != 0) {
		return -1;
	}
	if (bench_admin_backup(r->admin, PROVIDER, BACKUP_PASSWORD) != 0 ||
	    bench_admin_status(r->admin, &gen, &in_sync, &total) != 0) {
		return -1;
	}
	return bench_admin_wait_sync(r->admin, 1, gen - 1, 30000, 10);
}

/* Makes a keysafe with one component and packs the unwrap request. */
static int make_keysafe(lrun *r)
{
	Nkp__Hostapi__Request q = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__CreateRequest cr = NKP__HOSTAPI__CREATE_REQUEST__INIT;
	Nkp__Hostapi__VmIdentity vm = NKP__HOSTAPI__VM_IDENTITY__INIT;
	Nkp__Hostapi__ComponentRequest cc = NKP__HOSTAPI__COMPONENT_REQUEST__INIT;
	Nkp__Hostapi__Reply *a = NULL, *b = NULL;
	int rv = -1;

	vm.vm_uuid = (char *)"4b0e6f3c-8d1a-4e52-9a7b-2c5d6e7f8091";
	vm.vm_name = (char *)"bench-local-vm";
	cr.vm = &vm;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_CREATE;
	q.create = &cr;
	if (local_call(r, &q, &a) != 0 || a->code != 0) {
		fprintf(stderr, "nkp-bench local: create failed: %s\n",
			a != NULL && a->message != NULL ? a->message : "no answer");
		goto out;
	}
	cc.keysafe = a->keysafe;
	cc.component = (char *)COMPONENT;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT;
	q.add_component = &cc;
	if (local_call(r, &q, &b) != 0 || b->code != 0) {
		fprintf(stderr, "nkp-bench local: add component failed: %s\n",
			b != NULL && b->message != NULL ? b->message : "no answer");
		goto out;
	}
	cc.keysafe = b->keysafe;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_UNWRAP;
	q.unwrap = &cc;
	q.api_version = 1;
	r->request_len = nkp__hostapi__request__get_packed_size(&q);
	r->request = malloc(r->request_len);
	if (r->request != NULL) {
		nkp__hostapi__request__pack(&q, r->request);
		rv = 0;
	}
out:
	if (a != NULL) {
		nkp__hostapi__reply__free_unpacked(a, NULL);
	}
	if (b != NULL) {
		nkp__hostapi__reply__free_unpacked(b, NULL);
	}
	return rv;
}

/* A successful unwrap reply is exactly field 5 (dek) of 32 bytes: code 0
 * is not on the wire (proto3). Checked without unpacking it. */
static bool unwrap_ok(const uint8_t *rep, size_t len)
{
	return len == 34 && rep[0] == 0x2a && rep[1] == 0x20;
}

static void *client(void *arg)
{
	lrun *r = arg;
	nng_socket s;
	uint8_t *rep;
	size_t len;

	if (nng_req0_open(&s) != 0) {
		atomic_fetch_add(&r->failed, 1);
		return NULL;
	}
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
	if (nng_dial(s, r->url, NULL, 0) != 0) {
		atomic_fetch_add(&r->failed, 1);
		nng_close(s);
		return NULL;
	}
	while (!atomic_load(&r->stop)) {
		rep = NULL;
		if (nng_send(s, r->request, r->request_len, 0) != 0 ||
		    nng_recv(s, &rep, &len, NNG_FLAG_ALLOC) != 0) {
			atomic_fetch_add(&r->failed, 1);
			break;
		}
		atomic_fetch_add(unwrap_ok(rep, len) ? &r->done : &r->failed, 1);
		sodium_memzero(rep, len);
		nng_free(rep, len);
	}
	nng_close(s);
	return NULL;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int measure(lrun *r)
{
	pthread_t th[MAX_CLIENTS];
	bench_procstat p0, p1;
	unsigned long d0, f0, d1, f1;
	double c0, c1, secs, rate;
	uint64_t t0;
	unsigned n = 0;

	for (; n < r->o.clients; n++) {
		if (pthread_create(&th[n], NULL, client, r) != 0) {
			break;
		}
	}
	bench_sleep_ms(500);
	d0 = atomic_load(&r->done);
	f0 = atomic_load(&r->failed);
	c0 = self_cpu_s();
	bench_procstat_get(r->hostd_pid, &p0);
	t0 = bench_now_ns();
	bench_sleep_ms(r->o.seconds * 1000u);
	d1 = atomic_load(&r->done);
	f1 = atomic_load(&r->failed);
	c1 = self_cpu_s();
	bench_procstat_get(r->hostd_pid, &p1);
	secs = (double)(bench_now_ns() - t0) / 1e9;
	atomic_store(&r->stop, true);
	for (unsigned i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
	}
	rate = (double)(d1 - d0) / secs;
	bench_progress(CMD, "%u clients: %.0f unwraps/s, %lu failed; nkp-hostd CPU %.1f %%", n,
		       rate, f1 - f0, 100.0 * (p1.cpu_s - p0.cpu_s) / secs);
	if (r->o.json) {
		printf("{\"bench\":\"local\",\"clients\":%u,\"seconds\":%.2f,\"unwraps\":%lu,"
		       "\"failed\":%lu,\"unwraps_per_s\":%.0f,\"hostd_cpu_pct\":%.1f,"
		       "\"hostd_cpu_us_per_unwrap\":%.1f,\"clients_cpu_pct\":%.1f,"
		       "\"hostd_threads\":%u}\n",
		       n, secs, d1 - d0, f1 - f0, rate, 100.0 * (p1.cpu_s - p0.cpu_s) / secs,
		       d1 > d0 ? 1e6 * (p1.cpu_s - p0.cpu_s) / (double)(d1 - d0) : 0.0,
		       100.0 * (c1 - c0) / secs, p1.threads);
	} else {
		printf("local: %u clients, %.0f unwraps/s (%lu in %.1f s, %lu failed), nkp-hostd "
		       "%.1f us CPU per unwrap\n",
		       n, rate, d1 - d0, secs, f1 - f0,
		       d1 > d0 ? 1e6 * (p1.cpu_s - p0.cpu_s) / (double)(d1 - d0) : 0.0);
	}
	return n == r->o.clients && f1 == f0 && d1 > d0 ? 0 : -1;
}

static int prepare(lrun *r)
{
	if (bench_find_prog(r->o.nkpd, NKP_BENCH_NKPD, "nkpd", r->nkpd, sizeof(r->nkpd)) != 0 ||
	    bench_find_prog(r->o.hostd, NKP_BENCH_HOSTD, "nkp-hostd", r->hostd, sizeof(r->hostd)) !=
		    0) {
		fprintf(stderr,
			"nkp-bench local: cannot find nkpd or nkp-hostd (--nkpd, --hostd)\n");
		return -1;
	}
	if (bench_mkdtemp(NULL, r->dir, sizeof(r->dir)) != 0) {
		return -1;
	}
	snprintf(r->svc_dir, sizeof(r->svc_dir), "%s/svc", r->dir);
	snprintf(r->host_dir, sizeof(r->host_dir), "%s/host", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/log", r->dir);
	snprintf(r->url, sizeof(r->url), "ipc://%s/host.sock", r->host_dir);
	return 0;
}

int bench_local_main(int argc, char **argv)
{
	lrun *r = calloc(1, sizeof(*r));
	int rv;

	if (r == NULL) {
		return 1;
	}
	rv = parse_opts(argc, argv, &r->o);
	if (rv != 0) {
		free(r);
		return rv == 1 ? 0 : rv;
	}
	r->nkpd_pid = r->hostd_pid = -1;
	rv = 1;
	if (nkp_init() == NKP_OK && prepare(r) == 0) {
		if (init_both(r) == 0 && start_hostd(r) == 0 && start_nkpd(r) == 0 &&
		    push_provider(r) == 0 && make_keysafe(r) == 0) {
			bench_progress(CMD, "provider pushed, keysafe made; %u clients for %u s",
				       r->o.clients, r->o.seconds);
			rv = measure(r) == 0 ? 0 : 1;
		}
		bench_admin_close(r->admin);
		if (r->nkpd_pid > 0) {
			bench_stop(r->nkpd_pid, 2000);
		}
		if (r->hostd_pid > 0) {
			bench_stop(r->hostd_pid, 2000);
		}
		if (!r->o.keep) {
			bench_rmrf(r->dir);
		}
	}
	free(r->request);
	free(r);
	return rv;
}
