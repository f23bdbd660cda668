/* statethief STATE_DIR RECORD_DIR HOST_URL: what a thief holding a copy of
 * a host's state directory (seal.key and identity.nkp: the host's static
 * secret and the pinned service key) and a recording of the traffic
 * (nngrelay's RECORD_DIR) gets. For the replay integration test only.
 *
 * 1. Decrypt: every recorded HandshakeInit read with the host's secret (as
 *    the host would), answered with an ephemeral of its own, split; every
 *    recorded Transport tried under those keys, at its counter.
 * 2. Forge: a HandshakeInit as the service, made from the host's secret
 *    alone (ss = DH(r, S) = DH(s, R): Noise KK's first message does not
 *    resist key-compromise impersonation), sent to the live host; from its
 *    answer the best keys the thief can derive (se would need s or the
 *    host's ephemeral: it uses DH(r, E_h)); a Transport under them sent to
 *    the host.
 *
 * Prints what happened. Exit 0: nothing decrypted and the forged Transport
 * got no answer; 3: the attack got something; 1: the tool failed.
 *
 * statethief --offline STATE_DIR LABEL: a copy of a state directory whose
 * sealing key is not in it (sealed to a TPM, or a credential kept
 * elsewhere): every 32-byte window of every file in the copy is tried as
 * the sealing key of STATE_DIR/identity.nkp (sealed-file LABEL:
 * "nkp-host-identity", "nkpd-identity"). Exit 0: none opens it (after
 * checking that the file is there to be tried); 3: one did. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include <nkp/nkp.h>

#include "hoststate.pb-c.h"
#include "internal.h"
#include "noise.h"
#include "wire.pb-c.h"

#define PROLOGUE "nkp-wire-v1"

static uint8_t host_secret[32], host_pub[32], service_pub[32];

static int load_identity(const char *dir)
{
	char path[4096];
	nkp_key *seal = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	Nkp__Hoststate__HostIdentity *m;

	snprintf(path, sizeof(path), "%s/seal.key", dir);
	if (nkp_keyfile_load(path, false, &seal) != NKP_OK) {
		return -1;
	}
	snprintf(path, sizeof(path), "%s/identity.nkp", dir);
	if (nkp_sealfile_read(path, seal, "nkp-host-identity", &buf, &len) != NKP_OK) {
		nkp_key_free(seal);
		return -1;
	}
	nkp_key_free(seal);
	m = nkp__hoststate__host_identity__unpack(NULL, len, buf);
	nkp_secure_free(buf);
	if (m == NULL || m->host_secret.len != 32 || m->service_key.len != 32) {
		return -1;
	}
	memcpy(host_secret, m->host_secret.data, 32);
	memcpy(service_pub, m->service_key.data, 32);
	crypto_scalarmult_base(host_pub, host_secret);
	nkp__hoststate__host_identity__free_unpacked(m, NULL);
	return 0;
}

/* --- 1. decrypt ------------------------------------------------------------ */

typedef struct rec {
	Nkp__Wire__Frame *f;
} rec;

