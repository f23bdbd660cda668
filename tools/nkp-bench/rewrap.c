/* nkp-bench rewrap: rewrapping N keysafe files to a new provider version
 * after a rotation, as a host would (read, parse, rewrap the KEK, write the
 * file back atomically), with and without fsync. Uses libnkp directly. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include <nkp/file.h>
#include <nkp/keysafe.h>
#include <nkp/nkp.h>

#include "bench.h"
#include "cluster.h"

#define CMD "rewrap"

static const char usage[] =
	"Usage: nkp-bench rewrap [--keysafes N] [--fsync-keysafes M] [--dir DIR] [--json]\n"
	"\n"
	"Makes N keysafe files (default 40000) under provider version 1 in a\n"
	"temporary directory (under DIR, default $TMPDIR or /tmp), then times\n"
	"rewrapping them all to version 2: read, parse, nkp_keysafe_rewrap,\n"
	"serialize, write back. Measured: in memory only (memory_s); files\n"
	"written with a bare temp + rename and one syncfs at the end, the floor\n"
	"(nofsync_s); nkp_file_write_atomic in bulk mode (fsync_data false: no\n"
	"fsync per file) and one nkp_file_sync_dir at the end (bulk_s); and on\n"
	"the first M files (default 2000), scaled to N, nkp_file_write_atomic\n"
	"with fsync (fsync_s).\n";

typedef struct ropts {
	bool json;
	unsigned n;
	unsigned n_fsync;
	const char *dir;
} ropts;

typedef struct rctx {
	nkp_primary *v1, *v2;
	char dir[PATH_MAX];
	uint8_t **mem;
	size_t *memlen;
} rctx;

static int parse(int argc, char **argv, ropts *o)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"keysafes", required_argument, NULL, 'n'},
		{"fsync-keysafes", required_argument, NULL, 'f'},
		{"dir", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		unsigned long v;

		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		case 'n':
		case 'f':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno != 0 || *optarg == '\0' || *end != '\0' || v > 1000000) {
				fprintf(stderr,
					"nkp-bench rewrap: --%s wants a number up to 1000000\n"
					"Try 'nkp-bench rewrap --help'.\n",
					c == 'n' ? "keysafes" : "fsync-keysafes");
				return 2;
			}
			*(c == 'n' ? &o->n : &o->n_fsync) = (unsigned)v;
			break;
		default:
			fprintf(stderr, "Try 'nkp-bench rewrap --help'.\n");
			return 2;
		}
	}
	if (optind != argc || o->n == 0) {
		fprintf(stderr, "nkp-bench rewrap: %s\nTry 'nkp-bench rewrap --help'.\n",
			o->n == 0 ? "--keysafes must be positive" : "unexpected argument");
		return 2;
	}
	if (o->n_fsync > o->n) {
		o->n_fsync = o->n;
	}
	return 0;
}

static int make_primaries(rctx *c)
{
	uint8_t id[NKP_ID_BYTES];
	nkp_key *k1 = NULL, *k2 = NULL;
	int rc = -1;

	randombytes_buf(id, sizeof(id));
	if (nkp_key_generate(&k1) == NKP_OK && nkp_key_generate(&k2) == NKP_OK &&
	    nkp_primary_new(id, 1, k1, &c->v1) == NKP_OK &&
	    nkp_primary_new(id, 2, k2, &c->v2) == NKP_OK) {
		rc = 0;
	}
	nkp_key_free(k1);
	nkp_key_free(k2);
	return rc;
}

static void ks_path(const rctx *c, unsigned i, char *out, size_t size)
{
	snprintf(out, size, "%s/vm%06u.keysafe", c->dir, i);
}

/* Setup (not timed): N keysafes with one disk each, as files and in memory. */
static int make_keysafes(rctx *c, unsigned n)
{
	char uuid[40], path[PATH_MAX + 32];

	for (unsigned i = 0; i < n; i++) {
		nkp_vm_identity id = {.vm_uuid = uuid, .vm_name = "bench-vm"};
		nkp_keysafe *ks = NULL;
		nkp_err err;

		snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012u", i);
		err = nkp_keysafe_create(c->v1, &id, &ks);
		if (err == NKP_OK) {
			err = nkp_keysafe_add_component(ks, c->v1, "disk:0");
		}
		if (err == NKP_OK) {
			err = nkp_keysafe_serialize(ks, &c->mem[i], &c->memlen[i]);
		}
		nkp_keysafe_free(ks);
		ks_path(c, i, path, sizeof(path));
		if (err != NKP_OK || nkp_file_write_atomic(path, c->mem[i], c->memlen[i], 0600,
							   false, false) != NKP_OK) {
			fprintf(stderr, "nkp-bench rewrap: cannot make keysafe %u\n", i);
			return -1;
		}
	}
	return 0;
}

/* Temp file, write, rename: no fsync at all (a bulk rewrite that syncs
 * the filesystem once at the end). */
static nkp_err write_plain(const char *path, const uint8_t *data, size_t len)
{
	char tmp[PATH_MAX + 48];
	int fd;
	bool ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		return NKP_ERR_IO;
	}
	ok = write(fd, data, len) == (ssize_t)len;
	ok = close(fd) == 0 && ok;
	return ok && rename(tmp, path) == 0 ? NKP_OK : NKP_ERR_IO;
}

