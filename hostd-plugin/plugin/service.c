/* The host half of the sync protocol (docs/PROTOCOL.md): HandshakeInit ->
 * HandshakeResp, then in Transport frames Hello -> Status, Push -> PushAck
 * or Refusal. Anything that does not authenticate gets no answer; guard.c
 * counts it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/channel.h>
#include <nkp/file.h>
#include <nkp/log.h>

#include "guard.h"
#include "hostd-internal.h"
#include "tpm.h"

/* A Hello's attestation request (proto/wire.proto): a fresh nonce of
 * exactly this size and a selection of the 24 SHA-256 PCRs, not empty. */
#define ATTEST_NONCE_BYTES 32u
#define ATTEST_PCRS_ALL 0xffffffu
/* A credential to activate: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET,
 * each within this (an RSA 2048 EK's secret is 258 bytes). */
#define ACTIVATE_FIELD_MAX 512u
/* A seal policy carries one approval per baseline (nkpd keeps at most 64). */
#define SEAL_APPROVALS_MAX 64u

/* A reply about to be sealed. Holds no secret. */
typedef struct reply {
	Nkp__Wire__Message msg;
	Nkp__Wire__Status status;
	Nkp__Wire__PushAck ack;
	Nkp__Wire__Refusal refusal;
	uint8_t challenge[HOSTD_CHALLENGE_BYTES];
	uint8_t nonce[NKP_HOSTD_BOOT_NONCE_BYTES];
	uint8_t digest[NKPI_DIGEST_BYTES];
	char text[160];
	char quote_error[256];
	nkpi_tpm_quote_out quote; /* the TPM's quote: public bytes */
	uint8_t ek[NKPI_TPM_EK_PUBLIC_MAX];
	uint8_t ek_cert[NKPI_TPM_EK_CERT_MAX];
	/* The service's challenge, not a key of ours; wiped all the same. */
	uint8_t activated[NKPI_TPM_CREDENTIAL_MAX];
	uint8_t seal_digest[NKPI_SEAL_POLICY_DIGEST_BYTES];
	char seal_error[160];
	Nkp__Wire__VersionUsage **usage;
	size_t n_usage;
	nkpi_session_reply *rk; /* the request's reply key (a secret, not ours) */
#ifdef NKP_TEST_HOOKS
	Nkp__Wire__VersionUsage hu[64];
	Nkp__Wire__VersionUsage *hup[64];
	uint8_t hids[8][NKP_ID_BYTES];
	uint8_t hdigest[NKPI_DIGEST_BYTES];
#endif
} reply;

#ifdef NKP_TEST_HOOKS
static void hostile(nkp_hostd *h, reply *r);
#else
static inline void hostile(nkp_hostd *h, reply *r)
{
	(void)h;
	(void)r;
}
#endif

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
	hostd_state_usage_free(r->usage, r->n_usage);
	r->usage = NULL;
	return err;
}

static hostd_pair applied_now(nkp_hostd *h)
{
	hostd_pair a;

	pthread_rwlock_rdlock(&h->lock);
	a = h->applied;
	pthread_rwlock_unlock(&h->lock);
	return a;
}

/* Points `digest` at the reply's copy of the applied digest (or empty). */
static void reply_digest(reply *r, const hostd_pair *a, ProtobufCBinaryData *digest)
{
	digest->len = 0;
	if (a->have_digest) {
		memcpy(r->digest, a->digest, NKPI_DIGEST_BYTES);
		digest->data = r->digest;
		digest->len = NKPI_DIGEST_BYTES;
	}
}

/* Refusal with our current boot nonce, applied pair and digest, so the
 * service can correct itself; recorded as an event. */
static nkp_err refuse(nkp_hostd *h, reply *r, nkp_err code, const hostd_pair *applied,
		      const char *why, uint8_t **out, size_t *outlen)
{
	snprintf(r->text, sizeof(r->text), "%s", why);
	r->refusal.challenge.data = r->challenge;
	r->refusal.challenge.len = HOSTD_CHALLENGE_BYTES;
	r->refusal.code = code;
	r->refusal.message = r->text;
	r->refusal.boot_nonce.data = r->nonce;
	r->refusal.boot_nonce.len = sizeof(r->nonce);
	r->refusal.applied_generation = applied->counter;
	r->refusal.applied_epoch = applied->epoch;
	reply_digest(r, applied, &r->refusal.applied_digest);
	r->msg.body_case = NKP__WIRE__MESSAGE__BODY_REFUSAL;
	r->msg.refusal = &r->refusal;
	nkp_event(h->events,
		  code == NKP_ERR_IO || code == NKP_ERR_NOSPC ? NKP_EV_STATE_WRITE_FAILED
							      : NKP_EV_BAD_INPUT,
		  NULL, h->host_name, "service request refused: %s (%s)", why, nkp_strerror(code));
	hostile(h, r);
	return reply_seal(h, r, out, outlen);
}

