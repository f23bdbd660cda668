/* The fixed host key files of fuzz-keylog, shared with gen-corpus: a
 * snapshot keys.nkp of epoch FZ_LOG_EPOCH_BYTE x 16 (no provider) and the
 * log records that follow it (hostd-plugin/plugin/persist.c). */
#ifndef NKP_FUZZ_KEYLOG_H
#define NKP_FUZZ_KEYLOG_H

#include "fuzz-util.h"
#include "hoststate.pb-c.h"

#define FZ_LOG_EPOCH_BYTE 0x45u
#define FZ_LOG_EPOCH_BYTES 16u

/* HostKeys at generation `g` with the fixed provider's versions 1..n
 * (n 0..2), packed into buf (1024 bytes; wipe it), and sealed under the
 * fixed seal key with `label` when label is not NULL (free() *out). Returns
 * the packed length. */
static inline size_t fz_host_keys_plain(const char *label, uint64_t g, size_t n, uint8_t *buf,
					uint8_t **out, size_t *len)
{
	Nkp__Hoststate__HostKeys m = NKP__HOSTSTATE__HOST_KEYS__INIT;
	Nkp__Wire__ProviderKeys p = NKP__WIRE__PROVIDER_KEYS__INIT, *pp = &p;
	Nkp__Wire__VersionKey v[2], *vp[2] = {&v[0], &v[1]};
	uint8_t epoch[FZ_LOG_EPOCH_BYTES], id[NKP_ID_BYTES], keys[2][NKP_KEY_BYTES];
	nkp_key *seal = fz_key(FZ_SEAL_BYTE);
	size_t plen;

	memset(epoch, FZ_LOG_EPOCH_BYTE, sizeof(epoch));
	fz_provider_id(id);
	for (uint32_t j = 0; j < 2; j++) {
		memset(keys[j], (int)(FZ_PRIMARY_BYTE + j), NKP_KEY_BYTES);
		nkp__wire__version_key__init(&v[j]);
		v[j].version = j + 1;
		v[j].state = j + 1 == n ? NKP_VERSION_ACTIVE : NKP_VERSION_DECRYPT_ONLY;
		v[j].key.data = keys[j];
		v[j].key.len = NKP_KEY_BYTES;
	}
	p.id.data = id;
	p.id.len = NKP_ID_BYTES;
	p.name = "fuzz";
	p.is_default = true;
	p.backed_up = true;
	p.n_versions = n;
	p.versions = vp;
	m.format_version = 1;
	m.applied_generation = g;
	m.n_providers = n > 0 ? 1 : 0;
	m.providers = &pp;
	m.log_epoch.data = epoch;
	m.log_epoch.len = sizeof(epoch);
	plen = nkp__hoststate__host_keys__pack(&m, buf);
	if (label != NULL) {
		fz_check(nkp_seal_bytes(seal, label, buf, plen, out, len), "seal host keys");
	}
	sodium_memzero(keys, sizeof(keys));
	nkp_key_free(seal);
	return plen;
}

/* The same, sealed only. free() *out. */
static inline void fz_host_keys(const char *label, uint64_t g, size_t n, uint8_t **out, size_t *len)
{
	uint8_t buf[1024];

	(void)fz_host_keys_plain(label, g, n, buf, out, len);
	sodium_memzero(buf, sizeof(buf));
}

/* The label of log record `i` after the fixed snapshot. */
static inline void fz_log_label(char *out, size_t size, uint32_t i)
{
	char hex[FZ_LOG_EPOCH_BYTES * 2 + 1];

	for (size_t k = 0; k < FZ_LOG_EPOCH_BYTES; k++) {
		snprintf(hex + 2 * k, 3, "%02x", FZ_LOG_EPOCH_BYTE);
	}
	snprintf(out, size, "nkp-host-keys-log/%s/%u", hex, (unsigned)i);
}

#endif
