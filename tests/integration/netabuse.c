/* netabuse: what a stranger can do to a host's tcp port, on raw sockets
 * speaking nng's SP-over-TCP framing (an 8-byte header "\0SP\0", the
 * protocol number big-endian and two zero bytes, each way; then every
 * message as a 64-bit big-endian length and the body; a REQ body starts
 * with a 32-bit request id with its top bit set).
 *
 *   netabuse ADDR PORT MODE [options]
 *   MODE idle:  --count N: N connections that say nothing after the
 *               header (--no-header: not even that)
 *   MODE stall: --count N: N connections, each declaring a message of
 *               --declare BYTES and sending --send BYTES of it
 *   MODE flood: one connection sending --count garbage requests of
 *               --size BYTES (or --unknown: a Frame of unknown fields)
 *   --src A.B.C.D   first source address (loopback: 127.x.y.z); with
 *   --spread K      the connections are spread over K addresses from it
 *   --hold MS       then waits up to MS for the host to close them
 *
 * Prints one line: "opened N closed_early C closed_later L open O replies R
 * elapsed_ms E", where closed_early counts connections the host closed
 * before the hold began (refused over a cap), closed_later those it
 * closed during the hold and replies the bytes of reply data read (for
 * flood, the number of reply messages). Exit 0, 2 usage, 1 error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTO_REQ0 0x30u

typedef struct opts {
	const char *addr;
	int port;
	const char *mode;
	long count;
	long declare;
	long send;
	long size;
	bool unknown;
	bool no_header;
	const char *src;
	long spread;
	long hold_ms;
} opts;

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int usage(const char *why)
{
	fprintf(stderr,
		"netabuse: %s\nusage: netabuse ADDR PORT idle|stall|flood [--count N] "
		"[--declare B] [--send B] [--size B] [--unknown] [--no-header] "
		"[--src A.B.C.D] [--spread K] [--hold MS]\n",
		why);
	return 2;
}

static int dial(const opts *o, long i)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0) {
		return -1;
	}
	if (o->src != NULL) {
		struct sockaddr_in from = {.sin_family = AF_INET};
		uint32_t base;

		if (inet_pton(AF_INET, o->src, &from.sin_addr) != 1) {
			close(fd);
			return -1;
		}
		base = ntohl(from.sin_addr.s_addr);
		from.sin_addr.s_addr = htonl(base + (uint32_t)(o->spread > 1 ? i % o->spread : 0));
		if (bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0) {
			close(fd);
			return -1;
		}
	}
	if (inet_pton(AF_INET, o->addr, &to.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool send_all(int fd, const uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR) {
			continue;
		}
		if (w <= 0) {
			return false;
		}
		b += w;
		n -= (size_t)w;
	}
	return true;
}

static bool header(int fd)
{
	static const uint8_t h[8] = {0, 'S', 'P', 0, PROTO_REQ0 >> 8, PROTO_REQ0 & 0xff, 0, 0};

	return send_all(fd, h, sizeof(h));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

/* True if the peer has closed fd (EOF or reset); reads away any data and
 * adds its size to *bytes. */
static bool peer_closed(int fd, long *bytes)
{
	uint8_t buf[4096];

	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r > 0) {
			*bytes += r;
			continue;
		}
		if (r == 0) {
			return true;
		}
		return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	}
}

/* A garbage body: a request id, then `size` bytes of 0xff or (unknown)
 * a protobuf of unknown varint fields (field 15, value 1: 0x78 0x01). */
static uint8_t *garbage(const opts *o, size_t *len)
{
	size_t n = 8 + 4 + (size_t)o->size;
	uint8_t *b = malloc(n);

	if (b == NULL) {
		return NULL;
	}
	put64(b, 4 + (uint64_t)o->size);
	b[8] = 0x80;
	b[9] = 0;
	b[10] = 0;
	b[11] = 1;
	for (size_t i = 0; i < (size_t)o->size; i++) {
		b[12 + i] = o->unknown ? (i % 2 == 0 ? 0x78 : 0x01) : 0xff;
	}
	if (o->unknown && o->size % 2 == 1) {
		b[n - 1] = 0x00; /* a field of its own: still unknown-ish garbage */
	}
	*len = n;
	return b;
}

/* Reads the peer's 8-byte SP header within `ms`, so that it is never
 * taken for the length of a reply. False if the peer closed first or
 * sent no header in time. */
static bool peer_header(int fd, long ms)
{
	uint8_t h[8];
	size_t have = 0;
	long until = now_ms() + ms;

	while (have < sizeof(h) && now_ms() < until) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, 50) <= 0) {
			continue;
		}
		r = recv(fd, h + have, sizeof(h) - have, 0);
		if (r <= 0) {
			return false;
		}
		have += (size_t)r;
	}
	return have == sizeof(h) && h[1] == 'S' && h[2] == 'P';
}

/* Reads replies (8-byte length + body) for up to `ms`; counts them. */
static long read_replies(int fd, long ms, long *closed)
{
	long replies = 0, until = now_ms() + ms;
	uint8_t buf[65536];
	size_t have = 0;

	while (now_ms() < until) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&p, 1, 50) <= 0) {
			continue;
		}
		r = recv(fd, buf + have, sizeof(buf) - have, 0);
		if (r <= 0) {
			*closed = 1;
			break;
		}
		have += (size_t)r;
		while (have >= 8) {
			uint64_t len = 0;

			for (int i = 0; i < 8; i++) {
				len = len << 8 | buf[i];
			}
			if (len > sizeof(buf) - 8) {
				return replies + 1; /* a reply, too big to keep: counted */
			}
			if (have < 8 + len) {
				break;
			}
			replies++;
			memmove(buf, buf + 8 + len, have - 8 - len);
			have -= 8 + len;
		}
	}
	return replies;
}

