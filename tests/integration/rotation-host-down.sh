#!/bin/bash
# A host stopped during a rotation: the rotation waits and fails at its
# deadline naming that host (the new version stays staged on the others);
# --force promotes; the restarted host catches up with the promoted state.
. "$(dirname "$0")/lib.sh"
it_begin

step "three hosts and a backed-up default provider"
setup_cluster alpha bravo charlie
make_provider prod --default
wait_in_sync
vm_create charlie c1
dek charlie c1; C1=$J

step "charlie hangs (SIGSTOP): rotate --timeout 3 fails naming charlie"
pause_host charlie
expect_fail ctl provider rotate prod --timeout 3
assert_contains "rotate's error" "$ERR" "charlie"
assert_not_contains "rotate's error" "$ERR" "alpha"
assert_not_contains "rotate's error" "$ERR" "bravo"
version_states_svc prod; assert_eq "versions (service) after the failed rotate" "1:active 2:staged" "$J"
for h in alpha bravo; do
	version_states "$h" prod; assert_eq "versions on $h (staged)" "1:active 2:staged" "$J"
done
ok ctl events
assert_contains "events after the failed rotate" "$OUT" "charlie"

step "while staged, new keysafes still use version 1"
vm_create alpha a1
vm_field alpha a1 'd["primary_version"]'; assert_eq "a1's version" 1 "$J"
dek alpha a1; A1=$J

step "charlie dies; host wait fails; rotate --force promotes at its deadline"
crash_host charlie
expect_fail ctl host wait --in-sync --timeout 2
ok ctl provider rotate prod --timeout 2 --force
version_states_svc prod; assert_eq "versions (service) after --force" "1:decrypt-only 2:active" "$J"
for h in alpha bravo; do
	wait_states "$h" prod "1:decrypt-only 2:active"
done
provider_json prod
json 'd["hosts"]["in_sync"], d["hosts"]["total"]'; assert_eq "hosts in sync/total" "[2, 3]" "$J"
vm_create bravo b2
vm_field bravo b2 'd["primary_version"]'; assert_eq "b2's version" 2 "$J"
dek bravo b2; B2=$J

step "charlie restarts and catches up"
applied_pushes() { # HOST: J=keys.applied events in its event log
	J=$(grep -c '"kind":"keys.applied"' "${HOST_DIR[$1]}/events.jsonl" 2>/dev/null)
}
applied_pushes charlie; BEFORE=$J
start_host charlie
# The service retries charlie with backoff (at most 30 s, usually far less).
wait_in_sync 30
applied_pushes charlie
assert_eq "pushes charlie applied to catch up" 1 "$((J - BEFORE))"
version_states charlie prod; assert_eq "versions on charlie after catching up" "1:decrypt-only 2:active" "$J"
ok ctl --json host list
json 'sorted(set(h["applied_generation"] for h in d))'
json 'len(d) == 1' "$J"
assert_eq "every host applied the same generation" true "$J"
check_dek charlie b2 vm-home "$B2"
check_dek charlie a1 vm-home "$A1"
check_dek charlie c1 vm-home "$C1"
check_dek alpha c1 vm-home "$C1"
vm_create charlie c2
vm_field charlie c2 'd["primary_version"]'; assert_eq "c2's version" 2 "$J"

it_pass
