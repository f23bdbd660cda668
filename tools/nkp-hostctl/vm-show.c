/* nkp-hostctl vm show --keysafe FILE */
#include <stdio.h>
#include <stdlib.h>

#include "vm.h"

static void show_json(const nkp_keysafe *k, const Nkp__Hostapi__CheckReply *c)
{
	char id[33], key_id[33];

	nkp_id_to_hex(nkp_keysafe_provider_id(k), id);
	nkp_id_to_hex(nkp_keysafe_key_id(k), key_id);
	printf("{\"provider_id\":\"%s\",\"provider_name\":", id);
	if (c->provider_known) {
		json_str(c->provider_name);
	} else {
		printf("null");
	}
	printf(",\"primary_version\":%u,\"key_id\":\"%s\",\"vm_uuid\":",
	       nkp_keysafe_primary_version(k), key_id);
	json_str(nkp_keysafe_vm_uuid(k));
	printf(",\"vm_name\":");
	json_str(nkp_keysafe_vm_name(k));
	printf(",\"created_unix\":%llu,\"components\":[",
	       (unsigned long long)nkp_keysafe_created(k));
	for (size_t i = 0; i < nkp_keysafe_component_count(k); i++) {
		printf("%s", i ? "," : "");
		json_str(nkp_keysafe_component(k, i));
	}
	printf("],\"attributes\":{");
	for (size_t i = 0; i < nkp_keysafe_attribute_count(k); i++) {
		printf("%s", i ? "," : "");
		json_str(nkp_keysafe_attribute_name(k, i));
		printf(":");
		json_str(nkp_keysafe_attribute_value(k, i));
	}
	printf("},\"locked\":%s,\"missing\":", c->locked ? "true" : "false");
	if (c->locked) {
		printf("{\"provider_id\":\"%s\",\"provider_name\":", id);
		if (c->provider_known) {
			json_str(c->provider_name);
		} else {
			printf("null");
		}
		printf(",\"version\":%u}", nkp_keysafe_primary_version(k));
	} else {
		printf("null");
	}
	printf("}\n");
}

static void show_text(const char *path, const nkp_keysafe *k, const Nkp__Hostapi__CheckReply *c)
{
	char id[33], key_id[33];

	nkp_id_to_hex(nkp_keysafe_provider_id(k), id);
	nkp_id_to_hex(nkp_keysafe_key_id(k), key_id);
	printf("keysafe:    %s\n", path);
	printf("vm:         %s (%s)\n", nkp_keysafe_vm_name(k), nkp_keysafe_vm_uuid(k));
	printf("provider:   %s (%s) version %u\n", c->provider_known ? c->provider_name : "unknown",
	       id, nkp_keysafe_primary_version(k));
	printf("key id:     %s\n", key_id);
	printf("components:");
	for (size_t i = 0; i < nkp_keysafe_component_count(k); i++) {
		printf(" %s", nkp_keysafe_component(k, i));
	}
	printf("\nattributes:\n");
	for (size_t i = 0; i < nkp_keysafe_attribute_count(k); i++) {
		printf("  %s = %s\n", nkp_keysafe_attribute_name(k, i),
		       nkp_keysafe_attribute_value(k, i));
	}
	if (c->locked) {
		printf("state:      LOCKED: this host lacks provider %s version %u\n", id,
		       nkp_keysafe_primary_version(k));
	} else {
		printf("state:      unlocked\n");
	}
}

int vm_show(hostctl *ctl, vm_args *a)
{
	Nkp__Hostapi__Request req = NKP__HOSTAPI__REQUEST__INIT;
	Nkp__Hostapi__KeysafeRequest kr = NKP__HOSTAPI__KEYSAFE_REQUEST__INIT;
	Nkp__Hostapi__Reply *r = NULL;
	nkp_keysafe *k = NULL;
	uint8_t *ks = NULL;
	size_t kslen = 0;
	nkp_err err;
	int rc = vm_read(a, &ks, &kslen);

	if (rc != 0) {
		return rc;
	}
	err = nkp_keysafe_parse(ks, kslen, &k);
	if (err != NKP_OK) {
		rc = fail(a->cmd, "%s: not a keysafe: %s", a->keysafe, nkp_strerror(err));
		goto out_buf;
	}
	kr.keysafe.data = ks;
	kr.keysafe.len = kslen;
	req.op_case = NKP__HOSTAPI__REQUEST__OP_CHECK;
	req.check = &kr;
	rc = vm_call(ctl, a, ks, kslen, &req, &r);
	if (rc == 0 && r->check == NULL) {
		rc = fail(a->cmd, "malformed reply from nkp-hostd");
	}
	if (rc == 0) {
		if (ctl->json) {
			show_json(k, r->check);
		} else {
			show_text(a->keysafe, k, r->check);
		}
	}
	hostctl_reply_free(r);
	nkp_keysafe_free(k);
out_buf:
	free(ks);
	return rc;
}
