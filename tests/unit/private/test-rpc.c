/* nkpi_rpc: the local REP server (contexts, peer check, stop), the client
 * (resend after a reset only for read-only requests) and the listener
 * watchdog, on a socket in a fresh temporary directory. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include <nkp/log.h>

#include "internal.h"
#include "rpc.h"
#include "waitscale.h"

typedef struct fixture {
	char dir[256];
	char path[300];
	char url[310];
	nkpi_rpc_server_config cfg;
	nkpi_rpc_server *srv;
	atomic_int calls;   /* handler calls begun */
	atomic_int running; /* handler calls not yet returned */
	atomic_int relistens;
	atomic_int relisten_err;
	int sleep_ms;	  /* each call sleeps this long first */
	bool reset_first; /* the first call replaces the listener under itself */
	bool check_peer;  /* refuse peers nkpi_rpc_peer_allowed refuses */
} fixture;

static const uint8_t probe_req[] = {'p', 'i', 'n', 'g'};
static const nkpi_rpc_call_opts call_opts = {
	.send_timeout_ms = 5000,
	.recv_timeout_ms = 5000,
	.max_reply = 4096,
	.read_only = false,
};

/* Replies "ok:" and the request, or "refused" to a peer the check
 * refuses. Requests but the probe first sleep sleep_ms. */
static nkp_err handle(void *arg, const nkpi_rpc_peer *peer, uint8_t *req, size_t len,
		      uint8_t **reply, size_t *reply_len)
{
	fixture *f = arg;
	bool refuse = f->check_peer && !nkpi_rpc_peer_allowed(peer, -1);
	uint8_t *out = malloc(len + 8);
	bool probe = len == sizeof(probe_req) && memcmp(req, probe_req, len) == 0;

	atomic_fetch_add(&f->calls, 1);
	atomic_fetch_add(&f->running, 1);
	if (f->sleep_ms > 0 && !probe) {
		nng_msleep((nng_duration)f->sleep_ms);
	}
	cr_assert_not_null(out);
	if (refuse) {
		memcpy(out, "refused", 7);
		*reply_len = 7;
	} else {
		memcpy(out, "ok:", 3);
		memcpy(out + 3, req, len);
		*reply_len = len + 3;
	}
	*reply = out;
	atomic_fetch_sub(&f->running, 1);
	return NKP_OK;
}

static void on_relisten(void *arg, nkp_err err)
{
	fixture *f = arg;

	atomic_store(&f->relisten_err, (int)err);
	atomic_fetch_add(&f->relistens, 1);
}

static void setup(fixture *f, unsigned contexts, bool threaded)
{
	memset(f, 0, sizeof(*f));
	nkp_log_set_sink(NULL, NULL);
	snprintf(f->dir, sizeof(f->dir), "%s/nkp-rpc-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/test.sock", f->dir);
	snprintf(f->url, sizeof(f->url), "ipc://%s", f->path);
	f->cfg = (nkpi_rpc_server_config){
		.path = f->path,
		.mode = 0600,
		.group = -1,
		.max_request = 1024,
		.contexts = contexts,
		.threaded = threaded,
		.handle = handle,
		.arg = f,
	};
}

static void start(fixture *f)
{
	cr_assert_eq(nkpi_rpc_server_start(&f->cfg, &f->srv), NKP_OK);
}

static void teardown(fixture *f)
{
	nkpi_rpc_server_stop(f->srv);
	f->srv = NULL;
	unlink(f->path);
	rmdir(f->dir);
}

/* One call of `text`; the reply's text into `out` (NUL-terminated).
 * Returns nng's error, with *step where it failed. */
static int call(fixture *f, const char *text, bool read_only, char *out, size_t size,
		nkpi_rpc_step *step)
{
	nkpi_rpc_call_opts o = call_opts;
	nng_msg *msg = NULL;
	int rv;

	o.send_timeout_ms *= (int)tu_wait_scale();
	o.recv_timeout_ms *= (int)tu_wait_scale();
	o.read_only = read_only;
	rv = nkpi_rpc_call(f->url, (const uint8_t *)text, strlen(text), &o, &msg, step);
	if (rv == 0) {
		size_t n = nng_msg_len(msg) < size - 1 ? nng_msg_len(msg) : size - 1;

		memcpy(out, nng_msg_body(msg), n);
		out[n] = '\0';
		nkpi_rpc_msg_free(msg, true);
	}
	return rv;
}

