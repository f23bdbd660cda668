/* nkp-hostd run --state-dir DIR --listen URL */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <syslog.h>
#include <unistd.h>

#include <nkp/config.h>
#include <nkp/nkp.h>

#include "daemon.h"
#include "internal.h"

#ifndef NKP_SYSCONFDIR
#define NKP_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG NKP_SYSCONFDIR "/nkp/nkp-hostd.conf"

static const char *const config_keys[] = {
	"state-dir",	"listen",      "seal-key",  "host-name",
	"syslog",	"local-group", "max-peers", "max-peers-per-address",
	"peer-timeout", "tpm",	       NULL};

/* The listener's limits: bounds of what may be configured. */
#define MAX_PEERS_LIMIT 65536ul
#define PEER_TIMEOUT_MAX_S 3600ul
/* After SIGTERM: a stop that takes longer is cut short (nkpi_stop_limit). */
#define STOP_LIMIT_S 30u

static void run_usage(void)
{
	printf("Usage: %s run --state-dir DIR --listen URL [options]\n\n"
	       "Serves the management service on URL (e.g. tcp://127.0.0.1:7411) and the\n"
	       "local API for nkp-hostctl on ipc://DIR/host.sock. Stops on SIGTERM/SIGINT.\n"
	       "Holds DIR/hostd.lock while it runs: a second nkp-hostd on DIR exits 1 at\n"
	       "once, naming the pid that holds it.\n\n"
	       "  --config FILE      settings (state-dir, listen, seal-key, tpm, host-name,\n"
	       "                     syslog, local-group, max-peers, ...) as `key = value`\n"
	       "                     lines; default %s if it exists;\n"
	       "                     options given here override it\n"
	       "  --tpm TCTI         the TPM DIR is sealed to (default\n"
	       "                     device:/dev/tpmrm0)\n"
	       "  --seal-key FILE    the sealing key, if DIR was made with --seal-key (a\n"
	       "                     systemd credential: %%d/nkp-seal in a unit)\n"
	       "  --host-name NAME   name reported to the service (default: hostname)\n"
	       "  --local-group NAME members of group NAME may use host.sock besides root\n"
	       "                     (socket 0660, DIR 0710 in that group); default: nkp,\n"
	       "                     when that group exists\n"
	       "  --syslog           log to syslog instead of stderr\n"
	       "  --max-peers N      connections on URL in all (default 32)\n"
	       "  --max-peers-per-address N\n"
	       "                     connections from one address (default 8)\n"
	       "  --peer-timeout SECONDS\n"
	       "                     a connection that brings no authenticated request\n"
	       "                     for this long is closed (default 15: three of nkpd's\n"
	       "                     default heartbeats; keep it above nkpd's --heartbeat)\n",
	       PROG, DEFAULT_CONFIG);
}

typedef struct run_opts {
	nkp_hostd_config cfg;
	const char *listen;
	bool syslog;
	const char *config;	 /* --config FILE, or NULL */
	const char *local_group; /* --local-group NAME, or NULL: "nkp" if it exists */
	int64_t group;		 /* its gid, or -1 */
	unsigned long limit[3];	 /* max-peers, max-peers-per-address, peer-timeout (s); 0: unset */
	nkp_config *file;	 /* owns the strings cfg and listen may point into */
} run_opts;

static int parse_limit(const char *arg, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v == 0 || v > max) {
		return -1;
	}
	*out = v;
	return 0;
}

