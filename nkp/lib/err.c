#include <errno.h>

#include <nkp/err.h>

static const char *const messages[NKP_ERR__COUNT] = {
	[NKP_OK] = "success",
	[NKP_ERR_NOMEM] = "out of memory",
	[NKP_ERR_INVALID] = "invalid argument",
	[NKP_ERR_PARSE] = "malformed input",
	[NKP_ERR_FORMAT_VERSION] = "unknown format or protocol version",
	[NKP_ERR_TOO_LARGE] = "input or field too large",
	[NKP_ERR_AUTH] = "authentication failed (tampered data or wrong key)",
	[NKP_ERR_WRONG_PASSWORD] = "wrong password",
	[NKP_ERR_DAMAGED] = "file is damaged (checksum mismatch)",
	[NKP_ERR_KEY_MISSING] = "required provider key version is not held",
	[NKP_ERR_NOT_FOUND] = "not found",
	[NKP_ERR_EXISTS] = "already exists",
	[NKP_ERR_STATE] = "not allowed in the current state",
	[NKP_ERR_IO] = "input/output error",
	[NKP_ERR_NOSPC] = "no space left on device",
	[NKP_ERR_PERM] = "permission denied or unsafe permissions",
	[NKP_ERR_CRYPTO] = "cryptographic library failure",
	[NKP_ERR_NET] = "messaging failure",
	[NKP_ERR_TIMEOUT] = "timed out",
	[NKP_ERR_UNTRUSTED_PEER] = "peer key is not pinned",
	[NKP_ERR_REPLAY] = "stale or replayed message",
	[NKP_ERR_REFUSED] = "refused",
	[NKP_ERR_NOT_BACKED_UP] = "provider is not backed up",
	[NKP_ERR_SESSION] = "no such session (expired, or the peer restarted)",
	[NKP_ERR_TPM] = "the TPM cannot be reached or refused the operation",
	[NKP_ERR_OTHER_TPM] = "sealed to another TPM, or the sealed object was altered",
};

const char *nkp_strerror(nkp_err err)
{
	if ((unsigned)err >= NKP_ERR__COUNT || messages[err] == NULL) {
		return "unknown error";
	}
	return messages[err];
}

nkp_err nkp_err_from_errno(int errnum)
{
	switch (errnum) {
	case 0:
		return NKP_OK;
	case ENOMEM:
		return NKP_ERR_NOMEM;
	case ENOSPC:
	case EDQUOT:
		return NKP_ERR_NOSPC;
	case EACCES:
	case EPERM:
	case EROFS:
		return NKP_ERR_PERM;
	case ENOENT:
		return NKP_ERR_NOT_FOUND;
	case EEXIST:
		return NKP_ERR_EXISTS;
	case EINVAL:
	case ENAMETOOLONG:
		return NKP_ERR_INVALID;
	case EFBIG:
		return NKP_ERR_TOO_LARGE;
	default:
		return NKP_ERR_IO;
	}
}
