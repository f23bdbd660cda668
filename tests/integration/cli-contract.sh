#!/bin/bash
# The command-line contract of nkpd, nkpctl, nkp-hostd and nkp-hostctl:
# --help exits 0 with usage on stdout for every command and subcommand;
# usage errors exit 2 with a message on stderr, before anything is touched;
# operation failures exit 1 with one line on stderr; --json prints JSON.
# Also: state directories 0700, local sockets 0600, init keeps identities.
. "$(dirname "$0")/lib.sh"
it_begin

help_ok() { # PROGRAM ARGS... --help
	expect_exit 0 "$@" --help
	[ -n "$OUT" ] || fail "no usage on stdout: $* --help"
}

step "--help on every command"
for c in "" init run; do help_ok "$NKPD" $c; done
for c in "" status host "host add" "host remove" "host list" "host wait" "host seal-policy" \
	provider "provider create" "provider list" "provider show" "provider set-default" \
	"provider backup" "provider restore" "provider rotate" "provider retire" \
	"provider delete" baseline "baseline add" "baseline list" "baseline remove" events; do
	help_ok "$NKPCTL" $c
done
for c in "" init run; do help_ok "$NKP_HOSTD" $c; done
for c in "" status vm "vm create" "vm add-disk" "vm add-vtpm" "vm unwrap" "vm rewrap" \
	"vm rekey" "vm decrypt" "vm show"; do
	help_ok "$NKP_HOSTCTL" $c
done
help_ok "$NKPCTL" --json provider show

