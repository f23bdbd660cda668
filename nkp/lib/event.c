/* Structured events (include/nkp/event.h): an append-only JSONL file and
 * one log line each.
 *
 * Each event is formatted whole and appended with a single write() on an
 * O_APPEND descriptor, so lines from concurrent writers never interleave
 * and a crash leaves at most one torn last line. Sequence numbers continue
 * from the last line found on open. No fsync: events are a record for
 * people, and a lost last second is better than an fsync per event. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nkp/event.h>

#include "internal.h"

/* Formatted message before escaping, and escaped field sizes. Escaping at
 * most sextuples a byte, and truncation is always at a whole escape. */
#define MSG_MAX 1024u
#define MSG_ESC_MAX 4096u
#define NAME_ESC_MAX 256u
/* Room for every field at its maximum: a line is never cut. */
#define LINE_BUF (MSG_ESC_MAX + 2 * NAME_ESC_MAX + 256u)
/* How much of the end of the log open reads to find the last seq. */
#define TAIL_WINDOW (64u * 1024u)

_Static_assert(TAIL_WINDOW > LINE_BUF, "the tail window holds a whole line");

static const struct {
	const char *name;
	nkp_log_level level;
} kinds[NKP_EV__COUNT] = {
	[NKP_EV_PROVIDER_CREATED] = {"provider.created", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_BACKED_UP] = {"provider.backed_up", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_NOT_BACKED_UP] = {"provider.not_backed_up", NKP_LOG_WARN},
	[NKP_EV_PROVIDER_STAGED] = {"provider.staged", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_PROMOTED] = {"provider.promoted", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_ROTATION_FAILED] = {"provider.rotation_failed", NKP_LOG_ERR},
	[NKP_EV_PROVIDER_RETIRED] = {"provider.retired", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_DELETED] = {"provider.deleted", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_RESTORED] = {"provider.restored", NKP_LOG_NOTICE},
	[NKP_EV_PROVIDER_DEFAULT] = {"provider.default", NKP_LOG_NOTICE},
	[NKP_EV_HOST_ENROLLED] = {"host.enrolled", NKP_LOG_NOTICE},
	[NKP_EV_HOST_REMOVED] = {"host.removed", NKP_LOG_NOTICE},
	[NKP_EV_HOST_IN_SYNC] = {"host.in_sync", NKP_LOG_DEBUG},
	[NKP_EV_HOST_UNREACHABLE] = {"host.unreachable", NKP_LOG_WARN},
	[NKP_EV_PUSH_FAILED] = {"push.failed", NKP_LOG_WARN},
	[NKP_EV_KEY_UNKNOWN] = {"key.unknown", NKP_LOG_WARN},
	[NKP_EV_VM_LOCKED] = {"vm.locked", NKP_LOG_WARN},
	[NKP_EV_TAMPERING] = {"tampering", NKP_LOG_ERR},
	[NKP_EV_BAD_INPUT] = {"input.bad", NKP_LOG_WARN},
	[NKP_EV_STATE_WRITE_FAILED] = {"state.write_failed", NKP_LOG_ERR},
	[NKP_EV_SERVICE_STARTED] = {"service.started", NKP_LOG_NOTICE},
	[NKP_EV_SERVICE_STOPPED] = {"service.stopped", NKP_LOG_NOTICE},
	[NKP_EV_KEY_CREATED] = {"key.created", NKP_LOG_INFO},
	[NKP_EV_KEYS_APPLIED] = {"keys.applied", NKP_LOG_INFO},
	[NKP_EV_KEY_RELEASED] = {"key.released", NKP_LOG_INFO},
	[NKP_EV_HOST_CONFLICT] = {"host.conflict", NKP_LOG_WARN},
	[NKP_EV_HOST_ATTESTED] = {"host.attested", NKP_LOG_NOTICE},
	[NKP_EV_HOST_ATTESTATION_FAILED] = {"host.attestation_failed", NKP_LOG_WARN},
	[NKP_EV_KMS_UNREACHABLE] = {"kms.unreachable", NKP_LOG_WARN},
	[NKP_EV_KMS_REACHABLE] = {"kms.reachable", NKP_LOG_NOTICE},
	[NKP_EV_KMS_ATTRIBUTES_UNSUPPORTED] = {"kms.attributes_unsupported", NKP_LOG_NOTICE},
};

