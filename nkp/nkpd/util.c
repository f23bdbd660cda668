/* Small helpers shared by nkpd's modules. */
#include <string.h>
#include <time.h>

#include "nkpd.h"

uint64_t svc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Names of providers and hosts end up in file names, JSON and log lines:
 * keep them to a safe alphabet. */
bool svc_name_valid(const char *name)
{
	size_t n;

	if (name == NULL) {
		return false;
	}
	n = strlen(name);
	if (n == 0 || n > SVC_MAX_NAME || name[0] == '-' || name[0] == '.') {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
		if (!ok) {
			return false;
		}
	}
	return true;
}

void svc_copy_str(char *dst, size_t size, const char *src)
{
	size_t n = src == NULL ? 0 : strlen(src);

	if (n >= size) {
		n = size - 1;
	}
	if (n > 0) {
		memcpy(dst, src, n);
	}
	dst[n] = '\0';
}
