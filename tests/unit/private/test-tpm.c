/* The sealing key sealed to a TPM (nkp/private/tpm.c), against swtpm: a
 * round trip, restarts, another TPM, every part of the sealed object
 * altered, malformed files, no TPM; and the key never crossing the TCTI in
 * clear (a relay between the TCTI and swtpm records every byte). */
#include <sys/stat.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>

#include <criterion/criterion.h>

#include <nkp/nkp.h>

#include "atrest.pb-c.h"
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
	m->format_version = 2;
}

static void other_parent(Nkp__Atrest__TpmSealed *m)
{
	m->parent = 2;
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
		{other_parent, NKP_ERR_FORMAT_VERSION, "an unknown parent template"},
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
	pthread_t pumps[32];
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

			if (p[i].revents == 0 ||
			    r->n_pumps == sizeof(r->pumps) / sizeof(r->pumps[0])) {
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

Test(tpm, the_key_never_crosses_the_tcti_in_clear)
{
	static relay r;
	nkp_key *key = NULL, *back = NULL;
	uint8_t *buf = NULL, raw[NKP_KEY_BYTES];
	size_t len = 0;
	char tcti[128];
	pthread_t t;
	int port = 0;

	/* The control port must be the server port + 1: two listeners. */
	for (int i = 0; i < 50; i++) {
		int p1 = 0;

		r.listen_fd[0] = tcp_listen(&port);
		r.listen_fd[1] = -1;
		if (r.listen_fd[0] >= 0) {
			p1 = port + 1;
			r.listen_fd[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_in a = {.sin_family = AF_INET,
						.sin_port = htons((uint16_t)p1)};
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			if (bind(r.listen_fd[1], (struct sockaddr *)&a, sizeof(a)) == 0 &&
			    listen(r.listen_fd[1], 4) == 0) {
				break;
			}
			close(r.listen_fd[1]);
			close(r.listen_fd[0]);
			r.listen_fd[1] = -1;
		}
	}
	cr_assert_geq(r.listen_fd[1], 0, "no two adjacent ports for the relay");
	r.to_port = tpm_a.port;
	cr_assert_eq(pipe(r.stop), 0);
	pthread_mutex_init(&r.lock, NULL);
	pthread_create(&t, NULL, relay_accept, &r);
	snprintf(tcti, sizeof(tcti), "swtpm:host=127.0.0.1,port=%d", port);

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
	/* The TCTI's connections are closed: every pump ends. */
	cr_assert_eq(write(r.stop[1], "x", 1), 1);
	pthread_join(t, NULL);
	for (size_t i = 0; i < r.n_pumps; i++) {
		pthread_join(r.pumps[i], NULL);
	}
	for (int i = 0; i < 2; i++) {
		close(r.listen_fd[i]);
		close(r.stop[i]);
	}
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
