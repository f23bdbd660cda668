/* Writes the seed corpora of the fuzz targets:
 *
 *   gen-corpus DIR    ->  DIR/<target>/<seed-name>
 *
 * Seeds are made with the same fixed identities and keys as the targets
 * (fuzz-util.h), so sealed frames, keysafes, sealed images and backups
 * open in the targets. Sealing draws fresh nonces and ephemeral keys, so a
 * rebuilt corpus differs byte for byte but covers the same ground. */
#include "fuzz-keylog.h"
#include "fuzz-noise.h"
#include "fuzz-session.h"

#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "admin.pb-c.h"
#include "hostapi.pb-c.h"
#include "internal.h"
#include "svcstate.pb-c.h"
#include "token.h"
#include "wire.pb-c.h"

static const char *root;

static void put(const char *target, const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	fp = fopen(path, "wb");
	if (fp == NULL || (len > 0 && fwrite(buf, 1, len, fp) != len) || fclose(fp) != 0) {
		perror(path);
		exit(1);
	}
	/* fuzz-pbstrict checks the bytes of every protobuf target. */
	if (strcmp(target, "fuzz-frame") == 0 || strcmp(target, "fuzz-message") == 0 ||
	    strcmp(target, "fuzz-admin") == 0 || strcmp(target, "fuzz-hostapi") == 0) {
		snprintf(path, sizeof(path), "%s-%s", target + 5, name);
		put("fuzz-pbstrict", path, buf, len);
	}
}

/* ---- wire messages ---- */

static uint8_t *pack_msg(const Nkp__Wire__Message *m, size_t *len)
{
	uint8_t *b;

	*len = nkp__wire__message__get_packed_size(m);
	b = malloc(*len + 1);
	if (b == NULL) {
		abort();
	}
	nkp__wire__message__pack(m, b);
	return b;
}

/* Hellos carrying a seal policy (one approval, of the shapes nkpd sends:
 * the host takes it apart before any TPM is asked) and an unbind. */
static void seal_policy_seeds(Nkp__Wire__Message *m, Nkp__Wire__Hello *hello)
{
	static uint8_t key[90] = {0, 88, 0, 0x23}, ref[8] = {1, 2}, digest[32] = {3},
		       sig[72] = {0, 0x18, 0, 0x0b, 0, 32};
	Nkp__Atrest__SealPolicy p = NKP__ATREST__SEAL_POLICY__INIT;
	Nkp__Atrest__Approval a = NKP__ATREST__APPROVAL__INIT, *ap[1] = {&a};
	uint8_t *b;
	size_t len;

	a.pcr_mask = 1u << 16;
	a.pcr_digest = (ProtobufCBinaryData){sizeof(digest), digest};
	a.signature = (ProtobufCBinaryData){sizeof(sig), sig};
	a.name = (char *)"base1";
	p.key = (ProtobufCBinaryData){sizeof(key), key};
	p.ref = (ProtobufCBinaryData){sizeof(ref), ref};
	p.approvals = ap;
	p.n_approvals = 1;
	hello->seal_policy = &p;
	b = pack_msg(m, &len);
	put("fuzz-message", "hello-seal-policy", b, len);
	free(b);
	hello->seal_policy = NULL;
	hello->seal_unbind = true;
	b = pack_msg(m, &len);
	put("fuzz-message", "hello-seal-unbind", b, len);
	free(b);
	hello->seal_unbind = false;
}

/* Every Message type; each is written as a message seed and, sealed by
 * the service to the host, as a frame seed. */
