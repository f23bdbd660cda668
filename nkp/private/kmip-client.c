/* A KMIP client over mutual TLS (nkp/private/kmip-client.h).
 *
 * The socket is non-blocking and mbedTLS reads and writes it through the
 * two callbacks below, which never wait: every wait is a poll(2) here,
 * bounded by the operation's deadline. So a server that stalls, in the
 * handshake or after it, costs at most the deadline, and its connection
 * is then closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <sodium.h>

#include "internal.h"
#include "kmip-client.h"

/* Answers larger than this are refused (a Locate of many objects fits). */
#define RESPONSE_MAX (256u * 1024u)
#define BACKOFF_MIN_MS 1000u
#define BACKOFF_MAX_MS 60000u
#define HOST_MAX 256u

typedef struct server {
	char url[96];
	char host[HOST_MAX];
	char port[8];
	bool is_ip; /* the name to check is an iPAddress */
	uint8_t ip[16];
	size_t ip_len;
	bool reachable;
	uint64_t next_try_ms;
	unsigned backoff_ms;
	char error[NKPI_KMIP_ERROR_MAX];
} server;

/* The one open connection, to servers[srv]. */
typedef struct conn {
	int fd;
	size_t srv;
	bool open;
	mbedtls_ssl_context ssl;
} conn;

struct nkpi_kmip {
	server servers[NKPI_KMIP_SERVERS_MAX];
	size_t n_servers;
	unsigned timeout_ms;
	mbedtls_x509_crt ca, cert;
	mbedtls_pk_context key;
	mbedtls_ssl_config tls;
	conn c;
	size_t verifying; /* the server whose certificate is being checked */
	size_t last_server;
	uint8_t *resp; /* RESPONSE_MAX bytes of locked memory */
	char last_error[2 * NKPI_KMIP_ERROR_MAX];
};

static const int suites[] = {
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	0,
};

/* ---- URLs ---- */

/* Printable ASCII, no blank, no '/' or '@': a host name reaches logs,
 * events and terminals. */
static bool host_chars_ok(const char *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)h[i];

		if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '@') {
			return false;
		}
	}
	return true;
}

nkp_err nkpi_kmip_parse_url(const char *url, char *host, size_t host_len, uint16_t *port)
{
	static const char scheme[] = "kmip://";
	const char *h, *end, *colon;
	unsigned long p = NKPI_KMIP_DEFAULT_PORT;
	size_t n;

	if (url == NULL || strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
		return NKP_ERR_INVALID;
	}
	h = url + sizeof(scheme) - 1;
	if (*h == '[') {
		end = strchr(h, ']');
		if (end == NULL) {
			return NKP_ERR_INVALID;
		}
		h++;
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] != '\0' && colon == NULL) {
			return NKP_ERR_INVALID;
		}
	} else {
		colon = strchr(h, ':');
		end = colon != NULL ? colon : h + strlen(h);
	}
	n = (size_t)(end - h);
	if (n == 0 || n >= host_len || !host_chars_ok(h, n)) {
		return NKP_ERR_INVALID;
	}
	if (colon != NULL) {
		char *e;

		if (colon[1] < '0' || colon[1] > '9') {
			return NKP_ERR_INVALID;
		}
		errno = 0;
		p = strtoul(colon + 1, &e, 10);
		if (errno != 0 || *e != '\0' || p == 0 || p > 65535) {
			return NKP_ERR_INVALID;
		}
	}
	memcpy(host, h, n);
	host[n] = '\0';
	*port = (uint16_t)p;
	return NKP_OK;
}

