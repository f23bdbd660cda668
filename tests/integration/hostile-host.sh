#!/bin/bash
# A hostile enrolled host: an nkp-hostd built with -Dtest-hooks=true whose
# replies lie (NKP_TEST_HOSTILE, hostd-plugin/plugin/service.c): generations near
# 2^64 of our epoch and of another, 2^64-1 keysafes for every version
# (pushed or not, each twice), a TPM claim, a host name and refusals full of
# terminal escapes, and acks that replay an old digest. Meanwhile an honest
# host and nkpd keep working, and nothing honest is lost or hidden:
# - nkpd adopts no generation: the hostile host is in conflict (one
#   host.conflict event per streak), never counted in sync, pushed nothing
#   until `nkpctl host resync`, and nkpd does not loop on commits;
# - a rotation waits for it (it is in scope) and is promoted by --force,
#   naming it; the honest host got the new version;
# - retire is refused naming the honest host's real use (the hostile
#   host's counts are ignored: nothing was pushed to it), and allowed right
#   after the rewrap without --force;
# - delete reaches the honest host: the provider no longer unwraps there;
# - a trusted provider reaches no host, whatever the TPM claim;
# - host list, events and --json show no raw escape byte;
# - after a resync, its replayed acks do not make it count as in sync, and
#   its absurd counts for pushed versions are capped, not wrapped.
. "$(dirname "$0")/lib.sh"
it_begin

# NKP_HOSTD_HOSTILE: the hostile host's binary (default: $NKP_HOSTD), so
# this test can run against another build's nkpd and honest host.
HOSTILE_HOSTD=${NKP_HOSTD_HOSTILE:-$NKP_HOSTD}
grep -qa NKP_TEST_HOSTILE "$HOSTILE_HOSTD" ||
	it_skip "nkp-hostd was built without -Dtest-hooks=true (no hostile-host hooks)"

LIES=generation,usage,tpm,escapes,replay

# status_generation: J = nkpd's generation counter.
status_generation() {
	ok ctl --json status
	json 'd["generation"]'
}

# host_state NAME: J = NAME's state in `host list --json`.
host_state() {
	ok ctl --json host list
	json '[h["state"] for h in d if h["name"] == "'"$1"'"][0]'
}

# Exit 0 when host NAME shows STATE (for wait_until).
host_in_state() {
	ctl --json host list | "$PYTHON3" -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(h["name"] == sys.argv[1] and h["state"] == sys.argv[2] for h in d) else 1)' "$1" "$2"
}

# conflict_events: J = how many conflicts nkpd reported (host.conflict
# events also record an operator's resync request).
conflict_events() {
	ok ctl --json events
	json 'sum(1 for e in d if e["kind"] == "host.conflict" and "holds generation" in e["message"])'
}

# Exit 0 once host NAME's last contact is later than SINCE (its string).
contact_after() {
	ctl --json host list | "$PYTHON3" -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(h["name"] == sys.argv[1] and h["last_contact"] > sys.argv[2] for h in d) else 1)' "$1" "$2"
}

# no_raw_controls WHAT TEXT: no ESC, BEL, DEL, C1 (raw or UTF-8) byte.
no_raw_controls() {
	if printf '%s' "$2" | LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f\x80-\x9f]'; then
		# bytes 0x80-0x9f also start nothing valid on their own; allow them
		# only as continuation bytes of UTF-8 characters that are not C1.
		printf '%s' "$2" | "$PYTHON3" -c '
import sys
b = sys.stdin.buffer.read()
bad = [c for c in b if c < 0x20 and c not in (9, 10)] + ([0x7f] if 0x7f in b else [])
try:
    s = b.decode("utf-8")
except UnicodeDecodeError:
    sys.exit("not UTF-8")
bad += [ord(c) for c in s if 0x80 <= ord(c) <= 0x9f]
sys.exit("control bytes %r" % bad if bad else 0)' || fail "$1: raw control bytes in:
$2"
	fi
}

step "a service, an honest host, a provider in use on it"
service_init
start_service
host_init honest
start_host honest
enrol honest
make_provider gold --default
wait_in_sync
provider_json gold
json 'd["id"]'
GOLD_ID=$J
vm_create honest v1
dek honest v1
V1_DEK=$J

step "a hostile host enrols: it claims generation 2^64-2, a TPM, absurd usage, escapes"
NKP_HOSTD=$HOSTILE_HOSTD host_init evil
NKP_HOSTD=$HOSTILE_HOSTD NKP_TEST_HOSTILE=$LIES NKP_TEST_HOSTILE_PROVIDERS=$GOLD_ID start_host evil
status_generation
GEN0=$J
enrol evil
wait_until 20 "evil to answer" contact_after evil -
status_generation
assert_eq "nkpd's generation after the lies (nothing adopted)" "$GEN0" "$J"
wait_until 20 "evil to be shown in conflict" host_in_state evil conflict
ok ctl --json host list
json '[h["state"] for h in d if h["name"] == "honest"][0]'
assert_eq "the honest host's state" in-sync "$J"
json '[h["tpm"] for h in d if h["name"] == "evil"][0]'
assert_eq "the TPM claim is shown as a claim" true "$J"
json '[h["attestation"] for h in d if h["name"] == "evil"][0]'
assert_eq "the TPM claim is not attestation (no attestation key pinned)" none "$J"
json '[h["host_name"] for h in d if h["name"] == "evil"][0]'
assert_eq "evil's host name, sanitised" "evilhost?31m1m" "$J"
conflict_events
assert_eq "host.conflict events" 1 "$J"
host_providers evil
assert_eq "providers pushed to the host in conflict" "" "$J"
provider_json gold
json '[v["usage"]["keysafes"] for v in d["versions"] if v["version"] == 1][0]'
assert_eq "keysafes under gold v1 (evil's reports ignored: nothing was pushed to it)" 1 "$J"

