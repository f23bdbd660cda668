#!/bin/bash
# Three hosts receive a backed-up provider; a keysafe made on one host
# unwraps to the same DEKs on every other host. Also: a provider that is not
# backed up makes no VM keys; --trusted providers reach no host (none has a
# attestation key); the default provider is followed; usage reaches `provider show`;
# VM key operations (components, rekey, decrypt); events and --follow.
. "$(dirname "$0")/lib.sh"
it_begin

step "a service and three enrolled hosts get in sync"
setup_cluster alpha bravo charlie

ok ctl --json host list
json 'sorted(h["name"] for h in d)'
assert_eq "host list names" '["alpha", "bravo", "charlie"]' "$J"
json 'sorted(set(["name", "address", "cluster", "state", "applied_generation", "last_error"]) - set().union(*[set(h) for h in d]))'
assert_eq "host list fields missing" '[]' "$J"
json '[h["address"] for h in d if h["name"] == "bravo"][0]'
assert_eq "bravo's address" "${HOST_URL[bravo]}" "$J"

step "a provider that is not backed up reaches the hosts but makes no VM keys"
ok ctl provider create prod --default
provider_json prod
json 'sorted(set(["name", "id", "default", "backed_up", "active_version", "versions", "hosts"]) - set(d))'
assert_eq "provider show fields missing" '[]' "$J"
json 'd["backed_up"]'; assert_eq "backed_up before backup" false "$J"
json 'd["default"]'; assert_eq "default" true "$J"
json 'd["active_version"]'; assert_eq "active_version" 1 "$J"
json 'len(d["id"]) == 32 and int(d["id"], 16) >= 0'; assert_eq "id is 32 hex digits" true "$J"
json 'd["id"]'; PROD_ID=$J
version_states_svc prod; assert_eq "versions (service)" "1:active" "$J"
wait_in_sync
for h in alpha bravo charlie; do
	version_states "$h" prod; assert_eq "versions on $h" "1:active" "$J"
done
expect_fail hostctl alpha vm create --keysafe "$T/vm/early" --vm-uuid "$(vm_uuid early)" --vm-name early
[ ! -e "$T/vm/early" ] || fail "a refused vm create left a keysafe behind"

step "after a backup, a keysafe made on alpha unwraps to the same DEKs on bravo and charlie"
ok ctl provider backup prod --out "$T/prod.backup" --password-file "$T/password"
[ -s "$T/prod.backup" ] || fail "backup file is empty"
provider_json prod
json 'd["backed_up"]'; assert_eq "backed_up after backup" true "$J"
wait_in_sync
provider_json prod
json 'd["hosts"]["in_sync"], d["hosts"]["total"]'; assert_eq "hosts in sync/total" "[3, 3]" "$J"

vm_create alpha web1
ok hostctl alpha vm add-disk --keysafe "$T/vm/web1" --disk 0
ok hostctl alpha vm add-vtpm --keysafe "$T/vm/web1"
vm_field alpha web1 'sorted(d["components"])'
assert_eq "components" '["disk:0", "vm-home", "vtpm"]' "$J"
ok hostctl bravo --json vm show --keysafe "$T/vm/web1"
json 'sorted(set(["provider_id", "provider_name", "primary_version", "key_id", "vm_uuid", "vm_name", "components", "attributes", "locked"]) - set(d))'
assert_eq "vm show fields missing" '[]' "$J"
json '[d["provider_id"], d["provider_name"], d["primary_version"], d["vm_uuid"], d["vm_name"], d["locked"]]'
assert_eq "vm show on bravo" "[\"$PROD_ID\", \"prod\", 1, \"$(vm_uuid web1)\", \"web1\", false]" "$J"
json 'd["attributes"].get("x-Name"), d["attributes"].get("x-Identifier")'
assert_eq "x-Name/x-Identifier attributes" "[\"web1\", \"$(vm_uuid web1)\"]" "$J"

declare -A WEB1
for c in vm-home disk:0 vtpm; do
	dek alpha web1 "$c"; WEB1[$c]=$J
	check_dek bravo web1 "$c" "${WEB1[$c]}"
	check_dek charlie web1 "$c" "${WEB1[$c]}"
done
assert_ne "disk:0 DEK vs vm-home DEK" "${WEB1[vm-home]}" "${WEB1[disk:0]}"

vm_create charlie db1 --provider prod
dek charlie db1; DB1=$J
assert_ne "DEKs of two VMs" "${WEB1[vm-home]}" "$DB1"
check_dek alpha db1 vm-home "$DB1"
check_dek bravo db1 vm-home "$DB1"

step "unwrap to a file (--force-file), raw and base64"
ok hostctl bravo vm unwrap --keysafe "$T/vm/web1" --component disk:0 --out "$T/disk0.key" --force-file
assert_eq "raw DEK file size" 32 "$(stat -c %s "$T/disk0.key")"
assert_eq "raw DEK file" "${WEB1[disk:0]}" "$(od -An -tx1 -v "$T/disk0.key" | tr -d ' \n')"
ok hostctl bravo vm unwrap --keysafe "$T/vm/web1" --component disk:0 --out - --format base64
assert_eq "base64 DEK" "${WEB1[disk:0]}" "$(printf '%s' "$OUT" | base64 -d | od -An -tx1 -v | tr -d ' \n')"

