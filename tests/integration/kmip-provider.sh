#!/bin/bash
# A standard provider on nkpd: its KMS cluster (PyKMIP's server, loopback,
# certificates made here) checked when it is created and watched after:
#   - create with two servers (a closed port first) and show: kind, each
#     server's state and reason, the spare pool; refused when no server
#     answers, for a server certificate from another CA, a key that is not
#     the certificate's, an unknown kind, KMS options without --kind;
#   - spare keys: --spare-pool per host made on the KMS (Active there,
#     and fetched by PyKMIP's own client), at once for a host enrolled later;
#     PyKMIP refuses x- attributes: one kms.attributes_unsupported; a
#     removed host's spares revoked and destroyed on the KMS;
#   - what a standard provider is not: rotate, backup, set-default and
#     --default are refused with the reason; hosts are not given it;
#   - the KMS stopped: kms.unreachable (server and reason) and
#     `provider show` says unreachable; started again: kms.reachable;
#   - nkpd restarted: the provider and its servers are still there, checked
#     again at start; the client key is nowhere in the state directory in
#     clear; delete removes it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-kmip.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
kmip_python

KD=$T/kms
mkdir -p "$KD"
kmip_certs "$KD"
kmip_start_pykmip "$KD"
DEAD=$(free_port)

# std_create NAME ARGS...: a standard provider on the PyKMIP server.
std_args() {
	STD=(--kind standard --kms "kmip://localhost:$DEAD" --kms "kmip://localhost:$KMIP_PORT"
		--kms-ca "$KD/ca.crt" --kms-cert "$KD/cli.crt" --kms-key "$KD/cli.key")
}
std_args

step "nkpd with a native default provider and one host"
service_init
start_service --kms-check-interval 1
host_init alpha
start_host alpha
enrol alpha
make_provider prod --default
wait_in_sync

step "create a standard provider: both servers asked, one answers"
ok ctl provider create std "${STD[@]}" --spare-pool 4
ok ctl --json provider show std
json 'd["kind"], d["spare_pool"], d["keys_in_use"], [s["state"] for s in d["kms"]]'
assert_eq "standard provider" "[\"standard\", 4, 0, [\"unreachable\", \"reachable\"]]" "$J"
json 'd["kms"][0]["error"]'
assert_contains "the dead server's reason" "$J" "cannot connect"
json 'd["backed_up"], d["versions"], d["default"]'
assert_eq "no versions, nothing to back up" "[true, [], false]" "$J"
ok ctl provider show std
assert_contains "show" "$OUT" "kind:           standard"
assert_contains "show" "$OUT" "kmip://localhost:$KMIP_PORT"

step "spare keys: 4 per host made on the KMS, Active there; x- attributes refused once"
# shellcheck disable=SC2317 # called through wait_until
spares() { # J=the number of spare keys of std
	ok ctl --json provider show std
	json 'd["spares"]'
}
# shellcheck disable=SC2317 # called through wait_until
spares_are() { spares && [ "$J" = "$1" ]; }
wait_until 30 "4 spares for alpha" spares_are 4
ok ctl --json provider show std
json '[(k["state"], k["host"], k["attributes_set"]) for k in d["kms_keys"]]'
assert_eq "spares" '[["spare", "alpha", false], ["spare", "alpha", false], ["spare", "alpha", false], ["spare", "alpha", false]]' "$J"
json '" ".join(k["id"] for k in d["kms_keys"])'
for id in $J; do
	ok kmip_py state "$id"
	assert_eq "key $id on the KMS" ACTIVE "$OUT"
	ok kmip_py fingerprint "$id"
done
event_count "$SVC_DIR" kms.attributes_unsupported
assert_eq "kms.attributes_unsupported events" 1 "$J"

step "a second host: its spares are made at once"
host_init bravo
start_host bravo
enrol bravo
wait_until 30 "8 spares" spares_are 8
ok ctl --json provider show std
json 'sorted(set(k["host"] for k in d["kms_keys"]))'
assert_eq "hosts with spares" '["alpha", "bravo"]' "$J"

step "bravo removed: its spares are destroyed on the KMS and dropped"
json '" ".join(k["id"] for k in d["kms_keys"] if k["host"] == "bravo")'
BRAVO_KEYS=$J
ok ctl host remove bravo
wait_until 30 "bravo's spares dropped" spares_are 4
for id in $BRAVO_KEYS; do
	expect_fail kmip_py state "$id"
