/* Keysafe: a VM's KEK and component DEKs, wrapped (proto/keysafe.proto).
 *
 * Associated data, byte for byte:
 *
 *   KEK seal, under nkp_primary_kek_key() of the primary named by the
 *   body's provider_id and primary_version:
 *     "nkp-keysafe" (11 bytes, no NUL) || u32le(format_version) || body
 *   where body is the serialized KeysafeBody exactly as stored in the file
 *   (kept as parsed, never re-encoded before checking). Every clear field,
 *   the wrapped DEKs included, is therefore bound to the KEK.
 *
 *   DEK seal, under the KEK:
 *     "nkp-keysafe-dek" (15 bytes, no NUL) || u32le(format_version) ||
 *     provider_id (16) || key_id (16) || u8(strlen(component)) || component
 *   so a wrapped DEK opens only in its own keysafe and component slot, even
 *   for a holder of the KEK.
 *
 * The in-memory object holds no clear key. Every operation that needs one
 * opens the KEK into locked memory for the duration of the call, and an
 * operation that changes the keysafe works on a copy that replaces the
 * original only once it is completely resealed, so a failure leaves `ks`
 * as it was. A changed body always gets a freshly sealed KEK (new nonce). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include <nkp/nkp.h>

#include "internal.h"
#include "keysafe.pb-c.h"

#define WRAPPED_BYTES (NKP_KEY_BYTES + NKP_TAG_BYTES)
#define KEK_AD_LABEL "nkp-keysafe"
#define DEK_AD_LABEL "nkp-keysafe-dek"
#define DEK_AD_MAX (sizeof(DEK_AD_LABEL) - 1 + 4 + 2 * NKP_ID_BYTES + 1 + NKP_KEYSAFE_MAX_COMPONENT)
#define DISK_PREFIX "disk:"
#define DISK_ID_MAX 48u

typedef struct ks_attr {
	char name[NKP_KEYSAFE_MAX_NAME + 1];
	char value[NKP_KEYSAFE_MAX_NAME + 1];
} ks_attr;

typedef struct ks_comp {
	char name[NKP_KEYSAFE_MAX_COMPONENT + 1];
	uint8_t nonce[NKP_NONCE_BYTES];
	uint8_t wrapped[WRAPPED_BYTES];
} ks_comp;

struct nkp_keysafe {
	/* Decoded view of `body`, for metadata and for re-encoding. */
	uint8_t provider_id[NKP_ID_BYTES];
	uint32_t primary_version;
	uint8_t key_id[NKP_ID_BYTES];
	char vm_uuid[NKP_KEYSAFE_MAX_UUID + 1];
	char vm_name[NKP_KEYSAFE_MAX_NAME + 1];
	uint64_t created;
	size_t n_attrs;
	ks_attr attrs[NKP_KEYSAFE_MAX_ATTRIBUTES];
	size_t n_comps;
	ks_comp comps[NKP_KEYSAFE_MAX_COMPONENTS];
	/* The authenticated form: the body bytes as stored, and the sealed KEK. */
	uint8_t *body;
	size_t body_len;
	uint8_t kek_nonce[NKP_NONCE_BYTES];
	uint8_t wrapped_kek[WRAPPED_BYTES];
};

/* ---- names and text ---------------------------------------------------- */

bool nkp_component_valid(const char *name)
{
	size_t len;

	if (name == NULL) {
		return false;
	}
	if (strcmp(name, NKP_COMPONENT_VM_HOME) == 0 || strcmp(name, NKP_COMPONENT_VTPM) == 0) {
		return true;
	}
	if (strncmp(name, DISK_PREFIX, strlen(DISK_PREFIX)) != 0) {
		return false;
	}
	name += strlen(DISK_PREFIX);
	len = strnlen(name, DISK_ID_MAX + 1);
	if (len == 0 || len > DISK_ID_MAX) {
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';

		if (!ok) {
			return false;
		}
	}
	return true;
}

/* Checks a clear text field: at most `max` bytes, no control characters
 * (they would forge lines in logs and listings). NKP_ERR_PARSE for an empty
 * string when !allow_empty or for a control character. */
static nkp_err text_check(const char *s, size_t max, bool allow_empty)
{
	size_t len = strnlen(s, max + 1);

	if (len > max) {
		return NKP_ERR_TOO_LARGE;
	}
	if (len == 0 && !allow_empty) {
		return NKP_ERR_PARSE;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f) {
			return NKP_ERR_PARSE;
		}
	}
	return NKP_OK;
}

/* Copies a checked string; `dst` has room for max + 1 bytes. */
static void text_copy(char *dst, const char *src)
{
	size_t len = strlen(src);

	memcpy(dst, src, len + 1);
}

