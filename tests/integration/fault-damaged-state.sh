#!/bin/bash
# A damaged state file (a flipped byte, a truncated file, garbage, an empty
# file): nkpd refuses to start (exit 1, no admin socket) with a message
# that says what is wrong and what to do, and overwrites nothing; following
# that advice (the previous copy, state.nkp.prev) it starts again. A host
# with a damaged keys.nkp refuses to start the same way; moved aside as its
# message says, it starts empty and the service pushes its keys back.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "a service with one host and a backed-up provider"
setup_cluster alpha
make_provider prod --default
ok ctl provider create second
wait_in_sync
vm_create alpha a1
dek alpha a1; A1=$J
stop_service
stop_host alpha
cp "$SVC_DIR/state.nkp" "$T/state.good"
cp "${HOST_DIR[alpha]}/keys.nkp" "$T/keys.good"
cp "${HOST_DIR[alpha]}/keys.nkp.log" "$T/keylog.good"

svc_files() { sum_files "$SVC_DIR/state.nkp" "$SVC_DIR/state.nkp.prev" "$SVC_DIR/identity.nkp" "$SVC_DIR/seal.key"; }

# damage FILE HOW: flip | truncate | garbage | empty
damage() {
	"$PYTHON3" - "$1" "$2" <<'PY' || fail "cannot damage $1"
import os, sys
p, how = sys.argv[1], sys.argv[2]
b = bytearray(open(p, "rb").read())
if how == "flip":
    b[len(b) // 2] ^= 0x01
elif how == "truncate":
    b = b[: len(b) - 17]
elif how == "garbage":
    b = bytearray(os.urandom(len(b)))
elif how == "empty":
    b = bytearray()
open(p, "wb").write(bytes(b))
PY
}

# refuses_to_start WHAT CMD...: exit 1 within 10 s, one clear message.
refuses_to_start() {
	local what=$1
	shift
	run timeout -k 2 10 "$@"
	[ "$RC" = 1 ] || fail "$what: expected exit 1, got $RC
stderr: $ERR"
	[ -n "$ERR" ] || fail "$what: no message on stderr"
}

for how in flip truncate garbage empty; do
	step "nkpd with a state file damaged ($how)"
	cp "$T/state.good" "$SVC_DIR/state.nkp"
	damage "$SVC_DIR/state.nkp" "$how"
	svc_files; BEFORE=$J
	refuses_to_start "nkpd ($how)" "$NKPD" run --state-dir "$SVC_DIR" --heartbeat 1
	assert_contains "nkpd's message ($how)" "$ERR" "$SVC_DIR/state.nkp"
	assert_contains "nkpd's message ($how)" "$ERR" "will not start"
	assert_contains "nkpd's message ($how): what to do" "$ERR" "state.nkp.prev"
	assert_contains "nkpd's message ($how): what to do" "$ERR" "provider restore"
	svc_files; assert_eq "state files after the refusal ($how)" "$BEFORE" "$J"
	[ -e "$SVC_DIR/admin.sock" ] && fail "nkpd left an admin socket ($how)"
	J=$(find "$SVC_DIR" -name '*.tmp.*' | wc -l)
	assert_eq "temp files ($how)" 0 "$J"
done
event_count "$SVC_DIR" tampering
[ "$J" -ge 4 ] || fail "expected a tampering event per refused start, got $J"

step "following the advice: state.nkp.prev brings nkpd back"
cp "$SVC_DIR/state.nkp.prev" "$SVC_DIR/state.nkp"
start_service
ok ctl --json provider list
json '"prod" in [p["name"] for p in d]'; assert_eq "prod after restoring .prev" true "$J"
stop_service
cp "$T/state.good" "$SVC_DIR/state.nkp"
start_service

for how in flip truncate garbage; do
	step "nkp-hostd with keys.nkp damaged ($how)"
	cp "$T/keys.good" "${HOST_DIR[alpha]}/keys.nkp"
	damage "${HOST_DIR[alpha]}/keys.nkp" "$how"
	sum_files "${HOST_DIR[alpha]}/keys.nkp"; BEFORE=$J
	refuses_to_start "nkp-hostd ($how)" "$NKP_HOSTD" run --state-dir "${HOST_DIR[alpha]}" \
		--listen "${HOST_URL[alpha]}"
	assert_contains "nkp-hostd's message ($how)" "$ERR" "keys.nkp"
	assert_contains "nkp-hostd's message ($how): what to do" "$ERR" "move it aside"
	sum_files "${HOST_DIR[alpha]}/keys.nkp"; assert_eq "keys.nkp after the refusal ($how)" "$BEFORE" "$J"
done

step "nkp-hostd with keys.nkp.log damaged before a good record"
cp "$T/keys.good" "${HOST_DIR[alpha]}/keys.nkp"
cp "$T/keylog.good" "${HOST_DIR[alpha]}/keys.nkp.log"
"$PYTHON3" - "${HOST_DIR[alpha]}/keys.nkp.log" <<'PY' || fail "cannot damage keys.nkp.log"
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = int.from_bytes(b[0:4], "little")
if 4 + n >= len(b):
    sys.exit("keys.nkp.log holds fewer than two records")
b[4 + n - 3] ^= 0x01
open(p, "wb").write(bytes(b))
PY
sum_files "${HOST_DIR[alpha]}/keys.nkp" "${HOST_DIR[alpha]}/keys.nkp.log"; BEFORE=$J
refuses_to_start "nkp-hostd (log)" "$NKP_HOSTD" run --state-dir "${HOST_DIR[alpha]}" \
	--listen "${HOST_URL[alpha]}"
assert_contains "nkp-hostd's message (log)" "$ERR" "keys.nkp.log"
assert_contains "nkp-hostd's message (log): what to do" "$ERR" "move it aside"
sum_files "${HOST_DIR[alpha]}/keys.nkp" "${HOST_DIR[alpha]}/keys.nkp.log"
assert_eq "keys.nkp and its log after the refusal" "$BEFORE" "$J"

step "keys.nkp moved aside: alpha starts empty and the service pushes its keys back"
mv "${HOST_DIR[alpha]}/keys.nkp" "$T/keys.damaged"
start_host alpha
wait_in_sync 30
host_providers alpha; assert_eq "providers on alpha" "prod second" "$J"
check_dek alpha a1 vm-home "$A1"

it_pass
