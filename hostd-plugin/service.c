/* The host half of the sync protocol (docs/PROTOCOL.md): HandshakeInit ->
 * HandshakeResp, then in Transport frames Hello -> Status, Push -> PushAck
 * or Refusal. Anything that does not authenticate gets no answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/channel.h>
#include <nkp/file.h>

#include "hostd-internal.h"

/* A reply about to be sealed. Holds no secret. */
typedef struct reply {
	Nkp__Wire__Message msg;
	Nkp__Wire__Status status;
	Nkp__Wire__PushAck ack;
	Nkp__Wire__Refusal refusal;
	uint8_t challenge[HOSTD_CHALLENGE_BYTES];
	uint8_t nonce[NKP_HOSTD_BOOT_NONCE_BYTES];
	char text[160];
	Nkp__Wire__VersionUsage **usage;
	size_t n_usage;
	nkpi_session_reply *rk; /* the request's reply key (a secret, not ours) */
} reply;

static void reply_init(nkp_hostd *h, reply *r, const ProtobufCBinaryData *challenge,
		       nkpi_session_reply *rk)
{
	memset(r, 0, sizeof(*r));
	r->rk = rk;
	nkp__wire__message__init(&r->msg);
	nkp__wire__status__init(&r->status);
	nkp__wire__push_ack__init(&r->ack);
	nkp__wire__refusal__init(&r->refusal);
	if (challenge != NULL && challenge->len == HOSTD_CHALLENGE_BYTES) {
		memcpy(r->challenge, challenge->data, HOSTD_CHALLENGE_BYTES);
	}
	memcpy(r->nonce, h->boot_nonce, sizeof(r->nonce));
}

static nkp_err reply_seal(nkp_hostd *h, reply *r, uint8_t **out, size_t *outlen)
{
	size_t len = nkp__wire__message__get_packed_size(&r->msg);
	uint8_t *buf = malloc(len + 1);
	nkp_err err = NKP_ERR_NOMEM;

	if (buf != NULL) {
		nkp__wire__message__pack(&r->msg, buf);
		err = nkpi_session_seal_reply(h->session, r->rk, buf, len, out, outlen);
		free(buf);
	}
	hstate_usage_free(r->usage, r->n_usage);
	r->usage = NULL;
	return err;
}

/* Refusal with our current boot nonce and applied generation, so the
 * service can correct itself; recorded as an event. */
static nkp_err refuse(nkp_hostd *h, reply *r, nkp_err code, uint64_t generation,
		      const char *why, uint8_t **out, size_t *outlen)
{
	snprintf(r->text, sizeof(r->text), "%s", why);
	r->refusal.challenge.data = r->challenge;
	r->refusal.challenge.len = HOSTD_CHALLENGE_BYTES;
	r->refusal.code = code;
	r->refusal.message = r->text;
	r->refusal.boot_nonce.data = r->nonce;
	r->refusal.boot_nonce.len = sizeof(r->nonce);
	r->refusal.applied_generation = generation;
	r->msg.body_case = NKP__WIRE__MESSAGE__BODY_REFUSAL;
	r->msg.refusal = &r->refusal;
	nkp_event(h->events, code == NKP_ERR_IO || code == NKP_ERR_NOSPC ? NKP_EV_STATE_WRITE_FAILED
									: NKP_EV_BAD_INPUT,
		  NULL, h->host_name, "service request refused: %s (%s)", why, nkp_strerror(code));
	return reply_seal(h, r, out, outlen);
}

static nkp_err on_hello(nkp_hostd *h, reply *r, uint8_t **out, size_t *outlen)
{
	nkp_err err;

	pthread_rwlock_rdlock(&h->lock);
	r->status.applied_generation = h->generation;
	err = hstate_usage(&h->state, &r->usage, &r->n_usage);
	pthread_rwlock_unlock(&h->lock);
	if (err != NKP_OK) {
		return err;
	}
	r->status.challenge.data = r->challenge;
	r->status.challenge.len = HOSTD_CHALLENGE_BYTES;
	r->status.boot_nonce.data = r->nonce;
	r->status.boot_nonce.len = sizeof(r->nonce);
	r->status.tpm = false;
	r->status.usage = r->usage;
	r->status.n_usage = r->n_usage;
	r->status.host_name = h->host_name;
	r->msg.body_case = NKP__WIRE__MESSAGE__BODY_STATUS;
	r->msg.status = &r->status;
	return reply_seal(h, r, out, outlen);
}

static uint64_t generation_now(nkp_hostd *h)
{
	uint64_t g;

	pthread_rwlock_rdlock(&h->lock);
	g = h->generation;
	pthread_rwlock_unlock(&h->lock);
	return g;
}

/* Under the exclusive lock: persist first, then swap. On failure the
 * old state stays, in memory and on disk. */
static nkp_err push_commit(nkp_hostd *h, uint64_t generation, hstate *fresh, uint64_t *applied)
{
	hstate old;
	nkp_err err;

	pthread_rwlock_wrlock(&h->lock);
	*applied = h->generation;
	if (generation <= h->generation) {
		err = NKP_ERR_REPLAY;
		goto out_unlock;
	}
	hstate_carry_usage(fresh, &h->state);
	err = hostd_save(h, fresh, generation);
	if (err != NKP_OK) {
		goto out_unlock;
	}
	old = h->state;
	h->state = *fresh;
	h->generation = generation;
	*fresh = old;
	*applied = generation;
out_unlock:
	pthread_rwlock_unlock(&h->lock);
	return err;
}

