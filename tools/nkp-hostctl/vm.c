/* nkp-hostctl vm <create|add-disk|add-vtpm|unwrap|rewrap|rekey|decrypt|show> */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

/* Seconds a change waits for another change of the same keysafe: longer
 * than one request to nkp-hostd may take (30 s), so that a waiter behind
 * a slow change still gets its turn. */
#define LOCK_WAIT_DEFAULT 60
#define LOCK_WAIT_MAX 3600

typedef struct vm_cmd {
	const char *name;
	int (*fn)(hostctl *ctl, vm_args *a);
	unsigned allowed;
	unsigned required;
	const char *usage;
} vm_cmd;

static int vm_create(hostctl *ctl, vm_args *a);
static int vm_add_disk(hostctl *ctl, vm_args *a);
static int vm_add_vtpm(hostctl *ctl, vm_args *a);
static int vm_rewrap(hostctl *ctl, vm_args *a);
static int vm_rekey(hostctl *ctl, vm_args *a);
static int vm_decrypt(hostctl *ctl, vm_args *a);

static const vm_cmd vm_cmds[] = {
	{"create", vm_create, OPT_KEYSAFE | OPT_UUID | OPT_NAME | OPT_PROVIDER,
	 OPT_KEYSAFE | OPT_UUID | OPT_NAME,
	 "create --keysafe FILE --vm-uuid UUID --vm-name NAME [--provider NAME]\n"
	 "  Makes a VM key under PROVIDER (default: the default provider) into a new\n"
	 "  keysafe FILE (never overwritten)."},
	{"add-disk", vm_add_disk, OPT_KEYSAFE | OPT_DISK | OPT_LOCK_WAIT, OPT_KEYSAFE | OPT_DISK,
	 "add-disk --keysafe FILE --disk ID [--lock-wait SECONDS]\n"
	 "  Adds a data key for disk ID."},
	{"add-vtpm", vm_add_vtpm, OPT_KEYSAFE | OPT_LOCK_WAIT, OPT_KEYSAFE,
	 "add-vtpm --keysafe FILE [--lock-wait SECONDS]\n  Adds a data key for the VM's vTPM."},
	{"unwrap", vm_unwrap, OPT_KEYSAFE | OPT_COMPONENT | OPT_OUT | OPT_FORMAT | OPT_FORCE_FILE,
	 OPT_KEYSAFE | OPT_COMPONENT | OPT_OUT,
	 "unwrap --keysafe FILE --component NAME --out PIPE|- [--format raw|hex|base64]\n"
	 "       [--force-file]\n"
	 "  Writes a component's data key to a FIFO or to stdout ('-') when that is a\n"
	 "  pipe, FIFO, socket or terminal. A regular file (or stdout redirected to one)\n"
	 "  is refused: the key would rest on disk in clear. --force-file allows it\n"
	 "  (created 0600, never through a symlink). `vm exec` avoids files altogether."},
	{"exec", vm_exec, OPT_KEYSAFE | OPT_COMPONENT | OPT_FD | OPT_FORMAT | CMD_ARGS,
	 OPT_KEYSAFE | OPT_COMPONENT,
	 "exec --keysafe FILE --component NAME [--fd N] [--format hex|base64|raw] -- CMD "
	 "[ARGS...]\n"
	 "  Runs CMD with a component's data key readable on file descriptor N\n"
	 "  (default 3; 0 or 3-1023), the read end of a pipe holding just the key\n"
	 "  (default hex: 64 digits and a newline), e.g. QEMU's\n"
	 "  --object secret,id=s0,file=/dev/fd/3 or swtpm's --key fd=3,format=hex.\n"
	 "  The key never touches a file. Exit status: CMD's, or 1 if CMD cannot run."},
	{"rewrap", vm_rewrap, OPT_KEYSAFE | OPT_LOCK_WAIT, OPT_KEYSAFE,
	 "rewrap --keysafe FILE [--lock-wait SECONDS]\n"
	 "  Rewraps the VM key to the provider's active version; no data key changes."},
	{"rekey", vm_rekey, OPT_KEYSAFE | OPT_DEEP | OPT_OUT | OPT_LOCK_WAIT, OPT_KEYSAFE,
	 "rekey --keysafe FILE [--deep --out NEWFILE] [--lock-wait SECONDS]\n"
	 "  Shallow: a new VM key, the same data keys, FILE rewritten. Deep: new data\n"
	 "  keys in NEWFILE (never overwritten); re-encrypt the data, then replace\n"
	 "  FILE with NEWFILE."},
	{"decrypt", vm_decrypt, OPT_KEYSAFE | OPT_COMPONENT | OPT_LOCK_WAIT,
	 OPT_KEYSAFE | OPT_COMPONENT,
	 "decrypt --keysafe FILE --component NAME [--lock-wait SECONDS]\n"
	 "  Removes a component's data key once its data is decrypted (vm-home last)."},
	{"show", vm_show, OPT_KEYSAFE, OPT_KEYSAFE,
	 "show --keysafe FILE\n"
	 "  Shows the keysafe's metadata and whether this host can unlock it."},
};