static void wire_seeds(void)
{
	static uint8_t ch16[16] = {1, 2, 3}, nonce[16] = {9, 8, 7}, id[16], keys[2][32];
	Nkp__Wire__Message m[5] = {NKP__WIRE__MESSAGE__INIT, NKP__WIRE__MESSAGE__INIT,
				   NKP__WIRE__MESSAGE__INIT, NKP__WIRE__MESSAGE__INIT,
				   NKP__WIRE__MESSAGE__INIT};
	Nkp__Wire__Hello hello = NKP__WIRE__HELLO__INIT;
	Nkp__Wire__Status status = NKP__WIRE__STATUS__INIT;
	Nkp__Wire__Push push = NKP__WIRE__PUSH__INIT;
	Nkp__Wire__DesiredState ds = NKP__WIRE__DESIRED_STATE__INIT;
	uint8_t desired[512];
	Nkp__Wire__PushAck ack = NKP__WIRE__PUSH_ACK__INIT;
	Nkp__Wire__Refusal refusal = NKP__WIRE__REFUSAL__INIT;
	Nkp__Wire__VersionUsage u = NKP__WIRE__VERSION_USAGE__INIT, *us[1] = {&u};
	Nkp__Wire__ProviderKeys pk = NKP__WIRE__PROVIDER_KEYS__INIT, *pks[1] = {&pk};
	Nkp__Wire__VersionKey vk[2] = {NKP__WIRE__VERSION_KEY__INIT, NKP__WIRE__VERSION_KEY__INIT};
	Nkp__Wire__VersionKey *vks[2] = {&vk[0], &vk[1]};
	const char *names[5] = {"hello", "status", "push", "push-ack", "refusal"};
	nkp_identity *service = fz_identity(FZ_SERVICE_SECRET), *host = fz_identity(FZ_HOST_SECRET);
	nkpi_session *ini = NULL, *resp = NULL;
	fz_frame init;
	uint8_t *b, *frame;
	size_t len, framelen;

	fz_provider_id(id);
	hello.challenge = (ProtobufCBinaryData){16, ch16};
	m[0].body_case = NKP__WIRE__MESSAGE__BODY_HELLO;
	m[0].hello = &hello;
	u.provider_id = (ProtobufCBinaryData){16, id};
	u.version = 1;
	u.keysafes = 3;
	u.last_used_unix = 1700000000u;
	status.challenge = hello.challenge;
	status.boot_nonce = (ProtobufCBinaryData){16, nonce};
	status.applied_generation = 7;
	status.usage = us;
	status.n_usage = 1;
	status.host_name = (char *)"h1";
	m[1].body_case = NKP__WIRE__MESSAGE__BODY_STATUS;
	m[1].status = &status;
	for (int i = 0; i < 2; i++) {
		memset(keys[i], FZ_PRIMARY_BYTE + i, 32);
		vk[i].version = (uint32_t)i + 1;
		vk[i].state = i == 0 ? NKP_VERSION_ACTIVE : NKP_VERSION_STAGED;
		vk[i].key = (ProtobufCBinaryData){32, keys[i]};
		vk[i].created_unix = 1700000000u;
	}
	pk.id = (ProtobufCBinaryData){16, id};
	pk.name = (char *)"fuzz";
	pk.is_default = true;
	pk.backed_up = true;
	pk.versions = vks;
	pk.n_versions = 2;
	push.challenge = hello.challenge;
	push.boot_nonce = status.boot_nonce;
	ds.epoch = 1;
	ds.counter = 1;
	ds.providers = pks;
	ds.n_providers = 1;
	push.desired.len = nkp__wire__desired_state__pack(&ds, desired);
	push.desired.data = desired;
	m[2].body_case = NKP__WIRE__MESSAGE__BODY_PUSH;
	m[2].push = &push;
	ack.challenge = hello.challenge;
	ack.applied_generation = 1;
	ack.boot_nonce = status.boot_nonce;
	ack.usage = us;
	ack.n_usage = 1;
	m[3].body_case = NKP__WIRE__MESSAGE__BODY_PUSH_ACK;
	m[3].push_ack = &ack;
	refusal.challenge = hello.challenge;
	refusal.code = NKP_ERR_REPLAY;
	refusal.message = (char *)"stale generation";
	refusal.boot_nonce = status.boot_nonce;
	refusal.applied_generation = 4;
	m[4].body_case = NKP__WIRE__MESSAGE__BODY_REFUSAL;
	m[4].refusal = &refusal;

	/* fuzz-frame seeds: the canonical HandshakeInit (its mac1 is right
	 * for the target's responder), and each message in a Transport. */
	fz_session_handshake(service, host, &ini, &resp, &init, NULL, NULL, NULL);
	put("fuzz-frame", "handshake-init", init.b, init.len);
	free(init.b);
	for (int i = 0; i < 5; i++) {
		b = pack_msg(&m[i], &len);
		put("fuzz-message", names[i], b, len);
		fz_check(nkpi_session_seal_request(ini, b, len, &frame, &framelen), "seal");
		put("fuzz-frame", names[i], frame, framelen);
		free(frame);
		free(b);
	}
	/* A push with no providers (wipes everything) and an empty message. */
	ds.n_providers = 0;
	push.desired.len = nkp__wire__desired_state__pack(&ds, desired);
	b = pack_msg(&m[2], &len);
	put("fuzz-message", "push-empty", b, len);
	free(b);
	seal_policy_seeds(&m[0], &hello);
	put("fuzz-message", "empty", NULL, 0);
	sodium_memzero(keys, sizeof(keys));
	nkpi_session_free(ini);
	nkpi_session_free(resp);
	nkp_identity_free(service);
	nkp_identity_free(host);
}

/* ---- keysafes ---- */

/* A keysafe under version `v` of the fixed provider with `n` extra
 * components; *out malloc'd. */
static uint8_t *keysafe(uint32_t v, int n, size_t *len)
{
	static const char *comp[] = {"disk:scsi0-0", "vtpm", "disk:nvme.1"};
	nkp_vm_identity vm = {.vm_uuid = "564d6f1e-0b6a-4c9b-8a3f-2d1e0c9b8a71",
			      .vm_name = "fuzz-vm"};
	nkp_primary *p = fz_primary(v);
	nkp_keysafe *ks = NULL;
	uint8_t *out = NULL;

	fz_check(nkp_keysafe_create(p, &vm, &ks), "keysafe");
	for (int i = 0; i < n; i++) {
		fz_check(nkp_keysafe_add_component(ks, p, comp[i]), "component");
	}
	fz_check(nkp_keysafe_serialize(ks, &out, len), "serialize");
	nkp_keysafe_free(ks);
	nkp_primary_free(p);
	return out;
}

static void keysafe_seeds(void)
{
	char name[32];
	uint8_t *b;
	size_t len;

	for (int n = 0; n <= 3; n++) {
		b = keysafe(n == 3 ? 2 : 1, n, &len);
		snprintf(name, sizeof(name), "v%d-components-%d", n == 3 ? 2 : 1, n + 1);
		put("fuzz-keysafe", name, b, len);
		free(b);
	}
}

/* ---- sealed images, backups, event logs ---- */

static void sealed_seeds(void)
{
	static const size_t sizes[] = {0, 1, 32, 300};
	uint8_t data[300], *out;
	nkp_key *k = fz_key(FZ_SEAL_BYTE);
	char name[32];
	size_t len;

	for (size_t i = 0; i < sizeof(data); i++) {
		data[i] = (uint8_t)i;
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fz_check(nkp_seal_bytes(k, FZ_SEAL_LABEL, data, sizes[i], &out, &len), "seal");
		snprintf(name, sizeof(name), "sealed-%zu", sizes[i]);
		put("fuzz-sealed", name, out, len);
		free(out);
	}
	nkp_key_free(k);
}

