#!/bin/bash
# A stranger who can reach a host's tcp port and nothing else: garbage
# floods, 2,000 idle connections, stalled giant messages and frames of
# unknown protobuf fields. Meanwhile `nkp-hostctl vm unwrap` must keep
# answering within 1 s (each call measured; on a machine so busy that a
# call took over 0.5 s before the abuse, within twice that), the host's memory stay under
# 64 MiB, its events.jsonl grow by under 100 KB, garbage get no reply, and
# nkpd keep the host in sync through a rotation.
. "$(dirname "$0")/lib.sh"
: "${NETABUSE:=$IT_BUILD/tests/integration/netabuse}"
[ -x "$NETABUSE" ] || it_skip "$NETABUSE is not built"
it_begin

PEER_TIMEOUT=3 # seconds; nkpd's heartbeat is 1 s in the tests

# start_guarded_host NAME: start_host with a short peer timeout.
start_guarded_host() {
	local h=$1 extra=()
	if grep -qa 'peer-timeout' "$NKP_HOSTD"; then
		extra=(--peer-timeout "$PEER_TIMEOUT")
	fi
	"$NKP_HOSTD" run --state-dir "${HOST_DIR[$h]}" --listen "${HOST_URL[$h]}" "${extra[@]}" \
		>>"$T/log/host-$h.log" 2>&1 &
	HOST_PID[$h]=$!
	IT_PIDS+=("${HOST_PID[$h]}")
	IT_DAEMONS+="${HOST_PID[$h]} "
	wait_until 10 "nkp-hostd $h to answer on its host.sock" hostctl "$h" status
}

