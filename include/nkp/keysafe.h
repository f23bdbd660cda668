/* Keysafe: a VM's key encryption key (KEK) and its component data keys
 * (DEKs), wrapped, in one versioned protobuf file per VM (proto/keysafe.proto).
 *
 * The KEK is sealed under the KEK subkey of a provider primary key version;
 * each DEK is sealed under the KEK. Every clear field (format version,
 * provider id, primary version, key id, VM identity, attributes, component
 * names and wrapped DEKs) is associated data of the KEK seal, so changing any
 * byte of a keysafe makes every operation on it fail with NKP_ERR_AUTH.
 *
 * An nkp_keysafe in memory holds no clear key: KEKs and DEKs are unwrapped
 * into wiped temporaries for the duration of one call. Operations that
 * change a keysafe change only the in-memory object; nkp_keysafe_save()
 * writes it. */
#ifndef NKP_KEYSAFE_H
#define NKP_KEYSAFE_H

#include <nkp/common.h>
#include <nkp/err.h>
#include <nkp/provider.h>

#define NKP_KEYSAFE_FORMAT_VERSION 1u
/** Limits enforced on create and on parse. */
#define NKP_KEYSAFE_MAX_FILE 65536u
#define NKP_KEYSAFE_MAX_COMPONENTS 64u
#define NKP_KEYSAFE_MAX_ATTRIBUTES 32u
#define NKP_KEYSAFE_MAX_NAME 255u /* VM name, attribute name and value */
#define NKP_KEYSAFE_MAX_UUID 64u
#define NKP_KEYSAFE_MAX_COMPONENT 64u /* component name */

/** Component names. Disks are "disk:<id>", id of [A-Za-z0-9._-], 1-48 chars. */
#define NKP_COMPONENT_VM_HOME "vm-home"
#define NKP_COMPONENT_VTPM "vtpm"

typedef struct nkp_keysafe nkp_keysafe;

/** VM identity and the attributes set when the key is made. NULL vendor,
 * product or product_version default to "nkp", "nkp" and nkp_version(). */
typedef struct nkp_vm_identity {
	const char *vm_uuid;
	const char *vm_name;
	const char *vendor;
	const char *product;
	const char *product_version;
} nkp_vm_identity;

/** Makes a VM key: a random key id, a random KEK sealed under `primary`,
 * and a random vm-home DEK. Attributes x-Vendor, x-Product,
 * x-Product_Version, x-Component ("Virtual Machine"), x-Name (VM name) and
 * x-Identifier (VM uuid) are recorded. Errors: NKP_ERR_INVALID (bad or
 * oversized identity), NKP_ERR_NOMEM, NKP_ERR_CRYPTO. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_create(const nkp_primary *primary,
						    const nkp_vm_identity *id, nkp_keysafe **out);

/** Adds a component ("disk:<id>" or "vtpm") with a new random DEK.
 * Errors: NKP_ERR_INVALID (bad name), NKP_ERR_EXISTS, NKP_ERR_TOO_LARGE,
 * NKP_ERR_KEY_MISSING (primary is not the keysafe's), NKP_ERR_AUTH. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_add_component(nkp_keysafe *ks,
							   const nkp_primary *primary,
							   const char *component);

/** Unwraps one component's DEK into `dek`, which the caller must wipe.
 * `dek` is written only on success. Errors: NKP_ERR_KEY_MISSING (primary
 * is another provider or version), NKP_ERR_NOT_FOUND, NKP_ERR_AUTH. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_unwrap(const nkp_keysafe *ks,
						    const nkp_primary *primary,
						    const char *component,
						    uint8_t dek[static NKP_KEY_BYTES]);

/** Reseals the KEK under `to` (same provider, another version). No KEK or
 * DEK changes. Errors: NKP_ERR_KEY_MISSING, NKP_ERR_INVALID (other
 * provider), NKP_ERR_AUTH. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_rewrap(nkp_keysafe *ks, const nkp_primary *from,
						    const nkp_primary *to);

/** Shallow rekey: a new KEK, the same DEKs resealed under it. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_rekey_shallow(nkp_keysafe *ks,
							   const nkp_primary *primary);

/** Deep rekey: a new keysafe with a new key id, KEK and DEKs for the same
 * components and identity, sealed under `to` (usually the active version).
 * `ks` is left untouched: the caller re-encrypts data with the new DEKs. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_rekey_deep(const nkp_keysafe *ks,
							const nkp_primary *from,
							const nkp_primary *to, nkp_keysafe **out);

/** Removes a component's DEK (the data is being decrypted). vm-home is
 * refused with NKP_ERR_STATE while any other component remains. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_remove_component(nkp_keysafe *ks,
							      const nkp_primary *primary,
							      const char *component);

/** Parses a keysafe file. Checks structure, sizes and format version, not
 * authenticity (that needs the primary key; every other operation checks
 * it). Errors: NKP_ERR_PARSE, NKP_ERR_TOO_LARGE, NKP_ERR_FORMAT_VERSION. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_parse(const uint8_t *buf, size_t len,
						   nkp_keysafe **out);
/** Serializes to a malloc'd buffer (no secret inside; free with free()). */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_serialize(const nkp_keysafe *ks, uint8_t **out,
						       size_t *outlen);
/** Reads and parses a file; writes atomically with mode 0600. A change of
 * a keysafe file (load, change, save) holds an exclusive lock on
 * "<path>.lock" (nkp_file_lock_take() in <nkp/file.h>) from before the
 * load until after the save, as nkp-hostctl does: two changes made at once
 * would otherwise both start from the same file and the second save would
 * drop the first change. */
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_load(const char *path, nkp_keysafe **out);
NKP_EXPORT NKP_NODISCARD nkp_err nkp_keysafe_save(const nkp_keysafe *ks, const char *path);
NKP_EXPORT void nkp_keysafe_free(nkp_keysafe *ks);

/* Metadata, readable without any key. Pointers are owned by `ks`. */
NKP_EXPORT const uint8_t *nkp_keysafe_provider_id(const nkp_keysafe *ks);
NKP_EXPORT uint32_t nkp_keysafe_primary_version(const nkp_keysafe *ks);
NKP_EXPORT const uint8_t *nkp_keysafe_key_id(const nkp_keysafe *ks);
NKP_EXPORT const char *nkp_keysafe_vm_uuid(const nkp_keysafe *ks);
NKP_EXPORT const char *nkp_keysafe_vm_name(const nkp_keysafe *ks);
NKP_EXPORT uint64_t nkp_keysafe_created(const nkp_keysafe *ks);
NKP_EXPORT size_t nkp_keysafe_component_count(const nkp_keysafe *ks);
NKP_EXPORT const char *nkp_keysafe_component(const nkp_keysafe *ks, size_t i);
NKP_EXPORT bool nkp_keysafe_has_component(const nkp_keysafe *ks, const char *component);
NKP_EXPORT size_t nkp_keysafe_attribute_count(const nkp_keysafe *ks);
NKP_EXPORT const char *nkp_keysafe_attribute_name(const nkp_keysafe *ks, size_t i);
NKP_EXPORT const char *nkp_keysafe_attribute_value(const nkp_keysafe *ks, size_t i);

/** True if `name` is a valid component name. */
NKP_EXPORT bool nkp_component_valid(const char *name);

#endif
