#!/bin/bash
# Delete wipes the provider from every host and keysafes under it report
# `locked`; the default provider is refused without --force.
. "$(dirname "$0")/lib.sh"
it_begin

step "three hosts; a default provider, a used one and an unused one"
setup_cluster alpha bravo charlie
make_provider prod --default
make_provider temp
make_provider spare
wait_in_sync
provider_json temp; json 'd["id"]'; TEMP_ID=$J
vm_create alpha t1 --provider temp
vm_field alpha t1 'd["provider_name"]'; assert_eq "t1's provider" temp "$J"
dek alpha t1; T1=$J
check_dek charlie t1 vm-home "$T1"
vm_create bravo p1
dek bravo p1; P1=$J

step "deleting the default provider is refused without --force"
expect_fail ctl provider delete prod
expect_fail ctl provider delete nosuch

step "an unused provider is deleted; a used one with --force"
ok ctl provider delete spare
ok ctl provider delete temp --force
expect_fail ctl provider show temp
ok ctl --json provider list
json 'sorted(p["name"] for p in d)'; assert_eq "providers after delete" '["prod"]' "$J"
wait_in_sync
for h in alpha bravo charlie; do
	host_providers "$h"; assert_eq "providers on $h after delete" "prod" "$J"
	ok hostctl "$h" --json vm show --keysafe "$T/vm/t1"
	json 'd["locked"]'; assert_eq "t1 locked on $h" true "$J"
	assert_contains "vm show of a locked VM names what it lacks" "$OUT" "$TEMP_ID"
	expect_fail hostctl "$h" vm unwrap --keysafe "$T/vm/t1" --component vm-home --out - --format hex
	check_dek "$h" p1 vm-home "$P1"
done
expect_fail hostctl bravo vm create --keysafe "$T/vm/t2" --vm-uuid "$(vm_uuid t2)" --vm-name t2 --provider temp
ok ctl events
assert_contains "events after delete" "$OUT" "delete"

step "the default provider with --force"
ok ctl provider delete prod --force
wait_in_sync
for h in alpha bravo charlie; do
	host_providers "$h"; assert_eq "providers on $h" "" "$J"
	vm_field "$h" p1 'd["locked"]'; assert_eq "p1 locked on $h" true "$J"
done
expect_fail hostctl alpha vm create --keysafe "$T/vm/t3" --vm-uuid "$(vm_uuid t3)" --vm-name t3

step "a host restarted after the delete still lacks the provider"
stop_host charlie
start_host charlie
host_providers charlie; assert_eq "providers on charlie after a restart" "" "$J"
vm_field charlie t1 'd["locked"]'; assert_eq "t1 locked on charlie after a restart" true "$J"

it_pass