static void vm_usage(FILE *f)
{
	fprintf(f, "Usage: %s [--socket PATH] [--json] vm <command> ...\n\n", PROG);
	for (size_t i = 0; i < sizeof(vm_cmds) / sizeof(vm_cmds[0]); i++) {
		fprintf(f, "vm %s\n", vm_cmds[i].usage);
	}
	fprintf(f,
		"\nA command that changes a keysafe FILE holds the lock FILE.lock from\n"
		"reading FILE until FILE is replaced, so changes to one keysafe apply one\n"
		"after the other. --lock-wait SECONDS: how long to wait for another\n"
		"change to finish (default %d, 0: do not wait); then exit 1.\n",
		LOCK_WAIT_DEFAULT);
}

static const struct option vm_opts[] = {
	{"keysafe", required_argument, NULL, OPT_KEYSAFE},
	{"vm-uuid", required_argument, NULL, OPT_UUID},
	{"vm-name", required_argument, NULL, OPT_NAME},
	{"provider", required_argument, NULL, OPT_PROVIDER},
	{"disk", required_argument, NULL, OPT_DISK},
	{"component", required_argument, NULL, OPT_COMPONENT},
	{"out", required_argument, NULL, OPT_OUT},
	{"format", required_argument, NULL, OPT_FORMAT},
	{"deep", no_argument, NULL, OPT_DEEP},
	{"fd", required_argument, NULL, OPT_FD},
	{"force-file", no_argument, NULL, OPT_FORCE_FILE},
	{"lock-wait", required_argument, NULL, OPT_LOCK_WAIT},
	{"json", no_argument, NULL, 'j'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

static void set_opt(vm_args *a, int c, const char *v)
{
	switch (c) {
	case OPT_KEYSAFE:
		a->keysafe = v;
		break;
	case OPT_UUID:
		a->vm_uuid = v;
		break;
	case OPT_NAME:
		a->vm_name = v;
		break;
	case OPT_PROVIDER:
		a->provider = v;
		break;
	case OPT_DISK:
		a->disk = v;
		break;
	case OPT_COMPONENT:
		a->component = v;
		break;
	case OPT_OUT:
		a->out = v;
		break;
	case OPT_FORMAT:
		a->format = v;
		break;
	case OPT_DEEP:
		a->deep = true;
		break;
	case OPT_FD:
		a->fd = v;
		break;
	case OPT_FORCE_FILE:
		a->force_file = true;
		break;
	case OPT_LOCK_WAIT:
		a->lock_wait = v;
		break;
	default:
		break;
	}
}

static const char *opt_name(unsigned bit)
{
	for (size_t i = 0; vm_opts[i].name != NULL; i++) {
		if ((unsigned)vm_opts[i].val == bit) {
			return vm_opts[i].name;
		}
	}
	return "?";
}

/* Returns -1 to go on, or an exit code. */
static int parse(hostctl *ctl, const vm_cmd *cmd, vm_args *a, int argc, char **argv)
{
	unsigned seen = 0;
	int c;

	opterr = 0;
	optind = 1;
	/* "+": a command to run ends the options; its own are its own. */
	while ((c = getopt_long(argc, argv, (cmd->allowed & CMD_ARGS) ? "+" : "", vm_opts, NULL)) !=
	       -1) {
		if (c == 'h') {
			printf("Usage: %s [--socket PATH] [--json] vm %s\n", PROG, cmd->usage);
			return 0;
		}
		if (c == 'j') {
			ctl->json = true;
			continue;
		}
		if (c == '?' || c == ':' || (cmd->allowed & (unsigned)c) == 0) {
			return usage_error(a->cmd, "unknown or incomplete option '%s'",
					   argv[optind - 1]);
		}
		seen |= (unsigned)c;
		set_opt(a, c, optarg);
	}
	if ((cmd->allowed & CMD_ARGS) && optind == argc) {
		return usage_error(a->cmd, "missing the command to run (-- CMD [ARGS...])");
	}
	if (cmd->allowed & CMD_ARGS) {
		a->cmd_argv = argv + optind;
	} else if (optind != argc) {
		return usage_error(a->cmd, "unexpected argument '%s'", argv[optind]);
	}
	for (unsigned bit = 1; bit <= OPT_LAST; bit <<= 1) {
		if ((cmd->required & bit) && !(seen & bit)) {
			return usage_error(a->cmd, "--%s is required", opt_name(bit));
		}
	}
	return -1;
}

int vm_main(hostctl *ctl, int argc, char **argv)
{
	static char cmdname[64];
	vm_args a = {0};
	int rc;

	if (argc < 2) {
		return usage_error("vm", "missing command");
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		vm_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(vm_cmds) / sizeof(vm_cmds[0]); i++) {
		if (strcmp(argv[1], vm_cmds[i].name) != 0) {
			continue;
		}
		snprintf(cmdname, sizeof(cmdname), "vm %s", vm_cmds[i].name);
		a.cmd = cmdname;
		rc = parse(ctl, &vm_cmds[i], &a, argc - 1, argv + 1);
		return rc >= 0 ? rc : vm_cmds[i].fn(ctl, &a);
	}
	return usage_error("vm", "unknown command '%s'", argv[1]);
}

int vm_read(const vm_args *a, uint8_t **buf, size_t *len)
{
	nkp_err err = nkp_file_read(a->keysafe, NKP_KEYSAFE_MAX_FILE, buf, len);

	if (err != NKP_OK) {
		return fail(a->cmd, "%s: %s", a->keysafe, nkp_strerror(err));
	}
	return 0;
}

static int locked_error(const vm_args *a, const uint8_t *ks, size_t kslen)
{
	nkp_keysafe *k = NULL;
	char id[33] = "?";
	uint32_t version = 0;

	if (ks != NULL && nkp_keysafe_parse(ks, kslen, &k) == NKP_OK) {
		nkp_id_to_hex(nkp_keysafe_provider_id(k), id);
		version = nkp_keysafe_primary_version(k);
		nkp_keysafe_free(k);
	}
	return fail(a->cmd, "%s: locked: this host lacks provider %s version %u", a->keysafe, id,
		    version);
}

int vm_call(hostctl *ctl, const vm_args *a, const uint8_t *ks, size_t kslen,
	    Nkp__Hostapi__Request *req, Nkp__Hostapi__Reply **out)
{
	Nkp__Hostapi__Reply *r = NULL;
	nkp_err err = hostctl_call(ctl, req, &r);
	int rc;

	if (err != NKP_OK) {
		return fail(a->cmd, "%s: %s (is nkp-hostd running?)", ctl->socket,
			    nkp_strerror(err));
	}
	if (r->code == NKP_OK) {
		*out = r;
		return 0;
	}
	if (r->code == NKP_ERR_KEY_MISSING && ks != NULL) {
		rc = locked_error(a, ks, kslen);
	} else if (r->code == NKP_ERR_AUTH) {
		rc = fail(a->cmd, "%s: keysafe is damaged or tampered (authentication failed)",
			  a->keysafe);
	} else if (r->code == NKP_ERR_STATE && a->component != NULL) {
		rc = fail(a->cmd, "%s: vm-home goes last: decrypt the disks and the vTPM first",
			  a->keysafe);
	} else if (r->code == NKP_ERR_STATE) {
		rc = fail(a->cmd, "%s: the provider has no active version on this host",
			  a->keysafe);
	} else if (r->code == NKP_ERR_NOT_FOUND && ks == NULL) {
		rc = a->provider != NULL
			     ? fail(a->cmd,
				    "this host holds no provider named '%s' (nkpctl provider list)",
				    a->provider)
			     : fail(a->cmd,
				    "this host holds no default provider: pass --provider NAME "
				    "or make one the default (nkpctl provider set-default)");
	} else if (r->code == NKP_ERR_NOT_BACKED_UP) {
		rc = fail(a->cmd,
			  "provider %s is not backed up yet: back it up with 'nkpctl provider "
			  "backup' first",
			  a->provider != NULL ? a->provider : "(default)");
	} else {
		rc = fail(a->cmd, "%s: %s", a->keysafe != NULL ? a->keysafe : ctl->socket,
			  nkp_strerror((nkp_err)r->code));
	}
	hostctl_reply_free(r);
	return rc;
}

void vm_print_keysafe(const char *path, const uint8_t *buf, size_t len, bool json)
{
	nkp_keysafe *k = NULL;
	char id[33];

	if (nkp_keysafe_parse(buf, len, &k) != NKP_OK) {
		return;
	}
	nkp_id_to_hex(nkp_keysafe_provider_id(k), id);
	if (json) {
		printf("{\"keysafe\":");
		json_str(path);
		printf(",\"provider_id\":\"%s\",\"primary_version\":%u,\"components\":[", id,
		       nkp_keysafe_primary_version(k));
		for (size_t i = 0; i < nkp_keysafe_component_count(k); i++) {
			printf("%s", i ? "," : "");
			json_str(nkp_keysafe_component(k, i));
		}
		printf("]}\n");
	} else {
		printf("%s: provider %s version %u, components:", path, id,
		       nkp_keysafe_primary_version(k));
		for (size_t i = 0; i < nkp_keysafe_component_count(k); i++) {
			printf(" %s", nkp_keysafe_component(k, i));
		}
		printf("\n");
	}
	nkp_keysafe_free(k);
}

/* Writes the keysafe in reply `r` to `path`: replacing it (atomically), or
 * with `create` as a new file that must not exist yet. */
static int write_keysafe(hostctl *ctl, const vm_args *a, const char *path,
			 const Nkp__Hostapi__Reply *r, bool create)
{
	nkp_err err;

	if (r->keysafe.len == 0) {
		return fail(a->cmd, "malformed reply from nkp-hostd");
	}
	if (create) {
		err = nkp_file_write_new(path, r->keysafe.data, r->keysafe.len, 0600);
	} else {
		err = nkp_file_write_atomic(path, r->keysafe.data, r->keysafe.len, 0600, false,
					    true);
	}
	if (err == NKP_ERR_EXISTS) {
		return fail(a->cmd, "%s: already exists; refusing to overwrite a keysafe", path);
	}
	if (err != NKP_OK) {
		return fail(a->cmd, "%s: cannot write: %s", path, nkp_strerror(err));
	}
	vm_print_keysafe(path, r->keysafe.data, r->keysafe.len, ctl->json);
	return 0;
}

/* A cheap early refusal, before nkp-hostd makes a key for nothing; the
 * exclusive write decides. */
static int refuse_existing(const vm_args *a, const char *path)
{
	struct stat st;

	if (lstat(path, &st) == 0) {
		return fail(a->cmd, "%s: already exists; refusing to overwrite a keysafe", path);
	}
	if (errno != ENOENT) {
		return fail(a->cmd, "%s: %s", path, strerror(errno));
	}
	return 0;
}

static int vm_create(hostctl *ctl, vm_args *a)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__CreateRequest cr = NKP__HOSTAPI__CREATE_REQUEST__INIT;
	Nkp__Hostapi__VmIdentity id = NKP__HOSTAPI__VM_IDENTITY__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	int rc = refuse_existing(a, a->keysafe);

	if (rc != 0) {
		return rc;
	}
	id.vm_uuid = (char *)a->vm_uuid;
	id.vm_name = (char *)a->vm_name;
	cr.vm = &id;
	cr.provider = (char *)(a->provider != NULL ? a->provider : "");
	req.op_case = NKP__HOSTAPI__REQUEST__OP_CREATE;
	req.create = &cr;
	rc = vm_call(ctl, a, NULL, 0, &req, &r);
	if (rc == 0) {
		rc = write_keysafe(ctl, a, a->keysafe, r, true);
	}
	hostctl_reply_free(r);
	return rc;
}

/* One read-modify-write of a keysafe. FILE.lock is held (flock) from
 * before FILE is read until after its replacement is renamed into place,
 * so that changes to one keysafe (by nkp-hostctl, or by an integration
 * that follows the same rule: docs/ARCHITECTURE.md) apply one after the
 * other; without it two changes made at once both read the same FILE and
 * the second rename drops the first change. The lock file never holds
 * anything but the holder's pid. */
typedef struct ks_change {
	nkp_file_lock *lock;
	uint8_t *ks;
	size_t kslen;
} ks_change;

static int lock_wait_ms(const vm_args *a, unsigned *ms)
{
	char *end = NULL;
	unsigned long v;

	if (a->lock_wait == NULL) {
		*ms = LOCK_WAIT_DEFAULT * 1000u;
		return -1;
	}
	errno = 0;
	v = strtoul(a->lock_wait, &end, 10);
	if (errno != 0 || end == a->lock_wait || *end != '\0' || a->lock_wait[0] == '-' ||
	    v > LOCK_WAIT_MAX) {
		return usage_error(a->cmd, "--lock-wait must be a number of seconds from 0 to %d",
				   LOCK_WAIT_MAX);
	}
	*ms = (unsigned)v * 1000u;
	return -1;
}

static int lock_failed(const vm_args *a, const char *lock, unsigned ms, nkp_err err)
{
	long pid;

	if (err != NKP_ERR_STATE) {
		return fail(a->cmd, "%s: cannot take the keysafe's lock: %s", lock,
			    nkp_strerror(err));
	}
	pid = nkp_file_lock_holder(lock);
	if (pid > 0) {
		return fail(a->cmd,
			    "%s: another process (pid %ld) is changing this keysafe: it "
			    "holds %s (waited %u s); nothing changed: run the command again "
			    "once it is done",
			    a->keysafe, pid, lock, ms / 1000u);
	}
	return fail(a->cmd,
		    "%s: another process is changing this keysafe: it holds %s (waited "
		    "%u s); nothing changed: run the command again once it is done",
		    a->keysafe, lock, ms / 1000u);
}

/* Takes FILE.lock and reads FILE. Returns 0, or an exit code (the lock
 * not held then). */
static int ks_begin(const vm_args *a, ks_change *c)
{
	char lock[PATH_MAX];
	unsigned ms = 0;
	nkp_err err;
	int rc = lock_wait_ms(a, &ms);

	if (rc >= 0) {
		return rc;
	}
	if ((size_t)snprintf(lock, sizeof(lock), "%s.lock", a->keysafe) >= sizeof(lock)) {
		return fail(a->cmd, "%s: path too long", a->keysafe);
	}
	err = nkp_file_lock_take(lock, ms, &c->lock);
	if (err != NKP_OK) {
		return lock_failed(a, lock, ms, err);
	}
	rc = vm_read(a, &c->ks, &c->kslen);
	if (rc != 0) {
		nkp_file_unlock(c->lock);
		c->lock = NULL;
	}
	return rc;
}

/* A writer that ignores the lock could still have replaced FILE since it
 * was read: then nothing is written rather than its change dropped. (The
 * check narrows that race to a moment; only the lock closes it.) */
static int ks_unchanged(const vm_args *a, const ks_change *c)
{
	uint8_t *now = NULL;
	size_t len = 0;
	nkp_err err = nkp_file_read(a->keysafe, NKP_KEYSAFE_MAX_FILE, &now, &len);
	bool same = err == NKP_OK && len == c->kslen && memcmp(now, c->ks, len) == 0;

	free(now);
	if (!same) {
		return fail(a->cmd,
			    "%s: changed by a writer that does not take %s.lock while this "
			    "command ran; nothing written: run the command again",
			    a->keysafe, a->keysafe);
	}
	return 0;
}

static void ks_end(ks_change *c)
{
	nkp_file_unlock(c->lock);
	free(c->ks);
}

/* The ops that take a keysafe and a component and rewrite the keysafe. */
static int component_op(hostctl *ctl, vm_args *a, const char *component, int op_case)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__ComponentRequest cr = NKP__HOSTAPI__COMPONENT_REQUEST__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	ks_change c = {0};
	int rc = ks_begin(a, &c);

	if (rc != 0) {
		return rc;
	}
	cr.keysafe.data = c.ks;
	cr.keysafe.len = c.kslen;
	cr.component = (char *)component;
	req.op_case = (Nkp__Hostapi__Request__OpCase)op_case;
	if (op_case == NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT) {
		req.add_component = &cr;
	} else {
		req.remove_component = &cr;
	}
	rc = vm_call(ctl, a, c.ks, c.kslen, &req, &r);
	if (rc == 0) {
		rc = ks_unchanged(a, &c);
	}
	if (rc == 0) {
		rc = write_keysafe(ctl, a, a->keysafe, r, false);
	}
	hostctl_reply_free(r);
	ks_end(&c);
	return rc;
}