static void round_trip(unsigned contexts, bool threaded)
{
	fixture f;
	struct stat st;
	char reply[64];
	nkpi_rpc_step step;

	setup(&f, contexts, threaded);
	start(&f);
	cr_assert_eq(stat(f.path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "socket mode %o", st.st_mode & 0777);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(call(&f, "hello", false, reply, sizeof(reply), &step), 0);
		cr_expect_str_eq(reply, "ok:hello");
	}
	cr_expect_eq(atomic_load(&f.calls), 3);
	teardown(&f);
}

Test(rpc, serve_and_call_round_trip_from_callbacks)
{
	round_trip(4, false);
}

Test(rpc, serve_and_call_round_trip_on_threads)
{
	round_trip(1, true);
}

Test(rpc, a_server_gives_its_socket_the_mode_and_group)
{
	fixture f;
	struct stat st;

	setup(&f, 1, false);
	f.cfg.mode = 0660;
	f.cfg.group = (int64_t)getegid();
	start(&f);
	cr_assert_eq(stat(f.path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0660);
	cr_expect_eq(st.st_gid, getegid());
	teardown(&f);
}

Test(rpc, a_call_to_no_server_fails_at_dial)
{
	fixture f;
	char reply[16];
	nkpi_rpc_step step;
	int rv;

	setup(&f, 1, false);
	rv = call(&f, "x", true, reply, sizeof(reply), &step);
	cr_expect_neq(rv, 0);
	cr_expect_eq(step, NKPI_RPC_DIAL);
	cr_expect_eq(nkpi_rpc_err(rv), NKP_ERR_NET);
	cr_expect_eq(nkpi_rpc_err(NNG_ETIMEDOUT), NKP_ERR_TIMEOUT);
	rmdir(f.dir);
}

Test(rpc, the_peer_check_admits_root_us_and_the_group_only)
{
	nkpi_rpc_peer p = {.known = true, .pid = UINT64_MAX, .gid = UINT64_MAX};
	gid_t groups[64];
	int n = getgroups(64, groups);

	p.uid = 0;
	cr_expect(nkpi_rpc_peer_allowed(&p, -1), "root");
	p.uid = geteuid();
	cr_expect(nkpi_rpc_peer_allowed(&p, -1), "our uid");
	p.uid = geteuid() + 4242u;
	cr_expect_not(nkpi_rpc_peer_allowed(&p, -1), "another uid");
	p.gid = 4243;
	cr_expect_not(nkpi_rpc_peer_allowed(&p, -1), "another uid, no group admitted");
	cr_expect(nkpi_rpc_peer_allowed(&p, 4243), "another uid in the admitted group");
	cr_expect_not(nkpi_rpc_peer_allowed(&p, 4244), "another uid in another group");
	/* A supplementary group of the peer's process: ours. */
	for (int i = 0; i < n; i++) {
		if (groups[i] != getegid()) {
			p.pid = (uint64_t)getpid();
			cr_expect(nkpi_rpc_peer_allowed(&p, (int64_t)groups[i]),
				  "a supplementary group");
			break;
		}
	}
	p.uid = 0;
	p.known = false;
	cr_expect_not(nkpi_rpc_peer_allowed(&p, -1), "a peer the kernel did not name");
}

/* The other uid's client: this program again, run with
 * NKP_RPC_TEST_NOBODY=URL (Criterion's workers use nng, whose threads do
 * not survive a fork, so the child execs). It becomes nobody, calls URL
 * and exits 0 if refused, before Criterion starts. */
__attribute__((constructor)) static void call_as_nobody(void)
{
	const char *url = getenv("NKP_RPC_TEST_NOBODY");
	nkpi_rpc_step step;
	nng_msg *msg = NULL;

	if (url == NULL) {
		return;
	}
	if (setgid(65534) != 0 || setuid(65534) != 0 ||
	    nkpi_rpc_call(url, (const uint8_t *)"other", 5, &call_opts, &msg, &step) != 0) {
		_exit(2);
	}
	_exit(nng_msg_len(msg) == 7 && memcmp(nng_msg_body(msg), "refused", 7) == 0 ? 0 : 1);
}

Test(rpc, a_server_sees_the_peer_uid_and_refuses_another)
{
	fixture f;
	char reply[64], env[400], self[4096], *argv[] = {"test-rpc", "--as-nobody", NULL},
					      *envp[] = {env, NULL};
	nkpi_rpc_step step;
	ssize_t len;
	int status;
	pid_t pid;

	setup(&f, 2, false);
	f.check_peer = true;
	f.cfg.mode = 0666; /* the socket lets anyone in: the check must not */
	start(&f);
	cr_assert_eq(call(&f, "me", false, reply, sizeof(reply), &step), 0);
	cr_expect_str_eq(reply, "ok:me");
	if (geteuid() != 0) {
		teardown(&f);
		cr_skip_test("another uid needs root to become it");
	}
	cr_assert_eq(chmod(f.dir, 0755), 0);
	snprintf(env, sizeof(env), "NKP_RPC_TEST_NOBODY=%s", f.url);
	/* The executable's path, not /proc/self/exe itself: under valgrind
	 * that names valgrind (which answers readlink with the test's path).
	 * "--as-nobody" lets .ci/valgrind-unit run the child untraced: its
	 * exit with nng's threads running is not what is checked. */
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	cr_assert(len > 0 && (size_t)len < sizeof(self) - 1);
	self[len] = '\0';
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		execve(self, argv, envp);
		_exit(3);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "another uid's request was not refused (status %d)", status);
	/* Both requests reached the handler (a slow child may have sent its
	 * own again after a timeout: at least two). */
	cr_expect_geq(atomic_load(&f.calls), 2);
	teardown(&f);
}

