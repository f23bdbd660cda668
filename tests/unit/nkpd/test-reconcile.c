/* The reconciler against in-process fake hosts that speak the sync
 * protocol (docs/PROTOCOL.md) on ipc:// sockets: desired state reaches
 * every host, rotations promote only when all acknowledged and fail naming
 * the missing ones, restarted hosts catch up, a host pinned to another
 * service gets nothing. Each fake host is a real session responder
 * (nkp/private/session.h): it answers a HandshakeInit with a HandshakeResp and
 * requests in Transport frames, and drops (never answers) anything that
 * does not authenticate, as nkp-hostd does. */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <sodium.h>
#include <time.h>

#include "internal.h"
#include "session.h"
#include "test-util.h"
#include "wire.pb-c.h"

#define MAX_KINDS 256

typedef struct fake_host {
	char name[16];
	char url[PATH_MAX + 16];
	nkp_identity *id;
	const uint8_t *service_pub;
	nng_socket sock;
	pthread_t thread;
	pthread_mutex_t lock;
	uint8_t boot_nonce[16];
	uint64_t applied; /* counter of the applied pair */
	uint64_t epoch;	  /* epoch of the applied pair, 0: none */
	bool have_digest;
	uint8_t digest[NKPI_DIGEST_BYTES];
	/* hostile: report this pair (and an absent digest) instead */
	bool lie;
	uint64_t lie_epoch, lie_counter;
	bool tpm_claim;
	const char *name_claim; /* host_name reported instead of name */
	uint64_t usage_all;	/* non-zero: this many keysafes for v1..v4, twice each */
	bool mute;		/* hangs: never answers */
	nkpi_session *sess;	/* the responder */
	bool garbage;		/* answer the next Transport with junk */
	bool garbage_hs;	/* answer the next HandshakeInit with junk */
	size_t garbage_at;	/* index in kinds[] of the frame answered so */
	/* kind of every frame received (NKP__WIRE__FRAME__KIND_*; 0 unparsable) */
	int kinds[MAX_KINDS];
	size_t n_kinds;
	unsigned dropped; /* frames dropped unanswered */
	unsigned pushes;
	/* what it holds: versions of the first provider, key of the last */
	size_t n_providers;
	uint32_t versions[8];
	uint32_t states[8];
	size_t n_versions;
	uint8_t key[32];
	uint64_t keysafes_v1;
} fake_host;

static char dir[PATH_MAX];
static nkpd_svc s;

static void setup(void)
{
	tu_mkdtemp(dir, sizeof(dir));
	tu_svc_new(&s, dir);
	s.heartbeat_ms = 200;
	cr_assert_eq(nkpd_sync_start(&s), NKP_OK);
}

static void quiesce(const char *name);

static void teardown(void)
{
	quiesce(NULL);
	nkpd_sync_stop(&s);
	tu_svc_free(&s);
	tu_rmrf(dir);
}

/* The timeout only catches a hang: every wait below ends on an event,
 * bounded by a limit scaled for slow machines (wait_for). */
TestSuite(nkpd_reconcile, .init = setup, .fini = teardown, .timeout = 180);

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Seals `m` as the reply to the request `rk` came from, and sends it.
 * Lock held. */
static void reply(fake_host *h, const Nkp__Wire__Message *m, nkpi_session_reply *rk)
{
	size_t len = nkp__wire__message__get_packed_size(m);
	uint8_t *buf = sodium_malloc(len + 1), *frame = NULL;
	size_t flen = 0;

	cr_assert_not_null(buf);
	nkp__wire__message__pack(m, buf);
	cr_assert_eq(nkpi_session_seal_reply(h->sess, rk, buf, len, &frame, &flen), NKP_OK);
	nkp_secure_free(buf);
	nng_send(h->sock, frame, flen, 0);
	free(frame);
}

/* Opens a request as nkp-hostd does. Lock held. *buf is sodium_malloc'd
 * (nkp_secure_free) on success; a handshake is answered here (*buf NULL). */
static nkp_err open_request(fake_host *h, const uint8_t *frame, size_t len, uint8_t **buf,
			    size_t *blen, nkpi_session_reply *rk)
{
	uint8_t *b, *hs = NULL;
	size_t hslen = 0;
	nkp_err err;

	*buf = NULL;
	b = sodium_malloc(len + 1);
	cr_assert_not_null(b);
	err = nkpi_session_open_request(h->sess, frame, len, b, len + 1, blen, rk, &hs, &hslen);
	if (err != NKP_OK || hs != NULL) {
		nkp_secure_free(b);
	}
	if (hs != NULL) {
		nng_send(h->sock, hs, hslen, 0);
		free(hs);
	} else if (err == NKP_OK) {
		*buf = b;
	}
	return err;
}

static void fill_usage(fake_host *h, Nkp__Wire__VersionUsage *u, Nkp__Wire__VersionUsage **up,
		       uint8_t *pid)
{
	nkp__wire__version_usage__init(u);
	u->provider_id.data = pid;
	u->provider_id.len = 16;
	u->version = 1;
	u->keysafes = h->keysafes_v1;
	u->unwrapped = 3;
	*up = u;
}

/* The pair and digest the host reports: its own, or its lie. */
static void report_pair(fake_host *h, uint64_t *epoch, uint64_t *counter,
			ProtobufCBinaryData *digest)
{
	*epoch = h->lie ? h->lie_epoch : h->epoch;
	*counter = h->lie ? h->lie_counter : h->applied;
	digest->data = h->digest;
	digest->len = h->have_digest && !h->lie ? NKPI_DIGEST_BYTES : 0;
}

