/* nkp-bench: shared helpers for the benchmark subcommands. */
#ifndef NKP_BENCH_H
#define NKP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Monotonic time in nanoseconds. */
uint64_t bench_now_ns(void);

/** Measures `a` and `b` alternately, round by round, so that noise from
 * the machine falls on both alike. Writes the median ns per call of each
 * and the median of the per-round ratios a/b. Returns -1 on no memory. */
typedef struct bench_pair {
	double a_ns;
	double b_ns;
	double ratio;
} bench_pair;
int bench_pair_median(void (*a)(void *), void *a_arg, void (*b)(void *), void *b_arg,
		      unsigned rounds, unsigned iters, bench_pair *out);

/** Median of `n` doubles (sorts `v`). */
double bench_median(double *v, size_t n);

/** Common flags: --json, --rounds N, --iters N, --help. Returns 0 to go on,
 * 2 on a usage error (after printing it), 1 when --help was printed. */
typedef struct bench_opts {
	bool json;
	unsigned rounds;
	unsigned iters;
} bench_opts;
int bench_parse_common(int argc, char **argv, bench_opts *o, const char *usage);

/* Subcommands. */
int bench_wrap_main(int argc, char **argv);
int bench_fanout_main(int argc, char **argv);
int bench_local_main(int argc, char **argv);
int bench_rewrap_main(int argc, char **argv);
int bench_quote_main(int argc, char **argv);
int bench_kmip_main(int argc, char **argv);

#endif
