# shellcheck shell=bash
# Shared helpers for the nkp integration tests. Source it first thing:
#
#   . "$(dirname "$0")/lib.sh"
#
# Programs come from the environment (meson sets them; see meson.build):
#   NKPD NKPCTL NKP_HOSTD NKP_HOSTCTL NNGPOKE NNGRELAY [PYTHON3]
# or from NKP_BUILD_DIR (default ./build) when a script is run by hand.
# IT_LIMIT: seconds before the script stops itself (default 80).
# IT_KEEP=1 keeps the temporary directory for a post-mortem.
#
# Every process a test starts is recorded by PID; on exit (success, failure
# or the time limit) exactly those are stopped (SIGCONT, SIGTERM, then
# SIGKILL after a grace period) and reaped, and the temporary directory is
# removed. On failure the tail of every daemon log is printed.
#
# Command helpers run a command bounded by IT_CMD_TIMEOUT (default 30 s) and
# leave its exit status in RC, its stdout in OUT and its stderr in ERR.
# Helpers that compute a value leave it in J (no subshells, so that a
# failed check always ends the test).

set -u -o pipefail

IT_NAME=$(basename "$0" .sh)
# IT_WAIT_SCALE (default 1) multiplies every wait and the time limit: slow
# builds (sanitizers) and busy machines set it (meson test must then get the
# same --timeout-multiplier).
IT_WAIT_SCALE=${IT_WAIT_SCALE:-1}
IT_LIMIT=$((${IT_LIMIT:-80} * IT_WAIT_SCALE))
IT_CMD_TIMEOUT=$((${IT_CMD_TIMEOUT:-30} * IT_WAIT_SCALE))
IT_BUILD=${NKP_BUILD_DIR:-build}
: "${NKPD:=$IT_BUILD/nkp/nkpd/nkpd}"
: "${NKPCTL:=$IT_BUILD/tools/nkpctl/nkpctl}"
: "${NKP_HOSTD:=$IT_BUILD/hostd-plugin/daemon/nkp-hostd}"
: "${NKP_HOSTCTL:=$IT_BUILD/tools/nkp-hostctl/nkp-hostctl}"
: "${NNGPOKE:=$IT_BUILD/tests/integration/nngpoke}"
: "${NNGRELAY:=$IT_BUILD/tests/integration/nngrelay}"
: "${STATETHIEF:=$IT_BUILD/tests/integration/statethief}"
: "${PYTHON3:=python3}"

IT_PIDS=()          # every PID we started, in order
IT_DAEMONS=" "      # those that are nkpd/nkp-hostd: must exit 0 on SIGTERM
IT_WATCHDOG=""
IT_DONE=0
RC=0
OUT=""
ERR=""
J=""
declare -A HOST_DIR HOST_URL HOST_KEY HOST_PID
SVC_DIR=""
SVC_KEY=""
SVC_PID=""
SVC_SOCK=""

log() { printf '%s: %s\n' "$IT_NAME" "$*" >&2; }
step() { printf '%s: -- %s\n' "$IT_NAME" "$*" >&2; }

fail() {
	printf '%s: FAIL: %s\n' "$IT_NAME" "$*" >&2
	exit 1
}

it_skip() {
	printf '%s: SKIP: %s\n' "$IT_NAME" "$*" >&2
	IT_DONE=1
	exit 77
}

# ---------------------------------------------------------------- lifecycle

it_require_programs() {
	local p
	for p in "$NKPD" "$NKPCTL" "$NKP_HOSTD" "$NKP_HOSTCTL" "$NNGPOKE" "$NNGRELAY"; do
		[ -x "$p" ] || it_skip "$p is not built"
	done
	command -v "$PYTHON3" >/dev/null || it_skip "python3 is not installed"
	command -v timeout >/dev/null || it_skip "timeout (coreutils) is not installed"
}

