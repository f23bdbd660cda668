/* Protobuf wire format checked against a descriptor before anything is
 * allocated (see pbstrict.h). protobuf-c keeps every unknown field it
 * meets as a heap copy, so without this a frame of a few MiB of unknown
 * fields costs hundreds of MiB and seconds of CPU before it is refused.
 *
 * Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32; 3 and 4
 * (groups) are refused. Nesting is followed by recursion bounded by
 * NKPI_PB_MAX_DEPTH, so the stack is bounded too; every byte is read once
 * per level that contains it, and levels are bounded: O(n). A field that
 * is not repeated may appear once, and one member of a oneof only. */
#include "pbstrict.h"

enum { WT_VARINT = 0, WT_64 = 1, WT_LEN = 2, WT_32 = 5 };

typedef struct cursor {
	const uint8_t *p;
	const uint8_t *end;
} cursor;

static bool varint(cursor *c, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (c->p == c->end) {
			return false;
		}
		b = *c->p++;
		/* The tenth byte may only carry the top bit of 64. */
		if (shift == 63 && (b & 0xfe) != 0) {
			return false;
		}
		v |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			*out = v;
			return true;
		}
	}
	return false;
}

static bool skip(cursor *c, uint64_t n)
{
	if (n > (uint64_t)(c->end - c->p)) {
		return false;
	}
	c->p += n;
	return true;
}

static const ProtobufCFieldDescriptor *field(const ProtobufCMessageDescriptor *d, uint64_t number)
{
	/* fields are sorted by number; messages here have a few dozen. */
	size_t lo = 0, hi = d->n_fields;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (d->fields[mid].id == number) {
			return &d->fields[mid];
		}
		if (d->fields[mid].id < number) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	return NULL;
}

/* The wire type a scalar of this protobuf type is written with. */
static int wire_type(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_BOOL:
	case PROTOBUF_C_TYPE_ENUM:
		return WT_VARINT;
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return WT_32;
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return WT_64;
	default:
		return WT_LEN; /* string, bytes, message */
	}
}

/* A packed run of scalars of wire type `wt`, `n` bytes long. */
static bool packed(cursor *c, int wt, uint64_t n)
{
	cursor in = {c->p, c->p};
	uint64_t v;

	if (!skip(c, n)) {
		return false;
	}
	in.end = c->p;
	switch (wt) {
	case WT_VARINT:
		while (in.p < in.end) {
			if (!varint(&in, &v)) {
				return false;
			}
		}
		return true;
	case WT_32:
		return n % 4 == 0;
	case WT_64:
		return n % 8 == 0;
	default:
		return false;
	}
}

static bool message(const ProtobufCMessageDescriptor *d, cursor *c, unsigned depth);

static bool value(const ProtobufCFieldDescriptor *f, int wt, cursor *c, unsigned depth)
{
	int want = wire_type(f->type);
	uint64_t v;

	if (wt == WT_LEN && want != WT_LEN) {
		/* A packed repeated scalar (proto3 packs them by default). */
		return f->label == PROTOBUF_C_LABEL_REPEATED && varint(c, &v) && packed(c, want, v);
	}
	if (wt != want) {
		return false;
	}
	switch (wt) {
	case WT_VARINT:
		return varint(c, &v);
	case WT_32:
		return skip(c, 4);
	case WT_64:
		return skip(c, 8);
	default:
		break;
	}
	if (!varint(c, &v) || v > (uint64_t)(c->end - c->p)) {
		return false;
	}
	if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		cursor in = {c->p, c->p + v};

		c->p += v;
		return message(f->descriptor, &in, depth + 1);
	}
	c->p += v;
	return true;
}

/* Marks field `f` of `d` as met in `seen`; false if a field that may
 * appear once (not repeated) was met before, or another member of its
 * oneof was. Genuine senders never repeat one, and protobuf-c would merge
 * or replace each repetition: half a million empty submessages would
 * cost far more than their bytes. */
static bool once(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
		 uint64_t *seen)
{
	size_t i = (size_t)(f - d->fields);

	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		return true;
	}
	if ((*seen >> i & 1u) != 0) {
		return false;
	}
	*seen |= UINT64_C(1) << i;
	if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
		/* The members of one oneof share its case word. */
		for (size_t j = 0; j < d->n_fields; j++) {
			if ((d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0 &&
			    d->fields[j].quantifier_offset == f->quantifier_offset) {
				*seen |= UINT64_C(1) << j;
			}
		}
	}
	return true;
}

static bool message(const ProtobufCMessageDescriptor *d, cursor *c, unsigned depth)
{
	uint64_t seen = 0; /* bit i: d->fields[i] met (ours have at most a few dozen) */

	if (d == NULL || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
	    depth > NKPI_PB_MAX_DEPTH || d->n_fields > NKPI_PB_MAX_FIELDS) {
		return false;
	}
	while (c->p < c->end) {
		uint64_t key;
		const ProtobufCFieldDescriptor *f;

		if (!varint(c, &key) || key > UINT32_MAX) {
			return false;
		}
		f = field(d, key >> 3);
		if (key >> 3 == 0 || f == NULL || !once(d, f, &seen) ||
		    !value(f, (int)(key & 7), c, depth)) {
			return false;
		}
	}
	return true;
}

nkp_err nkpi_pb_strict(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len)
{
	cursor c;

	if (desc == NULL || (buf == NULL && len != 0)) {
		return NKP_ERR_INVALID;
	}
	if (len == 0) {
		return desc->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ? NKP_OK
									   : NKP_ERR_INVALID;
	}
	c.p = buf;
	c.end = buf + len;
	return message(desc, &c, 1) ? NKP_OK : NKP_ERR_PARSE;
}
