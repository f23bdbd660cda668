#!/bin/bash
# `nkp-hostctl vm unwrap --out` never leaves a raw data key on disk unless
# told to: stdout is taken when it is a pipe, a FIFO path is taken; a
# regular file (new or existing) and stdout redirected to one are refused
# with one line saying why, before the key is even asked for (no
# key.released event), unless --force-file.
# Every data key released is a key.released event naming the peer (pid,
# uid, executable, cgroup), the VM and the component, and never the key.
. "$(dirname "$0")/lib.sh"
it_begin

setup_cluster alpha
make_provider prod --default
wait_in_sync
vm_create alpha v1
dek alpha v1; DEK=$J     # through a pipe (lib.sh's hostctl)
SOCK=${HOST_DIR[alpha]}/host.sock
hctl() { timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTCTL" --socket "$SOCK" "$@"; }
unwrap() { hctl vm unwrap --keysafe "$T/vm/v1" --component vm-home --format hex "$@"; }
released() { J=$(grep -c '"kind":"key.released"' "${HOST_DIR[alpha]}/events.jsonl"); }

step "a regular file is refused, and none is made"
released; BEFORE=$J
expect_fail unwrap --out "$T/dek.hex"
assert_contains "new file refused: why" "$ERR" "rest on disk"
assert_contains "new file refused: what to do" "$ERR" "--force-file"
[ -e "$T/dek.hex" ] && fail "a key file was made"
: >"$T/old.hex"
expect_fail unwrap --out "$T/old.hex"
assert_contains "existing file refused" "$ERR" "regular file"
[ -s "$T/old.hex" ] && fail "the existing file was written"
ln -s "$T/old.hex" "$T/link.hex"
expect_fail unwrap --out "$T/link.hex"

step "stdout redirected to a regular file is refused"
expect_fail unwrap --out -          # run() sends stdout to a regular file
assert_contains "stdout to a file refused" "$ERR" "stdout"
[ -z "$OUT" ] || fail "a key reached the file stdout pointed to"
released; assert_eq "no key released for a refused destination" "$BEFORE" "$J"

step "stdout as a pipe and a FIFO take the key"
run bash -c '"$0" --socket "$1" vm unwrap --keysafe "$2" --component vm-home --format hex --out - | cat' \
	"$NKP_HOSTCTL" "$SOCK" "$T/vm/v1"
assert_eq "exit through a pipe" 0 "$RC"
assert_eq "DEK through a pipe" "$DEK" "$(printf '%s' "$OUT" | tr -d ' \n')"
mkfifo -m 600 "$T/dek.fifo"
run bash -c 'cat "$0" & r=$!; "$1" --socket "$2" vm unwrap --keysafe "$3" --component vm-home --format hex --out "$0" && wait $r' \
	"$T/dek.fifo" "$NKP_HOSTCTL" "$SOCK" "$T/vm/v1"
assert_eq "exit through a FIFO" 0 "$RC"
assert_eq "DEK through a FIFO" "$DEK" "$(printf '%s' "$OUT" | tr -d ' \n')"

step "every release is a key.released event naming the peer, never the key"
released; N0=$J
dek alpha v1
released; assert_eq "key.released events after one unwrap" $((N0 + 1)) "$J"
EV=$(grep '"kind":"key.released"' "${HOST_DIR[alpha]}/events.jsonl" | tail -n 1)
assert_contains "event: vm uuid" "$EV" "vm $(vm_uuid v1) "
assert_contains "event: component" "$EV" "component vm-home "
assert_contains "event: uid" "$EV" "uid $(id -u) "
assert_contains "event: executable" "$EV" "exe $(readlink -f "$NKP_HOSTCTL")"
assert_contains "event: cgroup (ours, inherited)" "$EV" "cgroup $(paste -sd';' /proc/$$/cgroup)"
[[ $EV =~ \ pid\ ([0-9]+)\  ]] || fail "event: no pid in $EV"
assert_ne "event: pid is the peer's, not the daemon's" "${HOST_PID[alpha]}" "${BASH_REMATCH[1]}"
if grep -qi "$DEK" "${HOST_DIR[alpha]}/events.jsonl" "$T/log/host-alpha.log"; then
	fail "a DEK reached the event log or the daemon's log"
fi

step "--force-file writes a regular file, 0600"
ok unwrap --out "$T/dek.hex" --force-file
assert_eq "DEK in the forced file" "$DEK" "$(tr -d ' \n' <"$T/dek.hex")"
assert_eq "forced file mode" 600 "$(stat -c %a "$T/dek.hex")"
expect_fail unwrap --out "$T/link.hex" --force-file   # never through a symlink
it_pass