static void on_push(fake_host *h, const Nkp__Wire__Push *p, Nkp__Wire__Message *out,
		    Nkp__Wire__PushAck *ack, Nkp__Wire__Refusal *ref)
{
	Nkp__Wire__DesiredState *ds =
		nkp__wire__desired_state__unpack(NULL, p->desired.len, p->desired.data);

	cr_assert_not_null(ds);
	if (p->boot_nonce.len != 16 || memcmp(p->boot_nonce.data, h->boot_nonce, 16) != 0 ||
	    (!p->resync && h->epoch != 0 && (ds->epoch != h->epoch || ds->counter <= h->applied))) {
		ref->challenge = p->challenge;
		ref->code = NKP_ERR_REPLAY;
		ref->message = "stale push";
		ref->boot_nonce.data = h->boot_nonce;
		ref->boot_nonce.len = 16;
		report_pair(h, &ref->applied_epoch, &ref->applied_generation, &ref->applied_digest);
		out->body_case = NKP__WIRE__MESSAGE__BODY_REFUSAL;
		out->refusal = ref;
		nkp__wire__desired_state__free_unpacked(ds, NULL);
		return;
	}
	h->pushes++;
	h->applied = ds->counter;
	h->epoch = ds->epoch;
	h->have_digest = true;
	nkpi_desired_digest(p->desired.data, p->desired.len, h->digest);
	h->n_providers = ds->n_providers;
	h->n_versions = 0;
	for (size_t i = 0; i < ds->n_providers && i < 1; i++) {
		for (size_t j = 0; j < ds->providers[i]->n_versions && j < 8; j++) {
			h->versions[j] = ds->providers[i]->versions[j]->version;
			h->states[j] = ds->providers[i]->versions[j]->state;
			memcpy(h->key, ds->providers[i]->versions[j]->key.data, 32);
			h->n_versions++;
		}
	}
	nkp__wire__desired_state__free_unpacked(ds, NULL);
	ack->challenge = p->challenge;
	report_pair(h, &ack->applied_epoch, &ack->applied_generation, &ack->applied_digest);
	ack->boot_nonce.data = h->boot_nonce;
	ack->boot_nonce.len = 16;
	out->body_case = NKP__WIRE__MESSAGE__BODY_PUSH_ACK;
	out->push_ack = ack;
}

static void on_hello(fake_host *h, const Nkp__Wire__Hello *hello, Nkp__Wire__Message *out,
		     Nkp__Wire__Status *st, Nkp__Wire__VersionUsage *u,
		     Nkp__Wire__VersionUsage **up, uint8_t *pid)
{
	st->challenge = hello->challenge;
	st->boot_nonce.data = h->boot_nonce;
	st->boot_nonce.len = 16;
	report_pair(h, &st->applied_epoch, &st->applied_generation, &st->applied_digest);
	st->host_name = h->name_claim != NULL ? (char *)h->name_claim : h->name;
	st->tpm = h->tpm_claim;
	if (h->usage_all > 0 && s.n_providers > 0) {
		/* v1..v4 of the first provider (pushed or not), each twice */
		memcpy(pid, s.providers[0]->id, 16);
		for (size_t i = 0; i < 8; i++) {
			fill_usage(h, &u[i], &up[i], pid);
			u[i].version = (uint32_t)(i % 4 + 1);
			u[i].keysafes = h->usage_all;
		}
		st->usage = up;
		st->n_usage = 8;
	} else if (h->keysafes_v1 > 0 && s.n_providers > 0) {
		memcpy(pid, s.providers[0]->id, 16);
		fill_usage(h, u, up, pid);
		st->usage = up;
		st->n_usage = 1;
	}
	out->body_case = NKP__WIRE__MESSAGE__BODY_STATUS;
	out->status = st;
}

/* Answers one request. Lock held. */
static void serve(fake_host *h, const uint8_t *frame, size_t len, int kind)
{
	uint8_t *buf = NULL, pid[16];
	size_t blen = 0;
	Nkp__Wire__Message *m, out = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Status st = NKP__WIRE__STATUS__INIT;
	Nkp__Wire__PushAck ack = NKP__WIRE__PUSH_ACK__INIT;
	Nkp__Wire__Refusal ref = NKP__WIRE__REFUSAL__INIT;
	Nkp__Wire__VersionUsage u[8], *up[8];
	nkpi_session_reply rk;
	nkp_err err = open_request(h, frame, len, &buf, &blen, &rk);

	(void)kind;
	if (err != NKP_OK) {
		h->dropped++; /* no answer: nkpd times out */
		return;
	}
	if (buf == NULL) {
		return; /* a handshake, answered */
	}
	m = nkp__wire__message__unpack(NULL, blen, buf);
	cr_assert_not_null(m);
	if (m->body_case == NKP__WIRE__MESSAGE__BODY_HELLO) {
		on_hello(h, m->hello, &out, &st, u, up, pid);
	} else {
		cr_assert_eq(m->body_case, NKP__WIRE__MESSAGE__BODY_PUSH);
		on_push(h, m->push, &out, &ack, &ref);
	}
	reply(h, &out, &rk);
	nkpi_session_reply_wipe(&rk);
	nkp__wire__message__free_unpacked(m, NULL);
	nkp_secure_free(buf);
}

static int frame_kind(const uint8_t *frame, size_t len)
{
	Nkp__Wire__Frame *f = nkp__wire__frame__unpack(NULL, len, frame);
	int kind = f != NULL ? (int)f->kind_case : 0;

	nkp__wire__frame__free_unpacked(f, NULL);
	return kind;
}

/* Not a frame at all: protobuf varints of more than ten bytes. */
static void send_garbage(fake_host *h)
{
	uint8_t junk[32];

	memset(junk, 0xff, sizeof(junk));
	nng_send(h->sock, junk, sizeof(junk), 0);
}

static void *host_thread(void *arg)
{
	fake_host *h = arg;

	for (;;) {
		nng_msg *msg = NULL;
		const uint8_t *body;
		size_t len;
		int kind;

		if (nng_recvmsg(h->sock, &msg, 0) != 0) {
			break;
		}
		body = nng_msg_body(msg);
		len = nng_msg_len(msg);
		kind = frame_kind(body, len);
		pthread_mutex_lock(&h->lock);
		if (h->n_kinds < MAX_KINDS) {
			h->kinds[h->n_kinds] = kind;
		}
		h->n_kinds++;
		if (h->mute) {
			/* hangs */
		} else if ((h->garbage && kind == NKP__WIRE__FRAME__KIND_TRANSPORT) ||
			   (h->garbage_hs && kind == NKP__WIRE__FRAME__KIND_INIT)) {
			h->garbage = h->garbage_hs = false;
			h->garbage_at = h->n_kinds - 1;
			send_garbage(h);
		} else {
			serve(h, body, len, kind);
		}
		pthread_mutex_unlock(&h->lock);
		nng_msg_free(msg);
	}
	return NULL;
}