/* A backup of the fixed provider with `n` versions, at minimum cost. */
static uint8_t *backup(size_t n, size_t *len)
{
	nkp_backup_params prm = nkp_backup_params_min();
	nkp_provider_backup *p = NULL;
	uint8_t *out = NULL;

	fz_check(nkp_provider_backup_new(n, &p), "backup new");
	fz_provider_id(p->id);
	snprintf(p->name, sizeof(p->name), "fuzz");
	p->exported_unix = 1700000000u;
	for (size_t i = 0; i < n; i++) {
		p->versions[i].version = (uint32_t)i + 1;
		p->versions[i].state = i + 1 == n ? NKP_VERSION_ACTIVE : NKP_VERSION_DECRYPT_ONLY;
		p->versions[i].created_unix = 1700000000u + i;
		p->versions[i].key = fz_key((uint8_t)(FZ_PRIMARY_BYTE + i));
	}
	fz_check(nkp_backup_export(p, FZ_PASSWORD, strlen(FZ_PASSWORD), &prm, &out, len), "export");
	nkp_provider_backup_free(p);
	return out;
}

static void backup_seeds(void)
{
	uint8_t *b;
	size_t len;

	b = backup(1, &len);
	put("fuzz-backup", "one-version", b, len);
	free(b);
	b = backup(3, &len);
	put("fuzz-backup", "three-versions", b, len);
	free(b);
}

static void eventlog_seeds(void)
{
	static const char good[] =
		"{\"seq\":1,\"time\":\"2024-01-01T00:00:00Z\",\"severity\":\"info\","
		"\"kind\":\"service.started\",\"provider\":null,\"host\":null,\"message\":\"up\"}\n"
		"{\"seq\":2,\"time\":\"2024-01-01T00:00:01Z\",\"severity\":\"warning\","
		"\"kind\":\"bad_input\",\"provider\":\"p\",\"host\":\"h1\",\"message\":\"a "
		"\\\"b\\\"\"}\n";
	static const char torn[] = "{\"seq\":3,\"time\":\"2024-01-01T00:00:00Z\",\"sev";

	put("fuzz-eventlog", "two-lines", (const uint8_t *)good, strlen(good));
	put("fuzz-eventlog", "torn-tail", (const uint8_t *)torn, strlen(torn));
}

/* ---- admin and local API requests ---- */

static void config_seeds(void)
{
	static const struct {
		const char *name;
		const char *text;
	} seeds[] = {
		{"nkpd", "# nkpd\nstate-dir = /var/lib/nkp/nkpd\nheartbeat = 5\nsyslog = false\n"},
		{"hostd", "state-dir = /var/lib/nkp/hostd\nlisten = tcp://127.0.0.1:7410\n"
			  "seal-key = /var/lib/nkp/hostd/seal.key\nhost-name = h1\nsyslog = yes\n"},
		{"bad-line", "state-dir\n"},
		{"repeated", "heartbeat = 1\nheartbeat = 2\n"},
		{"crlf-blank", "\r\n   \n# c\nlisten =   ipc:///x  \n"},
	};

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		put("fuzz-config", seeds[i].name, (const uint8_t *)seeds[i].text,
		    strlen(seeds[i].text));
	}
}

static void admin_put(const char *name, Nkp__Admin__Request *q)
{
	size_t len;
	uint8_t *b;

	q->api_version = 1;
	len = nkp__admin__request__get_packed_size(q);
	b = malloc(len + 1);
	if (b == NULL) {
		abort();
	}
	nkp__admin__request__pack(q, b);
	put("fuzz-admin", name, b, len);
	free(b);
}

#define ADMIN(name, CASE, field, type, INIT, ...)                                                  \
	do {                                                                                       \
		Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;                                 \
		type sub = INIT;                                                                   \
		__VA_ARGS__;                                                                       \
		q.op_case = NKP__ADMIN__REQUEST__OP_##CASE;                                        \
		q.field = &sub;                                                                    \
		admin_put(name, &q);                                                               \
	} while (0)

