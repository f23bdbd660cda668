/* VM key operations on keysafe bytes (design §5). Every operation runs
 * under the shared lock, so many run at once and a push waits for them. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <nkp/keysafe.h>

#include "hostd-internal.h"

static void touch(hostd_version *v)
{
	atomic_store(&v->last_used, nkpi_now());
}

static void used(nkp_hostd *h)
{
	atomic_store(&h->usage_dirty, true);
}

static nkp_err ks_serialize(const nkp_keysafe *ks, uint8_t **out, size_t *outlen)
{
	return nkp_keysafe_serialize(ks, out, outlen);
}

/* Reports an operation that failed on a keysafe as the event it deserves. */
static void ks_event(nkp_hostd *h, const nkp_keysafe *ks, nkp_err err, const char *what)
{
	char id[33];

	if (ks == NULL) {
		return;
	}
	nkp_id_to_hex(nkp_keysafe_provider_id(ks), id);
	if (err == NKP_ERR_KEY_MISSING) {
		nkp_event(h->events, NKP_EV_VM_LOCKED, id, h->host_name,
			  "%s: VM %s is locked: this host lacks provider %s version %u", what,
			  nkp_keysafe_vm_uuid(ks), id, nkp_keysafe_primary_version(ks));
	} else if (err == NKP_ERR_AUTH) {
		nkp_event(h->events, NKP_EV_TAMPERING, id, h->host_name,
			  "%s: keysafe of VM %s fails authentication (damaged or tampered)", what,
			  nkp_keysafe_vm_uuid(ks));
	}
}

/* The held version a keysafe needs. Caller holds the lock. */
static nkp_err ks_version(nkp_hostd *h, const nkp_keysafe *ks, hostd_provider **p,
			  hostd_version **v)
{
	hostd_provider *hp = hostd_state_find_id(&h->state, nkp_keysafe_provider_id(ks));
	hostd_version *hv =
		hp == NULL ? NULL : hostd_provider_version(hp, nkp_keysafe_primary_version(ks));

	if (hv == NULL) {
		return NKP_ERR_KEY_MISSING;
	}
	*p = hp;
	*v = hv;
	return NKP_OK;
}