/* Why a Hello's attestation request is malformed, or NULL. The PCR
 * selection counts only with a nonce; a credential to activate is a blob
 * and its secret, both or neither. */
static const char *attest_malformed(const Nkp__Wire__Hello *m)
{
	if (m->attest_nonce.len != 0 && m->attest_nonce.len != ATTEST_NONCE_BYTES) {
		return "attestation nonce not of 32 bytes";
	}
	if (m->attest_nonce.len != 0 && (m->attest_pcrs == 0 || m->attest_pcrs > ATTEST_PCRS_ALL)) {
		return "attestation PCR selection empty or beyond PCR 23";
	}
	if ((m->activate_blob.len == 0) != (m->activate_secret.len == 0)) {
		return "credential blob without its secret, or secret without its blob";
	}
	if (m->activate_blob.len > ACTIVATE_FIELD_MAX ||
	    m->activate_secret.len > ACTIVATE_FIELD_MAX) {
		return "credential blob or secret over 512 bytes";
	}
	if (m->seal_policy != NULL && m->seal_unbind) {
		return "seal policy and unbind at once";
	}
	if (m->seal_policy != NULL && (m->seal_policy->n_approvals == 0 ||
				       m->seal_policy->n_approvals > SEAL_APPROVALS_MAX)) {
		return "seal policy without approvals, or with more than 64";
	}
	return NULL;
}

/* The seal policy a Hello carries, or its unbind, for the binder
 * (sealbind.c, on its own thread: the Hello never waits for the TPM); the
 * Status says where the binding stands now. */
static void seal_policy(nkp_hostd *h, reply *r, const Nkp__Wire__Hello *m)
{
	bool bound = false;

	hostd_seal_request(h, m->seal_policy, m->seal_unbind);
	hostd_seal_state(h, &bound, r->seal_digest, r->seal_error, sizeof(r->seal_error));
	if (bound) {
		r->status.seal_policy_digest.data = r->seal_digest;
		r->status.seal_policy_digest.len = sizeof(r->seal_digest);
	}
	r->status.seal_policy_error = r->seal_error;
}

/* Adds `what` to the reply's quote_error ("; " between two). */
static void tpm_error(reply *r, const char *what, nkp_err err)
{
	size_t n = strlen(r->quote_error);

	snprintf(r->quote_error + n, sizeof(r->quote_error) - n, "%s%s%s", n != 0 ? "; " : "", what,
		 err != NKP_OK ? nkp_strerror(err) : "");
	r->status.quote_error = r->quote_error;
}

static void quote_done(nkp_hostd *h, reply *r, uint32_t pcrs, nkp_err err)
{
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-QUOTE",
			"cannot quote PCRs 0x%06x with the TPM at '%s': %s; the service gets no "
			"quote from this host until the TPM answers again (see NKP-TPM-FAILED)",
			(unsigned)pcrs, h->tpm_tcti, nkp_strerror(err));
		tpm_error(r, "TPM failed: ", err);
		return;
	}
	r->status.quote_attest.data = r->quote.attest;
	r->status.quote_attest.len = r->quote.attest_len;
	r->status.quote_signature.data = r->quote.sig;
	r->status.quote_signature.len = r->quote.sig_len;
}

static void ek_done(nkp_hostd *h, reply *r, size_t ek_len, size_t cert_len, nkp_err err)
{
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-EK",
			"cannot read the endorsement key of the TPM at '%s': %s; the service "
			"cannot check this host's TPM until it answers (see NKP-TPM-FAILED)",
			h->tpm_tcti, nkp_strerror(err));
		tpm_error(r, "TPM failed: ", err);
		return;
	}
	r->status.ek_public.data = r->ek;
	r->status.ek_public.len = ek_len;
	r->status.ek_cert.data = r->ek_cert;
	r->status.ek_cert.len = cert_len;
}

