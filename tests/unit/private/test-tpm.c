/* The sealing key sealed to a TPM (nkp/private/tpm.c), against swtpm: a
 * round trip, restarts, another TPM, every part of the sealed object
 * altered, malformed files, no TPM; and the key never crossing the TCTI in
 * clear (a relay between the TCTI and swtpm records every byte). */
#include <sys/stat.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>

#include <criterion/criterion.h>
#include <sodium.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>

#include <nkp/file.h>
#include <nkp/nkp.h>

#include "atrest.h"
#include "atrest.pb-c.h"
#include "policy.h"
#include "quote.h"
#include "swtpm.h"
#include "tpm.h"
/* Only the reading half of the vector helpers is used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "vectors.h"
#pragma GCC diagnostic pop

static char tmp[] = "/tmp/nkp-test-tpm.XXXXXX";
static test_swtpm tpm_a, tpm_b;

static void setup(void)
{
	char d[300];

	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm)");
	}
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(d, sizeof(d), "%s/a", tmp);
	cr_assert_eq(test_swtpm_start(&tpm_a, d), 0, "swtpm a did not start");
	snprintf(d, sizeof(d), "%s/b", tmp);
	cr_assert_eq(test_swtpm_start(&tpm_b, d), 0, "swtpm b did not start");
}

static void teardown(void)
{
	char cmd[400];

	test_swtpm_stop(&tpm_a);
	test_swtpm_stop(&tpm_b);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	(void)system(cmd);
}

TestSuite(tpm, .init = setup, .fini = teardown, .timeout = 120);

static void seal_with(const char *tcti, const nkp_key *key, uint8_t **buf, size_t *len)
{
	nkpi_tpm *t = NULL;

	cr_assert_eq(nkpi_tpm_open(tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_seal(t, key, tcti, buf, len), NKP_OK);
	nkpi_tpm_close(t);
}

static nkp_err unseal_with(const char *tcti, const uint8_t *buf, size_t len, nkp_key **out)
{
	nkpi_tpm *t = NULL;
	nkp_err err = nkpi_tpm_open(tcti, &t);

	if (err == NKP_OK) {
		err = nkpi_tpm_unseal(t, buf, len, out);
	}
	nkpi_tpm_close(t);
	return err;
}

Test(tpm, seals_and_unseals_on_the_same_tpm_across_restarts)
{
	nkp_key *key = NULL, *back = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	char *tcti = NULL, dir[300];

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	cr_assert_eq(nkpi_tpm_sealed_check(buf, len, &tcti), NKP_OK);
	cr_assert_str_eq(tcti, tpm_a.tcti, "the TCTI used is recorded");
	free(tcti);
	cr_assert_eq(unseal_with(tpm_a.tcti, buf, len, &back), NKP_OK);
	cr_assert(nkp_key_equal(key, back));
	nkp_key_free(back);

	/* The storage seed persists in swtpm's state: a restarted TPM (as a
	 * rebooted machine) opens it again. */
	snprintf(dir, sizeof(dir), "%s", tpm_a.dir);
	test_swtpm_stop(&tpm_a);
	cr_assert_eq(test_swtpm_start(&tpm_a, dir), 0);
	cr_assert_eq(unseal_with(tpm_a.tcti, buf, len, &back), NKP_OK);
	cr_assert(nkp_key_equal(key, back));
	nkp_key_free(back);
	nkp_key_free(key);
	free(buf);
}

Test(tpm, another_tpm_cannot_unseal)
{
	nkp_key *key = NULL, *back = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	cr_assert_eq(unseal_with(tpm_b.tcti, buf, len, &back), NKP_ERR_OTHER_TPM);
	cr_assert_null(back);
	nkp_key_free(key);
	free(buf);
}

/* Repacks a TpmSealed after `edit` changed it. */
static void repack(const uint8_t *buf, size_t len, void (*edit)(Nkp__Atrest__TpmSealed *),
		   uint8_t **out, size_t *out_len)
{
	Nkp__Atrest__TpmSealed *m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);

	cr_assert_not_null(m);
	edit(m);
	*out_len = nkp__atrest__tpm_sealed__get_packed_size(m);
	*out = malloc(*out_len);
	nkp__atrest__tpm_sealed__pack(m, *out);
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
}

static void flip_private(Nkp__Atrest__TpmSealed *m)
{
	m->private_.data[m->private_.len - 5] ^= 0x01;
}

static void flip_public_attributes(Nkp__Atrest__TpmSealed *m)
{
	/* TPM2B_PUBLIC: size(2) type(2) nameAlg(2) objectAttributes(4): drop
	 * noDA (bit 10), a change of policy the integrity value covers. */
	m->public_.data[8] ^= 0x04;
}

static void flip_unique(Nkp__Atrest__TpmSealed *m)
{
	m->public_.data[m->public_.len - 1] ^= 0x01;
}

static void newer_format(Nkp__Atrest__TpmSealed *m)
{
	m->format_version = 3;
}

static void format_2_unbound(Nkp__Atrest__TpmSealed *m)
{
	m->format_version = 2;
}

static void other_parent(Nkp__Atrest__TpmSealed *m)
{
	m->parent = 3;
}

static void parent_1_with_an_index(Nkp__Atrest__TpmSealed *m)
{
	m->parent = 1;
}

static void parent_2_without_an_index(Nkp__Atrest__TpmSealed *m)
{
	m->nv_index = 0;
}

static void index_below_the_owner_range(Nkp__Atrest__TpmSealed *m)
{
	m->nv_index = 0x017fffffu;
}

static void index_above_the_owner_range(Nkp__Atrest__TpmSealed *m)
{
	m->nv_index = 0x01c00002u; /* the EK certificate's */
}

static void trailing_public(Nkp__Atrest__TpmSealed *m)
{
	uint8_t *p = malloc(m->public_.len + 1);

	memcpy(p, m->public_.data, m->public_.len);
	p[m->public_.len] = 0;
	free(m->public_.data);
	m->public_.data = p;
	m->public_.len++;
}

static void public_size_field(Nkp__Atrest__TpmSealed *m)
{
	m->public_.data[1] ^= 0x08;
}

static void short_private(Nkp__Atrest__TpmSealed *m)
{
	m->private_.len -= 1;
}

Test(tpm, every_alteration_is_refused)
{
	static const struct {
		void (*edit)(Nkp__Atrest__TpmSealed *);
		nkp_err want;
		const char *what;
	} cases[] = {
		{flip_private, NKP_ERR_OTHER_TPM, "a bit of the private part"},
		{flip_public_attributes, NKP_ERR_OTHER_TPM, "the object's attributes"},
		{flip_unique, NKP_ERR_OTHER_TPM, "the public unique value"},
		{newer_format, NKP_ERR_FORMAT_VERSION, "a newer format"},
		{format_2_unbound, NKP_ERR_PARSE, "format 2 without its policy"},
		{other_parent, NKP_ERR_FORMAT_VERSION, "an unknown parent template"},
		{parent_1_with_an_index, NKP_ERR_PARSE, "parent 1 naming an NV index"},
		{parent_2_without_an_index, NKP_ERR_PARSE, "parent 2 without its NV index"},
		{index_below_the_owner_range, NKP_ERR_PARSE, "an NV index below the owner range"},
		{index_above_the_owner_range, NKP_ERR_PARSE, "an NV index above the owner range"},
		{trailing_public, NKP_ERR_PARSE, "a byte after TPM2B_PUBLIC"},
		{short_private, NKP_ERR_PARSE, "TPM2B_PRIVATE cut short"},
		{public_size_field, NKP_ERR_PARSE, "TPM2B_PUBLIC's size field"},
	};
	nkp_key *key = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		nkp_key *back = NULL;
		uint8_t *bad = NULL;
		size_t bad_len = 0;

		repack(buf, len, cases[i].edit, &bad, &bad_len);
		cr_expect_eq(unseal_with(tpm_a.tcti, bad, bad_len, &back), cases[i].want, "%s",
			     cases[i].what);
		cr_expect_null(back, "%s", cases[i].what);
		free(bad);
	}
	nkp_key_free(key);
	free(buf);
}

Test(tpm, malformed_files_are_refused_before_any_tpm_command)
{
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x01};
	static const uint8_t unknown_field[] = {0x08, 0x01, 0x10, 0x01, 0xf8, 0x01, 0x00};

	cr_assert_eq(nkpi_tpm_sealed_check(garbage, sizeof(garbage), NULL), NKP_ERR_PARSE);
	cr_assert_eq(nkpi_tpm_sealed_check(unknown_field, sizeof(unknown_field), NULL),
		     NKP_ERR_PARSE);
	cr_assert_eq(nkpi_tpm_sealed_check(NULL, 0, NULL), NKP_ERR_FORMAT_VERSION,
		     "an empty file is format version 0");
}

Test(tpm, no_tpm_behind_the_tcti)
{
	nkpi_tpm *t = NULL;
	char tcti[128];
	char dir[300];
	int port = tpm_b.port;

	snprintf(dir, sizeof(dir), "%s", tpm_b.dir);
	test_swtpm_stop(&tpm_b);
	snprintf(tcti, sizeof(tcti), "swtpm:host=127.0.0.1,port=%d", port);
	cr_assert_eq(nkpi_tpm_open(tcti, &t), NKP_ERR_TPM);
	cr_assert_null(t);
	cr_assert_eq(nkpi_tpm_open("nosuchtcti:x", &t), NKP_ERR_TPM);
	cr_assert_eq(nkpi_tpm_open("", &t), NKP_ERR_INVALID);
	cr_assert_eq(test_swtpm_start(&tpm_b, dir), 0);
}

/* ---- a relay that records what crosses the TCTI ---- */

typedef struct relay {
	int listen_fd[2];
	int stop[2];
	int to_port;
	pthread_t pumps[128]; /* tpm2-tss's swtpm TCTI connects per command */
	size_t n_pumps;
	pthread_mutex_t lock;
	uint8_t seen[1 << 20];
	size_t seen_len;
} relay;