step "rekey: shallow keeps every DEK, deep makes new ones in a new keysafe"
vm_field alpha web1 'd["key_id"]'; KEYID=$J
ok hostctl bravo vm rekey --keysafe "$T/vm/web1"
for c in vm-home disk:0 vtpm; do
	check_dek alpha web1 "$c" "${WEB1[$c]}"
	check_dek charlie web1 "$c" "${WEB1[$c]}"
done
ok hostctl bravo vm rekey --keysafe "$T/vm/web1" --deep --out "$T/vm/web1-deep"
vm_field charlie web1-deep 'sorted(d["components"])'
assert_eq "deep rekey components" '["disk:0", "vm-home", "vtpm"]' "$J"
vm_field charlie web1-deep 'd["key_id"]'; assert_ne "key id after deep rekey" "$KEYID" "$J"
for c in vm-home disk:0 vtpm; do
	dek charlie web1-deep "$c"; assert_ne "DEK $c after deep rekey" "${WEB1[$c]}" "$J"
	check_dek alpha web1 "$c" "${WEB1[$c]}"
done

step "decrypt removes a component; vm-home goes last"
expect_fail hostctl alpha vm decrypt --keysafe "$T/vm/web1" --component vm-home
ok hostctl alpha vm decrypt --keysafe "$T/vm/web1" --component disk:0
vm_field bravo web1 'sorted(d["components"])'; assert_eq "components after decrypt" '["vm-home", "vtpm"]' "$J"
expect_fail hostctl bravo vm unwrap --keysafe "$T/vm/web1" --component disk:0 --out - --format hex
check_dek bravo web1 vtpm "${WEB1[vtpm]}"

step "a --trusted provider reaches no host (none has an attestation key)"
make_provider sealed --trusted
wait_in_sync
for h in alpha bravo charlie; do
	host_providers "$h"; assert_eq "providers on $h" "prod" "$J"
done
ok hostctl alpha status
assert_contains "nkp-hostctl status says how keys are kept at rest" "$OUT" "keys at rest: not protected"
ok hostctl alpha --json status
json 'd["keys_at_rest"], d["tpm"]'; assert_eq "status --json: keys at rest" '["not protected", false]' "$J"

step "set-default: new VM keys follow the default provider"
make_provider other
ok ctl provider set-default other
provider_json prod; json 'd["default"]'; assert_eq "prod default after set-default other" false "$J"
provider_json other; json 'd["default"]'; assert_eq "other default" true "$J"
ok ctl --json provider list
json 'sorted(p["name"] for p in d)'; assert_eq "provider list" '["other", "prod", "sealed"]' "$J"
wait_in_sync
vm_create bravo app1
vm_field alpha app1 'd["provider_name"]'; assert_eq "provider of a VM made without --provider" other "$J"
dek bravo app1; check_dek charlie app1 vm-home "$J"

step "hosts report usage per version; provider show has it"
# At least the unwraps above must show up once the hosts report (heartbeat 1 s).
usage_seen() {
	ctl --json provider show prod | "$PYTHON3" -c '
import json, sys
def walk(x):
    if isinstance(x, dict):
        for k, v in x.items():
            if "unwrap" in k.lower() and isinstance(v, int) and v > 0:
                return True
            if walk(v):
                return True
    if isinstance(x, list):
        return any(walk(v) for v in x)
    return False
sys.exit(0 if walk(json.load(sys.stdin)) else 1)'
}
wait_until 10 "provider show prod --json to count unwraps" usage_seen

step "events: read, and followed"
ok ctl events
assert_contains "events" "$OUT" "prod"
# Live, not only the history: --follow must first have printed every event
# there was when it started (one JSON object a line), then print one made
# after that, while it keeps running.
ok ctl --json events
json 'len(d)'
HISTORY=$J
"$NKPCTL" --socket "$SVC_SOCK" --json events --follow >"$T/follow.out" 2>>"$T/log/follow.log" &
FOLLOW=$!
IT_PIDS+=("$FOLLOW")
follow_lines() { [ "$(grep -c . "$T/follow.out")" -ge "$1" ]; }
wait_until 10 "events --follow to print the $HISTORY events of its start" follow_lines "$HISTORY"
assert_not_contains "events --follow before the provider exists" "$(cat "$T/follow.out")" latecomer
kill -0 "$FOLLOW" 2>/dev/null || fail "events --follow exited after the history"
ok ctl provider create latecomer
wait_until 10 "events --follow to print the creation of latecomer" grep -q latecomer "$T/follow.out"
kill -0 "$FOLLOW" 2>/dev/null || fail "events --follow exited after printing a live event"
"$PYTHON3" -c '
import json, sys
for l in open(sys.argv[1]):
    json.loads(l)' "$T/follow.out" || fail "events --json --follow printed a line that is not JSON"
kill -TERM "$FOLLOW"
wait "$FOLLOW"
FST=$?
forget_pid "$FOLLOW"
assert_eq "events --follow's exit status on SIGTERM" 0 "$FST"

it_pass