static const ks_comp *find_component(const nkp_keysafe *ks, const char *name)
{
	for (size_t i = 0; i < ks->n_comps; i++) {
		if (strcmp(ks->comps[i].name, name) == 0) {
			return &ks->comps[i];
		}
	}
	return NULL;
}

/* ---- object ------------------------------------------------------------ */

static nkp_err ks_alloc(nkp_keysafe **out)
{
	nkp_keysafe *ks = calloc(1, sizeof(*ks));

	if (ks == NULL) {
		return NKP_ERR_NOMEM;
	}
	*out = ks;
	return NKP_OK;
}

void nkp_keysafe_free(nkp_keysafe *ks)
{
	if (ks == NULL) {
		return;
	}
	free(ks->body);
	sodium_memzero(ks, sizeof(*ks));
	free(ks);
}

static nkp_err ks_clone(const nkp_keysafe *ks, nkp_keysafe **out)
{
	nkp_keysafe *n;
	nkp_err err = ks_alloc(&n);

	if (err != NKP_OK) {
		return err;
	}
	memcpy(n, ks, sizeof(*n));
	n->body = malloc(ks->body_len > 0 ? ks->body_len : 1);
	if (n->body == NULL) {
		free(n);
		return NKP_ERR_NOMEM;
	}
	memcpy(n->body, ks->body, ks->body_len);
	*out = n;
	return NKP_OK;
}

/* Moves `next` into `ks` and frees the shell of `next`. */
static void ks_adopt(nkp_keysafe *ks, nkp_keysafe *next)
{
	free(ks->body);
	memcpy(ks, next, sizeof(*ks));
	sodium_memzero(next, sizeof(*next));
	free(next);
}

/* ---- body encoding ----------------------------------------------------- */

static nkp_err body_encode(const nkp_keysafe *ks, uint8_t **out, size_t *outlen)
{
	Nkp__Keysafe__KeysafeBody body = NKP__KEYSAFE__KEYSAFE_BODY__INIT;
	Nkp__Keysafe__Attribute attrs[NKP_KEYSAFE_MAX_ATTRIBUTES];
	Nkp__Keysafe__Attribute *attr_ptrs[NKP_KEYSAFE_MAX_ATTRIBUTES];
	Nkp__Keysafe__WrappedDek comps[NKP_KEYSAFE_MAX_COMPONENTS];
	Nkp__Keysafe__WrappedDek *comp_ptrs[NKP_KEYSAFE_MAX_COMPONENTS];
	uint8_t *buf;
	size_t len;

	body.provider_id = (ProtobufCBinaryData){NKP_ID_BYTES, (uint8_t *)ks->provider_id};
	body.primary_version = ks->primary_version;
	body.key_id = (ProtobufCBinaryData){NKP_ID_BYTES, (uint8_t *)ks->key_id};
	body.vm_uuid = (char *)ks->vm_uuid;
	body.vm_name = (char *)ks->vm_name;
	body.created_unix = ks->created;
	for (size_t i = 0; i < ks->n_attrs; i++) {
		nkp__keysafe__attribute__init(&attrs[i]);
		attrs[i].name = (char *)ks->attrs[i].name;
		attrs[i].value = (char *)ks->attrs[i].value;
		attr_ptrs[i] = &attrs[i];
	}
	body.n_attributes = ks->n_attrs;
	body.attributes = attr_ptrs;
	for (size_t i = 0; i < ks->n_comps; i++) {
		nkp__keysafe__wrapped_dek__init(&comps[i]);
		comps[i].component = (char *)ks->comps[i].name;
		comps[i].nonce =
			(ProtobufCBinaryData){NKP_NONCE_BYTES, (uint8_t *)ks->comps[i].nonce};
		comps[i].wrapped =
			(ProtobufCBinaryData){WRAPPED_BYTES, (uint8_t *)ks->comps[i].wrapped};
		comp_ptrs[i] = &comps[i];
	}
	body.n_components = ks->n_comps;
	body.components = comp_ptrs;

	len = nkp__keysafe__keysafe_body__get_packed_size(&body);
	buf = malloc(len > 0 ? len : 1);
	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__keysafe__keysafe_body__pack(&body, buf);
	*out = buf;
	*outlen = len;
	return NKP_OK;
}

/* ---- body decoding (untrusted bytes) ----------------------------------- */

