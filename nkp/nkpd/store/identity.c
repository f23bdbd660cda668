/* The service identity at rest: DIR/identity.nkp (proto/svcstate.proto
 * ServiceIdentity, a sealed file under the sealing key). The secret is
 * exported only into sodium_malloc memory, wiped before it is freed. */
#include <errno.h>
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
	nkp_err err = nkp_keyfile_load(old, false, secret);
	uint8_t zero[NKP_KEY_BYTES] = {0};
	FILE *f;

	if (err == NKP_OK) {
		err = identity_write(path, seal, *secret);
	}
	if (err != NKP_OK) {
		return err;
	}
	f = fopen(old, "r+");
	if (f != NULL) {
		(void)fwrite(zero, 1, sizeof(zero), f);
		(void)fflush(f);
		(void)fsync(fileno(f));
		fclose(f);
	}
	if (unlink(old) != 0) {
		nkp_log(NKP_LOG_WARN, "NKPD-IDENTITY-LEFT", "cannot remove %s: %s", old,
			strerror(errno));
	} else {
		nkp_log(NKP_LOG_NOTICE, "NKPD-IDENTITY-SEALED",
			"the service identity moved from %s into %s, sealed", old, path);
	}
	return NKP_OK;
}

nkp_err nkpd_identity_load(const char *dir, const nkp_key *seal, bool create, nkp_identity **out)
{
	char path[PATH_MAX], old[PATH_MAX];
	nkp_key *secret = NULL;
	nkp_err err;

	if (path_in(path, sizeof(path), dir, "identity.nkp") != 0 ||
	    path_in(old, sizeof(old), dir, "identity.key") != 0) {
		return NKP_ERR_INVALID;
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