/* A bare REP socket for the client's tests: it closes the connection of
 * the first request it gets (as a listener replaced under a request
 * does) and answers every later one with "ok". */
typedef struct resetter {
	nng_socket sock;
	nng_thread *thread;
	atomic_int requests;
} resetter;

static void resetter_main(void *arg)
{
	resetter *r = arg;
	nng_msg *msg;

	while (nng_recvmsg(r->sock, &msg, 0) == 0) {
		if (atomic_fetch_add(&r->requests, 1) == 0) {
			nng_pipe_close(nng_msg_get_pipe(msg));
			nng_msg_free(msg);
			continue;
		}
		nng_msg_clear(msg);
		if (nng_msg_append(msg, "ok", 2) != 0 || nng_sendmsg(r->sock, msg, 0) != 0) {
			nng_msg_free(msg);
		}
	}
}

static void resetter_start(resetter *r, fixture *f)
{
	setup(f, 1, false);
	atomic_store(&r->requests, 0);
	cr_assert_eq(nng_rep0_open(&r->sock), 0);
	cr_assert_eq(nng_listen(r->sock, f->url, NULL, 0), 0);
	cr_assert_eq(nng_thread_create(&r->thread, resetter_main, r), 0);
}

static void resetter_stop(resetter *r, fixture *f)
{
	nng_close(r->sock);
	nng_thread_destroy(r->thread);
	unlink(f->path);
	rmdir(f->dir);
}

Test(rpc, a_read_only_request_is_sent_again_after_a_reset)
{
	fixture f;
	resetter r;
	char reply[64];
	nkpi_rpc_step step;

	resetter_start(&r, &f);
	cr_assert_eq(call(&f, "status", true, reply, sizeof(reply), &step), 0);
	cr_expect_str_eq(reply, "ok");
	cr_expect_eq(atomic_load(&r.requests), 2, "sent %d times", atomic_load(&r.requests));
	resetter_stop(&r, &f);
}

Test(rpc, a_changing_request_is_not_sent_again_after_a_reset)
{
	fixture f;
	resetter r;
	char reply[64];
	nkpi_rpc_step step;
	int rv;

	resetter_start(&r, &f);
	rv = call(&f, "rewrap", false, reply, sizeof(reply), &step);
	cr_expect_eq(rv, NNG_ECONNRESET, "%s", nng_strerror(rv));
	cr_expect_eq(step, NKPI_RPC_RECV);
	nng_msleep(NKPI_RPC_RESET_PAUSE_MS + 500);
	cr_expect_eq(atomic_load(&r.requests), 1, "sent %d times", atomic_load(&r.requests));
	resetter_stop(&r, &f);
}

typedef struct caller {
	fixture *f;
	pthread_t thread;
	int rv;
} caller;

static void *call_thread(void *arg)
{
	caller *c = arg;
	char reply[64];
	nkpi_rpc_step step;

	c->rv = call(c->f, "slow", false, reply, sizeof(reply), &step);
	return NULL;
}