static nkp_err server_init(server *s, const char *url)
{
	uint16_t port;

	if (url == NULL || strlen(url) >= sizeof(s->url) ||
	    nkpi_kmip_parse_url(url, s->host, sizeof(s->host), &port) != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	snprintf(s->url, sizeof(s->url), "%s", url);
	snprintf(s->port, sizeof(s->port), "%u", port);
	if (inet_pton(AF_INET, s->host, s->ip) == 1) {
		s->is_ip = true;
		s->ip_len = 4;
	} else if (inet_pton(AF_INET6, s->host, s->ip) == 1) {
		s->is_ip = true;
		s->ip_len = 16;
	}
	return NKP_OK;
}

/* ---- TLS setup ---- */

static int rng(void *arg, unsigned char *out, size_t n)
{
	(void)arg;
	randombytes_buf(out, n);
	return 0;
}

/* mbedTLS checks DNS names (set_hostname); an IP literal is checked here
 * against the leaf's iPAddress entries, which it does not look at. */
static int verify(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	const nkpi_kmip *k = arg;
	const server *s = &k->servers[k->verifying];
	const mbedtls_x509_sequence *san;

	if (depth != 0 || !s->is_ip) {
		return 0;
	}
	for (san = &crt->subject_alt_names; san != NULL; san = san->next) {
		if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
		    san->buf.len == s->ip_len && memcmp(san->buf.p, s->ip, s->ip_len) == 0) {
			return 0;
		}
	}
	*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
	return 0;
}

static void tls_why(int rc, const char *what, char *why, size_t n)
{
	char msg[128];

	mbedtls_strerror(rc, msg, sizeof(msg));
	if (why != NULL) {
		snprintf(why, n, "%s: %s", what, msg);
	}
}

/* mbedTLS parses PEM only from a NUL-terminated buffer, counted. */
static int parse_pem(const uint8_t *pem, size_t len, mbedtls_x509_crt *crt, mbedtls_pk_context *pk)
{
	uint8_t *z;
	int rc;

	if (pem == NULL || len == 0 || len > 1u << 20) {
		return MBEDTLS_ERR_PEM_BAD_INPUT_DATA;
	}
	z = sodium_malloc(len + 1);
	if (z == NULL) {
		return MBEDTLS_ERR_PEM_ALLOC_FAILED;
	}
	memcpy(z, pem, len);
	z[len] = 0;
	rc = crt != NULL ? mbedtls_x509_crt_parse(crt, z, len + 1)
			 : mbedtls_pk_parse_key(pk, z, len + 1, NULL, 0);
	sodium_free(z); /* wiped */
	return rc;
}

