/* A software TPM for unit tests: swtpm (Debian's swtpm package) on
 * 127.0.0.1, a server port P and its control port P+1, as tpm2-tss's
 * swtpm TCTI expects. Ports are drawn from 20000-32767 (below the
 * ephemeral range) and tried until swtpm binds both; readiness is the
 * control port accepting, bounded. Stopped by PID.
 *
 * A TPM as a manufacturer ships it (an EK certificate in NV, signed by a
 * private CA) is made with swtpm_setup (Debian's swtpm-tools, with
 * gnutls-bin for certtool); credentials for it are made by tpm2-tools'
 * tpm2_makecredential without a TPM, an implementation independent of
 * ours. */
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
				/* Another swtpm (a test beside this one) may hold
				 * the ports while ours fails to bind them and
				 * exits: those are not ours. */
				usleep(100000);
				if (waitpid(pid, &st, WNOHANG) == pid) {
					pid = -1;
					break;
				}
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

/* Writes `len` bytes to `path`. 0, or -1. */
static inline int test_swtpm_write(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok = f != NULL && fwrite(buf, 1, len, f) == len;

	if (f != NULL && fclose(f) != 0) {
		ok = 0;
	}
	return ok ? 0 : -1;
}

static inline bool test_swtpm_setup_available(void)
{
	return system("{ command -v swtpm_setup && command -v swtpm_localca && "
		      "command -v certtool; } >/dev/null 2>&1") == 0;
}

/* Manufactures a TPM state in DIR/state: an RSA EK whose certificate
 * (NV 0x01c00002) is signed by a CA of its own in DIR/ca (issuercert.pem,
 * under swtpm-localca-rootca-cert.pem), the SHA-256 PCR bank active.
 * swtpm_setup's output goes to DIR/setup.log. 0, or -1. */
static inline int test_swtpm_manufacture(const char *dir)
{
	char path[400], text[1600], cmd[1400];

	snprintf(path, sizeof(path), "%s/ca", dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	snprintf(path, sizeof(path), "%s/state", dir);
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	snprintf(text, sizeof(text),
		 "statedir = %s/ca\nsigningkey = %s/ca/signkey.pem\n"
		 "issuercert = %s/ca/issuercert.pem\ncertserial = %s/ca/certserial\n",
		 dir, dir, dir, dir);
	snprintf(path, sizeof(path), "%s/localca.conf", dir);
	if (test_swtpm_write(path, text, strlen(text)) != 0) {
		return -1;
	}
	snprintf(text, sizeof(text),
		 "create_certs_tool= /usr/bin/swtpm_localca\n"
		 "create_certs_tool_config = %s/localca.conf\n"
		 "create_certs_tool_options = /etc/swtpm-localca.options\n"
		 "active_pcr_banks = sha256\n",
		 dir);
	snprintf(path, sizeof(path), "%s/setup.conf", dir);
	if (test_swtpm_write(path, text, strlen(text)) != 0) {
		return -1;
	}
	snprintf(cmd, sizeof(cmd),
		 "swtpm_setup --tpm2 --tpmstate '%s/state' --create-ek-cert "
		 "--config '%s/setup.conf' >'%s/setup.log' 2>&1",
		 dir, dir, dir);
	return system(cmd) == 0 ? 0 : -1;
}

static inline bool test_makecredential_available(void)
{
	return system("command -v tpm2_makecredential >/dev/null 2>&1") == 0;
}

/* The name of a key from its TPM2B_PUBLIC (nameAlg SHA-256): 0x000b ||
 * SHA-256(TPMT_PUBLIC), into name[34]. */
static inline void test_tpm_name(const uint8_t *pub, size_t pub_len, uint8_t name[34])
{
	name[0] = 0x00;
	name[1] = 0x0b;
	crypto_hash_sha256(name + 2, pub + 2, pub_len - 2);
}

/* tpm2_makecredential --tcti none: `cred` (1-64 bytes) for the key named
 * name[34], to the EK `ek` (TPM2B_PUBLIC), in files under `dir`. Splits
 * tpm2-tools' file (magic 0xBADCC0DE, version, TPM2B_ID_OBJECT,
 * TPM2B_ENCRYPTED_SECRET) into blob[512] and secret[512]. 0, or -1. */
static inline int test_makecredential(const char *dir, const uint8_t *ek, size_t ek_len,
				      const uint8_t name[34], const uint8_t *cred, size_t cred_len,
				      uint8_t *blob, size_t *blob_len, uint8_t *secret,
				      size_t *secret_len)
{
	static const uint8_t magic[8] = {0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1};
	char ek_path[300], cred_path[300], out_path[300], cmd[1400], hex[69];
	uint8_t file[1100];
	size_t n, b, s;
	FILE *f;

	snprintf(ek_path, sizeof(ek_path), "%s/mc-ek.pub", dir);
	snprintf(cred_path, sizeof(cred_path), "%s/mc-secret", dir);
	snprintf(out_path, sizeof(out_path), "%s/mc-cred.out", dir);
	sodium_bin2hex(hex, sizeof(hex), name, 34);
	if (test_swtpm_write(ek_path, ek, ek_len) != 0 ||
	    test_swtpm_write(cred_path, cred, cred_len) != 0) {
		return -1;
	}
	snprintf(cmd, sizeof(cmd),
		 "rm -f '%s' && tpm2_makecredential --tcti none -u '%s' -s '%s' -n %s -o '%s' "
		 ">'%s/mc.log' 2>&1",
		 out_path, ek_path, cred_path, hex, out_path, dir);
	if (system(cmd) != 0 || (f = fopen(out_path, "rb")) == NULL) {
		return -1;
	}
	n = fread(file, 1, sizeof(file), f);
	fclose(f);
	if (n < sizeof(magic) + 4 || memcmp(file, magic, sizeof(magic)) != 0) {
		return -1;
	}
	b = 2 + (((size_t)file[8] << 8) | file[9]);
	if (8 + b + 2 > n || b > 512) {
		return -1;
	}
	s = 2 + (((size_t)file[8 + b] << 8) | file[8 + b + 1]);
	if (8 + b + s != n || s > 512) {
		return -1;
	}
	memcpy(blob, file + 8, b);
	memcpy(secret, file + 8 + b, s);
	*blob_len = b;
	*secret_len = s;
	return 0;
}

#endif
