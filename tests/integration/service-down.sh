#!/bin/bash
# With the service stopped, hosts still make and unwrap keys from their
# persisted keys, also after a host restart (clean or crash); the service
# comes back to the same state and the hosts stay in sync.
. "$(dirname "$0")/lib.sh"
it_begin

step "two hosts and a backed-up default provider"
setup_cluster alpha bravo
make_provider prod --default
wait_in_sync
vm_create alpha s1
dek alpha s1; S1=$J

step "the service stops cleanly on SIGTERM"
stop_service
expect_fail ctl status

step "hosts still make and unwrap keys"
vm_create alpha s2
ok hostctl alpha vm add-disk --keysafe "$T/vm/s2" --disk 0
dek alpha s2 disk:0; S2=$J
check_dek bravo s2 disk:0 "$S2"
check_dek bravo s1 vm-home "$S1"
vm_create bravo s3
dek bravo s3; S3=$J
check_dek alpha s3 vm-home "$S3"

step "bravo restarts (SIGTERM) with the service still down"
stop_host bravo
start_host bravo
version_states bravo prod; assert_eq "bravo's persisted versions" "1:active" "$J"
check_dek bravo s1 vm-home "$S1"
check_dek bravo s2 disk:0 "$S2"
vm_create bravo s4
dek bravo s4; S4=$J
check_dek alpha s4 vm-home "$S4"

step "alpha crashes (SIGKILL) and restarts with the service still down"
crash_host alpha
start_host alpha
version_states alpha prod; assert_eq "alpha's persisted versions" "1:active" "$J"
check_dek alpha s4 vm-home "$S4"
check_dek alpha s3 vm-home "$S3"
vm_create alpha s5
dek alpha s5; check_dek bravo s5 vm-home "$J"

step "the service comes back with its state and the hosts get in sync"
start_service
version_states_svc prod; assert_eq "versions (service) after restart" "1:active" "$J"
wait_in_sync
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "hosts after restart" '["alpha", "bravo"]' "$J"
ok ctl provider rotate prod --timeout 15
wait_in_sync
version_states alpha prod; assert_eq "alpha after a rotation" "1:decrypt-only 2:active" "$J"
check_dek alpha s1 vm-home "$S1"

it_pass
