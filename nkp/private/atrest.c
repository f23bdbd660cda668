/* Where a state directory's sealing key comes from (nkp/private/atrest.h). */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <nkp/file.h>
#include <nkp/log.h>
#include <sodium.h>

#include "atrest.h"
#include "tpm.h"

#define SEALED_MAX NKPI_TPM_SEALED_MAX

static int path_in(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	return n > 0 && n < PATH_MAX ? 0 : -1;
}

/* DIR/seal.tpm and DIR/seal.key. */
static int dir_paths(const nkpi_atrest_opts *o, char *tpm_path, char *file_path)
{
	return path_in(tpm_path, o->dir, "seal.tpm") != 0 ||
			       path_in(file_path, o->dir, "seal.key") != 0
		       ? -1
		       : 0;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 || errno != ENOENT;
}

const char *nkpi_atrest_name(nkpi_atrest_kind kind)
{
	switch (kind) {
	case NKPI_ATREST_TPM:
		return "tpm";
	case NKPI_ATREST_CREDENTIAL:
		return "credential";
	default:
		return "not protected";
	}
}

static nkp_err tpm_unseal_file(const nkpi_atrest_opts *o, const char *path, nkp_key **key)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	nkpi_tpm *t = NULL;
	const char *tcti;
	nkp_err err = nkp_file_read(path, SEALED_MAX, &buf, &len);

	if (err == NKP_OK) {
		err = nkpi_tpm_sealed_check(buf, len, NULL);
	}
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY", "%s cannot be used: %s", path,
			nkp_strerror(err));
		goto out;
	}
	/* Never the TCTI recorded in seal.tpm: the file is not authenticated,
	 * and a TCTI names a library to load (tpm2-tss's "cmd:" runs a shell
	 * command). Only the operator's --tpm or settings choose. */
	tcti = o->tpm != NULL ? o->tpm : NKPI_ATREST_DEFAULT_TCTI;
	err = nkpi_tpm_open(tcti, &t);
	if (err == NKP_OK) {
		err = nkpi_tpm_unseal(t, buf, len, key);
	}
	if (err == NKP_ERR_REFUSED) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"%s is bound to the service's PCR policy and this TPM's PCRs match none "
			"of the states it approved: the machine booted into a state the service "
			"did not approve, and the keys of %s stay sealed (docs/OPERATIONS.md, "
			"\"Seal policy\")",
			path, o->dir);
	} else if (err == NKP_ERR_OTHER_TPM) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"%s cannot be opened by this TPM: it was sealed by another TPM (a state "
			"directory copied from another machine, or an altered file), or it is an "
			"object a binding revoked (an old copy of seal.tpm); the keys of %s stay "
			"sealed",
			path, o->dir);
	} else if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY", "cannot unseal %s with the TPM at '%s': %s",
			path, tcti, nkp_strerror(err));
	}
	nkpi_tpm_close(t);
out:
	free(buf);
	return err;
}

/* The directory's own sealing key: seal.tpm, or seal.key unless
 * --seal-key names another. Refuses options that contradict it. */
static nkp_err open_existing(const nkpi_atrest_opts *o, const char *tpm_path, const char *file_path,
			     nkp_key **key, nkpi_atrest_kind *kind)
{
	nkp_err err;

	if (exists(tpm_path)) {
		if (exists(file_path)) {
			nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
				"%s is sealed to a TPM but a plain %s lies beside it: remove "
				"the plain key (shred -u) and start again",
				o->dir, file_path);
			return NKP_ERR_STATE;
		}
		if (o->seal_key_path != NULL) {
			nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
				"%s is sealed to a TPM: --seal-key does not apply", o->dir);
			return NKP_ERR_INVALID;
		}
		*kind = NKPI_ATREST_TPM;
		return tpm_unseal_file(o, tpm_path, key);
	}
	if (o->tpm != NULL) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"%s is not sealed to a TPM (it has no seal.tpm): --tpm does not "
			"apply",
			o->dir);
		return NKP_ERR_INVALID;
	}
	if (o->seal_key_path != NULL && exists(file_path)) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"%s has a plain %s beside --seal-key %s: remove the plain key (shred -u) "
			"once the credential holds it, and start again",
			o->dir, file_path, o->seal_key_path);
		return NKP_ERR_STATE;
	}
	*kind = o->seal_key_path != NULL ? NKPI_ATREST_CREDENTIAL : NKPI_ATREST_FILE;
	err = nkp_keyfile_load(o->seal_key_path != NULL ? o->seal_key_path : file_path, false, key);
	if (err != NKP_OK && err != NKP_ERR_NOT_FOUND) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY", "cannot load the sealing key %s: %s",
			o->seal_key_path != NULL ? o->seal_key_path : file_path, nkp_strerror(err));
	}
	return err;
}

