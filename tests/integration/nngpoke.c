/* nngpoke: sends one request of given bytes to an nng REP socket and
 * reports the reply. Integration tests use it to put garbage, truncated,
 * oversized and replayed messages on every socket of the daemons.
 *
 *   nngpoke [--timeout MS] [--truncate N] [--out FILE] [--close] URL SOURCE
 *   SOURCE: --file FILE | --hex HEX | --fill COUNT BYTE (BYTE in hex)
 *
 * Prints "reply LEN HEX" (HEX: the reply, at most its first 4096 bytes) on
 * stdout and, with --out, writes the whole reply to FILE.
 * Exit: 0 reply received, 2 usage, 3 no reply in time, 4 the peer closed
 * the connection without replying, 5 cannot connect (or no handshake)
 * within the timeout, 1 other error. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#define EXIT_USAGE 2
#define EXIT_NOREPLY 3
#define EXIT_CLOSED 4
#define EXIT_CONNECT 5
#define SHOW_MAX 4096u

static atomic_int pipes_removed;
static atomic_int recv_done;
static bool graceful_close;

static void on_recv(void *arg)
{
	(void)arg;
	atomic_store(&recv_done, 1);
}

static void on_pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	(void)arg;
	atomic_fetch_add(&pipes_removed, 1);
}

struct buf {
	uint8_t *data;
	size_t len;
};

static int usage(const char *why)
{
	fprintf(stderr,
		"nngpoke: %s\n"
		"usage: nngpoke [--timeout MS] [--truncate N] [--out FILE] [--close] URL "
		"(--file FILE | --hex HEX | --fill COUNT BYTE)\n",
		why);
	return EXIT_USAGE;
}

static int read_file(const char *path, struct buf *b)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 4096;
	int rc = 1;

	if (f == NULL) {
		fprintf(stderr, "nngpoke: %s: %s\n", path, strerror(errno));
		return 1;
	}
	b->data = malloc(cap);
	b->len = 0;
	while (b->data != NULL) {
		size_t n = fread(b->data + b->len, 1, cap - b->len, f);
		b->len += n;
		if (b->len < cap) {
			rc = ferror(f) ? 1 : 0;
			break;
		}
		cap *= 2;
		uint8_t *grown = realloc(b->data, cap);
		if (grown == NULL) {
			break;
		}
		b->data = grown;
	}
	fclose(f);
	if (rc != 0) {
		fprintf(stderr, "nngpoke: cannot read %s\n", path);
	}
	return rc;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 10;
	}
	return -1;
}

static int parse_hex(const char *hex, struct buf *b)
{
	size_t n = strlen(hex);

	if (n % 2 != 0) {
		return usage("--hex needs an even number of digits");
	}
	b->data = malloc(n / 2 + 1);
	if (b->data == NULL) {
		return 1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]);
		int lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			return usage("--hex: not a hex digit");
		}
		b->data[i] = (uint8_t)(hi << 4 | lo);
	}
	b->len = n / 2;
	return 0;
}

static int make_fill(const char *count, const char *byte, struct buf *b)
{
	char *end = NULL;
	unsigned long long n = strtoull(count, &end, 10);
	unsigned long v;

	if (*count == '\0' || *end != '\0' || n > (1ull << 30)) {
		return usage("--fill: bad COUNT");
	}
	v = strtoul(byte, &end, 16);
	if (*byte == '\0' || *end != '\0' || v > 0xff) {
		return usage("--fill: bad BYTE");
	}
	b->data = malloc((size_t)n + 1);
	if (b->data == NULL) {
		return 1;
	}
	memset(b->data, (int)v, (size_t)n);
	b->len = (size_t)n;
	return 0;
}

static int report(const uint8_t *data, size_t len, const char *out)
{
	printf("reply %zu ", len);
	for (size_t i = 0; i < len && i < SHOW_MAX; i++) {
		printf("%02x", data[i]);
	}
	printf("\n");
	if (out != NULL) {
		FILE *f = fopen(out, "wb");
		if (f == NULL || fwrite(data, 1, len, f) != len) {
			fprintf(stderr, "nngpoke: cannot write %s\n", out);
			if (f != NULL) {
				fclose(f);
			}
			return 1;
		}
		fclose(f);
	}
	return 0;
}

/* The outcome of the receive: the reply, or why there was none. */
static int received(nng_aio *aio, int timeout_ms, const char *out)
{
	int rv = nng_aio_result(aio);
	nng_msg *m;
	int rc;

	if (rv == NNG_ETIMEDOUT) {
		fprintf(stderr, "nngpoke: no reply within %d ms\n", timeout_ms);
		return atomic_load(&pipes_removed) > 0 ? EXIT_CLOSED : EXIT_NOREPLY;
	}
	if (rv != 0) {
		fprintf(stderr, "nngpoke: no reply: %s\n", nng_strerror(rv));
		return EXIT_NOREPLY;
	}
	m = nng_aio_get_msg(aio);
	rc = report(nng_msg_body(m), nng_msg_len(m), out);
	nng_msg_free(m);
	return rc;
}

