#!/bin/bash
# Daemons hold keys, so they cannot dump core: nkpd and nkp-hostd call
# nkp_harden_process() (RLIMIT_CORE 0, PR_SET_DUMPABLE 0) first thing.
# Checked from outside on the running processes: "Max core file size" is
# 0 (soft and hard) in /proc/PID/limits, and the process is not dumpable,
# which the kernel shows by giving its /proc/PID files to root. That last
# check needs the daemons to run as another user than root: when the test
# runs as root it starts an extra pair as `nobody` (setpriv, which execs
# the daemon: $! is the daemon itself) for it.
. "$(dirname "$0")/lib.sh"
it_begin

# core_limit_zero WHAT PID
core_limit_zero() {
	local line
	line=$(grep '^Max core file size' "/proc/$2/limits") || fail "$1: no /proc/$2/limits"
	assert_eq "$1: core file size limits (soft hard)" "0 0" "$(awk '{print $5, $6}' <<<"$line")"
}

# not_dumpable WHAT PID: the process runs as a non-root user but its /proc
# entries belong to root.
not_dumpable() {
	local puid
	puid=$(awk '/^Uid:/ {print $3}' "/proc/$2/status")
	assert_ne "$1: effective uid (must not be root for this check)" 0 "$puid"
	assert_eq "$1: owner of /proc/$2/status (not dumpable)" 0 "$(stat -c %u "/proc/$2/status")"
}

step "a service and a host"
setup_cluster alpha
core_limit_zero nkpd "$SVC_PID"
core_limit_zero nkp-hostd "${HOST_PID[alpha]}"
if [ "$(id -u)" != 0 ]; then
	not_dumpable nkpd "$SVC_PID"
	not_dumpable nkp-hostd "${HOST_PID[alpha]}"
	it_pass
fi

step "running as root: the same daemons as nobody, for the dumpable check"
command -v setpriv >/dev/null || it_skip "setpriv is needed to run the daemons as nobody"
U=$T/nobody
mkdir -p "$U"
chown 65534:65534 "$U"
chmod 711 "$T"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
as_nobody() { "${NOBODY[@]}" "$@"; }
ok as_nobody "$NKPD" init --state-dir "$U/svc"
NKEY=$(printf '%s\n' "$OUT" | tail -n 1)
ok as_nobody "$NKP_HOSTD" init --state-dir "$U/host" --service-key "$NKEY"
"${NOBODY[@]}" "$NKPD" run --state-dir "$U/svc" >>"$T/log/svc-nobody.log" 2>&1 &
NSVC=$!
IT_PIDS+=("$NSVC")
IT_DAEMONS+="$NSVC "
"${NOBODY[@]}" "$NKP_HOSTD" run --state-dir "$U/host" --listen "tcp://127.0.0.1:$(free_port)" \
	>>"$T/log/host-nobody.log" 2>&1 &
NHOST=$!
IT_PIDS+=("$NHOST")
IT_DAEMONS+="$NHOST "
wait_until 10 "nkpd as nobody to listen" test -S "$U/svc/admin.sock"
wait_until 10 "nkp-hostd as nobody to listen" test -S "$U/host/host.sock"
core_limit_zero "nkpd (nobody)" "$NSVC"
core_limit_zero "nkp-hostd (nobody)" "$NHOST"
not_dumpable "nkpd (nobody)" "$NSVC"
not_dumpable "nkp-hostd (nobody)" "$NHOST"
stop_pid "$NSVC" "nkpd (nobody)"
stop_pid "$NHOST" "nkp-hostd (nobody)"
it_pass
