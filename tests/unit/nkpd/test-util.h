/* Helpers for nkpd's unit tests: a service on a fresh temporary state
 * directory, and admin requests sent through nkpd_admin_handle(). */
#ifndef NKPD_TEST_UTIL_H
#define NKPD_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "admin.pb-c.h"
#include "api/admin.h"
#include "core/core.h"
#include "sync/sync.h"

static inline void tu_mkdtemp(char *dir, size_t size)
{
	snprintf(dir, size, "%s/nkpd-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	cr_assert_not_null(mkdtemp(dir));
}

static inline void tu_rmrf(const char *dir)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* A service on `dir` with an empty saved state (as `nkpd init`). */
static inline void tu_svc_new(nkpd_svc *s, const char *dir)
{
	nkp_log_set_sink(NULL, NULL);
	cr_assert_eq(nkp_init(), NKP_OK);
	cr_assert_eq(nkpd_svc_open(s, dir, true), NKP_OK);
	s->backup_params = nkp_backup_params_min();
	s->epoch = nkpd_util_new_epoch();
	s->generation = 100;
	cr_assert_eq(nkpd_state_save(s), NKP_OK);
	cr_assert_eq(nkpd_sync_follow(s), NKP_OK);
}

static inline void tu_svc_free(nkpd_svc *s)
{
	nkpd_svc_close(s); /* its snapshots too */
}

/* Sends `q` as uid `uid`; returns the unpacked reply (free with
 * nkp__admin__response__free_unpacked(r, NULL)). */
static inline Nkp__Admin__Response *tu_call_as(nkpd_svc *s, Nkp__Admin__Request *q, uint64_t uid)
{
	size_t len, outlen = 0;
	uint8_t *buf, *out = NULL;
	Nkp__Admin__Response *r;

	if (q->api_version == 0) {
		q->api_version = 1;
	}
	len = nkp__admin__request__get_packed_size(q);
	buf = malloc(len + 1);
	cr_assert_not_null(buf);
	nkp__admin__request__pack(q, buf);
	cr_assert_eq(nkpd_admin_handle(s, buf, len, uid, &out, &outlen), NKP_OK);
	free(buf);
	r = nkp__admin__response__unpack(NULL, outlen, out);
	free(out);
	cr_assert_not_null(r);
	return r;
}

static inline Nkp__Admin__Response *tu_call(nkpd_svc *s, Nkp__Admin__Request *q)
{
	return tu_call_as(s, q, (uint64_t)geteuid());
}

static inline uint32_t tu_create(nkpd_svc *s, const char *name, bool def)
{
	Nkp__Admin__Request q = NKP__ADMIN__REQUEST__INIT;
	Nkp__Admin__ProviderCreateRequest c = NKP__ADMIN__PROVIDER_CREATE_REQUEST__INIT;
	Nkp__Admin__Response *r;
	uint32_t code;

	c.name = (char *)name;
	c.make_default = def;
	q.op_case = NKP__ADMIN__REQUEST__OP_PROVIDER_CREATE;
	q.provider_create = &c;
	r = tu_call(s, &q);
	code = r->code;
	nkp__admin__response__free_unpacked(r, NULL);
	return code;
}

#endif
