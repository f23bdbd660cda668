/* fuzz-keysafe: keysafe files (proto/keysafe.proto): nkp_keysafe_parse(),
 * every metadata accessor, then unwrap of every component and a rewrap
 * with the fixed provider's versions 1 and 2, and a serialize round trip.
 * Seeds are real keysafes under that provider (gen-corpus.c), so
 * mutations of the clear fields reach the authenticity checks. */
#include "fuzz-util.h"

static nkp_primary *v1, *v2;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_init();
	v1 = fz_primary(1);
	v2 = fz_primary(2);
	return 0;
}

static void read_metadata(const nkp_keysafe *ks)
{
	volatile size_t sink = 0;

	sink += nkp_keysafe_provider_id(ks)[0];
	sink += nkp_keysafe_primary_version(ks);
	sink += nkp_keysafe_key_id(ks)[0];
	sink += strlen(nkp_keysafe_vm_uuid(ks)) + strlen(nkp_keysafe_vm_name(ks));
	sink += (size_t)nkp_keysafe_created(ks);
	for (size_t i = 0; i < nkp_keysafe_attribute_count(ks); i++) {
		sink += strlen(nkp_keysafe_attribute_name(ks, i));
		sink += strlen(nkp_keysafe_attribute_value(ks, i));
	}
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t dek[NKP_KEY_BYTES];
	const nkp_primary *own;
	nkp_keysafe *ks = NULL;
	uint8_t *out = NULL;
	size_t outlen = 0;

	if (nkp_keysafe_parse(data, size, &ks) != NKP_OK) {
		return 0;
	}
	read_metadata(ks);
	own = nkp_keysafe_primary_version(ks) == 2 ? v2 : v1;
	for (size_t i = 0; i < nkp_keysafe_component_count(ks); i++) {
		if (nkp_keysafe_unwrap(ks, own, nkp_keysafe_component(ks, i), dek) == NKP_OK) {
			sodium_memzero(dek, sizeof(dek));
		}
	}
	if (nkp_keysafe_serialize(ks, &out, &outlen) == NKP_OK) {
		free(out);
	}
	(void)nkp_keysafe_rewrap(ks, own, own == v1 ? v2 : v1);
	nkp_keysafe_free(ks);
	return 0;
}
