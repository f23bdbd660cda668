#!/bin/bash
# No clear key escapes to disk. A representative workload (providers
# created, backed up with a known password, rotated; VM keys made,
# extra disks and a vTPM added, rewrapped, rekeyed; every data key unwrapped
# to stdout into a shell variable, never a file), then every daemon stopped.
# The provider keys are recovered from the backups (keyscan-recover, which
# links libnkp's nkp_backup_import) and, with every data key unwrapped,
# searched for in every file under the test's directory (service and host
# state, logs, event logs, keysafes, backups, socket directories, the
# helpers' scratch files) as raw bytes, hex (both cases) and base64 (std
# and url alphabets, every alignment): none may appear. A planted canary
# first shows that the scan finds each encoding.
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

# recover BACKUP: adds every provider key the backup holds to SECRETS.
recover() {
	local k
	k=$("$KEYSCAN_RECOVER" "$1" "$T/password") || fail "cannot recover the keys of $1"
	[ -n "$k" ] || fail "$1 holds no key"
	SECRETS+="$k"$'\n'
}

# scan DIR SECRETS: searches every regular file under DIR for the hex
# SECRETS (one per line); J=the findings (one "file: encoding" per line).
scan() {
	J=$("$PYTHON3" - "$1" 3< <(printf '%s' "$2") <<'PY'
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
files = 0
for root, dirs, names in os.walk(sys.argv[1]):
    for n in names:
        p = os.path.join(root, n)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        files += 1
        data = open(p, "rb").read()
        for what, nd in needles:
            if nd in data:
                print("%s: %s" % (os.path.relpath(p, sys.argv[1]), what))
print("scanned %d files" % files, file=sys.stderr)
PY
) || fail "the scan failed"
}

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
ok hostctl alpha vm rekey --keysafe "$T/vm/v1"
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
recover "$T/prod3.backup"
recover "$T/other.backup"
N=$(printf '%s' "$SECRETS" | sort -u | grep -c .)
[ "$N" = 9 ] || fail "expected 9 distinct keys (prod v1-v3, other v1, 5 data keys), got $N"
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
scan "$T/canary" "$CANARY"
for f in raw hex HEX b64-0 b64-1 b64-2 b64url; do
	assert_contains "the canary scan" "$J" "$f:"
done
rm -rf "$T/canary"

step "no key in any file the daemons or the tools wrote"
scan "$T" "$SECRETS"
[ -z "$J" ] || fail "clear key bytes found on disk:
$J"
J=$(find "$T" -type f | wc -l)
[ "$J" -ge 20 ] || fail "only $J files scanned"
log "scanned $J files: no key found"

it_pass