static void activate_done(nkp_hostd *h, reply *r, size_t len, nkp_err err)
{
	if (err != NKP_OK) {
		/* NKP_ERR_AUTH: a credential for another TPM or key, or
		 * altered; the service decides what that means. */
		nkp_log(err == NKP_ERR_AUTH || err == NKP_ERR_INVALID ? NKP_LOG_WARN : NKP_LOG_ERR,
			"NKP-HOSTD-ACTIVATE",
			"cannot activate the service's credential with the TPM at '%s': %s%s",
			h->tpm_tcti, nkp_strerror(err),
			err == NKP_ERR_AUTH ? " (not made for this TPM's endorsement and "
					      "attestation keys)"
					    : " (see NKP-TPM-FAILED)");
		tpm_error(r, "activation failed: ", err);
		return;
	}
	r->status.activated.data = r->activated;
	r->status.activated.len = len;
}

/* Answers what a Hello asks of the TPM (a quote, the EK, a credential to
 * activate), or says why not: never anything made up. The TPM is opened
 * for this Hello only, one at a time (tpm_lock), and never under h->lock
 * (making the keys can take a real TPM seconds; pushes and VM operations
 * do not wait for it). */
static void attest(nkp_hostd *h, reply *r, const Nkp__Wire__Hello *m)
{
	const bool quote = m->attest_nonce.len != 0, ek = m->want_ek,
		   act = m->activate_blob.len != 0;
	nkp_err open_err, q_err = NKP_OK, ek_err = NKP_OK, act_err = NKP_OK;
	size_t ek_len = 0, cert_len = 0, act_len = 0;
	nkpi_tpm *t = NULL;

	if (!quote && !ek && !act) {
		return;
	}
	if (h->tpm_tcti == NULL) {
		tpm_error(r, "no TPM on this host", NKP_OK);
		return;
	}
	pthread_mutex_lock(&h->tpm_lock);
	open_err = nkpi_tpm_open(h->tpm_tcti, &t);
	if (open_err == NKP_OK && quote) {
		q_err = nkpi_tpm_quote(t, m->attest_nonce.data, m->attest_nonce.len, m->attest_pcrs,
				       &r->quote);
	}
	if (open_err == NKP_OK && ek) {
		ek_err = nkpi_tpm_ek(t, r->ek, &ek_len, r->ek_cert, &cert_len);
	}
	if (open_err == NKP_OK && act) {
		act_err = nkpi_tpm_activate(t, m->activate_blob.data, m->activate_blob.len,
					    m->activate_secret.data, m->activate_secret.len,
					    r->activated, &act_len);
	}
	nkpi_tpm_close(t);
	pthread_mutex_unlock(&h->tpm_lock);
	if (quote) {
		quote_done(h, r, m->attest_pcrs, open_err != NKP_OK ? open_err : q_err);
	}
	if (ek) {
		ek_done(h, r, ek_len, cert_len, open_err != NKP_OK ? open_err : ek_err);
	}
	if (act) {
		activate_done(h, r, act_len, open_err != NKP_OK ? open_err : act_err);
	}
}

static nkp_err on_hello(nkp_hostd *h, reply *r, const Nkp__Wire__Hello *m, uint8_t **out,
			size_t *outlen)
{
	const char *why = attest_malformed(m);
	nkp_err err;

	if (why != NULL) {
		hostd_pair a = applied_now(h);

		return refuse(h, r, NKP_ERR_PARSE, &a, why, out, outlen);
	}
	attest(h, r, m);
	seal_policy(h, r, m);
	pthread_rwlock_rdlock(&h->lock);
	r->status.applied_generation = h->applied.counter;
	r->status.applied_epoch = h->applied.epoch;
	reply_digest(r, &h->applied, &r->status.applied_digest);
	err = hostd_state_usage(&h->state, &r->usage, &r->n_usage);
	pthread_rwlock_unlock(&h->lock);
	if (err != NKP_OK) {
		goto out;
	}
	r->status.challenge.data = r->challenge;
	r->status.challenge.len = HOSTD_CHALLENGE_BYTES;
	r->status.boot_nonce.data = r->nonce;
	r->status.boot_nonce.len = sizeof(r->nonce);
	r->status.tpm = h->atrest == NKPI_ATREST_TPM;
	r->status.usage = r->usage;
	r->status.n_usage = r->n_usage;
	r->status.host_name = h->host_name;
	r->msg.body_case = NKP__WIRE__MESSAGE__BODY_STATUS;
	r->msg.status = &r->status;
	hostile(h, r);
	err = reply_seal(h, r, out, outlen);
out:
	sodium_memzero(r->activated, sizeof(r->activated));
	return err;
}

