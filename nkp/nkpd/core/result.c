/* Results of operations (see core/ops.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/core.h"

void nkpd_result_init(nkpd_result *r)
{
	memset(r, 0, sizeof(*r));
}

void nkpd_result_fini(nkpd_result *r)
{
	switch (r->payload) {
	case NKPD_PAYLOAD_PROVIDER:
		nkpd_provider_view_free(r->u.provider);
		break;
	case NKPD_PAYLOAD_ROTATION:
		nkpd_rotation_view_free(r->u.rotation);
		break;
	case NKPD_PAYLOAD_USAGE_REFUSAL:
		nkpd_usage_refusal_free(r->u.usage_refusal);
		break;
	case NKPD_PAYLOAD_BACKUP:
		free(r->u.backup.file);
		break;
	default:
		break;
	}
	nkpd_result_init(r);
}

NKP_PRINTF(3, 0)
static void result_vset(nkpd_result *r, nkp_err code, const char *fmt, va_list ap)
{
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	r->code = code;
}

void nkpd_result_fail(nkpd_result *r, nkp_err code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	result_vset(r, code, fmt, ap);
	va_end(ap);
}

void nkpd_result_ok(nkpd_result *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	result_vset(r, NKP_OK, fmt, ap);
	va_end(ap);
}