struct nkp_eventlog {
	pthread_mutex_t lock;
	int fd;	      /* -1: log-only */
	uint64_t seq; /* last seq handed out */
	bool torn;    /* the file may end in an unterminated line */
};

const char *nkp_event_kind_name(nkp_event_kind kind)
{
	if ((unsigned)kind >= NKP_EV__COUNT) {
		return "unknown";
	}
	return kinds[kind].name;
}

nkp_log_level nkp_event_kind_level(nkp_event_kind kind)
{
	if ((unsigned)kind >= NKP_EV__COUNT) {
		return NKP_LOG_WARN;
	}
	return kinds[kind].level;
}

/* --- JSON escaping ------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at `s` (2-4), or 0. Overlong forms,
 * surrogates and code points past U+10FFFF are invalid. Stops at the NUL:
 * it is never a continuation byte. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		lo = s[0] == 0xe0 ? 0xa0 : lo;
		hi = s[0] == 0xed ? 0x9f : hi;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		lo = s[0] == 0xf0 ? 0x90 : lo;
		hi = s[0] == 0xf4 ? 0x8f : hi;
	} else {
		return 0;
	}
	if (s[1] < lo || s[1] > hi) {
		return 0;
	}
	for (size_t i = 2; i < n; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf) {
			return 0;
		}
	}
	return n;
}

/* The escaped form of the character at `s` into `unit` (*ulen bytes);
 * returns how many input bytes it stands for. */
static size_t escape_unit(const unsigned char *s, char unit[static 8], size_t *ulen)
{
	size_t n;

	if (*s == '"' || *s == '\\') {
		unit[0] = '\\';
		unit[1] = (char)*s;
		*ulen = 2;
		return 1;
	}
	if (*s < 0x20 || *s == 0x7f) {
		*ulen = (size_t)snprintf(unit, 8, "\\u%04x", *s);
		return 1;
	}
	if (*s < 0x80) {
		unit[0] = (char)*s;
		*ulen = 1;
		return 1;
	}
	n = utf8_len(s);
	if (n == 0) {
		/* Invalid UTF-8 would make the whole line invalid JSON. */
		memcpy(unit, "\\ufffd", 6);
		*ulen = 6;
		return 1;
	}
	memcpy(unit, s, n);
	*ulen = n;
	return n;
}

void nkp_json_escape(const char *s, char *out, size_t outsize)
{
	const unsigned char *in = (const unsigned char *)(s != NULL ? s : "");
	size_t o = 0;

	if (out == NULL || outsize == 0) {
		return;
	}
	while (*in != '\0') {
		char unit[8];
		size_t ulen;
		size_t used = escape_unit(in, unit, &ulen);

		/* Whole units only, and room for the NUL. */
		if (ulen >= outsize - o) {
			break;
		}
		memcpy(out + o, unit, ulen);
		o += ulen;
		in += used;
	}
	out[o] = '\0';
}

/* --- reading ------------------------------------------------------------ */

/* The seq of a recorded line, {"seq":N,...}, or false if it is not one. */
static bool line_seq(const char *line, size_t len, uint64_t *seq)
{
	static const char prefix[] = "{\"seq\":";
	size_t i = sizeof(prefix) - 1;
	uint64_t v = 0;

	if (len < i + 3 || memcmp(line, prefix, i) != 0 || line[len - 1] != '}' ||
	    memchr(line, '\0', len) != NULL || line[i] < '1' || line[i] > '9') {
		return false;
	}
	for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
		unsigned d = (unsigned)(line[i] - '0');

		if (v > (UINT64_MAX - d) / 10) {
			return false;
		}
		v = v * 10 + d;
	}
	if (line[i] != ',') {
		return false;
	}
	*seq = v;
	return true;
}