/* May a push of `to` replace what this host holds (`held`)? Without
 * resync: only a later counter of the same epoch, or anything while no
 * pair is held (a fresh or re-pinned host). Never anything at or above the
 * limit. NKP_OK, or the refusal's code and words. */
static nkp_err pair_allows(const hostd_pair *held, const hostd_pair *to, bool resync, char *why,
			   size_t size)
{
	if (to->epoch == 0 || to->counter == 0 || to->counter >= NKPI_GENERATION_MAX) {
		snprintf(why, size, "generation out of range");
		return NKP_ERR_PARSE;
	}
	if (resync || held->epoch == 0) {
		return NKP_OK;
	}
	if (to->epoch != held->epoch) {
		snprintf(why, size,
			 "push of another service epoch (%016llx; this host holds %016llx)",
			 (unsigned long long)to->epoch, (unsigned long long)held->epoch);
		return NKP_ERR_STATE;
	}
	if (to->counter <= held->counter) {
		snprintf(why, size, "stale generation %llu (applied %llu)",
			 (unsigned long long)to->counter, (unsigned long long)held->counter);
		return NKP_ERR_REPLAY;
	}
	return NKP_OK;
}

/* Under the exclusive lock: persist first, then swap. On failure the
 * old state stays, in memory and on disk. */
static nkp_err push_commit(nkp_hostd *h, const hostd_pair *to, bool resync, hostd_state *fresh,
			   hostd_pair *applied, char *why, size_t size)
{
	hostd_state old;
	nkp_err err;

	pthread_rwlock_wrlock(&h->lock);
	*applied = h->applied;
	err = pair_allows(&h->applied, to, resync, why, size);
	if (err != NKP_OK) {
		goto out_unlock;
	}
	hostd_state_carry_usage(fresh, &h->state);
	err = hostd_save(h, fresh, to);
	if (err != NKP_OK) {
		snprintf(why, size, "push of generation %llu not applied: %s",
			 (unsigned long long)to->counter, nkp_strerror(err));
		goto out_unlock;
	}
	old = h->state;
	h->state = *fresh;
	h->applied = *to;
	*fresh = old;
	*applied = *to;
out_unlock:
	pthread_rwlock_unlock(&h->lock);
	return err;
}

static nkp_err ack(nkp_hostd *h, reply *r, uint8_t **out, size_t *outlen)
{
	nkp_err err;

	pthread_rwlock_rdlock(&h->lock);
	r->ack.applied_generation = h->applied.counter;
	r->ack.applied_epoch = h->applied.epoch;
	reply_digest(r, &h->applied, &r->ack.applied_digest);
	err = hostd_state_usage(&h->state, &r->usage, &r->n_usage);
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
	hostile(h, r);
	return reply_seal(h, r, out, outlen);
}

/* The push's DesiredState, unpacked into this thread's arena, and the
 * pair and digest it names. */
static Nkp__Wire__DesiredState *desired_open(const Nkp__Wire__Push *p, ProtobufCAllocator *alloc,
					     hostd_pair *to)
{
	Nkp__Wire__DesiredState *ds =
		nkpi_keyset_desired_unpack(p->desired.data, p->desired.len, alloc);

	if (ds == NULL) {
		return NULL;
	}
	to->epoch = ds->epoch;
	to->counter = ds->counter;
	to->have_digest = true;
	nkpi_desired_digest(p->desired.data, p->desired.len, to->digest);
	return ds;
}

