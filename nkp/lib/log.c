#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include <nkp/log.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static nkp_log_sink log_sink = nkp_log_sink_stderr;
static void *log_arg;
static nkp_log_level log_level = NKP_LOG_INFO;

void nkp_log_set_sink(nkp_log_sink sink, void *arg)
{
	pthread_mutex_lock(&log_lock);
	log_sink = sink;
	log_arg = arg;
	pthread_mutex_unlock(&log_lock);
}

void nkp_log_set_level(nkp_log_level level)
{
	pthread_mutex_lock(&log_lock);
	log_level = level;
	pthread_mutex_unlock(&log_lock);
}

const char *nkp_log_level_name(nkp_log_level level)
{
	switch (level) {
	case NKP_LOG_ERR:
		return "error";
	case NKP_LOG_WARN:
		return "warning";
	case NKP_LOG_NOTICE:
		return "notice";
	case NKP_LOG_INFO:
		return "info";
	case NKP_LOG_DEBUG:
		return "debug";
	}
	return "unknown";
}

void nkp_log(nkp_log_level level, const char *msgid, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	pthread_mutex_lock(&log_lock);
	if (log_sink == NULL || level > log_level) {
		pthread_mutex_unlock(&log_lock);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One line per message: a peer-supplied newline must not forge a line. */
	for (char *c = msg; *c != '\0'; c++) {
		if (*c == '\n' || *c == '\r') {
			*c = ' ';
		}
	}
	log_sink(level, msgid, msg, log_arg);
	pthread_mutex_unlock(&log_lock);
}

void nkp_log_sink_stderr(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	char stamp[32];
	struct timespec ts;
	struct tm tm;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s %s %s: %s\n", stamp, nkp_log_level_name(level), msgid, msg);
}

void nkp_log_sink_syslog(nkp_log_level level, const char *msgid, const char *msg, void *arg)
{
	(void)arg;
	syslog((int)level, "%s: %s", msgid, msg);
}