uint64_t nkp_eventlog_read(const char *path, uint64_t after,
			   void (*fn)(uint64_t seq, const char *json, void *arg), void *arg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t last = after, seq;
	FILE *fp;

	fp = path != NULL ? fopen(path, "re") : NULL;
	if (fp == NULL) {
		return after;
	}
	while ((n = getline(&line, &cap, fp)) > 0) {
		/* A line without its newline is torn, or still being written. */
		if (line[n - 1] != '\n') {
			break;
		}
		line[--n] = '\0';
		if (!line_seq(line, (size_t)n, &seq) || seq <= after) {
			continue;
		}
		if (fn != NULL) {
			fn(seq, line, arg);
		}
		last = seq;
	}
	free(line);
	fclose(fp);
	return last;
}

/* --- writing ------------------------------------------------------------ */

static nkp_err read_tail(int fd, off_t size, char *buf, size_t win)
{
	size_t got = 0;

	while (got < win) {
		ssize_t n = pread(fd, buf + got, win - got, size - (off_t)win + (off_t)got);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return NKP_ERR_IO;
		}
		got += (size_t)n;
	}
	return NKP_OK;
}

/* Finds the highest seq in the last TAIL_WINDOW bytes (an unterminated
 * last line counts if it is whole but for its newline), and whether the
 * file ends mid-line. Falls back to reading the whole file if the window
 * holds no recorded line. */
static nkp_err tail_scan(const char *path, int fd, off_t size, uint64_t *seq, bool *torn)
{
	size_t win = size < (off_t)TAIL_WINDOW ? (size_t)size : TAIL_WINDOW;
	size_t start = 0;
	uint64_t max = 0, v;
	bool found = false;
	char *buf;
	nkp_err err;

	*seq = 0;
	*torn = false;
	if (size == 0) {
		return NKP_OK;
	}
	buf = malloc(win);
	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	err = read_tail(fd, size, buf, win);
	if (err != NKP_OK) {
		goto free_buf;
	}
	*torn = buf[win - 1] != '\n';
	if ((off_t)win < size) {
		/* The window starts inside a line: skip that part. */
		char *nl = memchr(buf, '\n', win);

		start = nl != NULL ? (size_t)(nl - buf) + 1 : win;
	}
	while (start < win) {
		char *nl = memchr(buf + start, '\n', win - start);
		size_t end = nl != NULL ? (size_t)(nl - buf) : win;

		if (line_seq(buf + start, end - start, &v)) {
			max = v > max ? v : max;
			found = true;
		}
		start = end + 1;
	}
	*seq = found ? max : nkp_eventlog_read(path, 0, NULL, NULL);

free_buf:
	free(buf);
	return err;
}

static nkp_err open_file(const char *path, int *fd_out, uint64_t *seq, bool *torn)
{
	struct stat st;
	nkp_err err;
	int fd;

	/* O_NOFOLLOW: a planted symlink must not redirect (and chmod) it. */
	fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0600);
	if (fd < 0) {
		return nkp_err_from_errno(errno);
	}
	if (fstat(fd, &st) != 0) {
		err = nkp_err_from_errno(errno);
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		err = NKP_ERR_PERM;
		goto close_fd;
	}
	/* Events name hosts and providers: owner only, whoever made the file. */
	if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) != 0) {
		err = NKP_ERR_PERM;
		goto close_fd;
	}
	err = tail_scan(path, fd, st.st_size, seq, torn);
	if (err != NKP_OK) {
		goto close_fd;
	}
	*fd_out = fd;
	return NKP_OK;

close_fd:
	close(fd);
	return err;
}

