/* Test helpers for the host plugin: temporary state directories and a fake
 * management service that builds, seals and opens protocol messages. */
#ifndef NKP_HOSTD_TEST_UTIL_H
#define NKP_HOSTD_TEST_UTIL_H

#include <nkp/channel.h>
#include <nkp/hostd.h>

#include "session.h"
#include "wire.pb-c.h"

typedef struct tu_version {
	uint32_t version;
	nkp_version_state state;
	uint8_t key[NKP_KEY_BYTES];
} tu_version;

typedef struct tu_provider {
	uint8_t id[NKP_ID_BYTES];
	const char *name;
	bool is_default;
	bool backed_up;
	bool tpm_only; /* a trusted provider */
	size_t n_versions;
	tu_version versions[4];
} tu_provider;

typedef struct tu_service {
	nkp_identity *id;
	nkpi_session *sess; /* to the host (initiator) */
	uint8_t boot[16];   /* the host boot the session was made with */
} tu_service;

/* A fresh directory under /tmp; free() the result after tu_rmdir(). */
char *tu_tmpdir(void);
void tu_rmdir(const char *dir);

void tu_service_new(tu_service *svc);
void tu_service_free(tu_service *svc);

/* Enrols DIR with svc's key and opens it; svc's session points at the host. */
nkp_hostd *tu_host(const char *dir, tu_service *svc);
/* The same with the caller's settings (its state_dir, its tpm). */
nkp_hostd *tu_host_cfg(const nkp_hostd_config *cfg, tu_service *svc);
nkp_hostd *tu_reopen(const char *dir);

/* A provider with one active version of random key. */
void tu_provider_init(tu_provider *p, const char *name, bool is_default, bool backed_up);

/* Sends a message to h in a Transport (after a handshake if needed) and
 * returns the opened reply (NULL if h dropped the frame without an
 * answer; its error then in *plain). */
Nkp__Wire__Message *tu_send(tu_service *svc, nkp_hostd *h, const Nkp__Wire__Message *m,
			    nkp_err *plain);
Nkp__Wire__Message *tu_hello(tu_service *svc, nkp_hostd *h);
/* Builds a Push. A NULL boot nonce means h's current one (via Hello). */
/* The epoch and resync flag of the pushes tu_push makes. */
extern uint64_t tu_epoch;
extern bool tu_resync;
Nkp__Wire__Message *tu_push(tu_service *svc, nkp_hostd *h, uint64_t generation,
			    const uint8_t *boot_nonce, const tu_provider *p, size_t n);
/* The serialized push frame, for replays. */
uint8_t *tu_push_frame(tu_service *svc, nkp_hostd *h, uint64_t generation, const tu_provider *p,
		       size_t n, size_t *len);
/* A Transport frame of `m`'s bytes under svc's session (handshakes first
 * if needed). */
uint8_t *tu_seal(tu_service *svc, nkp_hostd *h, const uint8_t *buf, size_t blen, size_t *len);
/* Runs a handshake with h now. */
void tu_handshake(tu_service *svc, nkp_hostd *h);
/* Hands a raw frame to h; returns the reply (opened) or NULL with *plain
 * when h dropped it. */
Nkp__Wire__Message *tu_raw(tu_service *svc, nkp_hostd *h, const uint8_t *frame, size_t len,
			   nkp_err *plain);
void tu_msg_free(Nkp__Wire__Message *m);

#endif