static nkp_err decode_identity(nkp_keysafe *ks, const Nkp__Keysafe__KeysafeBody *b)
{
	nkp_err err;

	if (b->provider_id.len != NKP_ID_BYTES || b->key_id.len != NKP_ID_BYTES ||
	    b->primary_version == 0) {
		return NKP_ERR_PARSE;
	}
	err = text_check(b->vm_uuid, NKP_KEYSAFE_MAX_UUID, false);
	if (err == NKP_OK) {
		err = text_check(b->vm_name, NKP_KEYSAFE_MAX_NAME, true);
	}
	if (err != NKP_OK) {
		return err;
	}
	memcpy(ks->provider_id, b->provider_id.data, NKP_ID_BYTES);
	ks->primary_version = b->primary_version;
	memcpy(ks->key_id, b->key_id.data, NKP_ID_BYTES);
	text_copy(ks->vm_uuid, b->vm_uuid);
	text_copy(ks->vm_name, b->vm_name);
	ks->created = b->created_unix;
	return NKP_OK;
}

static nkp_err decode_attributes(nkp_keysafe *ks, const Nkp__Keysafe__KeysafeBody *b)
{
	nkp_err err;

	if (b->n_attributes > NKP_KEYSAFE_MAX_ATTRIBUTES) {
		return NKP_ERR_TOO_LARGE;
	}
	for (size_t i = 0; i < b->n_attributes; i++) {
		const Nkp__Keysafe__Attribute *a = b->attributes[i];

		if (nkpi_has_unknown(&a->base)) {
			return NKP_ERR_PARSE;
		}
		err = text_check(a->name, NKP_KEYSAFE_MAX_NAME, false);
		if (err == NKP_OK) {
			err = text_check(a->value, NKP_KEYSAFE_MAX_NAME, true);
		}
		if (err != NKP_OK) {
			return err;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(ks->attrs[j].name, a->name) == 0) {
				return NKP_ERR_PARSE;
			}
		}
		text_copy(ks->attrs[i].name, a->name);
		text_copy(ks->attrs[i].value, a->value);
		ks->n_attrs = i + 1;
	}
	return NKP_OK;
}

static nkp_err decode_components(nkp_keysafe *ks, const Nkp__Keysafe__KeysafeBody *b)
{
	if (b->n_components > NKP_KEYSAFE_MAX_COMPONENTS) {
		return NKP_ERR_TOO_LARGE;
	}
	for (size_t i = 0; i < b->n_components; i++) {
		const Nkp__Keysafe__WrappedDek *c = b->components[i];

		if (nkpi_has_unknown(&c->base)) {
			return NKP_ERR_PARSE;
		}
		if (strnlen(c->component, NKP_KEYSAFE_MAX_COMPONENT + 1) >
		    NKP_KEYSAFE_MAX_COMPONENT) {
			return NKP_ERR_TOO_LARGE;
		}
		if (!nkp_component_valid(c->component) || c->nonce.len != NKP_NONCE_BYTES ||
		    c->wrapped.len != WRAPPED_BYTES || find_component(ks, c->component) != NULL) {
			return NKP_ERR_PARSE;
		}
		text_copy(ks->comps[i].name, c->component);
		memcpy(ks->comps[i].nonce, c->nonce.data, NKP_NONCE_BYTES);
		memcpy(ks->comps[i].wrapped, c->wrapped.data, WRAPPED_BYTES);
		ks->n_comps = i + 1;
	}
	return NKP_OK;
}

static nkp_err body_decode(nkp_keysafe *ks, const uint8_t *buf, size_t len)
{
	Nkp__Keysafe__KeysafeBody *b;
	nkp_err err;

	b = nkp__keysafe__keysafe_body__unpack(&nkpi_wiping_allocator, len, buf);
	if (b == NULL) {
		return NKP_ERR_PARSE;
	}
	err = nkpi_has_unknown(&b->base) ? NKP_ERR_PARSE : NKP_OK;
	if (err == NKP_OK) {
		err = decode_identity(ks, b);
	}
	if (err == NKP_OK) {
		err = decode_attributes(ks, b);
	}
	if (err == NKP_OK) {
		err = decode_components(ks, b);
	}
	nkp__keysafe__keysafe_body__free_unpacked(b, &nkpi_wiping_allocator);
	return err;
}

/* ---- sealing ----------------------------------------------------------- */

static nkp_err kek_ad(const uint8_t *body, size_t body_len, uint8_t **out, size_t *outlen)
{
	size_t label = sizeof(KEK_AD_LABEL) - 1;
	size_t len = label + 4 + body_len;
	uint8_t *ad = malloc(len);

	if (ad == NULL) {
		return NKP_ERR_NOMEM;
	}
	memcpy(ad, KEK_AD_LABEL, label);
	nkpi_store32_le(ad + label, NKP_KEYSAFE_FORMAT_VERSION);
	memcpy(ad + label + 4, body, body_len);
	*out = ad;
	*outlen = len;
	return NKP_OK;
}