static void admin_seeds(void)
{
	static uint8_t pub[32] = {0x11, 0x22, 0x33};
	size_t blen;
	uint8_t *b = backup(1, &blen);

	ADMIN("status", STATUS, status, Nkp__Admin__StatusRequest,
	      NKP__ADMIN__STATUS_REQUEST__INIT, );
	ADMIN("host-add", HOST_ADD, host_add, Nkp__Admin__HostAddRequest,
	      NKP__ADMIN__HOST_ADD_REQUEST__INIT, sub.name = (char *)"h1",
	      sub.address = (char *)"tcp://127.0.0.1:9",
	      sub.public_key = ((ProtobufCBinaryData){32, pub}), sub.cluster = (char *)"c1");
	ADMIN("host-remove", HOST_REMOVE, host_remove, Nkp__Admin__HostRemoveRequest,
	      NKP__ADMIN__HOST_REMOVE_REQUEST__INIT, sub.name = (char *)"h1");
	ADMIN("host-list", HOST_LIST, host_list, Nkp__Admin__HostListRequest,
	      NKP__ADMIN__HOST_LIST_REQUEST__INIT, );
	ADMIN("provider-create", PROVIDER_CREATE, provider_create,
	      Nkp__Admin__ProviderCreateRequest, NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT,
	      sub.name = (char *)"p1", sub.make_default = true);
	ADMIN("provider-list", PROVIDER_LIST, provider_list, Nkp__Admin__ProviderListRequest,
	      NKP__ADMIN__PROVIDER_LIST_REQUEST__INIT, );
	ADMIN("provider-show", PROVIDER_SHOW, provider_show, Nkp__Admin__ProviderShowRequest,
	      NKP__ADMIN__PROVIDER_SHOW_REQUEST__INIT, sub.name = (char *)"p1");
	ADMIN("provider-set-default", PROVIDER_SET_DEFAULT, provider_set_default,
	      Nkp__Admin__ProviderSetDefaultRequest, NKP__ADMIN__PROVIDER_SET_DEFAULT_REQUEST__INIT,
	      sub.name = (char *)"p1");
	ADMIN("provider-backup", PROVIDER_BACKUP, provider_backup,
	      Nkp__Admin__ProviderBackupRequest, NKP__ADMIN__PROVIDER_BACKUP_REQUEST__INIT,
	      sub.name = (char *)"p1",
	      sub.password = ((ProtobufCBinaryData){4, (uint8_t *)"pass"}));
	ADMIN("provider-restore", PROVIDER_RESTORE, provider_restore,
	      Nkp__Admin__ProviderRestoreRequest, NKP__ADMIN__PROVIDER_RESTORE_REQUEST__INIT,
	      sub.backup = ((ProtobufCBinaryData){blen, b}),
	      sub.password = ((ProtobufCBinaryData){strlen(FZ_PASSWORD), (uint8_t *)FZ_PASSWORD}));
	ADMIN("provider-rotate", PROVIDER_ROTATE, provider_rotate,
	      Nkp__Admin__ProviderRotateRequest, NKP__ADMIN__PROVIDER_ROTATE_REQUEST__INIT,
	      sub.name = (char *)"p1", sub.timeout_seconds = 1, sub.force = true);
	ADMIN("rotation-status", ROTATION_STATUS, rotation_status,
	      Nkp__Admin__RotationStatusRequest, NKP__ADMIN__ROTATION_STATUS_REQUEST__INIT,
	      sub.name = (char *)"p1");
	ADMIN("provider-retire", PROVIDER_RETIRE, provider_retire,
	      Nkp__Admin__ProviderRetireRequest, NKP__ADMIN__PROVIDER_RETIRE_REQUEST__INIT,
	      sub.name = (char *)"p1", sub.version = 1, sub.force = true);
	ADMIN("provider-delete", PROVIDER_DELETE, provider_delete,
	      Nkp__Admin__ProviderDeleteRequest, NKP__ADMIN__PROVIDER_DELETE_REQUEST__INIT,
	      sub.name = (char *)"p1", sub.force = true);
	ADMIN("events", EVENTS, events, Nkp__Admin__EventsRequest, NKP__ADMIN__EVENTS_REQUEST__INIT,
	      sub.after_seq = 1, sub.max = 5);
	free(b);
}

static void hostapi_put(const char *name, Nkp__Hostapi__Request *q)
{
	size_t len;
	uint8_t *b;

	q->api_version = 1;
	len = nkp__hostapi__request__get_packed_size(q);
	b = malloc(len + 1);
	if (b == NULL) {
		abort();
	}
	nkp__hostapi__request__pack(q, b);
	put("fuzz-hostapi", name, b, len);
	free(b);
}

static void hostapi_seeds(void)
{
	Nkp__Hostapi__Request q = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__StatusRequest st = NKP__HOSTAPI__STATUS_REQUEST__INIT;
	Nkp__Hostapi__CreateRequest cr = NKP__HOSTAPI__CREATE_REQUEST__INIT;
	Nkp__Hostapi__VmIdentity vm = NKP__HOSTAPI__VM_IDENTITY__INIT;
	Nkp__Hostapi__ComponentRequest co = NKP__HOSTAPI__COMPONENT_REQUEST__INIT;
	Nkp__Hostapi__KeysafeRequest ks = NKP__HOSTAPI__KEYSAFE_REQUEST__INIT;
	Nkp__Hostapi__RekeyRequest rk = NKP__HOSTAPI__REKEY_REQUEST__INIT;
	size_t len;
	uint8_t *b = keysafe(1, 1, &len);

	q.op_case = NKP__HOSTAPI__REQUEST__OP_STATUS;
	q.status = &st;
	hostapi_put("status", &q);
	vm.vm_uuid = (char *)"564d6f1e-0b6a-4c9b-8a3f-2d1e0c9b8a71";
	vm.vm_name = (char *)"fuzz-vm";
	cr.vm = &vm;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_CREATE;
	q.create = &cr;
	hostapi_put("create", &q);
	co.keysafe = (ProtobufCBinaryData){len, b};
	co.component = (char *)"vtpm";
	q.op_case = NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT;
	q.add_component = &co;
	hostapi_put("add-component", &q);
	co.component = (char *)"disk:scsi0-0";
	q.op_case = NKP__HOSTAPI__REQUEST__OP_UNWRAP;
	q.unwrap = &co;
	hostapi_put("unwrap", &q);
	q.op_case = NKP__HOSTAPI__REQUEST__OP_REMOVE_COMPONENT;
	q.remove_component = &co;
	hostapi_put("remove-component", &q);
	ks.keysafe = co.keysafe;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_REWRAP;
	q.rewrap = &ks;
	hostapi_put("rewrap", &q);
	q.op_case = NKP__HOSTAPI__REQUEST__OP_CHECK;
	q.check = &ks;
	hostapi_put("check", &q);
	rk.keysafe = co.keysafe;
	rk.deep = true;
	q.op_case = NKP__HOSTAPI__REQUEST__OP_REKEY;
	q.rekey = &rk;
	hostapi_put("rekey-deep", &q);
	free(b);
}

/* ---- Noise handshake ---- */

