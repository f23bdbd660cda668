/* nkp-bench: child processes, temporary directories, /proc figures and the
 * admin client used by the cluster benchmarks. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "bench.h"
#include "cluster.h"

#define ADMIN_REPLY_MAX (64u << 20)

void bench_progress(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nkp-bench %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void bench_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

unsigned long bench_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		return 0;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (unsigned long)rl.rlim_cur;
}

int bench_mkdtemp(const char *base, char *out, size_t size)
{
	const char *tmp = base != NULL ? base : getenv("TMPDIR");

	if (tmp == NULL || *tmp == '\0') {
		tmp = "/tmp";
	}
	if ((size_t)snprintf(out, size, "%s/nkp-bench-XXXXXX", tmp) >= size) {
		return -1;
	}
	return mkdtemp(out) != NULL ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP) {
		rmdir(path);
	} else {
		unlink(path);
	}
	return 0;
}

void bench_rmrf(const char *dir)
{
	if (dir != NULL && dir[0] != '\0') {
		nftw(dir, rm_one, 64, FTW_DEPTH | FTW_PHYS);
	}
}

int bench_find_prog(const char *given, const char *built, const char *name, char *out, size_t size)
{
	if (given != NULL) {
		snprintf(out, size, "%s", given);
		return access(out, X_OK) == 0 ? 0 : -1;
	}
	if ((size_t)snprintf(out, size, "%s", built) < size && access(out, X_OK) == 0) {
		return 0;
	}
	snprintf(out, size, "%s", name);
	return access(out, X_OK) == 0 ? 0 : -1;
}

static void child_exec(char *const argv[], const char *log, int outfd)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd < 0) {
		_exit(126);
	}
	/* Daemons go when nkp-bench goes, even if it is killed. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	dup2(outfd >= 0 ? outfd : fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	execv(argv[0], argv);
	_exit(127);
}

static int wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			return -1;
		}
	}
	if (WIFEXITED(st)) {
		return WEXITSTATUS(st);
	}
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

int bench_run(char *const argv[], const char *log, char *out, size_t size)
{
	int p[2];
	size_t used = 0;
	pid_t pid;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) != 0) {
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		child_exec(argv, log, p[1]);
	}
	close(p[1]);
	while ((n = read(p[0], out + used, size - 1 - used)) > 0 || (n < 0 && errno == EINTR)) {
		used += n > 0 ? (size_t)n : 0;
		if (used == size - 1) {
			break;
		}
	}
	out[used] = '\0';
	close(p[0]);
	return wait_status(pid);
}

pid_t bench_spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();

	if (pid == 0) {
		child_exec(argv, log, -1);
	}
	return pid;
}

int bench_stop(pid_t pid, int grace_ms)
{
	int st;

	if (pid <= 0) {
		return -1;
	}
	kill(pid, SIGTERM);
	for (int waited = 0; waited < grace_ms; waited += 10) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (r < 0 && errno != EINTR) {
			return -1;
		}
		bench_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	return wait_status(pid);
}

static unsigned count_dir(const char *path)
{
	DIR *d = opendir(path);
	unsigned n = 0;
	struct dirent *e;

	if (d == NULL) {
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		n += e->d_name[0] != '.';
	}
	closedir(d);
	return n;
}

static void read_status(pid_t pid, bench_procstat *out)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f == NULL) {
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long v;

		if (sscanf(line, "VmRSS: %lu kB", &v) == 1) {
			out->rss_mib = (double)v / 1024.0;
		} else if (sscanf(line, "VmHWM: %lu kB", &v) == 1) {
			out->hwm_mib = (double)v / 1024.0;
		} else if (sscanf(line, "Threads: %lu", &v) == 1) {
			out->threads = (unsigned)v;
		}
	}
	fclose(f);
}

int bench_procstat_get(pid_t pid, bench_procstat *out)
{
	char path[64], buf[1024];
	unsigned long ut, st;
	const char *p;
	FILE *f;
	size_t n;

	memset(out, 0, sizeof(*out));
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL) {
		return -1;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after the command name (which may hold spaces and ')'). */
	p = strrchr(buf, ')');
	if (p == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
		return -1;
	}
	out->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	read_status(pid, out);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	out->fds = count_dir(path);
	return 0;
}

