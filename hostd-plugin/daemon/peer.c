/* Who is on the other end of a local API request: the peer's pid, uid and
 * gid as the kernel reports them for the ipc connection (SO_PEERCRED,
 * through nng), its groups, executable and cgroup from /proc. Used to
 * admit a request and to record every data key release (key.released):
 * who got a key, never the key. */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>

#include <nkp/nkp.h>

#include "daemon.h"

#define DEFAULT_LOCAL_GROUP "nkp"

nkp_err local_group_resolve(const char *name, int64_t *gid)
{
	struct group gr, *res = NULL;
	char buf[16384];

	if (getgrnam_r(name != NULL ? name : DEFAULT_LOCAL_GROUP, &gr, buf, sizeof(buf), &res) !=
		    0 ||
	    res == NULL) {
		if (name != NULL) {
			return NKP_ERR_NOT_FOUND;
		}
		*gid = -1;
		return NKP_OK;
	}
	*gid = (int64_t)res->gr_gid;
	return NKP_OK;
}

static nkp_err root_only(const char *state_dir, const char *sock)
{
	struct stat st;

	if (stat(state_dir, &st) != 0) {
		return NKP_ERR_INVALID;
	}
	if ((st.st_mode & 077) != 0 && chmod(state_dir, 0700) != 0) {
		return NKP_ERR_PERM;
	}
	return chmod(sock, 0600) == 0 ? NKP_OK : NKP_ERR_PERM;
}

nkp_err local_access_set(const char *state_dir, int64_t *group)
{
	char sock[4096];
	int e;

	if ((size_t)snprintf(sock, sizeof(sock), "%s/host.sock", state_dir) >= sizeof(sock)) {
		return NKP_ERR_INVALID;
	}
	if (*group < 0) {
		return root_only(state_dir, sock);
	}
	if (chown(sock, (uid_t)-1, (gid_t)*group) == 0 && chmod(sock, 0660) == 0 &&
	    chown(state_dir, (uid_t)-1, (gid_t)*group) == 0 && chmod(state_dir, 0710) == 0) {
		return NKP_OK;
	}
	/* e.g. a unit without CAP_CHOWN: root only, as without a group */
	e = errno;
	nkp_log(NKP_LOG_WARN, "NKP-LOCAL-GROUP",
		"cannot give group %lld access to %s (%s; the daemon needs CAP_CHOWN for it, see "
		"INSTALL.md): only root may use it",
		(long long)*group, sock, strerror(e));
	*group = -1;
	return root_only(state_dir, sock);
}

void local_peer_get(nng_msg *msg, local_peer *out)
{
	nng_pipe p = nng_msg_get_pipe(msg);
	uint64_t v;

	memset(out, 0, sizeof(*out));
	out->uid = out->gid = out->pid = UINT64_MAX;
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &v) == 0) {
		out->uid = v;
	}
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &v) == 0) {
		out->gid = v;
	}
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &v) == 0) {
		out->pid = v;
	}
	out->known = out->uid != UINT64_MAX;
}

/* True if the "Groups:" line of /proc/PID/status lists `gid`. */
static bool proc_groups_have(uint64_t pid, uint64_t gid)
{
	char path[64], line[4096];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%llu/status", (unsigned long long)pid);
	f = fopen(path, "re");
	if (f == NULL) {
		return false;
	}
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *s, *end;

		if (strncmp(line, "Groups:", 7) != 0) {
			continue;
		}
		for (s = line + 7;; s = end) {
			unsigned long long g;

			errno = 0;
			g = strtoull(s, &end, 10);
			if (end == s || errno != 0) {
				break;
			}
			found = found || g == gid;
		}
		break;
	}
	fclose(f);
	return found;
}

bool local_peer_allowed(const local_peer *p, int64_t group)
{
	if (!p->known) {
		return false;
	}
	if (p->uid == 0 || p->uid == (uint64_t)geteuid()) {
		return true;
	}
	if (group < 0) {
		return false;
	}
	/* The group the connection was made with, or a supplementary one
	 * of the process (read while it waits for our reply). */
	return p->gid == (uint64_t)group ||
	       (p->pid != UINT64_MAX && p->pid != 0 && proc_groups_have(p->pid, (uint64_t)group));
}

/* Copies `s` with anything outside printable ASCII replaced by '?'. */
static void printable(char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
			*s = '?';
		}
	}
}

static void peer_exe(uint64_t pid, char *out, size_t size)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%llu/exe", (unsigned long long)pid);
	n = readlink(path, out, size - 1);
	if (n < 0) {
		snprintf(out, size, "?");
		return;
	}
	out[n] = '\0';
	printable(out);
}

/* The cgroup lines of /proc/PID/cgroup, joined by ';' (one line,
 * "0::/path", with cgroup v2). */
static void peer_cgroup(uint64_t pid, char *out, size_t size)
{
	char path[64], line[512];
	size_t used = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%llu/cgroup", (unsigned long long)pid);
	snprintf(out, size, "?");
	f = fopen(path, "re");
	if (f == NULL) {
		return;
	}
	while (fgets(line, sizeof(line), f) != NULL && used + 1 < size) {
		line[strcspn(line, "\n")] = '\0';
		used += (size_t)snprintf(out + used, size - used, "%s%s", used > 0 ? ";" : "",
					 line);
		used = used < size ? used : size - 1;
	}
	fclose(f);
	printable(out);
}

void local_peer_released(nkp_hostd *h, const local_peer *p, const char *vm_uuid,
			 const char *component)
{
	char exe[256] = "?", cg[256] = "?", vm[64], comp[64];

	snprintf(vm, sizeof(vm), "%s", vm_uuid != NULL ? vm_uuid : "?");
	snprintf(comp, sizeof(comp), "%s", component != NULL ? component : "?");
	printable(vm);
	printable(comp);
	if (p == NULL || !p->known) {
		nkp_event(nkpi_hostd_eventlog(h), NKP_EV_KEY_RELEASED, NULL, NULL,
			  "data key released: vm %s component %s to an in-process caller", vm,
			  comp);
		return;
	}
	if (p->pid != UINT64_MAX && p->pid != 0) {
		peer_exe(p->pid, exe, sizeof(exe));
		peer_cgroup(p->pid, cg, sizeof(cg));
	}
	nkp_event(nkpi_hostd_eventlog(h), NKP_EV_KEY_RELEASED, NULL, NULL,
		  "data key released: vm %s component %s to pid %lld uid %lld gid %lld exe %s "
		  "cgroup %s",
		  vm, comp, p->pid == UINT64_MAX ? -1LL : (long long)p->pid,
		  p->uid == UINT64_MAX ? -1LL : (long long)p->uid,
		  p->gid == UINT64_MAX ? -1LL : (long long)p->gid, exe, cg);
}