/* One rewrap; from memory or from the file, back to the file or not. */
static int rewrap_one(rctx *c, unsigned i, bool files, int sync)
{
	char path[PATH_MAX + 32];
	uint8_t *buf = NULL, *out = NULL;
	size_t len = 0, outlen = 0;
	nkp_keysafe *ks = NULL;
	nkp_err err = NKP_OK;

	ks_path(c, i, path, sizeof(path));
	if (files) {
		err = nkp_file_read(path, NKP_KEYSAFE_MAX_FILE, &buf, &len);
	}
	if (err == NKP_OK) {
		err = nkp_keysafe_parse(files ? buf : c->mem[i], files ? len : c->memlen[i], &ks);
	}
	if (err == NKP_OK) {
		err = nkp_keysafe_rewrap(ks, c->v1, c->v2);
	}
	if (err == NKP_OK) {
		err = nkp_keysafe_serialize(ks, &out, &outlen);
	}
	if (err == NKP_OK && files) {
		err = sync == 0 ? write_plain(path, out, outlen)
				: nkp_file_write_atomic(path, out, outlen, 0600, false, sync == 2);
	}
	nkp_keysafe_free(ks);
	free(buf);
	free(out);
	return err == NKP_OK ? 0 : -1;
}

/* Rewraps keysafes [0, n) and returns seconds, or -1. Files are put back
 * to version 1 first (untimed) when `files`. */
static double timed(rctx *c, unsigned n, bool files, int sync)
{
	char path[PATH_MAX + 32];
	uint64_t t0;

	for (unsigned i = 0; files && i < n; i++) {
		ks_path(c, i, path, sizeof(path));
		if (nkp_file_write_atomic(path, c->mem[i], c->memlen[i], 0600, false, false) !=
		    NKP_OK) {
			return -1;
		}
	}
	/* Nothing left to write back from the setup: each mode's final sync
	 * flushes only its own writes. */
	if (files && nkp_file_sync_dir(c->dir) != NKP_OK) {
		return -1;
	}
	t0 = bench_now_ns();
	for (unsigned i = 0; i < n; i++) {
		if (rewrap_one(c, i, files, sync) != 0) {
			fprintf(stderr, "nkp-bench rewrap: rewrap of keysafe %u failed\n", i);
			return -1;
		}
	}
	if (files && sync == 0) {
		int fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd >= 0) {
			syncfs(fd);
			close(fd);
		}
	}
	if (files && sync == 1 && nkp_file_sync_dir(c->dir) != NKP_OK) {
		return -1;
	}
	return (double)(bench_now_ns() - t0) / 1e9;
}

static int run(rctx *c, const ropts *o)
{
	double mem_s, nofsync_s, bulk_s, fsync_s = 0;

	bench_progress(CMD, "making %u keysafes in %s", o->n, c->dir);
	if (make_keysafes(c, o->n) != 0) {
		return -1;
	}
	bench_progress(CMD,
		       "rewrapping %u in memory, %u files without fsync (bare, then bulk), "
		       "%u with fsync",
		       o->n, o->n, o->n_fsync);
	mem_s = timed(c, o->n, false, 0);
	nofsync_s = timed(c, o->n, true, 0);
	bulk_s = timed(c, o->n, true, 1);
	if (o->n_fsync > 0) {
		fsync_s = timed(c, o->n_fsync, true, 2);
	}
	if (mem_s < 0 || nofsync_s < 0 || fsync_s < 0 || bulk_s < 0) {
		return -1;
	}
	if (o->json) {
		printf("{\"bench\":\"rewrap\",\"keysafes\":%u,\"memory_s\":%.3f,\"nofsync_s\":%.3f,"
		       "\"bulk_s\":%.3f,\"fsync_keysafes\":%u,\"fsync_measured_s\":%.3f,"
		       "\"fsync_s\":%.2f,\"nofsync_per_s\":%.0f,\"bulk_per_s\":%.0f,"
		       "\"fsync_per_s\":%.0f}\n",
		       o->n, mem_s, nofsync_s, bulk_s, o->n_fsync, fsync_s,
		       o->n_fsync ? fsync_s * o->n / o->n_fsync : 0.0, o->n / nofsync_s,
		       o->n / bulk_s, o->n_fsync ? o->n_fsync / fsync_s : 0.0);
	} else {
		printf("%u keysafes: in memory %.3f s, files without fsync %.3f s, bulk "
		       "nkp_file_write_atomic + one sync %.3f s, with fsync %.2f s (%u measured, "
		       "scaled)\n",
		       o->n, mem_s, nofsync_s, bulk_s,
		       o->n_fsync ? fsync_s * o->n / o->n_fsync : 0.0, o->n_fsync);
	}
	return 0;
}

int bench_rewrap_main(int argc, char **argv)
{
	ropts o = {.n = 40000, .n_fsync = 2000};
	rctx c = {0};
	int rc = parse(argc, argv, &o);

	if (rc != 0) {
		return rc == 1 ? 0 : rc;
	}
	c.mem = calloc(o.n, sizeof(*c.mem));
	c.memlen = calloc(o.n, sizeof(*c.memlen));
	rc = 1;
	if (c.mem != NULL && c.memlen != NULL && make_primaries(&c) == 0 &&
	    bench_mkdtemp(o.dir, c.dir, sizeof(c.dir)) == 0) {
		rc = run(&c, &o) == 0 ? 0 : 1;
		bench_rmrf(c.dir);
	}
	for (unsigned i = 0; c.mem != NULL && i < o.n; i++) {
		free(c.mem[i]);
	}
	free(c.mem);
	free(c.memlen);
	nkp_primary_free(c.v1);
	nkp_primary_free(c.v2);
	return rc;
}
