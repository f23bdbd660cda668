#!/bin/bash
# Garbage, truncated, tampered and oversized messages on every socket (the
# host's network listener, its host.sock, the service's admin.sock) while
# the daemon keeps serving. The local sockets give an error reply; the
# host's network listener answers nothing that does not authenticate and
# records no event per frame. (An oversized message may instead have its
# connection dropped by nng's receive limit.) Valid requests to
# truncate and tamper with are captured with recording relays.
. "$(dirname "$0")/lib.sh"
it_begin

step "a service and one host, enrolled through a recording relay"
service_init
start_service
host_init alpha
start_host alpha
RELAY_URL=tcp://127.0.0.1:$(free_port)
relay_start net "$RELAY_URL" "${HOST_URL[alpha]}"
enrol alpha "$RELAY_URL"
make_provider prod --default
wait_in_sync

step "capture valid requests on admin.sock and host.sock"
relay_start admin "ipc://$T/admin-relay.sock" "ipc://$SVC_SOCK"
ok "$NKPCTL" --socket "$T/admin-relay.sock" --json provider show prod
relay_start hostsock "ipc://$T/host-relay.sock" "ipc://${HOST_DIR[alpha]}/host.sock"
ok "$NKP_HOSTCTL" --socket "$T/host-relay.sock" --json status
for r in net admin hostsock; do
	ls "$T/relay-$r"/*.req >/dev/null 2>&1 || fail "relay $r captured no request"
done
NET_REQ=$(ls -S "$T"/relay-net/*.req | head -n 1)
ADMIN_REQ=$(ls "$T"/relay-admin/*.req | head -n 1)
HOSTSOCK_REQ=$(ls "$T"/relay-hostsock/*.req | head -n 1)

# still_serving: both daemons alive and answering on every socket.
still_serving() {
	kill -0 "$SVC_PID" 2>/dev/null || fail "nkpd died"
	kill -0 "${HOST_PID[alpha]}" 2>/dev/null || fail "nkp-hostd died"
	ok ctl status
	ok hostctl alpha status
}

# poke WHAT URL KIND ARGS...: sends a bad message.
# KIND: none (no reply at all: the host's network listener), any (a
# non-empty error reply), big (a reply, none, or the connection dropped by
# the receive limit).
poke() {
	local what=$1 url=$2 kind=$3
	shift 3
	if [ "$kind" = none ]; then
		run "$NNGPOKE" --timeout 500 --out "$T/reply.bin" "$url" "$@"
	else
		run "$NNGPOKE" --timeout 5000 --out "$T/reply.bin" "$url" "$@"
	fi
	case $kind in
	none)
		[ "$RC" = 3 ] || fail "$what: expected no reply (exit 3), got exit $RC: $OUT $ERR"
		;;
	big)
		[ "$RC" = 0 ] || [ "$RC" = 3 ] || [ "$RC" = 4 ] ||
			fail "$what: expected an error reply or a dropped connection, got exit $RC: $ERR"
		if [ "$RC" = 0 ]; then log "$what -> a reply of $(stat -c %s "$T/reply.bin") bytes"; else log "$what -> connection dropped"; fi
		;;
	*)
		[ "$RC" = 0 ] || fail "$what: no reply (exit $RC): $ERR"
		[ -s "$T/reply.bin" ] || fail "$what: empty reply"
		;;
	esac
	still_serving
}

# tampered IN OUT: IN with its middle byte flipped.
tampered() {
	"$PYTHON3" -c '
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0x55
open(sys.argv[2], "wb").write(bytes(b))' "$1" "$2"
}

for target in net admin hostsock; do
	case $target in
	net) URL=${HOST_URL[alpha]}; KIND=none; REQ=$NET_REQ ;;
	admin) URL=ipc://$SVC_SOCK; KIND=any; REQ=$ADMIN_REQ ;;
	hostsock) URL=ipc://${HOST_DIR[alpha]}/host.sock; KIND=any; REQ=$HOSTSOCK_REQ ;;
	esac
	LEN=$(stat -c %s "$REQ")
	EV0=$(wc -l <"${HOST_DIR[alpha]}/events.jsonl")
	step "$target ($URL): bad messages"
	poke "$target: empty message" "$URL" "$KIND" --hex ""
	poke "$target: one zero byte" "$URL" "$KIND" --hex 00
	poke "$target: 64 bytes of 0xff" "$URL" "$KIND" --fill 64 ff
	poke "$target: 4096 bytes of 0x0a (nested length prefixes)" "$URL" "$KIND" --fill 4096 0a
	poke "$target: a valid request truncated to half" "$URL" "$KIND" --file "$REQ" --truncate $((LEN / 2))
	poke "$target: a valid request less its last byte" "$URL" "$KIND" --file "$REQ" --truncate $((LEN - 1))
	poke "$target: a valid request cut to 3 bytes" "$URL" "$KIND" --file "$REQ" --truncate 3
	tampered "$REQ" "$T/tampered.bin"
	poke "$target: a valid request with a byte flipped" "$URL" "$KIND" --file "$T/tampered.bin"
	poke "$target: 20 MiB" "$URL" big --fill 20971520 0a
	poke "$target: 20 MiB" "$URL" big --fill 20971520 ff
	if [ "$target" = net ]; then
		EV1=$(wc -l <"${HOST_DIR[alpha]}/events.jsonl")
		assert_eq "host events recorded for unauthenticated frames" "$EV0" "$EV1"
	fi
done

step "the host listener: one byte over the frame limit (NKP_FRAME_MAX, 4 MiB)"
poke "net: 4 MiB + 1" "${HOST_URL[alpha]}" big --fill 4194305 0a

step "the host listener: frames of the old protocol, a HandshakeResp as a request"
poke "net: an old Envelope frame" "${HOST_URL[alpha]}" none --hex 0a0408011200
poke "net: an old PlainError frame" "${HOST_URL[alpha]}" none --hex 12050803120178
poke "net: a HandshakeResp as a request" "${HOST_URL[alpha]}" none --hex 2a0a0d010000001502000000

step "bursts of concurrent oversized and garbage messages; every socket keeps serving"
# Rounds of 4 messages of 8 MiB (over every limit, 4 MiB) and 8 of 64 bytes
# of garbage, all at once; after each round both daemons must answer on
# every socket. (A wedged listener needs a few rounds to show.)
# The host listener answers none of it: there the pokes wait for nothing
# no longer than TIMEOUT_MS (default 2000).
burst() { # WHAT URL ROUNDS [TIMEOUT_MS]
	local round p pids ms=${4:-2000}
	for round in $(seq "$3"); do
		pids=()
		for _ in 1 2 3 4; do
			"$NNGPOKE" --timeout "$ms" "$2" --fill 8388608 ff >/dev/null 2>&1 &
			pids+=("$!")
		done
		for _ in $(seq 8); do
			"$NNGPOKE" --timeout "$ms" "$2" --fill 64 ff >/dev/null 2>&1 &
			pids+=("$!")
		done
		IT_PIDS+=("${pids[@]}")
		for p in "${pids[@]}"; do
			wait "$p"
			forget_pid "$p"
		done
		still_serving_after "$1, burst round $round"
	done
}
still_serving_after() { # WHAT
	local rc
	kill -0 "$SVC_PID" 2>/dev/null || fail "nkpd died ($1)"
	kill -0 "${HOST_PID[alpha]}" 2>/dev/null || fail "nkp-hostd died ($1)"
	timeout -k 2 15 "$NKPCTL" --socket "$SVC_SOCK" status >/dev/null 2>"$T/.err"
	rc=$?
	[ "$rc" = 0 ] || fail "nkpd stopped answering on admin.sock ($1): nkpctl status exit $rc (124: no answer in 15 s): $(cat "$T/.err")"
	timeout -k 2 15 "$NKP_HOSTCTL" --socket "${HOST_DIR[alpha]}/host.sock" status >/dev/null 2>"$T/.err"
	rc=$?
	[ "$rc" = 0 ] || fail "nkp-hostd stopped answering on host.sock ($1): nkp-hostctl status exit $rc (124: no answer in 15 s): $(cat "$T/.err")"
	# The listener answers garbage with nothing (exit 3); exit 5 would be
	# a listener that no longer takes connections.
	timeout -k 2 15 "$NNGPOKE" --timeout 500 "${HOST_URL[alpha]}" --hex 00 >/dev/null 2>"$T/.err"
	rc=$?
	[ "$rc" = 3 ] || fail "nkp-hostd stopped taking connections on its listener ($1): nngpoke exit $rc: $(cat "$T/.err")"
}
burst "the host listener" "${HOST_URL[alpha]}" 12 500
burst "host.sock" "ipc://${HOST_DIR[alpha]}/host.sock" 12
burst "admin.sock" "ipc://$SVC_SOCK" 40

step "many bad messages in a row, then everything still works"
for i in $(seq 20); do
	"$NNGPOKE" --timeout 300 "${HOST_URL[alpha]}" --fill $((i * 7)) $((i % 10))$((i % 10)) >/dev/null 2>&1
	"$NNGPOKE" --timeout 2000 "ipc://$SVC_SOCK" --fill $((i * 7)) $((i % 10))$((i % 10)) >/dev/null 2>&1
	"$NNGPOKE" --timeout 2000 "ipc://${HOST_DIR[alpha]}/host.sock" --fill $((i * 7)) $((i % 10))$((i % 10)) >/dev/null 2>&1
done
still_serving
ok ctl provider rotate prod --timeout 15
wait_in_sync
version_states alpha prod; assert_eq "alpha after a rotation" "1:decrypt-only 2:active" "$J"
vm_create alpha vm1
dek alpha vm1
ok ctl events
assert_not_contains "events" "$OUT" "$J"

it_pass
