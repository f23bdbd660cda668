#!/bin/bash
# A host frozen with SIGSTOP (it accepts connections but never answers):
# the service keeps serving, the other hosts converge on time (a change
# reaches them within seconds, rotate --force promotes at its deadline and
# they hold the promoted state), and the frozen host converges after
# SIGCONT.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "three hosts and a backed-up default provider"
setup_cluster alpha bravo charlie
make_provider prod --default
wait_in_sync
vm_create charlie c1
dek charlie c1; C1=$J

now_ms() { echo $(($(date +%s%N) / 1000000)); }

step "charlie frozen: a new provider reaches alpha and bravo within 5 s"
pause_host charlie
T0=$(now_ms)
ok ctl provider create other
for h in alpha bravo; do
	wait_states "$h" other "1:active" 5
done
ok ctl status
ok ctl --json host list
json '{h["name"]: h["state"] for h in d}'
json 'd["alpha"], d["bravo"], d["charlie"] != "in-sync"' "$J"
assert_eq "host states" '["in-sync", "in-sync", true]' "$J"

step "rotate --force promotes at its deadline; alpha and bravo hold it"
T0=$(now_ms)
ok ctl provider rotate prod --timeout 3 --force
ELAPSED=$(($(now_ms) - T0))
# Its own 3 s deadline, plus a margin for a slow build or a busy machine.
LIMIT_MS=$((3000 + 5000 * IT_WAIT_SCALE))
[ "$ELAPSED" -lt "$LIMIT_MS" ] || fail "rotate --force --timeout 3 took $ELAPSED ms (limit $LIMIT_MS)"
assert_contains "rotate's output" "$OUT" "charlie"
for h in alpha bravo; do
	wait_states "$h" prod "1:decrypt-only 2:active" 5
done
vm_create alpha a2
vm_field alpha a2 'd["primary_version"]'; assert_eq "a2's version" 2 "$J"
dek alpha a2; A2=$J

step "charlie thawed: it converges"
resume_host charlie
wait_in_sync 30
version_states charlie prod; assert_eq "versions on charlie" "1:decrypt-only 2:active" "$J"
host_providers charlie; assert_eq "providers on charlie" "other prod" "$J"
check_dek charlie a2 vm-home "$A2"
check_dek charlie c1 vm-home "$C1"

# Thawing a process fires all of nng's timers at once, which can wedge nng
# 1.5's reaper for good: nothing can be closed any more. nkp-hostd then
# exits 1 with NKP-HOSTD-NNG-WEDGED (for its service manager to restart
# it) instead of hanging in its stop; either end is right, a hang is not.
step "charlie stops: cleanly, or by the nng wedge exit"
# shellcheck disable=SC2317 # called through wait_until
gone() { ! kill -0 "$1" 2>/dev/null; }
PID=${HOST_PID[charlie]}
kill -TERM "$PID"
wait_until 30 "charlie to exit on SIGTERM" gone "$PID"
wait "$PID"
ST=$?
forget_pid "$PID"
HOST_PID[charlie]=""
if [ "$ST" = 1 ] && grep -q NKP-HOSTD-NNG-WEDGED "$T/log/host-charlie.log"; then
	log "charlie's nng reaper wedged at the thaw; it exited 1 to be restarted"
else
	assert_eq "charlie's exit status on SIGTERM" 0 "$ST"
fi

it_pass
