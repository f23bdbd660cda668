/* A KMIP 1.4 client: the messages of kmip.h over mutual TLS (mbedTLS, the
 * TLS library nng links) to one or more servers of a "KMS cluster".
 *
 * Servers are tried in the order given; one that fails (cannot be
 * reached, TLS refused, no answer within the deadline, a malformed
 * answer) is marked unreachable with the reason and left alone for a
 * backoff (1 s doubling to 60 s) while another answers; when every server
 * is backing off, the one due first is tried anyway. A server that answers
 * with a KMIP failure (Item Not Found, ...) answered: that is the result,
 * not a reason to ask another.
 *
 * Every operation has one deadline for connecting, the TLS handshake,
 * sending and receiving, enforced here with poll(2): a server that accepts
 * and then says nothing, or stalls in the handshake, costs that deadline
 * and its connection is closed. A connection is kept for the next request
 * to the same server; one that the server closed meanwhile is replaced
 * once.
 *
 * The server's certificate must chain to the configured CA and name the
 * host of its URL (a DNS name in subjectAltName or CN; for an IP literal,
 * an iPAddress in subjectAltName). The client presents its certificate and
 * key. TLS 1.2 or later, ECDHE with an AEAD cipher only.
 *
 * A client belongs to one thread at a time; nothing here locks. Key bytes
 * are returned only into the caller's buffer; response buffers are locked
 * memory, wiped after each answer. */
#ifndef NKP_KMIP_CLIENT_H
#define NKP_KMIP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kmip.h"

#define NKPI_KMIP_SERVERS_MAX 8u
#define NKPI_KMIP_DEFAULT_PORT 5696u
#define NKPI_KMIP_DEFAULT_TIMEOUT_MS 10000u
/* A server's last error, as shown to operators. */
#define NKPI_KMIP_ERROR_MAX 200u

typedef struct nkpi_kmip_config {
	const char *const *servers; /* "kmip://HOST[:PORT]", HOST a name, IPv4 or [IPv6] */
	size_t n_servers;	    /* 1 .. NKPI_KMIP_SERVERS_MAX */
	/* PEM text (a terminating NUL is not needed, nor counted): the CA(s)
	 * server certificates chain to, this client's certificate (chain),
	 * its private key (a secret: the caller wipes its copy). */
	const uint8_t *ca_pem, *cert_pem, *key_pem;
	size_t ca_len, cert_len, key_len;
	unsigned timeout_ms; /* per operation and server; 0: the default */
} nkpi_kmip_config;

typedef struct nkpi_kmip nkpi_kmip;

/** What is known of one server. */
typedef struct nkpi_kmip_server_status {
	char url[96];
	bool reachable;			 /* its last attempt got an answer */
	char error[NKPI_KMIP_ERROR_MAX]; /* why the last attempt failed, "" */
} nkpi_kmip_server_status;

/** A client for `cfg` (copied; the key is parsed into mbedTLS's memory).
 * NKP_ERR_INVALID (no server, too many, a URL that does not parse),
 * NKP_ERR_PARSE (a CA, certificate or key that is not PEM, a key that does
 * not match the certificate: *why says which), NKP_ERR_NOMEM.
 * `why` (may be NULL) gets a text on failure. */
NKP_NODISCARD nkp_err nkpi_kmip_new(const nkpi_kmip_config *cfg, nkpi_kmip **out, char *why,
				    size_t why_len);
/** Closes the connection and frees `k`. Accepts NULL. */
void nkpi_kmip_free(nkpi_kmip *k);

size_t nkpi_kmip_server_count(const nkpi_kmip *k);
void nkpi_kmip_server_get(const nkpi_kmip *k, size_t i, nkpi_kmip_server_status *out);
/** Why the last operation failed ("kmip://h:p: timed out after 1500 ms
 * waiting for the answer; kmip://...: ..."), or the server's Result Reason
 * and Message; "" after a success. Never holds key bytes. */
const char *nkpi_kmip_last_error(const nkpi_kmip *k);
/** The index of the server that answered the last operation. */
size_t nkpi_kmip_last_server(const nkpi_kmip *k);

/* The operations. Errors: NKP_ERR_NET / NKP_ERR_TIMEOUT (no server
 * answered: last_error says why for each), NKP_ERR_PARSE (a malformed
 * answer from the last one tried), or the server's refusal mapped by
 * nkpi_kmip_result_err() (NKP_ERR_NOT_FOUND, NKP_ERR_PERM,
 * NKP_ERR_REFUSED). Out-parameters are written only on success. */
NKP_NODISCARD nkp_err nkpi_kmip_discover(nkpi_kmip *k, nkpi_kmip_version *v, size_t max, size_t *n);
/** Asks server `i` alone whether it answers (Discover Versions), whatever
 * its backoff; its status says the result. */
NKP_NODISCARD nkp_err nkpi_kmip_probe(nkpi_kmip *k, size_t i);
NKP_NODISCARD nkp_err nkpi_kmip_create(nkpi_kmip *k, const char *name, char id[NKPI_KMIP_ID_MAX]);
NKP_NODISCARD nkp_err nkpi_kmip_add_attribute(nkpi_kmip *k, const char *id,
					      const nkpi_kmip_attr *a);
NKP_NODISCARD nkp_err nkpi_kmip_activate(nkpi_kmip *k, const char *id);
/** The key of object `id` into `key` (the caller's locked memory). */
NKP_NODISCARD nkp_err nkpi_kmip_get(nkpi_kmip *k, const char *id,
				    uint8_t key[static NKPI_KMIP_KEY_BYTES]);
NKP_NODISCARD nkp_err nkpi_kmip_get_state(nkpi_kmip *k, const char *id, uint32_t *state);
NKP_NODISCARD nkp_err nkpi_kmip_locate(nkpi_kmip *k, const char *name,
				       char (*ids)[NKPI_KMIP_ID_MAX], size_t max, size_t *n);
NKP_NODISCARD nkp_err nkpi_kmip_revoke(nkpi_kmip *k, const char *id, uint32_t code);
NKP_NODISCARD nkp_err nkpi_kmip_destroy(nkpi_kmip *k, const char *id);

/** Parses "kmip://HOST[:PORT]" into `host` (brackets removed) and *port.
 * NKP_ERR_INVALID otherwise. Exposed for tests. */
NKP_NODISCARD nkp_err nkpi_kmip_parse_url(const char *url, char *host, size_t host_len,
					  uint16_t *port);

#endif
