#!/bin/bash
# nkpd's wall clock steps: a host accepts a handshake only with a
# timestamp newer than the last it accepted (docs/PROTOCOL.md), so a
# service restarted with its clock behind must still start its timestamps
# above every one it made before. nkpd's clock is shifted with the test
# hook NKP_TEST_CLOCK_SKEW (seconds; only in a build with test hooks).
. "$(dirname "$0")/lib.sh"
it_begin

restart_service_skewed() { # SECONDS
	stop_service
	NKP_TEST_CLOCK_SKEW=$1 start_service
}

step "one host in sync with a default provider"
setup_cluster alpha
make_provider prod --default
wait_in_sync
vm_create alpha v1
dek alpha v1; V1=$J

step "nkpd restarts with its clock a day behind: the host still takes its pushes"
restart_service_skewed -86400
ok ctl provider rotate prod --timeout 15
wait_in_sync
version_states alpha prod; assert_eq "alpha after a rotation" "1:decrypt-only 2:active" "$J"

step "nkpd runs a year ahead, then restarts with the clock corrected"
restart_service_skewed 31536000
ok ctl provider rotate prod --timeout 15
wait_in_sync
restart_service_skewed 0
ok ctl provider rotate prod --timeout 15
wait_in_sync
version_states alpha prod
assert_eq "alpha after two more rotations" "1:decrypt-only 2:decrypt-only 3:decrypt-only 4:active" "$J"
check_dek alpha v1 vm-home "$V1"

step "the host restarts: it accepts the service's timestamps again"
stop_host alpha
start_host alpha
ok ctl provider rotate prod --timeout 15
wait_in_sync
version_states alpha prod; assert_contains "alpha after a host restart" "$J" "5:active"

it_pass
