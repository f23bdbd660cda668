#include "bench.h"
int bench_rewrap_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return 1;
}
