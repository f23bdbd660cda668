#!/bin/bash
# Garbage, truncated, tampered and oversized messages on every socket:
# - the host's network listener answers none of them (a stranger gets no
#   reply), counts each one it reads (status dropped_frames) and drops a
#   connection that declares a message over the receive limit;
# - host.sock and nkpd's admin.sock answer each with an error reply (a
#   reply whose code is not 0), or drop the connection for an oversized
#   one;
# and both daemons keep serving. A listener wedged on purpose (peers that
# send a bad header and hang up at once) is found and restarted by its
# watchdog. Valid requests to truncate and tamper with are captured with
# recording relays. Every wait is bounded by an event and scaled by
# IT_WAIT_SCALE.
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

# dropped: J=the host's count of dropped unauthenticated frames (from the
# text status: no JSON parser per call, this runs twice per message).
dropped() {
	ok hostctl alpha status
	J=$(printf '%s\n' "$OUT" | sed -n 's/^unauthenticated: \([0-9]*\) frames dropped.*/\1/p')
	[ -n "$J" ] || fail "no count of dropped frames in nkp-hostctl status: $OUT"
}

# error_code FILE: J=the code (field 1) of a local API or admin reply.
error_code() {
	J=$("$PYTHON3" -c '
import sys
b = open(sys.argv[1], "rb").read()
code, i = 0, 0
while i < len(b):
    key, shift = 0, 0
    while True:
        c = b[i]; i += 1; key |= (c & 0x7f) << shift; shift += 7
        if c < 0x80: break
    if key >> 3 == 1 and key & 7 == 0:
        v, shift = 0, 0
        while True:
            c = b[i]; i += 1; v |= (c & 0x7f) << shift; shift += 7
            if c < 0x80: break
        code = v
    elif key & 7 == 2:
        n, shift = 0, 0
        while True:
            c = b[i]; i += 1; n |= (c & 0x7f) << shift; shift += 7
            if c < 0x80: break
        i += n
    elif key & 7 == 0:
        while b[i] >= 0x80: i += 1
        i += 1
    else:
        sys.exit("not a reply")
print(code)' "$1") || fail "cannot decode the reply in $1"
}

# poke WHAT URL KIND ARGS...: sends a bad message.
# KIND: none (the host listener: no reply, the frame counted as dropped),
# error (an error reply), big (an error reply, or the connection dropped
# by the receive limit: then nothing is counted).
poke() {
	local what=$1 url=$2 kind=$3 before
	shift 3
	if [ "$kind" = none ] || [ "$kind" = bignet ]; then
		dropped
		before=$J
	fi
	case $kind in
	none | bignet)
		# A reply would come at once; a second is ample even when
		# the machine is busy (scaled).
		run "$NNGPOKE" --timeout $((1000 * IT_WAIT_SCALE)) --out "$T/reply.bin" "$url" "$@"
		[ "$RC" = 3 ] || [ "$RC" = 4 ] ||
			fail "$what: expected no reply, got exit $RC ($(stat -c %s "$T/reply.bin" 2>/dev/null) bytes): $ERR"
		dropped
		if [ "$kind" = none ]; then
			[ "$J" -gt "$before" ] || fail "$what: the host did not count the dropped frame ($before -> $J)"
		else
			[ "$J" = "$before" ] || fail "$what: an oversized message was read and counted ($before -> $J)"
		fi
		log "$what -> no reply, dropped frames $before -> $J"
		;;
	error | big)
		run "$NNGPOKE" --timeout $((5000 * IT_WAIT_SCALE)) --out "$T/reply.bin" "$url" "$@"
		if [ "$kind" = big ] && [ "$RC" = 4 ]; then
			log "$what -> connection dropped"
		else
			[ "$RC" = 0 ] || fail "$what: no reply (exit $RC): $ERR"
			[ -s "$T/reply.bin" ] || fail "$what: empty reply"
			error_code "$T/reply.bin"
			[ "$J" != 0 ] || fail "$what: a reply with code 0 (success) to a bad request"
			log "$what -> error reply, code $J"
		fi
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