/* A fuzz-noise seed: the selector byte, then `len` bytes of `b`. */
static void noise_put(const char *name, uint8_t sel, const uint8_t *b, size_t len)
{
	uint8_t *seed = malloc(len + 1);

	if (seed == NULL) {
		abort();
	}
	seed[0] = sel;
	if (len > 0) {
		memcpy(seed + 1, b, len);
	}
	put("fuzz-noise", name, seed, len + 1);
	free(seed);
}

/* The genuine messages of fuzz-noise.h's fixed handshake (the same in
 * every run), cut and altered ones, and transport messages from the
 * responder under two nonces. */
static void noise_seeds(void)
{
	static uint8_t m1[FZN_MSG_CAP], m2[FZN_MSG_CAP], t[64];
	static const char text[] = "transport payload";
	size_t m1len, m2len;
	nkpi_noise_cipher *c = sodium_malloc(2 * sizeof(*c));
	static const uint64_t nonces[] = {0, 7};

	if (c == NULL) {
		abort();
	}
	fzn_messages(m1, &m1len, m2, &m2len, &c[0], &c[1]);
	noise_put("empty", 0, m1, 0);
	noise_put("msg1", 0, m1, m1len);
	noise_put("msg1-truncated", 0, m1, NKPI_NOISE_HS_OVERHEAD - 1);
	noise_put("msg1-cut", 0, m1, m1len - 1);
	noise_put("msg1-small-buffer", FZN_SEL_SMALL_BUFFER, m1, m1len);
	noise_put("msg2", FZN_SEL_INITIATOR, m2, m2len);
	noise_put("msg2-truncated", FZN_SEL_INITIATOR, m2, NKPI_NOISE_HS_OVERHEAD - 1);
	noise_put("msg2-small-buffer", FZN_SEL_INITIATOR | FZN_SEL_SMALL_BUFFER, m2, m2len);
	memset(m1, 0, NKPI_NOISE_DHLEN); /* a low-order ephemeral */
	noise_put("msg1-low-order", 0, m1, m1len);
	for (size_t i = 0; i < sizeof(nonces) / sizeof(nonces[0]); i++) {
		char name[32];

		for (unsigned b = 0; b < 8; b++) {
			t[b] = (uint8_t)(nonces[i] >> (8 * b));
		}
		/* The responder sends with the initiator's receiving key. */
		fz_check(nkpi_noise_encrypt(&c[1], nonces[i], NULL, 0, (const uint8_t *)text,
					    sizeof(text) - 1, t + 8),
			 "noise transport");
		snprintf(name, sizeof(name), "transport-%" PRIu64, nonces[i]);
		noise_put(name, FZN_SEL_TRANSPORT, t, 8 + sizeof(text) - 1 + NKPI_NOISE_TAGLEN);
	}
	sodium_memzero(c, 2 * sizeof(*c));
	sodium_free(c);
}

/* ---- sessions ---- */

/* A fuzz-session seed: the selector byte, then `len` bytes of `f`. */
static void session_put(const char *name, uint8_t sel, const fz_frame *f, size_t len)
{
	uint8_t *b = malloc(len + 1);

	if (b == NULL) {
		abort();
	}
	b[0] = sel;
	if (len > 0) {
		memcpy(b + 1, f->b, len);
	}
	put("fuzz-session", name, b, len + 1);
	free(b);
}

/* The canonical session's frames (fuzz-session.h): they open in
 * fuzz-session, whose responder and initiators hold that session. */
static void session_seeds(void)
{
	nkp_identity *service = fz_identity(FZ_SERVICE_SECRET), *host = fz_identity(FZ_HOST_SECRET);
	nkpi_session *ini = NULL, *resp = NULL;
	fz_frame init, rsp, sreq, srep, next, empty = {0};

	fz_session_handshake(service, host, &ini, &resp, &init, &rsp, &sreq, &srep);
	fz_session_exchange(ini, resp, &next, NULL);
	session_put("empty", 0, &empty, 0);
	session_put("handshake-init", 0, &init, init.len);
	session_put("handshake-init-truncated", 0, &init, init.len / 2);
	session_put("handshake-response", SEL_HANDSHAKE_REPLY, &rsp, rsp.len);
	session_put("transport-request", 0, &sreq, sreq.len);
	session_put("transport-request-truncated", 0, &sreq, sreq.len - 1);
	session_put("transport-request-next", 0, &next, next.len);
	session_put("transport-reply", SEL_SESSION_REPLY, &srep, srep.len);
	session_put("transport-reply-truncated", SEL_SESSION_REPLY, &srep, srep.len / 2);
	put("fuzz-frame", "transport-request", sreq.b, sreq.len);
	put("fuzz-frame", "transport-reply", srep.b, srep.len);
	free(init.b);
	free(rsp.b);
	free(sreq.b);
	free(srep.b);
	free(next.b);
	nkpi_session_free(ini);
	nkpi_session_free(resp);
	nkp_identity_free(service);
	nkp_identity_free(host);
}

/* ---- host key logs (after fuzz-keylog's snapshot) ---- */

static size_t log_record(uint8_t *log, size_t off, const char *label, uint64_t g, size_t n)
{
	uint8_t *rec;
	size_t len;

	fz_host_keys(label, g, n, &rec, &len);
	nkpi_store32_le(log + off, (uint32_t)len);
	memcpy(log + off + 4, rec, len);
	free(rec);
	return off + 4 + len;
}

/* fuzz-keylog's even form: 0x00, then the log file as is. */
static void put_raw_log(const char *name, const uint8_t *log, size_t len)
{
	uint8_t buf[4097];

	buf[0] = 0;
	memcpy(buf + 1, log, len);
	put("fuzz-keylog", name, buf, len + 1);
}