static void host_listen(fake_host *h)
{
	cr_assert_eq(nng_rep0_open(&h->sock), 0);
	cr_assert_eq(nng_listen(h->sock, h->url, NULL, 0), 0);
	cr_assert_eq(pthread_create(&h->thread, NULL, host_thread, h), 0);
}

/* A fake host pinned to `service_pub` (NULL: our service). */
static fake_host *host_start(const char *name, const uint8_t *service_pub)
{
	fake_host *h = calloc(1, sizeof(*h));

	snprintf(h->name, sizeof(h->name), "%s", name);
	snprintf(h->url, sizeof(h->url), "ipc://%s/%s.sock", dir, name);
	pthread_mutex_init(&h->lock, NULL);
	randombytes_buf(h->boot_nonce, 16);
	cr_assert_eq(nkp_identity_generate(&h->id), NKP_OK);
	h->service_pub = service_pub ? service_pub : nkp_identity_public(s.identity);
	cr_assert_eq(nkpi_session_new(h->id, h->service_pub, true, &h->sess), NKP_OK);
	host_listen(h);
	return h;
}

/* nng 1.5.2 (Debian 12) wedges its reaper for good when a connection is
 * closed on our side just as a message header has arrived on it (ipc and
 * tcp transports: the read of the body is then never finished), and from
 * then on every nng_close() in the process hangs. So the test closes a
 * fake host, or nkpd's sockets at teardown, only while nkpd has no request
 * in flight to it and its next one is held back until the test lets it go
 * (HOLD_MS: far longer than any test; a restarted host is resumed at
 * once): the order does not depend on the machine's speed, and nkpd finds
 * the host gone as it would have. nkpd and nkp-hostd bound their own stop
 * (nkpi_stop_limit). */
#define HOLD_MS (3600u * 1000u)
/* A restarted host's next request: soon, but after nkpd has seen the old
 * connection go (sooner, it is sent on the old pipe, dropped, and only
 * retried after the request timeout). */
#define RESUME_MS 250u

static long wait_scale(void);
static void sleep_ms(long ms);

/* Waits (bounded) until nkpd has no request in flight to host NAME (NULL:
 * to any host), and holds its next one back (HOLD_MS, or until resume()). */
static void quiesce(const char *name)
{
	for (long t = 0; t < 5000 * wait_scale(); t += 5) {
		bool idle = true;

		pthread_mutex_lock(&s.lock);
		for (size_t i = 0; i < s.n_hosts; i++) {
			if (name == NULL || strcmp(s.hosts[i]->conf.name, name) == 0) {
				idle = nkpd_sync_host_quiet(&s, s.hosts[i], HOLD_MS) && idle;
			}
		}
		pthread_mutex_unlock(&s.lock);
		if (idle) {
			return;
		}
		sleep_ms(5);
	}
}

/* Lets nkpd's requests to host NAME go again (in RESUME_MS). */
static void resume(const char *name)
{
	pthread_mutex_lock(&s.lock);
	for (size_t i = 0; i < s.n_hosts; i++) {
		if (strcmp(s.hosts[i]->conf.name, name) == 0) {
			nkpd_sync_host_resume(&s, s.hosts[i], RESUME_MS);
		}
	}
	pthread_mutex_unlock(&s.lock);
}

static void host_stop(fake_host *h)
{
	quiesce(h->name);
	nng_close(h->sock);
	pthread_join(h->thread, NULL);
	nkpi_session_free(h->sess);
	nkp_identity_free(h->id);
	free(h);
}

static Nkp__Admin__Response *call(Nkp__Admin__Request *q)
{
	return tu_call(&s, q);
}

static void enrol(fake_host *h)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostAddRequest hr = NKP__ADMIN__HOST_ADD_REQUEST__INIT;
	Nkp__Admin__Response *r;

	hr.name = h->name;
	hr.address = h->url;
	hr.public_key.data = (uint8_t *)nkp_identity_public(h->id);
	hr.public_key.len = 32;
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_ADD;
	q.host_add = &hr;
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
}

static bool all_in_sync(void)
{
	bool ok = true;

	pthread_mutex_lock(&s.lock);
	for (size_t i = 0; i < s.n_hosts; i++) {
		ok = ok && nkpd_host_in_sync(&s, s.hosts[i]);
	}
	pthread_mutex_unlock(&s.lock);
	return ok;
}

/* IT_WAIT_SCALE (as the integration tests read it; .ci/run sets it by
 * build and load): how much longer than on an idle machine a limit may
 * take. */
static long wait_scale(void)
{
	const char *v = getenv("IT_WAIT_SCALE");
	long k = v != NULL ? strtol(v, NULL, 10) : 1;

	return k < 1 ? 1 : k > 20 ? 20 : k;
}

/* Polls `cond` until it holds, for at most `ms` on an idle machine. */
static bool wait_for(bool (*cond)(void), long ms)
{
	ms *= wait_scale();
	for (long t = 0; t < ms; t += 20) {
		if (cond()) {
			return true;
		}
		sleep_ms(20);
	}
	return cond();
}

static Nkp__Admin__RotationInfo *rotate(const char *name, unsigned timeout, bool force,
					Nkp__Admin__Response **keep)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRotateRequest rr = NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT;
	Nkp__Admin__RotationStatusRequest rs = NKP__ADMIN__ROTATION_STATUS_REQUEST__INIT;

	rr.name = (char *)name;
	rr.timeout_seconds = timeout;
	rr.force = force;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_ROTATE;
	q.provider_rotate = &rr;
	*keep = call(&q);
	cr_assert_eq((*keep)->code, 0, "%s", (*keep)->message);
	rs.name = (char *)name;
	q.op_case = NKP__ADMIN__REQUEST__OP_ROTATION_STATUS;
	q.rotation_status = &rs;
	for (int i = 0; i < 500 && strcmp((*keep)->rotation->state, "waiting") == 0; i++) {
		sleep_ms(20);
		nkp__admin__response__free_unpacked(*keep, NULL);
		*keep = call(&q);
	}
	return (*keep)->rotation;
}

static uint32_t host_state_of(fake_host *h, uint32_t version)
{
	uint32_t st = 0;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n_versions; i++) {
		if (h->versions[i] == version) {
			st = h->states[i];
		}
	}
	pthread_mutex_unlock(&h->lock);
	return st;
}

