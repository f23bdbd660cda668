/* nkpd: the management service.
 *
 *   nkpd init --state-dir DIR [--tpm TCTI | --seal-key FILE]
 *   nkpd run  --state-dir DIR [--tpm TCTI | --seal-key FILE] [--heartbeat SECONDS]
 *             [--attest-interval SECONDS] [--attest-pcrs LIST]
 *             [--kms-check-interval SECONDS] [--syslog]
 *
 * DIR holds the sealing key at rest (seal.tpm, sealed to the TPM; or
 * seal.key, a plain development file; or none when --seal-key names a
 * credential), identity.nkp (the service's X25519 secret, sealed),
 * state.nkp (+ .prev), events.jsonl, admin.sock and nkpd.lock. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nkp/config.h>

#include "api/admin.h"
#include "core/core.h"
#include "internal.h"
#include "keysource/kmip.h"
#include "sync/sync.h"

typedef struct run_opts {
	const char *dir;
	nkpd_keys_at_rest at; /* --tpm, --seal-key */
	unsigned heartbeat;
	unsigned attest_interval; /* seconds */
	const char *attest_pcrs;  /* "0,1,7", or NULL */
	unsigned kms_check;	  /* seconds; 0: the default */
	bool syslog;
#ifdef NKP_TEST_HOOKS
	bool fast_backup;
#endif
	const char *config; /* --config FILE, or NULL */
	bool heartbeat_set; /* given on the command line: overrides the file */
	bool attest_interval_set;
	bool kms_check_set;
	nkp_config *cfg; /* owns the strings dir may point into */
} run_opts;

#ifndef NKP_SYSCONFDIR
#define NKP_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG NKP_SYSCONFDIR "/nkp/nkpd.conf"
/* After SIGTERM: a stop that takes longer is cut short (nkpi_stop_limit). */
#define STOP_LIMIT_S 30u

static const char *const config_keys[] = {"state-dir",	 "heartbeat",	       "syslog",
					  "tpm",	 "seal-key",	       "attest-interval",
					  "attest-pcrs", "kms-check-interval", NULL};

static const char usage_text[] =
	"usage: nkpd init --state-dir DIR [--tpm TCTI | --seal-key FILE]\n"
	"       nkpd run [--config FILE] [--state-dir DIR] [--tpm TCTI | --seal-key FILE]\n"
	"                [--heartbeat SECONDS] [--attest-interval SECONDS]\n"
	"                [--attest-pcrs LIST] [--kms-check-interval SECONDS] [--syslog]\n"
	"\n"
	"  init   make DIR (0700), the service identity, the sealing key and an empty\n"
	"         state; prints the service public key (base64) as its last line\n"
	"         --tpm TCTI           seal the sealing key to this TPM (DIR/seal.tpm; the\n"
	"                              clear key never touches disk), e.g.\n"
	"                              device:/dev/tpmrm0\n"
	"         --seal-key FILE      the sealing key is FILE (a systemd credential,\n"
	"                              made first). Neither: DIR/seal.key, a plain\n"
	"                              file that protects nothing (development only)\n"
	"  run    serve the admin API on DIR/admin.sock and keep enrolled hosts in sync;\n"
	"         one nkpd per DIR (it holds DIR/nkpd.lock: a second one exits 1)\n"
	"         --tpm TCTI           the TPM DIR is sealed to (default\n"
	"                              device:/dev/tpmrm0)\n"
	"         --seal-key FILE      the sealing key, if DIR was made with --seal-key\n"
	"         --config FILE        settings (state-dir, heartbeat, syslog, tpm,\n"
	"                              seal-key, attest-interval, attest-pcrs,\n"
	"                              kms-check-interval) as\n"
	"                              `key = value` lines; default " DEFAULT_CONFIG "\n"
	"                              if it exists; options given here override it\n"
	"         --heartbeat SECONDS  seconds between heartbeats to each host (default 5)\n"
	"         --attest-interval SECONDS\n"
	"                              how often hosts with a pinned attestation key are\n"
	"                              asked for a TPM quote (default 600); a trusted host\n"
	"                              without a passing one for that long (and two\n"
	"                              heartbeats) loses its trusted providers\n"
	"         --attest-pcrs LIST   the SHA-256 PCRs quoted, e.g. 0,1,2,3,4,5,6,7 (the\n"
	"                              default); baselines record the PCRs they were made of\n"
	"         --kms-check-interval SECONDS\n"
	"                              how often each KMS server of a standard provider\n"
	"                              is asked whether it answers (default 60)\n"
	"         --syslog             log to syslog instead of stderr\n"