# it_dump_stacks PID: where a process that does not stop is stuck, for the
# failure report: every thread's stack (gdb, when installed), else each
# thread's kernel wait channel and system call.
it_dump_stacks() {
	local pid=$1 t
	if command -v gdb >/dev/null; then
		timeout 60 gdb -q -batch -p "$pid" -ex 'thread apply all bt' 2>&1 |
			grep -E '^(Thread|#)' >&2
		return 0
	fi
	for t in /proc/"$pid"/task/*; do
		printf '  thread %s: %s wchan=%s syscall=%s\n' "${t##*/}" \
			"$(cat "$t/comm" 2>/dev/null)" "$(cat "$t/wchan" 2>/dev/null)" \
			"$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)" >&2
	done
}

it_cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	if [ -n "$IT_WATCHDOG" ]; then
		kill "$IT_WATCHDOG" 2>/dev/null
		wait "$IT_WATCHDOG" 2>/dev/null
	fi
	for pid in "${IT_PIDS[@]}"; do
		kill -CONT "$pid" 2>/dev/null
		kill -TERM "$pid" 2>/dev/null
	done
	local grace=$((5 * IT_WAIT_SCALE)) deadline
	deadline=$(($(date +%s%N) / 1000000 + grace * 1000))
	while [ $(($(date +%s%N) / 1000000)) -lt "$deadline" ]; do
		local alive=0
		for pid in "${IT_PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null && alive=1
		done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for pid in "${IT_PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			printf '%s: process %s ignored SIGTERM for %s s; killing it\n' "$IT_NAME" "$pid" "$grace" >&2
			it_dump_stacks "$pid"
			kill -KILL "$pid" 2>/dev/null
		fi
		wait "$pid" 2>/dev/null
		local st=$?
		if [ "$rc" = 0 ] && [ "$st" != 0 ] && [ "${IT_DAEMONS#* "$pid" }" != "$IT_DAEMONS" ]; then
			printf '%s: FAIL: daemon %s exited with %s on SIGTERM, expected 0\n' "$IT_NAME" "$pid" "$st" >&2
			rc=1
		fi
	done
	if [ "$rc" = 0 ] && [ -d "${T:-}/log" ] &&
		grep -lE 'Sanitizer|runtime error:' "$T"/log/*.log >/dev/null 2>&1; then
		printf '%s: FAIL: a sanitizer report in the daemon logs\n' "$IT_NAME" >&2
		rc=1
	fi
	if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -d "${T:-}/log" ]; then
		local f
		for f in "$T"/log/*.log; do
			[ -s "$f" ] || continue
			printf '\n%s: ---- last lines of %s ----\n' "$IT_NAME" "${f##*/}" >&2
			tail -n 30 "$f" >&2
		done
	fi
	it_release_ports
	if [ -n "${T:-}" ] && [ -d "$T" ]; then
		if [ "${IT_KEEP:-0}" = 1 ]; then
			printf '%s: kept %s\n' "$IT_NAME" "$T" >&2
		else
			rm -rf "$T"
		fi
	fi
	if [ "$rc" = 0 ] && [ "$IT_DONE" = 1 ]; then
		printf '%s: PASS\n' "$IT_NAME" >&2
	elif [ "$rc" = 0 ]; then
		printf '%s: FAIL: the script ended before it_pass\n' "$IT_NAME" >&2
		rc=1
	fi
	exit "$rc"
}