Test(nkpd_reconcile, every_host_receives_the_desired_state)
{
	fake_host *h[3];
	uint8_t key[32];

	for (int i = 0; i < 3; i++) {
		char n[8];

		snprintf(n, sizeof(n), "h%d", i);
		h[i] = host_start(n, NULL);
		enrol(h[i]);
	}
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	nkp_key_export(s.providers[0]->versions[0].key, key);
	for (int i = 0; i < 3; i++) {
		pthread_mutex_lock(&h[i]->lock);
		cr_assert_eq(h[i]->applied, s.generation);
		cr_assert_eq(h[i]->n_providers, 1);
		cr_assert_eq(h[i]->versions[0], 1);
		cr_assert_eq(h[i]->states[0], NKP_VERSION_ACTIVE);
		cr_assert_arr_eq(h[i]->key, key, 32);
		pthread_mutex_unlock(&h[i]->lock);
	}
	sodium_memzero(key, sizeof(key));
	for (int i = 0; i < 3; i++) {
		host_stop(h[i]);
	}
}

Test(nkpd_reconcile, a_push_of_more_providers_than_the_common_case_reaches_the_host_whole)
{
	fake_host *h = host_start("many", NULL);

	enrol(h);
	/* More than PUSH_STACK_PROVIDERS: the push's arrays come from the heap. */
	for (int i = 0; i < 11; i++) {
		char n[16];

		snprintf(n, sizeof(n), "p%02d", i);
		cr_assert_eq(tu_create(&s, n, i == 0), 0);
	}
	cr_assert(wait_for(all_in_sync, 5000));
	pthread_mutex_lock(&h->lock);
	cr_assert_eq(h->applied, s.generation);
	cr_assert_eq(h->n_providers, 11);
	pthread_mutex_unlock(&h->lock);
	host_stop(h);
}

Test(nkpd_reconcile, rotation_is_promoted_once_every_host_has_the_staged_version)
{
	fake_host *a = host_start("a", NULL), *b = host_start("b", NULL);
	Nkp__Admin__Response *keep;
	Nkp__Admin__RotationInfo *r;

	enrol(a);
	enrol(b);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	r = rotate("prod", 5, false, &keep);
	cr_assert_str_eq(r->state, "promoted", "%s", r->message);
	cr_assert_eq(r->acked, 2);
	cr_assert_eq(r->total, 2);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(all_in_sync, 5000));
	cr_assert_eq(host_state_of(a, 2), NKP_VERSION_ACTIVE);
	cr_assert_eq(host_state_of(b, 1), NKP_VERSION_DECRYPT_ONLY);
	host_stop(a);
	host_stop(b);
}

Test(nkpd_reconcile, rotation_fails_at_its_deadline_naming_the_silent_host)
{
	fake_host *a = host_start("alpha", NULL), *c = host_start("charlie", NULL);
	Nkp__Admin__Response *keep;
	Nkp__Admin__RotationInfo *r;

	enrol(a);
	enrol(c);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	pthread_mutex_lock(&c->lock);
	c->mute = true;
	pthread_mutex_unlock(&c->lock);
	r = rotate("prod", 1, false, &keep);
	cr_assert_str_eq(r->state, "failed");
	cr_assert(strstr(r->message, "charlie") != NULL, "%s", r->message);
	cr_assert(strstr(r->message, "alpha") == NULL, "%s", r->message);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert_eq(nkpd_model_version_find(nkpd_model_provider_find(&s, "prod"), 2)->state,
		     NKP_VERSION_STAGED);
	cr_assert_eq(host_state_of(a, 2), NKP_VERSION_STAGED);

	r = rotate("prod", 1, true, &keep);
	cr_assert_str_eq(r->state, "promoted", "%s", r->message);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert_eq(nkpd_model_version_find(nkpd_model_provider_find(&s, "prod"), 2)->state,
		     NKP_VERSION_ACTIVE);

	pthread_mutex_lock(&c->lock);
	c->mute = false;
	pthread_mutex_unlock(&c->lock);
	cr_assert(wait_for(all_in_sync, 15000));
	cr_assert_eq(host_state_of(c, 2), NKP_VERSION_ACTIVE);
	host_stop(a);
	host_stop(c);
}

Test(nkpd_reconcile, a_restarted_host_is_pushed_again_with_its_new_boot_nonce)
{
	fake_host *a = host_start("a", NULL);
	unsigned pushes;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	pthread_mutex_lock(&a->lock);
	randombytes_buf(a->boot_nonce, 16);
	pushes = a->pushes;
	pthread_mutex_unlock(&a->lock);
	cr_assert_eq(tu_create(&s, "more", false), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	pthread_mutex_lock(&a->lock);
	cr_assert_eq(a->applied, s.generation);
	cr_assert_eq(a->pushes, pushes + 1);
	pthread_mutex_unlock(&a->lock);
	host_stop(a);
}

static bool first_host_refused(void)
{
	bool r;

	pthread_mutex_lock(&s.lock);
	r = s.n_hosts > 0 && s.hosts[0]->st.health == HEALTH_UNREACHABLE;
	pthread_mutex_unlock(&s.lock);
	return r;
}

/* It drops our handshake unanswered, as it would a stranger's: to us it
 * is unreachable, and it never gets a key. */
Test(nkpd_reconcile, a_host_pinned_to_another_service_gets_nothing_and_is_unreachable)
{
	nkp_identity *other = NULL;
	fake_host *rogue;
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostListRequest hl = NKP__ADMIN__HOST_LIST_REQUEST__INIT;
	Nkp__Admin__Response *r;

	cr_assert_eq(nkp_identity_generate(&other), NKP_OK);
	rogue = host_start("rogue", nkp_identity_public(other));
	enrol(rogue);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(first_host_refused, 5000));
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_LIST;
	q.host_list = &hl;
	r = call(&q);
	cr_assert_str_eq(r->hosts->hosts[0]->state, "unreachable");
	cr_assert_neq(r->hosts->hosts[0]->last_error[0], '\0');
	nkp__admin__response__free_unpacked(r, NULL);
	cr_assert_eq(rogue->applied, 0);
	cr_assert_gt(rogue->dropped, 0);
	host_stop(rogue);
	nkp_identity_free(other);
}

static bool usage_seen(void)
{
	bool seen;

	pthread_mutex_lock(&s.lock);
	seen = s.n_hosts > 0 && s.hosts[0]->st.n_usage == 1 &&
	       s.hosts[0]->st.usage[0].keysafes == 2;
	pthread_mutex_unlock(&s.lock);
	return seen;
}

