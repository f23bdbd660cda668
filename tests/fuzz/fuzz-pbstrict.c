/* fuzz-pbstrict: nkpi_pb_strict() on any bytes against the descriptors
 * it guards (the wire Frame and Message, the local API and admin
 * requests). It must never read out of bounds, and whatever it accepts
 * protobuf-c must unpack with no unknown field at the top. */
#include "fuzz-util.h"

#include "admin.pb-c.h"
#include "hostapi.pb-c.h"
#include "internal.h"
#include "wire.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const descs[] = {
	&nkp__wire__frame__descriptor,
	&nkp__wire__message__descriptor,
	&nkp__hostapi__request__descriptor,
	&nkp__admin__request__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
		ProtobufCMessage *m;

		if (nkpi_pb_strict(descs[i], data, size) != NKP_OK) {
			continue;
		}
		m = protobuf_c_message_unpack(descs[i], NULL, size, data);
		if (m != NULL) {
			if (m->n_unknown_fields != 0) {
				abort();
			}
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	return 0;
}