static nkp_err tls_setup(nkpi_kmip *k, const nkpi_kmip_config *cfg, char *why, size_t n)
{
	int rc;

	if ((rc = parse_pem(cfg->ca_pem, cfg->ca_len, &k->ca, NULL)) != 0) {
		tls_why(rc, "the KMS CA certificate", why, n);
		return NKP_ERR_PARSE;
	}
	if ((rc = parse_pem(cfg->cert_pem, cfg->cert_len, &k->cert, NULL)) != 0) {
		tls_why(rc, "the client certificate", why, n);
		return NKP_ERR_PARSE;
	}
	if ((rc = parse_pem(cfg->key_pem, cfg->key_len, NULL, &k->key)) != 0) {
		tls_why(rc, "the client key", why, n);
		return NKP_ERR_PARSE;
	}
	if (mbedtls_pk_check_pair(&k->cert.pk, &k->key) != 0) {
		if (why != NULL) {
			snprintf(why, n, "the client key does not match the client certificate");
		}
		return NKP_ERR_PARSE;
	}
	if (mbedtls_ssl_config_defaults(&k->tls, MBEDTLS_SSL_IS_CLIENT,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0 ||
	    mbedtls_ssl_conf_own_cert(&k->tls, &k->cert, &k->key) != 0) {
		return NKP_ERR_CRYPTO;
	}
	mbedtls_ssl_conf_min_version(&k->tls, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(&k->tls, suites);
	mbedtls_ssl_conf_authmode(&k->tls, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&k->tls, &k->ca, NULL);
	mbedtls_ssl_conf_rng(&k->tls, rng, NULL);
	mbedtls_ssl_conf_verify(&k->tls, verify, k);
	mbedtls_ssl_conf_renegotiation(&k->tls, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	return NKP_OK;
}

/* Why `url` is refused, quoting at most 80 bytes of it, printably. */
static void bad_url(const char *url, char *why, size_t n)
{
	char shown[81];
	size_t j = 0;

	if (why == NULL) {
		return;
	}
	for (const char *p = url != NULL ? url : "(none)"; *p != '\0' && j + 1 < sizeof(shown);
	     p++) {
		unsigned char ch = (unsigned char)*p;

		shown[j++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	shown[j] = '\0';
	snprintf(why, n, "not a kmip://HOST[:PORT] address: %s", shown);
}

nkp_err nkpi_kmip_new(const nkpi_kmip_config *cfg, nkpi_kmip **out, char *why, size_t why_len)
{
	nkpi_kmip *k;
	nkp_err err;

	if (cfg == NULL || out == NULL || cfg->n_servers == 0 ||
	    cfg->n_servers > NKPI_KMIP_SERVERS_MAX) {
		return NKP_ERR_INVALID;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		return NKP_ERR_NOMEM;
	}
	k->c.fd = -1;
	mbedtls_x509_crt_init(&k->ca);
	mbedtls_x509_crt_init(&k->cert);
	mbedtls_pk_init(&k->key);
	mbedtls_ssl_config_init(&k->tls);
	k->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : NKPI_KMIP_DEFAULT_TIMEOUT_MS;
	for (size_t i = 0; i < cfg->n_servers; i++) {
		if (server_init(&k->servers[i], cfg->servers[i]) != NKP_OK) {
			bad_url(cfg->servers[i], why, why_len);
			nkpi_kmip_free(k);
			return NKP_ERR_INVALID;
		}
	}
	k->n_servers = cfg->n_servers;
	k->resp = sodium_malloc(RESPONSE_MAX);
	err = k->resp == NULL ? NKP_ERR_NOMEM : tls_setup(k, cfg, why, why_len);
	if (err != NKP_OK) {
		nkpi_kmip_free(k);
		return err;
	}
	*out = k;
	return NKP_OK;
}

static void conn_close(nkpi_kmip *k)
{
	if (!k->c.open) {
		return;
	}
	mbedtls_ssl_free(&k->c.ssl); /* zeroizes its record buffers */
	close(k->c.fd);
	k->c.fd = -1;
	k->c.open = false;
}

void nkpi_kmip_free(nkpi_kmip *k)
{
	if (k == NULL) {
		return;
	}
	conn_close(k);
	mbedtls_ssl_config_free(&k->tls);
	mbedtls_pk_free(&k->key);
	mbedtls_x509_crt_free(&k->cert);
	mbedtls_x509_crt_free(&k->ca);
	sodium_free(k->resp);
	sodium_memzero(k, sizeof(*k));
	free(k);
}

size_t nkpi_kmip_server_count(const nkpi_kmip *k)
{
	return k->n_servers;
}

void nkpi_kmip_server_get(const nkpi_kmip *k, size_t i, nkpi_kmip_server_status *out)
{
	const server *s = &k->servers[i];

	*out = (nkpi_kmip_server_status){.reachable = s->reachable};
	snprintf(out->url, sizeof(out->url), "%s", s->url);
	snprintf(out->error, sizeof(out->error), "%s", s->error);
}

const char *nkpi_kmip_last_error(const nkpi_kmip *k)
{
	return k->last_error;
}

size_t nkpi_kmip_last_server(const nkpi_kmip *k)
{
	return k->last_server;
}

/* ---- the socket under mbedTLS ---- */

static int bio_send(void *arg, const unsigned char *buf, size_t len)
{
	const conn *c = arg;
	ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

	if (n >= 0) {
		return (int)n;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	}
	return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *arg, unsigned char *buf, size_t len)
{
	const conn *c = arg;
	ssize_t n = recv(c->fd, buf, len, 0);

	if (n >= 0) {
		return (int)n; /* 0: the peer closed (MBEDTLS_ERR_SSL_CONN_EOF) */
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		return MBEDTLS_ERR_SSL_WANT_READ;
	}
	return MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Waits until `fd` is ready for `events` or the deadline passes. */
static nkp_err wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = nkpi_mono_ms();
		struct pollfd p = {.fd = fd, .events = events};
		int rc;

		if (now >= deadline) {
			return NKP_ERR_TIMEOUT;
		}
		rc = poll(&p, 1, (int)(deadline - now));
		if (rc > 0) {
			return NKP_OK;
		}
		if (rc < 0 && errno != EINTR) {
			return NKP_ERR_NET;
		}
	}
}

/* What one attempt at a server ended with, for its error text. */
typedef struct attempt {
	server *s;
	uint64_t deadline;
	bool reused;	 /* on a connection kept from an earlier request */
	bool got_answer; /* a byte of the answer arrived */
} attempt;

static nkp_err attempt_fail(nkpi_kmip *k, attempt *a, nkp_err err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static nkp_err attempt_fail(nkpi_kmip *k, attempt *a, nkp_err err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->s->error, sizeof(a->s->error), fmt, ap);
	va_end(ap);
	conn_close(k);
	return err;
}

static nkp_err timed_out(nkpi_kmip *k, attempt *a, const char *phase)
{
	return attempt_fail(k, a, NKP_ERR_TIMEOUT, "timed out after %u ms %s", k->timeout_ms,
			    phase);
}

/* Connects `fd` to `ai`: 0, or an errno value (ETIMEDOUT at the deadline). */
static int connect_one(int fd, const struct addrinfo *ai, uint64_t deadline)
{
	int e = 0;
	socklen_t len = sizeof(e);
	nkp_err w;

	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		return 0;
	}
	if (errno != EINPROGRESS) {
		return errno;
	}
	w = wait_fd(fd, POLLOUT, deadline);
	if (w != NKP_OK) {
		return w == NKP_ERR_TIMEOUT ? ETIMEDOUT : errno;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) {
		return errno;
	}
	return e;
}

static nkp_err tcp_connect(nkpi_kmip *k, attempt *a)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(a->s->host, a->s->port, &hints, &res);
	int last = ECONNREFUSED;

	if (rc != 0) {
		return attempt_fail(k, a, NKP_ERR_NET, "cannot resolve %s: %s", a->s->host,
				    gai_strerror(rc));
	}
	for (const struct addrinfo *ai = res; ai != NULL && last != ETIMEDOUT; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			last = errno;
			continue;
		}
		last = connect_one(fd, ai, a->deadline);
		if (last == 0) {
			k->c.fd = fd;
			break;
		}
		close(fd);
	}
	freeaddrinfo(res);
	if (last == ETIMEDOUT) {
		return timed_out(k, a, "connecting");
	}
	if (last != 0) {
		return attempt_fail(k, a, NKP_ERR_NET, "cannot connect: %s", strerror(last));
	}
	return NKP_OK;
}

static nkp_err handshake(nkpi_kmip *k, attempt *a)
{
	int rc;

	mbedtls_ssl_init(&k->c.ssl);
	k->c.open = true;
	if (mbedtls_ssl_setup(&k->c.ssl, &k->tls) != 0 ||
	    mbedtls_ssl_set_hostname(&k->c.ssl, a->s->is_ip ? NULL : a->s->host) != 0) {
		return attempt_fail(k, a, NKP_ERR_NOMEM, "cannot set up TLS");
	}
	mbedtls_ssl_set_bio(&k->c.ssl, &k->c, bio_send, bio_recv, NULL);
	k->verifying = k->c.srv;
	while ((rc = mbedtls_ssl_handshake(&k->c.ssl)) != 0) {
		uint32_t flags;

		if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
			short ev = rc == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT;
			nkp_err err = wait_fd(k->c.fd, ev, a->deadline);

			if (err == NKP_ERR_TIMEOUT) {
				return timed_out(k, a, "in the TLS handshake");
			}
			if (err != NKP_OK) {
				return attempt_fail(k, a, err, "TLS handshake: %s",
						    strerror(errno));
			}
			continue;
		}
		flags = mbedtls_ssl_get_verify_result(&k->c.ssl);
		if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 &&
		    flags != UINT32_MAX) {
			char info[160];
			int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);

			for (int i = 0; i < n; i++) {
				if (info[i] == '\n') {
					info[i] = i + 1 < n ? ';' : '\0';
				}
			}
			return attempt_fail(k, a, NKP_ERR_AUTH, "the server's certificate: %s",
					    info);
		}
		char msg[120];

		mbedtls_strerror(rc, msg, sizeof(msg));
		return attempt_fail(k, a, NKP_ERR_NET, "TLS handshake failed: %s", msg);
	}
	return NKP_OK;
}