static nkp_err on_push(nkp_hostd *h, reply *r, const Nkp__Wire__Push *p, ProtobufCAllocator *alloc,
		       uint8_t **out, size_t *outlen)
{
	hostd_state fresh = {0};
	hostd_pair applied = applied_now(h), to = {0};
	Nkp__Wire__DesiredState *ds;
	nkpi_keyset ks = {0};
	char why[160];
	nkp_err err;

	if (p->boot_nonce.len != NKP_HOSTD_BOOT_NONCE_BYTES ||
	    sodium_memcmp(p->boot_nonce.data, h->boot_nonce, NKP_HOSTD_BOOT_NONCE_BYTES) != 0) {
		return refuse(h, r, NKP_ERR_REPLAY, &applied, "push for another boot of this host",
			      out, outlen);
	}
	ds = desired_open(p, alloc, &to);
	if (ds == NULL) {
		return refuse(h, r, NKP_ERR_PARSE, &applied, "unreadable desired state", out,
			      outlen);
	}
	/* Checked before any key is built; again under the lock. */
	err = pair_allows(&applied, &to, p->resync, why, sizeof(why));
	if (err == NKP_OK) {
		err = nkpi_keyset_check(ds->n_providers, ds->providers, &ks);
		snprintf(why, sizeof(why), "invalid provider keys in push");
	}
	if (err == NKP_OK) {
		pthread_rwlock_rdlock(&h->lock);
		err = hostd_state_build(&ks, &h->state, &fresh);
		pthread_rwlock_unlock(&h->lock);
		snprintf(why, sizeof(why), "push of generation %llu not applied: %s",
			 (unsigned long long)to.counter, nkp_strerror(err));
	}
	if (err == NKP_OK) {
		err = push_commit(h, &to, p->resync, &fresh, &applied, why, sizeof(why));
	}
	hostd_state_fini(&fresh);
	if (err != NKP_OK) {
		nkp__wire__desired_state__free_unpacked(ds, alloc);
		return refuse(h, r, err, &applied, why, out, outlen);
	}
	nkp_event(h->events, NKP_EV_KEYS_APPLIED, NULL, h->host_name,
		  "applied generation %016llx:%llu%s: %zu providers", (unsigned long long)to.epoch,
		  (unsigned long long)to.counter, p->resync ? " (resync)" : "", ds->n_providers);
	nkp__wire__desired_state__free_unpacked(ds, alloc);
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
		hostd_pair a = applied_now(h);

		err = refuse(h, &r, NKP_ERR_PARSE, &a, "unreadable message", out, outlen);
	} else if (m->body_case == NKP__WIRE__MESSAGE__BODY_HELLO && m->hello != NULL) {
		reply_init(h, &r, &m->hello->challenge, rk);
		err = on_hello(h, &r, m->hello, out, outlen);
	} else if (m->body_case == NKP__WIRE__MESSAGE__BODY_PUSH && m->push != NULL) {
		reply_init(h, &r, &m->push->challenge, rk);
		err = on_push(h, &r, m->push, alloc, out, outlen);
	} else {
		reply_init(h, &r, NULL, rk);
		hostd_pair a = applied_now(h);

		err = refuse(h, &r, NKP_ERR_PARSE, &a, "unexpected message", out, outlen);
	}
	if (m != NULL) {
		nkp__wire__message__free_unpacked(m, alloc);
	}
	return err;
}

/* Every frame that does not authenticate (or is refused before it could)
 * ends here: no reply, no event per frame, only a count and at most one
 * summary event a minute (guard.c). */
static void dropped(nkp_hostd *h, nkp_err why)
{
	hostd_guard_dropped(h, why == NKP_OK ? NKP_ERR_PARSE : why);
}

static uint8_t peer_key[crypto_shorthash_KEYBYTES];
static pthread_once_t peer_key_once = PTHREAD_ONCE_INIT;

static void peer_key_make(void)
{
	randombytes_buf(peer_key, sizeof(peer_key));
}

uint64_t hostd_pipe_peer(nng_pipe p)
{
	nng_sockaddr sa;
	uint8_t in[17], out[crypto_shorthash_BYTES];
	size_t inlen;
	uint64_t key = 0;

	if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0) {
		return 0;
	}
	if (sa.s_family == NNG_AF_INET) {
		in[0] = 4;
		memcpy(in + 1, &sa.s_in.sa_addr, 4);
		inlen = 5;
	} else if (sa.s_family == NNG_AF_INET6) {
		in[0] = 6;
		memcpy(in + 1, sa.s_in6.sa_addr, 8); /* the /64 */
		inlen = 9;
	} else {
		return 0;
	}
	pthread_once(&peer_key_once, peer_key_make);
	crypto_shorthash(out, in, inlen, peer_key);
	for (int i = 0; i < 8; i++) {
		key = key << 8 | out[i];
	}
	return key != 0 ? key : 1;
}