/* fuzz-keylog's odd form: records (slot, generation, versions) as
 * plaintexts the target seals. */
static void put_plain_log(const char *name, const uint8_t slots[], size_t n)
{
	uint8_t buf[4096], rec[1024];
	size_t len = 1;

	buf[0] = 1;
	for (size_t i = 0; i < n; i++) {
		uint8_t slot = slots[i];
		size_t plen = fz_host_keys_plain(NULL, (slot & 0x7fu) + 2u, slot == 0 ? 1 : 2, rec,
						 NULL, NULL);

		buf[len] = slot;
		buf[len + 1] = (uint8_t)plen;
		buf[len + 2] = (uint8_t)(plen >> 8);
		memcpy(buf + len + 3, rec, plen);
		len += 3 + plen;
		sodium_memzero(rec, sizeof(rec));
	}
	put("fuzz-keylog", name, buf, len);
}

static void keylog_seeds(void)
{
	static const uint8_t three[] = {0, 1, 2}, reordered[] = {1, 2, 0}, stale[] = {0x80};
	uint8_t log[4096], other[4096];
	char label[128];
	size_t off = 0, mid, o2 = 0;

	for (uint32_t i = 0; i < 3; i++) {
		fz_log_label(label, sizeof(label), i);
		off = log_record(log, off, label, i + 2, i == 0 ? 1 : 2);
		if (i == 0) {
			mid = off;
		}
	}
	put_raw_log("three", log, off);
	put_raw_log("torn", log, off - 7);
	put_raw_log("one", log, mid);
	/* Records 1 and 2 first, then 0: out of place. */
	memcpy(other, log + mid, off - mid);
	memcpy(other + (off - mid), log, mid);
	put_raw_log("reordered", other, off);
	/* Another epoch's record: stale. */
	o2 = log_record(other, 0, "nkp-host-keys-log/00000000000000000000000000000000/0", 2, 1);
	put_raw_log("stale", other, o2);
	put_plain_log("plain-three", three, 3);
	put_plain_log("plain-one", three, 1);
	put_plain_log("plain-reordered", reordered, 3);
	put_plain_log("plain-stale", stale, 1);
}

/* ---- nkpd's state.nkp and nkp-hostd's identity.nkp (plaintexts) ---- */

/* `st` with provider `p` made a standard one: KMS settings (the PEMs are
 * not parsed at load). */
static void standard_seed(Nkp__Svcstate__ServiceState *st, Nkp__Svcstate__Provider *p)
{
	static char s1[] = "kmip://kms1.example.test", s2[] = "kmip://[::1]:5696";
	static char *servers[] = {s1, s2};
	static uint8_t pem[] = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
	Nkp__Svcstate__KmsSettings ks = NKP__SVCSTATE__KMS_SETTINGS__INIT;
	Nkp__Svcstate__Provider keep = *p;
	uint8_t buf[2048];
	size_t len;

	ks.n_servers = 2;
	ks.servers = servers;
	ks.ca_pem = ks.cert_pem = ks.key_pem = (ProtobufCBinaryData){sizeof(pem) - 1, pem};
	ks.spare_pool = 8;
	p->kind = (char *)"standard";
	p->tpm_only = false;
	p->n_versions = 0;
	p->versions = NULL;
	p->kms = &ks;
	len = nkp__svcstate__service_state__pack(st, buf);
	put("fuzz-svcstate", "standard-provider", buf, len);
	*p = keep;
}

static void svcstate_seeds(void)
{
	Nkp__Svcstate__ServiceState st = NKP__SVCSTATE__SERVICE_STATE__INIT;
	Nkp__Svcstate__Provider p[2], *pp[2] = {&p[0], &p[1]};
	Nkp__Svcstate__Version v[3], *vp[3] = {&v[0], &v[1], &v[2]};
	Nkp__Svcstate__Host h = NKP__SVCSTATE__HOST__INIT, *hp = &h;
	uint8_t ids[2][NKP_ID_BYTES], keys[3][NKP_KEY_BYTES], pub[NKP_PUBKEY_BYTES], buf[2048];
	size_t len;

	for (int i = 0; i < 3; i++) {
		nkp__svcstate__version__init(&v[i]);
		memset(keys[i], FZ_PRIMARY_BYTE + i, NKP_KEY_BYTES);
		v[i].version = i == 2 ? 1 : (uint32_t)i + 1;
		v[i].state = i == 0 ? NKP_VERSION_DECRYPT_ONLY : NKP_VERSION_ACTIVE;
		v[i].created_unix = 1700000000u + (uint64_t)i;
		v[i].key = (ProtobufCBinaryData){NKP_KEY_BYTES, keys[i]};
	}
	for (int i = 0; i < 2; i++) {
		nkp__svcstate__provider__init(&p[i]);
		memset(ids[i], FZ_PROVIDER_ID_BYTE + i, NKP_ID_BYTES);
		p[i].id = (ProtobufCBinaryData){NKP_ID_BYTES, ids[i]};
		p[i].created_unix = 1700000000u;
	}
	p[0].name = "prod";
	p[0].is_default = true;
	p[0].backed_up = true;
	p[0].backup_max_version = 2;
	p[0].backed_up_unix = 1700000100u;
	p[0].n_versions = 2;
	p[0].versions = vp;
	p[1].name = "other";
	p[1].tpm_only = true;
	p[1].n_versions = 1;
	p[1].versions = vp + 2;
	memset(pub, 0x61, sizeof(pub));
	h.name = "alpha";
	h.address = "tcp://127.0.0.1:9";
	h.public_key = (ProtobufCBinaryData){sizeof(pub), pub};
	h.cluster = "east";
	h.enrolled_unix = 1700000050u;
	st.format_version = 1;
	st.generation = 102;
	st.n_providers = 2;
	st.providers = pp;
	st.n_hosts = 1;
	st.hosts = &hp;
	len = nkp__svcstate__service_state__pack(&st, buf);
	put("fuzz-svcstate", "two-providers-one-host", buf, len);
	standard_seed(&st, &p[1]);
	st.n_providers = 0;
	st.n_hosts = 0;
	len = nkp__svcstate__service_state__pack(&st, buf);
	put("fuzz-svcstate", "empty", buf, len);
	st.format_version = 2;
	len = nkp__svcstate__service_state__pack(&st, buf);
	put("fuzz-svcstate", "newer-format", buf, len);
	sodium_memzero(keys, sizeof(keys));
	sodium_memzero(buf, sizeof(buf));
}