static nkp_err connect_server(nkpi_kmip *k, attempt *a, size_t i)
{
	nkp_err err;

	conn_close(k);
	k->c.srv = i;
	err = tcp_connect(k, a);
	if (err == NKP_OK) {
		err = handshake(k, a);
	}
	return err;
}

/* mbedTLS I/O until it stops asking to wait. */
static int tls_io(nkpi_kmip *k, attempt *a, bool writing, uint8_t *buf, size_t len, nkp_err *err)
{
	for (;;) {
		int rc = writing ? mbedtls_ssl_write(&k->c.ssl, buf, len)
				 : mbedtls_ssl_read(&k->c.ssl, buf, len);

		if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) {
			return rc;
		}
		*err = wait_fd(k->c.fd, rc == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT,
			       a->deadline);
		if (*err != NKP_OK) {
			return rc;
		}
	}
}

static nkp_err io_fail(nkpi_kmip *k, attempt *a, int rc, nkp_err err, const char *phase)
{
	char msg[120];

	if (err == NKP_ERR_TIMEOUT) {
		return timed_out(k, a, phase);
	}
	if (rc == 0 || rc == MBEDTLS_ERR_SSL_CONN_EOF || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
		return attempt_fail(k, a, NKP_ERR_NET, "closed the connection %s", phase);
	}
	mbedtls_strerror(rc, msg, sizeof(msg));
	return attempt_fail(k, a, NKP_ERR_NET, "%s %s", msg, phase);
}