nkp_err hostd_handle_frame(nkp_hostd *h, uint64_t peer, const uint8_t *req, size_t len,
			   uint8_t **reply_out, size_t *replylen, bool *authentic)
{
	ProtobufCAllocator *alloc;
	Nkp__Wire__Message *m;
	nkpi_session_reply rk;
	uint8_t *msg;
	size_t msglen = 0;
	nkp_err err;

	*authentic = false;
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
	/* Unknown fields, wrong wire types and deep nesting are refused
	 * (nkpi_pb_strict) before protobuf-c allocates anything for them. */
	err = nkpi_session_open_request_from(h->session, peer, req, len, msg, len + 1, &msglen, &rk,
					     reply_out, replylen);
	if (err != NKP_OK) {
		dropped(h, err);
		return err;
	}
	*authentic = true; /* a HandshakeInit from the pinned service, or a Transport */
	if (*reply_out != NULL) {
		return NKP_OK; /* a HandshakeResp */
	}
	m = nkp__wire__message__unpack(alloc, msglen, msg);
	sodium_memzero(msg, msglen);
	err = dispatch(h, m, alloc, &rk, reply_out, replylen);
	nkpi_session_reply_wipe(&rk); /* on paths that sealed no reply */
	return err;
}

nkp_err nkp_hostd_handle_frame(nkp_hostd *h, const uint8_t *req, size_t len, uint8_t **reply_out,
			       size_t *replylen)
{
	bool authentic;

	return hostd_handle_frame(h, 0, req, len, reply_out, replylen, &authentic);
}

#ifdef NKP_TEST_HOOKS
/* Test builds only (-Dtest-hooks=true): an enrolled host that lies, for
 * tests/integration/hostile-host.sh. NKP_TEST_HOSTILE lists what it lies
 * about, comma separated:
 *   generation  pairs near 2^64, of its epoch and of another, alternately
 *   replay      acks and statuses name the pair and digest held before the
 *               last push (an old digest, an old generation)
 *   usage       2^64-1 of everything for every version it holds, for
 *               versions it was never pushed, and for each provider id
 *               (32 hex digits) in NKP_TEST_HOSTILE_PROVIDERS, duplicated
 *   tpm         claims its keys are sealed in a TPM
 *   escapes     a host name and (every other hello) a refusal full of
 *               terminal escapes, C1 controls and bytes that are not UTF-8
 * Only the inner Message is changed, before it is sealed. */
static bool hostile_has(const char *what)
{
	const char *env = getenv("NKP_TEST_HOSTILE");
	size_t n = strlen(what);

	for (const char *p = env; p != NULL && *p != '\0';
	     p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (strncmp(p, what, n) == 0 && (p[n] == ',' || p[n] == '\0')) {
			return true;
		}
	}
	return false;
}

static const char hostile_name[] = "evil\x1b]0;pwned\x07\x1b[2J\x1b[31mhost\x9b"
				   "31m\xc2\x9b"
				   "1m";
static const char hostile_text[] = "refused \x1b[2J\x1b]0;owned\x07\x1b[5mblink\x7f\x9b\xff";

static pthread_mutex_t hostile_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned hostile_calls;
static hostd_pair hostile_last, hostile_prev;

static void hostile_pair(nkp_hostd *h, reply *r, uint64_t *epoch, uint64_t *counter,
			 ProtobufCBinaryData *digest)
{
	hostd_pair now = applied_now(h);
	unsigned call;

	pthread_mutex_lock(&hostile_lock);
	call = hostile_calls++;
	if (memcmp(&now, &hostile_last, sizeof(now)) != 0) {
		hostile_prev = hostile_last;
		hostile_last = now;
	}
	if (hostile_has("replay")) {
		*epoch = hostile_prev.epoch;
		*counter = hostile_prev.counter;
		memcpy(r->hdigest, hostile_prev.digest, sizeof(r->hdigest));
		digest->data = r->hdigest;
		digest->len = hostile_prev.have_digest ? NKPI_DIGEST_BYTES : 0;
	}
	pthread_mutex_unlock(&hostile_lock);
	if (hostile_has("generation")) {
		*epoch = call % 2 == 0 && now.epoch != 0 ? now.epoch : UINT64_C(0xdeadbeefdeadbeef);
		*counter = UINT64_MAX - 1;
		memset(r->hdigest, 0xee, sizeof(r->hdigest));
		digest->data = r->hdigest;
		digest->len = NKPI_DIGEST_BYTES;
	}
}