static void identity_seeds(void)
{
	Nkp__Hoststate__HostIdentity m = NKP__HOSTSTATE__HOST_IDENTITY__INIT;
	nkp_identity *svc = fz_identity(FZ_SERVICE_SECRET);
	uint8_t secret[NKP_KEY_BYTES], buf[256];
	size_t len;

	memset(secret, FZ_HOST_SECRET, sizeof(secret));
	m.format_version = 1;
	m.host_secret = (ProtobufCBinaryData){sizeof(secret), secret};
	m.service_key =
		(ProtobufCBinaryData){NKP_PUBKEY_BYTES, (uint8_t *)nkp_identity_public(svc)};
	m.created_unix = 1700000000u;
	m.pinned_unix = 1700000000u;
	len = nkp__hoststate__host_identity__pack(&m, buf);
	put("fuzz-identity", "genuine", buf, len);
	m.format_version = 2;
	len = nkp__hoststate__host_identity__pack(&m, buf);
	put("fuzz-identity", "newer-format", buf, len);
	sodium_memzero(buf, sizeof(buf));
	sodium_memzero(secret, sizeof(secret));
	nkp_identity_free(svc);
}

static void svcidentity_seeds(void)
{
	Nkp__Svcstate__ServiceIdentity m = NKP__SVCSTATE__SERVICE_IDENTITY__INIT;
	uint8_t secret[NKP_KEY_BYTES], buf[128];
	size_t len;

	memset(secret, FZ_SERVICE_SECRET, sizeof(secret));
	m.format_version = 1;
	m.secret = (ProtobufCBinaryData){sizeof(secret), secret};
	m.created_unix = 1700000000u;
	len = nkp__svcstate__service_identity__pack(&m, buf);
	put("fuzz-svcidentity", "genuine", buf, len);
	m.format_version = 2;
	len = nkp__svcstate__service_identity__pack(&m, buf);
	put("fuzz-svcidentity", "newer-format", buf, len);
	sodium_memzero(buf, sizeof(buf));
	sodium_memzero(secret, sizeof(secret));
}

/* seal.tpm: the recorded vector (a TPM's output cannot be generated here). */
static void tpmsealed_seeds(void)
{
	uint8_t *buf = NULL;
	size_t len = 0;

	fz_check(nkp_file_read(NKP_VECTORS_DIR "/tpm-sealed-v1.bin", 4096, &buf, &len),
		 "tpm-sealed-v1.bin");
	put("fuzz-tpmsealed", "swtpm-made", buf, len);
	/* Parent 2, as init --tpm writes now: the vector with its parent
	 * (field 2, byte 3) changed and an NV index (field 8) appended; one
	 * in the owner range, one above it. */
	if (len < 4 || buf[2] != 0x10 || (buf = realloc(buf, len + 6)) == NULL) {
		fz_check(NKP_ERR_PARSE, "tpm-sealed-v1.bin: parent");
	}
	buf[3] = 2;
	memcpy(buf + len, (const uint8_t[]){0x40, 0xe1, 0x87, 0x97, 0x0d}, 5);
	put("fuzz-tpmsealed", "parent-2", buf, len + 5);
	memcpy(buf + len, (const uint8_t[]){0x40, 0x82, 0x80, 0x80, 0x0e}, 5);
	put("fuzz-tpmsealed", "parent-2-index-out-of-range", buf, len + 5);
	free(buf);
	fz_check(nkp_file_read(NKP_VECTORS_DIR "/tpm-sealed-v2.bin", 4096, &buf, &len),
		 "tpm-sealed-v2.bin");
	put("fuzz-tpmsealed", "swtpm-made-bound", buf, len);
	free(buf);
}

/* A quote: the recorded vector's fields, framed as fuzz-quote reads them. */
static void quote_seeds(void)
{
	static const char *const keys[] = {"ak_public", "attest", "sig"};
	uint8_t *txt = NULL, buf[2048];
	size_t len = 0, off = 0;

	fz_check(nkp_file_read(NKP_VECTORS_DIR "/quote-v1.txt", 1 << 16, &txt, &len),
		 "quote-v1.txt");
	txt = realloc(txt, len + 1);
	txt[len] = 0;
	for (int i = 0; i < 3; i++) {
		char pat[32];
		const char *at;
		size_t n = 0, hexlen;

		snprintf(pat, sizeof(pat), "\n%s: ", keys[i]);
		at = strstr((char *)txt, pat);
		if (at == NULL) {
			abort();
		}
		at += strlen(pat);
		hexlen = strcspn(at, "\n");
		if (sodium_hex2bin(buf + off + (i < 2 ? 2 : 0), sizeof(buf) - off - 2, at, hexlen,
				   NULL, &n, NULL) != 0) {
			abort();
		}
		if (i < 2) {
			buf[off] = (uint8_t)n;
			buf[off + 1] = (uint8_t)(n >> 8);
			off += 2;
		}
		off += n;
	}
	put("fuzz-quote", "recorded", buf, off);
	free(txt);
}