static size_t dek_ad(const nkp_keysafe *ks, const char *name, uint8_t ad[static DEK_AD_MAX])
{
	size_t label = sizeof(DEK_AD_LABEL) - 1;
	size_t name_len = strlen(name);
	uint8_t *p = ad;

	memcpy(p, DEK_AD_LABEL, label);
	p += label;
	nkpi_store32_le(p, NKP_KEYSAFE_FORMAT_VERSION);
	p += 4;
	memcpy(p, ks->provider_id, NKP_ID_BYTES);
	p += NKP_ID_BYTES;
	memcpy(p, ks->key_id, NKP_ID_BYTES);
	p += NKP_ID_BYTES;
	*p++ = (uint8_t)name_len;
	memcpy(p, name, name_len);
	p += name_len;
	return (size_t)(p - ad);
}

static nkp_err primary_matches(const nkp_keysafe *ks, const nkp_primary *p)
{
	if (memcmp(nkp_primary_provider_id(p), ks->provider_id, NKP_ID_BYTES) != 0 ||
	    nkp_primary_version(p) != ks->primary_version) {
		return NKP_ERR_KEY_MISSING;
	}
	return NKP_OK;
}

static void log_tampered(const nkp_keysafe *ks)
{
	char id[33];

	nkp_id_to_hex(ks->key_id, id);
	nkp_log(NKP_LOG_WARN, "NKP-KEYSAFE-TAMPERED",
		"keysafe %s (VM %s): key does not open under primary version %u: "
		"the file was changed or the primary key is wrong; restore the keysafe from a "
		"backup",
		id, ks->vm_uuid, (unsigned)ks->primary_version);
}

/* Opens the KEK into a borrowed locked block (release with
 * nkpi_key_release); this is the authenticity check of the
 * whole keysafe. Errors: NKP_ERR_KEY_MISSING, NKP_ERR_AUTH, NKP_ERR_NOMEM. */
static nkp_err kek_open(const nkp_keysafe *ks, const nkp_primary *p, nkp_key **out)
{
	uint8_t *ad = NULL;
	size_t adlen = 0;
	nkp_key *kek = NULL;
	nkp_err err = primary_matches(ks, p);

	if (err != NKP_OK) {
		return err;
	}
	err = kek_ad(ks->body, ks->body_len, &ad, &adlen);
	if (err != NKP_OK) {
		return err;
	}
	err = nkpi_key_borrow(&kek);
	if (err != NKP_OK) {
		goto free_ad;
	}
	err = nkp_wrap_open(nkp_primary_kek_key(p), ad, adlen, ks->kek_nonce, ks->wrapped_kek,
			    WRAPPED_BYTES, nkpi_key_bytes_mut(kek));
	if (err == NKP_OK) {
		*out = kek;
		kek = NULL;
	} else if (err == NKP_ERR_AUTH) {
		log_tampered(ks);
	}
	nkpi_key_release(kek);
free_ad:
	free(ad);
	return err;
}

/* A new random KEK in a borrowed block (release with nkpi_key_release). */
static nkp_err kek_new(nkp_key **out)
{
	nkp_key *kek = NULL;
	nkp_err err = nkpi_key_borrow(&kek);

	if (err == NKP_OK) {
		randombytes_buf(nkpi_key_bytes_mut(kek), NKP_KEY_BYTES);
		*out = kek;
	}
	return err;
}

/* Re-encodes the body of `ks` and seals `kek` under `p` over it. `ks`
 * already carries p's provider id and version. On failure `ks` keeps its
 * previous body and sealed KEK. */
static nkp_err ks_seal(nkp_keysafe *ks, const nkp_primary *p, const nkp_key *kek)
{
	uint8_t nonce[NKP_NONCE_BYTES];
	uint8_t wrapped[WRAPPED_BYTES];
	uint8_t *body = NULL;
	uint8_t *ad = NULL;
	size_t body_len = 0;
	size_t adlen = 0;
	nkp_err err = body_encode(ks, &body, &body_len);

	if (err != NKP_OK) {
		goto out;
	}
	err = kek_ad(body, body_len, &ad, &adlen);
	if (err != NKP_OK) {
		goto free_body;
	}
	err = nkp_wrap_seal(nkp_primary_kek_key(p), ad, adlen, nkpi_key_bytes(kek), NKP_KEY_BYTES,
			    nonce, wrapped);
	free(ad);
	if (err != NKP_OK) {
		goto free_body;
	}
	free(ks->body);
	ks->body = body;
	ks->body_len = body_len;
	memcpy(ks->kek_nonce, nonce, sizeof(nonce));
	memcpy(ks->wrapped_kek, wrapped, sizeof(wrapped));
	return NKP_OK;

free_body:
	free(body);
out:
	return err;
}