typedef struct relay_conn {
	relay *r;
	int a, b;
} relay_conn;

static int tcp_listen(int *port)
{
	for (int i = 0; i < 50; i++) {
		int p = 20000 + (int)randombytes_uniform(12000);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 4) == 0) {
			*port = p;
			return fd;
		}
		close(fd);
	}
	return -1;
}

static int tcp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void *relay_pump(void *arg)
{
	relay_conn *c = arg;
	struct pollfd p[2] = {{.fd = c->a, .events = POLLIN}, {.fd = c->b, .events = POLLIN}};
	uint8_t buf[4096];

	while (poll(p, 2, -1) > 0) {
		int from = (p[0].revents != 0) ? 0 : 1;
		ssize_t n = read(p[from].fd, buf, sizeof(buf));

		if (n <= 0 || write(p[1 - from].fd, buf, (size_t)n) != n) {
			break;
		}
		pthread_mutex_lock(&c->r->lock);
		if (c->r->seen_len + (size_t)n <= sizeof(c->r->seen)) {
			memcpy(c->r->seen + c->r->seen_len, buf, (size_t)n);
			c->r->seen_len += (size_t)n;
		}
		pthread_mutex_unlock(&c->r->lock);
	}
	close(c->a);
	close(c->b);
	free(c);
	return NULL;
}

static void *relay_accept(void *arg)
{
	relay *r = arg;
	struct pollfd p[3] = {{.fd = r->listen_fd[0], .events = POLLIN},
			      {.fd = r->listen_fd[1], .events = POLLIN},
			      {.fd = r->stop[0], .events = POLLIN}};

	while (poll(p, 3, -1) > 0 && p[2].revents == 0) {
		for (int i = 0; i < 2; i++) {
			relay_conn *c;

			if (p[i].revents == 0) {
				continue;
			}
			/* Full: the TCTI fails at once rather than waits. */
			if (r->n_pumps == sizeof(r->pumps) / sizeof(r->pumps[0])) {
				close(accept(p[i].fd, NULL, NULL));
				continue;
			}
			c = malloc(sizeof(*c));
			c->r = r;
			c->a = accept(p[i].fd, NULL, NULL);
			c->b = tcp_connect(r->to_port + i);
			if (c->a < 0 || c->b < 0) {
				return NULL;
			}
			pthread_create(&r->pumps[r->n_pumps++], NULL, relay_pump, c);
		}
	}
	return NULL;
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++) {
		if (memcmp(hay + i, needle, m) == 0) {
			return true;
		}
	}
	return false;
}

/* Starts `r` relaying to swtpm's ports `to_port` and +1; *tcti names it. */
static void relay_start(relay *r, int to_port, char *tcti, size_t tcti_size, pthread_t *t)
{
	int port = 0;

	/* The control port must be the server port + 1: two listeners. */
	for (int i = 0; i < 50; i++) {
		int p1 = 0;

		r->listen_fd[0] = tcp_listen(&port);
		r->listen_fd[1] = -1;
		if (r->listen_fd[0] >= 0) {
			p1 = port + 1;
			r->listen_fd[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_in a = {.sin_family = AF_INET,
						.sin_port = htons((uint16_t)p1)};
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			if (bind(r->listen_fd[1], (struct sockaddr *)&a, sizeof(a)) == 0 &&
			    listen(r->listen_fd[1], 4) == 0) {
				break;
			}
			close(r->listen_fd[1]);
			close(r->listen_fd[0]);
			r->listen_fd[1] = -1;
		}
	}
	cr_assert_geq(r->listen_fd[1], 0, "no two adjacent ports for the relay");
	r->to_port = to_port;
	cr_assert_eq(pipe(r->stop), 0);
	pthread_mutex_init(&r->lock, NULL);
	pthread_create(t, NULL, relay_accept, r);
	snprintf(tcti, tcti_size, "swtpm:host=127.0.0.1,port=%d", port);
}

/* Stops `r`: the TCTI's connections are closed, so every pump ends. */
static void relay_stop(relay *r, pthread_t t)
{
	cr_assert_eq(write(r->stop[1], "x", 1), 1);
	pthread_join(t, NULL);
	for (size_t i = 0; i < r->n_pumps; i++) {
		pthread_join(r->pumps[i], NULL);
	}
	for (int i = 0; i < 2; i++) {
		close(r->listen_fd[i]);
		close(r->stop[i]);
	}
}

Test(tpm, the_key_never_crosses_the_tcti_in_clear)
{
	static relay r;
	nkp_key *key = NULL, *back = NULL;
	uint8_t *buf = NULL, raw[NKP_KEY_BYTES];
	size_t len = 0;
	char tcti[128];
	pthread_t t;

	relay_start(&r, tpm_a.port, tcti, sizeof(tcti), &t);
	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tcti, key, &buf, &len);
	cr_assert_eq(unseal_with(tcti, buf, len, &back), NKP_OK);
	cr_assert(nkp_key_equal(key, back));
	nkp_key_export(key, raw);
	pthread_mutex_lock(&r.lock);
	cr_assert_gt(r.seen_len, 200, "the relay saw the commands");
	cr_assert(!contains(r.seen, r.seen_len, raw, 8),
		  "the key (or 8 bytes of it) crossed the TCTI in clear");
	pthread_mutex_unlock(&r.lock);
	relay_stop(&r, t);
	sodium_memzero(raw, sizeof(raw));
	nkp_key_free(key);
	nkp_key_free(back);
	free(buf);
}

Test(tpm, reads_the_format_1_vector_and_no_other_tpm_loads_it)
{
	Nkp__Atrest__TpmSealed *m;
	uint8_t *bin = NULL;
	size_t len = 0;
	char *tcti = NULL, want[64];
	nkp_key *back = NULL;

	vec_load("tpm-sealed-v1.txt");
	cr_assert_eq(nkp_file_read(vec_path("tpm-sealed-v1.bin"), 4096, &bin, &len), NKP_OK);
	cr_assert_eq(nkpi_tpm_sealed_check(bin, len, &tcti), NKP_OK);
	vec_str("tcti", want, sizeof(want));
	cr_assert_str_eq(tcti, want);
	free(tcti);
	m = nkp__atrest__tpm_sealed__unpack(NULL, len, bin);
	cr_assert_not_null(m);
	cr_assert_eq(m->format_version, vec_u64("format_version"));
	cr_assert_eq(m->parent, vec_u64("parent"));
	cr_assert_eq(m->public_.len, vec_u64("public_len"));
	cr_assert_eq(m->private_.len, vec_u64("private_len"));
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	cr_assert_eq(unseal_with(tpm_a.tcti, bin, len, &back), NKP_ERR_OTHER_TPM);
	cr_assert_null(back);
	free(bin);
}

Test(tpm, reads_the_format_2_vector_and_no_other_tpm_loads_it)
{
	Nkp__Atrest__TpmSealed *m;
	Nkp__Atrest__SealPolicy *p;
	uint8_t *bin = NULL, secret[32], ref[8], pub[NKPI_POLICY_PUBLIC_MAX], name[34], want[32];
	size_t len = 0, pub_len = 0;
	char *tcti = NULL, s[64];
	nkpi_tpm_sealed_info info;
	nkp_key *back = NULL;

	/* The policy of policy-v1.txt. */
	vec_load("policy-v1.txt");
	vec_hex("secret", secret, sizeof(secret));
	vec_hex("ref", ref, sizeof(ref));
	cr_assert_eq(nkpi_policy_key_public(secret, pub, &pub_len), NKP_OK);
	cr_assert_eq(nkpi_policy_key_name(pub, pub_len, name), NKP_OK);
	sodium_memzero(secret, sizeof(secret));
	vec_load("tpm-sealed-v2.txt");
	cr_assert_eq(nkp_file_read(vec_path("tpm-sealed-v2.bin"), 4096, &bin, &len), NKP_OK);
	cr_assert_eq(nkpi_tpm_sealed_check(bin, len, &tcti), NKP_OK);
	vec_str("tcti", s, sizeof(s));
	cr_assert_str_eq(tcti, s);
	free(tcti);
	cr_assert_eq(nkpi_tpm_sealed_inspect(bin, len, &info), NKP_OK);
	cr_assert(info.bound);
	cr_assert_eq(info.n_approvals, vec_u64("approvals"));
	cr_assert_arr_eq(info.key_name, name, sizeof(name), "policy-v1.txt's key");
	cr_assert_arr_eq(info.ref, ref, sizeof(ref), "policy-v1.txt's ref");
	m = nkp__atrest__tpm_sealed__unpack(NULL, len, bin);
	cr_assert_not_null(m);
	cr_assert_eq(m->format_version, vec_u64("format_version"));
	cr_assert_eq(m->parent, vec_u64("parent"));
	cr_assert_eq(m->public_.len, vec_u64("public_len"));
	cr_assert_eq(m->private_.len, vec_u64("private_len"));
	/* The object's authPolicy: bytes 10-43 of TPM2B_PUBLIC. */
	vec_hex("authorize_policy", want, sizeof(want));
	cr_assert_eq(m->public_.data[10], 0);
	cr_assert_eq(m->public_.data[11], 32);
	cr_assert_arr_eq(m->public_.data + 12, want, sizeof(want));
	p = m->policy;
	cr_assert_eq(p->key.len, pub_len);
	cr_assert_arr_eq(p->key.data, pub, pub_len);
	for (size_t i = 0; i < p->n_approvals; i++) {
		cr_assert_eq(nkpi_policy_verify(pub, pub_len, p->approvals[i]->pcr_mask,
						p->approvals[i]->pcr_digest.data, ref, sizeof(ref),
						p->approvals[i]->signature.data,
						p->approvals[i]->signature.len),
			     NKP_OK, "approval %zu", i);
	}
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	/* Its "fresh" approval matches this TPM's PCR 16: it is the storage
	 * seed that differs. */
	cr_assert_eq(unseal_with(tpm_a.tcti, bin, len, &back), NKP_ERR_OTHER_TPM);
	cr_assert_null(back);
	free(bin);
}