step "usage errors exit 2 (nothing is running; nothing may be contacted)"
NOSOCK=$T/nothing.sock
D=$T/unused
for cmd in \
	"$NKPD" \
	"$NKPD frobnicate" \
	"$NKPD init" \
	"$NKPD init --state-dir" \
	"$NKPD init --state-dir $D --bogus" \
	"$NKPD run" \
	"$NKPD run --state-dir $D --heartbeat abc" \
	"$NKPD run --state-dir $D --heartbeat -1" \
	"$NKPCTL --socket $NOSOCK" \
	"$NKPCTL --socket $NOSOCK frobnicate" \
	"$NKPCTL --socket $NOSOCK --bogus status" \
	"$NKPCTL --socket" \
	"$NKPCTL --socket $NOSOCK host" \
	"$NKPCTL --socket $NOSOCK host frobnicate" \
	"$NKPCTL --socket $NOSOCK host add" \
	"$NKPCTL --socket $NOSOCK host add h1" \
	"$NKPCTL --socket $NOSOCK host add h1 --address tcp://127.0.0.1:1" \
	"$NKPCTL --socket $NOSOCK host remove" \
	"$NKPCTL --socket $NOSOCK host seal-policy" \
	"$NKPCTL --socket $NOSOCK host seal-policy h" \
	"$NKPCTL --socket $NOSOCK host seal-policy h maybe" \
	"$NKPCTL --socket $NOSOCK host seal-policy h on extra" \
	"$NKPCTL --socket $NOSOCK host wait --in-sync --timeout soon" \
	"$NKPCTL --socket $NOSOCK provider" \
	"$NKPCTL --socket $NOSOCK provider frobnicate" \
	"$NKPCTL --socket $NOSOCK provider create" \
	"$NKPCTL --socket $NOSOCK provider create p --bogus" \
	"$NKPCTL --socket $NOSOCK provider show" \
	"$NKPCTL --socket $NOSOCK provider set-default" \
	"$NKPCTL --socket $NOSOCK provider backup p" \
	"$NKPCTL --socket $NOSOCK provider backup p --out $D/b" \
	"$NKPCTL --socket $NOSOCK provider restore" \
	"$NKPCTL --socket $NOSOCK provider restore $D/b" \
	"$NKPCTL --socket $NOSOCK provider rotate" \
	"$NKPCTL --socket $NOSOCK provider rotate p --timeout abc" \
	"$NKPCTL --socket $NOSOCK provider retire p" \
	"$NKPCTL --socket $NOSOCK provider retire p --version x" \
	"$NKPCTL --socket $NOSOCK provider delete" \
	"$NKPCTL --socket $NOSOCK baseline" \
	"$NKPCTL --socket $NOSOCK baseline frobnicate" \
	"$NKPCTL --socket $NOSOCK baseline add b" \
	"$NKPCTL --socket $NOSOCK baseline add --from-host h" \
	"$NKPCTL --socket $NOSOCK baseline remove" \
	"$NKPCTL --socket $NOSOCK baseline list extra" \
	"$NKPCTL --socket $NOSOCK host add h --address tcp://127.0.0.1:1 --public-key AAAA.BBBB" \
	"$NKPD run --state-dir $D --attest-interval 0" \
	"$NKPD run --state-dir $D --attest-pcrs 24" \
	"$NKPD run --state-dir $D --attest-pcrs 1,,2" \
	"$NKPCTL --socket $NOSOCK events --bogus" \
	"$NKP_HOSTD" \
	"$NKP_HOSTD frobnicate" \
	"$NKP_HOSTD init --state-dir $D" \
	"$NKP_HOSTD init --service-key AAAA" \
	"$NKP_HOSTD run --state-dir $D" \
	"$NKP_HOSTD run --listen tcp://127.0.0.1:1" \
	"$NKP_HOSTCTL --socket $NOSOCK" \
	"$NKP_HOSTCTL --socket $NOSOCK frobnicate" \
	"$NKP_HOSTCTL --socket $NOSOCK vm" \
	"$NKP_HOSTCTL --socket $NOSOCK vm frobnicate" \
	"$NKP_HOSTCTL --socket $NOSOCK vm create" \
	"$NKP_HOSTCTL --socket $NOSOCK vm create --keysafe $D/k" \
	"$NKP_HOSTCTL --socket $NOSOCK vm create --keysafe $D/k --vm-uuid u" \
	"$NKP_HOSTCTL --socket $NOSOCK vm add-disk --keysafe $D/k" \
	"$NKP_HOSTCTL --socket $NOSOCK vm add-vtpm" \
	"$NKP_HOSTCTL --socket $NOSOCK vm unwrap --keysafe $D/k --out -" \
	"$NKP_HOSTCTL --socket $NOSOCK vm unwrap --keysafe $D/k --component vm-home" \
	"$NKP_HOSTCTL --socket $NOSOCK vm unwrap --keysafe $D/k --component vm-home --out - --format octal" \
	"$NKP_HOSTCTL --socket $NOSOCK vm rewrap" \
	"$NKP_HOSTCTL --socket $NOSOCK vm rekey --keysafe $D/k --deep" \
	"$NKP_HOSTCTL --socket $NOSOCK vm decrypt --keysafe $D/k" \
	"$NKP_HOSTCTL --socket $NOSOCK vm add-disk --keysafe $D/k --disk 0 --lock-wait soon" \
	"$NKP_HOSTCTL --socket $NOSOCK vm rewrap --keysafe $D/k --lock-wait -1" \
	"$NKP_HOSTCTL --socket $NOSOCK vm decrypt --keysafe $D/k --component disk:0 --lock-wait 3601" \
	"$NKP_HOSTCTL --socket $NOSOCK vm create --keysafe $D/k --vm-uuid u --vm-name n --lock-wait 1" \
	"$NKP_HOSTCTL --socket $NOSOCK vm show"; do
	# shellcheck disable=SC2086 # word splitting wanted
	expect_exit 2 $cmd
done
[ ! -e "$D" ] || fail "a usage error created $D"

step "failures exit 1 with one line when nothing answers"
expect_fail "$NKPCTL" --socket "$NOSOCK" status
expect_fail "$NKPCTL" --socket "$NOSOCK" provider list
expect_fail "$NKP_HOSTCTL" --socket "$NOSOCK" status
expect_exit 1 "$NKPD" run --state-dir "$T/never-initialised"
expect_exit 1 "$NKP_HOSTD" run --state-dir "$T/never-initialised" --listen "tcp://127.0.0.1:$(free_port)"

