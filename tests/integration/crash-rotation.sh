#!/bin/bash
# nkpd killed (SIGKILL) at each step of a two-phase rotation, then
# restarted: its state is one of the two consistent states around the
# crash (staged, or promoted), never a mix or a lost version, and the
# rotation completes: `provider rotate` again resumes the same staged
# version (no new one), or the promoted state reaches every host.
#
# Each step is reached deterministically: a host held with SIGSTOP keeps
# the rotation waiting with the staged version persisted; the fault shim
# stalls nkpd's write of state.nkp for the promotion (skipping the write
# that staged) at its creating open (every host acknowledged, nothing of
# the promotion on disk), at its first write (a partial temp file), at its
# rename (a complete temp file not yet in place), or just after the
# rename (the promotion persisted, nothing pushed).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "two hosts, nkpd under the fault shim, a backed-up default provider"
service_init
start_service_shim
for h in alpha bravo; do
	host_init "$h"
	start_host "$h"
	enrol "$h"
done
wait_in_sync
make_provider prod --default
wait_in_sync
declare -A DEKS
vm_create alpha k1
dek alpha k1; DEKS[k1]=$J

# rotate_bg: `provider rotate prod` in the background (BG = its PID).
rotate_bg() {
	ctl provider rotate prod --timeout 40 >"$T/rotate.out" 2>"$T/rotate.err" &
	BG=$!
	IT_PIDS+=("$BG")
}

# rotate_bg_died: the background rotate must fail (its service died) and
# say so in one line.
rotate_bg_died() {
	local st
	wait "$BG"
	st=$?
	forget_pid "$BG"
	[ "$st" != 0 ] || fail "provider rotate succeeded although nkpd was killed"
	[ "$(grep -c . "$T/rotate.err")" = 1 ] ||
		fail "provider rotate's error is not one line: $(cat "$T/rotate.err")"
}

# restart: nkpd again (the shim disarmed); the state must load.
restart() {
	shim_clear svc
	start_service_shim
	ok ctl --json host list
	json 'sorted(h["name"] for h in d)'
	assert_eq "hosts after the restart" '["alpha", "bravo"]' "$J"
	temps
	assert_eq "temp files of the interrupted write left after the restart" 0 "$J"
}

temps() { J=$(find "$SVC_DIR" -name 'state.nkp*.tmp.*' | wc -l); }

# states_for N ACTIVE_STATE: J="1:decrypt-only ... N-1:decrypt-only N:STATE"
# with version N-1 active when N is staged.
states_for() {
	local n=$1 last=$2 i s=""
	for ((i = 1; i < n - 1; i++)); do s+="$i:decrypt-only "; done
	if [ "$last" = staged ]; then
		s+="$((n - 1)):active $n:staged"
	else
		[ "$n" -gt 1 ] && s+="$((n - 1)):decrypt-only "
		s+="$n:active"
	fi
	J=$s
}

# promoted_everywhere N: service and both hosts hold N active.
promoted_everywhere() {
	states_for "$1" active
	local want=$J
	version_states_svc prod; assert_eq "versions (service)" "$want" "$J"
	for h in alpha bravo; do
		wait_states "$h" prod "$want" 15
	done
	wait_in_sync 15
}

# resume N: `provider rotate` again resumes version N and promotes it.
resume() {
	ok ctl provider rotate prod --timeout 20
	promoted_everywhere "$1"
	ok ctl events
	assert_contains "events after resuming" "$OUT" "staged earlier, resuming"
}

# ------------------------------------------------------------------
step "kill -9 after staging is persisted (bravo held with SIGSTOP)"
pause_host bravo
rotate_bg
wait_until 10 "version 2 staged on alpha" \
	bash -c "'$NKP_HOSTCTL' --socket '${HOST_DIR[alpha]}/host.sock' --json status | grep -q staged"
crash_service
rotate_bg_died
restart
states_for 2 staged; W=$J
version_states_svc prod; assert_eq "versions (service) after the restart" "$W" "$J"
version_states alpha prod; assert_eq "versions on alpha after the restart" "1:active 2:staged" "$J"
resume_host bravo
resume 2
vm_create bravo k2
vm_field bravo k2 'd["primary_version"]'; assert_eq "k2's version" 2 "$J"
dek bravo k2; DEKS[k2]=$J

# crash_at RULE N: rotate with nkpd's promotion write stalled by RULE,
# kill -9 nkpd there, restart it; N is the version being rotated in.
crash_at() {
	local rule=$1 n=$2
	shim_arm svc "$rule"
	rotate_bg
	shim_wait_hit svc 15
	states_for "$n" staged
	local want=$J
	for h in alpha bravo; do
		version_states "$h" prod
		assert_eq "versions on $h when nkpd stalls ($rule)" "$want" "$J"
	done
	case $rule in
	write* | rename\ stall*)
		temps
		assert_eq "temp files while the promotion is being written" 1 "$J"
		;;
	esac
	crash_service
	rotate_bg_died
	restart
}

step "kill -9 after every host acknowledged, before the promotion is written"
crash_at "open stall state.nkp 1" 3
states_for 3 staged; W=$J
version_states_svc prod; assert_eq "versions (service): still staged" "$W" "$J"
resume 3

step "kill -9 while persisting the promotion (temp file begun)"
crash_at "write stall state.nkp 1" 4
states_for 4 staged; W=$J
version_states_svc prod; assert_eq "versions (service): still staged" "$W" "$J"
resume 4

step "kill -9 while persisting the promotion (temp file complete, not renamed)"
crash_at "rename stall state.nkp 1" 5
states_for 5 staged; W=$J
version_states_svc prod; assert_eq "versions (service): still staged" "$W" "$J"
resume 5

step "kill -9 right after the promotion is persisted, before it is pushed"
crash_at "rename after state.nkp 1" 6
states_for 6 active; W=$J
version_states_svc prod; assert_eq "versions (service): promoted" "$W" "$J"
promoted_everywhere 6

step "every key still unwraps on both hosts"
for h in alpha bravo; do
	for f in k1 k2; do
		check_dek "$h" "$f" vm-home "${DEKS[$f]}"
	done
done
vm_create alpha k6
vm_field alpha k6 'd["primary_version"]'; assert_eq "k6's version" 6 "$J"
ok ctl --json provider show prod
json 'len(d["versions"])'; assert_eq "versions the service holds" 6 "$J"

it_pass
