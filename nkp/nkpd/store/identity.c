/* The service identity at rest: DIR/identity.nkp (proto/svcstate.proto
 * ServiceIdentity, a sealed file under the sealing key). The secret is
 * exported only into sodium_malloc memory, wiped before it is freed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/log.h>

#include "core/core.h"
#include "internal.h"
#include "store/store.h"
#include "svcstate.pb-c.h"

static int path_in(char *out, size_t size, const char *dir, const char *name)
{
	return (size_t)snprintf(out, size, "%s/%s", dir, name) >= size ? -1 : 0;
}

#define IDENTITY_LABEL "nkpd-identity"
#define IDENTITY_FORMAT_VERSION 1u

static nkp_err identity_write(const char *path, const nkp_key *seal, const nkp_key *secret)
{
	Nkp__Svcstate__ServiceIdentity m = NKP__SVCSTATE__SERVICE_IDENTITY__INIT;
	uint8_t *raw = sodium_malloc(NKP_KEY_BYTES), *buf = NULL;
	size_t len;
	nkp_err err = NKP_ERR_NOMEM;

	if (raw == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp_key_export(secret, raw);
	m.format_version = IDENTITY_FORMAT_VERSION;
	m.secret.data = raw;
	m.secret.len = NKP_KEY_BYTES;
	m.created_unix = nkpi_now();
	len = nkp__svcstate__service_identity__get_packed_size(&m);
	buf = sodium_malloc(len);
	if (buf != NULL) {
		nkp__svcstate__service_identity__pack(&m, buf);
		err = nkp_sealfile_write(path, seal, IDENTITY_LABEL, buf, len);
		sodium_free(buf);
	}
	sodium_free(raw);
	return err;
}

static nkp_err identity_read(const char *path, const nkp_key *seal, nkp_key **secret)
{
	Nkp__Svcstate__ServiceIdentity *m;
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_err err = nkp_sealfile_read(path, seal, IDENTITY_LABEL, &buf, &len);

	if (err != NKP_OK) {
		return err;
	}
	m = nkp__svcstate__service_identity__unpack(&nkpi_wiping_allocator, len, buf);
	if (m == NULL || nkpi_has_unknown(&m->base) || m->secret.len != NKP_KEY_BYTES) {
		err = NKP_ERR_PARSE;
	} else if (m->format_version != IDENTITY_FORMAT_VERSION) {
		err = NKP_ERR_FORMAT_VERSION;
	} else {
		err = nkp_key_from_bytes(m->secret.data, secret);
	}
	if (m != NULL) {
		nkp__svcstate__service_identity__free_unpacked(m, &nkpi_wiping_allocator);
	}
	nkp_secure_free(buf);
	return err;
}

/* An older directory's plain identity.key, sealed into identity.nkp and
 * then removed (overwritten first): the secret is left in clear nowhere. */
static nkp_err identity_move_in(const char *old, const char *path, const nkp_key *seal,
				nkp_key **secret)
{
	uint8_t zero[NKP_KEY_BYTES] = {0};
	nkp_err err = nkp_keyfile_load(old, false, secret);
	int fd;

	if (err == NKP_OK) {
		err = identity_write(path, seal, *secret);
	}
	if (err != NKP_OK) {
		return err;
	}
	/* Overwritten through a descriptor that is the file itself (no
	 * symlink followed), then removed; a failure leaves the start failed
	 * rather than a clear secret behind. (On journaling or copy-on-write
	 * file systems and SSDs the old blocks may survive: OPERATIONS.md.) */
	fd = open(old, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || write(fd, zero, sizeof(zero)) != (ssize_t)sizeof(zero) || fsync(fd) != 0 ||
	    unlink(old) != 0) {
		err = nkp_err_from_errno(errno);
		nkp_log(NKP_LOG_ERR, "NKPD-IDENTITY-LEFT",
			"cannot wipe and remove %s (%s): remove it by hand (shred -u)", old,
			strerror(errno));
	} else {
		nkp_log(NKP_LOG_NOTICE, "NKPD-IDENTITY-SEALED",
			"the service identity moved from %s into %s, sealed", old, path);
	}
	if (fd >= 0) {
		close(fd);
	}
	return err;
}

nkp_err nkpd_identity_load(const char *dir, const nkp_key *seal, bool create, bool import,
			   nkp_identity **out)
{
	char path[PATH_MAX], old[PATH_MAX];
	nkp_key *secret = NULL;
	nkp_err err;

	if (path_in(path, sizeof(path), dir, "identity.nkp") != 0 ||
	    path_in(old, sizeof(old), dir, "identity.key") != 0) {
		return NKP_ERR_INVALID;
	}
	if (access(old, F_OK) == 0 && (!import || access(path, F_OK) == 0)) {
		/* A clear secret beside the sealed one (a move cut short), or
		 * one planted in a directory whose keys are protected, where
		 * no older identity.key ever was. */
		fprintf(stderr,
			"nkpd: %s holds a plain identity.key that nkpd will not use or keep: "
			"remove it (shred -u) and start again\n",
			dir);
		return NKP_ERR_STATE;
	}
	err = identity_read(path, seal, &secret);
	if (err == NKP_ERR_NOT_FOUND && access(old, F_OK) == 0) {
		err = identity_move_in(old, path, seal, &secret);
	} else if (err == NKP_ERR_NOT_FOUND && create) {
		err = nkp_key_generate(&secret);
		if (err == NKP_OK) {
			err = identity_write(path, seal, secret);
		}
	}
	if (err == NKP_OK) {
		err = nkp_identity_from_key(secret, out);
	}
	nkp_key_free(secret);
	if (err != NKP_OK) {
		fprintf(stderr, "nkpd: cannot load the service identity %s: %s\n", path,
			nkp_strerror(err));
	}
	return err;
}
