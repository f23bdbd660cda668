#!/bin/bash
# Keys at rest, against swtpm (one software TPM per simulated machine):
# nkpd and nkp-hostd initialised with --tpm keep no clear sealing key in
# their directories and start again after a restart; a copy of either
# directory next to another TPM refuses to start, with a clear error, and
# no 32-byte window of the copy opens its identity; a plain seal.key left
# beside seal.tpm is refused; --seal-key (a systemd credential) works and
# is required; status says how keys are kept at rest.
. "$(dirname "$0")/lib.sh"
if ! command -v swtpm >/dev/null; then
	it_skip "swtpm is not installed (Debian: swtpm)"
fi
it_begin

. "$(dirname "$0")/swtpm-lib.sh"

# start_host_on NAME ARGS...: nkp-hostd run with extra ARGS (--tpm, --seal-key).
start_host_on() {
	local h=$1
	shift
	"$NKP_HOSTD" run --state-dir "${HOST_DIR[$h]}" --listen "${HOST_URL[$h]}" "$@" \
		>>"$T/log/host-$h.log" 2>&1 &
	HOST_PID[$h]=$!
	IT_PIDS+=("${HOST_PID[$h]}")
	IT_DAEMONS+="${HOST_PID[$h]} "
	wait_until 10 "nkp-hostd $h to answer" hostctl "$h" status
}


# no_clear_key DIR: no seal.key in DIR.
no_clear_key() { [ ! -e "$1/seal.key" ] || fail "$1 holds a clear seal.key"; }

# thief_gets_nothing DIR LABEL: no 32-byte window of DIR opens its identity.
thief_gets_nothing() {
	run "$STATETHIEF" --offline "$1" "$2"
	log "statethief: $OUT"
	[ "$RC" = 0 ] || fail "a key in the copy $1 opens its identity (exit $RC): $OUT $ERR"
}

step "the machines: a TPM each for the service and the host, one more elsewhere"
swtpm_start svc
swtpm_start alpha
swtpm_start elsewhere

step "nkpd init --tpm: the sealing key sealed to the TPM, none in clear"
SVC_DIR=$T/svc
SVC_SOCK=$SVC_DIR/admin.sock
ok "$NKPD" init --state-dir "$SVC_DIR" --tpm "$(tcti svc)"
SVC_KEY=$(printf '%s\n' "$OUT" | tail -n 1)
check_pubkey "nkpd init's last line" "$SVC_KEY"
[ -s "$SVC_DIR/seal.tpm" ] || fail "no seal.tpm in $SVC_DIR"
no_clear_key "$SVC_DIR"
start_service --tpm "$(tcti svc)"
ok ctl status
assert_contains "nkpctl status" "$OUT" "keys at rest: sealed to the TPM"
ok ctl --json status
json 'd["keys_at_rest"]'; assert_eq "nkpctl --json status: keys_at_rest" "tpm" "$J"

step "nkp-hostd init --tpm; a VM key made under a provider pushed to it"
HOST_DIR[alpha]=$T/host-alpha
HOST_URL[alpha]=tcp://127.0.0.1:$(free_port)
ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[alpha]}" --service-key "$SVC_KEY" --tpm "$(tcti alpha)"
HOST_KEY[alpha]=$(printf '%s\n' "$OUT" | tail -n 1)
no_clear_key "${HOST_DIR[alpha]}"
start_host_on alpha --tpm "$(tcti alpha)"
enrol alpha
make_provider gold --default
wait_in_sync
vm_create alpha web1
dek alpha web1 vm-home
DEK=$J
ok hostctl alpha status
assert_contains "nkp-hostctl status" "$OUT" "keys at rest: sealed to the TPM"
ok hostctl alpha --json status
json 'd["keys_at_rest"], d["tpm"]'; assert_eq "nkp-hostctl --json status" '["tpm", true]' "$J"

step "both restart (the TPMs too, as after a reboot) and open their keys again"
stop_host alpha
stop_service
swtpm_stop svc
swtpm_stop alpha
swtpm_start svc
swtpm_start alpha
# New ports: --tpm names them (and a config file would).
start_service --tpm "$(tcti svc)"
start_host_on alpha --tpm "$(tcti alpha)"
wait_in_sync
check_dek alpha web1 vm-home "$DEK"

step "a copy of either directory, next to another TPM, does not start"
stop_host alpha
stop_service
cp -a "${HOST_DIR[alpha]}" "$T/stolen-host"
cp -a "$SVC_DIR" "$T/stolen-svc"
rm -f "$T/stolen-host/hostd.lock" "$T/stolen-svc/nkpd.lock" "$T/stolen-svc/admin.sock"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTD" run --state-dir "$T/stolen-host" \
	--listen "tcp://127.0.0.1:$(free_port)" --tpm "$(tcti elsewhere)"