/* ---- bound to a seal policy (format 2) ---- */

#define FX_MAX 70

/* A seal policy: nkpd's key (a fresh one), ref 1, and the approvals made
 * with fx_approve(). */
typedef struct fx {
	uint8_t secret[NKPI_POLICY_SECRET_BYTES], pub[NKPI_POLICY_PUBLIC_MAX];
	uint8_t ref[NKPI_POLICY_REF_BYTES];
	size_t pub_len;
	Nkp__Atrest__SealPolicy p;
	Nkp__Atrest__Approval a[FX_MAX], *ap[FX_MAX];
	uint8_t sig[FX_MAX][NKPI_POLICY_SIG_MAX], digest[FX_MAX][32];
} fx;

static void fx_init(fx *f)
{
	static const Nkp__Atrest__SealPolicy init = NKP__ATREST__SEAL_POLICY__INIT;

	memset(f, 0, sizeof(*f));
	cr_assert_eq(nkpi_policy_key_new(f->secret), NKP_OK);
	cr_assert_eq(nkpi_policy_key_public(f->secret, f->pub, &f->pub_len), NKP_OK);
	f->ref[7] = 1;
	f->p = init;
	f->p.key.data = f->pub;
	f->p.key.len = f->pub_len;
	f->p.ref.data = f->ref;
	f->p.ref.len = sizeof(f->ref);
	f->p.approvals = f->ap;
}

/* Appends an approval of the SHA-256 PCRs `mask` in the state `digest`,
 * signed by `secret` over `ref`. */
static void fx_approve_by(fx *f, const uint8_t secret[32], const uint8_t ref[8], uint32_t mask,
			  const uint8_t digest[32])
{
	static const Nkp__Atrest__Approval init = NKP__ATREST__APPROVAL__INIT;
	size_t i = f->p.n_approvals++, len = 0;

	cr_assert_lt(i, FX_MAX);
	memcpy(f->digest[i], digest, 32);
	cr_assert_eq(nkpi_policy_approve(secret, mask, digest, ref, 8, f->sig[i], &len), NKP_OK);
	f->a[i] = init;
	f->a[i].pcr_mask = mask;
	f->a[i].pcr_digest.data = f->digest[i];
	f->a[i].pcr_digest.len = 32;
	f->a[i].signature.data = f->sig[i];
	f->a[i].signature.len = len;
	f->a[i].name = (char *)"baseline";
	f->ap[i] = &f->a[i];
}

static void fx_approve(fx *f, uint32_t mask, const uint8_t digest[32])
{
	fx_approve_by(f, f->secret, f->ref, mask, digest);
}

/* The digest of PCR 16 alone after `n` extends by pcr16_extend(): a
 * (re)started TPM has it all zero. */
static void pcr16_state(int n, uint8_t out[32])
{
	uint8_t pcr[64];

	memset(pcr, 0, sizeof(pcr));
	for (int i = 0; i < n; i++) {
		memset(pcr + 32, 0x07, 32);
		crypto_hash_sha256(pcr, pcr, 64);
	}
	crypto_hash_sha256(out, pcr, 32);
}

/* PCR 16 extended (SHA-256 bank) with 32 bytes 0x07, as an upgrade
 * measuring new software would. */
static void pcr16_extend(const char *tcti)
{
	TSS2_TCTI_CONTEXT *tc = NULL;
	ESYS_CONTEXT *esys = NULL;
	TPML_DIGEST_VALUES v = {.count = 1};

	v.digests[0].hashAlg = TPM2_ALG_SHA256;
	memset(v.digests[0].digest.sha256, 0x07, 32);
	cr_assert_eq(Tss2_TctiLdr_Initialize(tcti, &tc), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Initialize(&esys, tc, NULL), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_PCR_Extend(esys, ESYS_TR_PCR16, ESYS_TR_PASSWORD, ESYS_TR_NONE,
				     ESYS_TR_NONE, &v),
		     TSS2_RC_SUCCESS);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tc);
}

static nkp_err seal_bound_with(const char *tcti, const nkp_key *key, const fx *f, uint8_t **buf,
			       size_t *len)
{
	nkpi_tpm *t = NULL;
	nkp_err err;

	cr_assert_eq(nkpi_tpm_open(tcti, &t), NKP_OK);
	err = nkpi_tpm_seal_bound(t, key, tcti, f != NULL ? &f->p : NULL, buf, len);
	nkpi_tpm_close(t);
	return err;
}

/* A key sealed on `tcti` bound to `f` (approvals for the TPM's PCRs). */
static nkp_key *bound_key(const char *tcti, const fx *f, uint8_t **buf, size_t *len)
{
	nkp_key *key = NULL;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	cr_assert_eq(seal_bound_with(tcti, key, f, buf, len), NKP_OK);
	return key;
}

static void restart(test_swtpm *s)
{
	char dir[300];

	snprintf(dir, sizeof(dir), "%s", s->dir);
	test_swtpm_stop(s);
	cr_assert_eq(test_swtpm_start(s, dir), 0);
}

static void assert_opens(const char *tcti, const uint8_t *buf, size_t len, const nkp_key *key,
			 const char *what)
{
	nkp_key *back = NULL;

	cr_assert_eq(unseal_with(tcti, buf, len, &back), NKP_OK, "%s", what);
	cr_assert(nkp_key_equal(key, back), "%s: another key", what);
	nkp_key_free(back);
}

static void assert_shut(const char *tcti, const uint8_t *buf, size_t len, nkp_err want,
			const char *what)
{
	nkp_key *back = NULL;
	nkp_err err = unseal_with(tcti, buf, len, &back);

	cr_assert_eq(err, want, "%s: %s", what, nkp_strerror(err));
	cr_assert_null(back, "%s", what);
}

Test(tpm, a_bound_key_opens_by_its_approval_across_restarts)
{
	fx f;
	uint8_t *buf = NULL, state[32], name[NKPI_POLICY_NAME_BYTES];
	size_t len = 0;
	nkp_key *key;
	nkpi_tpm_sealed_info info;
	Nkp__Atrest__TpmSealed *m;

	fx_init(&f);
	pcr16_state(0, state);
	fx_approve(&f, 1u << 16, state);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	cr_assert_not_null(m);
	cr_assert_eq(m->format_version, 2);
	cr_assert_not_null(m->policy);
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	cr_assert_eq(nkpi_tpm_sealed_inspect(buf, len, &info), NKP_OK);
	cr_assert(info.bound);
	cr_assert_eq(nkpi_policy_key_name(f.pub, f.pub_len, name), NKP_OK);
	cr_assert_arr_eq(info.key_name, name, sizeof(name));
	cr_assert_arr_eq(info.ref, f.ref, sizeof(f.ref));
	cr_assert_eq(info.n_approvals, 1);
	assert_opens(tpm_a.tcti, buf, len, key, "bound, the PCRs approved");
	restart(&tpm_a);
	assert_opens(tpm_a.tcti, buf, len, key, "after a restart");
	nkp_key_free(key);
	free(buf);
}

Test(tpm, without_a_policy_the_object_is_format_1)
{
	nkpi_tpm_sealed_info info;
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_key *key = bound_key(tpm_a.tcti, NULL, &buf, &len);

	cr_assert_eq(nkpi_tpm_sealed_inspect(buf, len, &info), NKP_OK);
	cr_assert(!info.bound);
	cr_assert_eq(info.n_approvals, 0);
	cr_assert_eq(buf[1], 1, "format_version 1 (field 1, varint)");
	assert_opens(tpm_a.tcti, buf, len, key, "format 1");
	nkp_key_free(key);
	free(buf);
}

/* `buf` with `p` as its policy and `format` as its version (the object
 * untouched): what a file says, not what the TPM will do. */
static void with_policy(const uint8_t *buf, size_t len, uint32_t format,
			const Nkp__Atrest__SealPolicy *p, uint8_t **out, size_t *out_len)
{
	Nkp__Atrest__TpmSealed *m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	Nkp__Atrest__SealPolicy *keep;

	cr_assert_not_null(m);
	keep = m->policy;
	m->policy = (Nkp__Atrest__SealPolicy *)p;
	m->format_version = format;
	*out_len = nkp__atrest__tpm_sealed__get_packed_size(m);
	*out = malloc(*out_len);
	cr_assert_not_null(*out);
	nkp__atrest__tpm_sealed__pack(m, *out);
	m->policy = keep;
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
}

/* The upgrade: PCR 16 changes, the key stays shut until the file holds an
 * approval of the new state (the test writes it in; a host seals anew). */
Test(tpm, new_pcrs_shut_the_key_until_nkpd_approves_them)
{
	fx f;
	uint8_t *buf = NULL, *next = NULL, *only = NULL, s0[32], s1[32];
	size_t len = 0, next_len = 0, only_len = 0;
	nkpi_tpm_sealed_info info;
	nkp_key *key;

	fx_init(&f);
	pcr16_state(0, s0);
	pcr16_state(1, s1);
	fx_approve(&f, 1u << 16, s0);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	pcr16_extend(tpm_a.tcti);
	assert_shut(tpm_a.tcti, buf, len, NKP_ERR_REFUSED, "PCR 16 extended");
	fx_approve(&f, 1u << 16, s1);
	with_policy(buf, len, 2, &f.p, &next, &next_len);
	cr_assert_eq(nkpi_tpm_sealed_inspect(next, next_len, &info), NKP_OK);
	cr_assert_eq(info.n_approvals, 2);
	assert_opens(tpm_a.tcti, next, next_len, key, "the new state approved");
	/* A file holding the new state's approval alone opens only in that
	 * state. (This is not revocation: a removed baseline's approval
	 * still verifies under the same ref; nkpd revokes by changing it.) */
	f.a[0] = f.a[1];
	f.p.n_approvals = 1;
	with_policy(next, next_len, 2, &f.p, &only, &only_len);
	assert_opens(tpm_a.tcti, only, only_len, key, "the new state's approval alone");
	/* Restarted, PCR 16 is as it was before the upgrade. */
	restart(&tpm_a);
	assert_shut(tpm_a.tcti, only, only_len, NKP_ERR_REFUSED, "the old state, not approved");
	assert_opens(tpm_a.tcti, next, next_len, key, "both states approved");
	nkp_key_free(key);
	free(buf);
	free(next);
	free(only);
}