Test(nkpd_reconcile, retire_is_refused_while_a_host_reports_keysafes)
{
	fake_host *a = host_start("a", NULL);
	Nkp__Admin__Response *keep;
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRetireRequest rr = NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT;
	Nkp__Admin__Response *r;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	pthread_mutex_lock(&a->lock);
	a->keysafes_v1 = 2;
	pthread_mutex_unlock(&a->lock);
	cr_assert_str_eq(rotate("prod", 5, false, &keep)->state, "promoted");
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(usage_seen, 5000));
	rr.name = "prod";
	rr.version = 1;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE;
	q.provider_retire = &rr;
	r = call(&q);
	cr_assert_eq(r->code, NKP_ERR_STATE);
	cr_assert(strstr(r->message, "a: 2") != NULL, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
	rr.force = true;
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
	cr_assert(wait_for(all_in_sync, 5000));
	cr_assert_eq(host_state_of(a, 1), 0);
	host_stop(a);
}

/* ---- sessions ---- */

static fake_host *watched; /* the host the conditions below look at */

typedef struct kind_count {
	size_t frames;
	size_t init;
	size_t transport;
} kind_count;

static kind_count kinds_of(fake_host *h, size_t from)
{
	kind_count c = {0, 0, 0};

	pthread_mutex_lock(&h->lock);
	for (size_t i = from; i < h->n_kinds && i < MAX_KINDS; i++) {
		c.frames++;
		c.init += h->kinds[i] == NKP__WIRE__FRAME__KIND_INIT;
		c.transport += h->kinds[i] == NKP__WIRE__FRAME__KIND_TRANSPORT;
	}
	pthread_mutex_unlock(&h->lock);
	return c;
}

static size_t frames_seen(fake_host *h)
{
	size_t n;

	pthread_mutex_lock(&h->lock);
	n = h->n_kinds;
	pthread_mutex_unlock(&h->lock);
	cr_assert_lt(n, MAX_KINDS, "kind log full");
	return n;
}

static int kind_at(fake_host *h, size_t i)
{
	int k;

	pthread_mutex_lock(&h->lock);
	k = h->kinds[i];
	pthread_mutex_unlock(&h->lock);
	return k;
}

static size_t wait_frames_target;

static bool watched_has_frames(void)
{
	return frames_seen(watched) >= wait_frames_target;
}

/* Waits until `h` has received `n` frames in all. */
static bool wait_frames(fake_host *h, size_t n, long ms)
{
	watched = h;
	wait_frames_target = n;
	return wait_for(watched_has_frames, ms);
}

static unsigned first_host_failures(void)
{
	unsigned f;

	pthread_mutex_lock(&s.lock);
	f = s.n_hosts > 0 ? s.hosts[0]->st.failures : 0;
	pthread_mutex_unlock(&s.lock);
	return f;
}

static bool first_host_failed(void)
{
	return first_host_failures() > 0;
}

typedef struct event_scan {
	unsigned push_failed;
	unsigned unreachable;
	unsigned bad_input;
	unsigned conflict;
} event_scan;

static void scan_event(uint64_t seq, const char *json, void *arg)
{
	event_scan *e = arg;

	(void)seq;
	e->push_failed += strstr(json, "\"kind\":\"push.failed\"") != NULL;
	e->unreachable += strstr(json, "\"kind\":\"host.unreachable\"") != NULL;
	e->bad_input += strstr(json, "\"kind\":\"input.bad\"") != NULL;
	e->conflict += strstr(json, "\"kind\":\"host.conflict\"") != NULL;
}

/* The events recorded after `after`; *last (may be NULL) gets the last seq. */
static event_scan events_after(uint64_t after, uint64_t *last)
{
	event_scan e = {0, 0, 0, 0};
	uint64_t l = nkp_eventlog_read(s.events_path, after, scan_event, &e);

	if (last != NULL) {
		*last = l;
	}
	return e;
}

static uint64_t now_ms_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

Test(nkpd_reconcile, a_handshake_comes_first_and_every_request_rides_in_a_transport)
{
	fake_host *a = host_start("a", NULL);
	Nkp__Admin__Response *keep;
	Nkp__Admin__RotationInfo *r;
	kind_count c;
	size_t n;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 3000));
	cr_assert(wait_frames(a, 4, 2000));
	cr_assert_eq(kind_at(a, 0), NKP__WIRE__FRAME__KIND_INIT);
	c = kinds_of(a, 1);
	cr_assert_eq(c.transport, c.frames, "%zu of %zu later frames not Transport", c.init,
		     c.frames);
	pthread_mutex_lock(&a->lock);
	cr_assert(nkpi_session_established(a->sess));
	pthread_mutex_unlock(&a->lock);

	n = frames_seen(a);
	r = rotate("prod", 2, false, &keep);
	cr_assert_str_eq(r->state, "promoted", "%s", r->message);
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(all_in_sync, 2000));
	cr_assert_eq(host_state_of(a, 2), NKP_VERSION_ACTIVE);
	c = kinds_of(a, n);
	cr_assert_gt(c.frames, 0);
	cr_assert_eq(c.transport, c.frames);
	pthread_mutex_lock(&a->lock);
	cr_assert_eq(a->applied, s.generation);
	cr_assert_eq(a->dropped, 0);
	pthread_mutex_unlock(&a->lock);
	cr_assert_eq(first_host_failures(), 0);
	host_stop(a);
}

/* The host restarts: a new process, a new connection, no session, a new
 * boot nonce. */
static void host_restart(fake_host *h)
{
	quiesce(h->name);
	nng_close(h->sock);
	pthread_join(h->thread, NULL);
	pthread_mutex_lock(&h->lock);
	randombytes_buf(h->boot_nonce, 16);
	nkpi_session_free(h->sess);
	h->sess = NULL;
	cr_assert_eq(nkpi_session_new(h->id, h->service_pub, true, &h->sess), NKP_OK);
	pthread_mutex_unlock(&h->lock);
	host_listen(h);
	resume(h->name);
}

/* Enrols `a`, syncs it (`settled` frames seen), restarts it and makes a
 * change: the push must reach it within a second, with no failure counted
 * and no push.failed or host.unreachable event. Returns how many frames it
 * had seen before the change. */
