#!/bin/bash
# nng 1.5.2 can wedge its reaper for good: a connection closed on our side
# just as a message header arrives on it never finishes tearing down, and
# no connection is freed after it, so a host's connection caps would soon
# refuse nkpd. The race cannot be provoked at will; a test hook
# (NKP_TEST_NNG_WEDGE, test-hooks builds only) has the plugin ignore nng's
# reports of closed connections, as they stop when the reaper is wedged.
# - Wedged: the host closes an idle stranger at its peer timeout; no report
#   comes; NKP_TEST_NNG_WEDGE_MS later the plugin logs NKP-HOSTD-NNG-WEDGED
#   and nkp-hostd exits 1 on its own (for systemd's Restart=on-failure),
#   with a service.stopped event saying why; a restart serves again.
# - Not wedged (the same traffic, no hook): nkp-hostd keeps running.
. "$(dirname "$0")/lib.sh"
: "${NETABUSE:=$IT_BUILD/tests/integration/netabuse}"
[ -x "$NETABUSE" ] || it_skip "$NETABUSE is not built"
grep -qa NKP_TEST_NNG_WEDGE "$NKP_HOSTD" || it_skip "nkp-hostd is built without test hooks"
it_begin

WEDGE_MS=2000

# run_host NAME [ENV...]: nkp-hostd run with a 1 s peer timeout.
run_host() {
	local h=$1
	shift
	env "$@" "$NKP_HOSTD" run --state-dir "${HOST_DIR[$h]}" --listen "${HOST_URL[$h]}" \
		--peer-timeout 1 >>"$T/log/host-$h.log" 2>&1 &
	HOST_PID[$h]=$!
	IT_PIDS+=("${HOST_PID[$h]}")
	IT_DAEMONS+="${HOST_PID[$h]} "
	wait_until 10 "nkp-hostd $h to answer on its host.sock" hostctl "$h" status
}

# stranger NAME: one idle connection to the host, closed by it at its
# peer timeout.
stranger() {
	local port=${HOST_URL[$1]##*:}
	ok "$NETABUSE" 127.0.0.1 "$port" idle --count 1 --hold $((3000 * IT_WAIT_SCALE))
	log "stranger: $OUT"
	assert_contains "the host closed the idle stranger" "$OUT" "closed_later 1"
}

gone() { ! kill -0 "$1" 2>/dev/null; }

service_init
host_init alpha

step "wedged: nkp-hostd notices that nng frees nothing and exits 1"
run_host alpha NKP_TEST_NNG_WEDGE=1 NKP_TEST_NNG_WEDGE_MS=$WEDGE_MS
PID=${HOST_PID[alpha]}
stranger alpha
wait_until $((15 + WEDGE_MS / 1000)) "nkp-hostd to exit on its own" gone "$PID"
wait "$PID"
ST=$?
forget_pid "$PID"
HOST_PID[alpha]=""
assert_eq "nkp-hostd's exit status" 1 "$ST"
assert_contains "its log" "$(cat "$T/log/host-alpha.log")" "NKP-HOSTD-NNG-WEDGED"
assert_contains "its last event" "$(tail -n 1 "${HOST_DIR[alpha]}/events.jsonl")" \
	"exiting to be restarted"

step "restarted, it serves again"
run_host alpha NKP_TEST_NNG_WEDGE_MS=$WEDGE_MS
ok hostctl alpha status

step "not wedged: the same stranger, and nkp-hostd keeps running"
MARK=$(wc -l <"$T/log/host-alpha.log")
stranger alpha
# Past the wedge limit and a reaper pass; nothing must come of it.
until_s=$(($(date +%s) + 2 * WEDGE_MS / 1000 + 1))
while [ "$(date +%s)" -lt "$until_s" ] && kill -0 "${HOST_PID[alpha]}" 2>/dev/null; do
	ok hostctl alpha status
done
kill -0 "${HOST_PID[alpha]}" 2>/dev/null || fail "nkp-hostd exited without a wedge"
stop_host alpha
if tail -n +"$((MARK + 1))" "$T/log/host-alpha.log" | grep -q "NKP-HOSTD-NNG-WEDGED"; then
	fail "a wedge was reported without one"
fi

it_pass
