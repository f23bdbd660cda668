/* nkp-bench local: DEK unwraps per second through nkp-hostd's local
 * socket with C concurrent clients. Not implemented yet: it says so and
 * fails rather than print a figure it did not measure. */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const char usage[] =
	"Usage: nkp-bench local --clients C [--json]\n"
	"\n"
	"DEK unwraps per second through nkp-hostd's local socket with C\n"
	"concurrent clients. NOT IMPLEMENTED YET: exits 1.\n";

int bench_local_main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
	}
	fprintf(stderr, "nkp-bench local: not implemented yet\n");
	return 1;
}