/* Sends `req` and reads one whole message into k->resp. */
static nkp_err exchange(nkpi_kmip *k, attempt *a, const uint8_t *req, size_t req_len,
			size_t *resp_len)
{
	size_t done = 0, total = NKPI_TTLV_HEADER;
	nkp_err err = NKP_OK;

	while (done < req_len) {
		int rc = tls_io(k, a, true, (uint8_t *)req + done, req_len - done, &err);

		if (rc <= 0) {
			return io_fail(k, a, rc, err, "sending the request");
		}
		done += (size_t)rc;
	}
	done = 0;
	while (done < total) {
		int rc = tls_io(k, a, false, k->resp + done, total - done, &err);

		if (rc <= 0) {
			return io_fail(k, a, rc, err, "waiting for the answer");
		}
		a->got_answer = true;
		done += (size_t)rc;
		if (total == NKPI_TTLV_HEADER && done == total) {
			err = nkpi_ttlv_message_size(k->resp, RESPONSE_MAX, &total);
			if (err == NKP_ERR_TOO_LARGE) {
				return attempt_fail(k, a, NKP_ERR_TOO_LARGE,
						    "an answer over %u bytes", RESPONSE_MAX);
			}
			if (err != NKP_OK) {
				return attempt_fail(k, a, NKP_ERR_PARSE, "a malformed answer");
			}
		}
	}
	*resp_len = total;
	return NKP_OK;
}

/* ---- operations ---- */

typedef nkp_err (*reader)(const nkpi_kmip_result *r, void *arg);

static void note_error(nkpi_kmip *k, const server *s, const char *what)
{
	size_t used = strlen(k->last_error);

	snprintf(k->last_error + used, sizeof(k->last_error) - used, "%s%s: %s",
		 used != 0 ? "; " : "", s->url, what);
}

