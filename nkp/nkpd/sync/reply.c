/* Replies of hosts: opened outside nkpd_svc.lock, then their verdicts
 * applied under it (acknowledged generations, usage, refusals, conflicts,
 * the host's status) and announced as events. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "core/core.h"
#include "internal.h"
#include "quote.h"
#include "session.h"
#include "sync/engine.h"
#include "sync/sync.h"
#include "wire.pb-c.h"

static void note_in_sync(nkpd_svc *s, nkpd_host *h);
static bool challenge_ok(const nkpd_host *h, ProtobufCBinaryData c);
static bool pushed_to(const nkpd_desired *d, const uint8_t *id, uint32_t version);
static uint64_t cap(uint64_t v);
static void store_usage(nkpd_svc *s, nkpd_host *h, size_t n, Nkp__Wire__VersionUsage *const *u);
static void note_applied(nkpd_svc *s, nkpd_host *h, uint64_t epoch, uint64_t counter,
			 ProtobufCBinaryData digest);
static void contact_ok(nkpd_svc *s, nkpd_host *h, const ProtobufCBinaryData *nonce, uint64_t epoch,
		       uint64_t counter, ProtobufCBinaryData digest);
static void apply_status(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Status *st);
static void apply_ack(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__PushAck *ack);
static void apply_refusal(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Refusal *r);
static void apply_message(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Message *m);
static void apply_reply(nkpd_host *h, const Nkp__Wire__Message *m);
static nkp_err open_reply(nkpd_host *h, ProtobufCAllocator *alloc, const uint8_t *frame, size_t len,
			  Nkp__Wire__Message **out, char *what, size_t what_size);
static void handle_handshake(nkpd_host *h, const uint8_t *frame, size_t len);

static void note_in_sync(nkpd_svc *s, nkpd_host *h)
{
	if (h->wipe_snap == NULL && nkpd_host_in_sync(s, h) &&
	    h->st.in_sync_generation != s->generation) {
		h->st.in_sync_generation = s->generation;
		nkp_event(s->events, NKP_EV_HOST_IN_SYNC, NULL, h->conf.name,
			  "host %s applied generation %llu", h->conf.name,
			  (unsigned long long)h->st.applied_generation);
	}
}

/* ---- replies ---- */

static bool challenge_ok(const nkpd_host *h, ProtobufCBinaryData c)
{
	return c.len == sizeof(h->link->challenge) &&
	       sodium_memcmp(c.data, h->link->challenge, sizeof(h->link->challenge)) == 0;
}

/* Was (provider, version) pushed to this host, i.e. is it in the desired
 * state it is sent? Only those are counted. */
static bool pushed_to(const nkpd_desired *d, const uint8_t *id, uint32_t version)
{
	for (size_t i = 0; d != NULL && i < d->n_providers; i++) {
		const nkpd_desired_provider *dp = &d->providers[i];

		if ((dp->tpm_only && !d->trusted) || memcmp(dp->id, id, NKP_ID_BYTES) != 0) {
			continue;
		}
		for (size_t j = 0; j < dp->n_versions; j++) {
			if (dp->versions[j].version == version) {
				return true;
			}
		}
	}
	return false;
}

static uint64_t cap(uint64_t v)
{
	return v > NKPD_USAGE_CAP ? NKPD_USAGE_CAP : v;
}

/* Lock held. While `h` is not sent the trusted providers (wiped from it,
 * its VMs under them locked), the use it last reported of their versions
 * still counts: a retire or delete must not destroy a version those VMs
 * need once it is trusted again. Appends to nu[*k], up to `room` entries. */
static void keep_trusted_usage(const nkpd_svc *s, const nkpd_host *h, const nkpd_desired *d,
			       nkpd_usage *nu, size_t *k, size_t room)
{
	if (s->snap_trusted == NULL || s->snap_trusted == s->snap) {
		return; /* no trusted provider */
	}
	for (size_t i = 0; (d == NULL || !d->trusted) && i < h->st.n_usage && *k < room; i++) {
		const nkpd_usage *o = &h->st.usage[i];
		const nkpd_provider *p = nkpd_model_provider_find_id(s, o->provider_id);
		bool dup = false;

		if (p == NULL || !p->tpm_only || nkpd_model_version_find(p, o->version) == NULL) {
			continue;
		}
		for (size_t j = 0; j < *k && !dup; j++) {
			dup = nu[j].version == o->version &&
			      memcmp(nu[j].provider_id, o->provider_id, NKP_ID_BYTES) == 0;
		}
		if (!dup) {
			nu[(*k)++] = *o;
		}
	}
}