/* `buf` with `p` as its policy (NULL: none) and format `format`. */

static void assert_shut_with(const uint8_t *buf, size_t len, const fx *f, nkp_err want,
			     const char *what)
{
	uint8_t *bad = NULL;
	size_t bad_len = 0;

	with_policy(buf, len, 2, &f->p, &bad, &bad_len);
	assert_shut(tpm_a.tcti, bad, bad_len, want, what);
	free(bad);
}

Test(tpm, approvals_by_another_key_or_altered_are_refused)
{
	fx f, other;
	uint8_t *buf = NULL, *out = NULL, s0[32];
	size_t len = 0, out_len = 0;
	nkp_key *key;

	fx_init(&f);
	fx_init(&other);
	pcr16_state(0, s0);
	fx_approve(&f, 1u << 16, s0);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	/* Signed by another key, for the state the TPM is in: the TPM
	 * refuses the signature (the file still names nkpd's key). */
	f.p.n_approvals = 0;
	fx_approve_by(&f, other.secret, f.ref, 1u << 16, s0);
	assert_shut_with(buf, len, &f, NKP_ERR_AUTH, "an approval by another key");
	/* nkpd's approval altered: in r, in s, in its PCR digest or mask. */
	f.p.n_approvals = 0;
	fx_approve(&f, 1u << 16, s0);
	f.sig[0][10] ^= 0x01;
	assert_shut_with(buf, len, &f, NKP_ERR_AUTH, "r altered");
	f.sig[0][10] ^= 0x01;
	f.sig[0][71] ^= 0x01;
	assert_shut_with(buf, len, &f, NKP_ERR_AUTH, "s altered");
	f.sig[0][71] ^= 0x01;
	f.digest[0][0] ^= 0x01;
	assert_shut_with(buf, len, &f, NKP_ERR_REFUSED, "its PCR digest altered");
	f.digest[0][0] ^= 0x01;
	f.a[0].pcr_mask |= 1u << 15;
	assert_shut_with(buf, len, &f, NKP_ERR_REFUSED, "its PCR mask altered");
	f.a[0].pcr_mask = 1u << 16;
	/* Altered ones first, the good one last: it still opens. */
	fx_approve_by(&f, other.secret, f.ref, 1u << 16, s0);
	f.a[2] = f.a[0];
	f.a[0] = f.a[1];
	f.a[1].pcr_mask = 1u << 17;
	f.ap[2] = &f.a[2];
	f.p.n_approvals = 3;
	with_policy(buf, len, 2, &f.p, &out, &out_len);
	assert_opens(tpm_a.tcti, out, out_len, key, "the third approval");
	free(out);
	nkp_key_free(key);
	free(buf);
}

/* The ref names the set of approved states: an approval signed for
 * another set, valid as it is, does not open an object bound to this one. */
Test(tpm, an_approval_over_another_ref_is_refused)
{
	fx f, g;
	uint8_t *buf = NULL, *out = NULL, s0[32], other_ref[8] = {0, 0, 0, 0, 0, 0, 0, 2};
	size_t len = 0, out_len = 0;
	nkp_key *key;

	fx_init(&f);
	pcr16_state(0, s0);
	fx_approve(&f, 1u << 16, s0);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	/* The file keeps its ref; the approval is over the other. */
	g = f;
	g.p.approvals = g.ap;
	g.p.n_approvals = 0;
	fx_approve_by(&g, g.secret, other_ref, 1u << 16, s0);
	g.p.key.data = g.pub;
	g.p.ref.data = g.ref;
	cr_assert_eq(nkpi_policy_verify(g.pub, g.pub_len, 1u << 16, s0, other_ref, 8, g.sig[0], 72),
		     NKP_OK, "a valid signature, over the other ref");
	assert_shut_with(buf, len, &g, NKP_ERR_AUTH, "approval over another ref");
	/* The file's ref changed to match: its object's policy is not that
	 * one, refused before the TPM is asked. */
	memcpy(g.ref, other_ref, 8);
	with_policy(buf, len, 2, &g.p, &out, &out_len);
	cr_assert_eq(nkpi_tpm_sealed_check(out, out_len, NULL), NKP_ERR_AUTH);
	assert_shut(tpm_a.tcti, out, out_len, NKP_ERR_AUTH, "the file's ref changed");
	free(out);
	nkp_key_free(key);
	free(buf);
}

Test(tpm, another_tpm_cannot_open_a_bound_key)
{
	fx f;
	uint8_t *buf = NULL, s0[32];
	size_t len = 0;
	nkp_key *key;

	fx_init(&f);
	pcr16_state(0, s0);
	fx_approve(&f, 1u << 16, s0);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	assert_shut(tpm_b.tcti, buf, len, NKP_ERR_OTHER_TPM, "on another TPM, same PCRs");
	nkp_key_free(key);
	free(buf);
}

Test(tpm, no_bound_object_is_returned_unless_it_opens_now)
{
	fx f, bad;
	uint8_t *buf = NULL, s0[32], s1[32], digest31[32] = {0};
	size_t len = 0;
	nkp_key *key = NULL;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	fx_init(&f);
	pcr16_state(0, s0);
	pcr16_state(1, s1);
	fx_approve(&f, 1u << 16, s1);
	fx_approve(&f, (1u << 16) | (1u << 0), s0);
	cr_assert_eq(seal_bound_with(tpm_a.tcti, key, &f, &buf, &len), NKP_ERR_REFUSED,
		     "no approval for the TPM's PCRs");
	cr_assert_null(buf);
	fx_init(&bad);
	f.p.n_approvals = 0;
	fx_approve_by(&f, bad.secret, f.ref, 1u << 16, s0);
	cr_assert_eq(seal_bound_with(tpm_a.tcti, key, &f, &buf, &len), NKP_ERR_AUTH,
		     "signed by another key");
	cr_assert_null(buf);
	/* Not a valid policy: refused before the TPM is asked. */
	fx_init(&bad);
	bad.p.ref.len = 7;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID, "ref");
	fx_init(&bad);
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID,
		     "no approval");
	for (int i = 0; i < 65; i++) {
		fx_approve(&bad, 1u << 16, s0);
	}
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID,
		     "65 approvals");
	bad.p.n_approvals = 1;
	bad.a[0].pcr_mask = 0;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID, "mask 0");
	bad.a[0].pcr_mask = 1u << 24;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID, "PCR 24");
	bad.a[0].pcr_mask = 1u << 16;
	bad.a[0].pcr_digest.data = digest31;
	bad.a[0].pcr_digest.len = 31;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID,
		     "a PCR digest of 31 bytes");
	bad.a[0].pcr_digest.len = 32;
	bad.a[0].signature.len--;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID,
		     "a signature cut short");
	bad.a[0].signature.len++;
	bad.pub[9] ^= 0x80;
	cr_expect_eq(seal_bound_with(tpm_a.tcti, key, &bad, &buf, &len), NKP_ERR_INVALID,
		     "a key off the template");
	cr_assert_null(buf);
	nkp_key_free(key);
}

/* Every check of a format-2 file made without a TPM. */
Test(tpm, format_2_files_are_parsed_strictly)
{
	static char long_name[NKPI_TPM_APPROVAL_NAME_MAX + 2];
	fx f, other;
	uint8_t *buf = NULL, *out = NULL, s0[32];
	size_t len = 0, out_len = 0;
	nkp_key *key;

	fx_init(&f);
	fx_init(&other);
	pcr16_state(0, s0);
	fx_approve(&f, 1u << 16, s0);
	key = bound_key(tpm_a.tcti, &f, &buf, &len);
	cr_assert_eq(nkpi_tpm_sealed_check(buf, len, NULL), NKP_OK);
#define CHECK(fmt, p, want, what)                                                                  \
	do {                                                                                       \
		with_policy(buf, len, (fmt), (p), &out, &out_len);                                 \
		cr_expect_eq(nkpi_tpm_sealed_check(out, out_len, NULL), (want), "%s", (what));     \
		free(out);                                                                         \
	} while (0)
	CHECK(2, NULL, NKP_ERR_PARSE, "format 2 without a policy");
	CHECK(1, &f.p, NKP_ERR_PARSE, "format 1 with a policy");
	CHECK(3, &f.p, NKP_ERR_FORMAT_VERSION, "format 3");
	f.p.n_approvals = 0;
	CHECK(2, &f.p, NKP_ERR_PARSE, "no approval");
	for (int i = 0; i < 64; i++) {
		fx_approve(&f, 1u << 16, s0);
	}
	CHECK(2, &f.p, NKP_OK, "64 approvals");
	fx_approve(&f, 1u << 16, s0);
	CHECK(2, &f.p, NKP_ERR_PARSE, "65 approvals");
	f.p.n_approvals = 1;
	f.a[0].pcr_mask = 0;
	CHECK(2, &f.p, NKP_ERR_PARSE, "mask 0");
	f.a[0].pcr_mask = 0x01000000u;
	CHECK(2, &f.p, NKP_ERR_PARSE, "PCR 24");
	f.a[0].pcr_mask = 1u << 16;
	f.a[0].pcr_digest.len = 33;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a digest of 33 bytes");
	f.a[0].pcr_digest.len = 32;
	f.a[0].signature.len = 71;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a signature cut short");
	f.a[0].signature.len = 72;
	f.sig[0][0] ^= 0x01;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a signature of another scheme");
	f.sig[0][0] ^= 0x01;
	memset(long_name, 'n', sizeof(long_name) - 1);
	f.a[0].name = long_name;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a name of 65 bytes");
	long_name[NKPI_TPM_APPROVAL_NAME_MAX] = '\0';
	CHECK(2, &f.p, NKP_OK, "a name of 64 bytes");
	f.p.ref.len = 7;
	CHECK(2, &f.p, NKP_ERR_PARSE, "ref of 7 bytes");
	f.p.ref.len = 8;
	f.pub[9] ^= 0x80;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a key off the template");
	f.pub[9] ^= 0x80;
	f.p.key.len--;
	CHECK(2, &f.p, NKP_ERR_PARSE, "a key cut short");
	f.p.key.len++;
	/* Well-formed, but not what the object's policy names. */
	other.p.approvals = f.p.approvals;
	other.p.n_approvals = 1;
	CHECK(2, &other.p, NKP_ERR_AUTH, "another policy key");
	f.ref[0] ^= 0x01;
	CHECK(2, &f.p, NKP_ERR_AUTH, "another ref");
	f.ref[0] ^= 0x01;
	CHECK(2, &f.p, NKP_OK, "as it was");
#undef CHECK
	/* userWithAuth set in the object: anyone could open it. */
	{
		Nkp__Atrest__TpmSealed *m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);

		cr_assert_not_null(m);
		m->public_.data[9] |= 0x40;
		out_len = nkp__atrest__tpm_sealed__get_packed_size(m);
		out = malloc(out_len);
		nkp__atrest__tpm_sealed__pack(m, out);
		nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
		cr_expect_eq(nkpi_tpm_sealed_check(out, out_len, NULL), NKP_ERR_PARSE,
			     "userWithAuth set");
		free(out);
	}
	nkp_key_free(key);
	free(buf);
}

