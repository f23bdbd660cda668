/* Test helper shared by the channel and session tests: packs a Frame
 * holding one envelope field, with raw bytes appended inside the envelope
 * (to stand for a field a later version might add). */
#ifndef NKP_TEST_FRAMES_H
#define NKP_TEST_FRAMES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <protobuf-c/protobuf-c.h>

/* `tag` is the field's key byte: (field number << 3) | 2. *out is malloc'd. */
static inline void frame_pack_envelope(uint8_t tag, const ProtobufCMessage *env,
				       const uint8_t *extra, size_t extralen, uint8_t **out,
				       size_t *outlen)
{
	size_t envlen = protobuf_c_message_get_packed_size(env) + extralen;
	size_t n = 0;
	uint8_t *buf;

	cr_assert_lt(envlen, 1u << 28);
	buf = malloc(envlen + 5);
	cr_assert_not_null(buf);
	buf[n++] = tag;
	for (size_t v = envlen;; v >>= 7) {
		buf[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		if (v <= 0x7f) {
			break;
		}
	}
	n += protobuf_c_message_pack(env, buf + n);
	if (extralen > 0) {
		memcpy(buf + n, extra, extralen);
		n += extralen;
	}
	*out = buf;
	*outlen = n;
}

#endif
