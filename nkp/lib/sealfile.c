/* Sealed files (proto/sealed.proto) and key files.
 *
 * Sealed file, format 1:
 *   key   = crypto_kdf_derive_from_key(seal key, id 1, ctx "nkpseal1")
 *   AD    = "nkp-sealed" || u32le(format_version) || label (no NUL)
 *   nonce = 24 random bytes; ciphertext = XChaCha20-Poly1305(payload).
 * The label in the AD is always the caller's, never the file's: a file
 * sealed under another label fails to open (NKP_ERR_AUTH) even if its own
 * label field were rewritten. The label field must also equal the
 * caller's; a mismatch is NKP_ERR_AUTH too. Labels are 1..255 bytes.
 * Reading checks, in order: size (TOO_LARGE; empty: PARSE), protobuf (PARSE), version
 * (FORMAT_VERSION, before unknown fields, so a newer format is reported as
 * such), unknown fields and field sizes (PARSE), label and AEAD (AUTH).
 *
 * Memory: nkp_seal_bytes() returns malloc'd ciphertext (no secret; free());
 * nkp_unseal_bytes() and nkp_sealfile_read() return sodium_malloc'd
 * plaintext, freed and wiped by nkp_secure_free().
 *
 * Key files hold exactly 32 raw bytes. They are refused (NKP_ERR_PERM) if
 * not a regular file (symlinks included), if any group/other permission
 * bit is set, or if owned by another user than the effective one. A new
 * key file is written under a temporary name and hard-linked into place,
 * so a concurrent creator never has its key replaced: the loser of the
 * race loads the winner's key. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>

#include "internal.h"
#include "sealed.pb-c.h"

#define SEALED_MAX_LABEL 255u
#define AD_PREFIX "nkp-sealed"
#define AD_PREFIX_LEN (sizeof(AD_PREFIX) - 1)
#define KEYFILE_MODE 0600u

static const char seal_ctx[8] = {'n', 'k', 'p', 's', 'e', 'a', 'l', '1'};

static bool label_ok(const char *label)
{
	return label != NULL && label[0] != '\0' && strlen(label) <= SEALED_MAX_LABEL;
}

/* ad must hold AD_PREFIX_LEN + 4 + SEALED_MAX_LABEL bytes. */
static size_t make_ad(uint8_t *ad, const char *label)
{
	size_t llen = strlen(label);

	memcpy(ad, AD_PREFIX, AD_PREFIX_LEN);
	nkpi_store32_le(ad + AD_PREFIX_LEN, NKP_SEALED_FORMAT_VERSION);
	memcpy(ad + AD_PREFIX_LEN + 4, label, llen);
	return AD_PREFIX_LEN + 4 + llen;
}

void nkp_secure_free(void *p)
{
	/* sodium_free wipes the whole region; it accepts NULL. */
	sodium_free(p);
}

