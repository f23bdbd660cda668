/* fuzz-admin: nkpd's admin API (proto/admin.proto) through
 * nkpd_admin_handle(), the function the admin socket hands every request
 * to, against a service on a scratch state directory (no reconciler, no
 * admin socket). The service is rebuilt from scratch every RESET_EVERY
 * inputs so the model stays small and runs stay fast.
 *
 * Host addresses are rewritten to 127.0.0.1 before the request is handed
 * over (adding a host dials it in the background): a fuzzer must not dial
 * the world. Everything else is passed as it is. */
#include "fuzz-util.h"

#include "admin.pb-c.h"
#include "api/admin.h"
#include "core/core.h"
#include "sync/sync.h"

#define RESET_EVERY 256u
#define LOCAL_ADDRESS "tcp://127.0.0.1:9"

static char *dir;
static nkpd_svc s;
static bool open_;
static unsigned runs;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void svc_down(void)
{
	if (open_) {
		nkpd_svc_close(&s); /* its snapshots too */
		open_ = false;
	}
	if (dir != NULL) {
		fz_rmrf(dir);
		free(dir);
		dir = NULL;
	}
}

static void svc_up(void)
{
	dir = fz_tmpdir();
	memset(&s, 0, sizeof(s));
	fz_check(nkpd_svc_open(&s, dir, true), "nkpd_svc_open");
	open_ = true;
	s.backup_params = nkp_backup_params_min();
	s.generation = 100;
	fz_check(nkpd_state_save(&s), "state save");
	fz_check(nkpd_sync_follow(&s), "snapshot");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	svc_up();
	atexit(svc_down);
	return 0;
}

static bool address_local(const char *a)
{
	return strncmp(a, "ipc://", 6) == 0 || strncmp(a, "tcp://127.0.0.1:", 16) == 0;
}

/* A writable copy of the request (nkpd_admin_handle wipes it), with any
 * host address made local. */
static uint8_t *request_copy(const uint8_t *data, size_t size, size_t *len)
{
	Nkp__Admin__Request *q = nkp__admin__request__unpack(NULL, size, data);
	uint8_t *out;
	char *old;

	if (q == NULL || q->op_case != NKP__ADMIN__REQUEST__OP_HOST_ADD ||
	    address_local(q->host_add->address)) {
		if (q != NULL) {
			nkp__admin__request__free_unpacked(q, NULL);
		}
		*len = size;
		out = malloc(size + 1);
		if (out != NULL) {
			memcpy(out, data, size);
		}
		return out;
	}
	old = q->host_add->address;
	q->host_add->address = (char *)LOCAL_ADDRESS;
	*len = nkp__admin__request__get_packed_size(q);
	out = malloc(*len + 1);
	if (out != NULL) {
		nkp__admin__request__pack(q, out);
	}
	q->host_add->address = old;
	nkp__admin__request__free_unpacked(q, NULL);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *req, *out = NULL;
	size_t len = 0, outlen = 0;

	if (++runs % RESET_EVERY == 0) {
		svc_down();
		svc_up();
	}
	req = request_copy(data, size, &len);
	if (req == NULL) {
		return 0;
	}
	if (nkpd_admin_handle(&s, req, len, (uint64_t)geteuid(), &out, &outlen) == NKP_OK) {
		free(out);
	}
	free(req);
	return 0;
}