nkp_err nkpi_atrest_open(const nkpi_atrest_opts *o, nkp_key **key, nkpi_atrest_kind *kind)
{
	char tpm_path[PATH_MAX], file_path[PATH_MAX];
	nkp_err err;

	nkpi_tpm_quiet_logs();
	*key = NULL;
	if (dir_paths(o, tpm_path, file_path) != 0) {
		return NKP_ERR_INVALID;
	}
	err = open_existing(o, tpm_path, file_path, key, kind);
	if (err == NKP_ERR_NOT_FOUND) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"no sealing key: %s is not initialised (or --seal-key %s is "
			"missing)",
			o->dir, o->seal_key_path != NULL ? o->seal_key_path : "FILE");
	}
	return err;
}

/* A sealed object that never reached its file: its NV index (if any) is
 * not left behind in the TPM. Best effort. */
static void revoke_unused(nkpi_tpm *t, const uint8_t *buf, size_t len)
{
	nkpi_tpm_sealed_info info;

	if (nkpi_tpm_sealed_inspect(buf, len, &info) == NKP_OK && info.nv_index != 0 &&
	    nkpi_tpm_revoke(t, info.nv_index) != NKP_OK) {
		nkp_log(NKP_LOG_WARN, "NKP-SEAL-KEY",
			"NV index 0x%08x of a sealed key never written is left in the TPM: "
			"tpm2_nvundefine it",
			(unsigned)info.nv_index);
	}
}

static nkp_err tpm_seal_new(const nkpi_atrest_opts *o, const char *path, nkp_key **key)
{
	nkpi_tpm *t = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_err err = nkp_key_generate(key);

	if (err == NKP_OK) {
		err = nkpi_tpm_open(o->tpm, &t);
	}
	if (err == NKP_OK) {
		err = nkpi_tpm_seal(t, *key, o->tpm, &buf, &len);
	}
	if (err == NKP_OK) {
		err = nkp_file_write_new(path, buf, len, 0600);
		if (err != NKP_OK) {
			revoke_unused(t, buf, len);
		}
	}
	if (err != NKP_OK) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"cannot seal a new sealing key to the TPM at '%s': %s", o->tpm,
			nkp_strerror(err));
		nkp_key_free(*key);
		*key = NULL;
	}
	nkpi_tpm_close(t);
	free(buf);
	return err;
}

nkp_err nkpi_atrest_init(const nkpi_atrest_opts *o, nkp_key **key, nkpi_atrest_kind *kind)
{
	char tpm_path[PATH_MAX], file_path[PATH_MAX];
	nkp_err err;

	nkpi_tpm_quiet_logs();
	*key = NULL;
	if (dir_paths(o, tpm_path, file_path) != 0) {
		return NKP_ERR_INVALID;
	}
	if (o->tpm != NULL && o->seal_key_path != NULL) {
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY", "--tpm and --seal-key exclude each other");
		return NKP_ERR_INVALID;
	}
	if (o->tpm != NULL && !exists(tpm_path)) {
		if (exists(file_path)) {
			nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
				"%s already has a plain sealing key: a directory is sealed to "
				"the TPM when it is made (init --tpm on a new directory, then move "
				"the hosts or restore the providers from backups)",
				o->dir);
			return NKP_ERR_STATE;
		}
		*kind = NKPI_ATREST_TPM;
		return tpm_seal_new(o, tpm_path, key);
	}
	err = open_existing(o, tpm_path, file_path, key, kind);
	if (err == NKP_ERR_NOT_FOUND && o->seal_key_path != NULL) {
		/* A credential is made by its owner first (systemd-creds):
		 * a mistyped path must not leave a clear key somewhere. */
		nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY",
			"--seal-key %s does not exist: make the credential first (docs/INSTALL.md, "
			"\"Keys at rest\")",
			o->seal_key_path);
	} else if (err == NKP_ERR_NOT_FOUND) {
		err = nkp_keyfile_load(file_path, true, key);
		if (err != NKP_OK) {
			nkp_log(NKP_LOG_ERR, "NKP-SEAL-KEY", "cannot create the sealing key: %s",
				nkp_strerror(err));
		}
	}
	return err;
}

/* The SealPolicy a TpmSealed is bound to (NULL: not bound), unpacked. */
static nkp_err sealed_policy(const uint8_t *buf, size_t len, Nkp__Atrest__TpmSealed **out)
{
	nkp_err err = nkpi_tpm_sealed_check(buf, len, NULL);

	if (err != NKP_OK) {
		return err;
	}
	*out = nkp__atrest__tpm_sealed__unpack(NULL, len, buf);
	return *out != NULL ? NKP_OK : NKP_ERR_PARSE;
}

