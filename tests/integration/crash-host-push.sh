#!/bin/bash
# A host killed (SIGKILL) while it applies a push, at each point of its
# save: a push that adds keys appends one record to keys.nkp.log (killed
# before the log is opened, before the record is written, before it is
# synced); a push that removes keys writes a new snapshot keys.nkp (killed
# just after the new file is in place, before the old log is removed and
# before the ack). After a restart it holds either the old or the new
# state (never a mix, never nothing), loses no key (every keysafe still
# unwraps to the same DEK) and converges with the service; a rotation
# waiting for it completes once it is back.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "service, alpha under the fault shim, bravo; a backed-up default provider"
service_init
start_service
host_init alpha
start_host_shim alpha
enrol alpha
host_init bravo
start_host bravo
enrol bravo
wait_in_sync
make_provider prod --default
wait_in_sync
vm_create alpha a1
dek alpha a1; A1=$J
vm_create bravo b1
dek bravo b1; B1=$J

temps() { J=$(find "${HOST_DIR[alpha]}" -name 'keys.nkp*.tmp.*' | wc -l); }
log_len() { J=$(stat -c %s "${HOST_DIR[alpha]}/keys.nkp.log" 2>/dev/null || echo 0); }

# crash_alpha RULE: waits until RULE stalls alpha, kills it, restarts it
# (shim disarmed) and waits for every host to be in sync. The temp files
# the crash left must be gone once alpha is up (it may already be writing
# a new one for the push that follows its restart: that one is not
# counted).
crash_alpha() {
	local left f
	shim_wait_hit alpha 15
	crash_host alpha
	left=$(find "${HOST_DIR[alpha]}" -name 'keys.nkp*.tmp.*')
	shim_clear alpha
	start_host_shim alpha
	for f in $left; do
		[ ! -e "$f" ] || fail "temp file ${f##*/} left on alpha after its restart"
	done
	wait_in_sync 30
	temps
	assert_eq "temp files on alpha once in sync" 0 "$J"
	check_dek alpha a1 vm-home "$A1"
	check_dek alpha b1 vm-home "$B1"
}

step "kill -9 before alpha opens its log (provider create pushes)"
shim_arm alpha "open stall keys.nkp"
ok ctl provider create second
crash_alpha
host_providers alpha; assert_eq "providers on alpha" "prod second" "$J"

step "kill -9 before alpha's log record is written, in the middle of a rotation"
log_len; LOG_BEFORE=$J
shim_arm alpha "write stall keys.nkp"
ctl provider rotate prod --timeout 40 >"$T/rotate.out" 2>"$T/rotate.err" &
BG=$!
IT_PIDS+=("$BG")
shim_wait_hit alpha 15
log_len
assert_eq "alpha's log length while it writes" "$LOG_BEFORE" "$J"
temps
assert_eq "temp files on alpha while it appends" 0 "$J"
version_states bravo prod; assert_eq "versions on bravo while alpha is stalled" "1:active 2:staged" "$J"
crash_alpha
wait "$BG" || fail "the rotation did not complete once alpha was back: $(cat "$T/rotate.err")"
forget_pid "$BG"
for h in alpha bravo; do
	wait_states "$h" prod "1:decrypt-only 2:active"
done
wait_in_sync 15
vm_create alpha a2
vm_field alpha a2 'd["primary_version"]'; assert_eq "a2's version" 2 "$J"
dek alpha a2; A2=$J
check_dek bravo a2 vm-home "$A2"

step "kill -9 with alpha's log record written, not yet synced"
ok hostctl alpha --json status
json 'd["generation"]'; GEN_BEFORE=$J
log_len; LOG_BEFORE=$J
shim_arm alpha "fsync stall keys.nkp"
ok ctl provider create third
shim_wait_hit alpha 15
log_len
[ "$J" -gt "$LOG_BEFORE" ] || fail "alpha's log did not grow before its sync ($LOG_BEFORE -> $J)"
crash_alpha
host_providers alpha; assert_eq "providers on alpha" "prod second third" "$J"
host_generation alpha; GEN_ALPHA=$J
host_generation bravo; assert_eq "alpha's generation is bravo's" "$J" "$GEN_ALPHA"
[ "$GEN_ALPHA" -gt "$GEN_BEFORE" ] || fail "alpha's generation did not advance ($GEN_BEFORE -> $GEN_ALPHA)"
check_dek alpha a2 vm-home "$A2"

step "kill -9 after alpha's new snapshot is in place (a delete compacts), before its ack"
ok hostctl alpha --json status
json 'd["generation"]'; GEN_BEFORE=$J
[ -s "${HOST_DIR[alpha]}/keys.nkp.log" ] || fail "alpha has no log before the compaction"
shim_arm alpha "rename after keys.nkp"
ok ctl provider delete third
shim_wait_hit alpha 15
[ -s "${HOST_DIR[alpha]}/keys.nkp.log" ] || fail "alpha's old log went before its snapshot was in place"
crash_alpha
grep -q NKP-HOSTD-LOG-STALE "$T/log/host-alpha.log" ||
	fail "alpha's restart did not drop the log of its old snapshot"
host_providers alpha; assert_eq "providers on alpha" "prod second" "$J"
host_generation alpha; GEN_ALPHA=$J
host_generation bravo; assert_eq "alpha's generation is bravo's" "$J" "$GEN_ALPHA"
[ "$GEN_ALPHA" -gt "$GEN_BEFORE" ] || fail "alpha's generation did not advance ($GEN_BEFORE -> $GEN_ALPHA)"
check_dek alpha a1 vm-home "$A1"
check_dek alpha a2 vm-home "$A2"
ok ctl --json host list
json '[h["state"] for h in d]'; assert_eq "host states" '["in-sync", "in-sync"]' "$J"

it_pass