static int flood(const opts *o)
{
	size_t len = 0;
	uint8_t *b = garbage(o, &len), reply_hdr[8];
	int fd = dial(o, 0);
	long sent = 0, closed = 0, replies = 0, start = now_ms();

	(void)reply_hdr;
	if (b == NULL || fd < 0 || !header(fd)) {
		fprintf(stderr, "netabuse: cannot connect to %s:%d: %s\n", o->addr, o->port,
			strerror(errno));
		free(b);
		return 1;
	}
	/* The host's SP header first: read late, it would look like a reply. */
	closed = peer_header(fd, 10000) ? 0 : 1;
	for (; !closed && sent < o->count; sent++) {
		long dummy = 0;

		if (!send_all(fd, b, len)) {
			closed = 1;
			break;
		}
		/* Drain whatever came back so the host never blocks on us. */
		if (peer_closed(fd, &dummy)) {
			closed = 1;
			break;
		}
		replies += dummy > 0 ? 1 : 0; /* the header is read: any byte answers */
	}
	if (!closed) {
		replies += read_replies(fd, o->hold_ms, &closed);
	}
	printf("opened 1 sent %ld closed %ld replies %ld elapsed_ms %ld\n", sent, closed, replies,
	       now_ms() - start);
	close(fd);
	free(b);
	return 0;
}

static int many(const opts *o)
{
	int *fds = calloc((size_t)o->count, sizeof(int));
	long opened = 0, early = 0, later = 0, open_now = 0, bytes = 0, start = now_ms();
	uint8_t *chunk = NULL;

	if (fds == NULL) {
		return 1;
	}
	if (strcmp(o->mode, "stall") == 0) {
		chunk = calloc(1, 8 + (size_t)o->send);
		if (chunk == NULL) {
			free(fds);
			return 1;
		}
		put64(chunk, (uint64_t)o->declare);
		chunk[8] = 0x80;
		memset(chunk + 12, 0x0a, (size_t)o->send > 4 ? (size_t)o->send - 4 : 0);
	}
	for (long i = 0; i < o->count; i++) {
		fds[i] = dial(o, i);
		if (fds[i] < 0) {
			continue;
		}
		opened++;
		if (!o->no_header && !header(fds[i])) {
			close(fds[i]);
			fds[i] = -1;
			early++;
			continue;
		}
		if (chunk != NULL && !send_all(fds[i], chunk, 8 + (size_t)o->send)) {
			close(fds[i]);
			fds[i] = -1;
			early++;
		}
	}
	/* Give the host a moment to refuse (its header comes back first). */
	for (long i = 0; i < o->count; i++) {
		struct pollfd p = {.fd = fds[i], .events = POLLIN};

		if (fds[i] >= 0 && poll(&p, 1, i == 0 ? 200 : 0) >= 0 &&
		    peer_closed(fds[i], &bytes)) {
			close(fds[i]);
			fds[i] = -1;
			early++;
		}
	}
	for (long until = now_ms() + o->hold_ms;;) {
		open_now = 0;
		for (long i = 0; i < o->count; i++) {
			if (fds[i] >= 0 && peer_closed(fds[i], &bytes)) {
				close(fds[i]);
				fds[i] = -1;
				later++;
			}
			open_now += fds[i] >= 0;
		}
		if (open_now == 0 || now_ms() >= until) {
			break;
		}
		usleep(100000);
	}
	printf("opened %ld closed_early %ld closed_later %ld open %ld replies %ld elapsed_ms %ld\n",
	       opened, early, later, open_now, bytes, now_ms() - start);
	for (long i = 0; i < o->count; i++) {
		if (fds[i] >= 0) {
			close(fds[i]);
		}
	}
	free(chunk);
	free(fds);
	return 0;
}

static bool num(const char *s, long *out)
{
	char *end = NULL;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && *out >= 0;
}

int main(int argc, char **argv)
{
	opts o = {.count = 1, .send = 64, .size = 64, .spread = 1};

	if (argc < 4) {
		return usage("too few arguments");
	}
	o.addr = argv[1];
	o.port = atoi(argv[2]);
	o.mode = argv[3];
	for (int i = 4; i < argc; i++) {
		const char *a = argv[i];
		long *target = NULL;

		if (strcmp(a, "--unknown") == 0) {
			o.unknown = true;
			continue;
		}
		if (strcmp(a, "--no-header") == 0) {
			o.no_header = true;
			continue;
		}
		if (i + 1 >= argc) {
			return usage("option without a value");
		}
		if (strcmp(a, "--src") == 0) {
			o.src = argv[++i];
			continue;
		}
		target = strcmp(a, "--count") == 0     ? &o.count
			 : strcmp(a, "--declare") == 0 ? &o.declare
			 : strcmp(a, "--send") == 0    ? &o.send
			 : strcmp(a, "--size") == 0    ? &o.size
			 : strcmp(a, "--spread") == 0  ? &o.spread
			 : strcmp(a, "--hold") == 0    ? &o.hold_ms
						       : NULL;
		if (target == NULL || !num(argv[++i], target)) {
			return usage("bad option");
		}
	}
	if (strcmp(o.mode, "flood") == 0) {
		return flood(&o);
	}
	if (strcmp(o.mode, "idle") == 0 || strcmp(o.mode, "stall") == 0) {
		return many(&o);
	}
	return usage("unknown mode");
}
