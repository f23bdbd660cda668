#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a;
	double y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(double *v, size_t n)
{
	if (n == 0) {
		return 0.0;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static double time_round(void (*fn)(void *), void *arg, unsigned iters)
{
	uint64_t t0 = bench_now_ns();

	for (unsigned i = 0; i < iters; i++) {
		fn(arg);
	}
	return (double)(bench_now_ns() - t0) / iters;
}

int bench_pair_median(void (*a)(void *), void *a_arg, void (*b)(void *), void *b_arg,
		      unsigned rounds, unsigned iters, bench_pair *out)
{
	double *v = calloc(3 * (size_t)rounds, sizeof(*v));

	if (v == NULL) {
		return -1;
	}
	time_round(a, a_arg, iters);
	time_round(b, b_arg, iters);
	for (unsigned r = 0; r < rounds; r++) {
		v[r] = time_round(a, a_arg, iters);
		v[rounds + r] = time_round(b, b_arg, iters);
		v[2 * rounds + r] = v[r] / v[rounds + r];
	}
	out->a_ns = bench_median(v, rounds);
	out->b_ns = bench_median(v + rounds, rounds);
	out->ratio = bench_median(v + 2 * (size_t)rounds, rounds);
	free(v);
	return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v == 0 || v > 100000000ul) {
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

int bench_parse_common(int argc, char **argv, bench_opts *o, const char *usage)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"rounds", required_argument, NULL, 'r'},
		{"iters", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'r':
			if (parse_uint(optarg, &o->rounds) != 0) {
				fprintf(stderr, "nkp-bench: --rounds wants a positive number\n");
				return 2;
			}
			break;
		case 'i':
			if (parse_uint(optarg, &o->iters) != 0) {
				fprintf(stderr, "nkp-bench: --iters wants a positive number\n");
				return 2;
			}
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		default:
			fprintf(stderr, "Try 'nkp-bench %s --help'.\n", argv[0]);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "nkp-bench: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return 0;
}