/* ---- admin client ---- */

struct bench_admin {
	nng_socket sock;
};

int bench_admin_open(const char *sock, int wait_ms, bench_admin **out)
{
	char url[PATH_MAX + 8];
	bench_admin *a = calloc(1, sizeof(*a));
	int rv = -1;

	if (a == NULL || nng_req0_open(&a->sock) != 0) {
		free(a);
		return -1;
	}
	snprintf(url, sizeof(url), "ipc://%s", sock);
	nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, ADMIN_REPLY_MAX);
	nng_socket_set_ms(a->sock, NNG_OPT_RECVTIMEO, 120000);
	nng_socket_set_ms(a->sock, NNG_OPT_SENDTIMEO, 10000);
	nng_socket_set_ms(a->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	for (int waited = 0; waited <= wait_ms; waited += 20) {
		if ((rv = nng_dial(a->sock, url, NULL, 0)) == 0) {
			break;
		}
		bench_sleep_ms(20);
	}
	if (rv != 0) {
		fprintf(stderr, "nkp-bench: cannot reach nkpd at %s: %s\n", sock, nng_strerror(rv));
		nng_close(a->sock);
		free(a);
		return -1;
	}
	*out = a;
	return 0;
}

void bench_admin_close(bench_admin *a)
{
	if (a != NULL) {
		nng_close(a->sock);
		free(a);
	}
}

int bench_admin_call(bench_admin *a, Nkp__Admin__Request *q, Nkp__Admin__Response **out)
{
	size_t len;
	uint8_t *buf;
	nng_msg *msg = NULL;
	Nkp__Admin__Response *r;
	int rv;

	q->api_version = 1;
	len = nkp__admin__request__get_packed_size(q);
	buf = malloc(len + 1);
	if (buf == NULL) {
		return -1;
	}
	nkp__admin__request__pack(q, buf);
	rv = nng_send(a->sock, buf, len, 0);
	free(buf);
	if (rv == 0) {
		rv = nng_recvmsg(a->sock, &msg, 0);
	}
	if (rv != 0) {
		fprintf(stderr, "nkp-bench: admin request failed: %s\n", nng_strerror(rv));
		return -1;
	}
	r = nkp__admin__response__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
	nng_msg_free(msg);
	if (r == NULL) {
		fprintf(stderr, "nkp-bench: unreadable admin response\n");
		return -1;
	}
	*out = r;
	return 0;
}

int bench_admin_simple(bench_admin *a, Nkp__Admin__Request *q, const char *what)
{
	Nkp__Admin__Response *r = NULL;
	int rc = -1;

	if (bench_admin_call(a, q, &r) != 0) {
		return -1;
	}
	if (r->code == 0) {
		rc = 0;
	} else {
		fprintf(stderr, "nkp-bench: %s: %s\n", what, r->message);
	}
	nkp__admin__response__free_unpacked(r, NULL);
	return rc;
}

int bench_admin_backup(bench_admin *a, const char *provider, const char *password)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderBackupRequest pb = NKP__ADMIN__PROVIDER_BACKUP_REQUEST__INIT;
	Nkp__Admin__ProviderBackupConfirmRequest cr =
		NKP__ADMIN__PROVIDER_BACKUP_CONFIRM_REQUEST__INIT;
	Nkp__Admin__Response *r = NULL;
	uint8_t digest[32];
	int rc = -1;

	pb.name = (char *)provider;
	pb.password.data = (uint8_t *)password;
	pb.password.len = strlen(password);
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP;
	q.provider_backup = &pb;
	if (bench_admin_call(a, &q, &r) != 0) {
		return -1;
	}
	if (r->code != 0 || r->result_case != NKP__ADMIN__RESPONSE__RESULT_BACKUP) {
		fprintf(stderr, "nkp-bench: provider backup: %s\n", r->message);
		goto out_free;
	}
	crypto_generichash(digest, sizeof(digest), r->backup->file.data, r->backup->file.len, NULL,
			   0);
	cr.provider_id = r->backup->provider_id;
	cr.digest.data = digest;
	cr.digest.len = sizeof(digest);
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_BACKUP_CONFIRM;
	q.provider_backup_confirm = &cr;
	rc = bench_admin_simple(a, &q, "provider backup confirmation");
