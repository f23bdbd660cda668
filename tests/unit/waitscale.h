/* How much longer a unit test waits on a slow machine: IT_WAIT_SCALE (set
 * by .ci/run for each stage from the machine's load: 10 or more under
 * valgrind), else 1. Waits are for events and bounded; the scale only
 * moves the bound, never a result. */
#ifndef NKP_TEST_WAITSCALE_H
#define NKP_TEST_WAITSCALE_H

#include <stdlib.h>

static inline unsigned tu_wait_scale(void)
{
	const char *v = getenv("IT_WAIT_SCALE");
	unsigned long n = v != NULL ? strtoul(v, NULL, 10) : 1;

	return n >= 1 && n <= 100 ? (unsigned)n : 1;
}

#endif
