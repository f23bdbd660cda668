#!/bin/bash
# A full disk (the fault shim makes writes/fsyncs of the state fail with
# ENOSPC). nkpd: every change it cannot persist fails with one clear line
# from nkpctl and a state.write_failed event, state.nkp stays byte for byte
# what it was (no temp file left), nothing is pushed, and the service keeps
# serving; a promotion it cannot persist leaves the version staged and
# `rotate` again completes it once there is room. A host: it refuses the
# push it cannot persist (its previous keys stay and still unwrap), the
# service shows it refused and keeps retrying, and it converges once its
# disk has room.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "nkpd and alpha under the fault shim, bravo; a backed-up default provider"
service_init
start_service_shim
host_init alpha
start_host_shim alpha
enrol alpha
host_init bravo
start_host bravo
enrol bravo
wait_in_sync
make_provider prod --default
wait_in_sync
vm_create alpha a1
dek alpha a1; A1=$J
host_generation bravo; GEN=$J

state_sum() { sum_files "$SVC_DIR/state.nkp" "$SVC_DIR/state.nkp.prev"; }
svc_temps() { J=$(find "$SVC_DIR" -name 'state.nkp*.tmp.*' | wc -l); }

# refused_change WHAT CMD...: CMD fails in one line naming the lack of
# space; a new state.write_failed event; the state files are unchanged.
refused_change() {
	local what=$1 before events
	shift
	state_sum; before=$J
	event_count "$SVC_DIR" state.write_failed; events=$J
	expect_fail "$@"
	assert_contains "$what: error" "$ERR" "no space left"
	event_count "$SVC_DIR" state.write_failed
	[ "$J" -gt "$events" ] || fail "$what: no state.write_failed event"
	state_sum; assert_eq "$what: state files" "$before" "$J"
	svc_temps; assert_eq "$what: temp files left" 0 "$J"
}

step "disk full on write: changes fail clearly, the state is untouched"
shim_arm svc "write enospc state.nkp"
refused_change "provider create" ctl provider create other
refused_change "provider rotate" ctl provider rotate prod --timeout 5
refused_change "host add" ctl host add charlie --address tcp://127.0.0.1:9 \
	--public-key "${HOST_KEY[bravo]}"
refused_change "host remove" ctl host remove bravo
host_providers bravo; assert_eq "bravo keeps its keys after the refused remove" "prod" "$J"
ok ctl events
assert_contains "events" "$OUT" "no space left"

step "disk full on fsync: the same"
shim_arm svc "fsync enospc state.nkp"
refused_change "provider create (fsync)" ctl provider create other

step "the service keeps serving: reads work, nothing was pushed"
ok ctl status
ok ctl --json provider list
json 'sorted(p["name"] for p in d)'; assert_eq "providers" '["prod"]' "$J"
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "hosts" '["alpha", "bravo"]' "$J"
version_states_svc prod; assert_eq "versions (service)" "1:active" "$J"
host_generation bravo; assert_eq "bravo's generation" "$GEN" "$J"
ok ctl host wait --in-sync --timeout 5
check_dek alpha a1 vm-home "$A1"

step "room again: the change succeeds"
shim_clear svc
ok ctl provider create other
wait_in_sync

step "a promotion that cannot be persisted: stays staged, rotate again completes it"
shim_arm svc "write enospc state.nkp 1"
expect_fail ctl provider rotate prod --timeout 10
assert_contains "rotate's error" "$ERR" "no space left"
version_states_svc prod; assert_eq "versions (service)" "1:active 2:staged" "$J"
event_count "$SVC_DIR" state.write_failed
[ "$J" -gt 0 ] || fail "no state.write_failed event for the promotion"
shim_clear svc
ok ctl provider rotate prod --timeout 10
version_states_svc prod; assert_eq "versions (service)" "1:decrypt-only 2:active" "$J"
wait_in_sync

step "the state survives a restart"
stop_service
start_service_shim
ok ctl --json provider list
json 'sorted(p["name"] for p in d)'; assert_eq "providers after the restart" '["other", "prod"]' "$J"
wait_in_sync

step "alpha's disk is full: it refuses the push, keeps its keys, the service retries"
sum_files "${HOST_DIR[alpha]}/keys.nkp" "${HOST_DIR[alpha]}/keys.nkp.log"; ALPHA_SUM=$J
event_count "${HOST_DIR[alpha]}" state.write_failed; ALPHA_EV=$J
shim_arm alpha "write enospc keys.nkp"
ok ctl provider create third
expect_fail ctl host wait --in-sync --timeout 3
ok ctl --json host list
json '{h["name"]: h["state"] for h in d}["alpha"]'; assert_eq "alpha's state" refused "$J"
json '{h["name"]: h["state"] for h in d}["bravo"]'; assert_eq "bravo's state" in-sync "$J"
event_count "${HOST_DIR[alpha]}" state.write_failed
[ "$J" -gt "$ALPHA_EV" ] || fail "alpha recorded no state.write_failed event"
ok ctl events
assert_contains "service events" "$OUT" "push.failed"
host_providers alpha; assert_eq "providers on alpha" "other prod" "$J"
sum_files "${HOST_DIR[alpha]}/keys.nkp" "${HOST_DIR[alpha]}/keys.nkp.log"
assert_eq "alpha's keys.nkp and its log" "$ALPHA_SUM" "$J"
check_dek alpha a1 vm-home "$A1"
ok hostctl alpha vm create --keysafe "$T/vm/a2" --vm-uuid "$(vm_uuid a2)" --vm-name a2
dek alpha a2; A2=$J

step "room again on alpha: it converges"
shim_clear alpha
wait_in_sync 30
host_providers alpha; assert_eq "providers on alpha" "other prod third" "$J"
check_dek alpha a1 vm-home "$A1"
check_dek bravo a2 vm-home "$A2"

it_pass