step "a rotation waits for the host in conflict; --force promotes it, naming it"
ok ctl --json provider rotate gold --timeout 3 --force
ok ctl --json provider show gold
json 'd["rotation"]["state"]'
assert_eq "rotation state" promoted "$J"
json 'd["rotation"]["missing"]'
assert_eq "hosts missing from the rotation" '["evil"]' "$J"
wait_states honest gold "1:decrypt-only 2:active"

step "retire is refused naming the honest host's use, and allowed right after the rewrap"
expect_fail ctl provider retire gold --version 1
assert_contains "the refusal names the honest host's count" "$ERR" "honest: 1"
assert_not_contains "the refusal counts nothing for the hostile host" "$ERR" "evil:"
expect_fail ctl --json provider retire gold --version 1
json '[(h["host"], h["version"], h["keysafes"]) for h in d["hosts"]]'
assert_eq "the refusal in JSON" '[["honest", 1, 1]]' "$J"
ok hostctl honest vm rewrap --keysafe "$T/vm/v1"
ok ctl provider retire gold --version 1
wait_states honest gold "2:active"
check_dek honest v1 vm-home "$V1_DEK"

step "delete reaches the honest host: the provider no longer unwraps there"
make_provider temp
wait_until 10 "honest to hold temp" bash -c '"$0" --socket "$1" --json status | grep -q "\"temp\""' \
	"$NKP_HOSTCTL" "${HOST_DIR[honest]}/host.sock"
vm_create honest t1 --provider temp
expect_fail ctl provider delete temp
assert_contains "the delete refusal names the honest host" "$ERR" "honest: 1"
ok ctl provider delete temp --force
wait_states honest temp ""
expect_fail hostctl honest vm unwrap --keysafe "$T/vm/t1" --component vm-home --out - --format hex

step "a trusted provider reaches no host, whatever a host claims"
ok ctl provider create sealed --trusted
provider_json sealed
json 'd["hosts"]["total"]'
assert_eq "hosts in scope of a trusted provider" 0 "$J"
json 'd["scope_note"]'
assert_contains "provider show says why" "$J" "no host is attested"
status_generation
GEN_SEALED=$J
wait_until 10 "honest to apply the generation with sealed" bash -c \
	'[ "$("$0" --socket "$1" --json status | "$2" -c "import json,sys; print(json.load(sys.stdin)[\"generation\"])")" = "$3" ]' \
	"$NKP_HOSTCTL" "${HOST_DIR[honest]}/host.sock" "$PYTHON3" "$GEN_SEALED"
host_providers honest
assert_eq "providers on the honest host" gold "$J"
host_providers evil
assert_eq "providers on the hostile host" "" "$J"

step "no raw escape byte reaches host list, events or JSON"
wait_until 20 "a refusal from evil to be recorded" bash -c \
	'"$0" --socket "$1" --json events | grep -q "host evil: generation .* not delivered\|host refused"' \
	"$NKPCTL" "$SVC_SOCK"
ok ctl host list
no_raw_controls "host list" "$OUT"
ok ctl --json host list
no_raw_controls "host list --json" "$OUT"
json '[h["host_name"] for h in d]'
ok ctl events
no_raw_controls "events" "$OUT"
ok ctl --json events
no_raw_controls "events --json" "$OUT"
json 'len(d)'

step "nkpd does not loop on commits: the generation moves only with our changes"
status_generation
G1=$J
ok ctl --json host list
json '[h["last_contact"] for h in d if h["name"] == "evil"][0]'
SEEN=$J
wait_until 20 "evil to be heard again" contact_after evil "$SEEN"
ok ctl --json host list
json '[h["last_contact"] for h in d if h["name"] == "evil"][0]'
wait_until 20 "evil to be heard once more" contact_after evil "$J"
status_generation
assert_eq "generation after more lies" "$G1" "$J"
# rotate: stage + promote; retire; temp: create + backup; delete; sealed.
assert_eq "commits since the hostile host enrolled" 7 "$((G1 - GEN0))"
conflict_events
assert_eq "host.conflict events (one streak)" 1 "$J"

step "resync: the host takes our state, but its replayed acks never count as in sync"
ok ctl host resync evil
wait_until 20 "evil to apply the resync push" grep -q "(resync)" "$T/log/host-evil.log"
wait_until 20 "evil to be in conflict again" host_in_state evil conflict
conflict_events
assert_eq "host.conflict events (a second streak)" 2 "$J"
host_providers evil
assert_eq "providers on evil after the resync" gold "$J"
provider_json gold
json '[v["usage"]["keysafes"] for v in d["versions"] if v["version"] == 2][0]'
KS=$J
[ "$KS" -ge 4294967296 ] && [ "$KS" -le 4294967297 ] ||
	fail "keysafes under gold v2: expected evil's count capped at 2^32 plus honest's one, got $KS"
expect_fail ctl host wait --in-sync --timeout 2
assert_contains "host wait names the hostile host" "$ERR" "evil"
status_generation
assert_eq "generation after the resync" "$G1" "$J"

it_pass