/* A host's report is kept bounded: versions never pushed to it are
 * dropped, a version reported twice counts once (the first), every count
 * is capped. What one host says cannot hide what another reports. */
static void store_usage(nkpd_svc *s, nkpd_host *h, size_t n, Nkp__Wire__VersionUsage *const *u)
{
	const nkpd_desired *d = h->link->pushed_snap;
	nkpd_usage *nu;
	size_t k = 0;

	if (n > MAX_USAGE) {
		n = MAX_USAGE;
	}
	/* Room for what it reports and what keep_trusted_usage() keeps. */
	nu = calloc((n + h->st.n_usage < MAX_USAGE ? n + h->st.n_usage : MAX_USAGE) + 1,
		    sizeof(*nu));
	if (nu == NULL) {
		return;
	}
	for (size_t i = 0; i < n; i++) {
		bool dup = false;

		if (u[i]->provider_id.len != NKP_ID_BYTES || u[i]->version == 0 ||
		    !pushed_to(d, u[i]->provider_id.data, u[i]->version)) {
			continue;
		}
		for (size_t j = 0; j < k && !dup; j++) {
			dup = nu[j].version == u[i]->version &&
			      memcmp(nu[j].provider_id, u[i]->provider_id.data, NKP_ID_BYTES) == 0;
		}
		if (dup) {
			continue;
		}
		memcpy(nu[k].provider_id, u[i]->provider_id.data, NKP_ID_BYTES);
		nu[k].version = u[i]->version;
		nu[k].keysafes = cap(u[i]->keysafes);
		nu[k].created = cap(u[i]->created);
		nu[k].rewrapped = cap(u[i]->rewrapped);
		nu[k].unwrapped = cap(u[i]->unwrapped);
		nu[k].last_used_unix = u[i]->last_used_unix;
		k++;
	}
	keep_trusted_usage(s, h, d, nu, &k,
			   n + h->st.n_usage < MAX_USAGE ? n + h->st.n_usage : MAX_USAGE);
	free(h->st.usage);
	h->st.usage = nu;
	h->st.n_usage = k;
}

/* Does `h` hold the desired state of the other trust than `d`'s? */
static bool other_scope(const nkpd_svc *s, const nkpd_desired *d, const nkpd_host *h)
{
	const nkpd_desired *o = d == s->snap	       ? s->snap_trusted
				: d == s->snap_trusted ? s->snap
						       : NULL;

	return o != NULL && o != d && nkpd_host_has(h, o);
}

/* Lock held. Records the pair and digest a host reports. Nothing is ever
 * adopted from it: a host that holds a pair we did not give it (ahead of
 * us, of another epoch, or our pair with other contents) is in conflict
 * until the operator resyncs it (docs/PROTOCOL.md "Generations"). */
static void note_applied(nkpd_svc *s, nkpd_host *h, uint64_t epoch, uint64_t counter,
			 ProtobufCBinaryData digest)
{
	struct reconciler *rec = s->rec;
	nkpd_desired *d = nkpd_host_snap(s, h);
	bool was_behind = !nkpd_host_current(s, h);
	bool conflict;

	h->st.applied_epoch = epoch;
	h->st.applied_generation = counter;
	h->st.have_digest = digest.len == NKPI_DIGEST_BYTES;
	if (h->st.have_digest) {
		memcpy(h->st.applied_digest, digest.data, NKPI_DIGEST_BYTES);
	}
	if (d == NULL) {
		return;
	}
	if (nkpd_host_has(h, d)) {
		conflict = false;
		nkpd_sync_set_pushed(h, d);
		if (h->wipe_snap == NULL) {
			h->st.resync = false;
			if (d->generation > h->st.acked_generation) {
				h->st.acked_generation = d->generation;
			}
			if (d->trusted && d->generation > h->st.acked_trusted_generation) {
				h->st.acked_trusted_generation = d->generation;
			}
		}
	} else if (other_scope(s, d, h)) {
		/* Our pair as a host of the other trust holds it (trust
		 * changed, or nkpd restarted and has not attested it yet). */
		conflict = false;
		h->att.scope_resync = true;
	} else {
		/* Fresh (no pair), or behind us in our epoch: push. */
		conflict = epoch != 0 && (epoch != d->epoch || counter >= d->generation);
	}
	if (conflict && !h->st.conflict && !nkpd_sync_wants_resync(h)) {
		nkp_event(s->events, NKP_EV_HOST_CONFLICT, NULL, h->conf.name,
			  "host %s holds generation %016llx:%llu, which this service did not give "
			  "it (ours: %016llx:%llu); nothing is pushed to it until `nkpctl host "
			  "resync %s`",
			  h->conf.name, (unsigned long long)epoch, (unsigned long long)counter,
			  (unsigned long long)d->epoch, (unsigned long long)d->generation,
			  h->conf.name);
	}
	h->st.conflict = conflict;
	if (rec == NULL || h->link->removed || !was_behind || !nkpd_host_current(s, h)) {
		return;
	}
	if (rec->behind > 0) {
		rec->behind--;
	}
	if (rec->behind == 0) {
		nkpd_provider_rotation_tick(s);
	}
}