/* Set by restart_then_push(): the restart took longer than nkpd's request
 * timeout allows to call it failure-free. */
static bool restart_slow;

static size_t restart_then_push(fake_host *a, size_t settled)
{
	uint64_t seq, t0, took, back;
	event_scan e;
	unsigned pushes;
	size_t n;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 3000));
	cr_assert(wait_frames(a, settled, 2000));
	(void)events_after(0, &seq);
	n = frames_seen(a);
	t0 = now_ms_mono();
	host_restart(a);
	/* nkpd redials (nng's backoff) and its next heartbeat handshakes. */
	cr_assert(wait_frames(a, n + 2, 10000));
	back = now_ms_mono() - t0;
	pthread_mutex_lock(&a->lock);
	pushes = a->pushes;
	pthread_mutex_unlock(&a->lock);
	t0 = now_ms_mono();
	cr_assert_eq(tu_create(&s, "more", false), 0);
	cr_assert(wait_for(all_in_sync, 3000));
	took = now_ms_mono() - t0;
	pthread_mutex_lock(&a->lock);
	cr_assert_eq(a->applied, s.generation);
	cr_assert_eq(a->pushes, pushes + 1);
	pthread_mutex_unlock(&a->lock);
	/* "No failure" holds when the host is back well within nkpd's request
	 * timeout (3 s): a machine so slow (valgrind, heavy load) that the
	 * restart itself took longer may rightly count the host unreachable. */
	restart_slow = back > 1500;
	if (restart_slow) {
		/* Said on stderr, not with cr_log_warn(): Criterion exits 1
		 * after any warning, all cases passed or not. */
		fprintf(stderr, "note: the restart took %llu ms: failure counts not checked\n",
			(unsigned long long)back);
		return n;
	}
	e = events_after(seq, NULL);
	cr_assert_eq(e.push_failed, 0, "push.failed recorded; in sync after %llu ms",
		     (unsigned long long)took);
	cr_assert_eq(e.unreachable, 0, "host.unreachable recorded; back after %llu ms",
		     (unsigned long long)back);
	cr_assert_lt(took, 1000, "in sync after %llu ms", (unsigned long long)took);
	cr_assert_eq(first_host_failures(), 0);
	return n;
}

Test(nkpd_reconcile, a_restarted_host_gets_a_new_handshake_at_once_without_a_failure)
{
	fake_host *a = host_start("a", NULL);
	size_t n = restart_then_push(a, 3);
	unsigned dropped;

	pthread_mutex_lock(&a->lock);
	cr_assert(nkpi_session_established(a->sess));
	dropped = a->dropped;
	pthread_mutex_unlock(&a->lock);
	/* A heartbeat in flight at the restart may be re-sent by nng under
	 * the old session before nkpd sees the new pipe: dropped, at most
	 * once, and started again at once. (kind_at takes the lock.) */
	cr_assert_leq(dropped, 1);
	if (dropped == 1) {
		cr_assert_eq(kind_at(a, n), NKP__WIRE__FRAME__KIND_TRANSPORT);
		n++;
	}
	/* The reconnected pipe: a handshake, then the request. On a machine
	 * too slow for the restart to be failure-free, the handshake may have
	 * timed out and been made again. */
	cr_assert_eq(kind_at(a, n), NKP__WIRE__FRAME__KIND_INIT);
	while (restart_slow && kind_at(a, n + 1) == NKP__WIRE__FRAME__KIND_INIT) {
		n++;
	}
	cr_assert_eq(kind_at(a, n + 1), NKP__WIRE__FRAME__KIND_TRANSPORT);
	host_stop(a);
}

Test(nkpd_reconcile, a_garbled_reply_counts_a_failure_and_the_next_request_handshakes_anew)
{
	fake_host *a = host_start("a", NULL);
	uint64_t seq;
	event_scan e;
	size_t g;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 3000));
	cr_assert(wait_frames(a, 3, 2000));
	(void)events_after(0, &seq);
	pthread_mutex_lock(&a->lock);
	a->garbage = true;
	pthread_mutex_unlock(&a->lock);
	cr_assert(wait_for(first_host_failed, 2000));
	pthread_mutex_lock(&a->lock);
	cr_assert_not(a->garbage);
	g = a->garbage_at;
	pthread_mutex_unlock(&a->lock);
	cr_assert_eq(kind_at(a, g), NKP__WIRE__FRAME__KIND_TRANSPORT);
	pthread_mutex_lock(&s.lock);
	cr_assert_eq(s.hosts[0]->st.health, HEALTH_REFUSED);
	cr_assert_not(nkpd_host_in_sync(&s, s.hosts[0]));
	pthread_mutex_unlock(&s.lock);
	e = events_after(seq, NULL);
	cr_assert_geq(e.bad_input, 1);

	/* After its backoff, a handshake, then Transport again. */
	cr_assert(wait_frames(a, g + 3, 3000));
	cr_assert_eq(kind_at(a, g + 1), NKP__WIRE__FRAME__KIND_INIT);
	cr_assert_eq(kind_at(a, g + 2), NKP__WIRE__FRAME__KIND_TRANSPORT);
	cr_assert(wait_for(all_in_sync, 2000));
	cr_assert_eq(first_host_failures(), 0);
	host_stop(a);
}

/* A forged answer to a rekey handshake: nkpd keeps its current session
 * and sends the request under it; never anything but a Transport. */
Test(nkpd_reconcile, a_forged_rekey_answer_keeps_the_current_session)
{
	fake_host *a = host_start("a", NULL);
	uint64_t t0 = now_ms_mono();
	size_t g;

	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 3000));
	cr_assert(wait_frames(a, 3, 2000));
	pthread_mutex_lock(&a->lock);
	a->garbage_hs = true;
	pthread_mutex_unlock(&a->lock);
	/* Past the rekey time, before the host's limit. */
	nkpi_session_set_clock_ms(t0 + NKPI_SESSION_REKEY_AFTER_MS + 1000);
	cr_assert(wait_frames(a, frames_seen(a) + 4, 3000));
	pthread_mutex_lock(&a->lock);
	cr_assert_not(a->garbage_hs);
	g = a->garbage_at;
	cr_assert_eq(a->dropped, 0);
	pthread_mutex_unlock(&a->lock);
	cr_assert_eq(kind_at(a, g), NKP__WIRE__FRAME__KIND_INIT);
	cr_assert_eq(kind_at(a, g + 1), NKP__WIRE__FRAME__KIND_TRANSPORT);
	/* The next request rekeys for real. */
	cr_assert_eq(kind_at(a, g + 2), NKP__WIRE__FRAME__KIND_INIT);
	cr_assert_eq(kind_at(a, g + 3), NKP__WIRE__FRAME__KIND_TRANSPORT);
	cr_assert_eq(first_host_failures(), 0);
	nkpi_session_set_clock_ms(0);
	host_stop(a);
}