#ifdef NKP_TEST_HOOKS
	/* Only in a build with -Dtest-hooks=true: a production nkpd neither
	 * knows nor mentions it. */
	"         --insecure-fast-backup  for tests only: the cheapest Argon2id cost for\n"
	"                              backups made by this service (weak passwords become\n"
	"                              easy to guess; never use it in production)\n"
#endif
	;

/* "0,1,7" -> bits 0, 1 and 7; each of 0-23 once at most. */
static int parse_pcrs(const char *list, uint32_t *out)
{
	uint32_t mask = 0;
	const char *p = list;

	do {
		char *end = NULL;
		unsigned long v;

		errno = 0;
		v = strtoul(p, &end, 10);
		if (errno != 0 || end == p || v > 23 || (mask & (1u << v)) != 0 ||
		    (*end != ',' && *end != '\0') || *p < '0' || *p > '9') {
			return -1;
		}
		mask |= 1u << v;
		p = *end == ',' ? end + 1 : end;
	} while (*p != '\0');
	*out = mask;
	return mask != 0 ? 0 : -1;
}

static int usage_error(const char *msg)
{
	fprintf(stderr, "nkpd: %s\nTry 'nkpd --help'.\n", msg);
	return 2;
}

static int path_in(char *out, size_t size, const char *dir, const char *name)
{
	return (size_t)snprintf(out, size, "%s/%s", dir, name) >= size ? -1 : 0;
}

static void print_pubkey(const nkpd_svc *s)
{
	char b64[45];

	nkp_pubkey_to_base64(nkp_identity_public(s->identity), b64);
	printf("%s\n", b64);
	fflush(stdout);
}

