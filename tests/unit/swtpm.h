/* A software TPM for unit tests: swtpm (Debian's swtpm package) on
 * 127.0.0.1, a server port P and its control port P+1, as tpm2-tss's
 * swtpm TCTI expects. Ports are drawn from 20000-32767 (below the
 * ephemeral range) and tried until swtpm binds both; readiness is the
 * control port accepting, bounded. Stopped by PID. */
#ifndef NKP_TEST_SWTPM_H
#define NKP_TEST_SWTPM_H

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

typedef struct test_swtpm {
	pid_t pid;
	int port;
	char dir[256];	/* its state (the storage seed lives here) */
	char tcti[128]; /* "swtpm:host=127.0.0.1,port=P" */
} test_swtpm;

static inline bool test_swtpm_available(void)
{
	return system("command -v swtpm >/dev/null 2>&1") == 0;
}

static inline bool test_swtpm_connects(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0) {
		close(fd);
	}
	return ok;
}

static inline long test_swtpm_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Starts swtpm on state directory `dir` (made if missing). 0 when it
 * answers; -1 if it could not be started within the bounds. */
static inline int test_swtpm_start(test_swtpm *s, const char *dir)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	for (int attempt = 0; attempt < 20; attempt++) {
		int port = 20000 + (int)randombytes_uniform(32767 - 20000 - 1);
		char state[300], server[96], ctrl[96];
		long deadline;
		pid_t pid;

		snprintf(state, sizeof(state), "dir=%s", dir);
		snprintf(server, sizeof(server), "type=tcp,port=%d,bindaddr=127.0.0.1", port);
		snprintf(ctrl, sizeof(ctrl), "type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
		pid = fork();
		if (pid < 0) {
			return -1;
		}
		if (pid == 0) {
			execlp("swtpm", "swtpm", "socket", "--tpm2", "--tpmstate", state,
			       "--server", server, "--ctrl", ctrl, "--flags",
			       "not-need-init,startup-clear", (char *)NULL);
			_exit(127);
		}
		deadline = test_swtpm_ms() + 30000;
		while (test_swtpm_ms() < deadline) {
			int st;

			if (waitpid(pid, &st, WNOHANG) == pid) {
				pid = -1; /* a port taken: try others */
				break;
			}
			if (test_swtpm_connects(port + 1) && test_swtpm_connects(port)) {
				s->pid = pid;
				s->port = port;
				snprintf(s->tcti, sizeof(s->tcti), "swtpm:host=127.0.0.1,port=%d",
					 port);
				return 0;
			}
			usleep(20000);
		}
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -1;
		}
	}
	return -1;
}

static inline void test_swtpm_stop(test_swtpm *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

#endif
