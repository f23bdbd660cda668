# shellcheck shell=bash
# Helpers for the crash, fault and key-scan tests. Source after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/lib-hard.sh"
#
# The fault shim (faultshim.c, LD_PRELOAD) reads one rule from a control
# file per daemon, $T/shim-NAME.ctl ("svc" for nkpd, the host's name for a
# host), at every file operation it could apply to:
#
#   OP ACTION SUBSTRING [SKIP]   e.g. "open stall state.nkp 1"
#
# (see faultshim.c). shim_arm writes a rule, shim_clear removes it (a
# stalled operation then goes on), shim_wait_hit waits until the rule has
# fired. Daemons started with start_service_shim / start_host_shim run
# under the shim; with no rule armed it changes nothing.

: "${FAULTSHIM:=$IT_BUILD/tests/integration/faultshim.so}"
: "${KEYSCAN_RECOVER:=$IT_BUILD/tests/integration/keyscan-recover}"

hard_require() {
	[ -r "$FAULTSHIM" ] || it_skip "$FAULTSHIM is not built"
	[ -x "$KEYSCAN_RECOVER" ] || it_skip "$KEYSCAN_RECOVER is not built"
}

shim_ctl() { printf '%s/shim-%s.ctl' "$T" "$1"; }

# start_service_shim [EXTRA ARGS]: start_service under the shim ("svc").
# (A sanitizer build's daemons load the ASan runtime after the shim.)
start_service_shim() {
	LD_PRELOAD=$FAULTSHIM FAULTSHIM_CTL=$(shim_ctl svc) \
		ASAN_OPTIONS=verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} \
		start_service "$@"
}

# start_host_shim NAME: start_host under the shim (control file NAME).
start_host_shim() {
	LD_PRELOAD=$FAULTSHIM FAULTSHIM_CTL=$(shim_ctl "$1") \
		ASAN_OPTIONS=verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} \
		start_host "$1"
}

# shim_arm NAME RULE: arms RULE for daemon NAME (replacing any rule) and
# forgets earlier hits.
shim_arm() {
	local c
	c=$(shim_ctl "$1")
	rm -f "$c.hit"
	printf '%s\n' "$2" >"$c.new" && mv -f "$c.new" "$c" || fail "cannot arm the shim for $1"
}

shim_clear() { rm -f "$(shim_ctl "$1")"; }

# shim_wait_hit NAME [SECONDS]: waits until NAME's rule has fired.
shim_wait_hit() {
	wait_until "${2:-10}" "the fault rule '$(cat "$(shim_ctl "$1")" 2>/dev/null)' to fire in $1" \
		test -s "$(shim_ctl "$1").hit"
}

# crash_service: SIGKILL nkpd (no chance to clean up).
crash_service() {
	kill_pid "$SVC_PID"
	SVC_PID=""
}

# event_count DIR KIND: J=the number of KIND events in DIR/events.jsonl.
event_count() {
	J=$(grep -c "\"kind\":\"$2\"" "$1/events.jsonl" 2>/dev/null)
	J=${J:-0}
}

# sum_files DIR...: J=sha256 of every regular file's name and contents
# under the DIRs (to show that nothing changed).
sum_files() {
	J=$(find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
}