/* mkdir -p: missing parents are made too (0700 under our umask). */
static int make_parents(const char *dir)
{
	char tmp[PATH_MAX];

	nkpd_util_copy_str(tmp, sizeof(tmp), dir);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/') {
			continue;
		}
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static int make_dir(const char *dir)
{
	struct stat st;

	if ((make_parents(dir) != 0 || mkdir(dir, 0700) != 0) && errno != EEXIST) {
		fprintf(stderr, "nkpd: init: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "nkpd: init: %s is not a directory\n", dir);
		return 1;
	}
	if ((st.st_mode & 077) != 0 && chmod(dir, 0700) != 0) {
		fprintf(stderr, "nkpd: init: cannot make %s private (0700): %s\n", dir,
			strerror(errno));
		return 1;
	}
	return 0;
}

static bool state_exists(const char *dir, const char *state)
{
	if (access(state, F_OK) != 0) {
		return false;
	}
	fprintf(stderr,
		"nkpd: init: %s already holds a service state (%s); refusing to "
		"overwrite it\n",
		dir, state);
	return true;
}

static int cmd_init(const char *dir, const nkpd_keys_at_rest *at)
{
	char state[PATH_MAX];
	nkp_file_lock *lock = NULL;
	nkpd_svc s;
	int rc = 1;
	nkp_err err;

	if (path_in(state, sizeof(state), dir, "state.nkp") != 0) {
		return usage_error("state directory path too long");
	}
	if (state_exists(dir, state) || make_dir(dir) != 0) {
		return 1;
	}
	/* Checked again under the lock: another init may have made it since. */
	if (nkpd_svc_lock_dir(dir, &lock) != NKP_OK || state_exists(dir, state)) {
		nkp_file_unlock(lock);
		return 1;
	}
	if (nkpd_svc_open_at(&s, dir, at, true) != NKP_OK) {
		goto out_close;
	}
	/* Generations are (epoch, counter) pairs: a new service is a new
	 * epoch, so no host's number from another service compares with ours
	 * (docs/PROTOCOL.md "Generations"). */
	s.epoch = nkpd_util_new_epoch();
	s.generation = 1;
	err = nkpd_state_save(&s);
	if (err != NKP_OK) {
		fprintf(stderr, "nkpd: init: cannot write %s: %s\n", s.state_path,
			nkp_strerror(err));
		goto out_close;
	}
	printf("nkpd: service state initialised in %s\n", dir);
	printf("service public key (give it to `nkp-hostd init --service-key`):\n");
	print_pubkey(&s);
	rc = 0;
out_close:
	nkpd_svc_close(&s);
	nkp_file_unlock(lock);
	return rc;
}

static void state_load_failed(const nkpd_svc *s, nkp_err err)
{
	if (err == NKP_ERR_NOT_FOUND) {
		fprintf(stderr,
			"nkpd: run: no service state in %s; run `nkpd init --state-dir %s` "
			"first\n",
			s->dir, s->dir);
		return;
	}
	if (err == NKP_ERR_FORMAT_VERSION) {
		char why[256];

		nkpd_state_format_message(s, why, sizeof(why));
		fprintf(stderr,
			"nkpd: run: the state file %s is not in a format this nkpd reads: %s. "
			"It is not damaged: run the nkpd that wrote it (or a newer one); this nkpd "
			"will not start and will not overwrite it.\n",
			s->state_path, why);
		return;
	}
	nkp_event(s->events, NKP_EV_TAMPERING, NULL, NULL, "state file %s cannot be used: %s",
		  s->state_path, nkp_strerror(err));
	fprintf(stderr,
		"nkpd: run: the state file %s is damaged or was tampered with (%s); nkpd will not "
		"start and will not overwrite it. Restore it from %s.prev or from a copy of the "
		"state directory, or rebuild the service (nkpd init in a new directory, then "
		"`nkpctl provider restore` from your backups), and start again.\n",
		s->state_path, nkp_strerror(err), s->state_path);
}

static int serve(nkpd_svc *s, const sigset_t *sigs, uint64_t kms_check_ms)
{
	nkpd_admin *admin = NULL;
	nkpd_kmip_monitor *kms = NULL;
	nkp_err err;
	int sig = 0;

	(void)nkpd_state_stamp_reserve(s); /* logged; the reconciler's tick retries */
	err = nkpd_sync_start(s);
	if (err == NKP_OK) {
		err = nkpd_kmip_monitor_start(s, kms_check_ms, &kms);
	}
	if (err == NKP_OK) {
		err = nkpd_admin_start(s, &admin);
	}
	if (err != NKP_OK) {
		fprintf(stderr, "nkpd: run: cannot start serving on %s/admin.sock: %s\n", s->dir,
			nkp_strerror(err));
		nkpd_kmip_monitor_stop(kms);
		nkpd_sync_stop(s);
		return 1;
	}
	nkp_event(s->events, NKP_EV_SERVICE_STARTED, NULL, NULL,
		  "nkpd %s started on %s: generation %llu, %zu provider(s), %zu host(s)",
		  nkp_version(), s->dir, (unsigned long long)s->generation, s->n_providers,
		  s->n_hosts);
	while (sig != SIGTERM && sig != SIGINT) {
		if (sigwait(sigs, &sig) != 0) {
			break;
		}
	}
	nkpi_stop_limit("NKPD-STOP-STUCK", "nkpd", STOP_LIMIT_S);
	if (!nkpd_admin_stop(admin)) {
		/* Every change is on disk at its commit: nothing is lost. */
		nkp_log(NKP_LOG_ERR, "NKPD-NNG-WEDGED",
			"the admin socket's watchdog is stuck in nng (its reaper wedged): "
			"nothing can be closed; exiting to be restarted");
		_exit(1);
	}
	nkpd_kmip_monitor_stop(kms);
	nkpd_sync_stop(s);
	nkp_event(s->events, NKP_EV_SERVICE_STOPPED, NULL, NULL, "nkpd stopped (signal %d)", sig);
	return 0;
}

static int cmd_run(const run_opts *o)
{
	nkp_file_lock *lock = NULL;
	sigset_t sigs;
	nkpd_svc s;
	int rc = 1;

	/* Block the stop signals before any thread exists (nng's included) so
	 * that only sigwait() sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (nkpd_svc_lock_dir(o->dir, &lock) != NKP_OK) {
		return 1;
	}
	(void)nkp_memory_lock_check(); /* logs NKP-MLOCK-FAILED once if keys can swap */
	if (nkpd_svc_open_at(&s, o->dir, &o->at, false) != NKP_OK) {
		goto out_close;
	}
	s.heartbeat_ms = o->heartbeat * 1000u;
	s.attest_interval_ms = (uint64_t)o->attest_interval * 1000u;
	if (o->attest_pcrs != NULL && parse_pcrs(o->attest_pcrs, &s.attest_pcrs) != 0) {
		fprintf(stderr, "nkpd: --attest-pcrs: %s is not a list of PCRs 0-23\n",
			o->attest_pcrs);
		goto out_close;
	}
	if ((s.attest_pcrs & 0xff0000u) != 0) {
		nkp_log(NKP_LOG_WARN, "NKPD-ATTEST-PCRS",
			"--attest-pcrs names PCRs 16-23, which software on the host can reset or "
			"extend at will: a quote of them proves nothing of how it booted (tests "
			"only)");
	}
#ifdef NKP_TEST_HOOKS
	if (o->fast_backup) {
		s.backup_params = nkp_backup_params_min();
		nkp_log(NKP_LOG_WARN, "NKPD-INSECURE-BACKUP",
			"--insecure-fast-backup: backups use the cheapest Argon2id cost; "
			"a weak password is then easy to guess. For tests only");
	}
	/* A wall clock set wrong (tests/integration/clock-jump.sh). */
	const char *skew = getenv("NKP_TEST_CLOCK_SKEW");

	if (skew != NULL) {
		nkpi_set_clock_skew(strtoll(skew, NULL, 10));
	}
#endif
	nkp_err err = nkpd_state_load(&s);
	if (err != NKP_OK) {
		state_load_failed(&s, err);
		goto out_close;
	}
	rc = serve(&s, &sigs, (uint64_t)o->kms_check * 1000u);
out_close:
	nkpd_svc_close(&s);
	nkp_file_unlock(lock);
	return rc;
}

static int parse_seconds(const char *arg, unsigned *out)
{
	char *end = NULL;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v == 0 || v > 3600) {
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* Seconds, 1-86400 (a day). */
static int parse_interval(const char *arg, unsigned *out)
{
	unsigned long v;
	char *end = NULL;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < 1 || v > 86400) {
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_opts(int argc, char **argv, bool run, run_opts *o)
{
	static const struct option longopts[] = {
		{"state-dir", required_argument, NULL, 'd'},
		{"heartbeat", required_argument, NULL, 'b'},
		{"attest-interval", required_argument, NULL, 'i'},
		{"attest-pcrs", required_argument, NULL, 'p'},
		{"kms-check-interval", required_argument, NULL, 'K'},
		{"syslog", no_argument, NULL, 's'},
#ifdef NKP_TEST_HOOKS
		{"insecure-fast-backup", no_argument, NULL, 'F'},
#endif
		{"config", required_argument, NULL, 'c'},
		{"tpm", required_argument, NULL, 't'},
		{"seal-key", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'd') {
			o->dir = optarg;
		} else if (c == 't') {
			o->at.tpm = optarg;
		} else if (c == 'k') {
			o->at.seal_key_path = optarg;
		} else if (c == 'b' && run) {
			if (parse_seconds(optarg, &o->heartbeat) != 0) {
				return usage_error("--heartbeat wants seconds (1-3600)");
			}
			o->heartbeat_set = true;
		} else if (c == 'i' && run) {
			if (parse_interval(optarg, &o->attest_interval) != 0) {
				return usage_error("--attest-interval wants seconds (1-86400)");
			}
			o->attest_interval_set = true;
		} else if (c == 'K' && run) {
			if (parse_interval(optarg, &o->kms_check) != 0) {
				return usage_error("--kms-check-interval wants seconds (1-86400)");
			}
			o->kms_check_set = true;
		} else if (c == 'p' && run) {
			uint32_t mask;

			if (parse_pcrs(optarg, &mask) != 0) {
				return usage_error(
					"--attest-pcrs wants PCR numbers 0-23, e.g. 0,7");
			}
			o->attest_pcrs = optarg;
		} else if (c == 'c' && run) {
			o->config = optarg;
		} else if (c == 's' && run) {
			o->syslog = true;
#ifdef NKP_TEST_HOOKS
		} else if (c == 'F' && run) {
			o->fast_backup = true;
#endif
		} else if (c == 'h') {
			fputs(usage_text, stdout);
			return 0;
		} else {
			return usage_error("unknown or misplaced option");
		}
	}
	if (optind != argc) {
		return usage_error("unexpected argument");
	}
	if (o->at.tpm != NULL && o->at.seal_key_path != NULL) {
		return usage_error("--tpm and --seal-key exclude each other");
	}
	if (!run && (o->dir == NULL || o->dir[0] == '\0')) {
		return usage_error("--state-dir DIR is required");
	}
	return -1;
}

/* Fills what the command line left unset from --config FILE or, when it
 * exists, the default file. Returns -1 to go on, or an exit code. */
static int apply_config(run_opts *o)
{
	char err[NKP_CONFIG_ERR_MAX] = "";
	const char *path = o->config != NULL ? o->config : DEFAULT_CONFIG;
	unsigned long hb;
	nkp_err e;

	if (o->config == NULL && access(path, F_OK) != 0) {
		goto check_dir;
	}
	e = nkp_config_load(path, config_keys, &o->cfg, err, sizeof(err));
	if (e == NKP_OK && !o->heartbeat_set) {
		e = nkp_config_get_uint(o->cfg, "heartbeat", 1, 3600, &hb, err, sizeof(err));
		o->heartbeat = e == NKP_OK ? (unsigned)hb : o->heartbeat;
		e = e == NKP_ERR_NOT_FOUND ? NKP_OK : e;
	}
	if (e == NKP_OK && !o->attest_interval_set) {
		e = nkp_config_get_uint(o->cfg, "attest-interval", 1, 86400, &hb, err, sizeof(err));
		o->attest_interval = e == NKP_OK ? (unsigned)hb : o->attest_interval;
		e = e == NKP_ERR_NOT_FOUND ? NKP_OK : e;
	}
	if (e == NKP_OK && !o->kms_check_set) {
		e = nkp_config_get_uint(o->cfg, "kms-check-interval", 1, 86400, &hb, err,
					sizeof(err));
		o->kms_check = e == NKP_OK ? (unsigned)hb : o->kms_check;
		e = e == NKP_ERR_NOT_FOUND ? NKP_OK : e;
	}
	if (e == NKP_OK && o->attest_pcrs == NULL) {
		o->attest_pcrs = nkp_config_get(o->cfg, "attest-pcrs");
	}
	if (e == NKP_OK && !o->syslog) {
		e = nkp_config_get_bool(o->cfg, "syslog", &o->syslog, err, sizeof(err));
		e = e == NKP_ERR_NOT_FOUND ? NKP_OK : e;
	}
	if (e != NKP_OK) {
		fprintf(stderr, "nkpd: run: %s\n", err);
		return 1;
	}
	if (o->dir == NULL) {
		o->dir = nkp_config_get(o->cfg, "state-dir");
	}
	if (o->at.tpm == NULL && o->at.seal_key_path == NULL) {
		o->at.tpm = nkp_config_get(o->cfg, "tpm");
		o->at.seal_key_path = nkp_config_get(o->cfg, "seal-key");
	}
check_dir:
	if (o->dir == NULL || o->dir[0] == '\0') {
		return usage_error("--state-dir DIR is required (or state-dir in the config file)");
	}
	return -1;
}

int main(int argc, char **argv)
{
	run_opts o = {.heartbeat = 5, .attest_interval = NKPD_ATTEST_INTERVAL_MS / 1000u};
	bool run;
	int rc;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "init") != 0 && strcmp(argv[1], "run") != 0) {
		return usage_error("unknown command (init, run)");
	}
	run = strcmp(argv[1], "run") == 0;
	rc = parse_opts(argc - 1, argv + 1, run, &o);
	if (rc < 0 && run) {
		rc = apply_config(&o);
	}
	if (rc >= 0) {
		nkp_config_free(o.cfg);
		return rc;
	}
	if (nkp_init() != NKP_OK || nkp_harden_process() != NKP_OK) {
		fprintf(stderr, "nkpd: cannot initialise libsodium or disable core dumps\n");
		nkp_config_free(o.cfg);
		return 1;
	}
	umask(077);
	if (o.syslog) {
		nkp_log_set_sink(nkp_log_sink_syslog, NULL);
	}
	rc = run ? cmd_run(&o) : cmd_init(o.dir, &o.at);
	nkp_config_free(o.cfg);
	return rc;
}
