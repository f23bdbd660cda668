#!/bin/bash
# Replays and stolen host state get nothing (docs/PROTOCOL.md, "Threats").
# The host is enrolled at the address of a recording relay (nngrelay), so
# the service's frames to it are captured. A captured push (a Transport
# frame) replayed while the honest session lives, after the service
# stopped, and after the host restarted gets no answer and changes nothing,
# and the honest session keeps working. A captured HandshakeInit replayed
# gets no answer either (after a host restart it gets a HandshakeResp: that
# pending session is of no use to anyone). Then a thief with a copy of the host's state
# directory (its static secret and the pinned service key: statethief)
# tries to decrypt every recorded frame and to have a forged push applied:
# nothing decrypts, the forged push gets no answer.
. "$(dirname "$0")/lib.sh"
it_begin

# no_answer WHAT FILE: FILE sent to the host's listener gets no reply.
no_answer() {
	run "$NNGPOKE" --timeout 1000 "${HOST_URL[alpha]}" --file "$2"
	[ "$RC" = 3 ] || fail "$1: expected no answer (nngpoke exit 3), got exit $RC: $OUT $ERR"
}

# no_answer_all WHAT FILE...: each FILE sent on its own connection, six at
# a time (the host admits eight connections from one address); none gets a
# reply.
no_answer_all() {
	local what=$1
	shift
	while [ $# -gt 0 ]; do
		no_answer_batch "$what" "${@:1:6}"
		shift $(($# < 6 ? $# : 6))
	done
}
no_answer_batch() {
	local what=$1 f p rc pids=() files=()
	shift
	for f in "$@"; do
		"$NNGPOKE" --timeout 2000 "${HOST_URL[alpha]}" --file "$f" >/dev/null 2>&1 &
		pids+=("$!")
		files+=("$f")
	done
	IT_PIDS+=("${pids[@]}")
	for i in "${!pids[@]}"; do
		p=${pids[$i]}
		wait "$p"
		rc=$?
		forget_pid "$p"
		[ "$rc" = 3 ] || fail "$what: ${files[$i]##*/}: expected no answer (exit 3), got exit $rc"
	done
}

step "a service and one host, enrolled through a recording relay"
service_init
start_service
host_init alpha
start_host alpha
RELAY_URL=tcp://127.0.0.1:$(free_port)
relay_start alpha "$RELAY_URL" "${HOST_URL[alpha]}"
enrol alpha "$RELAY_URL"
wait_in_sync

step "two providers reach the host; the pushes are captured"
make_provider keep --default
make_provider temp
wait_in_sync
host_providers alpha; assert_eq "providers on alpha" "keep temp" "$J"
# The largest request the relay saw is a push with both providers (a Hello
# is about 70 bytes); it travelled in a Transport frame.
PUSH=$(ls -S "$T"/relay-alpha/*.req 2>/dev/null | head -n 1)
[ -n "$PUSH" ] || fail "the relay recorded no request"
cp "$PUSH" "$T/push.bin"
SIZE=$(stat -c %s "$T/push.bin")
[ "$SIZE" -gt 200 ] || fail "the largest captured request ($SIZE bytes) is too small to be a push"
frame_kind "$T/push.bin"; assert_eq "the captured push's frame" "transport" "$J"
INIT=""
for f in "$T"/relay-alpha/*.req; do
	frame_kind "$f"
	if [ "$J" = init ]; then INIT=$f; break; fi
done
[ -n "$INIT" ] || fail "the relay recorded no HandshakeInit"
for f in "$T"/relay-alpha/*.req; do
	frame_kind "$f"
	case $J in init|transport) ;; *) fail "a request in the clear or of another kind: ${f##*/}: $J" ;; esac
done
log "captured push: $SIZE bytes"

step "temp is deleted everywhere"
ok ctl provider delete temp --force
wait_in_sync
host_providers alpha; assert_eq "providers on alpha after delete" "keep" "$J"
host_generation alpha; GEN=$J
EVENTS=${HOST_DIR[alpha]}/events.jsonl
N0=$(wc -l <"$EVENTS")

step "the captured push and handshake replayed while the session lives: no answer"
no_answer "the replayed push" "$T/push.bin"
no_answer "the replayed HandshakeInit" "$INIT"
# Dropped without a reply, counted, and summed up in at most one event a
# minute (not one per frame).
ok hostctl alpha --json status
json 'd["dropped_frames"]'
[ "$J" -ge 2 ] || fail "the replays were not counted as dropped ($J)"
log "the replays: no reply; dropped frames $J"
host_providers alpha; assert_eq "providers on alpha after the replay" "keep" "$J"
host_generation alpha; assert_eq "alpha's generation after the replay" "$GEN" "$J"
N1=$(wc -l <"$EVENTS")
# At most the one summary event a minute (guard.c), never one per frame.
[ $((N1 - N0)) -le 1 ] || fail "host events recorded for the replays: $((N1 - N0)) (at most one summary)"

step "the honest session keeps working"
make_provider after
wait_in_sync
host_providers alpha; assert_eq "providers on alpha" "after keep" "$J"
host_generation alpha; GEN=$J
stop_service

step "every captured request replayed with the service down: none changes the host"
no_answer_all "replayed" "$T"/relay-alpha/*.req
host_providers alpha; assert_eq "providers on alpha after replaying everything" "after keep" "$J"
host_generation alpha; assert_eq "alpha's generation after replaying everything" "$GEN" "$J"

step "the same after the host restarts, and after it crashes"
stop_host alpha
start_host alpha
no_answer "the replayed push after a restart" "$T/push.bin"
# The host keeps the last handshake timestamp in memory only: after a
# restart a replayed init is answered, and makes a pending session no one
# can use (its keys need the service's ephemeral secret, long gone).
run "$NNGPOKE" --timeout 2000 --out "$T/resp.bin" "${HOST_URL[alpha]}" --file "$INIT"
[ "$RC" = 0 ] || fail "the replayed init after a restart: exit $RC"
frame_kind "$T/resp.bin"; assert_eq "the answer to a replayed init after a restart" "resp" "$J"
no_answer "the replayed push after that" "$T/push.bin"
crash_host alpha
start_host alpha
no_answer "the replayed push after a crash" "$T/push.bin"
host_providers alpha; assert_eq "providers on alpha after restarts and replays" "after keep" "$J"
host_generation alpha; assert_eq "alpha's generation after restarts and replays" "$GEN" "$J"

step "a thief with a copy of the host's state directory"
cp -a "${HOST_DIR[alpha]}" "$T/stolen"
run "$STATETHIEF" "$T/stolen" "$T/relay-alpha" "${HOST_URL[alpha]}"
log "statethief: $OUT"
[ "$RC" = 0 ] || fail "the thief got something (statethief exit $RC): $OUT $ERR"
assert_contains "statethief's report" "$OUT" "transport frames decrypted: 0 of"
assert_contains "statethief's report" "$OUT" "forged push answered: no"
host_providers alpha; assert_eq "providers on alpha after the forgery" "after keep" "$J"
host_generation alpha; assert_eq "alpha's generation after the forgery" "$GEN" "$J"

step "the service comes back and still syncs the host"
start_service
ok ctl provider create fresh
ok ctl provider backup fresh --out "$T/fresh.backup" --password-file "$T/password"
wait_in_sync
host_providers alpha; assert_eq "providers on alpha" "after fresh keep" "$J"
vm_create alpha v1 --provider fresh

it_pass