static size_t load_frames(const char *dir, rec *out, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	while (d != NULL && (e = readdir(d)) != NULL && n < max) {
		char path[4096];
		uint8_t *b = NULL;
		size_t len = 0;
		size_t l = strlen(e->d_name);

		if (l < 5 || (strcmp(e->d_name + l - 4, ".req") != 0 &&
			      strcmp(e->d_name + l - 5, ".held") != 0)) {
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (nkp_file_read(path, 8u << 20, &b, &len) == NKP_OK) {
			out[n].f = nkp__wire__frame__unpack(NULL, len, b);
			n += out[n].f != NULL;
			free(b);
		}
	}
	if (d != NULL) {
		closedir(d);
	}
	return n;
}

static unsigned try_decrypt(rec *r, size_t n, unsigned *inits, unsigned *transports)
{
	unsigned opened = 0;

	for (size_t i = 0; i < n; i++) {
		nkpi_noise_hs *hs = NULL;
		nkpi_noise_cipher send, recv;
		uint8_t ts[16], noise[64];
		size_t tl = 0, nl = 0;

		if (r[i].f->kind_case != NKP__WIRE__FRAME__KIND_INIT) {
			continue;
		}
		if (nkpi_noise_hs_new(false, host_secret, service_pub, (const uint8_t *)PROLOGUE,
				      sizeof(PROLOGUE) - 1, &hs) != NKP_OK ||
		    nkpi_noise_hs_read(hs, r[i].f->init->noise.data, r[i].f->init->noise.len, ts,
				       sizeof(ts), &tl) != NKP_OK) {
			nkpi_noise_hs_free(hs);
			continue;
		}
		(*inits)++; /* the host's secret reads the init: its payload is a timestamp */
		if (nkpi_noise_hs_write(hs, NULL, 0, noise, sizeof(noise), &nl) == NKP_OK &&
		    nkpi_noise_hs_split(hs, &send, &recv, NULL) == NKP_OK) {
			for (size_t j = 0; j < n; j++) {
				const Nkp__Wire__Transport *t = r[j].f->transport;
				uint8_t *out;
				uint8_t ad[8] = {0};
				size_t len;

				if (r[j].f->kind_case != NKP__WIRE__FRAME__KIND_TRANSPORT ||
				    t->ciphertext.len < 16) {
					continue;
				}
				(*transports)++;
				len = t->ciphertext.len > 65535 ? 65535 : t->ciphertext.len;
				/* The first chunk: the AD is the plaintext length. */
				{
					uint64_t pl = t->ciphertext.len - 16;

					for (int k = 0; k < 8; k++) {
						ad[k] = (uint8_t)(pl >> (8 * k));
					}
				}
				out = malloc(len);
				if (out != NULL &&
				    (nkpi_noise_decrypt(&recv, t->counter, ad, 8,
							t->ciphertext.data, len, out) == NKP_OK ||
				     nkpi_noise_decrypt(&send, t->counter, ad, 8,
							t->ciphertext.data, len, out) == NKP_OK)) {
					opened++;
				}
				free(out);
			}
		}
		nkpi_noise_cipher_wipe(&send);
		nkpi_noise_cipher_wipe(&recv);
		nkpi_noise_hs_free(hs);
	}
	return opened;
}

/* --- 2. forge ------------------------------------------------------------------ */

typedef struct forger {
	uint8_t ck[64], h[64], k[32];
	uint8_t e[32], E[32];
} forger;

static void hmac_b2(const uint8_t *key, const uint8_t *a, size_t alen, const uint8_t *b,
		    size_t blen, uint8_t out[64])
{
	uint8_t kb[128] = {0}, pad[128], inner[64];
	crypto_generichash_state st;

	memcpy(kb, key, 64);
	for (int i = 0; i < 128; i++) {
		pad[i] = kb[i] ^ 0x36;
	}
	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, pad, 128);
	crypto_generichash_update(&st, a, alen);
	crypto_generichash_update(&st, b, blen);
	crypto_generichash_final(&st, inner, 64);
	for (int i = 0; i < 128; i++) {
		pad[i] = kb[i] ^ 0x5c;
	}
	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, pad, 128);
	crypto_generichash_update(&st, inner, 64);
	crypto_generichash_final(&st, out, 64);
}

static void hkdf2(const uint8_t ck[64], const uint8_t *ikm, size_t len, uint8_t o1[64],
		  uint8_t o2[64])
{
	uint8_t tk[64], one = 1, two = 2;

	hmac_b2(ck, ikm, len, NULL, 0, tk);
	hmac_b2(tk, &one, 1, NULL, 0, o1);
	hmac_b2(tk, o1, 64, &two, 1, o2);
}

static void mix_hash(forger *f, const uint8_t *d, size_t len)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 64);
	crypto_generichash_update(&st, f->h, 64);
	crypto_generichash_update(&st, d, len);
	crypto_generichash_final(&st, f->h, 64);
}

static void mix_key(forger *f, const uint8_t *sk, const uint8_t *pk)
{
	uint8_t dh[32], o1[64], o2[64];

	if (crypto_scalarmult(dh, sk, pk) != 0) {
		memset(dh, 0, sizeof(dh));
	}
	hkdf2(f->ck, dh, 32, o1, o2);
	memcpy(f->ck, o1, 64);
	memcpy(f->k, o2, 32);
}

