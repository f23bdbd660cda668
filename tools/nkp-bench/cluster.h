/* nkp-bench: running real nkp daemons for the cluster benchmarks (fanout,
 * local). Child processes, temporary directories, /proc figures and a small
 * admin client for nkpd. */
#ifndef NKP_BENCH_CLUSTER_H
#define NKP_BENCH_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "admin.pb-c.h"

/** Prints a progress line on stderr ("nkp-bench fanout: ..."). */
void bench_progress(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the limit. */
unsigned long bench_raise_nofile(void);

/** Makes a 0700 directory under $TMPDIR (or /tmp, or `base` if not NULL)
 * named nkp-bench-XXXXXX into out. Returns 0 or -1. */
int bench_mkdtemp(const char *base, char *out, size_t size);
/** Removes a directory tree (best effort). */
void bench_rmrf(const char *dir);

/** Finds a program: `given` if not NULL, else `built` (where the build
 * tree nkp-bench came from holds it: NKP_BENCH_NKPD, NKP_BENCH_HOSTD, set
 * by meson), else the bare name on PATH. Returns 0 or -1 (not
 * executable). */
int bench_find_prog(const char *given, const char *built, const char *name, char *out, size_t size);

/** Runs argv to completion; its stdout (up to size-1 bytes) into out,
 * stderr appended to `log`. Returns its exit status, or -1. */
int bench_run(char *const argv[], const char *log, char *out, size_t size);
/** Starts argv with stdout and stderr appended to `log`. Returns its pid or -1. */
pid_t bench_spawn(char *const argv[], const char *log);
/** SIGTERM, then SIGKILL after `grace_ms`; reaps it. Returns its exit status
 * (128+signal if killed by one), or -1. */
int bench_stop(pid_t pid, int grace_ms);

/** CPU seconds (user+system) and resident memory of a process. */
typedef struct bench_procstat {
	double cpu_s;
	double rss_mib;
	double hwm_mib;
	unsigned threads;
	unsigned fds;
} bench_procstat;
int bench_procstat_get(pid_t pid, bench_procstat *out);

/** The admin client: one REQ socket to ipc://SOCK. */
typedef struct bench_admin bench_admin;
int bench_admin_open(const char *sock, int wait_ms, bench_admin **out);
void bench_admin_close(bench_admin *a);
/** Sends `q` (api_version set here) and returns the response (free with
 * nkp__admin__response__free_unpacked(r, NULL)). A non-zero response code
 * is returned as a response, not an error. Returns 0 or -1. */
int bench_admin_call(bench_admin *a, Nkp__Admin__Request *q, Nkp__Admin__Response **out);

/** Helpers over bench_admin_call; each returns 0 or -1 (with a message on
 * stderr naming `what`). */
int bench_admin_status(bench_admin *a, uint64_t *generation, unsigned *in_sync, unsigned *total);
int bench_admin_simple(bench_admin *a, Nkp__Admin__Request *q, const char *what);
/** A provider backup as nkpctl makes one: the backup request, then its
 * confirmation (provider id and BLAKE2b-256 of the file image), which is
 * what marks the provider backed up. The image is not written to disk. */
int bench_admin_backup(bench_admin *a, const char *provider, const char *password);
/** Polls status every `poll_ms` until every host (`n`) is in sync at a
 * generation above `after` (0: any). Returns 0, or -1 on timeout/error. */
int bench_admin_wait_sync(bench_admin *a, unsigned n, uint64_t after, unsigned timeout_ms,
			  unsigned poll_ms);
/** Polls rotation_status of `provider` until "promoted". Returns 0 or -1. */
int bench_admin_wait_promoted(bench_admin *a, const char *provider, unsigned timeout_ms,
			      unsigned poll_ms);

/** True when the nkpd binary at `path` knows --insecure-fast-backup (a
 * build with -Dtest-hooks=true); a production nkpd has no such option. */
bool bench_nkpd_fast_backup(const char *path);

/** Sleeps `ms` milliseconds. */
void bench_sleep_ms(unsigned ms);

#endif