static int vm_add_disk(hostctl *ctl, vm_args *a)
{
	char component[NKP_KEYSAFE_MAX_COMPONENT + 8];

	snprintf(component, sizeof(component), "disk:%s", a->disk);
	if (strlen(a->disk) > 48 || !nkp_component_valid(component)) {
		return usage_error(a->cmd, "--disk must be 1-48 characters of A-Z a-z 0-9 . _ -");
	}
	return component_op(ctl, a, component, NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT);
}

static int vm_add_vtpm(hostctl *ctl, vm_args *a)
{
	return component_op(ctl, a, NKP_COMPONENT_VTPM, NKP__HOSTAPI__REQUEST__OP_ADD_COMPONENT);
}

static int vm_decrypt(hostctl *ctl, vm_args *a)
{
	return component_op(ctl, a, a->component, NKP__HOSTAPI__REQUEST__OP_REMOVE_COMPONENT);
}

/* rewrap and rekey: keysafe in, keysafe out (to `dest`: FILE itself, or a
 * new file for a deep rekey). */
static int keysafe_op(hostctl *ctl, vm_args *a, bool rekey, const char *dest)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__KeysafeRequest kr = NKP__HOSTAPI__KEYSAFE_REQUEST__INIT;
	Nkp__Hostapi__RekeyRequest rk = NKP__HOSTAPI__REKEY_REQUEST__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	ks_change c = {0};
	int rc = ks_begin(a, &c);

	if (rc != 0) {
		return rc;
	}
	if (rekey) {
		rk.keysafe.data = c.ks;
		rk.keysafe.len = c.kslen;
		rk.deep = a->deep;
		req.op_case = NKP__HOSTAPI__REQUEST__OP_REKEY;
		req.rekey = &rk;
	} else {
		kr.keysafe.data = c.ks;
		kr.keysafe.len = c.kslen;
		req.op_case = NKP__HOSTAPI__REQUEST__OP_REWRAP;
		req.rewrap = &kr;
	}
	rc = vm_call(ctl, a, c.ks, c.kslen, &req, &r);
	if (rc == 0 && !a->deep) {
		rc = ks_unchanged(a, &c);
	}
	if (rc == 0) {
		rc = write_keysafe(ctl, a, dest, r, a->deep);
	}
	hostctl_reply_free(r);
	ks_end(&c);
	return rc;
}

static int vm_rewrap(hostctl *ctl, vm_args *a)
{
	return keysafe_op(ctl, a, false, a->keysafe);
}

static int vm_rekey(hostctl *ctl, vm_args *a)
{
	int rc;

	if (a->deep != (a->out != NULL)) {
		return usage_error(a->cmd, "--deep and --out NEWFILE go together");
	}
	if (a->deep) {
		rc = refuse_existing(a, a->out);
		if (rc != 0) {
			return rc;
		}
	}
	return keysafe_op(ctl, a, true, a->deep ? a->out : a->keysafe);
}
