#!/bin/bash
# Concurrent writers and concurrent daemons.
#
# Keysafe changes are atomic against each other: many `nkp-hostctl vm`
# commands on one keysafe at once (add-disk beside add-disk, rewrap, rekey
# and decrypt) never lose one another's change. Every call that exits 0 has
# its change in the keysafe (an added disk's key is there and unwraps); a
# call that cannot apply its change exits 1, never 0. `vm create` of one
# keysafe by several callers at once creates it exactly once. A writer that
# cannot take the keysafe's lock in time exits 1 and names the holder.
#
# One daemon per state directory: a second nkp-hostd (or `nkp-hostd init`)
# on a running host's directory, or a second nkpd on the service's, is
# refused before anything in the directory is touched (every file's size,
# mtime and SHA-256 compared, temp files planted beside keys.nkp
# included), with a message naming the pid of the daemon holding it.
#
# The property checks record every violation and the test fails at the end
# with all of them, so one run shows the whole picture.
. "$(dirname "$0")/lib.sh"
it_begin

PROBLEMS=()
problem() {
	printf '%s: PROBLEM: %s\n' "$IT_NAME" "$*" >&2
	PROBLEMS+=("$*")
}

# launch N NAME CMD...: starts N copies of CMD in the background, all held
# at a barrier (one line each from a FIFO the test keeps open) and released
# together. In CMD, the word @I@ becomes the copy's index (0..N-1). Exit
# status, stdout and stderr of copy I go to $T/NAME/I.{rc,out,err}.
# Appends the subshells' PIDs to LAUNCHED.
LAUNCHED=()
launch() {
	local n=$1 name=$2 i a args
	shift 2
	mkdir -p "$T/$name"
	for ((i = 0; i < n; i++)); do
		args=()
		for a in "$@"; do args+=("${a//@I@/$i}"); done
		(
			read -r _ <"$T/barrier"
			bounded "${args[@]}" >"$T/$name/$i.out" 2>"$T/$name/$i.err"
			echo $? >"$T/$name/$i.rc"
		) &
		LAUNCHED+=("$!")
		IT_PIDS+=("$!")
	done
}

# release: lets every launched copy go, and waits for all of them (each is
# bounded by IT_CMD_TIMEOUT).
release() {
	local pid n=${#LAUNCHED[@]}
	# One write: every copy finds its line, however late it opened the FIFO.
	printf "%${n}s" "" | tr ' ' '\n' >&9
	for pid in "${LAUNCHED[@]}"; do
		wait "$pid"
		forget_pid "$pid"
	done
	LAUNCHED=()
}

rc_of() { cat "$T/$1/$2.rc"; } # NAME I

# components FILE: COMPS=" c1 c2 ... " (what `vm show` lists), for
# has_component, which then costs no process.
COMPS=""
components() {
	ok hostctl alpha --json vm show --keysafe "$T/vm/$1"
	json '" ".join(d["components"])'
	COMPS=" $J "
}
has_component() { [[ $COMPS == *" $1 "* ]]; } # COMPONENT

# unwraps FILE COMPONENT: exit 0 if the component's DEK unwraps (64 hex).
unwraps() {
	run hostctl alpha vm unwrap --keysafe "$T/vm/$1" --component "$2" --out - --format hex
	[ "$RC" = 0 ] && [ "$(printf '%s' "$OUT" | tr -d ' \n' | wc -c)" = 64 ]
}

# dir_listing DIR OUTFILE: every entry under DIR with its type, mode, size,
# mtime (ns), inode and, for regular files, SHA-256.
dir_listing() {
	"$PYTHON3" - "$1" >"$2" <<'PY' || fail "cannot list $1"
import hashlib, os, stat, sys
root = sys.argv[1]
for dirpath, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        p = os.path.join(dirpath, name)
        st = os.lstat(p)
        digest = "-"
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        print(os.path.relpath(p, root), oct(st.st_mode), st.st_size, st.st_mtime_ns,
              st.st_ino, digest)
PY
}

mkfifo "$T/barrier" || fail "mkfifo"
# Read-write: opening it neither blocks nor leaves the readers at EOF.
exec 9<>"$T/barrier"

step "one host, a backed-up default provider"
setup_cluster alpha
make_provider prod --default
wait_in_sync

# ------------------------------------------------------------------------
step "16 concurrent vm add-disk on one keysafe"
vm_create alpha v1
dek alpha v1; V1_HOME=$J
launch 16 add hostctl alpha vm add-disk --keysafe "$T/vm/v1" --disk d@I@
release
ok0=0 lost=0
components v1
for ((i = 0; i < 16; i++)); do
	rc=$(rc_of add "$i")
	case $rc in
	0)
		ok0=$((ok0 + 1))
		if ! has_component "disk:d$i" || ! unwraps v1 "disk:d$i"; then
			lost=$((lost + 1))
		fi
		;;
	1) [ -s "$T/add/$i.err" ] || problem "add-disk d$i exited 1 without a message" ;;
	*) problem "add-disk d$i exited $rc (stderr: $(cat "$T/add/$i.err"))" ;;
	esac