static void server_failed(nkpi_kmip *k, server *s)
{
	s->reachable = false;
	s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_MIN_MS : s->backoff_ms * 2;
	if (s->backoff_ms > BACKOFF_MAX_MS) {
		s->backoff_ms = BACKOFF_MAX_MS;
	}
	s->next_try_ms = nkpi_mono_ms() + s->backoff_ms;
	note_error(k, s, s->error);
}

/* The servers to try, in order: those not backing off; when all are, the
 * one due first. */
static size_t order(const nkpi_kmip *k, size_t out[NKPI_KMIP_SERVERS_MAX])
{
	uint64_t now = nkpi_mono_ms();
	size_t n = 0, soonest = 0;

	for (size_t i = 0; i < k->n_servers; i++) {
		if (k->servers[i].next_try_ms <= now) {
			out[n++] = i;
		}
		if (k->servers[i].next_try_ms < k->servers[soonest].next_try_ms) {
			soonest = i;
		}
	}
	if (n == 0) {
		out[n++] = soonest;
	}
	return n;
}

/* The kept connection has nothing unread: no answer the server sent
 * unasked (which the next request would take for its own), no close. */
static bool conn_idle(nkpi_kmip *k)
{
	struct pollfd p = {.fd = k->c.fd, .events = POLLIN};

	return mbedtls_ssl_get_bytes_avail(&k->c.ssl) == 0 &&
	       mbedtls_ssl_check_pending(&k->c.ssl) == 0 && poll(&p, 1, 0) == 0;
}

/* Operations that change nothing: sent again, they do no harm. */
static bool reads_only(uint32_t op)
{
	return op == NKPI_KMIP_OP_DISCOVER_VERSIONS || op == NKPI_KMIP_OP_GET ||
	       op == NKPI_KMIP_OP_GET_ATTRIBUTES || op == NKPI_KMIP_OP_LOCATE;
}

/* One request `op` to server i: a kept connection first (if idle), a fresh
 * one if the kept one turns out closed before any answer and `op` only
 * reads (a Create the server carried out before closing must not be
 * carried out twice). */
static nkp_err try_server(nkpi_kmip *k, size_t i, uint32_t op, const uint8_t *req, size_t len,
			  size_t *resp_len)
{
	attempt a = {.s = &k->servers[i]};
	nkp_err err;

	a.deadline = nkpi_mono_ms() + k->timeout_ms;
	a.reused = k->c.open && k->c.srv == i && conn_idle(k);
	err = a.reused ? NKP_OK : connect_server(k, &a, i);
	if (err == NKP_OK) {
		err = exchange(k, &a, req, len, resp_len);
	}
	if (err == NKP_ERR_NET && a.reused && !a.got_answer && reads_only(op)) {
		a.reused = false;
		err = connect_server(k, &a, i);
		if (err == NKP_OK) {
			err = exchange(k, &a, req, len, resp_len);
		}
	}
	return err;
}

static void server_answered(server *s)
{
	s->reachable = true;
	s->backoff_ms = 0;
	s->next_try_ms = 0;
	s->error[0] = '\0';
}

static nkp_err refused(nkpi_kmip *k, const server *s, const nkpi_kmip_result *r)
{
	char buf[32], what[NKPI_KMIP_ERROR_MAX];

	snprintf(what, sizeof(what), "%s%s%s", nkpi_kmip_reason_name(r->reason, buf, sizeof(buf)),
		 r->message[0] != '\0' ? ": " : "", r->message);
	note_error(k, s, what);
	return nkpi_kmip_result_err(r);
}

/* The request in `e` to the servers in order (or only to server *only),
 * until one answers. */
