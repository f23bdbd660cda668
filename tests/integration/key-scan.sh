#!/bin/bash
# No clear key escapes to disk. A representative workload (providers
# created, backed up with a known password, rotated; VM keys made,
# extra disks and a vTPM added, rewrapped, rekeyed; every data key unwrapped
# to stdout into a shell variable, never a file), then every daemon stopped.
# The provider keys are recovered from the backups (keyscan-recover, which
# links libnkp's nkp_backup_import), the per-VM KEKs by unwrapping each
# keysafe with them (the KEK before and after a rekey), and, with every data
# key unwrapped, searched for as raw bytes, hex (both cases) and base64 (std
# and url alphabets, every alignment) in: every file under the test's
# directory (logs, backups, the helpers' scratch files), each daemon's state
# directory and the VM keysafe directory (each named and checked to have
# been scanned), and every file written since the test began in the
# daemons' working directory and the temporary directories (TMPDIR, /tmp,
# /var/tmp, /dev/shm): none may appear. A planted canary first shows that
# the scan finds each encoding.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

SECRETS=""     # hex, one per line; in memory only

# unwrap HOST KEYSAFE COMPONENT: adds that data key to SECRETS.
unwrap() {
	local k
	k=$(hostctl "$1" vm unwrap --keysafe "$T/vm/$2" --component "$3" --out - --format hex) ||
		fail "unwrap of $2/$3 on $1 failed"
	k=$(printf '%s' "$k" | tr -d ' \n')
	[ ${#k} = 64 ] || fail "unwrap of $2/$3 on $1 did not give 32 bytes"
	SECRETS+="$k"$'\n'
}

# recover BACKUP [KEYSAFE...]: adds every provider key the backup holds,
# and the KEK of each KEYSAFE (sealed under one of them), to SECRETS.
recover() {
	local k b=$1
	shift
	k=$("$KEYSCAN_RECOVER" "$b" "$T/password" "$@") || fail "cannot recover the keys of $b"
	[ -n "$k" ] || fail "$b holds no key"
	SECRETS+="$k"$'\n'
}

# kek BACKUP KEYSAFE: J=the KEK of KEYSAFE (hex), also added to SECRETS.
kek() {
	local k
	k=$("$KEYSCAN_RECOVER" "$1" "$T/password" "$2") || fail "cannot recover the KEK of $2"
	J=$(printf '%s\n' "$k" | tail -n 1)
	[ ${#J} = 64 ] || fail "no KEK for $2"
	SECRETS+="$J"$'\n'
}

# scan SECRETS DIR... [--newer MARKER DIR...]: searches every regular file
# under each DIR (and, after --newer, those modified after MARKER) for the
# hex SECRETS (one per line); J=the findings (one "file: encoding" per
# line); stderr names each root and its file count.
scan() {
	J=$("$PYTHON3" - "$@" 3< <(printf '%s' "$1") <<'PY'
import base64, os, sys

# The secrets come through a pipe (fd 3): a here-string may be a file.
secrets = [bytes.fromhex(l.strip()) for l in os.fdopen(3) if l.strip()]
needles = []
for s in secrets:
    needles += [("raw", s), ("hex", s.hex().encode()), ("HEX", s.hex().upper().encode())]
    for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for shift in range(3):
            e = enc(b"\0" * shift + s)
            # drop the characters that depend on the neighbouring bytes
            skip = (shift * 4 + 2) // 3
            needles.append((name, e[skip:len(e) - 4]))
roots, newer, since = [], [], None
args = sys.argv[2:]
while args:
    a = args.pop(0)
    if a == "--newer":
        since = os.stat(args.pop(0)).st_mtime
        continue
    (newer if since is not None else roots).append(a)
seen = set()
def scan(root, since):
    files = 0
    for d, dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
                if not os.path.isfile(p) or os.path.islink(p) or p in seen:
                    continue
                if since is not None and (st.st_mtime < since or st.st_size > 64 << 20):
                    continue
                data = open(p, "rb").read()
            except OSError:
                continue  # another process's file, gone or unreadable
            seen.add(p)
            files += 1
            for what, nd in needles:
                if nd in data:
                    print("%s: %s" % (p, what))
    print("scanned %s: %d files" % (root, files), file=sys.stderr)
for r in roots:
    scan(r, None)
for r in newer:
    scan(r, since)
PY
) || fail "the scan failed"
}

# Files written anywhere since now are scanned too; the daemons' temporary
# files go to a directory of the test.
touch "$T/.start"
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp

step "the workload: two providers, backups, rotations, VM keys, unwraps"
setup_cluster alpha bravo
make_provider prod --default
make_provider other
wait_in_sync
vm_create alpha v1
ok hostctl alpha vm add-disk --keysafe "$T/vm/v1" --disk d0
ok hostctl alpha vm add-vtpm --keysafe "$T/vm/v1"
vm_create bravo v2 --provider other
for c in vm-home disk:d0 vtpm; do
	unwrap alpha v1 "$c"
	unwrap bravo v1 "$c"
done
unwrap bravo v2 vm-home
ok ctl provider rotate prod --timeout 10
ok ctl provider backup prod --out "$T/prod2.backup" --password-file "$T/password"
ok hostctl alpha vm rewrap --keysafe "$T/vm/v1"
kek "$T/prod2.backup" "$T/vm/v1"
OLD_KEK=$J
ok hostctl alpha vm rekey --keysafe "$T/vm/v1"
kek "$T/prod2.backup" "$T/vm/v1"
assert_ne "v1's KEK after a rekey" "$OLD_KEK" "$J"
vm_create alpha v3
unwrap alpha v3 vm-home
unwrap alpha v1 vm-home
ok ctl provider rotate prod --timeout 10
ok ctl provider backup prod --out "$T/prod3.backup" --password-file "$T/password"
ok hostctl alpha vm rewrap --keysafe "$T/vm/v1"
ok hostctl alpha vm rewrap --keysafe "$T/vm/v3"
ok ctl --json events
ok ctl events
ok hostctl alpha --json status
ok hostctl alpha --json vm show --keysafe "$T/vm/v1"

step "every daemon stopped (state, usage and event logs flushed)"
stop_service
for h in alpha bravo; do
	stop_host "$h"
done

step "the keys: from the backups (known password) and the unwraps"
recover "$T/prod.backup"
recover "$T/prod3.backup" "$T/vm/v1" "$T/vm/v3"
recover "$T/other.backup" "$T/vm/v2"
N=$(printf '%s' "$SECRETS" | sort -u | grep -c .)
[ "$N" = 13 ] || fail "expected 13 distinct keys (prod v1-v3, other v1, 5 data keys, the KEKs of v1 (before and after its rekey), v2 and v3), got $N"
log "$N distinct keys to look for"

step "the scan finds a planted canary in every encoding"
mkdir -p "$T/canary"
CANARY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$PYTHON3" - "$T/canary" "$CANARY" <<'PY'
import base64, sys
d, k = sys.argv[1], bytes.fromhex(sys.argv[2])
open(d + "/raw", "wb").write(b"x" + k + b"y")
open(d + "/hex", "wb").write(b"key=" + k.hex().encode() + b"\n")
open(d + "/HEX", "wb").write(b"KEY=" + k.hex().upper().encode() + b"\n")
for shift in range(3):
    open(d + "/b64-%d" % shift, "wb").write(base64.b64encode(b"pre"[:shift] + k + b"post"))
open(d + "/b64url", "wb").write(base64.urlsafe_b64encode(k))
PY
scan "$CANARY" "$T/canary"
for f in raw hex HEX b64-0 b64-1 b64-2 b64url; do
	assert_contains "the canary scan" "$J" "$f:"
done
rm -rf "$T/canary"

step "no key in any file the daemons or the tools wrote"
ROOTS=("$SVC_DIR" "${HOST_DIR[alpha]}" "${HOST_DIR[bravo]}" "$T/vm" "$T")
CWD=$(pwd)
scan "$SECRETS" "${ROOTS[@]}" --newer "$T/.start" "$CWD" /tmp /var/tmp /dev/shm 2>"$T/scan.err"
FOUND=$J
cat "$T/scan.err" >&2
[ -z "$FOUND" ] || fail "clear key bytes found on disk:
$FOUND"
for r in "${ROOTS[@]}"; do
	J=$(sed -n "s|^scanned $r: \([0-9]*\) files\$|\1|p" "$T/scan.err")
	[ "${J:-0}" -ge 2 ] || fail "$r: only ${J:-0} files scanned"
done
J=$(find "$T" -type f | wc -l)
[ "$J" -ge 20 ] || fail "only $J files scanned"
log "scanned $J files under the test's directory and the others above: no key found"

it_pass