step "a service and one host, enrolled; a VM key on the host"
service_init
start_service
host_init alpha
start_guarded_host alpha
enrol alpha
make_provider prod --default
wait_in_sync
vm_create alpha vm1
dek alpha vm1
DEK=$J
HPID=${HOST_PID[alpha]}
PORT=${HOST_URL[alpha]##*:}
EV=${HOST_DIR[alpha]}/events.jsonl
EV0=$(stat -c %s "$EV")
RSS0=$(awk '/^VmRSS/ {print $2}' "/proc/$HPID/status")
log "host pid $HPID, port $PORT, RSS at start ${RSS0} kB, events.jsonl ${EV0} bytes"

# The prober: `vm unwrap` in a loop until $T/stop exists, each call's
# milliseconds (or FAIL) on a line of $T/unwrap.ms.
(
	while [ ! -e "$T/stop" ]; do
		t0=$(date +%s%N)
		if timeout -k 1 10 "$NKP_HOSTCTL" --socket "${HOST_DIR[alpha]}/host.sock" vm unwrap \
			--keysafe "$T/vm/vm1" --component vm-home --out - --format hex 2>/dev/null |
			cat >"$T/unwrap.out" &&
			[ "$(tr -d ' \n' <"$T/unwrap.out")" = "$DEK" ]; then
			echo $((($(date +%s%N) - t0) / 1000000)) >>"$T/unwrap.ms"
		else
			echo FAIL >>"$T/unwrap.ms"
		fi
		sleep 0.1
	done
) &
PROBER=$!
IT_PIDS+=("$PROBER")
wait_until 10 "the first unwrap" test -s "$T/unwrap.ms"
# What a call costs this machine now, before any abuse: the bound below
# is 1 s, or twice the slowest of these when the machine is slower.
wait_until 20 "five unwraps before the abuse" sh -c "[ \$(grep -c . '$T/unwrap.ms') -ge 5 ]"
BASE=$(grep -v FAIL "$T/unwrap.ms" | sort -n | tail -n 1)
LIMIT_MS=$((BASE * 2 > 1000 ? BASE * 2 : 1000))
LIMIT_MS=$((LIMIT_MS * IT_WAIT_SCALE))
log "vm unwrap before the abuse: slowest ${BASE} ms of $(grep -c . "$T/unwrap.ms"); bound ${LIMIT_MS} ms"

# The stranger runs on another machine: here at a low priority, so its own
# CPU is not what the host's clients wait for.
abuse() { # WHAT ARGS...: runs netabuse with room for 4,096 descriptors; J=its line
	local what=$1
	shift
	run nice -n 15 bash -c 'ulimit -Sn 4096 && exec "$@"' netabuse "$NETABUSE" 127.0.0.1 "$PORT" "$@"
	[ "$RC" = 0 ] || fail "$what: netabuse exit $RC: $ERR"
	J=$OUT
	log "$what: $J"
}
field() { # NAME: the number after NAME in J
	printf '%s\n' "$J" | tr ' ' '\n' | grep -A1 -x "$1" | tail -n 1
}
# flood_sent SENT COUNT CLOSED MS: true if the flood proves something: it
# sent every frame, or, on a machine too busy to send them all in time, the
# host cut the connection at its deadline (garbage never extends it) after
# some were sent. A flood that sent nothing proves nothing.
flood_sent() {
	[ "$1" = "$2" ] && return 0
	[ "${1:-0}" -gt 0 ] && [ "$3" = 1 ] && [ "${4:-0}" -ge $((PEER_TIMEOUT * 900)) ]
}

step "a garbage flood from one connection gets no reply"
abuse "20,000 frames of 64 bytes" flood --src 127.0.0.2 --count 20000 --size 64 --hold 1000
FLOOD_REPLIES=$(field replies)
FLOOD_SENT=$(field sent)
FLOOD_CUT=$(field closed)
FLOOD_MS=$(field elapsed_ms)

step "unknown-field bombs: frames of unknown fields at the receive limit"
abuse "3 frames of ~975 KiB of unknown fields" flood --src 127.0.0.3 --count 3 --size 990000 \
	--unknown --hold 2000
BOMB_REPLIES=$(field replies)
BOMB_SENT=$(field sent)
BOMB_CUT=$(field closed)
BOMB_MS=$(field elapsed_ms)

step "2,000 idle connections from 250 addresses, and nkpd rotates meanwhile"
nice -n 15 bash -c 'ulimit -Sn 4096 && exec "$@"' netabuse "$NETABUSE" 127.0.0.1 "$PORT" idle \
	--src 127.1.0.1 --spread 250 --count 2000 --hold $((PEER_TIMEOUT * 3000 * IT_WAIT_SCALE)) \
	>"$T/idle.out" 2>&1 &
IDLE=$!
IT_PIDS+=("$IDLE")
ok ctl provider rotate prod --timeout $((20 * IT_WAIT_SCALE))
wait_in_sync 20
version_states alpha prod; assert_eq "alpha after a rotation under abuse" "1:decrypt-only 2:active" "$J"
wait "$IDLE"
IDLE_RC=$?
forget_pid "$IDLE"
J=$(cat "$T/idle.out")
log "2,000 idle connections: $J"
[ "$IDLE_RC" = 0 ] || fail "netabuse idle exit $IDLE_RC: $J"
IDLE_OPEN=$(field open)

step "stalled giant messages: 40 declared near the limit, 900 KB sent; 4 declaring 1 GiB"
abuse "40 stalled messages" stall --src 127.2.0.1 --spread 10 --count 40 --declare 990000 \
	--send 900000 --hold $((PEER_TIMEOUT * 3000 * IT_WAIT_SCALE))
STALL_OPEN=$(field open)
abuse "4 messages declaring 1 GiB" stall --src 127.3.0.1 --count 4 --declare 1073741824 \
	--send 4096 --hold $((PEER_TIMEOUT * 3000 * IT_WAIT_SCALE))
HUGE_OPEN=$(field open)

touch "$T/stop"
wait "$PROBER"
forget_pid "$PROBER"

step "what it cost"
kill -0 "$HPID" 2>/dev/null || fail "nkp-hostd died"
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$HPID/status")
RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$HPID/status")
EV1=$(stat -c %s "$EV")
CALLS=$(grep -c . "$T/unwrap.ms")
FAILS=$(grep -c FAIL "$T/unwrap.ms")
SLOWEST=$(grep -v FAIL "$T/unwrap.ms" | sort -n | tail -n 1)
log "vm unwrap: $CALLS calls, $FAILS failed, slowest ${SLOWEST:-?} ms"
log "host memory: VmHWM ${HWM} kB, VmRSS ${RSS} kB (at start ${RSS0} kB)"
log "events.jsonl grew by $((EV1 - EV0)) bytes"
ok hostctl alpha --json status
log "host status: $(printf '%s' "$OUT" | "$PYTHON3" -c 'import json,sys; d=json.load(sys.stdin); print({k: d.get(k) for k in ("dropped_frames", "refused_connections", "closed_connections")})')"

# Every property is checked before the test fails, so one run shows all.
BAD=()
flood_sent "$FLOOD_SENT" 20000 "$FLOOD_CUT" "$FLOOD_MS" ||
	BAD+=("the garbage flood sent $FLOOD_SENT of 20000 frames (closed $FLOOD_CUT after $FLOOD_MS ms)")
[ "$FLOOD_REPLIES" = 0 ] || BAD+=("garbage got $FLOOD_REPLIES replies (expected none)")
flood_sent "$BOMB_SENT" 3 "$BOMB_CUT" "$BOMB_MS" ||
	BAD+=("the unknown-field bombs sent $BOMB_SENT of 3 frames (closed $BOMB_CUT after $BOMB_MS ms)")
[ "$BOMB_REPLIES" = 0 ] || BAD+=("unknown-field bombs got $BOMB_REPLIES replies (expected none)")
[ "$IDLE_OPEN" = 0 ] || BAD+=("$IDLE_OPEN idle connections still open after $((PEER_TIMEOUT * 3)) s")
[ "$STALL_OPEN" = 0 ] || BAD+=("$STALL_OPEN stalled messages still open after $((PEER_TIMEOUT * 3)) s")
[ "$HUGE_OPEN" = 0 ] || BAD+=("$HUGE_OPEN connections declaring 1 GiB still open")
[ "$FAILS" = 0 ] || BAD+=("$FAILS of $CALLS vm unwrap calls failed")
[ "${SLOWEST:-99999}" -lt "$LIMIT_MS" ] ||
	BAD+=("the slowest vm unwrap took ${SLOWEST:-?} ms (limit $LIMIT_MS ms)")
if grep -qa __asan_init "$NKP_HOSTD"; then
	# Sanitizer builds carry shadow memory and keep freed blocks in
	# ASan's quarantine (256 MiB by default) instead of reusing them: the
	# growth is what counts, bounded by the quarantine.
	[ $((HWM - RSS0)) -lt 262144 ] ||
		BAD+=("host memory grew by $((HWM - RSS0)) kB (limit under ASan 256 MiB)")
else
	[ "$HWM" -lt 65536 ] || BAD+=("host VmHWM ${HWM} kB (limit 64 MiB)")
fi
[ $((EV1 - EV0)) -lt 100000 ] || BAD+=("events.jsonl grew by $((EV1 - EV0)) bytes (limit 100 KB)")
if [ ${#BAD[@]} -gt 0 ]; then
	fail "$(printf '%s; ' "${BAD[@]}")"
fi

step "afterwards the host still serves nkpd and its local API"
ok ctl provider rotate prod --timeout $((20 * IT_WAIT_SCALE))
wait_in_sync 20
version_states alpha prod; assert_eq "alpha after a second rotation" "1:decrypt-only 2:decrypt-only 3:active" "$J"
dek alpha vm1
assert_eq "vm1's DEK" "$DEK" "$J"

it_pass
