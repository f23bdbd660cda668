/* fuzz-hostapi: nkp-hostd's local API (proto/hostapi.proto) through
 * localapi_handle(), what the local socket runs for every request from an
 * allowed peer, against a host on a scratch state directory that holds the
 * fixed provider (versions 1 active and 2 staged, pushed at start). The
 * seeds carry keysafes made under that provider (gen-corpus.c), so unwrap,
 * rewrap, rekey and component requests get past authentication. */
#include "fuzz-util.h"

#include "daemon.h"
#include "fuzz-session.h"
#include "wire.pb-c.h"

static char *dir;
static nkp_hostd *host;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
	nkp_hostd_close(host);
	fz_rmrf(dir);
	free(dir);
}

/* Pushes the fixed provider through the service protocol. */
static void push_provider(nkp_identity *service, const uint8_t host_pub[static 32])
{
	Nkp__Wire__Message m = NKP__WIRE__MESSAGE__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	uint8_t desired[512];
	Nkp__Wire__ProviderKeys pk = NKP__WIRE__PROVIDER_KEYS__INIT, *pks[1] = {&pk};
	Nkp__Wire__VersionKey vk[2] = {NKP__WIRE__VERSION_KEY__INIT, NKP__WIRE__VERSION_KEY__INIT};
	Nkp__Wire__VersionKey *vks[2] = {&vk[0], &vk[1]};
	uint8_t id[NKP_ID_BYTES], keys[2][NKP_KEY_BYTES], challenge[16] = {0};
	uint8_t *msg, *frame = NULL, *reply = NULL, *opened = NULL;
	size_t len, framelen = 0, replylen = 0, openedlen = 0;
	nkp_hostd_status *st = NULL;
	nkpi_session *ini = NULL;
	Nkp__Wire__Message *r;

	fz_provider_id(id);
	fz_check(nkp_hostd_status_get(host, &st), "status");
	for (int i = 0; i < 2; i++) {
		memset(keys[i], FZ_PRIMARY_BYTE + i, NKP_KEY_BYTES);
		vk[i].version = (uint32_t)i + 1;
		vk[i].state = i == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_STAGED;
		vk[i].key.data = keys[i];
		vk[i].key.len = NKP_KEY_BYTES;
		vk[i].created_unix = 1700000000u;
	}
	pk.id.data = id;
	pk.id.len = NKP_ID_BYTES;
	pk.name = (char *)"fuzz";
	pk.is_default = true;
	pk.backed_up = true;
	pk.versions = vks;
	pk.n_versions = 2;
	push.challenge.data = challenge;
	push.challenge.len = sizeof(challenge);
	push.boot_nonce.data = st->boot_nonce;
	push.boot_nonce.len = sizeof(st->boot_nonce);
	ds.epoch = 1;
	ds.counter = 1;
	ds.providers = pks;
	ds.n_providers = 1;
	push.desired.len = nkp__wire__desired_state__pack(&ds, desired);
	push.desired.data = desired;
	m.body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m.push = &push;
	len = nkp__wire__message__get_packed_size(&m);
	msg = sodium_malloc(len);
	if (msg == NULL) {
		abort();
	}
	nkp__wire__message__pack(&m, msg);
	sodium_memzero(keys, sizeof(keys));
	sodium_memzero(desired, sizeof(desired));
	fz_check(fz_host_seal(host, service, &ini, msg, len, &frame, &framelen), "seal");
	fz_check(nkp_hostd_handle_frame(host, frame, framelen, &reply, &replylen), "push");
	opened = sodium_malloc(replylen + 1);
	if (opened == NULL) {
		abort();
	}
	fz_check(nkpi_session_open_reply(ini, reply, replylen, opened, replylen + 1, &openedlen),
		 "ack");
	r = nkp__wire__message__unpack(NULL, openedlen, opened);
	if (r == NULL || r->body_case != NKP__WIRE__MESSAGE__BODY_PUSH_ACK) {
		fprintf(stderr, "fuzz harness: the push was refused\n");
		abort();
	}
	nkp__wire__message__free_unpacked(r, NULL);
	nkp_secure_free(opened);
	nkp_hostd_buf_free(reply, replylen);
	free(frame);
	nkpi_session_free(ini);
	nkp_secure_free(msg);
	nkp_hostd_status_free(st);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	nkp_hostd_config cfg = {.host_name = "fuzz-host"};
	uint8_t pub[NKP_PUBKEY_BYTES];
	nkp_identity *service;

	(void)argc;
	(void)argv;
	fz_init();
	dir = fz_tmpdir();
	service = fz_identity(FZ_SERVICE_SECRET);
	cfg.state_dir = dir;
	cfg.events_path = ""; /* events to the (silenced) log only */
	fz_check(nkp_hostd_init(&cfg, nkp_identity_public(service), pub), "hostd init");
	fz_check(nkp_hostd_open(&cfg, &host), "hostd open");
	push_provider(service, pub);
	nkp_identity_free(service);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *out = NULL;
	size_t outlen = 0;

	if (localapi_handle(host, data, size, &out, &outlen) == NKP_OK) {
		nkp_secure_free(out);
	}
	return 0;
}