FIRST_POKE=$(date +%s)
for target in net admin hostsock; do
	case $target in
	net) URL=${HOST_URL[alpha]}; KIND=none; BIG=bignet; REQ=$NET_REQ ;;
	admin) URL=ipc://$SVC_SOCK; KIND=error; BIG=big; REQ=$ADMIN_REQ ;;
	hostsock) URL=ipc://${HOST_DIR[alpha]}/host.sock; KIND=error; BIG=big; REQ=$HOSTSOCK_REQ ;;
	esac
	LEN=$(stat -c %s "$REQ")
	step "$target ($URL): bad messages"
	poke "$target: one zero byte" "$URL" "$KIND" --hex 00
	poke "$target: 64 bytes of 0xff" "$URL" "$KIND" --fill 64 ff
	poke "$target: 4096 bytes of 0x0a (nested length prefixes)" "$URL" "$KIND" --fill 4096 0a
	poke "$target: 4096 bytes of unknown fields" "$URL" "$KIND" --fill 4096 78
	poke "$target: a valid request truncated to half" "$URL" "$KIND" --file "$REQ" --truncate $((LEN / 2))
	poke "$target: a valid request less its last byte" "$URL" "$KIND" --file "$REQ" --truncate $((LEN - 1))
	poke "$target: a valid request cut to 3 bytes" "$URL" "$KIND" --file "$REQ" --truncate 3
	tampered "$REQ" "$T/tampered.bin"
	poke "$target: a valid request with a byte flipped" "$URL" "$KIND" --file "$T/tampered.bin"
	poke "$target: 20 MiB" "$URL" "$BIG" --fill 20971520 0a
done

step "the host listener: frames of the old protocol, a HandshakeResp as a request"
poke "net: an old Envelope frame" "${HOST_URL[alpha]}" none --hex 0a0408011200
poke "net: an old PlainError frame" "${HOST_URL[alpha]}" none --hex 12050803120178
poke "net: a HandshakeResp as a request" "${HOST_URL[alpha]}" none --hex 2a0a0d010000001502000000

step "the host listener: one byte over the receive limit (the largest push)"
# NKPI_PUSH_MAX (nkp/private/internal.h) is under 1 MiB.
poke "net: 1 MiB" "${HOST_URL[alpha]}" bignet --fill 1048576 0a

step "wedging each listener directly: peers that send a bad header and hang up"
# nng 1.5's ipc listener can stop accepting after such a peer; the
# daemons probe their own sockets and restart a wedged one. Provoke it
# 20 times in a row on each socket, then each must answer again within
# the watchdog's bound (two failed probes of 3 s and a restart).
hangups() { # PATH (unix socket) or PORT (tcp)
	"$PYTHON3" -c '
import socket, sys
t = sys.argv[1]
for _ in range(20):
    if t.isdigit():
        s = socket.create_connection(("127.0.0.1", int(t)))
    else:
        s = socket.socket(socket.AF_UNIX); s.connect(t)
    s.sendall(b"\x00XX\x00\x00\x00\x00\x00")
    s.close()' "$1" || fail "cannot connect to $1"
}
hangups "${HOST_DIR[alpha]}/host.sock"
hangups "$SVC_SOCK"
hangups "${HOST_URL[alpha]##*:}"
wait_until 20 "host.sock to answer after the hang-ups" hostctl alpha status
wait_until 20 "admin.sock to answer after the hang-ups" ctl status
kill -0 "${HOST_PID[alpha]}" 2>/dev/null || fail "nkp-hostd died"
grep -h 'stopped answering' "${HOST_DIR[alpha]}/events.jsonl" >&2 ||
	log "(no listener needed a restart this time)"

step "everything still works: a rotation reaches the host, a VM key is made"
still_serving
ok ctl provider rotate prod --timeout $((15 * IT_WAIT_SCALE))
wait_in_sync
version_states alpha prod; assert_eq "alpha after a rotation" "1:decrypt-only 2:active" "$J"
vm_create alpha vm1
dek alpha vm1
ok ctl events
assert_not_contains "events" "$OUT" "$J"
# Strangers cost no event each: a summary at the first, then at most one
# a minute.
N=$(grep -c 'unauthenticated frames dropped' "${HOST_DIR[alpha]}/events.jsonl" || true)
MAXN=$((1 + ($(date +%s) - FIRST_POKE) / 60))
[ "$N" -ge 1 ] && [ "$N" -le "$MAXN" ] ||
	fail "$N summary events of dropped frames in $(($(date +%s) - FIRST_POKE)) s (expected 1 to $MAXN)"

it_pass
