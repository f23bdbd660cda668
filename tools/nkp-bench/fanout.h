/* nkp-bench fanout: shared between fanout.c (the run) and fanout-hosts.c
 * (the simulated hosts and the bare nng floor). */
#ifndef NKP_BENCH_FANOUT_H
#define NKP_BENCH_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#define FANOUT_PROVIDER "bench"
#define FANOUT_MAX_VERSIONS 64u

/** Sizes of a sealed Push carrying one provider with `nv` versions, and of
 * its sealed PushAck, as nkpd and the plugin make them. Returns 0 or -1. */
int fanout_sizes(unsigned nv, size_t *push, size_t *ack);

/** One host worker process: hosts first..first+count-1, state under dir. */
typedef struct fanout_worker {
	const char *dir;
	unsigned first;
	unsigned count;
	uint8_t service_key[32];
	size_t ack_len; /* the floor's reply size */
	int out_fd;	/* lines "NAME URL FLOOR_URL PUBKEY", then "ready" */
	int ctl_fd;	/* serve until EOF */
} fanout_worker;
int fanout_worker_main(const fanout_worker *w);

/** The floor: one REQ socket per echo listener, driven by aio callbacks. */
typedef struct fanout_floor fanout_floor;
int fanout_floor_open(fanout_floor **out, char **urls, unsigned n);
void fanout_floor_close(fanout_floor *f);
double fanout_floor_round(fanout_floor *f, size_t req_len);

#endif