done
log "add-disk x16: $ok0 exited 0, $lost of them lost their disk key"
[ "$lost" = 0 ] || problem "$lost of $ok0 add-disk calls exited 0 and their disk key is gone"
# Waiting for the lock, none needs to give up.
[ "$ok0" = 16 ] || problem "only $ok0 of 16 add-disk calls succeeded"
ok hostctl alpha vm show --keysafe "$T/vm/v1"
check_dek alpha v1 vm-home "$V1_HOME"

# ------------------------------------------------------------------------
step "add-disk beside rewrap, rekey and decrypt"
vm_create alpha v2
for i in 0 1 2 3 4 5; do
	ok hostctl alpha vm add-disk --keysafe "$T/vm/v2" --disk x$i
done
dek alpha v2; V2_HOME=$J
declare -A V2_DEK
for i in 4 5; do dek alpha v2 "disk:x$i"; V2_DEK[$i]=$J; done
ok ctl provider rotate prod --timeout 20
wait_in_sync
vm_field alpha v2 'd["primary_version"]'; assert_eq "v2's version before rewrap" 1 "$J"

launch 8 mix-add hostctl alpha vm add-disk --keysafe "$T/vm/v2" --disk n@I@
launch 4 mix-dec hostctl alpha vm decrypt --keysafe "$T/vm/v2" --component disk:x@I@
launch 1 mix-rewrap hostctl alpha vm rewrap --keysafe "$T/vm/v2"
launch 1 mix-rekey hostctl alpha vm rekey --keysafe "$T/vm/v2"
release
ok hostctl alpha vm show --keysafe "$T/vm/v2"
mixlost=0
components v2
for ((i = 0; i < 8; i++)); do
	rc=$(rc_of mix-add "$i")
	case $rc in
	0) if ! has_component "disk:n$i" || ! unwraps v2 "disk:n$i"; then
		mixlost=$((mixlost + 1))
	fi ;;
	1) ;;
	*) problem "add-disk n$i beside rewrap exited $rc" ;;
	esac
done
[ "$mixlost" = 0 ] || problem "$mixlost add-disk calls beside rewrap/rekey/decrypt exited 0 and lost their key"
undone=0
for ((i = 0; i < 4; i++)); do
	rc=$(rc_of mix-dec "$i")
	case $rc in
	0) has_component "disk:x$i" && undone=$((undone + 1)) ;;
	1) ;;
	*) problem "decrypt x$i exited $rc" ;;
	esac
done
[ "$undone" = 0 ] || problem "$undone decrypt calls exited 0 and their component is back"
rc=$(rc_of mix-rewrap 0)
if [ "$rc" = 0 ]; then
	vm_field alpha v2 'd["primary_version"]'
	[ "$J" = 2 ] || problem "rewrap exited 0 and the keysafe is back on version $J"