static nkp_err seal_pack(const char *label, const uint8_t nonce[static NKP_NONCE_BYTES],
			 uint8_t *ct, size_t ctlen, uint8_t **out, size_t *outlen)
{
	Nkp__Sealed__SealedFile msg = NKP__SEALED__SEALED_FILE__INIT;
	uint8_t *buf;
	size_t n;

	msg.format_version = NKP_SEALED_FORMAT_VERSION;
	msg.label = (char *)label;
	msg.nonce.data = (uint8_t *)nonce;
	msg.nonce.len = NKP_NONCE_BYTES;
	msg.ciphertext.data = ct;
	msg.ciphertext.len = ctlen;
	n = nkp__sealed__sealed_file__get_packed_size(&msg);
	if (n > NKP_SEALED_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	buf = malloc(n);
	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__sealed__sealed_file__pack(&msg, buf);
	*out = buf;
	*outlen = n;
	return NKP_OK;
}

nkp_err nkp_seal_bytes(const nkp_key *seal_key, const char *label, const uint8_t *data, size_t len,
		       uint8_t **out, size_t *outlen)
{
	uint8_t ad[AD_PREFIX_LEN + 4 + SEALED_MAX_LABEL];
	uint8_t nonce[NKP_NONCE_BYTES];
	nkp_key *sub = NULL;
	uint8_t *ct;
	size_t adlen;
	nkp_err err;

	if (seal_key == NULL || !label_ok(label) || (data == NULL && len > 0) || out == NULL ||
	    outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_SEALED_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	ct = malloc(len + NKP_TAG_BYTES);
	if (ct == NULL) {
		return NKP_ERR_NOMEM;
	}
	/* A borrowed block: hosts seal their key file on every push. */
	err = nkpi_key_derive_borrowed(seal_key, 1, seal_ctx, &sub);
	if (err != NKP_OK) {
		goto free_ct;
	}
	adlen = make_ad(ad, label);
	randombytes_buf(nonce, sizeof(nonce));
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(ct, NULL, data, len, ad, adlen, NULL, nonce,
						       nkpi_key_bytes(sub)) != 0) {
		err = NKP_ERR_CRYPTO;
		goto free_sub;
	}
	err = seal_pack(label, nonce, ct, len + NKP_TAG_BYTES, out, outlen);
free_sub:
	nkpi_key_release(sub);
free_ct:
	free(ct);
	return err;
}

/* Checks a parsed sealed file against the caller's expectations. */
static nkp_err sealed_check(const Nkp__Sealed__SealedFile *msg, const char *label)
{
	if (msg->format_version != NKP_SEALED_FORMAT_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&msg->base) || msg->nonce.len != NKP_NONCE_BYTES ||
	    msg->ciphertext.len < NKP_TAG_BYTES || msg->label == NULL) {
		return NKP_ERR_PARSE;
	}
	if (strcmp(msg->label, label) != 0) {
		return NKP_ERR_AUTH;
	}
	return NKP_OK;
}

static nkp_err sealed_open(const Nkp__Sealed__SealedFile *msg, const nkp_key *seal_key,
			   const char *label, uint8_t **out, size_t *outlen)
{
	uint8_t ad[AD_PREFIX_LEN + 4 + SEALED_MAX_LABEL];
	size_t ptlen = msg->ciphertext.len - NKP_TAG_BYTES;
	nkp_key *sub = NULL;
	uint8_t *pt;
	size_t adlen;
	nkp_err err;

	pt = sodium_malloc(ptlen > 0 ? ptlen : 1);
	if (pt == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = nkp_key_derive(seal_key, 1, seal_ctx, &sub);
	if (err != NKP_OK) {
		goto free_pt;
	}
	adlen = make_ad(ad, label);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, msg->ciphertext.data,
						       msg->ciphertext.len, ad, adlen,
						       msg->nonce.data, nkpi_key_bytes(sub)) != 0) {
		err = NKP_ERR_AUTH;
		goto free_sub;
	}
	nkp_key_free(sub);
	*out = pt;
	*outlen = ptlen;
	return NKP_OK;
free_sub:
	nkp_key_free(sub);
free_pt:
	sodium_free(pt);
	return err;
}

nkp_err nkp_unseal_bytes(const nkp_key *seal_key, const char *label, const uint8_t *buf, size_t len,
			 uint8_t **out, size_t *outlen)
{
	Nkp__Sealed__SealedFile *msg;
	nkp_err err;

	if (seal_key == NULL || !label_ok(label) || (buf == NULL && len > 0) || out == NULL ||
	    outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_SEALED_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	if (len == 0) {
		return NKP_ERR_PARSE;
	}
	msg = nkp__sealed__sealed_file__unpack(NULL, len, buf);
	if (msg == NULL) {
		return NKP_ERR_PARSE;
	}
	err = sealed_check(msg, label);
	if (err == NKP_OK) {
		err = sealed_open(msg, seal_key, label, out, outlen);
	}
	nkp__sealed__sealed_file__free_unpacked(msg, NULL);
	return err;
}

nkp_err nkp_sealfile_write(const char *path, const nkp_key *seal_key, const char *label,
			   const uint8_t *data, size_t len)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	nkp_err err;

	if (path == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_seal_bytes(seal_key, label, data, len, &buf, &n);
	if (err != NKP_OK) {
		return err;
	}
	err = nkp_file_write_atomic(path, buf, n, 0600, true, true);
	free(buf);
	return err;
}

nkp_err nkp_sealfile_read(const char *path, const nkp_key *seal_key, const char *label,
			  uint8_t **out, size_t *outlen)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	nkp_err err;

	if (path == NULL || seal_key == NULL || !label_ok(label) || out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_file_read(path, NKP_SEALED_MAX_FILE, &buf, &n);
	if (err != NKP_OK) {
		return err;
	}
	err = nkp_unseal_bytes(seal_key, label, buf, n, out, outlen);
	free(buf);
	return err;
}

/* Reads exactly NKP_KEY_BYTES from `fd` into locked memory. */
static nkp_err keyfile_read_fd(int fd, nkp_key **out)
{
	/* One spare byte to notice a longer file. */
	uint8_t *bytes = sodium_malloc(NKP_KEY_BYTES + 1);
	size_t used = 0;
	nkp_err err = NKP_OK;

	if (bytes == NULL) {
		return NKP_ERR_NOMEM;
	}
	while (used < NKP_KEY_BYTES + 1) {
		ssize_t n = read(fd, bytes + used, NKP_KEY_BYTES + 1 - used);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			err = NKP_ERR_IO;
			goto free_bytes;
		}
		if (n == 0) {
			break;
		}
		used += (size_t)n;
	}
	if (used != NKP_KEY_BYTES) {
		err = NKP_ERR_PARSE;
		goto free_bytes;
	}
	err = nkp_key_from_bytes(bytes, out);
free_bytes:
	sodium_free(bytes);
	return err;
}