static nkp_err call_at(nkpi_kmip *k, uint32_t op, nkpi_ttlv_enc *e, reader rd, void *arg,
		       const size_t *only)
{
	size_t idx[NKPI_KMIP_SERVERS_MAX], n, resp_len = 0;
	const uint8_t *req;
	size_t req_len;
	nkp_err err = nkpi_ttlv_enc_finish(e, &req, &req_len);

	k->last_error[0] = '\0';
	if (err != NKP_OK) {
		nkpi_ttlv_enc_fini(e);
		return err;
	}
	if (only != NULL) {
		idx[0] = *only;
		n = 1;
	} else {
		n = order(k, idx);
	}
	err = NKP_ERR_NET;
	for (size_t j = 0; j < n; j++) {
		server *s = &k->servers[idx[j]];
		nkpi_kmip_result r;

		err = try_server(k, idx[j], op, req, req_len, &resp_len);
		if (err == NKP_OK) {
			err = nkpi_kmip_parse_response(k->resp, resp_len, RESPONSE_MAX, op, &r);
			if (err != NKP_OK) {
				snprintf(s->error, sizeof(s->error), "a malformed answer");
				conn_close(k);
			}
		}
		if (err != NKP_OK) {
			sodium_memzero(k->resp, resp_len);
			server_failed(k, s);
			continue;
		}
		server_answered(s);
		k->last_server = idx[j];
		err = r.status == NKPI_KMIP_STATUS_SUCCESS ? rd(&r, arg) : refused(k, s, &r);
		if (err == NKP_ERR_PARSE) {
			note_error(k, s, "a malformed answer");
		}
		sodium_memzero(k->resp, resp_len);
		break;
	}
	nkpi_ttlv_enc_fini(e);
	return err;
}

static nkp_err call(nkpi_kmip *k, uint32_t op, nkpi_ttlv_enc *e, reader rd, void *arg)
{
	return call_at(k, op, e, rd, arg, NULL);
}

static nkp_err read_nothing(const nkpi_kmip_result *r, void *arg)
{
	(void)r;
	(void)arg;
	return NKP_OK;
}

typedef struct id_out {
	char id[NKPI_KMIP_ID_MAX];
} id_out;

static nkp_err read_id(const nkpi_kmip_result *r, void *arg)
{
	return nkpi_kmip_parse_id(r, ((id_out *)arg)->id);
}

static void enc(nkpi_ttlv_enc *e)
{
	nkpi_ttlv_enc_init(e, NKPI_TTLV_MAX_MESSAGE);
}

typedef struct versions_out {
	nkpi_kmip_version v[NKPI_KMIP_VERSIONS_MAX];
	size_t n;
} versions_out;

static nkp_err read_versions(const nkpi_kmip_result *r, void *arg)
{
	versions_out *o = arg;

	return nkpi_kmip_parse_versions(r, o->v, NKPI_KMIP_VERSIONS_MAX, &o->n);
}

nkp_err nkpi_kmip_discover(nkpi_kmip *k, nkpi_kmip_version *v, size_t max, size_t *n)
{
	nkpi_ttlv_enc e;
	versions_out o = {0};
	nkp_err err;

	enc(&e);
	nkpi_kmip_req_discover(&e);
	err = call(k, NKPI_KMIP_OP_DISCOVER_VERSIONS, &e, read_versions, &o);
	if (err == NKP_OK) {
		*n = o.n < max ? o.n : max;
		memcpy(v, o.v, *n * sizeof(*v));
	}
	return err;
}

nkp_err nkpi_kmip_probe(nkpi_kmip *k, size_t i)
{
	nkpi_ttlv_enc e;
	versions_out o = {0};

	if (i >= k->n_servers) {
		return NKP_ERR_INVALID;
	}
	enc(&e);
	nkpi_kmip_req_discover(&e);
	return call_at(k, NKPI_KMIP_OP_DISCOVER_VERSIONS, &e, read_versions, &o, &i);
}

nkp_err nkpi_kmip_create(nkpi_kmip *k, const char *name, char id[NKPI_KMIP_ID_MAX])
{
	nkpi_ttlv_enc e;
	id_out o;
	nkp_err err;

	enc(&e);
	nkpi_kmip_req_create(&e, name);
	err = call(k, NKPI_KMIP_OP_CREATE, &e, read_id, &o);
	if (err == NKP_OK) {
		memcpy(id, o.id, sizeof(o.id));
	}
	return err;
}