Test(tpm, a_bound_key_never_crosses_the_tcti_in_clear)
{
	static relay r;
	fx f;
	nkp_key *key = NULL, *back = NULL;
	uint8_t *buf = NULL, raw[NKP_KEY_BYTES], s0[32], s1[32];
	size_t len = 0;
	char tcti[128];
	pthread_t t;

	fx_init(&f);
	pcr16_state(0, s0);
	pcr16_state(1, s1);
	/* One approval refused first (another state), then the good one. */
	fx_approve(&f, 1u << 16, s1);
	fx_approve(&f, 1u << 16, s0);
	relay_start(&r, tpm_a.port, tcti, sizeof(tcti), &t);
	key = bound_key(tcti, &f, &buf, &len);
	cr_assert_eq(unseal_with(tcti, buf, len, &back), NKP_OK);
	cr_assert(nkp_key_equal(key, back));
	nkp_key_export(key, raw);
	pthread_mutex_lock(&r.lock);
	cr_assert_gt(r.seen_len, 200, "the relay saw the commands");
	cr_assert(contains(r.seen, r.seen_len, f.sig[1] + 6, 32),
		  "the relay saw the policy commands (the approval's r)");
	cr_assert(!contains(r.seen, r.seen_len, raw, 8),
		  "the key (or 8 bytes of it) crossed the TCTI in clear");
	pthread_mutex_unlock(&r.lock);
	relay_stop(&r, t);
	sodium_memzero(raw, sizeof(raw));
	nkp_key_free(key);
	nkp_key_free(back);
	free(buf);
}

/* ---- the endorsement key and credential activation ---- */

/* tpm_c: a TPM manufactured with an EK certificate; tpm_a (in the same
 * temporary directory) has none. */
static test_swtpm tpm_c;

static void ek_setup(void)
{
	char d[300];

	/* Before anything is made: .fini does not run after a skip. */
	if (!test_swtpm_available()) {
		cr_skip_test("swtpm is not installed (Debian: swtpm)");
	}
	if (!test_swtpm_setup_available()) {
		cr_skip_test("swtpm_setup, swtpm_localca or certtool missing (Debian: swtpm-tools, "
			     "gnutls-bin): no TPM with an EK certificate to test");
	}
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(d, sizeof(d), "%s/c", tmp);
	cr_assert_eq(test_swtpm_manufacture(d), 0, "swtpm_setup failed: see %s/setup.log", d);
	snprintf(d, sizeof(d), "%s/c/state", tmp);
	cr_assert_eq(test_swtpm_start(&tpm_c, d), 0, "swtpm c did not start");
	snprintf(d, sizeof(d), "%s/a", tmp);
	cr_assert_eq(test_swtpm_start(&tpm_a, d), 0, "swtpm a did not start");
}

static void ek_teardown(void)
{
	test_swtpm_stop(&tpm_c);
	teardown();
}

TestSuite(tpm_ek, .init = ek_setup, .fini = ek_teardown, .timeout = 240);

typedef struct ek_out {
	uint8_t ek[NKPI_TPM_EK_PUBLIC_MAX];
	size_t ek_len;
	uint8_t cert[NKPI_TPM_EK_CERT_MAX];
	size_t cert_len;
} ek_out;

static void ek_of(const char *tcti, ek_out *e)
{
	nkpi_tpm *t = NULL;

	memset(e, 0, sizeof(*e));
	cr_assert_eq(nkpi_tpm_open(tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_ek(t, e->ek, &e->ek_len, e->cert, &e->cert_len), NKP_OK);
	nkpi_tpm_close(t);
}

static size_t ak_of(const char *tcti, uint8_t ak[static NKPI_TPM_PUBLIC_MAX])
{
	nkpi_tpm *t = NULL;
	size_t len = 0;

	cr_assert_eq(nkpi_tpm_open(tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_ak_public(t, ak, &len), NKP_OK);
	nkpi_tpm_close(t);
	return len;
}

/* The EK's public area as TCG's template L-1 makes it; its modulus. */
static const uint8_t *ek_modulus(const ek_out *e)
{
	TPM2B_PUBLIC pub = {0};
	size_t off = 0;

	cr_assert_eq(Tss2_MU_TPM2B_PUBLIC_Unmarshal(e->ek, e->ek_len, &off, &pub), TSS2_RC_SUCCESS);
	cr_assert_eq(off, e->ek_len);
	cr_assert_eq(pub.publicArea.type, TPM2_ALG_RSA);
	cr_assert_eq(pub.publicArea.nameAlg, TPM2_ALG_SHA256);
	cr_assert_eq(pub.publicArea.objectAttributes, 0x000300b2, "attributes 0x%08x",
		     pub.publicArea.objectAttributes);
	cr_assert_eq(pub.publicArea.authPolicy.size, 32);
	cr_assert_eq(pub.publicArea.authPolicy.buffer[0], 0x83);
	cr_assert_eq(pub.publicArea.parameters.rsaDetail.keyBits, 2048);
	cr_assert_eq(pub.publicArea.parameters.rsaDetail.exponent, 0);
	cr_assert_eq(pub.publicArea.parameters.rsaDetail.symmetric.algorithm, TPM2_ALG_AES);
	cr_assert_eq(pub.publicArea.unique.rsa.size, 256);
	/* TPM2B_PUBLIC ends with the modulus. */
	return e->ek + e->ek_len - 256;
}

Test(tpm_ek, the_ek_is_the_key_its_certificate_certifies)
{
	static const uint8_t int_hdr[] = {0x02, 0x82, 0x01, 0x01, 0x00};
	ek_out e, again;
	uint8_t want[sizeof(int_hdr) + 256];
	char path[400], cmd[1200];

	ek_of(tpm_c.tcti, &e);
	cr_assert_gt(e.cert_len, 300, "the manufactured TPM has an EK certificate");
	cr_assert_eq(e.cert[0], 0x30, "a DER SEQUENCE");
	cr_assert_eq(e.cert_len, 4 + ((size_t)e.cert[2] << 8 | e.cert[3]), "exactly the DER");
	/* The certified RSA key, SubjectPublicKeyInfo's INTEGER modulus
	 * (2048 bits, its top bit set: a leading zero byte), is the EK's. */
	memcpy(want, int_hdr, sizeof(int_hdr));
	memcpy(want + sizeof(int_hdr), ek_modulus(&e), 256);
	cr_assert(contains(e.cert, e.cert_len, want, sizeof(want)),
		  "the EK's modulus is not in its certificate");
	/* And by openssl's reading of the certificate, where it is installed. */
	snprintf(path, sizeof(path), "%s/ek-cert.der", tmp);
	cr_assert_eq(test_swtpm_write(path, e.cert, e.cert_len), 0);
	if (system("command -v openssl >/dev/null 2>&1") == 0) {
		char hex[513], line[600] = "";
		FILE *p;

		snprintf(cmd, sizeof(cmd),
			 "openssl x509 -inform DER -in '%s' -noout -modulus 2>/dev/null", path);
		p = popen(cmd, "r");
		cr_assert_not_null(p);
		cr_assert_not_null(fgets(line, sizeof(line), p));
		pclose(p);
		sodium_bin2hex(hex, sizeof(hex), ek_modulus(&e), 256);
		cr_assert(strncmp(line, "Modulus=", 8) == 0 && strncasecmp(line + 8, hex, 512) == 0,
			  "openssl reads another key: %s", line);
	}
	/* The same template, the same key, every time. */
	ek_of(tpm_c.tcti, &again);
	cr_assert_eq(again.ek_len, e.ek_len);
	cr_assert_eq(memcmp(again.ek, e.ek, e.ek_len), 0);
	cr_assert_eq(again.cert_len, e.cert_len);
	cr_assert_eq(memcmp(again.cert, e.cert, e.cert_len), 0);
}

Test(tpm_ek, a_tpm_without_a_certificate_gives_its_ek_alone)
{
	ek_out a, c;

	ek_of(tpm_a.tcti, &a);
	ek_of(tpm_c.tcti, &c);
	cr_assert_eq(a.cert_len, 0, "no certificate: none given");
	cr_assert_gt(a.ek_len, 256);
	(void)ek_modulus(&a);
	cr_assert_neq(memcmp(ek_modulus(&a), ek_modulus(&c), 256), 0, "each TPM its own EK");
}

static nkp_err activate_with(const char *tcti, const uint8_t *blob, size_t blob_len,
			     const uint8_t *secret, size_t secret_len, uint8_t *out,
			     size_t *out_len)
{
	nkpi_tpm *t = NULL;
	nkp_err err = nkpi_tpm_open(tcti, &t);

	if (err == NKP_OK) {
		err = nkpi_tpm_activate(t, blob, blob_len, secret, secret_len, out, out_len);
	}
	nkpi_tpm_close(t);
	return err;
}

typedef struct credential {
	uint8_t cred[32];
	uint8_t blob[512], secret[512];
	size_t blob_len, secret_len;
} credential;

/* A fresh random credential made by tpm2_makecredential to the EK of
 * `ek_tcti` for the key named `name`. */
static void make_credential(const char *ek_tcti, const uint8_t name[34], credential *c)
{
	ek_out e;

	ek_of(ek_tcti, &e);
	randombytes_buf(c->cred, sizeof(c->cred));
	cr_assert_eq(test_makecredential(tmp, e.ek, e.ek_len, name, c->cred, sizeof(c->cred),
					 c->blob, &c->blob_len, c->secret, &c->secret_len),
		     0, "tpm2_makecredential failed: see %s/mc.log", tmp);
}

static void need_makecredential(void)
{
	if (!test_makecredential_available()) {
		cr_skip_test("tpm2_makecredential is not installed (Debian: tpm2-tools): no "
			     "credential made by another implementation to test with");
	}
}

Test(tpm_ek, activation_gives_back_the_credential_made_for_the_ak)
{
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34], out[NKPI_TPM_CREDENTIAL_MAX];
	size_t out_len = 0;
	credential c;

	need_makecredential();
	test_tpm_name(ak, ak_of(tpm_c.tcti, ak), name);
	make_credential(tpm_c.tcti, name, &c);
	cr_assert_eq(activate_with(tpm_c.tcti, c.blob, c.blob_len, c.secret, c.secret_len, out,
				   &out_len),
		     NKP_OK);
	cr_assert_eq(out_len, sizeof(c.cred));
	cr_assert_eq(memcmp(out, c.cred, sizeof(c.cred)), 0);
	/* A TPM without a certificate activates just the same. */
	test_tpm_name(ak, ak_of(tpm_a.tcti, ak), name);
	make_credential(tpm_a.tcti, name, &c);
	cr_assert_eq(activate_with(tpm_a.tcti, c.blob, c.blob_len, c.secret, c.secret_len, out,
				   &out_len),
		     NKP_OK);
	cr_assert_eq(memcmp(out, c.cred, sizeof(c.cred)), 0);
}

static void assert_not_activated(const credential *c, const uint8_t *blob, size_t blob_len,
				 const uint8_t *secret, size_t secret_len, nkp_err want,
				 const char *what, size_t i)
{
	uint8_t out[NKPI_TPM_CREDENTIAL_MAX];
	size_t out_len = 0;

	memset(out, 0, sizeof(out));
	cr_expect_eq(activate_with(tpm_c.tcti, blob, blob_len, secret, secret_len, out, &out_len),
		     want, "%s %zu", what, i);
	cr_expect_eq(out_len, 0, "%s %zu: nothing written", what, i);
	cr_expect(!contains(out, sizeof(out), c->cred, 8), "%s %zu: the credential came back", what,
		  i);
}

Test(tpm_ek, a_credential_for_another_ak_or_ek_is_refused)
{
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34];
	credential c;

	need_makecredential();
	/* Another key's name. */
	test_tpm_name(ak, ak_of(tpm_c.tcti, ak), name);
	name[2 + 31] ^= 0x01;
	make_credential(tpm_c.tcti, name, &c);
	assert_not_activated(&c, c.blob, c.blob_len, c.secret, c.secret_len, NKP_ERR_AUTH,
			     "another AK name", 0);
	/* The AK of another TPM (its name), to this EK. */
	test_tpm_name(ak, ak_of(tpm_a.tcti, ak), name);
	make_credential(tpm_c.tcti, name, &c);
	assert_not_activated(&c, c.blob, c.blob_len, c.secret, c.secret_len, NKP_ERR_AUTH,
			     "the AK of another TPM", 0);
	/* This AK, to the EK of another TPM. */
	test_tpm_name(ak, ak_of(tpm_c.tcti, ak), name);
	make_credential(tpm_a.tcti, name, &c);
	assert_not_activated(&c, c.blob, c.blob_len, c.secret, c.secret_len, NKP_ERR_AUTH,
			     "another TPM's EK", 0);
}

