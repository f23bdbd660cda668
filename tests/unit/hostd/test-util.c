#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "hostd-internal.h"
#include "test-util.h"

char *tu_tmpdir(void)
{
	char *t = strdup("/tmp/nkp-hostd-test-XXXXXX");

	cr_assert_not_null(mkdtemp(t));
	return t;
}

void tu_rmdir(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

void tu_service_new(tu_service *svc)
{
	cr_assert_eq(nkp_init(), NKP_OK);
	memset(svc, 0, sizeof(*svc));
	cr_assert_eq(nkp_identity_generate(&svc->id), NKP_OK);
}

void tu_service_free(tu_service *svc)
{
	nkpi_session_free(svc->sess);
	nkp_identity_free(svc->id);
	memset(svc, 0, sizeof(*svc));
}

nkp_hostd *tu_host(const char *dir, tu_service *svc)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "h1"};

	return tu_host_cfg(&cfg, svc);
}

nkp_hostd *tu_host_cfg(const nkp_hostd_config *cfg, tu_service *svc)
{
	uint8_t pub[32];
	nkp_hostd *h = NULL;

	cr_assert_eq(nkp_hostd_init(cfg, nkp_identity_public(svc->id), pub), NKP_OK);
	cr_assert_eq(nkp_hostd_open(cfg, &h), NKP_OK);
	cr_assert_eq(memcmp(pub, nkp_hostd_public_key(h), 32), 0);
	nkpi_session_free(svc->sess);
	cr_assert_eq(nkpi_session_new(svc->id, pub, false, &svc->sess), NKP_OK);
	return h;
}

nkp_hostd *tu_reopen(const char *dir)
{
	nkp_hostd_config cfg = {.state_dir = dir, .host_name = "h1"};
	nkp_hostd *h = NULL;

	cr_assert_eq(nkp_hostd_open(&cfg, &h), NKP_OK);
	return h;
}

void tu_provider_init(tu_provider *p, const char *name, bool is_default, bool backed_up)
{
	memset(p, 0, sizeof(*p));
	randombytes_buf(p->id, sizeof(p->id));
	p->name = name;
	p->is_default = is_default;
	p->backed_up = backed_up;
	p->n_versions = 1;
	p->versions[0].version = 1;
	p->versions[0].state = NKP_VERSION_ACTIVE;
	randombytes_buf(p->versions[0].key, NKP_KEY_BYTES);
}

Nkp__Wire__Message *tu_raw(tu_service *svc, nkp_hostd *h, const uint8_t *frame, size_t len,
			   nkp_err *plain)
{
	uint8_t *reply = NULL, *msg = NULL;
	size_t replylen = 0, msglen = 0;
	nkp_err err;
	Nkp__Wire__Message *m = NULL;

	err = nkp_hostd_handle_frame(h, frame, len, &reply, &replylen);
	if (err != NKP_OK) {
		cr_assert_not_null(plain, "frame dropped: %s", nkp_strerror(err));
		cr_assert_null(reply);
		*plain = err;
		return NULL;
	}
	msg = malloc(replylen + 1);
	err = nkpi_session_open_reply(svc->sess, reply, replylen, msg, replylen + 1, &msglen);
	nkp_hostd_buf_free(reply, replylen);
	cr_assert_eq(err, NKP_OK, "reply does not open: %s", nkp_strerror(err));
	m = nkp__wire__message__unpack(NULL, msglen, msg);
	sodium_memzero(msg, msglen);
	free(msg);
	cr_assert_not_null(m);
	return m;
}

void tu_handshake(tu_service *svc, nkp_hostd *h)
{
	uint8_t *init = NULL, *resp = NULL;
	size_t ilen = 0, rlen = 0;

	cr_assert_eq(nkpi_session_handshake_init(svc->sess, &init, &ilen), NKP_OK);
	cr_assert_eq(nkp_hostd_handle_frame(h, init, ilen, &resp, &rlen), NKP_OK);
	cr_assert_eq(nkpi_session_handshake_finish(svc->sess, resp, rlen), NKP_OK);
	memcpy(svc->boot, h->boot_nonce, sizeof(svc->boot));
	free(init);
	nkp_hostd_buf_free(resp, rlen);
}

uint8_t *tu_seal(tu_service *svc, nkp_hostd *h, const uint8_t *buf, size_t blen, size_t *len)
{
	uint8_t *frame = NULL;

	/* A reopened host forgot the session, as nkpd learns from its
	 * reconnected pipe. */
	if (memcmp(svc->boot, h->boot_nonce, sizeof(svc->boot)) != 0) {
		nkpi_session_reset(svc->sess);
	}
	if (nkpi_session_needs_handshake(svc->sess)) {
		tu_handshake(svc, h);
	}
	cr_assert_eq(nkpi_session_seal_request(svc->sess, buf, blen, &frame, len), NKP_OK);
	return frame;
}