nkp_err nkp_eventlog_open(const char *path, nkp_eventlog **out)
{
	nkp_eventlog *log;
	nkp_err err = NKP_OK;

	if (out == NULL) {
		return NKP_ERR_INVALID;
	}
	log = calloc(1, sizeof(*log));
	if (log == NULL) {
		return NKP_ERR_NOMEM;
	}
	log->fd = -1;
	if (path != NULL) {
		err = open_file(path, &log->fd, &log->seq, &log->torn);
		if (err != NKP_OK) {
			goto free_log;
		}
	}
	if (pthread_mutex_init(&log->lock, NULL) != 0) {
		err = NKP_ERR_NOMEM;
		goto close_fd;
	}
	*out = log;
	return NKP_OK;

close_fd:
	if (log->fd >= 0) {
		close(log->fd);
	}
free_log:
	free(log);
	return err;
}

void nkp_eventlog_close(nkp_eventlog *log)
{
	if (log == NULL) {
		return;
	}
	if (log->fd >= 0) {
		close(log->fd);
	}
	pthread_mutex_destroy(&log->lock);
	free(log);
}

static void format_time(char out[static 32])
{
	time_t t = (time_t)nkpi_now();
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		strcpy(out, "1970-01-01T00:00:00Z");
	}
}

/* Appends one line; the fields are already escaped. Returns its seq, or 0
 * if it did not reach the file whole. Called with the lock held. */
static uint64_t append_locked(nkp_eventlog *log, nkp_event_kind kind, const char *prov,
			      const char *host, const char *msg)
{
	char line[LINE_BUF];
	char stamp[32];
	uint64_t seq = ++log->seq;
	size_t off = log->torn ? 0 : 1;
	ssize_t w;
	int n;

	format_time(stamp);
	/* A leading newline ends a line torn by an earlier failed write, so
	 * this one starts clean; readers skip the fragment. */
	line[0] = '\n';
	n = snprintf(line + 1, sizeof(line) - 1,
		     "{\"seq\":%" PRIu64 ",\"time\":\"%s\",\"severity\":\"%s\",\"kind\":\"%s\","
		     "\"provider\":%s%s%s,\"host\":%s%s%s,\"message\":\"%s\"}\n",
		     seq, stamp, nkp_log_level_name(nkp_event_kind_level(kind)),
		     nkp_event_kind_name(kind), prov != NULL ? "\"" : "",
		     prov != NULL ? prov : "null", prov != NULL ? "\"" : "",
		     host != NULL ? "\"" : "", host != NULL ? host : "null",
		     host != NULL ? "\"" : "", msg);
	if (n < 0 || (size_t)n >= sizeof(line) - 1) {
		return 0;
	}
	do {
		w = write(log->fd, line + off, (size_t)n + 1 - off);
	} while (w < 0 && errno == EINTR);
	log->torn = w != (ssize_t)((size_t)n + 1 - off);
	return log->torn ? 0 : seq;
}

uint64_t nkp_event(nkp_eventlog *log, nkp_event_kind kind, const char *provider, const char *host,
		   const char *fmt, ...)
{
	char msg[MSG_MAX] = "";
	char emsg[MSG_ESC_MAX], eprov[NAME_ESC_MAX], ehost[NAME_ESC_MAX];
	uint64_t seq = 0;
	va_list ap;

	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	nkp_json_escape(msg, emsg, sizeof(emsg));
	nkp_json_escape(provider, eprov, sizeof(eprov));
	nkp_json_escape(host, ehost, sizeof(ehost));
	if (log != NULL) {
		pthread_mutex_lock(&log->lock);
		if (log->fd >= 0) {
			seq = append_locked(log, kind, provider != NULL ? eprov : NULL,
					    host != NULL ? ehost : NULL, emsg);
		} else {
			seq = ++log->seq;
		}
		pthread_mutex_unlock(&log->lock);
	}
	/* The escaped forms go to the log too: no control character from a
	 * peer-supplied name reaches a terminal or syslog. */
	nkp_log(nkp_event_kind_level(kind), nkp_event_kind_name(kind), "%s%s%s%s%s%s%s",
		provider != NULL ? "provider=" : "", provider != NULL ? eprov : "",
		provider != NULL ? " " : "", host != NULL ? "host=" : "", host != NULL ? ehost : "",
		host != NULL ? " " : "", emsg);
	return seq;
}
