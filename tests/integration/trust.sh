#!/bin/bash
# Keys pinned both ways: an unenrolled host gets nothing; a host pinned to
# another service key drops our handshakes unanswered, as it would any
# stranger's (host list shows it unreachable, with a last_error); a host
# enrolled under someone else's public key gets nothing either (our mac1 is
# keyed for that other key: dropped before any X25519); neither records an
# event per dropped frame; a removed host gets nothing new. `host wait --in-sync` fails while any
# enrolled host is not in sync.
. "$(dirname "$0")/lib.sh"
it_begin

step "a service with one good host"
setup_cluster alpha

step "lurker: pinned to our service, never enrolled"
host_init lurker
start_host lurker

step "rogue: pinned to another service's key, enrolled"
ok "$NKPD" init --state-dir "$T/other-svc"
OTHER_KEY=$(printf '%s\n' "$OUT" | tail -n 1)
check_pubkey "the other service's key" "$OTHER_KEY"
assert_ne "the other service's key" "$SVC_KEY" "$OTHER_KEY"
host_init rogue "$OTHER_KEY"
start_host rogue
enrol rogue

step "imposter: enrolled at its address but with alpha's public key"
host_init imposter
start_host imposter
ok ctl host add imposter --address "${HOST_URL[imposter]}" --public-key "${HOST_KEY[alpha]}"

step "a backed-up provider reaches only alpha"
make_provider prod --default
wait_states alpha prod "1:active"
expect_fail ctl host wait --in-sync --timeout 3
sleep 1
for h in lurker rogue imposter; do
	host_providers "$h"; assert_eq "providers on $h" "" "$J"
	host_generation "$h"; assert_eq "generation applied on $h" 0 "$J"
	expect_fail hostctl "$h" vm create --keysafe "$T/vm/$h" --vm-uuid "$(vm_uuid "$h")" --vm-name "$h"
done
ok ctl --json host list
json 'sorted(h["name"] for h in d)'; assert_eq "enrolled hosts" '["alpha", "imposter", "rogue"]' "$J"
for h in rogue imposter; do
	json "[h['last_error'] for h in d if h['name'] == '$h'][0] or ''"
	assert_ne "$h's last_error in host list" "" "$J"
	json "[h['state'] for h in d if h['name'] == '$h'][0]"; BAD_STATE=$J
	assert_eq "$h's state in host list" "unreachable" "$J"
done
json "[h['last_error'] for h in d if h['name'] == 'alpha'][0] or ''"
assert_eq "alpha's last_error in host list" "" "$J"
json "[h['state'] for h in d if h['name'] == 'alpha'][0]"
assert_ne "alpha's state vs a refusing host's" "$BAD_STATE" "$J"
provider_json prod
json 'd["hosts"]["in_sync"], d["hosts"]["total"]'; assert_eq "hosts in sync/total" "[1, 3]" "$J"
for h in rogue imposter; do
	# At most the one summary a minute (and one more at stop), never an
	# event per frame.
	n=$(grep -c '"kind":"input.bad"\|"kind":"tampering"' "${HOST_DIR[$h]}/events.jsonl" 2>/dev/null || true)
	[ "${n:-0}" -le 2 ] || fail "$h recorded an event per frame it dropped ($n events)"
	! grep '"kind":"input.bad"' "${HOST_DIR[$h]}/events.jsonl" 2>/dev/null | grep -qv 'unauthenticated frames dropped' ||
		fail "$h recorded a per-frame input.bad event"
done

step "enrolment errors"
expect_fail ctl host add alpha --address "${HOST_URL[lurker]}" --public-key "${HOST_KEY[lurker]}"
expect_fail ctl host remove nosuch
run ctl host add bad --address "${HOST_URL[lurker]}" --public-key "not-a-key"
[ "$RC" = 1 ] || [ "$RC" = 2 ] || fail "host add with a bad key: expected exit 1 or 2, got $RC: $ERR"

step "removed hosts leave the host list and get nothing new"
ok ctl host remove rogue --force
ok ctl host remove imposter --force
wait_in_sync 10
ok ctl host remove alpha
ok ctl --json host list
json 'len(d)'; assert_eq "hosts after removing all" 0 "$J"
make_provider later
sleep 2
host_providers alpha; assert_not_contains "providers on the removed alpha" "$J" "later"

it_pass