Test(tpm_ek, a_credential_altered_anywhere_is_refused)
{
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34], bad[513];
	credential c;

	need_makecredential();
	test_tpm_name(ak, ak_of(tpm_c.tcti, ak), name);
	make_credential(tpm_c.tcti, name, &c);
	/* Every byte of the blob; the secret's size field, and every 17th
	 * byte of the RSA-OAEP block (the TPM refuses them all alike). */
	for (size_t i = 0; i < c.blob_len; i++) {
		memcpy(bad, c.blob, c.blob_len);
		bad[i] ^= 0x01;
		assert_not_activated(&c, bad, c.blob_len, c.secret, c.secret_len,
				     i < 2 ? NKP_ERR_INVALID : NKP_ERR_AUTH, "blob byte", i);
	}
	for (size_t i = 0; i < c.secret_len; i += i < 2 ? 1 : 17) {
		memcpy(bad, c.secret, c.secret_len);
		bad[i] ^= 0x80;
		assert_not_activated(&c, c.blob, c.blob_len, bad, c.secret_len,
				     i < 2 ? NKP_ERR_INVALID : NKP_ERR_AUTH, "secret byte", i);
	}
	/* Malformed: cut short, a byte over, empty, swapped. */
	assert_not_activated(&c, c.blob, c.blob_len - 1, c.secret, c.secret_len, NKP_ERR_INVALID,
			     "blob cut short", 0);
	memcpy(bad, c.secret, c.secret_len);
	bad[c.secret_len] = 0;
	assert_not_activated(&c, c.blob, c.blob_len, bad, c.secret_len + 1, NKP_ERR_INVALID,
			     "a byte after the secret", 0);
	assert_not_activated(&c, c.blob, 0, c.secret, c.secret_len, NKP_ERR_INVALID, "no blob", 0);
	assert_not_activated(&c, (const uint8_t *)"\0\0", 2, c.secret, c.secret_len,
			     NKP_ERR_INVALID, "an empty TPM2B", 0);
	assert_not_activated(&c, c.secret, c.secret_len, c.blob, c.blob_len, NKP_ERR_INVALID,
			     "blob and secret swapped", 0);
}

Test(tpm_ek, the_credential_never_crosses_the_tcti_in_clear)
{
	static relay r;
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], name[34], out[NKPI_TPM_CREDENTIAL_MAX];
	size_t out_len = 0;
	credential c;
	char tcti[128];
	pthread_t t;

	need_makecredential();
	test_tpm_name(ak, ak_of(tpm_c.tcti, ak), name);
	make_credential(tpm_c.tcti, name, &c);
	relay_start(&r, tpm_c.port, tcti, sizeof(tcti), &t);
	cr_assert_eq(activate_with(tcti, c.blob, c.blob_len, c.secret, c.secret_len, out, &out_len),
		     NKP_OK);
	cr_assert_eq(memcmp(out, c.cred, sizeof(c.cred)), 0);
	pthread_mutex_lock(&r.lock);
	cr_assert_gt(r.seen_len, 200, "the relay saw the commands");
	cr_assert(!contains(r.seen, r.seen_len, c.cred, 8),
		  "the credential (or 8 bytes of it) crossed the TCTI in clear");
	pthread_mutex_unlock(&r.lock);
	relay_stop(&r, t);
}

/* ---- nkpd's side: its software MakeCredential and the EK certificate
 * check (nkp/private/quote.c), against the TPM itself ---- */

static uint8_t *read_all(const char *path, size_t *len)
{
	uint8_t *buf = NULL;

	cr_assert_eq(nkp_file_read(path, 1u << 20, &buf, len), NKP_OK, "%s", path);
	return buf;
}

Test(tpm_ek, nkpds_credential_is_recovered_by_the_tpm_of_that_ek_and_ak_only)
{
	uint8_t ak[NKPI_TPM_PUBLIC_MAX], ak_a[NKPI_TPM_PUBLIC_MAX], cred[32];
	uint8_t blob[NKPI_QUOTE_BLOB_MAX], secret[NKPI_QUOTE_SECRET_MAX];
	uint8_t out[NKPI_TPM_CREDENTIAL_MAX];
	size_t ak_len = ak_of(tpm_c.tcti, ak), ak_a_len = ak_of(tpm_a.tcti, ak_a);
	size_t blob_len = 0, secret_len = 0, out_len = 0;
	ek_out e, ea;

	ek_of(tpm_c.tcti, &e);
	ek_of(tpm_a.tcti, &ea);
	randombytes_buf(cred, sizeof(cred));
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, ak, ak_len, cred, sizeof(cred),
						blob, &blob_len, secret, &secret_len),
		     NKP_OK);
	cr_assert_eq(activate_with(tpm_c.tcti, blob, blob_len, secret, secret_len, out, &out_len),
		     NKP_OK, "the TPM could not activate nkpd's credential");
	cr_assert_eq(out_len, sizeof(cred));
	cr_assert_eq(memcmp(out, cred, sizeof(cred)), 0);
	/* Another TPM (its own EK, its own AK) cannot. */
	cr_assert_eq(activate_with(tpm_a.tcti, blob, blob_len, secret, secret_len, out, &out_len),
		     NKP_ERR_AUTH);
	/* Made to this EK for another TPM's AK: this TPM cannot either. */
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, ak_a, ak_a_len, cred, sizeof(cred),
						blob, &blob_len, secret, &secret_len),
		     NKP_OK);
	cr_assert_eq(activate_with(tpm_c.tcti, blob, blob_len, secret, secret_len, out, &out_len),
		     NKP_ERR_AUTH);
	/* An EK or AK not of the templates, a credential of no or 65 bytes. */
	cr_assert_eq(nkpi_quote_make_credential(ak, ak_len, ak, ak_len, cred, sizeof(cred), blob,
						&blob_len, secret, &secret_len),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, e.ek, e.ek_len, cred, sizeof(cred),
						blob, &blob_len, secret, &secret_len),
		     NKP_ERR_INVALID);
	cr_assert_eq(nkpi_quote_make_credential(e.ek, e.ek_len, ak, ak_len, cred, 0, blob,
						&blob_len, secret, &secret_len),
		     NKP_ERR_INVALID);
	(void)ea;
}

