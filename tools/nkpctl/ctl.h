/* nkpctl: administers nkpd over its admin socket (proto/admin.proto).
 * One file per subcommand group; nkpctl.c dispatches from a table. */
#ifndef NKPCTL_H
#define NKPCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <nkp/nkp.h>

#include "admin.pb-c.h"

#define CTL_DEFAULT_SOCKET "/var/lib/nkp/nkpd/admin.sock"

typedef struct ctl {
	const char *socket;
	bool json;
} ctl;

typedef Nkp__Admin__Response ctl_resp;

/* Subcommand groups: argv[0] is the group name. Return the exit code. */
int status_main(ctl *c, int argc, char **argv);
int host_main(ctl *c, int argc, char **argv);
int provider_main(ctl *c, int argc, char **argv);
int baseline_main(ctl *c, int argc, char **argv);
int backup_main(ctl *c, int argc, char **argv);
int restore_main(ctl *c, int argc, char **argv);
int rotate_main(ctl *c, int argc, char **argv);
int events_main(ctl *c, int argc, char **argv);

/* client.c: one request, one reply. On failure prints one line
 * "nkpctl: WHAT: reason" on stderr and returns 1; on success *out holds
 * the reply (free with ctl_resp_free) and 0 is returned. The request is
 * packed into wiped memory (it may carry a password). */
int ctl_call(const ctl *c, Nkp__Admin__Request *q, const char *what, ctl_resp **out);
/* Like ctl_call, but a reply with an error code is returned too (rc 0). */
int ctl_call_raw(const ctl *c, Nkp__Admin__Request *q, const char *what, ctl_resp **out);
void ctl_resp_free(ctl_resp *r);

/* common.c */
/** Prints "nkpctl: CMD: MSG" and a hint; returns 2. */
int ctl_usage(const char *cmd, const char *fmt, ...) NKP_PRINTF(2, 3);
/** Prints "nkpctl: WHAT: MSG"; returns 1. */
int ctl_fail(const char *what, const char *fmt, ...) NKP_PRINTF(2, 3);
/** Parses a decimal in [min, max]. */
bool ctl_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);
/** Reads a password file into sodium_malloc memory (one trailing newline
 * dropped); free with ctl_password_free. Prints the failure; returns 1. */
int ctl_read_password(const char *what, const char *path, char **pw, size_t *len);
void ctl_password_free(char *pw, size_t len);
/** One subcommand of a group: argv[0] is its name. */
typedef struct ctl_sub {
	const char *name;
	int (*fn)(ctl *c, int argc, char **argv);
} ctl_sub;
/** Runs the subcommand argv[1] of `group` from `subs` (n entries), or
 * `help` for --help / -h; a missing or unknown one is a usage error
 * (`missing` says what is expected). */
int ctl_dispatch(ctl *c, const char *group, const ctl_sub *subs, size_t n, int (*help)(void),
		 const char *missing, int argc, char **argv);
/** True if argv holds --help (or -h) before a "--". */
bool ctl_wants_help(int argc, char **argv);
/** Common options every subcommand accepts after its name too. */
#define CTL_COMMON_LONGOPTS                                                                        \
	{"json", no_argument, NULL, 'J'}, {"socket", required_argument, NULL, 'S'},                \
	{                                                                                          \
		"help", no_argument, NULL, 'h'                                                     \
	}
/** Handles 'J' and 'S' from getopt_long; true if it was one of them. */
bool ctl_common_opt(ctl *c, int opt, const char *arg);
/** Parses the arguments of a subcommand CMD that takes only the common
 * options and, if `required` is not NULL, exactly one operand (*operand;
 * `required` is the usage message when it is missing, e.g. "one host NAME
 * is required"), else none. Returns -1 to go on, or the exit code to
 * return: help()'s for --help, 2 for a usage error. */
int ctl_parse_plain(ctl *c, int argc, char **argv, const char *cmd, int (*help)(void),
		    const char *required, char **operand);
/** ctl_parse_plain() for exactly `n` operands (`required` says which when
 * they are not there), put in operands[0..n-1]; n 0: none allowed. */
int ctl_parse_operands(ctl *c, int argc, char **argv, const char *cmd, int (*help)(void),
		       const char *required, size_t n, char **operands);
void ctl_json_str(FILE *f, const char *s);
const char *ctl_time(uint64_t unix_time, char *buf, size_t size);
/** What a command that changed one thing prints: nkpd's message, or with
 * --json {"name": NAME, DONE: true, "message": ...}. Frees r. */
void ctl_print_done(const ctl *c, const char *name, const char *done, ctl_resp *r);
const char *ctl_state_name(uint32_t state);

/* provider.c: shared printers. */
void ctl_print_provider_json(FILE *f, const Nkp__Admin__ProviderInfo *p);
void ctl_print_provider(const Nkp__Admin__ProviderInfo *p);
int ctl_provider_reply(const ctl *c, Nkp__Admin__Request *q, const char *what);

#endif
