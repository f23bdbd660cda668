#!/bin/bash
# `nkpctl host remove` makes the host wipe its keys before the service
# forgets it: an empty desired state is pushed to that host alone and its
# ack awaited. A host that does not confirm (down) stays enrolled, with a
# clear one-line error and an event, unless --force, which forgets it and
# says loudly that it may still hold its keys. The other hosts are not
# disturbed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "three hosts and a backed-up default provider"
setup_cluster alpha bravo charlie
make_provider prod --default
wait_in_sync
vm_create alpha a1
dek alpha a1; A1=$J
host_generation bravo; GEN_BRAVO=$J

step "host remove alpha: alpha wipes its keys, then is forgotten"
ok ctl host remove alpha
assert_contains "host remove's output" "$OUT" "wiped its keys"
host_providers alpha; assert_eq "providers alpha holds" "" "$J"
expect_exit 1 hostctl alpha vm unwrap --keysafe "$T/vm/a1" --component vm-home --out - --format hex
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "hosts" '["bravo", "charlie"]' "$J"
ok ctl events
assert_contains "events" "$OUT" "removed after wiping its keys"

step "charlie is down: host remove refuses, charlie stays enrolled"
crash_host charlie
expect_fail ctl host remove charlie
assert_contains "host remove's error" "$ERR" "did not confirm"
assert_contains "host remove's error" "$ERR" "--force"
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "hosts" '["bravo", "charlie"]' "$J"
ok ctl events
assert_contains "events" "$OUT" "charlie did not confirm that it wiped its keys"

step "host remove charlie --force: forgotten, with a warning"
ok ctl host remove charlie --force
assert_contains "host remove --force's output" "$OUT" "WARNING"
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "hosts" '["bravo"]' "$J"

step "bravo was not disturbed; the service still serves it"
host_generation bravo; assert_eq "bravo's generation" "$GEN_BRAVO" "$J"
check_dek bravo a1 vm-home "$A1"
ok ctl provider create other
wait_in_sync
host_providers bravo; assert_eq "providers on bravo" "other prod" "$J"

it_pass