static nkp_err ack(nkp_hostd *h, reply *r, uint8_t **out, size_t *outlen)
{
	nkp_err err;

	pthread_rwlock_rdlock(&h->lock);
	r->ack.applied_generation = h->generation;
	err = hstate_usage(&h->state, &r->usage, &r->n_usage);
	pthread_rwlock_unlock(&h->lock);
	if (err != NKP_OK) {
		return err;
	}
	r->ack.challenge.data = r->challenge;
	r->ack.challenge.len = HOSTD_CHALLENGE_BYTES;
	r->ack.boot_nonce.data = r->nonce;
	r->ack.boot_nonce.len = sizeof(r->nonce);
	r->ack.usage = r->usage;
	r->ack.n_usage = r->n_usage;
	r->msg.body_case = NKP__WIRE__MESSAGE__BODY_PUSH_ACK;
	r->msg.push_ack = &r->ack;
	return reply_seal(h, r, out, outlen);
}

static nkp_err on_push(nkp_hostd *h, reply *r, const Nkp__Wire__Push *p, uint8_t **out,
		       size_t *outlen)
{
	hstate fresh = {0};
	uint64_t applied = generation_now(h);
	char why[128];
	nkp_err err;

	if (p->boot_nonce.len != NKP_HOSTD_BOOT_NONCE_BYTES ||
	    sodium_memcmp(p->boot_nonce.data, h->boot_nonce, NKP_HOSTD_BOOT_NONCE_BYTES) != 0) {
		return refuse(h, r, NKP_ERR_REPLAY, applied, "push for another boot of this host",
			      out, outlen);
	}
	if (p->generation <= applied) {
		snprintf(why, sizeof(why), "stale generation %llu (applied %llu)",
			 (unsigned long long)p->generation, (unsigned long long)applied);
		return refuse(h, r, NKP_ERR_REPLAY, applied, why, out, outlen);
	}
	err = hstate_validate(p->n_providers, p->providers);
	if (err != NKP_OK) {
		return refuse(h, r, err, applied, "invalid provider keys in push", out, outlen);
	}
	pthread_rwlock_rdlock(&h->lock);
	err = hstate_build(p->n_providers, p->providers, &h->state, &fresh);
	pthread_rwlock_unlock(&h->lock);
	if (err == NKP_OK) {
		err = push_commit(h, p->generation, &fresh, &applied);
	}
	hstate_fini(&fresh);
	if (err != NKP_OK) {
		snprintf(why, sizeof(why), "push of generation %llu not applied: %s",
			 (unsigned long long)p->generation, nkp_strerror(err));
		return refuse(h, r, err, applied, why, out, outlen);
	}
	nkp_event(h->events, NKP_EV_KEYS_APPLIED, NULL, h->host_name,
		  "applied generation %llu: %zu providers", (unsigned long long)p->generation,
		  p->n_providers);
	return ack(h, r, out, outlen);
}

/* `m` is the unpacked message (NULL if it could not be unpacked), freed
 * here with `alloc`, this thread's arena it was unpacked with. */
static nkp_err dispatch(nkp_hostd *h, Nkp__Wire__Message *m, ProtobufCAllocator *alloc,
			nkpi_session_reply *rk, uint8_t **out, size_t *outlen)
{
	reply r;
	nkp_err err;

	if (m == NULL || nkpi_has_unknown(&m->base)) {
		reply_init(h, &r, NULL, rk);
		err = refuse(h, &r, NKP_ERR_PARSE, generation_now(h), "unreadable message", out,
			     outlen);
	} else if (m->body_case == NKP__WIRE__MESSAGE__BODY_HELLO && m->hello != NULL) {
		reply_init(h, &r, &m->hello->challenge, rk);
		err = on_hello(h, &r, out, outlen);
	} else if (m->body_case == NKP__WIRE__MESSAGE__BODY_PUSH && m->push != NULL) {
		reply_init(h, &r, &m->push->challenge, rk);
		err = on_push(h, &r, m->push, out, outlen);
	} else {
		reply_init(h, &r, NULL, rk);
		err = refuse(h, &r, NKP_ERR_PARSE, generation_now(h), "unexpected message", out,
			     outlen);
	}
	if (m != NULL) {
		nkp__wire__message__free_unpacked(m, alloc);
	}
	return err;
}

/* Every frame that does not authenticate (or is refused before it could)
 * ends here: no reply, no event per frame, only a count. */
static void dropped(nkp_hostd *h, nkp_err why)
{
	(void)why;
	atomic_fetch_add(&h->dropped, 1);
}

nkp_err nkp_hostd_handle_frame(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **reply_out,
			       size_t *replylen)
{
	ProtobufCAllocator *alloc;
	Nkp__Wire__Message *m;
	nkpi_session_reply rk;
	uint8_t *msg;
	size_t msglen = 0;
	nkp_err err;

	if (h == NULL || reply_out == NULL || replylen == NULL || (req == NULL && len != 0)) {
		return NKP_ERR_INVALID;
	}
	/* The plaintext (keys, for a push) lives in this thread's locked
	 * scratch buffer only until it is unpacked into this thread's locked
	 * arena: no sodium_malloc or malloc per message. Both are had before
	 * the session moves on. A HandshakeInit costs a hash (mac1) before
	 * any X25519. */
	msg = nkpi_scratch(len + 1);
	alloc = nkpi_arena_allocator();
	if (msg == NULL || alloc == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = nkpi_session_open_request(h->session, req, len, msg, len + 1, &msglen, &rk,
					reply_out, replylen);
	if (err != NKP_OK) {
		dropped(h, err);
		return err;
	}
	if (*reply_out != NULL) {
		return NKP_OK; /* a HandshakeResp */
	}
	m = nkp__wire__message__unpack(alloc, msglen, msg);
	sodium_memzero(msg, msglen);
	err = dispatch(h, m, alloc, &rk, reply_out, replylen);
	nkpi_session_reply_wipe(&rk); /* on paths that sealed no reply */
	return err;
}