Test(rpc, the_listener_is_replaced_once_requests_in_flight_are_answered)
{
	fixture f;
	caller c;
	char reply[64];
	nkpi_rpc_step step;

	setup(&f, 2, false);
	f.sleep_ms = 500;
	start(&f);
	c.f = &f;
	cr_assert_eq(pthread_create(&c.thread, NULL, call_thread, &c), 0);
	for (int i = 0; i < 100 && atomic_load(&f.running) == 0; i++) {
		nng_msleep(20);
	}
	cr_assert_gt(atomic_load(&f.running), 0, "no request in flight");
	cr_assert_eq(nkpi_rpc_server_relisten(f.srv), NKP_OK);
	pthread_join(c.thread, NULL);
	cr_expect_eq(c.rv, 0, "the request in flight was not answered: %s", nng_strerror(c.rv));
	f.sleep_ms = 0;
	cr_expect_eq(call(&f, "after", false, reply, sizeof(reply), &step), 0);
	teardown(&f);
}

static void stop_in_flight(unsigned contexts, bool threaded)
{
	fixture f;
	caller c[4];
	int calls;

	setup(&f, contexts, threaded);
	f.sleep_ms = 300;
	start(&f);
	for (int i = 0; i < 4; i++) {
		c[i].f = &f;
		cr_assert_eq(pthread_create(&c[i].thread, NULL, call_thread, &c[i]), 0);
	}
	for (int i = 0; i < 100 && atomic_load(&f.running) == 0; i++) {
		nng_msleep(20);
	}
	cr_assert_gt(atomic_load(&f.running), 0, "no request in flight");
	nkpi_rpc_server_stop(f.srv);
	f.srv = NULL;
	cr_expect_eq(atomic_load(&f.running), 0, "a handler runs after stop returned");
	calls = atomic_load(&f.calls);
	for (int i = 0; i < 4; i++) {
		pthread_join(c[i].thread, NULL);
	}
	cr_expect_eq(atomic_load(&f.calls), calls, "a handler began after stop returned");
	for (int i = 0; i < 4; i++) {
		cr_expect_neq(c[i].rv, 0, "caller %d got a reply from a stopped server", i);
	}
	teardown(&f);
}

Test(rpc, stop_with_requests_in_flight_from_callbacks)
{
	stop_in_flight(2, false);
}

Test(rpc, stop_with_requests_in_flight_on_threads)
{
	stop_in_flight(1, true);
}

static void watched(fixture *f, unsigned contexts, bool threaded)
{
	setup(f, contexts, threaded);
	f->cfg.probe = probe_req;
	f->cfg.probe_len = sizeof(probe_req);
	f->cfg.watch_ms = 200;
	f->cfg.probe_timeout_ms = 400;
	f->cfg.on_relisten = on_relisten;
	start(f);
}

Test(rpc, the_watchdog_replaces_a_closed_listener)
{
	fixture f;
	char reply[64];
	nkpi_rpc_step step;

	watched(&f, 4, false);
	cr_assert_eq(call(&f, "before", false, reply, sizeof(reply), &step), 0);
	nkpi_rpc_server_test_wedge(f.srv);
	cr_expect_neq(call(&f, "wedged", false, reply, sizeof(reply), &step), 0);
	for (int i = 0; i < 100 && atomic_load(&f.relistens) == 0; i++) {
		nng_msleep(50);
	}
	cr_assert_eq(atomic_load(&f.relistens), 1, "the listener was not replaced");
	cr_expect_eq(atomic_load(&f.relisten_err), NKP_OK);
	cr_expect_eq(call(&f, "after", false, reply, sizeof(reply), &step), 0);
	cr_expect_str_eq(reply, "ok:after");
	/* Served again: the probes are answered, nothing is replaced again. */
	nng_msleep(1500);
	cr_expect_eq(atomic_load(&f.relistens), 1);
	teardown(&f);
}

Test(rpc, the_watchdog_waits_while_the_server_is_busy)
{
	fixture f;
	char reply[64];
	nkpi_rpc_step step;

	/* One thread, held 2.5 s by each request: the probes queue behind
	 * it for much longer than their timeout, and must not count. */
	watched(&f, 1, true);
	f.sleep_ms = 2500;
	cr_assert_eq(call(&f, "backup", false, reply, sizeof(reply), &step), 0);
	cr_assert_eq(call(&f, "backup", false, reply, sizeof(reply), &step), 0);
	cr_expect_eq(atomic_load(&f.relistens), 0, "a busy server's listener was replaced");
	teardown(&f);
}
