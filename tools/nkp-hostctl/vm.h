/* Shared by the nkp-hostctl vm subcommands. */
#ifndef NKP_HOSTCTL_VM_H
#define NKP_HOSTCTL_VM_H

#include "hostctl.h"

enum {
	OPT_KEYSAFE = 1 << 0,
	OPT_UUID = 1 << 1,
	OPT_NAME = 1 << 2,
	OPT_PROVIDER = 1 << 3,
	OPT_DISK = 1 << 4,
	OPT_COMPONENT = 1 << 5,
	OPT_OUT = 1 << 6,
	OPT_FORMAT = 1 << 7,
	OPT_DEEP = 1 << 8,
	OPT_FD = 1 << 9,
	OPT_FORCE_FILE = 1 << 10,
	OPT_LOCK_WAIT = 1 << 11,
	OPT_LAST = OPT_LOCK_WAIT,
	CMD_ARGS = 1 << 15, /* the command takes "-- CMD ARGS..." after its options */
};

typedef struct vm_args {
	const char *cmd; /* "vm create", ... */
	const char *keysafe;
	const char *vm_uuid;
	const char *vm_name;
	const char *provider;
	const char *disk;
	const char *component;
	const char *out;
	const char *format;
	bool deep;
	const char *fd;
	bool force_file;       /* vm unwrap: a regular file may take the key */
	const char *lock_wait; /* --lock-wait SECONDS, or NULL */
	char **cmd_argv;       /* vm exec: the command and its arguments, NULL-terminated */
} vm_args;

/* Reads a keysafe file (bytes, no secret). */
int vm_read(const vm_args *a, uint8_t **buf, size_t *len);
/* Sends req; on a failed reply prints one line (naming the missing
 * provider version when the keysafe is locked) and returns 1. */
int vm_call(hostctl *ctl, const vm_args *a, const uint8_t *ks, size_t kslen,
	    Nkp__Hostapi__Request *req, Nkp__Hostapi__Reply **out);
/* Prints what a keysafe holds, for --json or people. */
void vm_print_keysafe(const char *path, const uint8_t *buf, size_t len, bool json);

int vm_show(hostctl *ctl, vm_args *a);
int vm_unwrap(hostctl *ctl, vm_args *a);
int vm_exec(hostctl *ctl, vm_args *a);

#endif