static void contact_ok(nkpd_svc *s, nkpd_host *h, const ProtobufCBinaryData *nonce, uint64_t epoch,
		       uint64_t counter, ProtobufCBinaryData digest)
{
	if (nonce->len == sizeof(h->st.boot_nonce)) {
		if (h->st.have_nonce &&
		    sodium_memcmp(h->st.boot_nonce, nonce->data, sizeof(h->st.boot_nonce)) != 0) {
			nkpd_attest_restarted(s, h);
		}
		memcpy(h->st.boot_nonce, nonce->data, sizeof(h->st.boot_nonce));
		h->st.have_nonce = true;
	}
	note_applied(s, h, epoch, counter, digest);
	h->st.last_contact_unix = nkpi_now();
	h->st.failures = 0;
	h->st.health = HEALTH_OK;
	h->st.last_error[0] = '\0';
	if (h->st.asked_round == s->usage_round && h->st.prepared_round == s->usage_round) {
		h->st.answered_round = s->usage_round;
		pthread_cond_broadcast(&s->round_cond);
	}
}

/* The quote a Status brings, if one was asked for: checked against the
 * pinned AK, the nonce sent (used once: it is forgotten here) and the PCRs
 * asked for. */
static void check_quote(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Status *st)
{
	nkpi_quote_result q;
	char why[160], text[96];
	nkpi_quote_expect e = {
		.ak_public = h->conf.ak,
		.ak_public_len = h->conf.ak_len,
		.nonce = h->link->attest_nonce,
		.nonce_len = sizeof(h->link->attest_nonce),
		.pcr_mask = h->link->attest_pcrs,
	};
	nkp_err err;

	if (!h->link->attest_asked) {
		return;
	}
	h->link->attest_asked = false;
	if (h->link->ek_asked || h->link->activating) {
		bool ek = h->link->ek_asked;

		h->link->ek_asked = false;
		h->link->activating = false;
		if (ek ? st->ek_public.len == 0 : st->activated.len == 0) {
			nkpd_util_sanitize(text, sizeof(text),
					   st->quote_error[0] != '\0' ? st->quote_error
								      : "none given");
			snprintf(why, sizeof(why), "no %s (the host says: %s)",
				 ek ? "EK" : "credential activation", text);
			h->att.proof = AK_NEED_EK;
			nkpd_attest_quote_failed(s, h, why);
			return;
		}
		if (ek) {
			nkpd_attest_ek(s, h, st->ek_public.data, st->ek_public.len,
				       st->ek_cert.data, st->ek_cert.len);
		} else {
			nkpd_attest_activated(s, h, st->activated.data, st->activated.len);
		}
	}
	if (h->att.proof != AK_PROVEN) {
		return; /* no quote counts before the AK is proven */
	}
	if (st->quote_attest.len == 0) {
		nkpd_util_sanitize(text, sizeof(text),
				   st->quote_error[0] != '\0' ? st->quote_error : "none given");
		snprintf(why, sizeof(why), "no quote (the host says: %s)", text);
		nkpd_attest_quote_failed(s, h, why);
		return;
	}
	err = nkpi_quote_verify(&e, st->quote_attest.data, st->quote_attest.len,
				st->quote_signature.data, st->quote_signature.len, &q);
	randombytes_buf(h->link->attest_nonce, sizeof(h->link->attest_nonce));
	if (err != NKP_OK) {
		snprintf(why, sizeof(why), "its quote was refused: %s", nkp_strerror(err));
		nkpd_attest_quote_failed(s, h, why);
		return;
	}
	nkpd_attest_quote_ok(s, h, e.pcr_mask, q.pcr_digest);
}

