/* A strict look at protobuf bytes before protobuf-c unpacks them: only
 * the fields the descriptor names, with their own wire types, lengths
 * that fit, nesting no deeper than NKPI_PB_MAX_DEPTH, no groups. One pass,
 * no allocation, so a message of unknown fields costs nothing but the
 * read. Part of the in-tree tier (nkp/private/internal.h includes it). */
#ifndef NKP_PBSTRICT_H
#define NKP_PBSTRICT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include <nkp/common.h>
#include <nkp/err.h>

/* Messages inside messages: ours nest at most four deep. */
#define NKPI_PB_MAX_DEPTH 8u

/* Fields of one message type: ours have at most a few dozen; a
 * descriptor with more is refused (the once-only check keeps one bit
 * per field). */
#define NKPI_PB_MAX_FIELDS 64u

/** NKP_OK if `buf` is a serialised `desc` that names only known fields,
 * each with its declared wire type (packed repeated scalars allowed),
 * recursing into message fields. NKP_ERR_PARSE otherwise (unknown field,
 * wrong wire type, bad varint or length, group, nesting too deep, a field
 * that is not repeated met twice, two members of one oneof, a message
 * type of more than NKPI_PB_MAX_FIELDS fields).
 * Values themselves (a string's UTF-8, an enum's range) are left to
 * protobuf-c and the caller. */
NKP_NODISCARD nkp_err nkpi_pb_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
				     size_t len);

#endif