step "init: prints a key, 0700 directories, and does not replace an identity"
service_init
assert_eq "service state dir mode" 700 "$(stat -c %a "$SVC_DIR")"
FIRST_KEY=$SVC_KEY
# A second init either refuses (1) or keeps the identity (0, same key).
run "$NKPD" init --state-dir "$SVC_DIR"
case $RC in
0) assert_eq "the key printed by a second nkpd init" "$FIRST_KEY" "$(printf '%s\n' "$OUT" | tail -n 1)" ;;
1) ;;
*) fail "nkpd init on an initialised state dir: exit $RC ($ERR)" ;;
esac
start_service
assert_eq "admin.sock mode" 600 "$(stat -c %a "$SVC_SOCK")"
host_init alpha
assert_eq "host state dir mode" 700 "$(stat -c %a "${HOST_DIR[alpha]}")"
ALPHA_KEY=${HOST_KEY[alpha]}
host_init alpha
assert_eq "host key after re-running init" "$ALPHA_KEY" "${HOST_KEY[alpha]}"
run "$NKP_HOSTD" init --state-dir "$T/h-bad" --service-key "not base64"
[ "$RC" = 1 ] || [ "$RC" = 2 ] || fail "nkp-hostd init with a bad key: expected exit 1 or 2, got $RC"
start_host alpha
assert_eq "host.sock mode" 600 "$(stat -c %a "${HOST_DIR[alpha]}/host.sock")"
enrol alpha
# alpha is pinned to the first key: being in sync proves it still holds.
wait_in_sync

step "--json prints JSON"
for c in status "host list" "provider list"; do
	# shellcheck disable=SC2086
	ok ctl --json $c
	json 'type(d).__name__'
	case "$c:$J" in
	status:dict | "host list:list" | "provider list:list") ;;
	*) fail "nkpctl --json $c printed a $J" ;;
	esac
done
# events: one JSON document, or one JSON object a line.
ok ctl --json events
printf '%s' "$OUT" | "$PYTHON3" -c '
import json, sys
t = sys.stdin.read()
try:
    json.loads(t)
except ValueError:
    [json.loads(l) for l in t.splitlines() if l.strip()]' || fail "nkpctl --json events is not JSON: $OUT"
ok hostctl alpha --json status
json 'type(d["generation"]).__name__, type(d["providers"]).__name__'
assert_eq "nkp-hostctl status --json" '["int", "list"]' "$J"

step "operation failures exit 1 with one line"
expect_fail ctl provider show nosuch
expect_fail ctl provider backup nosuch --out "$T/x.backup" --password-file "$T/password"
expect_fail ctl provider rotate nosuch --timeout 2
expect_fail ctl provider set-default nosuch
expect_fail ctl provider restore "$T/nosuch.backup" --password-file "$T/password"
expect_fail ctl host remove nosuch
ok ctl provider create prod --default
expect_fail ctl provider create prod
ok ctl provider backup prod --out "$T/prod.backup" --password-file "$T/password"
expect_fail ctl provider backup prod --out "$T/prod2.backup" --password-file "$T/nosuch-password"
printf 'garbage' >"$T/garbage.backup"
expect_fail ctl provider restore "$T/garbage.backup" --password-file "$T/password"
wait_in_sync
expect_fail hostctl alpha vm show --keysafe "$T/vm/nosuch"
expect_fail hostctl alpha vm unwrap --keysafe "$T/vm/nosuch" --component vm-home --out - --format hex
expect_fail hostctl alpha vm create --keysafe "$T/vm/np" --vm-uuid "$(vm_uuid np)" --vm-name np --provider nosuch
vm_create alpha k1
expect_fail hostctl alpha vm create --keysafe "$T/vm/k1" --vm-uuid "$(vm_uuid k1)" --vm-name k1
ok hostctl alpha vm add-disk --keysafe "$T/vm/k1" --disk 0
expect_fail hostctl alpha vm add-disk --keysafe "$T/vm/k1" --disk 0
expect_fail hostctl alpha vm unwrap --keysafe "$T/vm/k1" --component disk:9 --out - --format hex
dek alpha k1; K1=$J
printf 'not a keysafe' >"$T/vm/junk"
expect_fail hostctl alpha vm show --keysafe "$T/vm/junk"
expect_fail hostctl alpha vm unwrap --keysafe "$T/vm/junk" --component vm-home --out - --format hex

step "a tampered keysafe fails with one line and no DEK"
"$PYTHON3" -c '
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) - 3] ^= 0x01
open(sys.argv[2], "wb").write(bytes(b))' "$T/vm/k1" "$T/vm/k1-tampered"
expect_fail hostctl alpha vm unwrap --keysafe "$T/vm/k1-tampered" --component vm-home --out - --format hex
assert_not_contains "stdout of a failed unwrap" "$OUT" "$K1"
check_dek alpha k1 vm-home "$K1"