static void apply_status(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Status *st)
{
	if (!challenge_ok(h, st->challenge) || st->boot_nonce.len != sizeof(h->st.boot_nonce)) {
		nkpd_sync_fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED,
				      "status with a wrong challenge");
		return;
	}
	contact_ok(s, h, &st->boot_nonce, st->applied_epoch, st->applied_generation,
		   st->applied_digest);
	h->st.tpm = st->tpm;
	nkpd_util_sanitize(h->st.host_name, sizeof(h->st.host_name), st->host_name);
	store_usage(s, h, st->n_usage, st->usage);
	nkpd_sealpol_status(s, h, &st->seal_policy_digest, st->seal_policy_error);
	check_quote(s, h, st);
}

static void apply_ack(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__PushAck *ack)
{
	if (!challenge_ok(h, ack->challenge)) {
		nkpd_sync_fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED,
				      "push ack with a wrong challenge");
		return;
	}
	if (h->link->push_resync && h->wipe_snap == NULL) {
		/* The resync was delivered: one push, not one per heartbeat. If
		 * the host still names a pair we did not give it, that is a new
		 * conflict. A change of trust since the push needs another. */
		h->st.resync = false;
		h->st.conflict = false;
		if (h->link->push_snap == nkpd_host_snap(s, h)) {
			h->att.scope_resync = false;
		}
	}
	contact_ok(s, h, &ack->boot_nonce, ack->applied_epoch, ack->applied_generation,
		   ack->applied_digest);
	store_usage(s, h, ack->n_usage, ack->usage);
}

static void apply_refusal(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Refusal *r)
{
	bool restarted, applied;
	char what[200], text[128];

	if (!challenge_ok(h, r->challenge)) {
		nkpd_sync_fail_locked(s, h, NKP_ERR_REPLAY, HEALTH_REFUSED,
				      "refusal with a wrong challenge");
		return;
	}
	restarted =
		r->boot_nonce.len == sizeof(h->st.boot_nonce) &&
		memcmp(r->boot_nonce.data, h->link->push_nonce, sizeof(h->link->push_nonce)) != 0;
	/* An earlier copy of this very push was applied and its ack lost:
	 * the host names the digest of what we sent. */
	applied = h->link->req == REQ_PUSH && h->link->push_snap != NULL &&
		  r->applied_digest.len == NKPI_DIGEST_BYTES &&
		  sodium_memcmp(r->applied_digest.data, h->link->push_snap->digest,
				NKPI_DIGEST_BYTES) == 0;
	if (h->link->req == REQ_PUSH &&
	    (restarted || applied || r->code == NKP_ERR_REPLAY || r->code == NKP_ERR_STATE)) {
		/* The host restarted (push again with its new nonce at once),
		 * has it already (in sync), or holds another pair: recorded,
		 * never adopted; a conflict stops the pushes. */
		contact_ok(s, h, &r->boot_nonce, r->applied_epoch, r->applied_generation,
			   r->applied_digest);
		if (restarted || applied || h->st.conflict) {
			return;
		}
	}
	nkpd_util_sanitize(text, sizeof(text), r->message);
	snprintf(what, sizeof(what), "host refused (%s)", text);
	nkpd_sync_fail_locked(s, h, r->code < NKP_ERR__COUNT ? (nkp_err)r->code : NKP_ERR_REFUSED,
			      HEALTH_REFUSED, what);
}