/* Sends the request and waits for the reply (one receive for the whole
 * time: a REQ socket drops its request when a receive times out), looking
 * every 10 ms whether the peer closed the connection (e.g. over an
 * oversized message), so that it is told apart from a peer that says
 * nothing. */
static int exchange(const char *url, const struct buf *req, int timeout_ms, const char *out)
{
	nng_socket s;
	nng_aio *aio = NULL;
	int rv;
	int rc = 1;

	if ((rv = nng_req0_open(&s)) != 0 || (rv = nng_aio_alloc(&aio, on_recv, NULL)) != 0) {
		fprintf(stderr, "nngpoke: socket: %s\n", nng_strerror(rv));
		return 1;
	}
	nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, on_pipe_removed, NULL);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 3600000);
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 64u << 20);
	/* A blocking dial would wait without limit for a peer that accepts
	 * the connection but never completes the handshake; dial in the
	 * background and let the send time out instead. */
	if ((rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
		fprintf(stderr, "nngpoke: cannot connect to %s: %s\n", url, nng_strerror(rv));
		rc = EXIT_CONNECT;
		goto close_socket;
	}
	if ((rv = nng_send(s, req->data, req->len, 0)) != 0) {
		fprintf(stderr, "nngpoke: cannot connect to %s within %d ms: %s\n", url, timeout_ms,
			nng_strerror(rv));
		rc = EXIT_CONNECT;
		goto close_socket;
	}
	nng_aio_set_timeout(aio, timeout_ms);
	nng_recv_aio(s, aio);
	for (int closed_for = 0;; usleep(10000)) {
		if (atomic_load(&recv_done)) {
			rc = received(aio, timeout_ms, out);
			break;
		}
		/* A reply read just before the close may reach us a moment
		 * after the close is reported: 200 ms of grace. */
		if (atomic_load(&pipes_removed) > 0 && (closed_for += 10) > 200) {
			fprintf(stderr,
				"nngpoke: the peer closed the connection without a reply\n");
			rc = EXIT_CLOSED;
			break;
		}
	}
close_socket:
	/* By default no nng_close(): with a large send still in flight to a
	 * peer that does not read, nng 1.5 can wait in it without limit; the
	 * process ends right after this and the kernel closes the connection.
	 * --close closes the socket the nng way (as a well-behaved client
	 * would), under an alarm so that it cannot hang. */
	if (graceful_close) {
		alarm((unsigned)(timeout_ms / 1000 + 5));
		nng_close(s);
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct buf req = {0};
	const char *url = NULL;
	const char *out = NULL;
	long truncate_to = -1;
	int timeout_ms = 3000;
	bool have_source = false;
	int rc = 0;

	for (int i = 1; i < argc && rc == 0; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (strcmp(a, "--timeout") == 0 && more) {
			timeout_ms = atoi(argv[++i]);
		} else if (strcmp(a, "--truncate") == 0 && more) {
			truncate_to = atol(argv[++i]);
		} else if (strcmp(a, "--close") == 0) {
			graceful_close = true;
		} else if (strcmp(a, "--out") == 0 && more) {
			out = argv[++i];
		} else if (strcmp(a, "--file") == 0 && more && !have_source) {
			rc = read_file(argv[++i], &req);
			have_source = true;
		} else if (strcmp(a, "--hex") == 0 && more && !have_source) {
			rc = parse_hex(argv[++i], &req);
			have_source = true;
		} else if (strcmp(a, "--fill") == 0 && i + 2 < argc && !have_source) {
			rc = make_fill(argv[i + 1], argv[i + 2], &req);
			i += 2;
			have_source = true;
		} else if (a[0] != '-' && url == NULL) {
			url = a;
		} else {
			rc = usage("bad arguments");
		}
	}
	if (rc == 0 && (url == NULL || !have_source || timeout_ms <= 0)) {
		rc = usage("need a URL, one source and a positive timeout");
	}
	if (rc == 0 && req.data == NULL) {
		req.data = malloc(1);
		rc = req.data == NULL ? 1 : 0;
	}
	if (rc == 0) {
		if (truncate_to >= 0 && (size_t)truncate_to < req.len) {
			req.len = (size_t)truncate_to;
		}
		rc = exchange(url, &req, timeout_ms, out);
	}
	free(req.data);
	fflush(stdout);
	_exit(rc);
}