static int exchange(nng_socket s, const Nkp__Wire__Frame *fr, nng_msg **reply)
{
	size_t len = nkp__wire__frame__get_packed_size(fr);
	uint8_t *b = malloc(len);
	int rv;

	nkp__wire__frame__pack(fr, b);
	rv = nng_send(s, b, len, 0);
	free(b);
	return rv != 0 ? rv : nng_recvmsg(s, reply, 0);
}

/* 0: no answer to the forged Transport; 1: answered; -1: failed. */
static int forge(const char *url, bool *init_answered)
{
	Nkp__Wire__Frame fr = NKP__WIRE__FRAME__INIT, *resp = NULL;
	Nkp__Wire__HandshakeInit in = NKP__WIRE__HANDSHAKE_INIT__INIT;
	Nkp__Wire__Transport tr = NKP__WIRE__TRANSPORT__INIT;
	uint8_t noise[60], ts[12], nn[12] = {0}, mkey[32], mac[16], idx[4] = {9};
	uint8_t o1[64], o2[64], ct[64], ad[8] = {16};
	const uint8_t pt[16] = "forged push.....";
	crypto_generichash_state st;
	nng_socket s;
	nng_msg *m = NULL;
	forger f;
	int rc = -1;

	/* Now as a timestamp: one far in the future would also lock the
	 * honest service out of this host until it restarts (a thief of the
	 * host's secret can do that; the test wants to see the service go on). */
	{
		struct timespec now;
		uint64_t sec;

		clock_gettime(CLOCK_REALTIME, &now);
		sec = (UINT64_C(1) << 62) + (uint64_t)now.tv_sec;
		for (int i = 0; i < 8; i++) {
			ts[i] = (uint8_t)(sec >> (56 - 8 * i));
		}
		for (int i = 0; i < 4; i++) {
			ts[8 + i] = (uint8_t)((uint32_t)now.tv_nsec >> (24 - 8 * i));
		}
	}
	memset(&f, 0, sizeof(f));
	memcpy(f.h, NKPI_NOISE_PROTOCOL_NAME, sizeof(NKPI_NOISE_PROTOCOL_NAME) - 1);
	memcpy(f.ck, f.h, 64);
	mix_hash(&f, (const uint8_t *)PROLOGUE, sizeof(PROLOGUE) - 1);
	mix_hash(&f, service_pub, 32);
	mix_hash(&f, host_pub, 32);
	randombytes_buf(f.e, 32);
	crypto_scalarmult_base(f.E, f.e);
	memcpy(noise, f.E, 32);
	mix_hash(&f, f.E, 32);
	mix_key(&f, f.e, host_pub);	       /* es */
	mix_key(&f, host_secret, service_pub); /* ss, from the host's secret */
	crypto_aead_chacha20poly1305_ietf_encrypt(noise + 32, NULL, ts, 12, f.h, 64, NULL, nn, f.k);
	mix_hash(&f, noise + 32, 28);
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)"nkp-mac1", 8);
	crypto_generichash_update(&st, host_pub, 32);
	crypto_generichash_final(&st, mkey, 32);
	crypto_generichash_init(&st, mkey, 32, 16);
	crypto_generichash_update(&st, idx, 4);
	crypto_generichash_update(&st, noise, 60);
	crypto_generichash_final(&st, mac, 16);
	in.sender_index = 9;
	in.noise = (ProtobufCBinaryData){60, noise};
	in.mac1 = (ProtobufCBinaryData){16, mac};
	fr.kind_case = NKP__WIRE__FRAME__KIND_INIT;
	fr.init = &in;

	if (nng_req0_open(&s) != 0) {
		return -1;
	}
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
	if (nng_dial(s, url, NULL, 0) != 0) {
		goto out;
	}
	*init_answered = exchange(s, &fr, &m) == 0;
	if (!*init_answered) {
		rc = 0; /* not even the handshake: nothing to build on */
		goto out;
	}
	resp = nkp__wire__frame__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
	nng_msg_free(m);
	m = NULL;
	if (resp == NULL || resp->kind_case != NKP__WIRE__FRAME__KIND_RESP ||
	    resp->resp->noise.len != 48) {
		goto out;
	}
	mix_hash(&f, resp->resp->noise.data, 32);
	mix_key(&f, f.e, resp->resp->noise.data);	  /* ee */
	mix_key(&f, host_secret, resp->resp->noise.data); /* se: its only guess */
	hkdf2(f.ck, NULL, 0, o1, o2);
	crypto_aead_chacha20poly1305_ietf_encrypt(ct, NULL, pt, 16, ad, 8, NULL, nn, o1);
	tr.receiver_index = resp->resp->sender_index;
	tr.counter = 0;
	tr.ciphertext = (ProtobufCBinaryData){32, ct};
	fr.kind_case = NKP__WIRE__FRAME__KIND_TRANSPORT;
	fr.transport = &tr;
	rc = exchange(s, &fr, &m) == 0 ? 1 : 0;
	nng_msg_free(m);
