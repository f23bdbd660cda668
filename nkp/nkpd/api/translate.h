/* The admin front end's encoding of the core's results and views into
 * proto/admin.proto Responses. Everything set in a Response is heap memory
 * owned by it and freed by nkpd_api_free() (protobuf-c's free_unpacked
 * with the default allocator); small allocations abort on exhaustion. */
#ifndef NKPD_API_TRANSLATE_H
#define NKPD_API_TRANSLATE_H

#include "admin.pb-c.h"
#include "core/core.h"

typedef Nkp__Admin__Response admin_resp;

/** Sets resp->code and a formatted message. */
void nkpd_api_fail(admin_resp *resp, nkp_err code, const char *fmt, ...) NKP_PRINTF(3, 4);
/** Code, message and payload of `r` (a backup file is moved, not copied). */
void nkpd_api_result(admin_resp *resp, nkpd_result *r);
void nkpd_api_status(admin_resp *resp, const nkpd_status_view *v);
void nkpd_api_hosts(admin_resp *resp, const nkpd_host_list *l);
void nkpd_api_providers(admin_resp *resp, const nkpd_provider_list *l);
void nkpd_api_provider(admin_resp *resp, const nkpd_provider_view *v);
void nkpd_api_rotation(admin_resp *resp, const nkpd_rotation_view *v);
void nkpd_api_baselines(admin_resp *resp, const nkpd_baseline *b, size_t n);
void nkpd_api_free(admin_resp *resp);

#endif