static void apply_message(nkpd_svc *s, nkpd_host *h, const Nkp__Wire__Message *m)
{
	switch (m->body_case) {
	case NKP__WIRE__MESSAGE__BODY_STATUS:
		if (h->link->req == REQ_HELLO) {
			apply_status(s, h, m->status);
			return;
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_PUSH_ACK:
		if (h->link->req == REQ_PUSH) {
			apply_ack(s, h, m->push_ack);
			return;
		}
		break;
	case NKP__WIRE__MESSAGE__BODY_REFUSAL:
		apply_refusal(s, h, m->refusal);
		return;
	default:
		break;
	}
	nkpd_sync_fail_locked(s, h, NKP_ERR_PARSE, HEALTH_REFUSED, "unexpected reply");
}

static void apply_reply(nkpd_host *h, const Nkp__Wire__Message *m)
{
	nkpd_svc *s = h->link->svc;
	bool chain;

	pthread_mutex_lock(&s->lock);
	apply_message(s, h, m);
	note_in_sync(s, h);
	chain = nkpd_sync_next_step(s, h);
	pthread_mutex_unlock(&s->lock);
	if (chain) {
		nkpd_sync_start_request(h);
	} else {
		nkpd_sync_refill(s);
	}
}

/* Opens and unpacks a reply; the plaintext lives in this thread's locked
 * scratch buffer only until it is unpacked into this thread's arena
 * (`alloc`, NULL if it could not be made), where the caller frees it. */
static nkp_err open_reply(nkpd_host *h, ProtobufCAllocator *alloc, const uint8_t *frame, size_t len,
			  Nkp__Wire__Message **out, char *what, size_t what_size)
{
	uint8_t *buf = nkpi_scratch(len + 1);
	size_t blen = 0;
	nkp_err err;

	if (buf == NULL || alloc == NULL) {
		snprintf(what, what_size, "cannot open the reply");
		return NKP_ERR_NOMEM;
	}
	err = nkpi_session_open_reply(h->link->sess, frame, len, buf, len + 1, &blen);
	if (err != NKP_OK) {
		nkp_event(h->link->svc->events,
			  err == NKP_ERR_AUTH ? NKP_EV_TAMPERING : NKP_EV_BAD_INPUT, NULL,
			  h->conf.name, "reply from host %s refused: %s", h->conf.name,
			  nkp_strerror(err));
		snprintf(what, what_size, "reply not authenticated");
	} else {
		/* Even an enrolled host's reply is outside bytes: unknown
		 * fields and repeats are refused before protobuf-c allocates
		 * for them. */
		*out = nkpi_pb_strict(&nkp__wire__message__descriptor, buf, blen) == NKP_OK
			       ? nkp__wire__message__unpack(alloc, blen, buf)
			       : NULL;
		if (*out == NULL) {
			err = NKP_ERR_PARSE;
			snprintf(what, what_size, "malformed reply");
		}
		sodium_memzero(buf, blen);
	}
	return err;
}

/* The answer to our HandshakeInit. Authenticated: the request follows
 * under the new session. Not: a failed rekey falls back on the current
 * session while it is usable; otherwise the exchange failed (the next one
 * starts with a new handshake). A forged answer costs a retry, never a
 * request in anything but a Transport. */
static void handle_handshake(nkpd_host *h, const uint8_t *frame, size_t len)
{
	nkpd_svc *s = h->link->svc;
	nkp_err err = nkpi_session_handshake_finish(h->link->sess, frame, len);

	pthread_mutex_lock(&s->lock);
	h->link->handshaking = false;
	if (err != NKP_OK) {
		h->link->rekey_failed = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (err != NKP_OK && !nkpi_session_usable(h->link->sess)) {
		nkpd_sync_finish_failure(h, err, HEALTH_REFUSED, "handshake not authenticated");
		return;
	}
	nkpd_sync_start_request(h);
}

/* Unpacks and frees on this thread, as its arena requires. */
void nkpd_sync_handle_reply(nkpd_host *h, const uint8_t *frame, size_t len)
{
	ProtobufCAllocator *alloc = nkpi_arena_allocator();
	Nkp__Wire__Message *m = NULL;
	char what[240];
	bool hs;
	nkp_err err;

	pthread_mutex_lock(&h->link->svc->lock);
	hs = h->link->handshaking;
	pthread_mutex_unlock(&h->link->svc->lock);
	if (hs) {
		handle_handshake(h, frame, len);
		return;
	}
	err = open_reply(h, alloc, frame, len, &m, what, sizeof(what));
	if (err != NKP_OK) {
		nkpd_sync_finish_failure(h, err, HEALTH_REFUSED, what);
		return;
	}
	apply_reply(h, m);
	nkp__wire__message__free_unpacked(m, alloc);
}
