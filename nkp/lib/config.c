/* Strict `key = value` configuration files (include/nkp/config.h).
 *
 * The parser copies the text once and points entries into the copy; it
 * never allocates per line, so a hostile file costs at most
 * NKP_CONFIG_MAX_FILE bytes and NKP_CONFIG_MAX_ENTRIES entries. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nkp/config.h>

#include "internal.h"

typedef struct entry {
	const char *key;
	const char *value;
	unsigned line;
} entry;

struct nkp_config {
	char *name; /* for messages */
	char *text; /* the file's text, NUL-split into keys and values */
	entry entries[NKP_CONFIG_MAX_ENTRIES];
	size_t n;
};

NKP_PRINTF(3, 4)
static void say(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errbuf == NULL || errlen == 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static char *trim(char *s, char *end)
{
	while (s < end && is_blank(*s)) {
		s++;
	}
	while (end > s && is_blank(end[-1])) {
		end--;
	}
	*end = '\0';
	return s;
}

static bool key_valid(const char *k)
{
	if (*k == '\0' || *k == '-') {
		return false;
	}
	for (; *k != '\0'; k++) {
		if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '-')) {
			return false;
		}
	}
	return true;
}

static bool key_known(const char *k, const char *const *keys)
{
	for (size_t i = 0; keys[i] != NULL; i++) {
		if (strcmp(keys[i], k) == 0) {
			return true;
		}
	}
	return false;
}

/* Control bytes other than tab (and the CR of a CRLF ending) are refused:
 * they hide things from people reading the file. */
static bool text_clean(const char *s)
{
	for (; *s != '\0'; s++) {
		if (((unsigned char)*s < 0x20 && *s != '\t' && *s != '\r') || *s == 0x7f) {
			return false;
		}
	}
	return true;
}

static const entry *find(const nkp_config *c, const char *key)
{
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->entries[i].key, key) == 0) {
			return &c->entries[i];
		}
	}
	return NULL;
}

/* Parses one line (already NUL-terminated, without its '\n'). */
static nkp_err parse_line(nkp_config *c, char *line, unsigned lineno, const char *const *keys,
			  char *errbuf, size_t errlen)
{
	char *eq, *key, *value;
	const entry *prev;

	if (!text_clean(line)) {
		say(errbuf, errlen, "%s:%u: control character in line", c->name, lineno);
		return NKP_ERR_PARSE;
	}
	line = trim(line, line + strlen(line));
	if (*line == '\0' || *line == '#') {
		return NKP_OK;
	}
	eq = strchr(line, '=');
	if (eq == NULL) {
		say(errbuf, errlen, "%s:%u: expected 'key = value'", c->name, lineno);
		return NKP_ERR_PARSE;
	}
	key = trim(line, eq);
	value = trim(eq + 1, eq + 1 + strlen(eq + 1));
	if (!key_valid(key)) {
		say(errbuf, errlen, "%s:%u: bad key (lower-case letters, digits and '-')", c->name,
		    lineno);
		return NKP_ERR_PARSE;
	}
	if (!key_known(key, keys)) {
		say(errbuf, errlen, "%s:%u: unknown key '%s'", c->name, lineno, key);
		return NKP_ERR_PARSE;
	}
	if (*value == '\0') {
		say(errbuf, errlen, "%s:%u: '%s' has no value", c->name, lineno, key);
		return NKP_ERR_PARSE;
	}
	prev = find(c, key);
	if (prev != NULL) {
		say(errbuf, errlen, "%s:%u: '%s' is already set on line %u", c->name, lineno, key,
		    prev->line);
		return NKP_ERR_PARSE;
	}
	if (c->n == NKP_CONFIG_MAX_ENTRIES) {
		say(errbuf, errlen, "%s:%u: more than %u settings", c->name, lineno,
		    NKP_CONFIG_MAX_ENTRIES);
		return NKP_ERR_TOO_LARGE;
	}
	c->entries[c->n++] = (entry){.key = key, .value = value, .line = lineno};
	return NKP_OK;
}

static nkp_err parse_lines(nkp_config *c, size_t len, const char *const *keys, char *errbuf,
			   size_t errlen)
{
	char *p = c->text, *end = c->text + len, *nl;
	unsigned lineno = 0;
	nkp_err err = NKP_OK;

	while (p < end && err == NKP_OK) {
		lineno++;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			nl = end;
		}
		if ((size_t)(nl - p) > NKP_CONFIG_MAX_LINE) {
			say(errbuf, errlen, "%s:%u: line longer than %u characters", c->name,
			    lineno, NKP_CONFIG_MAX_LINE);
			return NKP_ERR_TOO_LARGE;
		}
		*nl = '\0';
		err = parse_line(c, p, lineno, keys, errbuf, errlen);
		p = nl + 1;
	}
	return err;
}

