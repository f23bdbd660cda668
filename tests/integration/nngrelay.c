/* nngrelay: a recording REQ/REP relay for integration tests.
 *
 *   nngrelay LISTEN_URL TARGET_URL RECORD_DIR
 *
 * Listens with a REP socket on LISTEN_URL; forwards every request, byte for
 * byte, to TARGET_URL over a REQ socket and hands the reply back. Each
 * exchange is recorded as RECORD_DIR/NNNNNN.req and, when the target
 * answered, NNNNNN.rep (each written to a temporary name, then renamed, so a
 * reader never sees half a file). Writes RECORD_DIR/ready once listening.
 * While a file RECORD_DIR/hold exists, requests are recorded as NNNNNN.held
 * and neither forwarded nor answered: a message the target never saw.
 * Requests are relayed one at a time. Runs until killed. A test enrols a host
 * at the relay's address to capture the service's pushes to it. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#define TARGET_TIMEOUT_MS 5000

static int record(const char *dir, unsigned seq, const char *ext, const void *data, size_t len)
{
	char tmp[4096];
	char path[4096];
	FILE *f;
	int rc = 1;

	snprintf(tmp, sizeof(tmp), "%s/.%06u.%s.tmp", dir, seq, ext);
	snprintf(path, sizeof(path), "%s/%06u.%s", dir, seq, ext);
	f = fopen(tmp, "wb");
	if (f == NULL) {
		fprintf(stderr, "nngrelay: %s: %s\n", tmp, strerror(errno));
		return 1;
	}
	if (fwrite(data, 1, len, f) == len && fflush(f) == 0) {
		rc = 0;
	}
	if (fclose(f) != 0 || rc != 0 || rename(tmp, path) != 0) {
		fprintf(stderr, "nngrelay: cannot record %s\n", path);
		rc = 1;
	}
	return rc;
}

static bool holding(const char *dir)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/hold", dir);
	return access(path, F_OK) == 0;
}

static int open_sockets(const char *listen_url, const char *target_url, nng_socket *rep,
			nng_socket *req)
{
	int rv;

	if ((rv = nng_rep0_open(rep)) != 0) {
		goto fail;
	}
	if ((rv = nng_req0_open(req)) != 0) {
		nng_close(*rep);
		goto fail;
	}
	nng_socket_set_size(*rep, NNG_OPT_RECVMAXSZ, 64u << 20);
	nng_socket_set_size(*req, NNG_OPT_RECVMAXSZ, 64u << 20);
	nng_socket_set_ms(*req, NNG_OPT_RECVTIMEO, TARGET_TIMEOUT_MS);
	nng_socket_set_ms(*req, NNG_OPT_SENDTIMEO, TARGET_TIMEOUT_MS);
	nng_socket_set_ms(*req, NNG_OPT_RECONNMINT, 50);
	nng_socket_set_ms(*req, NNG_OPT_RECONNMAXT, 500);
	if ((rv = nng_dial(*req, target_url, NULL, NNG_FLAG_NONBLOCK)) != 0 ||
	    (rv = nng_listen(*rep, listen_url, NULL, 0)) != 0) {
		nng_close(*req);
		nng_close(*rep);
		goto fail;
	}
	return 0;
fail:
	fprintf(stderr, "nngrelay: %s -> %s: %s\n", listen_url, target_url, nng_strerror(rv));
	return 1;
}

static void relay_one(nng_socket rep, nng_socket req, const char *dir, unsigned seq)
{
	void *in = NULL;
	void *back = NULL;
	size_t inlen = 0;
	size_t backlen = 0;
	int rv;

	if ((rv = nng_recv(rep, &in, &inlen, NNG_FLAG_ALLOC)) != 0) {
		fprintf(stderr, "nngrelay: receive: %s\n", nng_strerror(rv));
		return;
	}
	if (holding(dir)) {
		record(dir, seq, "held", in, inlen);
		nng_free(in, inlen);
		return;
	}
	record(dir, seq, "req", in, inlen);
	rv = nng_send(req, in, inlen, 0);
	nng_free(in, inlen);
	if (rv == 0) {
		rv = nng_recv(req, &back, &backlen, NNG_FLAG_ALLOC);
	}
	if (rv != 0) {
		fprintf(stderr, "nngrelay: target: %s\n", nng_strerror(rv));
		return;
	}
	record(dir, seq, "rep", back, backlen);
	if ((rv = nng_send(rep, back, backlen, NNG_FLAG_ALLOC)) != 0) {
		nng_free(back, backlen);
		fprintf(stderr, "nngrelay: reply: %s\n", nng_strerror(rv));
	}
}

int main(int argc, char **argv)
{
	nng_socket rep;
	nng_socket req;

	if (argc != 4) {
		fprintf(stderr, "usage: nngrelay LISTEN_URL TARGET_URL RECORD_DIR\n");
		return 2;
	}
	if (open_sockets(argv[1], argv[2], &rep, &req) != 0) {
		return 1;
	}
	{
		char ready[4096];
		FILE *f;
		snprintf(ready, sizeof(ready), "%s/ready", argv[3]);
		f = fopen(ready, "w");
		if (f == NULL || fclose(f) != 0) {
			fprintf(stderr, "nngrelay: cannot write %s\n", ready);
			return 1;
		}
	}
	for (unsigned seq = 1;; seq++) {
		relay_one(rep, req, argv[3], seq);
	}
}