nkp_err nkpi_atrest_binding(const nkpi_atrest_opts *o, bool *bound,
			    uint8_t digest[NKPI_SEAL_POLICY_DIGEST_BYTES])
{
	char tpm_path[PATH_MAX], file_path[PATH_MAX];
	Nkp__Atrest__TpmSealed *m = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_err err;

	*bound = false;
	if (dir_paths(o, tpm_path, file_path) != 0) {
		return NKP_ERR_INVALID;
	}
	err = nkp_file_read(tpm_path, SEALED_MAX, &buf, &len);
	if (err == NKP_OK) {
		err = sealed_policy(buf, len, &m);
	}
	if (err == NKP_OK && m->policy != NULL) {
		err = nkpi_seal_policy_digest(m->policy, digest);
		*bound = err == NKP_OK;
	}
	if (m != NULL) {
		nkp__atrest__tpm_sealed__free_unpacked(m, NULL);
	}
	free(buf);
	return err;
}

/* Once the new seal.tpm is durable: revokes the object it replaced (`old`,
 * or old_err when it could not be read) if the TPM can forget its parent.
 * Says in why[] (empty: nothing to say) why a replaced object that opens
 * without a seal policy still opens. */
static void revoke_replaced(nkpi_tpm *t, const Nkp__Atrest__SealPolicy *p, nkp_err old_err,
			    const nkpi_tpm_sealed_info *old, char *why, size_t why_size)
{
	nkp_err err;

	why[0] = '\0';
	if (old_err != NKP_OK) {
		if (p != NULL) {
			snprintf(why, why_size, "it could not be read: %s", nkp_strerror(old_err));
		}
	} else if (old->nv_index != 0) {
		err = nkpi_tpm_revoke(t, old->nv_index);
		if (err != NKP_OK) {
			snprintf(why, why_size, "undefining its NV index 0x%08x failed: %s",
				 (unsigned)old->nv_index, nkp_strerror(err));
		}
	} else if (p != NULL && !old->bound) {
		snprintf(why, why_size,
			 "it has parent 1, which no TPM forgets: its copies still open here");
	}
}

nkp_err nkpi_atrest_bind(const nkpi_atrest_opts *o, const nkp_key *key,
			 const Nkp__Atrest__SealPolicy *p, char **not_revoked)
{
	char tpm_path[PATH_MAX], file_path[PATH_MAX], why[128] = "";
	const char *tcti = o->tpm != NULL ? o->tpm : NKPI_ATREST_DEFAULT_TCTI;
	nkpi_tpm_sealed_info old;
	nkpi_tpm *t = NULL;
	uint8_t *buf = NULL, *prev = NULL;
	size_t len = 0, prev_len = 0;
	nkp_err err, old_err;

	if (not_revoked != NULL) {
		*not_revoked = NULL;
	}
	if (dir_paths(o, tpm_path, file_path) != 0) {
		return NKP_ERR_INVALID;
	}
	memset(&old, 0, sizeof(old));
	old_err = nkp_file_read(tpm_path, SEALED_MAX, &prev, &prev_len);
	if (old_err == NKP_OK) {
		old_err = nkpi_tpm_sealed_inspect(prev, prev_len, &old);
	}
	free(prev);
	err = nkpi_tpm_open(tcti, &t);
	if (err == NKP_OK) {
		/* Proven to open on this TPM as it is now before it is
		 * returned: a binding that strands the key is never written. */
		err = nkpi_tpm_seal_bound(t, key, tcti, p, &buf, &len);
	}
	if (err == NKP_OK) {
		err = nkp_file_write_atomic(tpm_path, buf, len, 0600, false, true);
		if (err != NKP_OK) {
			revoke_unused(t, buf, len);
		}
	}
	/* Only now that the new object is durably in place: a crash before
	 * this leaves the old one in seal.tpm, and it must still open. */
	if (err == NKP_OK) {
		revoke_replaced(t, p, old_err, &old, why, sizeof(why));
	}
	if (why[0] != '\0') {
		nkp_log(NKP_LOG_WARN, "NKP-SEAL-POLICY",
			"%s is bound, but the object it held before the binding was not revoked: "
			"%s (docs/OPERATIONS.md, \"Seal policy\")",
			tpm_path, why);
		if (not_revoked != NULL) {
			*not_revoked = strdup(why);
		}
	}
	nkpi_tpm_close(t);
	free(buf);
	return err;
}

nkp_err nkpi_seal_policy_digest(const Nkp__Atrest__SealPolicy *p,
				uint8_t out[NKPI_SEAL_POLICY_DIGEST_BYTES])
{
	static const char label[] = "nkp-seal-policy-v1";
	size_t len = nkp__atrest__seal_policy__get_packed_size(p);
	uint8_t *buf = malloc(len + 1);

	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__atrest__seal_policy__pack(p, buf);
	crypto_generichash(out, NKPI_SEAL_POLICY_DIGEST_BYTES, buf, len, (const uint8_t *)label,
			   sizeof(label) - 1);
	free(buf);
	return NKP_OK;
}