elif [ "$rc" != 1 ]; then
	problem "rewrap exited $rc"
fi
rc=$(rc_of mix-rekey 0)
[ "$rc" = 0 ] || [ "$rc" = 1 ] || problem "rekey exited $rc"
log "mixed: add-disk lost $mixlost, decrypt undone $undone; exits: add $(cat "$T"/mix-add/*.rc | tr '\n' ' ')dec $(cat "$T"/mix-dec/*.rc | tr '\n' ' ')rewrap $(rc_of mix-rewrap 0) rekey $(rc_of mix-rekey 0)"
for f in mix-add/0 mix-add/1 mix-add/2 mix-add/3 mix-add/4 mix-add/5 mix-add/6 mix-add/7 \
	mix-dec/0 mix-dec/1 mix-dec/2 mix-dec/3 mix-rewrap/0 mix-rekey/0; do
	[ "$(cat "$T/$f.rc")" = 0 ] || problem "$f exited $(cat "$T/$f.rc") beside the others: $(cat "$T/$f.err")"
done
# Neither rewrap nor a shallow rekey changes a data key.
check_dek alpha v2 vm-home "$V2_HOME"
for i in 4 5; do check_dek alpha v2 "disk:x$i" "${V2_DEK[$i]}"; done

# ------------------------------------------------------------------------
step "8 concurrent vm create of one keysafe: exactly one succeeds"
launch 8 create hostctl alpha vm create --keysafe "$T/vm/v3" --vm-uuid "$(vm_uuid v3)" \
	--vm-name "c@I@"
release
winners=()
for ((i = 0; i < 8; i++)); do
	rc=$(rc_of create "$i")
	case $rc in
	0) winners+=("$i") ;;
	1) assert_contains "a losing vm create" "$(cat "$T/create/$i.err")" "exists" ;;
	*) problem "vm create c$i exited $rc" ;;
	esac
done
if [ "${#winners[@]}" != 1 ]; then
	problem "${#winners[@]} of 8 vm create calls of one keysafe exited 0 (${winners[*]})"
else
	vm_field alpha v3 'd["vm_name"]'
	assert_eq "the keysafe vm create made" "c${winners[0]}" "$J"
fi
unwraps v3 vm-home || problem "the created keysafe does not unwrap"
compgen -G "$T/vm/*tmp*" >/dev/null && problem "temp files left in the VM directory: $(ls "$T/vm")"

# ------------------------------------------------------------------------
step "a writer that cannot take the keysafe's lock in time exits 1, naming the holder"
# A held lock: an add-disk whose host is stopped holds it until the host
# answers.
pause_host alpha
launch 1 held hostctl alpha vm add-disk --keysafe "$T/vm/v1" --disk held
printf '\n' >&9
holder=""
deadline=$(($(date +%s) + 10 * IT_WAIT_SCALE))
while [ -z "$holder" ] && [ "$(date +%s)" -lt "$deadline" ]; do
	p=$(cat "$T/vm/v1.lock" 2>/dev/null | tr -d '\n')
	if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = nkp-hostctl ]; then
		holder=$p
	else
		sleep 0.1
	fi
done
if [ -z "$holder" ]; then
	problem "no nkp-hostctl recorded itself in $T/vm/v1.lock within 10 s"
else
	expect_fail hostctl alpha vm add-disk --keysafe "$T/vm/v1" --disk late --lock-wait 1
	assert_contains "lock timeout message" "$ERR" "pid $holder"
	log "refused: $ERR"
	[ "$(stat -c %A "$T/vm/v1.lock")" = -rw------- ] || problem "the lock file is not 0600"
fi
resume_host alpha
for pid in "${LAUNCHED[@]}"; do wait "$pid"; forget_pid "$pid"; done
LAUNCHED=()
assert_eq "the add-disk that held the lock" 0 "$(rc_of held 0)"
components v1
has_component disk:held || problem "the add-disk that held the lock lost its disk"
has_component disk:late && problem "an add-disk refused for the lock added its disk"

