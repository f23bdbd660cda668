#!/bin/bash
# Rotation: the new version is staged then promoted on every host; new
# keysafes use it; old ones still unwrap; rewrap moves a keysafe to it
# without changing any DEK; retire is refused while a host still reports use
# of the old version, and with --force wipes it from every host.
. "$(dirname "$0")/lib.sh"
it_begin

step "three hosts and a backed-up default provider"
setup_cluster alpha bravo charlie
make_provider prod --default
wait_in_sync

vm_create alpha old1
ok hostctl alpha vm add-disk --keysafe "$T/vm/old1" --disk 0
dek alpha old1 vm-home; OLD1_HOME=$J
dek alpha old1 disk:0; OLD1_DISK=$J
vm_field alpha old1 'd["key_id"]'; OLD1_KEYID=$J
vm_create bravo old2
dek bravo old2; OLD2=$J
vm_field bravo old2 'd["primary_version"]'; assert_eq "old2's version" 1 "$J"

step "rotate: staged, then promoted everywhere"
ok ctl provider rotate prod --timeout 20
version_states_svc prod; assert_eq "versions (service) after rotate" "1:decrypt-only 2:active" "$J"
provider_json prod; json 'd["active_version"]'; assert_eq "active_version" 2 "$J"
wait_in_sync
for h in alpha bravo charlie; do
	version_states "$h" prod; assert_eq "versions on $h after rotate" "1:decrypt-only 2:active" "$J"
done
ok ctl events
assert_contains "events after rotate" "$OUT" "staged"
assert_contains "events after rotate" "$OUT" "promoted"

step "the last backup lacks version 2: status says it is stale"
ok ctl provider show prod
assert_contains "provider show after rotate" "$OUT" "stale"
ok ctl provider backup prod --out "$T/prod-2.backup" --password-file "$T/password"
ok ctl provider show prod
assert_not_contains "provider show after a new backup" "$OUT" "stale"

step "new keysafes use version 2 and unwrap everywhere"
vm_create charlie new1
vm_field charlie new1 'd["primary_version"]'; assert_eq "new1's version" 2 "$J"
dek charlie new1; NEW1=$J
check_dek alpha new1 vm-home "$NEW1"
check_dek bravo new1 vm-home "$NEW1"

step "keysafes under version 1 still unwrap everywhere"
for h in alpha bravo charlie; do
	check_dek "$h" old1 vm-home "$OLD1_HOME"
	check_dek "$h" old1 disk:0 "$OLD1_DISK"
	check_dek "$h" old2 vm-home "$OLD2"
done

step "rewrap moves old1 to version 2 without changing a DEK"
ok hostctl bravo vm rewrap --keysafe "$T/vm/old1"
vm_field alpha old1 'd["primary_version"]'; assert_eq "old1's version after rewrap" 2 "$J"
vm_field alpha old1 'd["key_id"]'; assert_eq "old1's key id after rewrap" "$OLD1_KEYID" "$J"
for h in alpha bravo charlie; do
	check_dek "$h" old1 vm-home "$OLD1_HOME"
	check_dek "$h" old1 disk:0 "$OLD1_DISK"
done

step "retire is refused while a host still reports use of version 1"
# bravo made old2 under version 1 and has not rewrapped it; the hosts
# report that use with their heartbeats.
wait_until 10 "provider show to report use of version 1" version_in_use prod 1
expect_fail ctl provider retire prod --version 1
version_states_svc prod; assert_eq "versions after a refused retire" "1:decrypt-only 2:active" "$J"
expect_fail ctl provider retire prod --version 2
expect_fail ctl provider retire prod --version 7

step "retire --force wipes version 1 from every host"
ok ctl provider retire prod --version 1 --force
version_states_svc prod; assert_eq "versions (service) after retire" "2:active" "$J"
wait_in_sync
for h in alpha bravo charlie; do
	version_states "$h" prod; assert_eq "versions on $h after retire" "2:active" "$J"
	vm_field "$h" old2 'd["locked"]'; assert_eq "old2 locked on $h" true "$J"
	expect_fail hostctl "$h" vm unwrap --keysafe "$T/vm/old2" --component vm-home --out - --format hex
	check_dek "$h" old1 vm-home "$OLD1_HOME"
	check_dek "$h" new1 vm-home "$NEW1"
done
ok ctl events
assert_contains "events after retire" "$OUT" "retire"

step "a second rotation goes to version 3"
ok ctl provider rotate prod --timeout 20
version_states_svc prod; assert_eq "versions after a second rotate" "2:decrypt-only 3:active" "$J"
wait_in_sync
version_states charlie prod; assert_eq "versions on charlie" "2:decrypt-only 3:active" "$J"
check_dek charlie old1 vm-home "$OLD1_HOME"

it_pass