assert_eq "nkp-hostd on a copy next to another TPM: exit" 1 "$RC"
assert_contains "its error" "$ERR" "sealed by another TPM"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPD" run --state-dir "$T/stolen-svc" --tpm "$(tcti elsewhere)"
assert_eq "nkpd on a copy next to another TPM: exit" 1 "$RC"
assert_contains "its error" "$ERR" "sealed by another TPM"
assert_not_contains "no key in the error" "$ERR" "$DEK"
thief_gets_nothing "$T/stolen-host" nkp-host-identity
thief_gets_nothing "$T/stolen-svc" nkpd-identity
# The same attack on a development directory (plain seal.key) succeeds:
# the check above has teeth.
mkdir -p "$T/plain"
ok "$NKPD" init --state-dir "$T/plain/svc"
run "$STATETHIEF" --offline "$T/plain/svc" nkpd-identity
assert_eq "statethief on a plain seal.key directory: exit" 3 "$RC"

step "the TCTI recorded in seal.tpm is never used (it names a library to load)"
# seal.tpm is not authenticated: one that names tpm2-tss's "cmd:" TCTI
# would have nkpd run a shell command as root at its start.
cp -a "$T/stolen-svc" "$T/planted"
"$PYTHON3" - "$T/planted/seal.tpm" "cmd:touch $T/pwned" <<'PY'
import sys
path, tcti = sys.argv[1], sys.argv[2].encode()
b = open(path, "rb").read()
out, i = b"", 0
def varint(i):
    r = s = 0
    while True:
        c = b[i]; i += 1; r |= (c & 0x7f) << s; s += 7
        if c < 0x80:
            return r, i
while i < len(b):
    start = i
    k, i = varint(i)
    if k & 7 == 0:
        _, i = varint(i)
    else:
        n, i = varint(i)
        i += n
    if k >> 3 != 5:
        out += b[start:i]
out += bytes([0x2a, len(tcti)]) + tcti
open(path, "wb").write(out)
PY
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPD" run --state-dir "$T/planted"
assert_eq "nkpd on a seal.tpm naming cmd: (no --tpm): exit" 1 "$RC"
[ ! -e "$T/pwned" ] || fail "the TCTI recorded in seal.tpm was used: it ran a command"

step "options that contradict the directory are refused, as is a clear key beside the TPM's"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPD" run --state-dir "$SVC_DIR" --seal-key "$T/nope"
assert_eq "nkpd run --seal-key on a TPM directory: exit" 1 "$RC"
assert_contains "its error" "$ERR" "sealed to a TPM: --seal-key does not apply"
expect_exit 2 "$NKPD" init --state-dir "$T/both" --tpm "$(tcti svc)" --seal-key "$T/k"
head -c 32 /dev/urandom >"$SVC_DIR/seal.key"
chmod 600 "$SVC_DIR/seal.key"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPD" run --state-dir "$SVC_DIR" --tpm "$(tcti svc)"
assert_eq "nkpd with a plain seal.key beside seal.tpm: exit" 1 "$RC"
assert_contains "its error" "$ERR" "a plain"
rm -f "$SVC_DIR/seal.key"
ok "$NKP_HOSTD" init --state-dir "$T/plain/host" --service-key "$SVC_KEY"
run "$NKP_HOSTD" init --state-dir "$T/plain/host" --service-key "$SVC_KEY" --tpm "$(tcti alpha)"
assert_eq "init --tpm on a directory with a plain key: exit" 1 "$RC"
assert_contains "its error" "$ERR" "already has a plain sealing key"

step "--seal-key FILE (a systemd credential): required, and reported"
mkdir -m 700 "$T/cred"
HOST_DIR[bravo]=$T/host-bravo
HOST_URL[bravo]=tcp://127.0.0.1:$(free_port)
# A mistyped credential path is refused, and leaves no clear key behind.
run "$NKP_HOSTD" init --state-dir "${HOST_DIR[bravo]}" --service-key "$SVC_KEY" \
	--seal-key "$T/cred/nkp-sael"
assert_eq "init with a missing --seal-key: exit" 1 "$RC"
assert_contains "its error" "$ERR" "make the credential first"
[ ! -e "$T/cred/nkp-sael" ] || fail "init made a clear key at a mistyped --seal-key path"
# The credential, made first (in production: systemd-creds, INSTALL.md).
head -c 32 /dev/urandom >"$T/cred/nkp-seal"
chmod 600 "$T/cred/nkp-seal"
ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[bravo]}" --service-key "$SVC_KEY" \
	--seal-key "$T/cred/nkp-seal"
no_clear_key "${HOST_DIR[bravo]}"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTD" run --state-dir "${HOST_DIR[bravo]}" \
	--listen "${HOST_URL[bravo]}"
assert_eq "nkp-hostd run without its --seal-key: exit" 1 "$RC"
assert_contains "its error" "$ERR" "no sealing key"
start_host_on bravo --seal-key "$T/cred/nkp-seal"
ok hostctl bravo --json status
json 'd["keys_at_rest"]'; assert_eq "keys at rest under a credential" "credential" "$J"
stop_host bravo
# The credential was made from a plain seal.key left in the directory:
# status would say "credential" while the clear key lies beside it.
cp "$T/cred/nkp-seal" "${HOST_DIR[bravo]}/seal.key"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTD" run --state-dir "${HOST_DIR[bravo]}" \
	--listen "${HOST_URL[bravo]}" --seal-key "$T/cred/nkp-seal"
assert_eq "nkp-hostd with a plain seal.key beside --seal-key: exit" 1 "$RC"
assert_contains "its error" "$ERR" "beside --seal-key"

it_pass