Test(tpm_ek, the_ek_certificate_verifies_under_its_ca_and_for_its_ek_only)
{
	char path[400];
	uint8_t *root, *issuer, *both;
	size_t root_len, issuer_len;
	ek_out e, ea;

	ek_of(tpm_c.tcti, &e);
	ek_of(tpm_a.tcti, &ea);
	cr_assert_gt(e.cert_len, 0);
	snprintf(path, sizeof(path), "%s/c/ca/swtpm-localca-rootca-cert.pem", tmp);
	root = read_all(path, &root_len);
	snprintf(path, sizeof(path), "%s/c/ca/issuercert.pem", tmp);
	issuer = read_all(path, &issuer_len);
	both = malloc(root_len + issuer_len);
	cr_assert_not_null(both);
	memcpy(both, root, root_len);
	memcpy(both + root_len, issuer, issuer_len);
	cr_assert_eq(nkpi_quote_ca_check(both, root_len + issuer_len), NKP_OK);
	cr_assert_eq(nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len, both,
					      root_len + issuer_len),
		     NKP_OK);
	/* The issuing CA alone is a trust anchor too. */
	cr_assert_eq(
		nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len, issuer, issuer_len),
		NKP_OK);
	/* The root alone cannot reach the certificate: no chain. */
	cr_assert_eq(nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len, root, root_len),
		     NKP_ERR_AUTH);
	/* Another TPM's EK with this certificate. */
	cr_assert_eq(nkpi_quote_ek_cert_check(ea.ek, ea.ek_len, e.cert, e.cert_len, both,
					      root_len + issuer_len),
		     NKP_ERR_REFUSED);
	/* A certificate altered in its signature, or cut short. */
	e.cert[e.cert_len - 5] ^= 0x01;
	cr_assert_eq(nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len, both,
					      root_len + issuer_len),
		     NKP_ERR_AUTH);
	cr_assert_eq(nkpi_quote_ek_cert_check(e.ek, e.ek_len, e.cert, e.cert_len / 2, both,
					      root_len + issuer_len),
		     NKP_ERR_INVALID);
	/* Not PEM. */
	cr_assert_eq(nkpi_quote_ca_check((const uint8_t *)"nonsense", 8), NKP_ERR_INVALID);
	free(both);
	free(root);
	free(issuer);
}

/* The largest seal policy nkpd sends (64 baselines, names of 64 bytes):
 * bound through the daemon's path (nkpi_atrest_bind), it must be read
 * back at the next start, or every bound host is stranded at once. */
Test(tpm, the_largest_policy_bound_is_read_back_at_the_next_start)
{
	static char names[64][65];
	char dir[PATH_MAX];
	uint8_t state[32], digest[32];
	nkp_key *key = NULL, *back = NULL;
	nkpi_atrest_kind kind;
	bool bound = false;
	fx f;
	nkpi_atrest_opts o = {.tpm = tpm_a.tcti};

	snprintf(dir, sizeof(dir), "%s/big", tmp);
	cr_assert_eq(mkdir(dir, 0700), 0);
	o.dir = dir;
	cr_assert_eq(nkpi_atrest_init(&o, &key, &kind), NKP_OK);
	cr_assert_eq(kind, NKPI_ATREST_TPM);
	fx_init(&f);
	pcr16_state(0, state);
	for (int i = 0; i < 64; i++) {
		memset(digest, i + 1, sizeof(digest));
		fx_approve(&f, 0xffffffu, i == 63 ? state : digest);
		memset(names[i], 'a' + i % 26, 64);
		f.a[i].name = names[i];
	}
	f.a[63].pcr_mask = 1u << 16; /* the one that opens: PCR 16 as it is */
	cr_assert_eq(nkpi_policy_approve(f.secret, 1u << 16, state, f.ref, 8, f.sig[63],
					 &f.a[63].signature.len),
		     NKP_OK);
	cr_assert_eq(nkpi_atrest_bind(&o, key, &f.p, NULL), NKP_OK);
	cr_assert_eq(nkpi_atrest_binding(&o, &bound, digest), NKP_OK);
	cr_assert(bound);
	cr_assert_eq(nkpi_atrest_open(&o, &back, &kind), NKP_OK, "stranded");
	cr_assert(nkp_key_equal(key, back));
	nkp_key_free(back);
	nkp_key_free(key);
}

/* ---- revocation: the parent the TPM forgets at binding ---- */

/* Undefines NV index `index` as an operator would (tpm2_nvundefine): by
 * the owner, through ESAPI, not through nkp. */
static void nv_undefine_by_hand(const char *tcti, uint32_t index)
{
	TSS2_TCTI_CONTEXT *tc = NULL;
	ESYS_CONTEXT *esys = NULL;
	ESYS_TR nv = ESYS_TR_NONE;

	cr_assert_eq(Tss2_TctiLdr_Initialize(tcti, &tc), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Initialize(&esys, tc, NULL), TSS2_RC_SUCCESS);
	cr_assert_eq(
		Esys_TR_FromTPMPublic(esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv),
		TSS2_RC_SUCCESS, "NV index 0x%08x is not defined", (unsigned)index);
	cr_assert_eq(Esys_NV_UndefineSpace(esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD,
					   ESYS_TR_NONE, ESYS_TR_NONE),
		     TSS2_RC_SUCCESS);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tc);
}

static uint32_t nv_index_of(const uint8_t *buf, size_t len)
{
	nkpi_tpm_sealed_info info;

	cr_assert_eq(nkpi_tpm_sealed_inspect(buf, len, &info), NKP_OK);
	return info.nv_index;
}

Test(tpm, a_new_format_1_object_has_parent_2_and_an_owner_nv_index)
{
	Nkp__Atrest__TpmSealed *m;
	nkp_key *key = NULL;
	uint8_t *buf = NULL, *again = NULL;
	size_t len = 0, again_len = 0;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	m = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	cr_assert_not_null(m);
	cr_assert_eq(m->format_version, 1);
	cr_assert_eq(m->parent, 2);
	cr_assert(m->nv_index >= 0x01800000u && m->nv_index <= 0x01bfffffu, "index 0x%08x",
		  (unsigned)m->nv_index);
	cr_assert_eq(nv_index_of(buf, len), m->nv_index);
	nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	/* Each object its own parent: sealing again defines another index. */
	seal_with(tpm_a.tcti, key, &again, &again_len);
	cr_assert_neq(nv_index_of(again, again_len), nv_index_of(buf, len));
	restart(&tpm_a);
	assert_opens(tpm_a.tcti, buf, len, key, "after a restart");
	assert_opens(tpm_a.tcti, again, again_len, key, "the second, after a restart");
	nkp_key_free(key);
	free(buf);
	free(again);
}

Test(tpm, an_object_whose_nv_index_is_undefined_never_opens_again)
{
	nkpi_tpm *t = NULL;
	nkp_key *key = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	assert_opens(tpm_a.tcti, buf, len, key, "before");
	nv_undefine_by_hand(tpm_a.tcti, nv_index_of(buf, len));
	assert_shut(tpm_a.tcti, buf, len, NKP_ERR_OTHER_TPM, "its index undefined");
	restart(&tpm_a);
	assert_shut(tpm_a.tcti, buf, len, NKP_ERR_OTHER_TPM, "its index undefined, restarted");
	/* Revoking what is gone already is not an error. */
	cr_assert_eq(nkpi_tpm_open(tpm_a.tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_revoke(t, nv_index_of(buf, len)), NKP_OK);
	cr_assert_eq(nkpi_tpm_revoke(t, 0x01c00002u), NKP_ERR_INVALID, "outside the owner range");
	nkpi_tpm_close(t);
	nkp_key_free(key);
	free(buf);
}

Test(tpm, an_nv_index_not_nkps_is_neither_read_nor_undefined)
{
	const TPM2B_AUTH auth = {0};
	TPM2B_NV_PUBLIC pub = {.nvPublic = {.nameAlg = TPM2_ALG_SHA256,
					    .attributes = TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD |
							  TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE,
					    .dataSize = 32}};
	TSS2_TCTI_CONTEXT *tc = NULL;
	ESYS_CONTEXT *esys = NULL;
	ESYS_TR nv = ESYS_TR_NONE;
	nkpi_tpm *t = NULL;
	nkp_key *key = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_with(tpm_a.tcti, key, &buf, &len);
	/* Its index undefined, and another (writable by anyone) defined at
	 * that handle in its place. */
	pub.nvPublic.nvIndex = nv_index_of(buf, len);
	nv_undefine_by_hand(tpm_a.tcti, pub.nvPublic.nvIndex);
	cr_assert_eq(Tss2_TctiLdr_Initialize(tpm_a.tcti, &tc), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Initialize(&esys, tc, NULL), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_NV_DefineSpace(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					 ESYS_TR_NONE, &auth, &pub, &nv),
		     TSS2_RC_SUCCESS);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tc);
	assert_shut(tpm_a.tcti, buf, len, NKP_ERR_OTHER_TPM, "another index at its handle");
	cr_assert_eq(nkpi_tpm_open(tpm_a.tcti, &t), NKP_OK);
	cr_assert_eq(nkpi_tpm_revoke(t, pub.nvPublic.nvIndex), NKP_ERR_STATE);
	nkpi_tpm_close(t);
	nv_undefine_by_hand(tpm_a.tcti, pub.nvPublic.nvIndex); /* it was left alone */
	nkp_key_free(key);
	free(buf);
}