nkp_err nkpi_kmip_add_attribute(nkpi_kmip *k, const char *id, const nkpi_kmip_attr *a)
{
	nkpi_ttlv_enc e;

	enc(&e);
	nkpi_kmip_req_add_attribute(&e, id, a);
	return call(k, NKPI_KMIP_OP_ADD_ATTRIBUTE, &e, read_nothing, NULL);
}

nkp_err nkpi_kmip_activate(nkpi_kmip *k, const char *id)
{
	nkpi_ttlv_enc e;

	enc(&e);
	nkpi_kmip_req_id(&e, NKPI_KMIP_OP_ACTIVATE, id);
	return call(k, NKPI_KMIP_OP_ACTIVATE, &e, read_nothing, NULL);
}

nkp_err nkpi_kmip_destroy(nkpi_kmip *k, const char *id)
{
	nkpi_ttlv_enc e;

	enc(&e);
	nkpi_kmip_req_id(&e, NKPI_KMIP_OP_DESTROY, id);
	return call(k, NKPI_KMIP_OP_DESTROY, &e, read_nothing, NULL);
}

nkp_err nkpi_kmip_revoke(nkpi_kmip *k, const char *id, uint32_t code)
{
	nkpi_ttlv_enc e;

	enc(&e);
	nkpi_kmip_req_revoke(&e, id, code);
	return call(k, NKPI_KMIP_OP_REVOKE, &e, read_nothing, NULL);
}

typedef struct key_out {
	const char *id;
	uint8_t *key;
} key_out;

static nkp_err read_key(const nkpi_kmip_result *r, void *arg)
{
	const key_out *o = arg;

	return nkpi_kmip_parse_key(r, o->id, o->key);
}

nkp_err nkpi_kmip_get(nkpi_kmip *k, const char *id, uint8_t key[static NKPI_KMIP_KEY_BYTES])
{
	nkpi_ttlv_enc e;
	key_out o = {id, key};

	enc(&e);
	nkpi_kmip_req_get(&e, id);
	return call(k, NKPI_KMIP_OP_GET, &e, read_key, &o);
}

typedef struct state_out {
	const char *id;
	uint32_t state;
} state_out;

static nkp_err read_state(const nkpi_kmip_result *r, void *arg)
{
	state_out *o = arg;

	return nkpi_kmip_parse_state(r, o->id, &o->state);
}

nkp_err nkpi_kmip_get_state(nkpi_kmip *k, const char *id, uint32_t *state)
{
	nkpi_ttlv_enc e;
	state_out o = {id, 0};
	nkp_err err;

	enc(&e);
	nkpi_kmip_req_get_state(&e, id);
	err = call(k, NKPI_KMIP_OP_GET_ATTRIBUTES, &e, read_state, &o);
	if (err == NKP_OK) {
		*state = o.state;
	}
	return err;
}

typedef struct locate_out {
	char (*ids)[NKPI_KMIP_ID_MAX];
	size_t max, n;
} locate_out;

static nkp_err read_locate(const nkpi_kmip_result *r, void *arg)
{
	locate_out *o = arg;

	return nkpi_kmip_parse_locate(r, o->ids, o->max, &o->n);
}

nkp_err nkpi_kmip_locate(nkpi_kmip *k, const char *name, char (*ids)[NKPI_KMIP_ID_MAX], size_t max,
			 size_t *n)
{
	nkpi_ttlv_enc e;
	locate_out o = {ids, max, 0};
	nkp_err err;

	enc(&e);
	nkpi_kmip_req_locate(&e, name, (uint32_t)max);
	err = call(k, NKPI_KMIP_OP_LOCATE, &e, read_locate, &o);
	if (err == NKP_OK) {
		*n = o.n;
	}
	return err;
}