# ------------------------------------------------------------------------
step "a second nkp-hostd on a running host's state directory is refused, nothing touched"
HD=${HOST_DIR[alpha]}
# Temp files as a crash leaves them; a running host must keep whatever is
# there, and a refused second one must not tidy up either.
printf 'planted' >"$HD/keys.nkp.tmp.0123456789abcdef"
printf 'planted' >"$HD/keys.nkp.prev.tmp.0123456789abcdef"
[ -e "$HD/keys.nkp.log" ] || printf 'planted' >"$HD/keys.nkp.log"
# Stopped, the running host cannot change its directory meanwhile; it
# still holds its lock and its port.
pause_host alpha
dir_listing "$HD" "$T/host-before"
P2=$(free_port)
timeout -k 2 $((10 * IT_WAIT_SCALE)) "$NKP_HOSTD" run --state-dir "$HD" \
	--listen "tcp://127.0.0.1:$P2" >"$T/second.out" 2>"$T/second.err"
rc=$?
dir_listing "$HD" "$T/host-after"
SECOND_ERR=$(cat "$T/second.err")
log "second nkp-hostd: exit $rc: $SECOND_ERR"
[ "$rc" = 1 ] || problem "a second nkp-hostd exited $rc, expected 1 (stderr: $SECOND_ERR)"
cmp -s "$T/host-before" "$T/host-after" ||
	problem "a second nkp-hostd changed the state directory: $(diff "$T/host-before" "$T/host-after")"
assert_not_contains "second nkp-hostd" "$SECOND_ERR" "cannot listen"
[[ $SECOND_ERR == *"pid ${HOST_PID[alpha]}"* ]] ||
	problem "the second nkp-hostd does not name the holder (pid ${HOST_PID[alpha]}): $SECOND_ERR"

step "nkp-hostd init on a running host's state directory is refused, nothing touched"
run "$NKP_HOSTD" init --state-dir "$HD" --service-key "$SVC_KEY"
dir_listing "$HD" "$T/host-after-init"
log "nkp-hostd init: exit $RC: $ERR"
[ "$RC" = 1 ] || problem "nkp-hostd init on a running host exited $RC, expected 1"
cmp -s "$T/host-before" "$T/host-after-init" ||
	problem "nkp-hostd init changed a running host's directory: $(diff "$T/host-before" "$T/host-after-init")"
[[ $ERR == *"pid ${HOST_PID[alpha]}"* ]] ||
	problem "nkp-hostd init does not name the holder (pid ${HOST_PID[alpha]}): $ERR"
resume_host alpha
rm -f "$HD/keys.nkp.tmp.0123456789abcdef" "$HD/keys.nkp.prev.tmp.0123456789abcdef"
run hostctl alpha status
[ "$RC" = 0 ] || problem "the first nkp-hostd no longer answers on its socket: $ERR"

step "a second nkpd on the service's state directory is refused, nothing touched"
kill -STOP "$SVC_PID"
dir_listing "$SVC_DIR" "$T/svc-before"
run "$NKPD" run --state-dir "$SVC_DIR"
dir_listing "$SVC_DIR" "$T/svc-after"
log "second nkpd: exit $RC: $ERR"
kill -CONT "$SVC_PID"
[ "$RC" = 1 ] || problem "a second nkpd exited $RC, expected 1"
cmp -s "$T/svc-before" "$T/svc-after" ||
	problem "a second nkpd changed the state directory: $(diff "$T/svc-before" "$T/svc-after")"
[[ $ERR == *"pid $SVC_PID"* ]] || problem "the second nkpd does not name the holder (pid $SVC_PID): $ERR"
ok ctl status

if [ "${#PROBLEMS[@]}" != 0 ]; then
	fail "${#PROBLEMS[@]} problem(s):
$(printf '  - %s\n' "${PROBLEMS[@]}")"
fi
it_pass