out:
	if (resp != NULL) {
		nkp__wire__frame__free_unpacked(resp, NULL);
	}
	nng_close(s);
	return rc;
}

/* --- 0. offline: any key lying in the copy --------------------------------- */

static int try_windows(const char *path, const uint8_t *target, size_t target_len,
		       const char *label, size_t *tries)
{
	uint8_t *buf = NULL, *out = NULL;
	size_t len = 0, outlen = 0;
	int found = 0;

	if (nkp_file_read(path, 1 << 24, &buf, &len) != NKP_OK) {
		return 0;
	}
	for (size_t i = 0; found == 0 && i + NKP_KEY_BYTES <= len; i++) {
		nkp_key *k = NULL;

		if (nkp_key_from_bytes(buf + i, &k) != NKP_OK) {
			continue;
		}
		(*tries)++;
		if (nkp_unseal_bytes(k, label, target, target_len, &out, &outlen) == NKP_OK) {
			printf("the key at offset %zu of %s opens identity.nkp\n", i, path);
			nkp_secure_free(out);
			found = 1;
		}
		nkp_key_free(k);
	}
	free(buf);
	return found;
}

static int offline(const char *dir, const char *label)
{
	char path[4096];
	uint8_t *target = NULL;
	size_t target_len = 0, tries = 0, files = 0;
	DIR *d;
	struct dirent *e;
	int found = 0;

	snprintf(path, sizeof(path), "%s/identity.nkp", dir);
	if (nkp_file_read(path, 1 << 20, &target, &target_len) != NKP_OK ||
	    (d = opendir(dir)) == NULL) {
		fprintf(stderr, "statethief: no %s to try keys on\n", path);
		free(target);
		return 1;
	}
	while (found == 0 && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.') {
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		files++;
		found = try_windows(path, target, target_len, label, &tries);
	}
	closedir(d);
	free(target);
	printf("offline: %zu files, %zu candidate keys tried, identity opened: %s\n", files, tries,
	       found ? "yes" : "no");
	return found ? 3 : (tries == 0 ? 1 : 0);
}

int main(int argc, char **argv)
{
	static rec r[4096];
	unsigned inits = 0, transports = 0, opened;
	size_t n;
	bool init_answered = false;
	int forged;

	if (argc == 4 && strcmp(argv[1], "--offline") == 0) {
		return nkp_init() == NKP_OK ? offline(argv[2], argv[3]) : 1;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: statethief STATE_DIR RECORD_DIR HOST_URL\n"
				"       statethief --offline STATE_DIR LABEL\n");
		return 2;
	}
	if (nkp_init() != NKP_OK || load_identity(argv[1]) != 0) {
		fprintf(stderr, "statethief: cannot open the host identity in %s\n", argv[1]);
		return 1;
	}
	n = load_frames(argv[2], r, sizeof(r) / sizeof(r[0]));
	opened = try_decrypt(r, n, &inits, &transports);
	printf("recorded frames: %zu; handshakes read with the host secret: %u; "
	       "transport frames decrypted: %u of %u tries\n",
	       n, inits, opened, transports);
	forged = forge(argv[3], &init_answered);
	printf("forged handshake answered: %s; forged push answered: %s\n",
	       init_answered ? "yes" : "no",
	       forged == 1   ? "yes"
	       : forged == 0 ? "no"
			     : "error");
	for (size_t i = 0; i < n; i++) {
		nkp__wire__frame__free_unpacked(r[i].f, NULL);
	}
	sodium_memzero(host_secret, sizeof(host_secret));
	if (forged < 0 || inits == 0) {
		return 1; /* the test must exercise the attack, not skip it */
	}
	return opened == 0 && forged == 0 ? 0 : 3;
}
