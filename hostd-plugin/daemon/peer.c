/* Who may reach the local API and who got a key from it: the local
 * group's access to DIR and host.sock, and every data key release
 * (key.released) recorded with the peer's pid, uid and gid (as the kernel
 * reports them, nkp/private/rpc.h), executable and cgroup from /proc:
 * who got a key, never the key. */
#include <sys/stat.h>
#include <sys/types.h>

#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* DIR for root (and us) only: 0700 unless it already is stricter. */
static nkp_err root_only(const char *state_dir)
{
	struct stat st;

	if (stat(state_dir, &st) != 0) {
		return NKP_ERR_INVALID;
	}
	if ((st.st_mode & 077) != 0 && chmod(state_dir, 0700) != 0) {
		return NKP_ERR_PERM;
	}
	return NKP_OK;
}

nkp_err local_dir_access(const char *state_dir, int64_t group)
{
	if (group < 0) {
		return root_only(state_dir);
	}
	if (chown(state_dir, (uid_t)-1, (gid_t)group) == 0 && chmod(state_dir, 0710) == 0) {
		return NKP_OK;
	}
	return NKP_ERR_PERM;
}

void local_group_refused(const char *sock, int64_t group, int e)
{
	nkp_log(NKP_LOG_WARN, "NKP-LOCAL-GROUP",
		"cannot give group %lld access to %s (%s; the daemon needs CAP_CHOWN for it, see "
		"INSTALL.md): only root may use it",
		(long long)group, sock, strerror(e));
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

void local_peer_released(nkp_hostd *h, const nkpi_rpc_peer *p, const char *vm_uuid,
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