Nkp__Wire__Message *tu_send(tu_service *svc, nkp_hostd *h, const Nkp__Wire__Message *m,
			    nkp_err *plain)
{
	size_t len = nkp__wire__message__get_packed_size(m), flen = 0;
	uint8_t *buf = malloc(len + 1), *frame = NULL;
	Nkp__Wire__Message *r;

	nkp__wire__message__pack(m, buf);
	frame = tu_seal(svc, h, buf, len, &flen);
	free(buf);
	r = tu_raw(svc, h, frame, flen, plain);
	free(frame);
	return r;
}

Nkp__Wire__Message *tu_hello(tu_service *svc, nkp_hostd *h)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	uint8_t challenge[16];
	Nkp__Wire__Message *r;

	randombytes_buf(challenge, sizeof(challenge));
	hello.challenge.data = challenge;
	hello.challenge.len = sizeof(challenge);
	m.body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m.hello = &hello;
	r = tu_send(svc, h, &m, NULL);
	cr_assert_eq(r->body_case, NKP__WIRE__MESSAGE__BODY_STATUS);
	cr_assert_eq(r->status->challenge.len, 16);
	cr_assert_eq(memcmp(r->status->challenge.data, challenge, 16), 0);
	return r;
}

/* Builds a serialized Push message. */
uint64_t tu_epoch = UINT64_C(0x5eed5eed5eed5eed);
bool tu_resync = false;

static uint8_t *push_bytes(uint64_t generation, const uint8_t nonce[16], const tu_provider *p,
			   size_t n, size_t *len)
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	Nkp__Wire__ProviderKeys pk[8], *pp[8];
	Nkp__Wire__VersionKey vk[8][4], *vp[8][4];
	uint8_t challenge[16];
	uint8_t *buf;

	cr_assert_leq(n, 8);
	randombytes_buf(challenge, sizeof(challenge));
	for (size_t i = 0; i < n; i++) {
		nkp__wire__provider_keys__init(&pk[i]);
		pk[i].id.data = (uint8_t *)p[i].id;
		pk[i].id.len = NKP_ID_BYTES;
		pk[i].name = (char *)p[i].name;
		pk[i].is_default = p[i].is_default;
		pk[i].backed_up = p[i].backed_up;
		pk[i].tpm_only = p[i].tpm_only;
		for (size_t j = 0; j < p[i].n_versions; j++) {
			nkp__wire__version_key__init(&vk[i][j]);
			vk[i][j].version = p[i].versions[j].version;
			vk[i][j].state = p[i].versions[j].state;
			vk[i][j].key.data = (uint8_t *)p[i].versions[j].key;
			vk[i][j].key.len = NKP_KEY_BYTES;
			vp[i][j] = &vk[i][j];
		}
		pk[i].n_versions = p[i].n_versions;
		pk[i].versions = vp[i];
		pp[i] = &pk[i];
	}
	push.challenge.data = challenge;
	push.challenge.len = 16;
	push.boot_nonce.data = (uint8_t *)nonce;
	push.boot_nonce.len = 16;
	ds.epoch = tu_epoch;
	ds.counter = generation;
	ds.n_providers = n;
	ds.providers = pp;
	push.desired.len = nkp__wire__desired_state__get_packed_size(&ds);
	push.desired.data = malloc(push.desired.len + 1);
	nkp__wire__desired_state__pack(&ds, push.desired.data);
	push.resync = tu_resync;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m.push = &push;
	*len = nkp__wire__message__get_packed_size(&m);
	buf = malloc(*len + 1);
	nkp__wire__message__pack(&m, buf);
	free(push.desired.data);
	return buf;
}

static void current_nonce(tu_service *svc, nkp_hostd *h, uint8_t nonce[16])
{
	Nkp__Wire__Message *st = tu_hello(svc, h);

	cr_assert_eq(st->status->boot_nonce.len, 16);
	memcpy(nonce, st->status->boot_nonce.data, 16);
	tu_msg_free(st);
}

uint8_t *tu_push_frame(tu_service *svc, nkp_hostd *h, uint64_t generation, const tu_provider *p,
		       size_t n, size_t *len)
{
	uint8_t nonce[16], *buf, *frame = NULL;
	size_t blen = 0;

	current_nonce(svc, h, nonce);
	buf = push_bytes(generation, nonce, p, n, &blen);
	frame = tu_seal(svc, h, buf, blen, len);
	free(buf);
	return frame;
}

Nkp__Wire__Message *tu_push(tu_service *svc, nkp_hostd *h, uint64_t generation,
			    const uint8_t *boot_nonce, const tu_provider *p, size_t n)
{
	uint8_t nonce[16], *buf, *frame = NULL;
	size_t blen = 0, flen = 0;
	Nkp__Wire__Message *r;

	if (boot_nonce == NULL) {
		current_nonce(svc, h, nonce);
	} else {
		memcpy(nonce, boot_nonce, 16);
	}
	buf = push_bytes(generation, nonce, p, n, &blen);
	frame = tu_seal(svc, h, buf, blen, &flen);
	free(buf);
	r = tu_raw(svc, h, frame, flen, NULL);
	free(frame);
	return r;
}

void tu_msg_free(Nkp__Wire__Message *m)
{
	if (m != NULL) {
		nkp__wire__message__free_unpacked(m, NULL);
	}
}