/* ---- hostile hosts ---- */

static fake_host *liar;

static void set_lie(fake_host *h, uint64_t epoch, uint64_t counter)
{
	pthread_mutex_lock(&h->lock);
	h->lie = true;
	h->lie_epoch = epoch;
	h->lie_counter = counter;
	pthread_mutex_unlock(&h->lock);
}

static const char *state_of_host(size_t i, char *buf, size_t size)
{
	pthread_mutex_lock(&s.lock);
	snprintf(buf, size, "%s", nkpd_host_state_name(&s, s.hosts[i]));
	pthread_mutex_unlock(&s.lock);
	return buf;
}

static bool second_host_in_conflict(void)
{
	char st[32];

	return strcmp(state_of_host(1, st, sizeof(st)), "conflict") == 0;
}

static bool first_host_in_sync(void)
{
	bool ok;

	pthread_mutex_lock(&s.lock);
	ok = nkpd_host_in_sync(&s, s.hosts[0]);
	pthread_mutex_unlock(&s.lock);
	return ok;
}

static bool liar_pushed_after_resync(void)
{
	bool ok;

	pthread_mutex_lock(&liar->lock);
	ok = liar->pushes >= 2;
	pthread_mutex_unlock(&liar->lock);
	return ok && all_in_sync();
}

static void resync(const char *name)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__HostResyncRequest rr = NKP__ADMIN__HOST_RESYNC_REQUEST__INIT;
	Nkp__Admin__Response *r;

	rr.name = (char *)name;
	q.op_case = NKP__ADMIN__REQUEST__OP_HOST_RESYNC;
	q.host_resync = &rr;
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
}

Test(nkpd_reconcile, a_host_reporting_a_generation_near_the_top_is_a_conflict_never_adopted)
{
	fake_host *a = host_start("a", NULL), *b = host_start("b", NULL);
	Nkp__Admin__Response *keep;
	uint64_t gen, last = 0;
	event_scan e;

	enrol(a);
	enrol(b);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	(void)events_after(0, &last);
	/* b claims our epoch and a counter near 2^64. */
	set_lie(b, s.epoch, UINT64_MAX - 1);
	cr_assert(wait_for(second_host_in_conflict, 5000));
	pthread_mutex_lock(&s.lock);
	gen = s.generation;
	pthread_mutex_unlock(&s.lock);
	cr_assert_lt(gen, 1000, "the service adopted nothing (generation %llu)",
		     (unsigned long long)gen);
	/* The honest host still gets every change; the rotation is promoted
	 * without the host in conflict (not in sync, named missing). */
	cr_assert_str_eq(rotate("prod", 2, false, &keep)->state, "failed");
	cr_assert_eq(keep->rotation->n_missing, 1);
	cr_assert_str_eq(keep->rotation->missing[0], "b");
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(first_host_in_sync, 5000));
	cr_assert_eq(host_state_of(a, 2), NKP_VERSION_STAGED);
	/* One event for the streak, no commit loop. */
	sleep_ms(600);
	e = events_after(last, NULL);
	cr_assert_eq(e.conflict, 1);
	pthread_mutex_lock(&s.lock);
	cr_assert_eq(s.generation, gen + 1, "one commit: the staging");
	pthread_mutex_unlock(&s.lock);
	/* Resolved by the operator: the host takes our pair. */
	pthread_mutex_lock(&b->lock);
	b->lie = false;
	pthread_mutex_unlock(&b->lock);
	liar = b;
	resync("b");
	cr_assert(wait_for(liar_pushed_after_resync, 5000));
	pthread_mutex_lock(&b->lock);
	cr_assert_eq(b->epoch, s.epoch);
	cr_assert_eq(b->applied, s.generation);
	pthread_mutex_unlock(&b->lock);
	host_stop(a);
	host_stop(b);
}

Test(nkpd_reconcile, a_host_of_another_epoch_is_a_conflict_until_resynced)
{
	fake_host *a = host_start("a", NULL), *b = host_start("b", NULL);
	uint64_t gen;

	/* b was served by another service: its pair and its refusals name
	 * another epoch. */
	pthread_mutex_lock(&b->lock);
	b->epoch = s.epoch ^ 1u;
	b->applied = 5;
	b->usage_all = UINT64_MAX;
	pthread_mutex_unlock(&b->lock);
	enrol(a);
	enrol(b);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(second_host_in_conflict, 5000));
	cr_assert(wait_for(first_host_in_sync, 5000));
	pthread_mutex_lock(&s.lock);
	gen = s.generation;
	cr_assert_not(nkpd_host_in_sync(&s, s.hosts[1]));
	cr_assert_eq(s.hosts[1]->st.n_usage, 0, "usage of versions never pushed to it counts");
	pthread_mutex_unlock(&s.lock);
	pthread_mutex_lock(&b->lock);
	cr_assert_eq(b->pushes, 0);
	pthread_mutex_unlock(&b->lock);
	liar = b;
	pthread_mutex_lock(&b->lock);
	b->pushes = 1; /* count the resync push as the second */
	pthread_mutex_unlock(&b->lock);
	resync("b");
	cr_assert(wait_for(liar_pushed_after_resync, 5000));
	pthread_mutex_lock(&s.lock);
	cr_assert_eq(s.generation, gen);
	pthread_mutex_unlock(&s.lock);
	host_stop(a);
	host_stop(b);
}

static bool liar_replayed_seen(void)
{
	char st[32];

	return strcmp(state_of_host(1, st, sizeof(st)), "in-sync") != 0;
}