static int parse(int argc, char **argv, run_opts *o)
{
	static const struct option opts[] = {
		{"state-dir", required_argument, NULL, 'd'},
		{"listen", required_argument, NULL, 'l'},
		{"seal-key", required_argument, NULL, 's'},
		{"tpm", required_argument, NULL, 't'},
		{"host-name", required_argument, NULL, 'n'},
		{"syslog", no_argument, NULL, 'S'},
		{"config", required_argument, NULL, 'c'},
		{"local-group", required_argument, NULL, 'g'},
		{"max-peers", required_argument, NULL, 'P'},
		{"max-peers-per-address", required_argument, NULL, 'A'},
		{"peer-timeout", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o->cfg.state_dir = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 's':
			o->cfg.seal_key_path = optarg;
			break;
		case 't':
			o->cfg.tpm = optarg;
			break;
		case 'n':
			o->cfg.host_name = optarg;
			break;
		case 'S':
			o->syslog = true;
			break;
		case 'c':
			o->config = optarg;
			break;
		case 'g':
			o->local_group = optarg;
			break;
		case 'P':
		case 'A':
		case 'T':
			if (parse_limit(optarg, c == 'T' ? PEER_TIMEOUT_MAX_S : MAX_PEERS_LIMIT,
					&o->limit[c == 'P'   ? 0
						  : c == 'A' ? 1
							     : 2]) != 0) {
				return usage_error("run", "--%s wants a whole number from 1 to %lu",
						   c == 'P'   ? "max-peers"
						   : c == 'A' ? "max-peers-per-address"
							      : "peer-timeout",
						   c == 'T' ? PEER_TIMEOUT_MAX_S : MAX_PEERS_LIMIT);
			}
			break;
		case 'h':
			run_usage();
			return 0;
		default:
			return usage_error("run", "unknown or incomplete option '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind != argc) {
		return usage_error("run", "unexpected argument '%s'", argv[optind]);
	}
	return -1;
}

static void fill(const nkp_config *file, const char *key, const char **field)
{
	if (*field == NULL) {
		*field = nkp_config_get(file, key);
	}
}

/* Fills what the command line left unset from --config FILE or, when it
 * exists, the default file. Returns -1 to go on, or an exit code. */
static int apply_config(run_opts *o)
{
	char err[NKP_CONFIG_ERR_MAX] = "";
	const char *path = o->config != NULL ? o->config : DEFAULT_CONFIG;
	nkp_err e;

	if (o->config == NULL && access(path, F_OK) != 0) {
		goto check;
	}
	e = nkp_config_load(path, config_keys, &o->file, err, sizeof(err));
	if (e == NKP_OK && !o->syslog) {
		e = nkp_config_get_bool(o->file, "syslog", &o->syslog, err, sizeof(err));
		e = e == NKP_ERR_NOT_FOUND ? NKP_OK : e;
	}
	if (e != NKP_OK) {
		fprintf(stderr, "%s run: %s\n", PROG, err);
		return 1;
	}
	for (size_t i = 0; i < 3; i++) {
		static const char *const keys[] = {"max-peers", "max-peers-per-address",
						   "peer-timeout"};

		if (o->limit[i] != 0) {
			continue;
		}
		e = nkp_config_get_uint(o->file, keys[i], 1,
					i == 2 ? PEER_TIMEOUT_MAX_S : MAX_PEERS_LIMIT, &o->limit[i],
					err, sizeof(err));
		if (e != NKP_OK && e != NKP_ERR_NOT_FOUND) {
			fprintf(stderr, "%s run: %s\n", PROG, err);
			return 1;
		}
	}
	fill(o->file, "state-dir", &o->cfg.state_dir);
	fill(o->file, "listen", &o->listen);
	fill(o->file, "seal-key", &o->cfg.seal_key_path);
	fill(o->file, "tpm", &o->cfg.tpm);
	fill(o->file, "host-name", &o->cfg.host_name);
	fill(o->file, "local-group", &o->local_group);
check:
	if (o->cfg.state_dir == NULL || o->listen == NULL) {
		return usage_error("run", "--state-dir and --listen are required (or state-dir and "
					  "listen in the config file)");
	}
	if (local_group_resolve(o->local_group, &o->group) != NKP_OK) {
		fprintf(stderr,
			"%s run: no group named %s (local-group); create it or leave the "
			"setting out\n",
			PROG, o->local_group);
		return 1;
	}
	return -1;
}

/* As many descriptors as the hard limit allows (systemd's LimitNOFILE=):
 * the listener keeps some of them for the local API in any case, and
 * more room means fewer honest connections refused under a flood. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			nkp_log(NKP_LOG_WARN, "NKP-HOSTD-NOFILE",
				"cannot raise the descriptor limit to %llu",
				(unsigned long long)rl.rlim_max);
		}
	}
}

static int fail(const char *what, const char *on, nkp_err err)
{
	nkp_log(NKP_LOG_ERR, "NKP-HOSTD-START", "%s %s: %s", what, on, nkp_strerror(err));
	fprintf(stderr, "%s run: %s %s: %s\n", PROG, what, on, nkp_strerror(err));
	return 1;
}

/* The local API's watchdog runs on a thread of its own (localapi.c):
 * this one waits for a stop signal (SIGHUP and friends: keep serving),
 * and every WEDGE_CHECK_S looks whether nng stopped freeing connections
 * (0 is returned then). */
#define WEDGE_CHECK_S 3

static int wait_for_signal(nkp_hostd *h, const sigset_t *sigs)
{
	const struct timespec tick = {WEDGE_CHECK_S, 0};
	int sig = 0;

	while (sig != SIGTERM && sig != SIGINT) {
		sig = sigtimedwait(sigs, NULL, &tick);
		if (sig < 0 && nkpi_hostd_nng_wedged(h)) {
			return 0;
		}
	}
	return sig;
}

/* nng can free no connection any more: closing would hang. What a
 * restart would lose is saved, then the process exits 1 for its service
 * manager to start it again. */
static _Noreturn void exit_wedged(nkp_hostd *h)
{
	nkp_err err = nkp_hostd_flush(h);

	nkp_event(nkpi_hostd_eventlog(h), NKP_EV_SERVICE_STOPPED, NULL, NULL,
		  "nkp-hostd exiting to be restarted: nng no longer frees closed "
		  "connections%s",
		  err == NKP_OK ? "" : " (the usage counts could not be saved)");
	_exit(1);
}

static int serve(run_opts *o, sigset_t *sigs)
{
	nkp_hostd *h = NULL;
	localapi *api = NULL;
	int sig = 0, rc = 0;
	nkp_err err = nkp_hostd_open(&o->cfg, &h);

	if (err == NKP_ERR_STATE) {
		return state_dir_busy("run", o->cfg.state_dir);
	}
	if (err != NKP_OK) {
		return fail("cannot open state directory", o->cfg.state_dir, err);
	}
	err = nkp_hostd_set_listen_limits(h, (unsigned)o->limit[0], (unsigned)o->limit[1],
					  (unsigned)(o->limit[2] * 1000u));
	if (err == NKP_OK) {
		err = nkp_hostd_listen(h, o->listen);
	}
	if (err != NKP_OK) {
		rc = fail("cannot listen on", o->listen, err);
		goto out_close;
	}
	err = localapi_start(h, o->cfg.state_dir, o->group, &api);
	if (err != NKP_OK) {
		rc = fail("cannot serve the local socket in", o->cfg.state_dir, err);
		goto out_close;
	}
	nkp_event(nkpi_hostd_eventlog(h), NKP_EV_SERVICE_STARTED, NULL, NULL,
		  "nkp-hostd %s serving %s and ipc://%s/host.sock", nkp_version(),
		  nkp_hostd_listen_url(h), o->cfg.state_dir);
	sig = wait_for_signal(h, sigs);
	if (sig == 0) {
		exit_wedged(h);
	}
	nkpi_stop_limit("NKP-HOSTD-STOP-STUCK", PROG, STOP_LIMIT_S);
	if (!localapi_stop(api)) {
		nkp_log(NKP_LOG_ERR, "NKP-HOSTD-NNG-WEDGED",
			"the local API's watchdog is stuck in nng (its reaper wedged): "
			"nothing can be closed; exiting to be restarted");
		exit_wedged(h);
	}
	nkp_event(nkpi_hostd_eventlog(h), NKP_EV_SERVICE_STOPPED, NULL, NULL,
		  "nkp-hostd stopping on signal %d", sig);
out_close:
	nkp_hostd_close(h);
	return rc;
}

int run_main(int argc, char **argv)
{
	run_opts o = {0};
	sigset_t sigs;
	int rc = parse(argc, argv, &o);

	if (rc < 0) {
		rc = apply_config(&o);
	}
	if (rc >= 0) {
		nkp_config_free(o.file);
		return rc;
	}
	if (nkp_init() != NKP_OK || nkp_harden_process() != NKP_OK) {
		fprintf(stderr,
			"%s run: cannot initialise the crypto library or harden the process\n",
			PROG);
		nkp_config_free(o.file);
		return 1;
	}
	if (o.syslog) {
		openlog(PROG, LOG_PID, LOG_DAEMON);
		nkp_log_set_sink(nkp_log_sink_syslog, NULL);
	}
	(void)nkp_memory_lock_check(); /* logs NKP-MLOCK-FAILED once if keys can swap */
	/* Blocked before any thread starts, so only sigwait sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	rc = serve(&o, &sigs);
	nkp_config_free(o.file);
	return rc;
}
