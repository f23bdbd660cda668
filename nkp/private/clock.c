/* The clocks (nkp/private/internal.h): the monotonic one every deadline
 * and rate is measured on, and the wall clock timestamps in formats and
 * handshakes come from, with the tests' hooks on the latter. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "internal.h"

uint64_t nkpi_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int nkpi_mono_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int rv;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	rv = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return rv;
}

struct timespec nkpi_mono_timespec(uint64_t at_ms)
{
	return (struct timespec){.tv_sec = (time_t)(at_ms / 1000u),
				 .tv_nsec = (long)(at_ms % 1000u) * 1000000L};
}

static _Atomic uint64_t fixed_clock;
static _Atomic int64_t clock_skew_s;

uint64_t nkpi_wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)((int64_t)ts.tv_sec + atomic_load(&clock_skew_s)) * 1000000000u +
	       (uint64_t)ts.tv_nsec;
}

uint64_t nkpi_now(void)
{
	uint64_t fixed = atomic_load(&fixed_clock);

	return fixed != 0 ? fixed : nkpi_wall_ns() / 1000000000u;
}

void nkpi_set_clock_skew(int64_t seconds)
{
	atomic_store(&clock_skew_s, seconds);
}

void nkpi_set_clock(uint64_t fixed_unix)
{
	atomic_store(&fixed_clock, fixed_unix);
}