# it_term_children PARENT EXCEPT: SIGTERM to PARENT's direct children but
# EXCEPT, so that the shell, waiting on a foreground command, gets to run
# its TERM trap (the cleanup) at once. Reads /proc (no procps needed).
it_term_children() {
	local st pid ppid
	for st in /proc/[0-9]*/status; do
		pid=${st#/proc/}
		pid=${pid%/status}
		ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$st" 2>/dev/null)
		if [ "$ppid" = "$1" ] && [ "$pid" != "$2" ]; then
			kill -TERM "$pid" 2>/dev/null
		fi
	done
}

# Call first in every test: checks programs, makes the temp dir, arms the
# cleanup and the time limit.
it_begin() {
	it_require_programs
	T=$(mktemp -d "${TMPDIR:-/tmp}/nkp-it.XXXXXX") || fail "mktemp"
	mkdir -p "$T/log" "$T/vm"
	chmod 700 "$T"
	trap it_cleanup EXIT
	trap 'printf "%s: FAIL: interrupted\n" "$IT_NAME" >&2; exit 130' INT
	trap 'printf "%s: FAIL: time limit of %s s reached\n" "$IT_NAME" "$IT_LIMIT" >&2; exit 124' TERM
	(
		sleep "$IT_LIMIT" &
		s=$!
		trap 'kill $s 2>/dev/null; exit 0' TERM
		wait "$s"
		trap - TERM
		kill -TERM $$ 2>/dev/null
		it_term_children $$ "$BASHPID"
	) &
	IT_WATCHDOG=$!
	printf 'correct horse battery staple\n' >"$T/password"
	chmod 600 "$T/password"
}

it_pass() {
	IT_DONE=1
	exit 0
}

# ----------------------------------------------------------------- commands

# bounded CMD...: runs a program (or one of the wrapper functions below,
# which bound themselves) with the command time limit.
bounded() {
	if declare -F "$1" >/dev/null; then
		"$@"
	else
		timeout -k 2 "$IT_CMD_TIMEOUT" "$@"
	fi
}

# run CMD...: runs CMD bounded in time; sets RC, OUT, ERR. Never fails
# unless CMD hangs.
run() {
	local o="$T/.out" e="$T/.err"
	bounded "$@" >"$o" 2>"$e"
	RC=$?
	OUT=$(cat "$o")
	ERR=$(cat "$e")
	if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
		fail "command did not finish within $IT_CMD_TIMEOUT s: $*
stderr: $ERR"
	fi
}

# ok CMD...: CMD must exit 0.
ok() {
	run "$@"
	[ "$RC" = 0 ] || fail "command failed (exit $RC): $*
stdout: $OUT
stderr: $ERR"
}

# expect_exit CODE CMD...: CMD must exit with CODE; for a failure (1) or a
# usage error (2) it must also say why on stderr.
expect_exit() {
	local want=$1
	shift
	run "$@"
	[ "$RC" = "$want" ] || fail "expected exit $want, got $RC: $*
stdout: $OUT
stderr: $ERR"
	if [ "$want" = 1 ] || [ "$want" = 2 ]; then
		[ -n "$ERR" ] || fail "exit $want without a message on stderr: $*"
	fi
}

# expect_fail CMD...: an operation failure: exit 1 and exactly one line on
# stderr (the contract for every command-line program).
expect_fail() {
	expect_exit 1 "$@"
	local n
	n=$(printf '%s\n' "$ERR" | grep -c .)
	[ "$n" = 1 ] || fail "expected one line on stderr, got $n: $*
stderr: $ERR"
}

assert_eq() { # WHAT EXPECTED ACTUAL
	[ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

assert_ne() { # WHAT UNEXPECTED ACTUAL
	[ "$2" != "$3" ] || fail "$1: did not expect '$3'"
}

# Pure bash: a pipe into grep -q under pipefail fails when grep exits early.
assert_contains() { # WHAT HAYSTACK NEEDLE (case-insensitive)
	[[ ${2,,} == *"${3,,}"* ]] || fail "$1: '$3' not found in:
$2"
}

assert_not_contains() { # WHAT HAYSTACK NEEDLE (case-insensitive)
	if [[ ${2,,} == *"${3,,}"* ]]; then
		fail "$1: '$3' unexpectedly found in:
$2"
	fi
}

# wait_until SECONDS WHAT CMD...: polls CMD (exit 0 = done) every 0.2 s.
wait_until() {
	local secs=$(($1 * IT_WAIT_SCALE)) what=$2 deadline
	shift 2
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while :; do
		if bounded "$@" >/dev/null 2>&1; then
			return 0
		fi
		if [ $(($(date +%s%N) / 1000000)) -ge "$deadline" ]; then
			fail "timed out after $secs s waiting for: $what"
		fi
		sleep 0.2
	done
}

# ------------------------------------------------------------------- JSON

# json EXPR [TEXT]: evaluates the Python expression EXPR with `d` bound to
# the JSON in TEXT (default: $OUT) and sets J: strings raw, anything else as
# JSON (true, 3, [...]).
json() {
	local text=${2-$OUT}
	printf '%s' "$text" >"$T/.json"
	"$PYTHON3" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError as e:
    sys.exit("not JSON (%s)" % e)
try:
    v = eval(sys.argv[1], {"d": d})
except Exception as e:
    sys.exit("%s: %r" % (sys.argv[1], e))
print(v if isinstance(v, str) else json.dumps(v))
' "$1" <"$T/.json" >"$T/.jval" || fail "JSON check '$1' failed on:
$text"
	J=$(cat "$T/.jval")
}

# ------------------------------------------------------------------ network

# free_port: prints a loopback TCP port for a daemon to listen on. Ports
# come from a range outside the kernel's ephemeral range
# (net.ipv4.ip_local_port_range), which the outgoing connections of every
# test use: 20000-32767 unless the ephemeral range overlaps it, else the
# largest range outside it. Each port is checked with a bind and claimed in
# IT_PORT_DIR (mkdir, atomic), so that concurrent tests never pick the same
# one; a claim whose test is gone is taken over; ours are released at exit.
IT_PORT_DIR=${IT_PORT_DIR:-${TMPDIR:-/tmp}/nkp-it-ports}
free_port() {
	mkdir -p "$IT_PORT_DIR" 2>/dev/null
	"$PYTHON3" - "$IT_PORT_DIR" "$$" <<'PY' || fail "no free port"
import os, random, socket, sys

claims, me = sys.argv[1], sys.argv[2]
try:
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except (OSError, ValueError):
    lo, hi = 32768, 60999
a, b = 20000, 32767
if not (hi < a or lo > b):
    a, b = max([(1024, lo - 1), (hi + 1, 65535)], key=lambda r: r[1] - r[0])
if b - a < 100:
    sys.exit("no port range outside the ephemeral range %d-%d" % (lo, hi))

def alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError):
        return False

for _ in range(2000):
    p = random.randint(a, b)
    d = os.path.join(claims, str(p))
    try:
        os.mkdir(d)
    except FileExistsError:
        try:
            owner = open(os.path.join(d, "pid")).read().strip()
        except OSError:
            continue
        if alive(owner):
            continue
        # Claimed by a test that died without releasing it: take it over.
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    with open(os.path.join(d, "pid"), "w") as f:
        f.write(me)
    print(p)
    sys.exit(0)
sys.exit("no free port in %d-%d" % (a, b))
PY
}

# it_release_ports: removes this test's port claims (at exit).
it_release_ports() {
	local d
	for d in "$IT_PORT_DIR"/*; do
		[ -f "$d/pid" ] && [ "$(cat "$d/pid" 2>/dev/null)" = "$$" ] && rm -rf "$d"
	done
	return 0
}

# ----------------------------------------------------------------- service

# ctl ARGS...: nkpctl on our service (global options go first: ctl --json ...).
ctl() { timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPCTL" --socket "$SVC_SOCK" "$@"; }

# service_init [DIR]: nkpd init; sets SVC_DIR, SVC_SOCK, SVC_KEY.
service_init() {
	SVC_DIR=${1:-$T/svc}
	SVC_SOCK=$SVC_DIR/admin.sock
	ok "$NKPD" init --state-dir "$SVC_DIR"
	SVC_KEY=$(printf '%s\n' "$OUT" | tail -n 1)
	check_pubkey "nkpd init's last line" "$SVC_KEY"
}

check_pubkey() { # WHAT KEY: base64 of 32 bytes
	"$PYTHON3" -c '
import base64, sys
sys.exit(0 if len(base64.b64decode(sys.argv[1], validate=True)) == 32 else 1)' "$2" 2>/dev/null ||
		fail "$1 is not a base64 public key of 32 bytes: '$2'"
}

# start_service [EXTRA ARGS]: nkpd run on SVC_DIR, heartbeat 1 s; waits
# until `nkpctl status` answers.
# If nkpd knows the --insecure-fast-backup option (cheap password hashing;
# only in a build with -Dtest-hooks=true) it is used, to keep the suite
# fast; IT_SLOW_BACKUP=1 leaves it out. Its backups are then weak, and
# restoring them takes "${WEAK_OK[@]}" (--allow-weak).
WEAK_OK=()
# shellcheck disable=SC2034 # WEAK_OK: used by the tests that source this file
start_service() {
	local name=svc extra=()
	if [ "${IT_SLOW_BACKUP:-0}" != 1 ] && grep -qa 'insecure-fast-backup' "$NKPD"; then
		extra=(--insecure-fast-backup)
		WEAK_OK=(--allow-weak)
	fi
	"$NKPD" run --state-dir "$SVC_DIR" --heartbeat 1 "${extra[@]}" "$@" >>"$T/log/$name.log" 2>&1 &
	SVC_PID=$!
	IT_PIDS+=("$SVC_PID")
	IT_DAEMONS+="$SVC_PID "
	wait_until 10 "nkpd to answer on $SVC_SOCK" ctl status
	kill -0 "$SVC_PID" 2>/dev/null || fail "nkpd exited at start (see log)"
}

# stop_service: SIGTERM; nkpd must exit 0 within 10 s.
stop_service() {
	stop_pid "$SVC_PID" nkpd
	SVC_PID=""
}

# stop_pid PID WHAT: SIGTERM, expect a clean exit (0) within 10 s (scaled).
stop_pid() {
	local pid=$1 what=$2 st secs=$((10 * IT_WAIT_SCALE)) deadline
	kill -TERM "$pid" 2>/dev/null || fail "$what (pid $pid) is not running"
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while kill -0 "$pid" 2>/dev/null && [ $(($(date +%s%N) / 1000000)) -lt "$deadline" ]; do
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "$what (pid $pid) did not stop within $secs s of SIGTERM"
	wait "$pid"
	st=$?
	forget_pid "$pid"
	[ "$st" = 0 ] || fail "$what (pid $pid) exited with $st on SIGTERM, expected 0"
}

kill_pid() { # PID: SIGKILL and reap (a crash)
	# KILL first: a stopped process dies at once, without running a
	# moment after a CONT (it could answer a request it held meanwhile).
	kill -KILL "$1" 2>/dev/null
	kill -CONT "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	forget_pid "$1"
}

# forget_pid PID: a reaped process; cleanup must not signal its PID again.
forget_pid() {
	local p keep=()
	for p in "${IT_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	IT_PIDS=("${keep[@]}")
}

# -------------------------------------------------------------------- hosts

# hostctl NAME ARGS...: nkp-hostctl on host NAME. Its stdout is a pipe,
# as a consumer of `vm unwrap --out -` must give it (a regular file there
# is refused).
hostctl() {
	local h=$1
	shift
	timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTCTL" --socket "${HOST_DIR[$h]}/host.sock" "$@" | cat
}

# host_init NAME [SERVICE_KEY]: nkp-hostd init, pinned to SERVICE_KEY
# (default: our service); picks a free loopback port for it.
host_init() {
	local h=$1 key=${2:-$SVC_KEY}
	HOST_DIR[$h]=$T/host-$h
	if [ -z "${HOST_URL[$h]:-}" ]; then
		HOST_URL[$h]=tcp://127.0.0.1:$(free_port)
	fi
	ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[$h]}" --service-key "$key"
	HOST_KEY[$h]=$(printf '%s\n' "$OUT" | tail -n 1)
	check_pubkey "nkp-hostd init's last line" "${HOST_KEY[$h]}"
}

# start_host NAME: nkp-hostd run; waits until `nkp-hostctl status` answers.
start_host() {
	local h=$1
	"$NKP_HOSTD" run --state-dir "${HOST_DIR[$h]}" --listen "${HOST_URL[$h]}" \
		>>"$T/log/host-$h.log" 2>&1 &
	HOST_PID[$h]=$!
	IT_PIDS+=("${HOST_PID[$h]}")
	IT_DAEMONS+="${HOST_PID[$h]} "
	wait_until 10 "nkp-hostd $h to answer on its host.sock" hostctl "$h" status
	kill -0 "${HOST_PID[$h]}" 2>/dev/null || fail "nkp-hostd $h exited at start (see log)"
}

stop_host() { stop_pid "${HOST_PID[$1]}" "nkp-hostd $1"; HOST_PID[$1]=""; }
crash_host() { kill_pid "${HOST_PID[$1]}"; HOST_PID[$1]=""; }
pause_host() { kill -STOP "${HOST_PID[$1]}"; }
resume_host() { kill -CONT "${HOST_PID[$1]}"; }

# enrol NAME [ADDRESS]: nkpctl host add with the host's key and address.
enrol() {
	local h=$1 addr=${2:-${HOST_URL[$1]}}
	ok ctl host add "$h" --address "$addr" --public-key "${HOST_KEY[$h]}"
}

# setup_cluster NAME...: service (init + run) and the named hosts, each
# initialised, started and enrolled; waits until all are in sync.
setup_cluster() {
	local h
	service_init
	start_service
	for h in "$@"; do
		host_init "$h"
		start_host "$h"
		enrol "$h"
	done
	wait_in_sync
}

# ctl_for SECONDS ARGS...: nkpctl on our service, bounded by SECONDS
# instead of the command time limit.
ctl_for() {
	local secs=$1
	shift
	timeout -k 2 "$secs" "$NKPCTL" --socket "$SVC_SOCK" "$@"
}

# wait_in_sync [SECONDS]: nkpctl host wait --in-sync, which returns as soon
# as every host is in sync. The bound (scaled) only matters on failure: it
# is never below one full reconnect backoff of nkpd (30 s + 25 % jitter),
# so that a host that was down is retried at least once within it.
wait_in_sync() {
	local secs=${1:-15}
	[ "$secs" -ge 40 ] || secs=40
	secs=$((secs * IT_WAIT_SCALE))
	ok ctl_for $((secs + 10)) host wait --in-sync --timeout "$secs"
}

# --------------------------------------------------------------- providers

# make_provider NAME [create options]: create and back up (to $T/NAME.backup).
make_provider() {
	local p=$1
	shift
	ok ctl provider create "$p" "$@"
	ok ctl provider backup "$p" --out "$T/$p.backup" --password-file "$T/password"
}

# provider_json NAME: `provider show --json` into OUT.
provider_json() { ok ctl --json provider show "$1"; }

# version_states_svc PROVIDER: J="1:decrypt-only 2:active" as the service sees it.
version_states_svc() {
	provider_json "$1"
	json '" ".join("%d:%s" % (v["version"], v["state"]) for v in sorted(d["versions"], key=lambda v: v["version"]))'
}

# version_states HOST PROVIDER: the same as HOST holds it ("" if it lacks it).
version_states() {
	ok hostctl "$1" --json status
	json '" ".join(" ".join("%d:%s" % (v["version"], v["state"]) for v in sorted(p["versions"], key=lambda v: v["version"])) for p in d["providers"] if p["name"] == "'"$2"'")'
}

# version_in_use PROVIDER VERSION: exit 0 when `provider show --json`
# reports some use (a positive keysafes/created/rewrapped/unwrapped count,
# at any depth) of VERSION. For wait_until.
version_in_use() {
	ctl --json provider show "$1" | "$PYTHON3" -c '
import json, sys
COUNTERS = ("keysafes", "created", "rewrapped", "unwrapped")
def used(x):
    if isinstance(x, dict):
        return any((k in COUNTERS and isinstance(v, int) and not isinstance(v, bool) and v > 0)
                   or used(v) for k, v in x.items())
    if isinstance(x, list):
        return any(used(v) for v in x)
    return False
d = json.load(sys.stdin)
sys.exit(0 if any(v.get("version") == int(sys.argv[1]) and used(v) for v in d["versions"]) else 1)' "$2"
}

# wait_states HOST PROVIDER EXPECTED [SECONDS]: polls until version_states
# gives EXPECTED (e.g. "1:decrypt-only 2:active"; "" for lacking it).
# SECONDS (default 10) is scaled by IT_WAIT_SCALE.
wait_states() {
	local h=$1 p=$2 want=$3 secs=$((${4:-10} * IT_WAIT_SCALE)) deadline
	deadline=$(($(date +%s) + secs))
	while :; do
		run hostctl "$h" --json status
		if [ "$RC" = 0 ]; then
			json '" ".join(" ".join("%d:%s" % (v["version"], v["state"]) for v in sorted(p["versions"], key=lambda v: v["version"])) for p in d["providers"] if p["name"] == "'"$p"'")'
			[ "$J" = "$want" ] && return 0
		fi
		[ "$(date +%s)" -ge "$deadline" ] && break
		sleep 0.2
	done
	fail "$h did not come to hold $p as '$want' within $secs s (last: '$J', exit $RC, stderr: $ERR)"
}

# host_providers HOST: J=the names of the providers HOST holds, sorted.
host_providers() {
	ok hostctl "$1" --json status
	json '" ".join(sorted(p["name"] for p in d["providers"]))'
}

host_generation() {
	ok hostctl "$1" --json status
	json 'd["generation"]'
}

# --------------------------------------------------------------------- VMs

# vm_create HOST FILE [create options]: a VM key; FILE is under $T/vm.
vm_create() {
	local h=$1 f=$2
	shift 2
	ok hostctl "$h" vm create --keysafe "$T/vm/$f" --vm-uuid "$(vm_uuid "$f")" \
		--vm-name "$f" "$@"
}

vm_uuid() { # a stable UUID per keysafe name
	printf '%s' "$1" | md5sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'
}

# dek HOST FILE [COMPONENT]: J=the DEK (hex); fails the test if unwrap fails.
dek() {
	local h=$1 f=$2 c=${3:-vm-home}
	ok hostctl "$h" vm unwrap --keysafe "$T/vm/$f" --component "$c" --out - --format hex
	J=$(printf '%s' "$OUT" | tr -d ' \n')
	[ ${#J} = 64 ] || fail "DEK of $f/$c on $h is not 32 bytes of hex: '$J'"
	case $J in *[!0-9a-fA-F]*) fail "DEK of $f/$c on $h is not hex: '$J'" ;; esac
}

# check_dek HOST FILE COMPONENT EXPECTED
check_dek() {
	dek "$1" "$2" "$3"
	assert_eq "DEK of $2/$3 unwrapped on $1" "$4" "$J"
}

# vm_field HOST FILE EXPR: J=a field of `vm show --json` (EXPR over d).
vm_field() {
	ok hostctl "$1" --json vm show --keysafe "$T/vm/$2"
	json "$3"
}

# relay_start NAME LISTEN_URL TARGET_URL: a recording relay; records under
# $T/relay-NAME.
relay_start() {
	local n=$1 dir=$T/relay-$1
	mkdir -p "$dir"
	"$NNGRELAY" "$2" "$3" "$dir" >>"$T/log/relay-$n.log" 2>&1 &
	IT_PIDS+=("$!")

	wait_until 5 "relay $n to listen" test -e "$dir/ready"
}

# frame_kind FILE: J="init", "resp", "transport" or "other: ..." for a
# frame of the sync protocol (proto/wire.proto Frame).
frame_kind() {
	"$PYTHON3" - "$1" >"$T/.jval" <<'PY' || fail "cannot decode frame $1"
import sys
b = open(sys.argv[1], "rb").read()
kinds = {0x22: "init", 0x2a: "resp", 0x32: "transport"}
print(kinds.get(b[0], "other: tag 0x%02x" % b[0]) if b else "other: empty")
PY
	J=$(cat "$T/.jval")
}