done
stop_host bravo

step "refused: no server answers, another CA, a key not the certificate's, bad options"
expect_fail ctl provider create bad1 --kind standard --kms "kmip://localhost:$DEAD" \
	--kms-ca "$KD/ca.crt" --kms-cert "$KD/cli.crt" --kms-key "$KD/cli.key"
assert_contains "no server" "$ERR" "no KMS server answered"
expect_fail ctl provider create bad2 --kind standard --kms "kmip://localhost:$KMIP_PORT" \
	--kms-ca "$KD/ca2.crt" --kms-cert "$KD/cli.crt" --kms-key "$KD/cli.key"
assert_contains "another CA" "$ERR" "certificate"
expect_fail ctl provider create bad3 --kind standard --kms "kmip://localhost:$KMIP_PORT" \
	--kms-ca "$KD/ca.crt" --kms-cert "$KD/cli.crt" --kms-key "$KD/srv.key"
assert_contains "key mismatch" "$ERR" "does not match"
expect_exit 2 ctl provider create bad4 --kind external
expect_exit 2 ctl provider create bad5 \
	--kms "kmip://localhost:$KMIP_PORT"
expect_exit 2 ctl provider create bad6 --kind standard \
	--kms "kmip://localhost:$KMIP_PORT" --kms-ca "$KD/ca.crt" --kms-cert "$KD/cli.crt"
ok ctl --json provider list
json 'sorted(p["name"] for p in d)'
assert_eq "providers" '["prod", "std"]' "$J"

step "what a standard provider is not: rotated, backed up, the default"
expect_fail ctl provider rotate std
assert_contains "rotate" "$ERR" "vm rekey"
echo "a password for nothing" >"$T/pw"
expect_fail ctl provider backup std --out "$T/std.nkpbackup" --password-file "$T/pw"
assert_contains "backup" "$ERR" "back the KMS up"
expect_fail ctl provider set-default std
expect_fail ctl provider create std2 "${STD[@]}" --default
wait_in_sync
host_providers alpha
assert_eq "providers on alpha" "prod" "$J"

step "the KMS stops: kms.unreachable, and show says why"
kmip_stop_pykmip
wait_until 20 "kms.unreachable for the second server" \
	grep -q "\"kind\":\"kms.unreachable\".*localhost:$KMIP_PORT" "$SVC_DIR/events.jsonl"
ok ctl --json provider show std
json '[s["state"] for s in d["kms"]]'
assert_eq "states" '["unreachable", "unreachable"]' "$J"

step "the KMS is back: kms.reachable"
kmip_start_pykmip "$KD" "$KMIP_PORT"
wait_until 20 "kms.reachable" grep -q '"kind":"kms.reachable"' "$SVC_DIR/events.jsonl"
ok ctl --json provider show std
json '[s["state"] for s in d["kms"]]'
assert_eq "states" '["unreachable", "reachable"]' "$J"

step "nkpd restarted: the provider is kept, its servers checked again"
stop_service
start_service --kms-check-interval 1
ok ctl --json provider show std
json 'd["kind"], d["spare_pool"], [s["url"] for s in d["kms"]], d["spares"]'
assert_eq "kept" "[\"standard\", 4, [\"kmip://localhost:$DEAD\", \"kmip://localhost:$KMIP_PORT\"], 4]" "$J"
wait_until 20 "the second server checked since the restart" \
	sh -c "'$NKPCTL' --socket '$SVC_SOCK' --json provider show std | grep -q '\"state\":\"reachable\"'"

step "the client key is nowhere in the state directory in clear"
# Its base64 body, and the DER it decodes to.
KEY_B64=$(grep -v -- '-----' "$KD/cli.key" | tr -d '\n')
KEY_DER=$(printf '%s' "$KEY_B64" | base64 -d | od -An -tx1 | tr -d ' \n')
for f in "$SVC_DIR"/*; do
	[ -f "$f" ] || continue
	if grep -qF "${KEY_B64:0:40}" "$f"; then
		fail "the client key's PEM is in $f"
	fi
	if od -An -tx1 "$f" | tr -d ' \n' | grep -qF "${KEY_DER:0:64}"; then
		fail "the client key's DER is in $f"
	fi
done

step "delete removes it"
ok ctl provider delete std
expect_fail ctl provider show std
wait_in_sync
host_providers alpha
assert_eq "providers on alpha" "prod" "$J"

kmip_stop_pykmip
it_pass