/* The attack a binding must defeat: the pre-binding seal.tpm (a backup,
 * a snapshot, freed blocks) put back, on the same machine. */
Test(tpm, a_binding_revokes_the_object_it_replaces_and_an_unbind_makes_a_new_one)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], *not_revoked = (char *)"unset";
	uint8_t state[32], *before = NULL, *bound = NULL, *after = NULL;
	size_t before_len = 0, bound_len = 0, after_len = 0;
	nkp_key *key = NULL, *back = NULL;
	nkpi_tpm_sealed_info info;
	nkpi_atrest_kind kind;
	nkpi_atrest_opts o = {.tpm = tpm_a.tcti};
	fx f;

	snprintf(dir, sizeof(dir), "%s/revoke", tmp);
	snprintf(path, sizeof(path), "%s/seal.tpm", dir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	o.dir = dir;
	cr_assert_eq(nkpi_atrest_init(&o, &key, &kind), NKP_OK);
	cr_assert_eq(nkp_file_read(path, NKPI_TPM_SEALED_MAX, &before, &before_len), NKP_OK);
	cr_assert_neq(nv_index_of(before, before_len), 0, "init --tpm: parent 2");
	assert_opens(tpm_a.tcti, before, before_len, key, "the pre-binding object, before");

	fx_init(&f);
	pcr16_state(0, state);
	fx_approve(&f, 1u << 16, state);
	cr_assert_eq(nkpi_atrest_bind(&o, key, &f.p, &not_revoked), NKP_OK);
	cr_assert_null(not_revoked, "revoked: %s", not_revoked != NULL ? not_revoked : "");
	assert_shut(tpm_a.tcti, before, before_len, NKP_ERR_OTHER_TPM,
		    "the pre-binding object, after the binding");
	restart(&tpm_a);
	assert_shut(tpm_a.tcti, before, before_len, NKP_ERR_OTHER_TPM,
		    "the pre-binding object, after a restart");
	cr_assert_eq(nkpi_atrest_open(&o, &back, &kind), NKP_OK, "the bound one opens");
	cr_assert(nkp_key_equal(key, back));
	nkp_key_free(back);
	back = NULL;
	cr_assert_eq(nkp_file_read(path, NKPI_TPM_SEALED_MAX, &bound, &bound_len), NKP_OK);
	cr_assert_eq(nkpi_tpm_sealed_inspect(bound, bound_len, &info), NKP_OK);
	cr_assert(info.bound);
	cr_assert_eq(info.nv_index, 0, "a bound object keeps parent 1");

	/* A re-binding replaces a bound object: nothing to revoke. */
	f.ref[7] = 2;
	f.p.n_approvals = 0;
	fx_approve(&f, 1u << 16, state);
	not_revoked = (char *)"unset";
	cr_assert_eq(nkpi_atrest_bind(&o, key, &f.p, &not_revoked), NKP_OK);
	cr_assert_null(not_revoked);

	/* Unbound: a new parent-2 object with a fresh index, that opens. */
	not_revoked = (char *)"unset";
	cr_assert_eq(nkpi_atrest_bind(&o, key, NULL, &not_revoked), NKP_OK);
	cr_assert_null(not_revoked);
	cr_assert_eq(nkp_file_read(path, NKPI_TPM_SEALED_MAX, &after, &after_len), NKP_OK);
	cr_assert_eq(nkpi_tpm_sealed_inspect(after, after_len, &info), NKP_OK);
	cr_assert(!info.bound);
	cr_assert_neq(info.nv_index, 0);
	cr_assert_neq(info.nv_index, nv_index_of(before, before_len));
	restart(&tpm_a);
	cr_assert_eq(nkpi_atrest_open(&o, &back, &kind), NKP_OK, "the unbound one opens");
	cr_assert(nkp_key_equal(key, back));
	assert_shut(tpm_a.tcti, before, before_len, NKP_ERR_OTHER_TPM,
		    "the first pre-binding object, still");
	nkp_key_free(back);
	nkp_key_free(key);
	free(before);
	free(bound);
	free(after);
}

/* A seal.tpm of parent 1, as nkp wrote before parent 2 (the plain SRK,
 * no NV index): made here with ESAPI, the key sent in clear (a test). */
static void seal_parent_1(const char *tcti, const nkp_key *key, uint8_t **out, size_t *out_len)
{
	Nkp__Atrest__TpmSealed m = NKP__ATREST__TPM_SEALED__INIT;
	TPM2B_PUBLIC srk = {
		.publicArea = {.type = TPM2_ALG_ECC,
			       .nameAlg = TPM2_ALG_SHA256,
			       .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						   TPMA_OBJECT_SENSITIVEDATAORIGIN |
						   TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
						   TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
			       .parameters.eccDetail = {.symmetric = {.algorithm = TPM2_ALG_AES,
								      .keyBits.aes = 128,
								      .mode.aes = TPM2_ALG_CFB},
							.scheme = {.scheme = TPM2_ALG_NULL},
							.curveID = TPM2_ECC_NIST_P256,
							.kdf = {.scheme = TPM2_ALG_NULL}}}};
	TPM2B_PUBLIC tmpl = {
		.publicArea = {.type = TPM2_ALG_KEYEDHASH,
			       .nameAlg = TPM2_ALG_SHA256,
			       .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
						   TPMA_OBJECT_NODA | TPMA_OBJECT_USERWITHAUTH}};
	TPM2B_SENSITIVE_CREATE sens = {0}, none = {0};
	const TPM2B_DATA outside = {0};
	const TPML_PCR_SELECTION pcrs = {0};
	TSS2_TCTI_CONTEXT *tc = NULL;
	ESYS_CONTEXT *esys = NULL;
	ESYS_TR primary = ESYS_TR_NONE;
	TPM2B_PUBLIC *pub = NULL;
	TPM2B_PRIVATE *priv = NULL;
	uint8_t pub_buf[sizeof(*pub)], priv_buf[sizeof(*priv)];
	size_t pub_len = 0, priv_len = 0;

	tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
	sens.sensitive.data.size = NKP_KEY_BYTES;
	nkp_key_export(key, sens.sensitive.data.buffer);
	cr_assert_eq(Tss2_TctiLdr_Initialize(tcti, &tc), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Initialize(&esys, tc, NULL), TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
					ESYS_TR_NONE, &none, &srk, &outside, &pcrs, &primary, NULL,
					NULL, NULL, NULL),
		     TSS2_RC_SUCCESS);
	cr_assert_eq(Esys_Create(esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
				 &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL),
		     TSS2_RC_SUCCESS);
	sodium_memzero(&sens, sizeof(sens));
	(void)Esys_FlushContext(esys, primary);
	cr_assert_eq(Tss2_MU_TPM2B_PUBLIC_Marshal(pub, pub_buf, sizeof(pub_buf), &pub_len),
		     TSS2_RC_SUCCESS);
	cr_assert_eq(Tss2_MU_TPM2B_PRIVATE_Marshal(priv, priv_buf, sizeof(priv_buf), &priv_len),
		     TSS2_RC_SUCCESS);
	Esys_Free(pub);
	Esys_Free(priv);
	Esys_Finalize(&esys);
	Tss2_TctiLdr_Finalize(&tc);
	m.format_version = 1;
	m.parent = 1;
	m.public_ = (ProtobufCBinaryData){pub_len, pub_buf};
	m.private_ = (ProtobufCBinaryData){priv_len, priv_buf};
	m.tcti = (char *)tcti;
	*out_len = nkp__atrest__tpm_sealed__get_packed_size(&m);
	*out = malloc(*out_len);
	cr_assert_not_null(*out);
	nkp__atrest__tpm_sealed__pack(&m, *out);
}

Test(tpm, a_parent_1_file_still_opens_and_its_binding_says_it_was_not_revoked)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], *not_revoked = NULL;
	uint8_t state[32], *old = NULL;
	size_t old_len = 0;
	nkp_key *key = NULL, *back = NULL;
	nkpi_atrest_kind kind;
	nkpi_atrest_opts o = {.tpm = tpm_a.tcti};
	fx f;

	cr_assert_eq(nkp_key_generate(&key), NKP_OK);
	seal_parent_1(tpm_a.tcti, key, &old, &old_len);
	cr_assert_eq(nv_index_of(old, old_len), 0);
	assert_opens(tpm_a.tcti, old, old_len, key, "a parent-1 file");
	assert_shut(tpm_b.tcti, old, old_len, NKP_ERR_OTHER_TPM, "a parent-1 file, another TPM");

	snprintf(dir, sizeof(dir), "%s/parent1", tmp);
	snprintf(path, sizeof(path), "%s/seal.tpm", dir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	cr_assert_eq(nkp_file_write_new(path, old, old_len, 0600), NKP_OK);
	o.dir = dir;
	cr_assert_eq(nkpi_atrest_open(&o, &back, &kind), NKP_OK);
	cr_assert(nkp_key_equal(key, back));
	nkp_key_free(back);
	fx_init(&f);
	pcr16_state(0, state);
	fx_approve(&f, 1u << 16, state);
	cr_assert_eq(nkpi_atrest_bind(&o, key, &f.p, &not_revoked), NKP_OK, "bound all the same");
	cr_assert_not_null(not_revoked);
	cr_assert(strstr(not_revoked, "parent 1") != NULL, "%s", not_revoked);
	free(not_revoked);
	/* The limit the binding reports: the SRK is always made again. */
	assert_opens(tpm_a.tcti, old, old_len, key, "the parent-1 file after the binding");
	nkp_key_free(key);
	free(old);
}