static nkp_err dek_seal(const nkp_keysafe *ks, const nkp_key *kek, ks_comp *c,
			const uint8_t dek[static NKP_KEY_BYTES])
{
	uint8_t ad[DEK_AD_MAX];
	size_t adlen = dek_ad(ks, c->name, ad);

	return nkp_wrap_seal(kek, ad, adlen, dek, NKP_KEY_BYTES, c->nonce, c->wrapped);
}

/* Gives `c` (its name already set) a new random DEK sealed under `kek`. */
static nkp_err dek_new(const nkp_keysafe *ks, const nkp_key *kek, ks_comp *c)
{
	uint8_t dek[NKP_KEY_BYTES];
	nkp_err err;

	randombytes_buf(dek, sizeof(dek));
	err = dek_seal(ks, kek, c, dek);
	sodium_memzero(dek, sizeof(dek));
	return err;
}

/* Opens one DEK into `dek`; on failure `dek` is wiped. */
static nkp_err dek_open(const nkp_keysafe *ks, const nkp_key *kek, const ks_comp *c,
			uint8_t dek[static NKP_KEY_BYTES])
{
	uint8_t ad[DEK_AD_MAX];
	size_t adlen = dek_ad(ks, c->name, ad);

	return nkp_wrap_open(kek, ad, adlen, c->nonce, c->wrapped, WRAPPED_BYTES, dek);
}

/* ---- create ------------------------------------------------------------ */

