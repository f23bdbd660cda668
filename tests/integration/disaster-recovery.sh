#!/bin/bash
# Disaster recovery: the management node is lost; a fresh service (new state
# directory, new key); hosts re-pinned with `nkp-hostd init --service-key
# NEW` on their existing directory (identity kept) and enrolled again; the
# desired state is empty, so the VMs are locked; the backup is restored
# (same id and versions) and the locked VMs unwrap again to the same DEKs.
. "$(dirname "$0")/lib.sh"
it_begin

step "two hosts, a rotated provider with a backup, VMs under both versions"
setup_cluster alpha bravo
make_provider prod --default
wait_in_sync
vm_create alpha d1
ok hostctl alpha vm add-disk --keysafe "$T/vm/d1" --disk 0
dek alpha d1; D1=$J
dek alpha d1 disk:0; D1DISK=$J
ok ctl provider rotate prod --timeout 15
wait_in_sync
vm_create bravo d2
vm_field bravo d2 'd["primary_version"]'; assert_eq "d2's version" 2 "$J"
dek bravo d2; D2=$J
ok ctl provider backup prod --out "$T/prod.backup" --password-file "$T/password"
provider_json prod; json 'd["id"]'; PROD_ID=$J
OLD_KEY=$SVC_KEY
declare -A OLD_HOST_KEY
for h in alpha bravo; do OLD_HOST_KEY[$h]=${HOST_KEY[$h]}; done

step "the management node is lost"
kill_pid "$SVC_PID"
rm -rf "$SVC_DIR"

step "a fresh service with a new key"
service_init "$T/svc-new"
assert_ne "the new service key" "$OLD_KEY" "$SVC_KEY"
start_service

step "hosts re-pinned on their existing directory keep their identity"
for h in alpha bravo; do
	stop_host "$h"
	host_init "$h" "$SVC_KEY"
	assert_eq "$h's public key after re-pinning" "${OLD_HOST_KEY[$h]}" "${HOST_KEY[$h]}"
	start_host "$h"
	enrol "$h"
done
wait_in_sync
for h in alpha bravo; do
	host_providers "$h"; assert_eq "providers on $h under the new service" "" "$J"
	vm_field "$h" d1 'd["locked"]'; assert_eq "d1 locked on $h" true "$J"
	vm_field "$h" d2 'd["locked"]'; assert_eq "d2 locked on $h" true "$J"
	expect_fail hostctl "$h" vm unwrap --keysafe "$T/vm/d1" --component vm-home --out - --format hex
done

step "a wrong password restores nothing"
printf 'not the password\n' >"$T/wrong"
expect_fail ctl provider restore "$T/prod.backup" --password-file "$T/wrong" "${WEAK_OK[@]}"
assert_contains "restore with a wrong password: why" "$ERR" "wrong password"
ok ctl --json provider list
json 'len(d)'; assert_eq "providers after a failed restore" 0 "$J"

step "the backup restored: same id and versions; the locked VMs unwrap again"
ok ctl provider restore "$T/prod.backup" --password-file "$T/password" "${WEAK_OK[@]}"
provider_json prod
json 'd["id"]'; assert_eq "restored id" "$PROD_ID" "$J"
version_states_svc prod; assert_eq "restored versions" "1:decrypt-only 2:active" "$J"
wait_in_sync
for h in alpha bravo; do
	version_states "$h" prod; assert_eq "versions on $h after restore" "1:decrypt-only 2:active" "$J"
	vm_field "$h" d1 'd["locked"]'; assert_eq "d1 locked on $h after restore" false "$J"
	check_dek "$h" d1 vm-home "$D1"
	check_dek "$h" d1 disk:0 "$D1DISK"
	check_dek "$h" d2 vm-home "$D2"
done
vm_create alpha d3 --provider prod
vm_field alpha d3 'd["primary_version"]'; assert_eq "d3's version" 2 "$J"
dek alpha d3; check_dek bravo d3 vm-home "$J"
ok ctl events
assert_contains "events after restore" "$OUT" "restore"

it_pass
