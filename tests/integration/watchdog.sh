#!/bin/bash
# The listener watchdogs. nng 1.5.2 can leave a listener that hands its
# socket no more connections (nanomsg/nng#1518), so nkpd probes admin.sock
# and nkp-hostd probes host.sock every 3 s as a client would; after two
# failed probes in a row nkpd replaces its listener and nkp-hostd restarts
# its local API, each with an input.bad event.
# - With a test hook (NKP_TEST_WEDGE_ADMIN=1, NKP_TEST_WEDGE_LOCALAPI=1,
#   test-hooks builds only) that closes the real listener once, right
#   after a probe it answered, for each daemon: the socket is dead
#   (`nkpctl status` / `nkp-hostctl status` fail); after two failed probes
#   the listener is back, with one event, and status answers at once; the
#   watchdog's next probe is answered and nothing is restarted again.
# - Meanwhile the other daemon, not wedged (its variable 0: probes logged,
#   nothing closed), has three probes answered and restarts
#   nothing.
# - The nng bug itself, no hook: a peer that hangs up before nng has
#   written its handshake wedges each socket; each watchdog restarts it and
#   status answers again. Where nng is fixed (1.6) the sockets keep
#   answering and this part only says so.
# A production build (without -Dtest-hooks) neither reads nor mentions the
# hook variables and runs only the last part.
. "$(dirname "$0")/lib.sh"
it_begin

step "the wedge hooks exist only in a test-hooks build"
HOOKS=0
grep -qa NKP_TEST_WEDGE_ADMIN "$NKPD" && HOOKS=1
assert_eq "nkpd built with test hooks knows NKP_TEST_WEDGE_ADMIN" "${NKP_TEST_HOOKS:-$HOOKS}" "$HOOKS"
H=0
grep -qa NKP_TEST_WEDGE_LOCALAPI "$NKP_HOSTD" && H=1
assert_eq "nkp-hostd built with test hooks knows NKP_TEST_WEDGE_LOCALAPI" "$HOOKS" "$H"

ADMIN_EVENT="admin socket stopped accepting connections; listener restarted"
LOCAL_EVENT="local socket stopped answering; restarted it"

# lines FILE TEXT: J=the number of lines of FILE that hold TEXT.
lines() {
	J=$(grep -cF -- "$2" "$1" 2>/dev/null)
	J=${J:-0}
}

# at_least N FILE TEXT: exit 0 once N lines of FILE hold TEXT (for wait_until).
at_least() {
	local n
	n=$(grep -cF -- "$3" "$2" 2>/dev/null)
	[ "${n:-0}" -ge "$1" ]
}

# wedged WHAT LOG EVENTS EVENT STATUS...: WHAT's daemon runs with its wedge
# hook set, logs to LOG, records events in EVENTS; EVENT is its watchdog's
# event; STATUS... asks its socket for status.
wedged() {
	local what=$1 log=$2 events=$3 event=$4 before
	shift 4
	lines "$events" "$event"
	before=$J
	wait_until 15 "the hook to close $what's listener after a probe" \
		at_least 1 "$log" "listener closed"
	# The watchdog cannot notice before two more probes, 3 s apart.
	expect_fail "$@"
	assert_contains "status of a wedged $what" "$ERR" "$what"
	wait_until 20 "the watchdog to restart $what's listener" at_least $((before + 1)) "$events" "$event"
	lines "$log" "probe failed"
	assert_eq "failed probes of $what before the restart" 2 "$J"
	# The event is recorded once the new listener is up.
	ok "$@"
	wait_until 10 "the watchdog's next probe of $what" at_least 2 "$log" "probe answered"
	lines "$log" "probe failed"
	assert_eq "failed probes of $what after the restart" 2 "$J"
	lines "$events" "$event"
	assert_eq "restart events of $what" $((before + 1)) "$J"
}

# healthy WHAT LOG EVENTS EVENT: WHAT's daemon runs with its hook variable
# 0: three probes answered and no restart. (A single probe may time out on
# a machine starved of CPU; only two in a row restart anything.)
healthy() {
	local what=$1 log=$2 events=$3 event=$4 before
	lines "$events" "$event"
	before=$J
	wait_until 20 "three probes of $what answered" at_least 3 "$log" "probe answered"
	lines "$log" "probe failed"
	[ "$J" = 0 ] || log "$J probe(s) of a healthy $what failed (a busy machine?)"
	lines "$events" "$event"
	assert_eq "restart events of a healthy $what" "$before" "$J"
}