static nkp_err add_attribute(nkp_keysafe *ks, const char *name, const char *value)
{
	if (value == NULL || text_check(value, NKP_KEYSAFE_MAX_NAME, false) != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	text_copy(ks->attrs[ks->n_attrs].name, name);
	text_copy(ks->attrs[ks->n_attrs].value, value);
	ks->n_attrs++;
	return NKP_OK;
}

static nkp_err set_identity(nkp_keysafe *ks, const nkp_vm_identity *id)
{
	const char *vendor = id->vendor != NULL ? id->vendor : "nkp";
	const char *product = id->product != NULL ? id->product : "nkp";
	const char *version = id->product_version != NULL ? id->product_version : nkp_version();
	nkp_err err;

	if (id->vm_uuid == NULL || id->vm_name == NULL ||
	    text_check(id->vm_uuid, NKP_KEYSAFE_MAX_UUID, false) != NKP_OK ||
	    text_check(id->vm_name, NKP_KEYSAFE_MAX_NAME, false) != NKP_OK) {
		return NKP_ERR_INVALID;
	}
	text_copy(ks->vm_uuid, id->vm_uuid);
	text_copy(ks->vm_name, id->vm_name);
	err = add_attribute(ks, "x-Vendor", vendor);
	if (err == NKP_OK) {
		err = add_attribute(ks, "x-Product", product);
	}
	if (err == NKP_OK) {
		err = add_attribute(ks, "x-Product_Version", version);
	}
	if (err == NKP_OK) {
		err = add_attribute(ks, "x-Component", "Virtual Machine");
	}
	if (err == NKP_OK) {
		err = add_attribute(ks, "x-Name", id->vm_name);
	}
	if (err == NKP_OK) {
		err = add_attribute(ks, "x-Identifier", id->vm_uuid);
	}
	return err;
}

nkp_err nkp_keysafe_create(const nkp_primary *primary, const nkp_vm_identity *id, nkp_keysafe **out)
{
	nkp_keysafe *ks = NULL;
	nkp_key *kek = NULL;
	nkp_err err;

	if (primary == NULL || id == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = ks_alloc(&ks);
	if (err != NKP_OK) {
		return err;
	}
	err = set_identity(ks, id);
	if (err != NKP_OK) {
		goto free_ks;
	}
	memcpy(ks->provider_id, nkp_primary_provider_id(primary), NKP_ID_BYTES);
	ks->primary_version = nkp_primary_version(primary);
	randombytes_buf(ks->key_id, NKP_ID_BYTES);
	ks->created = nkpi_now();
	err = kek_new(&kek);
	if (err != NKP_OK) {
		goto free_ks;
	}
	text_copy(ks->comps[0].name, NKP_COMPONENT_VM_HOME);
	ks->n_comps = 1;
	err = dek_new(ks, kek, &ks->comps[0]);
	if (err == NKP_OK) {
		err = ks_seal(ks, primary, kek);
	}
	nkpi_key_release(kek);
	if (err != NKP_OK) {
		goto free_ks;
	}
	*out = ks;
	return NKP_OK;

free_ks:
	nkp_keysafe_free(ks);
	return err;
}

/* ---- operations -------------------------------------------------------- */

nkp_err nkp_keysafe_add_component(nkp_keysafe *ks, const nkp_primary *primary,
				  const char *component)
{
	nkp_keysafe *next = NULL;
	nkp_key *kek = NULL;
	nkp_err err;

	if (ks == NULL || primary == NULL || !nkp_component_valid(component)) {
		return NKP_ERR_INVALID;
	}
	err = kek_open(ks, primary, &kek);
	if (err != NKP_OK) {
		return err;
	}
	if (find_component(ks, component) != NULL) {
		err = NKP_ERR_EXISTS;
		goto free_kek;
	}
	if (ks->n_comps >= NKP_KEYSAFE_MAX_COMPONENTS) {
		err = NKP_ERR_TOO_LARGE;
		goto free_kek;
	}
	err = ks_clone(ks, &next);
	if (err != NKP_OK) {
		goto free_kek;
	}
	text_copy(next->comps[next->n_comps].name, component);
	err = dek_new(next, kek, &next->comps[next->n_comps]);
	next->n_comps++;
	if (err == NKP_OK) {
		err = ks_seal(next, primary, kek);
	}
	if (err != NKP_OK) {
		nkp_keysafe_free(next);
		goto free_kek;
	}
	ks_adopt(ks, next);

free_kek:
	nkpi_key_release(kek);
	return err;
}

nkp_err nkp_keysafe_unwrap(const nkp_keysafe *ks, const nkp_primary *primary, const char *component,
			   uint8_t dek[static NKP_KEY_BYTES])
{
	uint8_t clear[NKP_KEY_BYTES];
	const ks_comp *c;
	nkp_key *kek = NULL;
	nkp_err err;

	if (ks == NULL || primary == NULL || component == NULL || dek == NULL) {
		return NKP_ERR_INVALID;
	}
	err = kek_open(ks, primary, &kek);
	if (err != NKP_OK) {
		return err;
	}
	c = find_component(ks, component);
	if (c == NULL) {
		err = NKP_ERR_NOT_FOUND;
		goto free_kek;
	}
	err = dek_open(ks, kek, c, clear);
	if (err == NKP_OK) {
		memcpy(dek, clear, NKP_KEY_BYTES);
	}
	sodium_memzero(clear, sizeof(clear));

free_kek:
	nkpi_key_release(kek);
	return err;
}

nkp_err nkp_keysafe_rewrap(nkp_keysafe *ks, const nkp_primary *from, const nkp_primary *to)
{
	nkp_keysafe *next = NULL;
	nkp_key *kek = NULL;
	nkp_err err;

	if (ks == NULL || from == NULL || to == NULL) {
		return NKP_ERR_INVALID;
	}
	err = primary_matches(ks, from);
	if (err != NKP_OK) {
		return err;
	}
	if (memcmp(nkp_primary_provider_id(to), ks->provider_id, NKP_ID_BYTES) != 0) {
		return NKP_ERR_INVALID;
	}
	err = kek_open(ks, from, &kek);
	if (err != NKP_OK) {
		return err;
	}
	err = ks_clone(ks, &next);
	if (err != NKP_OK) {
		goto free_kek;
	}
	next->primary_version = nkp_primary_version(to);
	err = ks_seal(next, to, kek);
	if (err != NKP_OK) {
		nkp_keysafe_free(next);
		goto free_kek;
	}
	ks_adopt(ks, next);

free_kek:
	nkpi_key_release(kek);
	return err;
}

/* Reseals every DEK of `src` (under `old_kek`) into `dst` under `new_kek`;
 * `dst` has the same components and its own key id. */
static nkp_err reseal_deks(const nkp_keysafe *src, const nkp_key *old_kek, nkp_keysafe *dst,
			   const nkp_key *new_kek)
{
	uint8_t dek[NKP_KEY_BYTES];
	nkp_err err = NKP_OK;

	for (size_t i = 0; i < src->n_comps && err == NKP_OK; i++) {
		err = dek_open(src, old_kek, &src->comps[i], dek);
		if (err == NKP_OK) {
			err = dek_seal(dst, new_kek, &dst->comps[i], dek);
		}
	}
	sodium_memzero(dek, sizeof(dek));
	return err;
}

nkp_err nkp_keysafe_rekey_shallow(nkp_keysafe *ks, const nkp_primary *primary)
{
	nkp_keysafe *next = NULL;
	nkp_key *kek = NULL;
	nkp_key *new_kek = NULL;
	nkp_err err;

	if (ks == NULL || primary == NULL) {
		return NKP_ERR_INVALID;
	}
	err = kek_open(ks, primary, &kek);
	if (err != NKP_OK) {
		return err;
	}
	err = kek_new(&new_kek);
	if (err != NKP_OK) {
		goto free_kek;
	}
	err = ks_clone(ks, &next);
	if (err != NKP_OK) {
		goto free_new_kek;
	}
	err = reseal_deks(ks, kek, next, new_kek);
	if (err == NKP_OK) {
		err = ks_seal(next, primary, new_kek);
	}
	if (err != NKP_OK) {
		nkp_keysafe_free(next);
		goto free_new_kek;
	}
	ks_adopt(ks, next);

free_new_kek:
	nkpi_key_release(new_kek);
free_kek:
	nkpi_key_release(kek);
	return err;
}

/* `to` may name any provider: a deep rekey makes an unrelated new VM key
 * that keeps only the identity, attributes and component names. */
nkp_err nkp_keysafe_rekey_deep(const nkp_keysafe *ks, const nkp_primary *from,
			       const nkp_primary *to, nkp_keysafe **out)
{
	nkp_keysafe *next = NULL;
	nkp_key *kek = NULL;
	nkp_err err;

	if (ks == NULL || from == NULL || to == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	/* Opening the KEK authenticates the identity and components copied. */
	err = kek_open(ks, from, &kek);
	nkpi_key_release(kek);
	kek = NULL;
	if (err != NKP_OK) {
		return err;
	}
	err = ks_clone(ks, &next);
	if (err != NKP_OK) {
		return err;
	}
	memcpy(next->provider_id, nkp_primary_provider_id(to), NKP_ID_BYTES);
	next->primary_version = nkp_primary_version(to);
	randombytes_buf(next->key_id, NKP_ID_BYTES);
	next->created = nkpi_now();
	err = kek_new(&kek);
	for (size_t i = 0; i < next->n_comps && err == NKP_OK; i++) {
		err = dek_new(next, kek, &next->comps[i]);
	}
	if (err == NKP_OK) {
		err = ks_seal(next, to, kek);
	}
	nkpi_key_release(kek);
	if (err != NKP_OK) {
		nkp_keysafe_free(next);
		return err;
	}
	*out = next;
	return NKP_OK;
}

nkp_err nkp_keysafe_remove_component(nkp_keysafe *ks, const nkp_primary *primary,
				     const char *component)
{
	nkp_keysafe *next = NULL;
	nkp_key *kek = NULL;
	const ks_comp *c;
	size_t i;
	nkp_err err;

	if (ks == NULL || primary == NULL || component == NULL) {
		return NKP_ERR_INVALID;
	}
	err = kek_open(ks, primary, &kek);
	if (err != NKP_OK) {
		return err;
	}
	c = find_component(ks, component);
	if (c == NULL) {
		err = NKP_ERR_NOT_FOUND;
		goto free_kek;
	}
	if (strcmp(c->name, NKP_COMPONENT_VM_HOME) == 0 && ks->n_comps > 1) {
		err = NKP_ERR_STATE;
		goto free_kek;
	}
	err = ks_clone(ks, &next);
	if (err != NKP_OK) {
		goto free_kek;
	}
	i = (size_t)(c - ks->comps);
	memmove(&next->comps[i], &next->comps[i + 1], (next->n_comps - i - 1) * sizeof(ks_comp));
	next->n_comps--;
	sodium_memzero(&next->comps[next->n_comps], sizeof(ks_comp));
	err = ks_seal(next, primary, kek);
	if (err != NKP_OK) {
		nkp_keysafe_free(next);
		goto free_kek;
	}
	ks_adopt(ks, next);

free_kek:
	nkpi_key_release(kek);
	return err;
}

/* ---- file form --------------------------------------------------------- */

static nkp_err file_check(const Nkp__Keysafe__KeysafeFile *f)
{
	if (f->format_version == 0) {
		return NKP_ERR_PARSE;
	}
	if (f->format_version != NKP_KEYSAFE_FORMAT_VERSION) {
		return NKP_ERR_FORMAT_VERSION;
	}
	if (nkpi_has_unknown(&f->base) || f->body.len == 0 || f->kek_nonce.len != NKP_NONCE_BYTES ||
	    f->wrapped_kek.len != WRAPPED_BYTES) {
		return NKP_ERR_PARSE;
	}
	return NKP_OK;
}

nkp_err nkp_keysafe_parse(const uint8_t *buf, size_t len, nkp_keysafe **out)
{
	static const uint8_t empty[1];
	Nkp__Keysafe__KeysafeFile *f;
	nkp_keysafe *ks = NULL;
	nkp_err err;

	if ((buf == NULL && len > 0) || out == NULL) {
		return NKP_ERR_INVALID;
	}
	if (len > NKP_KEYSAFE_MAX_FILE) {
		return NKP_ERR_TOO_LARGE;
	}
	f = nkp__keysafe__keysafe_file__unpack(&nkpi_wiping_allocator, len,
					       buf != NULL ? buf : empty);
	if (f == NULL) {
		return NKP_ERR_PARSE;
	}
	err = file_check(f);
	if (err == NKP_OK) {
		err = ks_alloc(&ks);
	}
	if (err == NKP_OK) {
		err = body_decode(ks, f->body.data, f->body.len);
	}
	if (err == NKP_OK) {
		ks->body = malloc(f->body.len);
		err = ks->body == NULL ? NKP_ERR_NOMEM : NKP_OK;
	}
	if (err == NKP_OK) {
		memcpy(ks->body, f->body.data, f->body.len);
		ks->body_len = f->body.len;
		memcpy(ks->kek_nonce, f->kek_nonce.data, NKP_NONCE_BYTES);
		memcpy(ks->wrapped_kek, f->wrapped_kek.data, WRAPPED_BYTES);
		*out = ks;
		ks = NULL;
	}
	nkp_keysafe_free(ks);
	nkp__keysafe__keysafe_file__free_unpacked(f, &nkpi_wiping_allocator);
	return err;
}

nkp_err nkp_keysafe_serialize(const nkp_keysafe *ks, uint8_t **out, size_t *outlen)
{
	Nkp__Keysafe__KeysafeFile f = NKP__KEYSAFE__KEYSAFE_FILE__INIT;
	uint8_t *buf;
	size_t len;

	if (ks == NULL || out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	f.format_version = NKP_KEYSAFE_FORMAT_VERSION;
	f.body = (ProtobufCBinaryData){ks->body_len, ks->body};
	f.kek_nonce = (ProtobufCBinaryData){NKP_NONCE_BYTES, (uint8_t *)ks->kek_nonce};
	f.wrapped_kek = (ProtobufCBinaryData){WRAPPED_BYTES, (uint8_t *)ks->wrapped_kek};
	len = nkp__keysafe__keysafe_file__get_packed_size(&f);
	buf = malloc(len);
	if (buf == NULL) {
		return NKP_ERR_NOMEM;
	}
	nkp__keysafe__keysafe_file__pack(&f, buf);
	*out = buf;
	*outlen = len;
	return NKP_OK;
}

nkp_err nkp_keysafe_load(const char *path, nkp_keysafe **out)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_err err;

	if (path == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_file_read(path, NKP_KEYSAFE_MAX_FILE, &buf, &len);
	if (err != NKP_OK) {
		return err;
	}
	err = nkp_keysafe_parse(buf, len, out);
	free(buf);
	return err;
}

/* No "<path>.prev" is kept: after a rekey or a removal the old wrapped keys
 * are meant to be gone, not left beside the new file. */
nkp_err nkp_keysafe_save(const nkp_keysafe *ks, const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	nkp_err err;

	if (ks == NULL || path == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_keysafe_serialize(ks, &buf, &len);
	if (err != NKP_OK) {
		return err;
	}
	err = nkp_file_write_atomic(path, buf, len, S_IRUSR | S_IWUSR, false, true);
	free(buf);
	return err;
}

/* ---- metadata ---------------------------------------------------------- */

const uint8_t *nkp_keysafe_provider_id(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->provider_id : NULL;
}

uint32_t nkp_keysafe_primary_version(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->primary_version : 0;
}

const uint8_t *nkp_keysafe_key_id(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->key_id : NULL;
}

const char *nkp_keysafe_vm_uuid(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->vm_uuid : NULL;
}

const char *nkp_keysafe_vm_name(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->vm_name : NULL;
}

uint64_t nkp_keysafe_created(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->created : 0;
}

size_t nkp_keysafe_component_count(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->n_comps : 0;
}

const char *nkp_keysafe_component(const nkp_keysafe *ks, size_t i)
{
	return ks != NULL && i < ks->n_comps ? ks->comps[i].name : NULL;
}

bool nkp_keysafe_has_component(const nkp_keysafe *ks, const char *component)
{
	return ks != NULL && component != NULL && find_component(ks, component) != NULL;
}

size_t nkp_keysafe_attribute_count(const nkp_keysafe *ks)
{
	return ks != NULL ? ks->n_attrs : 0;
}

const char *nkp_keysafe_attribute_name(const nkp_keysafe *ks, size_t i)
{
	return ks != NULL && i < ks->n_attrs ? ks->attrs[i].name : NULL;
}

const char *nkp_keysafe_attribute_value(const nkp_keysafe *ks, size_t i)
{
	return ks != NULL && i < ks->n_attrs ? ks->attrs[i].value : NULL;
}
