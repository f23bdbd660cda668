/* The native key source: libsodium-generated keys, held in the model. */
#include "keysource/keysource.h"

static nkp_err native_create(void *ctx, const uint8_t id[static NKP_ID_BYTES], uint32_t version,
			     nkp_key **out)
{
	(void)ctx;
	(void)id;
	(void)version;
	return nkp_key_generate(out);
}

/* The model holds every native key: there is nowhere else to fetch from. */
static nkp_err native_fetch(void *ctx, const uint8_t id[static NKP_ID_BYTES], uint32_t version,
			    nkp_key **out)
{
	(void)ctx;
	(void)id;
	(void)version;
	(void)out;
	return NKP_ERR_KEY_MISSING;
}

static bool native_needs_backup(void *ctx)
{
	(void)ctx;
	return true;
}

nkpd_keysource nkpd_keysource_native(void)
{
	return (nkpd_keysource){
		.ctx = NULL,
		.create_version = native_create,
		.fetch = native_fetch,
		.needs_backup = native_needs_backup,
	};
}