static nkp_err keyfile_open(const char *path, nkp_key **out)
{
	struct stat st;
	nkp_err err;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0) {
		if (errno == ELOOP) {
			return NKP_ERR_PERM;
		}
		err = nkp_err_from_errno(errno);
		return err == NKP_OK ? NKP_ERR_IO : err;
	}
	if (fstat(fd, &st) != 0) {
		err = NKP_ERR_IO;
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		err = NKP_ERR_PERM;
		goto close_fd;
	}
	err = keyfile_read_fd(fd, out);
close_fd:
	close(fd);
	return err;
}

static nkp_err keyfile_write_new(const char *tmp, const nkp_key *key)
{
	uint8_t *bytes = sodium_malloc(NKP_KEY_BYTES);
	nkp_err err;

	if (bytes == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp_key_export(key, bytes);
	err = nkp_file_write_atomic(tmp, bytes, NKP_KEY_BYTES, KEYFILE_MODE, false, true);
	sodium_free(bytes);
	return err;
}

/* fsync of the directory holding `path`, so the new link is durable. */
static nkp_err fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash == NULL   ? strdup(".")
		    : slash == path ? strdup("/")
				    : strndup(path, (size_t)(slash - path));
	nkp_err err = NKP_OK;
	int fd;

	if (dir == NULL) {
		return NKP_ERR_NOMEM;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
		err = NKP_ERR_IO;
	}
	if (fd >= 0) {
		close(fd);
	}
	free(dir);
	return err;
}

/* Creates `path` with a fresh key; if another process created it first,
 * loads that one instead. */
static nkp_err keyfile_create(const char *path, nkp_key **out)
{
	/* "<path>.new.<16 hex>" */
	size_t plen = strlen(path);
	uint8_t r[8];
	nkp_key *key = NULL;
	char *tmp = malloc(plen + 5 + 16 + 1);
	nkp_err err;

	if (tmp == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".new.", 5);
	randombytes_buf(r, sizeof(r));
	sodium_bin2hex(tmp + plen + 5, 17, r, sizeof(r));
	err = nkp_key_generate(&key);
	if (err != NKP_OK) {
		goto free_tmp;
	}
	err = keyfile_write_new(tmp, key);
	if (err != NKP_OK) {
		goto free_key;
	}
	if (link(tmp, path) != 0) {
		err = errno == EEXIST ? keyfile_open(path, out) : nkp_err_from_errno(errno);
		goto unlink_tmp;
	}
	err = fsync_parent(path);
	if (err == NKP_OK) {
		*out = key;
		key = NULL;
	}
unlink_tmp:
	unlink(tmp);
free_key:
	nkp_key_free(key);
free_tmp:
	free(tmp);
	return err;
}

nkp_err nkp_keyfile_load(const char *path, bool create, nkp_key **out)
{
	nkp_err err;

	if (path == NULL || path[0] == '\0' || out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = keyfile_open(path, out);
	if (err == NKP_ERR_NOT_FOUND && create) {
		err = keyfile_create(path, out);
	}
	return err;
}
