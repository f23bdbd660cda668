/* One error enum for all of nkp. errno, libsodium, nng and protobuf-c
 * failures are mapped to it where they enter nkp. */
#ifndef NKP_ERR_H
#define NKP_ERR_H

#include <nkp/common.h>

typedef enum nkp_err {
	NKP_OK = 0,
	NKP_ERR_NOMEM,		/* out of memory (or of lockable memory) */
	NKP_ERR_INVALID,	/* bad argument from the caller */
	NKP_ERR_PARSE,		/* input is not a well-formed message or file */
	NKP_ERR_FORMAT_VERSION, /* a format or protocol version we do not know */
	NKP_ERR_TOO_LARGE,	/* input or one of its fields is over its limit */
	NKP_ERR_AUTH,		/* authentication failed: tampered, or the wrong key */
	NKP_ERR_WRONG_PASSWORD, /* backup password does not match */
	NKP_ERR_DAMAGED,	/* file fails its integrity checksum */
	NKP_ERR_KEY_MISSING,	/* the provider key or version needed is not held here */
	NKP_ERR_NOT_FOUND,	/* no such component, provider, host or file */
	NKP_ERR_EXISTS,		/* already exists */
	NKP_ERR_STATE,		/* not allowed in the current state */
	NKP_ERR_IO,		/* read, write, fsync or rename failed */
	NKP_ERR_NOSPC,		/* no space left on the device */
	NKP_ERR_PERM,		/* permission denied, or unsafe file permissions */
	NKP_ERR_CRYPTO,		/* the crypto library failed (should not happen) */
	NKP_ERR_NET,		/* messaging failed: connection refused, closed, ... */
	NKP_ERR_TIMEOUT,	/* no answer in time */
	NKP_ERR_UNTRUSTED_PEER, /* message from a key that is not pinned */
	NKP_ERR_REPLAY,		/* stale generation, boot nonce or challenge */
	NKP_ERR_REFUSED,	/* the peer or policy refused the operation */
	NKP_ERR_NOT_BACKED_UP,	/* provider has no backup yet: no new VM keys */
	NKP_ERR_SESSION,	/* no such session (peer restarted, or it expired) */
	NKP_ERR_TPM,		/* the TPM cannot be reached, or refused */
	NKP_ERR_OTHER_TPM,	/* sealed to another TPM (a copied state directory) */
	NKP_ERR__COUNT
} nkp_err;

/** A short static description of an error, for people. Never NULL. */
NKP_EXPORT const char *nkp_strerror(nkp_err err);

/** Maps an errno value to nkp_err (ENOSPC -> NKP_ERR_NOSPC, EACCES -> PERM, ...). */
NKP_EXPORT nkp_err nkp_err_from_errno(int errnum);

#endif