out_free:
	nkp__admin__response__free_unpacked(r, NULL);
	return rc;
}

bool bench_nkpd_fast_backup(const char *path)
{
	static const char opt[] = "insecure-fast-backup";
	const size_t optlen = sizeof(opt) - 1;
	char buf[65536];
	size_t have = 0, n, total, tail;
	bool found = false;
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		return false;
	}
	while (!found && (n = fread(buf + have, 1, sizeof(buf) - have, f)) > 0) {
		total = have + n;
		found = memmem(buf, total, opt, optlen) != NULL;
		/* carry the tail: the name may straddle two reads */
		tail = total < optlen - 1 ? total : optlen - 1;
		memmove(buf, buf + total - tail, tail);
		have = tail;
	}
	fclose(f);
	return found;
}

int bench_admin_status(bench_admin *a, uint64_t *generation, unsigned *in_sync, unsigned *total)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__StatusRequest sr = NKP__ADMIN__STATUS_REQUEST__INIT;
	Nkp__Admin__Response *r = NULL;
	int rc = -1;

	q.op_case = NKP__ADMIN__REQUEST__OP_STATUS;
	q.status = &sr;
	if (bench_admin_call(a, &q, &r) != 0) {
		return -1;
	}
	if (r->code == 0 && r->result_case == NKP__ADMIN__RESPONSE__RESULT_STATUS) {
		*generation = r->status->generation;
		*in_sync = r->status->hosts_in_sync;
		*total = r->status->hosts_total;
		rc = 0;
	}
	nkp__admin__response__free_unpacked(r, NULL);
	return rc;
}

int bench_admin_wait_sync(bench_admin *a, unsigned n, uint64_t after, unsigned timeout_ms,
			  unsigned poll_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	uint64_t gen = 0;
	unsigned in_sync = 0, total = 0;

	for (;;) {
		if (bench_admin_status(a, &gen, &in_sync, &total) != 0) {
			return -1;
		}
		if (getenv("NKP_BENCH_TRACE") != NULL) {
			fprintf(stderr, "trace: %.1f ms: %u in sync, generation %llu\n",
				(double)(bench_now_ns() + (uint64_t)timeout_ms * 1000000u -
					 deadline) /
					1e6,
				in_sync, (unsigned long long)gen);
		}
		if (in_sync >= n && gen > after) {
			return 0;
		}
		if (bench_now_ns() > deadline) {
			fprintf(stderr, "nkp-bench: only %u of %u hosts in sync after %u ms\n",
				in_sync, n, timeout_ms);
			return -1;
		}
		bench_sleep_ms(poll_ms);
	}
}

static int rotation_state(bench_admin *a, const char *provider, char *state, size_t size)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__RotationStatusRequest rs = NKP__ADMIN__ROTATION_STATUS_REQUEST__INIT;
	Nkp__Admin__Response *r = NULL;
	int rc = -1;

	rs.name = (char *)provider;
	q.op_case = NKP__ADMIN__REQUEST__OP_ROTATION_STATUS;
	q.rotation_status = &rs;
	if (bench_admin_call(a, &q, &r) != 0) {
		return -1;
	}
	if (r->code == 0 && r->result_case == NKP__ADMIN__RESPONSE__RESULT_ROTATION) {
		snprintf(state, size, "%s", r->rotation->state);
		rc = 0;
	} else {
		fprintf(stderr, "nkp-bench: rotation status: %s\n", r->message);
	}
	nkp__admin__response__free_unpacked(r, NULL);
	return rc;
}

int bench_admin_wait_promoted(bench_admin *a, const char *provider, unsigned timeout_ms,
			      unsigned poll_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	char state[32];

	for (;;) {
		if (rotation_state(a, provider, state, sizeof(state)) != 0) {
			return -1;
		}
		if (strcmp(state, "promoted") == 0) {
			return 0;
		}
		if (strcmp(state, "waiting") != 0 || bench_now_ns() > deadline) {
			fprintf(stderr, "nkp-bench: rotation %s\n", state);
			return -1;
		}
		bench_sleep_ms(poll_ms);
	}
}
