/* Shared set-up for the libFuzzer targets: fixed keys and identities (the
 * corpus generator uses the same ones, so its sealed seeds open), a
 * scratch directory, and a quiet library.
 *
 * Everything here runs once per process; targets must not exit or abort
 * on bad input. A failure of the set-up itself is a broken harness, not a
 * finding, and aborts with a message. */
#ifndef NKP_FUZZ_UTIL_H
#define NKP_FUZZ_UTIL_H

#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/nkp.h>

/* Fixed identities and keys: test values, never used outside fuzzing. */
#define FZ_SERVICE_SECRET 0x51u
#define FZ_HOST_SECRET 0x48u
#define FZ_PRIMARY_BYTE 0x50u
#define FZ_SEAL_BYTE 0x53u
#define FZ_PROVIDER_ID_BYTE 0x70u
#define FZ_SEAL_LABEL "nkp-fuzz"
#define FZ_PASSWORD "fuzz password"

static inline void fz_check(nkp_err err, const char *what)
{
	if (err != NKP_OK) {
		fprintf(stderr, "fuzz harness: %s: %s\n", what, nkp_strerror(err));
		abort();
	}
}

static inline void fz_init(void)
{
	nkp_log_set_sink(NULL, NULL);
	fz_check(nkp_init(), "nkp_init");
	/* tpm2-tss's own complaints about what the targets feed it. */
	(void)setenv("TSS2_LOG", "all+NONE", 0);
}

/* A key of 32 copies of `byte`. */
static inline nkp_key *fz_key(uint8_t byte)
{
	uint8_t b[NKP_KEY_BYTES];
	nkp_key *k = NULL;

	memset(b, byte, sizeof(b));
	fz_check(nkp_key_from_bytes(b, &k), "key");
	sodium_memzero(b, sizeof(b));
	return k;
}

static inline nkp_identity *fz_identity(uint8_t byte)
{
	nkp_key *k = fz_key(byte);
	nkp_identity *id = NULL;

	fz_check(nkp_identity_from_key(k, &id), "identity");
	nkp_key_free(k);
	return id;
}

static inline void fz_provider_id(uint8_t id[static NKP_ID_BYTES])
{
	memset(id, FZ_PROVIDER_ID_BYTE, NKP_ID_BYTES);
}

/* Version `version` of the fixed provider. */
static inline nkp_primary *fz_primary(uint32_t version)
{
	uint8_t id[NKP_ID_BYTES];
	nkp_key *k = fz_key((uint8_t)(FZ_PRIMARY_BYTE + version - 1));
	nkp_primary *p = NULL;

	fz_provider_id(id);
	fz_check(nkp_primary_new(id, version, k, &p), "primary");
	nkp_key_free(k);
	return p;
}

/* A fresh scratch directory: under /dev/shm when there is one (state
 * writes fsync), else TMPDIR or /tmp. The caller frees the string. */
static inline char *fz_tmpdir(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
			   : getenv("TMPDIR") != NULL	 ? getenv("TMPDIR")
							 : "/tmp";
	size_t n = strlen(base) + 32;
	char *d = malloc(n);

	if (d == NULL) {
		abort();
	}
	snprintf(d, n, "%s/nkp-fuzz-XXXXXX", base);
	if (mkdtemp(d) == NULL) {
		perror("fuzz harness: mkdtemp");
		abort();
	}
	return d;
}

static inline int fz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void fz_rmrf(const char *dir)
{
	(void)nftw(dir, fz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