# answers SOCKET HEX: exit 0 if SOCKET replies to the request HEX within a
# second (scaled). Requests that cost no event: nkpd's own probe (admin API
# version 0, answered with an error) and nkp-hostctl's status.
ADMIN_PING=0800
HOST_PING=08011200
answers() {
	"$NNGPOKE" --timeout $((1000 * IT_WAIT_SCALE)) "ipc://$1" --hex "$2" >/dev/null 2>&1
}

stopped() { # PID: exit 0 once PID is stopped (state T)
	[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" = T ]
}

# hang_up PID SOCKET HEX: J=1 if SOCKET, served by PID, then stops
# answering HEX.
# nanomsg/nng#1518 itself: while PID is stopped a peer connects to SOCKET
# and hangs up; resumed, nng accepts the connection, fails to write its
# SP header to it (EPIPE) and nng 1.5 then hands the socket no connection
# again. Stopping the daemon puts the hang-up first every time. Three tries
# of `answers` (three connections, not a time window) tell whether it
# worked: one could still slip through before the failure is noticed.
hang_up() {
	local pid=$1 sock=$2 ping=$3
	answers "$sock" "$ping" || fail "$sock does not answer before the hang-up"
	kill -STOP "$pid"
	wait_until 5 "pid $pid to stop" stopped "$pid"
	"$PYTHON3" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.close()' "$sock" || fail "cannot connect to $sock"
	kill -CONT "$pid"
	J=0
	for _ in 1 2 3; do
		answers "$sock" "$ping" || { J=1; return 0; }
	done
}

# recovered WHAT EVENTS EVENT BEFORE STATUS...: after a real wedge, one
# more restart event than BEFORE, and status answers.
recovered() {
	local what=$1 events=$2 event=$3 before=$4
	shift 4
	# Two probes, each failing after its 3 s timeout, 3 s apart.
	wait_until 25 "the watchdog to restart $what's listener" at_least $((before + 1)) "$events" "$event"
	ok "$@"
	lines "$events" "$event"
	assert_eq "restart events of $what" $((before + 1)) "$J"
}

service_init
host_init alpha
SVC_LOG=$T/log/svc.log
SVC_EVENTS=$SVC_DIR/events.jsonl
HOST_LOG=$T/log/host-alpha.log
HOST_EVENTS=${HOST_DIR[alpha]}/events.jsonl
HOST_SOCK=${HOST_DIR[alpha]}/host.sock

if [ "$HOOKS" = 1 ]; then
	step "nkpd's admin.sock wedged by the hook; nkp-hostd healthy"
	NKP_TEST_WEDGE_ADMIN=1 start_service
	NKP_TEST_WEDGE_LOCALAPI=0 start_host alpha
	wedged admin.sock "$SVC_LOG" "$SVC_EVENTS" "$ADMIN_EVENT" ctl status
	healthy host.sock "$HOST_LOG" "$HOST_EVENTS" "$LOCAL_EVENT"
	stop_host alpha
	stop_service
	mv "$SVC_LOG" "$T/log/svc-wedged.log"
	mv "$HOST_LOG" "$T/log/host-alpha-healthy.log"

	step "nkp-hostd's host.sock wedged by the hook; nkpd healthy"
	NKP_TEST_WEDGE_ADMIN=0 start_service
	NKP_TEST_WEDGE_LOCALAPI=1 start_host alpha
	wedged host.sock "$HOST_LOG" "$HOST_EVENTS" "$LOCAL_EVENT" hostctl alpha status
	healthy admin.sock "$SVC_LOG" "$SVC_EVENTS" "$ADMIN_EVENT"
else
	start_service
	start_host alpha
fi

step "nanomsg/nng#1518 itself: a peer hangs up before nng's handshake"
lines "$SVC_EVENTS" "$ADMIN_EVENT"
SVC_BEFORE=$J
lines "$HOST_EVENTS" "$LOCAL_EVENT"
HOST_BEFORE=$J
hang_up "$SVC_PID" "$SVC_SOCK" "$ADMIN_PING"
SVC_WEDGED=$J
hang_up "${HOST_PID[alpha]}" "$HOST_SOCK" "$HOST_PING"
HOST_WEDGED=$J
assert_eq "both sockets wedged by a hang-up, or neither (one nng)" "$SVC_WEDGED" "$HOST_WEDGED"
if [ "$SVC_WEDGED" = 1 ]; then
	recovered admin.sock "$SVC_EVENTS" "$ADMIN_EVENT" "$SVC_BEFORE" ctl status
	recovered host.sock "$HOST_EVENTS" "$LOCAL_EVENT" "$HOST_BEFORE" hostctl alpha status
else
	log "the sockets still answer after a hang-up: this nng does not have the bug"
	[ "$HOOKS" = 1 ] || it_skip "built without -Dtest-hooks=true, and nng does not wedge"
fi
it_pass