Test(nkpd_reconcile, an_ack_of_an_old_digest_does_not_count_as_in_sync)
{
	fake_host *a = host_start("a", NULL), *b = host_start("b", NULL);
	uint8_t old[NKPI_DIGEST_BYTES];
	Nkp__Admin__Response *keep;

	enrol(a);
	enrol(b);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	cr_assert(wait_for(all_in_sync, 5000));
	pthread_mutex_lock(&b->lock);
	memcpy(old, b->digest, sizeof(old));
	pthread_mutex_unlock(&b->lock);
	/* b replays: it acks every later push with the digest it had. */
	pthread_mutex_lock(&b->lock);
	b->lie = true;
	b->lie_epoch = b->epoch;
	b->lie_counter = b->applied;
	pthread_mutex_unlock(&b->lock);
	cr_assert_str_eq(rotate("prod", 2, false, &keep)->state, "failed");
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(liar_replayed_seen, 2000));
	cr_assert(first_host_in_sync());
	host_stop(a);
	host_stop(b);
}

static bool usage_reported_by_second(void)
{
	bool seen;

	pthread_mutex_lock(&s.lock);
	seen = s.n_hosts > 1 && s.hosts[1]->st.n_usage > 0;
	pthread_mutex_unlock(&s.lock);
	return seen;
}

Test(nkpd_reconcile, absurd_usage_is_bounded_and_cannot_hide_another_hosts_use)
{
	fake_host *a = host_start("a", NULL), *b = host_start("b", NULL);
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRetireRequest rr = NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT;
	Nkp__Admin__Response *r, *keep;

	enrol(a);
	enrol(b);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	pthread_mutex_lock(&a->lock);
	a->keysafes_v1 = 2;
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_lock(&b->lock);
	b->usage_all = UINT64_MAX; /* v1..v4, each twice */
	pthread_mutex_unlock(&b->lock);
	cr_assert_str_eq(rotate("prod", 5, false, &keep)->state, "promoted");
	nkp__admin__response__free_unpacked(keep, NULL);
	cr_assert(wait_for(usage_reported_by_second, 5000));
	pthread_mutex_lock(&s.lock);
	/* Only v1 and v2 were pushed; one entry each; capped. */
	cr_assert_eq(s.hosts[1]->st.n_usage, 2);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(s.hosts[1]->st.usage[i].keysafes, NKPD_USAGE_CAP);
		cr_assert_leq(s.hosts[1]->st.usage[i].version, 2);
	}
	pthread_mutex_unlock(&s.lock);
	rr.name = "prod";
	rr.version = 1;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE;
	q.provider_retire = &rr;
	r = call(&q);
	cr_assert_eq(r->code, NKP_ERR_STATE, "%s", r->message);
	cr_assert(strstr(r->message, "a: 2") != NULL, "%s", r->message);
	cr_assert(strstr(r->message, "b: 4294967296") != NULL, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
	host_stop(a);
	host_stop(b);
}

Test(nkpd_reconcile, retire_asks_hosts_for_their_usage_first)
{
	fake_host *a = host_start("a", NULL);
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderRetireRequest rr = NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT;
	Nkp__Admin__Response *r, *keep;

	s.heartbeat_ms = 60000; /* no heartbeat would bring the news in time */
	enrol(a);
	cr_assert_eq(tu_create(&s, "prod", true), 0);
	pthread_mutex_lock(&a->lock);
	a->keysafes_v1 = 2;
	pthread_mutex_unlock(&a->lock);
	cr_assert_str_eq(rotate("prod", 5, false, &keep)->state, "promoted");
	nkp__admin__response__free_unpacked(keep, NULL);
	rr.name = "prod";
	rr.version = 1;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_RETIRE;
	q.provider_retire = &rr;
	r = call(&q);
	cr_assert_eq(r->code, NKP_ERR_STATE, "%s", r->message);
	cr_assert(strstr(r->message, "a: 2") != NULL, "%s", r->message);
	cr_assert_eq(r->result_case, NKP__ADMIN__RESPONSE__RESULT_USAGE_REFUSAL);
	cr_assert_eq(r->usage_refusal->n_hosts, 1);
	cr_assert_str_eq(r->usage_refusal->hosts[0]->host, "a");
	cr_assert_eq(r->usage_refusal->hosts[0]->version, 1);
	cr_assert_eq(r->usage_refusal->hosts[0]->keysafes, 2);
	cr_assert_eq(r->usage_refusal->n_not_answered, 0);
	nkp__admin__response__free_unpacked(r, NULL);
	/* The rewrap happens; retire sees it at once, without --force. */
	pthread_mutex_lock(&a->lock);
	a->keysafes_v1 = 0;
	pthread_mutex_unlock(&a->lock);
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
	host_stop(a);
}

static bool first_host_claimed_tpm(void)
{
	bool seen;

	pthread_mutex_lock(&s.lock);
	seen = s.n_hosts > 0 && s.hosts[0]->st.tpm && nkpd_host_in_sync(&s, s.hosts[0]);
	pthread_mutex_unlock(&s.lock);
	return seen;
}

Test(nkpd_reconcile, a_tpm_claim_does_not_bring_tpm_only_providers_and_names_are_sanitised)
{
	fake_host *a = host_start("a", NULL);
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderCreateRequest cr = NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT;
	Nkp__Admin__ProviderShowRequest sr = NKP__ADMIN__PROVIDER_SHOW_REQUEST__INIT;
	Nkp__Admin__Response *r;

	a->tpm_claim = true;
	a->name_claim = "evil\x1b]0;owned\x07\x1b[31mred\x1b[0m\x9b"
			"2J\x7f\xc2\x9b"
			"x";
	enrol(a);
	cr.name = "sealed";
	cr.tpm_only = true;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE;
	q.provider_create = &cr;
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	nkp__admin__response__free_unpacked(r, NULL);
	cr_assert(wait_for(first_host_claimed_tpm, 5000));
	pthread_mutex_lock(&a->lock);
	cr_assert_eq(a->n_providers, 0, "a tpm-only provider reached a host on its claim");
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_lock(&s.lock);
	cr_assert_str_eq(s.hosts[0]->st.host_name, "evilred?2Jx");
	pthread_mutex_unlock(&s.lock);
	sr.name = "sealed";
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_SHOW;
	q.provider_show = &sr;
	r = call(&q);
	cr_assert_eq(r->code, 0, "%s", r->message);
	cr_assert_eq(r->provider->hosts_total, 0);
	cr_assert(strstr(r->provider->scope_note, "no host is attested") != NULL, "%s",
		  r->provider->scope_note);
	nkp__admin__response__free_unpacked(r, NULL);
	host_stop(a);
}