/* Every other hello with escapes is answered by a refusal. */
static bool hostile_refuse_now(void)
{
	static unsigned hellos;
	bool yes;

	pthread_mutex_lock(&hostile_lock);
	yes = hellos++ % 2 == 1;
	pthread_mutex_unlock(&hostile_lock);
	return yes;
}

static size_t hostile_ids(reply *r)
{
	const char *env = getenv("NKP_TEST_HOSTILE_PROVIDERS");
	size_t n = 0;

	for (const char *p = env; p != NULL && n < 8;
	     p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (sodium_hex2bin(r->hids[n], NKP_ID_BYTES, p, 32, NULL, NULL, NULL) == 0) {
			n++;
		}
	}
	return n;
}

static void hostile_one(reply *r, size_t *k, const uint8_t *id, uint32_t version)
{
	Nkp__Wire__VersionUsage *u;

	if (*k >= sizeof(r->hu) / sizeof(r->hu[0])) {
		return;
	}
	u = &r->hu[*k];
	nkp__wire__version_usage__init(u);
	u->provider_id.data = (uint8_t *)id;
	u->provider_id.len = NKP_ID_BYTES;
	u->version = version;
	u->keysafes = u->created = u->rewrapped = u->unwrapped = UINT64_MAX;
	u->last_used_unix = UINT64_MAX;
	r->hup[*k] = u;
	(*k)++;
}

static void hostile_usage(reply *r, Nkp__Wire__VersionUsage ***usage, size_t *n_usage)
{
	size_t k = 0, ids = hostile_ids(r);

	for (size_t i = 0; i < r->n_usage && i < 8; i++) {
		const uint8_t *id = r->usage[i]->provider_id.data;
		uint32_t v = r->usage[i]->version;

		hostile_one(r, &k, id, v);
		hostile_one(r, &k, id, v);
		hostile_one(r, &k, id, v + 1);
	}
	for (size_t i = 0; i < ids; i++) {
		for (uint32_t v = 1; v <= 4; v++) {
			hostile_one(r, &k, r->hids[i], v);
			hostile_one(r, &k, r->hids[i], v);
		}
	}
	*usage = r->hup;
	*n_usage = k;
}

static void hostile(nkp_hostd *h, reply *r)
{
	switch (r->msg.body_case) {
	case NKP__WIRE__MESSAGE__BODY_STATUS:
		if (hostile_has("escapes") && hostile_refuse_now()) {
			r->refusal.challenge = r->status.challenge;
			r->refusal.code = NKP_ERR_STATE;
			r->refusal.message = (char *)hostile_text;
			r->refusal.boot_nonce = r->status.boot_nonce;
			r->msg.body_case = NKP__WIRE__MESSAGE__BODY_REFUSAL;
			r->msg.refusal = &r->refusal;
			hostile_pair(h, r, &r->refusal.applied_epoch,
				     &r->refusal.applied_generation, &r->refusal.applied_digest);
			return;
		}
		hostile_pair(h, r, &r->status.applied_epoch, &r->status.applied_generation,
			     &r->status.applied_digest);
		if (hostile_has("usage")) {
			hostile_usage(r, &r->status.usage, &r->status.n_usage);
		}
		r->status.tpm = r->status.tpm || hostile_has("tpm");
		if (hostile_has("escapes")) {
			r->status.host_name = (char *)hostile_name;
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_PUSH_ACK:
		hostile_pair(h, r, &r->ack.applied_epoch, &r->ack.applied_generation,
			     &r->ack.applied_digest);
		if (hostile_has("usage")) {
			hostile_usage(r, &r->ack.usage, &r->ack.n_usage);
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_REFUSAL:
		hostile_pair(h, r, &r->refusal.applied_epoch, &r->refusal.applied_generation,
			     &r->refusal.applied_digest);
		if (hostile_has("escapes")) {
			r->refusal.message = (char *)hostile_text;
		}
		break;
	default:
		break;
	}
}
#endif
