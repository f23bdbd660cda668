/* A bounded stop for the daemons (nkp/private/internal.h). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <nkp/log.h>

#include "internal.h"

typedef struct stop_limit {
	const char *msgid;
	const char *prog;
	unsigned seconds;
} stop_limit;

static void *stop_limit_thread(void *arg)
{
	const stop_limit *l = arg;
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)l->seconds;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
	}
	nkp_log(NKP_LOG_ERR, l->msgid,
		"%s: the stop did not finish within %u s (a connection that never closes); "
		"exiting without waiting for it",
		l->prog, l->seconds);
	_exit(1);
	return NULL;
}

void nkpi_stop_limit(const char *msgid, const char *prog, unsigned seconds)
{
	static stop_limit l;
	pthread_t t;

	l = (stop_limit){.msgid = msgid, .prog = prog, .seconds = seconds};
	if (pthread_create(&t, NULL, stop_limit_thread, &l) == 0) {
		pthread_detach(t);
	}
}