/* Enrolment tokens: a key alone, and a key with the recorded quote's
 * attestation key. */
static void token_seeds(void)
{
	static const char key[] = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=";
	uint8_t *txt = NULL, ak[256], pub[NKP_PUBKEY_BYTES];
	char tok[1024];
	const char *at;
	size_t len = 0, n = 0;

	put("fuzz-token", "key-only", (const uint8_t *)key, strlen(key));
	fz_check(nkp_file_read(NKP_VECTORS_DIR "/quote-v1.txt", 1 << 16, &txt, &len),
		 "quote-v1.txt");
	txt = realloc(txt, len + 1);
	txt[len] = 0;
	at = strstr((char *)txt, "\nak_public: ");
	if (at == NULL || nkp_pubkey_from_base64(key, pub) != NKP_OK) {
		abort();
	}
	at += strlen("\nak_public: ");
	if (sodium_hex2bin(ak, sizeof(ak), at, strcspn(at, "\n"), NULL, &n, NULL) != 0 ||
	    nkpi_token_format(pub, ak, n, tok) != NKP_OK) {
		abort();
	}
	put("fuzz-token", "with-ak", (const uint8_t *)tok, strlen(tok));
	free(txt);
}

/* The recorded EK and its certificate, framed as fuzz-ek reads them. */
static void ek_seeds(void)
{
	uint8_t *txt = NULL, buf[4096];
	size_t len = 0, n = 0, m = 0;
	const char *ek, *cert;

	fz_check(nkp_file_read(NKP_VECTORS_DIR "/ek-v1.txt", 1 << 16, &txt, &len), "ek-v1.txt");
	txt = realloc(txt, len + 1);
	txt[len] = 0;
	ek = strstr((char *)txt, "\nek_public: ");
	cert = strstr((char *)txt, "\nek_cert: ");
	if (ek == NULL || cert == NULL) {
		abort();
	}
	ek += strlen("\nek_public: ");
	cert += strlen("\nek_cert: ");
	if (sodium_hex2bin(buf + 2, sizeof(buf) - 2, ek, strcspn(ek, "\n"), NULL, &n, NULL) != 0 ||
	    sodium_hex2bin(buf + 2 + n, sizeof(buf) - 2 - n, cert, strcspn(cert, "\n"), NULL, &m,
			   NULL) != 0) {
		abort();
	}
	buf[0] = (uint8_t)n;
	buf[1] = (uint8_t)(n >> 8);
	put("fuzz-ek", "recorded", buf, 2 + n + m);
	free(txt);
}

/* The known answers of a vectors file `file` named `suffix` (all when
 * NULL), as seeds of `target` named by their key; `prefix` bytes first. */
static void vector_seeds(const char *file, const char *suffix, const char *target,
			 const uint8_t *prefix, size_t prefix_len)
{
	char path[4096];
	uint8_t *txt = NULL, buf[2048];
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/%s", NKP_VECTORS_DIR, file);
	fz_check(nkp_file_read(path, 1 << 16, &txt, &len), file);
	txt = realloc(txt, len + 1);
	if (txt == NULL) {
		abort();
	}
	txt[len] = 0;
	for (char *l = (char *)txt; *l != '\0';) {
		size_t llen = strcspn(l, "\n"), klen = strcspn(l, ":"), n = 0;
		size_t slen = suffix != NULL ? strlen(suffix) : 0;
		char name[64];

		if (l[0] != '#' && klen < llen && klen < sizeof(name) && l[klen + 1] == ' ' &&
		    (suffix == NULL ||
		     (klen > slen && memcmp(l + klen - slen, suffix, slen) == 0))) {
			memcpy(name, l, klen);
			name[klen] = '\0';
			memcpy(buf, prefix, prefix_len);
			if (sodium_hex2bin(buf + prefix_len, sizeof(buf) - prefix_len, l + klen + 2,
					   llen - klen - 2, NULL, &n, NULL) != 0) {
				abort();
			}
			put(target, name, buf, prefix_len + n);
		}
		l += llen;
		if (*l == '\n') {
			l++;
		}
	}
	free(txt);
}

/* KMIP messages and items: every known answer of kmip-ttlv-v1.txt for the
 * codec; the answers of kmip-v1.txt and kmip-ttlv-v1.txt for the client's
 * readers, each read as the answer to a Get (fuzz-kmip's first byte: 1). */
static void ttlv_seeds(void)
{
	static const uint8_t as_get[] = {1};

	vector_seeds("kmip-ttlv-v1.txt", NULL, "fuzz-ttlv", NULL, 0);
	vector_seeds("kmip-v1.txt", "_response", "fuzz-kmip", as_get, 1);
	vector_seeds("kmip-ttlv-v1.txt", "_response", "fuzz-kmip", as_get, 1);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen-corpus DIR\n");
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) != 0 && errno != EEXIST) {
		perror(root);
		return 1;
	}
	fz_init();
	nkpi_set_clock(1700000000u);
	wire_seeds();
	keysafe_seeds();
	sealed_seeds();
	backup_seeds();
	eventlog_seeds();
	config_seeds();
	admin_seeds();
	hostapi_seeds();
	noise_seeds();
	session_seeds();
	keylog_seeds();
	svcstate_seeds();
	identity_seeds();
	svcidentity_seeds();
	tpmsealed_seeds();
	quote_seeds();
	token_seeds();
	ek_seeds();
	ttlv_seeds();
	return 0;
}