nkp_err nkp_config_parse(const char *text, size_t len, const char *name, const char *const *keys,
			 nkp_config **out, char *errbuf, size_t errlen)
{
	nkp_config *c;
	nkp_err err;

	if ((text == NULL && len > 0) || name == NULL || keys == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_CONFIG_MAX_FILE) {
		say(errbuf, errlen, "%s: larger than %u bytes", name, NKP_CONFIG_MAX_FILE);
		return NKP_ERR_TOO_LARGE;
	}
	if (len > 0 && memchr(text, '\0', len) != NULL) {
		say(errbuf, errlen, "%s: contains a NUL byte; not a text file", name);
		return NKP_ERR_PARSE;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL || (c->name = strdup(name)) == NULL || (c->text = malloc(len + 1)) == NULL) {
		say(errbuf, errlen, "%s: out of memory", name);
		err = NKP_ERR_NOMEM;
		goto free_config;
	}
	if (len > 0) {
		memcpy(c->text, text, len);
	}
	c->text[len] = '\0';
	err = parse_lines(c, len, keys, errbuf, errlen);
	if (err == NKP_OK) {
		*out = c;
		return NKP_OK;
	}
free_config:
	nkp_config_free(c);
	return err;
}

static nkp_err read_text(int fd, const char *path, char **out, size_t *outlen, char *errbuf,
			 size_t errlen)
{
	char *buf = malloc(NKP_CONFIG_MAX_FILE + 1);
	size_t len = 0;
	ssize_t n;

	if (buf == NULL) {
		say(errbuf, errlen, "%s: out of memory", path);
		return NKP_ERR_NOMEM;
	}
	/* Read one byte past the limit to see a file that grew. */
	while (len <= NKP_CONFIG_MAX_FILE) {
		n = read(fd, buf + len, NKP_CONFIG_MAX_FILE + 1 - len);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0) {
			say(errbuf, errlen, "%s: cannot read: %s", path, strerror(errno));
			free(buf);
			return NKP_ERR_IO;
		}
		if (n == 0) {
			break;
		}
		len += (size_t)n;
	}
	*out = buf;
	*outlen = len;
	return NKP_OK;
}

static nkp_err check_file(int fd, const char *path, char *errbuf, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) != 0) {
		say(errbuf, errlen, "%s: %s", path, strerror(errno));
		return nkp_err_from_errno(errno);
	}
	if (!S_ISREG(st.st_mode)) {
		say(errbuf, errlen, "%s: not a regular file", path);
		return NKP_ERR_INVALID;
	}
	if ((st.st_mode & 022) != 0) {
		say(errbuf, errlen, "%s: writable by group or others; refusing it (chmod go-w %s)",
		    path, path);
		return NKP_ERR_PERM;
	}
	return NKP_OK;
}

nkp_err nkp_config_load(const char *path, const char *const *keys, nkp_config **out, char *errbuf,
			size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	nkp_err err;
	int fd;

	if (path == NULL || keys == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	/* O_NONBLOCK: a FIFO must not hang us; it is refused as not regular. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		err = nkp_err_from_errno(errno);
		say(errbuf, errlen, "%s: %s", path, strerror(errno));
		return err;
	}
	err = check_file(fd, path, errbuf, errlen);
	if (err == NKP_OK) {
		err = read_text(fd, path, &text, &len, errbuf, errlen);
	}
	if (err == NKP_OK) {
		err = nkp_config_parse(text, len, path, keys, out, errbuf, errlen);
	}
	free(text);
	close(fd);
	return err;
}

const char *nkp_config_get(const nkp_config *c, const char *key)
{
	const entry *e = c != NULL && key != NULL ? find(c, key) : NULL;

	return e != NULL ? e->value : NULL;
}

nkp_err nkp_config_get_uint(const nkp_config *c, const char *key, unsigned long min,
			    unsigned long max, unsigned long *out, char *errbuf, size_t errlen)
{
	const entry *e = c != NULL && key != NULL ? find(c, key) : NULL;
	char *end = NULL;
	unsigned long v;

	if (e == NULL) {
		return NKP_ERR_NOT_FOUND;
	}
	errno = 0;
	v = strtoul(e->value, &end, 10);
	if (e->value[0] < '0' || e->value[0] > '9' || errno != 0 || *end != '\0' || v < min ||
	    v > max) {
		say(errbuf, errlen, "%s:%u: '%s' wants a whole number from %lu to %lu", c->name,
		    e->line, key, min, max);
		return NKP_ERR_PARSE;
	}
	*out = v;
	return NKP_OK;
}

nkp_err nkp_config_get_bool(const nkp_config *c, const char *key, bool *out, char *errbuf,
			    size_t errlen)
{
	const entry *e = c != NULL && key != NULL ? find(c, key) : NULL;

	if (e == NULL) {
		return NKP_ERR_NOT_FOUND;
	}
	if (strcmp(e->value, "true") == 0 || strcmp(e->value, "yes") == 0) {
		*out = true;
	} else if (strcmp(e->value, "false") == 0 || strcmp(e->value, "no") == 0) {
		*out = false;
	} else {
		say(errbuf, errlen, "%s:%u: '%s' wants true or false", c->name, e->line, key);
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

void nkp_config_free(nkp_config *c)
{
	if (c == NULL) {
		return;
	}
	free(c->name);
	free(c->text);
	free(c);
}