step "no key bytes in logs or events"
ok ctl events
for f in "$T"/log/*.log "$SVC_DIR/events.jsonl" "${HOST_DIR[alpha]}/events.jsonl"; do
	[ -e "$f" ] || continue
	if grep -qi "$K1" "$f"; then
		fail "$f contains a DEK"
	fi
done

step "nkp-hostctl: a reset connection: read-only requests are sent again, changing ones never"
# A stand-in for host.sock (SP over ipc, REP side) that logs the op of
# every request and drops the connection, without a reply, for the first
# RESETS requests; later ones get a canned reply. This is what a request
# meets when nkp-hostd replaces a wedged listener under it.
cat >"$T/reset-host.py" <<'PY'
import socket, struct, sys, threading

path, resets, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = [0]
lock = threading.Lock()
REPLIES = {2: b"\x1a\x00", 5: b"\x2a\x20" + bytes(range(32))}  # status; a dek

def read(c, n):
    b = b""
    while len(b) < n:
        part = c.recv(n - len(b))
        if not part:
            raise EOFError
        b += part
    return b

def serve(c):
    try:
        c.sendall(b"\x00SP\x00\x00\x31\x00\x00")  # REP0
        read(c, 8)
        while True:
            _, n = struct.unpack(">BQ", read(c, 9))
            body = read(c, n)
            i = 4
            if body[i] == 0x08:  # api_version
                i += 2
            op = body[i] >> 3
            with lock:
                seen[0] += 1
                drop = seen[0] <= resets
                with open(log, "a") as f:
                    f.write("%d\n" % op)
            if drop:
                return
            rep = body[:4] + REPLIES.get(op, b"\x08\x01")
            c.sendall(struct.pack(">BQ", 1, len(rep)) + rep)
    except (EOFError, OSError):
        pass
    finally:
        c.close()

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
PY
RH_N=0
# reset_host RESETS: starts a stand-in; RH_SOCK, RH_LOG, RH_PID.
reset_host() {
	RH_N=$((RH_N + 1))
	RH_SOCK=$T/reset$RH_N.sock
	RH_LOG=$T/reset$RH_N.log
	: >"$RH_LOG"
	"$PYTHON3" "$T/reset-host.py" "$RH_SOCK" "$1" "$RH_LOG" >>"$T/log/reset-host.log" 2>&1 &
	RH_PID=$!
	IT_PIDS+=("$RH_PID")
	wait_until 5 "the stand-in for host.sock to listen" test -S "$RH_SOCK"
}
# (stdout a pipe, as `vm unwrap --out -` wants)
rh_ctl() { timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTCTL" --socket "$RH_SOCK" "$@" | cat; }
rh_ops() { J=$(tr '\n' ' ' <"$RH_LOG"); J=${J% }; }

reset_host 2
ok rh_ctl status
rh_ops
assert_eq "status requests after 2 resets (op 2, sent 3 times)" "2 2 2" "$J"
kill_pid "$RH_PID"

reset_host 1
printf 'keysafe bytes' >"$T/vm/reset-ks"
ok rh_ctl vm unwrap --keysafe "$T/vm/reset-ks" --component vm-home --out - --format hex
assert_eq "the DEK of a re-sent unwrap" "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" "$OUT"
rh_ops
assert_eq "unwrap requests after 1 reset (op 5, sent twice)" "5 5" "$J"
kill_pid "$RH_PID"

reset_host 1
cp "$T/vm/k1" "$T/vm/reset-k1"
expect_fail rh_ctl vm rewrap --keysafe "$T/vm/reset-k1"
sleep 1.5
rh_ops
assert_eq "rewrap requests after 1 reset (op 6, never sent again)" "6" "$J"
cmp -s "$T/vm/k1" "$T/vm/reset-k1" || fail "a failed rewrap changed its keysafe file"
kill_pid "$RH_PID"

reset_host 100
expect_fail rh_ctl status
rh_ops
assert_eq "status requests when every one is reset (1 + 5 re-sends)" "2 2 2 2 2 2" "$J"
kill_pid "$RH_PID"

it_pass