nkp_err nkp_hostd_vm_create(nkp_hostd *h, const char *provider, const nkp_vm_identity *vm,
			    uint8_t **out, size_t *outlen)
{
	nkp_keysafe *ks = NULL;
	hostd_provider *p;
	hostd_version *v = NULL;
	nkp_err err;

	if (h == NULL || vm == NULL || out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	pthread_rwlock_rdlock(&h->lock);
	p = provider == NULL || provider[0] == '\0' ? hostd_state_find_default(&h->state)
						    : hostd_state_find_name(&h->state, provider);
	if (p == NULL) {
		err = NKP_ERR_NOT_FOUND;
	} else if (!p->backed_up) {
		err = NKP_ERR_NOT_BACKED_UP;
	} else if ((v = hostd_provider_active(p)) == NULL) {
		err = NKP_ERR_KEY_MISSING;
	} else {
		err = nkp_keysafe_create(v->primary, vm, &ks);
	}
	if (err == NKP_OK) {
		atomic_fetch_add(&v->created, 1);
		atomic_fetch_add(&v->keysafes, 1);
		touch(v);
		used(h);
	}
	pthread_rwlock_unlock(&h->lock);
	if (err == NKP_OK) {
		err = ks_serialize(ks, out, outlen);
	}
	if (err == NKP_OK) {
		char id[33];

		nkp_id_to_hex(nkp_keysafe_provider_id(ks), id);
		nkp_event(h->events, NKP_EV_KEY_CREATED, id, h->host_name,
			  "VM key made for %s (%s) under version %u", nkp_keysafe_vm_uuid(ks),
			  nkp_keysafe_vm_name(ks), nkp_keysafe_primary_version(ks));
	}
	nkp_keysafe_free(ks);
	hostd_maybe_flush(h, HOSTD_FLUSH_SECONDS);
	return err;
}

/* One operation on a parsed keysafe, run under the shared lock with the
 * held version it needs. It may replace *ks (deep rekey). */
typedef struct vm_op {
	const char *what;
	const char *component;
	uint8_t *dek;
	bool deep;
	nkp_err (*run)(nkp_hostd *h, struct vm_op *op, nkp_keysafe **ks, hostd_provider *p,
		       hostd_version *v);
} vm_op;

static nkp_err vm_run(nkp_hostd *h, const uint8_t *buf, size_t len, vm_op *op, uint8_t **out,
		      size_t *outlen)
{
	nkp_keysafe *ks = NULL;
	hostd_provider *p = NULL;
	hostd_version *v = NULL;
	nkp_err err;

	if (h == NULL || buf == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_keysafe_parse(buf, len, &ks);
	if (err != NKP_OK) {
		return err;
	}
	pthread_rwlock_rdlock(&h->lock);
	err = ks_version(h, ks, &p, &v);
	if (err == NKP_OK) {
		err = op->run(h, op, &ks, p, v);
	}
	pthread_rwlock_unlock(&h->lock);
	if (err == NKP_OK && out != NULL) {
		err = ks_serialize(ks, out, outlen);
	}
	if (err != NKP_OK) {
		ks_event(h, ks, err, op->what);
	}
	nkp_keysafe_free(ks);
	hostd_maybe_flush(h, HOSTD_FLUSH_SECONDS);
	return err;
}

static nkp_err run_add(nkp_hostd *h, vm_op *op, nkp_keysafe **ks, hostd_provider *p,
		       hostd_version *v)
{
	nkp_err err = nkp_keysafe_add_component(*ks, v->primary, op->component);

	if (err == NKP_OK) {
		touch(v);
		used(h);
	}
	return err;
}

nkp_err nkp_hostd_vm_add_component(nkp_hostd *h, const uint8_t *ks, size_t kslen,
				   const char *component, uint8_t **out, size_t *outlen)
{
	vm_op op = {.what = "add component", .component = component, .run = run_add};

	if (component == NULL || out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	return vm_run(h, ks, kslen, &op, out, outlen);
}

static nkp_err run_unwrap(nkp_hostd *h, vm_op *op, nkp_keysafe **ks, hostd_provider *p,
			  hostd_version *v)
{
	nkp_err err = nkp_keysafe_unwrap(*ks, v->primary, op->component, op->dek);

	if (err == NKP_OK) {
		atomic_fetch_add(&v->unwrapped, 1);
		touch(v);
		used(h);
	}
	return err;
}

nkp_err nkp_hostd_vm_unwrap(nkp_hostd *h, const uint8_t *ks, size_t kslen, const char *component,
			    uint8_t dek[static NKP_KEY_BYTES])
{
	uint8_t tmp[NKP_KEY_BYTES];
	vm_op op = {.what = "unwrap", .component = component, .dek = tmp, .run = run_unwrap};
	nkp_err err;

	if (component == NULL || dek == NULL) {
		return NKP_ERR_INVALID;
	}
	err = vm_run(h, ks, kslen, &op, NULL, NULL);
	if (err == NKP_OK) {
		memcpy(dek, tmp, NKP_KEY_BYTES);
	}
	sodium_memzero(tmp, sizeof(tmp));
	return err;
}

/* Moves a keysafe from v to the active version, counting it. */
static nkp_err to_active(nkp_hostd *h, nkp_keysafe *ks, hostd_provider *p, hostd_version *v)
{
	hostd_version *a = hostd_provider_active(p);
	nkp_err err;

	if (a == NULL) {
		return NKP_ERR_STATE;
	}
	if (a == v) {
		return NKP_OK;
	}
	err = nkp_keysafe_rewrap(ks, v->primary, a->primary);
	if (err == NKP_OK) {
		atomic_fetch_add(&a->rewrapped, 1);
		atomic_fetch_add(&a->keysafes, 1);
		atomic_fetch_sub(&v->keysafes, 1);
		touch(a);
		used(h);
	}
	return err;
}

static nkp_err run_rewrap(nkp_hostd *h, vm_op *op, nkp_keysafe **ks, hostd_provider *p,
			  hostd_version *v)
{
	return to_active(h, *ks, p, v);
}

nkp_err nkp_hostd_vm_rewrap(nkp_hostd *h, const uint8_t *ks, size_t kslen, uint8_t **out,
			    size_t *outlen)
{
	vm_op op = {.what = "rewrap", .run = run_rewrap};

	if (out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	return vm_run(h, ks, kslen, &op, out, outlen);
}

static nkp_err run_rekey(nkp_hostd *h, vm_op *op, nkp_keysafe **ks, hostd_provider *p,
			 hostd_version *v)
{
	hostd_version *a = hostd_provider_active(p);
	nkp_keysafe *fresh = NULL;
	nkp_err err;

	if (a == NULL) {
		return NKP_ERR_STATE;
	}
	if (!op->deep) {
		err = nkp_keysafe_rekey_shallow(*ks, v->primary);
		return err == NKP_OK ? to_active(h, *ks, p, v) : err;
	}
	err = nkp_keysafe_rekey_deep(*ks, v->primary, a->primary, &fresh);
	if (err == NKP_OK) {
		atomic_fetch_add(&a->created, 1);
		atomic_fetch_add(&a->keysafes, 1);
		touch(a);
		used(h);
		nkp_keysafe_free(*ks);
		*ks = fresh;
	}
	return err;
}

nkp_err nkp_hostd_vm_rekey(nkp_hostd *h, const uint8_t *ks, size_t kslen, bool deep, uint8_t **out,
			   size_t *outlen)
{
	vm_op op = {.what = deep ? "deep rekey" : "rekey", .deep = deep, .run = run_rekey};

	if (out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	return vm_run(h, ks, kslen, &op, out, outlen);
}

static nkp_err run_remove(nkp_hostd *h, vm_op *op, nkp_keysafe **ks, hostd_provider *p,
			  hostd_version *v)
{
	nkp_err err = nkp_keysafe_remove_component(*ks, v->primary, op->component);

	if (err == NKP_OK && strcmp(op->component, NKP_COMPONENT_VM_HOME) == 0) {
		/* The VM is no longer encrypted: one keysafe fewer under v. */
		atomic_fetch_sub(&v->keysafes, 1);
		used(h);
	}
	return err;
}

nkp_err nkp_hostd_vm_remove_component(nkp_hostd *h, const uint8_t *ks, size_t kslen,
				      const char *component, uint8_t **out, size_t *outlen)
{
	vm_op op = {.what = "decrypt", .component = component, .run = run_remove};

	if (component == NULL || out == NULL || outlen == NULL) {
		return NKP_ERR_INVALID;
	}
	return vm_run(h, ks, kslen, &op, out, outlen);
}

/* Authenticity needs the KEK: unwrapping any component checks the whole
 * keysafe, since every clear field is bound to the KEK seal. */
static nkp_err verify(const nkp_keysafe *ks, const hostd_version *v)
{
	uint8_t tmp[NKP_KEY_BYTES];
	nkp_err err = NKP_OK;

	if (nkp_keysafe_component_count(ks) > 0) {
		err = nkp_keysafe_unwrap(ks, v->primary, nkp_keysafe_component(ks, 0), tmp);
		sodium_memzero(tmp, sizeof(tmp));
	}
	return err;
}

nkp_err nkp_hostd_vm_check_keysafe(nkp_hostd *h, const uint8_t *buf, size_t len,
				   nkp_hostd_vm_check *out)
{
	nkp_hostd_vm_check c;
	nkp_keysafe *ks = NULL;
	hostd_provider *p;
	hostd_version *v = NULL;
	nkp_err err;

	if (h == NULL || buf == NULL || out == NULL) {
		return NKP_ERR_INVALID;
	}
	err = nkp_keysafe_parse(buf, len, &ks);
	if (err != NKP_OK) {
		return err;
	}
	memset(&c, 0, sizeof(c));
	memcpy(c.provider_id, nkp_keysafe_provider_id(ks), NKP_ID_BYTES);
	c.version = nkp_keysafe_primary_version(ks);
	pthread_rwlock_rdlock(&h->lock);
	p = hostd_state_find_id(&h->state, c.provider_id);
	if (p != NULL) {
		c.provider_known = true;
		memcpy(c.provider_name, p->name, sizeof(c.provider_name));
		v = hostd_provider_version(p, c.version);
	}
	c.locked = v == NULL;
	if (v != NULL) {
		err = verify(ks, v);
	}
	pthread_rwlock_unlock(&h->lock);
	ks_event(h, ks, c.locked ? NKP_ERR_KEY_MISSING : err, "show");
	if (err == NKP_OK) {
		*out = c;
	}
	nkp_keysafe_free(ks);
	return err;
}
