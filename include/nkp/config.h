/* Configuration files: a small, strict `key = value` format.
 *
 *   # a comment (a line whose first non-blank character is '#')
 *   state-dir = /var/lib/nkp/nkpd
 *   heartbeat = 5
 *
 * One setting per line; blanks around the key and the value are ignored;
 * the value is the rest of the line, taken verbatim (no quotes, no inline
 * comments, no escapes). Keys are lower-case letters, digits and '-'; only
 * the keys the caller lists are accepted, each at most once. Files are at
 * most NKP_CONFIG_MAX_FILE bytes, lines at most NKP_CONFIG_MAX_LINE. A file
 * writable by group or others is refused (it decides where keys live).
 *
 * Configuration holds no secret: nothing here is wiped. Every error message
 * is one line, "FILE:LINE: what is wrong" (or "FILE: ..." for the whole
 * file), written to the caller's buffer. */
#ifndef NKP_CONFIG_H
#define NKP_CONFIG_H

#include <nkp/common.h>
#include <nkp/err.h>

#define NKP_CONFIG_MAX_FILE (64u * 1024u)
#define NKP_CONFIG_MAX_LINE 1024u
#define NKP_CONFIG_MAX_ENTRIES 64u
/** A size for error message buffers that fits any message. */
#define NKP_CONFIG_ERR_MAX 1280u

typedef struct nkp_config nkp_config;

/** Parses `len` bytes of text; `name` (a file name) prefixes messages.
 * `keys` is a NULL-terminated list of the keys allowed. On success *out is
 * a new config (free with nkp_config_free()). On failure *out is untouched
 * and `errbuf` (if not NULL) holds one line. Errors: NKP_ERR_PARSE (a bad
 * line, an unknown or repeated key, a NUL or control byte), NKP_ERR_TOO_LARGE
 * (a file, line or entry count over its limit), NKP_ERR_NOMEM,
 * NKP_ERR_INVALID (NULL arguments). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_config_parse(const char *text, size_t len, const char *name,
						  const char *const *keys, nkp_config **out,
						  char *errbuf, size_t errlen);

/** Reads and parses the file `path` (as nkp_config_parse()). More errors:
 * NKP_ERR_NOT_FOUND, NKP_ERR_IO, NKP_ERR_PERM (unreadable, or writable by
 * group or others), NKP_ERR_INVALID (not a regular file). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_config_load(const char *path, const char *const *keys,
						 nkp_config **out, char *errbuf, size_t errlen);

/** The value of `key`, or NULL if the file does not set it. The string
 * belongs to `c` and lives until nkp_config_free(). */
NKP_EXPORT const char *nkp_config_get(const nkp_config *c, const char *key);

/** An unsigned decimal value in [min, max]. NKP_ERR_NOT_FOUND if unset
 * (*out untouched); NKP_ERR_PARSE with "FILE:LINE: ..." in errbuf if it is
 * not a number in range. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_config_get_uint(const nkp_config *c, const char *key,
						     unsigned long min, unsigned long max,
						     unsigned long *out, char *errbuf,
						     size_t errlen);

/** A boolean: exactly "true" or "false" (also "yes"/"no"). NKP_ERR_NOT_FOUND
 * if unset; NKP_ERR_PARSE with "FILE:LINE: ..." in errbuf otherwise. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_config_get_bool(const nkp_config *c, const char *key,
						     bool *out, char *errbuf, size_t errlen);

/** Frees a config. Accepts NULL. */
NKP_EXPORT void nkp_config_free(nkp_config *c);

#endif
